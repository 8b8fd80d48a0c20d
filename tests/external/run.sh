#!/usr/bin/env bash
# External checks of a real authgate: slowhttptest (slowloris, slow body, slow read) and
# httplint / REDbot (HTTP conformance of what the gateway sends).
#
# Installs the tools when missing (apt: slowhttptest; pip: httplint, redbot), builds the
# release binary, starts `authgate sample-backend` and `authgate serve` on free loopback
# ports with low timeouts, makes tenant `acme` require a token through the admin API,
# then runs the tools and prints every finding. Stops only what it started.
#
# Exits non-zero when slowhttptest saw the gateway become unavailable (its probe got no
# answer in time), or when the setup fails. Lint findings are printed, not judged.
#
# Usage: tests/external/run.sh            (SLOW_SECONDS=N sets each slow test's length, default 20)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SLOW_SECONDS="${SLOW_SECONDS:-20}"
WORK="$(mktemp -d)"
PIDS=()
UNAVAILABLE=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n=== %s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------
say "tools"
if ! command -v slowhttptest >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slowhttptest >/dev/null
fi
if ! command -v httplint >/dev/null 2>&1 || ! command -v redbot >/dev/null 2>&1; then
  python3 -m pip install -q httplint redbot
fi
# REDbot's command line is `redbot` in current releases, `redbot_cli` in older ones.
REDBOT="$(command -v redbot || command -v redbot_cli)"
{ slowhttptest -h 2>&1 || true; } | grep -m1 -o 'version [0-9.]*' | sed 's/^/slowhttptest /' || true
python3 -m pip show httplint redbot 2>/dev/null | awk '/^Name|^Version/ {printf "%s ", $2} END {print ""}' || true

# --- build and start -----------------------------------------------------------------
say "build"
(cd "$ROOT" && cargo build --release --quiet)
AUTHGATE="$ROOT/target/release/authgate"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BACKEND_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
GATEWAY="http://127.0.0.1:$PROXY_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"

KEY_OUTPUT="$("$AUTHGATE" admin-key --name external --role approver)"
ADMIN_KEY="$(grep -o 'authgate_ak_[A-Za-z0-9_-]*' <<<"$KEY_OUTPUT")"
KEY_ENTRY="$(grep -- '- { name:' <<<"$KEY_OUTPUT" | sed 's/^ *//')"

cat >"$WORK/config.yaml" <<EOF
listen:
  proxy: "127.0.0.1:$PROXY_PORT"
  admin: "127.0.0.1:$ADMIN_PORT"
upstream:
  url: "http://127.0.0.1:$BACKEND_PORT"
  request_timeout: 10s
limits:
  header_read_timeout: 2s
  body_read_timeout: 3s
  send_timeout: 3s
  idle_timeout: 5s
state:
  path: ./state.json
admin:
  keys:
    $KEY_ENTRY
log:
  level: warn
EOF
"$AUTHGATE" check -c "$WORK/config.yaml"

"$AUTHGATE" sample-backend --listen "127.0.0.1:$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
"$AUTHGATE" serve -c "$WORK/config.yaml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")

wait_for() {
  local url="$1" i
  for i in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$url never answered" >&2
  cat "$WORK/gateway.log" "$WORK/backend.log" >&2
  return 1
}
wait_for "$ADMIN/readyz"
for i in $(seq 1 100); do # any answer from the backend will do
  curl -sS -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" 2>/dev/null && break
  sleep 0.1
done

admin() { # METHOD PATH [JSON]
  local body=()
  [ $# -lt 3 ] || body=(-H 'Content-Type: application/json' --data "$3")
  curl -fsS -X "$1" -H "Authorization: Bearer $ADMIN_KEY" "${body[@]}" "$ADMIN$2"
}
admin PUT /admin/v1/tenants/acme/settings '{"require_authentication": true}' >/dev/null
TOKEN="$(admin POST /admin/v1/tenants/acme/token '{"expires_in": 3600}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
echo "gateway $GATEWAY, admin $ADMIN, backend 127.0.0.1:$BACKEND_PORT; tenant acme requires a token"

# A request that works, so that the slow tests have something real to probe.
BATCH_URL="$GATEWAY/m2/acme/profile/batchUpdate"
BATCH_REPLY="$(curl -fsS -H "Authorization: Bearer $TOKEN" \
  --data-urlencode $'batch=mbox3rdPartyId,profile.tier\nv1,gold\n' "$BATCH_URL")"
# The reply names the batch's status URL; keep its path and query, ask the gateway.
STATUS_PATH="$(sed -n 's|.*<batchStatus>[a-z]*://[^/]*\([^<]*\)</batchStatus>.*|\1|p' <<<"$BATCH_REPLY" |
  sed 's/&amp;/\&/g')"
