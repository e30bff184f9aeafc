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
//! A late frame is unpacked while the interpreter starts, as on disk: its memory files are made
//! before (the manifest says how many), a process of its own fills them and finishes the zip,
//! and the boot code waits for it before it reads the zip. Until then the boot code itself comes
//! from a zip of its own. The tail, the late frame's last part, is unpacked while the app runs,
//! as on disk: the boot code makes an import of one of its modules wait for its memory files.
//!
//! The loader runs from its memory file with `--preload` for the interpreter's libraries (glibc
//! matches a `DT_NEEDED` name against the SONAME of an object already loaded), and CPython finds
//! its prefix from `PYTHONHOME`, the zip. `sys.executable` is the bundle itself: a run of it that
//! finds `PYSHRINK_PYTHON` set to its own cache key acts as `python3`.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use core::cell::Cell;
use core::ffi::c_int;

use super::exec::{self, Role, Start};
use super::{die, die_errno, die_format, extract, sys, Env};
use crate::{
    exit, memory_file_of_its_own, zip, ArchiveReader, EntryKind, Manifest, Source, Trailer,
    MEMORY_BOOT_DIR, TAIL_LIST_FILE,
};

/// Set for the interpreter to the bundle's cache key: a run of the same bundle that sees it was
/// started as `sys.executable` and behaves as `python3`.
pub const PYTHON_ROLE_VAR: &[u8] = b"PYSHRINK_PYTHON";
/// For the boot code: the zip's path, then the late frame's pipe and listing when it has one, then
/// `<fd>=<payload path>` per memory file of its own (see `memory_var`).
const MEMORY_VAR: &[u8] = b"PYSHRINK_MEMORY";
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

fn fd_path(fd: c_int) -> Vec<u8> {
    let mut p = Vec::from(&b"/proc/self/fd/"[..]);
    sys::push_decimal(&mut p, fd as u64);
    p
}

/// A memory file kept open for the interpreter: its number, which outlives this process image.
fn keep(file: sys::Fd) -> c_int {
    let raw = file.0;
    core::mem::forget(file);
    raw
}

