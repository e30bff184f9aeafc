//! Shared-library closure of ELF objects, resolved the way glibc's dynamic loader resolves it on
//! this machine, and the rewriting of ELF files before they go into a bundle.
//!
//! # How glibc's loader finds a `DT_NEEDED` entry (glibc 2.36, Debian 12, x86_64)
//!
//! Dependencies are loaded breadth first, in `DT_NEEDED` order. For each name:
//!
//! 1. Objects already loaded are reused when the name equals a name they were loaded under or
//!    their `DT_SONAME`; a file found on disk that is already loaded under another name (same
//!    device and inode) is not loaded twice either.
//! 2. A name that contains a slash is opened as a path, relative to the current directory.
//! 3. Any other name is searched, first hit wins:
//!    - `DT_RPATH` of the object that needs it, then of the object that loaded that one, and so
//!      on up to the program, then of the program itself. All of this is skipped when the
//!      needing object has `DT_RUNPATH`, and an object with both ignores its own `DT_RPATH`;
//!    - `LD_LIBRARY_PATH`, split on `:` and `;`;
//!    - `DT_RUNPATH` of the needing object only, never of its loaders;
//!    - `/etc/ld.so.cache`. `ldconfig` builds it from the `ld.so.conf` directories, where the
//!      first directory listed wins for a name, then from the system directories. This module
//!      searches the configured directories in that order instead of reading the cache, so a
//!      library added without rerunning `ldconfig` is found here although the loader would miss it;
//!    - the system directories that `ld.so --help` prints. Debian's are `/lib/x86_64-linux-gnu`,
//!      `/usr/lib/x86_64-linux-gnu`, `/lib` and `/usr/lib`, without `/lib64` and `/usr/lib64`,
//!      which are Fedora's. An object linked with `-z nodeflib` skips this step and any cache
//!      entry in these directories.
//!
//!    An empty element of a search path means the current directory, and a `DT_RPATH` or
//!    `DT_RUNPATH` that is entirely empty is ignored.
//!
//! Dynamic string tokens are expanded in each search path element and in `DT_NEEDED`:
//! `$ORIGIN` and `${ORIGIN}` become the directory of the object that holds the string, `$LIB`
//! becomes the loader's library directory, and `$PLATFORM` becomes `AT_PLATFORM`. A token only
//! counts when no identifier character follows it, so `$ORIGINAL` stays literal. On Debian
//! x86_64, `$LIB` is `lib/x86_64-linux-gnu` (Fedora's loader says `lib64`) and `$PLATFORM` is
//! `x86_64`, as `ld.so --help` reports it. Both were checked with `LD_DEBUG=libs`.
//! For a library, `$ORIGIN` is the directory of the path it was *found* under, with symlinks
//! left as they are. For a program started by the kernel, it is the directory of
//! `/proc/self/exe`, which is canonical. `ldd` starts the program through `ld.so`, so there it
//! is the directory of the path as given.
//!
//! The loader checks the ELF header of each candidate file. A file of the other ELF class (a
//! 32-bit library in a directory of 64-bit ones) or for another machine is skipped and the search
//! goes on. A file that is not ELF or is shorter than an ELF header stops the loader with an
//! error ("invalid ELF header", "file too short"). So do a wrong byte order, ident or ELF
//! version, OS ABI, object type or program header size. A linker script named `libfoo.so` earlier
//! in the path is therefore fatal and is not skipped. [`ElfError::Invalid`] reports those cases.
//!
//! The loader also searches hardware-capability subdirectories of every search directory:
//! `glibc-hwcaps/x86-64-v{2,3,4}` and the legacy `tls`/`x86_64` ones, whichever the CPU supports.
//! These are not searched here, on purpose. A bundle is built to run on other machines, and a
//! library built for x86-64-v3 dies with SIGILL on an older CPU. The baseline file in the directory
//! itself runs everywhere. This machine has no such subdirectories, so the results still equal
//! `ldd`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{
    Dynamic, DF_1_NODEFLIB, DT_FLAGS_1, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME,
    DT_STRSZ, DT_STRTAB,
};
use goblin::elf::header::{
    EI_CLASS, EI_DATA, EI_OSABI, EI_VERSION, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB,
    ELFMAG, ELFOSABI_GNU, ELFOSABI_SYSV, EM_386, EM_AARCH64, EM_X86_64, ET_DYN, ET_EXEC,
    EV_CURRENT,
};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_NULL};
use goblin::elf::section_header::{
    SHF_ALLOC, SHF_INFO_LINK, SHN_LORESERVE, SHN_XINDEX, SHT_DYNSYM, SHT_NOBITS, SHT_REL, SHT_RELA,
    SHT_STRTAB, SHT_SYMTAB_SHNDX,
};
use goblin::elf::{Elf, Header, ProgramHeader, SectionHeader};

/// The soname of glibc's C library; a closure containing it gets [`runtime_extras`].
const LIBC_SONAME: &str = "libc.so.6";

/// The program interpreter of this build's architecture: `ld.so --help` is asked for its search
/// directories and platform.
#[cfg(target_arch = "aarch64")]
const HOST_INTERPRETER: &str = "/lib/ld-linux-aarch64.so.1";
#[cfg(not(target_arch = "aarch64"))]
const HOST_INTERPRETER: &str = "/lib64/ld-linux-x86-64.so.2";

/// One resolved shared object of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The `DT_NEEDED` string it was asked for (e.g. `libc.so.6`); for runtime extras the file name.
    pub name: String,
    /// The resolved file on this machine (canonical: symlinks followed).
    pub path: PathBuf,
    /// The object whose `DT_NEEDED` (or run-time need) pulled it in first.
    pub needed_by: PathBuf,
}

/// Everything the roots need at load time (plus [`runtime_extras`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// The program interpreter, canonical: `PT_INTERP` of the roots, or the loader when it is only
    /// reached through a `DT_NEEDED` (libc needs `ld-linux-x86-64.so.2`).
    pub interpreter: Option<PathBuf>,
    /// Sorted by name, each name once; the roots and the interpreter are not listed unless some
    /// object of the closure names them in a `DT_NEEDED`.
    pub libraries: Vec<Library>,
}

impl Closure {
    /// The library resolved for `name`, if any.
    pub fn library(&self, name: &str) -> Option<&Library> {
        self.libraries.iter().find(|lib| lib.name == name)
    }
}

/// Errors of closure computation that callers may want to tell apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// A needed library is in none of the directories the loader would search.
    NotFound {
        library: String,
        needed_by: PathBuf,
        searched: Vec<PathBuf>,
    },
    /// A file the loader would open and then refuse outright, aborting the program.
    Invalid { path: PathBuf, reason: String },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotFound {
                library,
                needed_by,
                searched,
            } => {
                let searched: Vec<String> = searched
                    .iter()
                    .map(|dir| match dir.as_os_str().is_empty() {
                        true => ".".to_owned(),
                        false => dir.display().to_string(),
                    })
                    .collect();
                let searched = match searched.is_empty() {
                    true => "nothing".to_owned(),
                    false => searched.join(", "),
                };
                write!(
                    f,
                    "library `{library}` needed by `{}` not found (searched: {searched})",
                    needed_by.display()
                )
            }
            ElfError::Invalid { path, reason } => write!(f, "`{}`: {reason}", path.display()),
        }
    }
}

impl std::error::Error for ElfError {}

/// Libraries that glibc `dlopen()`s at run time without any `DT_NEEDED`, for a closure that
/// contains `libc.so.6`.
///
/// - `libgcc_s.so.1`: `pthread_exit`, `pthread_cancel` and `backtrace` unwind with it. Without it
///   the process aborts with "libgcc_s.so.1 must be installed for pthread_exit to work".
///   (`LD_DEBUG=files` shows libc loading it for a thread that calls `pthread_exit`.)
///
/// Not listed, for glibc 2.36:
/// - `libnss_files.so.2` and `libnss_dns.so.2`: these modules are built into libc.so.6 since
///   2.34. The files of those names are 14 KiB compatibility stubs. Other NSS modules
///   (`libnss_systemd`, `mdns`, ...) are only loaded when `/etc/nsswitch.conf` names them. A
///   `FROM scratch` root has no such file, and then glibc falls back to the built-in `files` and
///   `dns`. (Checked with `LD_DEBUG=files` on `pwd`, `grp` and `getaddrinfo` calls.)
/// - `libidn2.so.0`: only loaded for the `AI_IDN`/`NI_IDN` flags. CPython never passes them and
///   does IDNA encoding itself.
/// - gconv modules: `iconv_open` loads them by path from `gconv-modules`, not through the library
///   search, and only for charsets beyond the built-in UTF-8/ASCII/Latin-1/UCS ones.
/// - `libthread_db`, `libc_malloc_debug`, `libmemusage`: debugger or `LD_PRELOAD` helpers.
pub fn runtime_extras() -> &'static [&'static str] {
    &["libgcc_s.so.1"]
}

/// What the host's loader reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLoader {
    /// The loader's built-in search directories, in order.
    pub system_dirs: Vec<PathBuf>,
    /// The `$PLATFORM` expansion (`AT_PLATFORM` as the loader sees it).
    pub platform: String,
    /// The `$LIB` expansion.
    pub lib: String,
}

impl HostLoader {
    /// Asks the host loader (`ld.so --help`, glibc 2.33 and later), once per process. Falls back
    /// to [`HostLoader::debian_x86_64`] when the loader is absent or too old to answer.
    pub fn detect() -> HostLoader {
        static HOST: OnceLock<HostLoader> = OnceLock::new();
        HOST.get_or_init(|| {
            Self::query(Path::new(HOST_INTERPRETER)).unwrap_or_else(Self::debian_x86_64)
        })
        .clone()
    }

    /// What Debian 12's x86_64 loader reports.
    pub fn debian_x86_64() -> HostLoader {
        HostLoader {
            system_dirs: [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib",
                "/usr/lib",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            platform: "x86_64".to_owned(),
            lib: "lib/x86_64-linux-gnu".to_owned(),
        }
    }

    fn query(loader: &Path) -> Option<HostLoader> {
        let output = Command::new(loader)
            .arg("--help")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("LD_PRELOAD")
            .env_remove("LD_AUDIT")
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        Self::parse_help(&String::from_utf8_lossy(&output.stdout))
    }

    /// Reads the `ld.so --help` lines `  /dir (system search path)` and
    /// `  x86_64 (AT_PLATFORM; supported, searched)`.
    pub fn parse_help(text: &str) -> Option<HostLoader> {
        let mut system_dirs = Vec::new();
        let mut platform = None;
        for line in text.lines().map(str::trim) {
            if let Some(dir) = line.strip_suffix("(system search path)") {
                system_dirs.push(PathBuf::from(dir.trim()));
            } else if let Some((name, rest)) = line.split_once(' ') {
                if rest.starts_with("(AT_PLATFORM") && platform.is_none() {
                    platform = Some(name.to_owned());
                }
            }
        }
        let lib = lib_token_for(system_dirs.first()?);
        // glibc 2.37 dropped the legacy hwcaps listing that names AT_PLATFORM; the kernel's
        // AT_PLATFORM is the architecture name on x86_64 and aarch64.
        let platform = platform.unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        Some(HostLoader {
            system_dirs,
            platform,
            lib,
        })
    }
}

/// `$LIB` as the loader expands it, from its first system directory: Debian's multiarch layout
/// gives `/lib/x86_64-linux-gnu` -> `lib/x86_64-linux-gnu` (what Debian's loader expands it to);
/// elsewhere it is the directory's last component (`/lib64` -> `lib64` on Fedora, `/usr/lib` ->
/// `lib` on Arch).
fn lib_token_for(first_system_dir: &Path) -> String {
    let text = first_system_dir.to_string_lossy();
    let relative = text.trim_start_matches('/').trim_end_matches('/');
    match relative.split_once('/') {
        Some(("lib", triplet)) if triplet.contains("-linux-") && !triplet.contains('/') => {
            relative.to_owned()
        }
        _ => relative.rsplit('/').next().unwrap_or("lib").to_owned(),
    }
}

/// Resolves closures; caches the parsed objects, so one resolver serves many closures.
#[derive(Debug)]
pub struct Resolver {
    ld_library_path: Option<String>,
    conf_dirs: Vec<PathBuf>,
    host: HostLoader,
    objects: HashMap<PathBuf, Arc<Object>>,
}

impl Resolver {
    /// Uses `$LD_LIBRARY_PATH` and `/etc/ld.so.conf` (with its `include`s).
    pub fn new() -> Result<Resolver> {
        let ld_library_path = std::env::var("LD_LIBRARY_PATH").ok();
        Self::with_config(ld_library_path.as_deref(), Path::new("/etc/ld.so.conf"))
    }

    /// Uses the given `LD_LIBRARY_PATH` value and `ld.so.conf` file (a missing file counts as
    /// empty, as for `ldconfig`).
    pub fn with_config(ld_library_path: Option<&str>, ld_so_conf: &Path) -> Result<Resolver> {
        Ok(Resolver {
            // The loader ignores an empty LD_LIBRARY_PATH.
            ld_library_path: ld_library_path
                .filter(|value| !value.is_empty())
                .map(str::to_owned),
            conf_dirs: parse_ld_so_conf(ld_so_conf)?,
            host: HostLoader::detect(),
            objects: HashMap::new(),
        })
    }

    /// Replaces what the host loader reported (system directories, `$LIB`, `$PLATFORM`).
    pub fn with_host_loader(mut self, host: HostLoader) -> Resolver {
        self.host = host;
        self
    }

    pub fn ld_library_path(&self) -> Option<&str> {
        self.ld_library_path.as_deref()
    }

    /// The `ld.so.conf` directories, in the order the cache prefers them.
    pub fn conf_dirs(&self) -> &[PathBuf] {
        &self.conf_dirs
    }

