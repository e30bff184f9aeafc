#!/usr/bin/env python3
"""Writes the manifest and tar seeds of corpus/ (the trailer seeds are written with
`Trailer::encode`, see README.md). Deterministic: fixed mtimes, owners and order, so a rerun
rewrites the same bytes.

The tar seeds cover what the bundler writes (GNU headers, long names, hard links to an earlier
file) and what a hostile archive holds (links out of the root, devices, `..`, absolute paths), from GNU tar and from Python's tarfile, which
writes any name and type it is given."""

import io
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

MANIFEST_SCRIPT = b"""pyshrink-manifest 1
python=3.11.7
interpreter=bin/python.real
loader=lib/ld-linux-x86-64.so.2
library_path=lib
python_exe=bin/python3
entry=script:app/app.pyc
"""

MANIFEST_MODULE = b"""pyshrink-manifest 1
python=3.12.1
interpreter=bin/python.real
loader=lib/ld-linux-x86-64.so.2
library_path=lib
python_exe=bin/python3
entry=module:pkg.cli
files=42
created_by=pyshrink 0.1.0
"""


def trim(tar: bytes) -> bytes:
    """Drops the record padding past the two end-of-archive blocks (tar pads to 10 KiB)."""
    end = len(tar)
    while end >= 512 and not any(tar[end - 512 : end]):
        end -= 512
    return tar[:end] + bytes(1024)


def tarfile_archive(members, fmt=tarfile.GNU_FORMAT, pax_headers=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers) as tf:
        for name, kind, data, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 0
            info.mode = extra.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            info.linkname = extra.get("linkname", "")
            info.devmajor, info.devminor = extra.get("dev", (0, 0))
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.pax_headers = extra.get("pax", {})
            tf.addfile(info, io.BytesIO(data) if info.size else None)
    return trim(buf.getvalue())


def gnu_tar(files) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in files:
            full = os.path.join(tmp, path)
            if data is None:
                os.makedirs(full, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "wb") as f:
                    f.write(data)
        out = subprocess.run(
            ["tar", "--format=gnu", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
             "--numeric-owner", "--mode=go-w", "-b1", "-C", tmp, "-cf", "-",
             # Top-level names rather than `.`: a `./` member is refused (`.` component).
             *sorted(os.listdir(tmp))],
            check=True, stdout=subprocess.PIPE,
        ).stdout
    return trim(out)