/// A stored zip written into a memory file as entries arrive. The memory file stays open (for the
/// interpreter, and in the process that unpacks the late frame when that one finishes it).
struct ZipWriter {
    fd: c_int,
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
            fd: keep(fd),
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
        sys::write_all(self.fd, &self.buf)
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
            sys::pwrite_all(&sys::Fd::borrowed(self.fd), &crc, at)
                .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write", b"a memory file", e));
        }
        // The central record just added: its CRC sits 16 bytes in, before the name.
        let record = self.central.len() - 46 - name_len;
        self.central[record + 16..record + 20].copy_from_slice(&crc);
    }

    /// Each file written before: its name, where its bytes start, and its size.
    fn entries(&self) -> impl Iterator<Item = (&[u8], u64, u64)> {
        let c = &self.central;
        let field = |at: usize| u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
        let mut at = 0;
        core::iter::from_fn(move || {
            while at + 46 <= c.len() {
                let len = usize::from(u16::from_le_bytes([c[at + 28], c[at + 29]]));
                let name = &c[at + 46..at + 46 + len];
                let start = u64::from(field(at + 42)) + 30 + len as u64;
                let size = u64::from(field(at + 24));
                at += 46 + len;
                if !name.ends_with(b"/") {
                    return Some((name, start, size));
                }
            }
            None
        })
    }

    /// Where the file `name` written before starts, and its size.
    fn find(&self, name: &[u8]) -> Option<(u64, u64)> {
        self.entries()
            .find(|(n, _, _)| *n == name)
            .map(|(_, start, size)| (start, size))
    }

    /// How many lines the file `name` written before has; `None`: there is no such file.
    fn lines_of(&self, name: &[u8]) -> Option<usize> {
        let (mut at, size) = self.find(name)?;
        let end = at + size;
        let mut buf = [0u8; 4096];
        let mut lines = 0;
        while at < end {
            let want = (end - at).min(buf.len() as u64) as usize;
            let n = self.read_at(at, &mut buf[..want]);
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            at += n as u64;
        }
        Some(lines)
    }

    /// Bytes written at `at`, into `out`: how many (at most up to what is flushed, or buffered).
    fn read_at(&self, at: u64, out: &mut [u8]) -> usize {
        if at >= self.flushed {
            let i = (at - self.flushed) as usize;
            let n = out.len().min(self.buf.len() - i);
            out[..n].copy_from_slice(&self.buf[i..i + n]);
            return n;
        }
        let n = out.len().min((self.flushed - at) as usize);
        sys::pread_exact(&sys::Fd::borrowed(self.fd), &mut out[..n], at)
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", b"a memory file", e));
        n
    }

    /// Adds `name` with the bytes of file `target` of `from` (this zip when `None`); false when
    /// there is no such file.
    fn copy(&mut self, from: Option<&ZipWriter>, target: &[u8], name: &[u8]) -> bool {
        let Some((mut at, size)) = from.unwrap_or(self).find(target) else {
            return false;
        };
        let end = at + size;
        let mut chunk = vec![0u8; (size as usize).min(extract::CHUNK)];
        self.start_file(name, size);
        while at < end {
            let want = ((end - at) as usize).min(chunk.len());
            let n = from.unwrap_or(self).read_at(at, &mut chunk[..want]);
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

    /// Writes the central directory and seals the memory file (best effort: a kernel without
    /// sealing still runs the bundle); returns its number.
    fn finish(mut self) -> c_int {
        let central_offset = self.offset();
        let central = core::mem::take(&mut self.central);
        let central_len = u32::try_from(central.len()).unwrap_or_else(|_| too_big());
        self.push(&central);
        let mut end = Vec::new();
        zip::end_record(&mut end, self.count as u16, central_len, central_offset);
        self.push(&end);
        self.flush();
        let _ = sys::seal(&sys::Fd::borrowed(self.fd));
        self.fd
    }
}

/// Memory files kept open for the interpreter, by payload path.
type Own = Vec<(Vec<u8>, c_int)>;

/// Every entry of `archive` into the zip, or into a memory file of its own
/// ([`memory_file_of_its_own`]), which `new_file` gives for the entry's path.
fn take<S: Source>(
    archive: &mut ArchiveReader<S>,
    zip: &mut ZipWriter,
    own: &mut Own,
    new_file: &mut dyn FnMut(&[u8]) -> sys::Fd,
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
                if memory_file_of_its_own(path, &buf[..n]) {
                    let file = own_file(archive, path, new_file(path), &mut buf, n, exe);
                    own.push((path.into(), file));
                } else {
                    zip.start_file(path, size);
                    while n > 0 {
                        zip.data(&buf[..n]);
                        n = fill(archive, &mut buf, exe);
                    }
                    zip.end_file(path.len());
                }
            }
            EntryKind::Link { target } => match own_of(own, target.as_bytes()) {
                Some(file) => own.push((path.into(), file)),
                None if zip.copy(None, target.as_bytes(), path) => {}
                None => bad_link(exe),
            },
        }
    }
}

/// Every entry of `archive` into a memory file of its own, made here (`corrupt`: the error when
/// it holds any other kind of file). `each` gets each file as it is complete.
fn take_own<S: Source>(
    archive: &mut ArchiveReader<S>,
    own: &mut Own,
    new_file: &mut dyn FnMut(&[u8]) -> sys::Fd,
    corrupt: &'static str,
    each: &mut dyn FnMut(&[u8], c_int),
    exe: &[u8],
) {
    let mut buf = vec![0u8; extract::CHUNK];
    while let Some(entry) = extract::next_entry(archive, exe) {
        let path = entry.path.as_bytes();
        let file = match &entry.kind {
            EntryKind::Link { target } => {
                own_of(own, target.as_bytes()).unwrap_or_else(|| bad_link(exe))
            }
            EntryKind::File { .. } => {
                let n = fill(archive, &mut buf, exe);
                if !memory_file_of_its_own(path, &buf[..n]) {
                    die_format(&crate::FormatError::Corrupt(corrupt), exe);
                }
                own_file(archive, path, new_file(path), &mut buf, n, exe)
            }
            EntryKind::Dir { .. } => die_format(&crate::FormatError::Corrupt(corrupt), exe),
        };
        own.push((path.into(), file));
        each(path, file);
    }
}