STATUS_URL="$GATEWAY${STATUS_PATH:-/m2/acme/profile/batchStatus?batchId=1}"
curl -fsS -o /dev/null "$STATUS_URL"

# --- slowhttptest ----------------------------------------------------------------------
# Each run opens many slow connections plus one probe connection a second; "service
# available" turns NO when the probe gets no response within -p seconds.
gateway_fds() { ls "/proc/$GATEWAY_PID/fd" 2>/dev/null | wc -l; }
slow() { # NAME ARGS...
  local name="$1"
  shift
  say "slowhttptest $name: ${*//$TOKEN/<token>}"
  local before peak now last
  before="$(gateway_fds)"
  (cd "$WORK" && exec slowhttptest -g -o "$WORK/$name" -l "$SLOW_SECONDS" -p 3 "$@" >"$WORK/$name.out" 2>&1) &
  local tester=$!
  peak="$before"
  while kill -0 "$tester" 2>/dev/null; do
    now="$(gateway_fds)"
    [ "$now" -le "$peak" ] || peak="$now"
    last="$now"
    sleep 0.5
  done
  wait "$tester" || true
  sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/$name.out" |
    grep -E 'Test ended|Exit status|service available|connections|pending|closed|Error' | tail -n 8 || true
  # Sockets the gateway itself holds (a connection it dropped may still look open to the
  # tester while its unread bytes sit in the kernel).
  echo "gateway file descriptors: $before before, peak $peak, ${last:-?} in the run's last half second, $(gateway_fds) after"
  local csv="$WORK/$name.csv"
  if [ ! -s "$csv" ]; then
    echo "no statistics written for $name" >&2
    UNAVAILABLE+=("$name (no statistics)")
    return
  fi
  # Columns: Seconds,Closed,Pending,Connected,Service Available (0 = the probe failed).
  python3 - "$csv" "$name" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and r[0].strip().isdigit()]
down = [r[0] for r in rows if r[4].strip() == "0"]
peak = max(int(r[3]) for r in rows)
last = rows[-1]
print(f"{sys.argv[2]}: {len(rows)} s; peak connected {peak}; at the end closed {last[1]}, "
      f"pending {last[2]}, connected {last[3]}; service unavailable at seconds: {down or 'never'}")
sys.exit(3 if down else 0)
PY
  local rc=$?
  [ "$rc" -eq 0 ] || UNAVAILABLE+=("$name")
}
set +e
# Slowloris: heads trickled one header every second, never finished.
slow slowloris -H -c 400 -r 100 -i 1 -x 24 -t GET -u "$STATUS_URL"
# Slow body (R-U-Dead-Yet) on an unprotected POST: forwarded, body trickled.
slow slow-body -B -c 400 -r 100 -i 1 -x 24 -s 8192 -t POST -u "$GATEWAY/m2/acme/profile/update?mbox3rdPartyId=v1"
# Slow body on the protected route without a token: refused before the body is read.
slow slow-body-protected-no-token -B -c 400 -r 100 -i 1 -x 24 -s 8192 -t POST -u "$BATCH_URL"
# Slow body on the protected route with the token (slowhttptest has no header option;
# its Cookie value carries the Authorization line).
slow slow-body-protected-token -B -c 400 -r 100 -i 1 -x 24 -s 8192 -t POST \
  -j $'x=1\r\nAuthorization: Bearer '"$TOKEN" -u "$BATCH_URL"
# Slow read: tiny receive window, responses read 32 bytes every 2 s, 10 pipelined
# requests per connection (slowhttptest's maximum). The admin /metrics page is the largest
# response on offer; it is read slowly too, through the admin listener.
slow slow-read -X -c 400 -r 100 -w 1 -y 16 -n 2 -z 32 -k 10 -t GET -u "$STATUS_URL"
slow slow-read-metrics -X -c 100 -r 50 -w 1 -y 16 -n 2 -z 32 -k 10 -t GET -u "$ADMIN/metrics"
set -e

if ! curl -fsS -o /dev/null "$ADMIN/healthz"; then
  UNAVAILABLE+=("gateway dead after the slow tests")
fi

