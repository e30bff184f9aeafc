//! `pyshrink inspect`: what a bundle holds and where its bytes go.
//!
//! The payload is read with the launcher's own archive reader (one format definition), after the
//! same checks the launcher makes. A single zstd frame cannot say how many compressed bytes each
//! file takes, so each file's share is estimated by compressing it alone at a fast level and
//! scaling to the real payload size: good enough to rank files, and labelled as an estimate.

use std::path::Path;

use anyhow::{Context, Result};
use pyshrink_stub::{ArchiveReader, Entry, EntryKind};
use serde_json::{json, Value};

use crate::payload;

/// File in the payload that records why each library and module is there.
pub const INVENTORY: &str = "pyshrink-inventory.json";

pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub est_compressed: u64,
    /// The earlier file with the same bytes, stored once for both.
    pub same_as: Option<String>,
    /// When a first run from disk unpacks it: [`START`], [`LATE`] or [`TAIL`].
    pub when: &'static str,
}

/// Reads a bundle and describes it as JSON (the text output is rendered from the same value).
pub fn inspect(path: &Path) -> Result<Value> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let not_a_bundle = |e: pyshrink_stub::FormatError| {
        anyhow::anyhow!(
            "`{}`: {e}\n\nhint: pass a file written by `pyshrink bundle`",
            path.display()
        )
    };
    let parsed = payload::parse(&bytes).map_err(not_a_bundle)?;
    let payload_len = parsed.payload.len() as u64;
    let frames = parsed.manifest.frames(payload_len).map_err(not_a_bundle)?;
    let mut files = Vec::new();
    let mut inventory = Value::Null;
    let mut late_list = None;
    let mut parts = Vec::new();
    for (name, when, span) in [
        ("first", START, Some(frames.first)),
        ("second", START, frames.second),
        ("late", LATE, frames.late),
        ("tail", TAIL, frames.tail),
    ] {
        let Some((start, end)) = span.filter(|(start, end)| end > start) else {
            continue;
        };
        let before = files.len();
        let frame = &parsed.payload[start as usize..end as usize];
        let tar = zstd::stream::decode_all(frame)
            .with_context(|| format!("failed to decompress the payload's {name} frame"))?;
        let reader = if end == payload_len {
            ArchiveReader::new(tar.as_slice())
        } else {
            ArchiveReader::part(tar.as_slice())
        };
        read_frame(reader, when, &mut files, &mut inventory, &mut late_list)?;
        let added = &files[before..];
        let mut part = json!({
            "frame": name,
            "when": when,
            "compressed": end - start,
            "unpacked": added.iter().filter(|f| f.same_as.is_none()).map(|f| f.size).sum::<u64>(),
            "files": added.len(),
        });
        if when == LATE {
            // The modules' bytecode that comes after what the app waits for (the late list's
            // first line), as the app imports it.
            let entries: Vec<&str> = late_list.as_deref().unwrap_or("").lines().collect();
            let waited = entries.first().and_then(|n| n.parse::<usize>().ok());
            let streamed = waited.map_or(0, |w| entries.len().saturating_sub(w + 1));
            part["as_imported"] = json!(streamed);
        }
        parts.push(part);
    }
    files.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
    let est_total: u64 = files.iter().map(|f| f.est_compressed).sum::<u64>().max(1);
    let m = &parsed.manifest;
    let entry = match &m.entry {
        Entry::Script(p) => json!({"kind": "script", "path": p}),
        Entry::Module(n) => json!({"kind": "module", "name": n}),
    };
    let file_list: Vec<Value> = files
        .iter()
        .map(|f| {
            let share = f.est_compressed as f64 / est_total as f64;
            let mut file = json!({
                "path": f.path,
                "size": f.size,
                "compressed_estimate": (share * payload_len as f64).round() as u64,
                "share": (share * 10000.0).round() / 10000.0,
                "when": f.when,
            });
            if let Some(target) = &f.same_as {
                file["same_as"] = json!(target);
            }
            file
        })
        .collect();
    Ok(json!({
        "bundle": path.display().to_string(),
        "size": bytes.len(),
        "stub_size": parsed.stub.len(),
        "payload_size": payload_len,
        "manifest_size": parsed.trailer.manifest_len,
        "content_sha256": parsed.trailer.content_sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "python": m.python,
        "entry": entry,
        "runtime": m.runtime.as_str(),
        "unpacked_size": files.iter().map(|f| f.size).sum::<u64>(),
        "frames": parts,
        "files": file_list,
        "libraries": inventory.get("libraries").cloned().unwrap_or(json!([])),
        "modules": inventory.get("modules").cloned().unwrap_or(json!([])),
        "distributions": inventory.get("distributions").cloned().unwrap_or(json!([])),
        "optional_left_out": inventory.get("optional_left_out").cloned().unwrap_or(json!([])),
    }))
}

