//! Writing bundles: a reproducible tar of the staged tree, in up to four zstd frames, the
//! manifest and the trailer defined in the `pyshrink-stub` crate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use pyshrink_stub::archive::{pax_record, PAX_RELA, PAX_RELA_DATA, PAX_X86};
use pyshrink_stub::rela::Segment;
use pyshrink_stub::{content_hasher, Manifest, Trailer};
use sha2::Digest;

/// The decoder's window: zstd's default for level 19 is 8 MiB, and the launcher's memory while
/// extracting grows with it, so it is fixed here rather than left to the level.
const WINDOW_LOG: u32 = 23;

/// The payload before compression.
pub struct Archive {
    pub tar: Vec<u8>,
    pub files: usize,
    /// Where the entries unpacked on the launcher's second thread start (ELF files chosen by
    /// [`choose_second`]); `late` when there are none.
    pub split: usize,
    /// Where the entries unpacked while the interpreter starts begin ([`choose_late`]);
    /// `tail` when there are none.
    pub late: usize,
    /// Where the entries unpacked while the app runs begin ([`choose_tail`]); `tar.len()` when
    /// there are none.
    pub tail: usize,
    /// How many late files the memory runtime keeps in memory files of their own.
    pub late_memory_files: usize,
}

/// Below this much data, one thread unpacks faster than two start.
const SPLIT_MIN: u64 = 2 << 20;

/// What unpacking a file costs the launcher, in microseconds of one thread's CPU: per MB of the
/// file compressed alone at zstd level 3 (a stand-in for its share of the payload), per MB
/// unpacked, per MB of machine code to unfilter, and per file. Fitted to the launcher's
/// per-thread CPU clock over the examples' frames; only their ratios matter.
const COST_PER_MB_COMPRESSED: f64 = 3840.0;
const COST_PER_MB: f64 = 940.0;
const COST_PER_MB_CODE: f64 = 870.0;
const COST_PER_FILE: f64 = 34.0;
/// The content hash, which the thread unpacking the first frame computes over the whole payload.
const HASH_COST_PER_MB_COMPRESSED: f64 = 600.0;
/// How much unpacking (in the units above) the launcher leaves for the late frame: about what
/// the interpreter takes to start before the app runs (loading libpython, `encodings`, `site`),
/// which hides it (the app waits for the frame's data, and for its modules only where it imports
/// them first). Below the minimum, starting a process costs more than it hides.
const LATE_BUDGET: f64 = 10_000.0;
const LATE_MIN: f64 = 2_000.0;

/// How much unpacking (in the units of [`COST_PER_MB`]: about 32 ms of one thread) the tail takes
/// at most. One process unpacks it while the app runs, where the early frames have two threads:
/// an app that imports a big library first would wait for it longer than the launcher would have
/// taken to unpack it before the interpreter started. This bounds that loss. The flask example's
/// whole tail (OpenSSL and 52 more files, 10 MB) costs about 29,400; bigger libraries, such as
/// numpy's OpenBLAS, stay early.
const TAIL_BUDGET: f64 = 32_000.0;

/// Most files in the tail: the launcher tells the interpreter of each one it unpacked with a byte
/// down a pipe, which the interpreter may never read, and a pipe holds at least 4 KiB. The late
/// frame's entries come first, one byte each: [`LATE_BUDGET`] keeps them under 600 (at most
/// 300 files, and their directories).
const TAIL_MAX_FILES: usize = 3400;

/// Smaller files are stored as they are, even when another file has the same bytes: a copy
/// within zstd's window costs the payload only a few bytes, and each keeps an inode of its own.
const SHARED_MIN: usize = 4096;

/// A file to archive, its code range already filtered.
struct File {
    rel: std::path::PathBuf,
    data: Vec<u8>,
    exec: bool,
    /// The filtered range (start, length), recorded in a pax header.
    code: Option<(usize, usize)>,
    /// The range through the relocation filter (start, length), recorded in a pax header.
    relocations: Option<(usize, usize)>,
    /// The segment whose relocated words are stored minus their addend.
    words: Option<Segment>,
    /// Estimated cost of unpacking it (see [`COST_PER_MB`]).
    cost: f64,
    /// The frame it is unpacked from.
    part: Part,
    /// The earlier file with the same bytes and mode: this one is archived as a hard link to it,
    /// in the same frame, and its `data` is left empty.
    same_as: Option<usize>,
}

impl File {
    /// One of the lists the launcher and its start-up code read, unpacked before anything else.
    fn list(rel: &str, text: String) -> File {
        File {
            rel: rel.into(),
            data: text.into_bytes(),
            exec: false,
            code: None,
            relocations: None,
            words: None,
            cost: COST_PER_FILE,
            part: Part::First,
            same_as: None,
        }
    }
}

