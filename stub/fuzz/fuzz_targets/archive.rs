//! The payload tar reader on arbitrary bytes (raw tar, no zstd): never panics, returns only safe
//! relative paths, and behaves the same however the stream is split into reads and whether or
//! not file data is read. Read as the leading part of a split payload, it sees the same entries
//! and differs only where the bytes end at an entry boundary without the end marker.

#![no_main]

mod common;

use common::{read_all, read_with, with_fixed_checksums, Event, Trickle};
use libfuzzer_sys::fuzz_target;
use pyshrink_stub::ArchiveReader;

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = with_fixed_checksums(data);
    if fixed != data {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let whole = read_all(data, 64 * 1024, false);
    let trickled = read_all(Trickle { data, step: 0 }, 7, false);
    assert_eq!(whole, trickled);

    // Skipping data must land on the same headers: the same entries and the same outcome (a
    // truncation inside unread data surfaces at the next header instead, but it is still an
    // error, after the same entries).
    let skipped = read_all(data, 1, true);
    let entries = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Entry(e) => Some(e.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let failed = |events: &[Event]| matches!(events.last(), Some(Event::Error(_)));
    assert_eq!(failed(&whole), failed(&skipped));
    assert_eq!(entries(&whole), entries(&skipped));

    let part = read_with(ArchiveReader::part(data), 64 * 1024, false);
    assert_eq!(entries(&part), entries(&whole));
    if !failed(&whole) {
        assert!(
            !failed(&part),
            "a whole archive is also a valid leading part"
        );
    }
}
