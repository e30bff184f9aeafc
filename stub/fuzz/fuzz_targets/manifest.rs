//! `Manifest::decode` on arbitrary bytes: never panics, and whatever it accepts survives
//! `encode` and a second `decode` unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyshrink_stub::{check_path, Entry, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    // The launcher joins these to the extraction directory: they must be safe relative paths.
    for p in [&m.interpreter, &m.loader, &m.library_path, &m.python_exe] {
        assert_eq!(check_path(p), Ok(()), "{p:?}");
    }
    match &m.entry {
        Entry::Script(p) => assert_eq!(check_path(p), Ok(()), "{p:?}"),
        Entry::Module(name) => assert!(!name.is_empty()),
    }
    let text = m.encode();
    assert_eq!(
        Manifest::decode(text.as_bytes()).as_ref(),
        Ok(&m),
        "{text:?}"
    );
    // Encoding is canonical: a second round gives the same text.
    assert_eq!(Manifest::decode(text.as_bytes()).unwrap().encode(), text);
});
