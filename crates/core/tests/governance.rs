//! Governance through the core's public API: environments, attestations, approvals with
//! separation of duties, windows and freezes, stop the line, the emergency path, parity.
//! A simulated clock; events are folded into the world as the server folds them.

use ringfence_core::command::{self, ErrorCode};
use ringfence_core::governance::{self, Approver, Attestation, Emergency, OwedOutcome};
use ringfence_core::release::{ChangeSize, ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::RolloutStatus;
use ringfence_core::spec::{self, Gate, WorkloadSpec};
use ringfence_core::{Event, EventKind, Timestamp, World};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
/// Mon 2026-11-30 10:00 UTC.
const MONDAY_10: Timestamp = Timestamp(1_796_032_800_000);

struct G {
    world: World,
    seq: u64,
    now: Timestamp,
}

fn spec(name: &str, extra: &str) -> WorkloadSpec {
    let text = spec::EXAMPLE.replacen("name = \"checkout\"", &format!("name = \"{name}\""), 1) + extra;
    spec::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e:?}"))
}

impl G {
    fn new() -> G {
        G { world: World::default(), seq: 0, now: MONDAY_10 }
    }

    fn append(&mut self, workload: &str, actor: &str, kinds: Vec<EventKind>) -> Vec<Event> {
        let mut out = Vec::new();
        for kind in kinds {
            self.seq += 1;
            let e = Event {
                seq: self.seq,
                at: self.now,
                actor: actor.into(),
                reason: "test".into(),
                workload: workload.into(),
                kind,
            };
            self.world.apply(&e);
            out.push(e);
        }
        out
    }

    fn apply(&mut self, s: WorkloadSpec) {
        let name = s.workload.name.clone();
        let e = command::apply_spec(&self.world, &s).expect("valid").expect("new");
        self.append(&name, "admin", vec![e]);
    }

    fn release(&mut self, workload: &str, version: &str, author: &str) {
        let req = ReleaseRequest {
            version: version.into(),
            content: ReleaseContent {
                artifact: format!("registry/app@sha256:{version}"),
                metadata: ringfence_core::release::Metadata { author: author.into(), ..Default::default() },
                ..Default::default()
            },
        };
        let (e, _) = command::create_release(&self.world, workload, &req, author, self.now).expect("release");
        self.append(workload, author, e.into_iter().collect());
    }

    /// Runs `version` to completion by hand (the rollout machine is tested elsewhere).
    fn complete(&mut self, workload: &str, version: &str) {
        let started = command::start_rollout(&self.world, workload, version).expect("starts");
        self.append(workload, "ci", started);
        self.finish(workload, version);
    }

    /// The active rollout of `workload` completes with `version` (the controller's events).
    fn finish(&mut self, workload: &str, version: &str) {
        let id = self.active(workload).expect("a rollout").id.clone();
        self.append(
            workload,
            "controller",
            vec![
                EventKind::RolloutCompleted { rollout_id: id.clone() },
                EventKind::LkgUpdated { version: version.into(), rollout_id: id },
            ],
        );
    }

    fn deploy(&mut self, workload: &str, version: &str, actor: &str) -> Result<Vec<Event>, command::CommandError> {
        self.deploy_as(workload, version, actor, None)
    }

    fn deploy_as(
        &mut self,
        workload: &str,
        version: &str,
        actor: &str,
        emergency: Option<Emergency>,
    ) -> Result<Vec<Event>, command::CommandError> {
        let (events, _) = command::deploy_governed(&self.world, workload, version, actor, emergency, self.now)?;
        Ok(self.append(workload, actor, events))
    }

    fn approve(&mut self, workload: &str, who: &str, emergency: bool) -> Result<Vec<Event>, command::CommandError> {
        let events =
            governance::approve(&self.world, workload, &Approver { name: who, emergency }, "looks good", self.now)?;
        Ok(self.append(workload, who, events))
    }

    fn tick(&mut self, workload: &str) -> Vec<Event> {
        let events = governance::tick(&self.world, workload, self.now);
        self.append(workload, "controller", events)
    }

    fn attest(&mut self, workload: &str, version: &str, kind: &str, passed: bool) -> Vec<Event> {
        let a = Attestation {
            kind: kind.into(),
            source: format!("https://ci.example/{kind}/1"),
            subject: format!("sha256:{version}"),
            passed,
            checked_at: None,
            detail: if passed { String::new() } else { "CVE-2026-1".into() },
        };
        // The checks ringfence runs are recorded by the controller; the rest by the pipeline.
        let checks = self.world.workload(workload).map(|ws| ws.spec.environment.checks.clone()).unwrap_or_default();
        let actor = if checks.iter().any(|c| c.name == kind) { "controller" } else { "ci" };
        let events = governance::attest(&self.world, workload, version, &a, actor, self.now).expect("attest");
        self.append(workload, actor, events)
    }

