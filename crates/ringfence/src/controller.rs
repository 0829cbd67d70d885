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

use ringfence_core::event::{Action, BakeBaseline, EventKind};
use ringfence_core::health::{HealthAnalyzer, Observation, SignalResult, Traffic, VersionObservation};
use ringfence_core::rollout::{self, RolloutStatus, Stage, StepInput};
use ringfence_core::state::{Desired, WorkloadState};
use ringfence_router::{BreakerConfig, BreakerState, Group, RouteTable, StatsSnapshot};

use crate::executor::Replica;
use crate::routerproc;
use crate::state::{Shared, now};
use crate::traffic::TrafficAdapter as _;

/// Starts the loop of a workload unless it runs already.
pub fn spawn_workload(shared: &Arc<Shared>, name: &str) {
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
            tokio::select! {
                _ = tokio::time::sleep(shared.tick) => {}
                _ = notify.notified() => {}
                _ = shared.shutdown.cancelled() => break,
            }
        }
        shared.running_loops.lock().expect("loops lock").remove(&name);
    };
    tasks.spawn(tracing::Instrument::instrument(run, span));
}

/// Caches that only save work; all of them may be lost at any time.
struct Local {
    name: String,
    router_checked: bool,
    applied: Option<RouteTable>,
    probes: HashMap<u32, ProbeState>,
    stats: Option<(Instant, StatsSnapshot)>,
    stable_retry: HashMap<String, Instant>,
    prom: crate::sources::PromCache,
    usage: crate::sources::UsageMeter,
    /// The usage rate when the current rollout began: its reference for the usage signal.
    usage_before: Option<(String, Option<f64>)>,
    /// The analyzer of the phase being judged, built once per rollout, phase, passed phases and
    /// analysis spec: carrying the passed phases' evidence reads their histograms, which is
    /// not worth redoing every tick.
    analyzer: Option<(AnalyzerKey, Box<dyn HealthAnalyzer + Send>)>,
}

/// What the analyzer of a phase depends on.
type AnalyzerKey = (String, usize, usize, ringfence_core::spec::AnalysisSpec);

#[derive(Default)]
struct ProbeState {
    last: Option<Instant>,
    consecutive_failures: u32,
    answered: bool,
    last_error: String,
}

impl Local {
    fn new(name: &str) -> Local {
        Local {
            name: name.into(),
            router_checked: false,
            applied: None,
            probes: HashMap::new(),
            stats: None,
            stable_retry: HashMap::new(),
            prom: Default::default(),
            usage: Default::default(),
            usage_before: None,
            analyzer: None,
        }
    }
}

fn snapshot(shared: &Shared, name: &str) -> Option<WorkloadState> {
    shared.world(|w| w.workload(name).cloned())
}

/// Records the intent for `action` (or finds the one left open by a crash) and returns its id.
fn intend(shared: &Shared, name: &str, action: &Action) -> anyhow::Result<String> {
    let mut op_id = None;
    shared.command(name, "controller", "reconcile", |w| {
        let ws = w.workload(name).expect("workload exists while its loop runs");
        if let Some((id, _)) = ws.open_intents.iter().find(|(_, a)| *a == action) {
            op_id = Some(id.clone());
            return Ok(vec![]);
        }
        let id = format!("{name}/op-{}", ws.intents_total + 1);
        op_id = Some(id.clone());
        Ok(vec![EventKind::ActionIntended { op_id: id, action: action.clone() }])
    })?;
    Ok(op_id.expect("set above"))
}

