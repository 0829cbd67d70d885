//! Crash safety: the server is SIGKILLed in the middle of a rollout, twice. The router keeps
//! serving while it is down; on restart the rollout continues from the event log, the
//! running replicas are adopted rather than started again, and the log shows every action
//! intended once and done at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ringfence::loadgen::Sample;
use ringfence_api::{RolloutStatus, Stage};
use ringfence_core::{Event, EventKind};

use crate::harness::{Load, Server, Spec, by_version, pid_of, rollout_id};

/// Waits until the rollout bakes phase `phase`, lets the bake run a little, then kills the
/// server, checks that users were served while it was down, and starts it again.
async fn kill_during_phase(server: &mut Server, load: &mut Load, w: &str, id: &str, phase: usize) {
    server
        .wait_status(w, &format!("phase {} of {id} to bake", phase + 1), |s| {
            let r = s.rollout.as_ref()?;
            (r.id == id && r.phase == phase && r.stage == Stage::Baking).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let router_pid = server.status(w).await.router.expect("the router runs").pid.expect("a router process");

    server.kill9();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The router is not the server's child in any way that matters: it lives on.
    assert!(crate::harness::alive(router_pid), "the router died with the server");
    let during: Vec<Sample> = load.samples().iter().filter(|s| s.sent_at >= down).cloned().collect();
    server.restart().await;

    assert!(during.len() >= 50, "too few requests while the server was down: {}", during.len());
    let failed: Vec<&Sample> = during.iter().filter(|s| s.status != Some(200) || s.version.is_none()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while the server was down (the data plane must not wait on it): {:#?}",
        failed.len(),
        during.len(),
        &failed[..failed.len().min(5)]
    );
    // Nothing moved the rollout while the controller was down; after the restart it either
    // continues or has just finished its last bake.
    let r = server.rollout(w, id).await;
    assert!(
        r.status.is_active() || r.status == RolloutStatus::Completed,
        "the rollout must carry on after the restart: {r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_rollout_resumes_and_does_nothing_twice() {
    let mut server = Server::start().await;
    let w = "sturdy";
    let spec = Spec { replicas: 2, phases: vec![(10, "3s"), (50, "3s"), (100, "3s")], ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);
    let router_before = server.status(w).await.router.expect("the router runs");

    let mut load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);

    kill_during_phase(&mut server, &mut load, w, &id, 1).await;
    kill_during_phase(&mut server, &mut load, w, &id, 2).await;

    let r = server
        .wait_status(w, "the rollout to complete after the restarts", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).cloned()
        })
        .await;
    assert_eq!(r.status, RolloutStatus::Completed, "{r:#?}\n{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v2"));
    assert_eq!(s.router.as_ref().map(|r| r.pid), Some(router_before.pid), "the router was replaced");

    // Converged: v1 stopped, no action left open.
    let events = server
        .wait_events(w, "v1 stopped and every intended action closed", |ev| {
            let open = open_intents(ev);
            let v1_running = replicas_running(ev).iter().any(|(v, _)| v == "v1");
            (open.is_empty() && !v1_running).then_some(ev.to_vec())
        })
        .await;
    let samples = load.finish().await;
    let failed = samples.iter().filter(|s| s.is_error()).count();
    assert_eq!(failed, 0, "a healthy rollout through two server crashes failed requests: {:?}", by_version(&samples));

    check_log(&server, w, &server.all_events().await, &events);
}

