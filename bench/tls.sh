#!/usr/bin/env bash
# HTTP vs HTTPS through authgate, same method as bench/run.sh: nginx upstream on CPU 1,
# the gateway (1 worker thread) on CPU 0, wrk -t1 -c64 on CPU 1, interleaved rounds, a
# POST with a valid token to a protected route. A test CA and certificate are made with
# openssl for each run.
#   bench/tls.sh                         # builds this checkout; 3 rounds of 10 s
#   BENCH_SECONDS=5 BENCH_ROUNDS=5 BENCH_BIN=path/to/authgate bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_NAME=tls
# say/die, cleanup of what is started (PIDS), CPU accounting, the upstream, the token.
source "$ROOT/bench/lib.sh"
SECS=${BENCH_SECONDS:-10}; ROUNDS=${BENCH_ROUNDS:-3}; CONNS=64
PROXY_CPU=0 LOAD_CPU=1
resolve_bin
SCRATCH=$(mktemp -d /tmp/tlsbench.XXXXXX); S=$SCRATCH
read -r UP GW GA GT GTA < <(free_ports 5)
start_upstream_nginx nginx "$UP"
NGINX=$UPSTREAM_PID
cd $S
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -keyout ca.key -out ca.pem -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout gw.key -out gw.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > gw.ext
openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile gw.ext -out gw.pem 2>/dev/null
new_admin_key
common="upstream: { url: \"http://127.0.0.1:$UP\" }
state: { backend: file, path: \"$S/state.json\" }
runtime: { worker_threads: 1 }
log: { level: warn }
admin: { keys: [ { name: bench, role: approver, sha256: \"$ADMIN_KEY_SHA256\" } ] }"
printf 'listen: { proxy: "127.0.0.1:%s", admin: "127.0.0.1:%s" }\n%s\n' $GW $GA "$common" > plain.yaml
printf 'listen: { proxy: "127.0.0.1:%s", admin: "127.0.0.1:%s" }\ntls: { proxy: { cert: gw.pem, key: gw.key } }\n%s\n' $GT $GTA "$common" > tls.yaml
"$BIN" check -c tls.yaml >/dev/null
start_authgate_at plain.yaml "$GA" authgate plain.log; PLAIN=$AG_STARTED
acme_token "$GA"
# The TLS gateway reads the same (now written) state file at start.
start_authgate_at tls.yaml "$GTA" "authgate (TLS)" tls.log; TLSP=$AG_STARTED
P=$PATH_UNDER_TEST
# Over HTTP/1.1, as wrk speaks: over HTTP/2, curl often reports an early 401 to a POST
# whose body was not read as a stream error (exit 92, code 000).
check_token_enforced "the TLS gateway" "https://localhost:$GT$P" --http1.1 --cacert ca.pem --resolve "localhost:$GT:127.0.0.1"
check_token_enforced "the gateway" "http://127.0.0.1:$GW$P"
write_post_lua post.lua "$TOKEN"
load() { taskset -c 1 wrk -t1 -c$CONNS -d${2}s --latency -s post.lua "$1"; }
load http://127.0.0.1:$GW$P 2 >/dev/null; load https://127.0.0.1:$GT$P 2 >/dev/null
for ((r=1; r<=ROUNDS; r++)); do
  for t in http https; do
    if [[ $t == http ]]; then url=http://127.0.0.1:$GW$P; pid=$PLAIN; else url=https://127.0.0.1:$GT$P; pid=$TLSP; fi
    ng() { pids_cpu $NGINX $(pgrep -P $NGINX); }
    m0=$(machine_busy); g0=$(proc_cpu $pid); n0=$(ng); k0=$(children_cpu)
    out=$(load $url $SECS)
    m1=$(machine_busy); g1=$(proc_cpu $pid); n1=$(ng); k1=$(children_cpu)
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out"); n=$(awk '/ requests in / {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    bad=$(grep -c "Non-2xx\|Socket errors" <<<"$out" || true)
    cpu=$(awk -v j=$((g1-g0)) -v hz=$HZ -v n=$n 'BEGIN{printf "%.1f", j/hz*1e6/n}')
    mach=$(awk -v j=$(( (m1-m0) - (g1-g0) - (n1-n0) - (k1-k0) )) -v hz=$HZ -v s=$SECS 'BEGIN{printf "%.0f", j/hz/s*100}')
    printf 'round %d %-5s %8.0f req/s  p50 %s  p99 %s  gateway CPU %s us/req  other load %s%% of a core  errors-lines %s\n' $r $t $rps $p50 $p99 $cpu $mach $bad
  done
done
