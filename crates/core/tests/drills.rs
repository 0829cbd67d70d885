//! Drills and the lint rules that read history, through the core's public API: a drill's
//! start and its limits, how its report is judged from its rollout's record, and the
//! findings a workload's releases, last known good, peers and drills give. A simulated clock;
//! events are folded into the world as the server folds them.

use ringfence_core::command::{self, ErrorCode};
use ringfence_core::decision::{Decision, MitigationAction};
use ringfence_core::drill::{self, DrillOutcome, DrillRequest, DrillTraffic, Fault};
use ringfence_core::lint::{self, LintInput};
use ringfence_core::release::{ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::{RolloutKind, RolloutStatus};
use ringfence_core::spec::{self, WorkloadSpec};
use ringfence_core::{Event, EventKind, Timestamp, World};

const SEC: u64 = 1000;
/// Mon 2026-11-30 10:00 UTC.
const MONDAY_10: Timestamp = Timestamp(1_796_032_800_000);

struct H {
    world: World,
    seq: u64,
    now: Timestamp,
}

fn spec(name: &str, extra: &str) -> WorkloadSpec {
    let text = spec::EXAMPLE.replacen("name = \"checkout\"", &format!("name = \"{name}\""), 1) + extra;
    spec::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e:?}"))
}

impl H {
    fn new() -> H {
        H { world: World::default(), seq: 0, now: MONDAY_10 }
    }

    fn append(&mut self, workload: &str, actor: &str, kinds: Vec<EventKind>) {
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
        }
    }

    fn later(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
    }

    fn apply(&mut self, s: WorkloadSpec) {
        let name = s.workload.name.clone();
        let e = command::apply_spec(&self.world, &s).expect("valid").expect("new");
        self.append(&name, "admin", vec![e]);
    }

    fn release(&mut self, workload: &str, version: &str, content: ReleaseContent) {
        let req = ReleaseRequest { version: version.into(), content };
        let (e, _) = command::create_release(&self.world, workload, &req, "ci", self.now).expect("release");
        self.append(workload, "ci", e.into_iter().collect());
    }

    /// A workload whose `v1` completed a rollout: the stable version and last known good.
    fn stable(name: &str, extra: &str) -> H {
        H::stable_with(spec(name, extra))
    }

    fn stable_with(s: WorkloadSpec) -> H {
        let name = s.workload.name.clone();
        let name = name.as_str();
        let mut h = H::new();
        h.apply(s);
        h.release(name, "v1", content("v1"));
        let started = command::start_rollout(&h.world, name, "v1").expect("starts");
        h.append(name, "ci", started);
        let id = h.rollout(name).id.clone();
        h.append(
            name,
            "controller",
            vec![
                EventKind::RolloutCompleted { rollout_id: id.clone() },
                EventKind::LkgUpdated { version: "v1".into(), rollout_id: id },
            ],
        );
        h
    }

    fn rollout(&self, name: &str) -> std::sync::Arc<ringfence_core::Rollout> {
        self.world.workload(name).unwrap().rollouts.last().unwrap().clone()
    }

    fn drill(&mut self, name: &str, fault: &str) -> Result<(), command::CommandError> {
        let req = DrillRequest {
            fault: Fault::parse(fault).unwrap(),
            weight: None,
            outside_window: false,
            reason: "game day".into(),
            scheduled: false,
        };
        let events = drill::start(&self.world, name, &req, "alice", self.now)?;
        self.append(name, "alice", events);
        Ok(())
    }

    fn last_drill(&self, name: &str) -> drill::Drill {
        (**self.world.workload(name).unwrap().drills.last().unwrap()).clone()
    }

    /// What the controller does each tick while the drill runs.
    fn assess(&mut self, name: &str, traffic: DrillTraffic) -> Vec<EventKind> {
        let ws = self.world.workload(name).unwrap().clone();
        let d = self.last_drill(name);
        let events = drill::assess(&ws, &d, self.now, traffic);
        self.append(name, "controller", events.clone());
        events
    }

    fn bake(&mut self, name: &str) {
        let id = self.rollout(name).id.clone();
        self.append(name, "controller", vec![EventKind::BakeStarted { rollout_id: id, phase: 0, baseline: None }]);
    }

    fn halt(&mut self, name: &str, action: MitigationAction) {
        let r = self.rollout(name);
        let decision = Decision {
            action,
            rule: "error_rate is unhealthy".into(),
            summary: "error rate 50% against 0%".into(),
            phase: 0,
            phase_name: r.phases[0].name.clone(),
            weight: r.phases[0].weight,
            verdict: None,
            considered: vec![],
            bypass_flags: vec![],
        };
        self.append(
            name,
            "controller",
            vec![EventKind::RolloutHalted { rollout_id: r.id.clone(), decision: Box::new(decision) }],
        );
    }

    fn mitigated(&mut self, name: &str) {
        let id = self.rollout(name).id.clone();
        self.append(
            name,
            "controller",
            vec![EventKind::MitigationCompleted {
                rollout_id: id,
                verified: true,
                detail: "v1 serves everyone".into(),
            }],
        );
    }

    fn lint(&self, name: &str, previous: Option<&str>, approvers: Option<usize>) -> Vec<&'static str> {
        let ws = self.world.workload(name).unwrap();
        lint::lint(&LintInput {
            spec: &ws.spec,
            state: Some(ws),
            previous: previous.map(|p| self.world.workload(p).unwrap()),
            emergency_approvers: approvers,
            traffic: None,
            now: self.now,
        })
        .into_iter()
        .map(|f| f.rule)
        .collect()
    }
}

