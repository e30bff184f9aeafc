//! The payload archive: the subset of tar the bundler writes, read in a stream.
//!
//! The bundler writes GNU tar headers (the `tar` crate, with fixed mtimes and owners); this reader
//! accepts regular files, directories and hard links, GNU long names (`L`, `K`) and pax `path` and
//! `linkpath` records, and refuses everything else: symbolic links (so no path can lead out of the
//! extraction root), device files, FIFOs, absolute paths and `..`. It never trusts a header field
//! without a bound: names are capped, sizes are parsed with overflow checks, checksums verified.
//! See POSIX.1-2017 `pax` "ustar Interchange Format" for the header layout.
//!
//! The bundler stores a file's bytes once: a file with the same bytes and mode as an earlier one
//! of the same frame is a hard link to it. Readers resolve the link to that earlier file; one
//! whose target is not an earlier file of the frame is corrupt.
//!
//! Three pax records are pyshrink's own. `PYSHRINK.x86=START,LEN` says that bytes
//! `START..START+LEN` of the file went through the [`crate::x86`] code filter;
//! `PYSHRINK.rela=START,LEN` that a range then went through the [`crate::rela`] relocation filter,
//! and `PYSHRINK.rela-data=OFFSET,VADDR,SIZE` that the words its relocations point to in that
//! segment are stored minus their addend. [`ArchiveReader::read_data`] undoes them, the relocation
//! filter first, so readers get the file as it was.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::{rela, x86, FormatError};

const BLOCK: usize = 512;
/// Longest path accepted, from headers or long-name records (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Largest pax extended header accepted.
const MAX_PAX: u64 = 64 * 1024;
/// The pax key of a filtered range; the bundler writes it, the reader undoes the filter.
pub const PAX_X86: &str = "PYSHRINK.x86";
/// The pax key of a range through the relocation filter.
pub const PAX_RELA: &str = "PYSHRINK.rela";
/// The pax key of the segment whose relocated words are stored minus their addend.
pub const PAX_RELA_DATA: &str = "PYSHRINK.rela-data";
/// Bytes of a filtered file read from the source and not handed out yet, at most.
const PENDING: usize = 32;
/// Largest entry accepted: far past any real file, and small enough that size + padding and
/// running offsets never overflow.
pub const MAX_ENTRY: u64 = 1 << 40;

/// A byte stream: the decompressed payload in the launcher, a slice in tests and tools.
pub trait Source {
    /// Reads up to `buf.len()` bytes; `Ok(0)` only at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, FormatError>;
}

impl Source for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        mode: u32,
        size: u64,
    },
    Dir {
        mode: u32,
    },
    /// The same file as `target`, an earlier file of the frame (checked by [`check_path`]).
    Link {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Relative, checked by [`check_path`], without a trailing slash.
    pub path: String,
    pub kind: EntryKind,
}

pub struct ArchiveReader<S: Source> {
    src: S,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Size of the current entry's data.
    size: u64,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
    /// A leading part of an archive: it may end at an entry boundary, without the end marker.
    part: bool,
    /// The code filter of the current file, when it has one.
    code: Option<Unfilter>,
    /// The relocation filter of the current file, until its range was handed out.
    rela: Option<Relocations>,
}

/// The relocation-filtered range of one file: where it is, then the range as stored, undone an
/// entry at a time as it is handed out.
struct Relocations {
    start: u64,
    len: u64,
    /// The stored range, once read.
    stored: Option<Vec<u8>>,
    decoder: rela::Decoder,
    /// Bytes of the range handed out.
    given: usize,
    /// The entry being handed out.
    entry: [u8; rela::ENTRY],
    /// The words to add addends back to, as they stream past after the table.
    words: Option<Words>,
}

/// The relocated words of a [`rela::Segment`], found by walking the table a second time.
struct Words {
    order: rela::WordOrder,
    decoder: rela::Decoder,
    /// Entries of the table looked at.
    seen: usize,
    /// The next word: its file position and addend; `None` once no entry is left.
    next: Option<(u64, u64)>,
    /// Bytes of the next word done, and the carry out of the last of them.
    done: u32,
    carry: u16,
}

impl Words {
    /// Moves to the next entry with a word in the segment.
    fn advance(&mut self, stored: &[u8]) {
        let entries = stored.len() / rela::ENTRY;
        while self.seen < entries {
            let entry = self.decoder.entry(stored, self.seen);
            self.seen += 1;
            if let Some(next) = self.order.take(&entry) {
                self.next = Some(next);
                self.done = 0;
                self.carry = 0;
                return;
            }
        }
        self.next = None;
    }

