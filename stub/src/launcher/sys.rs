//! Thin wrappers over the few libc calls the launcher makes. Paths are byte strings: nothing here
//! assumes UTF-8. Every call that can fail returns the errno, which callers turn into a message.

use alloc::vec::Vec;
use core::ffi::{c_char, c_int};

pub type Errno = c_int;

pub fn errno() -> Errno {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for its lifetime.
    unsafe { *libc::__errno_location() }
}

fn check(ret: c_int) -> Result<c_int, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// A NUL-terminated copy of `path`, for passing to libc.
pub fn cpath(path: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(path.len() + 1);
    v.extend_from_slice(path);
    v.push(0);
    v
}

/// `a/b` from `a` and `b`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(dir.len() + name.len() + 1);
    v.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// A thread running a closure; `join` waits for it and returns what it returned. Where no
/// thread can be made, the closure runs at once, on the caller's thread.
pub struct Thread<T> {
    id: Option<libc::pthread_t>,
    slot: alloc::boxed::Box<Slot<T>>,
}

type Job<T> = alloc::boxed::Box<dyn FnOnce() -> T + Send>;

struct Slot<T> {
    job: Option<Job<T>>,
    out: Option<T>,
}

extern "C" fn thread_start<T>(arg: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    // SAFETY: `arg` is the Thread's boxed slot, which the Thread keeps alive and does not touch
    // until after pthread_join.
    let slot = unsafe { &mut *arg.cast::<Slot<T>>() };
    if let Some(job) = slot.job.take() {
        slot.out = Some(job());
    }
    core::ptr::null_mut()
}

/// CPUs as the kernel's affinity calls take them (1024 of them).
type CpuMask = [u64; 16];

fn affinity() -> Option<CpuMask> {
    let mut mask: CpuMask = [0; 16];
    // SAFETY: the kernel writes at most the stated size into `mask`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            core::mem::size_of::<CpuMask>(),
            mask.as_mut_ptr(),
        )
    };
    (n > 0).then_some(mask)
}

fn set_affinity(mask: &CpuMask) -> bool {
    // SAFETY: `mask` is readable for the stated size.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            core::mem::size_of::<CpuMask>(),
            mask.as_ptr(),
        ) == 0
    }
}

fn current_cpu() -> Option<usize> {
    let mut cpu: u32 = 0;
    // SAFETY: getcpu writes one u32 through its first argument; the others may be null.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            core::ptr::null_mut::<u32>(),
            core::ptr::null_mut::<u8>(),
        )
    };
    (ret == 0 && (cpu as usize) < 64 * 16).then_some(cpu as usize)
}

/// Starts `job` on a thread of its own, on another CPU than the caller's when there is one.
///
/// Left to itself the kernel often queues a new thread on its parent's busy CPU, where it waits
/// 1-5 ms for the parent's time slice to end or for the idle CPU to pull it over: a tenth of a
/// cold start. A new thread inherits its parent's affinity, so the caller steps off its CPU while
/// the thread is made (the thread then lands on another CPU), moves back, and both widen their
/// affinity to what it was. Where the affinity cannot be read or set, or there is one CPU, the
/// thread starts as the kernel places it.
pub fn spawn<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Thread<T> {
    let (Some(all), Some(cpu)) = (affinity(), current_cpu()) else {
        return start(job);
    };
    let bit = 1u64 << (cpu % 64);
    let mut here: CpuMask = [0; 16];
    here[cpu / 64] = bit;
    let mut others = all;
    others[cpu / 64] &= !bit;
    if all[cpu / 64] & bit == 0 || others == [0; 16] || !set_affinity(&others) {
        return start(job);
    }
    let thread = start(move || {
        set_affinity(&all);
        job()
    });
    set_affinity(&here);
    set_affinity(&all);
    thread
}

