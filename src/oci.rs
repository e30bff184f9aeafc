//! Container images of a bundle: a Dockerfile the user owns, or an image archive written directly.
//!
//! Both give the same image: `FROM scratch` with `/app` (the bundle), `/etc/passwd` and
//! `/etc/group` naming root and the nonroot user 65532, and a `/tmp` with mode 1777 (the bundle
//! extracts there, and scratch has none), run as 65532 with `/app` as the exec-form entry point.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::{self, Built, Target};
use crate::cli::{AppArgs, DockerfileArgs, ImageArgs};
use crate::payload::write_atomic;
use crate::progress::Progress;
use crate::python::{self, AppEntry, EntryPoint};

/// The user the image runs as: distroless' `nonroot`.
pub const USER: &str = "65532:65532";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n";

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// First line of every Dockerfile pyshrink writes: how a later run knows the directory is its own.
const HEADER: &str = "# Written by `pyshrink dockerfile`";

/// Everything `pyshrink dockerfile` may write into its directory, in either flavour.
const GENERATED: &[&str] = &[
    "data",
    "Dockerfile",
    ".dockerignore",
    "app",
    "pyshrink",
    "pyshrink-stub",
    "rootfs",
    "src",
    "requirements",
];

// ---------------------------------------------------------------------------------------------
// pyshrink dockerfile

