#!/usr/bin/env bash
# What the access log costs: two gateways from the same binary in front of one nginx
# upstream, one with the access log off and one writing JSON lines to a file, measured in
# interleaved rounds (off, on, off, on, …) with wrk, pinned, on loopback. The figure is
# the gateway's CPU per request (utime+stime of its process, the log's writer thread
# included); throughput and latency are printed beside it. See BENCHMARKS.md.
#
#   bench/access_log.sh                       # 5 rounds x 10 s per gateway
#   BENCH_SECONDS=5 BENCH_ROUNDS=3 bench/access_log.sh
#   BENCH_LOG_FORMAT=text bench/access_log.sh # the text format instead of JSON
#
# Knobs: as bench/run.sh (BENCH_SECONDS, BENCH_ROUNDS (default 5 here), BENCH_CONNECTIONS,
# BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_NOISE_PCT, BENCH_REDO, BENCH_QUIET_WAIT,
# BENCH_BIN), and BENCH_LOG_FORMAT (json or text, default json).
# Every request is the product's hot path: a POST to a protected route with a valid token.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=access_log
source "$ROOT/bench/lib.sh"
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
common_knobs
FORMAT=${BENCH_LOG_FORMAT:-json}
[[ $FORMAT == json || $FORMAT == text ]] || die "BENCH_LOG_FORMAT must be json or text"

need_packages wrk:wrk nginx:nginx-light curl:curl
need_tools python3 taskset pgrep
check_pinning gateway
resolve_bin

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
read -r UPSTREAM_PORT OFF_PORT OFF_ADMIN ON_PORT ON_ADMIN < <(free_ports 5)
new_admin_key
start_upstream_nginx nginx "$UPSTREAM_PORT"

# Two gateways, each with its own state; the same tenant, route and request.
declare -A PID URL
for log in off on; do
    port=OFF_PORT admin=OFF_ADMIN
    [[ $log == on ]] && port=ON_PORT admin=ON_ADMIN
    extra=$(admin_keys_yaml)
    [[ $log == on ]] && extra+=$'\n'"access_log: { target: \"$SCRATCH/access.log\", format: $FORMAT }"
    authgate_conf "$SCRATCH/$log.yaml" "${!port}" "${!admin}" "$UPSTREAM_PORT" \
        "  backend: file
  path: \"$SCRATCH/state-$log.json\"" "$extra"
    "$BIN" check -c "$SCRATCH/$log.yaml" >/dev/null
    start_authgate_at "$SCRATCH/$log.yaml" "${!admin}" "authgate (log $log)" "$SCRATCH/authgate-$log.log"
    PID[$log]=$AG_STARTED
    URL[$log]="http://127.0.0.1:${!port}$PATH_UNDER_TEST"
    acme_token "${!admin}"
    check_token_enforced "the gateway (log $log)" "${URL[$log]}"
    write_post_lua "$SCRATCH/post-$log.lua" "$TOKEN"
done
say "access_log: warm-up (${WARMUP_SECS}s each)"
for log in off on; do run_wrk "${URL[$log]}" "$SCRATCH/warmup.txt" "$WARMUP_SECS" "$SCRATCH/post-$log.lua"; done
[[ -s $SCRATCH/access.log ]] || die "the gateway with the access log on wrote no line"

report_round() {
    say "$(printf 'access_log: round %d log %-3s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
        "$round" "$log" "$RPS" "$P50" "$P99" "$CPU_US" "$NOISE")"
}
RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for log in off on; do
        WRK_URL=${URL[$log]} WRK_LUA=$SCRATCH/post-$log.lua
        measure "round $round log $log" wrk_load "$SCRATCH/wrk-$log-$round.txt" report_round "${PID[$log]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "log $log" "$round" "$NOISE" "$RPS" "$P50" "$P99" "$CPU_US" >>"$RESULTS"
    done
done
LINES=$(wc -l <"$SCRATCH/access.log")
DROPPED=$(curl -sf "http://127.0.0.1:$ON_ADMIN/metrics" | awk '/^authgate_access_log_dropped_total/ { print $2 }')

echo "authgate access-log cost"
echo "  machine:  $(machine_desc)"
echo "  authgate: $(bin_revision)"
echo "  pinning:  each gateway (1 worker thread + the log's writer thread) on CPU $PROXY_CPU; nginx upstream and wrk on CPU $LOAD_CPU"
echo "  command:  taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${SECS}s --latency -s post.lua http://127.0.0.1:PORT$PATH_UNDER_TEST"
echo "            (POST with a valid Bearer token to a protected route; PORT: the gateway with the log off or on)"
echo "  log:      $FORMAT lines to a file on $(df -T "$SCRATCH" | awk 'NR == 2 { print $2 }'); $LINES lines written, ${DROPPED:-?} dropped"
echo "  rounds:   $ROUNDS x ${SECS}s per gateway, interleaved off/on after a ${WARMUP_SECS}s warm-up"
echo
two_target_table "$RESULTS" "$NOISE_PCT" "{:.3f}x" \
    "requests/s|{:.0f}" "p50 ms|{:.3f}" "p99 ms|{:.3f}" "gateway CPU µs/req|{:.2f}"