/// Tars every regular file (and empty directory) under `stage` with fixed mtime, owner and modes
/// (0755 for executables and ELF files, 0644 otherwise), so the same inputs give the same bytes.
/// Entries are sorted by path, except that ELF files making up about half of the unpacking work
/// come after `split`, for the launcher's second thread, then the late part, then the tail.
/// `at_start`: the ELF files the interpreter loads as it starts (itself, the loader, the
/// libraries it is linked with), which never come in the tail.
/// `import_order`: the bundled modules in the order the import analysis reached them, which
/// orders the late part's modules ([`late_order`]).
pub fn archive(stage: &Path, at_start: &[String], import_order: &[String]) -> Result<Archive> {
    let mut empty_dirs = Vec::new();
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(stage).sort_by_file_name() {
        let entry = entry.with_context(|| format!("failed to walk `{}`", stage.display()))?;
        let rel = entry
            .path()
            .strip_prefix(stage)
            .expect("walkdir stays under its root");
        if entry.file_type().is_dir() {
            // Directories are created as files need them; only empty ones need an entry
            // (lib-dynload is CPython's exec_prefix landmark even when no module is in it).
            let empty = fs::read_dir(entry.path())?.next().is_none();
            if empty && entry.depth() > 0 {
                empty_dirs.push(rel.to_path_buf());
            }
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let rel_str = rel
            .to_str()
            .with_context(|| format!("path `{}` is not UTF-8; rename it", rel.display()))?;
        pyshrink_stub::check_path(rel_str)
            .map_err(|e| anyhow::anyhow!("refusing to bundle `{rel_str}`: {e}"))?;
        let mut data = fs::read(entry.path())
            .with_context(|| format!("failed to read `{}`", entry.path().display()))?;
        let exec =
            entry.metadata()?.permissions().mode() & 0o111 != 0 || data.starts_with(b"\x7fELF");
        // Parsed once; the ranges are taken before the filters change any byte.
        let (code, relocations, segment) = match x86_64_elf(&data) {
            Some(elf) => (
                x86_code(&elf, data.len()),
                relocation_tables(&elf, data.len()),
                writable_segment(&elf),
            ),
            None => (None, None, None),
        };
        let code = code.map(|(start, end)| {
            pyshrink_stub::x86::encode(&mut data, start, end);
            (start, end - start)
        });
        let mut words = None;
        if let Some((start, len)) = relocations {
            let plain = data[start..start + len].to_vec();
            // The words are stored minus their addend when they follow the table, in its order.
            words = segment.filter(|s| {
                pyshrink_stub::rela::subtract_addends(&mut data, start, &plain, s, MIN_WORDS)
            });
            pyshrink_stub::rela::encode(&plain, &mut data[start..start + len]);
        }
        files.push(File {
            rel: rel.to_path_buf(),
            data,
            exec,
            code,
            relocations,
            words,
            cost: 0.0,
            part: Part::First,
            same_as: None,
        });
    }

    store_once(&mut files);
    let compressed = estimate_costs(&mut files);
    // What `site` imports as the interpreter starts must be there before it starts.
    let startup = startup_imports(&files);
    let tail = match startup {
        Some(_) => choose_tail(&mut files, at_start),
        None => Vec::new(),
    };
    if !tail.is_empty() {
        let list: String = tail
            .iter()
            .map(|&i| format!("{}\n", files[i].rel.display()))
            .collect();
        files.push(File::list(pyshrink_stub::TAIL_LIST_FILE, list));
    }
    // With a tail, the process that unpacks it is there anyway: any late part saves the launcher
    // that much.
    let late = match &startup {
        Some(early) => {
            let min = if tail.is_empty() { LATE_MIN } else { 0.0 };
            choose_late(&mut files, min, early)
        }
        None => 0,
    };
    let total_len: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let taken = if total_len >= SPLIT_MIN {
        choose_second(&mut files, compressed)
    } else {
        0
    };
    for i in 0..files.len() {
        if let Some(first) = files[i].same_as {
            files[i].part = files[first].part;
        }
    }
    let late_entries = late_order(&files, import_order);
    if late_entries.streamed > 0 {
        let list = late_entries.list(&files);
        files.push(File::list(pyshrink_stub::LATE_LIST_FILE, list));
    }
    // The interpreter's start lists these directories (`site`, the exec_prefix landmark), so they
    // are made before it starts even when all their files come late (the tail's libraries are
    // beside libpython).
    for f in files
        .iter()
        .filter(|f| matches!(f.part, Part::Late | Part::Tail))
    {
        let root = late_root(&f.rel);
        assert!(
            root.is_some() || f.part == Part::Tail,
            "late files are under a late root"
        );
        if let Some(root) = root.filter(|r| !empty_dirs.contains(r)) {
            empty_dirs.push(root);
        }
    }

    let mut builder = tar::Builder::new(Vec::new());
    for rel in &empty_dirs {
        let mut header = fixed_header(tar::EntryType::Directory, 0, 0o755);
        builder.append_data(&mut header, rel, std::io::empty())?;
    }
    let (mut split, mut late_at, mut tail_at) = (0, 0, 0);
    for part in [Part::First, Part::Second, Part::Late, Part::Tail] {
        let at = builder.get_ref().len();
        match part {
            Part::First => {}
            Part::Second => split = at,
            Part::Late => late_at = at,
            Part::Tail => tail_at = at,
        }
        // The tail and the late part in their own orders, the others in path order.
        let order: Vec<&File> = match part {
            Part::Tail => tail.iter().map(|&i| &files[i]).collect(),
            Part::Late => {
                for dir in &late_entries.dirs {
                    let mut header = fixed_header(tar::EntryType::Directory, 0, 0o755);
                    builder.append_data(&mut header, dir, std::io::empty())?;
                }
                late_entries.files.iter().map(|&i| &files[i]).collect()
            }
            _ => files.iter().filter(|f| f.part == part).collect(),
        };
        for f in order {
            let mode = if f.exec { 0o755 } else { 0o644 };
            if let Some(first) = f.same_as {
                let mut header = fixed_header(tar::EntryType::Link, 0, mode);
                builder
                    .append_link(&mut header, &f.rel, &files[first].rel)
                    .with_context(|| format!("failed to archive `{}`", f.rel.display()))?;
                continue;
            }
            let mut header = fixed_header(tar::EntryType::Regular, f.data.len() as u64, mode);
            header.set_uid(0);
            header.set_gid(0);
            let mut records: Vec<(&str, String)> = [(PAX_X86, f.code), (PAX_RELA, f.relocations)]
                .into_iter()
                .filter_map(|(key, range)| {
                    range.map(|(start, len)| (key, format!("{start},{len}")))
                })
                .collect();
            if let Some(w) = f.words {
                let value = format!("{},{},{}", w.offset, w.vaddr, w.size);
                records.push((PAX_RELA_DATA, value));
            }
            if !records.is_empty() {
                append_pax(&mut builder, &records)?;
            }
            builder
                .append_data(&mut header, &f.rel, f.data.as_slice())
                .with_context(|| format!("failed to archive `{}`", f.rel.display()))?;
        }
    }
    let tar = builder
        .into_inner()
        .context("failed to finish the archive")?;
    // Without a tail, the end-of-archive blocks stay in the frame before it; the same for a late
    // and a second part.
    let tail_at = if tail.is_empty() { tar.len() } else { tail_at };
    let late_at = if late > 0 { late_at } else { tail_at };
    let split = if taken > 0 { split } else { late_at };
    let late_memory_files = files
        .iter()
        .filter(|f| matches!(f.part, Part::Late | Part::Tail) && f.same_as.is_none())
        .filter(|f| {
            let path = f.rel.to_str().expect("checked UTF-8 above");
            pyshrink_stub::memory_file_of_its_own(path.as_bytes(), &f.data)
        })
        .count();
    Ok(Archive {
        files: files.len(),
        split,
        late: late_at,
        tail: tail_at,
        late_memory_files,
        tar,
    })
}

/// The frames of the payload, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Unpacked by the launcher's first thread, which also computes the content hash.
    First,
    /// Unpacked on the launcher's second thread ([`choose_second`]).
    Second,
    /// Unpacked while the interpreter starts ([`choose_late`]).
    Late,
    /// Unpacked while the app runs ([`choose_tail`]).
    Tail,
}

/// A GNU header of `kind` with the archive's fixed times: mtime 0.
fn fixed_header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header
}

/// Marks each file of at least [`SHARED_MIN`] bytes whose bytes and mode equal an earlier
/// file's as the same file, and drops its copy of the bytes. (The filters are a function of the
/// bytes, so equal inputs stay equal.)
fn store_once(files: &mut [File]) {
    let mut first: std::collections::HashMap<(bool, [u8; 32]), usize> = Default::default();
    for i in 0..files.len() {
        let f = &files[i];
        if f.data.len() < SHARED_MIN {
            continue;
        }
        let key = (f.exec, sha2::Sha256::digest(&f.data).into());
        match first.get(&key) {
            Some(&j) if files[j].data == files[i].data => {
                files[i].same_as = Some(j);
                files[i].data = Vec::new();
            }
            Some(_) => {}
            None => {
                first.insert(key, i);
            }
        }
    }
}

/// Sets each file's unpacking cost; returns the payload's estimated compressed size.
fn estimate_costs(files: &mut [File]) -> f64 {
    const MB: f64 = 1e6;
    let mut compressed = 0.0;
    for f in files.iter_mut() {
        if f.same_as.is_some() {
            f.cost = COST_PER_FILE;
            continue;
        }
        let c = zstd::bulk::compress(&f.data, 3).map_or(f.data.len(), |c| c.len()) as f64;
        compressed += c;
        let code = f.code.map_or(0, |(_, len)| len) as f64;
        f.cost = c / MB * COST_PER_MB_COMPRESSED
            + f.data.len() as f64 / MB * COST_PER_MB
            + code / MB * COST_PER_MB_CODE
            + COST_PER_FILE;
    }
    compressed
}

