//! The controller: one loop per workload, level-triggered.
//!
//! Every tick recomputes, from the stored state alone, what the world should look like
//! ([`WorkloadState::desired`]), compares it with what is there (processes, the router's
//! table), and closes the gap one idempotent action at a time, recording the intent before
//! acting and the outcome after. Then it observes health and lets the pure core decide what
//! the rollout does next. Nothing depends on remembering what the previous tick did: the
//! in-memory caches here only save work and are rebuilt after a restart.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringfence_core::event::{Action, EventKind};
use ringfence_core::health::HealthAnalyzer;
use ringfence_core::rollout::{self, RolloutStatus, Stage, StepInput};
use ringfence_core::state::{Desired, WorkloadState};
use ringfence_router::{BreakerConfig, Group, RouteTable, StatsSnapshot};

use crate::executor::{InstanceStatus, Replica, Slot, StopKind};
use crate::routerproc;
use crate::state::Shared;
use crate::traffic::DataPlane;
use ringfence_core::spec::RouterKind;

mod act;
mod drill;
mod observe;
mod record;

pub use act::stop_all;
use act::{apply_routes, check_drift, ensure_router, read_stats, route_table, same_routes, start_replica};

/// Starts the loop of a workload unless it runs already.
pub fn spawn_workload(shared: &Arc<Shared>, name: &str) {
    // Replicas: the controller runs only where the workload's lease is.
    if !shared.leads(name) {
        return;
    }
    if !shared.running_loops.lock().expect("loops lock").insert(name.to_string()) {
        return;
    }
    let tasks = shared.tasks.clone();
    let shared = shared.clone();
    let name = name.to_string();
    // Everything the loop logs carries the workload, once, from its span.
    let span = tracing::info_span!("workload", workload = %name);
    let run = async move {
        let mut local = Local::new(&name);
        let notify = shared.notifier(&name);
        loop {
            if !shared.leads(&name) {
                tracing::warn!("no longer leading this workload: its controller stops here");
                routerproc::forget_socket(&shared, &name);
                break;
            }
            let mut rounds = 0;
            // A round that changed something runs again at once: a halt is followed by the
            // fallback in the same breath, not a tick later.
            while rounds < 8 {
                rounds += 1;
                match tick(&shared, &mut local).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "controller tick failed");
                        break;
                    }
                }
            }
            let period = loop_period(shared.tick, local.tier, local.probe_every, local.bake_due.take(), Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = notify.notified() => {}
                _ = shared.shutdown.cancelled() => break,
            }
        }
        shared.running_loops.lock().expect("loops lock").remove(&name);
    };
    tasks.spawn(tracing::Instrument::instrument(run, span));
}

/// How long a workload's loop sleeps unless something wakes it.
///
/// A workload of the router tier learns its traffic from the routers' reports, which wake it
/// when they carry something new (at most once a second); ticking ten times as often would
/// judge the same counters again. Its own period is the fallback for when nothing new comes:
/// twice the reports' period (a timer in step with them would often wake it a second time for
/// the same counters), or its probes' interval when shorter, so probes keep their cadence.
/// Every other change wakes it as it wakes any workload. A phase whose bake ends sooner is
/// judged when it ends, not up to a period late.
fn loop_period(tick: Duration, tier: bool, probe_every: Duration, bake_due: Option<Instant>, now: Instant) -> Duration {
    let period = if tier { tick.max((crate::tierclient::REPORT_EVERY * 2).min(probe_every)) } else { tick };
    bake_due.map_or(period, |due| period.min(due.saturating_duration_since(now)))
}

/// Caches that only save work; all of them may be lost at any time.
/// How often the router's table is read back to catch a change made behind the controller's
/// back (an admin call with a stolen secret).
const DRIFT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The wait before a stable version whose replica failed to start is started again.
const STABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

