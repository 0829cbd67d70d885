//! The CI examples of docs/pipelines.md: the GitHub Actions workflow and the Azure Pipelines
//! YAML in examples/ci both run one script, examples/ci/deploy.sh. These tests read the command
//! and the environment each pipeline gives it out of the YAML files, and run that command, from
//! the repository's top as a pipeline does, against a real server with a `deployer` token (the
//! pipeline's service principal): a healthy version completes (exit 0) and a re-run has nothing
//! to do, a failing one fails the step (exit 10), a rollout waiting for an approval at the
//! timeout too (11: the deployer cannot approve), and a token that may not deploy is refused
//! (exit 7) with nothing registered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ringfence_api::{RolloutKind, RolloutStatus};

use crate::harness::{BIN, Load, Out, Server, Spec, by_version};

const GITHUB: &str = "examples/ci/github-actions.yml";
const AZURE: &str = "examples/ci/azure-pipelines.yml";
const SCRIPT: &str = "examples/ci/deploy.sh";

/// The repository's top, where a pipeline's checkout is.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The YAML's lines that carry something (no blank or comment lines).
fn content_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect()
}

/// `key: value` of a mapping line (a list item's `- ` removed); the value unquoted.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").unwrap_or(t);
    let (k, v) = t.split_once(':')?;
    let v = v.trim();
    let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    Some((k.trim(), v))
}

/// The lines nested under the key `path[0]`, then `path[1]` below it, and so on (a plain
/// indentation walk: enough for these files, with no YAML crate).
fn under<'a>(text: &'a str, path: &[&str]) -> Vec<&'a str> {
    let mut lines = content_lines(text);
    for key in path {
        let at = lines
            .iter()
            .position(|l| key_value(l).is_some_and(|(k, _)| k == *key))
            .unwrap_or_else(|| panic!("no `{key}:` on the way to {path:?}"));
        let depth = indent(lines[at]);
        lines = lines[at + 1..].iter().copied().take_while(|l| indent(l) > depth).collect();
    }
    lines
}

