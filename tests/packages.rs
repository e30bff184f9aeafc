//! Apps with third-party packages: the flask, crypto and cli examples bundled from a virtualenv
//! and from `-r requirements.txt`, package data, a project directory, what the host quietly
//! provides (CA certificates, time zones), vendored libraries, and pip's failures.
//!
//! The packages come from PyPI: virtualenvs are made under `target/test-scratch/pkg-venvs` and
//! kept between runs (remade when what they install changes).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::util::*;

/// Interpreters every example runs with (those present); the first two are required.
const EXAMPLE_PYTHONS: &[&str] = &["pyenv-3.11", "pyenv-3.12", "debian-3.11"];

/// Printed past the test harness's capture: which interpreters each test ran.
fn announce(what: &str, ran: &[String]) {
    let _ = writeln!(
        std::io::stderr(),
        "packages: {what}: ran {}",
        ran.join(", ")
    );
}

fn example_pythons() -> Vec<(String, PathBuf)> {
    let found: Vec<(String, PathBuf)> = EXAMPLE_PYTHONS
        .iter()
        .filter_map(|n| interpreter(n).map(|p| (n.to_string(), p)))
        .collect();
    for required in &EXAMPLE_PYTHONS[..2] {
        assert!(
            found.iter().any(|(n, _)| n == required),
            "{required} is needed for the package tests"
        );
    }
    found
}

/// What a file or directory holds, for the cache key of a venv.
fn content_key(path: &Path) -> String {
    let mut out = String::new();
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            out.push_str(&content_key(&e));
        }
    } else if let Ok(text) = std::fs::read(path) {
        out.push_str(&format!("{}:{}\n", path.display(), text.len()));
        out.push_str(&String::from_utf8_lossy(&text));
    }
    out
}