fn content(version: &str) -> ReleaseContent {
    ReleaseContent { artifact: format!("registry/app@sha256:{version}"), ..Default::default() }
}

#[test]
fn faults_parse_with_their_values_and_refuse_what_they_cannot_do() {
    assert_eq!(Fault::parse("error-rate").unwrap(), Fault::ErrorRate { rate: 0.5 });
    assert_eq!(Fault::parse("error-rate=0.2").unwrap(), Fault::ErrorRate { rate: 0.2 });
    assert_eq!(Fault::parse("latency=300ms").unwrap(), Fault::Latency { added_ms: 300 });
    assert_eq!(Fault::parse("signal-outage").unwrap(), Fault::SignalOutage);
    assert_eq!(Fault::parse("control-plane-down").unwrap(), Fault::ControlPlaneDown { down_ms: 10_000 });
    assert_eq!(Fault::parse("control-plane-down=3s").unwrap().describe(), "control-plane-down=3s");
    for (bad, says) in [
        ("error-rate=2", "at most 1"),
        ("error-rate=x", "expected a share"),
        ("latency=0ms", "above 0"),
        ("latency=2m", "at most 60s"),
        ("crash=1", "takes no value"),
        (
            "disk-full",
            "unknown fault `disk-full`; known: error-rate, latency, crash, hang, signal-outage, control-plane-down",
        ),
        ("control-plane-down=100ms", "1s to 10m"),
    ] {
        let e = Fault::parse(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_drill_copies_the_stable_release_and_runs_one_capped_phase() {
    let mut h = H::stable("shop", "");
    h.drill("shop", "error-rate=0.3").unwrap();
    let ws = h.world.workload("shop").unwrap();
    let d = h.last_drill("shop");
    assert_eq!((d.id.as_str(), d.version.as_str(), d.stable.as_str()), ("shop-drill-1", "v1+drill.1", "v1"));
    assert_eq!(ws.releases["v1+drill.1"].content.artifact, ws.releases["v1"].content.artifact);
    let r = h.rollout("shop");
    assert_eq!(r.kind, RolloutKind::Drill);
    assert_eq!(r.id, d.rollout_id);
    assert_eq!(r.phases.len(), 1);
    // [drill] max_weight defaults to 10%, under the plan's first phase's 10%: the bake is its.
    assert_eq!(r.phases[0].weight_bp(), 1000);
    assert_eq!(r.phases[0].bake, ws.spec.rollout.phases[0].bake);
    assert_eq!(d.detect_within_ms, ws.spec.rollout.phases[0].bake.as_ms());
    assert_eq!(d.fault.route_fault().unwrap().error_bp, 3000);
    // Another drill, or a deployment, waits for this one.
    assert_eq!(h.drill("shop", "crash").unwrap_err().code, ErrorCode::Conflict);
}

#[test]
fn a_drill_is_refused_without_a_stable_release_outside_windows_and_where_it_cannot_inject() {
    let mut h = H::new();
    h.apply(spec("new", ""));
    let e = h.drill("new", "crash").unwrap_err();
    assert!(e.message.contains("no stable release"), "{}", e.message);

    let mut h = H::stable("closed", "[schedule]\ntimezone = \"UTC\"\nwindows = [\"Sat 09:00-10:00\"]\n");
    let e = h.drill("closed", "crash").unwrap_err();
    assert!(e.message.contains("--outside-window"), "{}", e.message);
    let req = DrillRequest {
        fault: Fault::Crash,
        weight: Some(99.0),
        outside_window: true,
        reason: String::new(),
        scheduled: false,
    };
    let events = drill::start(&h.world, "closed", &req, "alice", h.now).expect("told to");
    h.append("closed", "alice", events);
    // Asked for 99%, capped at max_weight.
    assert_eq!(h.rollout("closed").phases[0].weight_bp(), 1000);

    let hooks = "[workload]\nname = \"hooks\"\n[executor]\nkind = \"command\"\n[executor.hooks]\ndeploy = [\"./deploy\"]\nstop = [\"./stop\"]\n[rollout]\n[[rollout.phases]]\nname = \"canary\"\nweight = 10\nbake = \"1m\"\n[[rollout.phases]]\nname = \"all\"\nweight = 100\nbake = \"1m\"\n";
    let mut h = H::stable_with(spec::parse("hooks.toml", hooks).unwrap_or_else(|e| panic!("{e:?}")));
    let e = h.drill("hooks", "hang").unwrap_err();
    assert!(e.message.contains("process executor"), "{}", e.message);
}

#[test]
fn a_detected_and_mitigated_fault_passes_with_its_times_and_opens_no_incident() {
    let mut h = H::stable("shop", "[drill]\nmitigate_within = \"10s\"\n");
    h.drill("shop", "error-rate").unwrap();
    h.later(2 * SEC);
    h.bake("shop");
    assert!(h.assess("shop", DrillTraffic::default()).is_empty(), "still running");
    h.later(4 * SEC);
    h.halt("shop", MitigationAction::Fallback);
    h.later(SEC);
    assert!(h.assess("shop", DrillTraffic::default()).is_empty(), "mitigating");
    h.mitigated("shop");
    let events = h.assess("shop", DrillTraffic { requests: 40, failed: 21 });
    assert_eq!(events.len(), 1, "{events:?}");
    let d = h.last_drill("shop");
    let r = d.report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Passed, "{r:?}");
    assert_eq!((r.time_to_detect_ms, r.time_to_mitigate_ms), (Some(4 * SEC), Some(SEC)));
    assert_eq!((r.requests, r.failed_requests), (40, 21));
    assert_eq!(r.mitigation.as_deref(), Some("fallback"));
    let ws = h.world.workload("shop").unwrap();
    assert!(ws.incidents.is_empty(), "a drill's halt is no incident");
    let dora = ringfence_core::dora::compute(ws, MONDAY_10, h.now.plus_ms(1));
    assert!(dora.deployments.iter().all(|d| d.version == "v1"), "{:?}", dora.deployments);
}

#[test]
fn a_drill_with_automatic_mitigation_off_fails_and_is_stopped() {
    let mut h = H::stable("manual", "[drill]\nmitigate_within = \"10s\"\n");
    h.drill("manual", "error-rate").unwrap();
    h.bake("manual");
    h.later(3 * SEC);
    h.halt("manual", MitigationAction::Hold);
    h.later(9 * SEC);
    assert!(h.assess("manual", DrillTraffic::default()).is_empty(), "waits mitigate_within");
    h.later(2 * SEC);
    let events = h.assess("manual", DrillTraffic::default());
    assert!(matches!(events[0], EventKind::RolloutAborted { .. }), "{events:?}");
    assert_eq!(h.rollout("manual").status, RolloutStatus::Aborted);
    let r = h.last_drill("manual").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Failed);
    assert!(r.problems[0].contains("exposure frozen"), "{:?}", r.problems);
    assert_eq!(r.time_to_detect_ms, Some(3 * SEC));
}

#[test]
fn an_undetected_fault_fails_the_drill() {
    let mut h = H::stable("blind", "");
    h.drill("blind", "latency=300ms").unwrap();
    h.bake("blind");
    let bake = h.rollout("blind").phases[0].bake.as_ms();
    // The phase passed: the rollout machine aborts a drill's rollout instead of advancing.
    h.later(bake);
    let id = h.rollout("blind").id.clone();
    h.append("blind", "controller", vec![EventKind::RolloutAborted { rollout_id: id.clone() }]);
    let events = h.assess("blind", DrillTraffic::default());
    assert_eq!(events.len(), 1);
    let r = h.last_drill("blind").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Aborted, "aborted without a pass: by hand");

    let mut h = H::stable("slow", "");
    h.drill("slow", "latency=300ms").unwrap();
    h.bake("slow");
    let bake = h.rollout("slow").phases[0].bake.as_ms();
    h.later(bake);
    assert!(h.assess("slow", DrillTraffic::default()).is_empty(), "the phase may extend a while");
    h.later(bake + 10 * SEC);
    let events = h.assess("slow", DrillTraffic::default());
    assert!(matches!(events[0], EventKind::RolloutAborted { .. }), "{events:?}");
    let r = h.last_drill("slow").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Failed);
    assert!(r.problems[0].contains("not detected"), "{:?}", r.problems);
}