/// When the launcher unpacks a frame on a first run from disk: before the interpreter starts,
/// while it starts (the app waits for its data, and for its modules as it imports them), while
/// the app runs.
const START: &str = "start";
const LATE: &str = "late";
const TAIL: &str = "tail";

/// Adds the files of one frame's archive to `files` (each unpacked `when`), and the inventory
/// and the late frame's list when the frame holds them.
fn read_frame(
    mut reader: ArchiveReader<&[u8]>,
    when: &'static str,
    files: &mut Vec<FileInfo>,
    inventory: &mut Value,
    late_list: &mut Option<String>,
) -> Result<()> {
    while let Some(entry) = reader
        .next_entry()
        .map_err(|e| anyhow::anyhow!("payload archive: {e}"))?
    {
        let size = match entry.kind {
            EntryKind::Dir { .. } => continue,
            EntryKind::File { size, .. } => size,
            EntryKind::Link { target } => {
                let size = files
                    .iter()
                    .find(|f: &&FileInfo| f.path == target)
                    .map(|f| f.size)
                    .with_context(|| {
                        format!(
                            "payload archive: `{}` links to a missing `{target}`",
                            entry.path
                        )
                    })?;
                files.push(FileInfo {
                    path: entry.path,
                    size,
                    est_compressed: 0,
                    same_as: Some(target),
                    when,
                });
                continue;
            }
        };
        let mut data = Vec::with_capacity(size.min(1 << 26) as usize);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read_data(&mut buf)
                .map_err(|e| anyhow::anyhow!("payload archive: {e}"))?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        if entry.path == INVENTORY {
            *inventory = serde_json::from_slice(&data).unwrap_or(Value::Null);
        }
        if entry.path == pyshrink_stub::LATE_LIST_FILE {
            *late_list = std::str::from_utf8(&data).ok().map(str::to_owned);
        }
        let est = zstd::bulk::compress(&data, 3)
            .map(|c| c.len() as u64)
            .unwrap_or(size);
        files.push(FileInfo {
            path: entry.path,
            size,
            est_compressed: est,
            same_as: None,
            when,
        });
    }
    Ok(())
}