    fn active(&self, workload: &str) -> Option<&ringfence_core::Rollout> {
        self.world.workload(workload).and_then(|ws| ws.active_rollout())
    }
}

/// staging, then production (which names staging as its previous environment).
fn two_environments(prod_extra: &str) -> G {
    let mut g = G::new();
    g.apply(spec("shop-staging", "\n[environment]\nname = \"staging\"\n"));
    g.apply(spec("shop", &format!("\n[environment]\nname = \"production\"\nafter = \"shop-staging\"\n{prod_extra}")));
    for w in ["shop-staging", "shop"] {
        g.release(w, "v1", "alice");
        g.complete(w, "v1");
        g.release(w, "v2", "alice");
    }
    g
}

#[test]
fn a_release_reaches_production_only_after_it_completed_in_staging() {
    let mut g = two_environments("");
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("not completed a rollout in shop-staging"), "{e}");
    assert!(e.message.contains("newest completed release is v1"), "{e}");
    assert!(g.active("shop").is_none(), "refused: nothing changed");
    g.complete("shop-staging", "v2");
    let events = g.deploy("shop", "v2", "pipeline").expect("promoted");
    assert!(matches!(events.last().map(|e| &e.kind), Some(EventKind::RolloutStarted { .. })));
}

#[test]
fn another_build_under_the_same_version_is_not_promoted() {
    let mut g = two_environments("");
    g.complete("shop-staging", "v2");
    let req = ReleaseRequest {
        version: "v3".into(),
        content: ReleaseContent { artifact: "registry/app@sha256:aaa".into(), ..Default::default() },
    };
    let (e, _) = command::create_release(&g.world, "shop-staging", &req, "alice", g.now).unwrap();
    g.append("shop-staging", "alice", e.into_iter().collect());
    g.complete("shop-staging", "v3");
    let req = ReleaseRequest {
        version: "v3".into(),
        content: ReleaseContent { artifact: "registry/app@sha256:bbb".into(), ..Default::default() },
    };
    let (e, _) = command::create_release(&g.world, "shop", &req, "alice", g.now).unwrap();
    g.append("shop", "alice", e.into_iter().collect());
    let err = g.deploy("shop", "v3", "pipeline").unwrap_err();
    assert!(err.message.contains("differs from v3 of shop in its artifact"), "{err}");
}

#[test]
fn missing_or_failed_attestations_block_and_are_named() {
    let mut g = two_environments("requires = [\"code-review\", \"security-scan\"]\n");
    g.complete("shop-staging", "v2");
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(e.message.contains("attestation code-review is missing"), "{e}");
    assert!(e.message.contains("attestation security-scan is missing"), "{e}");
    g.attest("shop", "v2", "code-review", true);
    g.attest("shop", "v2", "security-scan", false);
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(!e.message.contains("code-review"), "{e}");
    assert!(e.message.contains("attestation security-scan failed"), "{e}");
    assert!(e.message.contains("CVE-2026-1"), "{e}");
    // A check about another artifact does not count.
    let other = Attestation {
        kind: "security-scan".into(),
        source: "scanner".into(),
        subject: "sha256:other".into(),
        passed: true,
        checked_at: None,
        detail: String::new(),
    };
    let ev = governance::attest(&g.world, "shop", "v2", &other, "ci", g.now).unwrap();
    g.append("shop", "ci", ev);
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(e.message.contains("is about sha256:other"), "{e}");
    g.attest("shop", "v2", "security-scan", true);
    g.deploy("shop", "v2", "pipeline").expect("every check passed");
}

#[test]
fn approvals_need_other_people_than_the_author_and_the_starter_and_expire() {
    let mut g = two_environments("[approval]\nrequired = 2\nbefore_start = true\nexpires = \"1h\"\n");
    g.complete("shop-staging", "v2");
    let queued = g.deploy("shop", "v2", "pipeline").expect("queued");
    assert!(matches!(&queued[0].kind, EventKind::DeployQueued { approvals_needed: 2, .. }), "{queued:?}");
    assert!(g.active("shop").is_none());
    let e = g.approve("shop", "pipeline", false).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("started this deployment"), "{e}");
    let e = g.approve("shop", "alice", false).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("author of v2"), "{e}");
    g.approve("shop", "bob", false).expect("bob approves");
    assert_eq!(g.approve("shop", "bob", false).unwrap_err().code, ErrorCode::Conflict, "one approval per person");
    // Carol comes too late: bob's approval has expired.
    g.now = g.now.plus_ms(2 * HOUR);
    let ev = g.approve("shop", "carol", false).expect("carol approves");
    assert!(!ev.iter().any(|e| matches!(e.kind, EventKind::RolloutStarted { .. })), "bob's approval expired");
    let ev = g.approve("shop", "bob", false).expect("bob again");
    assert!(ev.iter().any(|e| matches!(e.kind, EventKind::RolloutStarted { .. })), "{ev:?}");
    let r = g.active("shop").expect("started");
    assert_eq!(r.started_by, "pipeline", "the start is the requester's, not the last approver's");
}

