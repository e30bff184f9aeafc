//! `pyshrink bundle`: stage the app, the interpreter and its libraries, write one executable.
//!
//! Layout of the staged tree (and of the extraction at run time):
//!
//! ```text
//! bin/python.real              the interpreter ELF (run through the bundled loader)
//! lib/ld-linux-x86-64.so.2     the PT_INTERP loader
//! lib/libc.so.6, libpython…    the ELF closure, by DT_NEEDED name
//! lib/python3.X/…              stdlib (.pyc), lib-dynload, site-packages
//! app/…                        the app, compiled
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
use crate::python::{self, AppEntry, PlannedEntry};

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

/// The app entry from the command line, checked.
pub fn app_entry(args: &AppArgs) -> Result<(AppEntry, String)> {
    if let Some(m) = &args.module {
        let name = m.rsplit('.').next().unwrap_or(m).to_string();
        return Ok((AppEntry::Module(m.clone()), name));
    }
    let path = args
        .app
        .as_ref()
        .context("no app given\n\nhint: pass a script, a directory, or -m MODULE")?;
    let meta = fs::metadata(path).map_err(|e| {
        anyhow::anyhow!("app `{}` cannot be read: {e}\n\nhint: pass the path of a script or of a directory with __main__.py", path.display())
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    if meta.is_dir() {
        if !path.join("__main__.py").is_file() {
            bail!(
                "directory `{}` has no __main__.py\n\nhint: add one, or pass the script to run",
                path.display()
            );
        }
        fs::read_dir(path)
            .with_context(|| format!("directory `{}` cannot be read", path.display()))?;
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or(stem);
        return Ok((AppEntry::Dir(path.clone()), name));
    }
    fs::File::open(path).with_context(|| format!("app `{}` cannot be read", path.display()))?;
    Ok((AppEntry::Script(path.clone()), stem))
}

pub fn build(args: &AppArgs, progress: &Progress) -> Result<Built> {
    let (entry, name) = app_entry(args)?;
    let python = python::find_interpreter(args.python.as_deref())?;
    let stub = crate::stub::load(args.stub.as_deref())?;
    let stage_dir = tempfile::Builder::new()
        .prefix("pyshrink-stage")
        .tempdir()
        .context("failed to create a staging directory")?;
    let stage = stage_dir.path();

    progress.step("analysing imports");
    let plan = python::plan(
        &python,
        &python::PlanRequest {
            entry: &entry,
            stage,
            stdlib_all: args.stdlib == "all",
            include: &args.include_module,
            exclude: &args.exclude_module,
        },
    )?;
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
    for rel in &plan.elf {
        let file = stage.join(rel);
        let optional_stdlib = rel.starts_with(&stdlib_prefix)
            && !rel[stdlib_prefix.len()..].starts_with("site-packages/");
        match resolver.closure_of(&file) {
            Ok(c) => add(&c, &mut libs),
            Err(e) if optional_stdlib && e.downcast_ref::<elf::ElfError>().is_some() => {
                warnings.push(format!("left out stdlib module `{rel}`: {e}"));
                fs::remove_file(&file)
                    .with_context(|| format!("failed to remove `{}`", file.display()))?;
            }
            Err(e) => {
                let shown = original_path(rel, layout);
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
    let in_place: Vec<PathBuf> = layout
        .site_packages
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
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

    let inventory = serde_json::json!({
        "libraries": libs.iter().map(|(name, (path, by))| serde_json::json!({
            "name": name, "path": path, "needed_by": by,
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
    });
    fs::write(
        stage.join(crate::inspect::INVENTORY),
        serde_json::to_vec_pretty(&inventory)?,
    )?;

    progress.step("compressing");
    let (tar, files) = payload::archive(stage)?;
    let compressed = payload::compress(&tar, args.compression_level)?;
    let manifest = Manifest {
        python: layout.version_str.clone(),
        interpreter: INTERPRETER.into(),
        loader: format!("{LIBRARY_PATH}/{}", loader_name.to_string_lossy()),
        library_path: LIBRARY_PATH.into(),
        python_exe: PYTHON_EXE.into(),
        entry: match &plan.entry {
            PlannedEntry::Script { path } => Entry::Script(path.clone()),
            PlannedEntry::Module { name } => Entry::Module(name.clone()),
        },
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

/// For messages: a staged path shown as where it came from, when that is known.
fn original_path(rel: &str, layout: &python::Layout) -> String {
    let stdlib_prefix = format!("lib/{}/", layout.stdlib_name());
    if let Some(rest) = rel.strip_prefix(&stdlib_prefix) {
        if let Some(site_rel) = rest.strip_prefix("site-packages/") {
            for site in &layout.site_packages {
                let p = site.join(site_rel);
                if p.exists() {
                    return p.display().to_string();
                }
            }
        }
    }
    rel.to_string()
}
