//! Act: close the gap between the world and the desired state, each action idempotent and its
//! intent recorded first: start replicas, start the router, install routing tables (through
//! the traffic seam), and stop everything on a clean exit.

use super::*;

pub(super) async fn start_replica(
    shared: &Arc<Shared>,
    ws: &WorkloadState,
    version: &str,
    replica: u32,
) -> anyhow::Result<()> {
    let name = &ws.name;
    let action = Action::StartReplica { version: version.into(), replica };
    let op = intend(shared, name, &action).await?;
    let empty = BTreeMap::new();
    let config = ws.releases.get(version).map(|r| &r.content.config).unwrap_or(&empty);
    // `secret://` references become their values here, for the executor only.
    let secrets = crate::secrets::values(&shared.data_dir, &[config, &ws.spec.executor.env]);
    let resolved = crate::secrets::resolve_all(&shared.data_dir, config).and_then(|config| {
        let mut spec = ws.spec.executor.clone();
        spec.env = crate::secrets::resolve_all(&shared.data_dir, &spec.env)?;
        Ok((spec, config))
    });
    let result = match &resolved {
        Ok((spec, config)) => {
            shared
                .executor
                .ensure(&Replica {
                    workload: name,
                    version,
                    replica,
                    spec,
                    config,
                    router: match ws.spec.router.kind {
                        RouterKind::Haproxy | RouterKind::Tier => Some(ws.spec.router.listen.as_str()),
                        RouterKind::Builtin => ws.router.as_ref().map(|r| r.listen.as_str()),
                    },
                    secrets: &secrets,
                })
                .await
        }
        Err(e) => Err(crate::executor::ExecError::Secret { version: version.into(), replica, why: e.clone() }),
    };
    match result {
        Ok(s) => {
            shared
                .record(
                    name,
                    if s.adopted { "found running after a restart" } else { "desired" },
                    vec![
                        EventKind::ReplicaStarted {
                            version: version.into(),
                            replica,
                            instance: s.instance.clone(),
                            endpoint: s.endpoint.clone(),
                            adopted: s.adopted,
                        },
                        EventKind::ActionSucceeded {
                            op_id: op,
                            detail: format!("{version} replica {replica} ready at {}", s.endpoint),
                        },
                    ],
                )
                .await?;
        }
        Err(e) => {
            tracing::warn!(version, replica, error = %e, "replica failed to start");
            shared
                .record(name, "start failed", vec![EventKind::ActionFailed { op_id: op, error: e.to_string() }])
                .await?;
        }
    }
    Ok(())
}

/// Resizes `version` to `replicas` through the command executor's `scale` hook, once per
/// count. A failure is recorded and the deploys go on: they are what makes instances run.
pub(super) async fn scale(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    version: &str,
    replicas: u32,
) -> anyhow::Result<()> {
    let Some(hook) = ws.spec.executor.hooks.as_ref().and_then(|h| h.scale.as_ref()) else { return Ok(()) };
    if local.scaled.get(version) == Some(&replicas) {
        return Ok(());
    }
    local.scaled.insert(version.to_string(), replicas);
    let name = &ws.name;
    let op = intend(shared, name, &Action::Scale { version: version.into(), replicas }).await?;
    let argv: Vec<String> = hook.iter().map(|a| a.replace("{replicas}", &replicas.to_string())).collect();
    let env = BTreeMap::from([("RINGFENCE_REPLICAS".to_string(), replicas.to_string())]);
    let timeout = ws.spec.executor.hooks.as_ref().map_or(Duration::from_secs(60), |h| h.timeout.std());
    let call = crate::executor::HookCall {
        hook: "scale",
        workload: name,
        version,
        argv: &argv,
        env: &env,
        spec: &ws.spec.executor,
        timeout,
    };
    let outcome = match shared.executor.run_hook(&call).await {
        Ok(_) => EventKind::ActionSucceeded { op_id: op, detail: format!("{version} scaled to {replicas}") },
        Err(e) => EventKind::ActionFailed { op_id: op, error: e.to_string() },
    };
    shared.record(name, "the platform resizes by count", vec![outcome]).await?;
    Ok(())
}

