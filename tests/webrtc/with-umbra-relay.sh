#!/usr/bin/env bash
# The same browser test as with-coturn.sh, against Umbra's own relay (`umbra relay`):
# starts it on 127.0.0.1 with a REST-scheme shared secret, mints a time-limited credential
# and runs run.sh over UDP (or TCP with --tcp).
#
#   tests/webrtc/with-umbra-relay.sh [--tcp] [driver options...]
#
# UMBRA_BIN names the binary (default: `umbra` on PATH, else target/{release,debug}/umbra
# under $CARGO_TARGET_DIR). UMBRA_RELAY_CMD replaces the whole server command (it gets the
# UDP listen address and the secret file as $1 and $2), for running a relay built otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
transport=udp
if [ "${1:-}" = "--tcp" ]; then transport=tcp; shift; fi

work="$(mktemp -d)"
secret="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
printf '%s\n' "$secret" >"$work/secret"
chmod 600 "$work/secret"
port="${TURN_PORT:-$(pick_port)}"
listen="127.0.0.1:$port"

if [ -n "${UMBRA_RELAY_CMD:-}" ]; then
    server=(bash -c "$UMBRA_RELAY_CMD" relay "$listen" "$work/secret")
else
    bin="${UMBRA_BIN:-}"
    if [ -z "$bin" ]; then
        bin="$(command -v umbra || true)"
        for cand in "${CARGO_TARGET_DIR:-$here/../../target}"/{release,debug}/umbra; do
            [ -z "$bin" ] && [ -x "$cand" ] && bin="$cand"
        done
    fi
    [ -n "$bin" ] || { echo "error: no umbra binary (build it, or set UMBRA_BIN)" >&2; exit 2; }
    server=("$bin" relay --udp-listen "$listen" --tcp-listen "$listen" \
        --tls-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
        --auth-secret-file "$work/secret" --workers 2 --no-unit)
fi

"${server[@]}" >"$work/relay.log" 2>&1 &
relay_pid=$!
cleanup() { kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_listening "$port" "$relay_pid" "$work/relay.log"
mint_credential "$secret"
run_browser_test "turn:$listen?transport=$transport" "$work/relay.log" "$@"