struct Local {
    name: String,
    /// Whether the workload's traffic goes through the router tier (as of the last tick).
    tier: bool,
    /// Its probes' interval (as of the last tick).
    probe_every: Duration,
    /// When the bake of the phase in progress ends (as of the last tick).
    bake_due: Option<Instant>,
    router_checked: bool,
    applied: Option<RouteTable>,
    /// When the router's own table was last compared with the installed one.
    drift_checked: Option<Instant>,
    /// After a failed router start: when to try again, and the wait after that (doubling up
    /// to a minute), so a port in use is not retried many times a second with an event each.
    router_retry: Option<(Instant, Duration)>,
    /// Whether this server holds a copy of the router's users' socket (bound it, or took it
    /// from the router it adopted), and after a failed try to take it: when to try again, and
    /// the wait after that.
    socket_kept: bool,
    socket_retry: Option<(Instant, Duration)>,
    /// After a failed backup hook: when to run it again, and the wait after that.
    backup_retry: Option<(Instant, Duration)>,
    /// The count each version was last resized to through the `scale` hook.
    scaled: HashMap<String, u32>,
    /// By instance id.
    probes: HashMap<String, ProbeState>,
    stats: Option<(Instant, StatsSnapshot)>,
    /// The stable version's counters when its watch window began: (rollout, router instance,
    /// counters), so a regression in its own traffic can be told from what it served before.
    watch_base: Option<(String, String, ringfence_router::VersionStats)>,
    /// When each version's last replica start was asked for: a stable version whose start
    /// failed is tried again `STABLE_RETRY_AFTER` later.
    stable_retry: HashMap<String, Instant>,
    /// Instances whose stop failed: when to try again, and the wait before that (doubling).
    stop_retry: HashMap<String, (Instant, Duration)>,
    prom: crate::sources::PromCache,
    usage: crate::sources::UsageMeter,
    /// The usage rate when the current rollout began: its reference for the usage signal.
    usage_before: Option<(String, Option<f64>)>,
    /// The analyzer of the phase being judged, built once per rollout, phase, passed phases and
    /// analysis spec: carrying the passed phases' evidence reads their histograms, which is
    /// not worth redoing every tick.
    analyzer: Option<(AnalyzerKey, Box<dyn HealthAnalyzer + Send>)>,
    /// Predeployment checks running in tasks of their own, by (version, check): a slow check
    /// never holds up this loop (a rollout's health and mitigation come first).
    checks: HashMap<(String, String), tokio::task::JoinHandle<()>>,
    /// Deliveries of incident updates under way, by (channel, incident, update).
    deliveries: HashMap<(String, String, usize), tokio::task::JoinHandle<()>>,
    /// The traffic samples of the rollout being recorded, not yet appended.
    recorder: Option<record::Recorder>,
    /// The running drill's version's counters at the last look: (drill, counters).
    drill_traffic: Option<(String, ringfence_core::drill::DrillTraffic)>,
}

/// What the analyzer of a phase depends on.
/// (rollout, phase, phases passed, bypassed, analysis): an analyzer judges one stretch of
/// traffic; a bypass starts the phase over, with evidence of its own.
type AnalyzerKey = (String, usize, usize, bool, ringfence_core::spec::AnalysisSpec);

#[derive(Default)]
struct ProbeState {
    last: Option<Instant>,
    /// Not probed before then: a first probe put off to its place in the interval.
    not_before: Option<Instant>,
    /// When a failure was last counted in `consecutive_failures` (at most one an interval).
    counted: Option<Instant>,
    consecutive_failures: u32,
    answered: bool,
    last_error: String,
}

impl Local {
    fn new(name: &str) -> Local {
        Local {
            name: name.into(),
            tier: false,
            probe_every: Duration::from_secs(1),
            bake_due: None,
            router_checked: false,
            drift_checked: None,
            router_retry: None,
            socket_kept: false,
            socket_retry: None,
            backup_retry: None,
            scaled: HashMap::new(),
            applied: None,
            probes: HashMap::new(),
            stats: None,
            watch_base: None,
            stable_retry: HashMap::new(),
            stop_retry: HashMap::new(),
            prom: Default::default(),
            usage: Default::default(),
            usage_before: None,
            analyzer: None,
            checks: HashMap::new(),
            deliveries: HashMap::new(),
            recorder: None,
            drill_traffic: None,
        }
    }
}

/// The workload's state for one tick: an `Arc` clone, so a tick costs the same whatever the
/// size of the workload's history. Durable: the tick acts outside the process on it.
async fn snapshot(shared: &Shared, name: &str) -> Option<std::sync::Arc<WorkloadState>> {
    shared.world_durable(name, |w| w.snapshot(name)).await
}

/// The events of a replica's stop that intent `op_id` asked for.
fn stopped(rec: &ringfence_core::state::ReplicaRecord, op_id: String, kind: StopKind) -> Vec<EventKind> {
    let done = if kind == StopKind::Undo { "undone" } else { "stopped" };
    vec![
        EventKind::ReplicaStopped {
            version: rec.version.clone(),
            replica: rec.replica,
            instance: rec.instance.clone(),
        },
        EventKind::ActionSucceeded { op_id, detail: format!("{} replica {} {done}", rec.version, rec.replica) },
    ]
}

/// Records the intent for `action` (or finds the one left open by a crash) and returns its id.
async fn intend(shared: &Shared, name: &str, action: &Action) -> anyhow::Result<String> {
    let mut op_id = None;
    shared
        .command(name, "controller", "reconcile", |w| {
            let ws = w.workload(name).expect("workload exists while its loop runs");
            if let Some((id, _)) = ws.open_intents.iter().find(|(_, a)| *a == action) {
                op_id = Some(id.clone());
                return Ok(vec![]);
            }
            let id = format!("{name}/op-{}", ws.intents_total + 1);
            op_id = Some(id.clone());
            Ok(vec![EventKind::ActionIntended { op_id: id, action: action.clone() }])
        })
        .await?;
    Ok(op_id.expect("set above"))
}

