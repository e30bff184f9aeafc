//! The memory runtime: bundles run with a read-only root and nothing writable anywhere, write
//! nothing, and keep `sys.executable`, subprocess and multiprocessing working.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::util::*;

fn probe(python: &Path) -> std::path::PathBuf {
    bundle(
        &[repo().join("tests/fixtures/probe/app.py").to_str().unwrap()],
        python,
    )
}

/// Every path under `dir` with its size and mode: what a run must leave as it found it.
fn snapshot(dir: &Path) -> BTreeSet<(String, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| !["proc", "dev"].contains(&e.file_name().to_str().unwrap_or("")))
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.path().display().to_string(), m.len(), m.mode())
        })
        .collect()
}

/// hello on every interpreter, in a read-only root with nothing writable: as root and as uid
/// 65532, the same output as from an extraction, and the root unchanged.
#[test]
fn hello_runs_from_memory_in_a_read_only_root() {
    let mut ran = Vec::new();
    for (name, python) in interpreters() {
        let bundle = bundle(&[example("hello/app.py").to_str().unwrap()], python);
        let disk = Root::new(&bundle).run(&["a b", "ü"]);
        assert_code(&disk, 0, &format!("{name}: extracted"));
        let root = Root::new(&bundle);
        let before = snapshot(root.path());
        for user in [
            &[][..],
            &["--unshare-user", "--uid", "65532", "--gid", "65532"][..],
        ] {
            let o = root.command(false, user, &["a b", "ü"]).output().unwrap();
            assert_code(&o, 0, &format!("{name} {user:?}: from memory"));
            assert_eq!(stdout(&o), stdout(&disk), "{name} {user:?}");
            assert_eq!(stderr(&o), "", "{name} {user:?}");
        }
        assert_eq!(
            before,
            snapshot(root.path()),
            "{name}: the root is unchanged"
        );
        ran.push(name.as_str());
    }
    assert!(!ran.is_empty(), "no interpreter found");
    eprintln!("memory runtime ran with: {}", ran.join(", "));
}

/// subprocess with `sys.executable`, multiprocessing's spawn start method, and where the
/// interpreter says it is, from memory.
#[test]
fn sys_executable_subprocess_and_spawn_work_from_memory() {
    let mut ran = Vec::new();
    for (name, python) in interpreters() {
        let bundle = probe(python);
        let root = Root::new(&bundle);
        let run = |args: &[&str]| {
            let o = root.command(false, &[], args).output().unwrap();
            assert_code(&o, 0, &format!("{name} {args:?}"));
            stdout(&o)
        };
        let version = python_says(python, "import sys; print('%d.%d' % sys.version_info[:2])");
        assert_eq!(
            run(&["subprocess"]),
            format!("{version}\n[]\n"),
            "{name}: the child is the bundled Python and sees no PYTHON*/LD_* variables"
        );
        assert_eq!(run(&["spawn"]), "[1, 4, 9]\n", "{name}");
        let paths: serde_json::Value = serde_json::from_str(&run(&["paths"])).unwrap();
        assert_eq!(
            paths["executable"], "/app",
            "{name}: sys.executable is the bundle"
        );
        assert_eq!(run(&["env"]), "{}\n", "{name}: no PYTHON* variables leak");
        ran.push(name.as_str());
    }
    eprintln!(
        "memory runtime subprocess/spawn ran with: {}",
        ran.join(", ")
    );
}

/// Proof that nothing is written: under strace, a run that starts a `sys.executable` child makes
/// no call that creates, changes or removes a file; every open is read-only; the payload goes
/// into memory files, in both processes.
#[test]
fn memory_runtime_writes_nothing() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace not installed");
        return;
    }
    let python = default_python();
    let bundle = probe(&python);
    let home = tempdir();
    let log = home.path().join("strace.txt");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg("-e")
        .arg(
            "trace=creat,open,openat,openat2,mkdir,mkdirat,rename,renameat,renameat2,link,\
             linkat,symlink,symlinkat,unlink,unlinkat,rmdir,truncate,ftruncate,mknod,mknodat,\
             chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,utimensat,memfd_create",
        )
        .arg(&bundle)
        .arg("subprocess")
        .env_clear()
        .env("HOME", home.path())
        .env("PYSHRINK_RUNTIME", "memory")
        .output()
        .unwrap();
    assert_code(&o, 0, "probe subprocess under strace");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut memfd_pids = BTreeSet::new();
    let mut opens = 0;
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("---") || call.starts_with("+++") || call.contains("resumed>") {
            continue;
        }
        if call.starts_with("memfd_create(") {
            memfd_pids.insert(pid.to_string());
        } else if call.starts_with("open") {
            opens += 1;
            assert!(
                call.contains("O_RDONLY") && !call.contains("O_CREAT"),
                "an open that could write: {line}"
            );
        } else {
            panic!("a call that changes the file system: {line}");
        }
    }
    assert!(opens > 0, "strace saw no opens: {text}");
    assert!(
        memfd_pids.len() >= 2,
        "the bundle and its sys.executable child both run from memory files: {memfd_pids:?}"
    );
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        1,
        "only the strace log in HOME"
    );
}

