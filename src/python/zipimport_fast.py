# Faster imports from the bundle's stdlib zip, compiled by the bundler into that zip as
# `_pyshrink_zipimport.pyc`. The launcher's start-up code calls `install()` before the app runs;
# the memory runtime's `sitecustomize` calls it earlier, with the zip's memory file.
#
# CPython's zipimporter reads and unmarshals a module's code twice: once in `get_filename`,
# which `find_spec` calls to learn the module's path, and again in `get_code`. Each read opens
# the zip through a buffered reader and seeks. For the stdlib zip, whose entries the bundler
# writes itself (stored `.pyc` files, no sources), the path is known from the zip's directory
# alone, and the code is one `pread`. Everything else (other zips, entries with a source beside
# them, anything that does not look like the bundler's own entry) goes to zipimporter unchanged.
#
# importlib.metadata looks for distributions on every sys.path entry, and for a zip it reads the
# whole directory through zipfile: 2 to 4 ms for the stdlib zip, on every `version()` or
# `entry_points()` call that starts a search. The bundler puts only `.pyc` files in that zip, never
# a `.dist-info`, so PathFinder leaves it out of the search; other zips are searched as before.
#
# `re` parses and compiles each pattern in Python the first time a process uses it. The bundler
# compiled the literal patterns it found in the bundled code with this same interpreter and
# appended `REGEX_TABLE` here: marshal of {(pattern, flags): the other arguments its compiler passed
# to `_sre.compile`}. When `re`'s compiler module is loaded from the zip, its `compile` is wrapped
# to build those patterns from the table (the same Pattern objects, `==` to a fresh compile); any
# other pattern, flags or pattern type goes to the compiler itself. Patterns that warn or fail are
# not in the table, so their warnings and errors come as before.
#
# `platform.architecture()` runs `file` in a child process to describe an executable: about 5 ms,
# paid by every app that loads pycryptodome. For `sys.executable`, the launcher, the answer is
# known; when `platform` is loaded from the zip, that answer is given without the child.
#
# Much of what an app imports it never uses on a given run: click's CLI imports importlib.metadata,
# which imports email, csv and zipfile to read a distribution's metadata, 15 to 20 ms of a 90 ms
# start when no command asks for a version. The modules of `DEFERRED` (appended by the bundler) are
# executed when they are first used rather than when they are imported: `import csv` binds the
# module at once, and its code runs on the first access to anything in it (`csv.reader`, `from csv
# import reader`, `dir(csv)`, `vars(csv)`) other than the attributes the import system set up
# (`__name__`, `__spec__`, `__path__`...), or on the import of one of its submodules: a package runs
# before its submodules, as with CPython. The bundler puts a module there only when it is on its
# list of stdlib modules whose import does nothing outside their own namespace, and when importing
# it with this interpreter brought in only modules the bundle holds: an import that could fail
# (`try: import ssl`) is never put off. Another thread that uses the module meanwhile waits on the
# import system's own lock for that module, as it would for an import in progress.
#
# What an import creates mostly lives as long as the program: functions, classes, module dicts.
# CPython's collector cannot tell: every 700 allocations (2,000 from 3.13) it traverses the
# youngest generation, and every tenth time the middle one too, so each object an import makes
# is traversed about twice before it reaches the oldest generation. The flask example's start
# makes 49,000 of them: 67 collections, 8 ms of a 73 ms start. While the main thread imports,
# the youngest generation's threshold is raised to `_IMPORT_THRESHOLD`, so that collections are
# rare. When the outermost import returns, `gc.freeze()` then `gc.unfreeze()` move every tracked
# object to the oldest generation without traversing it. Nothing is kept from the collector:
# garbage among them goes at the next full collection, or `gc.collect()`. An app that sets its
# own threshold during an import keeps it; the collector's switch (`gc.disable()`) is never
# touched; once the app froze objects itself, nothing is moved. Python 3.12 starts with 375 of its
# own tuples frozen: they join the oldest generation at the first import, as `gc.unfreeze()`
# would have them. Free-threaded builds have no generations and are left as they are.
#
# On a first run from disk, the launcher unpacks the late frame while the interpreter starts, and
# the payload's tail while the app runs: extension modules and the libraries only they need
# (OpenSSL, libffi...), in the order of the tail's list, into empty files made before the app
# started. The app starts before the late frame's bytecode is in: directory by directory, in the
# order the bundler's analysis reached the modules. `follow` makes the app wait where it would
# read what is still coming. An app that ends sooner waits for the rest at its exit, so that its
# first run leaves a complete extraction even where the launcher's process ends with it.

