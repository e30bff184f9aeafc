//! Helpers for the integration tests: the interpreters on this machine, bundles built once per
//! run, and an empty root to run them in (bubblewrap: the root holds only `/app`, `/proc`, `/dev`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

pub fn pyshrink() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pyshrink"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

pub fn scratch_dir() -> PathBuf {
    let dir = repo().join("target/test-scratch");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("t")
        .tempdir_in(scratch_dir())
        .unwrap()
}

/// Writes `contents` to `path` as an executable file (mode 0755).
pub fn write_executable(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// What `python -c code` prints, without the final newline; the command must succeed.
pub fn python_says(python: &Path, code: &str) -> String {
    let o = Command::new(python).args(["-c", code]).output().unwrap();
    assert_code(&o, 0, &format!("{} -c {code:?}", python.display()));
    stdout(&o).trim().to_string()
}

/// What `python -B script` prints; the run must exit 0 (`name` says which interpreter).
pub fn python_prints(python: &Path, script: &Path, name: &str) -> String {
    let o = Command::new(python).arg("-B").arg(script).output().unwrap();
    assert_code(&o, 0, &format!("{name}, python3 {}", script.display()));
    stdout(&o)
}

/// Every interpreter the bundle must work with that is present here: pyenv CPython 3.8-3.13,
/// Debian's python3.11, and a venv of each of pyenv 3.12 and Debian's 3.11.
pub fn interpreters() -> &'static [(String, PathBuf)] {
    static LIST: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut out = Vec::new();
        let pyenv = Path::new("/root/.pyenv/versions");
        for minor in 8..=13 {
            let mut versions: Vec<PathBuf> = std::fs::read_dir(pyenv)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&format!("3.{minor}."))
                })
                .collect();
            versions.sort();
            if let Some(v) = versions.last() {
                let exe = v.join(format!("bin/python3.{minor}"));
                if exe.exists() {
                    out.push((format!("pyenv-3.{minor}"), exe));
                }
            }
        }
        if Path::new("/usr/bin/python3.11").exists() {
            out.push(("debian-3.11".into(), "/usr/bin/python3.11".into()));
        }
        let venvs = scratch_dir().join("venvs");
        let bases: Vec<(String, PathBuf)> = out
            .iter()
            .filter(|(n, _)| n == "pyenv-3.12" || n == "debian-3.11")
            .cloned()
            .collect();
        for (name, exe) in bases {
            let dir = venvs.join(&name);
            if !dir.join("bin/python").exists() {
                let ok = Command::new(&exe)
                    .args(["-m", "venv", "--without-pip"])
                    .arg(&dir)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "failed to create a venv of {name}");
            }
            out.push((format!("venv-{name}"), dir.join("bin/python")));
        }
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        eprintln!("interpreters present: {}", names.join(", "));
        out
    })
}

pub fn interpreter(name: &str) -> Option<PathBuf> {
    interpreters()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
}

/// The interpreter most tests use: pyenv 3.11 if present, else Debian's.
pub fn default_python() -> PathBuf {
    interpreter("pyenv-3.11")
        .or_else(|| interpreter("debian-3.11"))
        .expect("a Python 3.11 is needed for the tests")
}

