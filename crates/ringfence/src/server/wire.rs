//! Core values into the API's wire types (`ringfence-api`), and requests back into the core's.
//!
//! Every answer goes through here: the core's serde format is the event log's, not the API's,
//! so a change to the core shows up here as a compile error rather than as a silent change to
//! what clients read.

use ringfence_api as api;
use ringfence_core as core;

pub(super) fn ts(t: core::Timestamp) -> api::Timestamp {
    api::Timestamp(t.millis())
}

pub(super) fn status(
    world: &core::World,
    ws: &core::WorkloadState,
    live: Option<&crate::state::LiveVerdict>,
    now: core::Timestamp,
) -> api::WorkloadStatus {
    api::WorkloadStatus {
        // Replicas only: the caller, which holds the leases, fills it in.
        leader: None,
        tier_routers: Vec::new(),
        governance: governance(world, ws, now),
        drills: ws
            .drills
            .iter()
            .rev()
            .filter(|d| d.is_running())
            .map(|d| d.as_ref())
            .chain(core::drill::last_per_fault(ws))
            .map(drill)
            .collect(),
        notifications_failing: ws
            .deliveries
            .iter()
            .filter(|(_, d)| d.delivered_at.is_none() && d.attempts > 0)
            .map(|((channel, subject, n), d)| {
                let what = match subject.strip_prefix("followup/") {
                    Some(id) => format!("follow-up {id} (message {n})"),
                    None => format!("update {} of incident {subject}", n + 1),
                };
                format!(
                    "{what} to {channel}: {} ({} of {} tries)",
                    d.last_error,
                    d.attempts,
                    core::incident::MAX_ATTEMPTS
                )
            })
            .collect(),
        workload: ws.name.clone(),
        criticality: criticality(ws.spec.workload.criticality),
        stable: ws.stable.clone(),
        last_known_good: ws.lkg().map(|l| api::LastKnownGood {
            version: l.version.clone(),
            rollout_id: l.rollout_id.clone(),
            at: ts(l.at),
            spec_digest: l.spec_digest.clone(),
        }),
        pin: ws.pin.as_ref().map(|p| api::Pin {
            version: p.version.clone(),
            rollout_id: p.rollout_id.clone(),
            reason: p.reason.clone(),
            at: ts(p.at),
        }),
        router: match &ws.spec.router.haproxy {
            _ if ws.spec.router.kind == core::spec::RouterKind::Tier => Some(api::RouterInfo {
                kind: "tier".into(),
                pid: None,
                listen: ws.spec.router.listen.clone(),
                admin: format!(
                    "host {}, path {}",
                    ws.spec.router.host.as_deref().unwrap_or("(any)"),
                    ws.spec.router.path_prefix.as_deref().unwrap_or("(any)")
                ),
                backend: None,
            }),
            Some(h) if ws.spec.router.kind == core::spec::RouterKind::Haproxy => Some(api::RouterInfo {
                kind: "haproxy".into(),
                pid: None,
                listen: ws.spec.router.listen.clone(),
                admin: format!("unix:{}", h.socket),
                backend: Some(h.backend.clone()),
            }),
            _ => ws.router.as_ref().map(|r| api::RouterInfo {
                kind: "builtin".into(),
                pid: Some(r.pid),
                listen: r.listen.clone(),
                admin: r.admin.clone(),
                backend: None,
            }),
        },
        replicas: ws
            .replicas
            .values()
            .map(|r| api::Replica {
                version: r.version.clone(),
                replica: r.replica,
                instance: r.instance.clone(),
                endpoint: r.endpoint.clone(),
                started_at: ts(r.started_at),
            })
            .collect(),
        desired: {
            let d = ws.desired();
            api::Desired { versions: d.versions, routes: d.routes.iter().map(route_group).collect() }
        },
        routes: ws.routes.as_ref().map(|(generation, groups)| (*generation, groups.iter().map(route_group).collect())),
        rollout: ws.latest_rollout().map(|r| rollout(r, now)),
        // The live verdict belongs to the rollout in progress it was computed for.
        health: live.filter(|l| ws.active_rollout().is_some_and(|r| r.id == l.rollout_id)).map(|l| api::LiveHealth {
            rollout_id: l.rollout_id.clone(),
            at: ts(l.at),
            verdict: verdict(&l.verdict),
        }),
        alerts_firing: ws
            .alerts
            .values()
            .map(|a| api::FiringAlert {
                alertname: a.alertname.clone(),
                labels: a.labels.clone(),
                summary: a.summary.clone(),
                since: ts(a.since),
            })
            .collect(),
        warm: ws.warm.as_ref().map(|w| api::WarmStack {
            version: w.version.clone(),
            rollout_id: w.rollout_id.clone(),
            until: ts(w.until),
        }),
        now: ts(now),
    }
}

