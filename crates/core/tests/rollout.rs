//! The rollout state machine driven through the core's public API on a simulated clock.
//!
//! A small harness keeps a `World`, its event log and a clock that only moves when a test moves
//! it. Commands and `rollout::step` produce events; the harness numbers them, folds them into the
//! world and keeps them, exactly as the controller and the store would. Hours of bake run in
//! milliseconds: nothing here sleeps or reads the wall clock.

use ringfence_core::command::{self, CommandError, ErrorCode};
use ringfence_core::decision::MitigationAction;
use ringfence_core::duration::Dur;
use ringfence_core::event::{BakeBaseline, RouteGroup};
use ringfence_core::explain;
use ringfence_core::health::{Health, Observation, ThresholdAnalyzer, Traffic, VersionObservation};
use ringfence_core::release::{ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::{self, Rollout, RolloutKind, RolloutStatus, Stage, StepInput};
use ringfence_core::spec::{self, Gate, WorkloadSpec};
use ringfence_core::state::{Desired, WorkloadState, World};
use ringfence_core::{Event, EventKind, NewEvent, Timestamp};

const WL: &str = "checkout";
const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
/// 2026-11-22T10:25:06Z: any fixed instant will do, the core never reads the wall clock.
const EPOCH: Timestamp = Timestamp(1_795_343_106_000);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Sim {
    world: World,
    log: Vec<Event>,
    /// The world after each event of `log`, to check replay against.
    history: Vec<World>,
    now: Timestamp,
    /// The router process whose counters the controller reads (its instance id), if any.
    router: Option<String>,
}

impl Sim {
    fn new(spec: WorkloadSpec) -> Sim {
        let mut sim = Sim { world: World::default(), log: Vec::new(), history: Vec::new(), now: EPOCH, router: None };
        let applied = command::apply_spec(&sim.world, &spec).expect("spec is valid").expect("a new spec is stored");
        sim.append(applied, "alice", "apply checkout.toml");
        sim
    }

    /// A workload whose stable version (and only last known good) is `v1`.
    fn with_stable(spec: WorkloadSpec, v1: &str) -> Sim {
        let mut sim = Sim::new(spec);
        sim.release(v1);
        sim.cmd(|w| command::deploy(w, WL, v1)).expect("first deploy");
        let first = obs(vo(v1, 0, 0), None);
        sim.run_until(&first, true, MIN, 48 * HOUR, |k| matches!(k, EventKind::LkgUpdated { .. }));
        assert_eq!(sim.ws().stable.as_deref(), Some(v1));
        sim
    }

    fn ws(&self) -> &WorkloadState {
        self.world.workload(WL).expect("workload exists")
    }

    fn active(&self) -> &Rollout {
        self.ws().active_rollout().expect("a rollout is active")
    }

    fn latest(&self) -> &Rollout {
        self.ws().latest_rollout().expect("a rollout exists")
    }

    /// Numbers the event, folds it into the world and keeps it.
    fn append(&mut self, kind: EventKind, actor: &str, reason: &str) -> Event {
        let seq = self.log.len() as u64 + 1;
        let e = NewEvent { at: self.now, actor: actor.into(), reason: reason.into(), workload: WL.into(), kind }
            .numbered(seq);
        self.world.apply(&e);
        self.log.push(e.clone());
        self.history.push(self.world.clone());
        e
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
    }

    /// One controller step on the active rollout; appends and returns what it produced.
    fn tick(&mut self, observation: &Observation, converged: bool) -> Vec<EventKind> {
        let out = {
            let ws = self.ws();
            let Some(r) = ws.active_rollout() else {
                return vec![];
            };
            let input = StepInput {
                now: self.now,
                converged,
                observation,
                baseline_now: self.router.as_ref().map(|id| BakeBaseline {
                    router_instance: id.clone(),
                    canary: Traffic::default(),
                    stable: Some(Traffic::default()),
                    usage_rps_before: None,
                }),
                health: &ws.spec.health,
                mitigation: &ws.spec.mitigation,
                max_hold: ws.spec.rollout.max_hold,
                analyzer: &ThresholdAnalyzer,
                flags_only: false,
                decision: Default::default(),
                approved: ringfence_core::governance::phase_approved(ws, r, self.now),
                advance_blocked: ringfence_core::governance::advance_blocked(&self.world, ws, r, self.now),
            };
            rollout::step(r, &input)
        };
        for k in &out {
            self.append(k.clone(), "controller", "rollout step");
        }
        out
    }

    /// Moves the clock by `every` and ticks, until a tick produced an event matching `stop`.
    /// Panics when `max` of simulated time passes first.
    fn run_until(
        &mut self,
        observation: &Observation,
        converged: bool,
        every: u64,
        max: u64,
        stop: impl Fn(&EventKind) -> bool,
    ) -> Vec<EventKind> {
        let start = self.now;
        let first = self.tick(observation, converged);
        if first.iter().any(&stop) {
            return first;
        }
        while self.now.since(start) < max {
            self.advance(every);
            let out = self.tick(observation, converged);
            if out.iter().any(&stop) {
                return out;
            }
        }
        panic!(
            "nothing matched within {} of simulated time; last events: {:?}",
            Dur(max),
            names_of(self.log.iter().rev().take(5).map(|e| &e.kind))
        );
    }

    /// Ticks every `every` for `total` of simulated time and returns everything produced.
    fn run_for(&mut self, observation: &Observation, converged: bool, every: u64, total: u64) -> Vec<EventKind> {
        let start = self.now;
        let mut all = Vec::new();
        while self.now.since(start) + every <= total {
            self.advance(every);
            all.extend(self.tick(observation, converged));
        }
        all
    }

    /// Runs a command against the world; on success appends its event as `alice`.
    /// `promote` by bob (not the author, alice): his approval at an approval gate, then the
    /// promote itself, which is returned.
    fn promote(&mut self) -> Result<Event, CommandError> {
        let events = command::promote_all(&self.world, WL, "bob", self.now)?;
        let mut last = None;
        for k in events {
            last = Some(self.append(k, "bob", "by hand"));
        }
        Ok(last.expect("a promote"))
    }

    fn cmd(&mut self, f: impl FnOnce(&World) -> Result<EventKind, CommandError>) -> Result<Event, CommandError> {
        let kind = f(&self.world)?;
        Ok(self.append(kind, "alice", "by hand"))
    }

    fn release(&mut self, version: &str) {
        let (kind, release) =
            command::create_release(&self.world, WL, &request(version), "alice", self.now).expect("release is valid");
        assert_eq!(release.version, version);
        self.append(kind.expect("a new release"), "alice", "release create");
    }

    fn count(&self, type_name: &str) -> usize {
        self.log.iter().filter(|e| e.kind.type_name() == type_name).count()
    }

    /// Events of this type about the latest rollout.
    fn count_latest(&self, type_name: &str) -> usize {
        let id = self.latest().id.as_str();
        self.log.iter().filter(|e| e.kind.rollout_id() == Some(id) && e.kind.type_name() == type_name).count()
    }
}

/// The example spec with the plan these tests are written against (5% / 25% / 50% / 100%,
/// bakes of 30 s, 1 min, 2 min, 2 min): the state machine is what is tested here, not the
/// example's bakes, which follow the planner.
fn example_spec() -> WorkloadSpec {
    let mut spec = spec::parse("checkout.toml", spec::EXAMPLE).expect("the example spec is valid");
    for (phase, (weight, bake)) in
        spec.rollout.phases.iter_mut().zip([(5.0, 30), (25.0, 60), (50.0, 120), (100.0, 120)])
    {
        phase.weight = weight;
        phase.bake = Dur::secs(bake);
    }
    spec
}

fn request(version: &str) -> ReleaseRequest {
    ReleaseRequest {
        version: version.into(),
        content: ReleaseContent { artifact: format!("registry.example/checkout:{version}"), ..Default::default() },
    }
}

/// A version with `requests` requests of which `errors` failed, fast, and probes answering.
fn vo(version: &str, requests: u64, errors: u64) -> VersionObservation {
    VersionObservation {
        version: version.into(),
        traffic: Some(Traffic {
            requests,
            errors,
            latency_us: if requests > 0 { vec![(20_000, requests)] } else { vec![] },
        }),
        probes_answered: 2,
        ..Default::default()
    }
}

fn obs(canary: VersionObservation, baseline: Option<VersionObservation>) -> Observation {
    Observation { canary, baseline, window_ms: 30 * SEC, freshness_ms: 250, signals: vec![] }
}

/// Plenty of clean traffic on both versions.
fn healthy(new: &str, stable: &str) -> Observation {
    obs(vo(new, 400, 2), Some(vo(stable, 4_000, 20)))
}

/// The canary fails 20% of 100 requests; the stable version is fine.
fn failing(new: &str, stable: &str) -> Observation {
    obs(vo(new, 100, 20), Some(vo(stable, 2_000, 10)))
}

fn names_of<'a>(kinds: impl IntoIterator<Item = &'a EventKind>) -> Vec<String> {
    kinds.into_iter().map(EventKind::type_name).collect()
}

fn names(kinds: &[EventKind]) -> Vec<String> {
    names_of(kinds)
}

fn route(name: &str, version: &str, weight_bp: u32) -> RouteGroup {
    RouteGroup {
        name: name.into(),
        version: version.into(),
        weight_bp,
        runs_on: version.into(),
        segment: None,
        shadow_bp: 0,
        fault: None,
    }
}

