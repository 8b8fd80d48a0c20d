#!/usr/bin/env bash
# The floor for a hyper connection: bytes of resident memory one held idle keep-alive
# connection costs the smallest hyper 1.x HTTP/1.1 server (examples/hyper_floor.rs),
# measured exactly as bench/compare.sh measures authgate and its peers (fresh process,
# 2 s of wrk, then bench/idle_conns.py: N connections, one request each, held, RSS
# growth / N). What authgate costs above this is authgate's; below it needs another
# HTTP/1 implementation than hyper's.
#
#   bench/floor.sh                      # 3 rounds, 10,000 connections
#   BENCH_ROUNDS=5 BENCH_IDLE_CONNS=5000 bench/floor.sh
#
# Installs wrk and curl with apt-get when missing; builds the example with the same
# profile as the other drivers (BENCH_PROFILE, default dist).
set -euo pipefail

BENCH_NAME=floor
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
source "$HERE/lib.sh"
common_knobs
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
check_whole_numbers IDLE_CONNS
need_packages wrk:wrk curl:curl
ulimit -n "$(ulimit -Hn)"
((IDLE_CONNS + 100 < $(ulimit -n))) || die "open-file limit $(ulimit -n) is too low for $IDLE_CONNS connections"

profile=${BENCH_PROFILE:-dist}
say "floor: building examples/hyper_floor.rs (cargo build --profile $profile --example hyper_floor)"
run cargo build --profile "$profile" --example hyper_floor --quiet --manifest-path "$ROOT/Cargo.toml" >&2
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
FLOOR=$target_dir/$profile/examples/hyper_floor

SCRATCH=$(mktemp -d /tmp/authgate-floor.XXXXXX)
: >"$SCRATCH/no-headers"
results=()
for ((round = 1; round <= ROUNDS; round++)); do
    read -r port < <(free_ports 1)
    taskset -c "$PROXY_CPU" "$FLOOR" "127.0.0.1:$port" 2>"$SCRATCH/floor.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for "http://127.0.0.1:$port/" "$pid" hyper_floor "$SCRATCH/floor.log"
    run taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP_SECS}s" "http://127.0.0.1:$port/" >/dev/null
    run taskset -c "$LOAD_CPU" python3 "$HERE/idle_conns.py" 127.0.0.1 "$port" / "$IDLE_CONNS" \
        "$SCRATCH/no-headers" "$pid" >"$SCRATCH/idle.out" || die "the idle-connection probe failed"
    read -r _ _ per <"$SCRATCH/idle.out"
    say "$(printf 'floor: round %d: %.0f bytes/connection' "$round" "$per")"
    results+=("$per")
    stop_pid "$pid"
done
printf '%s\n' "${results[@]}" | sort -g | awk -v n="$IDLE_CONNS" '
    { v[NR] = $1 }
    END { printf "hyper floor: %.0f bytes per idle keep-alive connection (median of %d fresh processes, min %.0f, max %.0f; %d connections each)\n",
          v[int((NR + 1) / 2)], NR, v[1], v[NR], n }'