/// Runs the `[data] backup` hook before the active rollout's migration and records what it
/// said (`backup=REFERENCE`); a failure is recorded with its reason and retried, less often
/// each time, while nothing of the release starts.
pub(super) async fn backup(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    rollout_id: &str,
    migration: &str,
) -> anyhow::Result<()> {
    let name = &ws.name;
    let Some(hook) = &ws.spec.data.backup else { return Ok(()) };
    let Some(r) = ws.active_rollout() else { return Ok(()) };
    let op =
        intend(shared, name, &Action::Backup { rollout_id: rollout_id.into(), migration: migration.into() }).await?;
    let stable = r.from.clone().unwrap_or_default();
    let argv: Vec<String> = hook
        .iter()
        .map(|a| {
            a.replace("{migration}", migration)
                .replace("{stable}", &stable)
                .replace("{workload}", name)
                .replace("{version}", &r.release)
        })
        .collect();
    let env = BTreeMap::from([
        ("RINGFENCE_MIGRATION".to_string(), migration.to_string()),
        ("RINGFENCE_STABLE".to_string(), stable.clone()),
        ("RINGFENCE_ROLLOUT".to_string(), rollout_id.to_string()),
    ]);
    let call = crate::executor::HookCall {
        hook: "backup",
        workload: name,
        version: &r.release,
        argv: &argv,
        env: &env,
        spec: &ws.spec.executor,
        timeout: ws.spec.data.backup_timeout().std(),
    };
    let result = shared.executor.run_hook(&call).await.map_err(|e| e.to_string()).and_then(|out| {
        out.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("backup=").map(|r| r.trim().to_string()))
            .filter(|r| !r.is_empty() && r.len() <= 1024)
            .ok_or_else(|| {
                format!(
                    "the backup hook succeeded but printed no `backup=REFERENCE` line (where the backup is): {}",
                    out.trim()
                )
            })
    });
    match result {
        Ok(reference) => {
            local.backup_retry = None;
            shared
                .record(
                    name,
                    "the release carries a migration: its data is backed up first",
                    vec![
                        EventKind::BackupTaken {
                            rollout_id: rollout_id.into(),
                            migration: migration.into(),
                            reference: reference.clone(),
                        },
                        EventKind::ActionSucceeded { op_id: op, detail: format!("backed up: {reference}") },
                    ],
                )
                .await?;
        }
        Err(e) => {
            let wait = local.backup_retry.map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(Duration::from_secs(60)));
            local.backup_retry = Some((Instant::now() + wait, wait));
            shared
                .record(
                    name,
                    "backup failed: nothing of the release starts until the data is backed up",
                    vec![EventKind::ActionFailed { op_id: op, error: e }],
                )
                .await?;
        }
    }
    Ok(())
}

/// Finds the workload's router (adopting one left by an earlier server) or starts it.
pub(super) async fn ensure_router(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
) -> anyhow::Result<Option<DataPlane>> {
    let name = &ws.name;
    if matches!(ws.spec.router.kind, RouterKind::Haproxy | RouterKind::Tier) {
        // The team runs HAProxy, or the tier's routers: nothing to start, only to find.
        let plane = crate::traffic::data_plane(&shared.data_dir, ws);
        if !local.router_checked
            && let Some(at) = &plane
        {
            match shared.traffic.table(at).await {
                Ok(t) => {
                    local.applied = t;
                    local.router_checked = true;
                }
                Err(e) => tracing::warn!(workload = name, error = %format!("{e:#}"), "the data plane cannot be read"),
            }
        }
        return Ok(plane);
    }
    if let Some(rec) = &ws.router
        && crate::executor::process::pid_alive(rec.pid)
        && let Ok(admin) = rec.admin.parse::<SocketAddr>()
    {
        let admin = DataPlane::Builtin(routerproc::endpoint(&shared.data_dir, name, admin));
        if !local.router_checked {
            // First look since this server started: trust the router's own table, not a cache.
            local.applied = shared.traffic.table(&admin).await.ok().flatten();
            local.router_checked = true;
        }
        // A copy of the adopted router's socket, tried again with a growing wait while it
        // cannot be had (the router still starting, busy, or from before the handover).
        if !local.socket_kept
            && local.socket_retry.is_none_or(|(at, _)| Instant::now() >= at)
            && let Ok(listen) = rec.listen.parse::<SocketAddr>()
        {
            let loud = local.socket_retry.is_none();
            local.socket_kept = routerproc::adopt_socket(shared, name, rec.pid, listen, loud).await;
            let wait = local.socket_retry.map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(Duration::from_secs(60)));
            local.socket_retry = (!local.socket_kept).then(|| (Instant::now() + wait, wait));
        }
        return Ok(Some(admin));
    }
    if ws.deleted || local.router_retry.is_some_and(|(at, _)| Instant::now() < at) {
        return Ok(None);
    }
    let op = intend(shared, name, &Action::StartRouter).await?;
    let listen = ws.router.as_ref().map(|r| r.listen.clone()).unwrap_or_else(|| ws.spec.router.listen.clone());
    match routerproc::start(shared, name, &listen).await {
        Ok(h) => {
            local.router_retry = None;
            // Bound (or held) by this server for the router it just started.
            (local.socket_kept, local.socket_retry) = (true, None);
            shared
                .record(
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
                )
                .await?;
            let plane = DataPlane::Builtin(h.endpoint());
            local.applied = shared.traffic.table(&plane).await.ok().flatten();
            local.router_checked = true;
            Ok(Some(plane))
        }
        Err(e) => {
            let wait = local.router_retry.map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(Duration::from_secs(60)));
            local.router_retry = Some((Instant::now() + wait, wait));
            shared
                .record(
                    name,
                    "router start failed",
                    vec![EventKind::ActionFailed { op_id: op, error: format!("{e:#}") }],
                )
                .await?;
            Ok(None)
        }
    }
}

