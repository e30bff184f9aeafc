//! Bad input to `bundle`: one clear error, exit 1, and no output file.

use std::path::Path;

use crate::util::*;

fn bundle_err(args: &[&std::ffi::OsStr], out: &Path) -> String {
    let o = pyshrink()
        .arg("bundle")
        .arg("-q")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert_code(&o, 1, &format!("{args:?}"));
    assert!(!out.exists(), "{args:?}: no output file on failure");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "{args:?}: partial files left: {leftovers:?}"
    );
    stderr(&o)
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("app");
    let python = default_python();
    let py = python.as_os_str();

    let err = bundle_err(&["missing.py".as_ref(), "--python".as_ref(), py], &out);
    assert!(
        err.contains("missing.py") && err.contains("cannot be read"),
        "{err}"
    );

    let bad = dir.path().join("bad.py");
    std::fs::write(&bad, "print('ok')\n\ndef broken(:\n    pass\n").unwrap();
    let err = bundle_err(&[bad.as_os_str(), "--python".as_ref(), py], &out);
    assert!(
        err.contains(&format!("{}:3", bad.display())),
        "syntax error as file:line: {err}"
    );

    let hello = example("hello/app.py");
    for old in [
        "/root/.pyenv/versions/2.7.18/bin/python2.7",
        "/root/.pyenv/versions/3.7.16/bin/python3.7",
    ] {
        if Path::new(old).exists() {
            let err = bundle_err(
                &[hello.as_os_str(), "--python".as_ref(), old.as_ref()],
                &out,
            );
            assert!(err.contains("CPython 3.8 or newer"), "{old}: {err}");
        }
    }
    let err = bundle_err(
        &[hello.as_os_str(), "--python".as_ref(), "/bin/true".as_ref()],
        &out,
    );
    assert!(err.contains("/bin/true"), "{err}");

    let not_executable = dir.path().join("python3");
    std::fs::write(&not_executable, "not a program\n").unwrap();
    let err = bundle_err(
        &[
            hello.as_os_str(),
            "--python".as_ref(),
            not_executable.as_os_str(),
        ],
        &out,
    );
    assert!(
        err.contains(&format!(
            "interpreter `{}` cannot be run: Permission denied",
            not_executable.display()
        )) && err.contains("hint: pass --python"),
        "{err}"
    );

    let err = bundle_err(
        &[
            hello.as_os_str(),
            "--python".as_ref(),
            "/nonexistent/python".as_ref(),
        ],
        &out,
    );
    assert!(
        err.contains("/nonexistent/python") && err.contains("does not exist"),
        "{err}"
    );

    let nowhere = dir.path().join("no-such-dir/app");
    let o = bundle_to(&hello, &python, &nowhere);
    assert_code(&o, 1, "missing output dir");
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!nowhere.parent().unwrap().exists());
}

/// A directory the user cannot read: named, with the cause, not "has no __main__.py".
#[test]
fn unreadable_directory_is_named() {
    let Some(python) = interpreter("debian-3.11") else {
        eprintln!("no Debian python3.11: skipped (the test runs pyshrink as another user)");
        return;
    };
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let app = dir.path().join("secret");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join("__main__.py"), "print(1)\n").unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let out = dir.path().join("out");
    // As root every directory is readable: run as nobody.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_pyshrink"))
        .args(["bundle", "-q", "--python"])
        .arg(&python)
        .arg(&app)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 1, "unreadable directory");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("directory `{}` cannot be read", app.display())),
        "{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!out.exists());
}
