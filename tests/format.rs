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

/// The same inputs give the same bytes, with every interpreter: the fixture's frozenset constant
/// is written in hash order by marshal before 3.11.
#[test]
fn bundles_are_reproducible() {
    let app = repo().join("tests/fixtures/reproducible/app.py");
    let dir = tempdir();
    for (name, python) in interpreters() {
        eprintln!("reproducible bundle with {name}");
        let mut outputs = Vec::new();
        for i in 0..2 {
            let out = dir.path().join(format!("{name}-{i}"));
            assert_code(&bundle_to(&app, python, &out), 0, name);
            outputs.push(std::fs::read(&out).unwrap());
        }
        assert!(
            outputs[0] == outputs[1],
            "{name}: two bundles of the same inputs differ"
        );
    }
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
    // The last byte of each zstd frame is part of its checksum, which the launcher leaves to the
    // content hash: these decompress as before, and only the hash can refuse them.
    let second_frame = parsed.manifest.second_frame as usize;
    assert!(second_frame > 0, "hello's payload comes in two frames");
    for (what, at) in [
        (
            "flipped checksum of the first frame",
            payload_at + second_frame - 1,
        ),
        ("flipped checksum of the second frame", manifest_at - 1),
    ] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x01;
        cases.push((what, flipped, pyshrink_stub::exit::CORRUPT));
    }
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

/// The object of `list` whose `key` is `value`.
fn listed<'a>(list: &'a [serde_json::Value], key: &str, value: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("{value} not listed"))
}

/// `pyshrink inspect` on a bundle whose contents this test knows, with the reason each module
/// came: the module that imports it, or why the bundler brought it.
#[test]
fn inspect_reports_contents_libraries_and_modules() {
    let python = default_python();
    let dir = tempdir();
    let app = dir.path().join("knows.py");
    std::fs::write(
        &app,
        "import hashlib, json, socket\nprint(json.dumps({'ok': True}))\n",
    )
    .unwrap();
    let out = dir.path().join("knows");
    let o = pyshrink()
        .args(["bundle", "-q", "--compression-level", "3", "--python"])
        .arg(&python)
        .arg(&app)
        .arg("-o")
        .arg(&out)
        .args(["--include-module", "xml.dom.minidom"])
        .output()
        .unwrap();
    assert_code(&o, 0, "bundle");
    let o = pyshrink()
        .arg("inspect")
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 0, "inspect --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(v["size"].as_u64(), Some(size));
    assert_eq!(
        v["python"].as_str().unwrap(),
        python_says(&python, "import platform; print(platform.python_version())")
    );
    assert_eq!(v["entry"]["path"], "app/knows.pyc");
    let files = v["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for want in [
        "app/knows.pyc",
        "bin/python.real",
        "lib/libc.so.6",
        "lib/ld-linux-x86-64.so.2",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let sizes: Vec<u64> = files.iter().map(|f| f["size"].as_u64().unwrap()).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "biggest first");
    // When a first run unpacks each file: what the interpreter loads as it starts, before it
    // starts; OpenSSL, which only `_hashlib` needs, while the app runs. The frames account for
    // the whole payload and for every file.
    let when = |path: &str| listed(files, "path", path)["when"].clone();
    for path in [
        "bin/python.real",
        "lib/libc.so.6",
        "lib/ld-linux-x86-64.so.2",
    ] {
        assert_eq!(when(path), "start", "{path}");
    }
    assert_eq!(when("lib/libcrypto.so.3"), "tail");
    let frames = v["frames"].as_array().unwrap();
    let total = |k: &str| frames.iter().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(Some(total("compressed")), v["payload_size"].as_u64());
    assert_eq!(total("files"), files.len() as u64);
    let stored: u64 = files
        .iter()
        .filter(|f| f.get("same_as").is_none())
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(total("unpacked"), stored);
    let in_tail = files.iter().filter(|f| f["when"] == "tail").count();
    // The app's module comes late, and as the app imports it, not before the app starts.
    assert_eq!(when("app/knows.pyc"), "late");
    let late = listed(frames, "frame", "late");
    let as_imported = late["as_imported"].as_u64().unwrap();
    assert!(
        as_imported >= 1 && as_imported <= late["files"].as_u64().unwrap(),
        "{late}"
    );
    let o = pyshrink().arg("inspect").arg(&out).output().unwrap();
    assert_code(&o, 0, "inspect");
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.contains("while the app runs (the tail)"))
        .unwrap_or_else(|| panic!("no tail line in:\n{text}"));
    assert!(line.ends_with(&format!(" {in_tail} files")), "{line}");
    let line = text
        .lines()
        .find(|l| l.contains("while it starts"))
        .unwrap_or_else(|| panic!("no late line in:\n{text}"));
    assert!(
        line.ends_with(&format!(
            "(from disk, {as_imported} modules come as the app imports them)"
        )),
        "{line}"
    );
    let share: f64 = files.iter().map(|f| f["share"].as_f64().unwrap()).sum();
    assert!(
        (share - 1.0).abs() < 0.01,
        "shares add up to the payload: {share}"
    );
    let libc = v["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "libc.so.6")
        .expect("libc listed");
    assert!(
        libc["needed_by"].as_str().unwrap().contains("python"),
        "{libc}"
    );
    let modules = v["modules"].as_array().unwrap();
    let imported_by = |name: &str| listed(modules, "name", name)["imported_by"].clone();
    // The app; hashlib's guarded import, which the app makes real by importing hashlib; the idna
    // codec that sockets use, which the analysis adds; the command line.
    assert_eq!(imported_by("json"), serde_json::json!(["__main__"]));
    assert_eq!(imported_by("_hashlib"), serde_json::json!(["hashlib"]));
    assert_eq!(
        imported_by("stringprep"),
        serde_json::json!(["encodings.idna"])
    );
    assert_eq!(
        imported_by("xml.dom.minidom"),
        serde_json::json!(["--include-module"])
    );
    // `from . import _compiler` (re, 3.11+) names its importer too: nothing comes from nowhere.
    let unexplained: Vec<&serde_json::Value> = modules
        .iter()
        .filter(|m| m["name"] != "__main__")
        .filter(|m| {
            let by = m["imported_by"].as_array().unwrap();
            by.is_empty() || by.iter().any(|b| b == "<entry>")
        })
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:?}");

    // --why walks those reasons back to the app: from OpenSSL's library to the file that needs
    // it, its module, and the imports that reached that module.
    let why = |name: &str| {
        let o = pyshrink()
            .args(["inspect", "--json", "--why", name])
            .arg(&out)
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("inspect --why {name}"));
        let steps: Vec<(String, String)> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().into(),
                    s["reason"].as_str().unwrap().into(),
                )
            })
            .collect();
        steps
    };
    let steps = why("libcrypto.so.3");
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "libcrypto.so.3", "{steps:?}");
    assert!(names[1].contains("/_hashlib."), "{steps:?}");
    assert_eq!(steps[0].1, format!("needed by {}", names[1]), "{steps:?}");
    assert_eq!(names[2..], ["_hashlib", "hashlib", "__main__"], "{steps:?}");
    assert_eq!(steps[3].1, "imported by __main__", "{steps:?}");
    assert_eq!(steps[4].1, "the app", "{steps:?}");
    assert_eq!(
        why("app/knows.pyc"),
        [
            ("app/knows.pyc".to_string(), "the entry script".to_string()),
            ("__main__".to_string(), "the app".to_string())
        ]
    );
    assert_eq!(
        why("xml.dom.minidom"),
        [(
            "xml.dom.minidom".to_string(),
            "named by --include-module".to_string()
        )]
    );
    let o = pyshrink()
        .args(["inspect", "--why", "no_such_module"])
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 1, "inspect --why of a name not in the bundle");
    assert!(
        stderr(&o).contains("`no_such_module` is not a module, library or file of this bundle"),
        "{}",
        stderr(&o)
    );

    let o = pyshrink().arg("inspect").arg(&out).output().unwrap();
    assert_code(&o, 0, "inspect");
    let text = stdout(&o);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(&format!("{:.2} MB", size as f64 / 1e6)),
        "{text}"
    );
    assert!(text.contains("app/knows.pyc") && text.contains("libc.so.6"));

    let o = pyshrink().arg("inspect").arg(&app).output().unwrap();
    assert_code(&o, 1, "inspect of a non-bundle");
    assert!(
        stderr(&o).contains("not a pyshrink bundle"),
        "{}",
        stderr(&o)
    );
}

