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

SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
NOISE_PCT=${BENCH_NOISE_PCT:-15}
AUTH=${BENCH_AUTH:-1}
REDO=${BENCH_REDO:-2}
QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
WARMUP_SECS=2
PATH_UNDER_TEST=/m2/acme/v2/profile/batchUpdate

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# --- what this script starts, and its cleanup -----------------------------------------
SCRATCH='' NGINX_PID='' GATEWAY_PID='' CHILD_PID=''
cleanup() {
    local pid
    for pid in $CHILD_PID $GATEWAY_PID $NGINX_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $CHILD_PID $GATEWAY_PID $NGINX_PID; do
        wait "$pid" 2>/dev/null || true
    done
    CHILD_PID='' GATEWAY_PID='' NGINX_PID=''
    if [[ -n $SCRATCH ]]; then rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits for it: bash defers traps until a
# foreground command ends, while `wait` returns at once on a signal (cleanup then stops
# the command).
run() {
    "$@" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=''
    return "$rc"
}

for knob in SECS ROUNDS CONNS PROXY_CPU LOAD_CPU NOISE_PCT REDO QUIET_WAIT AUTH; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a whole number, got '${!knob}'"
done
((SECS > 0 && ROUNDS > 0 && CONNS > 0)) || die "BENCH_SECONDS, BENCH_ROUNDS and BENCH_CONNECTIONS must be > 0"

# --- tools ----------------------------------------------------------------------------
# nginx lives in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    say "bench: installing ${missing[*]} with apt-get"
    if ((EUID == 0)); then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
    fi
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
for tool in python3 taskset pgrep; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ -z ${BENCH_BIN:-} ]]; then
    for tool in cargo git; do command -v "$tool" >/dev/null || die "$tool is required (or set BENCH_BIN)"; done
fi
for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
    taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (this machine has $(nproc)); set BENCH_PROXY_CPU / BENCH_LOAD_CPU"
done
[[ $PROXY_CPU != "$LOAD_CPU" ]] || say "bench: warning: gateway and load share CPU $PROXY_CPU; figures will not be comparable"

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$BENCH_BIN
    [[ -x $BIN ]] || die "BENCH_BIN=$BIN is not an executable"
else
    say "bench: building authgate (cargo build --release)"
    run cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" >&2 ||
        die "cargo build failed; fix the build, or measure a built binary with BENCH_BIN=PATH"
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BIN=$TARGET_DIR/release/authgate
    [[ -x $BIN ]] || die "no binary at $BIN"
fi

# --- scratch folder ------------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/authgate-bench.XXXXXX")

# Three distinct free loopback ports: all bound at once, then released.
read -r UPSTREAM_PORT GATEWAY_PORT ADMIN_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')

# --- upstream: nginx ------------------------------------------------------------------
mkdir -p "$SCRATCH/nginx-tmp"
{
    # As root, nginx would otherwise switch its worker to `nobody`, who cannot enter the
    # 0700 scratch folder.
    if ((EUID == 0)); then echo "user root root;"; fi
    cat <<NGINX
worker_processes 1;
daemon off;
pid $SCRATCH/nginx.pid;
error_log $SCRATCH/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_body_temp_path $SCRATCH/nginx-tmp/body;
  proxy_temp_path $SCRATCH/nginx-tmp/proxy;
  fastcgi_temp_path $SCRATCH/nginx-tmp/fastcgi;
  uwsgi_temp_path $SCRATCH/nginx-tmp/uwsgi;
  scgi_temp_path $SCRATCH/nginx-tmp/scgi;
  default_type text/plain;
  server {
    listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
    location / { return 200 "ok\n"; }
  }
}
NGINX
} >"$SCRATCH/nginx.conf"

# --- gateway --------------------------------------------------------------------------
cat >"$SCRATCH/authgate.yaml" <<YAML
listen:
  proxy: "127.0.0.1:$GATEWAY_PORT"
  admin: "127.0.0.1:$ADMIN_PORT"
upstream:
  url: "http://127.0.0.1:$UPSTREAM_PORT"
state:
  backend: file
  path: "$SCRATCH/state.json"
