#!/usr/bin/env bash
# Runs Umbra's whole test suite on a fresh machine that has only the Rust
# toolchain: installs the system packages the tests need when they are
# missing, then builds and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages used by tests (real peers nobody here wrote): coturn's
# turnutils_uclient, curl and openssl as probers, Chromium for the WebRTC test,
# iproute2 to give Chromium an interface to gather on and to build the
# network namespaces of the call tests, tcpdump to capture their traffic,
# ALSA's development files for the optional sound-device build of calls,
# Pebble (the ACME test server, with its mock DNS) for the proxy's --acme,
# PostgreSQL and NATS for several server nodes (a throwaway PostgreSQL
# cluster below; the cluster tests start nats-server themselves), HAProxy as
# the load balancer in front of them.
packages=(coturn curl openssl chromium iproute2 tcpdump libasound2-dev pkg-config pebble postgresql nats-server haproxy)
command -v npm >/dev/null 2>&1 || packages+=(npm)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing test dependencies: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
# schemathesis (PyPI) fuzzes the business host's API against its own
# OpenAPI document; pip's script directory goes on PATH for the tests.
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
if ! command -v schemathesis >/dev/null 2>&1; then
    echo "==> installing test dependencies: schemathesis (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check schemathesis
fi
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
    echo "error: the browser test needs Node.js 20 or newer (found $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi

# One PostgreSQL server for every test that needs one (each makes its own
# database in it): a cluster made with initdb in a temporary directory, on a
# free loopback port, stopped when this script ends. PostgreSQL refuses to
# run as root, so as root it runs as the postgres user.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ]; then
    pg_dir="$(mktemp -d /tmp/umbra-test-pg.XXXXXX)"
    as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$pg_dir"
        as_pg=(runuser -u postgres --)
    fi
    pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U umbra --auth=trust --no-sync -E UTF8 >/dev/null
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=300" start >/dev/null
    stop_pg() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1; rm -rf "$pg_dir"; }
    trap stop_pg EXIT
    export UMBRA_TEST_POSTGRES="postgres://umbra@127.0.0.1:$pg_port"
    echo "==> PostgreSQL for the tests on 127.0.0.1:$pg_port"
fi

# Build outside the clone so repeated runs reuse the artifacts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/umbra/target}"
echo "==> building (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked
echo "==> testing"
log="$(mktemp)"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The optional sound-device build (microphone and speaker through ALSA):
# its tests run on ALSA's null device, which needs no hardware.
if [ "$status" -eq 0 ]; then
    cargo test -p umbra-call --features audio-device --locked --lib --test sound_device 2>&1 | tee -a "$log"
    status=${PIPESTATUS[0]}
fi
set -e
# One closing line with the totals over every test binary.
awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, i}' "$log"
rm -f "$log"
exit "$status"