fn stable_only(version: &str, replicas: u32) -> Desired {
    Desired { versions: vec![(version.into(), replicas)], routes: vec![route("stable", version, 10_000)] }
}

/// `v1` stable, `v2` registered and deployed, its canary phase baking since now.
fn canary_baking() -> Sim {
    canary_baking_with(example_spec())
}

fn canary_baking_with(spec: WorkloadSpec) -> Sim {
    let mut sim = Sim::with_stable(spec, "v1");
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).expect("deploy v2");
    let out = sim.tick(&healthy("v2", "v1"), true);
    assert_eq!(names(&out), ["bake_started"]);
    assert_eq!(sim.active().stage, Stage::Baking);
    sim
}

// ---------------------------------------------------------------------------------------------
// 1. First deploy
// ---------------------------------------------------------------------------------------------

#[test]
fn first_deploy_is_one_initial_phase_and_becomes_stable_and_lkg() {
    let mut sim = Sim::new(example_spec());
    sim.release("v1");
    assert_eq!(sim.ws().desired(), Desired::default(), "nothing runs yet");

    let started = sim.cmd(|w| command::deploy(w, WL, "v1")).unwrap();
    let EventKind::RolloutStarted { kind, from, phases, .. } = &started.kind else {
        panic!("expected rollout_started, got {started:?}");
    };
    assert_eq!(*kind, RolloutKind::Initial);
    assert_eq!(*from, None);
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].weight_bp(), 10_000);
    assert_eq!(phases[0].bake, Dur::secs(30), "the first phase's bake");
    assert_eq!(phases[0].gates, vec![Gate::Health]);
    assert_eq!(
        sim.ws().desired(),
        Desired { versions: vec![("v1".into(), 2)], routes: vec![route("canary", "v1", 10_000)] }
    );
    assert_eq!(sim.ws().stable, None);

    // Probes answer and no traffic comes: a first deploy is judged on probes.
    let first = obs(vo("v1", 0, 0), None);
    assert!(sim.run_for(&first, false, 10 * SEC, 5 * MIN).is_empty());
    assert_eq!(sim.active().stage, Stage::Deploying);

    assert_eq!(names(&sim.tick(&first, true)), ["bake_started"]);
    let bake_at = sim.now;
    let out = sim.run_until(&first, true, SEC, HOUR, |k| matches!(k, EventKind::RolloutCompleted { .. }));
    assert_eq!(names(&out), ["phase_passed", "rollout_completed", "lkg_updated"]);
    assert_eq!(sim.now.since(bake_at), 30 * SEC);

    let ws = sim.ws();
    assert_eq!(ws.stable.as_deref(), Some("v1"));
    let lkg = ws.lkg().unwrap();
    assert_eq!(lkg.version, "v1");
    assert_eq!(lkg.rollout_id, sim.latest().id);
    assert_eq!(lkg.spec_digest, ws.spec_digest);
    assert_eq!(ws.pin, None);
    assert_eq!(sim.latest().status, RolloutStatus::Completed);
    assert_eq!(sim.latest().ended_at, Some(sim.now));
    assert!(ws.active_rollout().is_none());
    assert_eq!(ws.desired(), stable_only("v1", 2));
}

#[test]
fn first_deploy_holds_while_no_probe_has_answered() {
    let mut sim = Sim::new(example_spec());
    sim.release("v1");
    sim.cmd(|w| command::deploy(w, WL, "v1")).unwrap();
    let mut silent = obs(vo("v1", 0, 0), None);
    silent.canary.probes_answered = 0;
    assert_eq!(names(&sim.tick(&silent, true)), ["bake_started"]);
    let out = sim.run_for(&silent, true, 10 * SEC, 2 * HOUR);
    assert_eq!(names(&out), ["phase_held", "escalated"]);
    assert_eq!(sim.ws().stable, None);
    assert_eq!(sim.active().status, RolloutStatus::Progressing);

    // As soon as the probes answer, it completes.
    let out = sim.tick(&obs(vo("v1", 0, 0), None), true);
    assert_eq!(names(&out), ["phase_passed", "rollout_completed", "lkg_updated"]);
    assert_eq!(sim.ws().stable.as_deref(), Some("v1"));
}

// ---------------------------------------------------------------------------------------------
// 2. A healthy release through every phase, hours of bake on the simulated clock
// ---------------------------------------------------------------------------------------------

#[test]
fn healthy_release_is_promoted_through_every_phase_on_simulated_hours() {
    let mut spec = example_spec();
    let bakes = [2 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR];
    for (phase, bake) in spec.rollout.phases.iter_mut().zip(bakes) {
        phase.bake = Dur(bake);
    }
    let mut sim = Sim::with_stable(spec, "v1");
    let lkg_before = sim.ws().lkg.clone();
    sim.release("v2");
    let begin = sim.now;

    let started = sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let EventKind::RolloutStarted { rollout_id, kind, from, phases, .. } = &started.kind else {
        panic!("expected rollout_started, got {started:?}");
    };
    assert_eq!(*kind, RolloutKind::Deploy);
    assert_eq!(from.as_deref(), Some("v1"));
    assert_eq!(phases.len(), 4);
    let rollout_id = rollout_id.clone();

    let good = healthy("v2", "v1");
    let tick_every = 5 * MIN;
    let weights = [500, 2_500, 5_000, 10_000];
    for (i, (&w, &bake)) in weights.iter().zip(&bakes).enumerate() {
        let r = sim.active();
        assert_eq!((r.phase, r.stage), (i, Stage::Deploying), "phase {i}");
        assert_eq!(r.target_weight_bp(), w);
        let d = sim.ws().desired();
        assert_eq!(
            d.routes,
            vec![route("canary", "v2", w), route("stable", "v1", 10_000 - w)],
            "phase {i}: canary first, the remainder on stable"
        );
        assert_eq!(d.versions, vec![("v1".into(), 2), ("v2".into(), 2)]);
        assert_eq!(sim.ws().stable.as_deref(), Some("v1"), "phase {i}");
        assert_eq!(sim.ws().lkg, lkg_before, "phase {i}: LKG moves only at the end");

        assert_eq!(names(&sim.tick(&good, true)), ["bake_started"], "phase {i}");
        let bake_at = sim.now;
        let out = sim.run_until(&good, true, tick_every, 24 * HOUR, |_| true);
        let baked = sim.now.since(bake_at);
        assert!(
            baked >= bake && baked < bake + tick_every,
            "phase {i} baked {} for a bake of {}",
            Dur(baked),
            Dur(bake)
        );
        if i + 1 < weights.len() {
            assert_eq!(names(&out), ["phase_passed", "phase_started"], "phase {i}");
            let EventKind::PhasePassed { phase, verdict, by_hand, window, .. } = &out[0] else { unreachable!() };
            assert_eq!((*phase, *by_hand), (i, false));
            assert_eq!(verdict.health, Health::Healthy);
            // The traffic the phase was judged on is kept for the next phases to carry.
            let window = window.as_ref().expect("a comparison phase records its window");
            assert_eq!((window.phase, window.weight_bp), (i, w));
            assert_eq!(Some(&window.canary), good.canary.traffic.as_ref());
            assert_eq!(sim.latest().windows.len(), i + 1);
            assert!(matches!(out[1], EventKind::PhaseStarted { phase, .. } if phase == i + 1));
        } else {
            // The last phase has an approval gate: healthy and baked, it still waits.
            assert_eq!(names(&out), ["phase_held"]);
            let EventKind::PhaseHeld { verdict, .. } = &out[0] else { unreachable!() };
            assert_eq!(verdict.as_ref().unwrap().health, Health::Healthy);
        }
    }

    // Waiting for the approval, within max_hold: nothing happens, nothing moves.
    assert!(sim.run_for(&good, true, MIN, 5 * MIN).is_empty());
    assert_eq!(sim.active().status, RolloutStatus::Progressing);
    assert_eq!(sim.ws().stable.as_deref(), Some("v1"));
    assert_eq!(sim.ws().lkg, lkg_before);

    let promoted = sim.promote().unwrap();
    assert!(matches!(promoted.kind, EventKind::PromoteRequested { .. }));
    let out = sim.tick(&good, true);
    assert_eq!(names(&out), ["phase_passed", "rollout_completed", "lkg_updated"]);
    assert!(
        matches!(&out[0], EventKind::PhasePassed { phase: 3, by_hand: false, window: None, .. }),
        "an approval after a healthy bake is the gate itself, not a bypass: {:?}",
        out[0]
    );

    let ws = sim.ws();
    let r = ws.rollout(&rollout_id).unwrap();
    assert_eq!(r.status, RolloutStatus::Completed);
    assert_eq!(ws.stable.as_deref(), Some("v2"));
    assert_eq!(ws.lkg.len(), 2);
    assert_eq!(ws.lkg().unwrap().version, "v2");
    assert_eq!(ws.lkg().unwrap().rollout_id, rollout_id);
    assert_eq!(ws.pin, None);
    assert_eq!(ws.desired(), stable_only("v2", 2));
    assert_eq!(sim.count_latest("escalated"), 0);
    assert_eq!(sim.count_latest("rollout_halted"), 0);
    assert!(sim.now.since(begin) >= 20 * HOUR, "20 hours of bake were simulated");
}

