#!/usr/bin/env bash
# HTTP vs HTTPS through authgate, same method as bench/run.sh: nginx upstream on CPU 1,
# the gateway (1 worker thread) on CPU 0, wrk -t1 -c64 on CPU 1, interleaved rounds, a
# POST with a valid token to a protected route. A test CA and certificate are made with
# openssl for each run.
#   bench/tls.sh                         # builds this checkout; 3 rounds of 10 s
#   BENCH_SECONDS=5 BENCH_ROUNDS=5 BENCH_BIN=path/to/authgate bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${BENCH_BIN:-} ]]; then cargo build --release --quiet; BENCH_BIN=$PWD/target/release/authgate; fi
BIN=$BENCH_BIN; SECS=${BENCH_SECONDS:-10}; ROUNDS=${BENCH_ROUNDS:-3}; CONNS=64
PATH=$PATH:/usr/sbin
S=$(mktemp -d /tmp/tlsbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$S"; }
trap cleanup EXIT
read -r UP GW GA GT GTA < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(5)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(*(s.getsockname()[1] for s in ss))')
mkdir -p $S/tmp
cat > $S/nginx.conf <<N
$( ((EUID == 0)) && echo "user root root;")
worker_processes 1; daemon off; pid $S/nginx.pid; error_log $S/err.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 300s; keepalive_requests 100000000;
 client_body_temp_path $S/tmp/b; proxy_temp_path $S/tmp/p; fastcgi_temp_path $S/tmp/f; uwsgi_temp_path $S/tmp/u; scgi_temp_path $S/tmp/s;
 server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 "ok\n"; } } }
N
cd $S
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -keyout ca.key -out ca.pem -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout gw.key -out gw.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > gw.ext
openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile gw.ext -out gw.pem 2>/dev/null
read -r KEY SHA < <(python3 -c '
import hashlib, secrets
k="authgate_ak_"+secrets.token_urlsafe(32); print(k, hashlib.sha256(k.encode()).hexdigest())')
common="upstream: { url: \"http://127.0.0.1:$UP\" }
state: { backend: file, path: \"$S/state.json\" }
runtime: { worker_threads: 1 }
log: { level: warn }
admin: { keys: [ { name: bench, role: approver, sha256: \"$SHA\" } ] }"
printf 'listen: { proxy: "127.0.0.1:%s", admin: "127.0.0.1:%s" }\n%s\n' $GW $GA "$common" > plain.yaml
printf 'listen: { proxy: "127.0.0.1:%s", admin: "127.0.0.1:%s" }\ntls: { proxy: { cert: gw.pem, key: gw.key } }\n%s\n' $GT $GTA "$common" > tls.yaml
"$BIN" check -c tls.yaml >/dev/null
taskset -c 1 nginx -p $S -c $S/nginx.conf >/dev/null 2>&1 & PIDS+=($!); NGINX=$!
taskset -c 0 "$BIN" serve -c plain.yaml 2>plain.log & PIDS+=($!); PLAIN=$!
until curl -sf -o /dev/null http://127.0.0.1:$GA/readyz; do sleep 0.1; done
until curl -sf -o /dev/null http://127.0.0.1:$UP/; do sleep 0.1; done
adm() { curl -sSf -X "$1" -H "Authorization: Bearer $KEY" -d "$3" "http://127.0.0.1:$GA$2"; }
adm PUT /admin/v1/tenants/acme/settings '{"require_authentication": true}' >/dev/null
TOKEN=$(adm POST /admin/v1/tenants/acme/token '{"expires_in": 86400}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# The TLS gateway reads the same (now written) state file at start.
taskset -c 0 "$BIN" serve -c tls.yaml 2>tls.log & PIDS+=($!); TLSP=$!
until curl -sf -o /dev/null http://127.0.0.1:$GTA/readyz; do sleep 0.1; done
P=/m2/acme/v2/profile/batchUpdate
BODY=$'batch=pcId,profile.tier,profile.city\n1001,gold,Paris\n1002,silver,Lyon\n'
c=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem -X POST --data-binary "$BODY" https://localhost:$GT$P --resolve localhost:$GT:127.0.0.1 || true)
if [[ $c != 401 ]]; then echo "tls check got $c"; cat tls.log; curl -v --cacert ca.pem https://localhost:$GT$P --resolve localhost:$GT:127.0.0.1 2>&1 | tail -20; exit 1; fi
[[ $(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem -H "Authorization: Bearer $TOKEN" -X POST --data-binary "$BODY" https://localhost:$GT$P --resolve localhost:$GT:127.0.0.1) == 200 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -X POST --data-binary "$BODY" http://127.0.0.1:$GW$P) == 200 ]]
cat > post.lua <<L
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Bearer $TOKEN"
L
busy() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }
pcpu() { awk '{ print $14 + $15 }' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
run() { taskset -c 1 wrk -t1 -c$CONNS -d${2}s --latency -s post.lua "$1"; }
run http://127.0.0.1:$GW$P 2 >/dev/null; run https://127.0.0.1:$GT$P 2 >/dev/null
for ((r=1; r<=ROUNDS; r++)); do
  for t in http https; do
    if [[ $t == http ]]; then url=http://127.0.0.1:$GW$P; pid=$PLAIN; else url=https://127.0.0.1:$GT$P; pid=$TLSP; fi
    ng() { local t=0 p; for p in $NGINX $(pgrep -P $NGINX); do t=$((t + $(pcpu $p))); done; echo $t; }
    kids() { awk '{ print $16 + $17 }' /proc/$$/stat; }
    m0=$(busy); g0=$(pcpu $pid); n0=$(ng); k0=$(kids)
    out=$(run $url $SECS)
    m1=$(busy); g1=$(pcpu $pid); n1=$(ng); k1=$(kids)
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out"); n=$(awk '/ requests in / {print $1}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    bad=$(grep -c "Non-2xx\|Socket errors" <<<"$out" || true)
    cpu=$(awk -v j=$((g1-g0)) -v hz=$HZ -v n=$n 'BEGIN{printf "%.1f", j/hz*1e6/n}')
    mach=$(awk -v j=$(( (m1-m0) - (g1-g0) - (n1-n0) - (k1-k0) )) -v hz=$HZ -v s=$SECS 'BEGIN{printf "%.0f", j/hz/s*100}')
    printf 'round %d %-5s %8.0f req/s  p50 %s  p99 %s  gateway CPU %s us/req  other load %s%% of a core  errors-lines %s\n' $r $t $rps $p50 $p99 $cpu $mach $bad
  done
done
