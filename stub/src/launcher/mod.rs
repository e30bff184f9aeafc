//! The launcher: the static executable at the front of every bundle.
//!
//! It runs in two roles, told apart by whether its own file ends in a trailer:
//! - **bundle**: find the trailer through `/proc/self/exe`, pick an extraction root, extract the
//!   payload once (verified first) into `<root>/<hash>`, then become the bundled interpreter.
//! - **python**: the copy of the launcher at `<extraction>/bin/python3`, which is
//!   `sys.executable`: it becomes the bundled interpreter with the caller's arguments, so
//!   `subprocess.run([sys.executable, ...])` and multiprocessing's spawn work in an empty root.
//!
//! It is `no_std`, linked statically against musl (or glibc's libc.a), so it needs nothing from
//! the machine it runs on; it makes no NSS calls and never dlopens.

mod exec;
mod extract;
mod memory;
mod root;
mod sys;

use alloc::vec::Vec;
use core::ffi::{c_char, c_int, CStr};

use crate::{exit, FormatError, Manifest, Runtime, Trailer, MAX_MANIFEST_LEN, TRAILER_LEN};

struct Malloc;

// SAFETY: forwards to libc's allocator, which is thread-safe and returns memory aligned for any
// type up to 16 bytes; larger alignments go through posix_memalign.
unsafe impl core::alloc::GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if layout.align() <= 16 {
            return libc::malloc(layout.size()).cast();
        }
        let mut p = core::ptr::null_mut();
        if libc::posix_memalign(&mut p, layout.align(), layout.size()) != 0 {
            return core::ptr::null_mut();
        }
        p.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: core::alloc::Layout) {
        libc::free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, size: usize) -> *mut u8 {
        if layout.align() <= 16 {
            return libc::realloc(ptr.cast(), size).cast();
        }
        let new = self.alloc(core::alloc::Layout::from_size_align_unchecked(
            size,
            layout.align(),
        ));
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Malloc = Malloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    die(exit::IO, &[b"internal error in the launcher"]);
}

/// Prints `pyshrink: <parts>` on stderr and exits with `code`.
pub fn die(code: i32, parts: &[&[u8]]) -> ! {
    let mut msg = Vec::from(&b"pyshrink: error: "[..]);
    for p in parts {
        msg.extend_from_slice(p);
    }
    msg.push(b'\n');
    let _ = sys::write_all(2, &msg);
    sys::exit(code)
}

/// `die` for a failed system call on `path`.
pub fn die_errno(code: i32, what: &[u8], path: &[u8], e: sys::Errno) -> ! {
    die(
        code,
        &[what, b" `", path, b"`: ", sys::strerror(e).as_bytes()],
    )
}

pub fn die_format(e: &FormatError, file: &[u8]) -> ! {
    let (code, hint): (i32, &[u8]) = match e {
        FormatError::NotABundle => (exit::NOT_A_BUNDLE, b""),
        FormatError::UnsupportedVersion(_) => (
            exit::UNSUPPORTED_VERSION,
            b"\n\nhint: rebuild it with this version of pyshrink",
        ),
        FormatError::Corrupt(_) => (
            exit::CORRUPT,
            b"; the file was damaged (truncated download or modified)\n\nhint: fetch or build it again",
        ),
    };
    let mut text = alloc::string::String::new();
    let _ = core::fmt::write(&mut text, format_args!("{e}"));
    die(code, &[b"`", file, b"`: ", text.as_bytes(), hint])
}

/// The value in `kv` (`KEY=value`) when its key is `key`.
pub fn value_of<'a>(kv: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    kv.strip_prefix(key)?.strip_prefix(b"=")
}

/// The process environment, as byte strings `KEY=value`.
pub struct Env {
    pub ptr: *const *const c_char,
}

impl Env {
    pub fn get(&self, key: &[u8]) -> Option<&'static [u8]> {
        self.vars().find_map(|kv| value_of(kv, key))
    }

    /// Every `KEY=value` entry.
    pub fn vars(&self) -> impl Iterator<Item = &'static [u8]> {
        let mut p = self.ptr;
        core::iter::from_fn(move || {
            // SAFETY: as in `get`.
            unsafe {
                if p.is_null() || (*p).is_null() {
                    return None;
                }
                let kv = CStr::from_ptr(*p).to_bytes();
                p = p.add(1);
                Some(kv)
            }
        })
    }

    /// Set and not empty.
    pub fn get_set(&self, key: &[u8]) -> Option<&'static [u8]> {
        self.get(key).filter(|v| !v.is_empty())
    }
}

