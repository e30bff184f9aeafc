//! Builds the launcher and embeds it, so a plain `cargo build` or `cargo install --path .` gives a
//! `pyshrink` that carries its stub.
//!
//! The launcher is the `pyshrink-stub` library built as a `no_std` staticlib (feature
//! `launcher`, profile `stub`) in a target dir of its own, then linked into a fully static
//! executable: with `musl-gcc -static` when Debian's musl-tools are there (tens of KiB), else with
//! `cc -static` against glibc's libc.a. `PYSHRINK_STUB=path` embeds a prebuilt stub instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let dest = out.join("pyshrink-stub");
    println!("cargo:rerun-if-env-changed=PYSHRINK_STUB");
    println!("cargo:rerun-if-env-changed=PYSHRINK_STUB_LINKER");
    println!("cargo:rerun-if-changed=stub/src");
    println!("cargo:rerun-if-changed=stub/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    if let Some(prebuilt) = env::var_os("PYSHRINK_STUB") {
        std::fs::copy(&prebuilt, &dest).expect("copy PYSHRINK_STUB");
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let target_dir = out.join("stub-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&manifest_dir)
        .args([
            "rustc",
            "-p",
            "pyshrink-stub",
            "--lib",
            "--crate-type",
            "staticlib",
        ])
        .args(["--features", "launcher", "--profile", "stub"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .arg("--quiet");
    // N.B.: the outer build's settings must not reach the inner one: clippy's wrapper, a target
    // dir or flags meant for the host crate would change or break the launcher build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let musl = which("musl-gcc");
    if let Some(musl) = &musl {
        // zstd's C decoder is compiled by zstd-sys with this compiler: musl headers for a musl link.
        cmd.env("CC_x86_64_unknown_linux_gnu", musl);
    }
    // One copy of the decoder instead of a generic and a BMI2 one picked at run time, and no
    // error strings: tens of KiB less in every bundle for a few percent of decoding speed.
    cmd.env(
        "CFLAGS_x86_64_unknown_linux_gnu",
        "-O2 -DDYNAMIC_BMI2=0 -DZSTD_STRIP_ERROR_STRINGS",
    );
    run(&mut cmd, "build the launcher staticlib");
    let lib = target_dir.join("x86_64-unknown-linux-gnu/stub/libpyshrink_stub.a");

    let linker = env::var("PYSHRINK_STUB_LINKER")
        .ok()
        .or_else(|| musl.clone())
        .unwrap_or_else(|| "cc".into());
    if musl.is_none() {
        println!(
            "cargo:warning=musl-gcc not found: linking the stub against static glibc (larger); \
             install musl-tools for the small stub"
        );
    }
    let mut link = Command::new(&linker);
    link.args(["-static", "-Os", "-s", "-Wl,--gc-sections"]);
    if musl.is_none() {
        // glibc's libc.a pulls in libgcc_eh, whose `_Unwind_Resume` the launcher also defines.
        link.arg("-Wl,--allow-multiple-definition");
    }
    link.arg("-o").arg(&dest).arg(&lib);
    run(&mut link, "link the launcher");
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("failed to {what}: {cmd:?}: {e}"));
    assert!(
        status.success(),
        "failed to {what}: {cmd:?} exited with {status}"
    );
}

fn which(name: &str) -> Option<String> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| Path::new(p).is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}