fn start<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Thread<T> {
    let mut slot = alloc::boxed::Box::new(Slot {
        job: Some(alloc::boxed::Box::new(job) as Job<T>),
        out: None,
    });
    let arg: *mut Slot<T> = &mut *slot;
    let mut id: libc::pthread_t = 0;
    // SAFETY: `thread_start::<T>` has the start routine's signature and `arg` outlives the thread
    // (see `thread_start`); default attributes.
    let started =
        unsafe { libc::pthread_create(&mut id, core::ptr::null(), thread_start::<T>, arg.cast()) }
            == 0;
    if !started {
        thread_start::<T>(arg.cast());
    }
    Thread {
        id: started.then_some(id),
        slot,
    }
}

impl<T> Thread<T> {
    pub fn join(mut self) -> T {
        if let Some(id) = self.id.take() {
            // SAFETY: a thread `spawn` started, joined once.
            unsafe { libc::pthread_join(id, core::ptr::null_mut()) };
        }
        match self.slot.out.take() {
            Some(out) => out,
            None => exit(crate::exit::IO),
        }
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The directory part of `path` (`/a/b` -> `/a`; `/a` -> `/`).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b".",
    }
}

pub struct Fd(pub c_int);

impl Fd {
    /// A descriptor that its owner (another thread's caller) keeps open and closes: used here,
    /// never closed here.
    pub fn borrowed(raw: c_int) -> core::mem::ManuallyDrop<Fd> {
        core::mem::ManuallyDrop::new(Fd(raw))
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this value and closed once.
        unsafe { libc::close(self.0) };
    }
}

pub fn open(path: &[u8], flags: c_int, mode: u32) -> Result<Fd, Errno> {
    let p = cpath(path);
    // SAFETY: `p` is NUL-terminated and outlives the call.
    check(unsafe { libc::open(p.as_ptr().cast(), flags | libc::O_CLOEXEC, mode) }).map(Fd)
}

pub fn openat(dir: &Fd, path: &[u8], flags: c_int, mode: u32) -> Result<Fd, Errno> {
    let p = cpath(path);
    // SAFETY: as in `open`; `dir` is an open descriptor.
    check(unsafe { libc::openat(dir.0, p.as_ptr().cast(), flags | libc::O_CLOEXEC, mode) }).map(Fd)
}

pub fn mkdirat(dir: &Fd, path: &[u8], mode: u32) -> Result<(), Errno> {
    let p = cpath(path);
    // SAFETY: as in `open`.
    check(unsafe { libc::mkdirat(dir.0, p.as_ptr().cast(), mode) }).map(drop)
}

pub fn mkdir(path: &[u8], mode: u32) -> Result<(), Errno> {
    let p = cpath(path);
    // SAFETY: as in `open`.
    check(unsafe { libc::mkdir(p.as_ptr().cast(), mode) }).map(drop)
}

/// A hard link `to` of the file `from`, both in the directory `dir`.
pub fn linkat(dir: &Fd, from: &[u8], to: &[u8]) -> Result<(), Errno> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated and outlive the call; `dir` is an open directory.
    check(unsafe { libc::linkat(dir.0, f.as_ptr().cast(), dir.0, t.as_ptr().cast(), 0) }).map(drop)
}

/// Renames `from` to `to`, both in the directory `dir`.
pub fn renameat(dir: &Fd, from: &[u8], to: &[u8]) -> Result<(), Errno> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated and outlive the call; `dir` is an open directory.
    check(unsafe { libc::renameat(dir.0, f.as_ptr().cast(), dir.0, t.as_ptr().cast()) }).map(drop)
}

pub fn rename(from: &[u8], to: &[u8]) -> Result<(), Errno> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: both paths are NUL-terminated and outlive the call.
    check(unsafe { libc::rename(f.as_ptr().cast(), t.as_ptr().cast()) }).map(drop)
}

pub fn pread_exact(fd: &Fd, buf: &mut [u8], mut offset: u64) -> Result<(), Errno> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::pread(
                fd.0,
                buf[at..].as_mut_ptr().cast(),
                buf.len() - at,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        at += n as usize;
        offset += n as u64;
    }
    Ok(())
}