/// The memory file of `target`, when it has one of its own: a hard link shares it.
fn own_of(own: &Own, target: &[u8]) -> Option<c_int> {
    own.iter().find(|(p, _)| p == target).map(|&(_, file)| file)
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

/// The rest of the current entry (its first `n` bytes already in `buf`) into `file`, sealed; the
/// stdlib zip at a stable descriptor number.
fn own_file<S: Source>(
    archive: &mut ArchiveReader<S>,
    path: &[u8],
    file: sys::Fd,
    buf: &mut [u8],
    mut n: usize,
    exe: &[u8],
) -> c_int {
    while n > 0 {
        sys::write_all(file.0, &buf[..n])
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write memory file for", path, e));
        n = fill(archive, buf, exe);
    }
    // Best effort: a kernel without sealing still runs the bundle.
    let _ = sys::seal(&file);
    keep(if path.ends_with(b".zip") {
        stable(file)
    } else {
        file
    })
}

/// A new memory file for payload file `path`, named after it.
fn memory_file_for(path: &[u8]) -> sys::Fd {
    memfd(path.rsplit(|&b| b == b'/').next().unwrap_or(path))
}

/// `PYSHRINK_MEMORY=<zip path>\n[late=<pipe>,<listing>\n]<fd>=<path>\n...`, bytes below 0x20 and
/// `%` as `%XX`. With a late frame, `<pipe>` gives `1` once it is unpacked (empty: it is), or `2`
/// once the files before its tail are, then a `+` for each file of the tail; the memory file
/// `<listing>` holds the `<fd>=<path>` lines of the files that are in.
fn memory_var(root: &[u8], late: Option<&Late>, own: &Own) -> Vec<u8> {
    let mut out = Vec::from(MEMORY_VAR);
    out.push(b'=');
    out.extend_from_slice(root);
    if let Some(late) = late {
        out.extend_from_slice(b"\nlate=");
        if let Some(done) = &late.done {
            sys::push_decimal(&mut out, done.0 as u64);
        }
        out.push(b',');
        sys::push_decimal(&mut out, late.listing as u64);
    }
    for (path, file) in own {
        out.push(b'\n');
        push_file(&mut out, *file, path);
    }
    out
}

/// A `<fd>=<path>` line (see [`push_file`]) for each entry: the listing's form.
fn listing_lines<'a>(entries: impl IntoIterator<Item = (&'a [u8], c_int)>) -> Vec<u8> {
    let mut lines = Vec::new();
    for (path, file) in entries {
        push_file(&mut lines, file, path);
        lines.push(b'\n');
    }
    lines
}

