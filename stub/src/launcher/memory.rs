//! The memory runtime: nothing is written to any file system.
//!
//! The verified payload is unpacked into anonymous memory files (memfd), which the process keeps
//! open across exec and which open like files by `/proc/self/fd/N`:
//! - each ELF file (the loader, the interpreter, libraries, extension modules) and the stdlib zip
//!   gets a memory file of its own, sealed against writes;
//! - every other file goes into one stored zip, built here, that `zipimport` reads. Its
//!   `pyshrink-boot/sitecustomize.pyc` (`src/python/memory_boot.py`, compiled by the bundler)
//!   installs the import finder for extension modules and lets `open()` read the bundled files by
//!   their paths; `PYSHRINK_MEMORY` tells it where everything is.
//!
//! The loader runs from its memory file with `--preload` for the interpreter's libraries (glibc
//! matches a `DT_NEEDED` name against the SONAME of an object already loaded), and CPython finds
//! its prefix from `PYTHONHOME`, the zip. `sys.executable` is the bundle itself: a run of it that
//! finds `PYSHRINK_PYTHON` set to its own cache key acts as `python3`.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use super::exec::{self, Role, Start};
use super::{die, die_errno, die_format, extract, sys, Env};
use crate::{exit, zip, ArchiveReader, EntryKind, Manifest, Source, Trailer};

/// Set for the interpreter to the bundle's cache key: a run of the same bundle that sees it was
/// started as `sys.executable` and behaves as `python3`.
pub const PYTHON_ROLE_VAR: &[u8] = b"PYSHRINK_PYTHON";
/// For the boot code: the zip's path, then `<fd>=<payload path>` per memory file of its own.
const MEMORY_VAR: &[u8] = b"PYSHRINK_MEMORY";
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Buffered zip output is written in pieces of this size.
const ZIP_BUFFER: usize = 1 << 20;

fn too_big() -> ! {
    die(
        exit::IO,
        &[b"the payload is too large for the memory runtime (a zip of at most 4 GiB and 65535 files)\n\nhint: run it with PYSHRINK_RUNTIME=disk"],
    )
}

/// Files whose `/proc/self/fd/N` paths reach Python's state (`sys.path`, `__file__`) sit at the
/// same numbers in every run, so a multiprocessing child (which takes its parent's `sys.path`)
/// finds them: the lowest free descriptors from a fixed base, clear of those inherited.
fn stable(fd: sys::Fd) -> sys::Fd {
    let limit = sys::max_fds();
    let base = if limit >= 1024 {
        960
    } else {
        (limit / 2) as i32
    };
    sys::dup_at_least(fd, base)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to move", b"a memory file", e))
}

fn fd_path(fd: &sys::Fd) -> Vec<u8> {
    let mut p = Vec::from(&b"/proc/self/fd/"[..]);
    sys::push_decimal(&mut p, fd.0 as u64);
    p
}

/// A stored zip written into a memory file as entries arrive.
struct ZipWriter {
    fd: sys::Fd,
    buf: Vec<u8>,
    flushed: u64,
    central: Vec<u8>,
    count: usize,
    /// Local header offset and running CRC of the file being written.
    open: Option<(u64, zip::Crc32)>,
    /// Directory entries written (`a/b/`): zipimport finds namespace packages by them.
    dirs: BTreeSet<Vec<u8>>,
}

impl ZipWriter {
    fn new(fd: sys::Fd) -> ZipWriter {
        ZipWriter {
            fd,
            buf: Vec::with_capacity(ZIP_BUFFER),
            flushed: 0,
            central: Vec::new(),
            count: 0,
            open: None,
            dirs: BTreeSet::new(),
        }
    }

    fn offset(&self) -> u32 {
        u32::try_from(self.flushed + self.buf.len() as u64).unwrap_or_else(|_| too_big())
    }

    fn flush(&mut self) {
        sys::write_all(self.fd.0, &self.buf)
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write", b"a memory file", e));
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
    }

