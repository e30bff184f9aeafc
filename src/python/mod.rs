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
/// The memory runtime's `sitecustomize`, compiled into every bundle.
const MEMORY_BOOT: &str = include_str!("memory_boot.py");
/// The stdlib zip's faster importer, compiled into that zip in every bundle.
const ZIPIMPORT_FAST: &str = include_str!("zipimport_fast.py");

/// [`ZIPIMPORT_FAST`] with the names of the late part's and the tail's lists, and of the list of
/// the libraries each extension module needs.
pub fn zipimport_fast() -> String {
    ZIPIMPORT_FAST
        .replace("@LATE_LIST_FILE@", pyshrink_stub::LATE_LIST_FILE)
        .replace("@TAIL_LIST_FILE@", pyshrink_stub::TAIL_LIST_FILE)
        .replace("@MEMORY_LIBS_FILE@", pyshrink_stub::MEMORY_LIBS_FILE)
}

/// [`MEMORY_BOOT`] with the launcher's words and exit status for a late frame that failed, and
/// the name of the tail's list.
fn memory_boot() -> String {
    MEMORY_BOOT
        .replace(
            "\"@LATE_FRAME_FAILED@\"",
            &format!("{:?}", pyshrink_stub::LATE_FRAME_FAILED),
        )
        .replace("@IO_STATUS@", &pyshrink_stub::exit::IO.to_string())
        .replace("@TAIL_LIST_FILE@", pyshrink_stub::TAIL_LIST_FILE)
}

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

/// Something of the build host an empty root lacks, copied into the bundle.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct HostData {
    /// `ca-certificates` or `tzdata`.
    pub what: String,
    pub source: PathBuf,
    /// Where in the bundle, relative to its root.
    pub dest: String,
}

/// What the planner staged and found.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub layout: Layout,
    pub entry: PlannedEntry,
    /// The bundle's name when the entry decided it (a console script's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Where packages are staged, relative to the bundle root: the directory the bundled
    /// interpreter's `site` reads (`lib/python3.X/site-packages`, Debian `lib/python3/dist-packages`).
    pub site_dir: String,
    #[serde(default)]
    pub host_data: Vec<HostData>,
    pub modules: Vec<ModuleUse>,
    /// The bundled modules' names in the order the analysis reached them.
    #[serde(default)]
    pub import_order: Vec<String>,
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

/// A console script (`[project.scripts]`) to run: of the project directory `project`
/// (installed for the build), else of any installed distribution; `name` picks one.
#[derive(Debug, Clone)]
pub struct EntryPoint {
    pub project: Option<PathBuf>,
    pub name: Option<String>,
}

/// What a bundle runs.
#[derive(Debug, Clone)]
pub enum Run<'a> {
    App(&'a AppEntry),
    EntryPoint(&'a EntryPoint),
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
    // The host's PYTHON* variables are removed (what -E would do) and PYTHONNODEBUGRANGES is
    // set: from 3.11 the bytecode the planner compiles then carries no column tables. Those only
    // place the `^^^` under a source line in tracebacks, and a bundle ships no source lines;
    // without them the stdlib zip is about a fifth smaller. Older versions ignore the variable
    // (Python 2 rejects `-X no_debug_ranges`, and it must reach the planner's version check).
    // PYTHONHASHSEED is fixed because before 3.11 marshal writes a frozenset constant
    // (`x in {"a", "b"}`) in the set's iteration order, which follows the string hashes: with
    // randomized hashes two builds of the same app would differ.
    let mut cmd = Command::new(python);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PYTHON") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("PYTHONNODEBUGRANGES", "1")
        .env("PYTHONHASHSEED", "0")
        .arg("-s")
        .arg(script.path())
        .arg(request.to_string())
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "interpreter `{}` cannot be run: {e}\n\nhint: pass --python with a CPython 3.8+ executable",
                python.display()
            )
        })?;
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

/// Everything a bundle build asks of the planner.
pub struct BuildRequest<'a> {
    pub run: Run<'a>,
    pub stage: &'a Path,
    pub stdlib_all: bool,
    pub include: &'a [String],
    pub exclude: &'a [String],
    /// Site dirs of packages installed for this build, searched before the interpreter's.
    pub extra_sites: &'a [PathBuf],
    /// (source, destination relative to `app/`).
    pub include_data: &'a [(PathBuf, String)],
    /// Bundle the build host's CA certificates when the app uses `ssl`.
    pub ca_certs: bool,
    /// Bundle the build host's time zone database when the app uses `zoneinfo` (and no
    /// `tzdata` distribution is installed).
    pub tzdata: bool,
}

/// Analyses the app and writes the Python side of the bundle (stdlib, site-packages, app, all
/// compiled) into `stage`, with the defaults of a bundle build for everything else.
pub fn plan(python: &Path, req: &PlanRequest) -> Result<Plan> {
    build_plan(
        python,
        &BuildRequest {
            run: Run::App(req.entry),
            stage: req.stage,
            stdlib_all: req.stdlib_all,
            include: req.include,
            exclude: req.exclude,
            extra_sites: &[],
            include_data: &[],
            ca_certs: true,
            tzdata: true,
        },
    )
}

