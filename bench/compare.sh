#!/usr/bin/env bash
# authgate side by side with nginx and HAProxy doing the same job, on loopback, pinned,
# in interleaved rounds (direct, nginx, HAProxy, authgate, direct, …). See BENCHMARKS.md.
#
#   bench/compare.sh                          # 3 rounds, 10 s runs: about 10 minutes
#   BENCH_SECONDS=5 BENCH_ROUNDS=5 bench/compare.sh
#   BENCH_QUICK=1 bench/compare.sh            # smoke run: 1 round, 2 s, 1,000 idle conns, 64 MiB upload
#
# Knobs (environment):
#   BENCH_SECONDS      length of one wrk / oha run, seconds        (default 10)
#   BENCH_ROUNDS       interleaved rounds                          (default 3)
#   BENCH_QUICK        1: smoke run (overrides the four below unless they are set)
#   BENCH_CONNECTIONS  keep-alive connections of wrk and oha       (default 64)
#   BENCH_RATE         oha's fixed request rate, requests/s        (default 5000)
#   BENCH_IDLE_CONNS   idle keep-alive connections for the memory figure (default 10000)
#   BENCH_UPLOAD_MIB   size of the upload, MiB                     (default 1024)
#   BENCH_ROTATION     1: also measure authgate with a token rotation every 100 ms, and
#                      with the same driver loop sending GET /healthz instead (the
#                      control that the rotation is compared with) (default 1)
#   BENCH_PROXY_CPU    core every proxy is pinned to               (default 0)
#   BENCH_LOAD_CPU     core of the upstream, the sink and the load generators (default 1)
#   BENCH_NOISE_PCT    a wrk/oha run is redone when processes other than the benchmark's
#                      used more than this % of one core during it (default 15)
#   BENCH_REDO         how many times one run may be redone        (default 2)
#   BENCH_QUIET_WAIT   seconds to wait for a quiet machine before a run (default 10)
#   BENCH_FIXED        fixed-rate load generator: auto (oha, installed when missing, else
#                      wrk2), oha, wrk2 or none                    (default auto)
#   BENCH_BIN          an authgate binary to measure instead of building this checkout
#
# Installs nginx-light, haproxy, wrk and curl with apt-get, and oha with
# `cargo install oha --locked`, when they are missing. Without oha (or wrk2) the
# fixed-rate rows are reported as missing. Starts everything in a scratch folder on free
# loopback ports and stops exactly what it started on exit.
set -euo pipefail

RATE=${BENCH_RATE:-5000}
ROTATION=${BENCH_ROTATION:-1}
UPLOAD_PATH=/upload

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench
BENCH_NAME=compare
# say/die, cleanup of what is started (PIDS), run, CPU accounting, wrk, noise control.
source "$HERE/lib.sh"
common_knobs # BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, the pinning and the noise control
QUICK=${BENCH_QUICK:-0}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
UPLOAD_MIB=${BENCH_UPLOAD_MIB:-1024}
if ((QUICK)); then # a smoke run, unless the knobs are set
    SECS=${BENCH_SECONDS:-2}
    ROUNDS=${BENCH_ROUNDS:-1}
    IDLE_CONNS=${BENCH_IDLE_CONNS:-1000}
    UPLOAD_MIB=${BENCH_UPLOAD_MIB:-64}
    QUIET_WAIT=${BENCH_QUIET_WAIT:-1}
fi

check_whole_numbers QUICK SECS ROUNDS CONNS RATE IDLE_CONNS UPLOAD_MIB ROTATION PROXY_CPU LOAD_CPU NOISE_PCT REDO QUIET_WAIT
((SECS > 0 && ROUNDS > 0 && CONNS > 0 && RATE > 0 && IDLE_CONNS > 0 && UPLOAD_MIB > 0)) ||
    die "BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_RATE, BENCH_IDLE_CONNS and BENCH_UPLOAD_MIB must be > 0"