async fn tick(shared: &Arc<Shared>, local: &mut Local) -> anyhow::Result<bool> {
    let name = local.name.clone();
    let Some(ws) = snapshot(shared, &name) else { return Ok(false) };
    let mut changed = false;

    // Replicas that died since the last look are crashes: recorded, never restarted away.
    for rec in ws.replicas.values() {
        if !shared.executor.alive(rec.pid) {
            let status = shared
                .executor
                .exit_status(rec.pid)
                .unwrap_or_else(|| "exited; status unknown (not a child of this server)".into());
            shared.record(
                &name,
                "replica exited unasked",
                vec![EventKind::ReplicaExited {
                    version: rec.version.clone(),
                    replica: rec.replica,
                    pid: rec.pid,
                    status,
                }],
            )?;
            local.probes.remove(&rec.pid);
            changed = true;
        }
    }
    if changed {
        return Ok(true);
    }

    let admin = ensure_router(shared, local, &ws).await?;
    if admin.is_some() && ws.router.as_ref().is_none_or(|r| !shared.executor.alive(r.pid)) {
        // A router just started: look again, so replicas learn its address.
        return Ok(true);
    }
    let desired = ws.desired();
    let active = ws.active_rollout().cloned();

    // Start what should run.
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
            if local.stable_retry.get(version).is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                continue;
            }
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

    // Route as desired, over the replicas that are up.
    let table = route_table(&ws, &desired, local.applied.as_ref().map(|t| t.generation).unwrap_or(0));
    let routes_match = local.applied.as_ref().is_some_and(|a| same_routes(a, &table));
    if !routes_match && let Some(admin) = admin {
        apply_routes(shared, local, &ws, admin, table).await?;
        return Ok(true);
    }

    // Stop what should no longer run, now that no route points at it.
    let wanted: BTreeMap<&str, u32> = desired.versions.iter().map(|(v, n)| (v.as_str(), *n)).collect();
    if routes_match {
        for rec in ws.replicas.values() {
            let keep = wanted.get(rec.version.as_str()).is_some_and(|n| rec.replica < *n);
            if !keep {
                let action = Action::StopReplica { version: rec.version.clone(), replica: rec.replica };
                let op = intend(shared, &name, &action)?;
                shared
                    .executor
                    .stop(&name, &rec.version, rec.replica, rec.pid, ws.spec.executor.stop_grace.std())
                    .await;
                local.probes.remove(&rec.pid);
                shared.record(
                    &name,
                    "no longer desired",
                    vec![
                        EventKind::ReplicaStopped { version: rec.version.clone(), replica: rec.replica, pid: rec.pid },
                        EventKind::ActionSucceeded {
                            op_id: op,
                            detail: format!("{} replica {} stopped", rec.version, rec.replica),
                        },
                    ],
                )?;
                changed = true;
            }
        }
    }
    if changed {
        return Ok(true);
    }

    // Observe and let the core decide.
    let stats = match admin {
        Some(admin) => read_stats(shared, admin).await,
        None => None,
    };
    if let Some(s) = &stats {
        local.stats = Some((Instant::now(), s.clone()));
    }
    let Some(r) = active else {
        if let Some(s) = &stats {
            local.usage.observe(s.versions.values().map(|v| v.requests).sum());
        }
        return Ok(false);
    };
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
                let result = crate::sources::run_smoke(&shared.http, test, &replicas).await;
                events.push(EventKind::SmokeTestRan {
                    rollout_id: r.id.clone(),
                    phase: r.phase,
                    name: test.name.clone(),
                    version: r.release.clone(),
                    passed: result.is_ok(),
                    detail: result.unwrap_or_else(|e| e),
                });
            }
            shared.record(&name, "smoke tests of the phase", events)?;
            return Ok(true);
        }
    }
    let freshness_ms = local.stats.as_ref().map(|(t, _)| t.elapsed().as_millis() as u64).unwrap_or(u64::MAX);
    probe(shared, local, &ws, &ws.runtime_of(&r.release)).await;
    if let Some(from) = &r.from {
        probe(shared, local, &ws, &ws.runtime_of(from)).await;
    }

    let baseline = r.baseline.as_ref().filter(|b| stats.as_ref().is_some_and(|s| s.instance_id == b.router_instance));
    let traffic_of = |version: &str, base: Option<&Traffic>| -> Option<Traffic> {
        let s = stats.as_ref()?;
        let now = s.versions.get(version).map(to_traffic).unwrap_or_default();
        Some(match base {
            Some(b) => now.since(b),
            None => now,
        })
    };
    let in_window = r.stage == Stage::Baking && baseline.is_some();
    let t = now();
    // Traffic is the release's (the router labels it so); processes are its runtime's.
    let observe = |version: &str, base: Option<&Traffic>| {
        let runtime = ws.runtime_of(version);
        let runtime = runtime.as_str();
        VersionObservation {
            version: version.to_string(),
            traffic: if in_window { traffic_of(version, base) } else { None },
            probes_failing: ws
                .replicas
                .values()
                .filter(|rec| rec.version == runtime)
                .filter_map(|rec| {
                    let p = local.probes.get(&rec.pid)?;
                    (p.consecutive_failures >= ws.spec.health.probe.failure_threshold)
                        .then(|| format!("replica {} (port {}): {}", rec.replica, rec.port, p.last_error))
                })
                .collect(),
            probes_answered: ws
                .replicas
                .values()
                .filter(|rec| rec.version == runtime && local.probes.get(&rec.pid).is_some_and(|p| p.answered))
                .count() as u32,
            crashes: ws
                .crashes
                .iter()
                .filter(|c| c.version == runtime && c.at >= r.started_at)
                .map(|c| format!("replica {} (pid {}) exited: {}", c.replica, c.pid, c.status))
                .collect(),
            start_failure: ws.start_failures.get(runtime).cloned(),
            breakers_open: stats
                .as_ref()
                .map(|s| {
                    s.upstreams
                        .iter()
                        .filter(|u| u.version == version && u.state == BreakerState::Open)
                        .map(|u| u.addr.to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    let canary = observe(&r.release, baseline.map(|b| &b.canary));
    let stable = r.from.as_deref().map(|f| observe(f, baseline.and_then(|b| b.stable.as_ref())));
    // The analysis window: from the bake's start, or from the router's restart within it.
    let window_ms = r.window_started_at.or(r.bake_started_at).map(|b| t.since(b)).unwrap_or(0);
    // Which signals count for which kind of rollout is the core's policy.
    let analysed = r.is_analysed();
    let mut signals = ringfence_core::signals::for_rollout(&ws, &r);
    if analysed
        && in_window
        && let Some(u) = ringfence_core::signals::usage(
            window_ms,
            canary.traffic.as_ref(),
            stable.as_ref().and_then(|s| s.traffic.as_ref()),
            baseline.and_then(|b| b.usage_rps_before),
            ws.spec.health.min_usage_ratio,
            &r.release,
        )
    {
        signals.push(u);
    }
    if let Some(prom) = &ws.spec.health.prometheus
        && analysed
        && r.stage == Stage::Baking
    {
        signals.extend(local.prom.signals(&shared.http, prom, &name, &r.release, r.from.as_deref()).await);
    }
    if let (Some(bake), Some(window)) = (r.bake_started_at, r.window_started_at)
        && window > bake
        && in_window
    {
        signals.push(SignalResult::new(
            "window",
            &r.release,
            ringfence_core::health::Health::Healthy,
            "ms",
            "the analysis window restarts when the router restarts (its counters start over)",
            format!(
                "the router restarted {:.1} s into the bake; traffic is judged from then on ({:.1} s so far)",
                window.since(bake) as f64 / 1000.0,
                window_ms as f64 / 1000.0
            ),
        ));
    }
    let observation = Observation { canary, baseline: stable, window_ms, freshness_ms, signals };
    let usage_rps_before = local.usage_before.as_ref().and_then(|(_, rps)| *rps);
    let baseline_now = stats.as_ref().map(|s| BakeBaseline {
        router_instance: s.instance_id.clone(),
        canary: s.versions.get(&r.release).map(to_traffic).unwrap_or_default(),
        stable: r.from.as_ref().map(|f| s.versions.get(f).map(to_traffic).unwrap_or_default()),
        usage_rps_before,
    });

    // Decide against the state as it is now, not as it was when this tick began: a person
    // may have paused or aborted in between.
    let mut decided = Vec::new();
    let mut live = None;
    shared.command(&name, "controller", "rollout step", |w| {
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
                let fresh = |(id, phase, passed, s): &AnalyzerKey| {
                    *id == current.id && *phase == current.phase && *passed == current.windows.len() && s == spec
                };
                if !local.analyzer.as_ref().is_some_and(|(key, _)| fresh(key)) {
                    let key = (current.id.clone(), current.phase, current.windows.len(), spec.clone());
                    local.analyzer = Some((key, ringfence_core::analysis::analyzer_for(spec, current)));
                }
                &*local.analyzer.as_ref().expect("set just above").1
            },
            flags_only: current.from.as_ref().is_some_and(|f| ws.runtime_of(f) == ws.runtime_of(&current.release)),
        };
        let (events, verdict) = rollout::step_judged(current, &input);
        decided = events;
        live = verdict.map(|verdict| crate::state::LiveHealth { rollout_id: current.id.clone(), at: t, verdict });
        Ok(decided.clone())
    })?;
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

async fn start_replica(shared: &Arc<Shared>, ws: &WorkloadState, version: &str, replica: u32) -> anyhow::Result<()> {
    let name = &ws.name;
    let action = Action::StartReplica { version: version.into(), replica };
    let op = intend(shared, name, &action)?;
    let empty = BTreeMap::new();
    let config = ws.releases.get(version).map(|r| &r.content.config).unwrap_or(&empty);
    let result = shared
        .executor
        .ensure(&Replica {
            workload: name,
            version,
            replica,
            spec: &ws.spec.executor,
            config,
            router: ws.router.as_ref().map(|r| r.listen.as_str()),
        })
        .await;
    match result {
        Ok(s) => {
            shared.record(
                name,
                if s.adopted { "found running after a restart" } else { "desired" },
                vec![
                    EventKind::ReplicaStarted {
                        version: version.into(),
                        replica,
                        pid: s.pid,
                        port: s.port,
                        adopted: s.adopted,
                    },
                    EventKind::ActionSucceeded {
                        op_id: op,
                        detail: format!("{version} replica {replica} ready on port {}", s.port),
                    },
                ],
            )?;
        }
        Err(e) => {
            tracing::warn!(version, replica, error = %e, "replica failed to start");
            shared.record(name, "start failed", vec![EventKind::ActionFailed { op_id: op, error: e.to_string() }])?;
        }
    }
    Ok(())
}

/// Finds the workload's router (adopting one left by an earlier server) or starts it.
async fn ensure_router(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
) -> anyhow::Result<Option<SocketAddr>> {
    let name = &ws.name;
    if let Some(rec) = &ws.router
        && shared.executor.alive(rec.pid)
        && let Ok(admin) = rec.admin.parse::<SocketAddr>()
    {
        if !local.router_checked {
            // First look since this server started: trust the router's own table, not a cache.
            local.applied = shared.traffic.table(admin).await.ok().flatten();
            local.router_checked = true;
        }
        return Ok(Some(admin));
    }
    let op = intend(shared, name, &Action::StartRouter)?;
    let listen = ws.router.as_ref().map(|r| r.listen.clone()).unwrap_or_else(|| ws.spec.router.listen.clone());
    match routerproc::start(shared, name, &listen).await {
        Ok(h) => {
            shared.record(
                name,
                "the workload needs its router",
                vec![
                    EventKind::RouterStarted {
                        pid: h.pid,
                        listen: h.listen.to_string(),
                        admin: h.admin.to_string(),
                        adopted: false,
                    },
                    EventKind::ActionSucceeded { op_id: op, detail: format!("router listening on {}", h.listen) },
                ],
            )?;
            local.applied = shared.traffic.table(h.admin).await.ok().flatten();
            local.router_checked = true;
            Ok(Some(h.admin))
        }
        Err(e) => {
            shared.record(
                name,
                "router start failed",
                vec![EventKind::ActionFailed { op_id: op, error: format!("{e:#}") }],
            )?;
            Ok(None)
        }
    }
}

fn route_table(ws: &WorkloadState, desired: &Desired, last_generation: u64) -> RouteTable {
    let upstreams = |version: &str| -> Vec<SocketAddr> {
        ws.replicas
            .values()
            .filter(|r| r.version == version)
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
            .collect()
    };
    let mut groups: Vec<Group> = desired
        .routes
        .iter()
        .map(|g| Group {
            name: g.name.clone(),
            version: g.version.clone(),
            weight_bp: g.weight_bp,
            upstreams: upstreams(if g.runs_on.is_empty() { &g.version } else { &g.runs_on }),
            flags: ws.flags_for(&g.version),
        })
        .collect();
    // Traffic meant for a group with nothing running goes to a group that has replicas.
    let orphaned: u32 = groups.iter().filter(|g| g.upstreams.is_empty()).map(|g| g.weight_bp).sum();
    if orphaned > 0 {
        if let Some(heir) = groups.iter_mut().rev().find(|g| !g.upstreams.is_empty()) {
            heir.weight_bp += orphaned;
        }
        for g in groups.iter_mut().filter(|g| g.upstreams.is_empty()) {
            g.weight_bp = 0;
        }
        if groups.iter().all(|g| g.upstreams.is_empty()) {
            groups.clear();
        }
    }
    let b = &ws.spec.router.breaker;
    RouteTable {
        generation: last_generation + 1,
        workload: ws.name.clone(),
        sticky_header: ws.spec.router.sticky_header.clone(),
        sticky_cookie: ws.spec.router.sticky_cookie.clone(),
        groups,
        breaker: BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            window: b.window,
            min_success_rate: b.min_success_rate,
            open_for_ms: b.open_for.as_ms(),
        },
        flag_tokens: ws
            .spec
            .flags
            .tokens
            .iter()
            .map(|t| {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(t.trim().as_bytes()))
            })
            .collect(),
    }
}

fn same_routes(a: &RouteTable, b: &RouteTable) -> bool {
    a.groups == b.groups
        && a.sticky_header == b.sticky_header
        && a.sticky_cookie == b.sticky_cookie
        && a.breaker == b.breaker
        && a.workload == b.workload
        && a.flag_tokens == b.flag_tokens
}

async fn apply_routes(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    admin: SocketAddr,
    table: RouteTable,
) -> anyhow::Result<()> {
    let name = ws.name.as_str();
    let action = Action::ApplyRoutes {
        generation: table.generation,
        groups: table
            .groups
            .iter()
            .map(|g| ringfence_core::event::RouteGroup {
                name: g.name.clone(),
                version: g.version.clone(),
                weight_bp: g.weight_bp,
                runs_on: ws.runtime_of(&g.version),
            })
            .collect(),
    };
    let op = intend(shared, name, &action)?;
    match shared.traffic.install(admin, &table).await {
        Ok(()) => {
            shared.record(
                name,
                "desired traffic split",
                vec![EventKind::ActionSucceeded { op_id: op, detail: ringfence_core::explain::action_words(&action) }],
            )?;
            local.applied = Some(table);
        }
        Err(e) => {
            shared.record(
                name,
                "router refused the table",
                vec![EventKind::ActionFailed { op_id: op, error: format!("{e:#}") }],
            )?;
            // Re-read what the router has, so the next tick works from the truth.
            local.applied = shared.traffic.table(admin).await.ok().flatten();
        }
    }
    Ok(())
}

async fn read_stats(shared: &Shared, admin: SocketAddr) -> Option<StatsSnapshot> {
    // Every tick reads them: skip one rather than wait.
    shared.traffic.with_timeout(Duration::from_millis(500)).stats(admin).await.ok()
}

/// Probes the replicas of `version` whose probe is due, all at once.
async fn probe(shared: &Arc<Shared>, local: &mut Local, ws: &WorkloadState, version: &str) {
    let spec = &ws.spec.health.probe;
    let due: Vec<(u32, u16)> = ws
        .replicas
        .values()
        .filter(|r| r.version == version)
        .filter(|r| local.probes.get(&r.pid).and_then(|p| p.last).is_none_or(|t| t.elapsed() >= spec.interval.std()))
        .map(|r| (r.pid, r.port))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (pid, port) in due {
        let exec = shared.executor.clone();
        let path = spec.path.clone();
        let timeout = spec.timeout.std();
        set.spawn(async move { (pid, exec.probe(port, &path, timeout).await) });
    }
    while let Some(Ok((pid, result))) = set.join_next().await {
        let p = local.probes.entry(pid).or_default();
        p.last = Some(Instant::now());
        match result {
            Ok(()) => {
                p.consecutive_failures = 0;
                p.answered = true;
            }
            Err(e) => {
                p.consecutive_failures += 1;
                p.last_error = e;
            }
        }
    }
}

fn to_traffic(v: &ringfence_router::VersionStats) -> Traffic {
    Traffic { requests: v.requests, errors: v.errors, latency_us: v.latency_buckets.clone() }
}

/// Stops every process the server started, for a clean exit. Recorded, so the next start
/// knows they were stopped on purpose and starts them again.
pub async fn stop_all(shared: &Arc<Shared>) {
    let workloads: Vec<WorkloadState> = shared.world(|w| w.workloads.values().cloned().collect());
    for ws in workloads {
        for rec in ws.replicas.values() {
            shared.executor.stop(&ws.name, &rec.version, rec.replica, rec.pid, ws.spec.executor.stop_grace.std()).await;
            let _ = shared.record(
                &ws.name,
                "server shutting down",
                vec![EventKind::ReplicaStopped { version: rec.version.clone(), replica: rec.replica, pid: rec.pid }],
            );
        }
        if let Some(r) = &ws.router {
            routerproc::stop(shared, r.pid).await;
        }
    }
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
