#!/usr/bin/env bash
# Proves the harness against coturn (Debian package `coturn`, the reference TURN server):
# starts `turnserver` on 127.0.0.1 with a REST-scheme shared secret (static-auth-secret),
# mints a time-limited credential and runs run.sh against it over UDP (and TCP with
# --tcp). The Umbra relay takes coturn's place in the same test; only the server changes.
#
#   tests/webrtc/with-coturn.sh [--tcp] [driver options...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
transport=udp
if [ "${1:-}" = "--tcp" ]; then transport=tcp; shift; fi

command -v turnserver >/dev/null || { echo "error: turnserver not found (apt-get install coturn)" >&2; exit 2; }
work="$(mktemp -d)"
secret="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
# A port free for both UDP and TCP, below the kernel's ephemeral range.
pick_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 12000))
        if [ -z "$(ss -Htuna "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return; fi
    done
    echo "error: no free port found" >&2
    exit 1
}
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

# Wait until it listens.
for _ in $(seq 50); do
    if ss -Hlnu "sport = :$port" 2>/dev/null | grep -q . ; then break; fi
    sleep 0.1
done

# TURN REST credential: username "<expiry>:<token>", password base64(HMAC-SHA1(secret, username)).
user="$(( $(date +%s) + 600 )):webrtc-test"
pass="$(printf '%s' "$user" | openssl dgst -sha1 -hmac "$secret" -binary | base64)"

set +e
"$here/run.sh" "turn:127.0.0.1:$port?transport=$transport" "$user" "$pass" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "---- turnserver log ----" >&2
    tail -n 60 "$work/turnserver.log" >&2
fi
exit "$rc"