pub fn dockerfile_cmd(args: &DockerfileArgs) -> Result<ExitCode> {
    let created = source_date_epoch()?.map(rfc3339);
    let dir = &args.output;
    let quiet = args.app.quiet;
    let earlier = check_dir(dir)?;

    let progress = Progress::new(quiet);
    let written = if args.multi_stage {
        write_multi_stage(args, created.as_deref(), &progress, &earlier)
    } else {
        write_single_stage(args, created.as_deref(), &progress, &earlier)
    };
    progress.finish();
    let (name, summary) = written?;

    if !quiet {
        let image = reference_name(&name);
        let ports: String = ports(&args.port)
            .iter()
            .map(|p| format!(" -p {p}:{p}"))
            .collect();
        let d = shell_word(&dir.display().to_string());
        eprintln!("wrote {}: {summary}", dir.display());
        eprintln!("next:");
        eprintln!("  docker build -t {image} {d}");
        eprintln!("  docker run --rm{ports} {image}");
        eprintln!("  (podman build and podman run take the same arguments)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes `dir` and checks that nothing in it that pyshrink would write belongs to someone else.
/// Returns what an earlier run wrote there, for `clean_dir` once the new files are ready.
fn check_dir(dir: &Path) -> Result<Vec<&'static str>> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    let ours = fs::read_to_string(dir.join("Dockerfile"))
        .map(|t| t.starts_with(HEADER))
        .unwrap_or(false);
    let present: Vec<&str> = GENERATED
        .iter()
        .copied()
        .filter(|n| fs::symlink_metadata(dir.join(n)).is_ok())
        .collect();
    if !ours && !present.is_empty() {
        bail!(
            "`{}` already holds {} not written by pyshrink\n\nhint: pass another -o DIR, or move them away",
            dir.display(),
            present.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(present)
}

/// Removes what an earlier run wrote, so no stale file of it reaches the next build. Runs only
/// after the slow, fallible part (bundling, analysis) succeeded: a failed run leaves the
/// earlier files alone.
fn clean_dir(dir: &Path, earlier: &[&str]) -> Result<()> {
    for name in earlier {
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&path)?;
        let removed = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.with_context(|| {
            format!(
                "failed to remove `{}` (written by an earlier run)",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// The default flavour: the bundle built here, packed `FROM scratch`.
fn write_single_stage(
    args: &DockerfileArgs,
    created: Option<&str>,
    progress: &Progress,
    earlier: &[&str],
) -> Result<(String, String)> {
    let built = bundle::build(&args.app, progress)?;
    print_warnings(&args.app, &built.warnings);
    let dir = &args.output;
    clean_dir(dir, earlier)?;
    write_atomic(&dir.join("app"), &built.bytes, 0o755)?;
    write_rootfs(dir, true)?;

    let version = hex(&Sha256::digest(&built.bytes))[..12].to_string();
    let labels = labels(
        &built.name,
        &built.python,
        Some(&version),
        created,
        source_url(&args.app).as_deref(),
    );
    let mut df = String::new();
    df.push_str(&format!(
        "{HEADER} {VERSION}; running it again replaces this directory's generated files.\n"
    ));
    df.push_str(&format!(
        "# {} (Python {}) as one static executable, in an image with nothing else.\n",
        built.name, built.python
    ));
    df.push_str(
        "# rootfs/tmp must keep mode 1777 (git does not record directory modes): write it again\n",
    );
    df.push_str("# with pyshrink rather than checking it out.\n");
    df.push_str("FROM scratch\n");
    df.push_str(&label_instruction(&labels));
    df.push_str("COPY rootfs/ /\n");
    df.push_str("COPY app /app\n");
    df.push_str(&final_instructions(&args.port));
    write_atomic(&dir.join("Dockerfile"), df.as_bytes(), 0o644)?;
    write_atomic(
        &dir.join(".dockerignore"),
        dockerignore(&["app", "rootfs"]).as_bytes(),
        0o644,
    )?;

    let summary = format!(
        "Dockerfile, .dockerignore, app ({:.2} MB, Python {}), rootfs/",
        built.bytes.len() as f64 / 1e6,
        built.python
    );
    Ok((built.name, summary))
}

/// A file or directory tree for the build context: `from` on this machine, `to` relative to
/// the output directory.
struct ContextCopy {
    from: PathBuf,
    to: PathBuf,
}

/// `--multi-stage`: a builder on the official image of the same Python version installs the
/// requirements and runs pyshrink there; the final stage is the same as the default flavour's.
fn write_multi_stage(
    args: &DockerfileArgs,
    created: Option<&str>,
    progress: &Progress,
    earlier: &[&str],
) -> Result<(String, String)> {
    let dir = &args.output;
    let app = &args.app;
    let (target, name) = bundle::target(app)?;
    let interpreter = python::find_interpreter(app.python.as_deref())?;
    let src = Path::new("src");

    // What the builder gets of the app: a directory app or project whole; for a script or a
    // local module, the modules of the app's directory that the analysis found it importing.
    progress.step("analysing imports");
    let mut warnings = Vec::new();
    let mut copies = Vec::new();
    let no_requirements = app.requirements.is_empty();
    let (version, mut run): (Vec<u32>, Vec<String>) = match &target {
        Target::App(AppEntry::Dir(path))
        | Target::EntryPoint(EntryPoint {
            project: Some(path),
            ..
        }) => {
            let base = dir_name(path)?;
            copies.push(ContextCopy {
                from: path.clone(),
                to: src.join(&base),
            });
            (python::layout(&interpreter)?.version, vec![base])
        }
        Target::App(entry @ AppEntry::Script(path)) => {
            let plan = plan_app(app, entry, &interpreter)?;
            let base = path
                .file_name()
                .context("the app has no file name")?
                .to_string_lossy()
                .into_owned();
            copies.push(ContextCopy {
                from: path.clone(),
                to: src.join(&base),
            });
            let app_dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            copies.extend(app_modules(&plan, app_dir, src)?);
            (plan.layout.version, vec![base])
        }
        Target::App(entry @ AppEntry::Module(module)) => {
            let top = module.split('.').next().unwrap_or(module);
            let here = Path::new(".");
            let local = here.join(top).is_dir() || here.join(format!("{top}.py")).is_file();
            let version = if local {
                let plan = plan_app(app, entry, &interpreter)?;
                copies.extend(app_modules(&plan, here, src)?);
                plan.layout.version
            } else {
                if no_requirements {
                    warnings.push(format!(
                        "module `{top}` is not in the current directory, so the builder stage finds it only if \
                         a requirements file (-r) installs it"
                    ));
                }
                python::layout(&interpreter)?.version
            };
            (version, vec!["-m".into(), module.clone()])
        }
        Target::EntryPoint(EntryPoint { project: None, .. }) => {
            if no_requirements {
                warnings.push(
                    "--entry without APP runs a console script of an installed distribution, so the \
                     builder stage finds it only if a requirements file (-r) installs it"
                        .into(),
                );
            }
            (python::layout(&interpreter)?.version, Vec::new())
        }
    };
    let [major, minor, patch] = version[..] else {
        bail!(
            "interpreter `{}` reported version {version:?}",
            interpreter.display()
        );
    };
    // A module installed from the requirements leaves nothing to copy; an empty `src/` would
    // not survive a git checkout, and COPY fails on a missing source.
    let has_src = !copies.is_empty();

    let (requirement_copies, requirements) = requirements(&app.requirements, &mut warnings)?;
    copies.extend(requirement_copies);
    // --include-data sources, each under its own numbered directory so equal names never meet.
    let mut data_args = Vec::new();
    for (i, (source, dest)) in bundle::include_data(&app.include_data)?
        .into_iter()
        .enumerate()
    {
        let base = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        data_args.push(format!("/data/{i}/{base}:{dest}"));
        copies.push(ContextCopy {
            from: source,
            to: Path::new("data").join(i.to_string()).join(base),
        });
    }
    let has_data = !data_args.is_empty();
    if let Some(stub) = &app.stub {
        copies.push(ContextCopy {
            from: stub.clone(),
            to: "pyshrink-stub".into(),
        });
    }
    let exe = std::env::current_exe().context("failed to find the pyshrink executable to copy")?;
    print_warnings(app, &warnings);

    clean_dir(dir, earlier)?;
    let out_canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    for c in &copies {
        if c.from.is_dir() {
            copy_tree(&c.from, &dir.join(&c.to), &out_canon)?;
        } else {
            copy_file(&c.from, &dir.join(&c.to))?;
        }
    }
    copy_file(&exe, &dir.join("pyshrink"))?;
    write_rootfs(dir, false)?;

    // The requirements go into a virtualenv in their own layer; pyshrink bundles from it
    // rather than installing them again.
    let python_in_builder = if requirements.is_empty() {
        "/usr/local/bin/python3"
    } else {
        "/venv/bin/python"
    };
    run.splice(0..0, ["pyshrink".to_string(), "bundle".to_string()]);
    if let Some(entry) = &app.entry {
        run.extend(["--entry".into(), entry.clone()]);
    }
    run.extend(["--python".into(), python_in_builder.into()]);
    for d in data_args {
        run.extend(["--include-data".into(), d]);
    }
    if app.no_ca_certs {
        run.push("--no-ca-certs".into());
    }
    if app.no_tzdata {
        run.push("--no-tzdata".into());
    }
    if app.stdlib != "auto" {
        run.extend(["--stdlib".into(), app.stdlib.clone()]);
    }
    for m in &app.include_module {
        run.extend(["--include-module".into(), m.clone()]);
    }
    for m in &app.exclude_module {
        run.extend(["--exclude-module".into(), m.clone()]);
    }
    run.extend([
        "--compression-level".into(),
        app.compression_level.to_string(),
    ]);
    let mut allowed = vec!["pyshrink", "rootfs"];
    if app.stub.is_some() {
        run.extend(["--stub".into(), "/usr/local/lib/pyshrink-stub".into()]);
        allowed.push("pyshrink-stub");
    }
    run.extend(["-o".into(), "/rootfs/app".into()]);

    let python = format!("{major}.{minor}.{patch}");
    let labels = labels(&name, &python, None, created, source_url(app).as_deref());
    let mut df = String::new();
    df.push_str(&format!(
        "{HEADER} {VERSION}; running it again replaces this directory's generated files.\n"
    ));
    df.push_str(&format!(
        "# {name} (Python {python}): bundled in a builder stage, then copied into an image with nothing else.\n"
    ));
    df.push_str(&format!("FROM python:{python}-slim AS builder\n"));
    df.push_str("ENV PIP_DISABLE_PIP_VERSION_CHECK=1\n");
    df.push_str("WORKDIR /src\n");
    // Requirements before the code: editing the app reuses the layer with the installed packages.
    if !requirements.is_empty() {
        allowed.push("requirements");
        df.push_str("COPY requirements/ /requirements/\n");
        let files: String = requirements
            .iter()
            .map(|r| format!(" -r {}", shell_word(&format!("/requirements/{r}"))))
            .collect();
        df.push_str(&format!(
            "RUN python3 -m venv /venv \\\n    && /venv/bin/pip install --no-cache-dir{files}\n"
        ));
    }
    df.push_str("COPY pyshrink /usr/local/bin/pyshrink\n");
    if app.stub.is_some() {
        df.push_str("COPY pyshrink-stub /usr/local/lib/pyshrink-stub\n");
    }
    // Modes set here rather than taken from the build context, which a checkout may have changed.
    df.push_str("COPY rootfs/ /rootfs/\n");
    df.push_str("RUN mkdir -m 1777 /rootfs/tmp && chmod -R u=rwX,go=rX /rootfs/etc\n");
    if has_data {
        allowed.push("data");
        df.push_str("COPY data/ /data/\n");
    }
    if has_src {
        allowed.push("src");
        df.push_str("COPY src/ /src/\n");
    }
    df.push_str(&format!("RUN {}\n", serde_json::to_string(&run)?));
    df.push('\n');
    df.push_str("FROM scratch\n");
    df.push_str(&label_instruction(&labels));
    df.push_str("COPY --from=builder /rootfs/ /\n");
    df.push_str(&final_instructions(&args.port));
    write_atomic(&dir.join("Dockerfile"), df.as_bytes(), 0o644)?;
    let mut ignore = dockerignore(&allowed);
    ignore.push_str("**/__pycache__\n**/*.pyc\n");
    write_atomic(&dir.join(".dockerignore"), ignore.as_bytes(), 0o644)?;

    let items: Vec<String> = allowed
        .iter()
        .map(|a| match dir.join(a).is_dir() {
            true => format!("{a}/"),
            false => a.to_string(),
        })
        .collect();
    let summary = format!(
        "Dockerfile (builder on python:{python}-slim), .dockerignore, {}",
        items.join(", ")
    );
    Ok((name, summary))
}

/// The analysis alone (no libraries, no compression): which modules of the app's directory it uses.
fn plan_app(app: &AppArgs, entry: &AppEntry, interpreter: &Path) -> Result<python::Plan> {
    let stage = tempfile::Builder::new()
        .prefix("pyshrink-stage")
        .tempdir()
        .context("failed to create a staging directory")?;
    python::plan(
        interpreter,
        &python::PlanRequest {
            entry,
            stage: stage.path(),
            stdlib_all: app.stdlib == "all",
            include: &app.include_module,
            exclude: &app.exclude_module,
        },
    )
}

/// The top-level modules and packages of `app_dir` that the plan found the app importing, to
/// copy under `dest`.
fn app_modules(plan: &python::Plan, app_dir: &Path, dest: &Path) -> Result<Vec<ContextCopy>> {
    let tops: BTreeSet<&str> = plan
        .modules
        .iter()
        .filter(|m| m.origin == "app" && m.name != "__main__")
        .map(|m| m.name.split('.').next().unwrap_or(&m.name))
        .collect();
    let mut out = Vec::new();
    for top in tops {
        let package = app_dir.join(top);
        if package.is_dir() {
            out.push(ContextCopy {
                from: package,
                to: dest.join(top),
            });
            continue;
        }
        let entries = fs::read_dir(app_dir)
            .with_context(|| format!("failed to read `{}`", app_dir.display()))?;
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let is_module = file == format!("{top}.py")
                || (file.starts_with(&format!("{top}.")) && file.ends_with(".so"));
            if is_module && e.path().is_file() {
                out.push(ContextCopy {
                    from: e.path(),
                    to: dest.join(&file),
                });
            }
        }
    }
    Ok(out)
}

/// Directories never worth sending to a builder: caches, version control, virtualenvs.
fn skipped_dir(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    matches!(
        &*name,
        "__pycache__"
            | ".git"
            | ".hg"
            | ".svn"
            | ".tox"
            | ".nox"
            | ".mypy_cache"
            | ".pytest_cache"
            | ".ruff_cache"
    ) || name.ends_with(".egg-info")
        || path.join("pyvenv.cfg").is_file()
}

/// Copies a directory tree (following symbolic links) without caches, `.pyc` files, version
/// control, virtualenvs, or `skip` (the output directory, when it is inside the app).
fn copy_tree(from: &Path, to: &Path, skip: &Path) -> Result<()> {
    let walker = walkdir::WalkDir::new(from)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() > 0
                && e.file_type().is_dir()
                && (skipped_dir(e.path()) || same_file(e.path(), skip)))
        });
    for entry in walker {
        let entry = entry.with_context(|| format!("failed to walk `{}`", from.display()))?;
        let rel = entry
            .path()
            .strip_prefix(from)
            .expect("walkdir stays under its root");
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target)
                .with_context(|| format!("failed to create `{}`", target.display()))?;
        } else if entry.file_type().is_file() && entry.path().extension().is_none_or(|e| e != "pyc")
        {
            copy_file(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize().map(|a| a == b).unwrap_or(false)
}

/// Copies a file's bytes with mode 0755 if it was executable, else 0644.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("failed to read `{}`", from.display()))?;
    let exec = fs::metadata(from)?.permissions().mode() & 0o111 != 0;
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create `{}`", parent.display()))?;
    }
    write_atomic(to, &bytes, if exec { 0o755 } else { 0o644 })
}

fn dir_name(path: &Path) -> Result<String> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("failed to resolve `{}`", path.display()))?;
    Ok(canon
        .file_name()
        .context("the app directory has no name")?
        .to_string_lossy()
        .into_owned())
}

/// The requirements files and the files they include with `-r`/`-c`, to copy under
/// `requirements/` at their paths relative to the directory all of them share, so includes
/// still resolve; and the paths there of the files given on the command line.
fn requirements(
    files: &[PathBuf],
    warnings: &mut Vec<String>,
) -> Result<(Vec<ContextCopy>, Vec<String>)> {
    if files.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut all: Vec<PathBuf> = Vec::new();
    let mut todo: Vec<PathBuf> = Vec::new();
    let mut top = Vec::new();
    for f in files {
        let canon = f.canonicalize().map_err(|e| {
            anyhow::anyhow!("requirements file `{}` cannot be read: {e}\n\nhint: pass the path of a pip requirements file to -r", f.display())
        })?;
        top.push(canon.clone());
        todo.push(canon);
    }
    while let Some(file) = todo.pop() {
        if all.contains(&file) {
            continue;
        }
        let text = fs::read_to_string(&file)
            .with_context(|| format!("failed to read `{}`", file.display()))?;
        let base = file
            .parent()
            .expect("a canonical file path has a parent")
            .to_path_buf();
        for line in text.lines() {
            let line = line.split(" #").next().unwrap_or("").trim();
            if let Some(inc) = included_file(line) {
                if inc.contains("://") {
                    // pip fetches a URL itself, in the builder as here.
                    continue;
                }
                let path = base.join(inc);
                let canon = path.canonicalize().map_err(|e| {
                    anyhow::anyhow!(
                        "`{}` includes `{inc}`, which cannot be read: {e}",
                        file.display()
                    )
                })?;
                todo.push(canon);
            } else if line.starts_with("-e ")
                || line.starts_with("--editable")
                || line.starts_with("./")
                || line.starts_with("../")
                || line.starts_with('/')
                || line.starts_with("file:")
            {
                warnings.push(format!(
                    "requirement `{line}` in `{}` names a local path, which the builder stage does not have",
                    file.display()
                ));
            }
        }
        all.push(file);
    }
    let mut root = all[0].parent().expect("a file has a parent").to_path_buf();
    for f in &all {
        while !f.starts_with(&root) {
            root = root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
        }
    }
    let rel = |f: &PathBuf| {
        f.strip_prefix(&root)
            .expect("under the common root")
            .to_path_buf()
    };
    let copies = all
        .iter()
        .map(|f| ContextCopy {
            from: f.clone(),
            to: Path::new("requirements").join(rel(f)),
        })
        .collect();
    let names = top
        .iter()
        .map(|f| rel(f).to_string_lossy().into_owned())
        .collect();
    Ok((copies, names))
}

/// The file a requirements line includes with `-r`, `--requirement`, `-c` or `--constraint`.
fn included_file(line: &str) -> Option<&str> {
    for opt in ["--requirement", "--constraint", "-r", "-c"] {
        if let Some(rest) = line.strip_prefix(opt) {
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            if opt.len() == 2
                || rest.len() < line.len() - opt.len()
                || rest.starts_with(char::is_whitespace)
            {
                let f = rest.trim();
                if !f.is_empty() {
                    return Some(f);
                }
            }
        }
    }
    None
}

/// `rootfs/etc/{passwd,group}` and, for the single-stage flavour, `rootfs/tmp` with mode 1777,
/// which `COPY rootfs/ /` keeps (BuildKit and buildah copy the context's modes).
fn write_rootfs(dir: &Path, with_tmp: bool) -> Result<()> {
    let etc = dir.join("rootfs/etc");
    fs::create_dir_all(&etc).with_context(|| format!("failed to create `{}`", etc.display()))?;
    fs::set_permissions(dir.join("rootfs"), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755))?;
    write_atomic(&etc.join("passwd"), PASSWD.as_bytes(), 0o644)?;
    write_atomic(&etc.join("group"), GROUP.as_bytes(), 0o644)?;
    if with_tmp {
        let tmp = dir.join("rootfs/tmp");
        fs::create_dir_all(&tmp)
            .with_context(|| format!("failed to create `{}`", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
            .with_context(|| format!("failed to set the mode of `{}`", tmp.display()))?;
    }
    Ok(())
}

/// An allow-list: the build context holds only what the Dockerfile copies.
fn dockerignore(allowed: &[&str]) -> String {
    let mut s = String::from("# Only what the Dockerfile copies goes into the build context.\n*\n");
    for a in allowed {
        s.push_str(&format!("!{a}\n"));
    }
    s
}

fn label_instruction(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", dockerfile_quote(v)))
        .collect();
    format!("LABEL {}\n", parts.join(" \\\n      "))
}

fn final_instructions(port_args: &[u16]) -> String {
    let mut s = format!("USER {USER}\n");
    let ports = ports(port_args);
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        s.push_str(&format!("EXPOSE {}\n", list.join(" ")));
    }
    s.push_str("ENTRYPOINT [\"/app\"]\n");
    s
}

/// A double-quoted Dockerfile word: `\`, `"` and `$` (variable expansion) escaped.
fn dockerfile_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A POSIX shell word: as is when plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | ':' | '=' | '+' | '@' | ',')
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// pyshrink image

