#!/usr/bin/env bash
# Instruction count per proxied request, with callgrind: repeatable on a noisy machine
# (it counts instructions, not seconds), so two builds can be compared exactly.
#
#   bench/profile.sh                 # build this checkout (cargo profile dist) and profile it
#   PROFILE_BIN=path/to/authgate bench/profile.sh
#   PROFILE_PROFILE=release bench/profile.sh   # the test build instead of `dist`
#   PROFILE_REQUESTS=5000 PROFILE_TOP=30 bench/profile.sh
#   PROFILE_SYSCALLS=1 bench/profile.sh   # system calls per request (strace -c) instead
#   PROFILE_STATE=redis bench/profile.sh  # the same with state.backend redis (a
#                                         # redis-server of its own): the request path
#                                         # must cost what it costs with the file store
#   PROFILE_ACCESS_LOG=json bench/profile.sh  # with the access log on (json or text, to a
#                                         # file in the scratch folder); callgrind counts
#                                         # the writer thread too
#
# An nginx upstream answers `200 ok`; tenant `acme` requires authentication and every
# request (POST, keep-alive, 16 connections, `ab`) carries its token. The counters are
# zeroed after a warm-up run, so connection set-up and start-up are not counted.
# Installs valgrind, nginx-light, apache2-utils (ab) and curl when missing.
set -euo pipefail

REQUESTS=${PROFILE_REQUESTS:-4000}
TOP=${PROFILE_TOP:-25}
cd "$(dirname "$0")/.."

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v strace >/dev/null || missing+=(strace)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v curl >/dev/null || missing+=(curl)
[[ ${PROFILE_STATE:-file} != redis ]] || command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [[ -n ${PROFILE_BIN:-} ]]; then
    BIN=$PROFILE_BIN
else
    cargo build --profile "${PROFILE_PROFILE:-dist}" --bin authgate --quiet
    BIN=target/${PROFILE_PROFILE:-dist}/authgate
fi

SCRATCH=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

read -r UP GW ADMIN REDIS < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

mkdir -p "$SCRATCH/tmp"
cat >"$SCRATCH/nginx.conf" <<NGINX
$( ((EUID == 0)) && echo "user root root;")
worker_processes 1;
daemon off;
pid $SCRATCH/nginx.pid;
error_log $SCRATCH/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $SCRATCH/tmp/body;
  proxy_temp_path $SCRATCH/tmp/proxy;
  fastcgi_temp_path $SCRATCH/tmp/fastcgi;
  uwsgi_temp_path $SCRATCH/tmp/uwsgi;
  scgi_temp_path $SCRATCH/tmp/scgi;
  server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } }
}
NGINX
nginx -p "$SCRATCH" -c "$SCRATCH/nginx.conf" -e "$SCRATCH/nginx.err" &
PIDS+=($!)

