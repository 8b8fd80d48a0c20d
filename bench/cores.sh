#!/usr/bin/env bash
# The connection runtimes (`runtime.worker_threads`), measured as the gateway's CPU per
# request: one current-thread runtime (N = 1) against one per core (N = 2, the default
# on a 2-core machine) and against tokio's work-stealing runtime on as many threads
# (`runtime.work_stealing: true`), in interleaved rounds, in front of one nginx upstream.
# See BENCHMARKS.md, "A runtime per core".
#
#   bench/cores.sh                        # fixed rate: oha -q 10000 for 10 s, 3 rounds
#   BENCH_RATE=5000 BENCH_ROUNDS=5 bench/cores.sh
#   BENCH_LOAD=closed BENCH_THREADS=8 CORES_GATEWAY_CPUS=0-7 CORES_LOAD_CPUS=8-15 \
#     BENCH_VARIANTS="1 8 8ws" bench/cores.sh   # throughput, on a machine with the cores
#
# BENCH_LOAD=fixed (default) runs oha at BENCH_RATE requests/s, the same for every
# variant, so the CPU per request compares the runtimes' overhead at equal work.
# BENCH_LOAD=closed runs wrk closed-loop (BENCH_THREADS threads, BENCH_CONNECTIONS
# connections): requests/s is then the capacity, which needs more cores than 2 to show.
# BENCH_VARIANTS lists the gateways: N (N current-thread runtimes) or Nws (work stealing
# on N threads). By default nothing is pinned: the gateway, the upstream and the load
# generator share every core (CORES_GATEWAY_CPUS and CORES_LOAD_CPUS, taskset lists,
# pin them apart). Other knobs as bench/run.sh: BENCH_SECONDS, BENCH_ROUNDS,
# BENCH_CONNECTIONS, BENCH_NOISE_PCT, BENCH_REDO, BENCH_QUIET_WAIT, BENCH_BIN,
# BENCH_PROFILE. Every request is a POST with a valid token to a protected route.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=cores
source "$ROOT/bench/lib.sh"
common_knobs
RATE=${BENCH_RATE:-10000}
THREADS=${BENCH_THREADS:-1}
LOAD=${BENCH_LOAD:-fixed}
VARIANTS=${BENCH_VARIANTS:-"1 2 2ws"}
check_whole_numbers RATE THREADS
ALL_CPUS="0-$(($(nproc) - 1))"
# lib.sh pins the gateway to PROXY_CPU and the upstream and wrk to LOAD_CPU.
PROXY_CPU=${CORES_GATEWAY_CPUS:-$ALL_CPUS}
LOAD_CPU=${CORES_LOAD_CPUS:-$ALL_CPUS}
taskset -c "$PROXY_CPU" true 2>/dev/null || die "cannot pin to CPUs $PROXY_CPU"
taskset -c "$LOAD_CPU" true 2>/dev/null || die "cannot pin to CPUs $LOAD_CPU"

need_packages nginx:nginx-light curl:curl wrk:wrk
need_tools python3 taskset pgrep
case $LOAD in
fixed)
    if ! command -v oha >/dev/null; then
        say "cores: installing oha (cargo install oha --locked, under nice; takes minutes)"
        run nice -n 19 cargo install oha --locked >&2 || die "cannot install oha"
    fi
    ;;
closed) ;;
*) die "BENCH_LOAD must be fixed or closed" ;;
esac
resolve_bin

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
new_admin_key
read -r UPSTREAM_PORT < <(free_ports 1)
start_upstream_nginx nginx "$UPSTREAM_PORT"