async fn tick(shared: &Arc<Shared>, local: &mut Local) -> anyhow::Result<bool> {
    shared.ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = local.name.clone();
    let Some(ws) = snapshot(shared, &name).await else { return Ok(false) };
    // A control-plane-down drill: this loop is the control plane it takes down. Nothing is
    // observed, decided or done until the outage is over; the router serves on its own.
    if let Some(left) = drill::controller_down_for(&ws) {
        local.bake_due = Some(Instant::now() + left + Duration::from_millis(2));
        return Ok(false);
    }
    local.tier = ws.spec.router.kind == RouterKind::Tier;
    local.probe_every = ws.spec.health.probe.interval.std();
    local.bake_due = ws
        .active_rollout()
        .and_then(|r| r.bake_due_in_ms(crate::state::now()))
        // Already due and still baking: the phase waits for evidence, on the usual period.
        .filter(|ms| *ms > 0)
        // A little after, so the bake is served on the millisecond clock the core reads.
        .map(|ms| Instant::now() + Duration::from_millis(ms + 2));
    let mut changed = false;

    // Replicas that died since the last look are crashes: recorded, never restarted away.
    for rec in ws.replicas.values() {
        let slot = Slot { workload: &name, version: &rec.version, replica: rec.replica };
        if let InstanceStatus::Exited(status) = shared.executor.status(slot, &rec.instance, &ws.spec.executor) {
            // A stop that a crash of this server interrupted: the replica is gone because it
            // was asked to go. Closed as the stop it was, not taken for a crash.
            let stopping = ws.open_intents.iter().find(|(_, a)| {
                matches!(a, Action::StopReplica { version, replica } if *version == rec.version && *replica == rec.replica)
            });
            if let Some((op_id, _)) = stopping {
                shared
                    .record(&name, "stop finished after a restart", stopped(rec, op_id.clone(), StopKind::Retire))
                    .await?;
                local.probes.remove(&rec.instance);
                changed = true;
                continue;
            }
            shared
                .record(
                    &name,
                    "replica exited unasked",
                    vec![EventKind::ReplicaExited {
                        version: rec.version.clone(),
                        replica: rec.replica,
                        instance: rec.instance.clone(),
                        status,
                    }],
                )
                .await?;
            local.probes.remove(&rec.instance);
            changed = true;
        }
    }
    if changed {
        return Ok(true);
    }

    // Blue-green: the old stack kept warm after a switch goes when its time is up, or when a
    // rollout to another version begins (a rollback to it keeps it: it is the way back).
    if let Some(w) = &ws.warm {
        let active = ws.active_rollout();
        let superseded = active.is_some_and(|r| r.release != w.version);
        if superseded || (active.is_none() && crate::state::now() >= w.until) {
            let why = if superseded {
                "a new rollout began".to_string()
            } else {
                format!("kept warm for {} after the switch", ws.spec.rollout.warm_for())
            };
            shared
                .record(
                    &name,
                    &why,
                    vec![EventKind::StackRetired { version: w.version.clone(), rollout_id: w.rollout_id.clone() }],
                )
                .await?;
            return Ok(true);
        }
    }

    // A bypass whose flags stayed off too long: escalated, once.
    if let Some(e) = shared.world(|w| ringfence_core::command::degraded_too_long(w, &name, crate::state::now())) {
        tracing::error!(
            workload = name,
            "a bypass has kept its guard flags off past mitigation.max_degraded: fix the feature or restore the flags"
        );
        shared.record(&name, "the bypass ran degraded past mitigation.max_degraded", vec![e]).await?;
        return Ok(true);
    }

    // Predeployment checks ringfence runs itself, each in a task of its own; its result is an
    // attestation recorded when it comes back.
    local.checks.retain(|_, task| !task.is_finished());
    for (version, check) in shared.world_durable(&name, |w| ringfence_core::governance::checks_due(w, &name)).await {
        let key = (version.clone(), check.name.clone());
        let Some(release) = ws.releases.get(&version).cloned() else { continue };
        if local.checks.contains_key(&key) {
            continue;
        }
        let (shared, name) = (shared.clone(), name.clone());
        let task = tokio::spawn(async move {
            let a = crate::checks::run(&shared.http, &shared.data_dir, &name, &release, &check).await;
            tracing::info!(workload = name, version, check = check.name, passed = a.passed, "predeployment check ran");
            let reason = format!("check {} {}", check.name, if a.passed { "passed" } else { "failed" });
            let recorded = shared
                .command(&name, "controller", &reason, |w| {
                    ringfence_core::governance::attest(w, &name, &version, &a, "controller", crate::state::now())
                })
                .await;
            if let Err(e) = recorded {
                tracing::error!(workload = name, version, check = check.name, error = %e, "cannot record a check's result");
            }
        });
        local.checks.insert(key, task);
    }

    // Governance: a queued deployment whose wait is over starts; owed gates are settled or
    // flagged overdue. Decided against the state as it is when appended.
    if shared.world(|w| !ringfence_core::governance::tick(w, &name, crate::state::now()).is_empty()) {
        let events = shared
            .command(&name, "controller", "governance", |w| {
                Ok(ringfence_core::governance::tick(w, &name, crate::state::now()))
            })
            .await?;
        for e in &events {
            match &e.kind {
                EventKind::OwedGateSettled { gate, outcome, detail, version }
                    if *outcome != ringfence_core::governance::OwedOutcome::Passed =>
                {
                    tracing::error!(
                        workload = name,
                        version,
                        gate,
                        ?outcome,
                        detail,
                        "a gate an emergency deployment skipped has not passed"
                    );
                }
                EventKind::DeployDropped { version, why } => {
                    tracing::warn!(workload = name, version, why, "a queued deployment was dropped");
                }
                _ => {}
            }
        }
        return Ok(true);
    }

    // An incident whose mitigation was verified and whose health has held since: resolved.
    let resolved = |w: &ringfence_core::World| {
        w.workload(&name).map(|ws| ringfence_core::incident::confirmed(ws, crate::state::now())).unwrap_or_default()
    };
    if !shared.world(resolved).is_empty() {
        let why = format!("health held for {} after the verified mitigation", ws.spec.incident.confirm_after);
        shared.command(&name, "controller", &why, |w| Ok(resolved(w))).await?;
        return Ok(true);
    }

    // Incident updates to the channels, each in a task of its own (a slow receiver never holds
    // up this loop); each outcome is recorded, and failures are tried again after a backoff.
    local.deliveries.retain(|_, task| !task.is_finished());
    for due in shared
        .world_durable(&name, |w| {
            w.workload(&name)
                .map(|ws| ringfence_core::incident::deliveries_due(ws, crate::state::now()))
                .unwrap_or_default()
        })
        .await
    {
        let key = (due.channel.name.clone(), due.incident.id.clone(), due.update);
        let (channel, incident, update) = key.clone();
        let (http, data_dir, w) = (shared.http.clone(), shared.data_dir.clone(), name.clone());
        let send = async move { crate::notify::deliver(&http, &data_dir, &w, &due).await };
        send_in_background(
            shared,
            &name,
            &mut local.deliveries,
            key,
            send,
            move |result, attempts, name| match result {
                Ok(()) => EventKind::NotificationDelivered { attempts, channel, incident, update },
                Err(error) => {
                    tracing::warn!(
                        workload = name,
                        channel,
                        incident,
                        update,
                        error,
                        "an incident update was not delivered"
                    );
                    EventKind::NotificationFailed { channel, incident, update, error }
                }
            },
        );
    }

    // Follow-up items: exported to the issue trackers, and reminders of overdue ones to the
    // stakeholders, through the same outbox (one task per message, each outcome an event).
    for due in shared
        .world_durable(&name, |w| {
            w.workload(&name)
                .map(|ws| ringfence_core::incident::follow_up_sends_due(ws, crate::state::now()))
                .unwrap_or_default()
        })
        .await
    {
        let subject = ringfence_core::incident::follow_up_subject(&due.follow_up.id);
        let key = (due.channel.name.clone(), subject, due.message);
        let (id, channel, message) = (due.follow_up.id.clone(), due.channel.name.clone(), due.message);
        let (http, data_dir, w) = (shared.http.clone(), shared.data_dir.clone(), name.clone());
        let send = async move { crate::notify::send_follow_up(&http, &data_dir, &w, &due).await };
        send_in_background(
            shared,
            &name,
            &mut local.deliveries,
            key,
            send,
            move |result, attempts, name| match result {
                Ok(reference) => EventKind::FollowUpSent { attempts, id, channel, message, reference },
                Err(error) => {
                    tracing::warn!(
                        workload = name,
                        follow_up = id,
                        channel,
                        error,
                        "a follow-up message was not delivered"
                    );
                    EventKind::FollowUpSendFailed { id, channel, message, error }
                }
            },
        );
    }
    let reminders = |w: &ringfence_core::World| {
        w.workload(&name).map(|ws| ringfence_core::incident::reminders_due(ws, crate::state::now())).unwrap_or_default()
    };
    if !shared.world(reminders).is_empty() {
        shared.command(&name, "controller", "overdue follow-up items", |w| Ok(reminders(w))).await?;
        return Ok(true);
    }

    // Status updates of the incidents: on every change of state, then on their cadence.
    let updates = |w: &ringfence_core::World| {
        w.workload(&name).map(|ws| ringfence_core::incident::updates_due(ws, crate::state::now())).unwrap_or_default()
    };
    if !shared.world(updates).is_empty() {
        shared.command(&name, "controller", "incident status update", |w| Ok(updates(w))).await?;
        return Ok(true);
    }

    // A regression right after a switch (blue-green, or a canary watched): back to the warm
    // stack at once. Its own traffic counts from the first look in the window.
    let mut served = None;
    if let (Some(w), Some(stable), Some((_, snap))) = (&ws.warm, &ws.stable, &local.stats) {
        let now = snap.versions.get(stable).cloned().unwrap_or_default();
        match &local.watch_base {
            Some((id, instance, base)) if *id == w.rollout_id && *instance == snap.instance_id => {
                let d = now.delta(base);
                served = Some((d.requests, d.errors));
            }
            _ => local.watch_base = Some((w.rollout_id.clone(), snap.instance_id.clone(), now)),
        }
    }
    if let Some((why, _)) = shared.world(|w| ringfence_core::command::regression_in_watch(w, &name, served)) {
        shared
            .command(&name, "controller", &why, |w| {
                Ok(ringfence_core::command::regression_in_watch(w, &name, served).map(|(_, e)| e).unwrap_or_default())
            })
            .await?;
        return Ok(true);
    }

    let admin = ensure_router(shared, local, &ws).await?;
    if admin.is_some()
        && ws.spec.router.kind == RouterKind::Builtin
        && ws.router.as_ref().is_none_or(|r| !crate::executor::process::pid_alive(r.pid))
    {
        // A router just started: look again, so replicas learn its address.
        return Ok(true);
    }
    // A release with a migration: the data is backed up before anything of it starts.
    if let Some((rollout_id, migration)) = ws.awaiting_backup() {
        if local.backup_retry.is_none_or(|(at, _)| Instant::now() >= at) {
            let (rollout_id, migration) = (rollout_id.to_string(), migration.to_string());
            act::backup(shared, local, &ws, &rollout_id, &migration).await?;
            return Ok(true);
        }
        return Ok(false);
    }

    let desired = ws.desired();
    let active = ws.active_rollout();

    // A fallback takes traffic off the new version before anything else, even when the stack
    // that takes it back must grow first (rings updated in place): users are better served by
    // fewer healthy instances for a moment than by the failing version while others start.
    if active.as_ref().is_some_and(|r| r.status == RolloutStatus::Mitigating)
        && let Some(admin) = &admin
    {
        let table =
            route_table(&ws, &desired, local.applied.as_ref().map(|t| t.generation).unwrap_or(0), &shared.data_dir);
        let leaves = |t: &RouteTable, version: &str| t.groups.iter().any(|g| g.version == version && g.weight_bp > 0);
        let takes_off = local
            .applied
            .as_ref()
            .is_some_and(|a| a.groups.iter().any(|g| g.weight_bp > 0 && !leaves(&table, &g.version)));
        if takes_off && !table.groups.is_empty() {
            apply_routes(shared, local, &ws, admin.clone(), table).await?;
            return Ok(true);
        }
    }

    // Start what should run.
    local.stable_retry.retain(|_, at| at.elapsed() < STABLE_RETRY_AFTER);
    for (version, count) in &desired.versions {
        // `version` here is a runtime (see `runtime_of`): the processes of the new release.
        let is_new = active.as_ref().is_some_and(|r| {
            &ws.runtime_of(&r.release) == version && r.from.as_ref().map(|f| ws.runtime_of(f)).as_ref() != Some(version)
        });
        let crashed =
            active.as_ref().is_some_and(|r| ws.crashes.iter().any(|c| &c.version == version && c.at >= r.started_at));
        if is_new && crashed {
            continue; // a crash is the new version's verdict, not something to restart away
        }
        if ws.start_failures.contains_key(version) {
            if is_new {
                continue; // the failed start is the new version's verdict; the core halts it
            }
            if local.stable_retry.contains_key(version) {
                continue;
            }
        }
        // A platform that scales by count grows first; deploy then answers for each slot. What
        // runs when this server first looks is the size it starts from.
        if local.scaled.is_empty() {
            for (v, _) in ws.replicas.keys() {
                *local.scaled.entry(v.clone()).or_default() += 1;
            }
        }
        if (0..*count).any(|i| !ws.replicas.contains_key(&(version.clone(), i))) {
            act::scale(shared, local, &ws, version, *count).await?;
        }
        for replica in 0..*count {
            if ws.replicas.contains_key(&(version.clone(), replica)) {
                continue;
            }
            start_replica(shared, &ws, version, replica).await?;
            local.stable_retry.insert(version.clone(), Instant::now());
            changed = true;
        }
    }
    if changed {
        return Ok(true);
    }

    // Nobody else changes the router's table: read it back now and then, and take back what
    // was changed behind the controller's back.
    if let Some(admin) = &admin
        && local.drift_checked.is_none_or(|t| t.elapsed() >= DRIFT_CHECK_EVERY)
    {
        local.drift_checked = Some(Instant::now());
        if let Some(drift) = check_drift(shared, local, admin).await {
            shared.record(&name, "the router's table was changed behind the controller's back", vec![drift]).await?;
            return Ok(true);
        }
    }

    // Route as desired, over the replicas that are up.
    let table = route_table(&ws, &desired, local.applied.as_ref().map(|t| t.generation).unwrap_or(0), &shared.data_dir);
    let routes_match = local.applied.as_ref().is_some_and(|a| same_routes(a, &table));
    if !routes_match && let Some(admin) = admin {
        apply_routes(shared, local, &ws, admin, table).await?;
        return Ok(true);
    }
    if routes_match && let Some(serving) = &local.applied {
        let settled = act::settle_route_intents(&ws, serving);
        if !settled.is_empty() {
            shared.record(&name, "the router serves the desired table", settled).await?;
            return Ok(true);
        }
    }

    // Stop what should no longer run, now that no route points at it. A version no longer
    // wanted at all goes only once the versions that are wanted run in full (or cannot start):
    // the stack that took the traffic back is confirmed serving before the other is drained.
    let wanted: BTreeMap<&str, u32> = desired.versions.iter().map(|(v, n)| (v.as_str(), *n)).collect();
    let in_full = desired
        .versions
        .iter()
        .all(|(v, n)| ws.start_failures.contains_key(v) || (0..*n).all(|i| ws.replicas.contains_key(&(v.clone(), i))));
    if routes_match {
        for rec in ws.replicas.values().rev() {
            if !wanted.contains_key(rec.version.as_str()) && !in_full {
                continue;
            }
            // A redeploy replaces this one now: it has left the table; its slot starts afresh.
            let replaced = ws.replacing().is_some_and(|(v, i)| *v == rec.version && *i == rec.replica);
            let keep = !replaced && wanted.get(rec.version.as_str()).is_some_and(|n| rec.replica < *n);
            if keep {
                continue;
            }
            // A mitigated rollout's own instances are undone, newest first (the replicas are
            // visited from the highest), and an undo waits for the newer ones to succeed;
            // everything else is retired, each on its own.
            let kind = if active
                .as_ref()
                .is_some_and(|r| r.status == RolloutStatus::Mitigating && ws.runtime_of(&r.release) == rec.version)
            {
                StopKind::Undo
            } else {
                StopKind::Retire
            };
            let waiting = local.stop_retry.get(&rec.instance).is_some_and(|(at, _)| Instant::now() < *at);
            if waiting && kind == StopKind::Undo {
                break;
            }
            if !waiting {
                let action = Action::StopReplica { version: rec.version.clone(), replica: rec.replica };
                let op = intend(shared, &name, &action).await?;
                let slot = Slot { workload: &name, version: &rec.version, replica: rec.replica };
                match shared.executor.stop(slot, &rec.instance, &ws.spec.executor, kind).await {
                    Ok(()) => {
                        local.probes.remove(&rec.instance);
                        local.stop_retry.remove(&rec.instance);
                        let why = match kind {
                            StopKind::Undo => "the rollout was mitigated: its deploys are undone, newest first",
                            StopKind::Retire => "no longer desired",
                        };
                        shared.record(&name, why, stopped(rec, op, kind)).await?;
                    }
                    Err(e) => {
                        // It may still run: the record stays, and the stop is tried again,
                        // less often each time.
                        let wait = local
                            .stop_retry
                            .get(&rec.instance)
                            .map_or(Duration::from_secs(1), |(_, w)| (*w * 2).min(Duration::from_secs(60)));
                        local.stop_retry.insert(rec.instance.clone(), (Instant::now() + wait, wait));
                        tracing::warn!(version = rec.version, replica = rec.replica, error = %e, "stop failed");
                        shared
                            .record(
                                &name,
                                if kind == StopKind::Undo { "undo failed" } else { "stop failed" },
                                vec![EventKind::ActionFailed { op_id: op, error: e.to_string() }],
                            )
                            .await?;
                        if kind == StopKind::Undo {
                            changed = true;
                            break;
                        }
                    }
                }
                changed = true;
            }
        }
    }
    if changed {
        return Ok(true);
    }
    // ... and shrinks once the instances it no longer needs are gone.
    let shrunk: Vec<(String, u32)> = local
        .scaled
        .iter()
        .map(|(v, n)| (v.clone(), *n, wanted.get(v.as_str()).copied().unwrap_or(0)))
        .filter(|(v, n, target)| target < n && ws.replicas.keys().filter(|(x, _)| x == v).count() as u32 <= *target)
        .map(|(v, _, target)| (v, target))
        .collect();
    for (version, target) in shrunk {
        act::scale(shared, local, &ws, &version, target).await?;
    }
    // A version scaled to nothing is forgotten (releases come and go; the map would only grow).
    local.scaled.retain(|version, n| *n > 0 || wanted.contains_key(version.as_str()));

    // A deleted workload's router goes last, once nothing is routed to its instances.
    if ws.deleted {
        if ws.replicas.is_empty()
            && let Some(r) = &ws.router
        {
            routerproc::stop(r.pid).await;
            routerproc::release_socket(shared, &name);
            shared.record(&name, "workload deleted", vec![EventKind::RouterStopped { pid: r.pid }]).await?;
            return Ok(true);
        }
        return Ok(false);
    }

    // Observe and let the core decide.
    let stats = match admin {
        Some(admin) => read_stats(shared, admin).await,
        None => None,
    };
    if let Some(s) = &stats {
        local.stats = Some((Instant::now(), s.clone()));
        let batches = record::observe(&mut local.recorder, &ws, s);
        if !batches.is_empty() {
            shared.record(&name, "traffic samples", batches).await?;
        }
    }
    if drill::tick(shared, local, &ws, stats.as_ref()).await? {
        return Ok(true);
    }
    let Some(r) = active else {
        if let Some(s) = &stats {
            local.usage.observe(s.versions.values().map(|v| v.requests).sum());
        }
        return Ok(false);
    };
    // Just after this server started, the routers of the tier have not all reported yet: a
    // bake judged now would only be held for unreadable counters (a `phase_held` in every
    // rollout that fell due while the server was away). It is judged once they have.
    if local.tier
        && r.stage == Stage::Baking
        && r.status == RolloutStatus::Progressing
        && let Some(left) = shared.traffic.tier.first_reports_left()
    {
        local.bake_due = Some(Instant::now() + left + Duration::from_millis(2));
        return Ok(false);
    }
    if local.usage_before.as_ref().is_none_or(|(id, _)| id != &r.id) {
        local.usage_before = Some((r.id.clone(), local.usage.rps()));
    }
    let converged = routes_match
        && desired.versions.iter().all(|(v, n)| (0..*n).all(|i| ws.replicas.contains_key(&(v.clone(), i))))
        && ws.replicas.values().all(|rec| wanted.contains_key(rec.version.as_str()));

    // Smoke tests run against the newly exposed version once the phase's exposure is in place,
    // in every phase on their own.
    if converged
        && r.stage == Stage::Deploying
        && matches!(r.status, RolloutStatus::Progressing | RolloutStatus::Paused)
    {
        let done: Vec<&str> = r.smoke.iter().filter(|t| t.phase == r.phase).map(|t| t.name.as_str()).collect();
        let todo: Vec<_> = ws.spec.health.smoke.iter().filter(|t| !done.contains(&t.name.as_str())).cloned().collect();
        if !todo.is_empty() {
            let runtime = ws.runtime_of(&r.release);
            let replicas: Vec<_> = ws.replicas.values().filter(|x| x.version == runtime).cloned().collect();
            let mut events = Vec::new();
            for test in &todo {
                let result = crate::sources::run_smoke(&shared.http, test, &replicas, r.emergency.is_some()).await;
                events.push(EventKind::SmokeTestRan {
                    rollout_id: r.id.clone(),
                    phase: r.phase,
                    name: test.name.clone(),
                    version: r.release.clone(),
                    passed: result.is_ok(),
                    detail: result.unwrap_or_else(|e| e),
                });
            }
            shared.record(&name, "smoke tests of the phase", events).await?;
            return Ok(true);
        }
    }
    let (observation, baseline_now, t) = observe::observe(shared, local, &ws, r, stats.as_ref()).await;
    let undrilled = ringfence_core::drill::undrilled(&ws, t);

    // Decide against the state as it is now, not as it was when this tick began: a person
    // may have paused or aborted in between.
    let mut decided = Vec::new();
    let mut live = None;
    shared
        .command(&name, "controller", "rollout step", |w| {
            let Some(ws) = w.workload(&name) else { return Ok(vec![]) };
            let Some(current) = ws.active_rollout() else { return Ok(vec![]) };
            if current.id != r.id || current.stage != r.stage || current.phase != r.phase {
                return Ok(vec![]);
            }
            let needs_bake_baseline = current.stage == Stage::Deploying;
            if needs_bake_baseline && baseline_now.is_none() && current.status != RolloutStatus::Mitigating {
                // The router cannot be read: no window can start, so nothing is judged yet.
                return Ok(vec![]);
            }
            let input = StepInput {
                now: t,
                converged,
                observation: &observation,
                baseline_now: baseline_now.clone(),
                health: &ws.spec.health,
                mitigation: &ws.spec.mitigation,
                max_hold: ws.spec.rollout.max_hold,
                analyzer: {
                    let spec = &ws.spec.health.analysis;
                    let fresh = |(id, phase, passed, bypassed, s): &AnalyzerKey| {
                        *id == current.id
                            && *phase == current.phase
                            && *passed == current.windows.len()
                            && *bypassed == current.bypass.is_some()
                            && s == spec
                    };
                    if !local.analyzer.as_ref().is_some_and(|(key, _)| fresh(key)) {
                        let key = (
                            current.id.clone(),
                            current.phase,
                            current.windows.len(),
                            current.bypass.is_some(),
                            spec.clone(),
                        );
                        local.analyzer = Some((key, ringfence_core::analysis::analyzer_for(spec, current)));
                    }
                    &*local.analyzer.as_ref().expect("set just above").1
                },
                flags_only: current.from.as_ref().is_some_and(|f| ws.runtime_of(f) == ws.runtime_of(&current.release)),
                approved: ringfence_core::governance::phase_approved(ws, current, t),
                advance_blocked: ringfence_core::governance::advance_blocked(w, ws, current, t),
                decision: {
                    let release = ws.releases.get(&current.release);
                    ringfence_core::decision::DecisionContext {
                        undrilled: &undrilled,
                        model: ws.spec.rollout.model,
                        criticality: ws.spec.workload.criticality,
                        guard_flags: release.map(|r| r.content.guarded_by.as_slice()).unwrap_or_default(),
                        migration: release.and_then(|r| r.content.migration.as_ref()),
                        backup: ws.backups.get(&current.id).map(String::as_str),
                        hotfix: ws.hotfix_of(&current.release),
                    }
                },
            };
            let (events, verdict) = rollout::step_judged(current, &input);
            decided = events;
            live = verdict.map(|verdict| crate::state::LiveVerdict { rollout_id: current.id.clone(), at: t, verdict });
            Ok(decided.clone())
        })
        .await?;
    if let Some(l) = live {
        shared.live.lock().expect("live lock").insert(name.clone(), l);
    }
    for k in &decided {
        if let EventKind::RolloutHalted { rollout_id, decision } = k {
            tracing::warn!(rollout = %rollout_id, action = ?decision.action, summary = %decision.summary, "rollout halted");
        }
        if let EventKind::Escalated { rollout_id, phase } = k {
            // Until notification channels exist, the log and the event are the page.
            tracing::error!(rollout = %rollout_id, phase = phase + 1, "rollout held past rollout.max_hold: a person must decide");
        }
    }
    Ok(!decided.is_empty())
}