runtime: { worker_threads: 1 }
log: { level: warn }
YAML
if ((AUTH)); then
    # A throwaway approver key for this run: the config holds only its SHA-256.
    read -r ADMIN_KEY ADMIN_KEY_SHA256 < <(python3 -c '
import hashlib, secrets
key = "authgate_ak_" + secrets.token_urlsafe(32)
print(key, hashlib.sha256(key.encode()).hexdigest())
')
    cat >>"$SCRATCH/authgate.yaml" <<YAML
admin:
  keys:
    - { name: bench, role: approver, sha256: "$ADMIN_KEY_SHA256" }
YAML
fi

# wrk: POST a small bulk-update body to a protected route, the product's hot path.
BODY=$'batch=pcId,profile.tier,profile.city\n1001,gold,Paris\n1002,silver,Lyon\n'
cat >"$SCRATCH/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA

wait_for() { # URL PID NAME LOG
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null "$1" && return 0
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$4" >&2; die "$3 exited during start-up"; }
        sleep 0.1
    done
    tail -n 20 "$4" >&2
    die "$3 not ready at $1 after 10 s"
}

nginx -e "$SCRATCH/nginx-error.log" -p "$SCRATCH" -c "$SCRATCH/nginx.conf" -t >/dev/null 2>&1 ||
    { nginx -e "$SCRATCH/nginx-error.log" -p "$SCRATCH" -c "$SCRATCH/nginx.conf" -t >&2 || true; die "nginx config rejected"; }
taskset -c "$LOAD_CPU" nginx -e "$SCRATCH/nginx-error.log" -p "$SCRATCH" -c "$SCRATCH/nginx.conf" \
    >"$SCRATCH/nginx.out" 2>&1 &
NGINX_PID=$!
wait_for "http://127.0.0.1:$UPSTREAM_PORT/" "$NGINX_PID" nginx "$SCRATCH/nginx-error.log"

"$BIN" check -c "$SCRATCH/authgate.yaml" >/dev/null
taskset -c "$PROXY_CPU" "$BIN" serve -c "$SCRATCH/authgate.yaml" >"$SCRATCH/authgate.log" 2>&1 &
GATEWAY_PID=$!
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "$GATEWAY_PID" authgate "$SCRATCH/authgate.log"

URL_DIRECT="http://127.0.0.1:$UPSTREAM_PORT$PATH_UNDER_TEST"
URL_GATEWAY="http://127.0.0.1:$GATEWAY_PORT$PATH_UNDER_TEST"
if ((AUTH)); then
    # Tenant acme requires authentication; wrk sends its token (direct requests too, so
    # both targets get the same bytes).
    admin() { # METHOD PATH BODY
        curl -sSf -X "$1" -H "Authorization: Bearer $ADMIN_KEY" \
            -H 'Content-Type: application/json' -d "$3" "http://127.0.0.1:$ADMIN_PORT$2"
    }
    admin PUT /admin/v1/tenants/acme/settings '{"require_authentication": true}' >/dev/null ||
        die "the admin API refused to turn on authentication (a build without it? try BENCH_AUTH=0)"
    TOKEN=$(admin POST /admin/v1/tenants/acme/token '{"expires_in": 86400}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') ||
        die "the admin API did not generate a token"
    printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$TOKEN" >>"$SCRATCH/post.lua"
    # The gateway must really check it: without the token, 401; with it, 200.
    code() { curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "$@" "$URL_GATEWAY"; }
    [[ $(code) == 401 ]] || die "the gateway let a request without the token through"
    [[ $(code -H "Authorization: Bearer $TOKEN") == 200 ]] || die "the gateway refused the token"
fi

# --- CPU accounting -------------------------------------------------------------------
# Busy (user+nice+system) jiffies of the whole machine.
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }
# utime+stime of a process (all its threads) in jiffies.
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# utime+stime of this shell's waited-for children (wrk, curl, …) in jiffies.
children_cpu() { awk '{ print $16 + $17 }' /proc/$$/stat; }
bench_cpu() {
    local total pid
    total=$(($(proc_cpu "$GATEWAY_PID") + $(children_cpu)))
    for pid in $NGINX_PID $(pgrep -P "$NGINX_PID" || true); do
        total=$((total + $(proc_cpu "$pid")))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# Waits (up to QUIET_WAIT s) until the machine used less than NOISE_PCT of one core for
# a second; fails if it did not.
wait_quiet() {
    local i b0 b1
    for ((i = 0; i < QUIET_WAIT; i++)); do
        b0=$(machine_busy); sleep 1; b1=$(machine_busy)
        (((b1 - b0) * 100 < NOISE_PCT * HZ)) && return 0
    done
    return 1
}

# --- load -----------------------------------------------------------------------------
# wrk output → "rps p50_ms p99_ms non2xx socket_errors requests"
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000
        if (u == "ms") return n
        if (u == "s")  return n * 1000
        if (u == "m")  return n * 60000
        return -1
    }
    / requests in /             { n = $1 }
    /^Requests\/sec:/           { rps = $2 }
    $1 == "50%"                 { p50 = ms($2) }
    $1 == "99%"                 { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/            { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %d %d %d\n", rps, p50, p99, bad, errs, n }
    ' "$1"
}

run_wrk() { # URL OUTFILE SECONDS
    run taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" "-d${3}s" --latency -s "$SCRATCH/post.lua" "$1" >"$2" 2>&1
}

say "bench: warm-up (${WARMUP_SECS}s each)"
run_wrk "$URL_DIRECT" "$SCRATCH/warmup.txt" "$WARMUP_SECS"
run_wrk "$URL_GATEWAY" "$SCRATCH/warmup.txt" "$WARMUP_SECS"

RESULTS=$SCRATCH/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct gateway; do
        url=$URL_DIRECT; [[ $target == gateway ]] && url=$URL_GATEWAY
        for ((try = 0; try <= REDO; try++)); do
            quiet=1
            if ! wait_quiet; then
                quiet=0
                say "bench: warning: the machine is busy (over $NOISE_PCT% of a core used by other processes); measuring anyway"
            fi
            out=$SCRATCH/wrk-$target-$round.txt
            m0=$(machine_busy); c0=$(bench_cpu); g0=$(proc_cpu "$GATEWAY_PID")
            run_wrk "$url" "$out" "$SECS"
            m1=$(machine_busy); c1=$(bench_cpu); g1=$(proc_cpu "$GATEWAY_PID")
            read -r rps p50 p99 bad errs requests < <(parse_wrk "$out")
            [[ -n $rps && $p50 != -1 && $p99 != -1 ]] || { cat "$out" >&2; die "cannot read wrk's output"; }
            ((bad == 0 && errs == 0)) || { cat "$out" >&2; die "$target: $bad non-2xx responses, $errs socket errors"; }
            other=$(((m1 - m0) - (c1 - c0)))
            ((other < 0)) && other=0
            noise_pct=$((other * 100 / (HZ * SECS)))
            cpu_us=$(awk -v j=$((g1 - g0)) -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", n ? j / hz * 1e6 / n : 0 }')
            [[ $target == gateway ]] || cpu_us=-
            say "$(printf 'bench: round %d %-7s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  gateway CPU %5s us/req  other load %d%% of a core' \
                "$round" "$target" "$rps" "$p50" "$p99" "$cpu_us" "$noise_pct")"
            if ((noise_pct <= NOISE_PCT)); then break; fi
            # Redoing helps against a burst, not against a machine that stays busy.
            if ((!quiet)); then break; fi
            if ((try < REDO)); then say "bench: round $round $target was noisy; redoing it"; fi
        done
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$noise_pct" >>"$RESULTS"
    done
done

# --- report ---------------------------------------------------------------------------
if [[ -n ${BENCH_BIN:-} ]]; then
    rev="$BIN ($("$BIN" --version 2>&1 | head -n1))"
else
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        rev="$rev (+ uncommitted changes)"
    fi
fi
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)

echo "authgate benchmark"
echo "  machine:  $(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr)"
echo "  authgate: $rev"
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
python3 - "$RESULTS" "$NOISE_PCT" <<'PY'
import statistics, sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
noise_limit = int(sys.argv[2])
by = {}
for target, _round, rps, p50, p99, cpu, noise in rows:
    d = by.setdefault(target, {"rps": [], "p50": [], "p99": [], "cpu": [], "noisy": 0})
    d["rps"].append(float(rps)); d["p50"].append(float(p50)); d["p99"].append(float(p99))
    if target == "gateway":
        d["cpu"].append(float(cpu))
    d["noisy"] += int(noise) > noise_limit

def cell(xs, fmt):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

header = ["", "requests/s", "p50 ms", "p99 ms", "gateway CPU µs/req"]
table = []
for target in ("direct", "gateway"):
    d = by[target]
    table.append([
        target + (" *" if d["noisy"] else ""),
        cell(d["rps"], "{:.0f}"), cell(d["p50"], "{:.3f}"), cell(d["p99"], "{:.3f}"),
        cell(d["cpu"], "{:.1f}") if target == "gateway" else "–",
    ])
ratio = lambda k: statistics.median(by["gateway"][k]) / statistics.median(by["direct"][k])
table.append(["gateway/direct", f"{ratio('rps'):.2f}x", f"{ratio('p50'):.2f}x", f"{ratio('p99'):.2f}x", ""])
widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
for r in [header] + table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
print()
print("medians over rounds, (min–max) in parentheses; gateway/direct compares medians.")
if any(d["noisy"] for d in by.values()):
    print(f"* noisy: in some rounds other processes used more than {noise_limit}% of a core, even after"
          " redos;\n  rerun on a quiet machine before comparing these figures.")
PY