def base256_size(tar: bytes) -> bytes:
    """The first header's size field rewritten in GNU base-256 form (used past 8 GiB), with the
    checksum fixed: the same archive, read through the other size parser."""
    h = bytearray(tar[:512])
    size = int(h[124:136].rstrip(b"\0 ") or b"0", 8)
    h[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + tar[512:]


def main():
    F, D = tarfile.REGTYPE, tarfile.DIRTYPE
    long_dir = "/".join(["d%02d" % i for i in range(40)])  # 159 characters
    seeds = {
        "manifest": {
            "seed-script": MANIFEST_SCRIPT,
            "seed-module-extra": MANIFEST_MODULE,
        },
    }
    tars = {
        "seed-gnu-basic.tar": gnu_tar([
            ("app", None),
            ("app/app.pyc", b"\x6f\x0d\x0d\x0a" + bytes(12) + b"code"),
            ("lib/python3.11/os.py", b"import sys\n" * 70),  # 770 bytes: data spans two blocks
            ("empty", b""),
        ]),
        "seed-gnu-longname.tar": gnu_tar([("pkg/" + "long_" * 24 + ".py", b"x = 1\n")]),
        "seed-pax-longname.tar": tarfile_archive(
            [(long_dir, D, b"", {}), (long_dir + "/m.py", F, b"y = 2\n", {})],
            fmt=tarfile.PAX_FORMAT, pax_headers={"comment": "global header"},
        ),
        "seed-ustar-prefix.tar": tarfile_archive(
            [(long_dir[:119] + "/file.txt", F, b"prefix\n", {})], fmt=tarfile.USTAR_FORMAT,
        ),
        "seed-symlink.tar": tarfile_archive([
            ("a", D, b"", {}),
            ("a/link", tarfile.SYMTYPE, b"", {"linkname": "../../etc"}),
            ("a/link/passwd", F, b"root::0:0::/:/bin/sh\n", {}),
        ]),
        "seed-hardlink.tar": tarfile_archive([
            ("hard", tarfile.LNKTYPE, b"", {"linkname": "/etc/shadow"}),
        ]),
        # What the bundler writes for a file with the same bytes as an earlier one, a GNU `K`
        # record for a long target; then what it never writes: a link to a link, to a directory.
        "seed-hardlink-inside.tar": tarfile_archive([
            (long_dir + "/libz.so.1", F, b"\x7fELF" + bytes(600), {}),
            ("lib/libz.so", tarfile.LNKTYPE, b"", {"linkname": long_dir + "/libz.so.1"}),
            ("lib/again", tarfile.LNKTYPE, b"", {"linkname": "lib/libz.so"}),
            ("lib/dir", tarfile.LNKTYPE, b"", {"linkname": "lib"}),
        ]),
        "seed-dotdot.tar": tarfile_archive([
            ("../escape.txt", F, b"out\n", {}),
            ("a/../../x", F, b"out\n", {}),
        ]),
        "seed-absolute.tar": tarfile_archive([("/tmp/pyshrink-abs", F, b"abs\n", {})]),
        "seed-chardev.tar": tarfile_archive([
            ("dev", D, b"", {}),
            ("dev/null", tarfile.CHRTYPE, b"", {"dev": (1, 3)}),
            ("fifo", tarfile.FIFOTYPE, b"", {}),
        ]),
        # Names the launcher writes itself after the archive: O_EXCL refuses the duplicate.
        "seed-reserved-name.tar": tarfile_archive([("bin", D, b"", {}), ("bin/python3", F, b"#!\n", {})]),
    }
    # A file through the code filter: calls and RIP-relative loads, some three bytes apart.
    code = b"".join(
        b"\xe8" + (0x1000 - 12 * k).to_bytes(4, "little", signed=True)
        + b"\x48\x8b\x05" + (0x8000 - 12 * k).to_bytes(4, "little", signed=True)
        + (b"\xe8\x90\x90" if k % 5 == 0 else b"\x90")
        for k in range(60)
    )
    tars["seed-x86-code.tar"] = tarfile_archive(
        [("lib/libx.so", F, code, {"pax": {"PYSHRINK.x86": "4,%d" % (len(code) - 9)}})],
        fmt=tarfile.PAX_FORMAT,
    )
    # A relocation table (through the relocation filter: offsets, infos, addends as columns) and
    # the words it relocates, stored minus their addend.
    n = 12
    offsets = [8 * k for k in range(n)]
    infos = [8 if k != 4 else (3 << 32) | 6 for k in range(n)]
    addends = [0x4000 + 24 * k for k in range(n)]
    deltas, prev_o, prev_a = ([], [], []), 0, 0
    for o, i, a in zip(offsets, infos, addends):
        deltas[0].append((o - prev_o) % 2**64)
        prev_o = o
        deltas[1].append(i)
        if i == 8:
            deltas[2].append((a - prev_a) % 2**64)
            prev_a = a
        else:
            deltas[2].append(a)
    table = b"".join(x.to_bytes(8, "little") for col in deltas for x in col)
    words = b"".join((k % 3).to_bytes(8, "little") for k in range(n))
    rela_file = table + words + b"end"
    tars["seed-relocations.tar"] = tarfile_archive(
        [("lib/librel.so", F, rela_file, {"pax": {
            "PYSHRINK.rela": "0,%d" % len(table),
            "PYSHRINK.rela-data": "%d,0,%d" % (len(table), len(words)),
        }})],
        fmt=tarfile.PAX_FORMAT,
    )
    tars["seed-base256-size.tar"] = base256_size(tarfile_archive([("big", F, b"b" * 600, {})]))
    seeds["archive"] = tars
    seeds["extract"] = tars
    for target, files in seeds.items():
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
