#!/usr/bin/env bash
# The launcher's memory while extracting a large payload: a directory app carrying 100 MB of
# incompressible data, extracted cold under /usr/bin/time. The figure is the peak RSS of the
# whole process, launcher and then Python (the kernel keeps the high-water mark across exec),
# so it bounds the launcher's. Prints one Markdown section.
#   tests/bench/large_payload.sh PYSHRINK PYTHON WORKDIR
set -euo pipefail
pyshrink=$1 python=$2 work=$3
app=$work/large-app
rm -rf "$app" "$work/large-extract"
mkdir -p "$app"
printf 'import os\nprint(os.path.getsize(os.path.join(os.path.dirname(__file__), "blob.bin")))\n' >"$app/__main__.py"
head -c 100000000 /dev/urandom >"$app/blob.bin"
"$pyshrink" bundle -q --compression-level 3 --python "$python" "$app" -o "$work/large.bin"
out=$(PYSHRINK_EXTRACT_DIR=$work/large-extract /usr/bin/time -f '%M %e' "$work/large.bin" 2>&1 >/dev/null)
read -r rss secs <<<"$out"
echo
echo "### Extracting a large payload"
echo
echo "A directory app with 100 MB of random data: bundle $(stat -c %s "$work/large.bin") bytes;"
echo "cold run (extraction + Python): peak RSS **$((rss / 1024)) MiB**, $secs s."