pub(super) fn summary(ws: &core::WorkloadState) -> api::WorkloadSummary {
    api::WorkloadSummary {
        name: ws.name.clone(),
        stable: ws.stable.clone(),
        rollout: ws.latest_rollout().map(|r| api::RolloutSummary {
            id: r.id.clone(),
            release: r.release.clone(),
            status: r.status.as_str().into(),
            phase: r.phase + 1,
            phases: r.phases.len(),
        }),
    }
}

fn criticality(c: core::spec::Criticality) -> api::Criticality {
    use core::spec::Criticality as C;
    match c {
        C::Low => api::Criticality::Low,
        C::Medium => api::Criticality::Medium,
        C::High => api::Criticality::High,
        C::Critical => api::Criticality::Critical,
    }
}

fn route_group(g: &core::event::RouteGroup) -> api::RouteGroup {
    api::RouteGroup {
        name: g.name.clone(),
        version: g.version.clone(),
        weight_bp: g.weight_bp,
        runs_on: g.runs_on.clone(),
        segment: g.segment.as_ref().map(segment),
        shadow_bp: g.shadow_bp,
        fault: g.fault.map(|f| api::GroupFault { error_bp: f.error_bp, delay_ms: f.delay_ms }),
    }
}

fn segment(s: &ringfence_traffic::Segment) -> api::Segment {
    api::Segment {
        users: s.users.clone(),
        prefixes: s.prefixes.clone(),
        header: s.header.clone(),
        values: s.values.clone(),
        rule: s.rule.clone(),
    }
}

pub(super) fn rollout(r: &core::Rollout, now: core::Timestamp) -> api::Rollout {
    use core::rollout::{RolloutKind as K, RolloutStatus as S, Stage as G};
    api::Rollout {
        id: r.id.clone(),
        workload: r.workload.clone(),
        kind: match r.kind {
            K::Initial => api::RolloutKind::Initial,
            K::Deploy => api::RolloutKind::Deploy,
            K::Rollback => api::RolloutKind::Rollback,
            K::Drill => api::RolloutKind::Drill,
        },
        release: r.release.clone(),
        from: r.from.clone(),
        phases: r.phases.iter().map(phase).collect(),
        phase: r.phase,
        stage: match r.stage {
            G::Deploying => api::Stage::Deploying,
            G::Baking => api::Stage::Baking,
            G::Passed => api::Stage::Passed,
        },
        status: match r.status {
            S::Progressing => api::RolloutStatus::Progressing,
            S::Paused => api::RolloutStatus::Paused,
            S::Completed => api::RolloutStatus::Completed,
            S::Halted => api::RolloutStatus::Halted,
            S::Mitigating => api::RolloutStatus::Mitigating,
            S::Mitigated => api::RolloutStatus::Mitigated,
            S::Aborted => api::RolloutStatus::Aborted,
        },
        started_at: ts(r.started_at),
        updated_at: ts(r.updated_at),
        ended_at: r.ended_at.map(ts),
        phase_started_at: ts(r.phase_started_at),
        bake_started_at: r.bake_started_at.map(ts),
        window_started_at: r.window_started_at.map(ts),
        baked_ms: r.baked_ms(now),
        paused_at: r.paused_at.map(ts),
        promote_requested: r.promote_requested,
        held_since: r.held_since.map(ts),
        escalated: r.escalated,
        decision: r.decision.as_deref().map(decision),
        last_verdict: r.last_verdict.as_ref().map(verdict),
        spec_digest: r.spec_digest.clone(),
        started_by: r.started_by.clone(),
        reason: r.reason.clone(),
        bypass: r.bypass.as_ref().map(|b| api::Bypass {
            approver: b.approver.clone(),
            reason: b.reason.clone(),
            flags: b.flags.clone(),
            at: ts(b.at),
        }),
        smoke: r
            .smoke
            .iter()
            .map(|s| api::SmokeResult {
                phase: s.phase,
                name: s.name.clone(),
                version: s.version.clone(),
                passed: s.passed,
                detail: s.detail.clone(),
                at: ts(s.at),
            })
            .collect(),
        windows: r
            .windows
            .iter()
            .map(|w| api::PhaseWindow {
                phase: w.phase,
                weight_bp: w.weight_bp,
                canary: traffic(&w.canary),
                stable: traffic(&w.stable),
            })
            .collect(),
    }
}

