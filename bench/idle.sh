#!/usr/bin/env bash
# authgate's idle keep-alive memory on its own (what bench/compare.sh's idle row measures,
# without the peers): a fresh gateway process in front of bench/sink.rs, 2 s of wrk,
# then bench/idle_conns.py: N connections, one GET / each, held IDLE_SETTLE_SECS
# (default 1 s), RSS growth / N. Extra config lines for `limits:` come from
# BENCH_LIMITS (e.g. "park_after: 0s" or "park_at_once_above: 100000").
#
#   bench/idle.sh                                       # 3 rounds, 10,000 connections
#   BENCH_PROFILE=release BENCH_LIMITS="park_after: 0s" bench/idle.sh
#   IDLE_SETTLE_SECS=3 bench/idle.sh                    # held past the 1 s park delay
#
# Installs wrk and curl with apt-get when missing.
set -euo pipefail

BENCH_NAME=idle
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
source "$HERE/lib.sh"
common_knobs
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
check_whole_numbers IDLE_CONNS
need_packages wrk:wrk curl:curl
ulimit -n "$(ulimit -Hn)"
((IDLE_CONNS + 100 < $(ulimit -n))) || die "open-file limit $(ulimit -n) is too low for $IDLE_CONNS connections"
resolve_bin

SCRATCH=$(mktemp -d /tmp/authgate-idle.XXXXXX)
: >"$SCRATCH/no-headers"
run rustc -O -o "$SCRATCH/sink" "$HERE/sink.rs" >&2 || die "cannot build bench/sink.rs"
read -r P_SINK P_AG P_AG_ADMIN < <(free_ports 3)
taskset -c "$LOAD_CPU" "$SCRATCH/sink" "127.0.0.1:$P_SINK" >"$SCRATCH/sink.log" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
wait_for "http://127.0.0.1:$P_SINK/" "$SINK_PID" sink "$SCRATCH/sink.log"
authgate_conf "$SCRATCH/authgate.yaml" "$P_AG" "$P_AG_ADMIN" "$P_SINK" "  backend: file
  path: \"$SCRATCH/state.json\"" "limits:
  max_connections: $((IDLE_CONNS + 100))
${BENCH_LIMITS:+  $BENCH_LIMITS}"
"$BIN" check -c "$SCRATCH/authgate.yaml" >/dev/null || die "authgate rejected its bench config"

results=()
for ((round = 1; round <= ROUNDS; round++)); do
    start_authgate_at "$SCRATCH/authgate.yaml" "$P_AG_ADMIN" authgate "$SCRATCH/authgate.log"
    pid=$AG_STARTED
    run taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP_SECS}s" "http://127.0.0.1:$P_AG/" >/dev/null
    run taskset -c "$LOAD_CPU" python3 "$HERE/idle_conns.py" 127.0.0.1 "$P_AG" / "$IDLE_CONNS" \
        "$SCRATCH/no-headers" "$pid" >"$SCRATCH/idle.out" || die "the idle-connection probe failed"
    read -r _ _ per <"$SCRATCH/idle.out"
    say "$(printf 'idle: round %d: %.0f bytes/connection' "$round" "$per")"
    results+=("$per")
    stop_pid "$pid"
done
printf '%s\n' "${results[@]}" | sort -g | awk -v n="$IDLE_CONNS" -v limits="${BENCH_LIMITS:-defaults}" '
    { v[NR] = $1 }
    END { printf "authgate (%s): %.0f bytes per idle keep-alive connection (median of %d fresh processes, min %.0f, max %.0f; %d connections each)\n",
          limits, v[int((NR + 1) / 2)], NR, v[1], v[NR], n }'