    pub fn host_loader(&self) -> &HostLoader {
        &self.host
    }

    /// Closure of one object (an executable, a libpython, an extension module).
    pub fn closure_of(&mut self, object: &Path) -> Result<Closure> {
        self.closure(&[object.to_path_buf()])
    }

    /// Closure of several roots merged. The first root plays the program's part (its `DT_RPATH`
    /// applies to every lookup, its `$ORIGIN` to `LD_LIBRARY_PATH`); the others are handled in
    /// order like objects `dlopen()`ed by it, so a name already resolved keeps its first file.
    pub fn closure(&mut self, roots: &[PathBuf]) -> Result<Closure> {
        let mut walk = Walk {
            res: self,
            nodes: Vec::new(),
            by_path: HashMap::new(),
            libraries: BTreeMap::new(),
            interpreter: None,
            main: None,
            queue: VecDeque::new(),
            target: Target::default(),
        };
        walk.run(roots)?;
        Ok(walk.finish())
    }

    fn object(&mut self, canonical: &Path) -> Result<Arc<Object>> {
        if let Some(object) = self.objects.get(canonical) {
            return Ok(object.clone());
        }
        let bytes = fs::read(canonical)
            .with_context(|| format!("cannot read `{}`", canonical.display()))?;
        let object = Arc::new(parse_object(canonical, &bytes)?);
        self.objects.insert(canonical.to_path_buf(), object.clone());
        Ok(object)
    }
}

/// What the loader checks a candidate file against: its own class, byte order and machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Target {
    class64: bool,
    little: bool,
    machine: u16,
}

impl Target {
    fn ehdr_size(self) -> usize {
        if self.class64 {
            64
        } else {
            52
        }
    }

    /// The interpreter path the ABI fixes for this target, which `ldd` uses for libraries.
    fn default_interpreter(self) -> Option<&'static str> {
        match (self.machine, self.class64) {
            (EM_X86_64, true) => Some("/lib64/ld-linux-x86-64.so.2"),
            (EM_X86_64, false) => Some("/libx32/ld-linux-x32.so.2"),
            (EM_386, false) => Some("/lib/ld-linux.so.2"),
            (EM_AARCH64, true) => Some("/lib/ld-linux-aarch64.so.1"),
            _ => None,
        }
    }
}

/// The parts of an ELF object that matter for dependency resolution.
#[derive(Debug)]
struct Object {
    path: PathBuf,
    target: Target,
    interp: Option<String>,
    needed: Vec<String>,
    soname: Option<String>,
    /// `None` when the object also has `DT_RUNPATH`: glibc then ignores its `DT_RPATH`.
    rpath: Option<String>,
    runpath: Option<String>,
    nodeflib: bool,
}

fn parse_object(path: &Path, bytes: &[u8]) -> Result<Object> {
    let invalid = |reason: String| ElfError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if !bytes.starts_with(ELFMAG) {
        return Err(invalid("not an ELF file".to_owned()).into());
    }
    let header =
        Elf::parse_header(bytes).map_err(|e| invalid(format!("malformed ELF header: {e}")))?;
    let container = header
        .container()
        .map_err(|e| invalid(format!("unsupported ELF class: {e}")))?;
    let endian = header
        .endianness()
        .map_err(|e| invalid(format!("unsupported ELF byte order: {e}")))?;
    let ctx = Ctx::new(container, endian);
    let phdrs = ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
        .map_err(|e| invalid(format!("malformed program headers: {e}")))?;
    let mut object = Object {
        path: path.to_path_buf(),
        target: Target {
            class64: container == Container::Big,
            little: endian == Endian::Little,
            machine: header.e_machine,
        },
        interp: None,
        needed: Vec::new(),
        soname: None,
        rpath: None,
        runpath: None,
        nodeflib: false,
    };
    if let Some(interp) = phdrs.iter().find(|ph| ph.p_type == PT_INTERP) {
        let text = cstr_at(bytes, interp.p_offset, interp.p_filesz, 0)
            .ok_or_else(|| invalid("PT_INTERP lies outside the file".to_owned()))?;
        object.interp = Some(text);
    }
    let dynamic = Dynamic::parse(bytes, &phdrs, ctx)
        .map_err(|e| invalid(format!("malformed dynamic section: {e}")))?;
    if let Some(dynamic) = dynamic {
        let (strtab, strsz) = (dynamic.info.strtab as u64, dynamic.info.strsz as u64);
        let string = |tag: &str, offset: u64| {
            cstr_at(bytes, strtab, strsz, offset).ok_or_else(|| {
                invalid(format!(
                    "{tag} string at {offset:#x} lies outside the dynamic string table"
                ))
            })
        };
        for entry in &dynamic.dyns {
            match entry.d_tag {
                DT_NEEDED => object.needed.push(string("DT_NEEDED", entry.d_val)?),
                DT_SONAME => object.soname = Some(string("DT_SONAME", entry.d_val)?),
                DT_RPATH => object.rpath = Some(string("DT_RPATH", entry.d_val)?),
                DT_RUNPATH => object.runpath = Some(string("DT_RUNPATH", entry.d_val)?),
                DT_FLAGS_1 => object.nodeflib = entry.d_val & DF_1_NODEFLIB != 0,
                _ => {}
            }
        }
        if object.runpath.is_some() {
            object.rpath = None;
        }
    }
    Ok(object)
}

/// The NUL-terminated string at `offset` inside the table at `table..table + size` of `bytes`.
/// A zero `size` means "up to the end of the file" (for `PT_INTERP`, whose size includes the NUL).
fn cstr_at(bytes: &[u8], table: u64, size: u64, offset: u64) -> Option<String> {
    let start = usize::try_from(table.checked_add(offset)?).ok()?;
    let end = match size {
        0 => bytes.len(),
        _ => usize::try_from(table.checked_add(size)?)
            .ok()?
            .min(bytes.len()),
    };
    let slice = bytes.get(start..end)?;
    let len = slice.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&slice[..len]).into_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Library,
    Interpreter,
    /// The ABI's default loader, present in memory whenever a library is run under `ldd` or
    /// `dlopen()`ed by a dynamic program; reported once something names it.
    LatentInterpreter,
}

/// One object of the link map being built.
struct Node {
    obj: Arc<Object>,
    role: Role,
    /// The object whose need loaded this one (glibc's `l_loader`), for the `DT_RPATH` chain.
    loader: Option<usize>,
    /// `$ORIGIN` of this object.
    origin: Option<PathBuf>,
    /// Names this object was requested under (glibc's `l_libname`).
    names: Vec<String>,
}

enum Candidate {
    Missing,
    Skip(&'static str),
    Accept,
}

struct Walk<'r> {
    res: &'r mut Resolver,
    nodes: Vec<Node>,
    by_path: HashMap<PathBuf, usize>,
    libraries: BTreeMap<String, Library>,
    interpreter: Option<usize>,
    main: Option<usize>,
    queue: VecDeque<usize>,
    target: Target,
}

impl Walk<'_> {
    fn run(&mut self, roots: &[PathBuf]) -> Result<()> {
        let mut loaded = Vec::with_capacity(roots.len());
        for given in roots {
            let canonical = fs::canonicalize(given)
                .with_context(|| format!("cannot resolve `{}`", given.display()))?;
            let obj = self.res.object(&canonical)?;
            loaded.push((given, canonical, obj));
        }
        let Some((_, _, first)) = loaded.first() else {
            return Ok(());
        };
        self.target = first.target;
        for (given, _, obj) in &loaded {
            if obj.target != self.target {
                bail!(
                    "`{}` is for another ELF class, byte order or machine than `{}`",
                    given.display(),
                    roots[0].display()
                );
            }
        }
        for (_, _, obj) in &loaded {
            if let Some(interp) = &obj.interp {
                self.set_interpreter(interp, &obj.path)?;
            }
        }
        if self.interpreter.is_none() {
            self.add_latent_interpreter();
        }
        for (given, canonical, obj) in loaded {
            if self.by_path.contains_key(&canonical) {
                continue;
            }
            // A program started by the kernel gets its $ORIGIN from /proc/self/exe (canonical);
            // a dlopen()ed object from the path it was opened by.
            let origin = match obj.interp.is_some() {
                true => canonical.parent().map(Path::to_path_buf),
                false => absolute(given).parent().map(Path::to_path_buf),
            };
            let idx = self.push(
                Node {
                    obj,
                    role: Role::Root,
                    loader: None,
                    origin,
                    names: vec![given.to_string_lossy().into_owned()],
                },
                canonical,
            );
            self.main.get_or_insert(idx);
            self.queue.push_back(idx);
            self.drain()?;
        }
        if let Some(libc) = self.libc() {
            for extra in runtime_extras() {
                self.need(extra, libc)?;
            }
            self.drain()?;
        }
        Ok(())
    }

    fn finish(self) -> Closure {
        Closure {
            interpreter: self.interpreter.map(|i| self.nodes[i].obj.path.clone()),
            libraries: self.libraries.into_values().collect(),
        }
    }

    fn push(&mut self, node: Node, canonical: PathBuf) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(node);
        self.by_path.insert(canonical, idx);
        idx
    }

    fn set_interpreter(&mut self, interp: &str, needed_by: &Path) -> Result<()> {
        let path = Path::new(interp);
        let canonical = fs::canonicalize(path).map_err(|_| ElfError::NotFound {
            library: interp.to_owned(),
            needed_by: needed_by.to_path_buf(),
            searched: vec![path.to_path_buf()],
        })?;
        if let Some(current) = self.interpreter {
            let current = &self.nodes[current];
            if current.obj.path != canonical {
                bail!(
                    "the roots use different program interpreters: `{}` and `{interp}` (needed by `{}`)",
                    current.names[0],
                    needed_by.display()
                );
            }
            return Ok(());
        }
        let obj = self.res.object(&canonical)?;
        let idx = self.push(
            Node {
                obj,
                role: Role::Interpreter,
                loader: None,
                origin: None,
                names: vec![interp.to_owned()],
            },
            canonical,
        );
        self.interpreter = Some(idx);
        Ok(())
    }

    fn add_latent_interpreter(&mut self) {
        let Some(default) = self.target.default_interpreter() else {
            return;
        };
        let Ok(canonical) = fs::canonicalize(default) else {
            return;
        };
        if let Ok(obj) = self.res.object(&canonical) {
            self.push(
                Node {
                    obj,
                    role: Role::LatentInterpreter,
                    loader: None,
                    origin: None,
                    names: vec![default.to_owned()],
                },
                canonical,
            );
        }
    }

    fn drain(&mut self) -> Result<()> {
        while let Some(idx) = self.queue.pop_front() {
            let obj = self.nodes[idx].obj.clone();
            for name in &obj.needed {
                self.need(name, idx)?;
            }
        }
        Ok(())
    }

    fn libc(&self) -> Option<usize> {
        self.nodes.iter().position(|node| {
            matches!(node.role, Role::Root | Role::Library)
                && (node.obj.soname.as_deref() == Some(LIBC_SONAME)
                    || node.names.iter().any(|name| name == LIBC_SONAME))
        })
    }

    fn find_loaded(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.names.iter().any(|n| n == name) || node.obj.soname.as_deref() == Some(name)
        })
    }

    /// Resolves `raw` (a `DT_NEEDED` string, or a runtime extra) needed by node `from`.
    fn need(&mut self, raw: &str, from: usize) -> Result<()> {
        let name = match raw.contains('$') {
            false => raw.to_owned(),
            true => {
                let host = &self.res.host;
                let origin = self.nodes[from].origin.as_deref();
                match expand_dst(raw, origin, &host.lib, &host.platform) {
                    Some(name) if !name.is_empty() => name,
                    _ => {
                        return Err(ElfError::Invalid {
                            path: self.nodes[from].obj.path.clone(),
                            reason: format!("cannot expand dynamic string tokens in `{raw}`"),
                        }
                        .into())
                    }
                }
            }
        };
        if let Some(idx) = self.find_loaded(&name) {
            self.record(raw, idx, from);
            return Ok(());
        }
        let found = match name.contains('/') {
            true => self.open_path(&name, raw, from)?,
            false => self.search(&name, raw, from)?,
        };
        let canonical = fs::canonicalize(&found)
            .with_context(|| format!("cannot resolve `{}`", found.display()))?;
        if let Some(&idx) = self.by_path.get(&canonical) {
            self.nodes[idx].names.push(name);
            self.record(raw, idx, from);
            return Ok(());
        }
        let obj = self.res.object(&canonical)?;
        let origin = absolute(&found).parent().map(Path::to_path_buf);
        // Without a PT_INTERP among the roots and without the ABI's loader path on disk, the
        // loader is still recognised by its soname when libc's DT_NEEDED finds it by search.
        let loader_soname = self
            .target
            .default_interpreter()
            .and_then(|path| path.rsplit('/').next());
        let role = match self.interpreter.is_none() && obj.soname.as_deref() == loader_soname {
            true => Role::LatentInterpreter,
            false => Role::Library,
        };
        let idx = self.push(
            Node {
                obj,
                role,
                loader: Some(from),
                origin,
                names: vec![name],
            },
            canonical,
        );
        self.queue.push_back(idx);
        self.record(raw, idx, from);
        Ok(())
    }

    fn record(&mut self, raw: &str, idx: usize, from: usize) {
        match self.nodes[idx].role {
            Role::Interpreter => {}
            Role::LatentInterpreter => {
                self.nodes[idx].role = Role::Interpreter;
                self.interpreter = Some(idx);
            }
            Role::Root | Role::Library => {
                let path = self.nodes[idx].obj.path.clone();
                let needed_by = self.nodes[from].obj.path.clone();
                self.libraries
                    .entry(raw.to_owned())
                    .or_insert_with(|| Library {
                        name: raw.to_owned(),
                        path,
                        needed_by,
                    });
            }
        }
    }

    fn not_found(&self, raw: &str, from: usize, searched: Vec<PathBuf>) -> anyhow::Error {
        ElfError::NotFound {
            library: raw.to_owned(),
            needed_by: self.nodes[from].obj.path.clone(),
            searched,
        }
        .into()
    }

    fn open_path(&self, name: &str, raw: &str, from: usize) -> Result<PathBuf> {
        let path = PathBuf::from(name);
        match verify_candidate(&path, self.target)? {
            Candidate::Accept => Ok(path),
            Candidate::Missing => Err(self.not_found(raw, from, vec![path])),
            // Given as a path, there is nothing else to try: the loader fails.
            Candidate::Skip(reason) => Err(ElfError::Invalid {
                path,
                reason: reason.to_owned(),
            }
            .into()),
        }
    }

    fn search(&self, name: &str, raw: &str, from: usize) -> Result<PathBuf> {
        let dirs = self.search_dirs(from);
        for dir in &dirs {
            let candidate = dir.join(name);
            if let Candidate::Accept = verify_candidate(&candidate, self.target)? {
                return Ok(candidate);
            }
        }
        Err(self.not_found(raw, from, dirs))
    }

    /// The directories glibc searches for a need of node `from`, in order (see the module docs).
    fn search_dirs(&self, from: usize) -> Vec<PathBuf> {
        let host = &self.res.host;
        let node = &self.nodes[from];
        let mut dirs = Vec::new();
        if node.obj.runpath.is_none() {
            let mut did_main = false;
            let mut current = Some(from);
            while let Some(i) = current {
                let n = &self.nodes[i];
                if let Some(rpath) = &n.obj.rpath {
                    dirs.extend(search_path(rpath, &[':'], n.origin.as_deref(), host));
                    did_main |= Some(i) == self.main;
                }
                current = n.loader;
            }
            if let Some(main) = self.main.filter(|_| !did_main) {
                let main = &self.nodes[main];
                if let Some(rpath) = &main.obj.rpath {
                    dirs.extend(search_path(rpath, &[':'], main.origin.as_deref(), host));
                }
            }
        }
        if let Some(llp) = &self.res.ld_library_path {
            let origin = self.main.and_then(|m| self.nodes[m].origin.as_deref());
            dirs.extend(search_path(llp, &[':', ';'], origin, host));
        }
        if let Some(runpath) = &node.obj.runpath {
            dirs.extend(search_path(runpath, &[':'], node.origin.as_deref(), host));
        }
        let nodeflib = node.obj.nodeflib;
        for dir in &self.res.conf_dirs {
            if !(nodeflib && host.system_dirs.contains(dir)) {
                dirs.push(dir.clone());
            }
        }
        if !nodeflib {
            dirs.extend(host.system_dirs.iter().cloned());
        }
        // A directory tried twice gives the same answer twice.
        let mut seen = HashSet::new();
        dirs.retain(|dir| seen.insert(dir.clone()));
        dirs
    }
}

