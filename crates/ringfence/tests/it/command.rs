//! The command executor: the team's own hooks deploy, stop and check the instances. The
//! runnable example hooks of `examples/hooks/local` run the sample app as local processes; a
//! rollout through them is judged, promoted and fallen back exactly as one over the process
//! executor, and every way a hook can fail is a clear error that loses nothing.

use std::path::Path;

use ringfence_core::{Event, EventKind};

use crate::harness::{Load, Server, Spec, alive, path_str, rollout_id, wait_until};

/// A runnable example hook of `examples/hooks/<dir>`.
fn example(dir: &str, name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hooks").join(dir).join(name);
    p.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", p.display())).display().to_string()
}

fn example_hook(name: &str) -> String {
    example("local", name)
}

/// The harness's spec with the command executor: `hooks` is the `[executor.hooks]` table's body.
pub(crate) fn hooked_spec(spec: &Spec<'_>, state: &Path, hooks: &str) -> String {
    let text = spec.toml();
    let command_line = text.lines().find(|l| l.starts_with("command = ")).expect("a command line").to_string();
    text.replacen(
        &format!("{command_line}\n"),
        &format!("kind = \"command\"\nenv = {{ HOOK_STATE_DIR = \"{}\" }}\n", state.display()),
        1,
    )
    .replacen("\n[router]\n", &format!("\n[executor.hooks]\n{hooks}\n\n[router]\n"), 1)
}

pub(crate) fn example_hooks() -> String {
    format!(
        "deploy = [\"{}\"]\nstop = [\"{}\"]\nstatus = [\"{}\"]\ntimeout = \"20s\"\nstatus_every = \"200ms\"",
        example_hook("deploy.sh"),
        example_hook("stop.sh"),
        example_hook("status.sh")
    )
}

async fn apply(server: &Server, name: &str, text: &str) {
    let file = server.path(&format!("{name}.toml"));
    std::fs::write(&file, text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply:\n{out}\n--- spec\n{text}");
}

/// The pid of a replica the example hooks started (`cmd:local-<pid>@<endpoint>`).
fn local_pid(instance: &str) -> u32 {
    instance
        .strip_prefix("cmd:local-")
        .and_then(|r| r.split('@').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not an instance of the example hooks: {instance}"))
}

fn instances_of(events: &[Event], version: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaStarted { version: v, instance, .. } if v == version => Some(instance.clone()),
            _ => None,
        })
        .collect()
}

