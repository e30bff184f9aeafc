//! The few pieces of the zip format pyshrink writes: stored (uncompressed) entries only, since
//! the payload is compressed as a whole. The bundler packs the stdlib's bytecode with them and
//! the memory runtime packs the app's files into an in-memory zip that Python's `zipimport` reads.
//!
//! PKWARE APPNOTE 6.3.x, sections 4.3.7 (local header), 4.3.12 (central directory) and 4.3.16
//! (end of central directory); fixed DOS time 1980-01-01 00:00.

use alloc::vec::Vec;

/// Where the CRC sits in a local header, for writers that learn it after the data.
pub const LOCAL_CRC_OFFSET: usize = 14;
/// Most entries a zip without the zip64 extension holds.
pub const MAX_ENTRIES: usize = 0xffff;

/// A local file header for a stored entry of `size` bytes.
pub fn local_header(out: &mut Vec<u8>, name: &[u8], crc: u32, size: u32) {
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    common(out, name, crc, size);
    out.extend_from_slice(name);
}

/// The central directory record of an entry whose local header is at `offset`.
pub fn central_record(out: &mut Vec<u8>, name: &[u8], crc: u32, size: u32, offset: u32) {
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&20u16.to_le_bytes()); // made by: 2.0, MS-DOS attributes
    common(out, name, crc, size);
    out.extend_from_slice(&[0u8; 10]); // comment len, disk, internal attrs (2 each), external (4)
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(name);
}

/// The end of central directory record.
pub fn end_record(out: &mut Vec<u8>, count: u16, central_len: u32, central_offset: u32) {
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // this disk, disk with the central directory
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
}

/// Version needed, flags, method (stored), DOS time and date, CRC, sizes, name and extra length.
fn common(out: &mut Vec<u8>, name: &[u8], crc: u32, size: u32) {
    out.extend_from_slice(&20u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // 00:00:00
    out.extend_from_slice(&0x21u16.to_le_bytes()); // 1980-01-01
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
}

/// CRC-32 as zip uses it (IEEE 802.3, reflected), slicing by 8: a cold start in the memory runtime
/// checksums every file of the app, so this runs at a few GB/s rather than a few hundred MB/s.
pub struct Crc32(u32);

const TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
};

impl Crc32 {
    pub fn new() -> Crc32 {
        Crc32(!0)
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.0;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            crc = TABLES[7][(lo & 0xff) as usize]
                ^ TABLES[6][((lo >> 8) & 0xff) as usize]
                ^ TABLES[5][((lo >> 16) & 0xff) as usize]
                ^ TABLES[4][(lo >> 24) as usize]
                ^ TABLES[3][c[4] as usize]
                ^ TABLES[2][c[5] as usize]
                ^ TABLES[1][c[6] as usize]
                ^ TABLES[0][c[7] as usize];
        }
        for &b in chunks.remainder() {
            crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
        }
        self.0 = crc;
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

/// CRC-32 of one buffer.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let long: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let bitwise = {
            let mut crc = !0u32;
            for &b in &long {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
                }
            }
            !crc
        };
        assert_eq!(crc32(&long), bitwise);
        let mut split = Crc32::new();
        split.update(&long[..4097]);
        split.update(&long[4097..]);
        assert_eq!(split.finish(), bitwise);
    }
}
