//! Verifying and extracting the payload.
//!
//! The payload is unpacked by two threads, one per zstd frame; the first also computes the content
//! hash over the whole payload and manifest, as it reads them. An extraction is renamed into place
//! (and run) only once the hash matched.
//! Extraction follows check / lock / check again / write into `<hash>.work` / rename, and the
//! manifest copy is the last file written, so a directory named `<hash>` that holds it is
//! complete: a run killed half-way leaves a work dir, or an extraction without its manifest
//! copy, which the next run (holding the lock, so no one else is writing it) removes.
//!
//! A late frame (files the app needs, the interpreter's start does not) is unpacked after the
//! rename, in a process of its own, while the interpreter starts; the app waits for it. The same
//! process then unpacks the tail (extension modules and the libraries only they need) while the
//! app runs, into empty files it made before the late frame, and says on a pipe when each one is
//! complete; the app's import of such a module waits for its file and its libraries.

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use sha2::Digest;
use zstd_sys as zs;

use super::{die_errno, die_format, sys};
use crate::{
    content_hasher, exit, ArchiveReader, EntryKind, FormatError, Frames, Source, Trailer,
    TAIL_LIST_FILE,
};

/// The manifest, copied into the extraction: the warm path and the `python3` role read it there.
pub const MANIFEST_FILE: &[u8] = b"pyshrink.manifest";
/// `<key>` + this, beside the extraction: the lock held while it is being written.
pub const LOCK_SUFFIX: &[u8] = b".lock";
/// Where the launcher copy acting as `sys.executable` goes (the manifest's `python_exe`).
const PYTHON_EXE: &[u8] = b"bin/python3";
pub const CHUNK: usize = 256 * 1024;

/// A finished extraction: a real directory of ours that nobody else can write to, holding the
/// manifest copy (the last file put there).
pub fn is_complete(dir: &[u8]) -> bool {
    super::root::private_dir(dir, sys::getuid()).is_ok()
        && sys::lstat(&sys::join(dir, MANIFEST_FILE)).is_ok()
}

/// Reads `len` bytes of the bundle from `offset`, in chunks, handing what it reads to the content
/// hash when one is attached.
pub struct Section<'a> {
    fd: &'a sys::Fd,
    offset: u64,
    left: u64,
    verifier: Option<&'a mut Verifier>,
}

impl<'a> Section<'a> {
    fn new(
        fd: &'a sys::Fd,
        offset: u64,
        left: u64,
        verifier: Option<&'a mut Verifier>,
    ) -> Section<'a> {
        Section {
            fd,
            offset,
            left,
            verifier,
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, sys::Errno> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n == 0 {
            return Ok(0);
        }
        sys::pread_exact(self.fd, &mut buf[..n], self.offset)?;
        if let Some(v) = self.verifier.as_deref_mut() {
            v.feed(self.offset, &buf[..n]);
        }
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }

    /// Hands each chunk of the rest of the section to `f`, in order.
    fn for_each_chunk(&mut self, mut f: impl FnMut(&[u8])) -> Result<(), sys::Errno> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match self.read_some(&mut buf)? {
                0 => return Ok(()),
                n => f(&buf[..n]),
            }
        }
    }
}

/// Zstd frames of the payload, decompressed as they are read, one after the other.
pub struct Decoded<'a> {
    section: Section<'a>,
    stream: *mut zs::ZSTD_DStream,
    input: Vec<u8>,
    pos: usize,
    len: usize,
    finished: bool,
}

/// Largest window a payload may use: bounds the decoder's memory whatever the frame header says
/// (the bundler writes 2^23).
const MAX_WINDOW_LOG: i32 = 24;

extern "C" {
    // zstd.h, static-linking-only API (the bindings leave it out; the library has it).
    fn ZSTD_createDStream_advanced(mem: decoder_memory::CustomMem) -> *mut zs::ZSTD_DStream;
}