#[test]
fn a_rejection_drops_the_queued_deployment() {
    let mut g = two_environments("[approval]\nbefore_start = true\n");
    g.complete("shop-staging", "v2");
    g.deploy("shop", "v2", "pipeline").unwrap();
    let ev =
        governance::reject(&g.world, "shop", &Approver { name: "bob", emergency: false }, "no rollback plan").unwrap();
    g.append("shop", "bob", ev);
    assert!(g.world.workload("shop").unwrap().governance.pending.is_none());
    assert!(g.tick("shop").is_empty(), "nothing starts");
    assert!(g.active("shop").is_none());
}

#[test]
fn a_phase_approval_gate_counts_approvals_and_a_closed_window_voids_them() {
    let plan = "[schedule]\ntimezone = \"UTC\"\nwindows = [\"Mon-Fri 09:00-17:00\"]\n";
    let mut g = G::new();
    let mut s = spec("shop", plan);
    s.rollout.phases[1].gates.push(Gate::Approval);
    g.apply(s);
    g.release("shop", "v1", "alice");
    g.complete("shop", "v1");
    g.release("shop", "v2", "alice");
    g.deploy("shop", "v2", "pipeline").expect("inside the window");
    let r = g.active("shop").unwrap().clone();
    let ws = g.world.workload("shop").unwrap().clone();
    assert!(!governance::phase_approved(&ws, &r, g.now));
    // Move to phase 2 (the one with the approval gate) by hand.
    g.append("shop", "controller", vec![EventKind::PhaseStarted { rollout_id: r.id.clone(), phase: 1 }]);
    g.now = g.now.plus_ms(6 * HOUR); // 16:00
    g.approve("shop", "bob", false).expect("bob approves phase 2");
    let ws = g.world.workload("shop").unwrap().clone();
    let r = g.active("shop").unwrap().clone();
    assert!(governance::phase_approved(&ws, &r, g.now));
    // The window closes at 17:00; the next morning the approval no longer counts.
    g.now = g.now.plus_ms(18 * HOUR); // Tue 10:00
    assert!(!governance::phase_approved(&ws, &r, g.now), "the window closed since: asks again");
    assert!(governance::advance_blocked(&g.world, &ws, &r, g.now).is_none());
    g.now = g.now.plus_ms(8 * HOUR); // Tue 18:00
    let why = governance::advance_blocked(&g.world, &ws, &r, g.now).expect("closed");
    assert!(why.contains("next window opens Wed 2026-12-02 09:00"), "{why}");
}

#[test]
fn outside_a_window_a_deployment_waits_or_is_refused_with_the_next_opening() {
    let window = "[schedule]\ntimezone = \"Europe/Paris\"\nwindows = [\"Mon-Fri 09:00-17:00\"]\n";
    let mut g = G::new();
    g.apply(spec("shop", &format!("{window}outside = \"refuse\"\n")));
    g.release("shop", "v1", "alice");
    g.complete("shop", "v1");
    g.release("shop", "v2", "alice");
    g.now = g.now.plus_ms(8 * HOUR); // Mon 18:00 UTC, 19:00 in Paris
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(e.message.contains("the next window opens Tue 2026-12-01 09:00 CET"), "{e}");
    assert!(g.active("shop").is_none());
    // Waiting instead: queued, started by the controller when the window opens.
    g.apply(spec("shop", window));
    let queued = g.deploy("shop", "v2", "pipeline").expect("queued");
    assert!(matches!(&queued[0].kind, EventKind::DeployQueued { .. }));
    assert!(g.tick("shop").is_empty(), "still closed");
    g.now = g.now.plus_ms(14 * HOUR + 30 * MIN); // Tue 08:30 UTC, 09:30 in Paris
    let started = g.tick("shop");
    assert!(matches!(started.last().map(|e| &e.kind), Some(EventKind::RolloutStarted { .. })), "{started:?}");
}

#[test]
fn a_freeze_never_blocks_a_rollback() {
    let freeze =
        "[[schedule.freezes]]\nfrom = \"2026-11-30T00:00:00Z\"\nto = \"2026-12-07T00:00:00Z\"\nreason = \"year-end\"\n";
    let mut g = G::new();
    g.apply(spec("shop", ""));
    for v in ["v1", "v2"] {
        g.release("shop", v, "alice");
        g.complete("shop", v);
    }
    g.apply(spec("shop", &format!("[schedule]\noutside = \"refuse\"\n{freeze}")));
    g.release("shop", "v3", "alice");
    let e = g.deploy("shop", "v3", "pipeline").unwrap_err();
    assert!(e.message.contains("year-end"), "{e}");
    let back = command::rollback_all(&g.world, "shop", None, "oncall", "v2 leaks memory").expect("a rollback runs");
    assert!(back.iter().any(|e| matches!(e, EventKind::RolloutStarted { .. })));
}