#[test]
fn phase_never_passes_before_its_bake_is_over() {
    // Tick every simulated second: the pass lands on the exact millisecond the bake ends.
    let mut sim = canary_baking();
    let bake_at = sim.now;
    let good = healthy("v2", "v1");
    assert!(sim.run_for(&good, true, SEC, 29 * SEC).is_empty());
    sim.advance(SEC - 1);
    assert!(sim.tick(&good, true).is_empty(), "29.999 s is not 30 s");
    sim.advance(1);
    assert_eq!(names(&sim.tick(&good, true)), ["phase_passed", "phase_started"]);
    assert_eq!(sim.now.since(bake_at), 30 * SEC);
}

#[test]
fn a_baking_phase_says_when_it_falls_due_and_a_pause_stops_the_clock() {
    let mut sim = canary_baking();
    let good = healthy("v2", "v1");
    assert_eq!(sim.active().bake_due_in_ms(sim.now), Some(30 * SEC));
    assert!(sim.run_for(&good, true, SEC, 10 * SEC).is_empty());
    assert_eq!(sim.active().bake_due_in_ms(sim.now), Some(20 * SEC));
    sim.cmd(|w| command::pause(w, WL)).expect("pause");
    assert_eq!(sim.active().bake_due_in_ms(sim.now), None, "paused: nothing falls due");
    sim.advance(60 * SEC);
    sim.cmd(|w| command::resume(w, WL)).expect("resume");
    assert_eq!(sim.active().bake_due_in_ms(sim.now), Some(20 * SEC), "the paused minute does not count");
    sim.advance(20 * SEC);
    assert_eq!(sim.active().bake_due_in_ms(sim.now), Some(0));
    assert_eq!(names(&sim.tick(&good, true)), ["phase_passed", "phase_started"]);
}

// ---------------------------------------------------------------------------------------------
// 3. Not converged
// ---------------------------------------------------------------------------------------------

#[test]
fn phase_stays_deploying_until_converged() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let good = healthy("v2", "v1");

    let out = sim.run_for(&good, false, MIN, 3 * HOUR);
    assert!(out.is_empty(), "{:?}", names(&out));
    let r = sim.active();
    assert_eq!((r.phase, r.stage), (0, Stage::Deploying));
    assert_eq!(r.bake_started_at, None);
    assert_eq!(r.baked_ms(sim.now), 0, "time spent deploying is not bake");
    assert_eq!(sim.count_latest("bake_started"), 0);

    assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    assert_eq!(sim.active().bake_started_at, Some(sim.now));
    // The bake counts from convergence, not from the start of the phase.
    sim.advance(29 * SEC);
    assert!(sim.tick(&good, true).is_empty());
    sim.advance(SEC);
    assert_eq!(names(&sim.tick(&good, true)), ["phase_passed", "phase_started"]);

    // The next phase deploys again and waits for convergence again.
    assert!(sim.run_for(&good, false, MIN, HOUR).is_empty());
    assert_eq!(sim.active().stage, Stage::Deploying);
    assert_eq!(sim.active().phase, 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Unknown never promotes
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_verdict_holds_once_escalates_once_and_never_promotes() {
    let few = obs(vo("v2", 19, 0), Some(vo("v1", 2_000, 0)));
    let few_all_failing = obs(vo("v2", 19, 19), Some(vo("v1", 2_000, 0)));
    let mut unreadable = healthy("v2", "v1");
    unreadable.canary.traffic = None;
    unreadable.baseline.as_mut().unwrap().traffic = None;
    let mut silent_probes = healthy("v2", "v1");
    silent_probes.canary.probes_answered = 0;
    let no_traffic = obs(vo("v2", 0, 0), Some(vo("v1", 0, 0)));

    for (case, unknown) in [
        ("fewer requests than min_requests", few),
        ("few requests, all failing", few_all_failing),
        ("router unreadable", unreadable),
        ("no probe answered", silent_probes),
        ("no traffic at all", no_traffic),
    ] {
        let mut sim = canary_baking();
        let bake_at = sim.now;

        // During the bake an unknown verdict changes nothing.
        let out = sim.run_for(&unknown, true, 5 * SEC, 30 * SEC - 5 * SEC);
        assert!(out.is_empty(), "{case}: {:?}", names(&out));

        // The bake ends: held, once.
        sim.advance(5 * SEC);
        let out = sim.tick(&unknown, true);
        assert_eq!(names(&out), ["phase_held"], "{case}");
        let EventKind::PhaseHeld { verdict, .. } = &out[0] else { unreachable!() };
        assert_eq!(verdict.as_ref().unwrap().health, Health::Unknown, "{case}");
        let held_at = sim.now;
        assert_eq!(held_at.since(bake_at), 30 * SEC);

        // Just short of max_hold (10m): nothing more.
        let out = sim.run_for(&unknown, true, 5 * SEC, 10 * MIN - 5 * SEC);
        assert!(out.is_empty(), "{case}: {:?}", names(&out));
        sim.advance(5 * SEC);
        assert_eq!(names(&sim.tick(&unknown, true)), ["escalated"], "{case}");
        assert_eq!(sim.now.since(held_at), 10 * MIN);

        // And then nothing, for a simulated day: it never passes, halts or escalates again.
        let out = sim.run_for(&unknown, true, MIN, 24 * HOUR);
        assert!(out.is_empty(), "{case}: {:?}", names(&out));
        let r = sim.active();
        assert_eq!(r.status, RolloutStatus::Progressing, "{case}");
        assert_eq!((r.phase, r.stage), (0, Stage::Baking), "{case}");
        assert!(r.escalated, "{case}");
        assert_eq!(sim.count_latest("phase_held"), 1, "{case}");
        assert_eq!(sim.count_latest("escalated"), 1, "{case}");
        assert_eq!(sim.count_latest("phase_passed"), 0, "{case}");
        assert_eq!(sim.count_latest("rollout_halted"), 0, "{case}");
        assert_eq!(sim.ws().stable.as_deref(), Some("v1"), "{case}");
        assert_eq!(sim.ws().desired().routes[0], route("canary", "v2", 500), "{case}: exposure stays where it was");

        // Data arrives and is good: the held phase passes.
        let out = sim.tick(&healthy("v2", "v1"), true);
        assert_eq!(names(&out), ["phase_passed", "phase_started"], "{case}");
        assert!(!sim.active().escalated, "{case}");
        assert_eq!(sim.active().held_since, None, "{case}");
    }
}

#[test]
fn a_phase_held_past_max_hold_falls_back_when_the_spec_says_so() {
    let mut spec = example_spec();
    spec.mitigation.fallback_after_max_hold = true;
    let mut sim = canary_baking_with(spec);
    let few = obs(vo("v2", 19, 0), Some(vo("v1", 2_000, 0)));
    sim.run_for(&few, true, 5 * SEC, 30 * SEC);
    assert_eq!(sim.count_latest("phase_held"), 1);
    sim.run_for(&few, true, 5 * SEC, 10 * MIN - 5 * SEC);
    assert_eq!(sim.count_latest("rollout_halted"), 0, "not before max_hold");
    sim.advance(5 * SEC);
    assert_eq!(names(&sim.tick(&few, true)), ["escalated", "rollout_halted"]);
    let r = sim.latest();
    assert_eq!(r.status, RolloutStatus::Mitigating);
    let d = r.decision.as_ref().expect("a decision");
    assert_eq!(d.action, MitigationAction::Fallback);
    assert!(d.rule.contains("fallback_after_max_hold") && d.summary.contains("could not be shown healthy"), "{d:?}");
    // Waiting for an approval is not a want of evidence: that hold never falls back.
    let mut spec = example_spec();
    spec.mitigation.fallback_after_max_hold = true;
    spec.rollout.phases[0].gates = vec![Gate::Health, Gate::Approval];
    let mut sim = canary_baking_with(spec);
    let good = healthy("v2", "v1");
    sim.run_for(&good, true, 5 * SEC, 30 * SEC + 11 * MIN);
    assert_eq!(sim.count_latest("escalated"), 1);
    assert_eq!(sim.count_latest("rollout_halted"), 0);
}

#[test]
fn a_router_restart_mid_bake_restarts_the_analysis_window_and_keeps_the_bake() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.router = Some("router-a".into());
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).expect("deploy v2");
    let good = healthy("v2", "v1");
    assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    let bake_at = sim.now;
    sim.run_for(&good, true, SEC, 10 * SEC);
    // The router restarts: its counters start over, and so does the window.
    sim.router = Some("router-b".into());
    assert_eq!(names(&sim.tick(&good, true)), ["baseline_reset"]);
    let r = sim.active();
    assert_eq!(r.baseline.as_ref().map(|b| b.router_instance.as_str()), Some("router-b"));
    assert_eq!(r.window_started_at, Some(sim.now));
    assert_eq!(r.bake_started_at, Some(bake_at), "the bake served still counts");
    // Nothing more while the same router serves; the phase passes when its bake is over.
    let out = sim.run_until(&good, true, SEC, MIN, |k| matches!(k, EventKind::PhasePassed { .. }));
    assert!(!names(&out).iter().any(|n| n == "baseline_reset"), "{:?}", names(&out));
    assert_eq!(sim.now.since(bake_at), 30 * SEC);
}