    /// Adds the addends back to the words in `chunk`, the file's bytes from `pos` (the order
    /// takes no word that starts before the table's end or a word already done).
    fn add(&mut self, stored: &[u8], pos: u64, chunk: &mut [u8]) {
        let end = pos + chunk.len() as u64;
        while let Some((word, addend)) = self.next {
            let at = word + u64::from(self.done);
            if at >= end {
                break;
            }
            let i = (at - pos) as usize;
            if self.done == 0 && i + 8 <= chunk.len() {
                let mut w = [0u8; 8];
                w.copy_from_slice(&chunk[i..i + 8]);
                let sum = u64::from_le_bytes(w).wrapping_add(addend);
                chunk[i..i + 8].copy_from_slice(&sum.to_le_bytes());
            } else {
                // A word across two reads: byte by byte, low byte first, with the carry.
                let mut i = i;
                while self.done < 8 && i < chunk.len() {
                    let sum = u16::from(chunk[i])
                        + ((addend >> (8 * self.done)) & 0xff) as u16
                        + self.carry;
                    chunk[i] = sum as u8;
                    self.carry = sum >> 8;
                    self.done += 1;
                    i += 1;
                }
                if self.done < 8 {
                    break;
                }
            }
            self.advance(stored);
        }
    }
}

/// Undoes the code filter of one file as its bytes are read.
struct Unfilter {
    filter: x86::Filter,
    /// File offset of `pending[0]`.
    at: u64,
    /// Bytes read from the source but not handed out: the last few, which the filter cannot
    /// decide before it sees what follows, or decided ones that did not fit a small read.
    pending: [u8; PENDING],
    len: usize,
}

fn corrupt(what: &'static str) -> FormatError {
    FormatError::Corrupt(what)
}

impl<S: Source> ArchiveReader<S> {
    pub fn new(src: S) -> Self {
        ArchiveReader {
            src,
            remaining: 0,
            size: 0,
            padding: 0,
            done: false,
            part: false,
            code: None,
            rela: None,
        }
    }

    /// A reader of the entries before a split point: the source ends at an entry boundary.
    pub fn part(src: S) -> Self {
        ArchiveReader {
            part: true,
            ..ArchiveReader::new(src)
        }
    }