#[test]
fn stopping_the_line_pauses_everything_refuses_new_work_and_lets_mitigation_run() {
    let mut g = two_environments("");
    g.deploy("shop-staging", "v2", "pipeline").unwrap();
    let stop = governance::stop_line(&g.world).unwrap();
    assert_eq!(stop.len(), 2, "the stop and one pause: {stop:?}");
    for (w, k) in stop {
        g.append(&w, "admin", vec![k]);
    }
    assert_eq!(g.active("shop-staging").unwrap().status, RolloutStatus::Paused);
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(e.message.contains("the line is stopped"), "{e}");
    assert!(command::resume(&g.world, "shop-staging").unwrap_err().message.contains("line is stopped"));
    let ws = g.world.workload("shop-staging").unwrap();
    let r = ws.active_rollout().unwrap();
    assert!(governance::advance_blocked(&g.world, ws, r, g.now).is_some());
    command::rollback_all(&g.world, "shop-staging", None, "oncall", "bad").expect("mitigation still runs");
    let restart = governance::restart_line(&g.world).unwrap();
    assert!(restart.iter().any(|(w, k)| w == "shop-staging" && matches!(k, EventKind::RolloutResumed { .. })));
}

#[test]
fn the_emergency_path_end_to_end() {
    let extra = "requires = [\"security-scan\"]\n[approval]\nbefore_start = true\n[emergency]\nseverities = [\"sev1\"]\nbake_factor = 0.1\nout_of_band_within = \"1h\"\n";
    let mut g = two_environments(extra);
    let inc = |severity: &str| Emergency {
        incident: "INC-42".into(),
        severity: severity.into(),
        justification: "payments time out".into(),
    };
    let e = g.deploy_as("shop", "v2", "pipeline", Some(inc("sev3"))).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("sev3"), "{e}");
    // Not promoted through staging, not scanned: accepted on the emergency path, queued for
    // an emergency approver.
    g.deploy_as("shop", "v2", "pipeline", Some(inc("sev1"))).expect("queued");
    let e = g.approve("shop", "bob", false).unwrap_err();
    assert!(e.message.contains("emergency approver"), "{e}");
    let ev = g.approve("shop", "erin", true).expect("erin is an emergency approver");
    let declared = ev.iter().find_map(|e| match &e.kind {
        EventKind::EmergencyDeclared { skipped, .. } => Some(skipped.clone()),
        _ => None,
    });
    let skipped = declared.expect("declared");
    assert_eq!(skipped, vec!["promotion through shop-staging", "attestation security-scan", "approval"]);
    let r = g.active("shop").expect("started").clone();
    assert_eq!(r.phases[0].bake.as_ms(), 9_000, "90s x 0.1");
    assert!(r.emergency.is_some());
    // Out of band: the scan fails (alert), staging completes (passes), the approval is given
    // after the fact; nothing settles the scan by its due time: overdue stays visible.
    let ev = g.attest("shop", "v2", "security-scan", false);
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { outcome: OwedOutcome::Failed, .. })));
    g.complete("shop-staging", "v2");
    let ev = g.tick("shop");
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { gate, outcome: OwedOutcome::Passed, .. } if gate.starts_with("promotion"))), "{ev:?}");
    g.finish("shop", "v2");
    let e = g.approve("shop", "pipeline", false).unwrap_err();
    assert!(e.message.contains("separation of duties"), "{e}");
    let ev = g.approve("shop", "bob", false).expect("approved after the fact");
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { gate, .. } if gate == "approval")));
    let owed = &g.world.workload("shop").unwrap().governance.owed;
    assert!(owed.iter().all(|o| o.outcome.is_some()), "{owed:?}");
}

