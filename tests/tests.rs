//! Integration tests: the real `pyshrink` binary, real interpreters, bundles run in an empty root.

mod util;

mod core_bundle;
mod errors;
mod format;
mod hardening;
mod image;
mod memory;
mod packages;