import _thread
import gc
import marshal
import os
import sys
import zipimport
from types import ModuleType

from _frozen_importlib_external import MAGIC_NUMBER, PathFinder

_LOCAL_HEADER = b"PK\x03\x04"
# Flags word of a .pyc: timestamp-based, unchecked hash, checked hash. With no source in the zip
# zipimporter loads all three without checking anything more.
_PYC_FLAGS = (b"\0\0\0\0", b"\1\0\0\0", b"\3\0\0\0")
# Replaced by the bundler's table, appended at the end of this module.
REGEX_TABLE = None
_REGEX_COMPILER = "re._compiler" if sys.version_info >= (3, 11) else "sre_compile"
# Replaced by the bundler's list of modules to execute at their first use.
DEFERRED = frozenset()
# The youngest generation's threshold while the main thread imports; it also bounds the garbage
# an import that runs for long (a server started at import) leaves to a collection.
_IMPORT_THRESHOLD = 100000


class StdlibZip(zipimport.zipimporter):
    """zipimporter for the bundled stdlib zip and the packages inside it."""

    def _bytecode(self, fullname):
        """The directory entry of the stored .pyc that zipimporter would load for `fullname`,
        and its name in the zip; (None, None) when this importer cannot decide it alone."""
        files = self._get_files() if hasattr(self, "_get_files") else self._files
        path = zipimport._get_module_path(self, fullname)
        for suffix, isbytecode, _ in zipimport._zip_searchorder:
            entry = files.get(path + suffix)
            if entry is not None:
                if isbytecode and entry[1] == 0 and path + suffix[:-1] not in files:
                    return entry, path + suffix
                break
        return None, None

    def get_filename(self, fullname):
        # From the directory alone: the header is not read here, so for a .pyc that get_code
        # then refuses (foreign magic, no source) zipimporter would name no file. The bundler
        # writes none such.
        entry, _ = self._bytecode(fullname)
        if entry is None:
            return super().get_filename(fullname)
        return entry[0]

    def get_code(self, fullname):
        entry, name = self._bytecode(fullname)
        if entry is not None:
            code = self._read_code(entry, len(name.encode("utf-8")))
            if code is not None:
                return code
        return super().get_code(fullname)

    if hasattr(zipimport.zipimporter, "exec_module"):

        def exec_module(self, module):
            if module.__name__ in DEFERRED and type(module) is ModuleType:
                _PENDING[id(module)] = module
                module.__class__ = _Deferred
                return
            super().exec_module(module)
            _loaded(module)

    else:

        def load_module(self, fullname):
            module = super().load_module(fullname)
            _loaded(module)
            return module

    def _read_code(self, entry, name_len):
        size, offset = entry[2], entry[4]
        start = 30 + name_len
        try:
            fd = os.open(self.archive, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, start + size, offset)
            finally:
                os.close(fd)
        except OSError:
            return None
        if (
            len(data) != start + size
            or data[:4] != _LOCAL_HEADER
            or int.from_bytes(data[26:28], "little") != name_len
            or data[28:30] != b"\0\0"
            or data[start : start + 4] != MAGIC_NUMBER
            or data[start + 4 : start + 8] not in _PYC_FLAGS
        ):
            return None
        return marshal.loads(memoryview(data)[start + 16 :])


# id(module): module, for each deferred module whose code has not run (or is running: `_RUNNING`).
_PENDING = {}
# The top-level names of the deferred packages' modules, set by `install()`.
_DEFERRED_TOPS = frozenset()
_RUNNING = object()
# What the import system sets on a module before its code runs; reading these runs nothing, so an
# `import` of a deferred module (which reads `__spec__`) or of a submodule (`__path__`) keeps it
# deferred.
_SET_UP = frozenset(
    ("__name__", "__spec__", "__loader__", "__package__", "__path__", "__file__", "__cached__")
)