#[test]
fn router_unreadable_never_halts_even_while_deploying() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let mut unreadable = healthy("v2", "v1");
    unreadable.canary.traffic = None;
    unreadable.baseline = None;
    assert!(sim.run_for(&unreadable, false, MIN, HOUR).is_empty());
    assert_eq!(names(&sim.tick(&unreadable, true)), ["bake_started"]);
    let out = sim.run_for(&unreadable, true, MIN, 12 * HOUR);
    assert_eq!(names(&out), ["phase_held", "escalated"]);
    assert_eq!(sim.active().status, RolloutStatus::Progressing);
}

// ---------------------------------------------------------------------------------------------
// 5. Unhealthy halts at once and falls back
// ---------------------------------------------------------------------------------------------

/// Drives a fresh `v1` -> `v2` rollout into phase `phase`, `into_bake` into its bake.
fn baking_in_phase(phase: usize, into_bake: u64) -> Sim {
    let mut sim = canary_baking();
    let good = healthy("v2", "v1");
    while sim.active().phase < phase {
        sim.run_until(&good, true, SEC, HOUR, |k| matches!(k, EventKind::PhaseStarted { .. }));
        assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    }
    sim.run_for(&good, true, SEC, into_bake);
    assert_eq!(sim.active().stage, Stage::Baking);
    assert_eq!(sim.active().phase, phase);
    sim
}

#[test]
fn unhealthy_halts_at_once_mid_bake_and_falls_back_to_stable() {
    for (phase, name, weight, into_bake) in
        [(0, "canary", 5.0, 10 * SEC), (1, "early", 25.0, 59 * SEC), (2, "half", 50.0, SEC)]
    {
        let mut sim = baking_in_phase(phase, into_bake);
        let id = sim.active().id.clone();
        let out = sim.tick(&failing("v2", "v1"), true);
        assert_eq!(names(&out), ["rollout_halted"], "phase {name}");
        let EventKind::RolloutHalted { decision, .. } = &out[0] else { unreachable!() };
        assert_eq!(decision.action, MitigationAction::Fallback, "{name}");
        assert_eq!(decision.phase, phase);
        assert_eq!(decision.phase_name, name);
        assert_eq!(decision.weight, weight);
        let verdict = decision.verdict.as_ref().expect("evidence is kept");
        assert_eq!(verdict.health, Health::Unhealthy);
        assert_eq!(verdict.analyzer, "threshold");
        let deciding: Vec<_> = verdict.deciding().collect();
        assert_eq!(deciding.len(), 1, "{deciding:?}");
        let s = deciding[0];
        assert_eq!(s.signal, "error_rate");
        assert_eq!(s.version, "v2");
        assert_eq!(s.observed, Some(0.2));
        assert_eq!(s.threshold, Some(0.05));
        assert_eq!(s.sample_size, 100);
        assert_eq!(s.baseline, Some(0.005), "the stable version's rate");
        assert_eq!(s.baseline_sample_size, Some(2_000));
        assert!(decision.summary.contains("v1"), "{}", decision.summary);

        let r = sim.ws().rollout(&id).unwrap();
        assert_eq!(r.status, RolloutStatus::Mitigating, "{name}");
        assert_eq!(r.target_weight_bp(), 0);
        assert_eq!(sim.ws().desired(), stable_only("v1", 2), "{name}");

        // Until the world has fallen back, nothing more.
        assert!(sim.run_for(&failing("v2", "v1"), false, SEC, MIN).is_empty());

        let mut after = obs(vo("v2", 0, 0), Some(vo("v1", 3_000, 3)));
        after.canary.probes_answered = 0;
        let out = sim.tick(&after, true);
        assert_eq!(names(&out), ["mitigation_completed"], "{name}");
        let EventKind::MitigationCompleted { verified, .. } = &out[0] else { unreachable!() };
        assert!(*verified, "{name}: the stable version's probes pass");

        let ws = sim.ws();
        let r = ws.rollout(&id).unwrap();
        assert_eq!(r.status, RolloutStatus::Mitigated);
        assert_eq!(r.ended_at, Some(sim.now));
        assert!(ws.active_rollout().is_none());
        assert_eq!(ws.stable.as_deref(), Some("v1"));
        assert_eq!(ws.lkg.len(), 1);
        assert_eq!(ws.lkg().unwrap().version, "v1");
        let pin = ws.pin.as_ref().expect("pinned after a mitigation");
        assert_eq!(pin.version, "v1");
        assert_eq!(pin.rollout_id, id);
        assert_eq!(ws.desired(), stable_only("v1", 2));
        assert_eq!(sim.count("lkg_updated"), 1, "only v1's first deploy");
        assert!(sim.tick(&after, true).is_empty());
    }
}

#[test]
fn slow_canary_halts_on_p99_latency_with_evidence_in_ms() {
    let mut sim = canary_baking();
    sim.advance(15 * SEC);
    let mut slow = healthy("v2", "v1");
    // 390 fast requests, 10 at 800 ms: p99 is in the 800 ms bucket, above the 500 ms limit.
    slow.canary.traffic.as_mut().unwrap().latency_us = vec![(20_000, 390), (800_000, 10)];
    let out = sim.tick(&slow, true);
    let [EventKind::RolloutHalted { decision, .. }] = out.as_slice() else {
        panic!("expected rollout_halted, got {out:?}");
    };
    let verdict = decision.verdict.as_ref().unwrap();
    let s = verdict.deciding().next().unwrap();
    assert_eq!(s.signal, "latency_p99");
    assert_eq!((s.unit.as_str(), s.observed, s.threshold), ("ms", Some(800.0), Some(500.0)));
    assert_eq!(s.baseline, Some(20.0), "the stable version's p99");
    let text = explain::why(sim.ws());
    assert!(text.contains("observed 800.0 ms vs limit 500.0 ms"), "{text}");
}

#[test]
fn mitigation_is_verified_only_when_the_baseline_probes_pass() {
    for (case, failing_probes, verified) in [
        ("probes pass", vec![], true),
        ("probes fail", vec!["replica 0".to_string()], false),
        ("probes fail on both", vec!["replica 0".to_string(), "replica 1".to_string()], false),
    ] {
        let mut sim = canary_baking();
        sim.advance(5 * SEC);
        assert_eq!(names(&sim.tick(&failing("v2", "v1"), true)), ["rollout_halted"]);
        let mut base = vo("v1", 1_000, 0);
        base.probes_failing = failing_probes.clone();
        let out = sim.tick(&obs(vo("v2", 0, 0), Some(base)), true);
        let Some(EventKind::MitigationCompleted { verified: got, detail, .. }) = out.first() else {
            panic!("{case}: expected mitigation_completed, got {out:?}");
        };
        assert_eq!(*got, verified, "{case}: {detail}");
        for replica in &failing_probes {
            assert!(detail.contains(replica), "{case}: {detail}");
        }
        // A way back that does not restore health escalates and is redeployed onto fresh
        // instances (its instances fail, not its code).
        if verified {
            assert_eq!(out.len(), 1, "{case}: {out:?}");
        } else {
            assert_eq!(names(&out), ["mitigation_completed", "escalated", "redeploy_requested"], "{case}");
            assert!(matches!(&out[2], EventKind::RedeployRequested { version } if version == "v1"), "{case}");
        }
        assert_eq!(sim.latest().status, RolloutStatus::Mitigated, "{case}");
        assert_eq!(sim.ws().pin.as_ref().unwrap().version, "v1", "{case}");
    }
}