pub fn image_cmd(args: &ImageArgs) -> Result<ExitCode> {
    if let Some(out) = &args.output {
        if out.is_dir() {
            bail!(
                "output `{}` is a directory\n\nhint: pass the path of the archive to write, e.g. `-o {}/image.tar`",
                out.display(),
                out.display()
            );
        }
    }
    let env = image_env(&args.env)?;
    let tag = args.tag.as_deref().map(parse_reference).transpose()?;
    let epoch = source_date_epoch()?.unwrap_or(0);

    let progress = Progress::new(args.app.quiet);
    let built = bundle::build(&args.app, &progress);
    progress.finish();
    let built = built?;
    print_warnings(&args.app, &built.warnings);

    let short = hex(&Sha256::digest(&built.bytes))[..12].to_string();
    let (name, tag) = match tag {
        Some((name, Some(tag))) => (name, tag),
        Some((name, None)) => (name, short),
        None => (reference_name(&built.name), short),
    };
    let image = Image {
        app: &built,
        name: &name,
        tag: &tag,
        env,
        ports: ports(&args.port),
        epoch,
        source: source_url(&args.app),
    };
    let archive = image.archive()?;

    let output = match &args.output {
        Some(p) => p.clone(),
        None => {
            let dir = PathBuf::from("dist");
            fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("failed to create `dist`: {e}"))?;
            dir.join(format!("{}.tar", built.name))
        }
    };
    write_atomic(&output, &archive.bytes, 0o644)?;
    if !args.app.quiet {
        let path = shell_word(&output.display().to_string());
        let ports: String = image.ports.iter().map(|p| format!(" -p {p}:{p}")).collect();
        eprintln!(
            "wrote {} ({:.2} MB): image {name}:{tag}, ID {}, Python {}",
            output.display(),
            archive.bytes.len() as f64 / 1e6,
            &archive.image_id[..19],
            built.python
        );
        eprintln!("next:");
        eprintln!("  docker load -i {path}");
        eprintln!("  docker run --rm{ports} {name}:{tag}");
        eprintln!("  (podman load and podman run take the same arguments)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `PATH=/` (the image has no other directory of programs), then `--env` entries in order; an
/// entry for a name already set replaces it.
fn image_env(entries: &[String]) -> Result<Vec<String>> {
    let mut env = vec!["PATH=/".to_string()];
    for e in entries {
        let Some((key, _)) = e.split_once('=') else {
            bail!("--env `{e}` has no `=`\n\nhint: pass KEY=VALUE, e.g. --env PORT=8080");
        };
        if key.is_empty() || key.contains('\0') || e.contains('\0') {
            bail!("--env `{e}` is not a valid KEY=VALUE\n\nhint: pass KEY=VALUE, e.g. --env PORT=8080");
        }
        let prefix = format!("{key}=");
        env.retain(|x| !x.starts_with(&prefix));
        env.push(e.clone());
    }
    Ok(env)
}

/// Everything the image is made of; the same values give the same bytes.
struct Image<'a> {
    app: &'a Built,
    name: &'a str,
    tag: &'a str,
    env: Vec<String>,
    ports: Vec<u16>,
    epoch: u64,
    source: Option<String>,
}

struct Archive {
    bytes: Vec<u8>,
    /// `sha256:` and the hex digest of the config: what `docker images` and `podman images` show.
    image_id: String,
}

#[derive(Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: String,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'static str,
    os: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    user: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, Empty>,
    env: &'a [String],
    entrypoint: [&'static str; 1],
    working_dir: &'static str,
    labels: BTreeMap<String, String>,
}

/// `{}`: the value of each exposed port.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: [&'a str; 1],
    layers: Vec<String>,
}