    fn push(&mut self, data: &[u8]) {
        if self.buf.len() + data.len() > ZIP_BUFFER {
            self.flush();
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= ZIP_BUFFER {
            self.flush();
        }
    }

    /// Entries for `name`'s parent directories not written yet.
    fn parents(&mut self, name: &[u8]) {
        for (i, &b) in name.iter().enumerate().take(name.len().saturating_sub(1)) {
            if b == b'/' && !self.dirs.contains(&name[..=i]) {
                self.add(&name[..=i], b"");
            }
        }
    }

    /// Starts an entry; a directory entry (`a/`) already written is skipped.
    fn start_file(&mut self, name: &[u8], size: u64) {
        if self.dirs.contains(name) {
            return;
        }
        self.parents(name);
        if name.ends_with(b"/") {
            self.dirs.insert(name.into());
        }
        self.count += 1;
        if self.count > zip::MAX_ENTRIES || name.len() > usize::from(u16::MAX) {
            too_big();
        }
        let size = u32::try_from(size).unwrap_or_else(|_| too_big());
        let offset = self.offset();
        let mut header = Vec::with_capacity(30 + name.len());
        zip::local_header(&mut header, name, 0, size);
        self.push(&header);
        zip::central_record(&mut self.central, name, 0, size, offset);
        self.open = Some((u64::from(offset), zip::Crc32::new()));
    }

    fn data(&mut self, data: &[u8]) {
        if let Some((_, crc)) = &mut self.open {
            crc.update(data);
            self.push(data);
        }
    }

    /// Fills in the CRC of the file just written, in its local header and central record.
    fn end_file(&mut self, name_len: usize) {
        let Some((offset, crc)) = self.open.take() else {
            return;
        };
        let crc = crc.finish().to_le_bytes();
        let at = offset + zip::LOCAL_CRC_OFFSET as u64;
        if at >= self.flushed {
            let i = (at - self.flushed) as usize;
            self.buf[i..i + 4].copy_from_slice(&crc);
        } else {
            sys::pwrite_all(&self.fd, &crc, at)
                .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write", b"a memory file", e));
        }
        // The central record just added: its CRC sits 16 bytes in, before the name.
        let record = self.central.len() - 46 - name_len;
        self.central[record + 16..record + 20].copy_from_slice(&crc);
    }

    /// Where the file `name` written before starts, and its size.
    fn find(&self, name: &[u8]) -> Option<(u64, u64)> {
        let c = &self.central;
        let field = |at: usize| u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
        let mut at = 0;
        while at + 46 <= c.len() {
            let len = usize::from(u16::from_le_bytes([c[at + 28], c[at + 29]]));
            if &c[at + 46..at + 46 + len] == name && !name.ends_with(b"/") {
                let start = u64::from(field(at + 42)) + 30 + len as u64;
                return Some((start, u64::from(field(at + 24))));
            }
            at += 46 + len;
        }
        None
    }

    /// Adds `name` with the bytes of `target`, a file written before; false when there is none.
    fn copy(&mut self, target: &[u8], name: &[u8]) -> bool {
        let Some((mut at, size)) = self.find(target) else {
            return false;
        };
        let end = at + size;
        let mut chunk = vec![0u8; (size as usize).min(extract::CHUNK)];
        self.start_file(name, size);
        while at < end {
            let mut n = ((end - at) as usize).min(chunk.len());
            if at >= self.flushed {
                let i = (at - self.flushed) as usize;
                chunk[..n].copy_from_slice(&self.buf[i..i + n]);
            } else {
                n = n.min((self.flushed - at) as usize);
                sys::pread_exact(&self.fd, &mut chunk[..n], at).unwrap_or_else(|e| {
                    die_errno(exit::IO, b"failed to read", b"a memory file", e)
                });
            }
            self.data(&chunk[..n]);
            at += n as u64;
        }
        self.end_file(name.len());
        true
    }

    fn add(&mut self, name: &[u8], data: &[u8]) {
        self.start_file(name, data.len() as u64);
        self.data(data);
        self.end_file(name.len());
    }

    fn finish(mut self) -> sys::Fd {
        let central_offset = self.offset();
        let central = core::mem::take(&mut self.central);
        let central_len = u32::try_from(central.len()).unwrap_or_else(|_| too_big());
        self.push(&central);
        let mut end = Vec::new();
        zip::end_record(&mut end, self.count as u16, central_len, central_offset);
        self.push(&end);
        self.flush();
        self.fd
    }
}

/// Every entry of `archive` into the zip, or into a memory file of its own ([`separate`]).
fn take<S: Source>(
    archive: &mut ArchiveReader<S>,
    zip: &mut ZipWriter,
    own: &mut Vec<(Vec<u8>, sys::Fd)>,
    exe: &[u8],
) {
    let mut buf = vec![0u8; extract::CHUNK];
    while let Some(entry) = extract::next_entry(archive, exe) {
        let path = entry.path.as_bytes();
        match entry.kind {
            EntryKind::Dir { .. } => {
                let mut name = Vec::from(path);
                name.push(b'/');
                zip.add(&name, b"");
            }
            EntryKind::File { size, .. } => {
                let mut n = fill(archive, &mut buf, exe);
                if separate(path, &buf[..n]) {
                    own.push((path.into(), own_file(archive, path, &mut buf, n, exe)));
                } else {
                    zip.start_file(path, size);
                    while n > 0 {
                        zip.data(&buf[..n]);
                        n = fill(archive, &mut buf, exe);
                    }
                    zip.end_file(path.len());
                }
            }
            EntryKind::Link { target } => match own_copy(own, target.as_bytes()) {
                Some(file) => own.push((path.into(), file)),
                None if zip.copy(target.as_bytes(), path) => {}
                None => bad_link(exe),
            },
        }
    }
}

/// Another descriptor of the memory file of `target`, when it has one of its own.
fn own_copy(own: &[(Vec<u8>, sys::Fd)], target: &[u8]) -> Option<sys::Fd> {
    let (_, file) = own.iter().find(|(p, _)| p == target)?;
    Some(
        sys::dup(file)
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to copy", b"a memory file", e)),
    )
}

fn bad_link(exe: &[u8]) -> ! {
    die_format(
        &crate::FormatError::Corrupt("the payload links to a file it does not hold before"),
        exe,
    )
}

/// Reads entry data until `buf` is full or the entry ends.
fn fill<S: Source>(archive: &mut ArchiveReader<S>, buf: &mut [u8], exe: &[u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        let got = extract::read_data(archive, &mut buf[n..], exe);
        if got == 0 {
            break;
        }
        n += got;
    }
    n
}

fn memfd(name: &[u8]) -> sys::Fd {
    sys::memfd(name)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to create memory file", name, e))
}

/// The rest of the current entry (its first `n` bytes already in `buf`) in a sealed memory file
/// of its own; the stdlib zip at a stable descriptor number.
fn own_file<S: Source>(
    archive: &mut ArchiveReader<S>,
    path: &[u8],
    buf: &mut [u8],
    mut n: usize,
    exe: &[u8],
) -> sys::Fd {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let file = memfd(name);
    while n > 0 {
        sys::write_all(file.0, &buf[..n])
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write memory file for", path, e));
        n = fill(archive, buf, exe);
    }
    // Best effort: a kernel without sealing still runs the bundle.
    let _ = sys::seal(&file);
    if path.ends_with(b".zip") {
        stable(file)
    } else {
        file
    }
}

/// Whether a payload file goes into a memory file of its own rather than into the zip: ELF files,
/// which the loader maps, and the stdlib zip (`lib/pythonXY.zip`), which is one already.
fn separate(path: &[u8], head: &[u8]) -> bool {
    head.starts_with(ELF_MAGIC)
        || (path.starts_with(b"lib/python")
            && path.ends_with(b".zip")
            && !path[4..].contains(&b'/'))
}

/// `PYSHRINK_MEMORY=<zip path>\n<fd>=<path>\n...`, bytes below 0x20 and `%` as `%XX`.
fn memory_var(root: &[u8], own: &[(Vec<u8>, sys::Fd)]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::from(MEMORY_VAR);
    out.push(b'=');
    out.extend_from_slice(root);
    for (path, file) in own {
        out.push(b'\n');
        sys::push_decimal(&mut out, file.0 as u64);
        out.push(b'=');
        for &b in path {
            if b < 0x20 || b == b'%' {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            } else {
                out.push(b);
            }
        }
    }
    out
}

/// Unpacks the payload into memory and becomes the bundled interpreter.
pub fn run(
    fd: &sys::Fd,
    t: &Trailer,
    exe: &[u8],
    m: &Manifest,
    role: Role,
    user_args: &[&[u8]],
    env: &Env,
) -> ! {
    if sys::access(b"/proc/self/fd", libc::X_OK).is_err() {
        die(
            exit::IO,
            &[b"the memory runtime needs /proc (it runs the interpreter from /proc/self/fd)\n\nhint: mount /proc, or run it with PYSHRINK_RUNTIME=disk and a writable directory"],
        );
    }
    // Before the second thread starts: growing the descriptor table of a process with more
    // than one thread waits for an RCU grace period (milliseconds).
    let mut zip = ZipWriter::new(stable(memfd(b"pyshrink-files.zip")));
    let mut verifier = extract::Verifier::new(t);
    let root = fd_path(&zip.fd);
    let frames = (m.second_frame, m.late_frame);
    let (mut first, second, late) = extract::payload_parts(fd, t, frames, &mut verifier, exe);
    // The second frame holds only files that get memory files of their own.
    let worker = second.map(|span| {
        let exe = Vec::from(exe);
        extract::on_second_frame(fd, span, late.is_none(), move |archive| {
            let mut own = Vec::new();
            let mut buf = vec![0u8; extract::CHUNK];
            while let Some(entry) = extract::next_entry(archive, &exe) {
                let path = entry.path.as_bytes();
                if let EntryKind::Link { target } = &entry.kind {
                    let file = own_copy(&own, target.as_bytes()).unwrap_or_else(|| bad_link(&exe));
                    own.push((path.into(), file));
                    continue;
                }
                let n = fill(archive, &mut buf, &exe);
                if !matches!(entry.kind, EntryKind::File { .. }) || !separate(path, &buf[..n]) {
                    die_format(
                        &crate::FormatError::Corrupt(
                            "the payload's second frame holds other files",
                        ),
                        &exe,
                    );
                }
                own.push((path.into(), own_file(archive, path, &mut buf, n, &exe)));
            }
            own
        })
    });
    let mut own: Vec<(Vec<u8>, sys::Fd)> = Vec::new();
    take(&mut first, &mut zip, &mut own, exe);
    drop(first);
    // While the second thread may still be unpacking.
    verifier.finish(fd, exe);
    if let Some(span) = late {
        take(
            &mut extract::frame_archive(fd, span, true),
            &mut zip,
            &mut own,
            exe,
        );
    }
    let zip = zip.finish();
    let _ = sys::seal(&zip);
    if let Some(worker) = worker {
        own.extend(worker.join());
    }

    let find = |path: &[u8]| -> Vec<u8> {
        match own.iter().find(|(p, _)| p == path) {
            Some((_, file)) => fd_path(file),
            None => die_format(
                &crate::FormatError::Corrupt("a file the manifest names is not in the payload"),
                exe,
            ),
        }
    };
    let mut preload = Vec::new();
    for p in &m.preload {
        if !preload.is_empty() {
            preload.push(b' ');
        }
        preload.extend_from_slice(&find(p.as_bytes()));
    }
    let mut python_path = Vec::new();
    for (path, file) in &own {
        if path.ends_with(b".zip") {
            python_path.extend_from_slice(&fd_path(file));
            python_path.push(b':');
        }
    }
    python_path.extend_from_slice(&sys::join(&root, crate::MEMORY_BOOT_DIR.as_bytes()));

    let mut vars: Vec<Vec<u8>> = env
        .vars()
        .filter(|kv| {
            !kv.starts_with(b"PYTHON")
                && super::value_of(kv, PYTHON_ROLE_VAR).is_none()
                && super::value_of(kv, MEMORY_VAR).is_none()
        })
        .map(Vec::from)
        .collect();
    vars.push(memory_var(&root, &own));
    let mut var = |k: &[u8], v: &[u8]| {
        let mut kv = Vec::from(k);
        kv.push(b'=');
        kv.extend_from_slice(v);
        vars.push(kv);
    };
    var(b"PYTHONHOME", &root);
    var(b"PYTHONPATH", &python_path);
    var(PYTHON_ROLE_VAR, &t.cache_key());

    let start = Start {
        loader: find(m.loader.as_bytes()),
        loader_args: vec![b"--preload".into(), preload],
        argv0: exe.into(),
        interpreter: find(m.interpreter.as_bytes()),
        root,
        env: Some(vars),
        late: None,
    };
    // The descriptors must outlive this process image: exec keeps them (no CLOEXEC).
    for (_, file) in own {
        core::mem::forget(file);
    }
    core::mem::forget(zip);
    exec::run(start, m, role, user_args, env)
}