/// The executable segments of x86-64 libraries are stored through the code filter, and what the
/// launcher unpacks (to disk, and from memory, where the loader maps it) is the host's code.
#[test]
fn filtered_code_unpacks_to_the_hosts_bytes() {
    use goblin::elf::program_header::{PF_X, PT_LOAD};
    let exe_segment = |data: &[u8]| -> Vec<u8> {
        let elf = goblin::elf::Elf::parse(data).unwrap();
        let ph = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.p_flags & PF_X != 0)
            .max_by_key(|p| p.p_filesz)
            .expect("an executable segment");
        data[ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize].to_vec()
    };
    let python = default_python();
    let bin = bundle(&[example("hello/app.py").to_str().unwrap()], &python);

    // The stored bytes differ from the host's: the filter is on.
    let file = std::fs::read(&bin).unwrap();
    let parsed = pyshrink::payload::parse(&file).unwrap();
    let tar = zstd::stream::decode_all(parsed.payload).unwrap();
    let host_libc = std::fs::read("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let code = exe_segment(&host_libc);
    assert!(
        tar.windows(64).any(|w| w == &code[..64]),
        "libc's first code bytes are not stored as they are"
    );
    assert!(
        !tar.windows(4096)
            .any(|w| w == &code[code.len() / 2..code.len() / 2 + 4096]),
        "libc's code is stored unfiltered"
    );
    assert!(
        String::from_utf8_lossy(&tar).contains("PYSHRINK.x86="),
        "no filter record"
    );

    let dir = tempdir();
    let o = std::process::Command::new(&bin)
        .env("PYSHRINK_RUNTIME", "disk")
        .env("PYSHRINK_EXTRACT_DIR", dir.path())
        .output()
        .unwrap();
    assert_code(&o, 0, "hello from disk");
    let root = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("lib").is_dir())
        .expect("an extraction");
    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("pyshrink-inventory.json")).unwrap())
            .unwrap();
    let mut checked = Vec::new();
    for lib in inventory["libraries"].as_array().unwrap() {
        let name = lib["name"].as_str().unwrap();
        let host = std::fs::read(lib["path"].as_str().unwrap()).unwrap();
        let unpacked = std::fs::read(root.join("lib").join(name)).unwrap();
        assert!(
            exe_segment(&unpacked) == exe_segment(&host),
            "{name}: unpacked code differs from the host's"
        );
        checked.push(name.to_owned());
    }
    assert!(checked.iter().any(|n| n == "libc.so.6"), "{checked:?}");
    println!("code of {checked:?} unpacked as on the host");
}
