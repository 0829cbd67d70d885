//! Properties of the rollout state machine, over random sequences of what can happen to a
//! workload: commands from people, controller ticks with every kind of observation, router
//! restarts, a world that has or has not converged, and the clock moving.
//!
//! The harness plays the controller's part as `crates/ringfence/src/controller` does (the
//! same `StepInput`, the same analyzer, `governance::tick`), numbers the events as the store
//! does and folds them into a `World`. After every batch of events it checks what must always
//! hold; after the sequence it lets the world settle (healthy traffic, approvals, a converged
//! world) and checks that the rollout ended or waits for a reason it names.
//!
//! Shrinking reduces a failure to the shortest list of inputs that still breaks a property;
//! every message ends with the last events of the log, so a failure reads as a story.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use ringfence_core::command;
use ringfence_core::decision::DecisionContext;
use ringfence_core::duration::Dur;
use ringfence_core::event::BakeBaseline;
use ringfence_core::governance::{self, Approver};
use ringfence_core::health::{Health, Observation, Traffic, VersionObservation};
use ringfence_core::release::{ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::{self, Rollout, RolloutStatus, Stage, StepInput};
use ringfence_core::spec::{self, AnalysisMethod, Gate, WorkloadSpec};
use ringfence_core::state::{WorkloadState, World};
use ringfence_core::{Event, EventKind, NewEvent, Timestamp};

const WL: &str = "checkout";
const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
/// Any fixed instant: the core never reads the wall clock.
const EPOCH: Timestamp = Timestamp(1_795_343_106_000);
/// Requests per second through the router, split by the phase's weight.
const RPS: u64 = 200;

// ---------------------------------------------------------------------------------------------
// What a case is made of
// ---------------------------------------------------------------------------------------------

/// The workload's spec, as far as the state machine cares.
#[derive(Debug, Clone)]
struct Plan {
    /// (weight in percent, bake in seconds, approval gate, health gate); the last is at 100%.
    phases: Vec<(f64, u64, bool, bool)>,
    sequential: bool,
    auto_fallback: bool,
    fallback_after_max_hold: bool,
    max_hold_min: u64,
    approvals_required: u32,
    approval_before_start: bool,
}

/// What the controller saw on a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    /// Both versions answer alike.
    Good,
    /// The new version fails a fifth of its requests.
    Errors,
    /// The new version's p99 is 900 ms.
    Slow,
    /// The router could not be read: no traffic for either version.
    Blind,
    /// None of the new version's probes answered.
    Silent,
    /// A replica of the new version exited.
    Crash,
    /// The stable version's probes fail (what a fallback returns to is broken too).
    StableBroken,
}

#[derive(Debug, Clone)]
enum Input {
    /// The clock moves this many seconds.
    Wait(u64),
    /// One controller round: the router instance whose counters it read (none: unreadable).
    Tick {
        seen: Seen,
        converged: bool,
        router: Option<u8>,
    },
    /// alice registers the next version; `guarded` gives it a guard flag (a bypass is offered).
    Release {
        guarded: bool,
    },
    /// alice deploys the newest release.
    Deploy,
    Pause,
    Resume,
    /// By bob or carol (never the author).
    Promote(Approver2),
    Approve(Approver2),
    Abort,
    Rollback,
    /// bob, the spec's bypass approver, approves an offered bypass.
    Bypass,
    ClearHold,
    StopLine,
    RestartLine,
}

#[derive(Debug, Clone, Copy)]
enum Approver2 {
    Bob,
    Carol,
}

impl Approver2 {
    fn name(self) -> &'static str {
        match self {
            Approver2::Bob => "bob",
            Approver2::Carol => "carol",
        }
    }
}

fn plan() -> impl Strategy<Value = Plan> {
    let weights = proptest::sample::subsequence(vec![1.0, 5.0, 10.0, 25.0, 50.0], 0..=3);
    let phase_extra =
        proptest::collection::vec((0u64..=120, proptest::bool::weighted(0.2), proptest::bool::weighted(0.9)), 4);
    (
        weights,
        phase_extra,
        any::<bool>(),
        proptest::bool::weighted(0.8),
        any::<bool>(),
        1u64..=10,
        1u32..=2,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(
                mut weights,
                extra,
                sequential,
                auto_fallback,
                fallback_after_max_hold,
                max_hold_min,
                required,
                before,
            )| {
                weights.push(100.0);
                let phases = weights
                    .into_iter()
                    .zip(extra)
                    .map(|(w, (bake, approval, health))| (w, bake, approval, health))
                    .collect();
                Plan {
                    phases,
                    sequential,
                    auto_fallback,
                    fallback_after_max_hold,
                    max_hold_min,
                    approvals_required: required,
                    approval_before_start: before,
                }
            },
        )
}

