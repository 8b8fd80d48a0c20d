#!/usr/bin/env bash
# Request-path throughput with the shared state in Redis vs in a file (issue #8: "redis
# mode within 2% of file mode; the request path never touches Redis"). Two gateways, one
# with `state.backend: file`, one with `state.backend: redis` (a redis-server started
# here), same nginx upstream, same pinning, measured in interleaved rounds, on loopback.
# See bench/README.md.
#
#   bench/state.sh                       # 3 rounds of 10 s per backend
#   BENCH_SECONDS=5 BENCH_ROUNDS=5 bench/state.sh
#   BENCH_ROTATE=1 bench/state.sh        # also the rotate-latency benchmark (cargo test)
#
# Knobs (environment):
#   BENCH_SECONDS      length of one wrk run, seconds            (default 10)
#   BENCH_ROUNDS       rounds; each runs file then redis         (default 3)
#   BENCH_CONNECTIONS  wrk keep-alive connections                (default 64)
#   BENCH_PROXY_CPU    core both gateways are pinned to          (default 0)
#   BENCH_LOAD_CPU     core of nginx, redis-server and wrk       (default 1)
#   BENCH_NOISE_PCT    a round is redone when processes other than the benchmark's
#                      used more than this % of one core during it (default 15)
#   BENCH_REDO         how many times one round may be redone    (default 2)
#   BENCH_QUIET_WAIT   seconds to wait for a quiet machine before a round (default 10)
#   BENCH_ROTATE       1: afterwards, run the admin rotate-latency benchmark
#                      (`cargo test --release --test redis -- --ignored rotate_latency`;
#                      builds the tests of this checkout)        (default 0)
#   BENCH_BIN          an authgate binary to measure instead of building this checkout
#
# Installs wrk, nginx-light, redis-server and curl with apt-get when they are missing
# (root or sudo). Starts nginx, redis-server and the two gateways in a scratch folder on
# free loopback ports and stops exactly those on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=state
# say/die, cleanup of what is started (PIDS), run, CPU accounting, wrk, noise control.
source "$ROOT/bench/lib.sh"
common_knobs # BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, the pinning and the noise control
ROTATE=${BENCH_ROTATE:-0}
check_whole_numbers ROTATE

# --- tools ----------------------------------------------------------------------------
need_packages wrk:wrk nginx:nginx-light redis-server:redis-server redis-cli:redis-tools curl:curl
need_tools python3 taskset pgrep
if ((ROTATE)); then need_tools cargo; fi
check_pinning gateways
resolve_bin

# --- scratch folder, upstream, Redis ---------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-state.XXXXXX")
read -r UPSTREAM_PORT REDIS_PORT FILE_PORT FILE_ADMIN REDIS_GW_PORT REDIS_GW_ADMIN < <(free_ports 6)

start_upstream_nginx nginx "$UPSTREAM_PORT"

# An empty, volatile redis-server (no RDB, no AOF) of our own, in the scratch folder.
mkdir -p "$SCRATCH/redis"
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$SCRATCH/redis" \
    --save '' --appendonly no --daemonize no --logfile "$SCRATCH/redis.log" >/dev/null 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
# Ready when it answers, and only if the server answering is ours (not another one that
# took the port first).
for ((i = 0; i < 100; i++)); do
    if info=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO server 2>/dev/null) && [[ $info == *process_id:* ]]; then
        [[ $info == *"process_id:$REDIS_PID"* ]] || die "another redis-server answers on port $REDIS_PORT"
        break
    fi
    kill -0 "$REDIS_PID" 2>/dev/null || { tail -n 20 "$SCRATCH/redis.log" >&2; die "redis-server exited during start-up"; }
    sleep 0.1
done
((i < 100)) || die "redis-server not ready on port $REDIS_PORT after 10 s"

# --- the two gateways -------------------------------------------------------------------
new_admin_key
gateway_conf() { # FILE PROXY_PORT ADMIN_PORT STATE_YAML
    authgate_conf "$1" "$2" "$3" "$UPSTREAM_PORT" "$4" "$(admin_keys_yaml)"
    "$BIN" check -c "$1" >/dev/null || die "authgate rejected $1"
}
gateway_conf "$SCRATCH/file.yaml" "$FILE_PORT" "$FILE_ADMIN" "  backend: file
  path: \"$SCRATCH/state.json\""