/// The invariants of the event log after crashes.
pub(crate) fn check_log(server: &Server, w: &str, all: &[Event], workload_events: &[Event]) {
    // Numbered 1..N: no gap, no duplicate.
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs, expected, "event sequence numbers must run 1..N without gaps or duplicates");
    let of_workloads: Vec<&Event> = all.iter().filter(|e| !e.workload.is_empty()).collect();
    assert!(all.iter().all(|e| e.workload == w || e.workload.is_empty()), "events of another workload");
    // `workload_events` was read first: what was appended since (a traffic sample) may follow.
    let seqs_of = |v: &[&Event]| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let read_first: Vec<&Event> = workload_events.iter().collect();
    assert_eq!(
        seqs_of(&read_first),
        seqs_of(&of_workloads[..workload_events.len().min(of_workloads.len())]),
        "one workload: its events are the log's workload events, in the same order"
    );

    // Replicas: every (version, replica) started for real once, and only adopted after that.
    // A crash between a start and its record leaves the process to the next server, which
    // records adopting it: then the first record of the slot is an adoption that closes the
    // intent of that start.
    let mut starts: BTreeMap<(String, u32), Vec<(u32, bool)>> = BTreeMap::new();
    for e in all {
        if let EventKind::ReplicaStarted { version, replica, instance, adopted, .. } = &e.kind {
            starts.entry((version.clone(), *replica)).or_default().push((pid_of(instance), *adopted));
        }
    }
    let keys: Vec<&(String, u32)> = starts.keys().collect();
    assert_eq!(keys.len(), 4, "two replicas each of v1 and v2 were expected: {keys:?}");
    for (key, list) in &starts {
        let mut fresh: Vec<u32> = list.iter().filter(|(_, adopted)| !adopted).map(|(p, _)| *p).collect();
        let pids: BTreeSet<u32> = list.iter().map(|(p, _)| *p).collect();
        if fresh.is_empty()
            && let Some(&(pid, _)) = list.first()
            && start_recorded_by_adoption(all, key)
        {
            fresh.push(pid);
        }
        assert_eq!(
            fresh.len(),
            pids.len(),
            "{key:?}: a fresh start per distinct process, adoptions reuse one: {list:?}"
        );
        let real = server.real_starts(w, &key.0, key.1);
        assert_eq!(fresh.len(), real, "{key:?}: {real} real start(s) but these events: {list:?}");
        assert_eq!(real, 1, "{key:?} was started more than once across the crashes: {list:?}");
        for (pid, adopted) in list {
            assert!(!adopted || fresh.contains(pid), "{key:?}: adopted pid {pid} was never started: {list:?}");
        }
    }

    // Actions: each intended once, with at most one outcome, recorded after the intent.
    let mut intended: BTreeMap<&str, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for e in all {
        match &e.kind {
            EventKind::ActionIntended { op_id, .. } => {
                let again = intended.insert(op_id, e.seq as usize).is_some();
                assert!(!again, "operation {op_id} was intended twice");
            }
            EventKind::ActionSucceeded { op_id, .. } | EventKind::ActionFailed { op_id, .. } => {
                assert!(
                    intended.contains_key(op_id.as_str()),
                    "outcome of {op_id} without a prior intent (seq {})",
                    e.seq
                );
                *outcomes.entry(op_id).or_default() += 1;
            }
            _ => {}
        }
    }
    let twice: Vec<(&&str, &usize)> = outcomes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "operations with more than one outcome: {twice:?}");
    let open: Vec<&&str> = intended.keys().filter(|op| !outcomes.contains_key(**op)).collect();
    assert!(open.is_empty(), "intents left open after the rollout converged: {open:?}");

    let routers = all.iter().filter(|e| matches!(e.kind, EventKind::RouterStarted { adopted: false, .. })).count();
    assert_eq!(routers, 1, "the router must be started once and survive the crashes");
}

/// Whether the slot's first record is an adoption that closed the intent to start it (the
/// server that started it died before recording the start).
fn start_recorded_by_adoption(all: &[Event], key: &(String, u32)) -> bool {
    use ringfence_core::event::Action;
    let mut intents: BTreeMap<&str, bool> = BTreeMap::new();
    for (i, e) in all.iter().enumerate() {
        match &e.kind {
            EventKind::ActionIntended { op_id, action: Action::StartReplica { version, replica } } => {
                intents.insert(op_id, *version == key.0 && *replica == key.1);
            }
            EventKind::ReplicaStarted { version, replica, adopted: true, .. }
                if *version == key.0 && *replica == key.1 =>
            {
                // Recorded with the outcome of an open intent to start this very slot.
                return all.get(i + 1).is_some_and(|next| {
                    matches!(&next.kind, EventKind::ActionSucceeded { op_id, .. } if intents.get(op_id.as_str()) == Some(&true))
                });
            }
            _ => {}
        }
    }
    false
}