/// "Verify that health came back": a baseline whose probes have not answered, or that was not
/// observed at all, has not shown that health came back. Unknown is never healthy.
#[test]
fn mitigation_is_not_verified_without_evidence_from_the_baseline() {
    let mut silent = vo("v1", 1_000, 0);
    silent.probes_answered = 0;
    let mut wrong = Vec::new();
    for (case, baseline) in [
        ("baseline probes have not answered", Some(silent)),
        ("baseline not observed although v1 is the fallback", None),
    ] {
        let mut sim = canary_baking();
        sim.advance(5 * SEC);
        assert_eq!(names(&sim.tick(&failing("v2", "v1"), true)), ["rollout_halted"]);
        let out = sim.tick(&obs(vo("v2", 0, 0), baseline), true);
        let [EventKind::MitigationCompleted { verified, detail, .. }] = out.as_slice() else {
            panic!("{case}: expected mitigation_completed, got {out:?}");
        };
        if *verified {
            wrong.push(format!("{case}: verified = true ({detail})"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Hard failures halt with no traffic at all
// ---------------------------------------------------------------------------------------------

#[test]
fn crash_start_failure_and_open_breaker_halt_with_zero_traffic() {
    type Fault = fn(&mut VersionObservation);
    let faults: [(&str, Fault); 3] = [
        ("crash", |c| c.crashes.push("replica 1 (pid 4242) exited with status 101".into())),
        ("start", |c| c.start_failure = Some("replica 0 not ready after 10s".into())),
        ("breaker", |c| c.breakers_open.push("replica 0".into())),
    ];
    for (signal, fault) in faults {
        for (stage, converged) in [(Stage::Deploying, false), (Stage::Baking, true)] {
            let mut sim = Sim::with_stable(example_spec(), "v1");
            sim.release("v2");
            sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
            let quiet = obs(vo("v2", 0, 0), Some(vo("v1", 0, 0)));
            if stage == Stage::Baking {
                assert_eq!(names(&sim.tick(&quiet, true)), ["bake_started"]);
            }
            // Zero traffic alone is only unknown.
            assert!(sim.run_for(&quiet, converged, SEC, 10 * SEC).is_empty());

            let mut bad = quiet.clone();
            fault(&mut bad.canary);
            sim.advance(SEC);
            let out = sim.tick(&bad, converged);
            assert_eq!(names(&out), ["rollout_halted"], "{signal} while {stage:?}");
            let EventKind::RolloutHalted { decision, .. } = &out[0] else { unreachable!() };
            assert_eq!(decision.action, MitigationAction::Fallback);
            let verdict = decision.verdict.as_ref().unwrap();
            let deciding: Vec<_> = verdict.deciding().map(|s| s.signal.as_str()).collect();
            assert_eq!(deciding, [signal], "{stage:?}");
            assert_eq!(sim.active().status, RolloutStatus::Mitigating);
            assert_eq!(sim.ws().desired(), stable_only("v1", 2));
        }
    }
}

#[test]
fn first_deploy_that_crashes_is_stopped() {
    let mut sim = Sim::new(example_spec());
    sim.release("v1");
    sim.cmd(|w| command::deploy(w, WL, "v1")).unwrap();
    let mut bad = obs(vo("v1", 0, 0), None);
    bad.canary.crashes.push("replica 0 exited with status 1".into());
    let out = sim.tick(&bad, false);
    let [EventKind::RolloutHalted { decision, .. }] = out.as_slice() else {
        panic!("expected rollout_halted, got {out:?}");
    };
    assert_eq!(decision.action, MitigationAction::Stop);
    assert_eq!(sim.active().status, RolloutStatus::Mitigating);
    assert_eq!(sim.ws().desired(), Desired::default(), "nothing to run");
    assert_eq!(names(&sim.tick(&bad, true)), ["mitigation_completed"]);
    assert_eq!(sim.ws().stable, None);
    assert_eq!(sim.ws().pin, None);
}

// ---------------------------------------------------------------------------------------------
// 7. auto_fallback = false
// ---------------------------------------------------------------------------------------------

#[test]
fn without_auto_fallback_an_unhealthy_rollout_holds_its_exposure() {
    let mut spec = example_spec();
    spec.mitigation.auto_fallback = false;
    let mut sim = canary_baking_with(spec);
    let id = sim.active().id.clone();
    let split = sim.ws().desired();
    assert_eq!(split.routes, vec![route("canary", "v2", 500), route("stable", "v1", 9_500)]);

    sim.advance(10 * SEC);
    let out = sim.tick(&failing("v2", "v1"), true);
    let [EventKind::RolloutHalted { decision, .. }] = out.as_slice() else {
        panic!("expected rollout_halted, got {out:?}");
    };
    assert_eq!(decision.action, MitigationAction::Hold);
    assert!(decision.rule.contains("auto_fallback"), "{}", decision.rule);
    let r = sim.active();
    assert_eq!(r.id, id);
    assert_eq!(r.status, RolloutStatus::Halted);
    assert_eq!(sim.ws().desired(), split, "exposure is frozen, not withdrawn");

    // Whatever is observed from now on, the step does nothing: a person decides.
    for o in [failing("v2", "v1"), healthy("v2", "v1")] {
        for converged in [true, false] {
            assert!(sim.run_for(&o, converged, MIN, 6 * HOUR).is_empty());
        }
    }
    assert_eq!(sim.active().status, RolloutStatus::Halted);
    assert_eq!(sim.ws().stable.as_deref(), Some("v1"));
    assert_eq!(sim.ws().desired(), split);

    // It still owns the workload; promote and resume do not apply to it.
    let before = sim.log.len();
    for (verb, result) in [
        ("deploy", command::deploy(&sim.world, WL, "v2")),
        ("promote", command::promote(&sim.world, WL, "bob", Timestamp(0))),
        ("resume", command::resume(&sim.world, WL)),
        ("pause", command::pause(&sim.world, WL)),
    ] {
        assert_eq!(result.map_err(|e| e.code), Err(ErrorCode::Conflict), "{verb}");
    }
    assert_eq!(sim.log.len(), before);

    // A person rolls back: now it falls back.
    let e = sim.cmd(|w| command::rollback(w, WL, None, "alice", "bad canary")).unwrap();
    let EventKind::RolloutHalted { decision, .. } = &e.kind else {
        panic!("{e:?}");
    };
    assert_eq!(decision.action, MitigationAction::ManualRollback);
    assert_eq!(sim.active().status, RolloutStatus::Mitigating);
    assert_eq!(sim.ws().desired(), stable_only("v1", 2));
}

// ---------------------------------------------------------------------------------------------
// 8. Pause and resume
// ---------------------------------------------------------------------------------------------

#[test]
fn pause_freezes_bake_time_for_hours() {
    let mut sim = canary_baking();
    let bake_at = sim.now;
    let good = healthy("v2", "v1");
    assert!(sim.run_for(&good, true, SEC, 10 * SEC).is_empty());

    let e = sim.cmd(|w| command::pause(w, WL)).unwrap();
    assert!(matches!(e.kind, EventKind::RolloutPaused { .. }));
    assert_eq!(sim.active().status, RolloutStatus::Paused);
    let split = sim.ws().desired();
    assert_eq!(split.routes[0], route("canary", "v2", 500), "a pause keeps exposure");

    let out = sim.run_for(&good, true, 10 * MIN, 10 * HOUR);
    assert!(out.is_empty(), "{:?}", names(&out));
    assert_eq!(sim.active().baked_ms(sim.now), 10 * SEC);
    assert_eq!(sim.ws().desired(), split);

    let e = sim.cmd(|w| command::resume(w, WL)).unwrap();
    assert!(matches!(e.kind, EventKind::RolloutResumed { .. }));
    assert_eq!(sim.active().status, RolloutStatus::Progressing);
    assert_eq!(sim.active().baked_ms(sim.now), 10 * SEC);

    // 20 s of bake remain.
    assert!(sim.run_for(&good, true, SEC, 19 * SEC).is_empty());
    assert_eq!(sim.active().baked_ms(sim.now), 29 * SEC);
    sim.advance(SEC);
    assert_eq!(names(&sim.tick(&good, true)), ["phase_passed", "phase_started"]);
    assert_eq!(sim.now.since(bake_at), 10 * HOUR + 30 * SEC);
}

#[test]
fn pauses_add_up_and_a_pause_while_deploying_delays_nothing_but_the_bake() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let good = healthy("v2", "v1");

    // Paused while deploying: it may converge and start its bake, but the bake is frozen.
    sim.cmd(|w| command::pause(w, WL)).unwrap();
    sim.advance(HOUR);
    assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    assert!(sim.run_for(&good, true, MIN, 2 * HOUR).is_empty());
    assert_eq!(sim.active().baked_ms(sim.now), 0);
    sim.cmd(|w| command::resume(w, WL)).unwrap();

    // Two more pauses inside the bake.
    for _ in 0..2 {
        assert!(sim.run_for(&good, true, SEC, 10 * SEC).is_empty());
        sim.cmd(|w| command::pause(w, WL)).unwrap();
        assert!(sim.run_for(&good, true, MIN, 3 * HOUR).is_empty());
        sim.cmd(|w| command::resume(w, WL)).unwrap();
    }
    assert_eq!(sim.active().baked_ms(sim.now), 20 * SEC);
    assert!(sim.run_for(&good, true, SEC, 9 * SEC).is_empty());
    sim.advance(SEC);
    assert_eq!(names(&sim.tick(&good, true)), ["phase_passed", "phase_started"]);
}

#[test]
fn unhealthy_while_paused_still_halts() {
    let mut sim = canary_baking();
    sim.advance(10 * SEC);
    sim.cmd(|w| command::pause(w, WL)).unwrap();
    sim.advance(5 * HOUR);
    let out = sim.tick(&failing("v2", "v1"), true);
    let [EventKind::RolloutHalted { decision, .. }] = out.as_slice() else {
        panic!("expected rollout_halted, got {out:?}");
    };
    assert_eq!(decision.action, MitigationAction::Fallback);
    assert_eq!(sim.active().status, RolloutStatus::Mitigating);
    assert_eq!(sim.ws().desired(), stable_only("v1", 2));
}

#[test]
fn pause_and_resume_refuse_the_wrong_state() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    let before = sim.log.len();
    // No rollout at all.
    for (verb, r) in [
        ("pause", command::pause(&sim.world, WL)),
        ("resume", command::resume(&sim.world, WL)),
        ("promote", command::promote(&sim.world, WL, "bob", Timestamp(0))),
        ("abort", command::abort(&sim.world, WL)),
    ] {
        let e = r.expect_err(verb);
        assert_eq!(e.code, ErrorCode::Conflict, "{verb}");
        assert!(e.message.contains("no rollout in progress"), "{verb}: {e}");
    }
    assert_eq!(sim.log.len(), before);

    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let id = sim.active().id.clone();
    let e = command::resume(&sim.world, WL).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains(&id) && e.message.contains("not paused"), "{e}");

    sim.cmd(|w| command::pause(w, WL)).unwrap();
    let e = command::pause(&sim.world, WL).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("not progressing"), "{e}");

    // Unknown workload.
    let e = command::pause(&sim.world, "payments").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------------------------
// 9. Promote by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn promote_skips_the_rest_of_the_bake() {
    let mut sim = canary_baking();
    let good = healthy("v2", "v1");
    assert!(sim.run_for(&good, true, SEC, 10 * SEC).is_empty());
    sim.promote().unwrap();
    assert!(sim.active().promote_requested);
    let out = sim.tick(&good, true);
    assert_eq!(names(&out), ["phase_passed", "phase_started"]);
    assert!(matches!(&out[0], EventKind::PhasePassed { phase: 0, by_hand: true, .. }), "{:?}", out[0]);
    let r = sim.active();
    assert_eq!((r.phase, r.stage), (1, Stage::Deploying));
    assert!(!r.promote_requested, "one promote passes one phase");
    assert_eq!(sim.ws().desired().routes, vec![route("canary", "v2", 2_500), route("stable", "v1", 7_500)]);

    // The next phase bakes in full again.
    assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    let out = sim.run_until(&good, true, SEC, HOUR, |_| true);
    assert!(matches!(&out[0], EventKind::PhasePassed { phase: 1, by_hand: false, .. }));
    assert_eq!(sim.active().phase, 2);
}

#[test]
fn promote_while_deploying_passes_the_phase_once_it_has_converged() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.release("v2");
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    sim.promote().unwrap();
    let good = healthy("v2", "v1");
    assert!(sim.run_for(&good, false, SEC, MIN).is_empty(), "not before convergence");
    assert_eq!(names(&sim.tick(&good, true)), ["bake_started"]);
    let out = sim.tick(&good, true);
    assert!(matches!(&out[0], EventKind::PhasePassed { phase: 0, by_hand: true, .. }));
}