#[test]
fn a_signal_outage_passes_when_the_rollout_holds() {
    let mut h = H::stable("dark", "");
    h.drill("dark", "signal-outage").unwrap();
    h.bake("dark");
    h.later(90 * SEC);
    let id = h.rollout("dark").id.clone();
    h.append("dark", "controller", vec![EventKind::PhaseHeld { rollout_id: id, phase: 0, verdict: None }]);
    let events = h.assess("dark", DrillTraffic::default());
    assert!(matches!(events[0], EventKind::RolloutAborted { .. }), "{events:?}");
    let r = h.last_drill("dark").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Passed, "{r:?}");
    assert_eq!(r.mitigation.as_deref(), Some("hold"));
    assert_eq!(r.time_to_detect_ms, Some(90 * SEC));
}

#[test]
fn drills_abort_by_hand_and_scheduled_ones_fall_due() {
    let mut h = H::stable("sched", "[[drill.scheduled]]\nfault = \"crash\"\nevery = \"7d\"\n");
    assert_eq!(drill::scheduled_due(h.world.workload("sched").unwrap(), h.now), Some(Fault::Crash));
    h.drill("sched", "crash").unwrap();
    assert_eq!(drill::scheduled_due(h.world.workload("sched").unwrap(), h.now), None, "one at a time");
    let events = drill::abort(&h.world, "sched", h.now).unwrap();
    h.append("sched", "alice", events);
    assert_eq!(h.rollout("sched").status, RolloutStatus::Aborted);
    assert_eq!(h.last_drill("sched").report.unwrap().outcome, DrillOutcome::Aborted);
    assert!(drill::abort(&h.world, "sched", h.now).is_err());
    assert_eq!(drill::scheduled_due(h.world.workload("sched").unwrap(), h.now), None, "ran a moment ago");
    h.later(7 * 24 * 3600 * SEC);
    assert_eq!(drill::scheduled_due(h.world.workload("sched").unwrap(), h.now), Some(Fault::Crash));
}