/// Analyses the app and writes the Python side of the bundle into `stage`.
pub fn build_plan(python: &Path, req: &BuildRequest) -> Result<Plan> {
    let entry = match req.run {
        Run::App(AppEntry::Script(p)) => serde_json::json!({"kind": "script", "path": p}),
        Run::App(AppEntry::Dir(p)) => serde_json::json!({"kind": "dir", "path": p}),
        Run::App(AppEntry::Module(m)) => serde_json::json!({"kind": "module", "name": m}),
        Run::EntryPoint(EntryPoint { project, name }) => {
            serde_json::json!({"kind": "entrypoint", "project_dir": project, "name": name})
        }
    };
    let request = serde_json::json!({
        "mode": "plan",
        "entry": entry,
        "stage": req.stage,
        "stdlib": if req.stdlib_all { "all" } else { "auto" },
        "include": req.include,
        "exclude": req.exclude,
        "extra_sites": req.extra_sites,
        "include_data": req.include_data,
        "ca_certs": req.ca_certs,
        "tzdata": req.tzdata,
        // Start-up code compiled into the bundle; `{stdlib}` is the stdlib directory.
        "boot_modules": [
            {
                "source": memory_boot(),
                "dest": format!("{}/sitecustomize.pyc", pyshrink_stub::MEMORY_BOOT_DIR),
            },
            {
                "source": zipimport_fast(),
                "dest": format!("{{stdlib}}/{}.pyc", pyshrink_stub::ZIPIMPORT_MODULE),
                // With the patterns compiled ahead (`REGEX_TABLE`) and the modules to run at
                // first use (`DEFERRED`) appended.
                "tables": true,
            },
        ],
    });
    let v = ask(python, &request)?;
    serde_json::from_value(v).context("interpreter plan has an unexpected shape")
}

/// How pip is run for the target interpreter.
#[derive(Debug, Clone)]
enum Pip {
    /// `PYTHON -m pip`: the target's own pip, or its base interpreter's (same version and ABI,
    /// so the same wheels; with `--target` it writes nothing into that environment).
    Module(PathBuf),
    /// `HOST -m pip --python TARGET` (pip 22.3 or newer), for an interpreter without pip.
    Host(PathBuf, PathBuf),
}

impl Pip {
    fn command(&self) -> Command {
        let mut cmd = match self {
            Pip::Module(python) => {
                let mut c = Command::new(python);
                c.args(["-m", "pip"]);
                c
            }
            Pip::Host(host, target) => {
                let mut c = Command::new(host);
                c.args(["-m", "pip", "--python"]).arg(target);
                c
            }
        };
        // The install goes to the staging directory only: settings that send pip elsewhere, or
        // refuse it outside a virtualenv, do not apply to it.
        for var in [
            "PYTHONPATH",
            "PYTHONHOME",
            "PIP_TARGET",
            "PIP_PREFIX",
            "PIP_ROOT",
            "PIP_USER",
            "PIP_EDITABLE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PIP_REQUIRE_VIRTUALENV", "0")
            .env("PIP_ROOT_USER_ACTION", "ignore");
        cmd
    }

    fn describe(&self) -> String {
        match self {
            Pip::Module(p) => format!("{} -m pip", p.display()),
            Pip::Host(h, t) => format!("{} -m pip --python {}", h.display(), t.display()),
        }
    }
}

fn pip_version(python: &Path) -> Option<(u32, u32)> {
    let out = Command::new(python)
        .args(["-m", "pip", "--version"])
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "pip 23.2.1 from /path (python 3.11)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// The pip to install with: the target's, else its base interpreter's (a `--without-pip` venv),
/// else the host's `python3 -m pip --python TARGET`. Never `ensurepip`, which would change the
/// user's environment.
fn find_pip(python: &Path) -> Result<Pip> {
    if pip_version(python).is_some() {
        return Ok(Pip::Module(python.to_path_buf()));
    }
    let base = layout(python)?.real_executable;
    if base != python && pip_version(&base).is_some() {
        return Ok(Pip::Module(base));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let host = dir.join("python3");
        if host.is_file() && pip_version(&host).is_some_and(|v| v >= (22, 3)) {
            return Ok(Pip::Host(host, python.to_path_buf()));
        }
    }
    bail!(
        "no pip to install the requirements with: neither `{}`, its base interpreter `{}` nor `python3` on PATH has one (pip 22.3 or newer for the last)\n\nhint: install pip for the interpreter, or install the packages into a virtualenv and pass its python to --python",
        python.display(),
        base.display()
    )
}

/// What pip installs for a build.
pub struct Install<'a> {
    pub requirements: &'a [PathBuf],
    /// Project directories (with `pyproject.toml` or `setup.py`).
    pub projects: &'a [PathBuf],
}

/// Installs requirements and projects into `target`, a private directory that is then searched
/// like a site dir; the interpreter's own environment is never touched. Wheels are preferred,
/// sdists allowed.
pub fn pip_install(python: &Path, target: &Path, install: &Install) -> Result<()> {
    let pip = find_pip(python)?;
    let mut cmd = pip.command();
    cmd.arg("install").arg("--target").arg(target).args([
        "--prefer-binary",
        "--no-warn-script-location",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
    ]);
    for r in install.requirements {
        cmd.arg("-r").arg(r);
    }
    for p in install.projects {
        cmd.arg(p);
    }
    let out = cmd
        .output()
        .with_context(|| format!("failed to run `{}`", pip.describe()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let lines: Vec<&str> = text.trim_end().lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        let what: Vec<String> = install
            .requirements
            .iter()
            .chain(install.projects)
            .map(|p| format!("`{}`", p.display()))
            .collect();
        bail!(
            "pip failed to install {} ({}), exit status {}:\n\n{tail}",
            what.join(", "),
            pip.describe(),
            out.status
                .code()
                .map_or("killed".to_string(), |c| c.to_string())
        );
    }
    Ok(())
}