/// Checks a candidate file the way glibc's `open_verify` does, in its order: only another ELF
/// class or another machine lets the search go on; every other mismatch stops the loader.
fn verify_candidate(path: &Path, target: Target) -> Result<Candidate, ElfError> {
    let Ok(file) = fs::File::open(path) else {
        return Ok(Candidate::Missing);
    };
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Ok(Candidate::Missing);
    }
    let mut head = Vec::with_capacity(64);
    let _ = file.take(64).read_to_end(&mut head);
    let invalid = |reason: &str| ElfError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    // The loader reads its own ELF header size first, whatever the file's class.
    if head.len() < target.ehdr_size() {
        return Err(invalid("file too short"));
    }
    if !head.starts_with(ELFMAG) {
        return Err(invalid("invalid ELF header"));
    }
    let class = if target.class64 {
        ELFCLASS64
    } else {
        ELFCLASS32
    };
    if head[EI_CLASS] != class {
        return Ok(Candidate::Skip("wrong ELF class"));
    }
    let data = if target.little {
        ELFDATA2LSB
    } else {
        ELFDATA2MSB
    };
    if head[EI_DATA] != data {
        return Err(invalid(match target.little {
            true => "ELF file data encoding not little-endian",
            false => "ELF file data encoding not big-endian",
        }));
    }
    if head[EI_VERSION] != EV_CURRENT {
        return Err(invalid("ELF file version ident does not match current one"));
    }
    let (osabi, abiversion) = (head[EI_OSABI], head[EI_OSABI + 1]);
    if osabi != ELFOSABI_SYSV && osabi != ELFOSABI_GNU {
        return Err(invalid("ELF file OS ABI invalid"));
    }
    // glibc 2.36 knows GNU ABI versions 0..=3 (unique symbols, IFUNC, absolute symbols).
    if (osabi == ELFOSABI_SYSV && abiversion != 0) || abiversion > 3 {
        return Err(invalid("ELF file ABI version invalid"));
    }
    if head[EI_OSABI + 2..16].iter().any(|&b| b != 0) {
        return Err(invalid("nonzero padding in e_ident"));
    }
    let half = |at: usize| match target.little {
        true => u16::from_le_bytes([head[at], head[at + 1]]),
        false => u16::from_be_bytes([head[at], head[at + 1]]),
    };
    let e_version = match target.little {
        true => u32::from_le_bytes([head[20], head[21], head[22], head[23]]),
        false => u32::from_be_bytes([head[20], head[21], head[22], head[23]]),
    };
    if e_version != u32::from(EV_CURRENT) {
        return Err(invalid("ELF file version does not match current one"));
    }
    if half(18) != target.machine {
        return Ok(Candidate::Skip("wrong machine"));
    }
    if half(16) != ET_DYN && half(16) != ET_EXEC {
        return Err(invalid("only ET_DYN and ET_EXEC can be loaded"));
    }
    let (phentsize_at, phentsize) = match target.class64 {
        true => (54, 56),
        false => (42, 32),
    };
    if half(phentsize_at) != phentsize {
        return Err(invalid("ELF file's phentsize not the expected size"));
    }
    Ok(Candidate::Accept)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    }
}

/// Splits a search path (`DT_RPATH`, `DT_RUNPATH`, `LD_LIBRARY_PATH`) into directories, expanding
/// dynamic string tokens per element. An empty element is the current directory (an empty
/// `PathBuf`, so `join` leaves the name relative); an element whose tokens cannot be expanded is
/// dropped, as glibc drops it.
fn search_path(
    value: &str,
    separators: &[char],
    origin: Option<&Path>,
    host: &HostLoader,
) -> Vec<PathBuf> {
    if value.is_empty() {
        return Vec::new();
    }
    value
        .split(|c| separators.contains(&c))
        .filter_map(|element| {
            if element.is_empty() {
                return Some(PathBuf::new());
            }
            let expanded = match element.contains('$') {
                true => expand_dst(element, origin, &host.lib, &host.platform)?,
                false => element.to_owned(),
            };
            (!expanded.is_empty()).then(|| PathBuf::from(expanded))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    Origin,
    Platform,
    Lib,
}

/// Length of the token `name` at the start of `input` (the text after a `$`), glibc's `is_dst`:
/// `NAME` not followed by an identifier character, or `{NAME}`.
fn dst_len(input: &str, name: &str) -> Option<usize> {
    if let Some(inner) = input.strip_prefix('{') {
        return inner
            .strip_prefix(name)
            .filter(|rest| rest.starts_with('}'))
            .map(|_| name.len() + 2);
    }
    let rest = input.strip_prefix(name)?;
    match rest.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => None,
        _ => Some(name.len()),
    }
}

fn match_dst(input: &str) -> Option<(Dst, usize)> {
    [
        ("ORIGIN", Dst::Origin),
        ("PLATFORM", Dst::Platform),
        ("LIB", Dst::Lib),
    ]
    .into_iter()
    .find_map(|(name, dst)| dst_len(input, name).map(|len| (dst, len)))
}

/// Expands `$ORIGIN`, `$PLATFORM`, `$LIB` (and their `${...}` forms); other `$` text stays as it
/// is. `None` when `$ORIGIN` is used but unknown (glibc then drops the element).
fn expand_dst(text: &str, origin: Option<&Path>, lib: &str, platform: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match match_dst(after) {
            Some((dst, len)) => {
                match dst {
                    Dst::Origin => out.push_str(origin?.to_str()?),
                    Dst::Platform => out.push_str(platform),
                    Dst::Lib => out.push_str(lib),
                }
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// True when `text` contains an `$ORIGIN`/`${ORIGIN}` token.
fn uses_origin(text: &str) -> bool {
    text.match_indices('$')
        .any(|(pos, _)| dst_len(&text[pos + 1..], "ORIGIN").is_some())
}

/// The directories of an `ld.so.conf`, following `include` lines, in `ldconfig`'s order.
fn parse_ld_so_conf(path: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut stack = Vec::new();
    parse_conf_file(path, &mut dirs, &mut stack)?;
    Ok(dirs)
}

/// `ldconfig`'s `parse_conf`: `#` starts a comment anywhere on a line; `include PATTERN...` reads
/// the files matching each glob (relative patterns are relative to the including file's directory);
/// `hwcap` lines are obsolete and ignored; any other line is one directory, where an old
/// `dir=TYPE` suffix is dropped, as are trailing slashes.
fn parse_conf_file(path: &Path, dirs: &mut Vec<PathBuf>, stack: &mut Vec<PathBuf>) -> Result<()> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    // ldconfig does not guard against include cycles; stop at one instead of recursing forever.
    let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&key) {
        return Ok(());
    }
    stack.push(key);
    let base = path.parent().unwrap_or(Path::new(""));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(patterns) = keyword_args(line, "include", false) {
            for pattern in patterns.split([' ', '\t']).filter(|p| !p.is_empty()) {
                let pattern = match pattern.starts_with('/') {
                    true => PathBuf::from(pattern),
                    false => base.join(pattern),
                };
                for file in glob(&pattern) {
                    parse_conf_file(&file, dirs, stack)?;
                }
            }
        } else if keyword_args(line, "hwcap", true).is_some() {
            continue;
        } else {
            let dir = line.split('=').next().unwrap_or("").trim_end();
            let trimmed = dir.trim_end_matches('/');
            let dir = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
            if !dir.as_os_str().is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    stack.pop();
    Ok(())
}

/// The text after `keyword` and a blank, if `line` starts with them.
fn keyword_args<'a>(line: &'a str, keyword: &str, ignore_case: bool) -> Option<&'a str> {
    let head = line.get(..keyword.len())?;
    let matches = match ignore_case {
        true => head.eq_ignore_ascii_case(keyword),
        false => head == keyword,
    };
    let rest = &line[keyword.len()..];
    (matches && rest.starts_with([' ', '\t'])).then_some(rest)
}

/// The existing paths matching a `glob(3)` pattern (`*`, `?`, `[...]` per component), sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str();
        let text = part.to_string_lossy();
        let wild = matches!(component, Component::Normal(_)) && text.contains(['*', '?', '[']);
        if !wild {
            current.iter_mut().for_each(|base| base.push(part));
            continue;
        }
        let mut next = Vec::new();
        for base in &current {
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if fnmatch(text.as_bytes(), name.as_encoded_bytes()) {
                    next.push(base.join(&name));
                }
            }
        }
        current = next;
    }
    current.retain(|path| path.exists());
    current.sort();
    current
}

/// `fnmatch(3)` with `FNM_PERIOD` for one path component: a leading `.` only matches a literal `.`.
fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    fnmatch_from(pattern, name)
}

fn fnmatch_from(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|skip| fnmatch_from(&pattern[1..], &name[skip..])),
        Some(b'?') => !name.is_empty() && fnmatch_from(&pattern[1..], &name[1..]),
        Some(b'[') => match (name.first(), bracket(&pattern[1..])) {
            (Some(&c), Some((set, negated, len))) => {
                set.contains(c) != negated && fnmatch_from(&pattern[1 + len..], &name[1..])
            }
            (Some(&c), None) => c == b'[' && fnmatch_from(&pattern[1..], &name[1..]),
            (None, _) => false,
        },
        Some(b'\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && fnmatch_from(&pattern[2..], &name[1..])
        }
        Some(&c) => name.first() == Some(&c) && fnmatch_from(&pattern[1..], &name[1..]),
    }
}

struct ByteSet(Vec<(u8, u8)>);

impl ByteSet {
    fn contains(&self, c: u8) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }
}

