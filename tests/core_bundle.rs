//! hello, mountains and the probe app, bundled and run in an empty root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// hello with every interpreter present: output, arguments, exit code, stdin, all in an empty root.
#[test]
fn hello_runs_in_empty_root_with_every_interpreter() {
    let app = example("hello/app.py");
    for (name, python) in interpreters() {
        eprintln!("hello with {name} ({})", python.display());
        let bundle = bundle(&[app.to_str().unwrap()], python);
        let root = Root::new(&bundle);
        let o = root.run(&["two words", "ünïcødé ✓", "--exit=3"]);
        assert_code(&o, 3, name);
        let (major_minor, _) = name.rsplit_once('-').map(|(_, v)| (v, ())).unwrap();
        assert_eq!(
            stdout(&o),
            format!("Hello from Python {major_minor}!\narg: two words\narg: ünïcødé ✓\n"),
            "{name}"
        );
        let o = root.run_stdin(&["-"], b"first line\nsecond\n");
        assert_code(&o, 0, name);
        assert!(
            stdout(&o).ends_with("stdin: 2 lines\nFIRST LINE\nSECOND\n"),
            "{name}: {}",
            stdout(&o)
        );
        assert_eq!(root.extractions().len(), 1, "{name}: one extraction reused");
    }
}

/// mountains with every interpreter: answers GET / in the empty root and exits 0 on SIGTERM,
/// extracted (writable root) and from memory (read-only root, nothing writable).
#[test]
fn mountains_serves_and_stops_on_sigterm_with_every_interpreter() {
    let app = example("mountains/app.py");
    for (name, python) in interpreters() {
        eprintln!("mountains with {name}");
        let bundle = bundle(&[app.to_str().unwrap()], python);
        for writable in [true, false] {
            let name = format!("{name} ({})", if writable { "disk" } else { "memory" });
            let root = Root::new(&bundle);
            let port = free_port();
            let mut child = root
                .command(writable, &["--setenv", "PORT", &port.to_string()], &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let Some(reply) = http_get(port, "/", Duration::from_secs(30)) else {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!("{name}: no answer on port {port}; stderr: {}", stderr(&o))
            };
            assert!(reply.starts_with("HTTP/1.0 200"), "{name}: {reply}");
            let body = reply.split("\r\n\r\n").nth(1).unwrap();
            let list: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(list[0]["name"], "Everest", "{name}");
            assert_eq!(list[0]["height"], 8849, "{name}");
            // bwrap runs its own init in the new PID namespace; the app is the deepest descendant.
            let app_pid = deepest_descendant(child.id() as i32);
            // SAFETY: plain kill(2) on a process this test started.
            unsafe { libc::kill(app_pid, libc::SIGTERM) };
            let o = child.wait_with_output().unwrap();
            assert_code(&o, 0, &format!("{name}: exit on SIGTERM"));
        }
    }
}

/// A read-only root with an exec tmpfs at /tmp; uid 65532 with a writable /tmp; nothing
/// writable at all with the disk runtime forced: a clear error naming the fix.
#[test]
fn runs_read_only_and_non_root_and_fails_clearly_with_nothing_writable() {
    let bundle = bundle(
        &[example("hello/app.py").to_str().unwrap()],
        &default_python(),
    );
    let root = Root::new(&bundle);
    std::fs::create_dir(root.path().join("tmp")).unwrap();

    let o = root
        .command(false, &["--tmpfs", "/tmp"], &["ro"])
        .output()
        .unwrap();
    assert_code(&o, 0, "read-only root with tmpfs /tmp");
    assert!(stdout(&o).contains("arg: ro"));

    std::fs::set_permissions(
        root.path().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let o = root
        .command(
            true,
            &["--unshare-user", "--uid", "65532", "--gid", "65532"],
            &["nonroot"],
        )
        .output()
        .unwrap();
    assert_code(&o, 0, "uid 65532 with writable /tmp");
    assert!(stdout(&o).contains("arg: nonroot"));
    assert!(root.path().join("tmp/pyshrink-65532").is_dir());

    let empty = Root::new(&bundle);
    let o = empty
        .command(false, &["--setenv", "PYSHRINK_RUNTIME", "disk"], &["never"])
        .output()
        .unwrap();
    assert_code(&o, pyshrink_stub::exit::NO_EXTRACT_DIR, "nothing writable");
    let err = stderr(&o);
    assert!(err.contains("no usable directory"), "{err}");
    assert!(
        err.contains("/tmp/pyshrink-0"),
        "names what it tried: {err}"
    );
    assert!(
        err.contains("--tmpfs /tmp:exec")
            && err.contains("PYSHRINK_EXTRACT_DIR")
            && err.contains("PYSHRINK_RUNTIME=memory"),
        "{err}"
    );
    assert!(!stdout(&o).contains("Hello"), "the app must not start");
}

/// Four first runs at once: all succeed, one extraction, no work dir left.
#[test]
fn concurrent_first_runs_share_one_extraction() {
    let bundle = bundle(
        &[example("hello/app.py").to_str().unwrap()],
        &default_python(),
    );
    let root = Root::new(&bundle);
    let children: Vec<_> = (0..4)
        .map(|i| {
            root.command(true, &[], &[&format!("run{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_code(&o, 0, &format!("run {i}"));
        assert!(stdout(&o).contains(&format!("arg: run{i}")));
    }
    assert_eq!(root.extractions().len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("tmp/pyshrink-0"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".work"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `sys.executable` is a working interpreter in the empty root: subprocess and multiprocessing
/// spawn work, and no loader or Python variable leaks into children.
#[test]
fn sys_executable_works_for_subprocess_and_spawn() {
    for name in ["pyenv-3.8", "pyenv-3.11", "pyenv-3.13", "debian-3.11"] {
        let Some(python) = interpreter(name) else {
            continue;
        };
        eprintln!("probe with {name}");
        let bundle = bundle(
            &[repo().join("tests/fixtures/probe/app.py").to_str().unwrap()],
            &python,
        );
        let root = Root::new(&bundle);
        let o = root.run(&["subprocess"]);
        assert_code(&o, 0, name);
        let want_ver = name.rsplit_once('-').unwrap().1;
        assert_eq!(stdout(&o), format!("{want_ver}\n[]\n"), "{name}");
        let o = root.run(&["spawn"]);
        assert_code(&o, 0, name);
        assert_eq!(stdout(&o), "[1, 4, 9]\n", "{name}");
        let o = root.run(&["argv0"]);
        assert_eq!(
            stdout(&o),
            "/app\n",
            "{name}: sys.argv[0] is the path the bundle ran as"
        );
    }
}

/// Host PYTHON* variables cannot redirect the bundled interpreter, and stay visible to the app.
#[test]
fn host_python_variables_cannot_break_the_bundle() {
    let bundle = bundle(
        &[repo().join("tests/fixtures/probe/app.py").to_str().unwrap()],
        &default_python(),
    );
    let root = Root::new(&bundle);
    let hostile = [
        "--setenv",
        "PYTHONHOME",
        "/nonexistent",
        "--setenv",
        "PYTHONPATH",
        "/nonexistent",
        "--setenv",
        "PYTHONSTARTUP",
        "/nonexistent",
        "--setenv",
        "PYTHONNOUSERSITE",
        "",
    ];
    let o = root.command(true, &hostile, &["env"]).output().unwrap();
    assert_code(&o, 0, "with hostile PYTHON* variables");
    let env: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        env["PYTHONHOME"], "/nonexistent",
        "the environment passes through unchanged"
    );
    assert!(env.get("LD_LIBRARY_PATH").is_none());
}

/// Daemon threads alive at exit end through pthread_exit, which aborts without libgcc_s.
#[test]
fn daemon_threads_at_exit_do_not_abort() {
    let bundle = bundle(
        &[repo().join("tests/fixtures/probe/app.py").to_str().unwrap()],
        &default_python(),
    );
    let root = Root::new(&bundle);
    for i in 0..5 {
        let o = root.run(&["daemon-threads"]);
        assert_code(&o, 0, &format!("run {i}"));
        assert!(!stderr(&o).contains("libgcc_s"), "{}", stderr(&o));
    }
}

/// An app that imports every stdlib module and submodule the interpreter can import (but what
/// pyshrink never bundles: the stdlib's tests, IDLE, Tk, ensurepip, lib2to3, distutils, venv,
/// the host's sitecustomize)
/// imports them all in a bundle too, with no hint but the import statements. Every interpreter,
/// both runtimes.
#[test]
fn every_stdlib_module_the_app_imports_imports_in_the_bundle() {
    let make_app = repo().join("tests/fixtures/stdlib_all/make_app.py");
    for (name, python) in interpreters() {
        let dir = tempdir();
        let o = Command::new(python).arg(&make_app).output().unwrap();
        assert_code(&o, 0, &format!("{name}, make_app.py"));
        let source = stdout(&o);
        let app = dir.path().join("app.py");
        std::fs::write(&app, &source).unwrap();
        let expected = python_prints(python, &app, name);
        eprintln!("every stdlib module with {name}: {}", expected.trim());
        assert!(
            expected.starts_with("imported ") && !expected.contains("failed:"),
            "{name}: {expected}"
        );
        let bundled = bundle_source(dir.path(), "stdlib_all", &source, python);
        assert_prints_on_host_in_both_runtimes(&bundled, &[], &expected, name);
    }
}

/// `-m module` and a directory with `__main__.py`.
#[test]
fn module_and_directory_apps() {
    let python = default_python();
    let dir = tempdir();
    let pkg = dir.path().join("greeter");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "NAME = 'greeter'\n").unwrap();
    std::fs::write(
        pkg.join("__main__.py"),
        "import sys\nfrom greeter import NAME\nprint(NAME, sys.argv[1:])\n",
    )
    .unwrap();
    let tool = dir.path().join("tool");
    std::fs::create_dir_all(&tool).unwrap();
    std::fs::write(tool.join("helper.py"), "NAME = 'tool'\n").unwrap();
    std::fs::write(
        tool.join("__main__.py"),
        "import sys\nfrom helper import NAME\nprint(NAME, sys.argv[1:])\n",
    )
    .unwrap();
    let out = dir.path().join("greeter-bin");
    let o = pyshrink()
        .current_dir(dir.path())
        .args([
            "bundle",
            "-q",
            "--compression-level",
            "3",
            "-m",
            "greeter",
            "--python",
        ])
        .arg(&python)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_code(&o, 0, "bundle -m greeter");
    let o = Root::new(&out).run(&["x"]);
    assert_code(&o, 0, "-m greeter in empty root");
    assert_eq!(stdout(&o), "greeter ['x']\n");

    let out2 = dir.path().join("dir-bin");
    assert_code(&bundle_to(&tool, &python, &out2), 0, "bundle a directory");
    let o = Root::new(&out2).run(&["y"]);
    assert_code(&o, 0, "directory app in empty root");
    assert_eq!(stdout(&o), "tool ['y']\n");
}

/// What the analysis leaves out of mountains (http.server): the stdlib's self-test helpers
/// (`random._test_generator` imports statistics, fractions, decimal) and imports made only in an
/// error handler (`hashlib` imports logging, and with it pickle, to report a missing hash
/// module). An app that imports logging itself gets it; both run.
#[test]
fn analysis_leaves_out_self_test_helpers_and_error_handler_imports() {
    let python = default_python();
    let mountains = bundled_modules(&bundle(
        &[example("mountains/app.py").to_str().unwrap()],
        &python,
    ));
    for present in ["random", "hashlib", "email.utils", "http.server"] {
        assert!(mountains.iter().any(|m| m == present), "{present} missing");
    }
    for absent in [
        "statistics",
        "fractions",
        "decimal",
        "_decimal",
        "logging",
        "pickle",
    ] {
        assert!(!mountains.iter().any(|m| m == absent), "{absent} bundled");
    }

    let dir = tempdir();
    let out = bundle_source(
        dir.path(),
        "logs",
        "import logging, random, sys\n\
         logging.basicConfig(stream=sys.stdout, format='%(message)s')\n\
         logging.warning('n=%d', len(random.sample(range(10), 3)))\n",
        &python,
    );
    assert!(bundled_modules(&out).iter().any(|m| m == "logging"));
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "logs.py in the empty root");
    assert_eq!(stdout(&o), "n=3\n");
}

/// Imports under a test of the platform that Linux decides (`if sys.platform == "win32":`) are
/// not followed, and an optional import of a stdlib module that only some of its functions need
/// (shutil's lzma and bz2, for archives) comes only when the app names one of them.
#[test]
fn analysis_skips_other_platforms_and_unused_archive_formats() {
    let python = default_python();
    let dir = tempdir();
    std::fs::write(
        dir.path().join("terminal.py"),
        "import os, shutil, sys\n\
         if sys.platform.startswith('win') and os.environ.get('X'):\n    import ctypes\n\
         if os.name == 'nt':\n    import winreg\nelse:\n    import fcntl\n\
         if not sys.platform.startswith(('linux', 'freebsd')):\n    import xml.dom.minidom\n\
         def columns():\n    return shutil.get_terminal_size((80, 24)).columns\n",
    )
    .unwrap();
    let out = bundle_source(
        dir.path(),
        "cols",
        "import terminal\nprint(terminal.columns())\n",
        &python,
    );
    let got = bundled_modules(&out);
    assert!(got.iter().any(|m| m == "fcntl"), "fcntl missing: {got:?}");
    for absent in [
        "ctypes",
        "_ctypes",
        "xml.dom.minidom",
        "lzma",
        "bz2",
        "_lzma",
    ] {
        assert!(!got.iter().any(|m| m == absent), "{absent} bundled");
    }
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "cols.py in the empty root");
    assert_eq!(stdout(&o), "80\n");

    // The same module, used to write a .tar.xz: lzma comes, and works.
    let out = bundle_source(
        dir.path(),
        "pack",
        "import io, os, shutil, tarfile, tempfile, terminal\n\
         d = tempfile.mkdtemp()\n\
         open(os.path.join(d, 'f'), 'w').write('x' * 1000)\n\
         path = shutil.make_archive(os.path.join(d, 'a'), 'xztar', d, 'f')\n\
         print(os.path.basename(path), tarfile.open(path).getnames())\n",
        &python,
    );
    let got = bundled_modules(&out);
    for present in ["lzma", "_lzma", "bz2"] {
        assert!(got.iter().any(|m| m == present), "{present} missing");
    }
    let o = std::process::Command::new(&out)
        .env("PYSHRINK_EXTRACT_DIR", dir.path().join("x"))
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert_code(&o, 0, "pack.py");
    assert_eq!(stdout(&o), "a.tar.xz ['f']\n");
}

/// platform's plistlib (macOS only) and warnings' tracemalloc (for apps that trace) stay out of an
/// app that imports both modules itself, which then work; naming `mac_ver` brings plistlib.
#[test]
fn analysis_leaves_out_macos_plist_and_unstarted_tracemalloc() {
    let python = default_python();
    let dir = tempdir();
    let out = bundle_source(
        dir.path(),
        "host",
        "import platform, warnings\n\
         print(platform.system(), platform.machine() != '')\n\
         warnings.simplefilter('always')\n\
         warnings.warn('unclosed thing', ResourceWarning, source=object())\n",
        &python,
    );
    let got = bundled_modules(&out);
    for present in ["platform", "warnings"] {
        assert!(got.iter().any(|m| m == present), "{present} missing");
    }
    for absent in ["plistlib", "pyexpat", "xml.parsers.expat", "tracemalloc"] {
        assert!(!got.iter().any(|m| m == absent), "{absent} bundled");
    }
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "host.py in the empty root");
    assert_eq!(stdout(&o), "Linux True\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ResourceWarning: unclosed thing"), "{err}");

    let out = bundle_source(
        dir.path(),
        "mac",
        "import platform\nprint(platform.mac_ver()[0] == '')\n",
        &python,
    );
    assert!(bundled_modules(&out).iter().any(|m| m == "plistlib"));
    let o = Root::new(&out).run(&[]);
    assert_code(&o, 0, "mac.py in the empty root");
    assert_eq!(stdout(&o), "True\n");
}

/// The stdlib zip's own importer serves stdlib modules exactly as CPython's zipimporter would
/// (file, package path, code), with every interpreter, extracted and from memory; entries the
/// bundler never writes (compressed, with a source, a foreign magic number) get zipimporter's
/// own answer. importlib.metadata finds a distribution in another zip without reading the
/// stdlib zip.
#[test]
fn stdlib_zip_modules_load_as_zipimport_loads_them() {
    let app = repo().join("tests/fixtures/stdlib_zip/app.py");
    let expected = "served: email.message json json.decoder urllib.parse xml.etree.ElementTree\n\
                    json submodules: decoder encoder scanner\n\
                    checked over 10 modules\n\
                    odd zip: stored=stored deflated=deflated stale=source foreign=foreign source \
                    broken=ZipImportError\n\
                    metadata: demo-dist 1.0, stdlib zip read 0 times\n\
                    problems: []\n";
    for (name, python) in interpreters() {
        eprintln!("stdlib zip importer with {name}");
        let root = Root::new(&bundle(&[app.to_str().unwrap()], python));
        root.assert_prints_in_both_runtimes(expected, name);
    }
}

/// Development tools that the stdlib imports only for its self-tests and debugger hooks come whole
/// when the app imports them, or a stdlib module imports one as it loads: a unittest case (with
/// `unittest.mock`) and a doctest run in the bundle as they do with `python3 app.py`, and
/// xmlrpc.server finds pydoc. Every interpreter, both runtimes.
#[test]
fn development_tools_the_app_imports_come_with_what_they_import() {
    let app = repo().join("tests/fixtures/dev_tools/app.py");
    for (name, python) in interpreters() {
        eprintln!("unittest and doctest with {name}");
        let expected = python_prints(python, &app, name);
        assert!(
            expected.contains("unittest: 2 run, 0 failed\n")
                && expected.contains("attempted=1)")
                && expected.contains("pydoc's HTMLDoc\n"),
            "{name}: {expected}"
        );
        let bundled = bundle(&[app.to_str().unwrap()], python);
        assert_prints_on_host_in_both_runtimes(&bundled, &[], &expected, name);
    }
}

/// `--exclude-module` keeps a module out even when the analysis would add it on its own (the idna
/// codec's stringprep and unicodedata, for an app with sockets), and an excluded C module's
/// pure-Python fallback comes in its place (decimal's). `--include-module` brings a module that
/// only a computed import names, and with `--stdlib all` an excluded package stays out whole. The
/// app sees each as `import` would: present or absent.
#[test]
fn excluded_and_included_modules() {
    let app = repo().join("tests/fixtures/exclude/app.py");
    let app = app.to_str().unwrap();
    let report = |stringprep: &str, unicodedata: &str, minidom: &str, decimal: &str| {
        format!(
            "socket True\nstringprep {stringprep}\nunicodedata {unicodedata}\n\
             xml.dom.minidom {minidom}\ndecimal 2.1 {decimal}\n"
        )
    };
    let run = |args: &[&str], python: &Path, what: &str| {
        let o = Root::new(&bundle(args, python)).run(&[]);
        assert_code(&o, 0, what);
        stdout(&o)
    };
    for (name, python) in interpreters() {
        eprintln!("--exclude-module and --include-module with {name}");
        // Debian's interpreter has unicodedata built in: no bundle can leave that out.
        let builtin = python_says(
            python,
            "import sys; print('unicodedata' in sys.builtin_module_names)",
        );
        let unicodedata_left_out = if builtin == "True" {
            "present"
        } else {
            "absent"
        };
        assert_eq!(
            run(&[app], python, name),
            report("present", "present", "absent", "C"),
            "{name}, default"
        );
        let args = [
            app,
            "--exclude-module",
            "stringprep",
            "--exclude-module",
            "unicodedata",
            "--exclude-module",
            "_decimal",
            "--include-module",
            "xml.dom.minidom",
        ];
        assert_eq!(
            run(&args, python, name),
            report("absent", unicodedata_left_out, "present", "Python"),
            "{name}, excluded and included"
        );
    }
    let python = default_python();
    let args = [
        app,
        "--stdlib",
        "all",
        "--exclude-module",
        "xml",
        "--exclude-module",
        "stringprep",
    ];
    assert_eq!(
        run(&args, &python, "--stdlib all"),
        report("absent", "present", "absent", "C")
    );
}

/// Excluding a module that bundled code imports unconditionally is reported at build time, with
/// the modules that will fail to load; an exclusion that only optional imports reach is not, and
/// no excluded module is reported as an import found nowhere. The bundle fails as the warning
/// says.
#[test]
fn excluding_a_module_that_bundled_code_needs_is_reported() {
    let dir = tempdir();
    let app = dir.path().join("app.py");
    std::fs::write(
        &app,
        "import decimal\nimport socket\nif __name__ == '__main__':\n    import json.decoder\n    \
         print(decimal.Decimal(1), json.decoder.JSONDecoder().decode('[1]'), socket.AF_INET)\n",
    )
    .unwrap();
    // The app's main block imports json (and json.decoder, then found nowhere), socket imports
    // selectors; decimal imports _decimal in a guarded `try`, and stringprep is the planner's own
    // addition for the idna codec.
    let excluded = ["json", "selectors", "_decimal", "stringprep"];
    for (name, python) in interpreters() {
        eprintln!("--exclude-module of needed modules with {name}");
        let out = dir.path().join(name);
        let o = pyshrink()
            .args(["bundle", "--compression-level", "3", "--python"])
            .arg(python)
            .arg(&app)
            .arg("-o")
            .arg(&out)
            .args(excluded.iter().flat_map(|m| ["--exclude-module", m]))
            .output()
            .unwrap();
        assert_code(&o, 0, name);
        let not_found = stderr(&o)
            .lines()
            .find(|l| l.contains("imports not found"))
            .map(String::from)
            .unwrap_or_default();
        assert!(
            !excluded.iter().any(|m| not_found.contains(m)),
            "{name}: an excluded module is reported as not found: {not_found}"
        );
        let warned: Vec<String> = stderr(&o)
            .lines()
            .filter(|l| l.contains("will fail to load"))
            .map(String::from)
            .collect();
        assert_eq!(
            warned,
            [
                "warning: --exclude-module json: the app imports it unconditionally and will \
                 fail to load in the bundle; drop the exclusion",
                "warning: --exclude-module selectors: socket imports it unconditionally and will \
                 fail to load in the bundle; drop the exclusion, or exclude socket too",
            ],
            "{name}"
        );
        let run = Root::new(&out).run(&[]);
        assert_ne!(run.status.code(), Some(0), "{name}");
        assert!(
            stderr(&run).contains("No module named 'selectors'"),
            "{name}: {}",
            stderr(&run)
        );
    }
}

/// What the stdlib's C modules import as they load (`_decimal` numbers, `_elementtree` copy) is
/// bundled with them: the app runs as `python3 app.py` does, with the C implementations, in both
/// runtimes.
#[test]
fn imports_made_by_stdlib_c_modules_are_bundled() {
    let app = repo().join("tests/fixtures/c_imports/app.py");
    let expected = "decimal 2.1 True\npickle {'a': [1, 2]} _pickle\netree 1 True\n";
    for (name, python) in interpreters() {
        eprintln!("stdlib C modules' imports with {name}");
        let root = Root::new(&bundle(&[app.to_str().unwrap()], python));
        root.assert_prints_in_both_runtimes(expected, name);
    }
}

/// `platform.architecture()` of the interpreter is what `file` says of the launcher, given without
/// running `file`: a `file` on PATH that claims 32 bits is asked about other files only, and an
/// empty root, which has no `file`, gets the same answer. Every interpreter, both runtimes.
#[test]
fn platform_architecture_of_the_interpreter_runs_no_file_command() {
    let app = repo().join("tests/fixtures/architecture/app.py");
    let fake = tempdir();
    let file = fake.path().join("file");
    write_executable(
        &file,
        "#!/bin/sh\necho 'ELF 32-bit LSB executable, Intel 80386'\n",
    );
    let path = format!("{}:/usr/bin:/bin", fake.path().display());
    let asked = "own ('32bit', 'ELF')\nother ('32bit', 'ELF')\n";
    let on_host = "own ('64bit', 'ELF')\nother ('32bit', 'ELF')\n";
    let in_root = "own ('64bit', 'ELF')\nother ('64bit', '')\n";
    for (name, python) in interpreters() {
        eprintln!("platform.architecture with {name}");
        let direct = Command::new(python)
            .arg(&app)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            stdout(&direct),
            asked,
            "{name}: python3 app.py asks the fake `file`"
        );
        let bundled = bundle(&[app.to_str().unwrap()], python);
        let real = Command::new("file").arg("-b").arg(&bundled).output();
        if let Ok(real) = real {
            let text = stdout(&real);
            assert!(
                text.starts_with("ELF 64-bit LSB") && text.contains("executable"),
                "{name}: file says {text}"
            );
        }
        assert_prints_on_host_in_both_runtimes(
            &bundled,
            &[("PATH", &path)],
            on_host,
            &format!("{name}, fake `file` on PATH"),
        );
        Root::new(&bundled).assert_prints_in_both_runtimes(in_root, &format!("{name}, empty root"));
    }
}

/// Stdlib modules whose import has no effect outside them (tempfile, csv, email, zipfile, ssl,
/// shutil, decimal...) run their code at their first use in a bundle of Python 3.10 or newer, not
/// at their import. The app sees what `python3 app.py` shows: the first use from eight threads at
/// once, `from ... import`, submodules, `dir()` and `importlib.reload`, in both runtimes; only the
/// lines saying whether the module's code ran before its first use differ. An import that can
/// fail in the bundle (csv with its C part excluded) is not put off: the app's `except ImportError`
/// gets it, as with `python3`.
#[test]
fn stdlib_modules_run_at_first_use_and_behave_as_imported() {
    let dir = repo().join("tests/fixtures/deferred");
    let app = dir.join("app.py");
    let optional = dir.join("optional.py");
    for (name, python) in interpreters() {
        // Debian's interpreter has _csv built in: no bundle can leave that out.
        let csv_built_in = python_says(
            python,
            "import sys; print('_csv' in sys.builtin_module_names)",
        ) == "True";
        let deferred =
            python_says(python, "import sys; print(sys.version_info >= (3, 10))") == "True";
        eprintln!("first use with {name} (deferred: {deferred})");
        let mut expected = python_prints(python, &app, name);
        assert!(
            expected.contains("tempfile ran before use: True\n")
                && expected.contains("csv ran before use: True\n"),
            "{name}: {expected}"
        );
        if deferred {
            expected = expected.replace("ran before use: True", "ran before use: False");
        }
        let bundled = bundle(&[app.to_str().unwrap()], python);
        assert_prints_on_host_in_both_runtimes(&bundled, &[], &expected, name);

        let bundled = bundle(
            &[optional.to_str().unwrap(), "--exclude-module", "_csv"],
            python,
        );
        let extract = tempdir();
        let o = Command::new(&bundled)
            .env("PYSHRINK_EXTRACT_DIR", extract.path())
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("{name}, optional.py"));
        let expected = if csv_built_in {
            "csv: imported 1\n"
        } else {
            "csv: ImportError for _csv\n"
        };
        assert_eq!(stdout(&o), expected, "{name}, csv's C part excluded");
    }
}

/// An import's objects skip the young generations of the cyclic garbage collector in a bundle:
/// importing a module that makes 60,000 objects runs no collection of the youngest generation,
/// and leaves what it made in the oldest. Everything else the app sees of the collector is what
/// `python3 app.py` shows: the thresholds, a cycle dropped during the import collected by
/// `gc.collect()`, thresholds the app sets during an import, objects it froze, the collector
/// switched off, and no frame of pyshrink's in the traceback of a failed import. Every
/// interpreter, both runtimes.
#[test]
fn imports_leave_their_objects_to_the_oldest_generation() {
    let app = repo().join("tests/fixtures/import_gc/app.py");
    for (name, python) in interpreters() {
        eprintln!("collector and imports with {name}");
        let direct = python_prints(python, &app, name);
        let young = "collections while importing: some\n";
        let old = "made last, now in the oldest generation: False\n";
        assert!(
            direct.contains(young) && direct.contains(old),
            "{name}: {direct}"
        );
        let expected = direct
            .replace(young, "collections while importing: none\n")
            .replace(old, "made last, now in the oldest generation: True\n");
        let bundled = bundle(&[app.to_str().unwrap()], python);
        assert_prints_on_host_in_both_runtimes(&bundled, &[], &expected, name);
    }
}

/// Literal regular expressions come from the table the bundler compiled with the same interpreter:
/// what the app sees of them (flags, groups, matches, warnings) is what `python3 app.py` shows,
/// and each table entry equals the interpreter's own compile of it, in both runtimes.
#[test]
fn literal_regexes_are_compiled_ahead_and_equal_the_interpreters_own() {
    let app = repo().join("tests/fixtures/regex_table/app.py");
    for (name, python) in interpreters() {
        eprintln!("regex table with {name}");
        let direct = python_prints(python, &app, name);
        let expected = format!(
            "{}from the table: data date digits word\n\
             table entries equal to the compiler's own: True, built without parsing: True \
             (over 5)\n",
            direct
        );
        assert!(
            direct.contains("warnings [('FutureWarning', 'Possible nested set"),
            "{name}: {direct}"
        );
        let root = Root::new(&bundle(&[app.to_str().unwrap()], python));
        root.assert_prints_in_both_runtimes(&expected, name);
    }
}

/// On a first run from disk, and on every run from memory, extension modules and the libraries
/// only they need are unpacked while the app runs. What the app sees is what `python3 app.py`
/// shows, in both runtimes. A bundled library read by its path as the app's first act (the last
/// file the launcher unpacks) has all its bytes, in both runtimes. The first run leaves a
/// complete extraction even where the sandbox ends the launcher's process with the app. Where the
/// last file cannot be written (a full disk), the app stops with the launcher's I/O status at the
/// read, before it prints anything. Every interpreter.
#[test]
fn extension_modules_unpacked_while_the_app_runs_are_whole_when_it_uses_them() {
    let app = repo().join("tests/fixtures/tail/app.py");
    let mut with_tail = 0;
    for (name, python) in interpreters() {
        eprintln!("tail with {name}");
        let expected = python_prints(python, &app, name);
        let bundled = bundle(&[app.to_str().unwrap()], python);
        let root = Root::new(&bundled);
        root.assert_prints_in_both_runtimes(&expected, name);
        let ext = root
            .path()
            .join("tmp/pyshrink-0")
            .join(&root.extractions()[0]);
        assert!(
            ext.join("pyshrink.manifest").is_file(),
            "{name}: incomplete"
        );
        let Ok(list) = std::fs::read_to_string(ext.join(pyshrink_stub::TAIL_LIST_FILE)) else {
            eprintln!("{name}: no tail");
            continue;
        };
        with_tail += 1;
        let last = list.lines().last().expect("a tail file");
        let bytes = std::fs::read(ext.join(last)).unwrap();
        let sha = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();

        let fresh = Root::new(&bundled);
        let o = fresh.run(&[last]);
        assert_code(&o, 0, &format!("{name}, reading {last}"));
        let read = format!("read {last} {} {hex}\n", bytes.len());
        assert_eq!(stdout(&o), format!("{read}{expected}"), "{name}");
        // From memory (a read-only root), by the same path under sys.base_prefix.
        let o = Root::new(&bundled)
            .command(false, &[], &[last])
            .output()
            .unwrap();
        assert_code(&o, 0, &format!("{name}, reading {last} from memory"));
        assert_eq!(stdout(&o), format!("{read}{expected}"), "{name}, memory");

        // The disk of the first run, less 64 KiB: the last file of the tail does not fit.
        let used = disk_used(&fresh.path().join("tmp"));
        let size = (used - 16 * 4096).to_string();
        let full = Root::new(&bundled);
        let o = full
            .command(true, &["--size", &size, "--tmpfs", "/tmp"], &[last])
            .output()
            .unwrap();
        assert_code(
            &o,
            pyshrink_stub::exit::IO,
            &format!("{name}, tail on a full disk"),
        );
        assert_eq!(stdout(&o), "", "{name}: the app went on");
        let err = stderr(&o);
        assert!(
            err.contains("no space left on device") && err.contains("not completely unpacked"),
            "{name}: {err}"
        );
    }
    assert!(with_tail > 0, "no interpreter's bundle had a tail");
}

/// A child forked before the tail is in, which reads some of the launcher's news of it, and its
/// parent after it both import extension modules of the tail, in both runtimes. Every interpreter.
#[test]
fn a_forked_child_and_its_parent_both_get_the_tail() {
    let app = repo().join("tests/fixtures/tail/fork.py");
    for (name, python) in interpreters() {
        eprintln!("forked tail with {name}");
        let expected = python_prints(python, &app, name);
        assert_eq!(expected.lines().count(), 2, "{name}: {expected}");
        Root::new(&bundle(&[app.to_str().unwrap()], python))
            .assert_prints_in_both_runtimes(&expected, name);
    }
}

/// `sys.executable` started by the app of a first run while the tail is still coming in waits for
/// the extraction to be complete, then imports extension modules of the tail, in both runtimes.
/// Every interpreter.
#[test]
fn sys_executable_started_during_the_tail_waits_for_it() {
    let app = repo().join("tests/fixtures/tail/child.py");
    for (name, python) in interpreters() {
        eprintln!("sys.executable during the tail with {name}");
        let expected = python_prints(python, &app, name);
        assert!(expected.starts_with("child: LATIN"), "{name}: {expected}");
        Root::new(&bundle(&[app.to_str().unwrap()], python))
            .assert_prints_in_both_runtimes(&expected, name);
    }
}

/// An app too small to bundle what the start-up helper imports (`types`) still gets a tail: it
/// waits for all of it before its first line, runs as `python3 app.py` does, and its first run
/// leaves a complete extraction.
#[test]
fn an_app_without_the_start_up_helper_waits_for_the_whole_tail() {
    let python = default_python();
    let dir = tempdir();
    let source = "import unicodedata\nprint(unicodedata.name('\\u00e9'))\n";
    let out = bundle_source(dir.path(), "names", source, &python);
    let modules = bundled_modules(&out);
    assert!(!modules.iter().any(|m| m == "types"), "{modules:?}");
    let root = Root::new(&out);
    let o = root.run(&[]);
    assert_code(&o, 0, "first run");
    assert_eq!(stdout(&o), "LATIN SMALL LETTER E WITH ACUTE\n");
    let ext = root
        .path()
        .join("tmp/pyshrink-0")
        .join(&root.extractions()[0]);
    assert!(ext.join(pyshrink_stub::TAIL_LIST_FILE).is_file(), "no tail");
    assert!(ext.join("pyshrink.manifest").is_file(), "incomplete");
}

/// The start-up helper's `follow`, with a process standing in for the launcher that unpacks a late
/// frame slowly (`tests/fixtures/late/follow.py`): it returns once the entries the app waits for
/// are in, and from then on listing a directory, importing from it (a package whose `__init__`
/// comes after the directory's other modules too) and opening a file wait for what they look
/// for, while the rest is still being written. Every interpreter.
#[test]
fn the_app_waits_for_a_late_module_only_where_it_looks_for_it() {
    let dir = tempdir();
    let helper = dir.path().join("helper.py");
    std::fs::write(&helper, pyshrink::python::zipimport_fast()).unwrap();
    for (name, python) in interpreters() {
        eprintln!("follow with {name}");
        let root = dir.path().join(format!("root-{name}"));
        std::fs::create_dir(&root).unwrap();
        let o = Command::new(python)
            .arg("-B")
            .arg(repo().join("tests/fixtures/late/follow.py"))
            .args([&helper, &root])
            .output()
            .unwrap();
        assert_code(&o, 0, name);
        assert_eq!(
            stdout(&o),
            "started: True with the data file: True\n\
             first/ lists 25 modules\n\
             imported 25\n\
             the last entry still to come: True\n\
             first.sub is __init__\n\
             second/m24.py has 2001 lines\n",
            "{name}"
        );
    }
}

/// On a first run from disk the app starts before the bytecode of the late frame is in: it comes
/// directory by directory, in the order the bundler's analysis reached the modules. A package of
/// 80 modules that lists its own directory as it is imported (`pkgutil`, `os.listdir`) finds all
/// of them and imports each, as `python3 app.py` does, in both runtimes.
/// Every interpreter.
#[test]
fn modules_still_coming_when_the_app_starts_are_all_there_when_it_looks() {
    let dir = tempdir();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let names: Vec<String> = (0..80).map(|i| format!("p{i:02}")).collect();
    std::fs::write(
        plugins.join("__init__.py"),
        format!(
            "import os, pkgutil\n\
             NAMES = sorted(m.name for m in pkgutil.iter_modules(__path__))\n\
             HERE = os.path.dirname(__file__)\n\
             FILES = sorted({{n.split('.')[0] for n in os.listdir(HERE)}} - {{'__init__'}})\n\
             from . import {}\n\
             TOTAL = sum(globals()[n].VALUE for n in NAMES)\n",
            names.join(", ")
        ),
    )
    .unwrap();
    for (i, name) in names.iter().enumerate() {
        let words: Vec<String> = (0..200).map(|w| format!("w{}", w * (i + 7))).collect();
        std::fs::write(
            plugins.join(format!("{name}.py")),
            format!(
                "VALUE = {i}\nWORDS = {:?}\n\ndef f(x):\n    return x + VALUE\n",
                words
            ),
        )
        .unwrap();
    }
    let app = dir.path().join("app.py");
    std::fs::write(
        &app,
        "import plugins\n\
         print(len(plugins.NAMES), len(plugins.FILES), plugins.TOTAL)\n",
    )
    .unwrap();
    for (name, python) in interpreters() {
        eprintln!("late modules with {name}");
        let expected = python_prints(python, &app, name);
        assert_eq!(expected, "80 80 3160\n", "{name}");
        let root = Root::new(&bundle(&[app.to_str().unwrap()], python));
        root.assert_prints_in_both_runtimes(&expected, name);
        let ext = root
            .path()
            .join("tmp/pyshrink-0")
            .join(&root.extractions()[0]);
        let list = std::fs::read_to_string(ext.join(pyshrink_stub::LATE_LIST_FILE))
            .unwrap_or_else(|e| panic!("{name}: no late list: {e}"));
        let mut lines = list.lines();
        let waited: usize = lines.next().unwrap().parse().unwrap();
        let streamed: Vec<&str> = lines.skip(waited).collect();
        assert!(streamed.contains(&"app/plugins/p79.pyc"), "{name}: {list}");
    }
}
