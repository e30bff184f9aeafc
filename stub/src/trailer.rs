//! The fixed-size trailer at the very end of a bundle.
//!
//! ```text
//! offset size field
//!      0    4 version          u32 LE (1)
//!      4    4 flags            u32 LE (0; other values are refused)
//!      8    8 stub_len         u64 LE
//!     16    8 payload_len      u64 LE
//!     24    8 manifest_len     u64 LE
//!     32   32 content_sha256   SHA-256 of payload bytes followed by manifest bytes
//!     64    8 magic            b"PYSHRNK\0"
//! ```
//!
//! The lengths must add up to the file length exactly, so truncation and appended junk are both
//! caught before anything is allocated or decompressed. The hash also names the extraction
//! directory, so two bundles share an extraction only when their contents are identical.

use sha2::{Digest, Sha256};

use crate::FormatError;

pub const MAGIC: [u8; 8] = *b"PYSHRNK\0";
pub const VERSION: u32 = 1;
pub const TRAILER_LEN: usize = 72;
/// The manifest is a few hundred bytes; anything past this is damage, not a manifest.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;
/// Payloads are compressed; 16 GiB is far past any real one and keeps arithmetic safe.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 34;
/// The stub is tens of KiB; the cap leaves room for debug builds of it.
pub const MAX_STUB_LEN: u64 = 1 << 28;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub stub_len: u64,
    pub payload_len: u64,
    pub manifest_len: u64,
    pub content_sha256: [u8; 32],
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[0..4].copy_from_slice(&VERSION.to_le_bytes());
        out[4..8].copy_from_slice(&0u32.to_le_bytes());
        out[8..16].copy_from_slice(&self.stub_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.manifest_len.to_le_bytes());
        out[32..64].copy_from_slice(&self.content_sha256);
        out[64..72].copy_from_slice(&MAGIC);
        out
    }

    /// Decodes the last [`TRAILER_LEN`] bytes of a file of `file_len` bytes.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<Trailer, FormatError> {
        if bytes.len() != TRAILER_LEN || file_len < TRAILER_LEN as u64 {
            return Err(FormatError::NotABundle);
        }
        if bytes[64..72] != MAGIC {
            return Err(FormatError::NotABundle);
        }
        let version = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
        if flags != 0 {
            return Err(FormatError::Corrupt("unknown trailer flags"));
        }
        let field =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let trailer = Trailer {
            stub_len: field(8),
            payload_len: field(16),
            manifest_len: field(24),
            content_sha256: bytes[32..64].try_into().unwrap_or_default(),
        };
        if trailer.stub_len == 0 || trailer.stub_len > MAX_STUB_LEN {
            return Err(FormatError::Corrupt("stub length out of range"));
        }
        if trailer.payload_len == 0 || trailer.payload_len > MAX_PAYLOAD_LEN {
            return Err(FormatError::Corrupt("payload length out of range"));
        }
        if trailer.manifest_len == 0 || trailer.manifest_len > MAX_MANIFEST_LEN {
            return Err(FormatError::Corrupt("manifest length out of range"));
        }
        // No overflow: every term is capped far below u64::MAX above.
        let total =
            trailer.stub_len + trailer.payload_len + trailer.manifest_len + TRAILER_LEN as u64;
        if total != file_len {
            return Err(FormatError::Corrupt(
                "section lengths do not add up to the file length (truncated or appended to)",
            ));
        }
        Ok(trailer)
    }

    pub fn payload_offset(&self) -> u64 {
        self.stub_len
    }

    pub fn manifest_offset(&self) -> u64 {
        self.stub_len + self.payload_len
    }

    /// Lowercase hex of the first 16 bytes of the content hash: the extraction directory name.
    pub fn cache_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex(&self.content_sha256[..16], &mut out);
        out
    }
}

/// The hasher whose result goes into [`Trailer::content_sha256`]: feed it the payload bytes, then
/// the manifest bytes.
pub fn content_hasher() -> Sha256 {
    Sha256::new()
}

/// Writes the lowercase hex form of `bytes` into `out` (twice as long).
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trailer {
        Trailer {
            stub_len: 1000,
            payload_len: 5000,
            manifest_len: 200,
            content_sha256: [7; 32],
        }
    }

    const LEN: u64 = 1000 + 5000 + 200 + TRAILER_LEN as u64;

    #[test]
    fn round_trip() {
        let t = sample();
        assert_eq!(Trailer::decode(&t.encode(), LEN), Ok(t));
    }

    #[test]
    fn every_field_is_checked() {
        let good = sample().encode();
        let cases: &[(usize, FormatError)] = &[
            (70, FormatError::NotABundle),
            (0, FormatError::UnsupportedVersion(VERSION ^ 1)),
            (5, FormatError::Corrupt("unknown trailer flags")),
        ];
        for (at, want) in cases {
            let mut bad = good;
            bad[*at] ^= 1;
            assert_eq!(Trailer::decode(&bad, LEN).unwrap_err(), *want, "byte {at}");
        }
        // A flipped bit in any length breaks the sum; a huge one hits its cap first.
        for at in [8, 16, 24, 15, 23, 31] {
            let mut bad = good;
            bad[at] ^= 0x40;
            assert!(
                matches!(Trailer::decode(&bad, LEN), Err(FormatError::Corrupt(_))),
                "byte {at}"
            );
        }
    }

    #[test]
    fn truncated_or_appended_is_corrupt() {
        let t = sample().encode();
        for len in [LEN - 1, LEN + 1, LEN + 4096] {
            assert!(matches!(
                Trailer::decode(&t, len),
                Err(FormatError::Corrupt(_))
            ));
        }
        assert_eq!(Trailer::decode(&t[1..], LEN), Err(FormatError::NotABundle));
        assert_eq!(Trailer::decode(&t, 10), Err(FormatError::NotABundle));
    }

    #[test]
    fn cache_key_is_hex_of_hash_prefix() {
        let mut t = sample();
        t.content_sha256[0] = 0xab;
        t.content_sha256[15] = 0x01;
        let key = t.cache_key();
        assert_eq!(&key[..2], b"ab");
        assert_eq!(&key[30..], b"01");
    }
}