/// The directory under which a file may come in the late frame: site-packages (Debian's
/// `lib/python3/dist-packages` too) and lib-dynload (`lib/pythonX.Y/...`), the app and its
/// data. What the interpreter reads while it starts stays out: the libraries it is linked with,
/// the stdlib zip, the prefix landmark, the codecs that `encodings` may load for the locale, and
/// anything `site` would run (`.pth` files, `sitecustomize`, `usercustomize`).
fn late_root(rel: &Path) -> Option<std::path::PathBuf> {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let name = *parts.last()?;
    if name.ends_with(".pth")
        || name.starts_with("sitecustomize.")
        || name.starts_with("usercustomize.")
        || name.starts_with("_codecs_")
        || name.starts_with("_multibytecodec.")
    {
        return None;
    }
    match parts.as_slice() {
        ["lib", python, dir @ ("site-packages" | "dist-packages" | "lib-dynload"), _, ..]
            if python.starts_with("python") =>
        {
            Some(["lib", python, dir].iter().collect())
        }
        [dir @ ("app" | "share"), _, ..] => Some(dir.into()),
        _ => None,
    }
}

/// Marks files for the late frame, in path order while they fit [`LATE_BUDGET`]; none when they
/// would come to less than `min`. The modules `early` (top-level names) stay out. Returns how
/// many were marked.
fn choose_late(files: &mut [File], min: f64, early_modules: &[String]) -> usize {
    // A file stays early when a file with its bytes must (the two share one frame).
    let mut early = vec![false; files.len()];
    for f in files.iter() {
        if let Some(first) = f.same_as.filter(|_| late_root(&f.rel).is_none()) {
            early[first] = true;
        }
    }
    let mut sum = 0.0;
    let mut chosen = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let eligible = f.same_as.is_none()
            && !early[i]
            && f.part == Part::First
            && late_root(&f.rel).is_some()
            && !early_modules
                .iter()
                .any(|m| top_level_module(&f.rel) == Some(m));
        if eligible && sum + f.cost <= LATE_BUDGET {
            sum += f.cost;
            chosen.push(i);
        }
    }
    if sum < min || chosen.is_empty() {
        return 0;
    }
    for &i in &chosen {
        files[i].part = Part::Late;
    }
    chosen.len()
}

/// The late part in the order it is archived: the directories its files go in (so that they are
/// all there from the start), then the files the app may read at any time (data, metadata,
/// extension modules, hard links and their targets) in path order, then the modules' bytecode,
/// directory by directory in the order the import analysis reached them. The launcher's start-up
/// code runs the app once the first two are in ([`LateEntries::list`]); an import of a module of
/// the third waits only for its directory's modules and the `__init__` of its packages.
struct LateEntries {
    dirs: Vec<std::path::PathBuf>,
    /// Indices into the files, in archive order.
    files: Vec<usize>,
    /// How many of `files`, at their end, are bytecode the app does not wait for at its start.
    streamed: usize,
}

impl LateEntries {
    /// [`pyshrink_stub::LATE_LIST_FILE`]: how many entries the app waits for before it starts,
    /// then every entry's path in archive order, a directory's with a `/` after it.
    fn list(&self, files: &[File]) -> String {
        let waited = self.dirs.len() + self.files.len() - self.streamed;
        let mut list = format!("{waited}\n");
        for dir in &self.dirs {
            list.push_str(&format!("{}/\n", dir.display()));
        }
        for &i in &self.files {
            list.push_str(&format!("{}\n", files[i].rel.display()));
        }
        list
    }
}

fn late_order(files: &[File], import_order: &[String]) -> LateEntries {
    let rank: std::collections::HashMap<&str, usize> = import_order
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let twinned = twinned(files);
    let late: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].part == Part::Late)
        .collect();
    let is_streamed = |i: usize| {
        files[i].same_as.is_none() && !twinned[i] && module_name(&files[i].rel).is_some()
    };
    let mut dirs = std::collections::BTreeSet::new();
    for &i in &late {
        let root = late_root(&files[i].rel).expect("late files are under a late root");
        for dir in files[i].rel.ancestors().skip(1) {
            if dir == root || !dir.starts_with(&root) {
                break;
            }
            dirs.insert(dir.to_path_buf());
        }
    }
    // Listing a directory waits for its files and for the `__init__` of each package in it (the
    // import system tells a package from a namespace package by that file), so a package's
    // `__init__` comes with its parent directory's modules. Those groups come in the order the
    // analysis first reached one of their modules; the directories on `sys.path` first (the
    // app's, a site directory), as the first import from one lists it.
    let group = |rel: &Path| -> std::path::PathBuf {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let root = late_root(rel);
        match parent.parent() {
            Some(up)
                if rel.file_stem() == Some("__init__".as_ref())
                    && root.as_deref() != Some(parent) =>
            {
                up.to_path_buf()
            }
            _ => parent.to_path_buf(),
        }
    };
    let mut group_rank: std::collections::HashMap<std::path::PathBuf, usize> = Default::default();
    for &i in late.iter().filter(|&&i| is_streamed(i)) {
        let rel = &files[i].rel;
        let g = group(rel);
        let r = if late_root(rel).as_deref() == Some(g.as_path()) {
            0
        } else {
            module_name(rel)
                .and_then(|name| rank.get(name.as_str()))
                .map_or(usize::MAX, |r| r + 1)
        };
        let entry = group_rank.entry(g).or_insert(r);
        *entry = (*entry).min(r);
    }
    let (mut modules, mut first): (Vec<usize>, Vec<usize>) =
        late.into_iter().partition(|&i| is_streamed(i));
    modules.sort_by_cached_key(|&i| {
        let g = group(&files[i].rel);
        (group_rank[&g], g, files[i].rel.clone())
    });
    // The list has a line per entry: with a newline in a path, the app waits for all of them.
    let listable = first
        .iter()
        .chain(&modules)
        .all(|&i| !files[i].rel.to_string_lossy().contains('\n'));
    let streamed = if listable { modules.len() } else { 0 };
    first.extend(modules);
    LateEntries {
        dirs: dirs.into_iter().collect(),
        files: first,
        streamed,
    }
}

/// Which files other files are hard links to.
fn twinned(files: &[File]) -> Vec<bool> {
    let mut twinned = vec![false; files.len()];
    for f in files {
        if let Some(first) = f.same_as {
            twinned[first] = true;
        }
    }
    twinned
}

/// The module a bytecode file under the app's directory or a site directory holds, by its path:
/// `pkg.mod` for `pkg/mod.pyc`, `pkg` for `pkg/__init__.pyc`.
fn module_name(rel: &Path) -> Option<String> {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let inside = match parts.as_slice() {
        ["app", rest @ ..] | ["lib", _, "site-packages" | "dist-packages", rest @ ..] => rest,
        _ => return None,
    };
    let (last, packages) = inside.split_last()?;
    let stem = last.strip_suffix(".pyc")?;
    let mut name: Vec<&str> = packages.to_vec();
    if stem != "__init__" {
        name.push(stem);
    }
    Some(name.join("."))
}

/// The top-level module a file under a site directory belongs to (`pkg` for `pkg/mod.pyc`,
/// `mod` for `mod.pyc`).
fn top_level_module(rel: &Path) -> Option<&str> {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        ["lib", _, "site-packages" | "dist-packages", first, ..] => {
            Some(first.split('.').next().unwrap_or(first))
        }
        _ => None,
    }
}