pub(super) fn route_table(
    ws: &WorkloadState,
    desired: &Desired,
    last_generation: u64,
    data_dir: &std::path::Path,
) -> RouteTable {
    // Only the instances meant to keep running: one about to be stopped (a ring updated in
    // place) leaves the table before it stops, so no request is sent to it as it goes.
    let replacing = ws.replacing();
    let wanted = |version: &str, replica: u32| {
        desired.versions.iter().find(|(v, _)| v == version).is_none_or(|(_, n)| replica < *n)
            && replacing.is_none_or(|(v, i)| !(v == version && *i == replica))
    };
    let upstreams = |version: &str| -> Vec<SocketAddr> {
        ws.replicas
            .values()
            .filter(|r| r.version == version && wanted(&r.version, r.replica))
            .filter_map(|r| r.endpoint.parse::<SocketAddr>().ok())
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
            segment: g.segment.clone(),
            shadow_bp: g.shadow_bp,
            fault: g.fault,
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
        flag_tokens: ws.spec.flags.tokens.iter().map(|t| crate::secrets::token_digest(data_dir, &ws.name, t)).collect(),
        pin_header: ws.spec.router.pin_header.clone(),
        max_request_body: ws
            .spec
            .router
            .max_request_body
            .map_or(ringfence_traffic::table::DEFAULT_MAX_REQUEST_BODY, |b| b.as_u64()),
    }
}

/// Outcomes for the routing intents a crashed leader left open once the router serves the
/// desired table: the one whose table the router serves took effect (installed before the
/// crash, unrecorded), the others were superseded. Without them the intent would stay open,
/// and the projected split would stay the one before it.
pub(super) fn settle_route_intents(ws: &WorkloadState, serving: &RouteTable) -> Vec<EventKind> {
    ws.open_intents
        .iter()
        .filter_map(|(op_id, action)| {
            let Action::ApplyRoutes { generation, groups } = action else { return None };
            let in_effect = *generation == serving.generation
                && groups.len() == serving.groups.len()
                && groups.iter().zip(&serving.groups).all(|(a, b)| {
                    a.name == b.name && a.version == b.version && a.weight_bp == b.weight_bp && a.segment == b.segment
                });
            Some(if in_effect {
                EventKind::ActionSucceeded {
                    op_id: op_id.clone(),
                    detail: format!("table {generation} found in effect after a change of leader or a restart"),
                }
            } else {
                EventKind::ActionFailed {
                    op_id: op_id.clone(),
                    error: format!("superseded by table {}", serving.generation),
                }
            })
        })
        .collect()
}

pub(super) fn same_routes(a: &RouteTable, b: &RouteTable) -> bool {
    a.groups == b.groups
        && a.sticky_header == b.sticky_header
        && a.sticky_cookie == b.sticky_cookie
        && a.breaker == b.breaker
        && a.workload == b.workload
        && a.flag_tokens == b.flag_tokens
        && a.pin_header == b.pin_header
        && a.max_request_body == b.max_request_body
}

