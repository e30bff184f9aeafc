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

pub enum Role<'a> {
    /// The bundle itself: run the app's entry point, with `sys.argv[0]` = how it was invoked.
    Bundle { argv0: &'a [u8] },
    /// The `sys.executable` copy: behave like `python3`.
    Python,
}

/// Runs the entry point as `__main__`, as `python app.py` / `python -m mod` would, but with
/// `sys.argv[0]` set to the bundle's own argv[0]. Arguments: argv0, kind, target, app args.
const BOOT: &[u8] = b"def _pyshrink_main():
    import sys
    a = sys.argv
    kind, target = a[2], a[3]
    sys.argv = [a[1]] + a[4:]
    g = globals()
    del g['_pyshrink_main']
    if kind == 'module':
        import os, runpy
        sys.path[0:1] = [os.getcwd(), sys.prefix + '/app']
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
";

pub fn run(dir: &[u8], m: &Manifest, role: Role, user_args: &[&[u8]], env: &Env) -> ! {
    let loader = sys::join(dir, m.loader.as_bytes());
    let mut argv: Vec<Vec<u8>> = Vec::with_capacity(16 + user_args.len());
    argv.push(loader.clone());
    argv.push(b"--inhibit-cache".into());
    argv.push(b"--library-path".into());
    argv.push(sys::join(dir, m.library_path.as_bytes()));
    argv.push(b"--argv0".into());
    argv.push(sys::join(dir, m.python_exe.as_bytes()));
    argv.push(sys::join(dir, m.interpreter.as_bytes()));
    for flag in ["-E", "-s", "-B"] {
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
                argv.push(sys::join(dir, path.as_bytes()));
            }
            Entry::Module(name) => {
                argv.push(b"module".into());
                argv.push(name.as_bytes().into());
            }
        }
    }
    argv.extend(user_args.iter().map(|a| Vec::from(*a)));
    if sys::getpid() == 1 {
        supervise(&loader, &argv, env);
    }
    let e = sys::execve(&loader, &argv, env.ptr);
    die_errno(
        exit::EXEC,
        b"failed to start the bundled interpreter",
        &loader,
        e,
    )
}

/// PID 1: run Python as a child, forward signals to it, reap every child, exit as it exits.
fn supervise(loader: &[u8], argv: &[Vec<u8>], env: &Env) -> ! {
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
            let e = sys::execve(loader, argv, env.ptr);
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