declare -A PID URL
for v in $VARIANTS; do
    [[ $v =~ ^([0-9]+)(ws)?$ ]] || die "BENCH_VARIANTS: '$v' is not N or Nws"
    runtime="worker_threads: ${BASH_REMATCH[1]}"
    [[ -n ${BASH_REMATCH[2]} ]] && runtime+=", work_stealing: true"
    read -r port admin < <(free_ports 2)
    AG_RUNTIME=$runtime authgate_conf "$SCRATCH/$v.yaml" "$port" "$admin" "$UPSTREAM_PORT" \
        "  backend: file
  path: \"$SCRATCH/state-$v.json\"" "$(admin_keys_yaml)"
    "$BIN" check -c "$SCRATCH/$v.yaml" >/dev/null || die "authgate rejected the config of $v"
    start_authgate_at "$SCRATCH/$v.yaml" "$admin" "authgate ($v)" "$SCRATCH/authgate-$v.log"
    PID[$v]=$AG_STARTED
    URL[$v]="http://127.0.0.1:$port$PATH_UNDER_TEST"
    acme_token "$admin"
    check_token_enforced "the gateway ($v)" "${URL[$v]}"
    write_post_lua "$SCRATCH/post-$v.lua" "$TOKEN"
    declare "TOKEN_$v=$TOKEN"
done

# The load functions of `measure`: set RPS P50 P99 BAD ERRS N.
LOAD_URL='' LOAD_VARIANT=''
fixed_load() { # OUTFILE
    local token_var="TOKEN_$LOAD_VARIANT"
    run taskset -c "$LOAD_CPU" oha --no-tui --output-format json -q "$RATE" -c "$CONNS" -z "${SECS}s" \
        --latency-correction -m POST -d "$BODY" -T application/x-www-form-urlencoded \
        -H "Authorization: Bearer ${!token_var}" "$LOAD_URL" >"$1" 2>"$1.err" || { cat "$1.err" >&2; return 1; }
    read -r P50 P99 N BAD < <(parse_oha "$1")
    ERRS=0
    RPS=$(awk -v n="$N" -v s="$SECS" 'BEGIN { printf "%.0f", n / s }')
}
closed_load() { # OUTFILE
    run taskset -c "$LOAD_CPU" wrk "-t$THREADS" "-c$CONNS" "-d${SECS}s" --latency \
        -s "$SCRATCH/post-$LOAD_VARIANT.lua" "$LOAD_URL" >"$1" 2>&1 || return 1
    read -r RPS P50 P99 BAD ERRS N < <(parse_wrk "$1")
}

say "cores: warm-up (${WARMUP_SECS}s each)"
for v in $VARIANTS; do
    run_wrk "${URL[$v]}" /dev/null "$WARMUP_SECS" "$SCRATCH/post-$v.lua"
done

report_round() {
    say "$(printf 'cores: round %d %-5s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
        "$round" "$v" "$RPS" "$P50" "$P99" "$CPU_US" "$NOISE")"
}
RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for v in $VARIANTS; do
        LOAD_URL=${URL[$v]} LOAD_VARIANT=$v
        measure "round $round $v" "${LOAD}_load" "$SCRATCH/load-$v-$round.txt" report_round "${PID[$v]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$round" "$NOISE" "$RPS" "$P50" "$P99" "$CPU_US" >>"$RESULTS"
    done
done

echo "authgate connection runtimes: N current-thread runtimes (N) and work stealing (Nws)"
echo "  machine:  $(machine_desc)"
echo "  authgate: $(bin_revision)"
echo "  pinning:  gateway on CPUs $PROXY_CPU; nginx upstream (1 worker) and the load generator on CPUs $LOAD_CPU"
case $LOAD in
fixed) echo "  load:     oha -q $RATE -c $CONNS -z ${SECS}s --latency-correction, POST with a valid Bearer token to $PATH_UNDER_TEST" ;;
closed) echo "  load:     wrk -t$THREADS -c$CONNS -d${SECS}s --latency, POST with a valid Bearer token to $PATH_UNDER_TEST" ;;
esac
echo "  rounds:   $ROUNDS x ${SECS}s per gateway, interleaved after a ${WARMUP_SECS}s warm-up"
echo
two_target_table "$RESULTS" "$NOISE_PCT" "{:.3f}x" \
    "requests/s|{:.0f}" "p50 ms|{:.3f}" "p99 ms|{:.3f}" "gateway CPU µs/req|{:.2f}"