/// Marks the files of the tail and returns them in the order they are archived: shared objects
/// that nothing reads before the app imports them. Those are extension modules (of the stdlib and
/// of site-packages), the libraries a wheel vendors beside them, and the bundled libraries the
/// interpreter does not load as it starts (`at_start`): OpenSSL, libffi, liblzma... The launcher's
/// start-up code makes an import of one of those modules wait for its file and its libraries.
/// Smallest first, up to [`TAIL_BUDGET`]: the modules imported early are mostly small, and the big
/// libraries have the longest to come. None when the tail would be too little to be worth a pipe.
fn choose_tail(files: &mut [File], at_start: &[String]) -> Vec<usize> {
    let twinned = twinned(files);
    let shared_object = |f: &File| {
        let name = f.rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        f.data.starts_with(b"\x7fELF") && (name.ends_with(".so") || name.contains(".so."))
    };
    let mut tail: Vec<usize> = (0..files.len())
        .filter(|&i| {
            let f = &files[i];
            let parts: Vec<&str> = f.rel.iter().filter_map(|c| c.to_str()).collect();
            let library = matches!(parts.as_slice(), ["lib", _])
                && !at_start.iter().any(|p| Path::new(p) == f.rel);
            f.same_as.is_none()
                && !twinned[i]
                && shared_object(f)
                && (library || (late_root(&f.rel).is_some() && parts.first() == Some(&"lib")))
        })
        .collect();
    tail.sort_by_key(|&i| (files[i].data.len(), i));
    tail.truncate(TAIL_MAX_FILES);
    let mut sum = 0.0;
    let fit = tail
        .iter()
        .take_while(|&&i| {
            sum += files[i].cost;
            sum <= TAIL_BUDGET
        })
        .count();
    tail.truncate(fit);
    if tail.iter().map(|&i| files[i].cost).sum::<f64>() < LATE_MIN {
        return Vec::new();
    }
    for &i in &tail {
        files[i].part = Part::Tail;
    }
    tail
}

/// Modules that `.pth` lines may import as the interpreter starts, before the late frame is in
/// and before anything waits for the tail: `os`, `sys`, and setuptools' `_distutils_hack` (which
/// imports those two), as in the `distutils-precedence.pth` of most virtual environments.
const STARTUP_IMPORTS: [&str; 3] = ["os", "sys", "_distutils_hack"];

/// What `site` imports as the interpreter starts, from the `.pth` files of the site and stdlib
/// directories: the top-level names of [`STARTUP_IMPORTS`] they name. `None` when they import
/// anything else, or code this does not read, or when there is a `sitecustomize` or
/// `usercustomize` (which may import anything): then no file can come late.
fn startup_imports(files: &[File]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for f in files {
        let parts: Vec<&str> = f.rel.iter().filter_map(|c| c.to_str()).collect();
        let name = match parts.as_slice() {
            ["lib", _, "site-packages" | "dist-packages", name] | ["lib", _, name] => *name,
            _ => continue,
        };
        if name.starts_with("sitecustomize.") || name.starts_with("usercustomize.") {
            return None;
        }
        if !name.ends_with(".pth") {
            continue;
        }
        for line in f.data.split(|&b| b == b'\n') {
            if line.starts_with(b"import ") || line.starts_with(b"import\t") {
                let line = std::str::from_utf8(line).ok()?;
                for n in pth_line_imports(line)? {
                    if !STARTUP_IMPORTS.contains(&n) {
                        return None;
                    }
                    if !names.iter().any(|m| m == n) {
                        names.push(n.to_string());
                    }
                }
            }
        }
    }
    Some(names)
}

/// The modules a `.pth` import line imports: `import a, b` statements and `__import__('c')`
/// calls, separated by `;`. `None` for any other import in it, or a name this does not read.
fn pth_line_imports(line: &str) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    for statement in line.split(';').map(str::trim) {
        if let Some(list) = statement.strip_prefix("import ") {
            names.extend(list.split(',').map(str::trim));
            continue;
        }
        let mut rest = statement;
        while let Some(at) = rest.find("__import__(") {
            rest = &rest[at + "__import__(".len()..];
            let (name, after) = rest.strip_prefix('\'')?.split_once('\'')?;
            names.push(name);
            rest = after;
        }
        if statement.replace("__import__(", "").contains("import") {
            return None;
        }
    }
    Some(names)
}

/// Marks the ELF files the launcher's second thread unpacks, so that both threads finish together:
/// the first unpacks the rest (most of the files) and computes the content hash over the whole
/// payload (`compressed`, estimated). Late files take no part. Returns how many were marked.
fn choose_second(files: &mut [File], compressed: f64) -> usize {
    const MB: f64 = 1e6;
    let total: f64 = files
        .iter()
        .filter(|f| f.part == Part::First)
        .map(|f| f.cost)
        .sum();
    let hash = compressed / MB * HASH_COST_PER_MB_COMPRESSED;
    // The slower of the two threads, if the second one unpacks `second` worth.
    let slower = |second: f64| second.max(total - second + hash);
    let target = (total + hash) / 2.0;
    let mut elf: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].part == Part::First && files[i].data.starts_with(b"\x7fELF"))
        .collect();
    elf.sort_by(|&a, &b| files[b].cost.total_cmp(&files[a].cost).then(a.cmp(&b)));
    // Two greedy passes, biggest first: one takes a file when it brings the second part closer
    // to the target, the other only while the part stays under it. Whichever finishes sooner.
    let pass = |fit: bool| -> (f64, Vec<usize>) {
        let (mut sum, mut chosen) = (0.0, Vec::new());
        for &i in &elf {
            let with = sum + files[i].cost;
            let take = if fit {
                with <= target
            } else {
                chosen.is_empty() || (with - target).abs() < (sum - target).abs()
            };
            if take {
                sum = with;
                chosen.push(i);
            }
        }
        (sum, chosen)
    };
    let (closer, fit) = (pass(false), pass(true));
    let (_, chosen) = if slower(fit.0) < slower(closer.0) {
        fit
    } else {
        closer
    };
    for &i in &chosen {
        files[i].part = Part::Second;
    }
    chosen.len()
}

/// `data` parsed, when it is a 64-bit x86-64 ELF file: the files the filters apply to.
fn x86_64_elf(data: &[u8]) -> Option<goblin::elf::Elf<'_>> {
    use goblin::elf::header::{ELFMAG, EM_X86_64};
    if !data.starts_with(ELFMAG) {
        return None;
    }
    let elf = goblin::elf::Elf::parse(data).ok()?;
    (elf.header.e_machine == EM_X86_64 && elf.is_64).then_some(elf)
}

/// The file range of an x86-64 ELF file's executable segment (the biggest, if several), which
/// the code filter makes 4-9% smaller once compressed (libm, libc, libpython). `len`: the file's.
fn x86_code(elf: &goblin::elf::Elf, len: usize) -> Option<(usize, usize)> {
    use goblin::elf::program_header::{PF_X, PT_LOAD};
    elf.program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & PF_X != 0)
        .map(|ph| {
            let start = (ph.p_offset as usize).min(len);
            (start, start.saturating_add(ph.p_filesz as usize).min(len))
        })
        .max_by_key(|&(start, end)| end - start)
        .filter(|&(start, end)| end > start)
}