/// `<fd>=<path>`, bytes below 0x20 and `%` as `%XX`.
fn push_file(out: &mut Vec<u8>, file: c_int, path: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    sys::push_decimal(out, file as u64);
    out.push(b'=');
    for &b in path {
        if b < 0x20 || b == b'%' {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

/// The late frame, being unpacked by a process of its own.
struct Late {
    /// Readable once that process is done (see `extract::in_background`); `None`: it is.
    done: Option<sys::Fd>,
    /// The memory file in which it lists the memory files of the late frame as they are in.
    listing: c_int,
}

/// Unpacks the late frame (`spans`: its part before the tail, and the tail) in a process of its
/// own, into the `count` memory files made here first (what the manifest's `late_memory_files`
/// says) and into `zip`, which it finishes. With a tail, that process writes `2` on its pipe once
/// the files before the tail are in, then unpacks the tail into memory files of their own, adding
/// each to the listing as it is complete and writing a `+`.
fn unpack_late(
    fd: &sys::Fd,
    spans: (extract::Span, Option<extract::Span>),
    mut zip: ZipWriter,
    mut own: Own,
    count: u64,
    exe: &[u8],
) -> Late {
    // One at a time: a count no descriptor table holds fails at its limit, cleanly.
    let mut made: Vec<c_int> = Vec::new();
    for _ in 0..count {
        made.push(keep(memfd(b"pyshrink-late")));
    }
    let listing = keep(memfd(b"pyshrink-late-files"));
    let (raw, exe) = (fd.0, Vec::from(exe));
    let done = extract::in_background(move |tell| {
        let corrupt = |what| -> ! { die_format(&crate::FormatError::Corrupt(what), &exe) };
        let list = |lines: &[u8]| {
            sys::write_all(listing, lines)
                .unwrap_or_else(|e| die_errno(exit::IO, b"failed to write", b"a memory file", e))
        };
        let bundle = sys::Fd::borrowed(raw);
        let early = own.len();
        let used = Cell::new(0);
        let mut next_file = |path: &[u8]| match made.get(used.get()) {
            // Its path must reach the interpreter before it starts (PYTHONPATH).
            _ if path.ends_with(b".zip") => corrupt("the stdlib zip is in the late frame"),
            Some(&file) => {
                used.set(used.get() + 1);
                sys::Fd(file)
            }
            None => corrupt("the late frame holds more memory files than the manifest says"),
        };
        let (late, tail) = spans;
        if late.1 > 0 {
            let mut archive = extract::frame_archive(&bundle, late, tail.is_none());
            take(&mut archive, &mut zip, &mut own, &mut next_file, &exe);
        }
        // Each file of the tail gets one of the memory files left (its list says how many), so a
        // miscount shows here, before the app starts.
        let needed = match tail {
            Some(_) => zip
                .lines_of(TAIL_LIST_FILE.as_bytes())
                .unwrap_or_else(|| corrupt("the payload's tail has no list")),
            None => 0,
        };
        let left = made.len() - used.get();
        if left < needed {
            corrupt("the late frame holds more memory files than the manifest says");
        }
        if left > needed {
            corrupt("the late frame holds fewer memory files than the manifest says");
        }
        zip.finish();
        list(&listing_lines(
            own[early..].iter().map(|(p, f)| (&p[..], *f)),
        ));
        if let Some(tail) = tail {
            let _ = sys::write_all(tell.0, b"2");
            let corrupt = "the payload's tail holds other files";
            let mut archive = extract::frame_archive(&bundle, tail, true);
            take_own(
                &mut archive,
                &mut own,
                &mut next_file,
                corrupt,
                &mut |path, file| {
                    list(&listing_lines([(path, file)]));
                    let _ = sys::write_all(tell.0, b"+");
                },
                &exe,
            );
        }
    });
    Late { done, listing }
}

/// A zip of its own for the boot code (the memory runtime's `sitecustomize`), copied from `zip`:
/// the interpreter imports it before the late frame, and with it `zip`, is complete.
fn boot_zip(zip: &ZipWriter) -> c_int {
    let mut boot = ZipWriter::new(stable(memfd(b"pyshrink-boot.zip")));
    let mut dir = Vec::from(MEMORY_BOOT_DIR.as_bytes());
    dir.push(b'/');
    for (name, _, _) in zip.entries().filter(|(name, _, _)| name.starts_with(&dir)) {
        boot.copy(Some(zip), name, name);
    }
    boot.finish()
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
    let root = fd_path(zip.fd);
    let frames = (m.second_frame, m.late_frame, m.tail_frame);
    let (mut first, second, late, tail) = extract::payload_parts(fd, t, frames, &mut verifier, exe);
    // The second frame holds only files that get memory files of their own.
    let worker = second.map(|span| {
        let exe = Vec::from(exe);
        extract::on_second_frame(fd, span, late.is_none(), move |archive| {
            let mut own = Own::new();
            let corrupt = "the payload's second frame holds other files";
            take_own(
                archive,
                &mut own,
                &mut memory_file_for,
                corrupt,
                &mut |_, _| {},
                &exe,
            );
            own
        })
    });
    let mut own = Own::new();
    take(&mut first, &mut zip, &mut own, &mut memory_file_for, exe);
    drop(first);
    // While the second thread may still be unpacking.
    verifier.finish(fd, exe);
    if let Some(worker) = worker {
        own.extend(worker.join());
    }
    let boot = boot_zip(&zip);
    let late = match late {
        Some(span) => Some(unpack_late(
            fd,
            (span, tail),
            zip,
            own.clone(),
            m.late_memory_files,
            exe,
        )),
        None => {
            zip.finish();
            None
        }
    };

    let find = |path: &[u8]| -> Vec<u8> {
        match own_of(&own, path) {
            Some(file) => fd_path(file),
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
            python_path.extend_from_slice(&fd_path(*file));
            python_path.push(b':');
        }
    }
    python_path.extend_from_slice(&sys::join(&fd_path(boot), MEMORY_BOOT_DIR.as_bytes()));

    let mut vars: Vec<Vec<u8>> = env
        .vars()
        .filter(|kv| {
            !kv.starts_with(b"PYTHON")
                && super::value_of(kv, PYTHON_ROLE_VAR).is_none()
                && super::value_of(kv, MEMORY_VAR).is_none()
        })
        .map(Vec::from)
        .collect();
    vars.push(memory_var(&root, late.as_ref(), &own));
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
    // The pipe must outlive this process image: exec keeps it (no CLOEXEC).
    core::mem::forget(late);
    exec::run(start, m, role, user_args, env)
}