/// Bundles `app` (a path, or `-m NAME`) with `python`, once per test run for the same inputs.
pub fn bundle(app: &[&str], python: &Path) -> PathBuf {
    /// One slot per bundle, so concurrent tests wait for the same build instead of repeating it.
    type Slots = Mutex<HashMap<String, Arc<Mutex<Option<PathBuf>>>>>;
    static CACHE: OnceLock<Slots> = OnceLock::new();
    let key = format!("{app:?} {}", python.display());
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap();
    if let Some(p) = &*slot {
        return p.clone();
    }
    let out_dir = scratch_dir().join("bundles");
    std::fs::create_dir_all(&out_dir).unwrap();
    let name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = out_dir.join(&name[name.len().saturating_sub(120)..]);
    let res = pyshrink()
        .arg("bundle")
        .args(app)
        .arg("--python")
        .arg(python)
        .args(["--compression-level", "3", "-q", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "bundling {key} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    *slot = Some(out.clone());
    out
}

/// `pyshrink bundle APP --python PYTHON -o OUT`, quiet and quick to compress, without the cache
/// of [`bundle`]: for tests that need their own output file.
pub fn bundle_to(app: &Path, python: &Path, out: &Path) -> Output {
    pyshrink()
        .args(["bundle", "-q", "--compression-level", "3", "--python"])
        .arg(python)
        .arg(app)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// Writes `source` to `<dir>/<name>.py` and bundles it to `<dir>/<name>`, which it returns; the
/// bundling must succeed.
pub fn bundle_source(dir: &Path, name: &str, source: &str, python: &Path) -> PathBuf {
    let app = dir.join(format!("{name}.py"));
    std::fs::write(&app, source).unwrap();
    let out = dir.join(name);
    assert_code(
        &bundle_to(&app, python, &out),
        0,
        &format!("bundle {name}.py"),
    );
    out
}

/// Runs `bundle` on the host in both runtimes (`PYSHRINK_RUNTIME`), unpacking into a directory
/// of its own, with `env` added. Each run must exit 0 and print `expected`.
pub fn assert_prints_on_host_in_both_runtimes(
    bundle: &Path,
    env: &[(&str, &str)],
    expected: &str,
    what: &str,
) {
    let extract = tempdir();
    for runtime in ["disk", "memory"] {
        let o = Command::new(bundle)
            .envs(env.iter().copied())
            .env("PYSHRINK_EXTRACT_DIR", extract.path())
            .env("PYSHRINK_RUNTIME", runtime)
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("{what}, {runtime}"));
        assert_eq!(stdout(&o), expected, "{what}, {runtime}");
    }
}

/// An empty root for bubblewrap: only `/app` (a copy of the bundle), `/proc`, `/dev`.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new(bundle: &Path) -> Root {
        let dir = tempdir();
        let app = dir.path().join("app");
        std::fs::copy(bundle, &app).unwrap();
        std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for d in ["proc", "dev"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Root { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `bwrap` running `/app ARGS` in this root with a clean environment. `extra` goes before
    /// the command (mount and user options).
    pub fn command(&self, writable_root: bool, extra: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new("bwrap");
        cmd.arg(if writable_root { "--bind" } else { "--ro-bind" })
            .arg(self.path())
            .arg("/")
            .args([
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--unshare-pid",
                "--die-with-parent",
            ])
            .args(["--clearenv", "--setenv", "PATH", "/"])
            .args(extra)
            .arg("/app")
            .args(args);
        cmd
    }

    /// Runs `/app` in both runtimes: on a writable root it unpacks to disk, on a read-only one it
    /// runs from memory. Each run must exit 0 and print `expected`.
    pub fn assert_prints_in_both_runtimes(&self, expected: &str, what: &str) {
        for (runtime, writable) in [("disk", true), ("memory", false)] {
            let o = self.command(writable, &[], &[]).output().unwrap();
            assert_code(&o, 0, &format!("{what}, {runtime}"));
            assert_eq!(stdout(&o), expected, "{what}, {runtime}");
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(true, &[], args).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(true, &[], args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Extraction directories (named by content hash) under the root's /tmp cache.
    pub fn extractions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for base in ["tmp/pyshrink-0", ".cache/pyshrink"] {
            if let Ok(rd) = std::fs::read_dir(self.path().join(base)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() && !name.contains('.') {
                        out.push(name);
                    }
                }
            }
        }
        out
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with both streams shown unless the process exited with `code`.
pub fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `path` from loopback:`port`, retrying until `deadline`.
pub fn http_get(port: u16, path: &str, deadline: std::time::Duration) -> Option<String> {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
                return Some(out);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// The last process down the first-child chain from `pid`.
pub fn deepest_descendant(pid: i32) -> i32 {
    let mut pid = pid;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children.split_whitespace().next() {
            Some(c) => pid = c.parse().unwrap(),
            None => return pid,
        }
    }
}

/// What `pyshrink inspect --json` reports of `bundle`.
pub fn inspect_json(bundle: &Path) -> serde_json::Value {
    let o = pyshrink()
        .arg("inspect")
        .arg("--json")
        .arg(bundle)
        .output()
        .unwrap();
    assert_code(&o, 0, "inspect");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The paths of the files `pyshrink inspect --json` lists for `bundle`.
pub fn bundled_files(bundle: &Path) -> Vec<String> {
    inspect_names(bundle, "files", "path")
}

/// The module names `pyshrink inspect --json` lists for `bundle`.
pub fn bundled_modules(bundle: &Path) -> Vec<String> {
    inspect_names(bundle, "modules", "name")
}

fn inspect_names(bundle: &Path, list: &str, key: &str) -> Vec<String> {
    inspect_json(bundle)[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

/// The disk space the files under `path` (or the file itself) take, in bytes of whole blocks.
pub fn disk_used(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .map(|e| std::os::unix::fs::MetadataExt::blocks(&e.metadata().unwrap()) * 512)
        .sum()
}
