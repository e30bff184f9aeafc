//! Extraction of a hostile archive. The launcher's extraction (`src/launcher/extract.rs`) is
//! `no_std` libc code built only into the stub executable, so this target replays what it does
//! with each entry against an in-memory directory tree: `mkdirat` of every missing parent
//! (EEXIST tolerated), `mkdirat` for a directory entry, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`
//! for a file, `linkat` (or, where that fails, a copy) for a hard link, then `bin/python3` and
//! `pyshrink.manifest`. The launcher opens nothing with O_NOFOLLOW on intermediate components,
//! so its safety rests on what is checked here: every path, a link's target included, resolves
//! lexically inside the extraction root, and nothing but plain files, directories and more
//! names of those files is ever created there (so no symlink can redirect a later path).

#![no_main]

mod common;

use std::collections::BTreeMap;

use common::{check_entry_path, Trickle};
use libfuzzer_sys::fuzz_target;
use pyshrink_stub::{ArchiveReader, EntryKind, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
}

/// An errno-style failure: the launcher dies with an I/O error and leaves only its work dir.
#[derive(Debug)]
struct Refused;

/// The extraction root's contents, keyed by components relative to the root.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<Vec<String>, Node>,
    /// File contents, to check that data lands in the file it belongs to.
    data: BTreeMap<Vec<String>, Vec<u8>>,
}

/// Resolves `path` against the root the way the kernel would when nothing on the way is a
/// symlink; fails the run if it could reach outside the root.
fn resolve(path: &[u8]) -> Vec<String> {
    let path = std::str::from_utf8(path).expect("entry paths are UTF-8");
    assert!(
        !path.starts_with('/'),
        "absolute path {path:?} escapes the root"
    );
    let mut at: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {
                panic!("non-canonical path {path:?}: the launcher's parent walk assumes none")
            }
            // Even `a/..` stays inside, but the launcher's `made` memo and parent walk treat
            // paths as plain strings, so a `..` anywhere would already be a broken promise.
            ".." => panic!("`..` in {path:?}"),
            c => at.push(c.to_string()),
        }
    }
    assert!(!at.is_empty(), "{path:?} names the root itself");
    at
}

impl Tree {
    fn parent_is_dir(&self, p: &[String]) -> bool {
        let parent = &p[..p.len() - 1];
        parent.is_empty() || self.nodes.get(parent) == Some(&Node::Dir)
    }

    fn mkdirat(&mut self, path: &[u8]) -> Result<(), Refused> {
        let p = resolve(path);
        if self.nodes.contains_key(&p) {
            return Ok(()); // EEXIST, whatever is there: the launcher carries on.
        }
        if !self.parent_is_dir(&p) {
            return Err(Refused); // ENOENT or ENOTDIR
        }
        self.nodes.insert(p, Node::Dir);
        Ok(())
    }

    fn create(&mut self, path: &[u8]) -> Result<Vec<String>, Refused> {
        let p = resolve(path);
        if self.nodes.contains_key(&p) || !self.parent_is_dir(&p) {
            return Err(Refused); // EEXIST (O_EXCL; with O_NOFOLLOW even for a link) or ENOTDIR
        }
        self.nodes.insert(p.clone(), Node::File);
        self.data.insert(p.clone(), Vec::new());
        Ok(p)
    }

    /// `linkat`, or the copy the launcher falls back to: either needs `target` to be a file and
    /// `path` to be new.
    fn link(&mut self, target: &[u8], path: &[u8]) -> Result<(), Refused> {
        let t = resolve(target);
        if self.nodes.get(&t) != Some(&Node::File) {
            return Err(Refused); // ENOENT, or EISDIR once the copy reads a directory
        }
        let data = self.data[&t].clone();
        let p = self.create(path)?;
        self.data.insert(p, data);
        Ok(())
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// `make_dirs` of the launcher, with its memo of directories already made.
fn make_dirs(
    tree: &mut Tree,
    dir: &[u8],
    made: &mut std::collections::BTreeSet<Vec<u8>>,
) -> Result<(), Refused> {
    if dir.is_empty() || made.contains(dir) {
        return Ok(());
    }
    make_dirs(tree, parent_of(dir), made)?;
    tree.mkdirat(dir)?;
    made.insert(dir.to_vec());
    Ok(())
}

fn extract<S: Source>(src: S, buf_len: usize) -> (Tree, bool) {
    let mut tree = Tree::default();
    let mut made = Default::default();
    let mut archive = ArchiveReader::new(src);
    let mut buf = vec![0u8; buf_len];
    let mut run = || -> Result<(), Refused> {
        loop {
            let entry = match archive.next_entry() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(_) => return Err(Refused),
            };
            check_entry_path(&entry.path);
            let path = entry.path.as_bytes();
            make_dirs(&mut tree, parent_of(path), &mut made)?;
            // Exhaustive on purpose: a new entry kind (a link, a device) must be looked at here.
            match entry.kind {
                EntryKind::Dir { .. } => make_dirs(&mut tree, path, &mut made)?,
                EntryKind::File { size, .. } => {
                    let file = tree.create(path)?;
                    loop {
                        let n = archive.read_data(&mut buf).map_err(|_| Refused)?;
                        if n == 0 {
                            break;
                        }
                        tree.data
                            .get_mut(&file)
                            .unwrap()
                            .extend_from_slice(&buf[..n]);
                    }
                    assert_eq!(tree.data[&file].len() as u64, size);
                }
                EntryKind::Link { target } => tree.link(target.as_bytes(), path)?,
            }
        }
        make_dirs(&mut tree, b"bin", &mut made)?;
        tree.create(b"bin/python3")?;
        tree.create(b"pyshrink.manifest")?;
        Ok(())
    };
    let ok = run().is_ok();
    (tree, ok)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = common::with_fixed_checksums(data);
    if fixed != data {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let (tree, ok) = extract(data, 256 * 1024);
    for (path, node) in &tree.nodes {
        assert!(!path.is_empty());
        // Every ancestor of what exists is a directory made by the extraction: nothing else
        // (no link, no device, no file) sits on the way to anything.
        for i in 1..path.len() {
            assert_eq!(tree.nodes.get(&path[..i]), Some(&Node::Dir), "{path:?}");
        }
        assert!(matches!(node, Node::Dir | Node::File));
    }
    if ok {
        assert_eq!(tree.nodes.get(&["bin".to_string()][..]), Some(&Node::Dir));
    }
    // The same archive read in short pieces extracts to the same tree.
    let (again, ok_again) = extract(Trickle { data, step: 0 }, 5);
    assert_eq!(ok, ok_again);
    assert_eq!(tree.nodes, again.nodes);
    assert_eq!(tree.data, again.data);
}
