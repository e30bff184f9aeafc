//! The manifest: what the launcher needs to start the bundled interpreter.
//!
//! Plain UTF-8 text, one `key=value` per line, first line `pyshrink-manifest 1`, so
//! `tail -c +N bundle | head` shows it. Unknown keys are kept for readers that know them and
//! ignored by the launcher. Paths are relative to the extraction directory.
//!
//! ```text
//! pyshrink-manifest 1
//! python=3.11.7
//! interpreter=bin/python.real
//! loader=lib/ld-linux-x86-64.so.2
//! library_path=lib
//! python_exe=bin/python3
//! entry=script:app/app.pyc
//! runtime=auto
//! second_frame=1622016
//! late_frame=3145728
//! tail_frame=3670016
//! late_memory_files=9
//! preload=lib/libpython3.11.so.1.0 lib/libm.so.6 lib/libc.so.6 lib/libgcc_s.so.1
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use crate::archive::check_path;
use crate::FormatError;

const HEADER: &str = "pyshrink-manifest 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A compiled script (`app/app.pyc`), run as `__main__` with its directory on `sys.path`.
    Script(String),
    /// A module run as `python -m NAME`, with the working directory on `sys.path`.
    Module(String),
}

/// Where the bundled runtime lives while the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Disk when a usable extraction directory exists, memory otherwise.
    Auto,
    /// Extracted once into a cache directory, reused by later runs.
    Disk,
    /// In memory files (memfd) for this run only: nothing is written to any file system.
    Memory,
}

