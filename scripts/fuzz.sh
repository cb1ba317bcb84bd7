#!/usr/bin/env bash
# Builds and runs every fuzz target in fuzz/ for a bounded time; fails if any crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#
# Works on the stable toolchain: cargo-fuzz's default AddressSanitizer needs the nightly
# `-Zsanitizer` flag, so targets are built with `--sanitizer none` (libFuzzer coverage
# instrumentation, debug assertions and overflow checks still on; safe Rust needs ASan
# little). To get ASan on stable anyway: UMBRA_FUZZ_SANITIZER=address, which sets
# RUSTC_BOOTSTRAP=1 for the fuzz build only.
#
# The working corpus lives in fuzz/corpus/<target> (not committed) and grows across runs;
# committed seeds are in fuzz/seeds/<target>. A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce it with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>     (from fuzz/)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

sanitizer="${UMBRA_FUZZ_SANITIZER:-none}"
# Its own target dir: the fuzz build uses different RUSTFLAGS and must not thrash the
# workspace's artifacts.
export CARGO_TARGET_DIR="${UMBRA_FUZZ_TARGET_DIR:-$HOME/.cache/umbra/target-fuzz}"
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "==> building ${targets[*]} (sanitizer: $sanitizer, target dir: $CARGO_TARGET_DIR)"
cargo fuzz build --sanitizer "$sanitizer" --target-dir "$CARGO_TARGET_DIR"

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    log="$(mktemp)"
    echo "==> fuzzing $t for ${seconds}s"
    set +e
    cargo fuzz run --sanitizer "$sanitizer" --target-dir "$CARGO_TARGET_DIR" \
        "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n1)"
    corpus="$(find "corpus/$t" -type f | wc -l)"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$(printf '%-14s CRASH  runs=%s exec/s=%s %s corpus=%s' "$t" "${runs:-?}" "${rate:-?}" "${cov:-}" "$corpus")")
        echo "---- $t failed (exit $rc); last lines of its log:"
        grep -vE '^#[0-9]+' "$log" | tail -n 40
        ls -1 "artifacts/$t" | sed "s|^|    artifact: fuzz/artifacts/$t/|"
    else
        summary+=("$(printf '%-14s ok     runs=%s exec/s=%s %s corpus=%s' "$t" "${runs:-?}" "${rate:-?}" "${cov:-}" "$corpus")")
    fi
    rm -f "$log"
done

echo "==> fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
