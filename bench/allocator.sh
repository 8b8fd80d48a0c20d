#!/usr/bin/env bash
# The allocator, measured in µs: two gateways, glibc's malloc and mimalloc, in front of
# one nginx upstream, in interleaved rounds (glibc, mimalloc, glibc, …) with wrk, pinned,
# on loopback. The figure is the gateway's CPU per request (utime+stime); throughput,
# latency and resident memory are printed beside it. See BENCHMARKS.md, "The allocator".
#
#   bench/allocator.sh                   # builds both (cargo profile dist), 5 rounds x 10 s
#   BENCH_BIN=a BENCH_BIN_MIMALLOC=b bench/allocator.sh   # two built binaries
#   BENCH_SECONDS=5 BENCH_ROUNDS=3 bench/allocator.sh
#
# Knobs: as bench/run.sh (BENCH_SECONDS, BENCH_ROUNDS (default 5 here), BENCH_CONNECTIONS,
# BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_NOISE_PCT, BENCH_REDO, BENCH_QUIET_WAIT,
# BENCH_BIN, BENCH_PROFILE), and BENCH_BIN_MIMALLOC (else built with
# `--features mimalloc`, after BENCH_BIN, so the checkout's target keeps glibc's).
# Every request is the product's hot path: a POST to a protected route with a valid token.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=allocator
source "$ROOT/bench/lib.sh"
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
common_knobs

need_packages wrk:wrk nginx:nginx-light curl:curl
need_tools python3 taskset pgrep
check_pinning gateway

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
if [[ -n ${BENCH_BIN_MIMALLOC:-} ]]; then
    MIMALLOC_BIN=$BENCH_BIN_MIMALLOC
else
    profile=${BENCH_PROFILE:-dist}
    say "allocator: building authgate --features mimalloc (cargo build --profile $profile)"
    run cargo build --profile "$profile" --features mimalloc --bin authgate --quiet \
        --manifest-path "$ROOT/Cargo.toml" >&2 || die "cargo build --features mimalloc failed"
    MIMALLOC_BIN=$SCRATCH/authgate-mimalloc
    cp "$ROOT/target/$profile/authgate" "$MIMALLOC_BIN"
fi
[[ -x $MIMALLOC_BIN ]] || die "BENCH_BIN_MIMALLOC=$MIMALLOC_BIN is not an executable"
# Built second (when built here), so the checkout's own binary is glibc's again.
resolve_bin

read -r UPSTREAM_PORT G_PORT G_ADMIN M_PORT M_ADMIN < <(free_ports 5)
new_admin_key
start_upstream_nginx nginx "$UPSTREAM_PORT"

declare -A PID URL EXE=([glibc]=$BIN [mimalloc]=$MIMALLOC_BIN)
for alloc in glibc mimalloc; do
    port=G_PORT admin=G_ADMIN
    [[ $alloc == mimalloc ]] && port=M_PORT admin=M_ADMIN
    authgate_conf "$SCRATCH/$alloc.yaml" "${!port}" "${!admin}" "$UPSTREAM_PORT" \
        "  backend: file
  path: \"$SCRATCH/state-$alloc.json\"" "$(admin_keys_yaml)"
    "${EXE[$alloc]}" check -c "$SCRATCH/$alloc.yaml" >/dev/null
    start_authgate_at "$SCRATCH/$alloc.yaml" "${!admin}" "authgate ($alloc)" "$SCRATCH/authgate-$alloc.log" "${EXE[$alloc]}"
    PID[$alloc]=$AG_STARTED
    URL[$alloc]="http://127.0.0.1:${!port}$PATH_UNDER_TEST"
    acme_token "${!admin}"
    check_token_enforced "the gateway ($alloc)" "${URL[$alloc]}"
    write_post_lua "$SCRATCH/post-$alloc.lua" "$TOKEN"
done
say "allocator: warm-up (${WARMUP_SECS}s each)"
for alloc in glibc mimalloc; do run_wrk "${URL[$alloc]}" "$SCRATCH/warmup.txt" "$WARMUP_SECS" "$SCRATCH/post-$alloc.lua"; done

report_round() {
    say "$(printf 'allocator: round %d %-8s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
        "$round" "$alloc" "$RPS" "$P50" "$P99" "$CPU_US" "$NOISE")"
}
RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for alloc in glibc mimalloc; do
        WRK_URL=${URL[$alloc]} WRK_LUA=$SCRATCH/post-$alloc.lua
        measure "round $round $alloc" wrk_load "$SCRATCH/wrk-$alloc-$round.txt" report_round "${PID[$alloc]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$alloc" "$round" "$NOISE" "$RPS" "$P50" "$P99" "$CPU_US" >>"$RESULTS"
    done
done

echo "authgate allocator: glibc malloc vs mimalloc"
echo "  machine:  $(machine_desc)"
echo "  authgate: $(bin_revision); mimalloc: $MIMALLOC_BIN"
echo "  pinning:  each gateway (1 worker thread) on CPU $PROXY_CPU; nginx upstream and wrk on CPU $LOAD_CPU"
echo "  command:  taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${SECS}s --latency -s post.lua http://127.0.0.1:PORT$PATH_UNDER_TEST"
echo "            (POST with a valid Bearer token to a protected route; PORT: the glibc or the mimalloc gateway)"
echo "  memory:   resident after the rounds: glibc $(awk '/VmRSS/ { print $2 " kB" }' "/proc/${PID[glibc]}/status"), mimalloc $(awk '/VmRSS/ { print $2 " kB" }' "/proc/${PID[mimalloc]}/status")"
echo "  rounds:   $ROUNDS x ${SECS}s per gateway, interleaved after a ${WARMUP_SECS}s warm-up"
echo
two_target_table "$RESULTS" "$NOISE_PCT" "{:.3f}x" \
    "requests/s|{:.0f}" "p50 ms|{:.3f}" "p99 ms|{:.3f}" "gateway CPU µs/req|{:.2f}"