/// Sends one message of the outbox (`key`: channel, subject, message number) in a task of its
/// own, so a slow receiver never holds up the loop, unless one is in flight already; `outcome`
/// turns the result and the attempt's number into the event recorded, which schedules the
/// next try of a failure.
fn send_in_background<T: Send + 'static>(
    shared: &Arc<Shared>,
    name: &str,
    in_flight: &mut HashMap<(String, String, usize), tokio::task::JoinHandle<()>>,
    key: (String, String, usize),
    send: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    outcome: impl FnOnce(Result<T, String>, u32, &str) -> EventKind + Send + 'static,
) {
    if in_flight.contains_key(&key) {
        return;
    }
    let (shared, name, k) = (shared.clone(), name.to_owned(), key.clone());
    let task = tokio::spawn(async move {
        let result = send.await;
        let attempts =
            shared.world(|w| w.workload(&name).and_then(|ws| ws.deliveries.get(&k)).map_or(1, |d| d.attempts + 1));
        let event = outcome(result, attempts, &name);
        if let Err(e) = shared.record(&name, "notification", vec![event]).await {
            tracing::error!(workload = name, error = %e, "cannot record a delivery");
        }
    });
    in_flight.insert(key, task);
}

#[cfg(test)]
mod tests {
    use ringfence_core::health::{Mode, Observation, PhaseWindow, Traffic, VersionObservation};
    use ringfence_core::rollout::{self, RolloutKind};
    use ringfence_core::spec::{self, HealthSpec};
    use ringfence_core::time::Timestamp;

