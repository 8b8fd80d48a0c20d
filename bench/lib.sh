# Helpers shared by the benchmark drivers (run.sh, compare.sh, tls.sh, state.sh).
# Sourced, not run. Before sourcing, a driver sets BENCH_NAME (the prefix of its
# messages); the noise-control helpers read the driver's knobs NOISE_PCT, QUIET_WAIT,
# REDO, LOAD_CPU and CONNS, and SCRATCH once it exists.
#
# What the driver starts in the background goes into PIDS (or CHILD_PID, see `run`):
# on exit, also on Ctrl-C or SIGTERM, exactly those processes are stopped and the
# scratch folder is removed.

BENCH_NAME=${BENCH_NAME:-bench}
# nginx and haproxy live in /usr/sbin, which a non-root PATH may lack; oha in ~/.cargo/bin.
PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
HZ=$(getconf CLK_TCK)
# The request of every driver: POST a small bulk-update body to a protected route, the
# product's hot path.
PATH_UNDER_TEST=/m2/acme/v2/profile/batchUpdate
BODY=$'batch=pcId,profile.tier,profile.city\n1001,gold,Paris\n1002,silver,Lyon\n'

say() { printf '%s\n' "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

# --- what the driver starts, and its cleanup ------------------------------------------
SCRATCH='' PIDS=() CHILD_PID=''
cleanup() {
    local pid
    for pid in $CHILD_PID "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $CHILD_PID "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    CHILD_PID='' PIDS=()
    if [[ -n $SCRATCH ]]; then rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes PID from PIDS (after the driver stopped it itself).
forget_pid() {
    local rest=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || rest+=("$p"); done
    PIDS=("${rest[@]}")
}

# Stops one process this driver started (TERM, then waits for it) and forgets it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

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

# Dies unless every KNOB (a variable name) holds a whole number.
check_whole_numbers() { # KNOB...
    local knob
    for knob in "$@"; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a whole number, got '${!knob}'"
    done
}

# The knobs every measuring driver shares (see run.sh's header), from the environment,
# checked.
common_knobs() {
    SECS=${BENCH_SECONDS:-10}
    ROUNDS=${BENCH_ROUNDS:-3}
    CONNS=${BENCH_CONNECTIONS:-64}
    PROXY_CPU=${BENCH_PROXY_CPU:-0}
    LOAD_CPU=${BENCH_LOAD_CPU:-1}
    NOISE_PCT=${BENCH_NOISE_PCT:-15}
    REDO=${BENCH_REDO:-2}
    QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
    WARMUP_SECS=2
    check_whole_numbers SECS ROUNDS CONNS PROXY_CPU LOAD_CPU NOISE_PCT REDO QUIET_WAIT
    ((SECS > 0 && ROUNDS > 0 && CONNS > 0)) || die "BENCH_SECONDS, BENCH_ROUNDS and BENCH_CONNECTIONS must be > 0"
}

# --- tools ----------------------------------------------------------------------------
# Installs, with apt-get (as root or through sudo), the packages whose command is
# missing. Each argument is COMMAND:PACKAGE.
need_packages() { # COMMAND:PACKAGE...
    local spec missing=() sudo=()
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
    done
    ((${#missing[@]})) || return 0
    say "$BENCH_NAME: installing ${missing[*]} with apt-get"
    if ((EUID == 0)); then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        die "missing ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
    fi
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

need_tools() { # TOOL...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is required"
    done
}

# Dies unless this machine can pin to PROXY_CPU and LOAD_CPU; warns when they are one core.
check_pinning() { # WHAT (e.g. "gateway", "proxies")
    local cpu
    for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
        taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (this machine has $(nproc)); set BENCH_PROXY_CPU / BENCH_LOAD_CPU"
    done
    [[ $PROXY_CPU != "$LOAD_CPU" ]] || say "$BENCH_NAME: warning: $1 and load share CPU $PROXY_CPU; figures will not be comparable"
}

# Sets BIN: BENCH_BIN when set, else this checkout built with
# `cargo build --profile $BENCH_PROFILE` (default `dist`, the optimised build the
# Dockerfile ships: fat LTO, one codegen unit; `release` reuses the test build).
resolve_bin() {
    if [[ -n ${BENCH_BIN:-} ]]; then
        BIN=$BENCH_BIN
        [[ -x $BIN ]] || die "BENCH_BIN=$BIN is not an executable"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo is required (or set BENCH_BIN)"
    local profile=${BENCH_PROFILE:-dist}
    say "$BENCH_NAME: building authgate (cargo build --profile $profile)"
    run cargo build --profile "$profile" --bin authgate --quiet --manifest-path "$ROOT/Cargo.toml" >&2 ||
        die "cargo build failed; fix the build, or measure a built binary with BENCH_BIN=PATH"
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    BIN=$target_dir/$profile/authgate
    [[ -x $BIN ]] || die "no binary at $BIN"
}

# What is measured, for the report: the binary and its version, or the checkout's
# revision (with "+ uncommitted changes" when the work tree differs from it).
bin_revision() {
    local rev
    if [[ -n ${BENCH_BIN:-} ]]; then
        echo "$BIN ($("$BIN" --version 2>&1 | head -n1))"
    else
        rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
        if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
            rev="$rev (+ uncommitted changes)"
        fi
        echo "$rev"
    fi
}

# "N CPUs, model, kernel" for the report.
machine_desc() {
    local cpu_model
    cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "$(nproc) CPUs, ${cpu_model:-unknown CPU}, $(uname -sr)"
}

# --- ports, start-up ------------------------------------------------------------------
# N distinct free loopback ports on one line: all bound at once, then released.
free_ports() { # N
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
' "$1"
}

# Polls URL until it answers 2xx; dies when PID exits first or after 10 s (showing LOG).
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

# The upstream: nginx answering 200 "ok\n" for any path on 127.0.0.1:PORT, one worker,
# access log off, keep-alive up to 10^8 requests per connection; config, pid, logs and
# temp folders are $SCRATCH/NAME*. Pinned to LOAD_CPU. Optional extra directives: MAIN
# (main context), EVENTS (events block; default `worker_connections 4096;`), HTTP (http
# context). Sets UPSTREAM_PID (also in PIDS).
start_upstream_nginx() { # NAME PORT [MAIN] [EVENTS] [HTTP]
    local name=$1 port=$2 main=${3:-} events=${4:-worker_connections 4096;} http=${5:-} conf=$SCRATCH/$1.conf
    mkdir -p "$SCRATCH/$name-tmp"
    {
        # As root, nginx would otherwise switch its worker to `nobody`, who cannot enter
        # the 0700 scratch folder.
        if ((EUID == 0)); then echo "user root root;"; fi
        cat <<NGINX
worker_processes 1;
$main
daemon off;
pid $SCRATCH/$name.pid;
error_log $SCRATCH/$name.err warn;
events { $events }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  $http
  client_body_temp_path $SCRATCH/$name-tmp/body;
  proxy_temp_path $SCRATCH/$name-tmp/proxy;
  fastcgi_temp_path $SCRATCH/$name-tmp/fastcgi;
  uwsgi_temp_path $SCRATCH/$name-tmp/uwsgi;
  scgi_temp_path $SCRATCH/$name-tmp/scgi;
  default_type text/plain;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { return 200 "ok\n"; }
  }
}
NGINX
    } >"$conf"
    nginx -t -p "$SCRATCH" -e "$SCRATCH/$name.err" -c "$conf" >/dev/null 2>&1 ||
        { nginx -t -p "$SCRATCH" -e "$SCRATCH/$name.err" -c "$conf" >&2 || true; die "upstream nginx config rejected"; }
    taskset -c "$LOAD_CPU" nginx -p "$SCRATCH" -e "$SCRATCH/$name.err" -c "$conf" >"$SCRATCH/$name.out" 2>&1 &
    UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
    wait_for "http://127.0.0.1:$port/" "$UPSTREAM_PID" "upstream nginx" "$SCRATCH/$name.err"
}

# Starts `authgate serve -c CONFIG` pinned to PROXY_CPU, logging to LOG (appended), and
# waits until its admin listener answers /readyz with 200. Sets AG_STARTED (also in PIDS).
start_authgate_at() { # CONFIG ADMIN_PORT NAME LOG [BINARY]
    taskset -c "$PROXY_CPU" "${5:-$BIN}" serve -c "$1" >>"$4" 2>&1 &
    AG_STARTED=$!; PIDS+=("$AG_STARTED")
    wait_for "http://127.0.0.1:$2/readyz" "$AG_STARTED" "$3" "$4"
}

# An authgate config in FILE: proxy and admin listeners on PROXY_PORT and ADMIN_PORT,
# upstream 127.0.0.1:UPSTREAM_PORT, the `state:` block STATE_YAML (indented lines), one
# worker thread (AG_RUNTIME, when set, replaces what is inside `runtime: { }`), log level
# warn, then EXTRA_YAML (top-level keys) when given.
authgate_conf() { # FILE PROXY_PORT ADMIN_PORT UPSTREAM_PORT STATE_YAML [EXTRA_YAML]
    cat >"$1" <<YAML
listen:
  proxy: "127.0.0.1:$2"
  admin: "127.0.0.1:$3"
upstream:
  url: "http://127.0.0.1:$4"
state:
$5
runtime: { ${AG_RUNTIME:-worker_threads: 1} }
log: { level: warn }
YAML
    if [[ -n ${6:-} ]]; then printf '%s\n' "$6" >>"$1"; fi
}

# The `admin:` block with this run's approver key (see new_admin_key).
admin_keys_yaml() {
    printf 'admin:\n  keys:\n    - { name: bench, role: approver, sha256: "%s" }\n' "$ADMIN_KEY_SHA256"
}

# --- admin API, token -----------------------------------------------------------------
# Sets ADMIN_KEY, a throwaway approver key for this run, and ADMIN_KEY_SHA256, its
# digest (the only thing a config holds).
new_admin_key() {
    read -r ADMIN_KEY ADMIN_KEY_SHA256 < <(python3 -c '
import hashlib, secrets
key = "authgate_ak_" + secrets.token_urlsafe(32)
print(key, hashlib.sha256(key.encode()).hexdigest())
')
}

admin_api() { # ADMIN_PORT METHOD PATH BODY
    curl -sSf -X "$2" -H "Authorization: Bearer $ADMIN_KEY" \
        -H 'Content-Type: application/json' -d "$4" "http://127.0.0.1:$1$3"
}

# Makes tenant acme require authentication through the gateway at ADMIN_PORT and sets
# TOKEN to a newly generated token (valid one day). HINT ends the message of a refusal.
acme_token() { # ADMIN_PORT [HINT]
    admin_api "$1" PUT /admin/v1/tenants/acme/settings '{"require_authentication": true}' >/dev/null ||
        die "the admin API refused to turn on authentication${2:-}"
    TOKEN=$(admin_api "$1" POST /admin/v1/tenants/acme/token '{"expires_in": 86400}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') ||
        die "the admin API did not generate a token"
}

# The proxy at URL must really check the token: without it, 401; with it, 200.
check_token_enforced() { # NAME URL [CURL_OPTION...]
    local name=$1 url=$2 code
    shift 2
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "$@" "$url" || true)
    [[ $code == 401 ]] || die "$name let a request without the token through (answered $code, not 401)"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "$@" \
        -H "Authorization: Bearer $TOKEN" "$url" || true)
    [[ $code == 200 ]] || die "$name refused the token (answered $code, not 200)"
}

# The wrk script: POST BODY as a form, with `Authorization: Bearer TOKEN` when given.
write_post_lua() { # FILE [TOKEN]
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
    if [[ -n ${2:-} ]]; then printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$2" >>"$1"; fi
}

# --- CPU accounting -------------------------------------------------------------------
# Busy (user+nice+system) jiffies of the whole machine.
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }
# utime+stime of a process (all its threads) in jiffies.
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pids_cpu() { local t=0 p; for p in "$@"; do t=$((t + $(proc_cpu "$p"))); done; echo "$t"; }
# utime+stime of this shell's waited-for children (wrk, curl, …) in jiffies.
children_cpu() { awk '{ print $16 + $17 }' /proc/$$/stat; }
# CPU of everything this benchmark runs: every started process and its children (nginx:
# master and worker), and the waited-for load generators.
bench_cpu() {
    local total pid c
    total=$(children_cpu)
    for pid in "${PIDS[@]}"; do
        total=$((total + $(proc_cpu "$pid")))
        for c in $(pgrep -P "$pid" || true); do total=$((total + $(proc_cpu "$c"))); done
    done
    echo "$total"
}

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
# wrk (or wrk2) output → "rps p50_ms p99_ms non2xx socket_errors requests"
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
    $1 == "50%" || $1 == "50.000%" { p50 = ms($2) }
    $1 == "99%" || $1 == "99.000%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/            { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %d %d %d\n", rps, p50, p99, bad, errs, n }
    ' "$1"
}