impl Runtime {
    pub fn parse(s: &[u8]) -> Option<Runtime> {
        match s {
            b"auto" => Some(Runtime::Auto),
            b"disk" => Some(Runtime::Disk),
            b"memory" => Some(Runtime::Memory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Auto => "auto",
            Runtime::Disk => "disk",
            Runtime::Memory => "memory",
        }
    }
}

/// In the payload: for each bundled ELF file that needs libraries outside `preload`, a line
/// `<path>\t<library path> <library path>...` (paths in the payload). The memory runtime loads
/// those libraries before the file, since the loader cannot search a directory for them there.
pub const MEMORY_LIBS_FILE: &str = "pyshrink-libs.txt";

/// In the payload, when it has a tail frame (see [`Manifest::tail_frame`]): the paths of that
/// frame's files, one per line, in the order they are unpacked.
pub const TAIL_LIST_FILE: &str = "pyshrink-tail.txt";

/// In the payload, when the late frame holds modules that the app need not wait for: how many of
/// that frame's entries the app waits for before it starts, then the path of each entry (a
/// directory's with a `/` after it), one per line, in the order they are unpacked. The launcher
/// sends a `-` as each is in (see the launcher's `extract`).
pub const LATE_LIST_FILE: &str = "pyshrink-late.txt";

/// In the payload: the directory holding the memory runtime's `sitecustomize`, which the launcher
/// puts on `PYTHONPATH` in that runtime only.
pub const MEMORY_BOOT_DIR: &str = "pyshrink-boot";

/// In the stdlib zip: the module whose `install()` the launcher's start-up code calls to import
/// from that zip faster (`src/python/zipimport_fast.py`).
pub const ZIPIMPORT_MODULE: &str = crate::zipimport_module!();

/// [`ZIPIMPORT_MODULE`] as a literal, for the launcher's start-up code (`concat!`).
#[macro_export]
#[doc(hidden)]
macro_rules! zipimport_module {
    () => {
        "_pyshrink_zipimport"
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `X.Y.Z` of the bundled interpreter.
    pub python: String,
    /// The real interpreter ELF.
    pub interpreter: String,
    /// The bundled PT_INTERP loader (`ld-linux-x86-64.so.2`).
    pub loader: String,
    /// Where the bundled shared libraries are.
    pub library_path: String,
    /// Where the launcher places a copy of itself that acts as `python3` (`sys.executable`).
    pub python_exe: String,
    pub entry: Entry,
    /// The runtime used unless `PYSHRINK_RUNTIME` says otherwise (`auto` when absent).
    pub runtime: Runtime,
    /// The libraries the interpreter needs, for the memory runtime to hand to the loader with
    /// `--preload` (glibc matches a `DT_NEEDED` name against the SONAME of a loaded object).
    pub preload: Vec<String>,
    /// Where the payload's second zstd frame starts (0: one frame). The bundler splits the tar
    /// at an entry boundary and compresses the two parts separately, so the launcher unpacks
    /// them on two threads; read in sequence they are the one archive.
    pub second_frame: u64,
    /// Where the payload's last frames start when they hold files the interpreter needs only once
    /// the app runs (0: none). The launcher starts the interpreter when the frames before them are
    /// unpacked and unpacks these in a process of its own meanwhile; the app starts when the
    /// frames before the tail ([`Manifest::tail_frame`]) are in.
    pub late_frame: u64,
    /// Where the payload's tail starts, within the late frame's span (0: no tail): extension
    /// modules and the libraries only they need, which nothing reads before it imports them. On
    /// disk and in memory, the interpreter runs the app once the frames before the tail are in,
    /// and an import of one of those modules waits for its file and its libraries
    /// ([`TAIL_LIST_FILE`]).
    pub tail_frame: u64,
    /// How many files of the late frame the memory runtime keeps in memory files of their own
    /// ([`memory_file_of_its_own`]; hard links not counted). It makes those files before the
    /// interpreter starts, and the process that unpacks the late frame fills them.
    pub late_memory_files: u64,
    /// Other `key=value` lines, in order: informational for tools such as `pyshrink inspect`.
    pub extra: Vec<(String, String)>,
}

/// The payload's frames as byte ranges `(start, end)` of the payload, from the manifest's
/// `second_frame`, `late_frame` and `tail_frame`. Each frame ends at an entry boundary of the
/// archive; only the last one present holds its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    /// Unpacked by the launcher's main thread, which also hashes the payload.
    pub first: (u64, u64),
    /// Unpacked by the launcher's second thread, before the interpreter starts.
    pub second: Option<(u64, u64)>,
    /// The late frame's part before the tail (empty when the tail is all of it): unpacked while
    /// the interpreter starts; the app waits for its data, and for its modules as it imports them
    /// ([`LATE_LIST_FILE`]).
    pub late: Option<(u64, u64)>,
    /// Unpacked while the app runs.
    pub tail: Option<(u64, u64)>,
}

impl Frames {
    /// Where the frames of a payload of `len` bytes are, from the manifest's offsets; an offset
    /// outside its place is damage.
    pub fn of(second: u64, late: u64, tail: u64, len: u64) -> Result<Frames, FormatError> {
        if late >= len && late != 0 {
            return Err(FormatError::Corrupt(
                "manifest late_frame lies outside the payload",
            ));
        }
        if tail != 0 && (late == 0 || tail < late || tail >= len) {
            return Err(FormatError::Corrupt(
                "manifest tail_frame lies outside the late frame",
            ));
        }
        let early_end = if late == 0 { len } else { late };
        if second >= early_end && second != 0 {
            return Err(FormatError::Corrupt(
                "manifest second_frame lies outside the payload",
            ));
        }
        let first_end = if second == 0 { early_end } else { second };
        let late_end = if tail == 0 { len } else { tail };
        Ok(Frames {
            first: (0, first_end),
            second: (second != 0).then_some((second, early_end)),
            late: (late != 0).then_some((late, late_end)),
            tail: (tail != 0).then_some((tail, len)),
        })
    }
}

impl Manifest {
    /// [`Frames::of`] this manifest's offsets.
    pub fn frames(&self, payload_len: u64) -> Result<Frames, FormatError> {
        Frames::of(
            self.second_frame,
            self.late_frame,
            self.tail_frame,
            payload_len,
        )
    }