    use ringfence_core::analysis::analyzer_for;

    fn traffic(requests: u64, errors: u64) -> Traffic {
        Traffic { requests, errors, latency_us: vec![(20_000, requests)] }
    }

    #[test]
    fn a_loop_sleeps_its_period_bounded_by_the_reports_the_probes_and_the_bake() {
        use std::time::{Duration, Instant};
        let (tick, now) = (Duration::from_millis(100), Instant::now());
        let s = Duration::from_secs;
        // Any other workload: the tick.
        assert_eq!(super::loop_period(tick, false, s(30), None, now), tick);
        // The tier's: twice the routers' reports, its probes' interval when shorter, never
        // under the tick.
        assert_eq!(super::loop_period(tick, true, s(30), None, now), s(2));
        assert_eq!(super::loop_period(tick, true, Duration::from_millis(1500), None, now), Duration::from_millis(1500));
        assert_eq!(super::loop_period(tick, true, Duration::from_millis(10), None, now), tick);
        // A bake ending sooner: woken when it ends; one already over: at once.
        let due = now + Duration::from_millis(700);
        assert_eq!(super::loop_period(tick, true, s(30), Some(due), now), Duration::from_millis(700));
        assert_eq!(super::loop_period(tick, false, s(30), Some(due), now), tick);
        assert_eq!(super::loop_period(tick, true, s(30), Some(now), now + s(1)), Duration::ZERO);
    }

