//! The stdlib's bytecode as one file: `lib/pythonXY.zip`.
//!
//! CPython puts `<prefix>/lib/pythonXY.zip` on `sys.path` ahead of the stdlib directory and
//! imports from it with the frozen `zipimport`, so the hundreds of small `.pyc` files of the stdlib
//! can travel as one stored (uncompressed: the payload is compressed as a whole) zip. A first run
//! then creates one file instead of hundreds, which is most of what extraction costs on a real
//! file system. `os.pyc` stays outside: it is the landmark CPython finds its prefix by.
//!
//! Format: PKWARE APPNOTE 6.3.x, sections 4.3.7 (local header), 4.3.12 (central directory) and
//! 4.3.16 (end of central directory); stored entries, fixed DOS time 1980-01-01 00:00.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
        if entry.file_type().is_file() && rel_str.ends_with(".pyc") && rel_str != "os.pyc" {
            files.push((rel_str, entry.path().to_path_buf()));
        }
    }
    if files.is_empty() {
        return Ok(0);
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, path) in &files {
        let data =
            fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
        let offset = u32::try_from(out.len()).context("stdlib zip over 4 GiB")?;
        let (crc, size) = (
            crc32(&data),
            u32::try_from(data.len()).context("file over 4 GiB")?,
        );
        let name_len = u16::try_from(name.len()).context("path too long for zip")?;
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        push_common(&mut out, crc, size, name_len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&data);
        // Central directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by: 2.0, MS-DOS attributes
        push_common(&mut central, crc, size, name_len);
        central.extend_from_slice(&[0u8; 10]); // comment len, disk, internal attrs (2 each), external attrs (4)
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).context("stdlib zip over 4 GiB")?;
    let count = u16::try_from(files.len()).context("over 65535 stdlib files")?;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // this disk, disk with the central directory
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    fs::write(zip_path, &out)
        .with_context(|| format!("failed to write `{}`", zip_path.display()))?;
    for (_, path) in &files {
        fs::remove_file(path)?;
    }
    remove_empty_dirs(stdlib_dir)?;
    Ok(files.len())
}

/// version needed, flags, method (stored), DOS time and date, CRC, sizes, name and extra length.
fn push_common(out: &mut Vec<u8>, crc: u32, size: u32, name_len: u16) {
    out.extend_from_slice(&20u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // 00:00:00
    out.extend_from_slice(&0x21u16.to_le_bytes()); // 1980-01-01
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
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

/// CRC-32 (IEEE 802.3, reflected, as zip uses), bitwise: the stdlib is a few MB, once per build.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

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
        assert_eq!(pack_stdlib(&lib, &zip).unwrap(), 2);
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
            "[('abc.pyc', 'a'), ('json/__init__.pyc', 'j')]",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