    pub fn into_inner(self) -> S {
        self.src
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        let mut at = 0;
        while at < buf.len() {
            let n = self.src.read(&mut buf[at..])?;
            if n == 0 {
                return Err(corrupt("archive ends inside an entry"));
            }
            at += n;
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> Result<(), FormatError> {
        let mut scratch = [0u8; BLOCK];
        while n > 0 {
            let step = n.min(BLOCK as u64) as usize;
            self.read_exact(&mut scratch[..step])?;
            n -= step as u64;
        }
        Ok(())
    }

    /// Reads a whole small member (a long name or a pax header) of `size` bytes.
    fn read_member(&mut self, size: u64, cap: u64) -> Result<Vec<u8>, FormatError> {
        if size > cap {
            return Err(corrupt("archive metadata record too long"));
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact(&mut data)?;
        self.skip(pad(size))?;
        Ok(data)
    }

    /// Moves to the next entry, skipping whatever of the current one was not read.
    pub fn next_entry(&mut self) -> Result<Option<ArchiveEntry>, FormatError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        self.code = None;
        self.rela = None;
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut code: Option<(u64, u64)> = None;
        let mut relocations: Option<(u64, u64)> = None;
        let mut words: Option<[u64; 3]> = None;
        loop {
            let mut h = [0u8; BLOCK];
            let first = self.src.read(&mut h)?;
            if first == 0 && self.part && long_name.is_none() && long_link.is_none() {
                self.done = true;
                return Ok(None);
            }
            if first == 0 {
                return Err(corrupt("archive ends inside an entry"));
            }
            self.read_exact(&mut h[first..])?;
            if h.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&h)?;
            let size = parse_size(&h[124..136])?;
            let mode = parse_octal(&h[100..108])? as u32 & 0o7777;
            match h[156] {
                b'L' => long_name = Some(text(self.read_member(size, MAX_PATH as u64)?)?),
                b'K' => long_link = Some(text(self.read_member(size, MAX_PATH as u64)?)?),
                b'x' => {
                    let pax = self.read_member(size, MAX_PAX)?;
                    for (key, value) in pax_records(&pax)? {
                        if key == "path" {
                            long_name = Some(text(value.into())?);
                        } else if key == "linkpath" {
                            long_link = Some(text(value.into())?);
                        } else if key == PAX_X86 {
                            code = Some(parse_range(value)?);
                        } else if key == PAX_RELA {
                            relocations = Some(parse_range(value)?);
                        } else if key == PAX_RELA_DATA {
                            words = Some(parse_numbers(value)?);
                        } else if key.starts_with("PYSHRINK.") {
                            return Err(corrupt("archive has a pax record of a newer pyshrink"));
                        }
                    }
                }
                b'g' => {
                    self.read_member(size, MAX_PAX)?;
                }
                kind @ (b'0' | 0 | b'5' | b'1') => {
                    let raw = match long_name.take() {
                        Some(name) => name,
                        None => header_name(&h)?,
                    };
                    let path = String::from(raw.trim_end_matches('/'));
                    check_path(&path)?;
                    if long_link.is_some() && kind != b'1' {
                        return Err(corrupt("archive has a link name on a file or directory"));
                    }
                    let filtered = code.is_some() || relocations.is_some() || words.is_some();
                    let kind = match kind {
                        b'5' | b'1' if filtered => {
                            return Err(corrupt(
                                "archive has a filter record on a directory or link",
                            ))
                        }
                        b'1' => {
                            let target = match long_link.take() {
                                Some(target) => target,
                                None => text(field(&h[157..257]).into())?,
                            };
                            check_path(&target)?;
                            if size != 0 || target == path {
                                return Err(corrupt("archive has a bad link"));
                            }
                            EntryKind::Link { target }
                        }
                        b'5' => {
                            self.skip(size + pad(size))?;
                            EntryKind::Dir { mode }
                        }
                        _ => {
                            self.remaining = size;
                            self.size = size;
                            self.padding = pad(size);
                            if words.is_some() && relocations.is_none() {
                                return Err(corrupt("archive has relocated words without a table"));
                            }
                            if let Some((start, len)) = relocations {
                                if start.checked_add(len).is_none_or(|end| end > size)
                                    || len == 0
                                    || len % rela::ENTRY as u64 != 0
                                    || len > rela::MAX_LEN
                                {
                                    return Err(corrupt(
                                        "bad relocation filter range in the archive",
                                    ));
                                }
                                let words = match words {
                                    Some([offset, vaddr, segment_size]) => {
                                        if offset
                                            .checked_add(segment_size)
                                            .is_none_or(|end| end > size)
                                        {
                                            return Err(corrupt(
                                                "archive relocated words range past the file",
                                            ));
                                        }
                                        let segment = rela::Segment {
                                            offset,
                                            vaddr,
                                            size: segment_size,
                                        };
                                        Some(Words {
                                            order: rela::WordOrder::new(segment, start + len),
                                            decoder: rela::Decoder::default(),
                                            seen: 0,
                                            next: None,
                                            done: 0,
                                            carry: 0,
                                        })
                                    }
                                    None => None,
                                };
                                self.rela = Some(Relocations {
                                    start,
                                    len,
                                    stored: None,
                                    decoder: rela::Decoder::default(),
                                    given: 0,
                                    entry: [0; rela::ENTRY],
                                    words,
                                });
                            }
                            if let Some((start, len)) = code {
                                if start.checked_add(len).is_none_or(|end| end > size) {
                                    return Err(corrupt("archive code filter range past the file"));
                                }
                                self.code = Some(Unfilter {
                                    filter: x86::Filter::new(
                                        start,
                                        start + len,
                                        x86::Direction::Decode,
                                    ),
                                    at: 0,
                                    pending: [0; PENDING],
                                    len: 0,
                                });
                            }
                            EntryKind::File { mode, size }
                        }
                    };
                    return Ok(Some(ArchiveEntry { path, kind }));
                }
                _ => {
                    return Err(corrupt(
                        "archive entry of a refused type (symbolic link, device or fifo)",
                    ))
                }
            }
        }
    }

    /// Reads the current file's data; `Ok(0)` once all of it was read.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        if self.code.is_none() {
            return self.read_plain(buf);
        }
        if buf.len() >= PENDING {
            return self.read_code(buf, usize::MAX);
        }
        // A small read goes through a buffer the filter can make progress in.
        let mut scratch = [0u8; PENDING];
        let n = self.read_code(&mut scratch, buf.len())?;
        buf[..n].copy_from_slice(&scratch[..n]);
        Ok(n)
    }

    /// Fills `out` with the pending bytes and more from the source, undoes the filter on what
    /// can be decided, and hands out up to `give` decided bytes; the rest stays pending.
    fn read_code(&mut self, out: &mut [u8], give: usize) -> Result<usize, FormatError> {
        loop {
            let code = self.code.as_mut().expect("only for a filtered file");
            let held = code.len;
            out[..held].copy_from_slice(&code.pending[..held]);
            // Decided bytes go out before the source is read again, which may fail.
            let decided = (code.filter.next().saturating_sub(code.at) as usize).min(held);
            if decided > 0 {
                let k = decided.min(give);
                code.pending.copy_within(k..held, 0);
                code.len = held - k;
                code.at += k as u64;
                return Ok(k);
            }
            code.len = 0;
            let got = self.read_plain(&mut out[held..])?;
            let n = held + got;
            if n == 0 {
                return Ok(0);
            }
            let last = self.remaining == 0 && self.rela.is_none();
            let code = self.code.as_mut().expect("only for a filtered file");
            let decided = code.filter.run(&mut out[..n], code.at, last);
            let k = decided.min(give);
            code.pending[..n - k].copy_from_slice(&out[k..n]);
            code.len = n - k;
            code.at += k as u64;
            if k > 0 {
                return Ok(k);
            }
        }
    }

    /// The file's bytes with the relocation filter undone: the range is read whole, undone, then
    /// handed out.
    fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        let Some(r) = self.rela.as_mut() else {
            return self.read_raw(buf);
        };
        if let Some(stored) = &r.stored {
            if r.given == stored.len() {
                // Past the table: the relocated words, until the last of them.
                let pos = self.size - self.remaining;
                let n = self.read_raw(buf)?;
                let r = self.rela.as_mut().expect("checked above");
                let (Some(stored), Some(words)) = (&r.stored, r.words.as_mut()) else {
                    unreachable!("only with words and the table read")
                };
                words.add(stored, pos, &mut buf[..n]);
                if words.next.is_none() {
                    self.rela = None;
                }
                return Ok(n);
            }
            let mut n = 0;
            while n < buf.len() && r.given < stored.len() {
                let within = r.given % rela::ENTRY;
                let whole =
                    ((buf.len() - n) / rela::ENTRY).min((stored.len() - r.given) / rela::ENTRY);
                if within == 0 && whole > 0 {
                    // Whole entries straight into the reader's buffer.
                    let len = whole * rela::ENTRY;
                    let first = r.given / rela::ENTRY;
                    r.decoder.entries(stored, first, &mut buf[n..n + len]);
                    n += len;
                    r.given += len;
                    continue;
                }
                if within == 0 {
                    r.entry = r.decoder.entry(stored, r.given / rela::ENTRY);
                }
                let k = (rela::ENTRY - within).min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&r.entry[within..within + k]);
                n += k;
                r.given += k;
            }
            if r.given == stored.len() {
                match r.words.as_mut() {
                    Some(words) => {
                        words.advance(stored);
                        if words.next.is_none() {
                            self.rela = None;
                        }
                    }
                    None => self.rela = None,
                }
            }
            return Ok(n);
        }
        let pos = self.size - self.remaining;
        if pos < r.start {
            let before = (buf.len() as u64).min(r.start - pos) as usize;
            return self.read_raw(&mut buf[..before]);
        }
        let mut stored = vec![0u8; r.len as usize];
        let mut got = 0;
        while got < stored.len() {
            got += self.read_raw(&mut stored[got..])?;
        }
        if let Some(r) = self.rela.as_mut() {
            r.stored = Some(stored);
        }
        self.read_plain(buf)
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(corrupt("archive ends inside a file"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// One pax record, `"<len> <key>=<value>\n"`, for the bundler to write.
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = alloc::format!(" {key}={value}\n");
    // The length counts its own digits.
    let digits = |n: usize| alloc::format!("{n}").len();
    let mut len = body.len() + 1;
    while len != body.len() + digits(len) {
        len = body.len() + digits(len);
    }
    alloc::format!("{len}{body}").into_bytes()
}

/// `START,LEN` in decimal.
fn parse_range(value: &[u8]) -> Result<(u64, u64), FormatError> {
    let [start, len] = parse_numbers(value)?;
    Ok((start, len))
}

/// `N` decimal numbers separated by commas.
fn parse_numbers<const N: usize>(value: &[u8]) -> Result<[u64; N], FormatError> {
    let bad = || corrupt("bad filter range in the archive");
    let text = core::str::from_utf8(value).map_err(|_| bad())?;
    let mut parts = text.split(',');
    let mut out = [0u64; N];
    for slot in &mut out {
        let s = parts.next().ok_or_else(bad)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        *slot = s.parse::<u64>().map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn field(raw: &[u8]) -> &[u8] {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

fn text(bytes: Vec<u8>) -> Result<String, FormatError> {
    let mut s = String::from_utf8(bytes).map_err(|_| corrupt("archive path is not UTF-8"))?;
    while s.ends_with('\0') {
        s.pop();
    }
    Ok(s)
}

fn header_name(h: &[u8; BLOCK]) -> Result<String, FormatError> {
    let name = field(&h[0..100]);
    // POSIX ustar (magic "ustar\0") splits long names into prefix/name; GNU headers
    // ("ustar  \0") use that area for other fields.
    if &h[257..263] == b"ustar\0" {
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            let mut full = Vec::from(prefix);
            full.push(b'/');
            full.extend_from_slice(name);
            return text(full);
        }
    }
    text(name.into())
}

fn verify_checksum(h: &[u8; BLOCK]) -> Result<(), FormatError> {
    let want = parse_octal(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != want {
        return Err(corrupt("archive header checksum mismatch"));
    }
    Ok(())
}

fn parse_octal(raw: &[u8]) -> Result<u64, FormatError> {
    let mut value: u64 = 0;
    let mut digits = raw
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    digits.try_fold((), |(), &b| {
        if !(b'0'..=b'7').contains(&b) {
            return Err(corrupt("archive header has a bad number"));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(corrupt("archive header number overflows"))?;
        Ok(())
    })?;
    Ok(value)
}

/// Sizes use octal, or GNU base-256 (high bit of the first byte set) past 8 GiB; either way
/// at most [`MAX_ENTRY`].
fn parse_size(raw: &[u8]) -> Result<u64, FormatError> {
    let size = parse_size_field(raw)?;
    if size > MAX_ENTRY {
        return Err(corrupt("archive entry size out of range"));
    }
    Ok(size)
}

fn parse_size_field(raw: &[u8]) -> Result<u64, FormatError> {
    if raw[0] & 0x80 == 0 {
        return parse_octal(raw);
    }
    let mut value: u64 = u64::from(raw[0] & 0x7f);
    for &b in &raw[1..] {
        value = value
            .checked_mul(256)
            .and_then(|v| v.checked_add(u64::from(b)))
            .ok_or(corrupt("archive size overflows"))?;
    }
    Ok(value)
}

/// Parses pax records: `"<len> <key>=<value>\n"`, `len` counting the whole record.
fn pax_records(mut data: &[u8]) -> Result<Vec<(&str, &[u8])>, FormatError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or(corrupt("bad pax record"))?;
        let len = core::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&l| l > space + 1 && l <= data.len())
            .ok_or(corrupt("bad pax record length"))?;
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or(corrupt("bad pax record end"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(corrupt("bad pax record"))?;
        let key = core::str::from_utf8(&record[..eq]).map_err(|_| corrupt("bad pax key"))?;
        out.push((key, &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// A path an archive may hold: relative, no `.`/`..`/empty components, no NUL, not too long.
pub fn check_path(path: &str) -> Result<(), FormatError> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(corrupt("archive path is empty or too long"));
    }
    if path.starts_with('/') {
        return Err(corrupt("archive path is absolute"));
    }
    if path.contains('\0') {
        return Err(corrupt("archive path contains NUL"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(corrupt("archive path has an empty, `.` or `..` component"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal tar writer for tests: enough to express hostile archives the bundler never writes.
    fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn archive(members: &[([u8; BLOCK], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (h, data) in members {
            out.extend_from_slice(h);
            out.extend_from_slice(data);
            out.resize(out.len() + pad(data.len() as u64) as usize, 0);
        }
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(ArchiveEntry, Vec<u8>)>, FormatError> {
        let mut r = ArchiveReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            out.push((e, data));
        }
        Ok(out)
    }

    fn pax(key: &str, value: &str) -> Vec<u8> {
        let record = pax_record(key, value);
        assert_eq!(pax_records(&record).unwrap(), [(key, value.as_bytes())]);
        record
    }

    /// Machine code with calls and RIP-relative loads, as the filter would find in a library.
    fn some_code() -> Vec<u8> {
        let mut code = Vec::new();
        for k in 0..200u32 {
            code.extend_from_slice(&[0xE8]);
            code.extend_from_slice(&(0x1000u32.wrapping_sub(k * 12)).to_le_bytes());
            code.extend_from_slice(&[0x48, 0x8B, 0x05]);
            code.extend_from_slice(&(0x8000u32.wrapping_sub(k * 12)).to_le_bytes());
            code.push(0x90);
        }
        code
    }

    /// Reads one filtered file of `bytes` in reads of `chunk` bytes.
    fn read_file(bytes: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = ArchiveReader::new(bytes);
        r.next_entry().unwrap().unwrap();
        let mut buf = vec![0u8; chunk];
        let mut data = Vec::new();
        loop {
            let n = r.read_data(&mut buf).unwrap();
            if n == 0 {
                return data;
            }
            data.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn undoes_the_code_filter_for_small_and_large_reads() {
        let original = some_code();
        let mut filtered = original.clone();
        crate::x86::encode(&mut filtered, 10, original.len() - 3);
        assert_ne!(filtered, original);
        let range = format!("10,{}", original.len() - 13);
        let bytes = with_records(&[(PAX_X86, range)], &filtered);
        // read_all reads 7 bytes at a time.
        let small = read_all(&bytes).unwrap();
        assert_eq!(small[0].1, original);
        assert_eq!(small[1].1, b"plain");
        assert_eq!(read_file(&bytes, 4096), original);
    }

    #[test]
    fn undoes_the_relocation_filter_then_the_code_filter() {
        let mut table = Vec::new();
        for k in 0..40u64 {
            table.extend_from_slice(&(0x4000 + 8 * k).to_le_bytes());
            table.extend_from_slice(&8u64.to_le_bytes());
            table.extend_from_slice(&(0x9000 + 16 * k).to_le_bytes());
        }
        let code = some_code();
        // Table then code, code then table (the table ends the file), and the code range
        // covering the table as well.
        let layouts: [(Vec<u8>, usize, (usize, usize)); 3] = [
            (
                [&b"head"[..], &table, &code, b"end"].concat(),
                4,
                (4 + table.len(), code.len()),
            ),
            ([&code[..], &table].concat(), code.len(), (0, code.len())),
            (
                [&code[..], &table, &code].concat(),
                code.len(),
                (0, 2 * code.len() + table.len()),
            ),
        ];
        for (original, at, (start, len)) in layouts {
            let mut filtered = original.clone();
            crate::x86::encode(&mut filtered, start, start + len);
            let plain = filtered[at..at + table.len()].to_vec();
            crate::rela::encode(&plain, &mut filtered[at..at + table.len()]);
            let records = [
                (PAX_X86, format!("{start},{len}")),
                (PAX_RELA, format!("{at},{}", table.len())),
            ];
            let bytes = with_records(&records, &filtered);
            let all = read_all(&bytes).unwrap();
            assert_eq!(all[0].1, original);
            assert_eq!(all[1].1, b"plain");
            for chunk in [1, 24, 4096] {
                assert_eq!(read_file(&bytes, chunk), original, "reads of {chunk}");
            }
        }
    }

    /// A relocation table of `RELATIVE` entries (and one `GLOB_DAT`) for words at `vaddr`, every
    /// 16 bytes, with addends that make some subtractions borrow.
    fn relative_table(vaddr: u64, words: u64) -> Vec<u8> {
        let mut table = Vec::new();
        for k in 0..words {
            let (info, addend) = if k == 5 {
                ((7u64 << 32) | 6, 0)
            } else {
                (8, 0x7000_0000 + 40 * k + (k % 3) * 0xff)
            };
            table.extend_from_slice(&(vaddr + 16 * k).to_le_bytes());
            table.extend_from_slice(&info.to_le_bytes());
            table.extend_from_slice(&addend.to_le_bytes());
        }
        table
    }

    /// One file of `data` with these pax records, then another file.
    fn with_records(records: &[(&str, String)], data: &[u8]) -> Vec<u8> {
        let record: Vec<u8> = records.iter().flat_map(|(k, v)| pax(k, v)).collect();
        archive(&[
            (
                header(b"PaxHeaders/lib.so", b'x', record.len() as u64, b""),
                &record,
            ),
            (header(b"lib.so", b'0', data.len() as u64, b""), data),
            (header(b"after", b'0', 5, b""), b"plain"),
        ])
    }

    /// `original` as the bundler stores it: the words of `segment` minus their addend (at least
    /// `min` of them), then the table at `table_start` through the relocation filter.
    fn stored(
        original: &[u8],
        table_start: usize,
        table: &[u8],
        segment: &rela::Segment,
        min: usize,
    ) -> Vec<u8> {
        let mut data = original.to_vec();
        assert!(rela::subtract_addends(
            &mut data,
            table_start,
            table,
            segment,
            min
        ));
        rela::encode(table, &mut data[table_start..table_start + table.len()]);
        data
    }

    #[test]
    fn adds_the_addends_back_to_the_relocated_words() {
        let words = 40u64;
        let vaddr = 0x10000;
        let table = relative_table(vaddr, words);
        let table_start = 8;
        // The segment starts at an odd offset, so words straddle reads of 7 and 24 bytes.
        let offset = (table_start + table.len() + 5) as u64;
        let size = 16 * words + 8;
        let mut original = vec![0xAB; table_start];
        original.extend_from_slice(&table);
        original.extend_from_slice(&[1, 2, 3, 4, 5]);
        for k in 0..words {
            // The word is its addend (stored as 0), the addend plus one, or below it (a borrow).
            let addend = 0x7000_0000 + 40 * k + (k % 3) * 0xff;
            let word = match k % 3 {
                0 => addend,
                1 => addend + 1,
                _ => addend - 0x1234,
            };
            original.extend_from_slice(&word.to_le_bytes());
            original.extend_from_slice(&(k * 0x0101_0101).to_le_bytes());
        }
        original.extend_from_slice(b"tail-after-the-segment");
        let segment = rela::Segment {
            offset,
            vaddr,
            size,
        };
        let filtered = stored(&original, table_start, &table, &segment, words as usize - 1);
        // The first word was its addend: it is stored as zero.
        assert_eq!(filtered[offset as usize..offset as usize + 8], [0; 8]);
        let bytes = with_records(
            &[
                (PAX_RELA, format!("{table_start},{}", table.len())),
                (PAX_RELA_DATA, format!("{offset},{vaddr},{size}")),
            ],
            &filtered,
        );
        let all = read_all(&bytes).unwrap();
        assert_eq!(all[0].1, original);
        assert_eq!(all[1].1, b"plain");
        for chunk in [1, 24, 4096] {
            assert_eq!(read_file(&bytes, chunk), original, "reads of {chunk}");
        }
        // Without the words record the words stay as stored: the record is what restores them.
        let bytes = with_records(
            &[(PAX_RELA, format!("{table_start},{}", table.len()))],
            &filtered,
        );
        assert_ne!(read_all(&bytes).unwrap()[0].1, original);
    }

    #[test]
    fn words_out_of_order_stay_as_they_are_on_both_sides() {
        // Entry 4's word goes back to the first word, entry 6's into the table: neither is
        // taken, the others are. Read back, the file is as it was, however it is read.
        let words = 8u64;
        let mut table = relative_table(0x10000, words);
        table[4 * 24..4 * 24 + 8].copy_from_slice(&0x10000u64.to_le_bytes());
        table[6 * 24..6 * 24 + 8].copy_from_slice(&0xF000u64.to_le_bytes());
        let table_start = 8;
        let offset = table_start + table.len();
        let mut original = b"12345678".to_vec();
        original.extend_from_slice(&table);
        original.extend((0..256u32).map(|i| (i * 7) as u8));
        let segment = rela::Segment {
            offset: offset as u64,
            vaddr: 0x10000,
            size: 256,
        };
        let segment_below = rela::Segment {
            offset: 0,
            vaddr: 0xF000,
            size: 0x1000,
        };
        let mut order = rela::WordOrder::new(segment, offset as u64);
        let taken: Vec<u64> = table
            .chunks_exact(rela::ENTRY)
            .filter_map(|e| order.take(e.try_into().unwrap()))
            .map(|(at, _)| at - offset as u64)
            .collect();
        assert_eq!(taken, [0, 16, 32, 48, 112]);
        assert_eq!(
            rela::WordOrder::new(segment_below, offset as u64)
                .take(table[144..168].try_into().unwrap()),
            None
        );
        let filtered = stored(&original, table_start, &table, &segment, 5);
        let bytes = with_records(
            &[
                (PAX_RELA, format!("{table_start},{}", table.len())),
                (PAX_RELA_DATA, format!("{offset},65536,256")),
            ],
            &filtered,
        );
        for chunk in [1, 7, 4096] {
            assert_eq!(read_file(&bytes, chunk), original, "reads of {chunk}");
        }
    }

    #[test]
    fn bad_relocated_words_records_are_corrupt() {
        let table = relative_table(0x10000, 8);
        let mut stored = vec![0; table.len()];
        rela::encode(&table, &mut stored);
        let mut data = stored.clone();
        data.extend_from_slice(&[0; 256]);
        let len = table.len();
        for (records, why) in [
            (
                vec![(PAX_RELA_DATA, format!("{len},65536,136"))],
                "words without a table",
            ),
            (
                vec![
                    (PAX_RELA, format!("0,{len}")),
                    (PAX_RELA_DATA, format!("{len},65536,4096")),
                ],
                "words range past the file",
            ),
            (
                vec![
                    (PAX_RELA, format!("0,{len}")),
                    (PAX_RELA_DATA, format!("{len},65536")),
                ],
                "two numbers",
            ),
        ] {
            let bytes = with_records(&records, &data);
            assert!(
                matches!(read_all(&bytes), Err(FormatError::Corrupt(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn bad_code_filter_records_are_corrupt() {
        for (key, value) in [
            (PAX_X86, "0,999999"),
            (PAX_X86, "18446744073709551615,2"),
            (PAX_X86, "1;2"),
            (PAX_X86, "+1,2"),
            (PAX_RELA, "0,0"),
            (PAX_RELA, "0,7"),
            (PAX_RELA, "0,48"),
            ("PYSHRINK.arm64", "0,4"),
        ] {
            let record = pax(key, value);
            let bytes = archive(&[
                (
                    header(b"PaxHeaders/f", b'x', record.len() as u64, b""),
                    &record,
                ),
                (header(b"f", b'0', 8, b""), b"12345678"),
            ]);
            assert!(
                matches!(read_all(&bytes), Err(FormatError::Corrupt(_))),
                "{key}={value}"
            );
        }
    }

    #[test]
    fn reads_files_dirs_and_long_names() {
        let long = "d/".repeat(80) + "file.txt";
        let bytes = archive(&[
            (header(b"dir/", b'5', 0, b""), b""),
            (header(b"dir/a.txt", b'0', 5, b""), b"hello"),
            (
                header(b"././@LongLink", b'L', long.len() as u64 + 1, b""),
                format!("{long}\0").as_bytes(),
            ),
            (header(b"ignored", b'0', 3, b""), b"abc"),
        ]);
        let got = read_all(&bytes).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.kind, EntryKind::Dir { mode: 0o644 });
        assert_eq!(got[1].0.path, "dir/a.txt");
        assert_eq!(got[1].1, b"hello");
        assert_eq!(got[2].0.path, long);
        assert_eq!(got[2].1, b"abc");
    }

    #[test]
    fn reads_hard_links_with_short_and_long_targets() {
        let long = "d/".repeat(80) + "file.txt";
        let record = pax("linkpath", &long);
        let bytes = archive(&[
            (header(b"a.txt", b'0', 5, b""), b"hello"),
            (header(b"b.txt", b'1', 0, b"a.txt"), b""),
            (
                header(b"././@LongLink", b'K', long.len() as u64 + 1, b""),
                format!("{long}\0").as_bytes(),
            ),
            (header(b"c.txt", b'1', 0, b"ignored"), b""),
            (
                header(b"PaxHeaders/d.txt", b'x', record.len() as u64, b""),
                &record,
            ),
            (header(b"d.txt", b'1', 0, b"ignored"), b""),
        ]);
        let got = read_all(&bytes).unwrap();
        let kinds: Vec<_> = got
            .iter()
            .map(|(e, _)| (e.path.as_str(), &e.kind))
            .collect();
        let link = |target: &str| EntryKind::Link {
            target: target.into(),
        };
        assert_eq!(
            kinds,
            [
                (
                    "a.txt",
                    &EntryKind::File {
                        mode: 0o644,
                        size: 5
                    }
                ),
                ("b.txt", &link("a.txt")),
                ("c.txt", &link(&long)),
                ("d.txt", &link(&long)),
            ]
        );
    }

    /// The entries before a split point end without the end marker; anywhere else but an entry
    /// boundary is still truncation, and a plain reader still wants the marker.
    #[test]
    fn a_leading_part_ends_at_an_entry_boundary() {
        let whole = archive(&[
            (header(b"a.txt", b'0', 5, b""), b"hello"),
            (header(b"b.txt", b'0', 3, b""), b"abc"),
        ]);
        let split = 2 * BLOCK;
        let mut r = ArchiveReader::part(&whole[..split]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, "a.txt");
        assert_eq!(r.next_entry(), Ok(None));
        let mut r = ArchiveReader::part(&whole[split..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, "b.txt");
        assert_eq!(r.next_entry(), Ok(None));
        assert!(ArchiveReader::part(&whole[..split + 100])
            .next_entry()
            .is_ok());
        let mut r = ArchiveReader::part(&whole[..split + 100]);
        r.next_entry().unwrap();
        assert!(r.next_entry().is_err(), "a header cut short is corrupt");
        let mut r = ArchiveReader::new(&whole[..split]);
        r.next_entry().unwrap();
        assert!(
            r.next_entry().is_err(),
            "a whole archive needs its end marker"
        );
    }

    #[test]
    fn refuses_hostile_entries() {
        let cases: Vec<Vec<u8>> = vec![
            archive(&[(header(b"/etc/passwd", b'0', 1, b""), b"x")]),
            archive(&[(header(b"a/../../x", b'0', 1, b""), b"x")]),
            archive(&[(header(b"dev", b'3', 0, b""), b"")]),
            archive(&[(header(b"fifo", b'6', 0, b""), b"")]),
            archive(&[(header(b"hard", b'1', 0, b"../x"), b"")]),
            archive(&[(header(b"hard", b'1', 0, b"/etc/passwd"), b"")]),
            archive(&[(header(b"hard", b'1', 0, b"hard"), b"")]),
            archive(&[(header(b"hard", b'1', 3, b"x"), b"abc")]),
            archive(&[
                (header(b"././@LongLink", b'K', 2, b""), b"x\0"),
                (header(b"f", b'0', 1, b""), b"x"),
            ]),
            archive(&[(header(b"a/link", b'2', 0, b"../../etc"), b"")]),
            archive(&[(header(b"link", b'2', 0, b"inside"), b"")]),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(
                matches!(read_all(bytes), Err(FormatError::Corrupt(_))),
                "case {i}"
            );
        }
    }

    #[test]
    fn huge_sizes_are_corrupt() {
        for kind in [b'0', b'5'] {
            let mut h = header(b"d", kind, 0, b"");
            h[124..136].copy_from_slice(&[
                0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ]);
            h[148..156].copy_from_slice(b"        ");
            let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            let bytes = archive(&[(h, b"")]);
            assert_eq!(
                read_all(&bytes).unwrap_err(),
                FormatError::Corrupt("archive entry size out of range")
            );
        }
    }

    #[test]
    fn damaged_headers_and_truncation_are_corrupt() {
        let good = archive(&[(header(b"a.txt", b'0', 5, b""), b"hello")]);
        let mut bad = good.clone();
        bad[3] ^= 1; // name byte: checksum no longer matches
        assert!(read_all(&bad).is_err());
        assert!(read_all(&good[..600]).is_err());
        assert!(read_all(&good[..100]).is_err());
    }
}
