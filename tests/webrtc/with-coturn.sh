#!/usr/bin/env bash
# Proves the harness against coturn (Debian package `coturn`, the reference TURN server):
# starts `turnserver` on 127.0.0.1 with a REST-scheme shared secret (static-auth-secret),
# mints a time-limited credential and runs run.sh against it over UDP (and TCP with
# --tcp). The Umbra relay takes coturn's place in the same test; only the server changes.
#
#   tests/webrtc/with-coturn.sh [--tcp] [driver options...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
transport=udp
if [ "${1:-}" = "--tcp" ]; then transport=tcp; shift; fi

command -v turnserver >/dev/null || { echo "error: turnserver not found (apt-get install coturn)" >&2; exit 2; }
work="$(mktemp -d)"
secret="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
port="${TURN_PORT:-$(pick_port)}"

turnserver -n --log-file=stdout --simple-log \
    --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$port" \
    --min-port=49160 --max-port=49360 \
    --use-auth-secret --static-auth-secret="$secret" --realm=umbra \
    --allow-loopback-peers --no-tls --no-dtls --no-cli --no-rfc5780 \
    --no-software-attribute --pidfile="$work/turnserver.pid" \
    --userdb="$work/turndb" >"$work/turnserver.log" 2>&1 &
turn_pid=$!
cleanup() { kill "$turn_pid" 2>/dev/null || true; wait "$turn_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_listening "$port" "$turn_pid" "$work/turnserver.log"
mint_credential "$secret"
run_browser_test "turn:127.0.0.1:$port?transport=$transport" "$work/turnserver.log" "$@"