class _Deferred(ModuleType):
    """A module of DEFERRED whose code has not run yet; the first use runs it, and it becomes a
    plain module again."""

    def __getattribute__(self, name):
        if name not in _SET_UP:
            _run(self)
        return ModuleType.__getattribute__(self, name)

    def __setattr__(self, name, value):
        _run(self)
        ModuleType.__setattr__(self, name, value)

    def __delattr__(self, name):
        _run(self)
        ModuleType.__delattr__(self, name)


def _run(module):
    """Runs the code of a deferred module once, holding the import system's lock for its name.
    The thread running it sees it as it stands meanwhile (as in a circular import), and so does
    a thread the import system finds in a lock cycle with it."""
    key = id(module)
    if key not in _PENDING:
        return
    bootstrap = sys.modules["_frozen_importlib"]
    lock = bootstrap._ModuleLockManager(ModuleType.__getattribute__(module, "__name__"))
    try:
        lock.__enter__()
    except bootstrap._DeadlockError:
        return
    try:
        if _PENDING.get(key) is not module:
            return
        _PENDING[key] = _RUNNING
        spec = ModuleType.__getattribute__(module, "__spec__")
        try:
            zipimport.zipimporter.exec_module(spec.loader, module)
        except BaseException:
            # As a failed import leaves it: out of sys.modules, so that the next import tries again.
            if sys.modules.get(spec.name) is module:
                del sys.modules[spec.name]
            raise
        finally:
            del _PENDING[key]
            object.__setattr__(module, "__class__", ModuleType)
        _loaded(module)
    finally:
        lock.__exit__(None, None, None)


def _loaded(module):
    if module.__name__ == _REGEX_COMPILER and REGEX_TABLE:
        _use_regex_table(module)
    elif module.__name__ == "platform":
        _known_architecture(module)


def _known_architecture(platform):
    """Answers `platform.architecture()` for `sys.executable` without running `file`.

    For any executable, architecture() runs `file -b` on it in a child process and reads the bits
    and the linkage from what that prints. `sys.executable` is the launcher (its copy, or the
    bundle itself in the memory runtime): a static x86-64 ELF executable, which `file` describes
    as "ELF 64-bit LSB executable", so the answer is ('64bit', 'ELF') whatever the defaults passed.
    pycryptodome asks as it loads its first native module. An image without `file` answered
    ('64bit', ''); other executables still go to `file`."""
    import functools

    architecture = platform.architecture
    if getattr(architecture, "__wrapped__", None) is not None:
        return

    def known(executable=sys.executable, bits="", linkage=""):
        if executable and executable == sys.executable:
            return "64bit", "ELF"
        return architecture(executable, bits, linkage)

    platform.architecture = functools.update_wrapper(known, architecture)


def _use_regex_table(compiler):
    """Wraps `compiler.compile` (re's) to build the patterns of REGEX_TABLE from it."""
    import _sre
    import functools

    compile_pattern = compiler.compile
    if getattr(compile_pattern, "__wrapped__", None) is not None:
        return
    table = marshal.loads(REGEX_TABLE)

    def compile(p, flags=0):
        if (type(p) is str or type(p) is bytes) and isinstance(flags, int):
            args = table.get((p, flags))
            if args is not None:
                final_flags, code, groups, groupindex, indexgroup = args
                return _sre.compile(p, final_flags, list(code), groups, dict(groupindex), indexgroup)
        return compile_pattern(p, flags)

    compiler.compile = functools.update_wrapper(compile, compile_pattern)


def _run_parent(name, import_):
    """Before a submodule of a deferred package is imported, imports the package and runs its
    code, as CPython would have: the package's code may import that submodule itself (3.12's
    zipfile ends with `from ._path import Path`), and the submodule's may use the package."""
    parent = name.rpartition(".")[0]
    if parent.partition(".")[0] not in _DEFERRED_TOPS:
        return
    if parent not in sys.modules:
        import_(parent)
    module = sys.modules.get(parent)
    if module is not None and _PENDING.get(id(module)) is module:
        _run(module)