#[test]
fn history_rules_find_no_lkg_irreversible_migrations_drift_and_missing_approvers() {
    let mut h = H::new();
    h.apply(spec("fresh", "[emergency]\nseverities = [\"sev1\"]\n"));
    let f = h.lint("fresh", None, Some(0));
    assert!(f.contains(&"no-last-known-good"), "{f:?}");
    assert!(f.contains(&"no-emergency-approvers"), "{f:?}");
    assert!(!h.lint("fresh", None, Some(1)).contains(&"no-emergency-approvers"));

    let mut h = H::stable("db", "");
    let mut c = content("v2");
    c.migration = Some(ringfence_core::release::Migration {
        id: "0042-rewrite".into(),
        backward_compatible: false,
        ..Default::default()
    });
    h.release("db", "v2", c);
    let f = h.lint("db", None, None);
    assert!(f.contains(&"irreversible-without-way-back"), "{f:?}");
    assert!(!f.contains(&"no-last-known-good"), "{f:?}");
    let mut s = h.world.workload("db").unwrap().spec.clone();
    s.data.backup = Some(vec!["./backup.sh".into()]);
    let e = command::apply_spec(&h.world, &s).expect("valid").expect("changed");
    h.append("db", "admin", vec![e]);
    assert!(!h.lint("db", None, None).contains(&"irreversible-without-way-back"));

    let mut h = H::stable("prod", "");
    let mut staging = spec("staging", "");
    staging.health.max_error_rate = 0.2;
    h.apply(staging);
    let f = h.lint("prod", Some("staging"), None);
    assert!(f.contains(&"staging-differs"), "{f:?}");
}