/// Why `name` (a module, a library or a bundled file) is in the bundle [`inspect`] described as
/// `v`: `[{"name", "reason"}]`, from `name` back to the app, each step the reason for the one
/// before it.
pub fn why(v: &Value, name: &str) -> Result<Value> {
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (modules, libraries, files) = (list("modules"), list("libraries"), list("files"));
    let module = |n: &str| modules.iter().find(|m| m["name"] == n).cloned();
    let library = |n: &str| {
        libraries
            .iter()
            .find(|l| l["name"] == n || l["path"] == n)
            .cloned()
    };
    let is_file = |p: &str| files.iter().any(|f| f["path"] == p);
    let entry_file = v["entry"]["path"].as_str();
    enum Step {
        Module(String),
        Library(Value),
        File(String),
    }
    let basename = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let mut step = if module(name).is_some() {
        Step::Module(name.to_string())
    } else if let Some(l) = library(name).or_else(|| library(&basename(name))) {
        Step::Library(l)
    } else if is_file(name) {
        Step::File(name.to_string())
    } else {
        anyhow::bail!(
            "`{name}` is not a module, library or file of this bundle; `pyshrink inspect \
             BUNDLE` lists them"
        );
    };
    let mut chain = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let (label, reason, next) = match step {
            Step::Library(l) => {
                let by = l["needed_by"].as_str().unwrap_or("").to_string();
                let next = if let Some(up) = library(&by) {
                    Some(Step::Library(up))
                } else if is_file(&by) {
                    Some(Step::File(by.clone()))
                } else {
                    None
                };
                let reason = if next.is_some() {
                    format!("needed by {by}")
                } else {
                    format!("needed by the interpreter ({by})")
                };
                (l["name"].as_str().unwrap_or("").to_string(), reason, next)
            }
            Step::File(path) if Some(path.as_str()) == entry_file => (
                path,
                "the entry script".to_string(),
                Some(Step::Module("__main__".to_string())),
            ),
            Step::File(path) => match module_of_file(&path).filter(|m| module(m).is_some()) {
                Some(m) => (
                    path,
                    format!("the file of module {m}"),
                    Some(Step::Module(m)),
                ),
                None => (path, "bundled as a file of its own".to_string(), None),
            },
            Step::Module(m) => {
                let by: Vec<String> = module(&m)
                    .and_then(|x| x["imported_by"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|b| b.as_str().map(String::from))
                    .collect();
                let reason = match by.first().map(String::as_str) {
                    _ if m == "__main__" => "the app".to_string(),
                    None => "bundled on its own".to_string(),
                    Some("<entry>") => "the app's entry module".to_string(),
                    Some("--include-module") => "named by --include-module".to_string(),
                    Some(_) => format!("imported by {}", by.join(", ")),
                };
                let next = by
                    .first()
                    .filter(|b| module(b).is_some())
                    .map(|b| Step::Module(b.clone()));
                (m, reason, next)
            }
        };
        let looped = !seen.insert(label.clone());
        chain.push(json!({"name": label, "reason": reason}));
        match next {
            Some(n) if !looped => step = n,
            _ => break,
        }
    }
    Ok(Value::Array(chain))
}

