//! Container images of a bundle: a Dockerfile the user owns, or an image archive written directly.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{DockerfileArgs, ImageArgs};

pub fn dockerfile_cmd(_args: &DockerfileArgs) -> Result<ExitCode> {
    anyhow::bail!("`pyshrink dockerfile` is not available yet")
}

pub fn image_cmd(_args: &ImageArgs) -> Result<ExitCode> {
    anyhow::bail!("`pyshrink image` is not available yet")
}