#[test]
fn drill_rules_follow_each_automatically_mitigated_trigger() {
    let text = spec::EXAMPLE.replacen(
        "[mitigation]\nauto_fallback = true",
        "[mitigation]\nauto_fallback = true\ntrusted = [\"error_rate\", \"crash\"]",
        1,
    );
    assert!(text.contains("trusted"));
    let mut h = H::new();
    h.apply(spec::parse("t.toml", &text).unwrap());
    h.release("checkout", "v1", content("v1"));
    let started = command::start_rollout(&h.world, "checkout", "v1").unwrap();
    h.append("checkout", "ci", started);
    let id = h.rollout("checkout").id.clone();
    h.append(
        "checkout",
        "controller",
        vec![
            EventKind::RolloutCompleted { rollout_id: id.clone() },
            EventKind::LkgUpdated { version: "v1".into(), rollout_id: id },
        ],
    );
    let drills =
        |h: &H| h.lint("checkout", None, None).into_iter().filter(|r| r.starts_with("trigger-")).collect::<Vec<_>>();
    // error_rate and crash, not latency; and the control plane, since the fallback is automatic.
    assert_eq!(drills(&h), vec!["trigger-never-drilled"; 3]);

    // A failed drill of error_rate is an error.
    h.drill("checkout", "error-rate").unwrap();
    h.bake("checkout");
    h.later(3 * SEC);
    h.halt("checkout", MitigationAction::Hold);
    h.later(60 * SEC);
    h.assess("checkout", DrillTraffic::default());
    assert_eq!(drills(&h), vec!["trigger-drill-failed", "trigger-never-drilled", "trigger-never-drilled"]);

    // A passed one clears it, until it is older than max_age.
    h.drill("checkout", "error-rate").unwrap();
    h.bake("checkout");
    h.later(3 * SEC);
    h.halt("checkout", MitigationAction::Fallback);
    h.mitigated("checkout");
    h.assess("checkout", DrillTraffic::default());
    assert_eq!(h.last_drill("checkout").report.unwrap().outcome, DrillOutcome::Passed);
    assert_eq!(drills(&h), vec!["trigger-never-drilled"; 2]);
    h.later(31 * 24 * 3600 * SEC);
    assert_eq!(
        drills(&h),
        vec!["trigger-drill-stale", "trigger-never-drilled", "trigger-never-drilled"],
        "error_rate first, as it is listed"
    );
}

