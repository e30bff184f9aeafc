# The memory runtime's start-up code, compiled by the bundler into the payload as
# `pyshrink-boot/sitecustomize.pyc`. The launcher puts that directory on `PYTHONPATH` (in a zip of
# its own) and describes the memory files in `PYSHRINK_MEMORY`: the zip's path, then a line
# `<fd>=<payload path>` for each file kept in a memory file of its own (ELF files, mapped by the
# loader, and the stdlib zip), `%XX` for bytes below 0x20 and `%`. With a late frame, the second
# line is `late=<pipe>,<listing>`: the zip and the late frame's memory files are complete once the
# pipe gives `1` (at once when it is empty), and the memory file `<listing>` then lists those
# files in the same form. With a tail, the pipe gives `2` once the zip is complete; each file of
# the tail is then added to the listing as it is complete, with a `+` on the pipe. An import of a
# tail module, `open()` or `os.stat()` of a tail file waits for it; ctypes and cffi wait for all.
# `site` imports it before the app runs, in the bundle and in its `sys.executable` children alike;
# on disk it is not on `sys.path` and never runs.
#
# Every bundled path is a path inside the zip, `/proc/self/fd/N/<path in the payload>`:
# `sys.prefix` is the zip, so `__file__`, `sys.path` and `importlib.resources` all name places in
# it. What this adds:
# - `sys.path` entries for the packages, which `site` skipped since they are not directories;
# - an import finder for extension modules, which load from their own memory files after the
#   libraries they need (the loader cannot search a directory for those); ctypes and cffi get
#   the same when they open a bundled library by path;
# - `open()`, `io.open_code()`, `os.stat()`, `os.lstat()`, `os.listdir()` and `os.scandir()` that
#   read the bundled files by those paths, so packages that read their data next to `__file__`
#   work; writing is refused;
# - a resource reader for the packages in the zip that hands out those paths.