run_wrk() { # URL OUTFILE SECONDS [LUA_SCRIPT]
    run taskset -c "$LOAD_CPU" wrk -t1 "-c$CONNS" "-d${3}s" --latency -s "${4:-$SCRATCH/post.lua}" "$1" >"$2" 2>&1
}

# oha's JSON output (`--output-format json`) → "p50_ms p99_ms ok_requests bad"
parse_oha() { # FILE
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
# Requests still in flight when -z ends are "aborted due to deadline": not failures.
errors = {k: v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k}
if errors:
    print("oha errors:", errors, file=sys.stderr)
bad = sum(codes.values()) - ok + sum(errors.values())
p = d["latencyPercentiles"]
print(p["p50"] * 1000, p["p99"] * 1000, ok, bad)
PY
}

# A load function for `measure`: wrk on WRK_URL for SECS seconds (script WRK_LUA, default
# $SCRATCH/post.lua).
WRK_URL='' WRK_LUA=''
wrk_load() { # OUTFILE
    run_wrk "$WRK_URL" "$1" "$SECS" "${WRK_LUA:-}" || return 1
    read -r RPS P50 P99 BAD ERRS N < <(parse_wrk "$1")
}

# One timed run with noise control. LOAD_FN OUTFILE runs the load and sets RPS, P50,
# P99 (ms), BAD (non-2xx), ERRS (socket errors) and N (requests completed). Measures
# the busy CPU of the machine and of this benchmark's processes around it, and the CPU
# of the proxy processes PID…; sets NOISE (% of a core used by other processes) and
# CPU_US (proxy CPU µs per request), then calls REPORT_FN (the per-run line). A run
# during which other processes used more than NOISE_PCT % of a core is redone, up to
# REDO times, unless the machine was already busy before it (redoing would not help).
# A failing request stops the benchmark: figures over errors would mean nothing.
measure() { # LABEL LOAD_FN OUTFILE REPORT_FN [PID...]
    local label=$1 load=$2 out=$3 report=$4 try quiet m0 c0 g0 m1 c1 g1 other
    shift 4
    for ((try = 0; try <= REDO; try++)); do
        quiet=1
        wait_quiet || { quiet=0; say "$BENCH_NAME: warning: the machine is busy (over $NOISE_PCT% of a core used by other processes); measuring anyway"; }
        RPS='' P50='' P99='' BAD=0 ERRS=0 N=0
        m0=$(machine_busy); c0=$(bench_cpu); g0=$(pids_cpu "$@")
        "$load" "$out" || die "$label: the load generator failed"
        m1=$(machine_busy); c1=$(bench_cpu); g1=$(pids_cpu "$@")
        [[ -n $RPS && -n $P99 && $P50 != -1 && $P99 != -1 ]] || { cat "$out" >&2; die "cannot read the output of $label"; }
        ((BAD == 0 && ERRS == 0)) || { cat "$out" >&2; die "$label: $BAD non-2xx responses, $ERRS socket errors"; }
        other=$(((m1 - m0) - (c1 - c0)))
        ((other < 0)) && other=0
        NOISE=$((other * 100 / (HZ * SECS)))
        CPU_US=$(awk -v j=$((g1 - g0)) -v hz="$HZ" -v n="$N" 'BEGIN { printf "%.1f", n ? j / hz * 1e6 / n : 0 }')
        "$report"
        ((NOISE <= NOISE_PCT)) && break
        ((quiet)) || break
        ((try < REDO)) && say "$BENCH_NAME: $label was noisy; redoing it"
    done
    return 0
}