impl Image<'_> {
    /// One uncompressed layer (so its digest is also its diff ID), a config, and both a
    /// `docker save` `manifest.json` and an OCI image layout over the same blobs, as
    /// `docker save` writes since Docker 25: `docker load`, `podman load` and OCI tools all read it.
    fn archive(&self) -> Result<Archive> {
        let created = rfc3339(self.epoch);
        let layer = self.layer()?;
        let layer_digest = format!("sha256:{}", hex(&Sha256::digest(&layer)));

        let version = self.tag.to_string();
        let config = ImageConfig {
            created: &created,
            architecture: oci_architecture(),
            os: "linux",
            config: RunConfig {
                user: USER,
                exposed_ports: self
                    .ports
                    .iter()
                    .map(|p| (format!("{p}/tcp"), Empty {}))
                    .collect(),
                env: &self.env,
                entrypoint: ["/app"],
                working_dir: "/",
                labels: labels(
                    &self.app.name,
                    &self.app.python,
                    Some(&version),
                    Some(&created),
                    self.source.as_deref(),
                ),
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: vec![layer_digest.clone()],
            },
            history: vec![History {
                created: &created,
                created_by: format!(
                    "pyshrink {VERSION} image: /app ({}, Python {}), /etc/passwd, /etc/group, /tmp",
                    self.app.name, self.app.python
                ),
            }],
        };
        let config = serde_json::to_vec(&config)?;
        let config_hex = hex(&Sha256::digest(&config));

        let manifest = serde_json::to_vec(&OciManifest {
            schema_version: 2,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            config: Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json",
                digest: format!("sha256:{config_hex}"),
                size: config.len(),
                annotations: None,
            },
            layers: vec![Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar",
                digest: layer_digest.clone(),
                size: layer.len(),
                annotations: None,
            }],
        })?;
        let manifest_hex = hex(&Sha256::digest(&manifest));
        let reference = format!("{}:{}", self.name, self.tag);
        let index = serde_json::to_vec(&OciIndex {
            schema_version: 2,
            media_type: "application/vnd.oci.image.index.v1+json",
            manifests: vec![Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json",
                digest: format!("sha256:{manifest_hex}"),
                size: manifest.len(),
                annotations: Some(BTreeMap::from([
                    (
                        "io.containerd.image.name",
                        full_reference(self.name, self.tag),
                    ),
                    ("org.opencontainers.image.ref.name", self.tag.to_string()),
                ])),
            }],
        })?;
        let layer_hex = &layer_digest["sha256:".len()..];
        let docker_manifest = serde_json::to_vec(&[DockerManifest {
            config: format!("blobs/sha256/{config_hex}"),
            repo_tags: [&reference],
            layers: vec![format!("blobs/sha256/{layer_hex}")],
        }])?;

        let mut files: Vec<(String, &[u8])> = vec![
            (format!("blobs/sha256/{config_hex}"), &config),
            (format!("blobs/sha256/{layer_hex}"), &layer),
            (format!("blobs/sha256/{manifest_hex}"), &manifest),
            ("index.json".into(), &index),
            ("manifest.json".into(), &docker_manifest),
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ];
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tar = TarWriter::new(self.epoch);
        tar.dir("blobs/", 0o755)?;
        tar.dir("blobs/sha256/", 0o755)?;
        for (path, data) in files {
            tar.file(&path, 0o644, data)?;
        }
        Ok(Archive {
            bytes: tar.finish()?,
            image_id: format!("sha256:{config_hex}"),
        })
    }

    /// The image's only layer, in path order.
    fn layer(&self) -> Result<Vec<u8>> {
        let mut tar = TarWriter::new(self.epoch);
        tar.file("app", 0o755, &self.app.bytes)?;
        tar.dir("etc/", 0o755)?;
        tar.file("etc/group", 0o644, GROUP.as_bytes())?;
        tar.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
        tar.dir("tmp/", 0o1777)?;
        tar.finish()
    }
}