#[test]
fn promote_does_not_override_an_unhealthy_verdict() {
    let mut sim = canary_baking();
    sim.promote().unwrap();
    let out = sim.tick(&failing("v2", "v1"), true);
    assert_eq!(names(&out), ["rollout_halted"]);
    assert_eq!(sim.count_latest("phase_passed"), 0);
}

// ---------------------------------------------------------------------------------------------
// 10. Commands that are refused change nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn refused_commands_append_nothing() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    sim.release("v2");
    sim.release("v3");

    // Same version, same content: fine and idempotent.
    let before = sim.log.len();
    let (kind, release) = command::create_release(&sim.world, WL, &request("v2"), "bob", sim.now).unwrap();
    assert_eq!(kind, None);
    assert_eq!(release, *sim.ws().releases["v2"]);
    assert_eq!(release.created_by, "alice", "the original is returned");

    let e = command::deploy(&sim.world, WL, "v9").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("v9") && e.message.contains("v3"), "{e}");

    let e = command::deploy(&sim.world, WL, "v1").unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "v1 is stable: {e}");
    assert!(e.message.contains("stable"), "{e}");

    let e = command::deploy(&sim.world, "payments", "v1").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);

    let mut changed = request("v2");
    changed.content.config.insert("FEATURE".into(), "on".into());
    let e = command::create_release(&sim.world, WL, &changed, "alice", sim.now).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("immutable"), "{e}");

    let long = "x".repeat(129);
    for bad in ["", "v 2", "../v2", "v2/evil", long.as_str()] {
        let e = command::create_release(&sim.world, WL, &request(bad), "alice", sim.now).expect_err(bad);
        assert_eq!(e.code, ErrorCode::Invalid, "{bad:?}");
    }
    assert_eq!(sim.log.len(), before, "nothing was appended");

    // With a rollout in progress, another deploy is a conflict that names it.
    sim.cmd(|w| command::deploy(w, WL, "v2")).unwrap();
    let id = sim.active().id.clone();
    let before = sim.log.len();
    for version in ["v2", "v3", "v1"] {
        let e = command::deploy(&sim.world, WL, version).unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict, "{version}");
        assert!(e.message.contains(&id), "{version}: {e}");
    }
    assert_eq!(sim.log.len(), before);
    assert_eq!(sim.ws().rollouts.len(), 2);
}

#[test]
fn deploy_of_an_earlier_lkg_is_an_ordinary_deploy() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    complete_release(&mut sim, "v2", "v1");
    let e = sim.cmd(|w| command::deploy(w, WL, "v1")).unwrap();
    let EventKind::RolloutStarted { kind, from, phases, .. } = &e.kind else {
        panic!("{e:?}");
    };
    assert_eq!(*kind, RolloutKind::Deploy);
    assert_eq!(from.as_deref(), Some("v2"));
    assert_eq!(phases.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// 11. Rollback
// ---------------------------------------------------------------------------------------------

/// Deploys `version` over `stable` through every phase, approving the last.
fn complete_release(sim: &mut Sim, version: &str, stable: &str) {
    sim.release(version);
    sim.cmd(|w| command::deploy(w, WL, version)).unwrap();
    let good = healthy(version, stable);
    loop {
        let out = sim.run_until(&good, true, 10 * SEC, HOUR, |k| {
            matches!(k, EventKind::PhaseHeld { .. } | EventKind::RolloutCompleted { .. })
        });
        if out.iter().any(|k| matches!(k, EventKind::RolloutCompleted { .. })) {
            break;
        }
        sim.promote().unwrap();
    }
    assert_eq!(sim.ws().stable.as_deref(), Some(version));
}

#[test]
fn rollback_during_a_rollout_falls_back_to_its_stable_version() {
    let mut sim = baking_in_phase(1, 20 * SEC);
    let id = sim.active().id.clone();

    let e = command::rollback(&sim.world, WL, Some("v0"), "alice", "").unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e}");

    let e = sim.cmd(|w| command::rollback(w, WL, None, "alice", "checkout latency")).unwrap();
    let EventKind::RolloutHalted { rollout_id, decision } = &e.kind else {
        panic!("{e:?}");
    };
    assert_eq!(rollout_id, &id);
    assert_eq!(decision.action, MitigationAction::ManualRollback);
    assert_eq!(decision.verdict, None, "a person's command has no verdict");
    assert_eq!(decision.phase_name, "early");
    assert!(decision.rule.contains("alice"), "{}", decision.rule);
    assert!(decision.summary.contains("checkout latency"), "{}", decision.summary);
    assert_eq!(sim.active().status, RolloutStatus::Mitigating);
    assert_eq!(sim.ws().desired(), stable_only("v1", 2));

    // A second rollback while falling back is refused, and so is abort.
    assert_eq!(command::rollback(&sim.world, WL, None, "bob", "").map_err(|e| e.code), Err(ErrorCode::Conflict));
    assert_eq!(command::abort(&sim.world, WL).map_err(|e| e.code), Err(ErrorCode::Conflict));

    let out = sim.tick(&obs(vo("v2", 0, 0), Some(vo("v1", 500, 0))), true);
    assert_eq!(names(&out), ["mitigation_completed"]);
    let ws = sim.ws();
    assert_eq!(ws.rollout(&id).unwrap().status, RolloutStatus::Mitigated);
    assert_eq!(ws.stable.as_deref(), Some("v1"));
    assert_eq!(ws.pin.as_ref().unwrap().version, "v1");
    assert_eq!(ws.desired(), stable_only("v1", 2));
}

#[test]
fn rollback_after_promotion_is_a_fast_path_to_the_previous_lkg() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    complete_release(&mut sim, "v2", "v1");
    assert_eq!(sim.ws().lkg.iter().map(|e| e.version.as_str()).collect::<Vec<_>>(), ["v1", "v2"]);

    let e = sim.cmd(|w| command::rollback(w, WL, None, "alice", "revenue dip")).unwrap();
    let EventKind::RolloutStarted { rollout_id, kind, release, from, phases, .. } = &e.kind else {
        panic!("{e:?}");
    };
    let id = rollout_id.clone();
    assert_eq!(*kind, RolloutKind::Rollback);
    assert_eq!(release, "v1");
    assert_eq!(from.as_deref(), Some("v2"));
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].weight_bp(), 10_000);
    assert_eq!(phases[0].bake, Dur(0));
    assert_eq!(sim.ws().desired().routes, vec![route("canary", "v1", 10_000), route("stable", "v2", 0)]);

    // Probes answer, no traffic at all: the fast path does not wait for a sample.
    let back = obs(vo("v1", 0, 0), Some(vo("v2", 0, 0)));
    assert!(sim.tick(&back, false).is_empty());
    assert_eq!(names(&sim.tick(&back, true)), ["bake_started"]);
    let out = sim.tick(&back, true);
    assert_eq!(names(&out), ["phase_passed", "rollout_completed", "lkg_updated"]);

    let ws = sim.ws();
    let r = ws.rollout(&id).unwrap();
    assert_eq!(r.status, RolloutStatus::Completed);
    assert_eq!(ws.stable.as_deref(), Some("v1"));
    assert_eq!(ws.lkg().unwrap().version, "v1");
    assert_eq!(ws.lkg().unwrap().rollout_id, id);
    let pin = ws.pin.as_ref().expect("a rollback pins the desired state");
    assert_eq!((pin.version.as_str(), pin.rollout_id.as_str()), ("v1", id.as_str()));
    // The person's reason, not the controller's "rollout step" that completed it.
    assert_eq!(pin.reason, "rolled back by alice: by hand");
    assert_eq!(ws.desired(), stable_only("v1", 2));
    assert_eq!(sim.count("rollout_halted"), 0);

    // A later healthy deploy lifts the pin.
    complete_release(&mut sim, "v3", "v1");
    assert_eq!(sim.ws().pin, None);
}