fn seen() -> impl Strategy<Value = Seen> {
    prop_oneof![
        6 => Just(Seen::Good),
        2 => Just(Seen::Errors),
        1 => Just(Seen::Slow),
        1 => Just(Seen::Blind),
        1 => Just(Seen::Silent),
        1 => Just(Seen::Crash),
        1 => Just(Seen::StableBroken),
    ]
}

fn approver() -> impl Strategy<Value = Approver2> {
    prop_oneof![Just(Approver2::Bob), Just(Approver2::Carol)]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (1u64..=300).prop_map(Input::Wait),
        10 => (seen(), proptest::bool::weighted(0.85), proptest::option::weighted(0.95, 0u8..2))
            .prop_map(|(seen, converged, router)| Input::Tick { seen, converged, router }),
        2 => proptest::bool::weighted(0.3).prop_map(|guarded| Input::Release { guarded }),
        3 => Just(Input::Deploy),
        1 => Just(Input::Pause),
        1 => Just(Input::Resume),
        1 => approver().prop_map(Input::Promote),
        2 => approver().prop_map(Input::Approve),
        1 => Just(Input::Abort),
        1 => Just(Input::Rollback),
        1 => Just(Input::Bypass),
        1 => Just(Input::ClearHold),
        1 => Just(Input::StopLine),
        1 => Just(Input::RestartLine),
    ]
}

// ---------------------------------------------------------------------------------------------
// The harness: a world, its log, a clock, and what each rollout has been through
// ---------------------------------------------------------------------------------------------

/// What the properties remember of a rollout between batches.
#[derive(Debug, Default)]
struct Track {
    /// Halted (by a verdict, an expired bypass, a hold past max_hold or a person) and not
    /// since resumed by an approved bypass: it must not move forward.
    failed: bool,
    /// The status it ended in, which never changes again, and the batch of events that ended
    /// it (the rest of that batch may still be about it: an escalation with its mitigation).
    ended: Option<(RolloutStatus, u64)>,
}

struct Sim {
    world: World,
    log: Vec<Event>,
    now: Timestamp,
    versions: u32,
    tracks: BTreeMap<String, Track>,
    /// Batches appended so far: one command's or one step's events.
    batches: u64,
}

type Checked = Result<(), TestCaseError>;

impl Sim {
    fn new(plan: &Plan) -> Result<Sim, TestCaseError> {
        let mut sim = Sim {
            world: World::default(),
            log: Vec::new(),
            now: EPOCH,
            versions: 0,
            tracks: BTreeMap::new(),
            batches: 0,
        };
        let spec = workload_spec(plan);
        let applied = command::apply_spec(&sim.world, &spec)
            .map_err(|e| TestCaseError::fail(format!("the generated spec is refused: {e}")))?
            .expect("a new spec");
        sim.append(vec![applied], "alice")?;
        Ok(sim)
    }

    fn ws(&self) -> &WorkloadState {
        self.world.workload(WL).expect("the workload exists")
    }