/// The decoder's memory. Every byte unpacked passes through its window buffer, 8 MiB per thread
/// (the bundler's 2^23 window): in 4 KiB pages, some 2,000 page faults per frame, and as many
/// pages to free. Allocations of 2 MiB or more are mapped on a 2 MiB boundary and advised for
/// transparent huge pages (nothing changes where the kernel has them off); smaller ones go to
/// malloc. Cold starts: hello 26.9 -> 25.4 ms, cli 87.7 -> 85.6, crypto 98.3 -> 95.1.
mod decoder_memory {
    use core::ffi::c_void;

    /// `ZSTD_customMem`.
    #[repr(C)]
    pub struct CustomMem {
        alloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
        free: unsafe extern "C" fn(*mut c_void, *mut c_void),
        opaque: *mut c_void,
    }

    pub const DECODER_MEMORY: CustomMem = CustomMem {
        alloc,
        free,
        opaque: core::ptr::null_mut(),
    };

    const HUGE_PAGE: usize = 2 << 20;
    /// Before each block: the length of its mapping and the mapping's start, or 0 for malloc's.
    const HEADER: usize = 16;

    /// Memory for `size` bytes, aligned to 16, or null.
    unsafe extern "C" fn alloc(_: *mut c_void, size: usize) -> *mut c_void {
        if size < HUGE_PAGE {
            let Some(len) = size.checked_add(HEADER) else {
                return core::ptr::null_mut();
            };
            // SAFETY: malloc's block is 16-aligned and HEADER bytes longer than the caller's.
            let block = libc::malloc(len).cast::<usize>();
            if block.is_null() {
                return block.cast();
            }
            block.write(0);
            return block.cast::<u8>().add(HEADER).cast();
        }
        let Some(len) = size.checked_add(HEADER + HUGE_PAGE) else {
            return core::ptr::null_mut();
        };
        let map = libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if map == libc::MAP_FAILED {
            return core::ptr::null_mut();
        }
        // The first 2 MiB boundary that leaves room for the header: `size` bytes still fit.
        let base = map as usize;
        let start = (base + HEADER + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let whole_pages = (base + len - start) & !(HUGE_PAGE - 1);
        // Advice only: refused or not, the memory is there.
        libc::madvise(start as *mut c_void, whole_pages, libc::MADV_HUGEPAGE);
        let header = (start - HEADER) as *mut usize;
        header.write(len);
        header.add(1).write(base);
        start as *mut c_void
    }

    /// Frees what `alloc` returned (or nothing, for null).
    unsafe extern "C" fn free(_: *mut c_void, p: *mut c_void) {
        if p.is_null() {
            return;
        }
        let header = p.cast::<u8>().sub(HEADER).cast::<usize>();
        match header.read() {
            0 => libc::free(header.cast()),
            len => {
                libc::munmap(header.add(1).read() as *mut c_void, len);
            }
        }
    }
}

impl<'a> Decoded<'a> {
    fn new(section: Section<'a>) -> Decoded<'a> {
        // SAFETY: the functions of `DECODER_MEMORY` keep ZSTD_customMem's contract (see
        // `decoder_memory`); null is checked below.
        let stream = unsafe { ZSTD_createDStream_advanced(decoder_memory::DECODER_MEMORY) };
        if stream.is_null() {
            super::die(exit::IO, &[b"out of memory"]);
        }
        // SAFETY: `stream` is a valid context.
        unsafe {
            zs::ZSTD_DCtx_setParameter(
                stream,
                zs::ZSTD_dParameter::ZSTD_d_windowLogMax,
                MAX_WINDOW_LOG,
            );
            // ZSTD_d_forceIgnoreChecksum (zstd.h, experimental): the frames' XXH64 of what they
            // decode to is not computed. The content hash already covers every payload byte
            // before anything unpacked is used, and skipping it saves about 1 ms per 16 MB.
            zs::ZSTD_DCtx_setParameter(stream, zs::ZSTD_dParameter::ZSTD_d_experimentalParam3, 1);
        }
        Decoded {
            section,
            stream,
            input: vec![0u8; CHUNK],
            pos: 0,
            len: 0,
            finished: false,
        }
    }
}

impl Drop for Decoded<'_> {
    fn drop(&mut self) {
        // SAFETY: the context was created by ZSTD_createDStream and is freed once.
        unsafe { zs::ZSTD_freeDStream(self.stream) };
    }
}

impl Source for Decoded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        const BAD: FormatError = FormatError::Corrupt("payload does not decompress");
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.len {
                self.len = self.section.read_some(&mut self.input).map_err(|_| BAD)?;
                self.pos = 0;
                if self.len == 0 {
                    return Err(FormatError::Corrupt("payload ends inside its zstd frame"));
                }
            }
            let mut input = zs::ZSTD_inBuffer {
                src: self.input.as_ptr().cast(),
                size: self.len,
                pos: self.pos,
            };
            let mut output = zs::ZSTD_outBuffer {
                dst: buf.as_mut_ptr().cast(),
                size: buf.len(),
                pos: 0,
            };
            // SAFETY: both buffers describe live memory of the stated sizes; the context is valid.
            let ret = unsafe { zs::ZSTD_decompressStream(self.stream, &mut output, &mut input) };
            // SAFETY: pure function of the return code.
            if unsafe { zs::ZSTD_isError(ret) } != 0 {
                return Err(BAD);
            }
            self.pos = input.pos;
            // The end of a frame; another may follow (a split payload read in one go).
            if ret == 0 && self.pos == self.len && self.section.left == 0 {
                self.finished = true;
            }
            if output.pos > 0 || self.finished {
                return Ok(output.pos);
            }
        }
    }
}

