//! A reversible filter for ELF relocation tables that makes them compress better.
//!
//! An x86-64 table (`.rela.dyn`, `.rela.plt`) is a run of `Elf64_Rela` entries: offset, info and
//! addend, three little-endian 64-bit words. Offsets rise in small steps, infos repeat, and the
//! addend of an `R_X86_64_RELATIVE` entry is an address close to the previous one. Interleaved,
//! each entry differs from the last in most of its 24 bytes; libpython's table is 0.8 MB of them.
//! The filter stores the three words as three columns: offsets as the difference from the previous
//! offset, infos as they are, and `R_X86_64_RELATIVE` addends as the difference from the previous
//! such addend (the others as they are). zstd then finds long repeats, and libpython's bundled
//! size falls by about 48 KB.
//!
//! The filter is exact on any bytes whose length is a multiple of an entry (arithmetic wraps), so
//! a range that is not a relocation table only costs compression. The bundler filters the
//! relocation sections of each x86-64 ELF file after the [`crate::x86`] filter
//! (`PYSHRINK.rela=START,LEN` in the entry's pax header); the archive reader reads the whole range
//! and undoes it before the code filter sees those bytes.
//!
//! Each `R_X86_64_RELATIVE` addend is also in the file a second time: the linker writes it into the
//! word the relocation points to (`.data.rel.ro`, `.data`, `.got`), 0.2 MB of pointers in
//! libpython. With `PYSHRINK.rela-data=OFFSET,VADDR,SIZE` ([`Segment`]: the file range of the
//! writable segment and its address), those words are stored minus their addend, mostly zeros,
//! another 50 KB off libpython. The table comes first in the file, so the reader has the addends
//! when the words stream past; the words must follow the table, in the table's order.

/// Bytes of one `Elf64_Rela`.
pub const ENTRY: usize = 24;
/// Largest range filtered: the reader holds the whole range while it hands it out.
pub const MAX_LEN: u64 = 16 << 20;
/// `R_X86_64_RELATIVE`, in the low 32 bits of an entry's info.
const RELATIVE: u64 = 8;

fn word(data: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(w)
}