/// The router's table, if it is not the one installed last: the drift, and what the router
/// serves becomes the controller's starting point (so the desired table is installed again,
/// with a generation above whatever was put there).
pub(super) async fn check_drift(shared: &Shared, local: &mut Local, admin: &DataPlane) -> Option<EventKind> {
    let installed = local.applied.as_ref()?;
    let actual = shared.traffic.table(admin).await.ok()?;
    if actual.as_ref().is_some_and(|a| a.generation == installed.generation && same_routes(a, installed)) {
        return None;
    }
    let detail = match &actual {
        None => "the router serves no table".to_string(),
        Some(a) => {
            let upstreams = |t: &RouteTable| {
                t.groups.iter().map(|g| format!("{} {} -> {:?}", g.name, g.weight_bp, g.upstreams)).collect::<Vec<_>>()
            };
            format!("found {:?}, installed {:?}", upstreams(a), upstreams(installed))
        }
    };
    let event = EventKind::RoutesDrifted {
        expected_generation: installed.generation,
        found_generation: actual.as_ref().map_or(0, |a| a.generation),
        detail,
    };
    local.applied = actual;
    Some(event)
}

pub(super) async fn apply_routes(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    admin: DataPlane,
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
                segment: g.segment.clone(),
                shadow_bp: g.shadow_bp,
                fault: g.fault,
            })
            .collect(),
    };
    let op = intend(shared, name, &action).await?;
    match shared.traffic.install(&admin, &table).await {
        Ok(()) => {
            // Tables intended before this one and never confirmed (a crash between intent and
            // outcome) are moot now: closed, so no intent stays open forever.
            let superseded: Vec<EventKind> = ws
                .open_intents
                .iter()
                .filter(|(id, a)| **id != op && matches!(a, Action::ApplyRoutes { .. }))
                .map(|(id, _)| EventKind::ActionFailed {
                    op_id: id.clone(),
                    error: format!("superseded by table {}", table.generation),
                })
                .collect();
            let mut events = superseded;
            if let DataPlane::Tier(_) = &admin {
                // The tier's routers fetch the table from the log; the OFREP token digests
                // stay out of it (the serving server adds them from the spec's secrets).
                let mut published = table.clone();
                published.flag_tokens.clear();
                events.push(EventKind::RoutesPublished { table: published });
            }
            events
                .push(EventKind::ActionSucceeded { op_id: op, detail: ringfence_core::explain::action_words(&action) });
            shared.record(name, "desired traffic split", events).await?;
            local.applied = Some(table);
        }
        Err(e) => {
            shared
                .record(
                    name,
                    "router refused the table",
                    vec![EventKind::ActionFailed { op_id: op, error: format!("{e:#}") }],
                )
                .await?;
            // Re-read what the router has, so the next tick works from the truth.
            local.applied = shared.traffic.table(&admin).await.ok().flatten();
        }
    }
    Ok(())
}

pub(super) async fn read_stats(shared: &Shared, admin: DataPlane) -> Option<StatsSnapshot> {
    // Every tick reads them: skip one rather than wait.
    shared.traffic.with_timeout(Duration::from_millis(500)).stats(&admin).await.ok()
}

/// Stops every process the server started, for a clean exit. Recorded, so the next start
/// knows they were stopped on purpose and starts them again.
pub async fn stop_all(shared: &Arc<Shared>) {
    let workloads: Vec<std::sync::Arc<WorkloadState>> = shared.world(|w| w.workloads.values().cloned().collect());
    for ws in workloads {
        for rec in ws.replicas.values() {
            let slot = Slot { workload: &ws.name, version: &rec.version, replica: rec.replica };
            if let Err(e) = shared.executor.stop(slot, &rec.instance, &ws.spec.executor, StopKind::Retire).await {
                tracing::warn!(workload = ws.name, version = rec.version, error = %e, "stop at shutdown failed");
                continue;
            }
            let _ = shared
                .record(
                    &ws.name,
                    "server shutting down",
                    vec![EventKind::ReplicaStopped {
                        version: rec.version.clone(),
                        replica: rec.replica,
                        instance: rec.instance.clone(),
                    }],
                )
                .await;
        }
        if let Some(r) = &ws.router {
            routerproc::stop(r.pid).await;
        }
    }
}