/// The next entry of the payload; a damaged archive ends the process with the corrupt code.
pub fn next_entry<S: crate::Source>(
    archive: &mut ArchiveReader<S>,
    exe: &[u8],
) -> Option<crate::ArchiveEntry> {
    archive.next_entry().unwrap_or_else(|e| die_format(&e, exe))
}

/// The next data of the current entry (0 at its end); a damaged archive ends the process with
/// the corrupt code.
pub fn read_data<S: crate::Source>(
    archive: &mut ArchiveReader<S>,
    buf: &mut [u8],
    exe: &[u8],
) -> usize {
    archive
        .read_data(buf)
        .unwrap_or_else(|e| die_format(&e, exe))
}

/// The whole payload archive, read in sequence; what is read goes into `verifier`'s hash.
pub fn payload_archive<'a>(
    fd: &'a sys::Fd,
    t: &Trailer,
    verifier: &'a mut Verifier,
) -> ArchiveReader<Decoded<'a>> {
    let section = Section::new(fd, t.payload_offset(), t.payload_len, Some(verifier));
    ArchiveReader::new(Decoded::new(section))
}

/// A range of the bundle file: (offset, length).
pub type Span = (u64, u64);

/// The payload's frames, from the manifest's `second_frame`, `late_frame` and `tail_frame`: the
/// archive of the first frame (what it reads goes into `verifier`'s hash), and where the second
/// frame, the late frame's part before the tail (empty when the tail is all of it) and the tail
/// are, when the payload has them. Each frame ends at an entry boundary; only the last one holds
/// the end of the archive.
pub fn payload_parts<'a>(
    fd: &'a sys::Fd,
    t: &Trailer,
    frames: (u64, u64, u64),
    verifier: &'a mut Verifier,
    exe: &[u8],
) -> Parts<'a> {
    let (second, late, tail) = frames;
    let len = t.payload_len;
    let frames = Frames::of(second, late, tail, len).unwrap_or_else(|e| die_format(&e, exe));
    let at = |(from, to): (u64, u64)| (t.payload_offset() + from, to - from);
    let (offset, first_len) = at(frames.first);
    let section = Section::new(fd, offset, first_len, Some(verifier));
    let first = section_archive(section, frames.first.1 == len);
    (
        first,
        frames.second.map(at),
        frames.late.map(at),
        frames.tail.map(at),
    )
}

/// What [`payload_parts`] returns: the first frame's archive, then the spans of the second frame,
/// of the late frame before the tail, and of the tail.
pub type Parts<'a> = (
    ArchiveReader<Decoded<'a>>,
    Option<Span>,
    Option<Span>,
    Option<Span>,
);