    pub fn encode(&self) -> String {
        let mut out = String::from(HEADER);
        out.push('\n');
        let entry = match &self.entry {
            Entry::Script(p) => ("script:", p),
            Entry::Module(m) => ("module:", m),
        };
        let mut line = |k: &str, v: &str| {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        };
        line("python", &self.python);
        line("interpreter", &self.interpreter);
        line("loader", &self.loader);
        line("library_path", &self.library_path);
        line("python_exe", &self.python_exe);
        let mut e = String::from(entry.0);
        e.push_str(entry.1);
        line("entry", &e);
        line("runtime", self.runtime.as_str());
        line("second_frame", &alloc::format!("{}", self.second_frame));
        if self.late_frame != 0 {
            line("late_frame", &alloc::format!("{}", self.late_frame));
        }
        if self.tail_frame != 0 {
            line("tail_frame", &alloc::format!("{}", self.tail_frame));
        }
        if self.late_memory_files != 0 {
            line(
                "late_memory_files",
                &alloc::format!("{}", self.late_memory_files),
            );
        }
        line("preload", &self.preload.join(" "));
        for (k, v) in &self.extra {
            line(k, v);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let text = core::str::from_utf8(bytes).map_err(|_| bad("manifest is not UTF-8"))?;
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(HEADER) || !text.ends_with('\n') {
            return Err(bad("manifest header missing"));
        }
        let mut m = Manifest {
            python: String::new(),
            interpreter: String::new(),
            loader: String::new(),
            library_path: String::new(),
            python_exe: String::new(),
            entry: Entry::Module(String::new()),
            runtime: Runtime::Auto,
            preload: Vec::new(),
            second_frame: 0,
            late_frame: 0,
            tail_frame: 0,
            late_memory_files: 0,
            extra: Vec::new(),
        };
        let mut seen_entry = false;
        for line in lines {
            let (k, v) = line
                .split_once('=')
                .ok_or(bad("manifest line without `=`"))?;
            let slot = match k {
                "python" => &mut m.python,
                "interpreter" => &mut m.interpreter,
                "loader" => &mut m.loader,
                "library_path" => &mut m.library_path,
                "python_exe" => &mut m.python_exe,
                "entry" => {
                    m.entry = if let Some(p) = v.strip_prefix("script:") {
                        check_path(p)?;
                        Entry::Script(p.into())
                    } else if let Some(name) = v.strip_prefix("module:") {
                        Entry::Module(name.into())
                    } else {
                        return Err(bad("manifest entry is neither script: nor module:"));
                    };
                    seen_entry = true;
                    continue;
                }
                "runtime" => {
                    m.runtime = Runtime::parse(v.as_bytes())
                        .ok_or(bad("manifest runtime is not auto, disk or memory"))?;
                    continue;
                }
                "second_frame" => {
                    m.second_frame = v
                        .parse()
                        .map_err(|_| bad("manifest second_frame is not a number"))?;
                    continue;
                }
                "late_frame" => {
                    m.late_frame = v
                        .parse()
                        .map_err(|_| bad("manifest late_frame is not a number"))?;
                    continue;
                }
                "tail_frame" => {
                    m.tail_frame = v
                        .parse()
                        .map_err(|_| bad("manifest tail_frame is not a number"))?;
                    continue;
                }
                "late_memory_files" => {
                    m.late_memory_files = v
                        .parse()
                        .map_err(|_| bad("manifest late_memory_files is not a number"))?;
                    continue;
                }
                "preload" => {
                    m.preload = v
                        .split(' ')
                        .filter(|p| !p.is_empty())
                        .map(|p| check_path(p).map(|()| p.into()))
                        .collect::<Result<_, _>>()?;
                    continue;
                }
                _ => {
                    m.extra.push((k.into(), v.into()));
                    continue;
                }
            };
            check_path(v)?;
            *slot = v.into();
        }
        let required = [
            &m.python,
            &m.interpreter,
            &m.loader,
            &m.library_path,
            &m.python_exe,
        ];
        if !seen_entry || required.iter().any(|v| v.is_empty()) {
            return Err(bad("manifest lacks a required key"));
        }
        match &m.entry {
            Entry::Module(name) if name.is_empty() => Err(bad("manifest entry is empty")),
            _ => Ok(m),
        }
    }

    /// The value of an informational key.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether the memory runtime keeps a payload file in a memory file of its own rather than in its
/// zip: ELF files, which the loader maps, and the stdlib zip (`lib/pythonXY.zip`), which is one
/// already. `head` is the start of the file's bytes.
pub fn memory_file_of_its_own(path: &[u8], head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
        || (path.starts_with(b"lib/python")
            && path.ends_with(b".zip")
            && !path[4..].contains(&b'/'))
}

fn bad(what: &'static str) -> FormatError {
    FormatError::Corrupt(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            python: "3.11.7".into(),
            interpreter: "bin/python.real".into(),
            loader: "lib/ld-linux-x86-64.so.2".into(),
            library_path: "lib".into(),
            python_exe: "bin/python3".into(),
            entry: Entry::Script("app/app.pyc".into()),
            runtime: Runtime::Memory,
            preload: vec!["lib/libc.so.6".into(), "lib/libm.so.6".into()],
            second_frame: 1234,
            late_frame: 5678,
            tail_frame: 6789,
            late_memory_files: 3,
            extra: vec![("files".into(), "42".into())],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(m.encode().as_bytes()), Ok(m.clone()));
        let mut m2 = m;
        m2.entry = Entry::Module("pkg.cli".into());
        assert_eq!(Manifest::decode(m2.encode().as_bytes()), Ok(m2.clone()));
        assert_eq!(m2.extra("files"), Some("42"));
    }

    #[test]
    fn rejects_damage() {
        let good = sample().encode();
        let cases = [
            good.replace("pyshrink-manifest 1", "pyshrink-manifest 2"),
            good.replace("interpreter=bin/python.real", "interpreter=/bin/sh"),
            good.replace("loader=lib/", "loader=../"),
            good.replace("entry=script:", "entry=shell:"),
            good.replace("python=3.11.7\n", ""),
            good.replace("library_path=lib\n", "library_path lib\n"),
            good.trim_end().into(),
            good.replace("runtime=memory", "runtime=ram"),
            good.replace("second_frame=1234", "second_frame=-1"),
            good.replace("late_frame=5678", "late_frame=x"),
            good.replace("tail_frame=6789", "tail_frame=0x1"),
            good.replace("late_memory_files=3", "late_memory_files=-3"),
            good.replace("preload=lib/libc.so.6", "preload=/lib/libc.so.6"),
        ];
        for bad in cases {
            assert!(
                matches!(
                    Manifest::decode(bad.as_bytes()),
                    Err(FormatError::Corrupt(_))
                ),
                "{bad}"
            );
        }
        assert!(Manifest::decode(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn frames_are_the_spans_between_the_offsets_and_stay_in_their_place() {
        assert_eq!(
            Frames::of(0, 0, 0, 100),
            Ok(Frames {
                first: (0, 100),
                second: None,
                late: None,
                tail: None,
            })
        );
        assert_eq!(
            Frames::of(40, 70, 90, 100),
            Ok(Frames {
                first: (0, 40),
                second: Some((40, 70)),
                late: Some((70, 90)),
                tail: Some((90, 100)),
            })
        );
        // A tail without a late part of its own starts the late frame.
        assert_eq!(
            Frames::of(40, 70, 70, 100).map(|f| (f.late, f.tail)),
            Ok((Some((70, 70)), Some((70, 100))))
        );
        for (second, late, tail) in [
            (0, 100, 0),
            (70, 70, 0),
            (80, 70, 0),
            (0, 0, 50),
            (0, 70, 60),
            (0, 70, 100),
        ] {
            assert!(
                matches!(
                    Frames::of(second, late, tail, 100),
                    Err(FormatError::Corrupt(_))
                ),
                "{second} {late} {tail}"
            );
        }
    }

    #[test]
    fn memory_files_of_their_own_are_elf_files_and_the_stdlib_zip() {
        let elf = b"\x7fELF\x02\x01\x01";
        assert!(memory_file_of_its_own(
            b"lib/python3.11/lib-dynload/_json.so",
            elf
        ));
        assert!(memory_file_of_its_own(b"app/data.bin", elf));
        assert!(memory_file_of_its_own(b"lib/python311.zip", b"PK\x03\x04"));
        assert!(!memory_file_of_its_own(
            b"lib/python3.11/site-packages/x.zip",
            b"PK\x03\x04"
        ));
        assert!(!memory_file_of_its_own(b"app/app.pyc", b"\xa7\r\r\n"));
        assert!(!memory_file_of_its_own(b"lib/python3.11/os.pyc", b""));
    }
}