/// Parses a bracket expression after its `[`: the set, whether it is negated, and how many bytes
/// it spans including the closing `]`. `None` when unterminated (the `[` is then literal).
fn bracket(pattern: &[u8]) -> Option<(ByteSet, bool, usize)> {
    let mut i = 0;
    let negated = matches!(pattern.first(), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *pattern.get(i)?;
        if c == b']' && !first {
            return Some((ByteSet(ranges), negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            ranges.push((c, pattern[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

/// Rewrites an ELF executable or shared object for bundling; pure, no I/O.
///
/// 1. Drops every section that is not `SHF_ALLOC` (`.debug_*`, `.symtab`, `.strtab`, `.comment`,
///    `.gnu_debuglink`, ...): the file is cut after the last byte that a program header or an
///    allocated section covers, and a new `.shstrtab` and section header table holding only the
///    kept sections are appended. The loader never reads section headers, and every byte it maps
///    stays where it was, so the object loads exactly as before. Skipped when the object has no
///    usable section headers.
/// 2. Removes `DT_RPATH`/`DT_RUNPATH` entries whose every element is an absolute path without
///    `$ORIGIN`: they name directories of the build machine (pyenv's
///    `/root/.pyenv/versions/3.11.7/lib`), and a bundle run on that machine would load the host's
///    libraries through them. The later dynamic entries move up and `DT_NULL` fills the end.
///    Entries using `$ORIGIN` stay: wheels find their vendored libraries with them.
///
/// Input that is not ELF, and ELF files that are not loaded by `ld.so` (relocatable objects,
/// core files), come back unchanged. ELF files that cannot be rewritten safely (truncated or
/// inconsistent headers) are an error.
pub fn prepare_for_bundle(bytes: &[u8]) -> Result<Vec<u8>> {
    if !bytes.starts_with(ELFMAG) {
        return Ok(bytes.to_vec());
    }
    let header = Elf::parse_header(bytes).map_err(|e| anyhow!("malformed ELF header: {e}"))?;
    let container = header
        .container()
        .map_err(|e| anyhow!("unsupported ELF class: {e}"))?;
    let endian = header
        .endianness()
        .map_err(|e| anyhow!("unsupported ELF byte order: {e}"))?;
    if header.e_type != ET_EXEC && header.e_type != ET_DYN {
        return Ok(bytes.to_vec());
    }
    let layout = Layout {
        is64: container == Container::Big,
        little: endian == Endian::Little,
    };
    let ctx = Ctx::new(container, endian);
    if header.e_phnum != 0 && usize::from(header.e_phentsize) != layout.phdr_size() {
        bail!("unexpected program header size {}", header.e_phentsize);
    }
    if header.e_phnum == 0xffff {
        bail!("extended program header numbering (PN_XNUM) is not supported");
    }
    let phdrs = ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
        .map_err(|e| anyhow!("malformed program headers: {e}"))?;
    for ph in phdrs.iter().filter(|ph| ph.p_type != PT_NULL) {
        let end = ph.p_offset.checked_add(ph.p_filesz);
        if end.is_none_or(|end| end > bytes.len() as u64) {
            bail!("truncated ELF file: a program header reaches past its end");
        }
    }
    let mut out = bytes.to_vec();
    drop_build_host_search_paths(&mut out, &phdrs, layout)?;
    strip_non_alloc_sections(out, &header, &phdrs, ctx, layout)
}

/// Integer access in the file's class and byte order.
#[derive(Debug, Clone, Copy)]
struct Layout {
    is64: bool,
    little: bool,
}

impl Layout {
    fn word(self) -> usize {
        if self.is64 {
            8
        } else {
            4
        }
    }

    fn phdr_size(self) -> usize {
        if self.is64 {
            56
        } else {
            32
        }
    }

    fn shdr_size(self) -> usize {
        if self.is64 {
            64
        } else {
            40
        }
    }

    fn dyn_size(self) -> usize {
        2 * self.word()
    }

    fn read(self, bytes: &[u8], offset: usize, size: usize) -> Result<u64> {
        let field = offset
            .checked_add(size)
            .and_then(|end| bytes.get(offset..end))
            .ok_or_else(|| anyhow!("ELF data at {offset:#x} lies outside the file"))?;
        let mut value = 0u64;
        for (i, &b) in field.iter().enumerate() {
            match self.little {
                true => value |= u64::from(b) << (8 * i),
                false => value = (value << 8) | u64::from(b),
            }
        }
        Ok(value)
    }

    fn write(self, bytes: &mut [u8], offset: usize, size: usize, value: u64) {
        let field = &mut bytes[offset..offset + size];
        for (i, b) in field.iter_mut().enumerate() {
            let shift = match self.little {
                true => 8 * i,
                false => 8 * (size - 1 - i),
            };
            *b = (value >> shift) as u8;
        }
    }

    fn push(self, out: &mut Vec<u8>, size: usize, value: u64) {
        let at = out.len();
        out.resize(at + size, 0);
        self.write(out, at, size, value);
    }

    fn push_shdr(self, out: &mut Vec<u8>, sh: &SectionHeader) {
        let w = self.word();
        self.push(out, 4, sh.sh_name as u64);
        self.push(out, 4, sh.sh_type.into());
        self.push(out, w, sh.sh_flags);
        self.push(out, w, sh.sh_addr);
        self.push(out, w, sh.sh_offset);
        self.push(out, w, sh.sh_size);
        self.push(out, 4, sh.sh_link.into());
        self.push(out, 4, sh.sh_info.into());
        self.push(out, w, sh.sh_addralign);
        self.push(out, w, sh.sh_entsize);
    }
}

/// The file offset of virtual address `vaddr`, through the `PT_LOAD` that maps it from the file.
fn vaddr_to_offset(phdrs: &[ProgramHeader], vaddr: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .find(|ph| ph.p_vaddr <= vaddr && vaddr - ph.p_vaddr < ph.p_filesz)
        .map(|ph| vaddr - ph.p_vaddr + ph.p_offset)
}

/// True for an `DT_RPATH`/`DT_RUNPATH` value that only names absolute directories without
/// `$ORIGIN`. An empty element is the current directory (relative), so it keeps the entry.
fn points_at_build_host(value: &str) -> bool {
    value
        .split(':')
        .all(|element| element.starts_with('/') && !uses_origin(element))
}

fn drop_build_host_search_paths(
    data: &mut [u8],
    phdrs: &[ProgramHeader],
    layout: Layout,
) -> Result<()> {
    let Some(dynamic) = phdrs.iter().find(|ph| ph.p_type == PT_DYNAMIC) else {
        return Ok(());
    };
    let (w, size) = (layout.word(), layout.dyn_size());
    let start = dynamic.p_offset as usize;
    let mut entries = Vec::new();
    let mut terminated = false;
    for i in 0..dynamic.p_filesz as usize / size {
        let at = start + i * size;
        let tag = layout.read(data, at, w)?;
        let value = layout.read(data, at + w, w)?;
        if tag == DT_NULL {
            terminated = true;
            break;
        }
        entries.push((tag, value));
    }
    if !terminated {
        bail!("dynamic section has no DT_NULL terminator");
    }
    let find = |wanted: u64| entries.iter().find(|(tag, _)| *tag == wanted).map(|e| e.1);
    let has_paths = entries
        .iter()
        .any(|(tag, _)| *tag == DT_RPATH || *tag == DT_RUNPATH);
    if !has_paths {
        return Ok(());
    }
    let strtab = find(DT_STRTAB)
        .and_then(|vaddr| vaddr_to_offset(phdrs, vaddr))
        .ok_or_else(|| anyhow!("DT_STRTAB is missing or not mapped from the file"))?;
    let strsz = find(DT_STRSZ).unwrap_or(0);
    let mut kept = Vec::with_capacity(entries.len());
    for &(tag, value) in &entries {
        if tag == DT_RPATH || tag == DT_RUNPATH {
            let text = cstr_at(data, strtab, strsz, value)
                .ok_or_else(|| anyhow!("DT_RPATH/DT_RUNPATH string lies outside DT_STRTAB"))?;
            if points_at_build_host(&text) {
                continue;
            }
        }
        kept.push((tag, value));
    }
    if kept.len() == entries.len() {
        return Ok(());
    }
    // Rewrite the entries up to and including the original DT_NULL: shifted entries, then DT_NULL.
    for i in 0..=entries.len() {
        let at = start + i * size;
        let (tag, value) = kept.get(i).copied().unwrap_or((DT_NULL, 0));
        layout.write(data, at, w, tag);
        layout.write(data, at + w, w, value);
    }
    Ok(())
}

fn strip_non_alloc_sections(
    data: Vec<u8>,
    header: &Header,
    phdrs: &[ProgramHeader],
    ctx: Ctx,
    layout: Layout,
) -> Result<Vec<u8>> {
    // Section headers are for linkers and debuggers; when they are absent or unusable, leaving
    // the file as it is keeps it loadable.
    if header.e_shoff == 0 || usize::from(header.e_shentsize) != layout.shdr_size() {
        return Ok(data);
    }
    let Ok(shdrs) =
        SectionHeader::parse(&data, header.e_shoff as usize, header.e_shnum.into(), ctx)
    else {
        return Ok(data);
    };
    if shdrs.is_empty() {
        return Ok(data);
    }
    let file_len = data.len() as u64;
    let in_file = |sh: &SectionHeader| {
        sh.sh_type == SHT_NOBITS
            || sh.sh_size == 0
            || sh
                .sh_offset
                .checked_add(sh.sh_size)
                .is_some_and(|end| end <= file_len)
    };
    if !shdrs.iter().all(in_file) {
        return Ok(data);
    }
    // Bytes past every section and the section header table belong to no section: a payload
    // appended to the file (self-extracting archives, PyInstaller-style executables) that the
    // program reads from its own file. Cutting them would break it, so such files stay whole.
    let shdrs_end = header.e_shoff + (shdrs.len() * layout.shdr_size()) as u64;
    let described_end = shdrs
        .iter()
        .filter(|sh| sh.sh_type != SHT_NOBITS)
        .map(|sh| sh.sh_offset + sh.sh_size)
        .chain(phdrs.iter().map(|ph| ph.p_offset + ph.p_filesz))
        .fold(shdrs_end, u64::max);
    if described_end < file_len {
        return Ok(data);
    }
    let shstrndx = match u32::from(header.e_shstrndx) {
        SHN_XINDEX => shdrs[0].sh_link as usize,
        index => index as usize,
    };
    let old_names = shdrs.get(shstrndx).filter(|sh| sh.sh_type == SHT_STRTAB);
    let name_of = |sh: &SectionHeader| -> String {
        old_names
            .and_then(|names| cstr_at(&data, names.sh_offset, names.sh_size, sh.sh_name as u64))
            .unwrap_or_default()
    };

    let keep: Vec<usize> = (0..shdrs.len())
        .filter(|&i| i == 0 || shdrs[i].sh_flags & u64::from(SHF_ALLOC) != 0)
        .collect();
    let mut new_index = vec![None; shdrs.len()];
    for (new, &old) in keep.iter().enumerate() {
        new_index[old] = Some(new as u32);
    }
    let remap = |index: u32| -> u32 {
        match new_index.get(index as usize) {
            Some(mapped) => mapped.unwrap_or(0),
            None => index,
        }
    };

    let ehdr_size = if layout.is64 { 64 } else { 52 };
    let phdrs_end = header.e_phoff + u64::from(header.e_phnum) * layout.phdr_size() as u64;
    let mut keep_end = u64::from(header.e_ehsize).max(ehdr_size).max(phdrs_end);
    for ph in phdrs.iter().filter(|ph| ph.p_type != PT_NULL) {
        keep_end = keep_end.max(ph.p_offset + ph.p_filesz);
    }
    for &i in &keep[1..] {
        let sh = &shdrs[i];
        if sh.sh_type != SHT_NOBITS {
            keep_end = keep_end.max(sh.sh_offset + sh.sh_size);
        }
    }
    if keep_end > file_len {
        bail!("truncated ELF file: headers reach past its end");
    }

    let mut names = vec![0u8];
    let mut name_offsets = Vec::with_capacity(keep.len() + 1);
    for &old in &keep {
        let name = name_of(&shdrs[old]);
        if old == 0 || name.is_empty() {
            name_offsets.push(0);
            continue;
        }
        name_offsets.push(names.len());
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    name_offsets.push(names.len());
    names.extend_from_slice(b".shstrtab\0");

    let mut out = data;
    out.truncate(keep_end as usize);
    let names_offset = out.len();
    out.extend_from_slice(&names);
    let align = layout.word();
    out.resize(out.len().div_ceil(align) * align, 0);
    let shoff = out.len();

    let count = keep.len() + 1;
    let shstr_index = keep.len();
    for (new, &old) in keep.iter().enumerate() {
        let mut sh = shdrs[old].clone();
        if new == 0 {
            // Section 0 carries the real count and .shstrtab index when they do not fit in the
            // ELF header (extended section numbering).
            sh.sh_size = if count >= SHN_LORESERVE as usize {
                count as u64
            } else {
                0
            };
            sh.sh_link = if shstr_index >= SHN_LORESERVE as usize {
                shstr_index as u32
            } else {
                0
            };
        } else {
            sh.sh_name = name_offsets[new];
            sh.sh_link = remap(sh.sh_link);
            if sh.sh_type == SHT_REL
                || sh.sh_type == SHT_RELA
                || sh.sh_flags & u64::from(SHF_INFO_LINK) != 0
            {
                sh.sh_info = remap(sh.sh_info);
            }
        }
        layout.push_shdr(&mut out, &sh);
    }
    layout.push_shdr(
        &mut out,
        &SectionHeader {
            sh_name: name_offsets[shstr_index],
            sh_type: SHT_STRTAB,
            sh_flags: 0,
            sh_addr: 0,
            sh_offset: names_offset as u64,
            sh_size: names.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        },
    );

    let (shoff_at, shnum_at, shstrndx_at) = match layout.is64 {
        true => (0x28, 0x3c, 0x3e),
        false => (0x20, 0x30, 0x32),
    };
    layout.write(&mut out, shoff_at, layout.word(), shoff as u64);
    let shnum = if count >= SHN_LORESERVE as usize {
        0
    } else {
        count as u64
    };
    layout.write(&mut out, shnum_at, 2, shnum);
    let shstrndx = if shstr_index >= SHN_LORESERVE as usize {
        u64::from(SHN_XINDEX)
    } else {
        shstr_index as u64
    };
    layout.write(&mut out, shstrndx_at, 2, shstrndx);

    // Dynamic symbols name their section by index. The loader only tells SHN_UNDEF and SHN_ABS
    // apart, which renumbering never touches, but nm/readelf/gdb read the real index.
    for &old in &keep[1..] {
        let sh = &shdrs[old];
        let start = sh.sh_offset as usize;
        if sh.sh_type == SHT_DYNSYM {
            let (entsize, field) = match layout.is64 {
                true => (24, 6),
                false => (16, 14),
            };
            for i in 0..sh.sh_size as usize / entsize {
                let at = start + i * entsize + field;
                let index = layout.read(&out, at, 2)? as u32;
                if index != 0 && index < SHN_LORESERVE {
                    if let Some(Some(mapped)) = new_index.get(index as usize) {
                        layout.write(&mut out, at, 2, u64::from(*mapped));
                    }
                }
            }
        } else if sh.sh_type == SHT_SYMTAB_SHNDX {
            for i in 0..sh.sh_size as usize / 4 {
                let at = start + i * 4;
                let index = layout.read(&out, at, 4)? as u32;
                if let Some(Some(mapped)) = new_index.get(index as usize).filter(|_| index != 0) {
                    layout.write(&mut out, at, 4, u64::from(*mapped));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Output;

    // ---------------------------------------------------------------------------------------
    // Helpers

    fn host() -> HostLoader {
        HostLoader::detect()
    }

    /// What `ldd` reports for one object.
    #[derive(Debug, Default)]
    struct Ldd {
        interpreter: Option<PathBuf>,
        libraries: BTreeMap<String, PathBuf>,
        missing: Vec<String>,
        success: bool,
        stderr: String,
    }

    fn ldd(path: &Path, ld_library_path: Option<&str>) -> Ldd {
        trace(Command::new("ldd").arg(path), ld_library_path)
    }

    /// `ldd` without the shell script around it: `ldd` is a bash script, and a hostile
    /// `LD_LIBRARY_PATH` (a broken `libc.so.6` first) would break bash itself before the loader
    /// gets to trace anything. The loader's `--list` is what `ldd` runs.
    fn loader_list(path: &Path, ld_library_path: Option<&str>) -> Ldd {
        trace(
            Command::new(HOST_INTERPRETER).arg("--list").arg(path),
            ld_library_path,
        )
    }

    fn trace(cmd: &mut Command, ld_library_path: Option<&str>) -> Ldd {
        cmd.env_remove("LD_PRELOAD");
        match ld_library_path {
            Some(value) => cmd.env("LD_LIBRARY_PATH", value),
            None => cmd.env_remove("LD_LIBRARY_PATH"),
        };
        let output = cmd.output().expect("run ldd");
        let mut report = Ldd {
            success: output.status.success(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            ..Ldd::default()
        };
        let canonical = |text: &str| {
            fs::canonicalize(text).unwrap_or_else(|e| panic!("ldd printed `{text}`: {e}"))
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let line = line.trim();
            if let Some((name, rest)) = line.split_once(" => ") {
                if rest.starts_with("not found") {
                    report.missing.push(name.to_owned());
                } else {
                    let path = rest.rsplit_once(" (").map_or(rest, |(path, _)| path);
                    report.libraries.insert(name.to_owned(), canonical(path));
                }
            } else if line.starts_with('/') {
                let path = line.rsplit_once(" (").map_or(line, |(path, _)| path);
                report.interpreter = Some(canonical(path));
            }
        }
        report
    }

    /// The closure's libraries minus the runtime extras (and anything only they pull in), which
    /// `ldd` cannot know about.
    fn load_time_libraries(closure: &Closure) -> BTreeMap<String, PathBuf> {
        let libc = closure.library(LIBC_SONAME).map(|lib| lib.path.clone());
        let needed_by_libc = |lib: &Library| {
            Some(&lib.needed_by) == libc.as_ref()
                || lib.needed_by.file_name() == Some(OsStr::new(LIBC_SONAME))
        };
        let mut dropped: Vec<&Library> = closure
            .libraries
            .iter()
            .filter(|lib| runtime_extras().contains(&lib.name.as_str()) && needed_by_libc(lib))
            .collect();
        loop {
            let more: Vec<&Library> = closure
                .libraries
                .iter()
                .filter(|lib| !dropped.contains(lib))
                .filter(|lib| dropped.iter().any(|d| d.path == lib.needed_by))
                .collect();
            if more.is_empty() {
                break;
            }
            dropped.extend(more);
        }
        closure
            .libraries
            .iter()
            .filter(|lib| !dropped.contains(lib))
            .map(|lib| (lib.name.clone(), lib.path.clone()))
            .collect()
    }

    /// Checks the closure of `object` against `ldd` with the same `LD_LIBRARY_PATH`.
    fn assert_matches_ldd(resolver: &mut Resolver, object: &Path) {
        let report = ldd(object, resolver.ld_library_path());
        assert_matches(resolver, object, report);
    }

    fn assert_matches(resolver: &mut Resolver, object: &Path, report: Ldd) {
        let result = resolver.closure_of(object);
        if !report.missing.is_empty() {
            let err = result.expect_err(&format!(
                "{}: ldd reports missing libraries",
                object.display()
            ));
            match err.downcast_ref::<ElfError>() {
                Some(ElfError::NotFound { library, .. }) => assert!(
                    report.missing.contains(library),
                    "{}: we miss `{library}`, ldd misses {:?}",
                    object.display(),
                    report.missing
                ),
                other => panic!(
                    "{}: expected NotFound, got {other:?} ({err:#})",
                    object.display()
                ),
            }
            return;
        }
        assert!(
            report.success,
            "{}: ldd failed: {}",
            object.display(),
            report.stderr
        );
        let closure = result.unwrap_or_else(|e| panic!("{}: {e:#}", object.display()));
        assert_eq!(
            load_time_libraries(&closure),
            report.libraries,
            "{}: libraries differ from ldd",
            object.display()
        );
        assert_eq!(
            closure.interpreter,
            report.interpreter,
            "{}: interpreter differs from ldd",
            object.display()
        );
    }

    fn system_resolver(ld_library_path: Option<&str>) -> Resolver {
        Resolver::with_config(ld_library_path, Path::new("/etc/ld.so.conf")).unwrap()
    }

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn run(cmd: &mut Command) -> Output {
        // Another test thread may fork while a fixture this command runs is still open for
        // writing in this process; the child holds that descriptor until it execs, and the
        // kernel refuses to run a file open for writing (ETXTBSY). Wait it out.
        const ETXTBSY: i32 = 26;
        let mut tries = 0;
        let output = loop {
            match cmd.output() {
                Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
            }
        };
        assert!(
            output.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A pyenv (or Debian) CPython: its executable, libpython and extension modules.
    struct Python {
        label: String,
        executable: PathBuf,
        libpython: Option<PathBuf>,
        modules: Vec<PathBuf>,
    }

    fn installed_pythons() -> Vec<Python> {
        let mut found = Vec::new();
        let mut versions: Vec<PathBuf> = fs::read_dir("/root/.pyenv/versions")
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        versions.sort();
        for prefix in versions {
            let version = prefix.file_name().unwrap().to_string_lossy().into_owned();
            let mut parts = version.split('.');
            let (Some("3"), Some(minor)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(minor) = minor.parse::<u32>() else {
                continue;
            };
            if !(8..=13).contains(&minor) {
                continue;
            }
            let executable = prefix.join(format!("bin/python3.{minor}"));
            if !executable.is_file() {
                continue;
            }
            let libpython = prefix.join(format!("lib/libpython3.{minor}.so.1.0"));
            found.push(Python {
                label: format!("pyenv {version}"),
                executable,
                libpython: libpython.is_file().then_some(libpython),
                modules: modules_in(&prefix.join(format!("lib/python3.{minor}/lib-dynload"))),
            });
        }
        let debian = PathBuf::from("/usr/bin/python3.11");
        if debian.is_file() {
            found.push(Python {
                label: "Debian /usr/bin/python3.11".to_owned(),
                executable: debian,
                libpython: None,
                modules: modules_in(Path::new("/usr/lib/python3.11/lib-dynload")),
            });
        }
        found
    }

    fn modules_in(dir: &Path) -> Vec<PathBuf> {
        let mut modules: Vec<PathBuf> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension() == Some(OsStr::new("so")))
                    .collect()
            })
            .unwrap_or_default();
        modules.sort();
        modules
    }

    const PY311: &str = "/root/.pyenv/versions/3.11.7";

    // ---------------------------------------------------------------------------------------
    // Dynamic string tokens, search path splitting, ld.so.conf

    #[test]
    fn dst_expansion_table() {
        let origin = Some(Path::new("/opt/app/lib"));
        let cases: &[(&str, Option<&str>)] = &[
            ("$ORIGIN", Some("/opt/app/lib")),
            ("${ORIGIN}", Some("/opt/app/lib")),
            ("$ORIGIN/../lib", Some("/opt/app/lib/../lib")),
            ("${ORIGIN}x", Some("/opt/app/libx")),
            ("$ORIGINx", Some("$ORIGINx")),
            ("$ORIGIN_1", Some("$ORIGIN_1")),
            ("/a/$LIB", Some("/a/lib/x86_64-linux-gnu")),
            ("/a/${LIB}/b", Some("/a/lib/x86_64-linux-gnu/b")),
            ("/a/$LIBS", Some("/a/$LIBS")),
            ("/a/$PLATFORM/b", Some("/a/x86_64/b")),
            ("/a/${PLATFORM}", Some("/a/x86_64")),
            ("/a/$FOO/$", Some("/a/$FOO/$")),
            ("${ORIGIN", Some("${ORIGIN")),
            ("$ORIGIN:$LIB", Some("/opt/app/lib:lib/x86_64-linux-gnu")),
            ("/plain", Some("/plain")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                expand_dst(input, origin, "lib/x86_64-linux-gnu", "x86_64").as_deref(),
                *expected,
                "{input}"
            );
        }
        assert_eq!(expand_dst("$ORIGIN/lib", None, "lib", "x86_64"), None);
        assert_eq!(
            expand_dst("$LIB", None, "lib", "x86_64").as_deref(),
            Some("lib")
        );

        assert!(uses_origin("$ORIGIN/../lib"));
        assert!(uses_origin("/x/${ORIGIN}"));
        assert!(!uses_origin("/x/$ORIGINAL"));
        assert!(!uses_origin("/usr/lib"));
    }

    #[test]
    fn search_path_elements() {
        let host = HostLoader::debian_x86_64();
        let origin = Some(Path::new("/o"));
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            search_path("/a:$ORIGIN/b::/c/", &[':'], origin, &host),
            vec![p("/a"), p("/o/b"), PathBuf::new(), p("/c")]
        );
        assert_eq!(
            search_path("", &[':'], origin, &host),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            search_path("/a;/b:/c", &[':', ';'], origin, &host),
            vec![p("/a"), p("/b"), p("/c")]
        );
        assert_eq!(
            search_path("/a;/b", &[':'], origin, &host),
            vec![p("/a;/b")]
        );
        // An element needing an unknown $ORIGIN is dropped, not the whole list.
        assert_eq!(
            search_path("$ORIGIN/x:/y", &[':'], None, &host),
            vec![p("/y")]
        );
        assert_eq!(
            search_path("/r/$LIB:/r/$PLATFORM", &[':'], None, &host),
            vec![p("/r/lib/x86_64-linux-gnu"), p("/r/x86_64")]
        );
    }

    #[test]
    fn host_loader_matches_this_machine() {
        let sample = "\
Shared library search path:
  (libraries located via /etc/ld.so.cache)
  /lib/x86_64-linux-gnu (system search path)
  /usr/lib/x86_64-linux-gnu (system search path)
  /lib (system search path)
  /usr/lib (system search path)

Subdirectories of glibc-hwcaps directories, in priority order:
  x86-64-v4
  x86-64-v3 (supported, searched)

Legacy HWCAP subdirectories under library search path directories:
  haswell (AT_PLATFORM; supported, searched)
  tls (supported, searched)
";
        let parsed = HostLoader::parse_help(sample).unwrap();
        assert_eq!(parsed.system_dirs, HostLoader::debian_x86_64().system_dirs);
        assert_eq!(parsed.platform, "haswell");
        assert_eq!(parsed.lib, "lib/x86_64-linux-gnu");
        assert_eq!(HostLoader::parse_help("no dirs here"), None);

        assert_eq!(lib_token_for(Path::new("/lib64")), "lib64");
        assert_eq!(lib_token_for(Path::new("/usr/lib")), "lib");
        assert_eq!(
            lib_token_for(Path::new("/lib/aarch64-linux-gnu")),
            "lib/aarch64-linux-gnu"
        );

        let detected = host();
        println!("host loader: {detected:?}");
        if Path::new(HOST_INTERPRETER).exists() {
            assert!(!detected.system_dirs.is_empty());
        }
    }

    #[test]
    fn ld_so_conf_includes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let d = |name: &str| root.join(name);
        fs::create_dir_all(d("conf.d")).unwrap();
        fs::create_dir_all(d("more")).unwrap();
        fs::write(
            d("ld.so.conf"),
            format!(
                "# comment line\n\
                 {first}   # trailing comment\n\
                 include conf.d/*.conf\n\
                 hwcap 0 nosegneg\n\
                 HWCAP 1 ignored\n\
                 {legacy}=libc5\n\
                 include {abs}/more/one.conf {abs}/more/[xy]*.conf\n\
                 include {abs}/missing/*.conf\n\
                 {first}/\n\
                 includes-are-dirs-too\n",
                first = d("first").display(),
                legacy = d("legacy").display(),
                abs = root.display(),
            ),
        )
        .unwrap();
        fs::write(d("conf.d/b.conf"), format!("{}\n", d("b").display())).unwrap();
        fs::write(
            d("conf.d/a.conf"),
            format!("{}\n\n\t{}  \n", d("a").display(), d("a2").display()),
        )
        .unwrap();
        fs::write(d("conf.d/.hidden.conf"), "/hidden\n").unwrap();
        fs::write(d("conf.d/c.txt"), "/not-a-conf\n").unwrap();
        fs::write(
            d("more/one.conf"),
            format!("{}\ninclude ../ld.so.conf\n", d("one").display()),
        )
        .unwrap();
        fs::write(d("more/x1.conf"), format!("{}\n", d("x1").display())).unwrap();
        fs::write(d("more/y1.conf"), format!("{}///\n", d("y1").display())).unwrap();
        fs::write(d("more/z1.conf"), "/z1\n").unwrap();

        let dirs = parse_ld_so_conf(&d("ld.so.conf")).unwrap();
        let expected: Vec<PathBuf> = vec![
            d("first"),
            d("a"),
            d("a2"),
            d("b"),
            d("legacy"),
            d("one"),
            d("x1"),
            d("y1"),
            PathBuf::from("includes-are-dirs-too"),
        ];
        assert_eq!(dirs, expected);

        assert_eq!(
            parse_ld_so_conf(&d("absent.conf")).unwrap(),
            Vec::<PathBuf>::new()
        );

        // This machine's configuration: libc.conf and x86_64-linux-gnu.conf via the include glob.
        let system = parse_ld_so_conf(Path::new("/etc/ld.so.conf")).unwrap();
        println!("/etc/ld.so.conf dirs: {system:?}");
        if Path::new("/etc/ld.so.conf.d/x86_64-linux-gnu.conf").exists() {
            assert!(system.contains(&PathBuf::from("/usr/lib/x86_64-linux-gnu")));
        }
    }

    #[test]
    fn fnmatch_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.conf", "libc.conf", true),
            ("*.conf", ".hidden.conf", false),
            (".*.conf", ".hidden.conf", true),
            ("*.conf", "libc.conf~", false),
            ("lib?.conf", "libc.conf", true),
            ("[a-c]*", "b.conf", true),
            ("[!a-c]*", "b.conf", false),
            ("[^a-c]*", "d.conf", true),
            ("[]x]", "]", true),
            ("[abc", "[abc", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*", "", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                fnmatch(pattern.as_bytes(), name.as_bytes()),
                *expected,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn build_host_path_table() {
        let cases: &[(&str, bool)] = &[
            ("/root/.pyenv/versions/3.11.7/lib", true),
            ("/usr/local/lib:/opt/lib", true),
            ("/opt/$LIB", true),
            ("$ORIGIN/../lib", false),
            ("${ORIGIN}", false),
            ("/root/lib:$ORIGIN", false),
            ("lib", false),
            ("", false),
            ("/usr/lib:", false),
            ("/x/$ORIGINAL", true),
        ];
        for (value, expected) in cases {
            assert_eq!(points_at_build_host(value), *expected, "{value}");
        }
    }

    #[test]
    fn not_found_message_is_one_line() {
        let err = ElfError::NotFound {
            library: "libfoo.so.1".into(),
            needed_by: "/path/x.so".into(),
            searched: vec!["/a".into(), PathBuf::new()],
        };
        assert_eq!(
            err.to_string(),
            "library `libfoo.so.1` needed by `/path/x.so` not found (searched: /a, .)"
        );
    }

    // ---------------------------------------------------------------------------------------
    // Candidate checks with crafted headers (no compiler needed)

    fn crafted_header(class: u8, data: u8, machine: u16, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        bytes[..4].copy_from_slice(ELFMAG);
        bytes[EI_CLASS] = class;
        bytes[EI_DATA] = data;
        bytes[EI_VERSION] = EV_CURRENT;
        bytes[16] = ET_DYN as u8;
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        bytes[20] = EV_CURRENT;
        match class {
            ELFCLASS64 => bytes[54] = 56,
            _ => bytes[42] = 32,
        }
        bytes
    }

    #[test]
    fn wrong_class_and_machine_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir32 = tmp.path().join("lib32");
        let dirarm = tmp.path().join("libarm");
        fs::create_dir_all(&dir32).unwrap();
        fs::create_dir_all(&dirarm).unwrap();
        // A 32-bit i386 header and a 64-bit AArch64 header, both named like the real libc.
        fs::write(
            dir32.join(LIBC_SONAME),
            crafted_header(ELFCLASS32, ELFDATA2LSB, EM_386, 4096),
        )
        .unwrap();
        fs::write(
            dirarm.join(LIBC_SONAME),
            crafted_header(ELFCLASS64, ELFDATA2LSB, EM_AARCH64, 4096),
        )
        .unwrap();
        let llp = format!("{}:{}", dir32.display(), dirarm.display());
        let program = fs::canonicalize("/usr/bin/true").unwrap();
        let mut resolver = system_resolver(Some(&llp));
        let closure = resolver.closure_of(&program).unwrap();
        let libc = closure.library(LIBC_SONAME).expect("libc resolved");
        assert!(!libc.path.starts_with(tmp.path()), "{:?}", libc.path);
        let report = loader_list(&program, Some(&llp));
        assert_matches(&mut resolver, &program, report);

        let target = Target {
            class64: true,
            little: true,
            machine: EM_X86_64,
        };
        assert!(matches!(
            verify_candidate(&dir32.join(LIBC_SONAME), target),
            Ok(Candidate::Skip(_))
        ));
        assert!(matches!(
            verify_candidate(&dirarm.join(LIBC_SONAME), target),
            Ok(Candidate::Skip(_))
        ));
        assert!(matches!(
            verify_candidate(&tmp.path().join("nope"), target),
            Ok(Candidate::Missing)
        ));
        assert!(matches!(
            verify_candidate(tmp.path(), target),
            Ok(Candidate::Missing)
        ));
    }

    #[test]
    fn unloadable_candidates_are_errors_like_in_the_loader() {
        let tmp = tempfile::tempdir().unwrap();
        let program = fs::canonicalize("/usr/bin/true").unwrap();
        let patched = |at: usize, value: u8| {
            let mut bytes = crafted_header(ELFCLASS64, ELFDATA2LSB, EM_X86_64, 4096);
            bytes[at] = value;
            bytes
        };
        let cases: &[(&str, Vec<u8>, &str)] = &[
            (
                "text",
                b"INPUT ( /lib/libc.so.6 ) padding padding padding padding padding pad\n".to_vec(),
                "invalid ELF header",
            ),
            ("short", b"\x7fELF\x02\x01\x01".to_vec(), "file too short"),
            (
                "bigendian",
                crafted_header(ELFCLASS64, ELFDATA2MSB, EM_X86_64, 64),
                "not little-endian",
            ),
            ("osabi", patched(EI_OSABI, 9), "OS ABI invalid"),
            (
                "version",
                patched(20, 0),
                "ELF file version does not match current one",
            ),
            (
                "relocatable",
                patched(16, 1),
                "only ET_DYN and ET_EXEC can be loaded",
            ),
            (
                "phentsize",
                patched(54, 0),
                "phentsize not the expected size",
            ),
        ];
        for (label, content, reason) in cases {
            let dir = tmp.path().join(label);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(LIBC_SONAME), content).unwrap();
            let llp = dir.display().to_string();
            let err = system_resolver(Some(&llp))
                .closure_of(&program)
                .unwrap_err();
            match err.downcast_ref::<ElfError>() {
                Some(ElfError::Invalid { path, reason: got }) => {
                    assert_eq!(path, &dir.join(LIBC_SONAME));
                    assert!(got.contains(reason), "{label}: {got}");
                }
                other => panic!("{label}: {other:?}"),
            }
            let report = loader_list(&program, Some(&llp));
            assert!(!report.success, "{label}: ld.so accepted it");
            assert!(
                report.stderr.contains(reason),
                "{label}: ldd said {}",
                report.stderr
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // Fixtures built with gcc: search order, RPATH vs RUNPATH, $ORIGIN/$LIB/$PLATFORM

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fixture {
        fn new() -> Option<Fixture> {
            if !have("gcc") {
                println!("gcc not found: skipping compiled fixtures");
                return None;
            }
            let tmp = tempfile::tempdir().unwrap();
            let root = fs::canonicalize(tmp.path()).unwrap();
            fs::write(root.join("dep.c"), "int dep(void) { return 1; }\n").unwrap();
            fs::write(
                root.join("mid.c"),
                "int dep(void);\nint mid(void) { return dep(); }\n",
            )
            .unwrap();
            fs::write(
                root.join("main.c"),
                "#include <stdio.h>\nint main(void) { puts(\"fixture ok\"); return 0; }\n",
            )
            .unwrap();
            Some(Fixture { _tmp: tmp, root })
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn gcc(&self, args: &[&OsStr]) {
            run(Command::new("gcc").current_dir(&self.root).args(args));
        }

        /// `dir/libNAME.so` with soname `libNAME.so.1` (file name `libNAME.so.1`).
        fn lib(&self, name: &str, src: &str, dir: &str, extra: &[&str]) -> PathBuf {
            let dir = self.path(dir);
            fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("lib{name}.so.1"));
            let soname = format!("-Wl,-soname,lib{name}.so.1");
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("-shared"),
                OsStr::new("-fPIC"),
                OsStr::new(&soname),
                OsStr::new("-o"),
                out.as_os_str(),
                OsStr::new(src),
                OsStr::new("-Wl,--no-as-needed"),
            ];
            args.extend(extra.iter().map(OsStr::new));
            self.gcc(&args);
            out
        }

        fn exe(&self, out: &str, extra: &[&str]) -> PathBuf {
            let out = self.path(out);
            fs::create_dir_all(out.parent().unwrap()).unwrap();
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("-o"),
                out.as_os_str(),
                OsStr::new("main.c"),
                OsStr::new("-Wl,--no-as-needed"),
            ];
            args.extend(extra.iter().map(OsStr::new));
            self.gcc(&args);
            out
        }
    }

    fn lib_flag(path: &Path) -> String {
        path.display().to_string()
    }

    fn rpath(dirs: &str) -> String {
        format!("-Wl,-rpath,{dirs},--disable-new-dtags")
    }

    fn runpath(dirs: &str) -> String {
        format!("-Wl,-rpath,{dirs},--enable-new-dtags")
    }

    fn resolved(resolver: &mut Resolver, object: &Path, name: &str) -> PathBuf {
        let closure = resolver
            .closure_of(object)
            .unwrap_or_else(|e| panic!("{}: {e:#}", object.display()));
        closure
            .library(name)
            .unwrap_or_else(|| panic!("{name} not in {closure:?}"))
            .path
            .clone()
    }

    #[test]
    fn rpath_runpath_and_ld_library_path_precedence() {
        let Some(fx) = Fixture::new() else { return };
        let a = fx.lib("dep", "dep.c", "a", &[]);
        let b = fx.lib("dep", "dep.c", "b", &[]);
        let (da, db) = (fx.path("a"), fx.path("b"));
        let (da_s, db_s) = (da.display().to_string(), db.display().to_string());

        // DT_RPATH comes before LD_LIBRARY_PATH.
        let exe_rpath = fx.exe("exe_rpath", &[&lib_flag(&a), &rpath(&da_s)]);
        let mut with_llp = system_resolver(Some(&db_s));
        assert_eq!(resolved(&mut with_llp, &exe_rpath, "libdep.so.1"), a);
        assert_matches_ldd(&mut with_llp, &exe_rpath);

        // DT_RUNPATH comes after LD_LIBRARY_PATH.
        let exe_runpath = fx.exe("exe_runpath", &[&lib_flag(&a), &runpath(&da_s)]);
        assert_eq!(resolved(&mut with_llp, &exe_runpath, "libdep.so.1"), b);
        assert_matches_ldd(&mut with_llp, &exe_runpath);
        let mut plain = system_resolver(None);
        assert_eq!(resolved(&mut plain, &exe_runpath, "libdep.so.1"), a);
        assert_matches_ldd(&mut plain, &exe_runpath);

        // The program's DT_RPATH serves the needs of the libraries it loads ...
        let mid = fx.lib("mid", "mid.c", "m", &[&lib_flag(&a)]);
        let dm_s = fx.path("m").display().to_string();
        let exe_chain = fx.exe(
            "exe_chain",
            &[&lib_flag(&mid), &rpath(&format!("{dm_s}:{db_s}"))],
        );
        let closure = plain.closure_of(&exe_chain).unwrap();
        let dep = closure.library("libdep.so.1").unwrap();
        assert_eq!((&dep.path, &dep.needed_by), (&b, &mid));
        assert_matches_ldd(&mut plain, &exe_chain);

        // ... unless the library has a DT_RUNPATH of its own,
        let mid_rp = fx.lib(
            "mid",
            "mid.c",
            "mrp",
            &[&lib_flag(&a), &runpath("/nonexistent")],
        );
        let dmrp_s = fx.path("mrp").display().to_string();
        let exe_blocked = fx.exe(
            "exe_blocked",
            &[&lib_flag(&mid_rp), &rpath(&format!("{dmrp_s}:{db_s}"))],
        );
        let err = plain.closure_of(&exe_blocked).unwrap_err();
        match err.downcast_ref::<ElfError>() {
            Some(ElfError::NotFound {
                library,
                needed_by,
                searched,
            }) => {
                assert_eq!(library, "libdep.so.1");
                assert_eq!(needed_by, &mid_rp);
                assert!(searched.contains(&PathBuf::from("/nonexistent")));
                assert!(!searched.contains(&db));
            }
            other => panic!("{other:?}: {err:#}"),
        }
        let message = err.to_string();
        assert!(!message.contains('\n'));
        assert!(
            message.starts_with(&format!(
                "library `libdep.so.1` needed by `{}` not found (searched: ",
                mid_rp.display()
            )),
            "{message}"
        );
        assert_matches_ldd(&mut plain, &exe_blocked);

        // ... and a program's DT_RUNPATH never serves its libraries.
        let exe_runpath_chain = fx.exe(
            "exe_runpath_chain",
            &[&lib_flag(&mid), &runpath(&format!("{dm_s}:{db_s}"))],
        );
        let err = plain.closure_of(&exe_runpath_chain).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<ElfError>(), Some(ElfError::NotFound { library, .. }) if library == "libdep.so.1")
        );
        assert_matches_ldd(&mut plain, &exe_runpath_chain);

        // With the same LD_LIBRARY_PATH the loader and we find it there.
        let mut llp_b = system_resolver(Some(&db_s));
        assert_eq!(resolved(&mut llp_b, &exe_runpath_chain, "libdep.so.1"), b);
        assert_matches_ldd(&mut llp_b, &exe_runpath_chain);

        // An empty LD_LIBRARY_PATH element is the current directory (of this process).
        let mut cwd_llp = system_resolver(Some(":/nonexistent"));
        let cwd = std::env::current_dir().unwrap();
        let dirs_of = |r: &mut Resolver| match r
            .closure_of(&exe_runpath_chain)
            .unwrap_err()
            .downcast::<ElfError>()
        {
            Ok(ElfError::NotFound { searched, .. }) => searched,
            other => panic!("{other:?}"),
        };
        let searched = dirs_of(&mut cwd_llp);
        assert_eq!(searched[0], PathBuf::new(), "cwd {cwd:?}");
    }

    #[test]
    fn origin_lib_and_platform_tokens() {
        let Some(fx) = Fixture::new() else { return };
        let host = host();
        let a = fx.lib("dep", "dep.c", "a", &[]);
        let in_lib = fx.lib("dep", "dep.c", &format!("t/{}", host.lib), &[]);
        let in_platform = fx.lib("dep", "dep.c", &format!("p/{}", host.platform), &[]);
        let mut resolver = system_resolver(None);

        let origin = fx.exe("bin/exe_origin", &[&lib_flag(&a), &runpath("$ORIGIN/../a")]);
        assert_eq!(resolved(&mut resolver, &origin, "libdep.so.1"), a);
        assert_matches_ldd(&mut resolver, &origin);

        let braces = fx.exe("bin/exe_braces", &[&lib_flag(&a), &rpath("${ORIGIN}/../a")]);
        assert_eq!(resolved(&mut resolver, &braces, "libdep.so.1"), a);
        assert_matches_ldd(&mut resolver, &braces);

        let lib_token = fx.exe(
            "exe_lib",
            &[
                &lib_flag(&a),
                &runpath(&format!("{}/t/$LIB", fx.root.display())),
            ],
        );
        assert_eq!(resolved(&mut resolver, &lib_token, "libdep.so.1"), in_lib);
        assert_matches_ldd(&mut resolver, &lib_token);

        let platform = fx.exe(
            "exe_platform",
            &[
                &lib_flag(&a),
                &rpath(&format!("{}/p/${{PLATFORM}}", fx.root.display())),
            ],
        );
        assert_eq!(
            resolved(&mut resolver, &platform, "libdep.so.1"),
            in_platform
        );
        assert_matches_ldd(&mut resolver, &platform);

        // $ORIGIN of a library is the directory it was found in, symlinks not followed: the
        // library lives in real/, is found through link/, and its dependency sits next to link/.
        let mid = fx.lib(
            "mid",
            "mid.c",
            "real",
            &[&lib_flag(&a), &runpath("$ORIGIN/../beside")],
        );
        fs::create_dir_all(fx.path("link")).unwrap();
        std::os::unix::fs::symlink(&mid, fx.path("link/libmid.so.1")).unwrap();
        let beside = fx.lib("dep", "dep.c", "beside", &[]);
        let via_link = fx.exe(
            "exe_link",
            &[
                &lib_flag(&mid),
                &runpath(&fx.path("link").display().to_string()),
            ],
        );
        let closure = resolver.closure_of(&via_link).unwrap();
        assert_eq!(closure.library("libmid.so.1").unwrap().path, mid);
        assert_eq!(closure.library("libdep.so.1").unwrap().path, beside);
        assert_matches_ldd(&mut resolver, &via_link);
    }

    #[test]
    fn missing_library_is_a_typed_error() {
        let Some(fx) = Fixture::new() else { return };
        let a = fx.lib("dep", "dep.c", "a", &[]);
        let exe = fx.exe(
            "exe_missing",
            &[&lib_flag(&a), &runpath("/nonexistent/dir")],
        );
        fs::remove_file(&a).unwrap();
        let mut resolver = system_resolver(None);
        let err = resolver.closure_of(&exe).unwrap_err();
        let ElfError::NotFound {
            library,
            needed_by,
            searched,
        } = err.downcast_ref::<ElfError>().unwrap().clone()
        else {
            panic!("{err:#}");
        };
        assert_eq!(library, "libdep.so.1");
        assert_eq!(needed_by, exe);
        assert_eq!(searched[0], PathBuf::from("/nonexistent/dir"));
        for dir in &host().system_dirs {
            assert!(searched.contains(dir), "{dir:?} not searched");
        }
        assert!(err.to_string().starts_with(&format!(
            "library `libdep.so.1` needed by `{}` not found (searched: /nonexistent/dir, ",
            exe.display()
        )));
        assert_matches_ldd(&mut resolver, &exe);
    }

    /// ORs `flags` into the DT_FLAGS_1 entry of a little-endian 64-bit object.
    fn add_flags_1(path: &Path, flags: u64) {
        let mut bytes = fs::read(path).unwrap();
        let elf = Elf::parse(&bytes).unwrap();
        let dynamic = elf
            .program_headers
            .iter()
            .find(|ph| ph.p_type == PT_DYNAMIC)
            .unwrap()
            .file_range();
        let entry = dynamic
            .step_by(16)
            .find(|&at| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) == DT_FLAGS_1)
            .expect("DT_FLAGS_1 entry");
        let value = u64::from_le_bytes(bytes[entry + 8..entry + 16].try_into().unwrap()) | flags;
        bytes[entry + 8..entry + 16].copy_from_slice(&value.to_le_bytes());
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn nodeflib_skips_system_directories() {
        let Some(fx) = Fixture::new() else { return };
        let zlib = Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1");
        if !zlib.exists() {
            println!("no libz.so.1 in /usr/lib/x86_64-linux-gnu: skipping the nodeflib case");
            return;
        }
        // Debian's ld answers "-z nodeflib ignored", so the flag is set by hand: the library is
        // linked with -z nodelete (which creates DT_FLAGS_1) and DF_1_NODEFLIB is added to it.
        let nodeflib = fx.lib("nd", "dep.c", "nd", &["-Wl,-z,nodelete", &lib_flag(zlib)]);
        add_flags_1(&nodeflib, DF_1_NODEFLIB);
        let exe = fx.exe(
            "exe_nodeflib",
            &[
                &lib_flag(&nodeflib),
                &runpath(&fx.path("nd").display().to_string()),
            ],
        );
        let mut resolver = system_resolver(None);
        let err = resolver.closure_of(&exe).unwrap_err();
        match err.downcast_ref::<ElfError>() {
            Some(ElfError::NotFound {
                library,
                needed_by,
                searched,
            }) => {
                assert_eq!((library.as_str(), needed_by), ("libz.so.1", &nodeflib));
                for dir in &host().system_dirs {
                    assert!(!searched.contains(dir), "{dir:?} searched");
                }
            }
            other => panic!("{other:?}: {err:#}"),
        }
        assert_matches_ldd(&mut resolver, &exe);
        let mut llp = system_resolver(Some("/usr/lib/x86_64-linux-gnu"));
        assert_eq!(
            resolved(&mut llp, &exe, "libz.so.1"),
            fs::canonicalize(zlib).unwrap()
        );
        assert_matches_ldd(&mut llp, &exe);
    }

    #[test]
    fn static_and_needless_objects() {
        let mut resolver = system_resolver(None);
        // Debian's ldconfig is a static PIE: a dynamic section, no PT_INTERP, no DT_NEEDED.
        let ldconfig = Path::new("/sbin/ldconfig");
        if ldconfig.exists() {
            assert_eq!(resolver.closure_of(ldconfig).unwrap(), Closure::default());
        }
        if let Some(fx) = Fixture::new() {
            if Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() {
                // A classic static executable: no dynamic section at all.
                let exe = fx.exe("static", &["-static", "-no-pie"]);
                assert_eq!(resolver.closure_of(&exe).unwrap(), Closure::default());
                assert!(
                    String::from_utf8_lossy(&run(&mut Command::new(&exe)).stdout)
                        .contains("fixture ok")
                );
            }
        }
        // The loader itself as a root: nothing to load.
        let interp = fs::canonicalize(HOST_INTERPRETER).unwrap();
        let closure = resolver.closure_of(&interp).unwrap();
        assert!(closure.libraries.is_empty(), "{closure:?}");
    }

    #[test]
    fn runtime_extras_come_with_libc() {
        let mut resolver = system_resolver(None);
        let program = fs::canonicalize("/usr/bin/true").unwrap();
        let closure = resolver.closure_of(&program).unwrap();
        let libc = closure.library(LIBC_SONAME).unwrap().path.clone();
        for extra in runtime_extras() {
            let lib = closure
                .library(extra)
                .unwrap_or_else(|| panic!("{extra} missing"));
            assert_eq!(lib.needed_by, libc);
            assert!(lib.path.is_file());
        }
        assert_eq!(
            closure.interpreter,
            Some(fs::canonicalize(HOST_INTERPRETER).unwrap())
        );
        assert!(closure.library("ld-linux-x86-64.so.2").is_none());
        // Sorted by name, each name once.
        let names: Vec<&str> = closure.libraries.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        // libc as the root itself also gets them.
        let closure = resolver.closure_of(&libc).unwrap();
        assert!(closure
            .library("libgcc_s.so.1")
            .is_some_and(|l| l.needed_by == libc));
    }

    #[test]
    fn closures_match_ldd_for_installed_pythons() {
        let pythons = installed_pythons();
        if pythons.is_empty() {
            println!("no CPython found under /root/.pyenv/versions or /usr/bin: nothing compared");
            return;
        }
        let llp = std::env::var("LD_LIBRARY_PATH").ok();
        let mut resolver = system_resolver(llp.as_deref());
        println!("LD_LIBRARY_PATH for both sides: {llp:?}");
        for python in &pythons {
            let mut objects = vec![python.executable.clone()];
            objects.extend(python.libpython.clone());
            objects.extend(python.modules.iter().cloned());
            for object in &objects {
                assert_matches_ldd(&mut resolver, object);
            }
            println!(
                "checked {} ({}): executable{}, {} extension modules",
                python.label,
                python.executable.display(),
                if python.libpython.is_some() {
                    ", libpython"
                } else {
                    ""
                },
                python.modules.len()
            );
        }
    }

    #[test]
    fn merged_closure_of_a_python() {
        let exe = PathBuf::from(format!("{PY311}/bin/python3.11"));
        if !exe.exists() {
            println!("{PY311} absent: skipping");
            return;
        }
        let mut resolver = system_resolver(None);
        let modules = modules_in(Path::new(&format!("{PY311}/lib/python3.11/lib-dynload")));
        let mut roots = vec![exe.clone()];
        roots.extend(modules.iter().cloned());
        let merged = resolver.closure(&roots).unwrap();
        let libpython = merged.library("libpython3.11.so.1.0").unwrap();
        assert_eq!(libpython.needed_by, exe);
        for name in [
            "libssl.so.3",
            "libcrypto.so.3",
            "libffi.so.8",
            "libsqlite3.so.0",
            "libgcc_s.so.1",
        ] {
            assert!(
                merged.library(name).is_some(),
                "{name} missing from merged closure"
            );
        }
        // Every module's own closure is part of the merged one.
        for module in &modules {
            for lib in resolver.closure_of(module).unwrap().libraries {
                assert_eq!(
                    merged.library(&lib.name).map(|l| &l.path),
                    Some(&lib.path),
                    "{}",
                    lib.name
                );
            }
        }
        println!(
            "merged closure of python3.11 + {} modules: {} libraries",
            modules.len(),
            merged.libraries.len()
        );
    }

    // ---------------------------------------------------------------------------------------
    // prepare_for_bundle

    fn section_names(elf: &Elf) -> Vec<String> {
        elf.section_headers
            .iter()
            .map(|sh| elf.shdr_strtab.get_at(sh.sh_name).unwrap_or("").to_owned())
            .collect()
    }

    fn search_paths(elf: &Elf) -> Vec<String> {
        let mut paths: Vec<String> = elf.rpaths.iter().map(|s| s.to_string()).collect();
        paths.extend(elf.runpaths.iter().map(|s| s.to_string()));
        paths
    }

    /// Checks the invariants of a prepared file against its original; returns the output.
    fn check_prepared(original: &[u8], label: &str) -> Vec<u8> {
        let out = prepare_for_bundle(original).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let before = Elf::parse(original).unwrap();
        let after =
            Elf::parse(&out).unwrap_or_else(|e| panic!("{label}: goblin rejects output: {e}"));

        let names = section_names(&after);
        assert!(
            names.iter().all(|n| !n.starts_with(".debug")),
            "{label}: {names:?}"
        );
        for gone in [".symtab", ".strtab", ".comment", ".gnu_debuglink"] {
            assert!(!names.iter().any(|n| n == gone), "{label}: {gone} kept");
        }
        assert_eq!(names.last().map(String::as_str), Some(".shstrtab"));
        for path in search_paths(&after) {
            assert!(
                !points_at_build_host(&path),
                "{label}: search path {path} kept"
            );
        }
        assert_eq!(
            before.libraries, after.libraries,
            "{label}: DT_NEEDED changed"
        );
        assert_eq!(before.soname, after.soname);
        assert_eq!(before.interpreter, after.interpreter);
        assert_eq!(
            before.program_headers, after.program_headers,
            "{label}: program headers changed"
        );
        assert_eq!(before.header.e_entry, after.header.e_entry);
        // Allocated sections are identical, in the same order, with the same contents.
        let alloc = |elf: &Elf| -> Vec<(String, u64, u64, u64)> {
            let names = section_names(elf);
            elf.section_headers
                .iter()
                .zip(names)
                .filter(|(sh, _)| sh.is_alloc())
                .map(|(sh, n)| (n, sh.sh_addr, sh.sh_offset, sh.sh_size))
                .collect()
        };
        assert_eq!(
            alloc(&before),
            alloc(&after),
            "{label}: allocated sections changed"
        );
        // Every byte the loader maps is unchanged except the dynamic section and the ELF header's
        // section header fields (e_shoff, e_shentsize, e_shnum, e_shstrndx).
        let dynamic = after
            .program_headers
            .iter()
            .find(|ph| ph.p_type == PT_DYNAMIC)
            .map(|ph| ph.file_range());
        let section_fields = if after.is_64 { 0x28..0x40 } else { 0x20..0x34 };
        // ... and the st_shndx fields of .dynsym, checked by name below.
        let (entsize, field) = if after.is_64 { (24, 6) } else { (16, 14) };
        let shndx_fields: HashSet<usize> = after
            .section_headers
            .iter()
            .filter(|sh| sh.sh_type == SHT_DYNSYM)
            .flat_map(|sh| {
                let start = sh.sh_offset as usize;
                (0..sh.sh_size as usize / entsize).flat_map(move |i| {
                    let at = start + i * entsize + field;
                    [at, at + 1]
                })
            })
            .collect();
        for ph in after
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD)
        {
            let range = ph.file_range();
            for (i, (x, y)) in original[range.clone()]
                .iter()
                .zip(&out[range.clone()])
                .enumerate()
            {
                let at = range.start + i;
                if x != y && !section_fields.contains(&at) && !shndx_fields.contains(&at) {
                    assert!(
                        dynamic.as_ref().is_some_and(|d| d.contains(&at)),
                        "{label}: byte {at:#x} changed"
                    );
                }
            }
        }
        // Section references still name the same sections after renumbering.
        let (names_before, names_after) = (section_names(&before), section_names(&after));
        let target = |names: &[String], index: usize| names.get(index).cloned().unwrap_or_default();
        let by_name: HashMap<&String, &SectionHeader> = before
            .section_headers
            .iter()
            .zip(&names_before)
            .map(|(sh, name)| (name, sh))
            .collect();
        for (sh, name) in after.section_headers.iter().zip(&names_after).skip(1) {
            let Some(old) = by_name.get(name) else {
                assert_eq!(name, ".shstrtab");
                continue;
            };
            let old_link = target(&names_before, old.sh_link as usize);
            let old_link_kept = before
                .section_headers
                .get(old.sh_link as usize)
                .is_some_and(|t| t.is_alloc());
            match old.sh_link != 0 && old_link_kept {
                true => assert_eq!(
                    target(&names_after, sh.sh_link as usize),
                    old_link,
                    "{label}: {name} sh_link"
                ),
                false => assert_eq!(sh.sh_link, 0, "{label}: {name} sh_link"),
            }
            if sh.sh_flags & u64::from(SHF_INFO_LINK) != 0 {
                let old_info = target(&names_before, old.sh_info as usize);
                assert_eq!(
                    target(&names_after, sh.sh_info as usize),
                    old_info,
                    "{label}: {name} sh_info"
                );
            }
        }
        let symbol_sections = |elf: &Elf, names: &[String]| -> Vec<String> {
            elf.dynsyms
                .iter()
                .map(|sym| match sym.st_shndx {
                    0 => "UND".to_owned(),
                    i if i >= SHN_LORESERVE as usize => format!("{i:#x}"),
                    i => target(names, i),
                })
                .collect()
        };
        assert_eq!(
            symbol_sections(&before, &names_before),
            symbol_sections(&after, &names_after),
            "{label}: dynamic symbols moved to other sections"
        );
        // The dynamic entries are the old ones minus the build-host search paths, in order.
        let tags = |elf: &Elf| -> Vec<(u64, u64)> {
            elf.dynamic.as_ref().map_or(Vec::new(), |d| {
                d.dyns
                    .iter()
                    .filter(|e| e.d_tag != DT_NULL)
                    .map(|e| (e.d_tag, e.d_val))
                    .collect()
            })
        };
        let expected: Vec<(u64, u64)> = tags(&before)
            .into_iter()
            .filter(|&(tag, val)| {
                !((tag == DT_RPATH || tag == DT_RUNPATH)
                    && points_at_build_host(before.dynstrtab.get_at(val as usize).unwrap()))
            })
            .collect();
        assert_eq!(tags(&after), expected, "{label}: dynamic entries");
        // Idempotent.
        assert_eq!(
            prepare_for_bundle(&out).unwrap(),
            out,
            "{label}: second pass differs"
        );
        if have("readelf") {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            fs::write(tmp.path(), &out).unwrap();
            let output = run(Command::new("readelf").arg("-aW").arg(tmp.path()));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.trim().is_empty(), "{label}: readelf warns: {stderr}");
        }
        out
    }

    #[test]
    fn prepare_leaves_other_input_alone() {
        assert_eq!(
            prepare_for_bundle(b"#!/bin/sh\necho hi\n").unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(prepare_for_bundle(b"").unwrap(), b"");
        assert!(prepare_for_bundle(b"\x7fELF\x02\x01").is_err());
        let mut relocatable = crafted_header(ELFCLASS64, ELFDATA2LSB, EM_X86_64, 64);
        relocatable[16] = 1; // ET_REL
        assert_eq!(prepare_for_bundle(&relocatable).unwrap(), relocatable);
        // A program header pointing past the end of the file.
        let libc =
            fs::read(fs::canonicalize("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap()).unwrap();
        assert!(prepare_for_bundle(&libc[..4096]).is_err());
    }

    #[test]
    fn prepare_fixtures_drop_only_absolute_search_paths() {
        let Some(fx) = Fixture::new() else { return };
        let a = fx.lib("dep", "dep.c", "a", &["-g"]);
        let da_s = fx.path("a").display().to_string();
        let cases = [
            (
                "abs_runpath",
                runpath(&format!("{da_s}:/another/dir")),
                true,
            ),
            ("abs_rpath", rpath(&da_s), true),
            ("origin_runpath", runpath("$ORIGIN/a"), false),
            (
                "mixed_runpath",
                runpath(&format!("{da_s}:$ORIGIN/a")),
                false,
            ),
        ];
        let out_dir = fx.path("prepared");
        fs::create_dir_all(&out_dir).unwrap();
        fs::copy(&a, out_dir.join("libdep.so.1")).unwrap();
        fs::create_dir_all(out_dir.join("a")).unwrap();
        fs::copy(&a, out_dir.join("a/libdep.so.1")).unwrap();
        for (name, flag, dropped) in cases {
            let exe = fx.exe(name, &["-g", &lib_flag(&a), &flag]);
            let original = fs::read(&exe).unwrap();
            let out = check_prepared(&original, name);
            assert!(out.len() < original.len(), "{name}: not smaller");
            let after = Elf::parse(&out).unwrap();
            assert_eq!(
                search_paths(&after).is_empty(),
                dropped,
                "{name}: {:?}",
                search_paths(&after)
            );
            let path = out_dir.join(name);
            fs::write(&path, &out).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            let output = run(Command::new(&path).env("LD_LIBRARY_PATH", &out_dir));
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                "fixture ok\n",
                "{name}"
            );
        }
        let lib_out = check_prepared(&fs::read(&a).unwrap(), "libdep");
        assert!(lib_out.len() < fs::metadata(&a).unwrap().len() as usize);
    }

    #[test]
    fn prepare_renumbers_sections() {
        let Some(fx) = Fixture::new() else { return };
        // A linker script that puts the non-allocated .comment first, so every allocated section
        // and every dynamic symbol's section index moves down by one when it is dropped.
        let verbose = run(Command::new("gcc")
            .args(["-shared", "-Wl,--verbose"])
            .current_dir(&fx.root));
        let verbose = String::from_utf8_lossy(&verbose.stdout).into_owned();
        let comment = "  .comment       0 : { *(.comment) }\n";
        let script: Vec<&str> = verbose
            .split("==================================================")
            .collect();
        if script.len() < 3 || !script[1].contains(comment) || !script[1].contains("SECTIONS\n{\n")
        {
            println!("default linker script not as expected: skipping");
            return;
        }
        let moved = script[1].replacen(comment, "", 1).replacen(
            "SECTIONS\n{\n",
            &format!("SECTIONS\n{{\n{comment}"),
            1,
        );
        fs::write(fx.path("moved.ld"), moved).unwrap();
        fs::write(
            fx.path("ex.c"),
            "int exported_var = 41;\nint exported_fn(void) { return exported_var + 1; }\n",
        )
        .unwrap();
        fs::write(
            fx.path("use.c"),
            "#include <stdio.h>\nint exported_fn(void);\nint main(void) { printf(\"%d\\n\", exported_fn()); return 0; }\n",
        )
        .unwrap();
        let lib = fx.path("ex/libex.so");
        fs::create_dir_all(lib.parent().unwrap()).unwrap();
        fx.gcc(&[
            OsStr::new("-shared"),
            OsStr::new("-fPIC"),
            OsStr::new("-g"),
            OsStr::new("-Wl,-T,moved.ld"),
            OsStr::new("-Wl,-soname,libex.so"),
            OsStr::new("-o"),
            lib.as_os_str(),
            OsStr::new("ex.c"),
        ]);
        let original = fs::read(&lib).unwrap();
        assert_eq!(
            section_names(&Elf::parse(&original).unwrap())[1],
            ".comment"
        );
        let exe = fx.path("use");
        fx.gcc(&[
            OsStr::new("-o"),
            exe.as_os_str(),
            OsStr::new("use.c"),
            lib.as_os_str(),
        ]);

        let out = check_prepared(&original, "libex.so");
        let after = Elf::parse(&out).unwrap();
        let names = section_names(&after);
        let exported = after
            .dynsyms
            .iter()
            .find(|sym| after.dynstrtab.get_at(sym.st_name) == Some("exported_var"))
            .unwrap();
        assert_eq!(names[exported.st_shndx], ".data");
        fs::write(&lib, &out).unwrap();
        let output = run(Command::new(&exe).env("LD_LIBRARY_PATH", lib.parent().unwrap()));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n");
    }

    #[test]
    fn prepare_keeps_appended_payloads() {
        let Some(fx) = Fixture::new() else { return };
        let exe = fx.exe("payload", &["-g"]);
        let mut original = fs::read(&exe).unwrap();
        original.extend_from_slice(b"appended payload the program reads from its own file");
        let out = prepare_for_bundle(&original).unwrap();
        assert_eq!(out, original);
    }

    #[test]
    fn prepare_elf32() {
        let Some(fx) = Fixture::new() else { return };
        fs::write(
            fx.path("s32.c"),
            "int f(int x) { return x + 1; }\nint g = 3;\n",
        )
        .unwrap();
        let lib = fx.path("s32.so");
        let status = Command::new("gcc")
            .current_dir(&fx.root)
            .args([
                "-m32",
                "-shared",
                "-nostdlib",
                "-fPIC",
                "-g",
                "-Wl,-rpath,/build/host/lib",
                "-o",
            ])
            .arg(&lib)
            .arg("s32.c")
            .output();
        if !status.is_ok_and(|o| o.status.success()) {
            println!("gcc -m32 cannot link here: skipping the ELF32 case");
            return;
        }
        let original = fs::read(&lib).unwrap();
        let out = check_prepared(&original, "s32.so");
        assert!(out.len() < original.len());
        assert!(search_paths(&Elf::parse(&out).unwrap()).is_empty());
    }

    #[test]
    fn prepare_python_311() {
        let exe = PathBuf::from(format!("{PY311}/bin/python3.11"));
        let libpython = PathBuf::from(format!("{PY311}/lib/libpython3.11.so.1.0"));
        let modules = modules_in(Path::new(&format!("{PY311}/lib/python3.11/lib-dynload")));
        let json = modules.iter().find(|m| {
            m.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("_json.")
        });
        let (true, true, Some(json)) = (exe.exists(), libpython.exists(), json) else {
            println!("{PY311} absent: skipping prepare_for_bundle on CPython");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let modules_dir = dir.join("modules");
        fs::create_dir_all(&modules_dir).unwrap();
        for (source, target) in [
            (&exe, dir.join("python3.11")),
            (&libpython, dir.join("libpython3.11.so.1.0")),
            (json, modules_dir.join(json.file_name().unwrap())),
        ] {
            let original = fs::read(source).unwrap();
            let had_debug = section_names(&Elf::parse(&original).unwrap())
                .iter()
                .any(|n| n.starts_with(".debug"));
            let out = check_prepared(&original, &source.display().to_string());
            if had_debug {
                assert!(
                    out.len() < original.len(),
                    "{}: not smaller",
                    source.display()
                );
            }
            println!(
                "prepare_for_bundle {}: {} -> {} bytes",
                source.display(),
                original.len(),
                out.len()
            );
            fs::write(&target, &out).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let python = dir.join("python3.11");
        // Without its RUNPATH the stripped python must get libpython from the directory we give.
        let listing = run(Command::new(HOST_INTERPRETER)
            .arg("--list")
            .arg("--library-path")
            .arg(dir)
            .arg(&python));
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        let expected = format!(
            "libpython3.11.so.1.0 => {}",
            dir.join("libpython3.11.so.1.0").display()
        );
        assert!(listing.contains(&expected), "{listing}");

        let code = "import json, _json; print(json.dumps([1])); print(_json.__file__)";
        let output = run(Command::new(HOST_INTERPRETER)
            .arg("--library-path")
            .arg(dir)
            .arg(&python)
            .args(["-c", code])
            .env("PYTHONHOME", PY311)
            .env("PYTHONPATH", &modules_dir)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("PYTHONSTARTUP"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some("[1]"));
        assert_eq!(
            lines.next().map(PathBuf::from),
            Some(modules_dir.join(json.file_name().unwrap()))
        );

        // Run directly too, with LD_LIBRARY_PATH (the kernel starts it with its own PT_INTERP).
        let output = run(Command::new(&python)
            .args(["-c", "import json; print(json.dumps([1]))"])
            .env("LD_LIBRARY_PATH", dir)
            .env("PYTHONHOME", PY311));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "[1]\n");
    }
}
