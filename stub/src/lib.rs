//! The pyshrink bundle format: the one definition, used by the bundler to write bundles and by
//! the launcher (built from this crate with the `launcher` feature) to read them.
//!
//! A bundle is one file:
//!
//! ```text
//! +-----------+-----------------------------------+------------------+-------------+
//! | stub ELF  | payload: tar, 1 to 3 zstd frames  | manifest (UTF-8) | trailer 72B |
//! +-----------+-----------------------------------+------------------+-------------+
//! ```
//!
//! The trailer is last, so one read of the final 72 bytes tells whether a file is a bundle. See
//! [`trailer`] for its fields, [`manifest`] for the launch description and [`archive`] for the
//! subset of tar the payload uses. The payload is one tar stream; when the manifest names a
//! `second_frame`, its compressed bytes are two zstd frames split at an entry boundary, which the
//! launcher unpacks on two threads; a `late_frame` starts one more, of files the interpreter
//! needs only once the app runs, unpacked while it starts. The machine code of x86-64 ELF files
//! is stored through the [`x86`] filter and their relocation tables through the [`rela`] filter,
//! which pax records announce and the archive reader undoes.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod archive;
pub mod manifest;
pub mod rela;
pub mod trailer;
pub mod x86;
pub mod zip;

#[cfg(feature = "launcher")]
mod launcher;

pub use archive::{check_path, ArchiveEntry, ArchiveReader, EntryKind, Source};
pub use manifest::{
    memory_file_of_its_own, Entry, Frames, Manifest, Runtime, LATE_LIST_FILE, MEMORY_BOOT_DIR,
    MEMORY_LIBS_FILE, TAIL_LIST_FILE, ZIPIMPORT_MODULE,
};
pub use trailer::{content_hasher, Trailer, MAGIC, MAX_MANIFEST_LEN, TRAILER_LEN, VERSION};

/// Why a file could not be read as a bundle. Callers tell these apart: a file that is not a bundle
/// at all is a different mistake from a bundle damaged in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// No pyshrink magic at the end of the file.
    NotABundle,
    /// A bundle of a format version this build does not read.
    UnsupportedVersion(u32),
    /// The magic is there but something else does not hold.
    Corrupt(&'static str),
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FormatError::NotABundle => f.write_str("not a pyshrink bundle (no trailer magic)"),
            FormatError::UnsupportedVersion(v) => write!(
                f,
                "unsupported bundle format version {v} (this launcher reads version {VERSION})"
            ),
            FormatError::Corrupt(what) => write!(f, "corrupt bundle: {what}"),
        }
    }
}

/// Exit codes of the launcher when it fails before Python starts. They sit above the codes
/// Python and shells commonly use, so a test or a supervisor can tell the stub's refusals apart.
pub mod exit {
    pub const CORRUPT: i32 = 112;
    pub const UNSUPPORTED_VERSION: i32 = 113;
    pub const NOT_A_BUNDLE: i32 = 114;
    pub const NO_EXTRACT_DIR: i32 = 115;
    pub const IO: i32 = crate::io_status!();
    pub const EXEC: i32 = 117;
}

/// What a bundle says, with [`exit::IO`], when the process unpacking the late frame failed: the
/// same words whether the launcher or the interpreter's start-up code finds out.
pub const LATE_FRAME_FAILED: &str = crate::late_frame_failed!();

/// [`LATE_FRAME_FAILED`] as a literal, for the launcher's start-up code (`concat!`).
#[macro_export]
#[doc(hidden)]
macro_rules! late_frame_failed {
    () => {
        "the bundle was not completely unpacked; nothing was run\n\nhint: run it again"
    };
}

/// [`exit::IO`] as a literal, for the launcher's start-up code (`concat!`).
#[macro_export]
#[doc(hidden)]
macro_rules! io_status {
    () => {
        116
    };
}
