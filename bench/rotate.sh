#!/usr/bin/env bash
# Latency of the admin rotate call with the state in Redis (issue #18): 500 sequential
# `POST /admin/v1/tenants/acme/token` through one of N replicas, every replica
# acknowledging, for N = 1, 2, 4, 8, to a plain and to a TLS Redis (private CA made by
# the test), with Redis' own round trip (`PING` from the test over the same transport,
# one after every rotation) measured in the same run. Runs the ignored test
# `rotate_latency_benchmark` of tests/redis.rs once per configuration.
#
#   bench/rotate.sh
#   BENCH_REPLICAS=4,8 BENCH_TRANSPORTS=tls bench/rotate.sh
#
# Knobs (environment):
#   BENCH_REPLICAS     replica counts, comma-separated            (default 1,2,4,8)
#   BENCH_TRANSPORTS   plain and/or tls, comma-separated          (default plain,tls)
#   BENCH_NOISE_PCT    the machine counts as quiet when it used less than this % of one
#                      core for a second before a configuration   (default 15)
#   BENCH_QUIET_WAIT   seconds to wait for that                   (default 10)
#
# Each line says whether the machine was quiet before it and the load average: figures
# from a busy machine are scheduling, not the protocol. Needs cargo and redis-server
# (installed with apt-get when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=rotate
source "$ROOT/bench/lib.sh"
REPLICAS=${BENCH_REPLICAS:-1,2,4,8}
TRANSPORTS=${BENCH_TRANSPORTS:-plain,tls}
NOISE_PCT=${BENCH_NOISE_PCT:-15}
QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
check_whole_numbers NOISE_PCT QUIET_WAIT
need_tools cargo
need_packages redis-server:redis-server

say "rotate: building the tests (cargo test --release --test redis --no-run)"
cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" --test redis --no-run >&2
echo "admin rotate latency on $(machine_desc)"
for transport in ${TRANSPORTS//,/ }; do
    for n in ${REPLICAS//,/ }; do
        quiet=yes
        wait_quiet || quiet=NO
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        out=$(ROTATE_REPLICAS=$n ROTATE_TRANSPORTS=$transport \
            cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" --test redis \
            -- --ignored --nocapture rotate_latency 2>&1) || { printf '%s\n' "$out" | tail -n 30 >&2; die "the benchmark failed"; }
        line=$(printf '%s\n' "$out" | grep '^rotate, ') || die "no figures printed"
        echo "$line  [quiet before: $quiet; load $load]"
    done
done