fn phase(p: &core::spec::PhaseSpec) -> api::Phase {
    api::Phase {
        name: p.name.clone(),
        weight: p.weight,
        bake: p.bake.to_string(),
        bake_ms: p.bake.as_ms(),
        gates: p
            .gates
            .iter()
            .map(|g| match g {
                core::spec::Gate::Health => api::Gate::Health,
                core::spec::Gate::Approval => api::Gate::Approval,
            })
            .collect(),
        segment: p.segment.as_ref().map(segment),
        shadow: p.shadow,
    }
}

fn traffic(t: &core::health::Traffic) -> api::Traffic {
    api::Traffic { requests: t.requests, errors: t.errors, latency_us: t.latency_us.clone() }
}

pub(super) fn decision(d: &core::decision::Decision) -> api::Decision {
    use core::decision::MitigationAction as A;
    api::Decision {
        action: match d.action {
            A::Fallback => api::MitigationAction::Fallback,
            A::Hold => api::MitigationAction::Hold,
            A::Stop => api::MitigationAction::Stop,
            A::ManualRollback => api::MitigationAction::ManualRollback,
        },
        rule: d.rule.clone(),
        summary: d.summary.clone(),
        phase: d.phase,
        phase_name: d.phase_name.clone(),
        weight: d.weight,
        verdict: d.verdict.as_ref().map(verdict),
        considered: d
            .considered
            .iter()
            .map(|c| api::Considered { option: c.option.clone(), chosen: c.chosen, why: c.why.clone() })
            .collect(),
        bypass_flags: d.bypass_flags.clone(),
    }
}

fn health(h: core::Health) -> api::Health {
    match h {
        core::Health::Healthy => api::Health::Healthy,
        core::Health::Unhealthy => api::Health::Unhealthy,
        core::Health::Unknown => api::Health::Unknown,
    }
}

pub(super) fn verdict(v: &core::Verdict) -> api::Verdict {
    use core::model::Level as L;
    api::Verdict {
        health: health(v.health),
        model: v.model.as_ref().map(|m| api::HealthModel {
            level: match m.level {
                L::Healthy => api::Level::Healthy,
                L::Degraded => api::Level::Degraded,
                L::Unhealthy => api::Level::Unhealthy,
                L::Unknown => api::Level::Unknown,
            },
            components: m
                .components
                .iter()
                .map(|c| api::ComponentHealth {
                    name: c.name.clone(),
                    criticality: criticality(c.criticality),
                    health: health(c.health),
                    signals: c.signals.clone(),
                })
                .collect(),
        }),
        signals: v
            .signals
            .iter()
            .map(|s| api::SignalResult {
                signal: s.signal.clone(),
                version: s.version.clone(),
                health: health(s.health),
                observed: s.observed,
                threshold: s.threshold,
                unit: s.unit.clone(),
                sample_size: s.sample_size,
                baseline: s.baseline,
                baseline_sample_size: s.baseline_sample_size,
                rule: s.rule.clone(),
                detail: s.detail.clone(),
                values: s.values.clone(),
            })
            .collect(),
        window_ms: v.window_ms,
        freshness_ms: v.freshness_ms,
        analyzer: v.analyzer.clone(),
    }
}

