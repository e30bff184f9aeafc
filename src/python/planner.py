# Runs inside the *target* interpreter (any CPython 3.8+), so layout, import analysis and bytecode
# all come from the Python the bundle will carry, whatever version pyshrink itself was built near.
#
# argv[1] is a JSON request; the answer is one JSON object on stdout. Modes:
#   {"mode": "layout"}                      -> the interpreter's layout
#   {"mode": "plan", ...}                   -> analyse the app, write the staging tree, report
import json
import os
import sys


def layout():
    import sysconfig
    import site
    import importlib.util
    import platform

    cv = sysconfig.get_config_var
    dynload = [p for p in sys.path if os.path.basename(p.rstrip("/")) == "lib-dynload"]
    sites = []
    try:
        sites = site.getsitepackages()
    except AttributeError:
        pass
    for key in ("purelib", "platlib"):
        p = sysconfig.get_path(key)
        if p not in sites:
            sites.append(p)
    base_exe = getattr(sys, "_base_executable", sys.executable)
    return {
        "implementation": sys.implementation.name,
        "version": list(sys.version_info[:3]),
        "version_str": platform.python_version(),
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "exec_prefix": sys.exec_prefix,
        "stdlib": sysconfig.get_path("stdlib"),
        "platstdlib": sysconfig.get_path("platstdlib"),
        "dynload": dynload[0] if dynload else None,
        "site_packages": [p for p in sites if os.path.isdir(p)],
        "libdir": cv("LIBDIR"),
        "ldlibrary": cv("LDLIBRARY"),
        "instsoname": cv("INSTSONAME"),
        "shared": bool(cv("Py_ENABLE_SHARED")),
        "executable": sys.executable,
        "real_executable": os.path.realpath(base_exe),
        "cache_tag": sys.implementation.cache_tag,
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "platlibdir": getattr(sys, "platlibdir", "lib"),
        "ext_suffix": cv("EXT_SUFFIX"),
        "builtin_modules": sorted(sys.builtin_module_names),
    }


def startup_modules():
    """Modules this interpreter imports before any user code, in the bundle's mode (-E -s),
    without the host's .pth files (which import whatever the host's packages want) and without
    sitecustomize (Debian's only installs a crash-report hook)."""
    import subprocess
    code = ("import sys, site\n"
            "print('\\n'.join('%s\\t%s' % (n, getattr(m, '__file__', None) or '')"
            " for n, m in sorted(sys.modules.items())"
            " if getattr(getattr(m, '__spec__', None), 'origin', None) not in ('frozen', 'built-in')))")
    out = subprocess.run([sys.executable, "-E", "-s", "-S", "-c", code], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if "\t" in line]


# Parts of the stdlib never bundled: test suites, IDLE, Tk, ensurepip, lib2to3, build config.
PRUNED_TOP = {
    "test", "idlelib", "tkinter", "turtle", "turtledemo", "ensurepip", "lib2to3",
    "__phello__", "__hello__", "_tkinter", "pydoc_data", "distutils", "venv",
}
PRUNED_DIRS = {"test", "tests", "idle_test", "__pycache__"}
# Development tools that stdlib modules import only for self-tests and debugging hooks.
DEV_ONLY = {"doctest", "unittest", "pdb", "pydoc", "bdb", "trace", "profile", "cProfile", "pstats"}
# Stdlib modules that exist only when CPython was built with an optional system library, and
# that the rest of the stdlib treats as optional.
SOFT_OPTIONAL = {"ssl", "_ssl", "_hashlib", "lzma", "_lzma", "bz2", "_bz2", "readline", "ctypes",
                 "_ctypes", "_uuid", "sqlite3", "_sqlite3", "curses", "_curses", "dbm", "_dbm",
                 "_gdbm", "_tkinter"}
# Optional stdlib imports that are followed all the same: urllib.request without ssl cannot
# open https URLs, which is what most apps use it for.
KEEP_OPTIONAL = {"urllib.request": {"ssl"}}
# Imports that only other platforms satisfy.
OTHER_PLATFORMS = {"nt", "msvcrt", "winreg", "_winreg", "_winapi", "_overlapped", "winsound",
                   "_scproxy", "org", "java", "vms_lib", "_frozen_importlib", "os.path",
                   "_frozen_importlib_external", "_wmi", "_msi", "_dummy_threading", "riscos",
                   "riscosenviron", "riscospath", "ce", "os2", "MacOS", "macpath", "_emscripten_info"}