gateway_conf "$SCRATCH/redis.yaml" "$REDIS_GW_PORT" "$REDIS_GW_ADMIN" "  backend: redis
  redis: { url: \"redis://127.0.0.1:$REDIS_PORT\", replica: bench }"
EPOCH=$("$BIN" cluster init -c "$SCRATCH/redis.yaml" 2>&1) || { say "$EPOCH"; die "authgate cluster init failed"; }

start_authgate_at "$SCRATCH/file.yaml" "$FILE_ADMIN" "authgate (file)" "$SCRATCH/file.log"
FILE_PID=$AG_STARTED
# /readyz answers 200 in redis mode only once the replica has synced and holds a lease.
start_authgate_at "$SCRATCH/redis.yaml" "$REDIS_GW_ADMIN" "authgate (redis)" "$SCRATCH/redis-gw.log"
REDIS_GW_PID=$AG_STARTED

declare -A URL PID LUA
for backend in file redis; do
    if [[ $backend == file ]]; then port=$FILE_PORT admin=$FILE_ADMIN; else port=$REDIS_GW_PORT admin=$REDIS_GW_ADMIN; fi
    # Tenant acme requires authentication; each gateway generates its own token (the
    # redis one through Redis), which its wrk script sends.
    acme_token "$admin"
    URL[$backend]="http://127.0.0.1:$port$PATH_UNDER_TEST"
    LUA[$backend]=$SCRATCH/post-$backend.lua
    write_post_lua "${LUA[$backend]}" "$TOKEN"
    check_token_enforced "authgate ($backend)" "${URL[$backend]}"
done
PID[file]=$FILE_PID PID[redis]=$REDIS_GW_PID
# The redis gateway really runs on Redis, in step and not fenced.
admin_api "$REDIS_GW_ADMIN" GET /admin/v1/cluster '' | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d.get("backend") == "redis" and not d.get("fenced"), d
' || die "the redis gateway does not report a live redis backend (GET /admin/v1/cluster)"

# --- load -----------------------------------------------------------------------------
say "state: warm-up (${WARMUP_SECS}s each)"
for backend in file redis; do
    run_wrk "${URL[$backend]}" "$SCRATCH/warmup.txt" "$WARMUP_SECS" "${LUA[$backend]}"
done

report_round() {
    say "$(printf 'state: round %d %-5s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
        "$round" "$backend" "$RPS" "$P50" "$P99" "$CPU_US" "$NOISE")"
}

RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for backend in file redis; do
        WRK_URL=${URL[$backend]} WRK_LUA=${LUA[$backend]}
        measure "round $round $backend" wrk_load "$SCRATCH/wrk-$backend-$round.txt" report_round "${PID[$backend]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$round" "$NOISE" "$RPS" "$P99" "$CPU_US" >>"$RESULTS"
    done
done
# Still in step at the end (a fenced gateway would have answered 503 and stopped the run).
admin_api "$REDIS_GW_ADMIN" GET /admin/v1/cluster '' >"$SCRATCH/cluster.json" ||
    die "GET /admin/v1/cluster failed after the run"

# --- report ---------------------------------------------------------------------------
echo "authgate: request path, state in Redis vs in a file"
echo "  machine:  $(machine_desc)"
echo "  authgate: $(bin_revision)"
echo "  tools:    $(wrk --version 2>&1 | head -n1 | awk '{ print $1, $2 }'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(redis-server --version | awk '{ print $1, $3 }')"
echo "  pinning:  both gateways (1 worker thread each) on CPU $PROXY_CPU; nginx upstream (1 worker), redis-server and wrk on CPU $LOAD_CPU"
echo "  state:    file: state.backend file; redis: state.backend redis, lease/heartbeat defaults, epoch $(tail -n1 <<<"$EPOCH" | awk '{ print $NF }')"
echo "  command:  taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${SECS}s --latency -s post.lua http://127.0.0.1:PORT$PATH_UNDER_TEST"
echo "            (POST, ${#BODY}-byte form body, 'Authorization: Bearer <token>' of tenant acme, which requires it)"
echo "  rounds:   $ROUNDS x ${SECS}s per backend, interleaved file/redis after a ${WARMUP_SECS}s warm-up"
echo
two_target_table "$RESULTS" "$NOISE_PCT" "{:.3f}x" "requests/s|{:.0f}" "p99 ms|{:.3f}" "gateway CPU µs/req|{:.1f}"
python3 - "$RESULTS" "$NOISE_PCT" <<'PY'
import statistics, sys
rps, noisy = {}, False
for line in open(sys.argv[1]):
    backend, _round, noise, r, *_ = line.split("\t")
    rps.setdefault(backend, []).append(float(r))
    noisy |= int(noise) > int(sys.argv[2])
ratio = statistics.median(rps["redis"]) / statistics.median(rps["file"])
verdict = "at most 2% below" if ratio >= 0.98 else "MORE than 2% below"
print(f"redis/file requests/s {ratio:.3f}: redis mode {verdict} file mode (issue #8 target: >= 0.980)"
      + (";\n  noisy run: not a verdict." if noisy else "."))
PY

# --- optional: latency of the admin rotate call ------------------------------------------
if ((ROTATE)); then
    # Free the cores for it: stop what this script started (only those processes).
    for pid in "$REDIS_GW_PID" "$FILE_PID" "$REDIS_PID" "$UPSTREAM_PID"; do stop_pid "$pid"; done
    say "state: rotate latency (cargo test --release --test redis -- --ignored --nocapture rotate_latency)"
    rc=0
    run cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" --test redis -- --ignored --nocapture rotate_latency \
        >"$SCRATCH/rotate.out" 2>&1 || rc=$?
    echo
    echo "admin rotate call (POST /admin/v1/tenants/<t>/token, 500 sequential calls, every replica acknowledging;"
    echo "the test's own build of this checkout, not BENCH_BIN):"
    if ((rc)) || ! grep '^rotate, ' "$SCRATCH/rotate.out"; then
        tail -n 30 "$SCRATCH/rotate.out" >&2
        die "the rotate-latency benchmark failed or printed no figures (exit $rc)"
    fi
fi