def _pyshrink_memory():
    import builtins
    import io
    import os
    import posixpath
    import stat
    import sys
    import zipimport
    import _imp
    import _thread

    ModuleSpec = sys.modules["_frozen_importlib"].ModuleSpec
    suffixes = _imp.extension_suffixes()

    spec = os.environb.pop(b"PYSHRINK_MEMORY", None)
    if spec is None:
        return
    for var in ("PYTHONHOME", "PYTHONPATH"):
        os.environ.pop(var, None)
    lines = spec.split(b"\n")
    root = os.fsdecode(lines[0])
    prefix = root + "/"
    elf = {}

    def memory_files(lines):
        """Takes in `<fd>=<path>` lines; returns the paths."""
        added = []
        for line in lines:
            fd, _, rel = line.partition(b"=")
            if b"%" in rel:
                parts = rel.split(b"%")
                rel = parts[0] + b"".join(bytes([int(p[:2], 16)]) + p[2:] for p in parts[1:])
            if rel:
                added.append(os.fsdecode(rel))
                elf[added[-1]] = "/proc/self/fd/" + fd.decode()
        return added

    late = lines.pop(1) if len(lines) > 1 and lines[1].startswith(b"late=") else None
    memory_files(lines[1:])
    # The tail's files (extension modules and the libraries only they need) not in yet.
    pending = set()
    # The pipe and the listing while the tail comes in.
    news = [None, None]

    def failed():
        os.write(2, ("pyshrink: error: %s\n" % "@LATE_FRAME_FAILED@").encode())
        os._exit(int("@IO_STATUS@"))

    if late:
        # The late frame is unpacked while the interpreter starts; the zip is complete after it
        # (`1`), or after the files before the tail (`2`), whose files follow, each listed as it
        # is complete, with a `+` on the pipe.
        done, _, listing = late[5:].partition(b",")
        listing, listed = int(listing), [0]
        got = os.read(int(done), 1) if done else b"1"

        def more():
            """Takes in the lines added to the listing since the last look."""
            end = os.fstat(listing).st_size
            data = os.pread(listing, end - listed[0], listed[0])
            data = data[: data.rfind(b"\n") + 1]
            listed[0] += len(data)
            pending.difference_update(memory_files(data.splitlines()))

        if got not in (b"1", b"2"):
            failed()
        more()
        if got == b"2":
            news[:] = [int(done), listing]
        else:
            os.close(listing)
            if done:
                os.close(int(done))
        # An import before now may have looked into the zip while it was being written.
        zipimport._zip_directory_cache.pop(root, None)
        for entry in list(sys.path_importer_cache):
            if entry == root or entry.startswith(prefix):
                del sys.path_importer_cache[entry]
    archive = zipimport.zipimporter(root)
    files = archive._get_files() if hasattr(archive, "_get_files") else archive._files
    if news[0] is not None:
        tail = archive.get_data("@TAIL_LIST_FILE@").decode("utf-8").splitlines()
        pending.update(set(tail) - set(elf))
    # Reentrant: a signal handler may import while this thread waits.
    lock = _thread.RLock()

    def settle(missing):
        """Takes in the tail's files as they come until `missing()` is false."""
        with lock:
            while news[0] is not None and missing():
                got = os.read(news[0], 4096)
                more()
                if b"1" in got or not got:
                    for fd in news:
                        os.close(fd)
                    news[:] = [None, None]
                    if pending:
                        failed()

    def wait(rel):
        """Until the tail's file `rel` is in."""
        if rel in pending:
            settle(lambda: rel in pending)

    def wait_all():
        if pending:
            settle(lambda: pending)

    def bundled(rel):
        """A bundled file, the tail's that are still coming included."""
        return rel in files or rel in elf or rel in pending

    def bundled_paths():
        """The paths of every bundled file, the tail's that are still coming included."""
        return list(files) + list(elf) + list(pending)

    class Dirs:
        """Every directory of the payload, worked out on first use."""

        def __contains__(self, rel):
            if not hasattr(self, "all"):
                self.all = {""}
                for name in bundled_paths():
                    parts = name.rstrip("/").split("/")
                    for i in range(1, len(parts)):
                        self.all.add("/".join(parts[:i]))
            return rel in self.all

    dirs = Dirs()

    version = "python%d.%d" % sys.version_info[:2]
    boot = os.path.dirname(__file__)
    sys.path[:] = [p for p in sys.path if p != boot]
    for site in ("lib/%s/site-packages/" % version, "lib/python3/dist-packages/"):
        if site in files and prefix + site[:-1] not in sys.path:
            sys.path.append(prefix + site[:-1])

    class Spec:
        def __init__(self, name, origin):
            self.name, self.origin = name, origin

    loaded = set()

    def load_libraries(rel):
        needs = libraries().get(rel, ())
        todo = [lib for lib in needs if lib not in loaded]
        while todo:
            refused, error = [], None
            for lib in todo:
                try:
                    _imp.create_dynamic(Spec("_pyshrink_library", elf[lib]))
                except ImportError as e:
                    # Loaded: a library has no module init function.
                    if "PyInit__pyshrink_library" not in str(e):
                        refused.append(lib)
                        error = e
                        continue
                loaded.add(lib)
            if len(refused) == len(todo):
                raise ImportError("cannot load %s for %s: %s" % (refused[0], rel, error))
            todo = refused

    cache = []

    def libraries():
        if not cache:
            needs = {}
            try:
                text = archive.get_data("pyshrink-libs.txt").decode()
            except OSError:
                text = ""
            for line in text.splitlines():
                rel, _, libs = line.partition("\t")
                needs[rel] = libs.split()
            cache.append(needs)
        return cache[0]

    def by_path(real_dlopen):
        def dlopen(name, *args, **kwargs):
            rel = member(name)
            wait(rel)
            if rel in elf:
                load_libraries(rel)
                name = elf[rel]
            return real_dlopen(name, *args, **kwargs)

        return dlopen

    class ExtensionLoader:
        def __init__(self, rel):
            self.rel = rel

        def create_module(self, spec):
            if spec.name in ("_ctypes", "_cffi_backend"):
                # They load libraries by name too.
                wait_all()
            for rel in [self.rel] + libraries().get(self.rel, []):
                wait(rel)
            load_libraries(self.rel)
            return _imp.create_dynamic(Spec(spec.name, elf[self.rel]))

        def exec_module(self, module):
            _imp.exec_dynamic(module)
            module.__file__ = prefix + self.rel
            # ctypes and cffi open libraries by path, with dlopen: give it the memory file.
            name = {"_ctypes": "dlopen", "_cffi_backend": "load_library"}.get(module.__name__)
            if name:
                setattr(module, name, by_path(getattr(module, name)))

    class ExtensionFinder:
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            tail = fullname.rpartition(".")[2]
            for entry in sys.path if path is None else path:
                if not isinstance(entry, str) or not entry.startswith(prefix):
                    continue
                base = entry[len(prefix):].rstrip("/") + "/" + tail
                for suffix in suffixes:
                    if base + suffix in elf or base + suffix in pending:
                        rel = base + suffix
                        spec = ModuleSpec(fullname, ExtensionLoader(rel), origin=prefix + rel)
                        spec.has_location = True
                        return spec
            return None

        @classmethod
        def invalidate_caches(cls):
            pass

    finders = [getattr(f, "__name__", "") for f in sys.meta_path]
    at = finders.index("PathFinder") if "PathFinder" in finders else len(finders)
    sys.meta_path.insert(at, ExtensionFinder)

    def member(path):
        """The payload path `path` names, or None when it is not a bundled path (the zip
        itself is a real file)."""
        if isinstance(path, int):
            return None
        try:
            path = os.fspath(path)
        except TypeError:
            return None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path.startswith(prefix):
            return None
        rel = posixpath.normpath(path)[len(prefix):]
        return rel if posixpath.normpath(path).startswith(prefix) else None

    real_open, real_stat, real_lstat, real_listdir = io.open, os.stat, os.lstat, os.listdir
    real_open_code, real_scandir = io.open_code, os.scandir

    def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
             closefd=True, opener=None):
        rel = member(file)
        if rel is not None:
            if set(mode) - set("rbt"):
                raise OSError(30, "the bundled files are read-only (memory runtime)", file)
            wait(rel)
            if rel in elf:
                file = elf[rel]
            elif rel in files:
                data = io.BytesIO(archive.get_data(rel))
                data.name = os.fspath(file)
                if "b" in mode:
                    return data
                return io.TextIOWrapper(data, encoding, errors, newline)
            else:
                raise FileNotFoundError(2, "No such file or directory", file)
        return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    def open_code(path):
        if member(path) is None:
            return real_open_code(path)
        return open(path, "rb")

    def fake_stat(rel, path):
        wait(rel)
        if rel in files or rel in elf:
            size = real_stat(elf[rel]).st_size if rel in elf else files[rel][3]
            return os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, size, 0, 0, 0))
        if rel in dirs:
            return os.stat_result((stat.S_IFDIR | 0o555, 0, 0, 2, 0, 0, 0, 0, 0, 0))
        raise FileNotFoundError(2, "No such file or directory", path)

    def stat_(path, *args, **kwargs):
        rel = member(path)
        if rel is None:
            return real_stat(path, *args, **kwargs)
        return fake_stat(rel, path)

    def lstat(path, *args, **kwargs):
        rel = member(path)
        if rel is None:
            return real_lstat(path, *args, **kwargs)
        return fake_stat(rel, path)

    def listdir(path="."):
        rel = member(path)
        if rel is None:
            return real_listdir(path)
        if rel not in dirs:
            raise NotADirectoryError(20, "Not a directory", path)
        start = rel + "/" if rel else ""
        names = set()
        for name in bundled_paths():
            if name.startswith(start) and len(name) > len(start):
                names.add(name[len(start):].split("/", 1)[0])
        if isinstance(path, bytes):
            return [os.fsencode(n) for n in sorted(names)]
        return sorted(names)

    class DirEntry:
        def __init__(self, parent, name):
            self.name = name
            self.path = posixpath.join(parent, name)
            self._rel = member(self.path)

        def is_dir(self, follow_symlinks=True):
            return self._rel in dirs

        def is_file(self, follow_symlinks=True):
            return bundled(self._rel)

        def is_symlink(self):
            return False

        def stat(self, follow_symlinks=True):
            return fake_stat(self._rel, self.path)

        def inode(self):
            return 0

        def __fspath__(self):
            return self.path

    class ScandirIterator:
        def __init__(self, path, names):
            self._entries = iter([DirEntry(path, n) for n in names])

        def __iter__(self):
            return self

        def __next__(self):
            return next(self._entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            self._entries = iter(())

    def scandir(path="."):
        if member(path) is None:
            return real_scandir(path)
        return ScandirIterator(os.fspath(path), listdir(path))

    def files_are_not_path_entries(path):
        # zipimport would take `<zip>/app/app.pyc` as a directory of the zip; a file is no
        # import location (runpy.run_path, as multiprocessing's spawn uses, then runs it).
        rel = member(path)
        if rel is not None and bundled(rel):
            return None
        raise ImportError("not a bundled file")

    sys.path_hooks.insert(0, files_are_not_path_entries)

    class Reader:
        """importlib.resources for a package in the zip. zipimport's own reader hands out
        zipfile.Path objects, which as_file() copies to a temporary file each: a read-only root
        has nowhere to put it (certifi's where(), which requests calls as it is imported). The
        bundled files open by path here, so the package's directory is what files() gives
        (3.9+), and resource_path() gives a file's path (3.8's importlib.resources.path)."""

        def __init__(self, path):
            self.path = path

        def files(self):
            import pathlib
            return pathlib.Path(self.path)

        def open_resource(self, resource):
            return open(posixpath.join(self.path, resource), "rb")

        def resource_path(self, resource):
            if not self.is_resource(resource):
                raise FileNotFoundError(2, "No such file or directory", resource)
            return posixpath.join(self.path, resource)

        def is_resource(self, name):
            rel = member(posixpath.join(self.path, name))
            return bundled(rel)

        def contents(self):
            return iter(listdir(self.path))

    real_reader = zipimport.zipimporter.get_resource_reader

    def get_resource_reader(self, fullname):
        reader = real_reader(self, fullname)
        if reader is None or self.archive != archive.archive:
            return reader
        return Reader(posixpath.dirname(self.get_filename(fullname)))

    zipimport.zipimporter.get_resource_reader = get_resource_reader

    for fn, orig in ((open, real_open), (stat_, real_stat), (lstat, real_lstat),
                     (listdir, real_listdir), (open_code, real_open_code), (scandir, real_scandir)):
        fn.__doc__, fn.__wrapped__ = orig.__doc__, orig
    io.open = builtins.open = open
    io.open_code = open_code
    os.stat, os.lstat, os.listdir, os.scandir = stat_, lstat, listdir, scandir

    stdlib_zip = elf.get("lib/python%d%d.zip" % sys.version_info[:2])
    if stdlib_zip:
        try:
            from _pyshrink_zipimport import install
        except ImportError:
            pass
        else:
            install(stdlib_zip)


_pyshrink_memory()
del _pyshrink_memory
