//! PID 1, races, hostile directories and what an empty root lacks.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

fn probe() -> std::path::PathBuf {
    bundle(
        &[repo().join("tests/fixtures/probe/app.py").to_str().unwrap()],
        &default_python(),
    )
}

/// As PID 1 of a new PID namespace (`bwrap --as-pid-1`), an app with no signal handlers stops
/// on SIGTERM with status 143 (Python alone as PID 1 ignores SIGTERM), and orphans are reaped.
#[test]
fn pid_1_forwards_signals_and_reaps_orphans() {
    let root = Root::new(&probe());
    let mut child = root
        .command(true, &["--as-pid-1"], &["sleep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until Python runs (it prints), then signal the launcher: PID 1 inside, bwrap's child.
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"sleeping");
    let launcher =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let launcher: i32 = launcher.split_whitespace().next().unwrap().parse().unwrap();
    let start = Instant::now();
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(launcher, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");

    let o = root
        .command(true, &["--as-pid-1"], &["orphans"])
        .output()
        .unwrap();
    assert_code(&o, 0, "orphans");
    assert_eq!(stdout(&o), "zombies: 0\n");
}

/// 16 first runs at once: all succeed, one extraction.
#[test]
fn sixteen_simultaneous_first_runs() {
    let root = Root::new(&probe());
    let children: Vec<_> = (0..16)
        .map(|_| {
            root.command(true, &[], &["argv0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_code(&o, 0, "simultaneous run");
        assert_eq!(stdout(&o), "/app\n");
    }
    assert_eq!(root.extractions().len(), 1);
}

/// A first run killed with SIGKILL while extracting leaves nothing a later run trusts; the next
/// run succeeds and removes the stale work dir.
#[test]
fn killed_extraction_is_never_trusted() {
    let root = Root::new(&probe());
    let cache = root.path().join("tmp/pyshrink-0");
    let mut killed_mid_way = false;
    for delay_ms in [2u64, 5, 10, 20, 40] {
        let _ = std::fs::remove_dir_all(&cache);
        let mut child = root
            .command(true, &[], &["argv0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // bwrap --die-with-parent is not enough: kill the launcher itself too.
        let names: Vec<String> = std::fs::read_dir(&cache)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n.ends_with(".work")) && root.extractions().is_empty() {
            killed_mid_way = true;
            break;
        }
    }
    assert!(killed_mid_way, "could not catch an extraction in progress");
    let o = root.run(&["argv0"]);
    assert_code(&o, 0, "run after a killed extraction");
    assert_eq!(root.extractions().len(), 1);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".work"))
        .collect();
    assert!(left.is_empty(), "stale work dir left behind");
}

/// Extraction roots and directories that belong to someone else, are writable by others or are
/// symlinks are never used.
#[test]
fn hostile_directories_are_refused() {
    let bundle = probe();
    type Make = fn(&std::path::Path);
    let cases: [(&str, Make); 3] = [
        ("owned by another user", |d| {
            std::fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(1234), Some(1234)).unwrap();
        }),
        ("world-writable", |d| {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }),
        ("a symlink", |d| {
            std::fs::create_dir_all(d.parent().unwrap().join("elsewhere")).unwrap();
            std::os::unix::fs::symlink("elsewhere", d).unwrap();
        }),
    ];
    for (what, make) in cases {
        // The per-user root under /tmp.
        let root = Root::new(&bundle);
        let tmp = root.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        make(&tmp.join("pyshrink-0"));
        let disk = ["--setenv", "PYSHRINK_RUNTIME", "disk"];
        let o = root.command(true, &disk, &["argv0"]).output().unwrap();
        assert_code(
            &o,
            pyshrink_stub::exit::NO_EXTRACT_DIR,
            &format!("root {what}"),
        );
        assert!(
            stderr(&o).contains("refused") || stderr(&o).contains("writable by group"),
            "{what}: {}",
            stderr(&o)
        );
        assert!(!root
            .path()
            .join("tmp/elsewhere")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false));

        // A pre-made extraction directory inside our own root: replaced by a fresh one.
        let root = Root::new(&bundle);
        let o = root.run(&["argv0"]);
        assert_code(&o, 0, "first run");
        let key = root.extractions().pop().unwrap();
        let dir = root.path().join("tmp/pyshrink-0").join(&key);
        std::fs::remove_dir_all(&dir).unwrap();
        make(&dir);
        let o = root.run(&["argv0"]);
        assert_code(&o, 0, &format!("extraction dir {what}"));
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir(), "{what}: replaced by a real directory");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0, "{what}");
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{what}: private");
    }
}