#[test]
fn with_trust_only_drilled_a_trigger_acts_alone_only_once_a_drill_passed() {
    use ringfence_core::decision::{DecisionContext, DecisionInput, decide};
    use ringfence_core::health::{Health, SignalResult, Verdict};
    let mut h = H::stable("earned", "[drill]\ntrust_only_drilled = true\n");
    let verdict = Verdict {
        health: Health::Unhealthy,
        model: None,
        signals: vec![SignalResult::new(
            "error_rate",
            "v2",
            Health::Unhealthy,
            "e-value",
            "sequential",
            "50% against 0%",
        )],
        window_ms: 5000,
        freshness_ms: 0,
        analyzer: "sequential".into(),
    };
    let decide_now = |h: &H, kind: RolloutKind| {
        let ws = h.world.workload("earned").unwrap();
        let undrilled = drill::undrilled(ws, h.now);
        let mut r = (*h.rollout("earned")).clone();
        r.kind = kind;
        r.from = Some("v1".into());
        let policy = ws.spec.mitigation.clone();
        let d = decide(&DecisionInput {
            rollout: &r,
            verdict: &verdict,
            policy: &policy,
            flags_only: false,
            context: DecisionContext {
                model: ws.spec.rollout.model,
                criticality: ws.spec.workload.criticality,
                guard_flags: &[],
                migration: None,
                backup: None,
                hotfix: None,
                undrilled: &undrilled,
            },
        });
        (d.action, d.rule)
    };
    let (action, rule) = decide_now(&h, RolloutKind::Deploy);
    assert_eq!(action, MitigationAction::Hold, "{rule}");
    assert!(rule.contains("trust_only_drilled") && rule.contains("no drill has exercised it"), "{rule}");
    // The drill itself falls back: it is what earns the trust.
    assert_eq!(decide_now(&h, RolloutKind::Drill).0, MitigationAction::Fallback);

    h.drill("earned", "error-rate").unwrap();
    h.bake("earned");
    h.later(3 * SEC);
    h.halt("earned", MitigationAction::Fallback);
    h.mitigated("earned");
    h.assess("earned", DrillTraffic::default());
    assert_eq!(h.last_drill("earned").report.unwrap().outcome, DrillOutcome::Passed);
    assert_eq!(decide_now(&h, RolloutKind::Deploy).0, MitigationAction::Fallback, "earned");
    h.later(31 * 24 * 3600 * SEC);
    let (action, rule) = decide_now(&h, RolloutKind::Deploy);
    assert_eq!(action, MitigationAction::Hold, "stale again: {rule}");
    assert!(rule.contains("older than [drill] max_age"), "{rule}");
}

#[test]
fn a_control_plane_outage_counts_detection_from_the_controllers_return() {
    let mut h = H::stable("cp", "[drill]\ndetect_within = \"5s\"\n");
    h.drill("cp", "control-plane-down=20s").unwrap();
    h.bake("cp");
    let d = h.last_drill("cp");
    assert_eq!(d.fault.route_fault().unwrap().error_bp, 5000, "the drill release fails while the controller is away");
    assert_eq!(d.controller_down_until(), None, "not before the fault takes effect");
    h.append("cp", "controller", vec![EventKind::DrillInjected { drill_id: d.id.clone(), detail: "down".into() }]);
    assert_eq!(h.last_drill("cp").controller_down_until(), Some(h.now.plus_ms(20 * SEC)));
    h.later(22 * SEC);
    h.halt("cp", MitigationAction::Fallback);
    h.later(SEC);
    h.mitigated("cp");
    h.assess("cp", DrillTraffic { requests: 300, failed: 150 });
    let r = h.last_drill("cp").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Passed, "{r:?}");
    assert_eq!(r.time_to_detect_ms, Some(2 * SEC), "from the return, not from the injection");
    assert_eq!(h.last_drill("cp").controller_down_until(), None, "over with the drill");
}

