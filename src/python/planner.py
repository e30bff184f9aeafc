# Runs inside the *target* interpreter (any CPython 3.8+), so layout, import analysis and bytecode
# all come from the Python the bundle will carry, whatever version pyshrink itself was built near.
# Python 2 must still parse this file, to reach the version check and its clear error: no
# `yield from`, f-strings or other Python-3-only syntax.
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


def runtime_site_rel(info):
    """Where the bundled interpreter's `site` looks for packages, relative to its prefix. The
    bundle is no virtualenv, so this asks the base interpreter (a venv's own answer would name
    the venv scheme): `lib/pythonX.Y/site-packages` for upstream CPython, `lib/python3/dist-packages`
    for Debian's, whose `site` never reads a site-packages directory outside a venv."""
    import subprocess
    marker = "/@pyshrink-prefix@"
    code = "import site, json; print(json.dumps(site.getsitepackages([%r])))" % marker
    default = os.path.join("lib", "python%d.%d" % tuple(info["version"][:2]), "site-packages")
    try:
        out = subprocess.run([info["real_executable"], "-E", "-s", "-S", "-c", code],
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        dirs = json.loads(out)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return default
    rels = [os.path.relpath(d, marker) for d in dirs if d.startswith(marker + "/")]
    # Debian lists /usr/local first: keep that for the administrator's packages.
    rels = [r for r in rels if not r.startswith("local" + os.sep)] or rels
    return rels[0] if rels else default


# Parts of the stdlib never bundled: test suites, IDLE, Tk, ensurepip, lib2to3, build config.
PRUNED_TOP = {
    "test", "idlelib", "tkinter", "turtle", "turtledemo", "ensurepip", "lib2to3",
    "__phello__", "__hello__", "_tkinter", "pydoc_data", "distutils", "venv",
}
PRUNED_DIRS = {"test", "tests", "idle_test", "__pycache__"}
# Development tools that stdlib modules import only for self-tests and debugging hooks.
DEV_ONLY = {"doctest", "unittest", "pdb", "pydoc", "bdb", "trace", "profile", "cProfile", "pstats"}
# Stdlib modules that exist only when CPython was built with an optional system library, and
# that the rest of the stdlib treats as optional; and plistlib (with pyexpat), which platform
# imports, guarded, only where macOS's SystemVersion.plist exists.
SOFT_OPTIONAL = {"tracemalloc", "ssl", "_ssl", "_hashlib", "lzma", "_lzma", "bz2", "_bz2", "readline", "ctypes",
                 "_ctypes", "_uuid", "sqlite3", "_sqlite3", "curses", "_curses", "dbm", "_dbm",
                 "_gdbm", "_tkinter", "plistlib"}
# Optional stdlib imports that are followed all the same: urllib.request without ssl cannot
# open https URLs, which is what most apps use it for.
KEEP_OPTIONAL = {"urllib.request": {"ssl"}}
# Imports that only other platforms satisfy.
OTHER_PLATFORMS = {"nt", "msvcrt", "winreg", "_winreg", "_winapi", "_overlapped", "winsound",
                   "_scproxy", "org", "java", "vms_lib", "_frozen_importlib", "os.path",
                   "_frozen_importlib_external", "_wmi", "_msi", "_dummy_threading", "riscos",
                   "riscosenviron", "riscospath", "ce", "os2", "MacOS", "macpath", "_emscripten_info"}
# The import system itself, frozen into every CPython 3 (importlib imports the .py only when
# the frozen copy is missing). Scanning the source would follow its lazy hooks into
# importlib.metadata, email, zipfile, tempfile, random, decimal...
ALWAYS_FROZEN = ["importlib._bootstrap", "importlib._bootstrap_external"]
# Functions of stdlib modules that are their command lines and self-tests.
MODULE_CLI = {"main", "_main", "test", "_test", "_testit", "demo", "_demo"}
# Test-only extension modules of the stdlib.
PRUNED_EXT = {"xxlimited", "xxlimited_35", "xxsubtype", "_ctypes_test"}


def in_package(name, package):
    """Whether module `name` is `package` or one of its submodules."""
    return name == package or name.startswith(package + ".")


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


# The fields of AST nodes that hold statements (or `except` and `case` clauses, which do).
BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def statements(node):
    """`node` and every statement under it, with the `except` and `case` clauses that hold
    statements, without going into expressions. Imports, `if`, `try`, classes and functions are
    only ever statements, so this finds the same ones as `ast.walk` (in another order) for a
    fraction of its time: most of a module's nodes are expressions."""
    todo = [node]
    while todo:
        node = todo.pop()
        yield node
        for field in BLOCKS:
            block = getattr(node, field, None)
            if isinstance(block, list):
                todo.extend(block)


def strip_docstrings(tree):
    """Drops docstrings from a module, its classes and functions (line numbers unchanged).
    Used for the stdlib only, which never reads its own docstrings at run time (pydoc and
    doctest, which do, are development tools); app and package code keep theirs, since some
    (click, docopt, argparse descriptions) turn them into behaviour."""
    import ast
    for node in statements(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                if len(body) == 1:
                    body[0] = ast.copy_location(ast.Pass(), body[0])
                else:
                    del body[0]
    return tree


def drop_unused_test_helpers(tree):
    """Removes (from analysis only) the module's top-level `_test*`/`_demo*` functions that
    nothing left in it names: helpers of the self-tests dropped above, such as
    `random._test_generator`, which imports statistics, and through it fractions and decimal.
    One the module still uses (asyncio's `_test_selector_event`) stays."""
    import ast
    while True:
        helpers = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                   and n.name.startswith(("_test", "_demo"))]
        if not helpers:
            return
        used = set()
        for node in tree.body:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and not (sub is node):
                    used.add(sub.id)
                elif isinstance(sub, ast.Attribute):
                    used.add(sub.attr)
        unused = [n for n in helpers if n.name not in used]
        if not unused:
            return
        tree.body = [n for n in tree.body if n not in unused]


def compile_to(src, dest, display, warnings, strip_docs=False, append=None):
    """Compiles `src` to an unchecked-hash .pyc at `dest` with this interpreter and returns the
    code (None when it was left out). A syntax error in the app is the user's to fix; one in a
    third-party or stdlib file (Python 2 leftovers, templates named .py) only leaves that file
    out. `append` is source added at the end of the module (the host-data hooks below)."""
    import ast
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(src, "rb") as f:
        source = f.read()
    if append:
        source = source.rstrip(b"\n") + b"\n\n\n" + append.encode("ascii")
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
        return None
    write_pyc(dest, code, source)
    return code


def write_pyc(dest, code, source):
    """`code` as an unchecked-hash .pyc of `source` (bytes) at `dest`."""
    import importlib.util
    from importlib._bootstrap_external import _code_to_hash_pyc
    with open(dest, "wb") as f:
        f.write(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))


# What an empty root lacks and a bundled app may need: CA certificates for `ssl` and a time
# zone database for `zoneinfo`. Copied from the build host into the bundle (relative to the
# prefix, which is the extraction directory), and found through code appended to the bundled
# stdlib module that would otherwise look on the host: it runs only when the app imports that
# module, so start-up pays nothing, no environment variable is set for child processes to
# inherit, and no sitecustomize or .pth file is taken from the app.
HOST_CA_DEST = os.path.join("share", "pyshrink", "cacert.pem")
HOST_TZ_DEST = os.path.join("share", "pyshrink", "zoneinfo")