/// A rollback that turns unhealthy halts, and holds for a person rather than sending traffic
/// back to the release it left: that would flap between two bad states.
#[test]
fn rollback_fast_path_still_halts_on_a_crash_and_holds_instead_of_flapping_back() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    complete_release(&mut sim, "v2", "v1");
    sim.cmd(|w| command::rollback(w, WL, None, "alice", "")).unwrap();
    let mut bad = obs(vo("v1", 0, 0), Some(vo("v2", 0, 0)));
    bad.canary.crashes.push("replica 0 exited with status 139".into());
    let out = sim.tick(&bad, false);
    let [EventKind::RolloutHalted { decision, .. }] = out.as_slice() else {
        panic!("expected rollout_halted, got {out:?}");
    };
    assert_eq!(decision.action, MitigationAction::Hold, "{decision:#?}");
    assert!(decision.rule.contains("would flap"), "{}", decision.rule);
    let back_to_v2: u32 = sim.ws().desired().routes.iter().filter(|g| g.version == "v2").map(|g| g.weight_bp).sum();
    assert_eq!(back_to_v2, 0, "no traffic returns to the release the rollback left");
}

/// The fast path skips re-analysis, not health checks (design §4): with no probe answering, the
/// verdict is unknown, and unknown never promotes, so the rollback must not complete and must
/// not record v1 as last known good again.
#[test]
fn rollback_fast_path_does_not_complete_on_an_unknown_verdict() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    complete_release(&mut sim, "v2", "v1");
    sim.cmd(|w| command::rollback(w, WL, None, "alice", "")).unwrap();
    let mut silent = obs(vo("v1", 0, 0), Some(vo("v2", 0, 0)));
    silent.canary.probes_answered = 0;
    silent.canary.traffic = None;
    let out = sim.run_for(&silent, true, SEC, 5 * MIN);
    assert!(
        !out.iter().any(|k| matches!(k, EventKind::RolloutCompleted { .. } | EventKind::LkgUpdated { .. })),
        "completed with no probe answered: {:?}",
        names(&out)
    );
    assert_eq!(sim.ws().stable.as_deref(), Some("v2"));
}

#[test]
fn rollback_targets_must_have_been_lkg() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    // Only one LKG: nowhere to go back to.
    let e = command::rollback(&sim.world, WL, None, "alice", "").unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e}");

    complete_release(&mut sim, "v2", "v1");
    sim.release("v3"); // registered, never deployed
    let before = sim.log.len();
    for never in ["v3", "v9"] {
        let e = command::rollback(&sim.world, WL, Some(never), "alice", "").unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid, "{never}: {e}");
        assert!(e.message.contains("never last known good"), "{e}");
    }
    let e = command::rollback(&sim.world, WL, Some("v2"), "alice", "").unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "v2 is the current stable: {e}");
    assert_eq!(sim.log.len(), before);

    let e = sim.cmd(|w| command::rollback(w, WL, Some("v1"), "alice", "")).unwrap();
    assert!(matches!(
        &e.kind,
        EventKind::RolloutStarted { kind: RolloutKind::Rollback, release, .. } if release == "v1"
    ));
}

// ---------------------------------------------------------------------------------------------
// 12. Abort
// ---------------------------------------------------------------------------------------------

#[test]
fn abort_returns_the_world_to_stable() {
    let mut sim = baking_in_phase(2, 30 * SEC);
    let id = sim.active().id.clone();
    let e = sim.cmd(|w| command::abort(w, WL)).unwrap();
    assert_eq!(e.kind, EventKind::RolloutAborted { rollout_id: id.clone() });
    let ws = sim.ws();
    let r = ws.rollout(&id).unwrap();
    assert_eq!(r.status, RolloutStatus::Aborted);
    assert_eq!(r.ended_at, Some(sim.now));
    assert!(ws.active_rollout().is_none());
    assert_eq!(ws.desired(), stable_only("v1", 2));
    assert_eq!(ws.stable.as_deref(), Some("v1"));
    assert_eq!(ws.lkg.len(), 1);
    // The pin says it was aborted, by whom and why, not an older failure.
    let pin = ws.pin.as_ref().expect("pinned to the stable version");
    assert_eq!(
        (pin.version.as_str(), pin.reason.as_str()),
        ("v1", format!("rollout {id} aborted by alice: by hand").as_str())
    );
    // Nothing more happens, whatever is observed.
    assert!(sim.run_for(&failing("v2", "v1"), true, MIN, HOUR).is_empty());
    // And the release may be deployed again.
    assert!(command::deploy(&sim.world, WL, "v2").is_ok());
}

#[test]
fn abort_of_a_paused_or_halted_rollout() {
    let mut sim = canary_baking();
    sim.cmd(|w| command::pause(w, WL)).unwrap();
    sim.cmd(|w| command::abort(w, WL)).unwrap();
    assert_eq!(sim.latest().status, RolloutStatus::Aborted);

    let mut spec = example_spec();
    spec.mitigation.auto_fallback = false;
    let mut sim = canary_baking_with(spec);
    sim.tick(&failing("v2", "v1"), true);
    assert_eq!(sim.active().status, RolloutStatus::Halted);
    sim.cmd(|w| command::abort(w, WL)).unwrap();
    assert_eq!(sim.latest().status, RolloutStatus::Aborted);
    assert_eq!(sim.ws().desired(), stable_only("v1", 2));
}

// ---------------------------------------------------------------------------------------------
// 13. Replay
// ---------------------------------------------------------------------------------------------

#[test]
fn replaying_the_log_rebuilds_the_same_world() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    complete_release(&mut sim, "v2", "v1");
    // A halted and mitigated rollout.
    sim.release("v3");
    sim.cmd(|w| command::deploy(w, WL, "v3")).unwrap();
    sim.tick(&healthy("v3", "v2"), true);
    sim.cmd(|w| command::pause(w, WL)).unwrap();
    sim.advance(HOUR);
    sim.cmd(|w| command::resume(w, WL)).unwrap();
    sim.advance(5 * SEC);
    sim.tick(&failing("v3", "v2"), true);
    sim.tick(&obs(vo("v3", 0, 0), Some(vo("v2", 10, 0))), true);
    // A held and escalated one, then aborted.
    sim.release("v4");
    sim.cmd(|w| command::deploy(w, WL, "v4")).unwrap();
    let few = obs(vo("v4", 3, 0), Some(vo("v2", 100, 0)));
    sim.run_for(&few, true, MIN, HOUR);
    sim.cmd(|w| command::abort(w, WL)).unwrap();
    // A rollback to v1.
    sim.cmd(|w| command::rollback(w, WL, None, "alice", "")).unwrap();
    sim.run_for(&obs(vo("v1", 0, 0), Some(vo("v2", 0, 0))), true, SEC, 5 * SEC);

    for kind in [
        "spec_applied",
        "release_created",
        "rollout_started",
        "phase_held",
        "escalated",
        "rollout_halted",
        "mitigation_completed",
        "rollout_paused",
        "rollout_resumed",
        "promote_requested",
        "rollout_aborted",
        "lkg_updated",
    ] {
        assert!(sim.count(kind) > 0, "the log has a {kind}");
    }

    // Numbered from 1 without gaps, in time order.
    for (i, e) in sim.log.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.workload, WL);
    }
    assert!(sim.log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(sim.world.last_seq, sim.log.len() as u64);

    // Every prefix of the log folds to the world as it was after that event.
    let mut fresh = World::default();
    for (e, expected) in sim.log.iter().zip(&sim.history) {
        fresh.apply(e);
        assert_eq!(&fresh, expected, "after event {} ({})", e.seq, e.kind.type_name());
    }
    assert_eq!(fresh, sim.world);

    // And through JSON, as the store keeps it.
    let json = serde_json::to_string(&sim.log).unwrap();
    let stored: Vec<Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, sim.log);
    let mut from_store = World::default();
    for e in &stored {
        from_store.apply(e);
    }
    assert_eq!(from_store, sim.world);
}

// ---------------------------------------------------------------------------------------------
// 14. explain::why
// ---------------------------------------------------------------------------------------------

#[test]
fn why_of_a_halted_rollout_shows_its_evidence() {
    let mut sim = canary_baking();
    sim.advance(12 * SEC);
    sim.tick(&failing("v2", "v1"), true);
    for stage in ["mitigating", "mitigated"] {
        let text = explain::why(sim.ws());
        assert!(text.contains(stage), "{text}");
        for needle in ["Fallback", "20%", "5%", "100", "error_rate", "v1", "canary"] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        sim.tick(&obs(vo("v2", 0, 0), Some(vo("v1", 50, 0))), true);
    }
    assert!(explain::why(sim.ws()).contains("pinned to v1"));
}

#[test]
fn why_of_a_held_rollout_says_held_and_unknown() {
    let mut sim = canary_baking();
    let few = obs(vo("v2", 7, 0), Some(vo("v1", 400, 0)));
    let out = sim.run_for(&few, true, SEC, MIN);
    assert_eq!(names(&out), ["phase_held"]);
    let text = explain::why(sim.ws());
    let lower = text.to_lowercase();
    assert!(lower.contains("held"), "{text}");
    assert!(lower.contains("unknown"), "{text}");
    assert!(text.contains("only 7 of the 20 requests"), "{text}");
    assert!(!text.contains("Fallback"), "{text}");
}

