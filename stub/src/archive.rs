//! The payload archive: the subset of tar the bundler writes, read in a stream.
//!
//! The bundler writes GNU tar headers (the `tar` crate, with fixed mtimes and owners); this reader
//! accepts regular files and directories, GNU long names (`L`) and pax `path` records, and refuses
//! everything else: links of either kind (the bundler stores files, never links, so no chain of
//! links can lead out of the extraction root), device files, FIFOs, absolute paths and `..`. It never trusts a header field
//! without a bound: names are capped, sizes are parsed with overflow checks, checksums verified.
//! See POSIX.1-2017 `pax` "ustar Interchange Format" for the header layout.
//!
//! One pax record is pyshrink's own: `PYSHRINK.x86=START,LEN` says that bytes `START..START+LEN`
//! of the file went through the [`crate::x86`] code filter; [`ArchiveReader::read_data`] undoes
//! it, so readers get the file as it was.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::{x86, FormatError};

const BLOCK: usize = 512;
/// Longest path accepted, from headers or long-name records (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Largest pax extended header accepted.
const MAX_PAX: u64 = 64 * 1024;
/// The pax key of a filtered range; the bundler writes it, the reader undoes the filter.
pub const PAX_X86: &str = "PYSHRINK.x86";
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
    File { mode: u32, size: u64 },
    Dir { mode: u32 },
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
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
    /// A leading part of an archive: it may end at an entry boundary, without the end marker.
    part: bool,
    /// The code filter of the current file, when it has one.
    code: Option<Unfilter>,
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
            padding: 0,
            done: false,
            part: false,
            code: None,
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
        let mut long_name: Option<String> = None;
        let mut code: Option<(u64, u64)> = None;
        loop {
            let mut h = [0u8; BLOCK];
            let first = self.src.read(&mut h)?;
            if first == 0 && self.part && long_name.is_none() {
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
                b'x' => {
                    let pax = self.read_member(size, MAX_PAX)?;
                    for (key, value) in pax_records(&pax)? {
                        if key == "path" {
                            long_name = Some(text(value.into())?);
                        } else if key == PAX_X86 {
                            code = Some(parse_range(value)?);
                        } else if key.starts_with("PYSHRINK.") {
                            return Err(corrupt("archive has a pax record of a newer pyshrink"));
                        }
                    }
                }
                b'g' => {
                    self.read_member(size, MAX_PAX)?;
                }
                kind @ (b'0' | 0 | b'5') => {
                    let raw = match long_name.take() {
                        Some(name) => name,
                        None => header_name(&h)?,
                    };
                    let path = String::from(raw.trim_end_matches('/'));
                    check_path(&path)?;
                    let kind = match kind {
                        b'5' if code.is_some() => {
                            return Err(corrupt("archive has a code filter on a directory"))
                        }
                        b'5' => {
                            self.skip(size + pad(size))?;
                            EntryKind::Dir { mode }
                        }
                        _ => {
                            self.remaining = size;
                            self.padding = pad(size);
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
                        "archive entry of a refused type (link, device or fifo)",
                    ))
                }
            }
        }
    }

    /// Reads the current file's data; `Ok(0)` once all of it was read.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        if self.code.is_none() {
            return self.read_raw(buf);
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
            let got = self.read_raw(&mut out[held..])?;
            let n = held + got;
            if n == 0 {
                return Ok(0);
            }
            let code = self.code.as_mut().expect("only for a filtered file");
            let decided = code.filter.run(&mut out[..n], code.at, self.remaining == 0);
            let k = decided.min(give);
            code.pending[..n - k].copy_from_slice(&out[k..n]);
            code.len = n - k;
            code.at += k as u64;
            if k > 0 {
                return Ok(k);
            }
        }
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
    let bad = || corrupt("bad code filter range in the archive");
    let text = core::str::from_utf8(value).map_err(|_| bad())?;
    let (start, len) = text.split_once(',').ok_or_else(bad)?;
    let num = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
    };
    Ok((num(start).ok_or_else(bad)?, num(len).ok_or_else(bad)?))
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

    #[test]
    fn undoes_the_code_filter_for_small_and_large_reads() {
        let original = some_code();
        let mut filtered = original.clone();
        crate::x86::encode(&mut filtered, 10, original.len() - 3);
        assert_ne!(filtered, original);
        let record = pax(PAX_X86, &format!("10,{}", original.len() - 13));
        let bytes = archive(&[
            (
                header(b"PaxHeaders/lib.so", b'x', record.len() as u64, b""),
                &record,
            ),
            (
                header(b"lib.so", b'0', filtered.len() as u64, b""),
                &filtered,
            ),
            (header(b"after", b'0', 5, b""), b"plain"),
        ]);
        // read_all reads 7 bytes at a time.
        let small = read_all(&bytes).unwrap();
        assert_eq!(small[0].1, original);
        assert_eq!(small[1].1, b"plain");
        let mut r = ArchiveReader::new(bytes.as_slice());
        r.next_entry().unwrap().unwrap();
        let mut big = vec![0u8; 4096];
        let mut data = Vec::new();
        loop {
            let n = r.read_data(&mut big).unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&big[..n]);
        }
        assert_eq!(data, original);
    }

    #[test]
    fn bad_code_filter_records_are_corrupt() {
        for (key, value) in [
            (PAX_X86, "0,999999"),
            (PAX_X86, "18446744073709551615,2"),
            (PAX_X86, "1;2"),
            (PAX_X86, "+1,2"),
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
            archive(&[(header(b"hard", b'1', 0, b"x"), b"")]),
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