pub(super) fn release(r: &core::Release) -> api::Release {
    let c = &r.content;
    api::Release {
        workload: r.workload.clone(),
        version: r.version.clone(),
        content: api::ReleaseContent {
            artifact: c.artifact.clone(),
            config: c.config.clone(),
            guarded_by: c.guarded_by.clone(),
            migration: c.migration.as_ref().map(|m| api::Migration {
                id: m.id.clone(),
                backward_compatible: m.backward_compatible,
                kind: m.kind.map(|k| k.as_str().to_string()),
                removes: m.removes.clone(),
                after: m.after.clone(),
            }),
            requires_schema: c.requires_schema.clone(),
            hotfix_for: c.hotfix_for.clone(),
            metadata: api::Metadata {
                commit: c.metadata.commit.clone(),
                author: c.metadata.author.clone(),
                message: c.metadata.message.clone(),
                committed_at: c.metadata.committed_at.map(|t| t.to_string()),
                size: c.metadata.size.as_ref().map(|z| api::ChangeSize {
                    files: z.files,
                    lines: z.lines,
                    commits: z.commits,
                }),
            },
            flags: c.flags.clone(),
        },
        digest: r.digest.clone(),
        created_at: ts(r.created_at),
        created_by: r.created_by.clone(),
        held: None,
        revoked: None,
    }
}

/// A release as its workload sees it now: held or revoked.
pub(super) fn release_in(ws: &core::WorkloadState, r: &core::Release) -> api::Release {
    api::Release {
        held: ws.held.get(&r.version).map(|h| api::ReleaseHold {
            rollout_id: h.rollout_id.clone(),
            reason: h.reason.clone(),
            at: ts(h.at),
        }),
        revoked: ws.revoked.get(&r.version).map(|v| api::Revocation {
            actor: v.actor.clone(),
            reason: v.reason.clone(),
            at: ts(v.at),
        }),
        ..release(r)
    }
}

/// A release request as the core takes it.
pub(super) fn release_request(r: api::ReleaseRequest) -> Result<core::release::ReleaseRequest, String> {
    use core::release::MigrationKind;
    let c = r.content;
    let migration = match c.migration {
        None => None,
        Some(m) => Some(core::release::Migration {
            kind: match m.kind.as_deref() {
                None => None,
                Some("expand") => Some(MigrationKind::Expand),
                Some("contract") => Some(MigrationKind::Contract),
                Some("irreversible") => Some(MigrationKind::Irreversible),
                Some(other) => {
                    return Err(format!(
                        "field `migration.kind`: expected expand, contract or irreversible, found {other:?}"
                    ));
                }
            },
            id: m.id,
            backward_compatible: m.backward_compatible,
            removes: m.removes,
            after: m.after,
        }),
    };
    Ok(core::release::ReleaseRequest {
        version: r.version,
        content: core::release::ReleaseContent {
            artifact: c.artifact,
            config: c.config,
            guarded_by: c.guarded_by,
            migration,
            requires_schema: c.requires_schema,
            hotfix_for: c.hotfix_for,
            metadata: core::release::Metadata {
                commit: c.metadata.commit,
                author: c.metadata.author,
                message: c.metadata.message,
                committed_at: c
                    .metadata
                    .committed_at
                    .as_deref()
                    .map(|s| core::time::parse_rfc3339(s).map_err(|e| format!("field `metadata.committed_at`: {e}")))
                    .transpose()?,
                size: c
                    .metadata
                    .size
                    .map(|z| {
                        // The document's integers are int64, as JSON's readers can hold them.
                        for (field, n) in [("files", z.files), ("lines", z.lines), ("commits", z.commits)] {
                            if n > i64::MAX as u64 {
                                return Err(format!("field `metadata.size.{field}`: at most {}, found {n}", i64::MAX));
                            }
                        }
                        Ok(core::release::ChangeSize { files: z.files, lines: z.lines, commits: z.commits })
                    })
                    .transpose()?,
            },
            flags: c.flags,
        },
    })
}

/// An event as the API sends it: the envelope, and the log's record as its payload.
pub(super) fn event(e: &core::Event) -> api::Event {
    let mut data = match serde_json::to_value(&e.kind) {
        Ok(serde_json::Value::Object(m)) => m,
        // Every event kind is a tagged struct variant, so this is an object; an event that
        // is not would still be listed, with no payload.
        _ => serde_json::Map::new(),
    };
    let kind = match data.remove("type") {
        Some(serde_json::Value::String(t)) => t,
        _ => String::new(),
    };
    api::Event {
        seq: e.seq,
        at: ts(e.at),
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        workload: e.workload.clone(),
        kind,
        data,
    }
}