/// A tar of entries owned by 0:0 with one fixed mtime.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl TarWriter {
    fn new(mtime: u64) -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            mtime,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .with_context(|| format!("failed to archive `{path}`"))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("failed to archive `{path}`"))
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.builder
            .into_inner()
            .context("failed to finish a tar archive")
    }
}

/// The OCI name of the architecture the bundle (launcher and interpreter) was made for.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `docker.io/library/NAME:TAG` for a short name, as containerd's image store keys it.
fn full_reference(name: &str, tag: &str) -> String {
    let first = name.split('/').next().unwrap_or(name);
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        format!("{name}:{tag}")
    } else if name.contains('/') {
        format!("docker.io/{name}:{tag}")
    } else {
        format!("docker.io/library/{name}:{tag}")
    }
}

// ---------------------------------------------------------------------------------------------
// Shared: labels, names, times

/// OCI annotations with what pyshrink knows: the app's name, its Python, pyshrink's version,
/// the creation time and where the source lives.
fn labels(
    name: &str,
    python: &str,
    version: Option<&str>,
    created: Option<&str>,
    source: Option<&str>,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let key = |k: &str| format!("org.opencontainers.image.{k}");
    l.insert(key("title"), name.to_string());
    l.insert(
        key("description"),
        format!(
            "{name}: Python {python} app bundled into one static executable by pyshrink {VERSION}"
        ),
    );
    if let Some(v) = version {
        l.insert(key("version"), v.to_string());
    }
    if let Some(c) = created {
        l.insert(key("created"), c.to_string());
    }
    if let Some(s) = source {
        l.insert(key("source"), s.to_string());
    }
    l
}