# --- report ---------------------------------------------------------------------------
# Prints the table of a two-target comparison from a TSV of rows
# `target round noise value…` (a value `-`: not measured for that target): per column
# the median over rounds with (min–max), a `*` on a target with a noisy round left, and
# a last row comparing the medians of the second target with the first.
# Each COLUMN is "header|python format" (e.g. "requests/s|{:.0f}").
two_target_table() { # RESULTS NOISE_PCT RATIO_FORMAT COLUMN...
    python3 - "$@" <<'PY'
import statistics, sys

results, noise_limit, ratio_fmt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
columns = [c.split("|", 1) for c in sys.argv[4:]]
by, targets = {}, []
for line in open(results):
    target, _round, noise, *values = line.rstrip("\n").split("\t")
    if target not in by:
        targets.append(target)
        by[target] = {"cols": [[] for _ in columns], "noisy": 0}
    for col, v in zip(by[target]["cols"], values):
        if v != "-":
            col.append(float(v))
    by[target]["noisy"] += int(noise) > noise_limit

def cell(xs, fmt):
    if not xs:
        return "–"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

base, other = targets[0], targets[1]
ratio_name = f"{other}/{base}"
header = [""] + [h for h, _ in columns]
table = []
for target in targets:
    d = by[target]
    table.append([target + (" *" if d["noisy"] else "")] + [cell(xs, fmt) for xs, (_, fmt) in zip(d["cols"], columns)])
ratios = []
for a, b in zip(by[base]["cols"], by[other]["cols"]):
    ratios.append(ratio_fmt.format(statistics.median(b) / statistics.median(a)) if a and b else "")
table.append([ratio_name] + ratios)
widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
for r in [header] + table:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
print()
print(f"medians over rounds, (min–max) in parentheses; {ratio_name} compares medians.")
if any(d["noisy"] for d in by.values()):
    print(f"* noisy: in some rounds other processes used more than {noise_limit}% of a core, even after"
          " redos;\n  rerun on a quiet machine before comparing these figures.")
PY
}