# --- httplint and REDbot ----------------------------------------------------------------
# httplint reads one raw HTTP/1.1 response on stdin; the response is captured off the
# socket as sent, so the lint sees the gateway's exact framing and headers.
raw_response() { # HOST:PORT METHOD TARGET [HEADER]... -- [BODY]
  python3 - "$@" <<'PY'
import socket, sys
hostport, method, target, *rest = sys.argv[1:]
split = rest.index("--") if "--" in rest else len(rest)
headers, body = rest[:split], "".join(rest[split + 1:]).encode()
host, port = hostport.rsplit(":", 1)
head = [f"{method} {target} HTTP/1.1", f"Host: {hostport}", "User-Agent: authgate-external",
        "Connection: close", *headers]
if (body or method in ("POST", "PUT")) and not any(
        h.lower().startswith("content-length:") for h in headers):
    head.append(f"Content-Length: {len(body)}")
raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
with socket.create_connection((host, int(port)), timeout=10) as s:
    s.sendall(raw)
    chunks = []
    while (chunk := s.recv(65536)):
        chunks.append(chunk)
sys.stdout.buffer.write(b"".join(chunks))
PY
}
lint() { # TITLE HOST:PORT METHOD TARGET [HEADER]... -- [BODY]
  local title="$1"
  shift
  say "httplint: $title"
  local response
  response="$(raw_response "$@" | tee "$WORK/response")"
  head -n 1 <<<"$response"
  httplint -n <"$WORK/response" || echo "(httplint exited $?)"
}
P="127.0.0.1:$PROXY_PORT"
A="127.0.0.1:$ADMIN_PORT"
FORM="Content-Type: application/x-www-form-urlencoded"
lint "unprotected GET proxied to the backend" "$P" GET "${STATUS_URL#"$GATEWAY"}"
lint "protected POST with the token" "$P" POST /m2/acme/profile/batchUpdate "$FORM" \
  "Authorization: Bearer $TOKEN" -- $'batch=mbox3rdPartyId,profile.tier\nv2,gold\n'
lint "protected POST without a token (401)" "$P" POST /m2/acme/profile/batchUpdate "$FORM" -- "batch=x"
lint "protected POST with a wrong token (401 invalid_token)" "$P" POST /m2/acme/profile/batchUpdate \
  "$FORM" "Authorization: Bearer authgate_tk_wrong" -- "batch=x"
lint "protected POST with a malformed Authorization (400)" "$P" POST /m2/acme/profile/batchUpdate \
  "$FORM" "Authorization: Bearer a b" -- "batch=x"
lint "refused path spelling (400)" "$P" GET "/m2/acme/profile%2FbatchUpdate"
lint "protected body over the limit by Content-Length (413)" "$P" POST /m2/acme/profile/batchUpdate \
  "$FORM" "Authorization: Bearer $TOKEN" "Content-Length: 99999999999" --
lint "admin: tenant document" "$A" GET /admin/v1/tenants/acme "Authorization: Bearer $ADMIN_KEY"
lint "admin: no key (401)" "$A" GET /admin/v1/tenants
lint "admin: unknown route (404)" "$A" GET /admin/v1/nope "Authorization: Bearer $ADMIN_KEY"
lint "admin: wrong method (405)" "$A" DELETE /admin/v1/tenants "Authorization: Bearer $ADMIN_KEY"
lint "admin: bad JSON (400)" "$A" PUT /admin/v1/tenants/acme/settings \
  "Authorization: Bearer $ADMIN_KEY" "Content-Type: application/json" -- '{"require_authentication": 1}'
lint "admin: /healthz" "$A" GET /healthz
lint "admin: /metrics" "$A" GET /metrics

# REDbot fetches the URL itself (GET, then HEAD, conditional and range requests).
for url in "$STATUS_URL" "$GATEWAY/rest/v1/profiles/1?client=acme" "$ADMIN/healthz" "$ADMIN/readyz" \
  "$ADMIN/metrics" "$ADMIN/admin/v1/tenants"; do
  say "REDbot: $url"
  "$REDBOT" -o text "$url" || echo "(REDbot exited $?)"
done

# --- verdict --------------------------------------------------------------------------
say "gateway log (warnings and errors)"
grep -v -i -E '^\s*$' "$WORK/gateway.log" | tail -n 20 || true
say "verdict"
if [ "${#UNAVAILABLE[@]}" -gt 0 ]; then
  echo "slowhttptest saw the gateway unavailable during: ${UNAVAILABLE[*]}"
  exit 1
fi
echo "the gateway stayed available through every slowhttptest run"
