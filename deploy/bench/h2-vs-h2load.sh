#!/usr/bin/env bash
# h2-vs-h2load.sh: loadgen's HTTP/2 fetch (--http2, async mode) against h2load (nghttp2-client), side by side, both
# hitting the same local nginx (one worker process, http2) over loopback: 16 connections x 10 streams by default.
# Rounds alternate; medians and ratios are quoted.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/h2-vs-h2load.sh [path/to/loadgen]
#   env: CONNS=16  STREAMS=10  SECONDS_EACH=5  ROUNDS=3  TLS=0 (1: h2 over TLS by ALPN; 0: h2c, prior knowledge)
#
#   loadgen: loadgen coordinate --target URL --http2 --streams STREAMS --workers CONNS --duration 5s --json
#   h2load:  h2load -c CONNS -m STREAMS -D 5 URL
# Honesty check: the requests nginx counted (stub_status) during loadgen's run must match the ops it reports (within
# CONNS x STREAMS, for requests in flight at the end), with no errors.
# Cost: each run is timed by /usr/bin/time (user+sys CPU of the whole process), as CPU microseconds per request.
# Last line: "h2 ratio loadgen/h2load=R cpu_per_request loadgen_over_h2load=C" (medians; C < 1 is cheaper).
set -euo pipefail
LOADGEN=${1:-.build/release/loadgen}
CONNS=${CONNS:-16} STREAMS=${STREAMS:-10} SECONDS_EACH=${SECONDS_EACH:-5} ROUNDS=${ROUNDS:-3} TLS=${TLS:-0}
[ -x "$LOADGEN" ] || { echo "no loadgen binary at $LOADGEN (build it: swift build -c release)"; exit 2; }
command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx-light"; exit 2; }
command -v h2load >/dev/null || { echo "h2load is needed: apt-get install -y nghttp2-client"; exit 2; }
work=$(mktemp -d); export LOADGEN_DB="$work/runs.sqlite"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
status_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www"; printf 'hello' >"$work/www/index.html"; chmod -R a+rX "$work"
scheme=http listen="listen 127.0.0.1:$port http2;" extra=() ca=()
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  scheme=https listen="listen 127.0.0.1:$port ssl http2; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;"
  ca=(--ca-file "$work/cert.pem")
fi
cat >"$work/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx.pid; error_log $work/error.log; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; http2_max_concurrent_streams 128;
  server { $listen root $work/www; location / { } }
  server { listen 127.0.0.1:$status_port; location = /nginx_status { stub_status; } } }
CONF
nginx -c "$work/nginx.conf"
trap 'kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.3
url="$scheme://127.0.0.1:$port/"
served() { curl -s "http://127.0.0.1:$status_port/nginx_status" | awk 'NR==3 {print $3}'; }
cpu() { python3 -c 'import sys; u,s=open(sys.argv[1]).read().split()[-2:]; print((float(u)+float(s))*1e6/int(sys.argv[2]))' "$work/cpu" "$1"; }
declare -A rates
add() { rates[$1]="${rates[$1]:-} $2"; }
for round in $(seq "$ROUNDS"); do
  before=$(served)
  json=$(/usr/bin/time -o "$work/cpu" -f '%U %S' "$LOADGEN" coordinate --target "$url" "${ca[@]}" --http2 --streams "$STREAMS" \
         --workers "$CONNS" --duration "${SECONDS_EACH}s" --json | tail -n 1)
  after=$(served)
  read -r ops rate errs < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["ops"], j["ops_per_s"], j["errors"])' "$json")
  seen=$((after - before - 1))
  python3 -c "import sys; sys.exit(0 if abs($seen-$ops) <= $CONNS*$STREAMS+1 else 1)" || { echo "loadgen reported ops=$ops but nginx served $seen"; exit 1; }
  [ "$errs" = 0 ] || { echo "loadgen reported $errs errors against a healthy server"; exit 1; }
  add loadgen "$rate"; add loadgen_cpu "$(cpu "$ops")"
  out=$(/usr/bin/time -o "$work/cpu" -f '%U %S' h2load -c "$CONNS" -m "$STREAMS" -D "$SECONDS_EACH" "$url")
  done_requests=$(awk '/^requests:/ {print $8}' <<<"$out")
  add h2load "$(awk '/finished in/ {gsub(",", "", $4); print $4}' <<<"$out")"; add h2load_cpu "$(cpu "$done_requests")"
done
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.1f}")' $1; }
for k in loadgen h2load; do echo "$k req/s median $(median "${rates[$k]}")  (rounds:${rates[$k]})"; done
for k in loadgen_cpu h2load_cpu; do echo "${k%_cpu} cpu us/request median $(median "${rates[$k]}")  (rounds:${rates[$k]})"; done
r() { python3 -c 'import sys,statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f"{s.median(a)/s.median(b):.2f}")' "${rates[$1]}" "${rates[$2]}"; }
echo "h2 ratio loadgen/h2load=$(r loadgen h2load) cpu_per_request loadgen_over_h2load=$(r loadgen_cpu h2load_cpu)"