fn print_warnings(app: &AppArgs, warnings: &[String]) {
    if !app.quiet {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
}

fn ports(ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .collect::<BTreeSet<u16>>()
        .into_iter()
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), when set.
fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH `{v}` is not a number of seconds since 1970-01-01\n\nhint: set it to e.g. `$(git log -1 --format=%ct)`, or unset it")
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("SOURCE_DATE_EPOCH is not valid UTF-8"),
    }
}

/// Seconds since 1970 as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date, after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An app name made into a valid image name: lower case, runs of other characters as `-`.
fn reference_name(app: &str) -> String {
    let lower = app.to_ascii_lowercase();
    let mut out = String::new();
    let mut sep = String::new();
    for c in lower.chars() {
        if c.is_ascii_alphanumeric() {
            if !out.is_empty() && !sep.is_empty() {
                out.push_str(if matches!(&*sep, "." | "_" | "__") {
                    &sep
                } else {
                    "-"
                });
            }
            sep.clear();
            out.push(c);
        } else {
            sep.push(c);
        }
    }
    if out.is_empty() {
        "app".into()
    } else {
        out
    }
}

/// Splits and checks `NAME[:TAG]` against the grammar of Docker image references.
fn parse_reference(s: &str) -> Result<(String, Option<String>)> {
    let hint = "hint: pass --tag NAME:TAG, e.g. --tag myapp:1.0 or --tag registry.example.com/team/myapp:1.0";
    if s.contains('@') {
        bail!("--tag `{s}` has a digest; an archive names its image by tag\n\n{hint}");
    }
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match s[last_slash..].rfind(':') {
        Some(i) => (&s[..last_slash + i], Some(&s[last_slash + i + 1..])),
        None => (s, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            bail!("--tag `{s}`: `{t}` is not a valid tag (letters, digits, `_`, `.`, `-`, at most 128, not starting with `.` or `-`)\n\n{hint}");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let domain = parts.remove(0);
        let (host, port) = match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        };
        let host_ok = host.split('.').all(|c| {
            !c.is_empty()
                && !c.starts_with('-')
                && !c.ends_with('-')
                && c.chars().all(|x| x.is_ascii_alphanumeric() || x == '-')
        });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
        {
            bail!("--tag `{s}`: `{domain}` is not a valid registry host\n\n{hint}");
        }
    }
    if name.len() > 255 || parts.is_empty() || !parts.iter().all(|p| path_component_ok(p)) {
        bail!("--tag `{s}`: `{name}` is not a valid image name (lower-case letters and digits, separated by `.`, `_`, `__` or dashes)\n\n{hint}");
    }
    Ok((name.to_string(), tag.map(str::to_string)))
}

fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut sep = String::new();
    for &c in b {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !(sep.is_empty()
                || matches!(&*sep, "." | "_" | "__")
                || sep.bytes().all(|x| x == b'-'))
            {
                return false;
            }
            sep.clear();
        } else if matches!(c, b'.' | b'_' | b'-') {
            sep.push(c as char);
        } else {
            return false;
        }
    }
    true
}

/// The web address of the app's git repository (`remote "origin"`), for the `source` label.
fn source_url(app: &AppArgs) -> Option<String> {
    let start = match &app.app {
        Some(p) if app.module.is_none() => p.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    for dir in start.ancestors() {
        let dotgit = dir.join(".git");
        let config = if dotgit.is_dir() {
            dotgit.join("config")
        } else if dotgit.is_file() {
            // A worktree or submodule: `.git` names the real git directory.
            let text = fs::read_to_string(&dotgit).ok()?;
            let gitdir = dir.join(text.strip_prefix("gitdir:")?.trim());
            match fs::read_to_string(gitdir.join("commondir")) {
                Ok(common) => gitdir.join(common.trim()).join("config"),
                Err(_) => gitdir.join("config"),
            }
        } else {
            continue;
        };
        return origin_url(&fs::read_to_string(config).ok()?).and_then(|u| web_url(&u));
    }
    None
}

fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_origin = line.replace(char::is_whitespace, "") == "[remote\"origin\"]";
        } else if in_origin {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "url" {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// A remote as an `https://` address without credentials or `.git`; `None` for local paths.
fn web_url(url: &str) -> Option<String> {
    let host_path = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(
            scheme,
            "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git"
        ) {
            return None;
        }
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, path) = rest.split_once('/')?;
        // An ssh port is not the web server's.
        let host = if scheme == "https" || scheme == "http" {
            host
        } else {
            host.split(':').next()?
        };
        format!("{host}/{path}")
    } else {
        // scp-like `user@host:path`.
        let (before, path) = url.split_once(':')?;
        if before.contains('/') || path.starts_with("//") {
            return None;
        }
        let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
        format!("{host}/{}", path.trim_start_matches('/'))
    };
    let trimmed = host_path.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let (host, path) = trimmed.split_once('/')?;
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("https://{host}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("hello:1.0").unwrap(),
            ("hello".into(), Some("1.0".into()))
        );
        assert_eq!(parse_reference("hello").unwrap(), ("hello".into(), None));
        assert_eq!(
            parse_reference("localhost:5000/team/my_app:v1").unwrap(),
            ("localhost:5000/team/my_app".into(), Some("v1".into()))
        );
        assert_eq!(
            parse_reference("ghcr.io/a/b-c__d").unwrap().0,
            "ghcr.io/a/b-c__d"
        );
        for bad in [
            "Hello:1",
            "hello:",
            "hello:-x",
            "a..b",
            "a___b",
            "-a",
            "a/",
            "hello@sha256:00",
            "h:é",
            "",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(reference_name("My App_v2"), "my-app_v2");
        assert_eq!(reference_name("__main__"), "main");
        assert_eq!(reference_name("a..b"), "a-b");
        assert_eq!(reference_name("!!"), "app");
        assert_eq!(full_reference("hello", "t"), "docker.io/library/hello:t");
        assert_eq!(full_reference("me/hello", "t"), "docker.io/me/hello:t");
        assert_eq!(
            full_reference("localhost:5000/hello", "t"),
            "localhost:5000/hello:t"
        );
    }

    #[test]
    fn source_urls() {
        assert_eq!(
            web_url("https://user:tok@github.com/o/r.git").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(
            web_url("git@github.com:o/r.git").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(
            web_url("ssh://git@gitlab.com:2222/g/s/r").as_deref(),
            Some("https://gitlab.com/g/s/r")
        );
        assert_eq!(web_url("/srv/git/r.git"), None);
        assert_eq!(web_url("../r"), None);
        assert_eq!(web_url("file:///srv/r"), None);
        let config = "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://a/b\n[remote \"origin\"]\n\turl = git@h.example:x/y.git\n";
        assert_eq!(origin_url(config).as_deref(), Some("git@h.example:x/y.git"));
    }

    #[test]
    fn env_and_quoting() {
        assert_eq!(
            image_env(&["A=1".into(), "PATH=/bin".into()]).unwrap(),
            ["A=1", "PATH=/bin"]
        );
        assert!(image_env(&["NOEQUALS".into()]).is_err());
        assert!(image_env(&["=x".into()]).is_err());
        assert_eq!(dockerfile_quote("a \"b\" $c \\"), r#""a \"b\" \$c \\""#);
        assert_eq!(shell_word("/requirements/a.txt"), "/requirements/a.txt");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(included_file("-r base.txt"), Some("base.txt"));
        assert_eq!(included_file("--requirement=dev/x.txt"), Some("dev/x.txt"));
        assert_eq!(included_file("-cconstraints.txt"), Some("constraints.txt"));
        assert_eq!(included_file("requests==2.0"), None);
        assert_eq!(included_file("--constraintx"), None);
    }
}
