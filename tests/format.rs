//! The launcher and the file format, seen from outside.

use crate::util::*;

/// The embedded launcher is a fully static executable: nothing for a loader to find in scratch.
#[test]
fn stub_is_static_and_small() {
    let stub = pyshrink::stub::embedded();
    let elf = goblin::elf::Elf::parse(stub).expect("the stub is an ELF file");
    assert!(
        elf.interpreter.is_none(),
        "stub has PT_INTERP {:?}",
        elf.interpreter
    );
    assert!(elf.libraries.is_empty(), "stub needs {:?}", elf.libraries);
    assert!(
        !elf.program_headers
            .iter()
            .any(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC),
        "stub has a dynamic section"
    );
    // The budget of the size issue: every byte of the stub is in every bundle.
    assert!(stub.len() <= 300 * 1024, "stub is {} bytes", stub.len());
}

/// The same inputs give the same bytes.
#[test]
fn bundles_are_reproducible() {
    let python = default_python();
    let dir = tempdir();
    let mut outputs = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("hello{i}"));
        let o = pyshrink()
            .args(["bundle", "-q", "--compression-level", "3", "--python"])
            .arg(&python)
            .arg(example("hello/app.py"))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert_code(&o, 0, "bundle");
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(
        outputs[0] == outputs[1],
        "two bundles of the same inputs differ"
    );
}

/// One flipped payload byte, a truncated file or appended junk: a specific error and exit code,
/// and the app never starts.
#[test]
fn damaged_bundles_are_refused() {
    let good = std::fs::read(bundle(
        &[example("hello/app.py").to_str().unwrap()],
        &default_python(),
    ))
    .unwrap();
    let parsed = pyshrink::payload::parse(&good).unwrap();
    let payload_at = parsed.trailer.payload_offset() as usize;
    let mid = payload_at + parsed.payload.len() / 2;
    let manifest_at = parsed.trailer.manifest_offset() as usize;
    let mut cases: Vec<(&str, Vec<u8>, i32)> = Vec::new();
    let mut flipped = good.clone();
    flipped[mid] ^= 0x01;
    cases.push((
        "flipped payload byte",
        flipped,
        pyshrink_stub::exit::CORRUPT,
    ));
    let mut flipped = good.clone();
    flipped[manifest_at + 3] ^= 0x20;
    cases.push((
        "flipped manifest byte",
        flipped,
        pyshrink_stub::exit::CORRUPT,
    ));
    cases.push((
        "truncated",
        good[..good.len() - 1000].to_vec(),
        pyshrink_stub::exit::NOT_A_BUNDLE,
    ));
    let mut appended = good.clone();
    appended.extend_from_slice(b"junk");
    cases.push(("junk appended", appended, pyshrink_stub::exit::NOT_A_BUNDLE));
    let mut short = good.clone();
    let n = short.len();
    short[n - 72 + 16] ^= 0x01; // payload_len
    cases.push(("wrong payload length", short, pyshrink_stub::exit::CORRUPT));
    let mut version = good.clone();
    version[n - 72] = 9;
    cases.push((
        "future version",
        version,
        pyshrink_stub::exit::UNSUPPORTED_VERSION,
    ));
    for (what, bytes, code) in cases {
        let dir = tempdir();
        let path = dir.path().join("bad");
        std::fs::write(&path, &bytes).unwrap();
        let root = Root::new(&path);
        let o = root.run(&["x"]);
        assert_code(&o, code, what);
        assert!(
            stdout(&o).is_empty(),
            "{what}: the app must not start: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).starts_with("pyshrink: error: `/app`"),
            "{what}: {}",
            stderr(&o)
        );
        assert!(root.extractions().is_empty(), "{what}: nothing extracted");
    }
}