/// `bundle --runtime` sets the default, `PYSHRINK_RUNTIME` overrides it, a bad value is a clear
/// error, and a damaged bundle never runs from memory either.
#[test]
fn runtime_choice_and_damage() {
    let python = default_python();
    let dir = tempdir();
    let hello = example("hello/app.py");
    let build = |runtime: &str| {
        let out = dir.path().join(format!("hello-{runtime}"));
        let o = pyshrink()
            .args(["bundle", hello.to_str().unwrap(), "--runtime", runtime])
            .args(["--compression-level", "3", "-q", "--python"])
            .arg(&python)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("bundle --runtime {runtime}"));
        out
    };

    // memory by default: a writable /tmp stays unused.
    let memory = build("memory");
    let o = pyshrink().arg("inspect").arg(&memory).output().unwrap();
    assert!(stdout(&o).contains(", runtime memory, "), "{}", stdout(&o));
    let root = Root::new(&memory);
    std::fs::create_dir(root.path().join("tmp")).unwrap();
    let o = root.run(&["x"]);
    assert_code(&o, 0, "--runtime memory");
    assert!(stdout(&o).contains("arg: x"));
    assert!(root.extractions().is_empty(), "nothing extracted");
    let o = root
        .command(true, &["--setenv", "PYSHRINK_RUNTIME", "disk"], &["x"])
        .output()
        .unwrap();
    assert_code(&o, 0, "PYSHRINK_RUNTIME=disk over --runtime memory");
    assert_eq!(root.extractions().len(), 1);

    // disk by default: no fallback to memory when nothing is writable.
    let root = Root::new(&build("disk"));
    let o = root.command(false, &[], &["x"]).output().unwrap();
    assert_code(
        &o,
        pyshrink_stub::exit::NO_EXTRACT_DIR,
        "--runtime disk, read-only",
    );
    let o = root
        .command(false, &["--setenv", "PYSHRINK_RUNTIME", "memory"], &["x"])
        .output()
        .unwrap();
    assert_code(&o, 0, "PYSHRINK_RUNTIME=memory over --runtime disk");

    let o = root
        .command(false, &["--setenv", "PYSHRINK_RUNTIME", "ram"], &["x"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains("PYSHRINK_RUNTIME `ram`") && err.contains("memory, disk"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "one error line and a hint: {err}");

    // A flipped payload byte, or a flipped frame checksum (which decompresses as before, so only
    // the content hash catches it), in either frame: refused before anything runs.
    let good = std::fs::read(build("auto")).unwrap();
    let parsed = pyshrink::payload::parse(&good).unwrap();
    let payload_at = parsed.trailer.payload_offset() as usize;
    let second_frame = parsed.manifest.second_frame as usize;
    let manifest_at = parsed.trailer.manifest_offset() as usize;
    assert!(second_frame > 0, "the payload comes in two frames");
    for (what, at) in [
        ("payload byte", payload_at + 1000),
        ("first frame's checksum", payload_at + second_frame - 1),
        ("second frame's checksum", manifest_at - 1),
    ] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x20;
        let bad = dir.path().join("bad");
        std::fs::write(&bad, &bytes).unwrap();
        let root = Root::new(&bad);
        let o = root.command(false, &[], &["x"]).output().unwrap();
        assert_code(&o, pyshrink_stub::exit::CORRUPT, what);
        assert!(
            !stdout(&o).contains("Hello"),
            "{what}: the app must not start"
        );
    }
}