#[test]
fn a_release_the_previous_environment_let_go_is_promoted_by_its_build() {
    let mut g = G::new();
    g.apply(spec("shop-staging", "\n[environment]\nname = \"staging\"\n[history]\nrollouts = 20\n"));
    g.apply(spec("shop", "\n[environment]\nname = \"production\"\nafter = \"shop-staging\"\n"));
    for n in 1..=30 {
        let v = format!("v{n}");
        g.release("shop-staging", &v, "alice");
        g.complete("shop-staging", &v);
    }
    let staging = g.world.workload("shop-staging").unwrap();
    assert!(staging.releases_let_go.contains_key("v2") && staging.releases_let_go.contains_key("v3"));
    g.release("shop", "v1", "alice");
    g.complete("shop", "v1");
    // The same build (production's own configuration aside) is promoted.
    let req = ReleaseRequest {
        version: "v2".into(),
        content: ReleaseContent {
            artifact: "registry/app@sha256:v2".into(),
            config: [("REGION".to_string(), "eu".to_string())].into(),
            metadata: ringfence_core::release::Metadata { author: "alice".into(), ..Default::default() },
            ..Default::default()
        },
    };
    let (e, _) = command::create_release(&g.world, "shop", &req, "alice", g.now).unwrap();
    g.append("shop", "alice", e.into_iter().collect());
    let events = g.deploy("shop", "v2", "pipeline").expect("promoted");
    assert!(matches!(events.last().map(|e| &e.kind), Some(EventKind::RolloutStarted { .. })));
    g.finish("shop", "v2");
    // Another build under a version staging let go is not.
    let req = ReleaseRequest {
        version: "v3".into(),
        content: ReleaseContent { artifact: "registry/app@sha256:other".into(), ..Default::default() },
    };
    let (e, _) = command::create_release(&g.world, "shop", &req, "alice", g.now).unwrap();
    g.append("shop", "alice", e.into_iter().collect());
    let err = g.deploy("shop", "v3", "pipeline").unwrap_err();
    assert!(err.message.contains("differs from v3 of shop in its artifact, flags or migration"), "{err}");
}

#[test]
fn an_emergency_rollout_that_still_owes_its_approval_is_kept_however_many_follow() {
    let extra = "[approval]\nbefore_start = true\n[emergency]\nseverities = [\"sev1\"]\n[history]\nrollouts = 20\n";
    let mut g = two_environments(extra);
    let inc = Emergency { incident: "INC-7".into(), severity: "sev1".into(), justification: "checkout down".into() };
    g.deploy_as("shop", "v2", "pipeline", Some(inc)).expect("queued");
    g.approve("shop", "erin", true).expect("erin is an emergency approver");
    let id = g.active("shop").expect("started").id.clone();
    g.finish("shop", "v2");
    for n in 3..=30 {
        let v = format!("v{n}");
        g.release("shop", &v, "alice");
        g.complete("shop", &v);
    }
    let ws = g.world.workload("shop").unwrap();
    assert!(ws.forgotten.rollouts > 0, "older rollouts were let go");
    assert!(ws.rollout(&id).is_some(), "{id} owes an approval: kept, whatever its age");
    // Its starter still may not give the approval it skipped.
    let e = g.approve("shop", "pipeline", false).unwrap_err();
    assert!(e.message.contains("separation of duties"), "{e}");
    let ev = g.approve("shop", "bob", false).expect("approved after the fact");
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { gate, .. } if gate == "approval")));
}

#[test]
fn an_overdue_gate_is_flagged_once() {
    let extra = "requires = [\"compliance\"]\n[emergency]\nseverities = [\"sev1\"]\nout_of_band_within = \"1h\"\n";
    let mut g = two_environments(extra);
    g.complete("shop-staging", "v2");
    let e = Emergency { incident: "INC-7".into(), severity: "sev1".into(), justification: "now".into() };
    g.deploy_as("shop", "v2", "pipeline", Some(e)).unwrap();
    g.approve("shop", "erin", true).unwrap();
    g.now = g.now.plus_ms(2 * HOUR);
    let ev = g.tick("shop");
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { outcome: OwedOutcome::Overdue, .. })));
    assert!(g.tick("shop").is_empty(), "flagged once");
    let ev = g.attest("shop", "v2", "compliance", true);
    assert!(
        ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { outcome: OwedOutcome::Passed, .. })),
        "late but passed"
    );
}

#[test]
fn an_expired_emergency_approval_drops_the_deployment() {
    let mut g = two_environments("[emergency]\nseverities = [\"sev1\"]\nexpires = \"30m\"\n");
    g.deploy_as(
        "shop",
        "v2",
        "pipeline",
        Some(Emergency { incident: "INC-9".into(), severity: "sev1".into(), justification: "x".into() }),
    )
    .unwrap();
    // Blocked by an active rollout of staging? No: production has none; use the line to keep it queued.
    let stop = governance::stop_line(&g.world).unwrap();
    for (w, k) in stop {
        g.append(&w, "admin", vec![k]);
    }
    g.approve("shop", "erin", true).unwrap();
    assert!(g.active("shop").is_none(), "the line is stopped");
    g.now = g.now.plus_ms(HOUR);
    let ev = g.tick("shop");
    assert!(
        ev.iter().any(|e| matches!(&e.kind, EventKind::DeployDropped { why, .. } if why.contains("expired"))),
        "{ev:?}"
    );
}