# --- tools ------------------------------------------------------------------------------
need_packages wrk:wrk nginx:nginx-light haproxy:haproxy curl:curl
need_tools python3 taskset pgrep rustc fallocate
# Fixed-rate load generator: oha (cargo install, several minutes), else wrk2, else none.
FIXED=''
FIXED_WANT=${BENCH_FIXED:-auto}
if [[ $FIXED_WANT == auto ]] && ! command -v oha >/dev/null && command -v cargo >/dev/null; then
    say "compare: installing oha (cargo install oha --locked, under nice; takes minutes)"
    run nice -n 19 cargo install oha --locked >&2 || say "compare: warning: cargo install oha failed"
fi
case $FIXED_WANT in
auto) if command -v oha >/dev/null; then FIXED=oha; elif command -v wrk2 >/dev/null; then FIXED=wrk2; fi ;;
oha | wrk2) command -v "$FIXED_WANT" >/dev/null && FIXED=$FIXED_WANT ;;
none) ;;
*) die "BENCH_FIXED must be auto, oha, wrk2 or none" ;;
esac
[[ -n $FIXED ]] || say "compare: warning: no fixed-rate load generator (oha or wrk2); the fixed-rate rows will be missing"
check_pinning proxies
resolve_bin

# Room for 10,000 idle connections (and their upstream side) in every process we start.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= IDLE_CONNS + 200)) ||
    die "open-file limit $(ulimit -n) is too low for $IDLE_CONNS idle connections; raise it (ulimit -Hn) or set BENCH_IDLE_CONNS"
NOFILE=$(ulimit -n)

# --- scratch folder, ports, sink ----------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-compare.XXXXXX")
mkdir -p "$SCRATCH"/tmp_proxy
# A private copy: a rebuild in this checkout during the run does not change what is measured.
cp "$BIN" "$SCRATCH/authgate"
AG_BIN=$SCRATCH/authgate
say "compare: building the upload sink (rustc -O bench/sink.rs)"
run rustc -O -o "$SCRATCH/sink" "$HERE/sink.rs" >&2 || die "cannot build bench/sink.rs"

read -r P_BACKEND P_SINK P_NGINX P_HAPROXY P_AG P_AG_ADMIN P_AGU P_AGU_ADMIN < <(free_ports 8)

USER_LINE=''
((EUID == 0)) && USER_LINE='user root root;'   # else the worker runs as nobody, locked out of $SCRATCH

# --- upstream: nginx answering 200 "ok\n" (equivalent to shared/bench backend.conf) ------
start_upstream_nginx backend "$P_BACKEND" "worker_rlimit_nofile $NOFILE;" \
    "worker_connections $((NOFILE - 500)); multi_accept on;" \
    "client_max_body_size 2g; lingering_time 600s;"
BACKEND_PID=$UPSTREAM_PID

taskset -c "$LOAD_CPU" "$SCRATCH/sink" "127.0.0.1:$P_SINK" >"$SCRATCH/sink.log" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
wait_for "http://127.0.0.1:$P_SINK/" "$SINK_PID" sink "$SCRATCH/sink.log"

# --- authgate: the gateway (upstream: backend) and an upload instance (upstream: sink) ---
new_admin_key
extra="limits:
  max_connections: $((IDLE_CONNS > 10000 ? IDLE_CONNS + 100 : 10100))
$(admin_keys_yaml)"
authgate_conf "$SCRATCH/authgate.yaml" "$P_AG" "$P_AG_ADMIN" "$P_BACKEND" "  backend: file
  path: \"$SCRATCH/state.json\"" "$extra"
authgate_conf "$SCRATCH/authgate-upload.yaml" "$P_AGU" "$P_AGU_ADMIN" "$P_SINK" "  backend: file
  path: \"$SCRATCH/state-upload.json\"" "$extra"
"$AG_BIN" check -c "$SCRATCH/authgate.yaml" >/dev/null || die "authgate rejected its bench config"
start_authgate() {
    start_authgate_at "$SCRATCH/authgate.yaml" "$P_AG_ADMIN" authgate "$SCRATCH/authgate.log" "$AG_BIN"
    AG_PID=$AG_STARTED
}
start_authgate
start_authgate_at "$SCRATCH/authgate-upload.yaml" "$P_AGU_ADMIN" "authgate (upload)" "$SCRATCH/authgate-upload.log" "$AG_BIN"
AGU_PID=$AG_STARTED