fn failures(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActionFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

fn hook_log(server: &Server, w: &str) -> String {
    std::fs::read_to_string(server.data_dir().join("logs").join(w).join("hooks.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_through_the_teams_hooks_is_promoted_and_a_bad_one_falls_back() {
    let server = Server::start().await;
    let w = "hooked";
    let state = server.path("hook-state");
    let mut spec = Spec::new(w);
    spec.replicas = 2;
    spec.lenient_breaker = true;
    apply(&server, w, &hooked_spec(&spec, &state, &example_hooks())).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    server.release(w, "v3", &["SAMPLE_ERROR_RATE=0.5"]).await;

    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy through the hooks:\n{out}\n{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!(s.replicas.len(), 2, "{s:#?}");
    for r in &s.replicas {
        assert!(r.instance.starts_with("cmd:local-"), "the deploy hook's own instance id: {r:?}");
        assert!(alive(local_pid(&r.instance)), "{r:?}");
    }

    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "a healthy release through the hooks completes:\n{out}\n{}", server.diagnose(w).await);
    let events = server.events(w).await;
    let v1: Vec<u32> = instances_of(&events, "v1").iter().map(|i| local_pid(i)).collect();
    wait_until("the stop hook takes v1 away", || async { v1.iter().all(|p| !alive(*p)).then_some(()) }).await;

    let out = server.cli(&["deploy", w, "v3", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "a bad release through the hooks is halted:\n{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &rollout_id(&out)).await;
    assert_eq!(r.decision.as_ref().map(|d| d.action), Some(ringfence_api::MitigationAction::Fallback), "{r:#?}");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v2"));
    let events = server.events(w).await;
    let v3: Vec<u32> = instances_of(&events, "v3").iter().map(|i| local_pid(i)).collect();
    assert!(!v3.is_empty(), "v3 ran: {:#?}", failures(&events));
    wait_until("the stop hook takes v3 away", || async { v3.iter().all(|p| !alive(*p)).then_some(()) }).await;
    let samples = load.finish().await;
    assert!(samples.iter().any(|s| s.version.as_deref() == Some("v2")), "users were served by v2 through the hooks");

    // A stable replica that dies is found by the status hook, recorded with its words, and
    // started again (the stable version is kept serving; only a new version's crash is final).
    let victim = server.status(w).await.replicas.iter().find(|r| r.version == "v2").map(|r| r.instance.clone());
    let victim = victim.expect("a v2 replica");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(local_pid(&victim) as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    server
        .wait_events(w, "the status hook reports the crash and v2 is started again", |events| {
            let exited = events.iter().any(|e| {
                matches!(&e.kind, EventKind::ReplicaExited { instance, status, .. }
                    if *instance == victim && status.contains("the status hook says it ended"))
            });
            let restarted = instances_of(events, "v2").len() > 2;
            (exited && restarted).then_some(())
        })
        .await;

    // Every run of a hook is in the workload's hook log, with what it printed.
    let log = hook_log(&server, w);
    for needle in ["deploy v3 replica 0", "stop v3 replica 0", "endpoint=127.0.0.1:", "status v2 replica"] {
        assert!(log.contains(needle), "the hook log has no {needle:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_cannot_run_hangs_or_fails_is_a_clear_error() {
    let server = Server::start().await;
    let state = server.path("hook-state");
    let stop = example_hook("stop.sh");
    let cases = [
        ("missing", "[\"/nonexistent/deploy\"]", "1s", "cannot run `/nonexistent/deploy`"),
        ("hanging", "[\"/bin/sh\", \"-c\", \"sleep 30\"]", "1s", "did not finish within 1s and was killed"),
        ("failing", "[\"/bin/sh\", \"-c\", \"echo no capacity in ring0 >&2; exit 3\"]", "5s", "no capacity in ring0"),
        ("mute", "[\"/bin/sh\", \"-c\", \"echo deployed\"]", "5s", "no `endpoint=HOST:PORT` line"),
        // A hook that echoes a secret it was given: the evidence keeps the words, not the secret.
        (
            "leaky",
            "[\"/bin/sh\", \"-c\", \"echo login with $TOKEN refused; exit 4\"]",
            "5s",
            "login with <redacted> refused",
        ),
    ];
    let secrets = server.data_dir().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("hooktoken"), "s3cr3t-hook-token").expect("write the secret");
    std::fs::set_permissions(secrets.join("hooktoken"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    for (w, deploy, timeout, says) in cases {
        let hooks = format!("deploy = {deploy}\nstop = [\"{stop}\"]\ntimeout = \"{timeout}\"");
        let text = hooked_spec(&Spec::new(w), &state, &hooks)
            .replace("env = { HOOK_STATE_DIR", "env = { TOKEN = \"secret://hooktoken\", HOOK_STATE_DIR");
        apply(&server, w, &text).await;
        server.release(w, "v1", &[]).await;
        let out = server.deploy_wait(w, "v1").await;
        assert_eq!(out.code, 10, "{w}: a first deploy whose hook fails does not complete:\n{out}");
        let errors = failures(&server.events(w).await);
        assert!(
            errors.iter().any(|e| e.contains(says) && e.contains("deploy hook")),
            "{w}: no error saying {says:?}: {errors:#?}"
        );
        assert!(server.status(w).await.replicas.is_empty(), "{w}: nothing runs");
        assert!(!hook_log(&server, w).contains("s3cr3t"), "{w}: the hook log shows the secret");
        let all = server.cli(&["events", w, "--all", "-o", "json"]).await;
        assert!(!all.stdout.contains("s3cr3t"), "{w}: the event log shows the secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_hook_that_fails_keeps_the_replica_and_is_tried_again_until_it_works() {
    let server = Server::start().await;
    let w = "stubborn";
    let state = server.path("hook-state");
    let spec = Spec::new(w);
    let broken_stop = format!(
        "deploy = [\"{}\"]\nstop = [\"/bin/sh\", \"-c\", \"echo cannot reach host-7 >&2; exit 2\"]\ntimeout = \"5s\"",
        example_hook("deploy.sh")
    );
    apply(&server, w, &hooked_spec(&spec, &state, &broken_stop)).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);

    // v1 no longer takes traffic, but its stop fails: the replica stays on record (it may
    // still run), the failure is in the log with the hook's words, and the stop is retried.
    let v1_pid = local_pid(&instances_of(&server.events(w).await, "v1")[0]);
    let errors = server
        .wait_events(w, "the failed stop retried", |events| {
            let e = failures(events);
            (e.iter().filter(|e| e.contains("stop hook exited with exit status: 2: cannot reach host-7")).count() >= 2)
                .then_some(e)
        })
        .await;
    assert!(errors.iter().all(|e| e.contains("v1 replica 0")), "{errors:#?}");
    assert!(server.status(w).await.replicas.iter().any(|r| r.version == "v1"), "v1's record is kept");
    assert!(alive(v1_pid), "the broken hook stopped nothing");

    // With a stop hook that works (an admin changes the hooks), v1 goes.
    apply(&server, w, &hooked_spec(&spec, &state, &example_hooks())).await;
    wait_until("v1 stopped by the repaired hook", || async {
        let s = server.status(w).await;
        (!alive(v1_pid) && s.replicas.iter().all(|r| r.version == "v2")).then_some(())
    })
    .await;
    drop(load);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infrastructure_change_is_released_like_code_and_a_bad_one_is_undone() {
    let server = Server::start().await;
    let w = "infra";
    let state = server.path("infra-state");
    let mut spec = Spec::new(w);
    spec.lenient_breaker = true;
    let infra = |name: &str| example("infra", name);
    let hooks =
        format!("deploy = [\"{}\"]\nstop = [\"{}\"]\ntimeout = \"20s\"", infra("apply.sh"), infra("destroy.sh"));
    apply(&server, w, &hooked_spec(&spec, &state, &hooks)).await;
    // Two versions of the infrastructure: the second sets what breaks the service on it.
    server.release(w, "net-1", &["INFRA_POOL_SIZE=8"]).await;
    server.release(w, "net-2", &["INFRA_POOL_SIZE=2", "INFRA_SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "net-1").await.code, 0, "{}", server.diagnose(w).await);
    let settings = |version: &str| std::fs::read_to_string(state.join(format!("{w}.{version}.0.settings"))).ok();
    assert_eq!(settings("net-1").as_deref(), Some("POOL_SIZE=8\n"), "the change was applied");

    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "net-2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "the breaking change is halted:\n{out}\n{}", server.diagnose(w).await);
    wait_until("the breaking change undone", || async { settings("net-2").is_none().then_some(()) }).await;
    assert_eq!(settings("net-1").as_deref(), Some("POOL_SIZE=8\n"), "the last known good infrastructure stays");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("net-1"));
    drop(load);
    let log = hook_log(&server, w);
    assert!(log.contains("applied 2 setting(s) of infrastructure net-2"), "{log}");
    assert!(log.contains("infrastructure net-2 of slot 0 destroyed"), "{log}");
}

/// The `undo` hook reverses a mitigated rollout's deploys, newest first; one that fails is a
/// clear error, retried, and no older deploy is undone (nor the mitigation complete) before it
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mitigated_rollouts_deploys_are_undone_newest_first_and_a_failing_undo_holds_the_rest() {
    let server = Server::start().await;
    let w = "undone";
    let state = server.path("hook-state");
    std::fs::create_dir_all(&state).unwrap();
    // The team's undo: records itself, fails once (a lock held elsewhere), then stops the
    // instance as the example stop hook does.
    let undo = state.join("undo.sh");
    std::fs::write(
        &undo,
        format!(
            "#!/bin/sh\nset -eu\necho \"undo $RINGFENCE_VERSION $RINGFENCE_REPLICA\" >>\"$HOOK_STATE_DIR/undo.log\"\n\
             if [ ! -f \"$HOOK_STATE_DIR/undo-ok\" ]; then touch \"$HOOK_STATE_DIR/undo-ok\"; echo 'the snapshot is locked by another job' >&2; exit 3; fi\n\
             exec {}\n",
            example_hook("stop.sh")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&undo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = Spec::new(w);
    spec.replicas = 2;
    spec.lenient_breaker = true;
    spec.phases = vec![(50, "30s"), (100, "2s")];
    let hooks = format!("{}\nundo = [\"{}\"]", example_hooks(), undo.display());
    apply(&server, w, &hooked_spec(&spec, &state, &hooks)).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "the bad release is halted and mitigated:\n{out}\n{}", server.diagnose(w).await);
    let _ = load.finish().await;

    let log = std::fs::read_to_string(state.join("undo.log")).unwrap_or_default();
    assert_eq!(log, "undo v2 1\nundo v2 1\nundo v2 0\n", "newest first, the failed one again before the older");
    let events = server.events(w).await;
    let failed = failures(&events);
    assert!(
        failed.iter().any(|e| e.contains("undo hook") && e.contains("the snapshot is locked by another job")),
        "the failing undo says why: {failed:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::ActionSucceeded { detail, .. } if detail == "v2 replica 0 undone")),
        "recorded as undone"
    );
    // The mitigation completed only after the last undo.
    let last_undo = events
        .iter()
        .rposition(|e| matches!(&e.kind, EventKind::ReplicaStopped { version, .. } if version == "v2"))
        .expect("v2 stopped");
    let completed = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::MitigationCompleted { .. }))
        .expect("mitigation completed");
    assert!(last_undo < completed, "the mitigation completed before the deploys were undone");
    // Retired instances (v1 after a later release, or at shutdown) are stopped, not undone.
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));
}
