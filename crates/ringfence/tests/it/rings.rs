//! Rings over host groups: a rollout updates one group of the workload's instances at a time,
//! in place (the fleet keeps its size), with bake and gates between groups; exposure is the
//! share of instances updated. A failing ring's traffic leaves it at once, the ring gets the
//! stable version back, and the new version goes only once the stable one runs in full.

use ringfence_api::{RolloutStatus, Stage};
use ringfence_core::EventKind;
use ringfence_core::event::Action;

use crate::command::{example_hooks, hooked_spec};
use crate::harness::{Load, Server, Spec, by_version, path_str, rollout_id};

fn with_rings(text: &str) -> String {
    text.replacen("[rollout]\n", "[rollout]\nmodel = \"rings\"\n", 1)
}

async fn apply(server: &Server, name: &str, text: &str) {
    let file = server.path(&format!("{name}.toml"));
    std::fs::write(&file, text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply:\n{out}\n--- spec\n{text}");
}

fn count(s: &ringfence_api::WorkloadStatus, version: &str) -> usize {
    s.replicas.iter().filter(|r| r.version == version).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_through_the_command_executor_update_one_group_at_a_time_in_place() {
    let server = Server::start().await;
    let w = "ringfleet";
    let mut spec = Spec::new(w);
    spec.replicas = 4;
    // 10% of 4 instances is one instance: the first ring is a quarter of the fleet.
    spec.phases = vec![(10, "2s"), (50, "2s"), (100, "2s")];
    let state = server.path("hook-state");
    std::fs::create_dir_all(&state).unwrap();
    // The platform's own resize (here: a log of what it was asked).
    let scale = state.join("scale.sh");
    std::fs::write(&scale, "#!/bin/sh\necho \"$RINGFENCE_VERSION $1\" >>\"$HOOK_STATE_DIR/scale.log\"\n").unwrap();
    std::fs::set_permissions(&scale, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hooks = format!("{}\nscale = [\"{}\", \"{{replicas}}\"]", example_hooks(), scale.display());
    apply(&server, w, &with_rings(&hooked_spec(&spec, &state, &hooks))).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);

    // Each ring bakes with exactly its share of the fleet on v2, the rest on v1.
    for (phase, updated, weight_bp) in [(0, 1, 2500), (1, 2, 5000)] {
        let s = server
            .wait_status(w, &format!("ring {phase} baking in place"), |s| {
                let r = s.rollout.as_ref().filter(|r| r.id == id && r.phase == phase && r.stage == Stage::Baking)?;
                (count(s, "v2") == updated && count(s, "v1") == 4 - updated).then(|| (r.clone(), s.clone()))
            })
            .await;
        let canary = s.1.desired.routes.iter().find(|g| g.name == "canary").expect("the ring's group");
        assert_eq!(canary.weight_bp, weight_bp, "exposure is the share of instances updated");
    }
    let done = server
        .wait_status(w, "the last ring", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Completed, "{}", server.diagnose(w).await);
    server.wait_status(w, "every instance on v2", |s| (count(s, "v2") == 4 && count(s, "v1") == 0).then_some(())).await;
    let samples = load.finish().await;
    let per = by_version(&samples);
    assert!(per.values().all(|(_, errors)| *errors == 0), "users saw failures: {per:?}");
    assert!(per.get("v2").is_some_and(|(n, _)| *n > 0) && per.get("v1").is_some_and(|(n, _)| *n > 0), "{per:?}");
    // In place: the fleet never ran more than one ring's worth beside its size.
    let events = server.events(w).await;
    let mut running = 0i64;
    let mut most = 0i64;
    for e in &events {
        match &e.kind {
            EventKind::ReplicaStarted { .. } => running += 1,
            EventKind::ReplicaStopped { .. } => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert!(most <= 4 + 2, "at most the ring being updated runs beside the fleet: {most} instances at once");
    // The scale hook sized v1 for its first deploy, then grew v2 before each ring's instances
    // deployed and shrank v1 after each ring's old instances stopped.
    let log = std::fs::read_to_string(state.join("scale.log")).unwrap_or_default();
    let of = |v: &str| log.lines().filter(|l| l.starts_with(&format!("{v} "))).map(String::from).collect::<Vec<_>>();
    assert_eq!(of("v2"), ["v2 1", "v2 2", "v2 4"], "{log}");
    assert_eq!(of("v1"), ["v1 4", "v1 3", "v1 2", "v1 0"], "{log}");
    let order: Vec<&str> = log.lines().collect();
    let pos = |l: &str| order.iter().position(|x| *x == l).unwrap();
    assert!(
        pos("v2 1") < pos("v1 3") && pos("v2 2") < pos("v1 2") && pos("v2 4") < pos("v1 0"),
        "grow, then shrink: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_ring_is_fallen_back_at_once_and_gets_the_stable_version_back_before_v2_goes() {
    let server = Server::start().await;
    let w = "ringfail";
    let mut spec = Spec::new(w);
    spec.replicas = 4;
    spec.lenient_breaker = true;
    spec.phases = vec![(50, "30s"), (100, "2s")];
    apply(&server, w, &with_rings(&spec.toml())).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    let done = server
        .wait_status(w, "the failing ring's rollout ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Mitigated, "{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!((count(&s, "v1"), count(&s, "v2")), (4, 0), "the fleet is whole again on v1: {s:#?}");

    // The order that keeps users served: traffic off v2 first, then v1 back on the ring's
    // instances, and only then v2 stopped.
    let events = server.events(w).await;
    let halted = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::RolloutHalted { rollout_id, .. } if *rollout_id == id))
        .expect("halted");
    let after = &events[halted..];
    let off_v2 = after
        .iter()
        .position(|e| {
            matches!(&e.kind, EventKind::ActionIntended { action: Action::ApplyRoutes { groups, .. }, .. }
                if groups.iter().all(|g| g.version != "v2" || g.weight_bp == 0))
        })
        .expect("a table without v2");
    let v1_back = after
        .iter()
        .position(|e| matches!(&e.kind, EventKind::ReplicaStarted { version, .. } if version == "v1"))
        .expect("v1 started again on the ring");
    let v2_gone = after
        .iter()
        .position(|e| matches!(&e.kind, EventKind::ReplicaStopped { version, .. } if version == "v2"))
        .expect("v2 stopped");
    let v1_full = after
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(&e.kind, EventKind::ReplicaStarted { version, .. } if version == "v1"))
        .map(|(i, _)| i)
        .max()
        .unwrap();
    assert!(off_v2 < v1_back, "traffic left v2 before v1 was started again");
    assert!(v1_full < v2_gone, "v2 stopped only once v1 ran in full again");
    let samples = load.finish().await;
    let per = by_version(&samples);
    assert!(per.get("v1").is_some_and(|(_, errors)| *errors == 0), "v1 failed users: {per:?}");
}