/// The mapping directly under `path`: its keys and values.
fn mapping(text: &str, path: &[&str]) -> BTreeMap<String, String> {
    let lines = under(text, path);
    let Some(first) = lines.first() else { return BTreeMap::new() };
    let depth = indent(first);
    lines
        .iter()
        .filter(|l| indent(l) == depth)
        .filter_map(|l| key_value(l))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pipeline step that runs the script: its command and its `env:`.
struct Step {
    command: String,
    env: BTreeMap<String, String>,
}

/// Finds the one step of a pipeline whose command (`run:` or `bash:`) names the script.
fn script_step(file: &str) -> Step {
    let text = read(file);
    let lines = content_lines(&text);
    let runs: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| key_value(l).is_some_and(|(k, v)| matches!(k, "run" | "bash") && v.contains(SCRIPT)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(runs.len(), 1, "{file}: one step runs {SCRIPT}, found {}", runs.len());
    let at = runs[0];
    let command = key_value(lines[at]).expect("a command").1.to_string();
    // The step is the list item holding that line: the line itself or the nearest `- ` above.
    let start = (0..=at)
        .rev()
        .find(|&i| lines[i].trim_start().starts_with("- ") && indent(lines[i]) <= indent(lines[at]))
        .expect("the step's list item");
    let item = indent(lines[start]);
    let end = (start + 1..lines.len()).find(|&i| indent(lines[i]) <= item).unwrap_or(lines.len());
    let step = lines[start..end].join("\n");
    Step { command, env: mapping(&step, &["env"]) }
}

#[test]
fn both_pipelines_run_the_script_with_the_version_parameter_and_the_secret_token() {
    let github = read(GITHUB);
    let azure = read(AZURE);
    let script = read(SCRIPT);

    // The version is a parameter each pipeline asks for.
    let version = mapping(&github, &["on", "workflow_dispatch", "inputs", "version"]);
    assert_eq!(version.get("required").map(String::as_str), Some("true"), "{GITHUB}: inputs.version: {version:?}");
    assert_eq!(version.get("type").map(String::as_str), Some("string"), "{GITHUB}: inputs.version: {version:?}");
    let params: Vec<&str> = under(&azure, &["parameters"])
        .into_iter()
        .filter_map(|l| l.trim_start().strip_prefix("- name:").map(str::trim))
        .collect();
    assert!(params.contains(&"version"), "{AZURE}: parameters {params:?} lack `version`");
    // One deployment per workload at a time.
    let group = mapping(&github, &["concurrency"]);
    assert!(group.get("group").is_some_and(|g| g.contains("inputs.workload")), "{GITHUB}: concurrency {group:?}");
    assert_eq!(group.get("cancel-in-progress").map(String::as_str), Some("false"), "{GITHUB}: {group:?}");
    assert!(under(&azure, &["variables"]).iter().any(|l| l.trim() == "- group: ringfence"), "{AZURE}: variable group");

    let gh = script_step(GITHUB);
    let az = script_step(AZURE);
    for (file, step, version, token) in [
        (GITHUB, &gh, "${{ inputs.version }}", "${{ secrets.RINGFENCE_TOKEN }}"),
        (AZURE, &az, "${{ parameters.version }}", "$(RINGFENCE_TOKEN)"),
    ] {
        assert_eq!(step.command, format!("bash {SCRIPT}"), "{file}");
        assert_eq!(step.env.get("VERSION").map(String::as_str), Some(version), "{file}: env {:?}", step.env);
        assert_eq!(step.env.get("RINGFENCE_TOKEN").map(String::as_str), Some(token), "{file}: env {:?}", step.env);
        for required in ["RINGFENCE_SERVER", "RINGFENCE_TOKEN", "WORKLOAD", "VERSION", "ARTIFACT"] {
            assert!(step.env.contains_key(required), "{file}: the step does not set {required}: {:?}", step.env);
        }
        // Every variable a pipeline sets is one the script documents and reads (a misspelt one
        // would be ignored).
        for key in step.env.keys() {
            let documented = script.lines().any(|l| {
                l.strip_prefix("#   ").is_some_and(|rest| rest.split([' ', ',']).next() == Some(key.as_str()))
            });
            assert!(documented, "{file}: {key} is not among the inputs {SCRIPT} documents");
            let read = script.contains(&format!("${key}")) || script.contains(&format!("${{{key}"));
            assert!(read, "{file}: {SCRIPT} never reads {key}");
        }
    }
}

/// Runs the pipelines' command as they do: from the repository's top, with the environment a
/// pipeline step gives it (and nothing else of the test's), the ringfence under test first on
/// PATH. Its processes are in a group of their own, killed whole if it overruns.
async fn run_pipeline(command: String, server: &Server, token: String, env: Vec<(String, String)>) -> Out {
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let home = server.path("home");
    std::fs::create_dir_all(&home).expect("a home directory");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.args(["-c", &command])
        .current_dir(repo())
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        // The user's own token files and a local server's admin token are out of reach.
        .env("XDG_CONFIG_HOME", "/nonexistent/ringfence-it")
        .env("XDG_DATA_HOME", "/nonexistent/ringfence-it")
        .env("RINGFENCE_SERVER", server.url())
        .env("RINGFENCE_TOKEN", &token)
        .env("TIMEOUT", "45s")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().expect("run bash");
    let group = Pid::from_raw(child.id().expect("a pid") as i32);
    match tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("the pipeline's output");
            Out {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = killpg(group, Signal::SIGKILL);
            panic!("`{command}` did not finish within 120 s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_script_deploys_and_fails_the_step_unless_the_rollout_completes() {
    let command = script_step(GITHUB).command;
    assert_eq!(command, script_step(AZURE).command, "both pipelines run the same command");
    let server = Server::start().await;
    let w = "shop";
    // The router's breaker is kept out of the way, so the failing version is judged on its
    // error rate (as in bad_release.rs).
    let spec = Spec { lenient_breaker: true, ..Spec::new(w) };
    let file = server.path("shop.toml");
    std::fs::write(&file, spec.toml()).expect("write the spec");
    // The admin sets up the workload (what it executes is the admin's); the pipeline gets a
    // deployer token on it, and a viewer's token stands for one that may not deploy.
    let out = server.cli(&["apply", crate::harness::path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    let ci = server.token_with("ci-shop", &["deployer:shop"]).await;
    let viewer = server.token_with("vic", &["viewer"]).await;
    let pipeline = |token: &str, version: &str, extra: &[(&str, &str)]| {
        let artifact = format!("registry.example.com/{w}:{version}");
        let mut env: Vec<(String, String)> =
            vec![("WORKLOAD".into(), w.into()), ("VERSION".into(), version.into()), ("ARTIFACT".into(), artifact)];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        run_pipeline(command.clone(), &server, token.to_string(), env)
    };

    // A token that may not deploy: exit 7, nothing registered, nothing done in its name.
    let out = pipeline(&viewer, "v1", &[]).await;
    assert_eq!(out.code, 7, "a viewer's token must fail the step with 7:\n{out}");
    assert!(out.stderr.contains("may not"), "{out}");
    let list = server.cli(&["release", "list", w, "-o", "json"]).await;
    assert_eq!(list.stdout.trim(), "[]", "nothing was registered: {list}");
    let by_viewer: Vec<String> =
        server.all_events().await.iter().filter(|e| e.actor == "vic").map(|e| e.kind.type_name()).collect();
    assert!(by_viewer.is_empty(), "a refused pipeline changed the log: {by_viewer:?}");

    // The first version, then a healthy one under users' traffic: exit 0, completed, done by
    // the pipeline's token.
    let out = pipeline(&ci, "v1", &[("REASON", "first release")]).await;
    assert_eq!(out.code, 0, "first deploy:\n{out}\n{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = pipeline(&ci, "v2", &[("CONFIG", "GREETING=hello\n# a comment\n")]).await;
    assert_eq!(out.code, 0, "a healthy version must pass the step:\n{out}\n{}", server.diagnose(w).await);
    assert!(out.stdout.contains("completed: v2 is the stable version of shop"), "{out}");
    let s = server.status(w).await;
    let r = s.rollout.as_ref().expect("the rollout");
    assert_eq!((r.kind, r.status, r.release.as_str()), (RolloutKind::Deploy, RolloutStatus::Completed, "v2"), "{r:#?}");
    assert_eq!(s.stable.as_deref(), Some("v2"));
    let v2 = r.id.clone();
    let events = server.events(w).await;
    let started = events
        .iter()
        .find(|e| e.kind.type_name() == "rollout_started" && e.kind.rollout_id() == Some(v2.as_str()))
        .expect("the rollout's start");
    assert_eq!(started.actor, "ci-shop", "the pipeline's token is the actor: {started:?}");
    let shown = server.cli(&["release", "show", w, "v2"]).await;
    assert!(shown.stdout.contains("config    GREETING=hello"), "{shown}");

    // Run again (a re-run of the job): nothing to do, still a success.
    let out = pipeline(&ci, "v2", &[("CONFIG", "GREETING=hello")]).await;
    assert_eq!(out.code, 0, "a re-run of a passed deploy:\n{out}");
    assert!(out.stdout.contains("nothing to deploy"), "{out}");
    assert_eq!(server.status(w).await.rollout.map(|r| r.id), Some(v2.clone()), "no new rollout");

    // A version that fails under traffic: the rollout falls back and the step fails with 10.
    let out = pipeline(&ci, "v3", &[("CONFIG", "SAMPLE_ERROR_RATE=0.5")]).await;
    assert_eq!(out.code, 10, "a failing version must fail the step with 10:\n{out}\n{}", server.diagnose(w).await);
    assert!(out.stderr.contains("ended mitigated"), "{out}");
    assert!(out.stdout.contains("Decision: Fallback"), "the step's log says why: {out}");
    let s = server.status(w).await;
    let r = s.rollout.as_ref().expect("the rollout");
    assert_eq!((r.release.as_str(), r.status), ("v3", RolloutStatus::Mitigated), "{r:#?}");
    assert_eq!(s.stable.as_deref(), Some("v2"));

    // An admin puts an approval gate on the first phase: gates are governance, which a
    // pipeline may not change (its own spec without the gate is refused, 7). With the gate
    // in its spec, the pipeline's apply changes nothing; it cannot approve, so at the
    // pipeline's timeout the step fails with 11 and the rollout waits on the server.
    let gated =
        spec.toml().replacen("bake = \"1500ms\"\n", "bake = \"1500ms\"\ngates = [\"health\", \"approval\"]\n", 1);
    assert!(gated.contains("approval"), "{gated}");
    let gated_file = server.path("gated.toml");
    std::fs::write(&gated_file, gated).expect("write the gated spec");
    let spec_path = crate::harness::path_str(&gated_file).to_string();
    let out = server.cli(&["apply", spec_path.as_str()]).await;
    assert_eq!(out.code, 0, "the admin adds the gate:\n{out}");
    let plain_file = server.path("plain.toml");
    std::fs::write(&plain_file, spec.toml()).expect("write the spec");
    let out = pipeline(&ci, "v4", &[("SPEC", crate::harness::path_str(&plain_file)), ("TIMEOUT", "3s")]).await;
    assert_eq!(out.code, 7, "a pipeline may not remove an approval gate:\n{out}");
    // Approvals need to know who wrote the change (separation of duties): the pipeline says.
    let out = pipeline(&ci, "v4", &[("SPEC", spec_path.as_str()), ("TIMEOUT", "3s"), ("AUTHOR", "alice")]).await;
    assert_eq!(out.code, 11, "a rollout still going at the timeout must fail the step with 11:\n{out}");
    assert!(out.stdout.contains("shop unchanged"), "the pipeline applied its spec: {out}");
    assert!(out.stderr.contains("goes on on the server"), "{out}");
    let r = server.status(w).await.rollout.expect("the rollout");
    assert_eq!((r.release.as_str(), r.status, r.phase), ("v4", RolloutStatus::Progressing, 0), "{r:#?}");
    let refused = server.cli_as(&ci, &["promote", w]).await;
    assert_eq!(refused.code, 7, "a deployer cannot approve: {refused}");
    let out = server.cli(&["abort", w, "--reason", "the test is over"]).await;
    assert_eq!(out.code, 0, "{out}");

    let samples = load.finish().await;
    assert!(by_version(&samples).get("v3").is_some_and(|(n, _)| *n > 0), "v3 served nothing");
}