#[test]
fn a_large_change_warns_or_needs_one_more_approval() {
    let mut g = G::new();
    g.apply(spec("shop", "\n[environment]\nmax_change_lines = 400\nover_size = \"approve\"\n"));
    g.release("shop", "v1", "alice");
    g.complete("shop", "v1");
    let req = ReleaseRequest {
        version: "v2".into(),
        content: ReleaseContent {
            metadata: ringfence_core::release::Metadata {
                size: Some(ChangeSize { files: 40, lines: 2_000, commits: 12 }),
                author: "alice".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let (e, _) = command::create_release(&g.world, "shop", &req, "alice", g.now).unwrap();
    g.append("shop", "alice", e.into_iter().collect());
    let ev = g.deploy("shop", "v2", "pipeline").unwrap();
    match &ev[0].kind {
        EventKind::DeployQueued { approvals_needed, waiting_for, .. } => {
            assert_eq!(*approvals_needed, 1);
            assert!(waiting_for[0].contains("2000 lines, above environment.max_change_lines = 400"), "{waiting_for:?}");
        }
        other => panic!("{other:?}"),
    }
    g.apply(spec("shop", "\n[environment]\nmax_change_lines = 400\n"));
    let (events, warnings) = command::deploy_governed(&g.world, "shop", "v2", "pipeline", None, g.now).unwrap();
    assert!(matches!(events.last(), Some(EventKind::DeployQueued { .. }) | Some(EventKind::RolloutStarted { .. })));
    assert!(warnings.iter().any(|w| w.contains("2000 lines")), "{warnings:?}");
}

#[test]
fn parity_shows_what_differs_beyond_the_version() {
    let mut g = G::new();
    g.apply(spec("shop-staging", "\n[environment]\nname = \"staging\"\n"));
    let prod = spec("shop", "\n[environment]\nname = \"production\"\nafter = \"shop-staging\"\n");
    let mut prod = prod;
    prod.executor.replicas = 4;
    g.apply(prod);
    for (w, v, pool) in [("shop-staging", "v2", "5"), ("shop", "v1", "20")] {
        let req = ReleaseRequest {
            version: v.into(),
            content: ReleaseContent {
                config: [("DB_POOL".to_string(), pool.to_string()), ("REGION".to_string(), "eu".to_string())].into(),
                ..Default::default()
            },
        };
        let (e, _) = command::create_release(&g.world, w, &req, "alice", g.now).unwrap();
        g.append(w, "alice", e.into_iter().collect());
        g.complete(w, v);
    }
    let d = governance::parity(g.world.workload("shop").unwrap(), g.world.workload("shop-staging").unwrap());
    let keys: Vec<String> = d.iter().map(|d| format!("{}:{}", d.area, d.key)).collect();
    assert_eq!(keys, vec!["spec:executor.replicas", "config:DB_POOL"], "{d:?}");
    assert_eq!(d[0].left, Some(serde_json::json!(4)));
}

#[test]
fn governance_changes_need_more_than_a_deploy() {
    let base = spec("shop", "");
    let weaker = spec("shop", "\n[approval]\nrequired = 1\nbefore_start = true\n");
    assert!(!base.governs_as(&weaker));
    let mut gates = base.clone();
    gates.rollout.phases[0].gates.push(Gate::Approval);
    assert!(!base.governs_as(&gates), "removing or adding an approval gate is governance");
    let mut bake = base.clone();
    bake.rollout.phases[0].bake = ringfence_core::duration::Dur(1);
    assert!(base.governs_as(&bake), "a bake is the deployer's");
}

#[test]
fn bad_governance_sections_are_refused_with_their_field() {
    for (extra, field) in [
        ("\n[environment]\nafter = \"shop\"\n", "environment.after"),
        ("\n[approval]\nrequired = 0\n", "approval.required"),
        ("\n[emergency]\nbake_factor = 2.0\n", "emergency.bake_factor"),
        ("\n[schedule]\nwindows = [\"Mon-Fri 9-17\"]\n", "schedule.windows[0]"),
        ("\n[schedule]\ntimezone = \"Mars/Olympus\"\n", "schedule.timezone"),
    ] {
        let text = spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1) + extra;
        let errs = spec::parse("t.toml", &text).expect_err(extra);
        assert!(errs.iter().any(|e| e.to_string().contains(field)), "{extra}: {errs:?}");
    }
}

#[test]
fn checks_ringfence_runs_wait_before_a_deployment_and_run_after_an_emergency_one() {
    let extra = "[[environment.checks]]\nname = \"tests\"\ncommand = [\"make\", \"test\"]\n[emergency]\nseverities = [\"sev1\"]\n";
    let mut g = two_environments(extra);
    g.complete("shop-staging", "v2");
    let ev = g.deploy("shop", "v2", "pipeline").unwrap();
    assert!(
        matches!(&ev[0].kind, EventKind::DeployQueued { waiting_for, .. } if waiting_for == &vec!["check tests to pass".to_string()])
    );
    let due = governance::checks_due(&g.world, "shop");
    assert_eq!(due.iter().map(|(v, c)| (v.as_str(), c.name.as_str())).collect::<Vec<_>>(), vec![("v2", "tests")]);
    g.attest("shop", "v2", "tests", false);
    assert!(governance::checks_due(&g.world, "shop").is_empty(), "ran once for this request");
    let ev = g.tick("shop");
    assert!(
        matches!(&ev[0].kind, EventKind::DeployDropped { why, .. } if why.contains("check tests failed")),
        "{ev:?}"
    );
    // The emergency path skips it, and it runs right after the rollout.
    let e = Emergency { incident: "INC-1".into(), severity: "sev1".into(), justification: "now".into() };
    g.deploy_as("shop", "v2", "pipeline", Some(e)).unwrap();
    let ev = g.approve("shop", "erin", true).unwrap();
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::EmergencyDeclared { skipped, .. } if skipped == &vec!["check tests".to_string(), "approval".to_string()])), "{ev:?}");
    assert!(governance::checks_due(&g.world, "shop").is_empty(), "not while the rollout runs");
    g.finish("shop", "v2");
    assert_eq!(governance::checks_due(&g.world, "shop").len(), 1, "out of band, right after");
    let ev = g.attest("shop", "v2", "tests", true);
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { gate, outcome: OwedOutcome::Passed, .. } if gate == "check tests")));
    assert!(governance::checks_due(&g.world, "shop").is_empty());
}