/// The archive of one frame at `span`; `last` when it holds the end of the archive.
pub fn frame_archive<'a>(fd: &'a sys::Fd, span: Span, last: bool) -> ArchiveReader<Decoded<'a>> {
    section_archive(Section::new(fd, span.0, span.1, None), last)
}

/// The archive in `section`'s frames; `last` when they hold the end of the archive.
fn section_archive(section: Section<'_>, last: bool) -> ArchiveReader<Decoded<'_>> {
    let decoded = Decoded::new(section);
    if last {
        ArchiveReader::new(decoded)
    } else {
        ArchiveReader::part(decoded)
    }
}

/// Runs `job` on a second thread over the archive of the payload's second frame at `span` of the
/// bundle `fd`, which must stay open until the thread is joined; `last` as in [`frame_archive`].
pub fn on_second_frame<T: Send + 'static>(
    fd: &sys::Fd,
    span: Span,
    last: bool,
    job: impl FnOnce(&mut ArchiveReader<Decoded<'_>>) -> T + Send + 'static,
) -> sys::Thread<T> {
    let raw = fd.0;
    sys::spawn(move || {
        let fd = sys::Fd::borrowed(raw);
        let mut archive = frame_archive(&fd, span, last);
        job(&mut archive)
    })
}

/// The content hash of payload and manifest. The thread that unpacks the start of the payload
/// hashes the compressed bytes as it reads them (they are in its cache already), and
/// [`Verifier::finish`] hashes whatever that left, while or after the second frame is unpacked;
/// the bundler gives that thread less to unpack for it. Unpacked files are only put to use after
/// `finish` (an extraction is renamed into place, the memory runtime execs), which exits with the
/// corrupt code on a mismatch.
pub struct Verifier {
    hasher: sha2::Sha256,
    /// The file offset up to which the hash has consumed the bundle.
    next: u64,
    end: u64,
    expected: [u8; 32],
}

impl Verifier {
    pub fn new(t: &Trailer) -> Verifier {
        Verifier {
            hasher: content_hasher(),
            next: t.payload_offset(),
            end: t.manifest_offset() + t.manifest_len,
            expected: t.content_sha256,
        }
    }

    /// Takes bytes read from the bundle at `offset` into the hash when they continue it.
    fn feed(&mut self, offset: u64, bytes: &[u8]) {
        if offset == self.next {
            let n = (bytes.len() as u64).min(self.end - self.next);
            self.hasher.update(&bytes[..n as usize]);
            self.next += n;
        }
    }

    /// Hashes the rest of payload and manifest from `fd`; exits with the corrupt code if the hash
    /// does not match the trailer.
    pub fn finish(mut self, fd: &sys::Fd, exe: &[u8]) {
        let (next, left) = (self.next, self.end - self.next);
        Section::new(fd, next, left, Some(&mut self))
            .for_each_chunk(|_| {})
            .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", exe, e));
        if self.hasher.finalize()[..] != self.expected[..] {
            die_format(
                &FormatError::Corrupt("content hash mismatch: the payload or manifest was altered"),
                exe,
            );
        }
    }
}

/// The bundle being run: its open file and what the trailer and manifest say of the payload.
pub struct Bundle<'a> {
    pub fd: &'a sys::Fd,
    pub trailer: &'a Trailer,
    pub exe: &'a [u8],
    /// The manifest's `second_frame`, `late_frame` and `tail_frame`.
    pub frames: (u64, u64, u64),
}