/// `PYSHRINK_VERIFY=1` notices an extraction changed after the fact and extracts again.
#[test]
fn verify_re_extracts_a_tampered_extraction() {
    let root = Root::new(&probe());
    assert_code(&root.run(&["argv0"]), 0, "first run");
    let key = root.extractions().pop().unwrap();
    let app = root
        .path()
        .join("tmp/pyshrink-0")
        .join(&key)
        .join("app/app.pyc");
    let mut code = std::fs::read(&app).unwrap();
    let n = code.len();
    code[n - 3] ^= 0xff;
    std::fs::write(&app, &code).unwrap();
    let o = root
        .command(true, &["--setenv", "PYSHRINK_VERIFY", "1"], &["argv0"])
        .output()
        .unwrap();
    assert_code(&o, 0, "verified run");
    assert!(
        stderr(&o).contains("does not match the bundle"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "/app\n");
    let extra = root
        .path()
        .join("tmp/pyshrink-0")
        .join(&key)
        .join("lib/sitecustomize.pyc");
    std::fs::write(&extra, b"planted").unwrap();
    let o = root
        .command(true, &["--setenv", "PYSHRINK_VERIFY", "1"], &["argv0"])
        .output()
        .unwrap();
    assert_code(&o, 0, "verified run with a planted file");
    assert!(stderr(&o).contains("does not match the bundle"));
    assert!(!extra.exists(), "planted file removed");
}

/// What the empty root lacks: no /etc/passwd (KeyError, getpass falls back), and name lookup
/// with only a runtime-provided /etc/hosts.
#[test]
fn no_passwd_and_runtime_hosts_file() {
    let root = Root::new(&probe());
    let hosts = root.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let o = root
        .command(
            true,
            &[
                "--ro-bind",
                hosts.to_str().unwrap(),
                "/etc/hosts",
                "--setenv",
                "USER",
                "app",
            ],
            &["nss"],
        )
        .output()
        .unwrap();
    assert_code(&o, 0, "nss probe");
    assert_eq!(
        stdout(&o),
        "pwd: KeyError\ngetuser: app\nlocalhost: 127.0.0.1\n"
    );
}

/// The launcher places its unpacking thread on another CPU by changing affinities for a moment:
/// the app still gets the CPUs the bundle was started with, on disk (a first run, which unpacks)
/// and from memory, whether that is every CPU or one.
#[test]
fn the_app_gets_the_cpus_it_was_started_with() {
    use std::os::unix::process::CommandExt;
    let own = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    let first_cpu: usize = own.split(['-', ',']).next().unwrap().parse().unwrap();
    let bundle = probe();
    for (what, pinned) in [("every CPU", false), ("one CPU", true)] {
        let want = if pinned {
            first_cpu.to_string()
        } else {
            own.clone()
        };
        for (runtime, writable) in [("disk", true), ("memory", false)] {
            let root = Root::new(&bundle);
            let mut cmd = root.command(writable, &[], &["cpus"]);
            if pinned {
                // SAFETY: only sched_setaffinity between fork and exec, on a mask built before.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(first_cpu, &mut set);
                    cmd.pre_exec(move || {
                        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let o = cmd.output().unwrap();
            assert_code(&o, 0, &format!("{what}, {runtime}"));
            assert_eq!(stdout(&o).trim(), want, "{what}, {runtime}");
            if writable {
                assert_eq!(root.extractions().len(), 1, "{what}: a first run unpacks");
            }
        }
    }
}
