//! `pyshrink bundle`: stage the app, the interpreter and its libraries, write one executable.
//!
//! Layout of the staged tree (and of the extraction at run time):
//!
//! ```text
//! bin/python.real              the interpreter ELF (run through the bundled loader)
//! lib/ld-linux-x86-64.so.2     the PT_INTERP loader
//! lib/libc.so.6, libpython…    the ELF closure, by DT_NEEDED name
//! lib/python3.X/…              stdlib (.pyc), lib-dynload, site-packages
//! lib/python3/dist-packages/…  packages instead, for Debian's python (where its `site` looks)
//! app/…                        the app, compiled, and --include-data
//! share/pyshrink/…             the build host's CA certificates and time zone database,
//!                              when the app uses `ssl` / `zoneinfo`
//! ```
//!
//! The launcher adds `bin/python3` (a copy of itself, `sys.executable`) and the manifest.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pyshrink_stub::{Entry, Manifest};

use crate::cli::AppArgs;
use crate::elf::{self, Resolver};
use crate::payload;
use crate::progress::Progress;
use crate::python::{self, AppEntry, EntryPoint, PlannedEntry, Run};

pub const INTERPRETER: &str = "bin/python.real";
pub const LIBRARY_PATH: &str = "lib";
pub const PYTHON_EXE: &str = "bin/python3";

/// A finished bundle, in memory, with what a summary line needs.
pub struct Built {
    pub bytes: Vec<u8>,
    pub name: String,
    pub python: String,
    pub files: usize,
    pub libraries: usize,
    pub warnings: Vec<String>,
    pub plan: python::Plan,
}

/// What the bundle runs, from the command line.
pub enum Target {
    App(AppEntry),
    /// A console script: of a project directory (installed for the build) or installed.
    EntryPoint(EntryPoint),
}

/// The app entry from the command line, checked. A project directory is `AppEntry::Dir` here
/// (its files are the app); `target` says which console script runs.
pub fn app_entry(args: &AppArgs) -> Result<(AppEntry, String)> {
    match target(args)? {
        (Target::App(entry), name) => Ok((entry, name)),
        (
            Target::EntryPoint(EntryPoint {
                project: Some(dir), ..
            }),
            name,
        ) => Ok((AppEntry::Dir(dir), name)),
        (Target::EntryPoint(_), _) => bail!(
            "--entry without APP names a console script of the interpreter's packages, which only `pyshrink bundle` builds\n\nhint: pass the project directory as APP"
        ),
    }
}

/// What to run, from the command line, checked.
pub fn target(args: &AppArgs) -> Result<(Target, String)> {
    if let Some(m) = &args.module {
        let name = m.rsplit('.').next().unwrap_or(m).to_string();
        return Ok((Target::App(AppEntry::Module(m.clone())), name));
    }
    let Some(path) = args.app.as_ref() else {
        if let Some(entry) = &args.entry {
            let ep = EntryPoint {
                project: None,
                name: Some(entry.clone()),
            };
            return Ok((Target::EntryPoint(ep), entry.clone()));
        }
        bail!("no app given\n\nhint: pass a script, a directory, or -m MODULE");
    };
    let meta = fs::metadata(path).map_err(|e| {
        anyhow::anyhow!("app `{}` cannot be read: {e}\n\nhint: pass the path of a script or of a directory with __main__.py", path.display())
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let not_here = |what: &str| {
        anyhow::anyhow!(
            "--entry picks a console script of a project directory or of the installed packages, not of {what}\n\nhint: leave out --entry, or pass a directory with pyproject.toml"
        )
    };
    if meta.is_dir() {
        fs::read_dir(path).map_err(|e| {
            anyhow::anyhow!("directory `{}` cannot be read: {e}\n\nhint: check its permissions, or bundle as a user who can read it", path.display())
        })?;
        let main = path.join("__main__.py").is_file();
        if !main && (path.join("pyproject.toml").is_file() || path.join("setup.py").is_file()) {
            let project = path
                .canonicalize()
                .with_context(|| format!("directory `{}` cannot be read", path.display()))?;
            let ep = EntryPoint {
                project: Some(project),
                name: args.entry.clone(),
            };
            return Ok((Target::EntryPoint(ep), stem));
        }
        if !main {
            bail!(
                "directory `{}` has no __main__.py\n\nhint: add one, pass the script to run, or give it a pyproject.toml with [project.scripts]",
                path.display()
            );
        }
        if args.entry.is_some() {
            return Err(not_here("a directory with __main__.py"));
        }
        fs::read_dir(path)
            .with_context(|| format!("directory `{}` cannot be read", path.display()))?;
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or(stem);
        return Ok((Target::App(AppEntry::Dir(path.clone())), name));
    }
    if args.entry.is_some() {
        return Err(not_here("a script"));
    }
    fs::File::open(path).with_context(|| format!("app `{}` cannot be read", path.display()))?;
    Ok((Target::App(AppEntry::Script(path.clone())), stem))
}

/// `--include-data SRC[:DEST]`, checked: (absolute source, destination relative to `app/`).
pub fn include_data(specs: &[String]) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for spec in specs {
        let (src, dest) = match spec.split_once(':') {
            Some((s, d)) => (s, Some(d)),
            None => (spec.as_str(), None),
        };
        let src_path = Path::new(src);
        let abs = src_path.canonicalize().map_err(|e| {
            anyhow::anyhow!("--include-data source `{src}` cannot be read: {e}\n\nhint: pass SRC[:DEST], SRC a file or directory")
        })?;
        let dest = match dest.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => d.trim_end_matches('/').to_string(),
            None => abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| ".".into()),
        };
        let dest_path = Path::new(&dest);
        let escapes = dest_path.components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir
                    | std::path::Component::RootDir
                    | std::path::Component::Prefix(_)
            )
        });
        if escapes {
            bail!(
                "--include-data destination `{dest}` leaves the app's directory\n\nhint: DEST is relative to the app's directory in the bundle, without `..`"
            );
        }
        let dest = if dest == "." && abs.is_file() {
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(dest)
        } else {
            dest
        };
        out.push((abs, dest));
    }
    Ok(out)
}