#[no_mangle]
pub extern "C" fn main(
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: argv holds argc NUL-terminated strings, as the C runtime guarantees.
    let args: Vec<&'static [u8]> = (0..argc as usize)
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes())
        .collect();
    let env = Env { ptr: envp };
    let argv0: &[u8] = args.first().copied().unwrap_or(b"pyshrink-bundle");
    let user_args = args.get(1..).unwrap_or(&[]);

    let (fd, exe) = open_self(argv0);
    let st = sys::fstat(&fd).unwrap_or_else(|e| die_errno(exit::IO, b"failed to stat", &exe, e));
    let file_len = st.st_size as u64;
    let mut raw = [0u8; TRAILER_LEN];
    let trailer = if file_len >= TRAILER_LEN as u64 {
        sys::pread_exact(&fd, &mut raw, file_len - TRAILER_LEN as u64)
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", &exe, e));
        Trailer::decode(&raw, file_len)
    } else {
        Err(FormatError::NotABundle)
    };
    let trailer = match trailer {
        Ok(t) => t,
        Err(FormatError::NotABundle) => python_role(&exe, user_args, &env),
        Err(e) => die_format(&e, &exe),
    };

    let key = trailer.cache_key();
    let manifest = bundled_manifest(&fd, &trailer, &exe);
    // Started as `sys.executable` by a memory-runtime run of this same bundle.
    let python_child = env.get(memory::PYTHON_ROLE_VAR) == Some(&key[..]);
    let (role, runtime) = if python_child {
        (exec::Role::Python, Runtime::Memory)
    } else {
        let runtime = match env.get_set(b"PYSHRINK_RUNTIME") {
            None => manifest.runtime,
            Some(v) => Runtime::parse(v).unwrap_or_else(|| {
                die(
                    exit::IO,
                    &[b"PYSHRINK_RUNTIME `", v, b"` is not one of memory, disk, auto\n\nhint: set PYSHRINK_RUNTIME=memory, disk or auto, or unset it"],
                )
            }),
        };
        (exec::Role::Bundle { argv0 }, runtime)
    };
    let root = match runtime {
        Runtime::Memory => None,
        Runtime::Disk => Some(root::choose(&env)),
        Runtime::Auto => root::find(&env).ok(),
    };
    let Some(root) = root else {
        memory::run(&fd, &trailer, &exe, &manifest, role, user_args, &env)
    };
    let dir = sys::join(&root, &key);
    let bundle = extract::Bundle {
        fd: &fd,
        trailer: &trailer,
        exe: &exe,
        frames: (
            manifest.second_frame,
            manifest.late_frame,
            manifest.tail_frame,
        ),
    };
    // Until the late frame is in (see `extract`): the interpreter starts, the app waits.
    let mut late = None;
    let fresh = !extract::is_complete(&dir);
    if fresh {
        let verifier = extract::Verifier::new(&trailer);
        late = extract::extract(&bundle, &root, &key, false, verifier);
    } else if env.get_set(b"PYSHRINK_VERIFY") == Some(b"1") {
        // One hash serves both outcomes: it is finished before the extraction is used either way.
        let mut verifier = extract::Verifier::new(&trailer);
        if extract::tree_matches(&fd, &trailer, &dir, &mut verifier, &exe) {
            verifier.finish(&fd, &exe);
        } else {
            extract::report_mismatch(&dir);
            late = extract::extract(&bundle, &root, &key, true, verifier);
        }
    }
    drop(fd);
    // A fresh extraction's hash covered the bundle's manifest; an earlier one's copy was checked
    // when it was made (and may be all there is before its late frame is in).
    let manifest = if late.is_some() {
        manifest
    } else {
        load_manifest(&dir)
    };
    let mut start = exec::disk(&dir, &manifest);
    start.late = late;
    exec::run(start, &manifest, role, user_args, &env)
}

/// The manifest at the end of the bundle (not yet verified: the runtime it names decides how the
/// payload is checked and used; the disk runtime reads the verified copy in the extraction).
fn bundled_manifest(fd: &sys::Fd, t: &Trailer, exe: &[u8]) -> Manifest {
    let mut bytes = alloc::vec![0u8; t.manifest_len as usize];
    sys::pread_exact(fd, &mut bytes, t.manifest_offset())
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", exe, e));
    Manifest::decode(&bytes).unwrap_or_else(|e| die_format(&e, exe))
}

/// Opens the running executable: `/proc/self/exe` names the real file even when argv[0] does
/// not; a path in argv[0] is the fallback where /proc is not mounted.
fn open_self(argv0: &[u8]) -> (sys::Fd, Vec<u8>) {
    if let Ok(path) = sys::readlink(b"/proc/self/exe") {
        if let Ok(fd) = sys::open(b"/proc/self/exe", libc::O_RDONLY, 0) {
            return (fd, path);
        }
    }
    if argv0.contains(&b'/') {
        if let Ok(fd) = sys::open(argv0, libc::O_RDONLY, 0) {
            return (fd, argv0.into());
        }
    }
    die(
        exit::IO,
        &[b"cannot open the running executable (no /proc/self/exe)\n\nhint: mount /proc, or run the bundle by a path"],
    )
}

fn load_manifest(dir: &[u8]) -> Manifest {
    let path = sys::join(dir, extract::MANIFEST_FILE);
    let bytes = sys::read_file(&path, MAX_MANIFEST_LEN as usize)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", &path, e));
    Manifest::decode(&bytes).unwrap_or_else(|e| die_format(&e, &path))
}

/// The launcher copy at `<extraction>/bin/python3` runs the bundled interpreter directly.
fn python_role(exe: &[u8], user_args: &[&[u8]], env: &Env) -> ! {
    let dir = sys::parent(sys::parent(exe));
    let complete = || sys::lstat(&sys::join(dir, extract::MANIFEST_FILE)).is_ok();
    if !complete() {
        // Started by the app of a first run while that run's launcher still unpacks the tail: the
        // process doing it holds the extraction's lock until the manifest copy is written.
        let mut lock = Vec::from(dir);
        lock.extend_from_slice(extract::LOCK_SUFFIX);
        if let Ok(lock) = sys::open(&lock, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
            let _ = sys::flock_exclusive(&lock);
        }
        if !complete() {
            die_format(&FormatError::NotABundle, exe);
        }
    }
    let manifest = load_manifest(dir);
    exec::run(
        exec::disk(dir, &manifest),
        &manifest,
        exec::Role::Python,
        user_args,
        env,
    )
}

// N.B.: the precompiled `core` is built for unwinding and references these two symbols; with
// `panic = "abort"` they are never called. Defining them keeps libgcc's unwinder (which needs
// glibc's `_dl_find_object`) out of the musl link.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    sys::exit(exit::IO)
}
