#!/usr/bin/env bash
# Benchmarks pyshrink against PyInstaller, PyInstaller+staticx and Nuitka on every
# examples/*/app.py and writes BENCHMARKS.md (run through `make bench`).
#
# Environment:
#   BENCH_PYTHON  target Python (default: pyenv's 3.11.7)
#   BENCH_RUNS    runs per measurement (default: 15)
#   BENCH_OUT     report path (default: BENCHMARKS.md at the repository root)
#   BENCH_SKIP    comma list of peers not to build or measure: pyinstaller (with staticx), nuitka
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

export BENCH_PYTHON=${BENCH_PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3.11}
work=$root/target/bench
pyshrink=$root/target/release/pyshrink
reqs=$root/tests/bench/requirements-tools.txt

die() { echo "bench: $*" >&2; exit 1; }

BENCH_PYTHON=$(command -v "$BENCH_PYTHON" || echo "$BENCH_PYTHON")
[ -x "$BENCH_PYTHON" ] || die "BENCH_PYTHON=$BENCH_PYTHON is not an executable"
[ -x "$pyshrink" ] || cargo build --release
[ -x "$pyshrink" ] || die "$pyshrink is missing after cargo build --release"
command -v bwrap >/dev/null || tests/deps.sh || true
# GNU time measures the peak RSS; without it that column reads n/a.
if [ ! -x /usr/bin/time ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null || true
fi
mkdir -p "$work"

# One tools venv per target Python, rebuilt only when the Python or the pins change,
# so that re-runs skip the PyPI downloads.
pyver=$("$BENCH_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
tools=$work/tools-$pyver
stamp=$( { readlink -f "$BENCH_PYTHON"; cat "$reqs"; } | sha256sum | cut -c1-16)
if [ "$(cat "$tools/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "bench: installing peer tools into $tools" >&2
    rm -rf "$tools"
    "$BENCH_PYTHON" -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
    echo "$stamp" >"$tools/.stamp"
fi

out=${BENCH_OUT:-$root/BENCHMARKS.md}
"$BENCH_PYTHON" "$root/tests/bench/bench.py" \
    --root "$root" --work "$work" --pyshrink "$pyshrink" --python "$BENCH_PYTHON" \
    --tools "$tools" --requirements "$reqs" --out "$out"
"$root/tests/bench/large_payload.sh" "$pyshrink" "$BENCH_PYTHON" "$work" | tee -a "$out"