/// An anonymous memory file, inherited across exec (the interpreter maps it by /proc/self/fd).
/// Sealable, and executable where the kernel distinguishes (`MFD_EXEC`, Linux 6.3+).
pub fn memfd(name: &[u8]) -> Result<Fd, Errno> {
    const MFD_ALLOW_SEALING: libc::c_uint = 2;
    const MFD_EXEC: libc::c_uint = 0x10;
    let n = cpath(name);
    for flags in [MFD_ALLOW_SEALING | MFD_EXEC, MFD_ALLOW_SEALING] {
        // SAFETY: `n` is NUL-terminated; memfd_create takes a name and flags.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_create, n.as_ptr(), flags) };
        if fd >= 0 {
            return Ok(Fd(fd as c_int));
        }
        if errno() != libc::EINVAL {
            break;
        }
    }
    Err(errno())
}

/// The descriptor moved to the lowest free number at or above `min` (kept across exec).
pub fn dup_at_least(fd: Fd, min: c_int) -> Result<Fd, Errno> {
    // SAFETY: fcntl on an open descriptor with an integer argument.
    check(unsafe { libc::fcntl(fd.0, libc::F_DUPFD, min) }).map(Fd)
}

/// The soft limit on open descriptors.
pub fn max_fds() -> u64 {
    // SAFETY: getrlimit fills the plain struct it is given.
    unsafe {
        let mut r: libc::rlimit = core::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur as u64
    }
}

/// Seals a memory file against any further change.
pub fn seal(fd: &Fd) -> Result<(), Errno> {
    const F_ADD_SEALS: c_int = 1033;
    // F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE.
    const ALL: c_int = 1 | 2 | 4 | 8;
    // SAFETY: fcntl on an open descriptor with an integer argument.
    check(unsafe { libc::fcntl(fd.0, F_ADD_SEALS, ALL) }).map(|_| ())
}

pub fn pwrite_all(fd: &Fd, mut buf: &[u8], mut offset: u64) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::pwrite(fd.0, buf.as_ptr().cast(), buf.len(), offset as i64) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(errno());
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

