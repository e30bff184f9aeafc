//! Where extractions live.
//!
//! In order: `$PYSHRINK_EXTRACT_DIR`; `$XDG_CACHE_HOME/pyshrink` or `$HOME/.cache/pyshrink`;
//! `$TMPDIR/pyshrink-<uid>`; `/tmp/pyshrink-<uid>` (creating `/tmp` when missing, as in an empty
//! `FROM scratch` image). A candidate is used only if it is a real directory (not a symlink) owned
//! by this user, not writable by group or others, on a file system that is neither read-only nor
//! mounted noexec (the bundled loader and libraries are mapped executable from there).

use alloc::vec::Vec;

use super::{die, sys, Env};
use crate::exit;

/// Picks the extraction root, creating it (mode 0700) when needed, or exits with an error that
/// lists every candidate and why it was refused.
pub fn choose(env: &Env) -> Vec<u8> {
    find(env).unwrap_or_else(|tried| {
        die(
            exit::NO_EXTRACT_DIR,
            &[b"no usable directory to extract the bundle into; tried:", &tried,
              b"\n\nhint: run it with PYSHRINK_RUNTIME=memory, give the container a writable exec-capable /tmp (`--tmpfs /tmp:exec`), or set PYSHRINK_EXTRACT_DIR to a writable directory"],
        )
    })
}

/// The extraction root, or the list of candidates tried and why each was refused. An unusable
/// `PYSHRINK_EXTRACT_DIR` is an error in any case: the user asked for that directory.
pub fn find(env: &Env) -> Result<Vec<u8>, Vec<u8>> {
    let uid = sys::getuid();
    let mut tried: Vec<u8> = Vec::new();
    if let Some(dir) = env.get_set(b"PYSHRINK_EXTRACT_DIR") {
        match usable(dir, uid, true) {
            Ok(()) => return Ok(dir.into()),
            Err(why) => {
                die(
                    exit::NO_EXTRACT_DIR,
                    &[b"PYSHRINK_EXTRACT_DIR `", dir, b"` cannot be used: ", why.as_bytes(),
                      b"\n\nhint: point PYSHRINK_EXTRACT_DIR at a private, writable directory on an exec-capable file system"],
                );
            }
        }
    }
    let mut candidates: Vec<(Vec<u8>, bool)> = Vec::new();
    if let Some(cache) = env.get_set(b"XDG_CACHE_HOME") {
        candidates.push((sys::join(cache, b"pyshrink"), true));
    } else if let Some(home) = env.get_set(b"HOME") {
        candidates.push((sys::join(home, b".cache/pyshrink"), true));
    }
    let mut per_user = Vec::from(&b"pyshrink-"[..]);
    sys::push_decimal(&mut per_user, u64::from(uid));
    if let Some(tmp) = env.get_set(b"TMPDIR") {
        candidates.push((sys::join(tmp, &per_user), false));
    }
    // SAFETY-free best effort: an empty image has no /tmp; 1777 like a real one.
    if sys::lstat(b"/tmp").is_err() && sys::mkdir(b"/tmp", 0o1777).is_ok() {
        let p = sys::cpath(b"/tmp");
        // SAFETY: `p` is NUL-terminated; the umask must not narrow the sticky, world-writable mode.
        unsafe { libc::chmod(p.as_ptr().cast(), 0o1777) };
    }
    candidates.push((sys::join(b"/tmp", &per_user), false));
    for (dir, make_parents) in &candidates {
        match usable(dir, uid, *make_parents) {
            Ok(()) => return Ok(dir.clone()),
            Err(why) => {
                tried.extend_from_slice(b"\n  ");
                tried.extend_from_slice(dir);
                tried.extend_from_slice(b": ");
                tried.extend_from_slice(why.as_bytes());
            }
        }
    }
    Err(tried)
}

/// Creates `dir` (and with `parents`, its missing ancestors) with mode 0700, then checks it.
fn usable(dir: &[u8], uid: u32, parents: bool) -> Result<(), &'static str> {
    if sys::lstat(dir).is_err() {
        if parents {
            make_parents(sys::parent(dir));
        }
        match sys::mkdir(dir, 0o700) {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(libc::EROFS) => return Err("read-only file system"),
            Err(libc::EACCES | libc::EPERM) => return Err("cannot create it (permission denied)"),
            Err(libc::ENOENT) => return Err("its parent directory does not exist"),
            Err(_) => return Err("cannot create it"),
        }
    }
    private_dir(dir, uid)?;
    let flags = sys::statvfs_flags(dir).map_err(|_| "cannot stat its file system")?;
    if flags & libc::ST_RDONLY != 0 {
        return Err("read-only file system");
    }
    if flags & libc::ST_NOEXEC != 0 {
        return Err("file system mounted noexec");
    }
    sys::access(dir, libc::W_OK | libc::X_OK).map_err(|_| "not writable")?;
    Ok(())
}

/// `dir` is a real directory (not a symlink) owned by `uid` that no one else can write to: the
/// only kind of directory the launcher extracts into or trusts an extraction in.
pub fn private_dir(dir: &[u8], uid: u32) -> Result<(), &'static str> {
    let st = sys::lstat(dir).map_err(|_| "cannot stat it")?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {}
        libc::S_IFLNK => return Err("it is a symbolic link (refused)"),
        _ => return Err("not a directory"),
    }
    if st.st_uid != uid {
        return Err("owned by another user (refused)");
    }
    if st.st_mode & 0o022 != 0 {
        return Err("writable by group or others (refused)");
    }
    Ok(())
}

fn make_parents(dir: &[u8]) {
    if dir.len() <= 1 || sys::lstat(dir).is_ok() {
        return;
    }
    make_parents(sys::parent(dir));
    let _ = sys::mkdir(dir, 0o700);
}