def _wrap_find_and_load():
    """Wraps the import system's `_find_and_load`, which runs every import of a module not yet
    loaded: a submodule of a deferred package runs its package first (`_run_parent`), and the
    collector treats what the main thread's imports create as lasting."""
    bootstrap = sys.modules["_frozen_importlib"]
    find_and_load = bootstrap._find_and_load
    if getattr(find_and_load, "__wrapped__", None) is not None:
        return
    collect_less = "t" not in getattr(sys, "abiflags", "")
    main = _thread.get_ident()
    importing = False
    # The freeze count after the last move: a different one means the app froze objects.
    frozen = gc.get_freeze_count()

    def _find_and_load(name, import_):
        nonlocal importing, frozen
        if "." in name and _DEFERRED_TOPS:
            _run_parent(name, import_)
        if not collect_less or importing or _thread.get_ident() != main:
            return find_and_load(name, import_)
        before = gc.get_threshold()
        if not 0 < before[0] < _IMPORT_THRESHOLD:
            return find_and_load(name, import_)
        gc.set_threshold(_IMPORT_THRESHOLD, *before[1:])
        importing = True
        try:
            return find_and_load(name, import_)
        finally:
            importing = False
            if gc.get_threshold()[0] == _IMPORT_THRESHOLD:
                gc.set_threshold(*before)
                if gc.get_freeze_count() == frozen:
                    gc.freeze()
                    gc.unfreeze()
                    frozen = 0

    # Tracebacks of errors raised while importing leave out the import system's own frames by
    # their file name; this frame is one of them.
    code = _find_and_load.__code__
    _find_and_load.__code__ = code.replace(co_filename=find_and_load.__code__.co_filename)
    _find_and_load.__wrapped__ = find_and_load
    bootstrap._find_and_load = _find_and_load


def install(archive=None):
    """Serves the stdlib zip (`archive`, by default `<prefix>/lib/pythonXY.zip`, when it is on
    sys.path) and the packages in it through StdlibZip; other paths keep CPython's importers.
    A submodule of a deferred package runs its package first, and the main thread's imports
    leave what they create to the oldest generation. Only the first call counts."""
    default = "%s/lib/python%d%d.zip" % ((sys.prefix,) + sys.version_info[:2])
    if archive is None:
        archive = default
    plain = zipimport.zipimporter
    global _DEFERRED_TOPS
    _DEFERRED_TOPS = frozenset(name.partition(".")[0] for name in DEFERRED)
    _wrap_find_and_load()
    if archive not in sys.path or plain not in sys.path_hooks:
        return
    inside = archive + "/"

    def hook(path):
        if path == archive or path.startswith(inside):
            return StdlibZip(path)
        return plain(path)

    sys.path_hooks[:] = [hook if h is plain else h for h in sys.path_hooks]
    cache = sys.path_importer_cache
    for path, finder in list(cache.items()):
        if type(finder) is plain and finder.archive == archive:
            cache[path] = StdlibZip(path)
    for name in (_REGEX_COMPILER, "platform"):
        module = sys.modules.get(name)
        if module is not None:
            _loaded(module)
    # The memory runtime serves the zip from its memfd, while CPython's default entry still
    # names it inside the payload: both are skipped.
    _skip_in_distribution_search({archive, default})