pub(super) fn token(t: &core::access::TokenRecord) -> api::Token {
    api::Token {
        id: t.id.clone(),
        name: t.name.clone(),
        grants: t.grants.iter().map(|g| g.to_string()).collect(),
        created_at: ts(t.created_at),
        created_by: t.created_by.clone(),
        expires_at: t.expires_at.map(ts),
        revoked_at: t.revoked_at.map(ts),
    }
}

pub(super) fn killed_flag(k: &core::state::KilledFlag) -> api::KilledFlag {
    api::KilledFlag { actor: k.actor.clone(), reason: k.reason.clone(), at: ts(k.at) }
}

fn approval(a: &core::governance::Approval) -> api::Approval {
    api::Approval { by: a.by.clone(), at: ts(a.at), comment: a.comment.clone(), phase: a.phase }
}

fn emergency(e: &core::governance::Emergency) -> api::Emergency {
    api::Emergency {
        incident: e.incident.clone(),
        severity: e.severity.clone(),
        justification: e.justification.clone(),
    }
}

/// A workload's governance now: the line, the windows, the queued deployment, approvals, and
/// the gates an emergency deployment owes.
pub(super) fn governance(world: &core::World, ws: &core::WorkloadState, now: core::Timestamp) -> api::GovernanceStatus {
    use core::schedule::Gate;
    let (closed, next_open) = match ws.spec.schedule.check(now) {
        Gate::Open => (None, None),
        Gate::Closed { why, next_open } => (Some(why), next_open.map(ts)),
    };
    let g = &ws.governance;
    let latest = ws.latest_rollout();
    api::GovernanceStatus {
        environment: Some(ws.spec.environment.name.clone()).filter(|n| !n.is_empty()),
        after: ws.spec.environment.after.clone(),
        line: world.line.as_ref().map(|l| api::LineStop { by: l.by.clone(), reason: l.reason.clone(), at: ts(l.at) }),
        closed,
        next_open,
        queued: g.pending.as_ref().map(|p| api::QueuedDeploy {
            version: p.version.clone(),
            requested_by: p.requested_by.clone(),
            at: ts(p.at),
            emergency: p.emergency.as_ref().map(emergency),
            approvals_needed: p.approvals_needed,
            approvals: p.approvals.iter().map(approval).collect(),
            waiting_for: p.waiting_for.clone(),
        }),
        approvals: ws.active_rollout().map(|r| r.approvals.iter().map(approval).collect()).unwrap_or_default(),
        emergency: latest.and_then(|r| r.emergency.as_deref()).map(emergency),
        owed: g
            .owed
            .iter()
            .map(|o| api::OwedGate {
                version: o.version.clone(),
                rollout_id: o.rollout_id.clone(),
                gate: o.gate.clone(),
                due: ts(o.due),
                outcome: o.outcome.map(|x| {
                    match x {
                        core::governance::OwedOutcome::Passed => "passed",
                        core::governance::OwedOutcome::Failed => "failed",
                        core::governance::OwedOutcome::Overdue => "overdue",
                    }
                    .to_string()
                }),
                detail: o.detail.clone(),
            })
            .collect(),
    }
}

/// An incident, with the roles the workload's `[incident]` names.
pub(super) fn incident(ws: &core::WorkloadState, i: &core::incident::Incident) -> api::Incident {
    let roles = &ws.spec.incident;
    api::Incident {
        id: i.id.clone(),
        workload: i.workload.clone(),
        rollout_id: i.rollout_id.clone(),
        release: i.release.clone(),
        stable: i.stable.clone(),
        severity: i.severity_name(),
        state: i.state.as_str().into(),
        summary: i.summary.clone(),
        detected_at: ts(i.detected_at),
        acknowledged_at: i.acknowledged_at.map(ts),
        mitigated_at: i.mitigated_at.map(ts),
        resolved_at: i.resolved_at.map(ts),
        transitions: i
            .transitions
            .iter()
            .map(|t| api::IncidentTransition {
                state: t.state.as_str().into(),
                at: ts(t.at),
                by: t.by.clone(),
                note: t.note.clone(),
            })
            .collect(),
        updates: i
            .updates
            .iter()
            .map(|u| api::IncidentUpdate {
                at: ts(u.at),
                state: u.state.as_str().into(),
                stakeholders: u.stakeholders.clone(),
                users: u.users.clone(),
                next_at: u.next_at.map(ts),
            })
            .collect(),
        commander: roles.commander.clone(),
        communications: roles.communications.clone(),
        stakeholders: roles.stakeholders.clone(),
        escalation: roles.escalation.clone(),
    }
}

