//! `Trailer::decode` on arbitrary bytes: the first 72 bytes of the input are the trailer, the next
//! (up to) 8 bytes, little-endian and zero-padded, are the file length it is checked against.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyshrink_stub::trailer::{MAX_PAYLOAD_LEN, MAX_STUB_LEN};
use pyshrink_stub::{FormatError, Trailer, MAX_MANIFEST_LEN, TRAILER_LEN};

fuzz_target!(|data: &[u8]| {
    let bytes = &data[..data.len().min(TRAILER_LEN)];
    let rest = &data[bytes.len()..];
    let mut len = [0u8; 8];
    let n = rest.len().min(8);
    len[..n].copy_from_slice(&rest[..n]);
    let file_len = u64::from_le_bytes(len);

    match Trailer::decode(bytes, file_len) {
        Ok(t) => {
            // Everything the launcher computes from a trailer before trusting it.
            assert!(t.stub_len > 0 && t.stub_len <= MAX_STUB_LEN);
            assert!(t.payload_len > 0 && t.payload_len <= MAX_PAYLOAD_LEN);
            assert!(t.manifest_len > 0 && t.manifest_len <= MAX_MANIFEST_LEN);
            let sum = t
                .stub_len
                .checked_add(t.payload_len)
                .and_then(|s| s.checked_add(t.manifest_len))
                .and_then(|s| s.checked_add(TRAILER_LEN as u64));
            assert_eq!(sum, Some(file_len), "{t:?}");
            assert_eq!(t.payload_offset(), t.stub_len);
            assert_eq!(
                t.manifest_offset() + t.manifest_len + TRAILER_LEN as u64,
                file_len
            );
            // A trailer that decodes is exactly what encode writes for it.
            assert_eq!(&t.encode()[..], bytes);
            assert_eq!(Trailer::decode(&t.encode(), file_len), Ok(t.clone()));
            let key = t.cache_key();
            assert!(key
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        }
        Err(FormatError::NotABundle) => {
            assert!(
                bytes.len() != TRAILER_LEN
                    || file_len < TRAILER_LEN as u64
                    || bytes[64..] != pyshrink_stub::MAGIC
            );
        }
        Err(FormatError::UnsupportedVersion(v)) => {
            assert_ne!(v, pyshrink_stub::VERSION);
            assert_eq!(&bytes[0..4], &v.to_le_bytes());
        }
        Err(FormatError::Corrupt(_)) => {}
    }
});