def follow(news, root, status):
    """Follows the launcher's unpacking of the late frame and the tail (their lists under `root`)
    through its pipe `news`: a `-` as each entry of the late frame is in, in the late list's order,
    then, with a tail, `2` and a `+` as each file of the tail is complete, in the tail list's order,
    then `1` once the extraction is complete, or the pipe's end when the launcher is gone.

    Returns once the late frame's entries that the app waits for are in (all of them, without a
    late list): True, or False when the launcher is gone before. From then on the app waits only
    where it would read what is still coming:
    - listing a directory (`os.listdir`, `os.scandir`: the path finders do, before an import from
      it) waits for the late frame's entries in it and the `__init__` of its packages; opening a
      file of the late frame, for that file;
    - the import of an extension module of the tail waits for its file and its libraries; one of
      `_ctypes` or `_cffi_backend`, which load libraries by name, and an `open()` of a tail file,
      for the whole tail.
    At the pipe's end the extraction is complete if its manifest copy is there (a forked child may
    miss bytes its parent read); if not, the app ends with `status`, the launcher's I/O status,
    where it would have read a file that is not there. Once all of it is in, the import system is
    as it was."""
    import atexit
    from _frozen_importlib_external import ExtensionFileLoader

    def lines(name):
        with open(root + "/" + name, "rb") as f:
            return f.read().decode().split("\n")[:-1]

    def listed(name):
        try:
            return lines(name)
        except FileNotFoundError:
            return None

    late = listed("@LATE_LIST_FILE@") or []
    first = int(late[0]) if late else None
    # Each late file's position in the frame, and the last one a listing of a directory waits
    # for: its own entries, and the `__init__` of each package in it, which the import system
    # looks for (by `os.stat`) to tell a package from a namespace package.
    late_file, late_dir = {}, {}
    for n, path in enumerate(late[1:], 1):
        path = root + "/" + path
        if path.endswith("/"):
            path = path[:-1]
        else:
            late_file[path] = n
        parent, _, name = path.rpartition("/")
        late_dir[parent] = n
        if name.startswith("__init__."):
            late_dir[parent.rpartition("/")[0]] = n
    tail = listed("@TAIL_LIST_FILE@")
    tail_file = {root + "/" + path: n for n, path in enumerate(tail or [], 1)}
    # The libraries each extension module needs besides the interpreter's own.
    needs = {}
    for line in lines("@MEMORY_LIBS_FILE@") if tail else []:
        path, _, libraries = line.partition("\t")
        needs[root + "/" + path] = [root + "/" + lib for lib in libraries.split()]
    # Reentrant: a signal handler may import while this thread waits.
    lock = _thread.RLock()
    create_module = ExtensionFileLoader.create_module
    state = {"late": 0, "late done": False, "tail": 0, "done": False, "running": False}

    def finish():
        state["late done"] = state["done"] = True
        os.close(news)
        ExtensionFileLoader.create_module = create_module

    def wait(key, n):
        """Until `n` entries of the late frame (`key` "late") or the tail ("tail") are in (the
        whole of it for None)."""
        done = "late done" if key == "late" else "done"
        if state[done] or n is not None and n <= state[key]:
            return True
        with lock:
            while not state[done] and (n is None or state[key] < n):
                got = os.read(news, 4096)
                state["late"] += got.count(b"-")
                state["tail"] += got.count(b"+")
                if b"2" in got:
                    state["late done"] = True
                if b"1" in got or not got and os.path.exists(root + "/pyshrink.manifest"):
                    finish()
                elif not got:
                    if not state["running"]:
                        os.close(news)
                        return False
                    sys.stderr.write(
                        "pyshrink: error: the bundle was not completely unpacked; the app stopped"
                        " where it needed more of it\n\nhint: run it again\n")
                    sys.stderr.flush()
                    os._exit(status)
        return True

    def create(self, spec):
        if not state["done"]:
            if spec.name in ("_ctypes", "_cffi_backend"):
                wait("tail", None)
            else:
                paths = [self.path] + needs.get(self.path, [])
                wait("tail", max([tail_file.get(p, 0) for p in paths]))
        return create_module(self, spec)

    def audit(event, args):
        if state["done"] or event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        path = args[0]
        if type(path) is not str:
            if not hasattr(path, "__fspath__"):
                return
            path = os.fspath(path)
            if type(path) is not str:
                return
        if event == "open":
            n = late_file.get(path)
            if n is not None:
                wait("late", n)
            elif path in tail_file:
                wait("tail", None)
        else:
            n = late_dir.get(path.rstrip("/"))
            if n is not None:
                wait("late", n)

    if not wait("late", first):
        return False
    state["running"] = True
    if tail:
        create.__wrapped__ = create_module
        ExtensionFileLoader.create_module = create
    if not state["done"]:
        sys.addaudithook(audit)
        # An app that is done sooner leaves a complete extraction all the same: where its end ends
        # the launcher's process too (PID 1 of a container, a sandbox's PID namespace), the next
        # start would have to unpack everything again.
        atexit.register(wait, "tail", None)
    return True


def _skip_in_distribution_search(names):
    """Makes PathFinder's distribution search (importlib.metadata's) pass over the sys.path
    entries `names`."""
    search = getattr(PathFinder, "find_distributions", None)
    if search is None:
        return

    def find_distributions(context=None, **kwargs):
        if context is None:
            from importlib.metadata import DistributionFinder

            context = DistributionFinder.Context(**kwargs)
        path = context.path
        if not names.isdisjoint(path):
            rest = [p for p in path if p not in names]
            context = type(context)(**dict(vars(context), path=rest))
        return search(context)

    PathFinder.find_distributions = staticmethod(find_distributions)
