//! Becoming the bundled interpreter.
//!
//! The interpreter is started through the bundled loader (`ld.so --library-path <lib> prog`), so
//! neither the host's loader nor LD_LIBRARY_PATH is involved and nothing leaks into programs the
//! app starts. `--argv0 <extraction>/bin/python3` makes CPython find its prefix in the extraction
//! and report that launcher copy as `sys.executable`. `-E -s -B` keep host `PYTHON*` variables
//! and user site-packages out and stop bytecode writes; the harmless variables users set in
//! containers (`PYTHONUNBUFFERED`, `PYTHONFAULTHANDLER`, `PYTHONUTF8`) are turned into flags.
//!
//! As PID 1 (a container without `--init`) the launcher stays as init instead: it forwards every
//! signal to Python, reaps orphans and exits with Python's status (128+N for signal N).

use alloc::vec::Vec;

use super::{die_errno, sys, Env};
use crate::{exit, Entry, Manifest};

#[derive(Clone, Copy)]
pub enum Role<'a> {
    /// The bundle itself: run the app's entry point, with `sys.argv[0]` = how it was invoked.
    Bundle { argv0: &'a [u8] },
    /// The `sys.executable` copy: behave like `python3`.
    Python,
}

/// Runs the entry point as `__main__`, as `python app.py` / `python -m mod` would, but with
/// `sys.argv[0]` set to the bundle's own argv[0]. Arguments: argv0, kind, target, the descriptor
/// that says when the late frame is unpacked (empty: it is), app args.
/// First it imports from the stdlib zip faster (`ZIPIMPORT_MODULE`). Then it waits for the late
/// frame: until then the directories the files go to may have been listed without them, so the
/// path finders forget what they listed. The launcher sends a `-` for each of its entries, then
/// `1`, or `2` when a tail follows. The helper's `follow` waits only for the entries the app needs
/// before it starts (the late list's), and from then on makes the app wait where it would read
/// what is still coming, the tail's files included; where it cannot be imported (its stdlib
/// modules left out of a small app), everything is waited for.
const BOOT: &str = concat!(
    "def _pyshrink_main():
    import sys
    try:
        from ",
    crate::zipimport_module!(),
    " import install, follow
    except ImportError:
        follow = None
    else:
        install()
    a = sys.argv
    kind, target, late = a[2], a[3], a[4]
    sys.argv = [a[1]] + a[5:]
    if late:
        import os
        news = int(late)
        if follow is not None:
            ok = follow(news, sys.base_prefix, ",
    crate::io_status!(),
    ")
        else:
            done = b'-'
            while done == b'-':
                done = os.read(news, 1)
            while done == b'2' and os.read(news, 4096):
                pass
            os.close(news)
            ok = done == b'1' or done == b'2' and os.path.exists(sys.base_prefix + '/pyshrink.manifest')
        if not ok:
            sys.stderr.write('''pyshrink: error: ",
    crate::late_frame_failed!(),
    "
''')
            raise SystemExit(",
    crate::io_status!(),
    ")
        from _frozen_importlib_external import FileFinder
        for f in sys.path_importer_cache.values():
            if isinstance(f, FileFinder):
                f.invalidate_caches()
    g = globals()
    del g['_pyshrink_main']
    if kind == 'module':
        import os, runpy
        sys.path[0:1] = [os.getcwd(), sys.base_prefix + '/app']
        runpy._run_module_as_main(target, alter_argv=False)
        return
    import marshal
    sys.path[0] = target.rpartition('/')[0]
    with open(target, 'rb') as f:
        f.seek(16)
        code = marshal.load(f)
    g['__file__'] = target
    g['__cached__'] = None
    exec(code, g)
_pyshrink_main()
"
);

/// Where the parts of the bundled runtime are, and how the interpreter is to be started.
pub struct Start {
    pub loader: Vec<u8>,
    /// How the loader finds the libraries: `--library-path DIR` or `--preload LIST`.
    pub loader_args: Vec<Vec<u8>>,
    /// What CPython takes as its own path: it finds its prefix from it (on disk) and reports it
    /// as `sys.executable`.
    pub argv0: Vec<u8>,
    pub interpreter: Vec<u8>,
    /// Where the payload's paths start (the extraction directory, or the in-memory zip).
    pub root: Vec<u8>,
    /// `None`: the launcher's own environment, with `-E` keeping host `PYTHON*` variables from
    /// the interpreter. `Some`: this environment instead (it carries the variables that point
    /// the interpreter at memory, host `PYTHON*` variables removed).
    pub env: Option<Vec<Vec<u8>>>,
    /// Readable once the late frame is unpacked (see `extract::extract`); `None`: it is.
    pub late: Option<sys::Fd>,
}

/// The interpreter of an extraction directory.
pub fn disk(dir: &[u8], m: &Manifest) -> Start {
    Start {
        loader: sys::join(dir, m.loader.as_bytes()),
        loader_args: alloc::vec![
            b"--library-path".into(),
            sys::join(dir, m.library_path.as_bytes())
        ],
        argv0: sys::join(dir, m.python_exe.as_bytes()),
        interpreter: sys::join(dir, m.interpreter.as_bytes()),
        root: dir.into(),
        env: None,
        late: None,
    }
}

pub fn run(start: Start, m: &Manifest, role: Role, user_args: &[&[u8]], env: &Env) -> ! {
    let mut argv: Vec<Vec<u8>> = Vec::with_capacity(16 + user_args.len());
    argv.push(start.loader.clone());
    argv.push(b"--inhibit-cache".into());
    argv.extend(start.loader_args);
    argv.push(b"--argv0".into());
    argv.push(start.argv0);
    argv.push(start.interpreter);
    if start.env.is_none() {
        argv.push(b"-E".into());
    }
    for flag in ["-s", "-B"] {
        argv.push(flag.into());
    }
    if env.get_set(b"PYTHONUNBUFFERED").is_some() {
        argv.push(b"-u".into());
    }
    if env.get_set(b"PYTHONFAULTHANDLER").is_some() {
        argv.push(b"-X".into());
        argv.push(b"faulthandler".into());
    }
    if env.get_set(b"PYTHONUTF8") == Some(b"1") {
        argv.push(b"-X".into());
        argv.push(b"utf8".into());
    }
    if let Role::Bundle { argv0 } = role {
        argv.push(b"-c".into());
        argv.push(BOOT.into());
        argv.push(argv0.into());
        match &m.entry {
            Entry::Script(path) => {
                argv.push(b"script".into());
                argv.push(sys::join(&start.root, path.as_bytes()));
            }
            Entry::Module(name) => {
                argv.push(b"module".into());
                argv.push(name.as_bytes().into());
            }
        }
        argv.push(match &start.late {
            Some(fd) => alloc::format!("{}", fd.0).into_bytes(),
            None => Vec::new(),
        });
    }
    argv.extend(user_args.iter().map(|a| Vec::from(*a)));
    let owned_env: Vec<Vec<u8>>;
    let mut env_ptrs: Vec<*const core::ffi::c_char> = Vec::new();
    let envp = match start.env {
        None => env.ptr,
        Some(vars) => {
            owned_env = vars.iter().map(|v| sys::cpath(v)).collect();
            env_ptrs.extend(owned_env.iter().map(|v| v.as_ptr().cast()));
            env_ptrs.push(core::ptr::null());
            env_ptrs.as_ptr()
        }
    };
    let loader = start.loader;
    if sys::getpid() == 1 {
        supervise(&loader, &argv, envp);
    }
    let e = sys::execve(&loader, &argv, envp);
    die_errno(
        exit::EXEC,
        b"failed to start the bundled interpreter",
        &loader,
        e,
    )
}

/// PID 1: run Python as a child, forward signals to it, reap every child, exit as it exits.
fn supervise(loader: &[u8], argv: &[Vec<u8>], envp: *const *const core::ffi::c_char) -> ! {
    // SAFETY: sigset_t is plain data initialised by sigfillset; the masks are process-local.
    // Signals are blocked before fork so none is lost between fork and the wait loop; the child
    // restores the original mask before exec.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        let child = libc::fork();
        if child < 0 {
            die_errno(
                exit::EXEC,
                b"failed to fork the bundled interpreter",
                loader,
                sys::errno(),
            );
        }
        if child == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
            let e = sys::execve(loader, argv, envp);
            die_errno(
                exit::EXEC,
                b"failed to start the bundled interpreter",
                loader,
                e,
            );
        }
        loop {
            let mut info: libc::siginfo_t = core::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    let code = if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    };
                    sys::exit(code);
                }
            }
        }
    }
}