# Appended to ssl.py. OpenSSL reads SSL_CERT_FILE and SSL_CERT_DIR itself (-E does not hide them
# from it), so with either set the bundled file stays out and the user's choice is the only one.
# Otherwise it is loaded after OpenSSL's own default paths, which still count when the bundle
# runs on a host that has them. load_default_certs() and create_default_context() go through
# set_default_verify_paths().
SSL_HOOK = """\
def _pyshrink_bundled_cafile():
    import os
    import sys
    cafile = os.path.join(sys.base_prefix, %r)
    default_paths = SSLContext.set_default_verify_paths

    def set_default_verify_paths(self):
        default_paths(self)
        env = os.environ
        if not env.get("SSL_CERT_FILE") and not env.get("SSL_CERT_DIR") and os.path.isfile(cafile):
            # Read by Python rather than by OpenSSL: in the memory runtime the file is in a zip.
            with open(cafile, encoding="ascii", errors="replace") as f:
                self.load_verify_locations(cadata=f.read())

    set_default_verify_paths.__doc__ = default_paths.__doc__
    SSLContext.set_default_verify_paths = set_default_verify_paths


_pyshrink_bundled_cafile()
del _pyshrink_bundled_cafile
""" % HOST_CA_DEST

# Appended to zoneinfo/_tzpath.py: the bundled database ends the default search path, so a system
# database (when the bundle runs where there is one) still comes first, and PYTHONTZPATH (read
# from os.environ by zoneinfo, so -E does not hide it) or reset_tzpath(to=...) replace it.
TZ_HOOK = """\
def _pyshrink_tzpath(default_reset):
    import os
    import sys
    bundled = os.path.join(sys.base_prefix, %r)

    def reset_tzpath(to=None):
        global TZPATH
        default_reset(to)
        if to is None and os.environ.get("PYTHONTZPATH") is None and bundled not in TZPATH:
            TZPATH = TZPATH + (bundled,)

    reset_tzpath.__doc__ = default_reset.__doc__
    return reset_tzpath


reset_tzpath = _pyshrink_tzpath(reset_tzpath)
del _pyshrink_tzpath
reset_tzpath()
""" % HOST_TZ_DEST


def host_ca_file():
    """The build host's CA bundle: what this interpreter's OpenSSL would read, else the usual
    places. None when there is none."""
    candidates = []
    try:
        import ssl
        paths = ssl.get_default_verify_paths()
        candidates += [paths.cafile, paths.openssl_cafile]
    except ImportError:
        pass
    candidates += ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/cert.pem"]
    for c in candidates:
        if c and os.path.isfile(c):
            with open(c, "rb") as f:
                if b"-----BEGIN CERTIFICATE-----" in f.read():
                    return os.path.realpath(c)
    return None


def host_zoneinfo_files():
    """(path, relative name) of every zone of the build host's time zone database, or None.
    Leaves out right/ and posix/ (copies with other leap-second rules, which zoneinfo never
    lists) and localtime (the host's own zone). Aliases that are symlinks become copies: the
    payload holds regular files, and zstd's long-distance matching makes the copies nearly free."""
    try:
        import zoneinfo
        roots = list(zoneinfo.TZPATH)
    except ImportError:
        return None
    for root in roots + ["/usr/share/zoneinfo"]:
        if not os.path.isdir(root):
            continue
        real_root = os.path.realpath(root)
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == root:
                dirnames[:] = [d for d in dirnames if d not in ("right", "posix")]
            dirnames.sort()
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                if rel in ("localtime", "posixrules"):
                    continue
                target = os.path.realpath(path)
                if not target.startswith(real_root + os.sep) or not os.path.isfile(target):
                    continue
                if f.endswith(".tab"):
                    out.append((target, rel))
                    continue
                with open(target, "rb") as fh:
                    if fh.read(4) == b"TZif":
                        out.append((target, rel))
        if any(not rel.endswith(".tab") for _, rel in out):
            return out
    return None


# Regular expressions compiled ahead. `re` parses and compiles every pattern in Python the first
# time a process uses it, and most modules compile theirs at import: 2 ms of an HTTP service's
# start from the stdlib, 12 ms of a Flask app's. The bundler looks for patterns written as
# literals in calls of `re` (`re.compile(r"...", re.I | re.X)`, `re.match(r"...", s)`), compiles
# each with this interpreter, and keeps what the compiler handed to `_sre.compile`. The launcher's
# start-up module builds those patterns from that table: the same Pattern objects (see
# `zipimport_fast.py`). A pattern that warns or fails to compile is left to `re`, so its warning or
# error still comes at run time.
REGEX_CALLS = frozenset(("compile", "match", "fullmatch", "search", "split", "findall", "finditer",
                         "sub", "subn"))