# Test-only extension modules of the stdlib.
PRUNED_EXT = {"xxlimited", "xxlimited_35", "xxsubtype", "_ctypes_test"}


def pruned(name):
    parts = name.split(".")
    top = parts[0]
    return (top in PRUNED_TOP or top in PRUNED_EXT or top.startswith(("config-", "_test", "_xx"))
            or any(p in PRUNED_DIRS for p in parts[1:]))


_REAL = {}


def real(path):
    """realpath, cached per directory: callers ask about thousands of files in few dirs."""
    d, f = os.path.split(os.path.abspath(path))
    if d not in _REAL:
        _REAL[d] = os.path.realpath(d)
    return os.path.join(_REAL[d], f)


def under(path, root):
    if not root:
        return False
    return real(path).startswith(os.path.join(real(root), ""))


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


def strip_docstrings(tree):
    """Drops docstrings from a module, its classes and functions (line numbers unchanged).
    Used for the stdlib only, which never reads its own docstrings at run time (pydoc and
    doctest, which do, are development tools); app and package code keep theirs, since some
    (click, docopt, argparse descriptions) turn them into behaviour."""
    import ast
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                if len(body) == 1:
                    body[0] = ast.copy_location(ast.Pass(), body[0])
                else:
                    del body[0]
    return tree


def compile_to(src, dest, display, warnings, strip_docs=False):
    """Compiles `src` to an unchecked-hash .pyc at `dest` with this interpreter. A syntax error
    in the app is the user's to fix; one in a third-party or stdlib file (Python 2 leftovers,
    templates named .py) only leaves that file out."""
    import ast
    import importlib.util
    from importlib._bootstrap_external import _code_to_hash_pyc
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(src, "rb") as f:
        source = f.read()
    try:
        tree = ast.parse(source, display)
        if strip_docs:
            strip_docstrings(tree)
        code = compile(tree, display, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as err:
        where = "%s:%s" % (src, getattr(err, "lineno", "?"))
        msg = getattr(err, "msg", None) or str(err)
        if display.startswith("app/"):
            raise UserError("syntax error at %s: %s" % (where, msg))
        warnings.append("left out %s: it does not compile (%s: %s)" % (display, where, msg))
        return
    with open(dest, "wb") as f:
        f.write(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))


def copy(src, dest):
    import shutil
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(src, dest)