acme_token "$P_AG_ADMIN"
# A second tenant, rotated every 100 ms in the rotation row (rotating acme's own token
# would invalidate the one wrk sends: invalidation is immediate).
admin_api "$P_AG_ADMIN" PUT /admin/v1/tenants/rotor/settings '{"require_authentication": true}' >/dev/null

# --- peers: nginx and HAProxy doing the same job (equivalent to shared/bench/peer-configs.sh)
# /m2/ requires exactly "Bearer <token>" (else 401), other paths pass, upstream keep-alive
# pool, access logs off, one worker. The upload path /upload goes to the sink unchecked
# (as in authgate, where it is not a protected route).
cat >"$SCRATCH/nginx_proxy.conf" <<NG
$USER_LINE
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $SCRATCH/nginx_proxy.pid;
error_log $SCRATCH/nginx_proxy.err warn;
events { worker_connections $((NOFILE - 500)); multi_accept on; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_max_body_size 2g;
  client_body_temp_path $SCRATCH/tmp_proxy/body;
  proxy_temp_path $SCRATCH/tmp_proxy/proxy;
  fastcgi_temp_path $SCRATCH/tmp_proxy/fcgi;
  uwsgi_temp_path $SCRATCH/tmp_proxy/uwsgi;
  scgi_temp_path $SCRATCH/tmp_proxy/scgi;
  default_type text/plain;
  upstream backend {
    server 127.0.0.1:$P_BACKEND;
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  upstream sink {
    server 127.0.0.1:$P_SINK;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    location /m2/ {
      if (\$http_authorization != "Bearer $TOKEN") { return 401 "unauthorized\n"; }
      proxy_pass http://backend;
    }
    location /m2/acme/upload {
      if (\$http_authorization != "Bearer $TOKEN") { return 401 "unauthorized\n"; }
      proxy_pass http://sink;
    }
    location = $UPLOAD_PATH {
      proxy_pass http://sink;
    }
    location / {
      proxy_pass http://backend;
    }
  }
}
NG
cat >"$SCRATCH/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn $((IDLE_CONNS + 100))
  ulimit-n $NOFILE
  no strict-limits
  pidfile $SCRATCH/haproxy.pid
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAPROXY backlog 4096
  acl is_m2 path_beg /m2/
  acl auth_ok req.hdr(authorization) -m str "Bearer $TOKEN"
  http-request return status 401 content-type text/plain string "unauthorized" if is_m2 !auth_ok
  use_backend sink if { path_beg /m2/acme/upload }
  use_backend sink if { path $UPLOAD_PATH }
  default_backend be
backend be
  server s1 127.0.0.1:$P_BACKEND maxconn 0
backend sink
  server k1 127.0.0.1:$P_SINK
HA
nginx -t -p "$SCRATCH" -e "$SCRATCH/nginx_proxy.err" -c "$SCRATCH/nginx_proxy.conf" >/dev/null 2>&1 ||
    { nginx -t -p "$SCRATCH" -e "$SCRATCH/nginx_proxy.err" -c "$SCRATCH/nginx_proxy.conf" >&2 || true; die "nginx proxy config rejected"; }
haproxy -q -c -f "$SCRATCH/haproxy.cfg" >&2 || die "haproxy config rejected"
start_nginx() {
    taskset -c "$PROXY_CPU" nginx -p "$SCRATCH" -e "$SCRATCH/nginx_proxy.err" -c "$SCRATCH/nginx_proxy.conf" >>"$SCRATCH/nginx_proxy.out" 2>&1 &
    NGINX_PID=$!; PIDS+=("$NGINX_PID")
    wait_for "http://127.0.0.1:$P_NGINX/" "$NGINX_PID" "nginx proxy" "$SCRATCH/nginx_proxy.err"
}
start_haproxy() {
    taskset -c "$PROXY_CPU" haproxy -db -f "$SCRATCH/haproxy.cfg" >>"$SCRATCH/haproxy.log" 2>&1 &
    HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")
    wait_for "http://127.0.0.1:$P_HAPROXY/" "$HAPROXY_PID" haproxy "$SCRATCH/haproxy.log"
}
start_nginx
start_haproxy
# Stops one proxy (only the process this script started) and starts it again: the idle
# memory figure needs a process that has not yet grown for 10,000 connections (allocators
# keep freed memory, so a second measurement in the same process would read ~0).
restart_proxy() { # TARGET
    local var
    case $1 in nginx) var=NGINX_PID ;; haproxy) var=HAPROXY_PID ;; authgate) var=AG_PID ;; *) return 0 ;; esac
    stop_pid "${!var}"
    # The listening port is free again once the process is gone (nginx and HAProxy set
    # SO_REUSEADDR, authgate too), but give the kernel a moment.
    sleep 0.3
    "start_$1"
}