#[test]
fn a_drill_waits_for_the_line_and_a_person_rolling_it_back_aborts_it() {
    let mut h = H::stable("line", "");
    let stops = ringfence_core::governance::stop_line(&h.world).unwrap();
    for (w, e) in stops {
        h.append(&w, "admin", vec![e]);
    }
    let e = h.drill("line", "crash").unwrap_err();
    assert!(e.message.contains("the line is stopped"), "{}", e.message);

    let mut h = H::stable("manual", "");
    h.drill("manual", "error-rate").unwrap();
    h.bake("manual");
    let rollback =
        command::rollback(&h.world, "manual", None, "alice", "not now").expect("a person may always roll back");
    h.append("manual", "alice", vec![rollback]);
    assert!(h.assess("manual", DrillTraffic::default()).is_empty(), "judged once mitigated");
    h.mitigated("manual");
    h.assess("manual", DrillTraffic::default());
    let r = h.last_drill("manual").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Aborted, "{r:?}");
    let ws = h.world.workload("manual").unwrap();
    assert!(ws.held.is_empty(), "a drill release is not held: {:?}", ws.held);
}

#[test]
fn a_detection_or_a_mitigation_past_its_target_fails_the_drill() {
    let targets = "[drill]\ndetect_within = \"5s\"\nmitigate_within = \"10s\"\n";
    let mut h = H::stable("late", targets);
    h.drill("late", "error-rate").unwrap();
    h.bake("late");
    h.later(8 * SEC);
    h.halt("late", MitigationAction::Fallback);
    h.later(SEC);
    h.mitigated("late");
    h.assess("late", DrillTraffic::default());
    let r = h.last_drill("late").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Failed, "{r:?}");
    assert_eq!(r.problems, ["detected after 8s, the target is 5s"]);

    let mut h = H::stable("slow", targets);
    h.drill("slow", "error-rate").unwrap();
    h.bake("slow");
    h.later(2 * SEC);
    h.halt("slow", MitigationAction::Fallback);
    h.later(15 * SEC);
    h.mitigated("slow");
    h.assess("slow", DrillTraffic::default());
    let r = h.last_drill("slow").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Failed, "{r:?}");
    assert_eq!(r.time_to_mitigate_ms, Some(15 * SEC));
    assert_eq!(r.problems, ["mitigated 15s after detection, the target is 10s"]);
}

#[test]
fn a_mitigation_that_never_ends_fails_the_drill_and_is_left_to_finish() {
    let mut h = H::stable("stuck", "[drill]\nmitigate_within = \"10s\"\n");
    h.drill("stuck", "error-rate").unwrap();
    h.bake("stuck");
    h.later(2 * SEC);
    h.halt("stuck", MitigationAction::Fallback);
    assert_eq!(h.rollout("stuck").status, RolloutStatus::Mitigating);
    let id = h.rollout("stuck").id.clone();
    assert!(h.world.workload("stuck").unwrap().drill_of(&id).is_some_and(|d| d.fault.route_fault().is_some()));
    // Twice the target (20 s) is allowed before the drill gives up on it.
    h.later(19 * SEC);
    assert!(h.assess("stuck", DrillTraffic::default()).is_empty(), "still within twice the target");
    h.later(2 * SEC);
    let events = h.assess("stuck", DrillTraffic::default());
    assert!(matches!(events.as_slice(), [EventKind::DrillEnded { .. }]), "the mitigation is not aborted: {events:?}");
    let r = h.last_drill("stuck").report.unwrap();
    assert_eq!(r.outcome, DrillOutcome::Failed);
    assert_eq!(r.problems, ["the mitigation (fallback) was still under way 21s after detection, the target is 10s"]);
    assert_eq!(h.rollout("stuck").status, RolloutStatus::Mitigating, "the fallback goes on");
    assert!(h.world.workload("stuck").unwrap().drill_of(&id).is_none(), "the fault is taken out of the table");
}