def module_files(root, rel_prefix=""):
    """Every file of a stdlib package directory, pruned."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in PRUNED_DIRS)
        for f in sorted(filenames):
            yield os.path.join(dirpath, f)


def make_finder():
    import modulefinder

    class Finder(modulefinder.ModuleFinder):
        """ModuleFinder that remembers which module imported which."""

        def __init__(self, *a, **k):
            self.stdlib = k.pop("stdlib", None)
            self.sites = k.pop("sites", [])
            self.soft = {}
            modulefinder.ModuleFinder.__init__(self, *a, **k)
            self.by = {}

        def import_hook(self, name, caller=None, fromlist=None, level=-1):
            # The stdlib's own self-tests (`pickle._test` imports doctest) and debugger hooks
            # would pull in doctest -> pdb -> pydoc -> unittest -> asyncio... Follow these
            # development tools only when the app or its packages import them.
            if (caller is not None and name.split(".")[0] in DEV_ONLY and caller.__file__
                    and self.stdlib and under(caller.__file__, self.stdlib)):
                return None
            if caller is not None and caller.__name__ in self.soft.get(name, ()):
                return None
            who = caller.__name__ if caller is not None else "<entry>"
            before = set(self.modules)
            try:
                return modulefinder.ModuleFinder.import_hook(self, name, caller, fromlist, level)
            finally:
                # Nested imports finish first, so each module keeps the importer that
                # actually reached it, not the one at the top of the chain.
                for new in set(self.modules) - before:
                    self.by.setdefault(new, {who})

        def importers(self, name):
            return sorted(self.by.get(name, ()))

        def load_module(self, fqname, fp, pathname, file_info):
            # Library modules keep demos and self-tests under `if __name__ == "__main__":`
            # (heapq imports doctest there, which imports pdb, pydoc, unittest, asyncio...).
            # That code never runs in a bundle, so scan the module without it. The entry
            # script itself keeps its main block: that is the app.
            suffix, mode, kind = file_info
            if kind != modulefinder._PY_SOURCE or fqname == "__main__":
                return modulefinder.ModuleFinder.load_module(self, fqname, fp, pathname, file_info)
            import ast
            tree = ast.parse(fp.read(), pathname)
            tree.body = [n for n in tree.body if not is_main_guard(n)]
            if self.stdlib and under(pathname, self.stdlib) and not self.in_site(pathname):
                self.soften(fqname, tree)
            m = self.add_module(fqname)
            m.__file__ = pathname
            self.scan_code(compile(tree, pathname, "exec"), m)
            self.msgout(2, "load_module ->", m)
            return m

        def in_site(self, path):
            return any(under(path, s) for s in self.sites)

        def soften(self, fqname, tree):
            """The stdlib guards the modules that need optional system libraries (OpenSSL, liblzma,
            libbz2, libffi, readline...) with `try: import X / except ImportError:` and works
            without them: http.client without ssl, hashlib without _hashlib, shutil without
            lzma. Those guarded imports are not followed from stdlib code; what the app or its
            packages import for real still comes, and the rest is reported so
            `--include-module` can bring it back."""
            A = ast_mod()
            for node in A.walk(tree):
                if not isinstance(node, A.Try) or not any(catches_import_error(h) for h in node.handlers):
                    continue
                for stmt in node.body:
                    for sub in A.walk(stmt):
                        names = []
                        if isinstance(sub, A.Import):
                            names = [a.name for a in sub.names]
                        elif isinstance(sub, A.ImportFrom) and not sub.level and sub.module:
                            names = [sub.module]
                        for n in names:
                            top = n.split(".")[0]
                            if top in SOFT_OPTIONAL and top not in KEEP_OPTIONAL.get(fqname, ()):
                                self.soft.setdefault(n, set()).add(fqname)

    def catches_import_error(handler):
        A = ast_mod()
        t = handler.type
        if t is None:
            return True
        names = [e for e in (t.elts if isinstance(t, A.Tuple) else [t])]
        return any(isinstance(e, A.Name) and e.id in ("ImportError", "ModuleNotFoundError", "Exception")
                   for e in names)

    def is_main_guard(node):
        if not isinstance(node, ast_mod().If):
            return False
        t = node.test
        A = ast_mod()
        return (isinstance(t, A.Compare) and isinstance(t.left, A.Name) and t.left.id == "__name__"
                and len(t.comparators) == 1 and isinstance(t.comparators[0], A.Constant)
                and t.comparators[0].value == "__main__")

    def ast_mod():
        import ast
        return ast

    return Finder


def plan(req):
    Finder = make_finder()

    info = layout()
    stage = req["stage"]
    ver = "python%d.%d" % tuple(info["version"][:2])
    stdlib_dest = os.path.join(stage, "lib", ver)
    stdlib = info["stdlib"]
    dynload = info["dynload"]
    sites = [os.path.realpath(p) for p in info["site_packages"]]
    report = {"layout": info, "modules": [], "missing": [], "elf": [], "entry": None,
              "distributions": [], "warnings": []}
    written = set()
    stdlib_rel = os.path.join("lib", ver, "")
    site_rel = os.path.join("lib", ver, "site-packages", "")
    # Frozen stdlib modules (os, codecs, io, site... since 3.11) are inside libpython; their
    # .pyc would never be read. os.pyc stays: it is CPython's prefix landmark.
    import _imp
    frozen_used = getattr(getattr(os, "__spec__", None), "origin", None) == "frozen"

    def emit(src, dest_rel, kind):
        dest = os.path.join(stage, dest_rel)
        if dest in written:
            return
        written.add(dest)
        if kind == "compile":
            stdlib_code = dest_rel.startswith(stdlib_rel) and not dest_rel.startswith(site_rel)
            compile_to(src, dest, dest_rel[:-1], report["warnings"], strip_docs=stdlib_code)
        else:
            copy(src, dest)
            if kind == "elf":
                report["elf"].append(dest_rel)

    def stdlib_file(path):
        """Stage one stdlib file (source compiled, extension copied)."""
        if dynload and under(path, dynload):
            emit(path, os.path.join("lib", ver, "lib-dynload", os.path.basename(path)), "elf")
        elif path.endswith(".py"):
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(stdlib))
            name = rel[:-3].replace(os.sep, ".")
            if name.endswith(".__init__"):
                name = name[:-9]
            if frozen_used and name != "os" and _imp.is_frozen(name):
                return
            emit(path, os.path.join("lib", ver, rel + "c"), "compile")
        elif path.endswith(".so"):
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(stdlib))
            emit(path, os.path.join("lib", ver, rel), "elf")

    # The app.
    entry = req["entry"]
    app_dir = None
    if entry["kind"] == "script":
        script = os.path.abspath(entry["path"])
        app_dir = os.path.dirname(script)
        emit(script, os.path.join("app", os.path.basename(script) + "c"), "compile")
        report["entry"] = {"kind": "script", "path": "app/" + os.path.basename(script) + "c"}
        search = [app_dir]
    elif entry["kind"] == "dir":
        app_dir = os.path.abspath(entry["path"])
        for path in module_files(app_dir):
            rel = os.path.relpath(path, app_dir)
            if path.endswith(".py"):
                emit(path, os.path.join("app", rel + "c"), "compile")
            elif not path.endswith(".pyc"):
                emit(path, os.path.join("app", rel), "elf" if path.endswith(".so") else "copy")
        report["entry"] = {"kind": "script", "path": "app/__main__.pyc"}
        search = [app_dir]
    else:
        app_dir = os.path.abspath(entry.get("cwd") or os.getcwd())
        report["entry"] = {"kind": "module", "name": entry["name"]}
        search = [app_dir]

    finder = Finder(path=search + sys.path, stdlib=stdlib, sites=sites,
                    excludes=req.get("exclude", []) + sorted(PRUNED_TOP))
    if entry["kind"] == "module":
        finder.import_hook(entry["name"])
        try:
            finder.import_hook(entry["name"] + ".__main__")
        except ImportError:
            pass
        finder.import_hook("runpy")
    else:
        main = entry["path"] if entry["kind"] == "script" else os.path.join(app_dir, "__main__.py")
        finder.run_script(main)
    for name in req.get("include", []):
        try:
            finder.import_hook(name)
        except ImportError:
            raise SystemExit("module %r given to --include-module cannot be imported" % name)

    # What the interpreter imports before any user code, taken as files rather than followed:
    # following `site` would drag in pydoc (for `help()`) and with it half the stdlib.
    for name, path in startup_modules():
        if path and not pruned(name) and under(path, stdlib) and not any(under(path, s) for s in sites):
            stdlib_file(path)

    stdlib_all = req.get("stdlib") == "all"
    if stdlib_all:
        for path in module_files(stdlib):
            rel = os.path.relpath(path, stdlib)
            top = rel.split(os.sep)[0]
            if top in ("site-packages", "dist-packages") or (dynload and under(path, dynload)):
                continue
            name = rel[:-3].replace(os.sep, ".") if rel.endswith(".py") else rel
            if pruned(name) or not rel.endswith(".py"):
                continue
            stdlib_file(path)
        if dynload:
            for f in sorted(os.listdir(dynload)):
                if f.endswith(".so") and not pruned(f.split(".")[0]):
                    stdlib_file(os.path.join(dynload, f))

    # CPython finds its exec_prefix by the lib-dynload directory, present even when empty.
    os.makedirs(os.path.join(stdlib_dest, "lib-dynload"), exist_ok=True)

    # CPython finds its prefix by this landmark (lib/pythonX.Y/os.py or .pyc), frozen or not.
    stdlib_file(os.path.join(stdlib, "os.py"))

    # The whole encodings package: codecs.lookup() imports any of them by name at run time.
    # Taken as files, not followed: the text codecs need nothing else, and following the
    # transform codecs (bz2_codec, zlib_codec...) and the CJK ones would bring their C modules
    # and half the stdlib into every bundle. They work when the app reaches what they wrap.
    for path in module_files(os.path.join(stdlib, "encodings")):
        if path.endswith(".py"):
            stdlib_file(path)
    # Host names go through the idna codec (socket.getfqdn, http), which needs unicodedata.
    if "socket" in finder.modules:
        for name in ("stringprep", "unicodedata"):
            finder.import_hook(name)

    dists = distributions(sites)
    used_dists = set()
    for name, mod in sorted(finder.modules.items()):
        path = mod.__file__
        if not path or pruned(name) and not under(path, app_dir or "/nonexistent"):
            continue
        site = next((s for s in sites if under(path, s)), None)
        if site is not None:
            owner = dists["by_file"].get(real(path))
            if owner is not None:
                used_dists.add(owner)
                report["modules"].append({"name": name, "origin": "site", "dist": owner,
                                          "imported_by": finder.importers(name)})
                continue
            rel = os.path.relpath(path, site)
            dest = os.path.join("lib", ver, "site-packages", rel)
            emit(path, dest + "c" if path.endswith(".py") else dest,
                 "compile" if path.endswith(".py") else "elf" if path.endswith(".so") else "copy")
            report["modules"].append({"name": name, "origin": "site", "dist": None,
                                      "imported_by": finder.importers(name)})
        elif app_dir and under(path, app_dir) and not under(path, stdlib):
            rel = os.path.relpath(path, app_dir)
            if entry["kind"] != "dir":
                emit(path, os.path.join("app", rel + "c") if path.endswith(".py")
                     else os.path.join("app", rel), "compile" if path.endswith(".py")
                     else "elf" if path.endswith(".so") else "copy")
            report["modules"].append({"name": name, "origin": "app",
                                      "imported_by": finder.importers(name)})
        elif under(path, stdlib) or (dynload and under(path, dynload)):
            if pruned(name):
                continue
            stdlib_file(path)
            report["modules"].append({"name": name, "origin": "stdlib",
                                      "imported_by": finder.importers(name)})

    for key in sorted(used_dists):
        d = dists["dists"][key]
        report["distributions"].append({"name": d["name"], "version": d["version"]})
        for path in d["files"]:
            if not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, d["site"])
            dest = os.path.join("lib", ver, "site-packages", rel)
            if path.endswith(".py"):
                emit(path, dest + "c", "compile")
            elif path.endswith(".pyc") or "__pycache__" in rel.split(os.sep):
                continue
            else:
                emit(path, dest, "elf" if is_elf(path) else "copy")

    # any_missing_maybe() separates real misses from `from pkg import name` of attributes;
    # modules of other platforms are expected to be missing here.
    missing, _maybe = finder.any_missing_maybe()
    report["missing"] = sorted(
        n for n in missing
        if not pruned(n) and n.split(".")[0] not in sys.builtin_module_names
        and n.split(".")[0] not in OTHER_PLATFORMS and n != "os.path")
    report["optional_left_out"] = [
        {"name": n, "imported_by": sorted(by)} for n, by in sorted(finder.soft.items())
        if n not in finder.modules and not pruned(n) and n.split(".")[0] not in OTHER_PLATFORMS
        and n.split(".")[0] not in sys.builtin_module_names]
    report["elf"].sort()
    return report


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def distributions(sites):
    """Installed distributions of the site dirs, with the files their RECORD lists."""
    import csv
    by_file, dists = {}, {}
    for site in sites:
        for entry in sorted(os.listdir(site)):
            if not entry.endswith(".dist-info"):
                continue
            info = os.path.join(site, entry)
            record = os.path.join(info, "RECORD")
            meta = os.path.join(info, "METADATA")
            name, version = entry[:-len(".dist-info")].rsplit("-", 1) if "-" in entry else (entry, "")
            try:
                with open(meta, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if line.startswith("Name:"):
                            name = line.split(":", 1)[1].strip()
                        elif line.startswith("Version:"):
                            version = line.split(":", 1)[1].strip()
                        elif not line.strip():
                            break
            except OSError:
                pass
            files = set()
            try:
                with open(record, newline="", encoding="utf-8") as f:
                    for row in csv.reader(f):
                        if not row:
                            continue
                        p = real(os.path.normpath(os.path.join(site, row[0])))
                        if under(p, site):
                            files.add(p)
            except OSError:
                continue
            for dirpath, _, filenames in os.walk(info):
                for f in filenames:
                    files.add(real(os.path.join(dirpath, f)))
            key = name.lower().replace("_", "-")
            dists[key] = {"name": name, "version": version, "site": site, "files": sorted(files)}
            for p in files:
                by_file.setdefault(p, key)
    return {"by_file": by_file, "dists": dists}


def main():
    req = json.loads(sys.argv[1])
    import platform
    impl = platform.python_implementation()
    if impl != "CPython" or sys.version_info < (3, 8):
        sys.stdout.write(json.dumps({"unsupported": "%s %s" % (impl, platform.python_version())}))
        return
    try:
        out = layout() if req["mode"] == "layout" else plan(req)
    except UserError as e:
        out = {"error": str(e)}
    except SyntaxError as e:
        out = {"error": "syntax error at %s:%s: %s" % (e.filename, e.lineno, e.msg)}
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