    /// The last events, oldest first: the end of every failure message.
    fn trail(&self) -> String {
        let from = self.log.len().saturating_sub(16);
        self.log[from..]
            .iter()
            .map(|e| {
                let about = e.kind.rollout_id().map(|id| format!(" ({id})")).unwrap_or_default();
                format!("  #{} +{}s {}{} by {}", e.seq, e.at.since(EPOCH) / SEC, e.kind.type_name(), about, e.actor)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn fail(&self, what: String) -> TestCaseError {
        TestCaseError::fail(format!("{what}\nlast events:\n{}", self.trail()))
    }

    /// Numbers the events, folds them in and checks the properties of each.
    fn append(&mut self, kinds: Vec<EventKind>, actor: &str) -> Checked {
        self.batches += 1;
        for kind in kinds {
            self.check_before(&kind)?;
            let seq = self.log.len() as u64 + 1;
            let e =
                NewEvent { at: self.now, actor: actor.into(), reason: "property".into(), workload: WL.into(), kind }
                    .numbered(seq);
            self.world.apply(&e);
            self.log.push(e);
            self.check_after()?;
        }
        Ok(())
    }

    /// A command's outcome: refused commands append nothing, which is all there is to check.
    fn command(&mut self, outcome: Result<Vec<EventKind>, command::CommandError>, actor: &str) -> Checked {
        let before = self.log.len();
        match outcome {
            Ok(kinds) => self.append(kinds, actor),
            Err(_) => {
                prop_assert_eq!(self.log.len(), before);
                Ok(())
            }
        }
    }

    fn run(&mut self, input: &Input) -> Checked {
        let now = self.now;
        match input {
            Input::Wait(s) => self.now = self.now.plus_ms(s * SEC),
            Input::Tick { seen, converged, router } => self.tick(*seen, *converged, *router)?,
            Input::Release { guarded } => {
                let version = format!("v{}", self.versions + 1);
                let mut content =
                    ReleaseContent { artifact: format!("registry.example/checkout:{version}"), ..Default::default() };
                content.metadata.author = "alice".into();
                if *guarded {
                    content.guarded_by = vec!["new-checkout".into()];
                }
                let req = ReleaseRequest { version, content };
                let out = command::create_release(&self.world, WL, &req, "alice", now).map(|(k, _)| {
                    self.versions += 1;
                    k.into_iter().collect()
                });
                self.command(out, "alice")?;
            }
            Input::Deploy => {
                let Some(version) = self.ws().release_order.last().cloned() else { return Ok(()) };
                let out = command::deploy_governed(&self.world, WL, &version, "alice", None, now).map(|(k, _)| k);
                self.command(out, "alice")?;
            }
            Input::Pause => self.command(command::pause(&self.world, WL).map(|k| vec![k]), "alice")?,
            Input::Resume => self.command(command::resume(&self.world, WL).map(|k| vec![k]), "alice")?,
            Input::Promote(who) => {
                self.command(command::promote_all(&self.world, WL, who.name(), now), who.name())?;
            }
            Input::Approve(who) => {
                let approver = Approver { name: who.name(), emergency: false };
                self.command(governance::approve(&self.world, WL, &approver, "looks good", now), who.name())?;
            }
            Input::Abort => self.command(command::abort(&self.world, WL).map(|k| vec![k]), "alice")?,
            Input::Rollback => {
                self.command(command::rollback_all(&self.world, WL, None, "alice", "by hand"), "alice")?;
            }
            Input::Bypass => self.command(command::bypass(&self.world, WL, "bob", "the rest works"), "bob")?,
            Input::ClearHold => {
                let Some(version) = self.ws().held.keys().next().cloned() else { return Ok(()) };
                self.command(command::clear_hold(&self.world, WL, &version).map(|k| vec![k]), "alice")?;
            }
            Input::StopLine => {
                let out = governance::stop_line(&self.world).map(|v| v.into_iter().map(|(_, k)| k).collect());
                self.command(out, "alice")?;
            }
            Input::RestartLine => {
                let out = governance::restart_line(&self.world).map(|v| v.into_iter().map(|(_, k)| k).collect());
                self.command(out, "alice")?;
            }
        }
        Ok(())
    }

    /// One controller round on the workload, as the controller's `tick` decides it.
    fn tick(&mut self, seen: Seen, converged: bool, router: Option<u8>) -> Checked {
        let queued = governance::tick(&self.world, WL, self.now);
        self.append(queued, "controller")?;
        let ws = self.ws();
        let Some(r) = ws.active_rollout() else { return Ok(()) };
        let baseline_now = router.map(|n| BakeBaseline {
            router_instance: format!("router-{n}"),
            canary: Traffic::default(),
            stable: Some(Traffic::default()),
            usage_rps_before: None,
        });
        // The controller judges nothing while no bake window can start.
        if r.stage == Stage::Deploying && baseline_now.is_none() && r.status != RolloutStatus::Mitigating {
            return Ok(());
        }
        let observation = observe(r, seen, self.now);
        let analyzer = ringfence_core::analysis::analyzer_for(&ws.spec.health.analysis, r);
        let release = ws.releases.get(&r.release);
        let input = StepInput {
            now: self.now,
            converged,
            observation: &observation,
            baseline_now,
            health: &ws.spec.health,
            mitigation: &ws.spec.mitigation,
            max_hold: ws.spec.rollout.max_hold,
            analyzer: &*analyzer,
            flags_only: r.from.as_ref().is_some_and(|f| ws.runtime_of(f) == ws.runtime_of(&r.release)),
            decision: DecisionContext {
                undrilled: &[],
                model: ws.spec.rollout.model,
                criticality: ws.spec.workload.criticality,
                guard_flags: release.map(|x| x.content.guarded_by.as_slice()).unwrap_or_default(),
                migration: release.and_then(|x| x.content.migration.as_ref()),
                backup: ws.backups.get(&r.id).map(String::as_str),
                hotfix: None,
            },
            approved: governance::phase_approved(ws, r, self.now),
            advance_blocked: governance::advance_blocked(&self.world, ws, r, self.now),
        };
        let (events, verdict) = rollout::step_judged(r, &input);
        self.check_step(r, &input, verdict.as_ref().map(|v| v.health), &events)?;
        self.append(events, "controller")
    }

    /// What one step decided, against what it was given.
    fn check_step(&self, r: &Rollout, input: &StepInput<'_>, health: Option<Health>, events: &[EventKind]) -> Checked {
        for k in events {
            // An event about another rollout would be dropped by the fold: lost.
            if let Some(id) = k.rollout_id() {
                prop_assert_eq!(id, r.id.as_str(), "a step of {} emitted {}\n{}", r.id, k.type_name(), self.trail());
            }
        }
        if health == Some(Health::Unhealthy) {
            let names: Vec<String> = events.iter().map(EventKind::type_name).collect();
            prop_assert_eq!(
                names,
                vec!["rollout_halted".to_string()],
                "an unhealthy verdict on {} must halt it and do nothing else\n{}",
                r.id,
                self.trail()
            );
        }
        for k in events {
            if let EventKind::PhasePassed { phase, by_hand, verdict, .. } = k {
                let gates = &r.phases[*phase].gates;
                if !by_hand && gates.contains(&Gate::Health) && verdict.health != Health::Healthy {
                    return Err(self.fail(format!(
                        "{} passed phase {phase} on a {} verdict without a promote",
                        r.id, verdict.health
                    )));
                }
                if gates.contains(&Gate::Approval) && !input.approved {
                    return Err(
                        self.fail(format!("{} passed phase {phase}'s approval gate without its approvals", r.id))
                    );
                }
                if input.advance_blocked.is_some() {
                    return Err(self.fail(format!(
                        "{} passed phase {phase} while it may not advance ({})",
                        r.id,
                        input.advance_blocked.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Before an event is folded in: it does not move a failed or ended rollout forward.
    fn check_before(&self, kind: &EventKind) -> Checked {
        let Some(id) = kind.rollout_id() else { return Ok(()) };
        let forward = matches!(
            kind,
            EventKind::PhasePassed { .. }
                | EventKind::PhaseStarted { .. }
                | EventKind::RolloutCompleted { .. }
                | EventKind::LkgUpdated { .. }
                | EventKind::BakeStarted { .. }
        );
        let Some(track) = self.tracks.get(id) else { return Ok(()) };
        if forward && track.failed {
            return Err(self.fail(format!("{} after {id} was halted on a failed gate", kind.type_name())));
        }
        if let Some((ended, batch)) = track.ended
            && batch < self.batches
        {
            return Err(self.fail(format!("{} about {id}, which had ended {}", kind.type_name(), ended.as_str())));
        }
        Ok(())
    }

    /// After every event: the log and the projections agree.
    fn check_after(&mut self) -> Checked {
        let e = self.log.last().expect("just appended");
        let n = self.log.len() as u64;
        prop_assert_eq!(e.seq, n, "the log has gaps");
        prop_assert_eq!(self.world.last_seq, n, "the world did not see event {}", n);
        let ws = self.world.workload(WL).expect("the workload exists");
        let active = ws.rollouts.iter().filter(|r| r.status.is_active()).count();
        prop_assert!(active <= 1, "{} rollouts active at once\n{}", active, self.trail());
        if active == 1 {
            prop_assert!(ws.rollouts.last().is_some_and(|r| r.status.is_active()), "an older rollout is still active");
        }
        // The running counts `/metrics` reads are what a walk over the history finds.
        prop_assert_eq!(
            &ws.totals,
            &ringfence_core::totals::Totals::walk(ws).plus(&ws.forgotten.totals),
            "the running counts left the history after event {}\n{}",
            n,
            self.trail()
        );
        if let Some(id) = e.kind.rollout_id()
            && let Some(r) = ws.rollout(id)
        {
            // Where a rollout's events lie: a reader of one rollout reads that stretch only.
            prop_assert_eq!(r.last_seq, e.seq, "{}'s last event is not where it says\n{}", id, self.trail());
            let first = self.log.iter().find(|x| x.kind.rollout_id() == Some(id)).map(|x| x.seq);
            prop_assert_eq!(Some(r.first_seq), first, "{}'s first event is not where it says", id);
            let track = self.tracks.entry(id.to_string()).or_default();
            match &e.kind {
                EventKind::RolloutHalted { .. } => track.failed = true,
                EventKind::BypassApproved { .. } => track.failed = false,
                _ => {}
            }
            let ended =
                matches!(r.status, RolloutStatus::Completed | RolloutStatus::Mitigated | RolloutStatus::Aborted);
            match track.ended {
                Some((before, _)) => prop_assert_eq!(r.status, before, "{} changed after it ended", id),
                None if ended => track.ended = Some((r.status, self.batches)),
                None => {}
            }
            prop_assert_eq!(
                r.ended_at.is_some(),
                ended,
                "{} is {} with ended_at {:?}",
                id,
                r.status.as_str(),
                r.ended_at
            );
            if r.status == RolloutStatus::Completed {
                prop_assert_eq!(r.phase, r.phases.len() - 1, "{} completed before its last phase", id);
            }
            if let EventKind::LkgUpdated { version, .. } = &e.kind {
                prop_assert_eq!(ws.stable.as_ref(), Some(version));
                prop_assert_eq!(r.status, RolloutStatus::Completed, "{} became last known good unfinished", version);
            }
        }
        Ok(())
    }

    /// The world as it would settle with no more trouble: healthy traffic (or, `blind`, a
    /// router nobody can read) on a converged world, the line running, approvals given, a
    /// paused rollout resumed.
    fn settle(&mut self, blind: bool) -> Checked {
        if self.world.line.is_some() {
            self.run(&Input::RestartLine)?;
        }
        let limit = self.now.plus_ms(4 * 60 * MIN);
        while self.now < limit {
            if self.ws().active_rollout().is_none() && self.ws().governance.pending.is_none() {
                return Ok(());
            }
            if self.ws().active_rollout().is_some_and(|r| r.status == RolloutStatus::Halted) {
                return Ok(());
            }
            self.run(&Input::Resume)?;
            for who in [Approver2::Bob, Approver2::Carol] {
                self.run(&Input::Approve(who))?;
            }
            self.tick(if blind { Seen::Blind } else { Seen::Good }, true, Some(0))?;
            self.now = self.now.plus_ms(15 * SEC);
        }
        Ok(())
    }

    /// After settling: every rollout ended, or the active one waits for a reason it names.
    fn check_settled(&self) -> Checked {
        let ws = self.ws();
        for r in &ws.rollouts[..ws.rollouts.len().saturating_sub(1)] {
            prop_assert!(!r.status.is_active(), "{} is {} but is not the latest", r.id, r.status.as_str());
        }
        let Some(r) = ws.active_rollout() else {
            if let Some(p) = &ws.governance.pending {
                return Err(self.fail(format!("the deployment of {} is still queued, given every approval", p.version)));
            }
            return Ok(());
        };
        let why = ringfence_core::explain::why(ws);
        let named = match r.status {
            RolloutStatus::Halted => {
                r.decision.as_ref().is_some_and(|d| !d.summary.is_empty()) && why.contains("Why: ")
            }
            RolloutStatus::Progressing => {
                r.held_since.is_some()
                    && r.escalated
                    && (why.contains("Held after its bake") || why.contains("Waiting for approval"))
            }
            _ => false,
        };
        if !named {
            return Err(self.fail(format!(
                "{} is {} (phase {}, {:?}) after hours of settling and names no reason:\n{why}",
                r.id,
                r.status.as_str(),
                r.phase,
                r.stage
            )));
        }
        Ok(())
    }

    /// The log as the store keeps it (JSON, read back) folds into the same world.
    fn check_replay(&self) -> Checked {
        let mut replayed = World::default();
        for e in &self.log {
            let json =
                serde_json::to_string(e).map_err(|x| self.fail(format!("event {} does not serialize: {x}", e.seq)))?;
            let back: Event = serde_json::from_str(&json)
                .map_err(|x| self.fail(format!("event {} does not read back: {x}\n{json}", e.seq)))?;
            prop_assert_eq!(&back, e, "event {} changes through the log", e.seq);
            replayed.apply(&back);
        }
        if replayed != self.world {
            return Err(self.fail("replaying the log does not rebuild the live world".into()));
        }
        Ok(())
    }
}

fn workload_spec(plan: &Plan) -> WorkloadSpec {
    let mut spec = spec::parse("checkout.toml", spec::EXAMPLE).expect("the example spec is valid");
    let template = spec.rollout.phases[0].clone();
    spec.rollout.phases = plan
        .phases
        .iter()
        .enumerate()
        .map(|(i, &(weight, bake, approval, health))| {
            let mut gates = Vec::new();
            if health {
                gates.push(Gate::Health);
            }
            if approval {
                gates.push(Gate::Approval);
            }
            spec::PhaseSpec { name: format!("p{i}"), weight, bake: Dur::secs(bake), gates, ..template.clone() }
        })
        .collect();
    spec.rollout.max_hold = Dur(plan.max_hold_min * MIN);
    spec.health.analysis.method = if plan.sequential { AnalysisMethod::Sequential } else { AnalysisMethod::Threshold };
    spec.mitigation.auto_fallback = plan.auto_fallback;
    spec.mitigation.fallback_after_max_hold = plan.fallback_after_max_hold;
    spec.mitigation.bypass_approvers = vec!["bob".into()];
    spec.approval.required = plan.approvals_required;
    spec.approval.before_start = plan.approval_before_start;
    spec
}

/// Traffic since the window began at `RPS`, split by the current phase's weight.
fn observe(r: &Rollout, seen: Seen, now: Timestamp) -> Observation {
    let secs = r.window_started_at.map_or(0, |s| now.since(s) / SEC);
    let total = RPS * secs;
    let canary_n = total * u64::from(r.current_phase().weight_bp()) / 10_000;
    let stable_n = total - canary_n;
    // Latency spread over the router's buckets with a tail, as real traffic spreads: the
    // sequential latency test compares the versions at the stable one's quantiles, and a
    // histogram with nothing beyond them gives it nothing to compare.
    let traffic = |n: u64, error_share: u64, slow: bool| {
        let scale = if slow { 8 } else { 1 };
        let mut latency_us: BTreeMap<u64, u64> = BTreeMap::new();
        for (low, high, share) in [(8_000, 64_000, 900), (64_000, 200_000, 90), (200_000, 1_000_000, 10)] {
            let bounds: Vec<u64> = ringfence_traffic::grid::latency_bounds_us()
                .iter()
                .copied()
                .filter(|b| (low * scale..high * scale).contains(b))
                .collect();
            let part = n * share / 1_000;
            for (i, b) in bounds.iter().enumerate() {
                let count = part / bounds.len() as u64 + u64::from((i as u64) < part % bounds.len() as u64);
                *latency_us.entry(*b).or_default() += count;
            }
        }
        let counted: u64 = latency_us.values().sum();
        if let Some(first) = latency_us.values_mut().next() {
            *first += n - counted;
        }
        let latency_us = latency_us.into_iter().filter(|(_, c)| *c > 0).collect();
        Traffic { requests: n, errors: n * error_share / 1_000, latency_us }
    };
    let version = |v: &str, t: Traffic| VersionObservation {
        version: v.into(),
        traffic: (seen != Seen::Blind).then_some(t),
        probes_answered: 2,
        ..Default::default()
    };
    let mut canary = version(
        &r.release,
        match seen {
            Seen::Errors => traffic(canary_n, 200, false),
            Seen::Slow => traffic(canary_n, 5, true),
            _ => traffic(canary_n, 5, false),
        },
    );
    match seen {
        Seen::Silent => canary.probes_answered = 0,
        Seen::Crash => canary.crashes = vec!["replica 0 (pid 4242) exited with status 101".into()],
        _ => {}
    }
    let baseline = r.from.as_deref().map(|from| {
        let mut b = version(from, traffic(stable_n, 5, false));
        if seen == Seen::StableBroken {
            b.probes_failing = vec!["replica 0".into()];
        }
        b
    });
    Observation { canary, baseline, window_ms: secs * SEC, freshness_ms: 250, signals: vec![] }
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

/// A workload with a stable version already, so most cases exercise a full plan.
fn with_stable(plan: &Plan) -> Result<Sim, TestCaseError> {
    let mut sim = Sim::new(plan)?;
    sim.run(&Input::Release { guarded: false })?;
    sim.run(&Input::Deploy)?;
    sim.settle(false)?;
    prop_assert_eq!(sim.ws().stable.as_deref(), Some("v1"), "the first deploy did not complete\n{}", sim.trail());
    Ok(sim)
}

fn run_case(plan: &Plan, stable_first: bool, inputs: &[Input], blind: bool) -> Checked {
    let mut sim = if stable_first { with_stable(plan)? } else { Sim::new(plan)? };
    for i in inputs {
        sim.run(i)?;
    }
    sim.settle(blind)?;
    sim.check_settled()?;
    sim.check_replay()
}

/// `cases` unless `PROPTEST_CASES` asks for more (a longer hunt than CI's); failures are not
/// written to files: one worth keeping becomes a plain test below.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, max_shrink_iters: 4_000, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(512))]

    /// Never a step forward after a failed gate, never an event lost or misplaced, and in
    /// the end every rollout ended or says why it waits.
    #[test]
    fn rollouts_keep_their_invariants(
        plan in plan(),
        stable_first in proptest::bool::weighted(0.8),
        inputs in proptest::collection::vec(input(), 1..120),
        blind in proptest::bool::weighted(0.2),
    ) {
        run_case(&plan, stable_first, &inputs, blind)?;
    }
}

/// 10% then 100%, 30 s each on health, threshold analysis, no automatic fallback.
fn canary_then_all(max_hold_min: u64) -> Plan {
    Plan {
        phases: vec![(10.0, 30, false, true), (100.0, 30, false, true)],
        sequential: false,
        auto_fallback: false,
        fallback_after_max_hold: false,
        max_hold_min,
        approvals_required: 1,
        approval_before_start: false,
    }
}

/// A case shrinking found once stays a plain test: a failed canary with fallback off is
/// rolled back by hand after the line stopped, and nothing moves forward.
#[test]
fn a_held_failure_stays_failed_through_a_stopped_line() {
    let plan = canary_then_all(5);
    let tick = |seen| Input::Tick { seen, converged: true, router: Some(0) };
    let inputs = [
        Input::Release { guarded: false },
        Input::Deploy,
        tick(Seen::Good),
        Input::Wait(60),
        tick(Seen::Errors),
        Input::StopLine,
        tick(Seen::Good),
        Input::Rollback,
        tick(Seen::Good),
    ];
    run_case(&plan, true, &inputs, false).unwrap();
}

/// Found by the property above: once a bypass was approved, `why` went on quoting the
/// decision it answered ("exposure is frozen while the bypass awaits approval") however the
/// rollout went on: held, or even completed.
#[test]
fn a_bypassed_rollout_says_what_it_waits_for_not_the_decision_it_answered() {
    let plan = canary_then_all(1);
    let mut sim = with_stable(&plan).unwrap();
    let tick = |seen| Input::Tick { seen, converged: true, router: Some(0) };
    for i in [Input::Release { guarded: true }, Input::Deploy, tick(Seen::Good), tick(Seen::Crash)] {
        sim.run(&i).unwrap();
    }
    assert!(ringfence_core::explain::why(sim.ws()).contains("awaits approval"), "a bypass is offered");
    sim.run(&Input::Bypass).unwrap();
    sim.settle(true).unwrap();
    sim.check_settled().unwrap();
    let why = ringfence_core::explain::why(sim.ws());
    assert!(why.contains("bob approved a bypass (new-checkout off)"), "{why}");
    assert!(why.contains("Held after its bake") && !why.contains("awaits approval"), "{why}");

    sim.settle(false).unwrap();
    assert_eq!(sim.ws().latest_rollout().unwrap().status, RolloutStatus::Completed);
    let why = ringfence_core::explain::why(sim.ws());
    assert!(why.contains("Every phase passed its gates") && !why.contains("awaits approval"), "{why}");
}