    /// The controller hands the rollout's passed phases to the analyzer of the next one, so
    /// their evidence counts: the same traffic is a failure with the first phase's evidence
    /// and not without it.
    #[test]
    fn the_analyzer_carries_the_evidence_of_passed_phases() {
        let spec = spec::parse("checkout.toml", spec::EXAMPLE).expect("the example parses");
        let mut r = rollout::started(
            "checkout-2",
            "checkout",
            RolloutKind::Deploy,
            "v2",
            Some("v1"),
            &spec.rollout.phases,
            "digest",
            Timestamp(0),
        );
        let weights: Vec<u32> = r.phases.iter().map(|p| p.weight_bp()).collect();
        assert!(weights.len() > 2 && weights[0] < weights[1] && weights[1] < 10_000, "{weights:?}");
        r.phase = 1;
        let observe = |t: Traffic| VersionObservation {
            version: "v".into(),
            traffic: Some(t),
            probes_answered: 1,
            ..Default::default()
        };
        // Phase 2 so far: 2% of the new version's requests failed against 0.5%, too little to say.
        let share = weights[1] as u64;
        let canary = traffic(share / 10, share / 500);
        let stable = traffic((10_000 - share) / 10, (10_000 - share) / 2000);
        let o = Observation {
            canary: observe(canary),
            baseline: Some(observe(stable)),
            window_ms: 5_000,
            freshness_ms: 100,
            signals: vec![],
        };
        let health = HealthSpec { max_error_rate: 1.0, ..spec.health.clone() };
        let alone = analyzer_for(&spec.health.analysis, &r).evaluate(&o, &health, Mode::Phase);
        assert_ne!(alone.health, ringfence_core::Health::Unhealthy, "{alone:#?}");
        // The first phase ended suspicious: the same 2% against 0.5%, over more requests.
        let first = weights[0] as u64;
        r.windows.push(PhaseWindow {
            phase: 0,
            weight_bp: weights[0],
            canary: traffic(first * 4, first * 4 / 50),
            stable: traffic((10_000 - first) * 4, (10_000 - first) * 4 / 200),
        });
        let carried = analyzer_for(&spec.health.analysis, &r).evaluate(&o, &health, Mode::Phase);
        assert_eq!(carried.health, ringfence_core::Health::Unhealthy, "{carried:#?}");
    }
}