pub fn read(fd: &Fd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

pub fn write_all(fd: c_int, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(errno());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads a whole small file, refusing more than `cap` bytes.
pub fn read_file(path: &[u8], cap: usize) -> Result<Vec<u8>, Errno> {
    let fd = open(path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = read(&fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > cap {
            return Err(libc::EFBIG);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn fstat(fd: &Fd) -> Result<libc::stat, Errno> {
    // SAFETY: `st` is plain old data that fstat fills in.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    check(unsafe { libc::fstat(fd.0, &mut st) })?;
    Ok(st)
}

/// lstat: information about `path` itself, never about what a symlink points at.
pub fn lstat(path: &[u8]) -> Result<libc::stat, Errno> {
    let p = cpath(path);
    // SAFETY: as in `fstat`; `p` is NUL-terminated.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    check(unsafe { libc::lstat(p.as_ptr().cast(), &mut st) })?;
    Ok(st)
}

pub fn statvfs_flags(path: &[u8]) -> Result<u64, Errno> {
    let p = cpath(path);
    // SAFETY: as in `fstat`.
    let mut st: libc::statvfs = unsafe { core::mem::zeroed() };
    check(unsafe { libc::statvfs(p.as_ptr().cast(), &mut st) })?;
    Ok(st.f_flag)
}

pub fn access(path: &[u8], mode: c_int) -> Result<(), Errno> {
    let p = cpath(path);
    // SAFETY: as in `open`.
    check(unsafe { libc::access(p.as_ptr().cast(), mode) }).map(drop)
}

pub fn readlink(path: &[u8]) -> Result<Vec<u8>, Errno> {
    let p = cpath(path);
    let mut buf = alloc::vec![0u8; 4096];
    // SAFETY: the buffer is 4096 bytes long; readlink writes at most that many.
    let n = unsafe { libc::readlink(p.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    if n as usize >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn flock_exclusive(fd: &Fd) -> Result<(), Errno> {
    loop {
        // SAFETY: plain syscall on an owned descriptor.
        if unsafe { libc::flock(fd.0, libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// Removes `name` inside `dir` and everything under it, without following symlinks.
pub fn remove_tree_at(dir: &Fd, name: &[u8]) -> Result<(), Errno> {
    let c = cpath(name);
    // SAFETY: as in `open`.
    if unsafe { libc::unlinkat(dir.0, c.as_ptr().cast(), 0) } == 0 {
        return Ok(());
    }
    match errno() {
        libc::ENOENT => return Ok(()),
        libc::EISDIR | libc::EPERM => {}
        e => return Err(e),
    }
    let sub = openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    for child in list_dir(&sub)? {
        remove_tree_at(&sub, &child)?;
    }
    drop(sub);
    // SAFETY: as in `open`.
    check(unsafe { libc::unlinkat(dir.0, c.as_ptr().cast(), libc::AT_REMOVEDIR) }).map(drop)
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(dir: &Fd) -> Result<Vec<Vec<u8>>, Errno> {
    // SAFETY: dup gives fdopendir a descriptor of its own, which closedir closes.
    let fd = check(unsafe { libc::dup(dir.0) })?;
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = errno();
        // SAFETY: fdopendir failed, so the duplicate is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is an open DIR stream; readdir's entry is valid until the next call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { core::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            out.push(name.into());
        }
    }
    // SAFETY: closes the stream opened above.
    unsafe { libc::closedir(d) };
    Ok(out)
}

pub fn getuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getuid() }
}

pub fn getpid() -> i32 {
    // SAFETY: always succeeds.
    unsafe { libc::getpid() }
}

/// Replaces the process. Returns only on failure.
pub fn execve(path: &[u8], argv: &[Vec<u8>], envp: *const *const c_char) -> Errno {
    let p = cpath(path);
    let cargs: Vec<Vec<u8>> = argv.iter().map(|a| cpath(a)).collect();
    let mut ptrs: Vec<*const c_char> = cargs.iter().map(|a| a.as_ptr().cast()).collect();
    ptrs.push(core::ptr::null());
    // SAFETY: every pointer refers to a NUL-terminated buffer alive across the call; the arrays
    // are NULL-terminated; envp is the environment the process was started with.
    unsafe { libc::execve(p.as_ptr().cast(), ptrs.as_ptr(), envp) };
    errno()
}

/// A pipe (read end, write end), both closed on exec.
pub fn pipe() -> Result<(Fd, Fd), Errno> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((Fd(fds[0]), Fd(fds[1])))
}

/// Keeps `fd` open across exec.
pub fn inherit(fd: &Fd) -> Result<(), Errno> {
    // SAFETY: F_SETFD on an open descriptor.
    check(unsafe { libc::fcntl(fd.0, libc::F_SETFD, 0) }).map(drop)
}

/// `fork`: Ok(0) in the child, Ok(pid) in the parent.
pub fn fork() -> Result<i32, Errno> {
    // SAFETY: called while the process has one thread, so the child's copy of every lock and
    // allocator state is consistent.
    check(unsafe { libc::fork() })
}

/// Waits for the child `pid`; true when it exited with status 0.
pub fn exited_ok(pid: i32) -> bool {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if r < 0 && errno() != libc::EINTR {
            return false;
        }
    }
}

pub fn exit(code: i32) -> ! {
    // SAFETY: ends the process; nothing of ours needs flushing.
    unsafe { libc::_exit(code) }
}

/// Text for the errno values a user is likely to meet; the number otherwise.
pub fn strerror(e: Errno) -> &'static str {
    match e {
        libc::EACCES => "permission denied",
        libc::EPERM => "operation not permitted",
        libc::ENOENT => "no such file or directory",
        libc::EROFS => "read-only file system",
        libc::ENOSPC => "no space left on device",
        libc::EEXIST => "file exists",
        libc::ENOTDIR => "not a directory",
        libc::ELOOP => "is a symbolic link",
        libc::ENOEXEC => "exec format error",
        libc::ENOMEM => "out of memory",
        libc::EIO => "input/output error",
        libc::EFBIG => "file too large",
        libc::EDQUOT => "disk quota exceeded",
        _ => "system error",
    }
}