pub(super) fn dora(d: &core::dora::Dora) -> api::Dora {
    let metric = |m: &core::dora::Metric| api::DoraMetric {
        value: m.value,
        unit: m.unit.into(),
        band: m.band.map(String::from),
        reference: m.reference.into(),
    };
    api::Dora {
        workload: d.workload.clone(),
        from: ts(d.from),
        to: ts(d.to),
        deployment_frequency: metric(&d.deployment_frequency),
        lead_time: metric(&d.lead_time),
        change_fail_rate: metric(&d.change_fail_rate),
        recovery_time: metric(&d.recovery_time),
        rework_rate: metric(&d.rework_rate),
        deployments: d
            .deployments
            .iter()
            .map(|x| api::DoraDeployment {
                rollout_id: x.rollout_id.clone(),
                version: x.version.clone(),
                started_at: ts(x.started_at),
                ended_at: ts(x.ended_at),
                outcome: x.outcome.clone(),
                failed: x.failed,
                rework: x.rework,
                lead_time_ms: x.lead_time_ms,
                lead_time_from: x.lead_time_from.clone(),
                change_lines: x.change_lines,
            })
            .collect(),
    }
}

pub(super) fn drill(d: &core::drill::Drill) -> api::Drill {
    let report = d.report.as_ref().map(|r| api::DrillReport {
        outcome: r.outcome.as_str().into(),
        ended_at: ts(r.ended_at),
        time_to_detect_ms: r.time_to_detect_ms,
        time_to_mitigate_ms: r.time_to_mitigate_ms,
        requests: r.requests,
        failed_requests: r.failed_requests,
        mitigation: r.mitigation.clone(),
        problems: r.problems.clone(),
    });
    api::Drill {
        id: d.id.clone(),
        workload: d.workload.clone(),
        fault: d.fault.describe(),
        trigger: d.fault.trigger().into(),
        version: d.version.clone(),
        stable: d.stable.clone(),
        rollout_id: d.rollout_id.clone(),
        started_at: ts(d.started_at),
        started_by: d.started_by.clone(),
        reason: d.reason.clone(),
        scheduled: d.scheduled,
        weight: d.weight_bp as f64 / 100.0,
        injected_at: d.injected_at.map(ts),
        injection: d.injection.clone(),
        detect_within_ms: d.detect_within_ms,
        mitigate_within_ms: d.mitigate_within_ms,
        status: report.as_ref().map_or("running".into(), |r| r.outcome.clone()),
        report,
    }
}

pub(super) fn coverage(c: &core::drill::Coverage) -> api::FaultCoverage {
    api::FaultCoverage {
        fault: c.fault.into(),
        trigger: c.trigger.into(),
        automatic: c.automatic,
        status: c.status.into(),
        drills: c.drills,
        passed: c.passed,
        failed: c.failed,
        last: c.last.as_ref().map(drill),
        median_detect_ms: c.median_detect_ms,
        median_mitigate_ms: c.median_mitigate_ms,
        first_detect_ms: c.first_detect_ms,
        latest_detect_ms: c.latest_detect_ms,
        first_mitigate_ms: c.first_mitigate_ms,
        latest_mitigate_ms: c.latest_mitigate_ms,
    }
}

pub(super) fn lint_report(workload: &str, rps: Option<f64>, findings: &[core::lint::Finding]) -> api::LintReport {
    crate::lintreport::lint_report(workload, rps, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_keeps_the_logs_record_as_its_payload() {
        let e = core::NewEvent {
            at: core::Timestamp(1_700_000_000_000),
            actor: "ci".into(),
            reason: "deploy".into(),
            workload: "checkout".into(),
            kind: core::EventKind::TokenRevoked { id: "abc".into() },
        }
        .numbered(7);
        let wire = event(&e);
        assert_eq!((wire.kind.as_str(), wire.seq), ("token_revoked", 7));
        // The same JSON as the log's: a client reading events as the core's type still can.
        let text = serde_json::to_value(&wire).expect("serializes");
        assert_eq!(text, serde_json::to_value(&e).expect("serializes"));
    }
}
