#!/usr/bin/env bash
# Headless Chromium relay-only WebRTC test against one TURN server.
#
#   tests/webrtc/run.sh TURN_URL USERNAME CREDENTIAL [driver options...]
#   e.g. tests/webrtc/run.sh 'turn:127.0.0.1:3478?transport=udp' "$user" "$pass"
#
# Needs: Debian packages `chromium` and `nodejs` + `npm`; the npm package playwright-core
# (installed here with `npm ci` from package-lock.json into tests/webrtc/node_modules).
# Prints the driver's JSON verdict; exits non-zero if any check fails.
#
# Chromium gathers candidates only on non-loopback interfaces, even when the TURN server is
# on 127.0.0.1. If this host (or network namespace) has none, a dummy interface with a
# private /32 address is created (needs root / CAP_NET_ADMIN). Its address never leaves the
# machine: the TURN server is reached on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$#" -lt 3 ]; then
    echo "usage: $0 TURN_URL USERNAME CREDENTIAL [--timeout S] [--verbose]" >&2
    exit 2
fi

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install nodejs npm)" >&2; exit 2; }
done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "error: no Chromium (apt-get install chromium)" >&2; exit 2; }

# Install playwright-core exactly as locked, unless already there.
if [ ! -f node_modules/playwright-core/package.json ] \
    || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >&2
fi

# A non-loopback interface with an address, or make one.
has_non_loopback() {
    ip -o addr show up 2>/dev/null | awk '$2 != "lo" && ($3 == "inet" || $3 == "inet6") && $4 !~ /^fe80:/ {f=1} END {exit !f}'
}
if ! has_non_loopback; then
    # Loopback must be up too for the TURN server on 127.0.0.1.
    ip link set lo up
    # A dummy interface; kernels built without the dummy driver get a veth pair whose
    # both ends stay in this namespace instead (so nothing is connected to it either).
    if ip link show umbra-dummy0 >/dev/null 2>&1 \
        || ip link add umbra-dummy0 type dummy 2>/dev/null; then
        echo "==> no non-loopback interface: created dummy umbra-dummy0 (10.254.254.1/32)" >&2
        ip link set umbra-dummy0 up
    else
        echo "==> no non-loopback interface and no dummy driver: created veth umbra-dummy0 (10.254.254.1/32)" >&2
        ip link add umbra-dummy0 type veth peer name umbra-dummy1
        ip link set umbra-dummy1 up
        ip link set umbra-dummy0 up
    fi
    ip addr replace 10.254.254.1/32 dev umbra-dummy0
fi

exec node driver.js "$@"