/// A virtualenv of `python` with `pip install ARGS` done, made once and kept between runs.
fn venv(tag: &str, python: &Path, pip_args: &[&str]) -> PathBuf {
    type Locks = Mutex<HashMap<String, Arc<Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(tag.to_string())
        .or_default()
        .clone();
    let _guard = lock.lock().unwrap();

    let dir = scratch_dir().join("pkg-venvs").join(tag);
    let stamp = dir.join("pyshrink-test-stamp");
    let mut key = format!("{}\n{pip_args:?}\n", python.display());
    for a in pip_args {
        key.push_str(&content_key(Path::new(a)));
    }
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return dir.join("bin/python");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(python)
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_code(&o, 0, &format!("venv {tag}"));
    let o = Command::new(dir.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(pip_args)
        .output()
        .unwrap();
    assert_code(&o, 0, &format!("pip install {pip_args:?} into venv {tag}"));
    std::fs::write(&stamp, key).unwrap();
    dir.join("bin/python")
}

/// The venv an example's reference run and venv bundle use.
fn example_venv(example_name: &str, py_name: &str, python: &Path) -> PathBuf {
    let req = example(example_name).join("requirements.txt");
    venv(
        &format!("{example_name}-{py_name}"),
        python,
        &["-r", req.to_str().unwrap()],
    )
}

/// `pyshrink bundle ARGS -o OUT`, checked.
fn bundle_with(args: &[&str], out: &Path) -> PathBuf {
    let o = pyshrink()
        .arg("bundle")
        .args(args)
        .args(["--compression-level", "3", "-q", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert_code(&o, 0, &format!("bundle {args:?}"));
    out.to_path_buf()
}

/// The cli example bundled from its venv on the default interpreter, as `bundles_dir()/NAME`.
fn cli_bundle(name: &str) -> PathBuf {
    let venv = example_venv("cli", "default", &default_python());
    let app = example("cli").join("app.py");
    bundle_with(
        &[app.to_str().unwrap(), "--python", venv.to_str().unwrap()],
        &bundles_dir().join(name),
    )
}

fn bundles_dir() -> PathBuf {
    let d = scratch_dir().join("pkg-bundles");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `python ARGS` on the host, as a user would, with a clean environment.
fn host_run(python: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(python)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

fn distributions(info: &serde_json::Value) -> Vec<String> {
    info["distributions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{}=={}",
                        d["name"].as_str().unwrap(),
                        d["version"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The bundles of an example for one interpreter: from its venv, and from `-r`.
fn example_bundles(example_name: &str, py_name: &str, python: &Path) -> Vec<(String, PathBuf)> {
    let app = example(example_name).join("app.py");
    let req = example(example_name).join("requirements.txt");
    let mut out = Vec::new();
    if !py_name.starts_with("debian") {
        let venv_python = example_venv(example_name, py_name, python);
        let b = bundle_with(
            &[
                app.to_str().unwrap(),
                "--python",
                venv_python.to_str().unwrap(),
            ],
            &bundles_dir().join(format!("{example_name}-{py_name}-venv")),
        );
        out.push((format!("{py_name} venv"), b));
    }
    let b = bundle_with(
        &[
            app.to_str().unwrap(),
            "-r",
            req.to_str().unwrap(),
            "--python",
            python.to_str().unwrap(),
        ],
        &bundles_dir().join(format!("{example_name}-{py_name}-req")),
    );
    out.push((format!("{py_name} -r"), b));
    out
}

/// A command-line example: each argument list gives the same stdout and exit status in the
/// empty root as `python app.py` in its venv on the host.
fn check_cli_example(example_name: &str, runs: &[&[&str]], must_have: &[&str]) {
    let mut ran = Vec::new();
    let dir = example(example_name);
    for (py_name, python) in example_pythons() {
        // Debian's python has no venv module without python3-venv; its reference is pyenv 3.11's
        // venv: the same Python minor version and the same pinned packages.
        let reference_python = if py_name.starts_with("debian") {
            example_venv(
                example_name,
                "pyenv-3.11",
                &interpreter("pyenv-3.11").unwrap(),
            )
        } else {
            example_venv(example_name, &py_name, &python)
        };
        for (how, bundle) in example_bundles(example_name, &py_name, &python) {
            let info = inspect_json(&bundle);
            let dists = distributions(&info);
            for want in must_have {
                assert!(
                    dists.iter().any(|d| d.starts_with(want)),
                    "{example_name} {how}: distribution {want} missing from {dists:?}"
                );
            }
            let root = Root::new(&bundle);
            for args in runs {
                let mut host_args = vec!["app.py"];
                host_args.extend_from_slice(args);
                let want = host_run(&reference_python, &host_args, &dir);
                let got = root.run(args);
                assert_eq!(
                    got.status.code(),
                    want.status.code(),
                    "{example_name} {how} {args:?}: exit status\nstderr: {}",
                    stderr(&got)
                );
                let want_out = stdout(&want);
                assert_eq!(
                    stdout(&got),
                    want_out,
                    "{example_name} {how} {args:?}: stdout\nstderr: {}",
                    stderr(&got)
                );
                // A read-only root with nothing writable: the memory runtime.
                let got = root.command(false, &[], args).output().unwrap();
                assert_eq!(
                    (got.status.code(), stdout(&got)),
                    (want.status.code(), want_out),
                    "{example_name} {how} {args:?}: in memory\nstderr: {}",
                    stderr(&got)
                );
            }
            ran.push(how);
        }
    }
    announce(example_name, &ran);
}

#[test]
fn cli_example_from_venv_and_requirements() {
    check_cli_example(
        "cli",
        &[
            &["greet", "Ada", "--times", "3", "--shout"],
            &["stats", "the", "quick", "brown", "fox"],
            &["info"],
            &["greet"],
            &["greet", "Ada", "--times", "99"],
        ],
        &["click==8.1.7"],
    );
}

#[test]
fn crypto_example_from_venv_and_requirements() {
    check_cli_example("crypto", &[&[]], &["pycryptodome==3.20.0"]);
}

/// A distribution's test suite and the native libraries that nothing reached loads stay out of
/// the bundle, with a warning that names them; a module reached only by a computed name comes
/// back, with the libraries it loads, through --include-module.
#[test]
fn unreached_tests_and_native_libraries_of_a_distribution_are_left_out() {
    let Some(python) = interpreter("pyenv-3.11").or_else(|| interpreter("pyenv-3.12")) else {
        println!("skipped: no pyenv 3.11 or 3.12");
        return;
    };
    let venv_python = example_venv("crypto", "pyenv-3.11", &python);
    let dir = tempdir();
    let app = dir.path().join("ecc.py");
    std::fs::write(
        &app,
        "import importlib\n\
         from Crypto.Cipher import AES\n\
         ECC = importlib.import_module('Crypto.PublicKey.' + 'ECC')\n\
         key = ECC.construct(curve='P-256', d=123456789)\n\
         print(key.public_key().export_key(format='OpenSSH'))\n\
         print(AES.new(bytes(16), AES.MODE_ECB).encrypt(bytes(16)).hex())\n",
    )
    .unwrap();
    let want = host_run(&venv_python, &["ecc.py"], dir.path());
    assert_code(&want, 0, "ecc.py on the host");

    let plain = dir.path().join("plain");
    let o = pyshrink()
        .arg("bundle")
        .arg(&app)
        .arg("--python")
        .arg(&venv_python)
        .args(["--compression-level", "3", "-o"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_code(&o, 0, "bundle");
    let warning = stderr(&o);
    assert!(
        warning.contains("left out of pycryptodome its tests (Crypto/SelfTest")
            && warning.contains("native libraries nothing imports or names")
            && warning.contains("--include-module"),
        "{warning}"
    );
    let listed = bundled_files(&plain);
    assert!(
        !listed.iter().any(|f| f.contains("/Crypto/SelfTest/")),
        "test suite bundled"
    );
    assert!(
        !listed.iter().any(|f| f.contains("/_ec_ws.")),
        "_ec_ws bundled"
    );
    assert!(
        listed
            .iter()
            .any(|f| f.contains("/Crypto/Cipher/_raw_aes.")),
        "_raw_aes, which AES names, is missing"
    );
    assert!(
        listed
            .iter()
            .any(|f| f.ends_with("/Crypto/PublicKey/ECC.pyc")),
        "pure-Python modules of the distribution stay"
    );
    let o = Command::new(&plain)
        .env("PYSHRINK_RUNTIME", "memory")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("Crypto/PublicKey/ECC.py"),
        "ECC without its library: {}",
        stderr(&o)
    );

    let included = dir.path().join("included");
    bundle_with(
        &[
            app.to_str().unwrap(),
            "--python",
            venv_python.to_str().unwrap(),
            "--include-module",
            "Crypto.PublicKey.ECC",
        ],
        &included,
    );
    assert!(bundled_files(&included)
        .iter()
        .any(|f| f.contains("/_ec_ws.")));
    for runtime in ["disk", "memory"] {
        let o = Command::new(&included)
            .env("PYSHRINK_RUNTIME", runtime)
            .env("PYSHRINK_EXTRACT_DIR", dir.path().join("x"))
            .output()
            .unwrap();
        assert_eq!(
            (o.status.code(), stdout(&o)),
            (want.status.code(), stdout(&want)),
            "{runtime}: {}",
            stderr(&o)
        );
    }
}

/// What the flask example does in one life: its stdout (port masked) and the bodies of GET /,
/// /versions and a missing page.
fn flask_session(
    mut child: std::process::Child,
    port: u16,
    pid: impl Fn(&std::process::Child) -> i32,
) -> (String, Vec<String>) {
    let mut bodies = Vec::new();
    for path in ["/", "/versions", "/missing"] {
        let Some(reply) = http_get(port, path, Duration::from_secs(30)) else {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "no answer on port {port} for {path}; stderr: {}",
                stderr(&o)
            )
        };
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap_or("").to_string();
        bodies.push(format!("{status} {body}"));
    }
    // SAFETY: plain kill(2) on a process this test started.
    unsafe { libc::kill(pid(&child), libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0, "flask example: exit on SIGTERM");
    (stdout(&o).replace(&port.to_string(), "PORT"), bodies)
}

/// [`flask_session`] of a flask bundle in the empty root `root`.
fn flask_session_in(root: &Root, writable: bool) -> (String, Vec<String>) {
    let port = free_port();
    let child = root
        .command(writable, &["--setenv", "PORT", &port.to_string()], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // bwrap runs its own init in the new PID namespace; the app is the deepest descendant.
    flask_session(child, port, |c| deepest_descendant(c.id() as i32))
}

#[test]
fn flask_example_serves_json_from_venv_and_requirements() {
    let app = example("flask/app.py");
    let mut ran = Vec::new();
    for (py_name, python) in example_pythons() {
        let reference_python = if py_name.starts_with("debian") {
            example_venv("flask", "pyenv-3.11", &interpreter("pyenv-3.11").unwrap())
        } else {
            example_venv("flask", &py_name, &python)
        };
        let port = free_port();
        let host = Command::new(&reference_python)
            .arg(&app)
            .env_clear()
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let want = flask_session(host, port, |c| c.id() as i32);
        assert!(want.1[0].starts_with("HTTP/1.1 200"), "{:?}", want.1);
        assert!(want.0.contains("listening on port PORT"), "{}", want.0);
        for (how, bundle) in example_bundles("flask", &py_name, &python) {
            let dists = distributions(&inspect_json(&bundle));
            for d in [
                "Flask==3.0.3",
                "Werkzeug==3.0.6",
                "Jinja2==3.1.4",
                "MarkupSafe==2.1.5",
            ] {
                assert!(
                    dists.iter().any(|x| x.eq_ignore_ascii_case(d)),
                    "{how}: {d} missing from {dists:?}"
                );
            }
            let root = Root::new(&bundle);
            // Extracted (writable root), then from memory (read-only root, nothing writable).
            for writable in [true, false] {
                let got = flask_session_in(&root, writable);
                assert_eq!(got, want, "flask {how}, writable root: {writable}");
            }
            ran.push(how);
        }
    }
    announce("flask", &ran);
}

/// The flask example with what the README's size recipe excludes (OpenSSL, readline, lzma, bz2,
/// ctypes, the C decimal): none of those files is in the bundle, decimal comes as _pydecimal, the
/// bundle is smaller by at least OpenSSL's libraries, and it serves the same pages in the empty
/// root.
#[test]
fn flask_example_with_optional_c_modules_excluded() {
    let py_name = "pyenv-3.11";
    let Some(python) = interpreter(py_name) else {
        eprintln!("flask with exclusions: no {py_name}, skipped");
        return;
    };
    let venv_python = example_venv("flask", py_name, &python);
    let app = example("flask/app.py");
    let excluded = [
        "ssl",
        "_hashlib",
        "readline",
        "lzma",
        "bz2",
        "ctypes",
        "multiprocessing.sharedctypes",
        "_decimal",
    ];
    let mut args = vec![
        app.to_str().unwrap(),
        "--python",
        venv_python.to_str().unwrap(),
    ];
    let full = bundle_with(&args, &bundles_dir().join("flask-full"));
    for name in excluded {
        args.extend(["--exclude-module", name]);
    }
    let small = bundle_with(&args, &bundles_dir().join("flask-excluded"));

    let info = inspect_json(&small);
    let files = bundled_files(&small);
    for gone in [
        "libssl.so",
        "libcrypto.so",
        "/_ssl.",
        "/_hashlib.",
        "/readline.",
        "/_lzma.",
        "/_bz2.",
        "/_ctypes.",
        "/_decimal.",
        "libreadline",
        "liblzma",
        "libffi",
    ] {
        assert!(!files.iter().any(|f| f.contains(gone)), "{gone} bundled");
    }
    let modules: Vec<&str> = info["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        modules.contains(&"decimal") && modules.contains(&"_pydecimal"),
        "{modules:?}"
    );
    let size = |b: &Path| std::fs::metadata(b).unwrap().len();
    let openssl: u64 = inspect_json(&full)["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"].as_str().unwrap().contains("libcrypto"))
        .map(|f| f["compressed_estimate"].as_u64().unwrap())
        .sum();
    assert!(openssl > 0, "the full bundle has libcrypto");
    assert!(
        size(&small) + openssl < size(&full),
        "{} + {openssl} against {}",
        size(&small),
        size(&full)
    );

    let serve = |bundle: &Path| flask_session_in(&Root::new(bundle), true);
    assert_eq!(serve(&small), serve(&full));
    announce("flask with exclusions", &[format!("{py_name} venv")]);
}

/// Package data read relative to `__file__` and through importlib.resources, in a package
/// installed from a directory with pyproject.toml: run with -m from a venv, and bundled from
/// the project directory itself (installed for the bundle, run through its console script).
#[test]
fn package_data_with_dash_m_and_from_a_project_directory() {
    let project = example("phrasebook");
    let mut ran = Vec::new();
    let py311 = interpreter("pyenv-3.11").expect("pyenv 3.11");
    let py312 = interpreter("pyenv-3.12").expect("pyenv 3.12");
    let venv_python = venv(
        "phrasebook-pyenv-3.12",
        &py312,
        &[project.to_str().unwrap()],
    );
    let elsewhere = tempdir();
    let want = host_run(
        &venv_python,
        &["-m", "phrasebook", "fr", "ja"],
        elsewhere.path(),
    );
    assert_code(&want, 0, "phrasebook on the host");
    assert!(
        stdout(&want).contains("Phrasebook: Good morning"),
        "{}",
        stdout(&want)
    );

    // -m from the venv's site-packages, bundled from a directory where the package is not.
    let out = bundles_dir().join("phrasebook-m");
    let o = pyshrink()
        .current_dir(elsewhere.path())
        .args(["bundle", "-m", "phrasebook", "--python"])
        .arg(&venv_python)
        .args(["--compression-level", "3", "-q", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 0, "bundle -m phrasebook");
    let root = Root::new(&out);
    let got = root.run(&["fr", "ja"]);
    assert_code(&got, 0, "-m phrasebook in the empty root");
    assert_eq!(stdout(&got), stdout(&want));
    // From memory: the data is read through `__file__` and `importlib.resources` from the zip.
    let got = root.command(false, &[], &["fr", "ja"]).output().unwrap();
    assert_code(&got, 0, "-m phrasebook in memory");
    assert_eq!(stdout(&got), stdout(&want), "in memory");
    assert!(distributions(&inspect_json(&out)).contains(&"phrasebook==1.2.0".to_string()));
    ran.push("pyenv-3.12 venv -m".to_string());

    // The project directory: pip installs it for the bundle; its one console script runs.
    for (py_name, python) in [
        ("pyenv-3.11", &py311),
        (
            "venv-debian-3.11",
            &interpreter("venv-debian-3.11").unwrap_or(py311.clone()),
        ),
    ] {
        let out = bundles_dir().join(format!("phrasebook-project-{py_name}"));
        bundle_with(
            &[
                project.to_str().unwrap(),
                "--python",
                python.to_str().unwrap(),
            ],
            &out,
        );
        let got = Root::new(&out).run(&["fr", "ja"]);
        assert_code(&got, 0, &format!("phrasebook project with {py_name}"));
        assert_eq!(stdout(&got), stdout(&want), "{py_name}");
        let memory = ["--setenv", "PYSHRINK_RUNTIME", "memory"];
        let got = Root::new(&out)
            .command(true, &memory, &["fr", "ja"])
            .output()
            .unwrap();
        assert_code(
            &got,
            0,
            &format!("phrasebook project with {py_name}, memory"),
        );
        assert_eq!(stdout(&got), stdout(&want), "{py_name}, memory");
        let got = Root::new(&out).run(&["xx"]);
        assert_code(&got, 2, "unknown language");
        assert!(stderr(&got).contains("unknown language: xx"));
        ran.push(format!("{py_name} project"));
    }

    // --entry names the console script; a wrong name lists the ones there are.
    let out = bundles_dir().join("phrasebook-entry");
    bundle_with(
        &[
            project.to_str().unwrap(),
            "--entry",
            "phrasebook",
            "--python",
            py311.to_str().unwrap(),
        ],
        &out,
    );
    let o = pyshrink()
        .args(["bundle", "-q", "--entry", "nope", "--python"])
        .arg(&py311)
        .arg(&project)
        .arg("-o")
        .arg(bundles_dir().join("never"))
        .output()
        .unwrap();
    assert_code(&o, 1, "--entry nope");
    assert!(
        stderr(&o).contains("no console script `nope`") && stderr(&o).contains("phrasebook"),
        "{}",
        stderr(&o)
    );
    assert!(!bundles_dir().join("never").exists());
    announce("phrasebook", &ran);
}

const HOST_DATA_APP: &str = r#"
import json, ssl, sys
try:
    import zoneinfo
except ImportError:
    zoneinfo = None
from datetime import datetime
out = {"x509_ca": ssl.create_default_context().cert_store_stats()["x509_ca"]}
if zoneinfo is not None:
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        out["paris_summer"] = str(datetime(2024, 7, 1, 12, tzinfo=paris).utcoffset())
        out["paris_winter"] = str(datetime(2024, 1, 1, 12, tzinfo=paris).utcoffset())
        out["zones"] = len(zoneinfo.available_timezones()) > 300
    except zoneinfo.ZoneInfoNotFoundError as e:
        out["error"] = type(e).__name__
print(json.dumps(out, sort_keys=True))
"#;

/// An app with no certifi and no tzdata: the build host's CA certificates and zone database come
/// along, SSL_CERT_FILE still wins, and --no-ca-certs / --no-tzdata leave them out.
#[test]
fn host_ca_certificates_and_time_zones_in_empty_root() {
    let dir = tempdir();
    let app = dir.path().join("hostdata.py");
    std::fs::write(&app, HOST_DATA_APP).unwrap();
    let mut ran = Vec::new();
    for name in [
        "pyenv-3.11",
        "pyenv-3.12",
        "debian-3.11",
        "pyenv-3.8",
        "pyenv-3.13",
    ] {
        let Some(python) = interpreter(name) else {
            continue;
        };
        let has_zoneinfo = name != "pyenv-3.8";
        let out = dir.path().join(format!("hostdata-{name}"));
        bundle_with(
            &[app.to_str().unwrap(), "--python", python.to_str().unwrap()],
            &out,
        );
        let root = Root::new(&out);
        let o = root.run(&[]);
        assert_code(&o, 0, name);
        // From memory (read-only root): _ssl loads libssl and libcrypto from memory files, the
        // CA file and the zone database are read from the in-memory zip. The same answers.
        let m = root.command(false, &[], &[]).output().unwrap();
        assert_code(&m, 0, &format!("{name}, memory"));
        assert_eq!(stdout(&m), stdout(&o), "{name}: memory and disk agree");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert!(v["x509_ca"].as_u64().unwrap() > 0, "{name}: {v}");
        if has_zoneinfo {
            assert_eq!(v["paris_summer"], "2:00:00", "{name}: {v}");
            assert_eq!(v["paris_winter"], "1:00:00", "{name}: {v}");
            assert_eq!(v["zones"], true, "{name}: {v}");
        } else {
            assert!(v.get("paris_summer").is_none(), "{name}: {v}");
        }
        let files = bundled_files(&out);
        assert!(
            files.iter().any(|f| f == "share/pyshrink/cacert.pem"),
            "{name}"
        );
        assert_eq!(
            files
                .iter()
                .any(|f| f.starts_with("share/pyshrink/zoneinfo/")),
            has_zoneinfo,
            "{name}"
        );
        assert!(
            !files
                .iter()
                .any(|f| f.contains("zoneinfo/right/") || f.contains("zoneinfo/posix/")),
            "{name}: leap-second and posix copies stay out"
        );

        // The user's own SSL_CERT_FILE is the only CA file then (OpenSSL reads it, -E or not).
        let one = root.path().join("one.pem");
        let all = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
        let end = "-----END CERTIFICATE-----";
        let first = &all[..all.find(end).unwrap() + end.len()];
        std::fs::write(&one, format!("{first}\n")).unwrap();
        let o = root
            .command(true, &["--setenv", "SSL_CERT_FILE", "/one.pem"], &[])
            .output()
            .unwrap();
        assert_code(&o, 0, name);
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["x509_ca"], 1, "{name}: SSL_CERT_FILE wins: {v}");
        ran.push(name.to_string());
    }
    assert!(ran.len() >= 2, "{ran:?}");

    let python = default_python();
    let out = dir.path().join("hostdata-none");
    bundle_with(
        &[
            app.to_str().unwrap(),
            "--no-ca-certs",
            "--no-tzdata",
            "--python",
            python.to_str().unwrap(),
        ],
        &out,
    );
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "without host data");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["x509_ca"], 0, "{v}");
    assert_eq!(v["error"], "ZoneInfoNotFoundError", "{v}");
    assert!(!bundled_files(&out).iter().any(|f| f.starts_with("share/")));
    announce("host CA certificates and time zones", &ran);
}

/// A wheel's vendored libraries (pyzmq.libs/) are found through `$ORIGIN` in the empty root;
/// with one deleted from the venv, the build names it.
#[test]
fn vendored_libraries_and_a_missing_one() {
    let python = interpreter("pyenv-3.11").expect("pyenv 3.11");
    let venv_python = venv("pyzmq-pyenv-3.11", &python, &["pyzmq==26.2.0"]);
    let dir = tempdir();
    let app = dir.path().join("zmqping.py");
    std::fs::write(
        &app,
        "import zmq\nctx = zmq.Context()\na = ctx.socket(zmq.PAIR)\na.bind('inproc://x')\n\
         b = ctx.socket(zmq.PAIR)\nb.connect('inproc://x')\na.send(b'ping')\nprint(b.recv().decode())\n",
    )
    .unwrap();
    let out = dir.path().join("zmqping");
    bundle_with(
        &[
            app.to_str().unwrap(),
            "--python",
            venv_python.to_str().unwrap(),
        ],
        &out,
    );
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "pyzmq in the empty root");
    assert_eq!(stdout(&o), "ping\n");
    let files = bundled_files(&out);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("lib/python3.11/site-packages/pyzmq.libs/libzmq-")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.starts_with("lib/libzmq")),
        "vendored libraries stay in place, not copied to lib/: {files:?}"
    );

    // A copy of the venv with the vendored libzmq deleted.
    let venv_dir = venv_python.parent().unwrap().parent().unwrap();
    let broken = dir.path().join("broken-venv");
    let o = Command::new("cp")
        .arg("-a")
        .arg(venv_dir)
        .arg(&broken)
        .output()
        .unwrap();
    assert_code(&o, 0, "copy the venv");
    let libs = broken.join("lib/python3.11/site-packages/pyzmq.libs");
    let libzmq = std::fs::read_dir(&libs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libzmq-"))
        .expect("pyzmq vendors libzmq");
    std::fs::remove_file(libs.join(&libzmq)).unwrap();
    let out = dir.path().join("zmqping-broken");
    let o = pyshrink()
        .args(["bundle", "-q"])
        .arg(&app)
        .arg("--python")
        .arg(broken.join("bin/python"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 1, "bundle with a vendored library missing");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("library `{libzmq}` needed by"))
            && err.contains("not found")
            && err.contains("_zmq"),
        "{err}"
    );
    assert!(!out.exists(), "no output file on failure");
    announce("vendored libraries", &["pyenv-3.11 venv".to_string()]);
}

/// A requirements file that is not there, and one pip cannot satisfy: one clear error each,
/// pip's own words in the second, no output file.
#[test]
fn requirements_errors() {
    let python = default_python();
    let dir = tempdir();
    let app = example("cli/app.py");
    let out = dir.path().join("out");
    let o = pyshrink()
        .args(["bundle", "-q"])
        .arg(&app)
        .args(["-r", "no-such-requirements.txt", "--python"])
        .arg(&python)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 1, "missing requirements file");
    let err = stderr(&o);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .contains("requirements file `no-such-requirements.txt` does not exist"),
        "{err}"
    );
    assert!(!out.exists());

    let req = dir.path().join("requirements.txt");
    std::fs::write(&req, "click==999.0\n").unwrap();
    let o = pyshrink()
        .args(["bundle", "-q"])
        .arg(&app)
        .arg("-r")
        .arg(&req)
        .arg("--python")
        .arg(&python)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 1, "unsatisfiable requirement");
    let err = stderr(&o);
    assert!(err.contains("pip failed to install"), "{err}");
    assert!(err.contains("click==999.0"), "pip's output is shown: {err}");
    assert!(!out.exists());
}

/// Files with the same bytes are stored once: each more copy adds a link, not its bytes, and
/// every name reads back whole, unpacked to disk (checked again by `PYSHRINK_VERIFY=1`) and in
/// the memory runtime, which keeps ELF files apart from the rest. `inspect` names the file each
/// copy shares its bytes with.
#[test]
fn identical_files_are_stored_once() {
    use sha2::Digest;
    let python = default_python();
    println!("interpreter: {}", python.display());
    let dir = tempdir();
    // Incompressible, so that a stored copy shows in the bundle's size.
    let noise = |seed: u64| -> Vec<u8> {
        let mut x = seed;
        (0..1_500_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let (blob, other) = (noise(7), noise(8));
    let elf = std::fs::read(&python).unwrap();
    let deep = format!("deep/{}", "d".repeat(110));
    let three = format!("{deep}/three.bin");
    let names = [
        "one.bin",
        "two.bin",
        &three,
        "other.bin",
        "tool-a",
        "tool-b",
    ];
    let app = dir.path().join("reader.py");
    std::fs::write(
        &app,
        format!(
            "import hashlib, os\nhere = os.path.join(os.path.dirname(__file__), 'assets')\n\
             for p in {names:?}:\n\
             \x20   data = open(os.path.join(here, p), 'rb').read()\n\
             \x20   print(p, len(data), hashlib.sha256(data).hexdigest()[:16])\n"
        ),
    )
    .unwrap();
    let build = |name: &str, copies: &[(&str, &[u8])]| -> PathBuf {
        let assets = dir.path().join(format!("{name}-assets"));
        std::fs::create_dir_all(assets.join(&deep)).unwrap();
        for (path, bytes) in copies {
            std::fs::write(assets.join(path), bytes).unwrap();
        }
        bundle_with(
            &[
                app.to_str().unwrap(),
                "--python",
                python.to_str().unwrap(),
                "--include-data",
                &format!("{}:assets", assets.display()),
            ],
            &dir.path().join(name),
        )
    };
    let once = build(
        "once",
        &[("one.bin", &blob), ("other.bin", &other), ("tool-a", &elf)],
    );
    let copies: Vec<(&str, &[u8])> = names
        .iter()
        .map(|&n| match n {
            "other.bin" => (n, &other[..]),
            n if n.starts_with("tool") => (n, &elf[..]),
            n => (n, &blob[..]),
        })
        .collect();
    let thrice = build("thrice", &copies);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let grown = size(&thrice).saturating_sub(size(&once));
    assert!(
        grown < 16 * 1024,
        "three more copies (3 MB and an ELF file) added {grown} bytes"
    );

    // The bundler strips the ELF file's debug information, so its copies are compared with
    // each other; the rest with the bytes bundled.
    let digest = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let root = Root::new(&thrice);
    for (what, extra) in [
        ("first start", &[][..]),
        ("verified start", &["--setenv", "PYSHRINK_VERIFY", "1"][..]),
        (
            "memory runtime",
            &["--setenv", "PYSHRINK_RUNTIME", "memory"][..],
        ),
    ] {
        let o = root.command(true, extra, &[]).output().unwrap();
        assert_code(&o, 0, what);
        assert!(
            !stderr(&o).contains("does not match"),
            "{what}: {}",
            stderr(&o)
        );
        let out = stdout(&o);
        let read: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
        assert_eq!(read.len(), names.len(), "{what}: {out}");
        for (name, bytes) in &copies {
            if !name.starts_with("tool") {
                let want = format!("{} {}", bytes.len(), digest(bytes));
                assert_eq!(read[name], want, "{what}: {name}");
            }
        }
        assert_eq!(read["tool-a"], read["tool-b"], "{what}");
    }

    let files = inspect_json(&thrice)["files"].as_array().unwrap().clone();
    let same_as = |name: &str| {
        let path = format!("app/assets/{name}");
        files
            .iter()
            .find(|f| f["path"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not listed"))["same_as"]
            .as_str()
            .map(|s| s.trim_start_matches("app/assets/").to_string())
    };
    // The first copy in path order holds the bytes.
    for (name, first) in [
        (three.as_str(), None),
        ("one.bin", Some(three.as_str())),
        ("two.bin", Some(three.as_str())),
        ("other.bin", None),
        ("tool-a", None),
        ("tool-b", Some("tool-a")),
    ] {
        assert_eq!(same_as(name).as_deref(), first, "{name}");
    }
}

/// --include-data copies files and directories next to the app, where `__file__` finds them.
#[test]
fn include_data_lands_next_to_the_app() {
    let python = default_python();
    let dir = tempdir();
    let app = dir.path().join("reader.py");
    std::fs::write(
        &app,
        "import os\nhere = os.path.dirname(__file__)\n\
         for p in ('assets/a.txt', 'assets/sub/b.txt', 'notes.txt', 'conf/settings.ini'):\n\
         \x20   print(p, open(os.path.join(here, p)).read().strip())\n",
    )
    .unwrap();
    let assets = dir.path().join("assets-src");
    std::fs::create_dir_all(assets.join("sub")).unwrap();
    std::fs::write(assets.join("a.txt"), "alpha").unwrap();
    std::fs::write(assets.join("sub/b.txt"), "beta").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "gamma").unwrap();
    std::fs::write(dir.path().join("settings.ini"), "delta").unwrap();
    let out = dir.path().join("reader");
    bundle_with(
        &[
            app.to_str().unwrap(),
            "--python",
            python.to_str().unwrap(),
            "--include-data",
            &format!("{}:assets", assets.display()),
            "--include-data",
            dir.path().join("notes.txt").to_str().unwrap(),
            "--include-data",
            &format!(
                "{}:conf/settings.ini",
                dir.path().join("settings.ini").display()
            ),
        ],
        &out,
    );
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "include-data");
    assert_eq!(
        stdout(&o),
        "assets/a.txt alpha\nassets/sub/b.txt beta\nnotes.txt gamma\nconf/settings.ini delta\n"
    );

    let o = pyshrink()
        .args(["bundle", "-q"])
        .arg(&app)
        .arg("--python")
        .arg(&python)
        .arg("--include-data")
        .arg(format!("{}:../outside", assets.display()))
        .arg("-o")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert_code(&o, 1, "include-data outside the app");
    assert!(
        stderr(&o).contains("leaves the app's directory"),
        "{}",
        stderr(&o)
    );
}

/// The cli example's click files and extension modules come in the late frame (the modules in its
/// tail), which the launcher unpacks while the interpreter starts and the app runs: the first run
/// imports from it (the app waits for it, and for each module of the tail); an extraction whose
/// late frame was cut short (no manifest copy yet, files missing) is unpacked again; and a late
/// frame that cannot be written stops the app where it needs what is missing, before it prints,
/// with the launcher's I/O status.
#[test]
fn late_frame_is_waited_for_and_never_trusted_half_done() {
    let bundle = cli_bundle("cli-late");
    let bytes = std::fs::read(&bundle).unwrap();
    let tail = String::from_utf8_lossy(&bytes[bytes.len() - 2048..]).into_owned();
    assert!(tail.contains("\nlate_frame="), "no late frame:\n{tail}");
    let greet = ["greet", "Ada", "--times", "2"];
    let want = "1. Hello, Ada!\n2. Hello, Ada!\n";

    let root = Root::new(&bundle);
    let o = root.run(&greet);
    assert_code(&o, 0, "first run");
    assert_eq!(stdout(&o), want);
    let ext = root
        .path()
        .join("tmp/pyshrink-0")
        .join(&root.extractions()[0]);
    let manifest = ext.join("pyshrink.manifest");
    assert!(manifest.is_file(), "the extraction is complete");
    // Disk usage of the whole extraction, for a /tmp just too small for it below.
    let used = disk_used(&root.path().join("tmp"));

    // As if the late frame's process had been killed: no manifest copy, files missing.
    std::fs::remove_file(&manifest).unwrap();
    let click = std::fs::read_dir(ext.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages/click"))
        .find(|p| p.is_dir())
        .expect("click in site-packages");
    std::fs::remove_dir_all(&click).unwrap();
    let o = root.run(&greet);
    assert_code(&o, 0, "run after a cut-short late frame");
    assert_eq!(stdout(&o), want);
    assert!(manifest.is_file() && click.join("core.pyc").is_file());

    // The frames before the tail fit, and its first 64 KiB.
    let tail_list = std::fs::read_to_string(ext.join(pyshrink_stub::TAIL_LIST_FILE)).unwrap();
    let tail_used: u64 = tail_list.lines().map(|f| disk_used(&ext.join(f))).sum();
    let size = (used - tail_used + 16 * 4096).to_string();
    let small = Root::new(&bundle);
    let o = small
        .command(true, &["--size", &size, "--tmpfs", "/tmp"], &greet)
        .output()
        .unwrap();
    assert_code(&o, 116, "late frame on a full disk");
    assert_eq!(stdout(&o), "", "the app ran");
    let err = stderr(&o);
    assert!(
        err.contains("no space left on device") && err.contains("not completely unpacked"),
        "{err}"
    );
}

/// From memory, too, the interpreter starts while the late frame is unpacked (its memory files
/// made first, as many as the manifest says), and the app runs only once the files before the
/// tail are in: a late frame that does not unpack as the manifest says (the tail's list tells how
/// many memory files the tail takes) stops the run before the app starts.
#[test]
fn memory_runtime_waits_for_the_late_frame() {
    let bundle = cli_bundle("cli-memory-late");
    let good = std::fs::read(&bundle).unwrap();
    let parsed = pyshrink::payload::parse(&good).unwrap();
    assert!(parsed.manifest.late_frame > 0, "no late frame");
    let count = parsed.manifest.late_memory_files;
    assert!(count > 0, "no extension module in the late frame");
    let greet = ["greet", "Ada", "--times", "2"];

    // Nothing writable: the memory runtime.
    let o = Root::new(&bundle)
        .command(false, &[], &greet)
        .output()
        .unwrap();
    assert_code(&o, 0, "from memory");
    assert_eq!(stdout(&o), "1. Hello, Ada!\n2. Hello, Ada!\n");

    // The same payload with a manifest (hashed anew) that miscounts the late memory files.
    let dir = tempdir();
    for (wrong, says) in [
        (count - 1, "more memory files"),
        (count + 1, "fewer memory files"),
    ] {
        let mut manifest = parsed.manifest.clone();
        manifest.late_memory_files = wrong;
        let bad = dir.path().join(format!("late-{wrong}"));
        write_executable(
            &bad,
            pyshrink::payload::assemble(parsed.stub, parsed.payload, &manifest),
        );
        let o = Root::new(&bad)
            .command(false, &[], &greet)
            .output()
            .unwrap();
        assert_code(
            &o,
            pyshrink_stub::exit::IO,
            &format!("late_memory_files={wrong}"),
        );
        assert_eq!(stdout(&o), "", "the app ran");
        let err = stderr(&o);
        assert!(
            err.contains(says) && err.contains(pyshrink_stub::LATE_FRAME_FAILED),
            "{err}"
        );
    }
}
