//! The stdlib's bytecode as one file: `lib/pythonXY.zip`.
//!
//! CPython puts `<prefix>/lib/pythonXY.zip` on `sys.path` ahead of the stdlib directory and
//! imports from it with the frozen `zipimport`, so the hundreds of small `.pyc` files of the stdlib
//! can travel as one stored (uncompressed: the payload is compressed as a whole) zip. A first run
//! then creates one file instead of hundreds, which is most of what extraction costs on a real
//! file system. `os.pyc` also stays outside: it is the landmark CPython finds its prefix by. In the
//! zip, it is what CPython 3.8 to 3.10 (which do not freeze `os`) import at start, so their start
//! reads nothing but the zip, also while the memory runtime's late frame is being unpacked.
//!
//! The zip records come from the format crate (`pyshrink_stub::zip`), which the memory runtime
//! shares.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pyshrink_stub::zip;

/// Directories of the stdlib that stay files: extension modules and installed packages.
const KEEP_AS_FILES: &[&str] = &["lib-dynload", "site-packages", "dist-packages"];

/// Moves the stdlib `.pyc` files under `stdlib_dir` into `zip_path`; returns how many.
pub fn pack_stdlib(stdlib_dir: &Path, zip_path: &Path) -> Result<usize> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in walkdir::WalkDir::new(stdlib_dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() != 1 || !KEEP_AS_FILES.contains(&e.file_name().to_string_lossy().as_ref())
        })
    {
        let entry = entry.with_context(|| format!("failed to walk `{}`", stdlib_dir.display()))?;
        let rel = entry
            .path()
            .strip_prefix(stdlib_dir)
            .expect("under its root");
        let rel_str = rel.to_string_lossy().into_owned();
        if entry.file_type().is_file() && rel_str.ends_with(".pyc") {
            files.push((rel_str, entry.path().to_path_buf()));
        }
    }
    if files.is_empty() {
        return Ok(0);
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    if files.len() > zip::MAX_ENTRIES {
        bail!("over {} stdlib files", zip::MAX_ENTRIES);
    }
    for (name, path) in &files {
        let data =
            fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
        let offset = u32::try_from(out.len()).context("stdlib zip over 4 GiB")?;
        let size = u32::try_from(data.len()).context("file over 4 GiB")?;
        u16::try_from(name.len()).context("path too long for zip")?;
        let crc = zip::crc32(&data);
        zip::local_header(&mut out, name.as_bytes(), crc, size);
        out.extend_from_slice(&data);
        zip::central_record(&mut central, name.as_bytes(), crc, size, offset);
    }
    let cd_offset = u32::try_from(out.len()).context("stdlib zip over 4 GiB")?;
    let cd_len = u32::try_from(central.len()).context("stdlib zip over 4 GiB")?;
    out.extend_from_slice(&central);
    zip::end_record(&mut out, files.len() as u16, cd_len, cd_offset);
    fs::write(zip_path, &out)
        .with_context(|| format!("failed to write `{}`", zip_path.display()))?;
    for (name, path) in &files {
        if name != "os.pyc" {
            fs::remove_file(path)?;
        }
    }
    remove_empty_dirs(stdlib_dir)?;
    Ok(files.len())
}

fn remove_empty_dirs(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let keep = KEEP_AS_FILES.contains(&entry.file_name().to_string_lossy().as_ref());
        if entry.file_type()?.is_dir() && !keep && remove_empty_dirs(&entry.path())? {
            fs::remove_dir(entry.path())?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's own zipfile reads the archive back, entry for entry.
    #[test]
    fn python_reads_the_zip() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("python3.11");
        for (rel, body) in [
            ("os.pyc", "landmark"),
            ("json/__init__.pyc", "j"),
            ("abc.pyc", "a"),
            ("lib-dynload/x.so", "x"),
        ] {
            let p = lib.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        let zip = dir.path().join("python311.zip");
        assert_eq!(pack_stdlib(&lib, &zip).unwrap(), 3);
        assert!(lib.join("os.pyc").exists() && lib.join("lib-dynload/x.so").exists());
        assert!(!lib.join("json").exists(), "emptied directories go");
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.testzip(); print(sorted((i.filename, z.read(i).decode()) for i in z.infolist()))")
            .arg(&zip)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "[('abc.pyc', 'a'), ('json/__init__.pyc', 'j'), ('os.pyc', 'landmark')]",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