/// The module whose file is `path` in a bundle: `lib/python3.11/lib-dynload/_ssl.cpython-…so` is
/// `_ssl`, `lib/python3.11/site-packages/markupsafe/__init__.pyc` is `markupsafe`.
fn module_of_file(path: &str) -> Option<String> {
    let rel = ["/site-packages/", "/lib-dynload/", "/"]
        .iter()
        .find_map(|root| {
            let tail = path.strip_prefix("lib/python")?;
            let at = tail.find(root)?;
            Some(&tail[at + root.len()..])
        })
        .or_else(|| path.strip_prefix("app/"))?;
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let stem = file.split('.').next()?;
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    if stem != "__init__" {
        parts.push(stem);
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

/// The human-readable form of [`why`]'s value.
pub fn render_why(v: &Value) -> String {
    let steps = v.as_array().cloned().unwrap_or_default();
    let width = steps
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(0);
    steps
        .iter()
        .map(|s| {
            format!(
                "{:<width$}  {}\n",
                s["name"].as_str().unwrap_or(""),
                s["reason"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn mb(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} MB", n as f64 / 1e6)
    } else {
        format!("{:.1} KB", n as f64 / 1e3)
    }
}

/// The human-readable form of [`inspect`]'s value.
pub fn render(v: &Value, top: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "{}: {} (stub {}, payload {}, manifest {} B)",
        v["bundle"].as_str().unwrap_or(""),
        mb(n("size")),
        mb(n("stub_size")),
        mb(n("payload_size")),
        n("manifest_size")
    );
    let entry = &v["entry"];
    let entry = entry["path"]
        .as_str()
        .or(entry["name"].as_str())
        .unwrap_or("");
    let _ = writeln!(
        out,
        "python {}, entry {}, runtime {}, sha256 {}",
        v["python"].as_str().unwrap_or(""),
        entry,
        v["runtime"].as_str().unwrap_or(""),
        v["content_sha256"].as_str().unwrap_or("")
    );
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\nUnpacked on a first run from disk, and on every run from memory (compressed -> unpacked):"
    );
    for (when, what) in [
        (START, "before the interpreter starts"),
        (LATE, "while it starts"),
        (TAIL, "while the app runs (the tail)"),
    ] {
        let of_when: Vec<&Value> = frames.iter().filter(|f| f["when"] == when).collect();
        if of_when.is_empty() {
            continue;
        }
        let sum = |k: &str| {
            of_when
                .iter()
                .map(|f| f[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let as_imported = sum("as_imported");
        let note = if of_when.len() > 1 {
            ", two threads".to_string()
        } else if as_imported > 0 {
            format!(" (from disk, {as_imported} modules come as the app imports them)")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<33} {:>10} -> {:>10}, {} files{note}",
            what,
            mb(sum("compressed")),
            mb(sum("unpacked")),
            sum("files")
        );
    }
    let files = v["files"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\n{} files, {} unpacked; biggest first (compressed share estimated):",
        files.len(),
        mb(n("unpacked_size"))
    );
    for f in files.iter().take(top) {
        let same = match f["same_as"].as_str() {
            Some(target) => format!(" (same bytes as {target}, stored once)"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:>10}  {:>10}  {:>5.1}%  {}{same}",
            mb(f["size"].as_u64().unwrap_or(0)),
            mb(f["compressed_estimate"].as_u64().unwrap_or(0)),
            f["share"].as_f64().unwrap_or(0.0) * 100.0,
            f["path"].as_str().unwrap_or("")
        );
    }
    if files.len() > top {
        let _ = writeln!(out, "  … {} more (--json lists all)", files.len() - top);
    }
    let libs = v["libraries"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\n{} libraries:", libs.len());
    for l in &libs {
        let _ = writeln!(
            out,
            "  {:<28} needed by {}",
            l["name"].as_str().unwrap_or(""),
            l["needed_by"].as_str().unwrap_or("")
        );
    }
    let mods = v["modules"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\n{} modules (name, origin, imported by):", mods.len());
    for m in &mods {
        let by: Vec<&str> = m["imported_by"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<40} {:<7} {}",
            m["name"].as_str().unwrap_or(""),
            m["origin"].as_str().unwrap_or(""),
            by.join(", ")
        );
    }
    let dists = v["distributions"].as_array().cloned().unwrap_or_default();
    if !dists.is_empty() {
        let _ = writeln!(out, "\n{} distributions:", dists.len());
        for d in &dists {
            let _ = writeln!(
                out,
                "  {} {}",
                d["name"].as_str().unwrap_or(""),
                d["version"].as_str().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::module_of_file;

    #[test]
    fn bundled_files_map_to_their_modules() {
        for (path, module) in [
            (
                "lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                Some("_ssl"),
            ),
            (
                "lib/python3.11/site-packages/markupsafe/__init__.pyc",
                Some("markupsafe"),
            ),
            (
                "lib/python3.11/site-packages/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so",
                Some("markupsafe._speedups"),
            ),
            ("lib/python3.11/json/decoder.pyc", Some("json.decoder")),
            ("app/pkg/mod.pyc", Some("pkg.mod")),
            ("lib/libc.so.6", None),
            ("lib/python311.zip", None),
        ] {
            assert_eq!(module_of_file(path).as_deref(), module, "{path}");
        }
    }
}