REGEX_NAME_LOADS = frozenset(("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_FAST",
                              "LOAD_FAST_CHECK", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_GLOBALS"))
REGEX_ATTR_LOADS = frozenset(("LOAD_ATTR", "LOAD_METHOD"))
REGEX_SKIPPED_OPS = frozenset(("CACHE", "EXTENDED_ARG", "NOP", "PUSH_NULL", "KW_NAMES"))


class RegexTable(object):
    """Literal patterns found in the bundled code, compiled: {(pattern, flags): the arguments
    after the pattern that `re`'s compiler passed to `_sre.compile`}."""

    def __init__(self):
        import re
        self.flag_values = dict((n, int(getattr(re, n))) for n in (
            "A", "ASCII", "I", "IGNORECASE", "L", "LOCALE", "M", "MULTILINE", "S", "DOTALL",
            "U", "UNICODE", "X", "VERBOSE", "NOFLAG") if hasattr(re, n))
        self.never = int(re.DEBUG) | int(getattr(re, "TEMPLATE", 0))
        if sys.version_info >= (3, 11):
            import re._compiler as compiler
        else:
            import sre_compile as compiler
        self.compiler = compiler
        self.entries = {}
        self.seen = set()

    def scan(self, code):
        for c in code_tree(code):
            names = set(c.co_names) | set(c.co_varnames) | set(c.co_freevars)
            if not REGEX_CALLS.isdisjoint(names):
                for key in self.literal_calls(c):
                    if key not in self.seen:
                        self.seen.add(key)
                        args = self.compiled(*key)
                        if args is not None:
                            self.entries[key] = args

    def literal_calls(self, code):
        """(pattern, flags) of each call of a `re` function whose first argument is a literal; the
        flags are those written after it when they are a literal expression of `re` flags, else 0
        (a wrong guess costs a table entry, never a different pattern)."""
        import dis
        ops = [i for i in dis.get_instructions(code) if i.opname not in REGEX_SKIPPED_OPS]
        for at in range(1, len(ops)):
            op, callee = ops[at], ops[at - 1]
            if (op.opname == "LOAD_CONST" and isinstance(op.argval, (str, bytes))
                    and callee.argval in REGEX_CALLS
                    and (callee.opname in REGEX_NAME_LOADS or callee.opname in REGEX_ATTR_LOADS)):
                yield op.argval, self.flags_after(ops, at + 1)

    def flags_after(self, ops, at):
        stack = []
        for op in ops[at:]:
            name = op.opname
            if name in REGEX_NAME_LOADS:
                stack.append(self.flag_values.get(op.argval, "module"))
            elif name in REGEX_ATTR_LOADS:
                if not stack or stack[-1] != "module" or op.argval not in self.flag_values:
                    return 0
                stack[-1] = self.flag_values[op.argval]
            elif name == "LOAD_CONST" and type(op.argval) is int:
                stack.append(op.argval)
            elif name == "LOAD_CONST" and op.argval == ("flags",):
                continue
            elif name == "BINARY_OR" or (name == "BINARY_OP" and op.argrepr == "|"):
                if len(stack) < 2 or "module" in stack[-2:]:
                    return 0
                last = stack.pop()
                stack[-1] |= last
            elif name.startswith("CALL") or name == "PRECALL":
                return stack[0] if len(stack) == 1 and stack[0] != "module" else 0
            else:
                return 0
        return 0

    def compiled(self, pattern, flags):
        """What `re`'s compiler passes to `_sre.compile` after `pattern`, as constants; None for
        a pattern that warns, fails, or takes flags the table does not serve."""
        import warnings
        if flags & self.never:
            return None
        compiler = self.compiler
        real = compiler._sre
        calls = []

        class Recorder(object):
            def __getattr__(self, name):
                return getattr(real, name)

            def compile(self, *args):
                calls.append(args)
                return real.compile(*args)

        compiler._sre = Recorder()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compiler.compile(pattern, flags)
        except Exception:
            return None
        finally:
            compiler._sre = real
        if caught or len(calls) != 1 or calls[0][0] is not pattern:
            return None
        _, final_flags, code, groups, groupindex, indexgroup = calls[0]
        return (int(final_flags), tuple(int(c) for c in code), int(groups),
                tuple(groupindex.items()), tuple(indexgroup))

    def source(self):
        """The table as a statement for the start-up module (marshal of this interpreter)."""
        import marshal
        return "REGEX_TABLE = %r\n" % marshal.dumps(self.entries)


# Stdlib modules whose import does nothing outside their own namespace (no codec, atexit, signal,
# warning filter or sys.modules change, no registry of another module), so that running their code
# at first use rather than at import is invisible but for the time it takes (`zipimport_fast.py`,
# `DEFERRED`). They are what apps commonly import and often never use on a run: importlib.metadata
# reads metadata through email, csv and zipfile; tempfile brings random and shutil. Some load C
# parts and the libraries those need: shutil (which http.server imports) loads bz2 and lzma,
# http.client and urllib.request load OpenSSL through ssl, flask's JSON provider loads decimal and
# uuid. `_decimal` registers its Decimal as a `numbers.Number`: that shows only through Decimal,
# whose use runs decimal first.
DEFERRABLE = frozenset((
    "bz2", "calendar", "csv", "datetime", "decimal", "difflib", "email", "email._encoded_words",
    "email._header_value_parser", "email._parseaddr", "email._policybase", "email.base64mime",
    "email.charset", "email.contentmanager", "email.encoders", "email.errors", "email.feedparser",
    "email.generator", "email.header", "email.headerregistry", "email.iterators", "email.message",
    "email.parser", "email.policy", "email.quoprimime", "email.utils", "fnmatch", "gzip", "html",
    "importlib.metadata._adapters", "ipaddress", "linecache", "locale", "lzma", "mimetypes",
    "pickle", "pkgutil", "platform", "secrets", "shutil", "socket", "ssl", "stringprep",
    "tempfile", "token", "tokenize", "uuid", "zipfile"))

# Imports each module named in argv as the bundle would, where only the modules named on stdin (and
# built-in and frozen ones) can be imported, each in a fresh state (what the one before brought in
# is forgotten); prints the names whose import succeeded and left the module itself in sys.modules
# (3.13's decimal puts _pydecimal there when _decimal is missing: a module already bound could not
# become that one; _pydecimal names itself decimal, its spec does not).
BUNDLE_IMPORT_PROBE = """
import sys, _imp
held = set(sys.stdin.read().split())
base = set(sys.modules)
class OnlyHeld:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in held or name in sys.builtin_module_names or _imp.is_frozen(name):
            return None
        raise ModuleNotFoundError("No module named %r" % name, name=name)
sys.meta_path.insert(0, OnlyHeld)
for name in sys.argv[1:]:
    try:
        __import__(name)
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if getattr(spec, "name", None) == name:
            print(name)
    except BaseException:
        pass
    for new in set(sys.modules) - base:
        del sys.modules[new]
"""


def deferrable(finder):
    """The modules of DEFERRABLE that the bundle may execute at first use: those it holds whose
    import succeeds with this interpreter when only what the bundle holds can be imported (so
    that putting it off never hides an ImportError from an app that catches it). Only where
    zipimport runs module code through exec_module (3.10 and newer)."""
    import subprocess
    import zipimport
    if not hasattr(zipimport.zipimporter, "exec_module"):
        return []
    names = sorted(n for n in DEFERRABLE if n in finder.modules)
    if not names:
        return []
    held = "\n".join(sorted(n for n in finder.modules if not pruned(n)))
    try:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", BUNDLE_IMPORT_PROBE] + names,
                             input=held, stdout=subprocess.PIPE, universal_newlines=True,
                             check=True).stdout
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    ok = set(out.split())
    return [n for n in names if n in ok]


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


# Imports that extension and built-in modules make from C as they load: no scan of Python code
# sees them (`_decimal` imports numbers, `_elementtree` copy, a Cython module all of its
# imports). Each module asked about is imported, with its packages, in a forked child of an
# interpreter started without site on the analysis's path. A finder first on sys.meta_path
# records an import as made by the extension module being created or executed when no Python
# code runs between the two: what those imports import in turn is left to the analysis,
# optional imports included.
C_IMPORTS_PROBE = """
import json, os, signal, sys
from importlib.machinery import ExtensionFileLoader
req = json.loads(sys.argv[1])
sys.path[:] = req["path"]
found = {}
def native(spec):
    return spec is not None and (isinstance(spec.loader, ExtensionFileLoader) or spec.origin == "built-in")
class Spy(object):
    @staticmethod
    def find_spec(fullname, path=None, target=None):
        f = sys._getframe(1)
        while f is not None and f.f_code.co_filename.startswith("<frozen importlib"):
            if f.f_code.co_name in ("create_module", "exec_module"):
                spec = f.f_locals.get("spec") or getattr(f.f_locals.get("module"), "__spec__", None)
                if native(spec):
                    found.setdefault(spec.name, []).append(fullname)
                break
            f = f.f_back
        return None
out = {}
for name in req["modules"]:
    if name in out:
        continue
    if name in sys.modules:
        out[name] = []
        continue
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        signal.alarm(30)
        sys.meta_path.insert(0, Spy)
        before = set(sys.modules)
        try:
            __import__(name)
        except BaseException:
            pass
        for new in set(sys.modules) - before:
            if native(getattr(sys.modules[new], "__spec__", None)):
                found.setdefault(new, [])
        os.write(w, json.dumps(found).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out[name] = []
    if data:
        for module, imports in json.loads(data.decode()).items():
            out[module] = [i for i in imports if i != module]
print(json.dumps(out))
"""


def c_extension_imports(names, path):
    """{module: [modules it imports from C as it loads]} for these extension and built-in modules
    and the others their import loads; empty where the interpreter cannot fork."""
    import subprocess
    if not names:
        return {}
    req = json.dumps({"modules": names, "path": path})
    try:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", C_IMPORTS_PROBE, req],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             universal_newlines=True, check=True, timeout=600).stdout
        return json.loads(out)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def make_finder():
    import modulefinder

    class Finder(modulefinder.ModuleFinder):
        """ModuleFinder that remembers which module imported which."""

        def __init__(self, *a, **k):
            self.stdlib = k.pop("stdlib", None)
            self.sites = k.pop("sites", [])
            self.user_excludes = k.pop("user_excludes", [])
            self.load_time = {}
            self.scanning = []
            # Per code object being scanned: whether it is its module's own (runs as it loads).
            self.module_level = []
            self.soft = {}
            self.user_imported = set()
            self.c_imports = {}
            self.c_followed = set()
            modulefinder.ModuleFinder.__init__(self, *a, **k)
            self.by = {}

        def import_hook(self, name, caller=None, fromlist=None, level=-1, reason=("<entry>",)):
            """modulefinder's import, noting which module imported each module it brings in.
            modulefinder passes no `caller` for `from . import x`: that is the module being
            scanned. Outside a scan, `reason` names why (the modules the planner brings it for,
            `--include-module`; `<entry>` by default)."""
            # The stdlib's own self-tests (`pickle._test` imports doctest) and debugger hooks
            # would pull in doctest -> pdb -> pydoc -> unittest -> asyncio... Follow these
            # development tools only when the app or its packages import them, when a stdlib
            # module imports one as it loads (xmlrpc.server imports pydoc), and when one imports
            # another or its own submodules (doctest imports pdb; unittest, unittest.result).
            if (caller is not None and name.split(".")[0] in DEV_ONLY and caller.__file__
                    and self.stdlib and under(caller.__file__, self.stdlib)
                    and caller.__name__.split(".")[0] not in DEV_ONLY
                    and not (self.module_level and self.module_level[-1])):
                return None
            if caller is not None and caller.__name__ in self.soft.get(name, ()):
                return None
            stdlib_caller = caller is not None and (
                self.is_stdlib(caller.__file__)
                or caller.__file__ is None and caller.__name__ in sys.builtin_module_names)
            if not stdlib_caller:
                self.user_imported.add(name)
            if caller is not None:
                who = {caller.__name__}
            else:
                who = set(self.scanning[-1:] or reason)
            before = set(self.modules)
            try:
                return modulefinder.ModuleFinder.import_hook(self, name, caller, fromlist, level)
            finally:
                # Nested imports finish first, so each module keeps the importer that
                # actually reached it, not the one at the top of the chain.
                for new in set(self.modules) - before:
                    self.by.setdefault(new, set(who))

        def scan_code(self, co, m):
            self.scanning.append(m.__name__)
            self.module_level.append(co is getattr(m, "__code__", None))
            try:
                modulefinder.ModuleFinder.scan_code(self, co, m)
            finally:
                self.scanning.pop()
                self.module_level.pop()

        def user_names(self):
            """Every global and attribute name the code of the app and its packages uses."""
            names = set()
            for mod in list(self.modules.values()):
                code = getattr(mod, "__code__", None)
                if code is not None and mod.__file__ and not self.is_stdlib(mod.__file__):
                    for c in code_tree(code):
                        names.update(c.co_names)
            return names

        def importers(self, name):
            return sorted(self.by.get(name, ()))

        def harden_user_facing(self):
            """A guarded stdlib import stays optional only while the stdlib alone reaches the
            module that makes it: an app that imports hashlib itself may call pbkdf2_hmac or
            scrypt (OpenSSL only since 3.12), one that imports http.client may open HTTPS."""
            names = self.user_names()
            changed = True
            while changed:
                changed = False
                for name, importers in sorted(self.soft.items()):
                    facing = {m for m in importers & self.user_imported
                              if not (USED_FOR.get((m, name)) and not USED_FOR[(m, name)] & names)}
                    if name not in self.modules and facing and not name.startswith("_py"):
                        self.soft.pop(name)
                        try:
                            self.import_hook(name, reason=facing)
                        except ImportError:
                            pass
                        changed = True
                        break

        def add_if_allowed(self, name, needed_by):
            """Brings in `name` for a reason of the planner's own, not an import it saw: module
            `needed_by` imports it by a name computed at run time, or runs where the analysis
            does not follow. Nothing happens when `--exclude-module` keeps it out or this
            interpreter lacks it."""
            try:
                self.import_hook(name, reason=[needed_by])
            except ImportError:
                pass

        def _safe_import_hook(self, name, caller, fromlist, level=-1):
            # modulefinder records a failed `from .mod import name` under the relative name
            # ("datastructures.Accept"), which then never matches a module and reads as
            # missing: make it absolute first.
            if level > 0 and name and caller is not None:
                try:
                    parent = self.determine_parent(caller, level=level)
                except ImportError:
                    parent = None
                if parent is not None:
                    name, level = parent.__name__ + "." + name, 0
            return modulefinder.ModuleFinder._safe_import_hook(self, name, caller, fromlist, level)

        def find_module(self, name, path, parent=None):
            """modulefinder's lookup, plus namespace packages (PEP 420: flask.sansio, google.*),
            which it fails on, and without clearing the import caches on every lookup: nothing
            changes the files during the analysis."""
            fullname = parent.__name__ + "." + name if parent is not None else name
            if fullname in self.excludes:
                raise ImportError(name)
            if path is None:
                if name in sys.builtin_module_names:
                    return (None, None, ("", "", modulefinder._C_BUILTIN))
                path = self.path
            M = importlib_machinery()
            spec = M.PathFinder.find_spec(name, path)
            if spec is None:
                raise ImportError("No module named {!r}".format(name), name=name)
            if spec.loader is None:
                if spec.submodule_search_locations:
                    return (None, os.pathsep.join(spec.submodule_search_locations),
                            ("", "", NAMESPACE))
                raise ImportError("No module named {!r}".format(name), name=name)
            if spec.loader is M.BuiltinImporter:
                return (None, None, ("", "", modulefinder._C_BUILTIN))
            if spec.loader is M.FrozenImporter:
                return (None, None, ("", "", modulefinder._PY_FROZEN))
            file_path = spec.origin
            if spec.loader.is_package(name):
                return (None, os.path.dirname(file_path), ("", "", modulefinder._PKG_DIRECTORY))
            if isinstance(spec.loader, M.SourceFileLoader):
                kind = modulefinder._PY_SOURCE
            elif isinstance(spec.loader, M.ExtensionFileLoader):
                kind = modulefinder._C_EXTENSION
            elif isinstance(spec.loader, M.SourcelessFileLoader):
                kind = modulefinder._PY_COMPILED
            else:
                return (None, None, ("", "", modulefinder._SEARCH_ERROR))
            import io
            return (io.open_code(file_path), file_path,
                    (os.path.splitext(file_path)[-1], "rb", kind))

        def load_module(self, fqname, fp, pathname, file_info):
            if file_info[2] == NAMESPACE:
                m = self.add_module(fqname)
                m.__file__ = None
                m.__path__ = pathname.split(os.pathsep)
                return m
            # Library modules keep demos and self-tests under `if __name__ == "__main__":`
            # (heapq imports doctest there, which imports pdb, pydoc, unittest, asyncio...).
            # That code never runs in a bundle, so scan the module without it. The entry
            # script itself keeps its main block: that is the app.
            suffix, mode, kind = file_info
            import ast
            import io
            # What the entry script imports as it runs is noted all the same, for the warning
            # about an exclusion that the app needs.
            if kind == modulefinder._PY_SOURCE and fqname == "__main__":
                source = fp.read()
                self.load_time[fqname] = load_time_imports(
                    drop_other_platforms(ast.parse(source, pathname)).body, "", entry=True)
                fp = io.BytesIO(source)
            if kind != modulefinder._PY_SOURCE or fqname == "__main__":
                return modulefinder.ModuleFinder.load_module(self, fqname, fp, pathname, file_info)
            tree = drop_other_platforms(ast.parse(fp.read(), pathname))
            stdlib_code = self.is_stdlib(pathname)
            # The stdlib's `main()`/`_test()` functions are its `python -m` command lines and
            # self-tests (tokenize.main imports argparse); only that entry calls them.
            tree.body = [n for n in tree.body if not is_main_guard(n)
                         and not (stdlib_code and isinstance(n, ast.FunctionDef) and n.name in MODULE_CLI)]
            is_package = os.path.basename(pathname).startswith("__init__.")
            self.load_time[fqname] = load_time_imports(
                tree.body, fqname if is_package else fqname.rpartition(".")[0])
            if stdlib_code:
                drop_unused_test_helpers(tree)
                self.soften(fqname, tree)
            m = self.add_module(fqname)
            m.__file__ = pathname
            m.__code__ = compile(tree, pathname, "exec")
            self.scan_code(m.__code__, m)
            self.msgout(2, "load_module ->", m)
            return m

        def follow_c_imports(self):
            """Follows what the extension and built-in modules reached so far import from C as
            they load (`c_extension_imports`), until nothing new is reached. A module's
            imports are followed once, however often this runs."""
            import importlib.machinery
            suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
            while True:
                todo = [m for name, m in sorted(self.modules.items())
                        if name not in self.c_followed and (
                    m.__file__ is None and name in sys.builtin_module_names
                    or m.__file__ and m.__file__.endswith(suffixes))]
                if not todo:
                    return
                self.c_imports.update(c_extension_imports(
                    [m.__name__ for m in todo if m.__name__ not in self.c_imports], self.path))
                for m in todo:
                    self.c_followed.add(m.__name__)
                    for name in self.c_imports.get(m.__name__, ()):
                        try:
                            self.import_hook(name, m)
                        except ImportError:
                            pass

        def excluded_by_user(self, name):
            """Whether --exclude-module names module `name` or a package it is in."""
            return any(in_package(name, e) for e in self.user_excludes)

        def excluded_yet_loaded(self):
            """[(--exclude-module name, [bundled modules that import it as they load])]: each
            of those modules fails to import in the bundle. Built-in and frozen modules are
            inside the interpreter and cannot be left out."""
            import _imp
            out = []
            for e in self.user_excludes:
                if e in sys.builtin_module_names or _imp.is_frozen(e):
                    continue
                importers = sorted(m for m, names in self.load_time.items() if m in self.modules
                                   and any(in_package(n, e) for n in names))
                if importers:
                    out.append((e, importers))
            return out

        def is_stdlib(self, path):
            """Whether `path` is a module of the standard library (not of a site dir in it)."""
            return bool(path and self.stdlib and under(path, self.stdlib) and not self.in_site(path))

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

            def imported(node):
                if isinstance(node, A.Import):
                    return [a.name for a in node.names]
                if isinstance(node, A.ImportFrom) and not node.level and node.module:
                    return [node.module]
                return []

            nodes = list(statements(tree))
            guarded = set()
            fallbacks = set()
            for node in nodes:
                if isinstance(node, A.Try) and any(catches_import_error(h) for h in node.handlers):
                    tried = []
                    for stmt in node.body:
                        for sub in statements(stmt):
                            if imported(sub):
                                guarded.add(id(sub))
                                tried += imported(sub)
                    # `try: from _decimal import * / except ImportError: from _pydecimal
                    # import *`: with the C module present the pure-Python one never loads.
                    # Excluded, it is not present.
                    if tried and all(module_exists(t) and not self.excluded_by_user(t)
                                     for t in tried):
                        for h in node.handlers:
                            for stmt in h.body:
                                for sub in statements(stmt):
                                    fallbacks.update(n for n in imported(sub)
                                                     if n.split(".")[0].startswith("_py"))
            # Imports in an error handler (not an ImportError fallback) only report an error
            # that a bundle does not have: hashlib imports logging, and with it pickle, to log a
            # hash module that is missing, but the analysis bundles all of them.
            error_paths = set()
            for node in nodes:
                if isinstance(node, A.ExceptHandler) and not catches_import_error(node):
                    for stmt in node.body:
                        for sub in statements(stmt):
                            if imported(sub):
                                error_paths.add(id(sub))
            # A module imported both ways (ctypes: `from _ctypes import ...` at the top, one
            # optional name further down) is a hard dependency.
            soft, hard, on_error = set(), set(), set()
            for node in nodes:
                for n in imported(node):
                    if id(node) in guarded:
                        soft.add(n)
                    elif id(node) in error_paths:
                        on_error.add(n)
                    else:
                        hard.add(n)
            for n in soft - hard:
                top = n.split(".")[0]
                if top in SOFT_OPTIONAL and top not in KEEP_OPTIONAL.get(fqname, ()):
                    self.soft.setdefault(n, set()).add(fqname)
            for n in on_error - hard - soft:
                self.soft.setdefault(n, set()).add(fqname)
            for n in fallbacks:
                self.soft.setdefault(n, set()).add(fqname)

    def load_time_imports(body, package, entry=False):
        """The modules that the statements of `body` import whenever they run: those at the top
        level, in classes and `with` blocks, and in a `try` that catches no ImportError, but not
        those in functions, branches, loops or guarded `try`s. A module whose top-level code
        imports one of them fails to load without it. `package` anchors relative imports; the
        `entry` script's main block runs too."""
        A = ast_mod()
        names = set()
        todo = list(body)
        while todo:
            node = todo.pop()
            if isinstance(node, A.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, A.ImportFrom):
                base = absolute_name(node.module, node.level, package)
                if base:
                    names.add(base)
                    names.update(base + "." + a.name for a in node.names if a.name != "*")
            elif isinstance(node, (A.ClassDef, A.With, A.AsyncWith)) or (
                    entry and is_main_guard(node)):
                todo.extend(node.body)
            elif isinstance(node, A.Try):
                if not any(catches_import_error(h) for h in node.handlers):
                    todo.extend(node.body + node.orelse)
                todo.extend(node.finalbody)
        return names

    def absolute_name(module, level, package):
        """The module that `from <level dots><module> import ...` in `package` names, or None
        when the dots climb above the top."""
        if not level:
            return module
        parts = package.split(".") if package else []
        if level - 1 >= len(parts):
            return None
        base = ".".join(parts[:len(parts) - level + 1])
        return base + "." + module if module else base

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

    def importlib_machinery():
        import importlib.machinery
        return importlib.machinery

    NAMESPACE = "namespace"
    importlib_machinery().PathFinder.invalidate_caches()
    return Finder


def module_exists(name):
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def plan(req):
    Finder = make_finder()

    info = layout()
    stage = req["stage"]
    ver = "python%d.%d" % tuple(info["version"][:2])
    stdlib_dest = os.path.join(stage, "lib", ver)
    stdlib = info["stdlib"]
    dynload = info["dynload"]
    # Packages installed for the build (-r, a project directory) come first, as they would on
    # sys.path of an environment made from them, then the interpreter's own site dirs.
    extra_sites = [os.path.realpath(p) for p in req.get("extra_sites", [])]
    sites = extra_sites + [s for s in (os.path.realpath(p) for p in info["site_packages"])
                           if s not in extra_sites]
    report = {"layout": info, "modules": [], "missing": [], "elf": [], "entry": None,
              "distributions": [], "warnings": [], "name": None, "host_data": []}
    written = set()
    stdlib_rel = os.path.join("lib", ver, "")
    site_rel = os.path.join(runtime_site_rel(info), "")
    report["site_dir"] = site_rel.rstrip(os.sep)
    patches = {}
    # Frozen stdlib modules (os, codecs, io, site... since 3.11) are inside libpython; their
    # .pyc would never be read. os.pyc stays: it is CPython's prefix landmark.
    import _imp
    frozen_used = getattr(getattr(os, "__spec__", None), "origin", None) == "frozen"

    regexes = RegexTable()

    def emit(src, dest_rel, kind):
        dest = os.path.join(stage, dest_rel)
        if dest in written:
            return
        written.add(dest)
        if kind == "compile":
            stdlib_code = dest_rel.startswith(stdlib_rel) and not dest_rel.startswith(site_rel)
            code = compile_to(src, dest, dest_rel[:-1], report["warnings"],
                              strip_docs=stdlib_code, append=patches.get(dest_rel))
            if code is not None:
                regexes.scan(code)
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

    def data_kind(path):
        return "elf" if is_elf(path) else "copy"

    dists = distributions(sites)

    # The app.
    entry = req["entry"]
    app_dir = None
    search = []
    generated = None
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
    elif entry["kind"] == "entrypoint":
        script_name, target = pick_entry_point(dists, sites, entry.get("name"),
                                               entry.get("project_dir"))
        import tempfile
        generated = tempfile.mkdtemp(prefix="pyshrink-entry")
        runner = os.path.join(generated, "__main__.py")
        with open(runner, "w") as f:
            f.write(entry_point_runner(target))
        # __main__, not the script's name: a console script is often named like its package,
        # and app/ is first on sys.path.
        emit(runner, os.path.join("app", "__main__.pyc"), "compile")
        report["entry"] = {"kind": "script", "path": "app/__main__.pyc"}
        report["name"] = script_name
    else:
        app_dir = os.path.abspath(entry.get("cwd") or os.getcwd())
        report["entry"] = {"kind": "module", "name": entry["name"]}
        search = [app_dir]

    # sys.path[0] is this planner's own temporary directory: not a place to find the app's modules.
    finder = Finder(path=search + extra_sites + sys.path[1:], stdlib=stdlib, sites=sites,
                    excludes=req.get("exclude", []) + sorted(PRUNED_TOP) + ALWAYS_FROZEN,
                    user_excludes=req.get("exclude", []))
    try:
        if entry["kind"] == "module":
            finder.import_hook(entry["name"])
            try:
                finder.import_hook(entry["name"] + ".__main__")
            except ImportError:
                pass
            finder.import_hook("runpy")
        elif generated:
            finder.run_script(os.path.join(generated, "__main__.py"))
        else:
            main = entry["path"] if entry["kind"] == "script" else os.path.join(app_dir, "__main__.py")
            finder.run_script(main)
    finally:
        if generated:
            import shutil
            shutil.rmtree(generated, ignore_errors=True)
    if entry["kind"] == "entrypoint":
        module = target.split(":")[0].strip()
        if module not in finder.modules:
            raise UserError("entry point %s = %s: module %r cannot be imported"
                            % (script_name, target, module))
    for name in req.get("include", []):
        try:
            finder.import_hook(name, reason=["--include-module"])
        except ImportError:
            raise SystemExit("module %r given to --include-module cannot be imported" % name)
    # After the scan of the Python code, so that a module it reaches is listed as imported by
    # that code; again after the hardening, which may reach more extension modules.
    finder.follow_c_imports()
    finder.harden_user_facing()
    # The frozen import system's lazy hooks (see ALWAYS_FROZEN): FileLoader.get_resource_reader
    # imports importlib.readers for importlib.resources (3.10+).
    if "importlib.resources" in finder.modules and module_exists("importlib.readers"):
        finder.add_if_allowed("importlib.readers", "importlib.resources")
    finder.follow_c_imports()
    for name, importers in finder.excluded_yet_loaded():
        shown = ", ".join("the app" if m == "__main__" else m for m in importers[:3])
        if len(importers) > 3:
            shown += " and %d more" % (len(importers) - 3)
        fix = "drop the exclusion"
        if "__main__" not in importers:
            fix += ", or exclude %s too" % (importers[0] if len(importers) == 1 else "those")
        report["warnings"].append(
            "--exclude-module %s: %s import%s it unconditionally and will fail to load in the "
            "bundle; %s" % (name, shown, "s" if len(importers) == 1 else "", fix))

    stdlib_all = req.get("stdlib") == "all"

    def in_stdlib_all(name):
        """Whether `--stdlib all` brings in module `name` (not when it is excluded)."""
        return stdlib_all and not finder.excluded_by_user(name)

    # What the host quietly provides and an empty root lacks. `--stdlib all` brings ssl and
    # zoneinfo whether the app reaches them or not, so it brings what they read too.
    if req.get("ca_certs", True) and ("ssl" in finder.modules or in_stdlib_all("ssl")):
        cafile = host_ca_file()
        if cafile is None:
            report["warnings"].append(
                "no CA certificates on this machine to bundle: HTTPS certificate checks will fail "
                "in an empty root unless the app brings its own (certifi) or SSL_CERT_FILE is set")
        elif os.path.exists(os.path.join(stdlib, "ssl.py")):
            emit(cafile, HOST_CA_DEST, "copy")
            patches[os.path.join("lib", ver, "ssl.pyc")] = SSL_HOOK
            report["host_data"].append({"what": "ca-certificates", "source": cafile,
                                        "dest": HOST_CA_DEST})
    if req.get("tzdata", True) and ("zoneinfo" in finder.modules or in_stdlib_all("zoneinfo")) \
            and os.path.exists(os.path.join(stdlib, "zoneinfo", "_tzpath.py")):
        # An installed tzdata distribution is what zoneinfo would fall back to on the build
        # host: bundle it (it is imported by name at run time, so analysis never reaches it).
        if "tzdata" not in finder.modules:
            finder.add_if_allowed("tzdata", "zoneinfo")
        if "tzdata" not in finder.modules:
            zones = host_zoneinfo_files()
            if zones is None:
                report["warnings"].append(
                    "no time zone database on this machine to bundle: zoneinfo will find no zones "
                    "in an empty root; install the tzdata distribution for the app")
            else:
                for path, rel in zones:
                    emit(path, os.path.join(HOST_TZ_DEST, rel), "copy")
                patches[os.path.join("lib", ver, "zoneinfo", "_tzpath.pyc")] = TZ_HOOK
                report["host_data"].append({"what": "tzdata", "source": os.path.dirname(zones[0][0]),
                                            "dest": HOST_TZ_DEST, "files": len(zones)})

    # What the interpreter imports before any user code, taken as files rather than followed:
    # following `site` would drag in pydoc (for `help()`) and with it half the stdlib.
    for name, path in startup_modules():
        if not pruned(name) and finder.is_stdlib(path):
            stdlib_file(path)

    if stdlib_all:
        for path in module_files(stdlib):
            rel = os.path.relpath(path, stdlib)
            top = rel.split(os.sep)[0]
            if top in ("site-packages", "dist-packages") or (dynload and under(path, dynload)):
                continue
            name = rel[:-3].replace(os.sep, ".") if rel.endswith(".py") else rel
            if pruned(name) or not rel.endswith(".py") or not in_stdlib_all(name):
                continue
            stdlib_file(path)
        if dynload:
            for f in sorted(os.listdir(dynload)):
                name = f.split(".")[0]
                if f.endswith(".so") and not pruned(name) and in_stdlib_all(name):
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
            finder.add_if_allowed(name, "encodings.idna")
    # sysconfig reads the build configuration from a module it imports by a computed name
    # (zoneinfo asks it for TZPATH, for one).
    if "sysconfig" in finder.modules:
        import sysconfig
        get_name = getattr(sysconfig, "_get_sysconfigdata_name", None)
        if get_name is not None:
            finder.add_if_allowed(get_name(), "sysconfig")

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
            dest = os.path.join(site_rel, rel)
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

    # The order the analysis reached them, close to the order the app imports them in: the
    # payload brings the app's modules in that order.
    reported = {m["name"] for m in report["modules"]}
    report["import_order"] = [name for name in finder.modules if name in reported]

    # A distribution comes whole: its data files (read through __file__ or importlib.resources),
    # the modules it loads by name, and its .dist-info (importlib.metadata, entry points). Except
    # what nothing can reach: its test suite, and native libraries that no import reaches and no
    # reached code names (pycryptodome opens its ~40 by name through ctypes, each from the
    # module that uses it).
    named = reached_strings(finder)
    reached_packages = name_prefixes(finder.modules)
    for key in sorted(used_dists):
        d = dists["dists"][key]
        report["distributions"].append({"name": d["name"], "version": d["version"]})
        tests, libs = [], []
        for path in d["files"]:
            if not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, d["site"])
            dest = os.path.join(site_rel, rel)
            suite = test_suite(rel, reached_packages)
            if suite:
                tests.append(suite)
                continue
            if unreached_extension(path, rel, finder, named, d):
                libs.append(rel)
                continue
            if path.endswith(".py"):
                emit(path, dest + "c", "compile")
            elif path.endswith((".pyc", ".pyi")) or "__pycache__" in rel.split(os.sep):
                # Type stubs are for type checkers, never read at run time.
                continue
            else:
                emit(path, dest, data_kind(path))
        if tests or libs:
            what = []
            if tests:
                what.append("its tests (%s: %d files)" % (", ".join(sorted(set(tests))), len(tests)))
            if libs:
                what.append("%d native libraries nothing imports or names (%s%s)" % (
                    len(libs), ", ".join(sorted(libs)[:3]), ", ..." if len(libs) > 3 else ""))
            report["warnings"].append(
                "left out of %s %s; add --include-module NAME to bundle one"
                % (d["name"], " and ".join(what)))

    # --include-data SRC:DEST, DEST relative to app/.
    for src, dest in req.get("include_data", []):
        base = os.path.normpath(os.path.join("app", dest))
        if os.path.isdir(src):
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames.sort()
                for f in sorted(filenames):
                    path = os.path.join(dirpath, f)
                    if os.path.isfile(path):
                        emit(path, os.path.join(base, os.path.relpath(path, src)), data_kind(path))
        else:
            emit(src, base, data_kind(src))

    # any_missing_maybe() separates real misses from `from pkg import name` of attributes;
    # modules of other platforms are expected to be missing here.
    # Only packages found nowhere are reported, by their top-level name: a miss inside a found
    # package is nearly always `from pkg import name` of something that module defines at run
    # time (multiprocessing, asyncio), not an uninstalled distribution.
    missing, _maybe = finder.any_missing_maybe()
    report["missing"] = sorted(set(
        n.split(".")[0] for n in missing
        if not pruned(n) and not finder.excluded_by_user(n)
        and n.split(".")[0] not in sys.builtin_module_names
        and n.split(".")[0] not in OTHER_PLATFORMS and n.split(".")[0] not in finder.modules))
    report["optional_left_out"] = [
        {"name": n, "imported_by": sorted(by)} for n, by in sorted(finder.soft.items())
        if n not in finder.modules and not pruned(n) and n.split(".")[0] not in OTHER_PLATFORMS
        and not n.startswith("_py")
        and n.split(".")[0] not in sys.builtin_module_names]
    for p in patches:
        if os.path.join(stage, p) not in written:
            report["warnings"].append("host data hook for %s was not staged" % p)
    deferred = deferrable(finder)
    for boot in req.get("boot_modules", ()):
        # The launcher's start-up code, compiled once here rather than on every start.
        rel = boot["dest"].replace("{stdlib}", os.path.join("lib", ver))
        dest = os.path.join(stage, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        source = boot["source"]
        if boot.get("tables"):
            if regexes.entries:
                source = source.rstrip("\n") + "\n\n\n" + regexes.source()
            if deferred:
                source = source.rstrip("\n") + "\n\n\nDEFERRED = frozenset(%r)\n" % (deferred,)
        source = source.encode("utf-8")
        write_pyc(dest, compile(source, rel[:-1], "exec", dont_inherit=True), source)
    report["elf"].sort()
    return report


def pick_entry_point(dists, sites, name, project_dir):
    """The console script to run: `name` among the project's (or every installed
    distribution's) [project.scripts], or the project's only one. -> (name, "module:attr")."""
    if project_dir:
        from urllib.parse import unquote
        url = "file://" + os.path.realpath(project_dir)
        owners = [d for d in dists["dists"].values() if unquote(d["url"]).rstrip("/") == url]
        if not owners:
            raise UserError("project `%s` was installed, but no installed distribution comes "
                            "from it" % project_dir)
        where = "project %s" % owners[0]["name"]
    else:
        owners = sorted(dists["dists"].values(), key=lambda d: (sites.index(d["site"]), d["name"].lower()))
        where = "the installed distributions"
    scripts = []
    for d in owners:
        for n, target in d.get("scripts", []):
            if all(n != s[0] for s in scripts):
                scripts.append((n, target))
    names = ", ".join(sorted(s[0] for s in scripts))
    if name:
        for n, target in scripts:
            if n == name:
                return n, target
        raise UserError("no console script `%s` in %s%s" % (
            name, where, " (there are: %s)" % names if names else ""))
    if not scripts:
        raise UserError("%s defines no console scripts ([project.scripts])\n\nhint: pass -m MODULE "
                        "to run one of its modules" % where)
    if len(scripts) > 1:
        raise UserError("%s defines several console scripts: %s\n\nhint: pick one with --entry NAME"
                        % (where, names))
    return scripts[0]


def entry_point_runner(target):
    """Source of the script a console script entry point `module:attr.sub [extras]` runs,
    as pip's generated wrappers do it."""
    target = target.split("[", 1)[0].strip()
    module, _, attr = target.partition(":")
    module, attr = module.strip(), attr.strip()
    if not attr:
        raise UserError("entry point `%s` names no function (module:function)" % target)
    first, _, rest = attr.partition(".")
    call = first + ("." + rest if rest else "")
    return ("import sys\nfrom %s import %s\n\nif __name__ == '__main__':\n    sys.exit(%s())\n"
            % (module, first, call))


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# A stdlib module's optional import that only some of its functions need: the app and its
# packages make it required by importing that module only when they name one of those.
# click imports shutil for get_terminal_size, which needs neither lzma nor bz2.
SHUTIL_ARCHIVES = {"make_archive", "unpack_archive", "get_archive_formats", "get_unpack_formats"}
USED_FOR = {
    ("shutil", "lzma"): SHUTIL_ARCHIVES,
    ("shutil", "bz2"): SHUTIL_ARCHIVES,
    ("platform", "plistlib"): {"mac_ver"},
    # Where a ResourceWarning's object was allocated, which tracemalloc only knows once the app
    # started tracing (the launcher ignores PYTHONTRACEMALLOC): by naming it.
    ("warnings", "tracemalloc"): {"tracemalloc"},
}


def drop_other_platforms(tree):
    """Replaces `if` statements whose test is false on Linux by their `else` part, for the
    analysis only: `if sys.platform.startswith("win"): from ._winconsole import ...` (click)
    would bring ctypes and libffi for code that never runs here."""
    import ast

    def value(node):
        """True or False when `node` is a test of the platform that Linux decides, else None."""
        def platform_attr(n):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
                return {("sys", "platform"): "linux", ("os", "name"): "posix"}.get(
                    (n.value.id, n.attr))
            return None
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            have, other = platform_attr(node.left), node.comparators[0]
            if have is not None and isinstance(other, ast.Constant) and isinstance(other.value, str):
                if isinstance(node.ops[0], ast.Eq):
                    return have == other.value
                if isinstance(node.ops[0], ast.NotEq):
                    return have != other.value
            return None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "startswith" and len(node.args) == 1 and not node.keywords):
            have, arg = platform_attr(node.func.value), node.args[0]
            if have is None:
                return None
            prefixes = arg.elts if isinstance(arg, ast.Tuple) else [arg]
            if all(isinstance(p, ast.Constant) and isinstance(p.value, str) for p in prefixes):
                return have.startswith(tuple(p.value for p in prefixes))
            return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            v = value(node.operand)
            return None if v is None else not v
        if isinstance(node, ast.BoolOp):
            vals = [value(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return False if False in vals else True if all(v is True for v in vals) else None
            return True if True in vals else False if all(v is False for v in vals) else None
        return None

    def drop(block):
        """The statements of `block`, each `if` decided false replaced by its `else` part (by
        `pass` when there is none), inner blocks first. Statements only hold `if` in blocks."""
        out = []
        for node in block:
            for field in BLOCKS:
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    setattr(node, field, drop(inner))
            if isinstance(node, ast.If) and value(node.test) is False:
                out.extend(node.orelse or [ast.copy_location(ast.Pass(), node)])
            else:
                out.append(node)
        return out
    tree.body = drop(tree.body)
    return tree


# Directories of a distribution that hold its own tests.
TEST_DIRS = {"test", "tests", "SelfTest", "selftest", "_tests"}


def test_suite(rel, reached_packages):
    """The test directory (relative to the site dir) that `rel` lies in, when no module in it
    was reached; None otherwise."""
    parts = rel.split(os.sep)[:-1]
    for i, part in enumerate(parts):
        if part in TEST_DIRS:
            if ".".join(parts[:i + 1]) in reached_packages:
                return None
            return os.sep.join(parts[:i + 1])
    return None


def name_prefixes(names):
    """Every dotted prefix of the names: a.b.c gives a, a.b and a.b.c."""
    out = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def code_tree(code):
    """A code object and those of the functions and classes inside it."""
    todo = [code]
    while todo:
        code = todo.pop()
        yield code
        todo.extend(c for c in code.co_consts if hasattr(c, "co_consts"))


def reached_strings(finder):
    """Every string constant in the code of the reached modules, joined: what they can name."""
    return "\n".join(c for mod in finder.modules.values()
                     if getattr(mod, "__code__", None) is not None
                     for code in code_tree(mod.__code__)
                     for c in code.co_consts if isinstance(c, str))


def unreached_extension(path, rel, finder, named, dist):
    """A native module of a package (`pkg/_name.<ext suffix>`) that no import reached, whose
    name no reached code mentions, and that no module of its distribution imports: a library
    its package loads by name (ctypes, cffi) from a module the app does not use. One that some
    module imports stays, since a computed import of that module (pyzmq picks its backend so)
    would otherwise find a pure-Python fallback or nothing. Libraries that others link to
    (`lib*`, vendored `*.libs/` ones) and files outside packages are never left out."""
    import importlib.machinery
    name = os.path.basename(rel)
    suffix = next((x for x in importlib.machinery.EXTENSION_SUFFIXES if name.endswith(x)), None)
    if suffix is None:
        return False
    stem = name[:-len(suffix)]
    if not stem.isidentifier() or stem.startswith("lib"):
        return False
    if not os.path.isfile(os.path.join(os.path.dirname(path), "__init__.py")):
        return False
    module = rel[:-len(suffix)].replace(os.sep, ".")
    return (module not in finder.modules and stem not in named
            and stem not in imported_names(dist))


def imported_names(dist):
    """The last component of every module name that an import statement of the distribution's
    Python files names (`from . import _zmq`, `import a._b`, `from ._c import x`), once per
    distribution."""
    if "imported" in dist:
        return dist["imported"]
    import ast
    names = set()
    for path in dist["files"]:
        if not path.endswith(".py"):
            continue
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            continue
        for node in statements(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.rsplit(".", 1)[-1] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.module:
                    names.add(node.module.rsplit(".", 1)[-1])
                names.update(a.name for a in node.names)
    dist["imported"] = names
    return names


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
            # Normalized as PEP 503 does; the first site dir holding a distribution wins, as
            # the first sys.path entry would.
            key = "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))
            if key in dists:
                continue
            dists[key] = {"name": name, "version": version, "site": site, "files": sorted(files),
                          "scripts": console_scripts(os.path.join(info, "entry_points.txt")),
                          "url": direct_url(os.path.join(info, "direct_url.json"))}
            for p in files:
                by_file.setdefault(p, key)
    return {"by_file": by_file, "dists": dists}


def console_scripts(path):
    """[(name, "module:attr")] of an entry_points.txt's console_scripts section."""
    out, section = [], None
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1].strip()
                elif section == "console_scripts" and "=" in line:
                    name, _, target = line.partition("=")
                    out.append((name.strip(), target.strip()))
    except OSError:
        pass
    return out


def direct_url(path):
    """The URL a distribution was installed from (PEP 610), "" when unknown."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("url", "")
    except (OSError, ValueError, AttributeError):
        return ""


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
