//! The target interpreter: finding it, and asking it (once) to analyse and stage the app.
//!
//! Everything version-specific runs inside the target interpreter (`planner.py`): its sysconfig
//! layout, its own `modulefinder` and compiler for import analysis and bytecode, so a bundle for
//! 3.8 and one for 3.13 are both right whatever Python pyshrink runs next to.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

const PLANNER: &str = include_str!("planner.py");

/// The interpreter's layout, as it reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Layout {
    pub version: Vec<u32>,
    pub version_str: String,
    pub stdlib: PathBuf,
    pub dynload: Option<PathBuf>,
    pub site_packages: Vec<PathBuf>,
    pub libdir: Option<PathBuf>,
    pub ldlibrary: Option<String>,
    pub shared: bool,
    pub executable: PathBuf,
    pub real_executable: PathBuf,
    pub cache_tag: String,
}

impl Layout {
    /// `python3.11`: the stdlib directory name under `lib/`.
    pub fn stdlib_name(&self) -> String {
        format!("python{}.{}", self.version[0], self.version[1])
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PlannedEntry {
    Script { path: String },
    Module { name: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModuleUse {
    pub name: String,
    pub origin: String,
    #[serde(default)]
    pub dist: Option<String>,
    #[serde(default)]
    pub imported_by: Vec<String>,
}

/// A stdlib module left out because only an optional import in the stdlib reached it.
#[derive(Debug, Clone, Deserialize)]
pub struct LeftOut {
    pub name: String,
    pub imported_by: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Distribution {
    pub name: String,
    pub version: String,
}

/// What the planner staged and found.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub layout: Layout,
    pub entry: PlannedEntry,
    pub modules: Vec<ModuleUse>,
    /// Imports seen in code but installed nowhere (optional imports are normal).
    pub missing: Vec<String>,
    /// Staged ELF files (extension modules, vendored libraries), relative to the stage.
    pub elf: Vec<String>,
    pub distributions: Vec<Distribution>,
    pub optional_left_out: Vec<LeftOut>,
    pub warnings: Vec<String>,
}

/// The app to analyse.
#[derive(Debug, Clone)]
pub enum AppEntry {
    Script(PathBuf),
    Dir(PathBuf),
    Module(String),
}

/// Picks the interpreter: `--python`, else `$VIRTUAL_ENV/bin/python`, else `python3` on PATH.
pub fn find_interpreter(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.exists() {
            bail!("interpreter `{}` does not exist\n\nhint: pass the path of a CPython 3.8+ executable to --python", p.display());
        }
        return Ok(p.to_path_buf());
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let p = Path::new(&venv).join("bin/python");
        if p.exists() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .context("no `python3` on PATH\n\nhint: pass --python PATH or activate a virtualenv")
}

/// Runs the planner in the target interpreter with a JSON request.
fn ask(python: &Path, request: &serde_json::Value) -> Result<serde_json::Value> {
    let script = tempfile::Builder::new()
        .prefix("pyshrink-planner")
        .suffix(".py")
        .tempfile()
        .context("failed to create a temporary file for the planner")?;
    std::fs::write(script.path(), PLANNER).context("failed to write the planner")?;
    let out = Command::new(python)
        .arg("-E")
        .arg("-s")
        .arg(script.path())
        .arg(request.to_string())
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .output()
        .with_context(|| format!("failed to run interpreter `{}`", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.trim().lines().last().unwrap_or("").to_string();
        bail!(
            "interpreter `{}` failed while analysing the app: {last}\n\n{}",
            python.display(),
            stderr.trim()
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "interpreter `{}` gave no usable answer; is it CPython 3.8 or newer?",
            python.display()
        )
    })?;
    if let Some(error) = value.get("error").and_then(|v| v.as_str()) {
        bail!("{error}");
    }
    if let Some(what) = value.get("unsupported").and_then(|v| v.as_str()) {
        bail!(
            "interpreter `{}` is {what}; pyshrink bundles CPython 3.8 or newer\n\nhint: pass --python with a CPython 3.8+ executable",
            python.display()
        );
    }
    Ok(value)
}

/// Asks only for the layout.
pub fn layout(python: &Path) -> Result<Layout> {
    let v = ask(python, &serde_json::json!({"mode": "layout"}))?;
    serde_json::from_value(v).context("interpreter layout has an unexpected shape")
}

pub struct PlanRequest<'a> {
    pub entry: &'a AppEntry,
    pub stage: &'a Path,
    pub stdlib_all: bool,
    pub include: &'a [String],
    pub exclude: &'a [String],
}

/// Analyses the app and writes the Python side of the bundle (stdlib, site-packages, app, all
/// compiled) into `stage`.
pub fn plan(python: &Path, req: &PlanRequest) -> Result<Plan> {
    let entry = match req.entry {
        AppEntry::Script(p) => serde_json::json!({"kind": "script", "path": p}),
        AppEntry::Dir(p) => serde_json::json!({"kind": "dir", "path": p}),
        AppEntry::Module(m) => serde_json::json!({"kind": "module", "name": m}),
    };
    let request = serde_json::json!({
        "mode": "plan",
        "entry": entry,
        "stage": req.stage,
        "stdlib": if req.stdlib_all { "all" } else { "auto" },
        "include": req.include,
        "exclude": req.exclude,
    });
    let v = ask(python, &request)?;
    serde_json::from_value(v).context("interpreter plan has an unexpected shape")
}
