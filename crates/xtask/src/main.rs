//! The project's own tasks, run as `cargo xtask TASK` (the alias is in `.cargo/config.toml`).
//!
//! * `cargo xtask test [ARGS]`: installs what the tests need (Debian's Prometheus,
//!   Alertmanager, HAProxy, PostgreSQL and Chromium, the OpenFeature clients of
//!   `tests/conformance`, schemathesis in `tests/schema`, the browser test's packages in
//!   `tests/ui`), checks formatting and the crate layering, then runs
//!   `cargo test --workspace --locked ARGS`. It is the README's test command and what
//!   `.ci/run` runs.
//! * `cargo xtask deps`: only the installs.
//! * `cargo xtask layering`: only the layering check.
//! * `cargo xtask openapi`: writes `docs/openapi.json` from the API's wire types.
//!
//! Exit status: 0 when everything passed, 1 when a step failed (the step is named), 2 on a
//! bad command line.

mod layering;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask: the project's own tasks

Usage: cargo xtask <TASK> [ARGS]

Tasks:
  test [ARGS]   install what the tests need, check formatting and layering, run
                `cargo test --workspace --locked ARGS`
  deps          install what the tests need (Debian packages with apt-get, the
                OpenFeature clients in tests/conformance, schemathesis in
                tests/schema, the browser test's packages in tests/ui), nothing
                else
  layering      check that the crates depend on each other as ARCHITECTURE.md says
  openapi       write docs/openapi.json, generated from the wire types (crates/api)

Examples:
  cargo xtask test                      # everything CI runs
  cargo xtask test -- trust::           # the same setup, then only the tests matching trust::
  cargo xtask deps                      # set up a fresh machine for `cargo test`
  cargo xtask openapi                   # after changing an API type or operation

Exit status: 0 passed, 1 a step failed (it is named), 2 bad command line.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    let result = match args.first().map(String::as_str) {
        Some("test") => deps(&root).and_then(|()| test(&root, &args[1..])),
        Some("deps") => deps(&root),
        Some("layering") => layering::check_workspace(&root),
        Some("openapi") => openapi(&root),
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown task {other:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: two levels above this crate's manifest.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("crates/xtask is two levels deep").to_path_buf()
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

/// Runs a command to completion, inheriting stdout and stderr; an error names it.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("could not run {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed ({status})")) }
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// What the tests start or drive, installed when missing. The tests themselves install
/// nothing: a test whose server is missing fails with the command that installs it.
fn deps(root: &Path) -> Result<(), String> {
    let mut packages = Vec::new();
    for (program, package) in
        [("prometheus", "prometheus"), ("prometheus-alertmanager", "prometheus-alertmanager"), ("haproxy", "haproxy")]
    {
        if !found(program) {
            packages.push(package);
        }
    }
    // The hub's browser test drives Debian's Chromium (never a browser an npm package downloads).
    if !Path::new("/usr/bin/chromium").exists() {
        packages.push("chromium");
    }
    // The store suite's PostgreSQL: Debian keeps its server programs off PATH.
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).any(|v| v.path().join("bin/initdb").exists()))
        .unwrap_or(false);
    if !postgres {
        packages.push("postgresql");
    }
    if !(found("node") && found("npm")) {
        packages.extend(["nodejs", "npm"]);
    }
    if !found("python3") {
        packages.extend(["python3", "python3-venv"]);
    }
    if !packages.is_empty() {
        step(&format!("installing Debian packages: {}", packages.join(" ")));
        apt_get(&packages)?;
    }
    let conformance = root.join("tests/conformance");
    step("installing the OpenFeature conformance clients (pip, npm ci)");
    pip_venv(&conformance, "the OpenFeature conformance clients")?;
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&conformance)
        .stdout(std::process::Stdio::null()))?;
    step("installing schemathesis for the API's schema test (pip in tests/schema)");
    pip_venv(&root.join("tests/schema"), "schemathesis")?;
    step("installing the hub's browser test (npm ci in tests/ui: playwright-core, axe-core)");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(root.join("tests/ui"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdout(std::process::Stdio::null()))?;
    Ok(())
}

/// `dir/requirements.txt` installed into the venv `dir/.venv`, made first when it is missing or
/// broken.
fn pip_venv(dir: &Path, what: &str) -> Result<(), String> {
    let venv = dir.join(".venv");
    let works = Command::new(venv.join("bin/python")).args(["-c", ""]).status().is_ok_and(|s| s.success());
    if !works {
        step(&format!("creating the Python venv of {what}"));
        let _ = std::fs::remove_dir_all(&venv);
        if run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).is_err() {
            // Debian's python3 without ensurepip: the venv module lives in python3-venv.
            apt_get(&["python3-venv"])?;
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(dir.join("requirements.txt")))
}

/// `apt-get install` as root, or through sudo; without either, says what to install.
fn apt_get(packages: &[&str]) -> Result<(), String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let sudo: &[&str] = if root { &[] } else { &["sudo"] };
    if !root && !found("sudo") {
        return Err(format!(
            "the tests need these Debian packages and this user cannot install them: {}\n(as root: apt-get install {})",
            packages.join(" "),
            packages.join(" ")
        ));
    }
    let (program, prefix) = match sudo.first() {
        Some(s) => (*s, vec!["apt-get"]),
        None => ("apt-get", vec![]),
    };
    run(Command::new(program).args(&prefix).args(["update", "-q"]))?;
    run(Command::new(program)
        .args(&prefix)
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The committed OpenAPI document, regenerated (a test in the server fails when it is stale).
fn openapi(root: &Path) -> Result<(), String> {
    let path = root.join("docs/openapi.json");
    std::fs::write(&path, ringfence_api::openapi::document_json())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    step(&format!("wrote {}", path.display()));
    Ok(())
}

fn test(root: &Path, args: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("checking formatting (cargo fmt --check)");
    run(Command::new(&cargo).args(["fmt", "--all", "--", "--check"]).current_dir(root))?;
    step("checking the crate layering");
    layering::check_workspace(root)?;
    step("running the tests (cargo test --workspace --locked)");
    run(Command::new(&cargo).args(["test", "--workspace", "--locked"]).args(args).current_dir(root))
}
