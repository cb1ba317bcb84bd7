#!/usr/bin/env bash
# Runs Umbra's whole test suite on a fresh machine that has only the Rust
# toolchain: installs the system packages the tests need when they are
# missing, then builds and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages used by tests (real peers nobody here wrote).
packages=(coturn curl openssl)
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

# Build outside the clone so repeated runs reuse the artifacts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/umbra/target}"
echo "==> building (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked
echo "==> testing"
cargo test --workspace --locked