pub fn build(args: &AppArgs, progress: &Progress) -> Result<Built> {
    let (target, name) = target(args)?;
    for r in &args.requirements {
        if !r.is_file() {
            bail!(
                "requirements file `{}` does not exist\n\nhint: pass the path of a pip requirements file to -r",
                r.display()
            );
        }
    }
    let include_data = include_data(&args.include_data)?;
    let python = python::find_interpreter(args.python.as_deref())?;
    let stub = crate::stub::load(args.stub.as_deref())?;
    let stage_dir = tempfile::Builder::new()
        .prefix("pyshrink-stage")
        .tempdir()
        .context("failed to create a staging directory")?;
    let stage = stage_dir.path();

    // Requirements and a project directory are installed into a directory of their own, which
    // analysis then treats as the first site dir.
    let project: Vec<PathBuf> = match &target {
        Target::EntryPoint(EntryPoint {
            project: Some(p), ..
        }) => vec![p.clone()],
        _ => Vec::new(),
    };
    let installed = if args.requirements.is_empty() && project.is_empty() {
        None
    } else {
        progress.step("installing requirements");
        let dir = tempfile::Builder::new()
            .prefix("pyshrink-site")
            .tempdir()
            .context("failed to create a directory for the requirements")?;
        python::pip_install(
            &python,
            dir.path(),
            &python::Install {
                requirements: &args.requirements,
                projects: &project,
            },
        )?;
        Some(dir)
    };
    let extra_sites: Vec<PathBuf> = installed.iter().map(|d| d.path().to_path_buf()).collect();

    progress.step("analysing imports");
    let plan = python::build_plan(
        &python,
        &python::BuildRequest {
            run: match &target {
                Target::App(entry) => Run::App(entry),
                Target::EntryPoint(ep) => Run::EntryPoint(ep),
            },
            stage,
            stdlib_all: args.stdlib == "all",
            include: &args.include_module,
            exclude: &args.exclude_module,
            extra_sites: &extra_sites,
            include_data: &include_data,
            ca_certs: !args.no_ca_certs,
            tzdata: !args.no_tzdata,
        },
    )?;
    let name = plan.name.clone().unwrap_or(name);
    let layout = &plan.layout;
    let mut warnings = plan.warnings.clone();
    if !plan.optional_left_out.is_empty() {
        let list: Vec<String> = plan
            .optional_left_out
            .iter()
            .map(|m| format!("{} (optional in {})", m.name, m.imported_by.join(", ")))
            .collect();
        warnings.push(format!(
            "left out stdlib modules only optional imports reach: {}; add --include-module NAME to bundle one",
            list.join("; ")
        ));
    }
    if !plan.missing.is_empty() {
        warnings.push(format!(
            "imports not found anywhere (fine if optional): {}",
            plan.missing.join(", ")
        ));
    }

    progress.step("resolving shared libraries");
    let mut resolver = Resolver::new()?;
    let real = &layout.real_executable;
    let closure = resolver.closure_of(real).with_context(|| {
        format!(
            "failed to resolve the libraries of interpreter `{}`",
            real.display()
        )
    })?;
    let mut libs: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    // `needed_by` is shown by `inspect`: staged files are named by their place in the bundle,
    // so the temporary stage path never reaches the output (which must be reproducible).
    let add = |c: &elf::Closure, libs: &mut BTreeMap<String, (PathBuf, PathBuf)>| {
        for l in &c.libraries {
            let by = l
                .needed_by
                .strip_prefix(stage)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| l.needed_by.clone());
            libs.entry(l.name.clone()).or_insert((l.path.clone(), by));
        }
    };
    add(&closure, &mut libs);
    let stdlib_prefix = format!("lib/{}/", layout.stdlib_name());
    let site_prefix = format!("{}/", plan.site_dir);
    let sites: Vec<PathBuf> = extra_sites
        .iter()
        .chain(&layout.site_packages)
        .cloned()
        .collect();
    let mut elf_needs: Vec<(&String, Vec<(String, PathBuf)>)> = Vec::new();
    for rel in &plan.elf {
        let file = stage.join(rel);
        let optional_stdlib = rel.starts_with(&stdlib_prefix) && !rel.starts_with(&site_prefix);
        match resolver.closure_of(&file) {
            Ok(c) => {
                add(&c, &mut libs);
                let needs = c.libraries.iter().map(|l| (l.name.clone(), l.path.clone()));
                elf_needs.push((rel, needs.collect()));
            }
            Err(e) if optional_stdlib && e.downcast_ref::<elf::ElfError>().is_some() => {
                warnings.push(format!("left out stdlib module `{rel}`: {e}"));
                fs::remove_file(&file)
                    .with_context(|| format!("failed to remove `{}`", file.display()))?;
            }
            Err(e) => {
                let shown = original_path(rel, &site_prefix, &sites);
                return Err(e.context(format!("failed to resolve the libraries of `{shown}`")));
            }
        }
    }
    let loader = closure
        .interpreter
        .clone()
        .context("the interpreter has no PT_INTERP loader; a static interpreter cannot load extension modules")?;

    progress.step("copying the interpreter and libraries");
    let lib_dir = stage.join(LIBRARY_PATH);
    fs::create_dir_all(&lib_dir)?;
    // Staged packages are resolved where they are staged, so their vendored libraries are
    // found under the stage.
    let in_place: Vec<PathBuf> = sites
        .iter()
        .map(PathBuf::as_path)
        .chain(std::iter::once(stage))
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let canonical_stage = stage.canonicalize().unwrap_or_default();
    let staged_lib = |name: &str, path: &Path| -> String {
        for s in &in_place {
            if let Ok(rel) = path.strip_prefix(s) {
                let rel = rel.to_string_lossy();
                return if s == &canonical_stage {
                    rel.into_owned()
                } else {
                    format!("{}/{rel}", plan.site_dir)
                };
            }
        }
        format!("{LIBRARY_PATH}/{name}")
    };
    let mut copied = 0;
    for (name, (path, _)) in &libs {
        // Libraries a wheel vendors next to itself are staged in place and found through their
        // $ORIGIN run path; a second copy under lib/ would only add bytes.
        if in_place.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        copy_elf(path, &lib_dir.join(name))?;
        copied += 1;
    }
    let loader_name = loader.file_name().context("loader path has no file name")?;
    copy_elf(&loader, &lib_dir.join(loader_name))?;
    // The memory runtime has no directory to search: the interpreter's libraries are preloaded
    // and every other ELF file's are loaded before it, from this list.
    let loader_name_str = loader_name.to_string_lossy();
    let preload: Vec<String> = closure
        .libraries
        .iter()
        .filter(|l| l.name != loader_name_str)
        .map(|l| staged_lib(&l.name, &l.path))
        .collect();
    let mut memory_libs = String::new();
    for (rel, needs) in &elf_needs {
        let extra: Vec<String> = needs
            .iter()
            .filter(|(name, _)| *name != loader_name_str)
            .map(|(name, path)| staged_lib(name, path))
            .filter(|p| !preload.contains(p))
            .collect();
        if !extra.is_empty() {
            memory_libs.push_str(&format!("{rel}\t{}\n", extra.join(" ")));
        }
    }
    fs::write(stage.join(pyshrink_stub::MEMORY_LIBS_FILE), memory_libs)?;
    fs::create_dir_all(stage.join("bin"))?;
    copy_elf(real, &stage.join(INTERPRETER))?;

    progress.step("stripping debug information");
    for rel in &plan.elf {
        let file = stage.join(rel);
        if file.exists() {
            let bytes = fs::read(&file)?;
            let out = elf::prepare_for_bundle(&bytes)
                .with_context(|| format!("failed to prepare `{rel}`"))?;
            fs::write(&file, out)?;
        }
    }

    let stdlib_dir = stage.join(LIBRARY_PATH).join(layout.stdlib_name());
    let zip_name = format!("python{}{}.zip", layout.version[0], layout.version[1]);
    crate::pyzip::pack_stdlib(&stdlib_dir, &stage.join(LIBRARY_PATH).join(zip_name))?;

    let inventory = serde_json::json!({
        "libraries": libs.iter().map(|(name, (path, by))| serde_json::json!({
            "name": name, "path": staged_as(path, stage), "needed_by": by,
        })).chain(std::iter::once(serde_json::json!({
            "name": loader_name.to_string_lossy(), "path": loader, "needed_by": real,
        }))).collect::<Vec<_>>(),
        "modules": plan.modules.iter().map(|m| serde_json::json!({
            "name": m.name, "origin": m.origin, "imported_by": m.imported_by, "dist": m.dist,
        })).collect::<Vec<_>>(),
        "distributions": plan.distributions.iter().map(|d| serde_json::json!({
            "name": d.name, "version": d.version,
        })).collect::<Vec<_>>(),
        "optional_left_out": plan.optional_left_out.iter().map(|m| serde_json::json!({
            "name": m.name, "imported_by": m.imported_by,
        })).collect::<Vec<_>>(),
        "host_data": plan.host_data,
    });
    fs::write(
        stage.join(crate::inspect::INVENTORY),
        serde_json::to_vec_pretty(&inventory)?,
    )?;

    progress.step("compressing");
    let loader_rel = format!("{LIBRARY_PATH}/{loader_name_str}");
    let mut at_start = preload.clone();
    at_start.push(loader_rel.clone());
    at_start.push(INTERPRETER.into());
    let archive = payload::archive(stage, &at_start, &plan.import_order)?;
    let (compressed, second_frame, late_frame, tail_frame) =
        payload::compress_archive(&archive, args.compression_level)?;
    let (tar, files) = (&archive.tar, archive.files);
    let manifest = Manifest {
        python: layout.version_str.clone(),
        interpreter: INTERPRETER.into(),
        loader: loader_rel,
        library_path: LIBRARY_PATH.into(),
        python_exe: PYTHON_EXE.into(),
        entry: match &plan.entry {
            PlannedEntry::Script { path } => Entry::Script(path.clone()),
            PlannedEntry::Module { name } => Entry::Module(name.clone()),
        },
        runtime: args.runtime.into(),
        preload,
        second_frame,
        late_frame,
        tail_frame,
        late_memory_files: archive.late_memory_files as u64,
        extra: vec![
            ("name".into(), name.clone()),
            ("files".into(), files.to_string()),
            ("libraries".into(), (copied + 1).to_string()),
            ("unpacked_size".into(), tar.len().to_string()),
            (
                "created_by".into(),
                format!("pyshrink {}", env!("CARGO_PKG_VERSION")),
            ),
        ],
    };
    let bytes = payload::assemble(&stub, &compressed, &manifest);
    Ok(Built {
        bytes,
        name,
        python: layout.version_str.clone(),
        files,
        libraries: copied + 1,
        warnings,
        plan,
    })
}

/// Copies an ELF file, stripped and without build-machine run paths.
fn copy_elf(from: &Path, to: &Path) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("failed to read `{}`", from.display()))?;
    let out = elf::prepare_for_bundle(&bytes)
        .with_context(|| format!("failed to prepare `{}`", from.display()))?;
    fs::write(to, out).with_context(|| format!("failed to write `{}`", to.display()))
}

/// A library path for the inventory: a file of the stage (a vendored library, found where its
/// package was staged) by its place in the bundle, so the temporary directory never shows.
fn staged_as(path: &Path, stage: &Path) -> PathBuf {
    let canonical = stage.canonicalize().unwrap_or_else(|_| stage.to_path_buf());
    path.strip_prefix(stage)
        .or_else(|_| path.strip_prefix(&canonical))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// For messages: a staged path shown as where it came from, when that is known.
fn original_path(rel: &str, site_prefix: &str, sites: &[PathBuf]) -> String {
    if let Some(site_rel) = rel.strip_prefix(site_prefix) {
        for site in sites {
            let p = site.join(site_rel);
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    rel.to_string()
}