#[test]
fn why_labels_the_evidence_of_the_hold_and_the_live_evidence() {
    let mut sim = canary_baking();
    let few = obs(vo("v2", 7, 0), Some(vo("v1", 400, 0)));
    sim.run_for(&few, true, SEC, MIN);
    let stored = explain::why(sim.ws());
    assert!(stored.contains("Evidence when the bake ended ("), "{stored}");
    assert!(!stored.contains("Live evidence"), "no live verdict given: {stored}");
    // The live verdict, a pending test among it, is shown apart and labelled as such.
    let mut live = sim.active().last_verdict.clone().expect("the hold's verdict");
    live.signals.push(ringfence_core::health::SignalResult::new(
        "error_rate",
        "v2",
        Health::Unknown,
        "e-value",
        "rule",
        "pending: not yet shown to be below 0.5%",
    ));
    let text = explain::why_with_live(sim.ws(), Some(&live));
    let (before, after) = text.split_once("Live evidence, now (").expect("a live section");
    assert!(before.contains("Evidence when the bake ended"), "{text}");
    assert!(after.contains("[pending] error_rate: pending: not yet shown"), "{text}");
}

#[test]
fn why_before_any_rollout_and_after_completion() {
    let sim = Sim::new(example_spec());
    assert!(explain::why(sim.ws()).contains("no rollout yet"));
    let sim = Sim::with_stable(example_spec(), "v1");
    let text = explain::why(sim.ws());
    assert!(text.contains("completed"), "{text}");
    assert!(text.contains("last known good"), "{text}");
}

/// A phase waiting for its approval gate is held with a healthy verdict; `why` must say that a
/// person has to approve it, not that "only healthy promotes".
#[test]
fn why_of_a_rollout_waiting_for_approval_says_so() {
    let mut sim = baking_in_phase(3, 2 * MIN);
    let r = sim.active();
    assert_eq!((r.phase, r.stage), (3, Stage::Baking));
    assert!(r.held_since.is_some(), "held for approval");
    assert_eq!(r.last_verdict.as_ref().unwrap().health, Health::Healthy);
    let text = explain::why(sim.ws());
    assert!(
        text.contains("approval") || text.contains("approve"),
        "`why` does not say the phase waits for an approval:\n{text}"
    );
    sim.promote().unwrap();
    assert_eq!(names(&sim.tick(&healthy("v2", "v1"), true)), ["phase_passed", "rollout_completed", "lkg_updated"]);
}

/// The last known good is the release and the spec in force then: a rollback brings the scale
/// (and executor, health) of that time back with the code.
#[test]
fn a_rollback_restores_the_spec_in_force_when_its_target_was_last_known_good() {
    let mut sim = Sim::with_stable(example_spec(), "v1");
    let before = sim.ws().spec.executor.replicas;
    let mut bigger = example_spec();
    bigger.executor.replicas = before + 3;
    sim.cmd(|w| command::apply_spec(w, &bigger).map(|e| e.expect("a changed spec"))).unwrap();
    complete_release(&mut sim, "v2", "v1");
    assert_eq!(sim.ws().spec.executor.replicas, before + 3);
    // A target that ran under the spec in force brings no spec back.
    assert_eq!(command::rollback_spec(&sim.world, WL, "v2"), None);

    let events = command::rollback_all(&sim.world, WL, None, "alice", "the new scale is too costly").unwrap();
    assert!(
        matches!(events.as_slice(), [EventKind::SpecApplied { .. }, EventKind::RolloutStarted { release, .. }] if release == "v1"),
        "{events:?}"
    );
    for e in events {
        sim.append(e, "alice", "rollback");
    }
    assert_eq!(sim.ws().spec.executor.replicas, before, "v1's scale comes back with v1");
}

/// Deploys `version` over `stable`, fails it, and falls back.
fn mitigate_release(sim: &mut Sim, version: &str, stable: &str) {
    sim.release(version);
    sim.cmd(|w| command::deploy(w, WL, version)).unwrap();
    sim.run_until(&failing(version, stable), true, 10 * SEC, HOUR, |k| matches!(k, EventKind::RolloutHalted { .. }));
    let mut after = obs(vo(version, 0, 0), Some(vo(stable, 3_000, 3)));
    after.canary.probes_answered = 0;
    sim.run_until(&after, true, SEC, MIN, |k| matches!(k, EventKind::MitigationCompleted { .. }));
    assert_eq!(sim.latest().status, RolloutStatus::Mitigated);
}

#[test]
fn ended_rollouts_beyond_the_newest_keep_a_summary_and_their_detail_folds_back_from_the_log() {
    use ringfence_core::state::DETAILED_ROLLOUTS;
    let mut sim = Sim::with_stable(example_spec(), "v1");
    let mut stable = "v1".to_string();
    // Each rollout as it was when it ended, with all its detail.
    let mut ended = vec![sim.latest().clone()];
    for i in 0..DETAILED_ROLLOUTS + 5 {
        let version = format!("v{}", i + 2);
        if i % 3 == 1 {
            mitigate_release(&mut sim, &version, &stable);
        } else {
            complete_release(&mut sim, &version, &stable);
            stable = version;
        }
        let r = sim.latest().clone();
        assert!(!r.detail_dropped && r.baseline.is_none(), "{}: an ended rollout keeps no baseline", r.id);
        assert!(r.last_verdict.is_some(), "{}", r.id);
        ended.push(r);
    }
    let ws = sim.ws();
    let dropped: Vec<&str> = ws.rollouts.iter().filter(|r| r.detail_dropped).map(|r| r.id.as_str()).collect();
    let oldest: Vec<&str> = ended[..ended.len() - DETAILED_ROLLOUTS].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(dropped, oldest, "the newest {DETAILED_ROLLOUTS} ended rollouts keep their detail");
    // One copy of the plan for all the deploys that followed it, not one each; the first
    // deploy (one phase) has its own. A restart's fold (below) must share the same way.
    let plans = |ws: &ringfence_core::state::WorkloadState| {
        ws.rollouts.iter().skip(1).all(|r| std::sync::Arc::ptr_eq(&r.phases, &ws.rollouts[1].phases))
    };
    assert!(plans(ws), "the deploys share their plan");
    assert!(!std::sync::Arc::ptr_eq(&ws.rollouts[0].phases, &ws.rollouts[1].phases));
    // Found where it is, whatever the history's length; ids of no rollout are none.
    for (i, r) in ws.rollouts.iter().enumerate() {
        assert_eq!(ws.rollout_index(&r.id), Some(i), "{}", r.id);
    }
    let n = ws.rollouts.len();
    for id in [format!("{WL}-0"), format!("{WL}-{}", n + 1), format!("{WL}-01"), format!("x{WL}-1"), "-1".into()] {
        assert_eq!(ws.rollout_index(&id), None, "{id}");
    }
    let mut mitigated = 0;
    for end in &ended {
        let now = ws.rollout(&end.id).unwrap();
        if now.detail_dropped {
            assert!(now.last_verdict.is_none() && now.windows.is_empty(), "{}", end.id);
            assert!(now.decision.as_ref().is_none_or(|d| d.verdict.is_none() && d.considered.is_empty()));
            // The summary lists, metrics and later events read is whole.
            assert_eq!(
                (now.status, now.ended_at, &now.release, &now.from),
                (end.status, end.ended_at, &end.release, &end.from)
            );
            assert_eq!(
                now.decision.as_ref().map(|d| (d.action, &d.summary)),
                end.decision.as_ref().map(|d| (d.action, &d.summary))
            );
            mitigated += usize::from(end.status == RolloutStatus::Mitigated);
        }
        let full = rollout::detailed(now, &sim.log);
        assert_eq!(*full, *end, "{}: folded back from the log as it was when it ended", end.id);
        // From its own stretch of the log alone, as a reader of one rollout reads it.
        let stretch: Vec<Event> =
            sim.log.iter().filter(|e| (now.first_seq..=now.last_seq).contains(&e.seq)).cloned().collect();
        assert_eq!(*rollout::detailed(now, &stretch), *end, "{}", end.id);
    }
    assert!(mitigated > 0, "a mitigated rollout (a decision with its verdict) lost its detail and got it back");
    // A last known good names its rollout but is the workload's to fold: a later one (a
    // rollback's) must not move the rollout's `updated_at` on a refold either.
    let mut r = ended[1].clone();
    let lkg = EventKind::LkgUpdated { version: r.release.clone(), rollout_id: r.id.clone() };
    let later = r.updated_at.plus_ms(HOUR);
    rollout::apply(&mut r, &lkg, later);
    assert_eq!(r, ended[1]);
    // Without its events the summary is all there is.
    let summary = ws.rollouts.iter().find(|r| r.detail_dropped).unwrap();
    assert!(rollout::detailed(summary, &[]).detail_dropped);
    // A restart folds the same projection.
    let mut fresh = World::default();
    for e in &sim.log {
        fresh.apply(e);
    }
    assert_eq!(fresh, sim.world);
    assert!(plans(fresh.workload(WL).unwrap()), "refolded, the deploys share their plan");
}