#[test]
fn the_game_day_chart_draws_a_line_for_every_fault() {
    let mut h = H::stable("every", "[drill]\nmitigate_within = \"10s\"\n");
    for fault in drill::FAULTS {
        h.drill("every", fault).unwrap_or_else(|e| panic!("{fault}: {e:?}"));
        h.bake("every");
        h.later(20 * SEC);
        let id = h.rollout("every").id.clone();
        if fault == "signal-outage" {
            h.append("every", "controller", vec![EventKind::PhaseHeld { rollout_id: id, phase: 0, verdict: None }]);
        } else {
            h.halt("every", MitigationAction::Fallback);
            h.later(SEC);
            h.mitigated("every");
        }
        h.assess("every", DrillTraffic::default());
        assert!(h.last_drill("every").report.is_some(), "{fault} ended");
        h.later(60 * SEC);
    }
    let svg = drill::game_day_svg(h.world.workload("every").unwrap()).unwrap();
    for fault in drill::FAULTS {
        // Its line in the time-to-detect panel (a polyline titled with the fault) and its
        // legend entry.
        assert!(svg.contains(&format!("<title>{fault}</title></polyline>")), "no line for {fault}");
        assert!(svg.contains(&format!(">{fault}</text>")), "no legend for {fault}");
    }
}

#[test]
fn coverage_tells_covered_failing_stale_and_undrilled_modes_apart_with_their_trend() {
    let mut h = H::stable("cov", "[drill]\nmitigate_within = \"10s\"\nmax_age = \"7d\"\n");
    let passing = |h: &mut H, fault: &str, detect: u64| {
        h.drill("cov", fault).unwrap();
        h.bake("cov");
        h.later(detect);
        h.halt("cov", MitigationAction::Fallback);
        h.later(SEC);
        h.mitigated("cov");
        h.assess("cov", DrillTraffic::default());
        assert_eq!(h.last_drill("cov").report.unwrap().outcome, DrillOutcome::Passed);
        h.later(60 * SEC);
    };
    passing(&mut h, "crash", 3 * SEC);
    h.later(8 * 24 * 3600 * SEC);
    passing(&mut h, "error-rate", 4 * SEC);
    passing(&mut h, "error-rate", 3 * SEC);
    passing(&mut h, "error-rate", 2 * SEC);
    passing(&mut h, "latency", 2 * SEC);
    // The latest latency drill is detected too late.
    passing(&mut h, "latency", 2 * SEC);
    h.drill("cov", "latency").unwrap();
    h.bake("cov");
    h.later(600 * SEC);
    h.halt("cov", MitigationAction::Fallback);
    h.mitigated("cov");
    h.assess("cov", DrillTraffic::default());
    let ws = h.world.workload("cov").unwrap();
    let c = drill::coverage(ws, h.now);
    let of = |fault: &str| c.iter().find(|c| c.fault == fault).unwrap();
    let e = of("error-rate");
    assert_eq!((e.status, e.drills, e.passed, e.failed), ("covered", 3, 3, 0));
    assert_eq!(
        (e.first_detect_ms, e.median_detect_ms, e.latest_detect_ms),
        (Some(4 * SEC), Some(3 * SEC), Some(2 * SEC))
    );
    assert_eq!((e.first_mitigate_ms, e.latest_mitigate_ms), (Some(SEC), Some(SEC)));
    let l = of("latency");
    assert_eq!((l.status, l.drills, l.passed, l.failed), ("failing", 3, 2, 1));
    assert_eq!(of("crash").status, "stale", "its only pass is older than max_age");
    assert_eq!(of("hang").status, "not_drilled");
    assert_eq!((of("hang").first_detect_ms, of("hang").median_detect_ms), (None, None));
}
