#!/usr/bin/env bash
# authgate throughput/latency benchmark: an nginx upstream answering `200 ok`, measured
# straight and through the gateway, in interleaved rounds, on loopback. See bench/README.md.
#
#   bench/run.sh                       # 3 rounds of 10 s per target
#   BENCH_SECONDS=5 BENCH_ROUNDS=5 bench/run.sh
#
# Knobs (environment):
#   BENCH_SECONDS      length of one wrk run, seconds            (default 10)
#   BENCH_ROUNDS       rounds; each runs direct then gateway     (default 3)
#   BENCH_CONNECTIONS  wrk keep-alive connections                (default 64)
#   BENCH_PROXY_CPU    core the gateway is pinned to             (default 0)
#   BENCH_LOAD_CPU     core nginx and wrk are pinned to          (default 1)
#   BENCH_NOISE_PCT    a round is redone when processes other than the benchmark's
#                      used more than this % of one core during it (default 15)
#   BENCH_REDO         how many times one round may be redone    (default 2)
#   BENCH_QUIET_WAIT   seconds to wait for a quiet machine before a round (default 10)
#   BENCH_AUTH         1: tenant `acme` requires authentication and every request carries
#                      its Bearer token (the product's path); 0: pass-through  (default 1)
#   BENCH_BIN          an authgate binary to measure instead of building this checkout
#
# Installs wrk, nginx-light and curl with apt-get when they are missing (root or sudo).
# Starts nginx and the gateway in a scratch folder and stops exactly those on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=bench
# say/die, cleanup of what is started (PIDS), run, CPU accounting, wrk, noise control.
source "$ROOT/bench/lib.sh"
common_knobs # BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, the pinning and the noise control
AUTH=${BENCH_AUTH:-1}
check_whole_numbers AUTH

# --- tools ----------------------------------------------------------------------------
need_packages wrk:wrk nginx:nginx-light curl:curl
need_tools python3 taskset pgrep
if [[ -z ${BENCH_BIN:-} ]]; then
    for tool in cargo git; do command -v "$tool" >/dev/null || die "$tool is required (or set BENCH_BIN)"; done
fi
check_pinning gateway
resolve_bin

# --- scratch folder ------------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")
read -r UPSTREAM_PORT GATEWAY_PORT ADMIN_PORT < <(free_ports 3)

# --- gateway --------------------------------------------------------------------------
admin_yaml=''
if ((AUTH)); then new_admin_key; admin_yaml=$(admin_keys_yaml); fi
authgate_conf "$SCRATCH/authgate.yaml" "$GATEWAY_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT" \
    "  backend: file
  path: \"$SCRATCH/state.json\"" "$admin_yaml"

# --- upstream: nginx, then the gateway ------------------------------------------------
start_upstream_nginx nginx "$UPSTREAM_PORT"
"$BIN" check -c "$SCRATCH/authgate.yaml" >/dev/null
start_authgate_at "$SCRATCH/authgate.yaml" "$ADMIN_PORT" authgate "$SCRATCH/authgate.log"
GATEWAY_PID=$AG_STARTED

URL_DIRECT="http://127.0.0.1:$UPSTREAM_PORT$PATH_UNDER_TEST"
URL_GATEWAY="http://127.0.0.1:$GATEWAY_PORT$PATH_UNDER_TEST"
TOKEN=''
if ((AUTH)); then
    # Tenant acme requires authentication; wrk sends its token (direct requests too, so
    # both targets get the same bytes).
    acme_token "$ADMIN_PORT" " (a build without it? try BENCH_AUTH=0)"
    check_token_enforced "the gateway" "$URL_GATEWAY"
fi
write_post_lua "$SCRATCH/post.lua" "$TOKEN"

# --- load -----------------------------------------------------------------------------
say "bench: warm-up (${WARMUP_SECS}s each)"
run_wrk "$URL_DIRECT" "$SCRATCH/warmup.txt" "$WARMUP_SECS"
run_wrk "$URL_GATEWAY" "$SCRATCH/warmup.txt" "$WARMUP_SECS"

report_round() {
    [[ $target == gateway ]] || CPU_US=-
    say "$(printf 'bench: round %d %-7s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
        "$round" "$target" "$RPS" "$P50" "$P99" "$CPU_US" "$NOISE")"
}

RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct gateway; do
        WRK_URL=$URL_DIRECT pids=()
        [[ $target == gateway ]] && WRK_URL=$URL_GATEWAY pids=("$GATEWAY_PID")
        measure "round $round $target" wrk_load "$SCRATCH/wrk-$target-$round.txt" report_round "${pids[@]}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$NOISE" "$RPS" "$P50" "$P99" "$CPU_US" >>"$RESULTS"
    done
done

# --- report ---------------------------------------------------------------------------
echo "authgate benchmark"
echo "  machine:  $(machine_desc)"
echo "  authgate: $(bin_revision)"
echo "  tools:    $(wrk --version 2>&1 | head -n1 | awk '{ print $1, $2 }'), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "  pinning:  gateway (1 worker thread) on CPU $PROXY_CPU; nginx upstream (1 worker) and wrk on CPU $LOAD_CPU"
echo "  command:  taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${SECS}s --latency -s post.lua http://127.0.0.1:PORT$PATH_UNDER_TEST"
echo "            (POST, ${#BODY}-byte form body; PORT: nginx for direct, authgate for gateway)"
if ((AUTH)); then
    echo "  auth:     tenant acme requires authentication; every request carries 'Authorization: Bearer <its token>'"
else
    echo "  auth:     off (BENCH_AUTH=0): tenant acme does not require authentication; requests pass through"
fi
echo "  rounds:   $ROUNDS x ${SECS}s per target, interleaved direct/gateway after a ${WARMUP_SECS}s warm-up"
echo
two_target_table "$RESULTS" "$NOISE_PCT" "{:.2f}x" \
    "requests/s|{:.0f}" "p50 ms|{:.3f}" "p99 ms|{:.3f}" "gateway CPU µs/req|{:.1f}"
