#!/usr/bin/env bash
# Fuzzes the bundle format reader (the pyshrink-stub library): builds the cargo-fuzz targets of
# stub/fuzz and runs each for SECONDS (default 30), one worker each, one after the other. Exits
# non-zero if any target crashes, panics, times out or runs out of memory; the input that did it
# is left in stub/fuzz/artifacts/<target>/ (replay: cargo fuzz run -s none <target> <file>).
#
#   tests/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS    space-separated targets to run (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER  none (default) or address. The fuzzed code is safe Rust, so AddressSanitizer
#                   adds little but cost; it needs -Zsanitizer, which stable Rust accepts only
#                   with RUSTC_BOOTSTRAP=1 (set here when the toolchain is not a nightly).
#   FUZZ_WORK       where new corpus entries go (default: stub/fuzz/target/corpus); the committed
#                   seeds in stub/fuzz/corpus are read, never written.
#   CARGO_BUILD_JOBS  as for cargo (e.g. 1 on a shared machine)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz=$root/stub/fuzz
seconds=${1:-30}
sanitizer=${FUZZ_SANITIZER:-none}
work=${FUZZ_WORK:-$fuzz/target/corpus}

die() { echo "fuzz: $*" >&2; exit 2; }
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer, got '$seconds'"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if [ "$sanitizer" != none ] && ! rustc -V | grep -q -e nightly -e '-dev'; then
    export RUSTC_BOOTSTRAP=1
fi

cd "$fuzz"
fz=(--fuzz-dir "$fuzz" -s "$sanitizer")
cargo fuzz build "${fz[@]}"
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz" | tr '\n' ' ')}"
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "$fuzz/corpus/$t"
    echo "fuzz: $t for ${seconds}s" >&2
    # -timeout: an input that takes 10 s is a hang, reported like a crash.
    if ! cargo fuzz run "${fz[@]}" "$t" "$work/$t" "$fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in $fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${seconds}s each)" >&2