/// Extracts the payload into `<root>/<key>`, unless another run finished it first (or, with
/// `replace`, replacing what is there). `verifier` is finished before the extraction is renamed
/// into place.
///
/// A payload with a late frame is in place before that frame is unpacked: a process of its own
/// unpacks it (holding the lock) and then adds the manifest copy, which completes the extraction.
/// The interpreter starts meanwhile; the returned pipe gives it one byte `1` when that process is
/// done, or end-of-file if it failed. `None`: everything is unpacked.
///
/// The pipe gives a `-` as each entry of the late frame is in (the order of
/// [`crate::LATE_LIST_FILE`]). With a tail, that process first makes an empty file for each of the
/// tail's files (so that directory listings made from then on show them), and the pipe gives `2`
/// once the late frame is in, then `+` as each file of the tail is complete, in the order of
/// [`TAIL_LIST_FILE`], then `1` once the manifest copy is in place.
pub fn extract(
    b: &Bundle,
    root: &[u8],
    key: &[u8],
    replace: bool,
    mut verifier: Verifier,
) -> Option<sys::Fd> {
    let (fd, t, exe) = (b.fd, b.trailer, b.exe);
    let io = |what: &[u8], path: &[u8], e| -> ! { die_errno(exit::IO, what, path, e) };
    let root_fd = sys::open(
        root,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .unwrap_or_else(|e| io(b"failed to open", root, e));
    let mut lock_name = Vec::from(key);
    lock_name.extend_from_slice(LOCK_SUFFIX);
    let lock = sys::openat(
        &root_fd,
        &lock_name,
        libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW,
        0o600,
    )
    .unwrap_or_else(|e| io(b"failed to create lock", &sys::join(root, &lock_name), e));
    sys::flock_exclusive(&lock).unwrap_or_else(|e| io(b"failed to lock", &lock_name, e));
    let dir = sys::join(root, key);
    if !replace && is_complete(&dir) {
        verifier.finish(fd, exe);
        return None;
    }
    let mut work = Vec::from(key);
    work.extend_from_slice(b".work");
    // Holding the lock: a work dir is what a killed run left, and an existing `<key>` that is not
    // an acceptable extraction (a killed late frame's among them) is not ours to trust. Both go.
    for stale in [&work[..], key] {
        sys::remove_tree_at(&root_fd, stale)
            .unwrap_or_else(|e| io(b"failed to remove", &sys::join(root, stale), e));
    }
    sys::mkdirat(&root_fd, &work, 0o700)
        .unwrap_or_else(|e| io(b"failed to create", &sys::join(root, &work), e));
    let work_fd = sys::openat(
        &root_fd,
        &work,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .unwrap_or_else(|e| io(b"failed to open", &work, e));
    let work_path = sys::join(root, &work);

    let (mut first, second, late, tail) = payload_parts(fd, t, b.frames, &mut verifier, exe);
    let worker = second.map(|span| {
        let (raw_work, work_path, exe) = (work_fd.0, work_path.clone(), Vec::from(exe));
        on_second_frame(fd, span, late.is_none(), move |archive| {
            let work = sys::Fd::borrowed(raw_work);
            unpack(
                archive,
                &work,
                &mut BTreeSet::new(),
                &work_path,
                &exe,
                News::None,
            );
        })
    });
    let mut made: BTreeSet<Vec<u8>> = BTreeSet::new();
    unpack(&mut first, &work_fd, &mut made, &work_path, exe, News::None);
    drop(first);
    // While the second thread may still be unpacking.
    verifier.finish(fd, exe);
    // The launcher itself, as `sys.executable`: the first stub_len bytes of this very file.
    make_dirs(&work_fd, parent_of(PYTHON_EXE), &mut made, &work_path);
    copy_range(
        fd,
        0,
        t.stub_len,
        &create(&work_fd, PYTHON_EXE, 0o755, &work_path),
        exe,
    );
    if late.is_none() {
        put_manifest(fd, t, &work_fd, &work_path, exe);
    }
    if let Some(worker) = worker {
        worker.join();
    }
    sys::rename(&work_path, &dir)
        .unwrap_or_else(|e| io(b"failed to move the extraction into place at", &dir, e));
    // `work_fd` is the directory now at `dir`; the lock is held until the late frame is in.
    let late = late?;
    let finish = |tell: &sys::Fd| {
        let mut made = BTreeSet::new();
        if tail.is_some() {
            make_placeholders(&work_fd, &dir, &mut made, exe);
        }
        let mut frame = |span, last, news| {
            let mut archive = frame_archive(fd, span, last);
            unpack(&mut archive, &work_fd, &mut made, &dir, exe, news);
        };
        if late.1 > 0 {
            frame(late, tail.is_none(), News::Late(tell));
        }
        if let Some(tail) = tail {
            let _ = sys::write_all(tell.0, b"2");
            frame(tail, true, News::Tail(tell));
        }
        put_manifest(fd, t, &work_fd, &dir, exe);
    };
    let done = in_background(finish);
    drop(lock);
    done
}

/// An empty file for each of the tail's files ([`TAIL_LIST_FILE`], unpacked before), which
/// unpacking the tail fills.
fn make_placeholders(dir_fd: &sys::Fd, dir: &[u8], made: &mut BTreeSet<Vec<u8>>, exe: &[u8]) {
    let list_path = sys::join(dir, TAIL_LIST_FILE.as_bytes());
    let list = sys::read_file(&list_path, 1 << 24)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", &list_path, e));
    for path in list.split(|&b| b == b'\n').filter(|p| !p.is_empty()) {
        let checked = core::str::from_utf8(path)
            .map_err(|_| FormatError::Corrupt("tail list is not UTF-8"))
            .and_then(crate::check_path);
        if let Err(e) = checked {
            die_format(&e, exe);
        }
        make_dirs(dir_fd, parent_of(path), made, dir);
        create(dir_fd, path, 0o755, dir);
    }
}

/// The manifest copy, which marks an extraction complete: written under another name and then
/// renamed, so that it is there in full or not at all.
fn put_manifest(fd: &sys::Fd, t: &Trailer, dir_fd: &sys::Fd, dir: &[u8], exe: &[u8]) {
    const PARTIAL: &[u8] = b"pyshrink.manifest.partial";
    copy_range(
        fd,
        t.manifest_offset(),
        t.manifest_len,
        &create(dir_fd, PARTIAL, 0o644, dir),
        exe,
    );
    sys::renameat(dir_fd, PARTIAL, MANIFEST_FILE)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to complete", dir, e));
}

/// Runs `job` in a process that is not this one's child (its parent exits at once, so nothing is
/// left for the interpreter to reap), and returns a pipe that yields `1` once `job` returned, or
/// end-of-file if it died; `job` may write news of its own to that pipe (its argument) before.
/// Where no process can be started, `job` runs here and `None` returns.
pub fn in_background(job: impl FnOnce(&sys::Fd)) -> Option<sys::Fd> {
    let Ok((done, tell)) = sys::pipe() else {
        job(&sys::Fd::borrowed(-1));
        return None;
    };
    match sys::fork() {
        Ok(0) => {
            drop(done);
            match sys::fork() {
                Ok(0) => {
                    // Nothing of the app's output waits for this process to close it. An app
                    // that exits before reading the news closes the pipe: that is no failure.
                    // In a session of its own, the extraction is not cut short when the app's
                    // process group is signalled (Ctrl-C, a supervisor stopping the app).
                    // SAFETY: closing our own standard descriptors, which nothing here uses,
                    // ignoring a signal, leaving the session.
                    unsafe {
                        libc::close(0);
                        libc::close(1);
                        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                        libc::setsid();
                    }
                    job(&tell);
                    let _ = sys::write_all(tell.0, b"1");
                    sys::exit(0)
                }
                Ok(_) => sys::exit(0),
                Err(_) => sys::exit(1),
            }
        }
        Ok(child) if sys::exited_ok(child) => {
            drop(tell);
            match sys::inherit(&done) {
                Ok(()) => Some(done),
                // Only an invalid descriptor fails F_SETFD: wait here instead, through the news
                // `job` gives before its `1`.
                Err(_) => {
                    let (mut buf, mut last) = ([0u8; 512], 0);
                    while let Ok(n @ 1..) = sys::read(&done, &mut buf) {
                        last = buf[n - 1];
                    }
                    if last != b'1' {
                        super::die(exit::IO, &[crate::late_frame_failed!().as_bytes()]);
                    }
                    None
                }
            }
        }
        _ => {
            drop((done, tell));
            job(&sys::Fd::borrowed(-1));
            None
        }
    }
}

/// What [`unpack`] tells the interpreter as each entry is in.
#[derive(Clone, Copy)]
enum News<'a> {
    None,
    /// A `-` down this pipe for each entry of the late frame.
    Late(&'a sys::Fd),
    /// The entries are the tail's, whose empty files are there already: a `+` down this pipe as
    /// each one is complete.
    Tail(&'a sys::Fd),
}

/// Writes every entry of `archive` under the work directory, telling `news`.
fn unpack<S: crate::Source>(
    archive: &mut ArchiveReader<S>,
    work_fd: &sys::Fd,
    made: &mut BTreeSet<Vec<u8>>,
    work_path: &[u8],
    exe: &[u8],
    news: News,
) {
    let mut buf = vec![0u8; CHUNK];
    while let Some(entry) = next_entry(archive, exe) {
        let path = entry.path.as_bytes();
        make_dirs(work_fd, parent_of(path), made, work_path);
        match entry.kind {
            EntryKind::Dir { .. } => make_dirs(work_fd, path, made, work_path),
            EntryKind::File { mode, .. } => {
                let out = match news {
                    News::Tail(_) => fill(work_fd, path, work_path),
                    _ => create(work_fd, path, mode, work_path),
                };
                loop {
                    let n = read_data(archive, &mut buf, exe);
                    if n == 0 {
                        break;
                    }
                    sys::write_all(out.0, &buf[..n]).unwrap_or_else(|e| {
                        die_errno(exit::IO, b"failed to write", &sys::join(work_path, path), e)
                    });
                }
            }
            EntryKind::Link { target } => {
                link(work_fd, target.as_bytes(), path, work_path, &mut buf);
            }
        }
        // The interpreter may have ended without reading: no failure.
        let _ = match news {
            News::None => Ok(()),
            News::Late(tell) => sys::write_all(tell.0, b"-"),
            News::Tail(tell) => sys::write_all(tell.0, b"+"),
        };
    }
}

/// `path` as the same file as `target`, unpacked before it: a hard link, or a copy where the
/// file system has none.
fn link(work: &sys::Fd, target: &[u8], path: &[u8], work_path: &[u8], buf: &mut [u8]) {
    if sys::linkat(work, target, path).is_ok() {
        return;
    }
    let fail = |e| -> ! {
        die_errno(
            exit::IO,
            b"failed to create",
            &sys::join(work_path, path),
            e,
        )
    };
    let from =
        sys::openat(work, target, libc::O_RDONLY | libc::O_NOFOLLOW, 0).unwrap_or_else(|e| fail(e));
    let mode = sys::fstat(&from).unwrap_or_else(|e| fail(e)).st_mode;
    let out = create(work, path, mode, work_path);
    loop {
        match sys::read(&from, buf) {
            Ok(0) => break,
            Ok(n) => sys::write_all(out.0, &buf[..n]).unwrap_or_else(|e| fail(e)),
            Err(e) => fail(e),
        }
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn make_dirs(work: &sys::Fd, dir: &[u8], made: &mut BTreeSet<Vec<u8>>, work_path: &[u8]) {
    if dir.is_empty() || made.contains(dir) {
        return;
    }
    make_dirs(work, parent_of(dir), made, work_path);
    match sys::mkdirat(work, dir, 0o755) {
        Ok(()) | Err(libc::EEXIST) => {}
        Err(e) => die_errno(exit::IO, b"failed to create", &sys::join(work_path, dir), e),
    }
    made.insert(dir.into());
}

fn create(work: &sys::Fd, path: &[u8], mode: u32, work_path: &[u8]) -> sys::Fd {
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    sys::openat(work, path, flags, mode).unwrap_or_else(|e| {
        die_errno(
            exit::IO,
            b"failed to create",
            &sys::join(work_path, path),
            e,
        )
    })
}

/// A tail file's empty file, opened to be filled.
fn fill(work: &sys::Fd, path: &[u8], work_path: &[u8]) -> sys::Fd {
    let flags = libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW;
    sys::openat(work, path, flags, 0)
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to open", &sys::join(work_path, path), e))
}

fn copy_range(fd: &sys::Fd, offset: u64, len: u64, out: &sys::Fd, exe: &[u8]) {
    Section::new(fd, offset, len, None)
        .for_each_chunk(|chunk| {
            if let Err(e) = sys::write_all(out.0, chunk) {
                die_errno(
                    exit::IO,
                    b"failed to write into the extraction from",
                    exe,
                    e,
                );
            }
        })
        .unwrap_or_else(|e| die_errno(exit::IO, b"failed to read", exe, e));
}

/// `PYSHRINK_VERIFY=1`: compares an existing extraction with the payload (hashing what it reads
/// into `verifier`, which the caller finishes before the extraction is used), file by file, and
/// checks it holds nothing else. A mismatch is reported; the caller re-extracts.
pub fn tree_matches(
    fd: &sys::Fd,
    t: &Trailer,
    dir: &[u8],
    verifier: &mut Verifier,
    exe: &[u8],
) -> bool {
    let Ok(dir_fd) = sys::open(
        dir,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) else {
        return false;
    };
    let mut archive = payload_archive(fd, t, verifier);
    let (mut want, mut have) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut files: u64 = 2; // the manifest copy and bin/python3
    while let Some(entry) = next_entry(&mut archive, exe) {
        let size = match entry.kind {
            EntryKind::Dir { .. } => continue,
            EntryKind::File { size, .. } => size,
            EntryKind::Link { target } => {
                files += 1;
                if !same_bytes(
                    &dir_fd,
                    target.as_bytes(),
                    entry.path.as_bytes(),
                    &mut want,
                    &mut have,
                ) {
                    return false;
                }
                continue;
            }
        };
        files += 1;
        let Ok(f) = sys::openat(
            &dir_fd,
            entry.path.as_bytes(),
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        ) else {
            return false;
        };
        if sys::fstat(&f).map(|st| st.st_size as u64) != Ok(size) {
            return false;
        }
        loop {
            let n = read_data(&mut archive, &mut want, exe);
            if n == 0 {
                break;
            }
            if !fill_from(&f, &mut have[..n]) || want[..n] != have[..n] {
                return false;
            }
        }
    }
    count_files(&dir_fd) == Some(files)
}

/// Whether the files `a` and `b` under `dir` (`a` already checked) hold the same bytes.
fn same_bytes(dir: &sys::Fd, a: &[u8], b: &[u8], buf_a: &mut [u8], buf_b: &mut [u8]) -> bool {
    let open = |p| sys::openat(dir, p, libc::O_RDONLY | libc::O_NOFOLLOW, 0).ok();
    let (Some(fa), Some(fb)) = (open(a), open(b)) else {
        return false;
    };
    loop {
        let n = match sys::read(&fa, buf_a) {
            Ok(0) => return sys::read(&fb, &mut buf_b[..1]) == Ok(0),
            Ok(n) => n,
            Err(_) => return false,
        };
        if !fill_from(&fb, &mut buf_b[..n]) || buf_a[..n] != buf_b[..n] {
            return false;
        }
    }
}

/// Fills `buf` from `f`; false at an error, or at the end of the file before `buf` is full.
fn fill_from(f: &sys::Fd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match sys::read(f, &mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(m) => got += m,
        }
    }
    true
}

/// Regular files under a directory; `None` if it holds anything but files and directories.
fn count_files(dir: &sys::Fd) -> Option<u64> {
    let mut n = 0;
    for name in sys::list_dir(dir).ok()? {
        let sub = sys::openat(
            dir,
            &name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )
        .ok()?;
        let st = sys::fstat(&sub).ok()?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => n += 1,
            libc::S_IFDIR => n += count_files(&sub)?,
            _ => return None,
        }
    }
    Some(n)
}

/// Reports a tampered extraction before it is replaced.
pub fn report_mismatch(dir: &[u8]) {
    let _ = sys::write_all(
        2,
        &[
            &b"pyshrink: warning: extraction `"[..],
            dir,
            b"` does not match the bundle; extracting it again\n",
        ]
        .concat(),
    );
}