#[test]
fn a_queued_deployment_is_checked_again_when_it_would_start() {
    let mut g = two_environments("requires = [\"security-scan\"]\n[approval]\nbefore_start = true\n");
    g.complete("shop-staging", "v2");
    g.attest("shop", "v2", "security-scan", true);
    g.deploy("shop", "v2", "pipeline").expect("queued for an approval");
    // While it waits, a new scan finds a vulnerability.
    g.attest("shop", "v2", "security-scan", false);
    let ev = g.approve("shop", "bob", false).expect("the approval is recorded");
    assert!(
        ev.iter()
            .any(|e| matches!(&e.kind, EventKind::DeployDropped { why, .. } if why.contains("security-scan failed"))),
        "{ev:?}"
    );
    assert!(g.active("shop").is_none(), "nothing started");
}

#[test]
fn a_rollback_keeps_the_governance_in_force() {
    let mut g = G::new();
    g.apply(spec("shop", ""));
    for v in ["v1", "v2"] {
        g.release("shop", v, "alice");
        g.complete("shop", v);
    }
    let frozen = "[schedule]\noutside = \"refuse\"\n[[schedule.freezes]]\nfrom = \"2026-11-30T00:00:00Z\"\nto = \"2026-12-07T00:00:00Z\"\nreason = \"year-end\"\n[approval]\nbefore_start = true\n";
    let mut now = spec("shop", frozen);
    now.executor.replicas = 3;
    g.apply(now);
    let back = command::rollback_all(&g.world, "shop", None, "pipeline", "v2 is slow").expect("a rollback");
    let restored = back.iter().find_map(|e| match e {
        EventKind::SpecApplied { spec, .. } => Some(spec.clone()),
        _ => None,
    });
    // The spec v1 ran under comes back for what it runs, not for its governance.
    let s = restored.expect("v1's spec (2 replicas) comes back");
    assert_eq!(s.executor.replicas, 2);
    assert!(s.governs_as(&g.world.workload("shop").unwrap().spec), "{s:?}");
    assert!(!s.schedule.freezes.is_empty() && s.approval.before_start);
}

#[test]
fn a_promote_is_one_approval_of_the_ones_a_gate_needs() {
    let mut g = G::new();
    let mut s = spec("shop", "[approval]\nrequired = 2\n");
    s.rollout.phases[0].gates.push(Gate::Approval);
    g.apply(s);
    g.release("shop", "v1", "alice");
    g.complete("shop", "v1");
    g.release("shop", "v2", "alice");
    g.deploy("shop", "v2", "pipeline").unwrap();
    let ev = command::promote_all(&g.world, "shop", "bob", g.now).unwrap();
    assert!(matches!(ev[0], EventKind::ApprovalGiven { .. }), "{ev:?}");
    g.append("shop", "bob", ev);
    let (ws, r) = (g.world.workload("shop").unwrap(), g.active("shop").unwrap());
    assert!(!governance::phase_approved(ws, r, g.now), "one of two");
    g.approve("shop", "carol", false).unwrap();
    let (ws, r) = (g.world.workload("shop").unwrap(), g.active("shop").unwrap());
    assert!(governance::phase_approved(ws, r, g.now));
}