read -r KEY DIGEST < <(python3 -c '
import hashlib, secrets
k = "authgate_ak_" + secrets.token_urlsafe(32)
print(k, hashlib.sha256(k.encode()).hexdigest())')
STATE="state: { path: \"$SCRATCH/state.json\" }"
if [[ ${PROFILE_STATE:-file} == redis ]]; then
    mkdir -p "$SCRATCH/redis"
    redis-server --port "$REDIS" --bind 127.0.0.1 --dir "$SCRATCH/redis" --save '' \
        --appendonly no --logfile "$SCRATCH/redis.log" &
    PIDS+=($!)
    STATE="state: { backend: redis, redis: { url: \"redis://127.0.0.1:$REDIS\", replica: profile } }"
fi
cat >"$SCRATCH/authgate.yaml" <<YAML
listen: { proxy: "127.0.0.1:$GW", admin: "127.0.0.1:$ADMIN" }
upstream: { url: "http://127.0.0.1:$UP" }
$STATE
runtime: { worker_threads: 1 }
log: { level: warn }
admin: { keys: [ { name: bench, role: approver, sha256: "$DIGEST" } ] }
YAML
if [[ -n ${PROFILE_ACCESS_LOG:-} ]]; then
    echo "access_log: { target: \"$SCRATCH/access.log\", format: $PROFILE_ACCESS_LOG }" >>"$SCRATCH/authgate.yaml"
fi
if [[ ${PROFILE_STATE:-file} == redis ]]; then
    for _ in $(seq 100); do
        "$BIN" cluster init -c "$SCRATCH/authgate.yaml" >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
if [[ -n ${PROFILE_SYSCALLS:-} ]]; then
    "$BIN" serve -c "$SCRATCH/authgate.yaml" 2>"$SCRATCH/authgate.log" &
else
    valgrind --tool=callgrind --callgrind-out-file="$SCRATCH/callgrind.out" \
        "$BIN" serve -c "$SCRATCH/authgate.yaml" 2>"$SCRATCH/valgrind.log" &
fi
VG=$!
PIDS+=($VG)
for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break
    sleep 0.1
done
admin() { curl -sSf -X "$1" -H "Authorization: Bearer $KEY" -d "$3" "http://127.0.0.1:$ADMIN$2"; }
admin PUT /admin/v1/tenants/acme/settings '{"require_authentication": true}' >/dev/null
TOKEN=$(admin POST /admin/v1/tenants/acme/token '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
printf 'batch=pcId,profile.tier\n1001,gold\n' >"$SCRATCH/body"
URL="http://127.0.0.1:$GW/m2/acme/v2/profile/batchUpdate"
run() {
    ab -q -k -n "$1" -c 16 -p "$SCRATCH/body" -T application/x-www-form-urlencoded \
        -H "Authorization: Bearer $TOKEN" "$URL" >"$SCRATCH/ab.out"
    grep -q "^Non-2xx responses" "$SCRATCH/ab.out" && { cat "$SCRATCH/ab.out"; exit 1; }
    grep "^Complete requests" "$SCRATCH/ab.out" | awk '{print $3}'
}
run 500 >/dev/null
if [[ -n ${PROFILE_SYSCALLS:-} ]]; then
    # Counted from attach (after the warm-up) to detach, over every thread.
    strace -f -c -p "$VG" -o "$SCRATCH/strace.out" 2>"$SCRATCH/strace.log" &
    STRACE=$!
    until grep -q "attached" "$SCRATCH/strace.log" 2>/dev/null; do sleep 0.05; done
    DONE=$(run "$REQUESTS")
    kill -INT "$STRACE"
    wait "$STRACE" || true
    echo "binary:   $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "requests: $DONE (POST with a valid token, keep-alive, 16 connections)"
    echo
    echo "system calls per request:"
    awk -v n="$DONE" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { calls = $4; name = $NF; errs = (NF == 6) ? $5 : 0;
        printf "  %-16s %6.2f  (errors %.2f)\n", name, calls / n, errs / n; total += calls }
        END { printf "  %-16s %6.2f\n", "total", total / n }' "$SCRATCH/strace.out"
    exit 0
fi
callgrind_control --zero "$VG" >/dev/null
DONE=$(run "$REQUESTS")
callgrind_control --dump "$VG" >/dev/null
OUT=$(ls -t "$SCRATCH"/callgrind.out* | head -n1)
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "binary:       $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "requests:     $DONE (POST with a valid token, keep-alive, 16 connections; state: ${PROFILE_STATE:-file}; access log: ${PROFILE_ACCESS_LOG:-off})"
echo "instructions: $TOTAL total, $((TOTAL / DONE)) per request"
echo
echo "top functions by their own instructions:"
callgrind_annotate --threshold=100 "$OUT" 2>/dev/null | sed -n '/file:function/,$p' | grep -v "(100.0%)" | sed -n "2,$((TOP + 1))p" |
    sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##'
if [[ -n ${PROFILE_KEEP:-} ]]; then
    cp "$OUT" "$PROFILE_KEEP"
    echo "(callgrind output kept in $PROFILE_KEEP)"
fi