/// The relocation tables of an x86-64 ELF file (`SHT_RELA` sections, adjacent ones as one
/// range), the longest such range: where the relocation filter pays. libpython's `.rela.dyn` and
/// `.rela.plt` are 0.9 MB, 116 KB compressed, and about 48 KB less through the filter.
fn relocation_tables(elf: &goblin::elf::Elf, len: usize) -> Option<(usize, usize)> {
    use goblin::elf::section_header::SHT_RELA;
    use pyshrink_stub::rela::{ENTRY, MAX_LEN};
    /// Fewer entries than this are not worth a record.
    const MIN_ENTRIES: usize = 64;
    if !elf.little_endian {
        return None;
    }
    let mut tables: Vec<(usize, usize)> = elf
        .section_headers
        .iter()
        .filter(|sh| sh.sh_type == SHT_RELA && sh.sh_entsize as usize == ENTRY)
        .filter_map(|sh| {
            let start = usize::try_from(sh.sh_offset).ok()?;
            let end = start.checked_add(usize::try_from(sh.sh_size).ok()?)?;
            (end <= len && (end - start) % ENTRY == 0 && end > start).then_some((start, end))
        })
        .collect();
    tables.sort_unstable();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (start, end) in tables {
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            Some(last) if start < last.1 => return None,
            _ => runs.push((start, end)),
        }
    }
    runs.into_iter()
        .map(|(start, end)| (start, end - start))
        .filter(|&(_, len)| len >= MIN_ENTRIES * ENTRY && len as u64 <= MAX_LEN)
        .max_by_key(|&(_, len)| len)
}

/// Fewer relocated words than this are not worth a record.
const MIN_WORDS: usize = 64;

/// The writable loaded segment of an ELF file (the largest, if several): where the words that
/// relocations fix are.
fn writable_segment(elf: &goblin::elf::Elf) -> Option<Segment> {
    use goblin::elf::program_header::{PF_W, PT_LOAD};
    let ph = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & PF_W != 0)
        .max_by_key(|ph| ph.p_filesz)?;
    Some(Segment {
        offset: ph.p_offset,
        vaddr: ph.p_vaddr,
        size: ph.p_filesz,
    })
}

/// A pax extended header with these records, for the entry that follows.
fn append_pax(builder: &mut tar::Builder<Vec<u8>>, records: &[(&str, String)]) -> Result<()> {
    let record: Vec<u8> = records
        .iter()
        .flat_map(|(key, value)| pax_record(key, value))
        .collect();
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_path("PaxHeader")?;
    header.set_size(record.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, record.as_slice())?;
    Ok(())
}

/// The archive compressed as one zstd frame per part, and where the second frame, the late frame
/// and the tail start (0 when there is none; the late frame starts where the tail does when it has
/// no part of its own). The frames are independent, so they are compressed on threads of
/// their own: the same bytes in less time.
pub fn compress_archive(a: &Archive, level: i32) -> Result<(Vec<u8>, u64, u64, u64)> {
    let parts = [
        &a.tar[..a.split],
        &a.tar[a.split..a.late],
        &a.tar[a.late..a.tail],
        &a.tar[a.tail..],
    ];
    let frames: Vec<(usize, Result<Vec<u8>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts.len())
            .filter(|&i| !parts[i].is_empty())
            .map(|i| (i, s.spawn(move || compress(parts[i], level))))
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| {
                let frame = h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (i, frame)
            })
            .collect()
    });
    // Where each part's frame starts; an empty part has none (0).
    let mut starts = [0u64; 4];
    let mut out = Vec::new();
    for (i, frame) in frames {
        starts[i] = out.len() as u64;
        out.extend_from_slice(&frame?);
    }
    // The late frame's span runs to the end: a tail without a late part starts it.
    let late = if starts[2] != 0 { starts[2] } else { starts[3] };
    Ok((out, starts[1], late, starts[3]))
}

/// One zstd frame with the content size and checksum recorded.
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 3), level)?;
    enc.set_parameter(CParameter::WindowLog(WINDOW_LOG))?;
    enc.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.include_checksum(true)?;
    enc.include_contentsize(true)?;
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// stub | payload | manifest | trailer.
pub fn assemble(stub: &[u8], payload: &[u8], manifest: &Manifest) -> Vec<u8> {
    let manifest = manifest.encode().into_bytes();
    let mut hasher = content_hasher();
    hasher.update(payload);
    hasher.update(&manifest);
    let trailer = Trailer {
        stub_len: stub.len() as u64,
        payload_len: payload.len() as u64,
        manifest_len: manifest.len() as u64,
        content_sha256: hasher.finalize().into(),
    };
    let mut out = Vec::with_capacity(stub.len() + payload.len() + manifest.len() + 72);
    out.extend_from_slice(stub);
    out.extend_from_slice(payload);
    out.extend_from_slice(&manifest);
    out.extend_from_slice(&trailer.encode());
    out
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place: a reader never
/// sees a half-written file, and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "output directory `{}` does not exist\n\nhint: create it first, or pass another -o",
            dir.display()
        );
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".pyshrink-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{}`", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("failed to write `{}`", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .context("failed to set the output mode")?;
    tmp.persist(path).with_context(|| {
        format!(
            "failed to move the output into place at `{}`",
            path.display()
        )
    })?;
    Ok(())
}

/// A bundle split into its parts, for `inspect` and tests.
pub struct Parsed<'a> {
    pub trailer: Trailer,
    pub stub: &'a [u8],
    pub payload: &'a [u8],
    pub manifest: Manifest,
}

pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, pyshrink_stub::FormatError> {
    use pyshrink_stub::{FormatError, TRAILER_LEN};
    if bytes.len() < TRAILER_LEN {
        return Err(FormatError::NotABundle);
    }
    let trailer = Trailer::decode(&bytes[bytes.len() - TRAILER_LEN..], bytes.len() as u64)?;
    let p = trailer.payload_offset() as usize;
    let m = trailer.manifest_offset() as usize;
    let end = m + trailer.manifest_len as usize;
    let mut hasher = content_hasher();
    hasher.update(&bytes[p..end]);
    if hasher.finalize()[..] != trailer.content_sha256[..] {
        return Err(FormatError::Corrupt("content hash mismatch"));
    }
    let manifest = Manifest::decode(&bytes[m..end])?;
    Ok(Parsed {
        stub: &bytes[..p],
        payload: &bytes[p..m],
        manifest,
        trailer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation_tables_are_found_and_compress_better_through_the_filter() {
        // The test executable is a position-independent x86-64 ELF file with relocations.
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = x86_64_elf(&exe).expect("an x86-64 ELF file");
        let (start, len) = relocation_tables(&elf, exe.len()).expect("its .rela.dyn");
        let section = |name: &str| {
            elf.section_headers
                .iter()
                .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))
                .map(|sh| (sh.sh_offset as usize, sh.sh_size as usize))
        };
        let (dyn_start, dyn_len) = section(".rela.dyn").unwrap();
        assert_eq!(start, dyn_start);
        // .rela.plt follows .rela.dyn and joins its range.
        match section(".rela.plt") {
            Some((plt_start, plt_len)) if plt_start == dyn_start + dyn_len => {
                assert_eq!(len, dyn_len + plt_len)
            }
            _ => assert_eq!(len, dyn_len),
        }
        let plain = &exe[start..start + len];
        let mut filtered = vec![0; len];
        pyshrink_stub::rela::encode(plain, &mut filtered);
        let (before, after) = (
            compress(plain, 19).unwrap(),
            compress(&filtered, 19).unwrap(),
        );
        assert!(
            after.len() * 10 < before.len() * 9,
            "{} -> {} bytes",
            before.len(),
            after.len()
        );
        assert!(x86_64_elf(b"\x7fELF not really").is_none());
    }

    #[test]
    fn filtered_elf_files_read_back_as_they_were() {
        // The test executable has a relocation table and a writable segment of relocated words.
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        let stage = tempfile::tempdir().unwrap();
        fs::write(stage.path().join("prog"), &exe).unwrap();
        fs::write(stage.path().join("notes.txt"), b"not an ELF file").unwrap();
        let a = archive(stage.path(), &[], &[]).unwrap();
        let tar = a.tar.as_slice();
        for key in [PAX_X86, PAX_RELA, PAX_RELA_DATA] {
            let record = format!(" {key}=");
            assert!(
                tar.windows(record.len()).any(|w| w == record.as_bytes()),
                "no {key} record"
            );
        }
        let mut reader = pyshrink_stub::ArchiveReader::new(tar);
        let mut read = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            let mut data = Vec::new();
            let mut buf = vec![0u8; 5000];
            loop {
                let n = reader.read_data(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            read.push((entry.path, data));
        }
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, "notes.txt");
        assert_eq!(read[1].0, "prog");
        assert!(read[1].1 == exe, "prog differs after the filters");
    }

    /// The entries of each frame of `a`: (path, what it links to) per part.
    fn parts(a: &Archive) -> [Vec<(String, Option<String>)>; 3] {
        let frames = [&a.tar[..a.split], &a.tar[a.split..a.late], &a.tar[a.late..]];
        frames.map(|frame| {
            let mut reader = pyshrink_stub::ArchiveReader::part(frame);
            let mut out = Vec::new();
            while let Some(e) = reader.next_entry().unwrap() {
                match e.kind {
                    pyshrink_stub::EntryKind::Link { target } => out.push((e.path, Some(target))),
                    pyshrink_stub::EntryKind::File { .. } => out.push((e.path, None)),
                    pyshrink_stub::EntryKind::Dir { .. } => {}
                }
            }
            out
        })
    }

    #[test]
    fn files_with_the_same_bytes_and_mode_are_stored_once_in_one_frame() {
        let stage = tempfile::tempdir().unwrap();
        let put = |rel: &str, bytes: &[u8], mode: u32| {
            let path = stage.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        let site = "lib/python3.11/site-packages/pkg";
        let shared = data(8192, false, 1);
        put("app/a.dat", &shared, 0o644);
        put("app/b.dat", &shared, 0o644);
        put("app/run.dat", &shared, 0o755);
        put("app/small1", b"same small bytes", 0o644);
        put("app/small2", b"same small bytes", 0o644);
        // A late-frame candidate whose twin must be there before the interpreter starts.
        let lib = data(300_000, false, 2);
        put(&format!("{site}/twin.bin"), &lib, 0o644);
        put("lib/zz-twin.bin", &lib, 0o644);
        // Enough site-packages data for a late frame, and ELF files for a second one.
        put(
            &format!("{site}/big.bin"),
            &data(3_000_000, false, 3),
            0o644,
        );
        let elf = data(2_000_000, true, 4);
        put("lib/libone.so", &elf, 0o755);
        put("lib/libtwo.so", &elf, 0o755);
        put("lib/libother.so", &data(2_500_000, true, 5), 0o755);
        let a = archive(stage.path(), &[], &[]).unwrap();
        let [first, second, late] = parts(&a);
        let all: Vec<_> = first.iter().chain(&second).chain(&late).collect();
        let link = |path: &str| {
            all.iter()
                .find(|(p, _)| p == path)
                .unwrap_or_else(|| panic!("{path} not archived"))
                .1
                .clone()
        };
        assert_eq!(link("app/b.dat").as_deref(), Some("app/a.dat"));
        assert_eq!(link("app/run.dat"), None, "another mode is another file");
        assert_eq!(
            link("app/small2"),
            None,
            "small files are stored as they are"
        );
        assert_eq!(link("lib/libtwo.so").as_deref(), Some("lib/libone.so"));
        assert_eq!(
            link("lib/zz-twin.bin").as_deref(),
            Some(&*format!("{site}/twin.bin"))
        );
        assert!(late.iter().any(|(p, _)| p.ends_with("big.bin")), "{late:?}");
        assert!(!second.is_empty(), "no second frame");
        // Each link follows its target in the same frame.
        for frame in [&first, &second, &late] {
            for (i, (path, target)) in frame.iter().enumerate() {
                if let Some(target) = target {
                    assert!(
                        frame[..i].iter().any(|(p, t)| p == target && t.is_none()),
                        "{path} links to {target}, not earlier in its frame"
                    );
                }
            }
        }
    }

    /// `len` bytes that compress about 2:1, starting with the ELF magic when `elf`.
    fn data(len: usize, elf: bool, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut out: Vec<u8> = (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 2 == 0 {
                    (x & 0x0f) as u8
                } else {
                    b'a'
                }
            })
            .collect();
        if elf {
            out[..4].copy_from_slice(b"\x7fELF");
        }
        out
    }

    fn file(name: &str, len: usize, elf: bool) -> File {
        File {
            rel: name.into(),
            data: data(len, elf, len as u32),
            exec: elf,
            code: None,
            relocations: None,
            words: None,
            cost: 0.0,
            part: Part::First,
            same_as: None,
        }
    }

    /// (second thread, first thread with the hash), in estimated microseconds.
    fn loads(files: &[File]) -> (f64, f64) {
        let second: f64 = files
            .iter()
            .filter(|f| f.part == Part::Second)
            .map(|f| f.cost)
            .sum();
        let first: f64 = files
            .iter()
            .filter(|f| f.part != Part::Second)
            .map(|f| f.cost)
            .sum();
        let compressed: f64 = files
            .iter()
            .map(|f| zstd::bulk::compress(&f.data, 3).unwrap().len() as f64)
            .sum();
        (
            second,
            first + compressed / 1e6 * HASH_COST_PER_MB_COMPRESSED,
        )
    }

    #[test]
    fn the_second_thread_gets_elf_files_worth_half_the_work() {
        let mut files = vec![
            file("lib/libpython.so", 6 << 20, true),
            file("lib/libc.so", 2 << 20, true),
            file("lib/libm.so", 1 << 20, true),
            file("lib/python.zip", 3 << 20, false),
        ];
        for i in 0..8 {
            files.push(file(
                &format!("lib/dynload/m{i}.so"),
                100_000 + i * 7_000,
                true,
            ));
        }
        for i in 0..60 {
            files.push(file(&format!("site/p{i}.pyc"), 20_000 + i * 300, false));
        }
        let compressed = estimate_costs(&mut files);
        assert!(choose_second(&mut files, compressed) > 0);
        assert!(files
            .iter()
            .all(|f| f.part != Part::Second || f.data.starts_with(b"\x7fELF")));
        let (second, first) = loads(&files);
        let smallest_elf = files
            .iter()
            .filter(|f| f.data.starts_with(b"\x7fELF"))
            .map(|f| f.cost)
            .fold(f64::MAX, f64::min);
        assert!(
            (second - first).abs() <= 2.0 * smallest_elf,
            "second thread {second:.0} us, first {first:.0} us"
        );
    }

    #[test]
    fn one_elf_file_bigger_than_half_goes_to_the_second_thread_alone() {
        let mut files = vec![
            file("lib/libpython.so", 6 << 20, true),
            file("lib/libc.so", 1 << 20, true),
            file("lib/python.zip", 2 << 20, false),
        ];
        let compressed = estimate_costs(&mut files);
        assert_eq!(choose_second(&mut files, compressed), 1);
        assert!(
            files[0].part == Part::Second,
            "the biggest file is the second thread's"
        );
        let (second, first) = loads(&files);
        assert!(second > first, "{second:.0} > {first:.0}");
    }

    #[test]
    fn only_what_the_interpreter_does_not_read_while_starting_may_come_late() {
        let root = |p: &str| late_root(Path::new(p)).map(|r| r.to_string_lossy().into_owned());
        for (late, dir) in [
            (
                "lib/python3.11/site-packages/click/core.pyc",
                "lib/python3.11/site-packages",
            ),
            (
                "lib/python3.8/lib-dynload/math.cpython-38-x86_64-linux-gnu.so",
                "lib/python3.8/lib-dynload",
            ),
            (
                "lib/python3/dist-packages/click/core.pyc",
                "lib/python3/dist-packages",
            ),
            ("app/app.pyc", "app"),
            ("share/pyshrink/cacert.pem", "share"),
        ] {
            assert_eq!(root(late).as_deref(), Some(dir), "{late}");
        }
        for early in [
            "lib/libpython3.11.so.1.0",
            "lib/python311.zip",
            "lib/python3.11/os.pyc",
            "bin/python.real",
            "pyshrink-boot/sitecustomize.pyc",
            "lib/python3.11/lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so",
            "lib/python3.11/lib-dynload/_multibytecodec.cpython-311-x86_64-linux-gnu.so",
            "lib/python3.11/site-packages/distutils-precedence.pth",
            "lib/python3.11/site-packages/sitecustomize.pyc",
            "lib/python3.11/site-packages/usercustomize.py",
        ] {
            assert_eq!(root(early), None, "{early}");
        }
    }

    #[test]
    fn the_late_frame_takes_candidates_up_to_the_budget_or_nothing() {
        let mut files = vec![file("lib/libpython.so", 6 << 20, true)];
        for i in 0..40 {
            files.push(file(
                &format!("lib/python3.11/site-packages/p{i:02}.pyc"),
                200_000,
                false,
            ));
        }
        estimate_costs(&mut files);
        assert!(choose_late(&mut files, LATE_MIN, &[]) > 0);
        let late: f64 = files
            .iter()
            .filter(|f| f.part == Part::Late)
            .map(|f| f.cost)
            .sum();
        assert!(
            (LATE_BUDGET / 2.0..=LATE_BUDGET).contains(&late),
            "{late:.0} us"
        );
        assert!(files[0].part != Part::Late);
        assert!(files
            .iter()
            .any(|f| f.part != Part::Late && f.rel.starts_with("lib/python3.11")));

        let mut small = vec![
            file("lib/libpython.so", 6 << 20, true),
            file("app/app.pyc", 2_000, false),
        ];
        estimate_costs(&mut small);
        assert_eq!(choose_late(&mut small, LATE_MIN, &[]), 0);
        assert!(small.iter().all(|f| f.part != Part::Late));
    }

    /// The entries of a run of frames: (path, is a directory).
    fn entries(tar: &[u8], last: bool) -> Vec<(String, bool)> {
        let mut reader = if last {
            pyshrink_stub::ArchiveReader::new(tar)
        } else {
            pyshrink_stub::ArchiveReader::part(tar)
        };
        let mut out = Vec::new();
        while let Some(e) = reader.next_entry().unwrap() {
            let dir = matches!(e.kind, pyshrink_stub::EntryKind::Dir { .. });
            out.push((e.path, dir));
            let mut buf = vec![0u8; 1 << 16];
            while reader.read_data(&mut buf).unwrap() > 0 {}
        }
        out
    }

    #[test]
    fn late_files_come_last_in_a_frame_of_their_own_after_their_directory() {
        let stage = tempfile::tempdir().unwrap();
        let sp = stage.path().join("lib/python3.11/site-packages/pkg");
        fs::create_dir_all(&sp).unwrap();
        fs::create_dir_all(stage.path().join("bin")).unwrap();
        fs::write(stage.path().join("bin/python.real"), data(3 << 20, true, 1)).unwrap();
        for i in 0..12 {
            fs::write(sp.join(format!("m{i}.pyc")), data(150_000, false, i + 2)).unwrap();
        }
        let a = archive(stage.path(), &[], &[]).unwrap();
        assert!(a.late < a.tar.len(), "no late part");
        let early = entries(&a.tar[..a.late], false);
        let late = entries(&a.tar[a.late..], true);
        assert!(early.contains(&("lib/python3.11/site-packages".into(), true)));
        assert!(early.iter().any(|(p, _)| p == "bin/python.real"));
        assert!(early
            .iter()
            .any(|(p, _)| p == pyshrink_stub::LATE_LIST_FILE));
        assert_eq!(late[0], ("lib/python3.11/site-packages/pkg".into(), true));
        assert!(late[1..]
            .iter()
            .all(|(p, dir)| !dir && p.starts_with("lib/python3.11/site-packages/pkg/")));
        assert_eq!(early.len() + late.len(), 1 + 1 + 1 + 1 + 12);

        let (bytes, second, late_frame, tail_frame) = compress_archive(&a, 3).unwrap();
        assert_eq!(tail_frame, 0, "no tail");
        assert!(late_frame > second);
        let back = zstd::stream::decode_all(&bytes[late_frame as usize..]).unwrap();
        assert!(
            back == a.tar[a.late..],
            "the late frame is the late part alone"
        );
        assert!(zstd::stream::decode_all(bytes.as_slice()).unwrap() == a.tar);
    }

    #[test]
    fn late_modules_come_after_the_rest_directory_by_directory_in_import_order() {
        let stage = tempfile::tempdir().unwrap();
        let site = "lib/python3.11/site-packages";
        let put = |rel: &str, seed: u32| {
            let path = stage.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data(100_000, false, seed)).unwrap();
        };
        fs::create_dir_all(stage.path().join("bin")).unwrap();
        fs::write(stage.path().join("bin/python.real"), data(3 << 20, true, 1)).unwrap();
        put("app/app.pyc", 2);
        put(&format!("{site}/pkg_a/__init__.pyc"), 3);
        put(&format!("{site}/pkg_a/x.pyc"), 4);
        put(&format!("{site}/pkg_b/__init__.pyc"), 5);
        put(&format!("{site}/pkg_b/data.json"), 6);
        put(&format!("{site}/pkg_b/sub/__init__.pyc"), 7);
        put(&format!("{site}/pkg_a-1.0.dist-info/METADATA"), 8);
        put(&format!("{site}/top.pyc"), 9);
        let order = ["pkg_b", "pkg_b.sub", "top", "pkg_a", "pkg_a.x"].map(String::from);
        let a = archive(stage.path(), &[], &order).unwrap();
        let late: Vec<String> = entries(&a.tar[a.late..], true)
            .into_iter()
            .map(|(p, dir)| if dir { format!("{p}/") } else { p })
            .collect();
        let want = [
            // Every directory, then what the app may read as data, in path order...
            "pkg_a",
            "pkg_a-1.0.dist-info",
            "pkg_b",
            "pkg_b/sub",
            "pkg_a-1.0.dist-info/METADATA",
            "pkg_b/data.json",
            // ...then the modules: those directly on sys.path and the packages there, then by
            // directory in import order, with a package's `__init__` in its parent's.
            "app/app.pyc",
            "pkg_a/__init__.pyc",
            "pkg_b/__init__.pyc",
            "top.pyc",
            "pkg_b/sub/__init__.pyc",
            "pkg_a/x.pyc",
        ];
        let want: Vec<String> = want
            .iter()
            .map(|p| match p.strip_prefix("app/") {
                Some(_) => p.to_string(),
                None if p.contains('.') && !p.ends_with("dist-info") => format!("{site}/{p}"),
                None => format!("{site}/{p}/"),
            })
            .collect();
        assert_eq!(late, want);

        // The launcher's start-up code reads the same order, and waits for the first six.
        let listed = read_member(&a.tar, true, pyshrink_stub::LATE_LIST_FILE);
        let mut lines = listed.lines();
        assert_eq!(lines.next(), Some("6"));
        assert_eq!(lines.collect::<Vec<_>>(), want);
    }

    #[test]
    fn a_newline_in_a_late_path_leaves_the_late_frame_unlisted() {
        let stage = tempfile::tempdir().unwrap();
        let site = stage.path().join("lib/python3.11/site-packages");
        fs::create_dir_all(site.join("pkg")).unwrap();
        fs::create_dir_all(stage.path().join("bin")).unwrap();
        fs::write(stage.path().join("bin/python.real"), data(3 << 20, true, 1)).unwrap();
        for i in 0..12 {
            fs::write(
                site.join(format!("pkg/m{i}.pyc")),
                data(150_000, false, i + 2),
            )
            .unwrap();
        }
        let a = archive(stage.path(), &[], &[]).unwrap();
        assert!(a.late < a.tar.len(), "no late part");
        assert!(entries(&a.tar[..a.late], false)
            .iter()
            .any(|(p, _)| p == pyshrink_stub::LATE_LIST_FILE));

        fs::write(site.join("pkg/odd\nname.txt"), data(1000, false, 99)).unwrap();
        let a = archive(stage.path(), &[], &[]).unwrap();
        let late = entries(&a.tar[a.late..], true);
        assert!(
            late.iter().any(|(p, _)| p.ends_with("odd\nname.txt")),
            "{late:?}"
        );
        assert!(!entries(&a.tar[..a.late], false)
            .iter()
            .any(|(p, _)| p == pyshrink_stub::LATE_LIST_FILE));
    }

    /// The bytes of the member `path` of an archive (`last`: the archive's last part), as text.
    fn read_member(tar: &[u8], last: bool, path: &str) -> String {
        let mut reader = if last {
            pyshrink_stub::ArchiveReader::new(tar)
        } else {
            pyshrink_stub::ArchiveReader::part(tar)
        };
        while let Some(e) = reader.next_entry().unwrap() {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = reader.read_data(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            if e.path == path {
                return String::from_utf8(out).unwrap();
            }
        }
        panic!("no {path} in the archive")
    }

    #[test]
    fn shared_objects_not_loaded_at_start_come_in_the_tail_smallest_first() {
        let stage = tempfile::tempdir().unwrap();
        let put = |rel: &str, bytes: Vec<u8>| {
            let path = stage.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
        };
        let dynload = "lib/python3.11/lib-dynload";
        let site = "lib/python3.11/site-packages";
        put("bin/python.real", data(20_000, true, 1));
        put("lib/libpython3.11.so.1.0", data(3 << 20, true, 2));
        put("lib/libcrypto.so.3", data(2 << 20, true, 3));
        put(
            &format!("{dynload}/_json.cpython-311-x86_64-linux-gnu.so"),
            data(40_000, true, 4),
        );
        // Loaded by `encodings` as the interpreter starts, for some locales.
        put(
            &format!("{dynload}/_codecs_jp.cpython-311-x86_64-linux-gnu.so"),
            data(90_000, true, 5),
        );
        put(
            &format!("{site}/pkg/_speedups.abi3.so"),
            data(300_000, true, 6),
        );
        put(
            &format!("{site}/pkg.libs/libvendored-1a2b.so.1"),
            data(200_000, true, 7),
        );
        // An executable, and the app's own files: run or read by their path.
        put(&format!("{site}/pkg/tool"), data(100_000, true, 8));
        put("app/plugin.so", data(50_000, true, 9));
        // Past the tail's budget alone: unpacked on the launcher's two threads as before.
        put("lib/libbig.so.1", data(12 << 20, true, 12));
        put(&format!("{site}/pkg/__init__.pyc"), data(10_000, false, 10));
        let at_start = [
            "lib/libpython3.11.so.1.0".to_string(),
            "bin/python.real".into(),
        ];
        let a = archive(stage.path(), &at_start, &[]).unwrap();
        assert!(a.tail < a.tar.len(), "no tail");
        let want = [
            format!("{dynload}/_json.cpython-311-x86_64-linux-gnu.so"),
            format!("{site}/pkg.libs/libvendored-1a2b.so.1"),
            format!("{site}/pkg/_speedups.abi3.so"),
            "lib/libcrypto.so.3".into(),
        ];
        let tail: Vec<String> = entries(&a.tar[a.tail..], true)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(tail, want);
        // lib-dynload is CPython's exec_prefix landmark: there before the interpreter starts.
        assert!(entries(&a.tar[..a.late], false).contains(&(dynload.into(), true)));
        // The list, for the launcher and the start-up code, comes before the interpreter starts.
        let list = read_member(&a.tar[..a.late], false, pyshrink_stub::TAIL_LIST_FILE);
        assert_eq!(list, want.join("\n") + "\n");
        // The memory runtime's late memory files: the tail's, and the ELF files of the late part
        // (the tool and the app's plugin, run or read by their path).
        assert_eq!(a.late_memory_files, want.len() + 2);

        let (bytes, _, late_frame, tail_frame) = compress_archive(&a, 3).unwrap();
        assert!(late_frame < tail_frame, "the late part before the tail");
        let back = zstd::stream::decode_all(&bytes[tail_frame as usize..]).unwrap();
        assert!(
            back == a.tar[a.tail..],
            "the tail's frame is the tail alone"
        );

        // setuptools' hook imports nothing loaded late.
        put(
            &format!("{site}/_distutils_hack/__init__.pyc"),
            data(5_000, false, 11),
        );
        put(
            &format!("{site}/distutils-precedence.pth"),
            b"import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') \
              == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n"
                .to_vec(),
        );
        let a = archive(stage.path(), &at_start, &[]).unwrap();
        assert!(a.tail < a.tar.len(), "no tail beside setuptools' hook");
        // What that hook imports is there before `site` runs it.
        let early = entries(&a.tar[..a.late], false);
        let hook = format!("{site}/_distutils_hack/__init__.pyc");
        assert!(early.iter().any(|(p, _)| *p == hook), "{early:?}");
        // A `.pth` line that imports runs as the interpreter starts, before anything waits.
        put(&format!("{site}/hook.pth"), b"import pkg\n".to_vec());
        let a = archive(stage.path(), &at_start, &[]).unwrap();
        assert_eq!(a.tail, a.tar.len(), "a tail despite an importing .pth file");
    }

    #[test]
    fn pth_import_lines_are_read_or_refused() {
        for (line, names) in [
            ("import os, sys", Some(vec!["os", "sys"])),
            (
                "import os; __import__('_distutils_hack').add_shim()",
                Some(vec!["os", "_distutils_hack"]),
            ),
            ("import pkg", Some(vec!["pkg"])),
            ("import os; __import__(name)", None),
            ("import os; importlib.import_module('pkg')", None),
        ] {
            assert_eq!(pth_line_imports(line), names, "{line}");
        }
    }
}