#[test]
fn the_checks_ringfence_runs_are_not_recorded_by_hand_and_no_check_runs_in_the_future() {
    let mut g = two_environments("[[environment.checks]]\nname = \"tests\"\ncommand = [\"make\", \"test\"]\n");
    let mut a = Attestation {
        kind: "tests".into(),
        source: "me".into(),
        subject: "sha256:v2".into(),
        passed: true,
        checked_at: None,
        detail: String::new(),
    };
    let e = governance::attest(&g.world, "shop", "v2", &a, "pipeline", g.now).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
    a.kind = "code-review".into();
    a.checked_at = Some(g.now.plus_ms(365 * 24 * HOUR));
    let e = governance::attest(&g.world, "shop", "v2", &a, "pipeline", g.now).unwrap_err();
    assert!(e.message.contains("future"), "{e}");
    assert!(governance::attest(&g.world, "shop", "v2", &a, "pipeline", g.now.plus_ms(366 * 24 * HOUR)).is_ok());
    let _ = &mut g;
}

#[test]
fn more_exposure_ahead_of_an_approval_is_governance() {
    let mut gated = spec("shop", "");
    gated.rollout.phases[1].gates.push(Gate::Approval);
    let mut wider = gated.clone();
    wider.rollout.phases[0].weight = 100.0;
    assert!(!gated.governs_as(&wider), "all users before anyone approves");
    let mut slower = gated.clone();
    slower.rollout.phases[0].bake = ringfence_core::duration::Dur(1);
    assert!(gated.governs_as(&slower), "bakes are the deployer's");
}

#[test]
fn a_release_withdrawn_in_the_previous_environment_is_not_promoted() {
    let mut g = two_environments("");
    g.complete("shop-staging", "v2");
    let e = command::rollback_all(&g.world, "shop-staging", Some("v1"), "oncall", "v2 is bad").unwrap();
    g.append("shop-staging", "oncall", e);
    g.finish("shop-staging", "v1");
    let e = command::revoke_release(&g.world, "shop-staging", "v2").unwrap();
    g.append("shop-staging", "oncall", vec![e]);
    let e = g.deploy("shop", "v2", "pipeline").unwrap_err();
    assert!(e.message.contains("not completed a rollout in shop-staging"), "{e}");
}

#[test]
fn approvals_need_a_named_author() {
    let mut g = G::new();
    g.apply(spec("shop", "[approval]\nbefore_start = true\n"));
    g.release("shop", "v1", "");
    let e = g.deploy("shop", "v1", "pipeline").unwrap_err();
    assert!(e.message.contains("names no author"), "{e}");
}

#[test]
fn the_approval_an_emergency_skipped_is_someone_elses_and_needs_as_many_people() {
    let mut g =
        two_environments("[approval]\nrequired = 2\nbefore_start = true\n[emergency]\nseverities = [\"sev1\"]\n");
    g.complete("shop-staging", "v2");
    let e = Emergency { incident: "INC-3".into(), severity: "sev1".into(), justification: "now".into() };
    g.deploy_as("shop", "v2", "pipeline", Some(e)).unwrap();
    g.approve("shop", "erin", true).unwrap();
    g.finish("shop", "v2");
    let e = g.approve("shop", "erin", false).unwrap_err();
    assert!(e.message.contains("someone else's"), "{e}");
    let ev = g.approve("shop", "bob", false).unwrap();
    assert!(!ev.iter().any(|e| matches!(e.kind, EventKind::OwedGateSettled { .. })), "one of two");
    let ev = g.approve("shop", "carol", false).unwrap();
    assert!(ev.iter().any(|e| matches!(&e.kind, EventKind::OwedGateSettled { outcome: OwedOutcome::Passed, .. })));
}

#[test]
fn a_rollback_to_the_queued_version_leaves_the_queue_alone() {
    let mut g = G::new();
    g.apply(spec("shop", "[approval]\nbefore_start = true\n"));
    for v in ["v1", "v2"] {
        g.release("shop", v, "alice");
        g.deploy("shop", v, "pipeline").unwrap();
        g.approve("shop", "bob", false).unwrap();
        g.finish("shop", v);
    }
    g.release("shop", "v3", "alice");
    g.deploy("shop", "v3", "pipeline").unwrap();
    let back = command::rollback_all(&g.world, "shop", Some("v1"), "oncall", "v2 is slow").unwrap();
    g.append("shop", "oncall", back);
    let ws = g.world.workload("shop").unwrap();
    assert_eq!(ws.governance.pending.as_ref().map(|p| p.version.as_str()), Some("v3"));
    assert_eq!(ws.active_rollout().unwrap().started_by, "oncall");
}
