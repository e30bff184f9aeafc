//! The launcher embedded at build time (see build.rs), or one given with `--stub`.

use std::path::Path;

use anyhow::{Context, Result};

static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pyshrink-stub"));

/// The launcher bytes to put at the front of a bundle.
pub fn load(over: Option<&Path>) -> Result<Vec<u8>> {
    match over {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("failed to read stub `{}`", path.display()))
        }
        None => Ok(EMBEDDED.to_vec()),
    }
}

/// The embedded launcher.
pub fn embedded() -> &'static [u8] {
    EMBEDDED
}