TARGETS=(direct nginx haproxy authgate)
declare -A PORT=([direct]=$P_BACKEND [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [authgate]=$P_AG)
declare -A UPORT=([direct]=$P_SINK [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [authgate]=$P_AGU)
# The proxy's processes (nginx: master and worker). Empty for direct.
proxy_pids() {
    case $1 in
    direct) ;;
    nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true) ;;
    haproxy) echo "$HAPROXY_PID" $(pgrep -P "$HAPROXY_PID" || true) ;;
    authgate) echo "$AG_PID" ;;
    authgate-upload) echo "$AGU_PID" ;;
    esac
}

# The request (BODY, from lib.sh): POST a small bulk-update body with the token, on every target.
printf '%s' "$BODY" >"$SCRATCH/body"
write_post_lua "$SCRATCH/post.lua" "$TOKEN"
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$SCRATCH/idle-headers"

# Every proxy must really check the token: without it 401, with it 200.
for t in nginx haproxy authgate; do
    check_token_enforced "$t" "http://127.0.0.1:${PORT[$t]}$PATH_UNDER_TEST"
done
[[ $(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$P_BACKEND$PATH_UNDER_TEST") == 200 ]] || die "the backend does not answer 200"

# --- memory accounting (CPU accounting: lib.sh) ----------------------------------------------
status_kib() { # FIELD PID... → sum in KiB
    local f=$1 t=0 p v; shift
    for p in "$@"; do
        v=$(awk -v f="$f:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-0}" >>"$RESULTS"; } # METRIC TARGET ROUND VALUE NOISE

# --- load generators ----------------------------------------------------------------------
# Fixed rate → "p50_ms p99_ms ok_requests bad"
run_fixed() { # URL OUTFILE SECONDS
    case $FIXED in
    oha)
        run taskset -c "$LOAD_CPU" oha --no-tui --output-format json -q "$RATE" -c "$CONNS" -z "${3}s" \
            --latency-correction -m POST -d "$BODY" -T application/x-www-form-urlencoded \
            -H "Authorization: Bearer $TOKEN" "$1" >"$2" 2>"$2.err" || { cat "$2.err" >&2; return 1; }
        parse_oha "$2"
        ;;
    wrk2)
        run taskset -c "$LOAD_CPU" wrk2 -t1 "-c$CONNS" "-d${3}s" "-R$RATE" --latency -s "$SCRATCH/post.lua" "$1" >"$2" 2>&1
        read -r _ p50 p99 bad errs n < <(parse_wrk "$2")
        echo "$p50 $p99 $n $((bad + errs))"
        ;;
    esac
}

# Token rotation every 100 ms (tenant rotor) through the admin API, from core LOAD_CPU.
# With MODE `noop`, the same loop (same process, connection and cadence) sends
# `GET /healthz` instead: the control run, which disturbs the machine exactly as the
# rotation driver does but changes nothing, so the rotation's own cost is the difference.
start_rotation() { # MODE (rotate|noop)
    taskset -c "$LOAD_CPU" python3 - "$P_AG_ADMIN" "$ADMIN_KEY" "$SCRATCH/rotations" "$1" <<'PY' &
import http.client, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port, key, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
n = 0
nxt = time.monotonic()
try:
    while True:
        if mode == "rotate":
            c.request("POST", "/admin/v1/tenants/rotor/token", body="{}",
                      headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        else:
            c.request("GET", "/healthz")
        r = c.getresponse(); r.read()
        if r.status != (201 if mode == "rotate" else 200):
            sys.exit(f"{mode} answered {r.status}")
        n += 1
        open(out, "w").write(str(n))
        nxt += 0.1
        time.sleep(max(0.0, nxt - time.monotonic()))
except (KeyboardInterrupt, SystemExit):
    pass
PY
    ROT_PID=$!; PIDS+=("$ROT_PID")
}
stop_rotation() {
    stop_pid "$ROT_PID"
    ROT_PID=''
}

# Load functions for `measure` (lib.sh) on WRK_URL: wrk, wrk while the rotation runs, and
# the fixed-rate generator.
closed_load() { wrk_load "$1"; }
rotation_load() {
    local rc=0
    start_rotation rotate
    wrk_load "$1" || rc=$?
    stop_rotation
    return "$rc"
}
control_load() {
    local rc=0
    start_rotation noop
    wrk_load "$1" || rc=$?
    stop_rotation
    return "$rc"
}
fixed_load() {
    run_fixed "$WRK_URL" "$1" "$SECS" >"$1.parsed" || return 1
    read -r P50 P99 N BAD <"$1.parsed"
    ERRS=0 RPS=$(awk -v n="$N" -v s="$SECS" 'BEGIN { print n / s }')
}
report_load() {
    say "$(printf 'compare: round %d %-8s %-8s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  proxy CPU %6s us/req  other load %d%%%s' \
        "$round" "$kind" "$target" "$RPS" "$P50" "$P99" "$([[ $target == direct ]] && echo - || echo "$CPU_US")" "$NOISE" \
        "$([[ $kind == rotation ]] && echo "  rotations $(cat "$SCRATCH/rotations" 2>/dev/null || echo 0)")")"
}

# One timed run with noise control: wrk or the fixed-rate generator, on TARGET.
# Records rps/p50/p99/cpu for KIND (closed|fixed|rotation).
measure_load() { # KIND TARGET ROUND
    local kind=$1 target=$2 round=$3
    WRK_URL="http://127.0.0.1:${PORT[$target]}$PATH_UNDER_TEST"
    # shellcheck disable=SC2046 # the proxy's pids, one word each
    measure "round $round $kind $target" "${kind}_load" "$SCRATCH/$kind-$target-$round.out" report_load $(proxy_pids "$target")
    record "$kind.rps" "$target" "$round" "$RPS" "$NOISE"
    record "$kind.p50" "$target" "$round" "$P50" "$NOISE"
    record "$kind.p99" "$target" "$round" "$P99" "$NOISE"
    [[ $target == direct ]] || record "$kind.cpu" "$target" "$round" "$CPU_US" "$NOISE"
}

# Idle memory: IDLE_CONNS keep-alive connections, one request each, held; RSS growth.
measure_idle() { # TARGET ROUND
    local target=$1 round=$2 pids before after per m0 c0 m1 c1 other t0 t1
    pids=$(proxy_pids "$target")
    [[ -n $pids ]] || return 0
    wait_quiet || true
    m0=$(machine_busy); c0=$(bench_cpu); t0=$(date +%s%N)
    run taskset -c "$LOAD_CPU" python3 "$HERE/idle_conns.py" 127.0.0.1 "${PORT[$target]}" \
        "$PATH_UNDER_TEST" "$IDLE_CONNS" "$SCRATCH/idle-headers" $pids >"$SCRATCH/idle.out" ||
        die "$target: the idle-connection probe failed"
    read -r before after per <"$SCRATCH/idle.out"
    m1=$(machine_busy); c1=$(bench_cpu); t1=$(date +%s%N)
    other=$(((m1 - m0) - (c1 - c0))); ((other < 0)) && other=0
    local noise=$((other * 100 * 1000000000 / (HZ * (t1 - t0 + 1))))
    say "$(printf 'compare: round %d idle     %-8s %d connections: RSS %.1f -> %.1f MiB, %.0f bytes/connection' \
        "$round" "$target" "$IDLE_CONNS" "$(awk -v b="$before" 'BEGIN { print b / 1048576 }')" \
        "$(awk -v b="$after" 'BEGIN { print b / 1048576 }')" "$per")"
    record idle.bytes "$target" "$round" "$per" "$noise"
    sleep 1 # let the proxy close the client side
}

# Upload: UPLOAD_MIB through to the sink (direct: straight to the sink).
UPLOAD_FILE=$SCRATCH/upload.bin
fallocate -l "${UPLOAD_MIB}M" "$UPLOAD_FILE" 2>/dev/null || dd if=/dev/zero of="$UPLOAD_FILE" bs=1M count="$UPLOAD_MIB" status=none
UPLOAD_BYTES=$((UPLOAD_MIB * 1048576))
cat "$UPLOAD_FILE" >/dev/null # into the page cache
measure_upload() { # TARGET ROUND
    local target=$1 round=$2 pids p rss0 hwm g0 g1 res code secs answer m0 c0 m1 c1 other noise
    pids=$(proxy_pids "$target"); [[ $target == authgate ]] && pids=$(proxy_pids authgate-upload)
    wait_quiet || true
    for p in $pids; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || say "compare: warning: cannot reset VmHWM of $p"; done
    rss0=$(status_kib VmRSS $pids)
    m0=$(machine_busy); c0=$(bench_cpu); g0=$(pids_cpu $pids)
    res=$(run taskset -c "$LOAD_CPU" curl -sS -X POST -T "$UPLOAD_FILE" -H 'Content-Type: application/octet-stream' \
        -H 'Expect:' -o "$SCRATCH/upload.answer" -w '%{http_code} %{time_total}' \
        "http://127.0.0.1:${UPORT[$target]}$UPLOAD_PATH") || die "$target: the upload failed"
    m1=$(machine_busy); c1=$(bench_cpu); g1=$(pids_cpu $pids)
    hwm=$(status_kib VmHWM $pids)
    read -r code secs <<<"$res"
    answer=$(cat "$SCRATCH/upload.answer")
    [[ $code == 200 && $answer == "ok $UPLOAD_BYTES" ]] || die "$target: upload answered $code '$answer' (expected 'ok $UPLOAD_BYTES')"
    other=$(((m1 - m0) - (c1 - c0))); ((other < 0)) && other=0
    noise=$(awk -v o="$other" -v hz="$HZ" -v s="$secs" 'BEGIN { printf "%d", o * 100 / (hz * s) }')
    local mbs cpu_s grow
    mbs=$(awk -v b="$UPLOAD_BYTES" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
    cpu_s=$(awk -v j=$((g1 - g0)) -v hz="$HZ" 'BEGIN { printf "%.2f", j / hz }')
    grow=$(awk -v h="$hwm" -v r="$rss0" 'BEGIN { printf "%.2f", (h - r) / 1024 }')
    if [[ $target == direct ]]; then
        say "$(printf 'compare: round %d upload   %-8s %7s MB/s  (curl straight to the sink)' "$round" "$target" "$mbs")"
    else
        say "$(printf 'compare: round %d upload   %-8s %7s MB/s  proxy CPU %5s s  peak RSS %.1f MiB (+%s MiB)  other load %d%%' \
            "$round" "$target" "$mbs" "$cpu_s" "$(awk -v h="$hwm" 'BEGIN { print h / 1024 }')" "$grow" "$noise")"
    fi
    record upload.mbs "$target" "$round" "$mbs" "$noise"
    if [[ $target != direct ]]; then
        record upload.cpu "$target" "$round" "$cpu_s" "$noise"
        record upload.peak "$target" "$round" "$(awk -v h="$hwm" 'BEGIN { printf "%.2f", h / 1024 }')" "$noise"
        record upload.growth "$target" "$round" "$grow" "$noise"
    fi
}

# --- the run --------------------------------------------------------------------------------
say "compare: warm-up (${WARMUP_SECS}s each)"
for t in "${TARGETS[@]}"; do
    run_wrk "http://127.0.0.1:${PORT[$t]}$PATH_UNDER_TEST" "$SCRATCH/warmup.txt" "$WARMUP_SECS"
done
START=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do measure_load closed "$t" "$round"; done
    if ((ROTATION)); then
        measure_load control authgate "$round"
        measure_load rotation authgate "$round"
    fi
    if [[ -n $FIXED ]]; then
        for t in "${TARGETS[@]}"; do measure_load fixed "$t" "$round"; done
    fi
    for t in "${TARGETS[@]}"; do measure_upload "$t" "$round"; done
    for t in "${TARGETS[@]}"; do
        [[ $t == direct ]] && continue
        # A fresh process, warmed up like the others (whose baseline is a warm process).
        restart_proxy "$t"
        run_wrk "http://127.0.0.1:${PORT[$t]}$PATH_UNDER_TEST" "$SCRATCH/warmup.txt" "$WARMUP_SECS"
        measure_idle "$t" "$round"
    done
done

# --- report ---------------------------------------------------------------------------------
if [[ -n ${BENCH_BIN:-} ]]; then
    rev="$BIN ($("$BIN" --version 2>&1 | head -n1))"
else
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || rev="$rev (+ uncommitted changes)"
fi
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
case $FIXED in
oha) fixed_tool="$(oha --version 2>&1 | head -n1)" ;;
wrk2) fixed_tool="wrk2" ;;
*) fixed_tool="none (fixed-rate rows missing)" ;;
esac
echo "authgate vs nginx vs HAProxy"
echo "  machine:  $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr)"
echo "  authgate: $rev"
echo "  peers:    $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>&1 | head -n1 | awk '{ print "HAProxy", $3 }')"
echo "  tools:    $(wrk --version 2>&1 | head -n1 | awk '{ print $1, $2 }'), $fixed_tool, curl, python3"
echo "  pinning:  each proxy on CPU $PROXY_CPU, one worker; upstream nginx, sink and load generators on CPU $LOAD_CPU"
echo "  closed:   wrk -t1 -c$CONNS -d${SECS}s --latency, POST ${#BODY}-byte body + Bearer token, $PATH_UNDER_TEST"
echo "  fixed:    ${FIXED:-(missing)} -q $RATE -c $CONNS -z ${SECS}s --latency-correction, same request"
echo "  idle:     $IDLE_CONNS keep-alive connections, one GET each, held; RSS growth / $IDLE_CONNS"
echo "  upload:   curl -X POST -T <${UPLOAD_MIB} MiB file> (Content-Length) to $UPLOAD_PATH → sink (authgate: second instance, upstream = sink)"
echo "  rounds:   $ROUNDS, interleaved ${TARGETS[*]} after a ${WARMUP_SECS}s warm-up; $(( $(date +%s) - START )) s"
echo
python3 - "$RESULTS" "$NOISE_PCT" "$RATE" <<'PY'
import statistics, sys

noise_limit = int(sys.argv[2])
rate = sys.argv[3]
data, noisy = {}, set()
for line in open(sys.argv[1]):
    metric, target, _round, value, noise = line.rstrip("\n").split("\t")
    data.setdefault(metric, {}).setdefault(target, []).append(float(value))
    if metric.split(".")[0] in ("closed", "fixed", "control", "rotation") and int(noise) > noise_limit:
        noisy.add((metric.split(".")[0], target))

ROWS = [
    ("closed.rps", "closed-loop requests/s", "{:.0f}"),
    ("closed.p50", "closed-loop p50 ms", "{:.3f}"),
    ("closed.p99", "closed-loop p99 ms", "{:.3f}"),
    ("closed.cpu", "closed-loop proxy CPU µs/req", "{:.1f}"),
    ("fixed.p50", f"{rate}/s p50 ms", "{:.3f}"),
    ("fixed.p99", f"{rate}/s p99 ms", "{:.3f}"),
    ("fixed.cpu", f"{rate}/s proxy CPU µs/req", "{:.1f}"),
    ("idle.bytes", "idle bytes/connection", "{:.0f}"),
    ("upload.mbs", "upload MB/s", "{:.0f}"),
    ("upload.cpu", "upload proxy CPU s", "{:.2f}"),
    ("upload.peak", "upload peak RSS MiB", "{:.1f}"),
    ("upload.growth", "upload peak RSS growth MiB", "{:.1f}"),
    ("control.rps", "no-op/100ms requests/s", "{:.0f}"),
    ("control.p99", "no-op/100ms p99 ms", "{:.3f}"),
    ("control.cpu", "no-op/100ms proxy CPU µs/req", "{:.1f}"),
    ("rotation.rps", "rotation/100ms requests/s", "{:.0f}"),
    ("rotation.p99", "rotation/100ms p99 ms", "{:.3f}"),
    ("rotation.cpu", "rotation/100ms proxy CPU µs/req", "{:.1f}"),
]
TARGETS = ["direct", "nginx", "haproxy", "authgate"]

def cell(xs, fmt):
    if not xs:
        return "–"
    m = statistics.median(xs)
    if len(xs) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

header = ["", "direct", "nginx", "HAProxy", "authgate", "HAProxy/nginx", "authgate/nginx"]
table = []
for key, label, fmt in ROWS:
    if key.startswith("fixed") and key not in data:
        table.append([label, "missing", "missing", "missing", "missing", "", ""])
        continue
    if key not in data:
        continue
    d = data[key]
    kind = key.split(".")[0]
    cols = []
    for t in TARGETS:
        src = d.get(t if kind not in ("control", "rotation") else ("authgate" if t == "authgate" else ""), [])
        c = cell(src, fmt)
        if (kind, t) in noisy and src:
            c += " *"
        cols.append(c)
    nginx = statistics.median(d["nginx"]) if d.get("nginx") else None
    def ratio(t):
        return f"{statistics.median(d[t]) / nginx:.2f}x" if nginx and d.get(t) else ""
    if kind in ("control", "rotation"):
        # The control against authgate's closed-loop figure (what the driver's loop
        # costs); the rotation against the control (what the rotations themselves cost).
        ref = "closed" if kind == "control" else "control"
        base = data.get(key.replace(kind, ref), {}).get("authgate")
        own = f"{statistics.median(d['authgate']) / statistics.median(base):.2f}x {ref}" if base and d.get("authgate") else ""
        table.append([label] + cols + ["", own])
        continue
    table.append([label] + cols + [ratio("haproxy"), ratio("authgate")])

widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
for r in [header] + table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
print()
print("medians over rounds, (min–max) in parentheses; x/nginx compares medians; no-op rows compare with\n"
      "authgate's closed-loop figure, rotation rows with the no-op rows (same driver loop, GET /healthz).")
closed = data.get("closed.rps", {}).get("authgate")
control = data.get("control.rps", {}).get("authgate")
rot = data.get("rotation.rps", {}).get("authgate")
med = lambda k: statistics.median(data[k]["authgate"])
if closed and control and rot:
    print(f"rotation every 100 ms: authgate requests/s {med('rotation.rps') / med('control.rps'):.3f}x and p99 "
          f"{med('rotation.p99') / med('control.p99'):.2f}x of the same loop doing nothing; that loop itself: "
          f"requests/s {med('control.rps') / med('closed.rps'):.3f}x, p99 {med('control.p99') / med('closed.p99'):.2f}x "
          "of no loop.")
if noisy:
    print(f"* noisy: in some rounds other processes used more than {noise_limit}% of a core, even after redos;"
          "\n  rerun on a quiet machine before comparing these figures.")
PY