fn put(data: &mut [u8], at: usize, value: u64) {
    data[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Writes the filtered form of the table `plain` to `out` (the bundler's side).
///
/// Panics unless both have the same length, a multiple of [`ENTRY`].
pub fn encode(plain: &[u8], out: &mut [u8]) {
    assert!(plain.len() == out.len() && plain.len().is_multiple_of(ENTRY));
    let n = plain.len() / ENTRY;
    let (mut offset, mut addend) = (0u64, 0u64);
    for k in 0..n {
        let o = word(plain, ENTRY * k);
        let info = word(plain, ENTRY * k + 8);
        let a = word(plain, ENTRY * k + 16);
        put(out, 8 * k, o.wrapping_sub(offset));
        put(out, 8 * (n + k), info);
        let stored = if info as u32 as u64 == RELATIVE {
            let d = a.wrapping_sub(addend);
            addend = a;
            d
        } else {
            a
        };
        put(out, 8 * (2 * n + k), stored);
        offset = o;
    }
}

/// The file range of a loaded segment and its address: the words of `R_X86_64_RELATIVE`
/// relocations inside it are stored minus their addend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub size: u64,
}

impl Segment {
    /// Where in the file the word of this (plain) entry is, and its addend, when the entry is an
    /// `R_X86_64_RELATIVE` relocation of a word wholly inside the segment.
    pub fn target(&self, entry: &[u8; ENTRY]) -> Option<(u64, u64)> {
        let (at, info, addend) = (word(entry, 0), word(entry, 8), word(entry, 16));
        let within = at.checked_sub(self.vaddr)?;
        (info as u32 as u64 == RELATIVE && within.checked_add(8)? <= self.size)
            .then(|| (self.offset + within, addend))
    }
}

/// Which words of a segment are stored minus their addend: walking the table in order, the word of
/// each entry that [`Segment::target`] names, when it starts past the table and past the previous
/// word taken. The reader meets the words in file order after the table, so it can only restore
/// those; the others stay as they are. Both sides decide by this alone.
#[derive(Debug, Clone)]
pub struct WordOrder {
    segment: Segment,
    floor: u64,
}

impl WordOrder {
    /// For a table that ends at file offset `table_end`.
    pub fn new(segment: Segment, table_end: u64) -> WordOrder {
        WordOrder {
            segment,
            floor: table_end,
        }
    }

    /// The file position and addend of this entry's word, when it is taken; entries in order.
    pub fn take(&mut self, entry: &[u8; ENTRY]) -> Option<(u64, u64)> {
        let (at, addend) = self.segment.target(entry)?;
        if at < self.floor {
            return None;
        }
        self.floor = at + 8;
        Some((at, addend))
    }
}

/// Stores the words that [`WordOrder`] takes from `table` (the plain table at `table_start` in
/// `data`) minus their addend (the bundler's side). Returns false, with `data` unchanged, when
/// that is fewer than `min` words.
pub fn subtract_addends(
    data: &mut [u8],
    table_start: usize,
    table: &[u8],
    segment: &Segment,
    min: usize,
) -> bool {
    if segment
        .offset
        .checked_add(segment.size)
        .is_none_or(|end| end > data.len() as u64)
    {
        return false;
    }
    let mut order = WordOrder::new(*segment, (table_start + table.len()) as u64);
    let targets: alloc::vec::Vec<(usize, u64)> = table
        .chunks_exact(ENTRY)
        .filter_map(|entry| order.take(entry.try_into().expect("chunks of ENTRY bytes")))
        .map(|(at, addend)| (at as usize, addend))
        .collect();
    if targets.len() < min {
        return false;
    }
    for &(at, addend) in &targets {
        let value = word(data, at).wrapping_sub(addend);
        put(data, at, value);
    }
    true
}

/// Undoes the filter one entry at a time, over the whole filtered range.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    offset: u64,
    addend: u64,
}

impl Decoder {
    /// Entry `k` of the table that `encode` turned into `stored`; entries must be asked for in
    /// order, from the first.
    pub fn entry(&mut self, stored: &[u8], k: usize) -> [u8; ENTRY] {
        let mut out = [0u8; ENTRY];
        self.entries(stored, k, &mut out);
        out
    }

    /// Entries `first..` of the table that `encode` turned into `stored`, as many as fill `out`
    /// (a multiple of [`ENTRY`] bytes); entries must be asked for in order, from the first.
    pub fn entries(&mut self, stored: &[u8], first: usize, out: &mut [u8]) {
        let n = stored.len() / ENTRY;
        let count = out.len() / ENTRY;
        let (offsets, rest) = stored.split_at(8 * n);
        let (infos, addends) = rest.split_at(8 * n);
        let column = |c| column(c, first, count);
        let words = column(offsets).zip(column(infos)).zip(column(addends));
        for (((o, i), a), e) in words.zip(out.chunks_exact_mut(ENTRY)) {
            self.offset = self.offset.wrapping_add(word(o, 0));
            let info = word(i, 0);
            let mut addend = word(a, 0);
            if info as u32 as u64 == RELATIVE {
                addend = addend.wrapping_add(self.addend);
                self.addend = addend;
            }
            e[..8].copy_from_slice(&self.offset.to_le_bytes());
            e[8..16].copy_from_slice(&info.to_le_bytes());
            e[16..].copy_from_slice(&addend.to_le_bytes());
        }
    }
}

/// Words `first..first + count` of one column of a stored table.
fn column(c: &[u8], first: usize, count: usize) -> core::slice::ChunksExact<'_, u8> {
    c[8 * first..8 * (first + count)].chunks_exact(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table that `encode` turned into `stored`, written back to `out`.
    fn decode(stored: &[u8], out: &mut [u8]) {
        assert!(stored.len() == out.len() && stored.len().is_multiple_of(ENTRY));
        Decoder::default().entries(stored, 0, out);
    }

    fn table(entries: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut t = Vec::new();
        for &(o, i, a) in entries {
            t.extend_from_slice(&o.to_le_bytes());
            t.extend_from_slice(&i.to_le_bytes());
            t.extend_from_slice(&a.to_le_bytes());
        }
        t
    }

    #[test]
    fn a_table_becomes_columns_of_differences_and_comes_back() {
        // Two RELATIVE entries, a GLOB_DAT (6) of symbol 3, a RELATIVE after it.
        let plain = table(&[
            (0x1000, 8, 0x5000),
            (0x1008, 8, 0x5040),
            (0x1010, (3 << 32) | 6, 0),
            (0x1020, 8, 0x5010),
        ]);
        let mut stored = vec![0; plain.len()];
        encode(&plain, &mut stored);
        // Offsets, infos, addends, each as a column.
        let want: Vec<u8> = [
            0x1000,
            8,
            8,
            0x10,
            8,
            8,
            (3 << 32) | 6,
            8,
            0x5000,
            0x40,
            0,
            0x5010u64.wrapping_sub(0x5040),
        ]
        .iter()
        .flat_map(|w: &u64| w.to_le_bytes())
        .collect();
        assert_eq!(stored, want);
        let mut back = vec![0; plain.len()];
        decode(&stored, &mut back);
        assert_eq!(back, plain);
    }

    #[test]
    fn any_bytes_come_back_exactly() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for entries in [0usize, 1, 2, 7, 100] {
            let data: Vec<u8> = (0..entries * ENTRY)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Every fourth word looks like a RELATIVE info, to take both branches.
                    if i % 32 == 8 {
                        8
                    } else {
                        state as u8
                    }
                })
                .collect();
            let mut stored = vec![0; data.len()];
            encode(&data, &mut stored);
            let mut back = vec![0; data.len()];
            decode(&stored, &mut back);
            assert_eq!(back, data, "{entries} entries");
        }
    }
}