/// Intended actions without an outcome yet.
pub(crate) fn open_intents(events: &[Event]) -> Vec<String> {
    let mut open = BTreeSet::new();
    for e in events {
        match &e.kind {
            EventKind::ActionIntended { op_id, .. } => {
                open.insert(op_id.clone());
            }
            EventKind::ActionSucceeded { op_id, .. } | EventKind::ActionFailed { op_id, .. } => {
                open.remove(op_id);
            }
            _ => {}
        }
    }
    open.into_iter().collect()
}

/// (version, replica) the log says run now.
pub(crate) fn replicas_running(events: &[Event]) -> BTreeSet<(String, u32)> {
    let mut running = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::ReplicaStarted { version, replica, instance, .. } => {
                running.insert((version.clone(), *replica), instance.clone());
            }
            EventKind::ReplicaStopped { version, replica, instance }
            | EventKind::ReplicaExited { version, replica, instance, .. }
                if running.get(&(version.clone(), *replica)) == Some(instance) =>
            {
                running.remove(&(version.clone(), *replica));
            }
            _ => {}
        }
    }
    running.into_keys().collect()
}

/// A server killed while it stops a replica: on restart the stop is finished and recorded as
/// the stop it was (not as a crash), and its intent is closed. The replica's shell ignores
/// SIGTERM and outlives the app it started, so the stop is still waiting out its grace when
/// the server dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_interrupted_by_a_crash_is_finished_as_a_stop_and_its_intent_closed() {
    let mut server = Server::start().await;
    let w = "stubborn";
    let mut spec = Spec::new(w);
    spec.command = Some(
        r#"["/bin/sh", "-c", "trap '' TERM; {ringfence} sample-app --listen 127.0.0.1:{port} --version {version} & while true; do sleep 1; done"]"#,
    );
    let file = server.path("stubborn.toml");
    std::fs::write(&file, spec.toml().replace("stop_grace = \"2s\"", "stop_grace = \"60s\"")).expect("write spec");
    assert_eq!(server.cli(&["apply", crate::harness::path_str(&file)]).await.code, 0);
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["GREETING=x"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0);
    // v2 holds without traffic; an abort then stops its replica, which takes the whole grace.
    assert_eq!(server.cli(&["deploy", w, "v2"]).await.code, 0);
    server.wait_status(w, "v2's replica", |s| s.replicas.iter().any(|r| r.version == "v2").then_some(())).await;
    assert_eq!(server.cli(&["abort", w, "--reason", "test"]).await.code, 0);
    let stop_op = server
        .wait_events(w, "the stop of v2's replica to be intended", |events| {
            crate::harness::of_workload_intents(events).into_iter().find_map(|(op, action)| {
                matches!(action, ringfence_core::event::Action::StopReplica { ref version, .. } if version == "v2")
                    .then_some(op)
            })
        })
        .await;
    let v2_procs = server.replica_processes(w, "v2");
    assert!(!v2_procs.is_empty());

    // The server dies mid-stop; the stop's SIGKILL then happens without it.
    server.kill9();
    for pid in &v2_procs {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    server.restart().await;

    let events = server
        .wait_events(w, "the interrupted stop to be closed", |events| {
            events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::ActionSucceeded { op_id, .. } if *op_id == stop_op))
                .then(|| events.to_vec())
        })
        .await;
    let after_abort = events.iter().skip_while(|e| !matches!(e.kind, EventKind::RolloutAborted { .. }));
    let mut stopped = false;
    for e in after_abort {
        match &e.kind {
            EventKind::ReplicaExited { version, .. } if version == "v2" => {
                panic!("the interrupted stop was taken for a crash: {e:?}")
            }
            EventKind::ReplicaStopped { version, .. } if version == "v2" => stopped = true,
            _ => {}
        }
    }
    assert!(stopped, "no stop of v2's replica recorded");
    assert!(
        crate::harness::of_workload_intents(&events).is_empty(),
        "intents left open: {:?}",
        crate::harness::of_workload_intents(&events)
    );
}
