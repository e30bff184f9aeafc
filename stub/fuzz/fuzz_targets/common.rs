//! Reading a whole archive the way the launcher does, shared by the `archive` and `extract`
//! targets.

// Each target uses part of this module.
#![allow(dead_code)]

use pyshrink_stub::{ArchiveEntry, ArchiveReader, FormatError, Source};

/// A source that returns short reads (1 to 13 bytes, in a cycle), so the reader's loops over
/// partial reads run; the launcher's zstd stream returns whatever one decompression step gave.
pub struct Trickle<'a> {
    pub data: &'a [u8],
    pub step: usize,
}

impl Source for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, FormatError> {
        self.step = self.step % 13 + 1;
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// What one pass over an archive saw, in order, up to the first error.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Entry(ArchiveEntry),
    Data(Vec<u8>),
    Error(FormatError),
}

/// Reads every entry and all of its data, checking the reader's promises as it goes; `skip_data`
/// leaves file data unread, so `next_entry` has to skip it.
pub fn read_all<S: Source>(src: S, buf_len: usize, skip_data: bool) -> Vec<Event> {
    read_with(ArchiveReader::new(src), buf_len, skip_data)
}

/// [`read_all`] over a reader already made (a whole archive or a leading part).
pub fn read_with<S: Source>(
    mut r: ArchiveReader<S>,
    buf_len: usize,
    skip_data: bool,
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        let entry = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => {
                // The end stays the end.
                assert_eq!(r.next_entry(), Ok(None));
                return out;
            }
            Err(e) => {
                out.push(Event::Error(e));
                return out;
            }
        };
        check_entry_path(&entry.path);
        let size = match entry.kind {
            pyshrink_stub::EntryKind::File { mode, size } => {
                assert!(mode <= 0o7777);
                Some(size)
            }
            pyshrink_stub::EntryKind::Dir { mode } => {
                assert!(mode <= 0o7777);
                None
            }
            pyshrink_stub::EntryKind::Link { ref target } => {
                check_entry_path(target);
                assert_ne!(target, &entry.path);
                Some(0)
            }
        };
        out.push(Event::Entry(entry));
        if skip_data {
            continue;
        }
        let mut data = Vec::new();
        loop {
            match r.read_data(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(n <= buf.len());
                    data.extend_from_slice(&buf[..n]);
                }
                Err(e) => {
                    out.push(Event::Data(data));
                    out.push(Event::Error(e));
                    return out;
                }
            }
        }
        // A directory has no data to read; a file has exactly its size.
        assert_eq!(data.len() as u64, size.unwrap_or(0));
        out.push(Event::Data(data));
    }
}

/// What the launcher relies on for a path it joins to its extraction directory: relative, and
/// made only of ordinary components, so it names something inside that directory.
pub fn check_entry_path(path: &str) {
    assert_eq!(pyshrink_stub::check_path(path), Ok(()), "{path:?}");
    assert!(
        !path.is_empty() && path.len() <= pyshrink_stub::archive::MAX_PATH,
        "{path:?}"
    );
    assert!(!path.starts_with('/'), "absolute path {path:?}");
    assert!(!path.contains('\0'), "NUL in {path:?}");
    for c in path.split('/') {
        assert!(
            !c.is_empty() && c != "." && c != "..",
            "component {c:?} in {path:?}"
        );
    }
}

/// A copy of `data` with the checksum of every header block rewritten to match, walking the
/// blocks the way tar lays them out (header, data rounded up to 512, next header). A mutation
/// almost never keeps a header's checksum right, so without this pass the fuzzer would rarely
/// get past the checksum test; the input as given is still run too, for the checksum test
/// itself. The size parse here is deliberately lenient and independent of the reader's.
pub fn with_fixed_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while let Some(h) = at.checked_add(512).and_then(|end| out.get_mut(at..end)) {
        if h.iter().all(|&b| b == 0) {
            break;
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = lenient_size(&h[124..136]);
        let Some(next) = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .and_then(|s| s.checked_add(512))
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| at.checked_add(s))
        else {
            break;
        };
        at = next;
    }
    out
}

fn lenient_size(raw: &[u8]) -> u64 {
    if raw[0] & 0x80 != 0 {
        return raw[1..].iter().fold(u64::from(raw[0] & 0x7f), |v, &b| {
            v.saturating_mul(256).saturating_add(u64::from(b))
        });
    }
    raw.iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .fold(0u64, |v, &b| {
            v.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}
