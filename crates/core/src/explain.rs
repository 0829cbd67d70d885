//! Plain words for people: one line per event for the timeline, and the full "why" of a
//! rollout's latest decision.

use std::fmt::Write;

use crate::event::{Action, Event, EventKind};
use crate::health::{Health, SignalResult, Verdict, pct};
use crate::rollout::RolloutStatus;
use crate::state::WorkloadState;

/// One line describing an event, without its time and actor.
pub fn describe(e: &Event) -> String {
    use EventKind::*;
    match &e.kind {
        SpecApplied { spec, digest } => format!(
            "spec applied: {} phases, {} replica(s) [{}]",
            spec.rollout.phases.len(),
            spec.executor.replicas,
            short(digest)
        ),
        ReleaseCreated { release } => format!(
            "release {} registered ({}){}",
            release.version,
            short(&release.digest),
            if release.content.artifact.is_empty() {
                String::new()
            } else {
                format!(", artifact {}", release.content.artifact)
            }
        ),
        ReleaseRestored { release } => {
            format!("release {} read back from the log ({})", release.version, short(&release.digest))
        }
        RolloutStarted { rollout_id, kind, release, from, phases, .. } => format!(
            "rollout {rollout_id} started: {kind:?} of {release}{} through {} phase(s)",
            from.as_ref().map(|f| format!(" replacing {f}")).unwrap_or_default(),
            phases.len()
        )
        .replace("Initial", "first deploy")
        .replace("Deploy", "deploy")
        .replace("Rollback", "rollback"),
        BakeStarted { phase, .. } => format!("phase {} deployed; baking", phase + 1),
        BaselineReset { phase, .. } => format!(
            "router restarted during phase {}: the analysis counts from its new counters (bake time served still counts)",
            phase + 1
        ),
        PhasePassed { phase, verdict, by_hand, .. } => format!(
            "phase {} passed ({}{})",
            phase + 1,
            verdict.health,
            if *by_hand { ", promoted by hand" } else { "" }
        ),
        PhaseStarted { phase, .. } => format!("phase {} started", phase + 1),
        PhaseHeld { phase, verdict, .. } => format!(
            "phase {} held after its bake: {}",
            phase + 1,
            verdict.as_ref().map(|v| summarize(v)).unwrap_or_else(|| "waiting".into())
        ),
        Escalated { phase, .. } => format!("phase {} escalated: held longer than rollout.max_hold", phase + 1),
        RolloutCompleted { rollout_id } => format!("rollout {rollout_id} completed"),
        LkgUpdated { version, .. } => format!("last known good is now {version}"),
        RolloutHalted { decision, .. } => format!("HALTED: {}", decision.summary),
        MitigationCompleted { verified, detail, .. } => {
            format!("mitigation {}: {detail}", if *verified { "done and verified" } else { "done, NOT verified" })
        }
        SignalsRecorded { samples, .. } => format!(
            "traffic recorded: {} sample(s) up to {}",
            samples.len(),
            samples.last().map(|s| s.at.to_string()).unwrap_or_default()
        ),
        RolloutPaused { .. } => "rollout paused".into(),
        RolloutResumed { .. } => "rollout resumed".into(),
        PromoteRequested { .. } => "promotion requested".into(),
        RolloutAborted { rollout_id } => {
            format!("rollout {rollout_id} aborted; traffic returns to stable")
        }
        ActionIntended { action, .. } => format!("intent: {}", action_words(action)),
        ActionSucceeded { detail, .. } => format!("done: {detail}"),
        ActionFailed { error, .. } => format!("failed: {error}"),
        ReplicaStarted { version, replica, instance, endpoint, adopted } => format!(
            "{version} replica {replica} {} (instance {instance} at {endpoint})",
            if *adopted { "adopted after restart" } else { "ready" }
        ),
        ReplicaStopped { version, replica, instance } => {
            format!("{version} replica {replica} stopped (instance {instance})")
        }
        ReplicaExited { version, replica, instance, status } => {
            format!("{version} replica {replica} (instance {instance}) exited unasked: {status}")
        }
        AlertReceived { alertname, status, summary, labels, .. } => format!(
            "alert {alertname} {status}{}{}",
            if summary.is_empty() { String::new() } else { format!(": {summary}") },
            labels.get("severity").map(|s| format!(" (severity {s})")).unwrap_or_default()
        ),
        UserReported { user, group, version, message } => format!(
            "user {user} reported a problem{}: {message}",
            match (group, version) {
                (Some(g), Some(v)) => format!(" (group {g}, served by {v})"),
                _ => " (rollout group unknown)".into(),
            }
        ),
        TokenCreated { token } => format!(
            "token {} ({}) created for {}{}",
            token.id,
            token.grants.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(" "),
            token.name,
            token.expires_at.map(|t| format!(", expires {t}")).unwrap_or_default()
        ),
        WorkloadDeleted => "workload deleted: its instances and router are stopped, its history kept".into(),
        RouterStopped { pid } => format!("router (pid {pid}) stopped"),
        ReleaseRevoked { version } => format!("release {version} revoked: it never runs again"),
        ReleaseHoldCleared { version } => format!("hold on {version} cleared: it may be deployed again"),
        StackRetired { version, .. } => format!("the old stack of {version}, kept warm after the switch, is retired"),
        BypassApproved { approver, flags, justification, .. } => {
            format!("{approver} approved the bypass: {} off, the rollout goes on ({justification})", flags.join(", "))
        }
        RedeployRequested { version } => format!("{version} is redeployed onto fresh instances, one at a time"),
        DegradedTooLong { flags, .. } => {
            format!("{} still off since the bypass: past mitigation.max_degraded, escalated", flags.join(", "))
        }
        BackupTaken { migration, reference, .. } => format!("backed up before migration {migration}: {reference}"),
        RoutesDrifted { expected_generation, found_generation, detail } => format!(
            "the router served another table (generation {found_generation}, installed {expected_generation}): {detail}; the desired one is installed again"
        ),
        TokenRevoked { id } => format!("token {id} revoked"),
        DrillStarted { drill } => format!(
            "drill {} started: {} on {} ({}% of users, stable {})",
            drill.id,
            drill.fault.describe(),
            drill.version,
            drill.weight_bp as f64 / 100.0,
            drill.stable
        ),
        DrillInjected { drill_id, detail } => format!("drill {drill_id}: fault in effect ({detail})"),
        DrillEnded { drill_id, report } => format!(
            "drill {drill_id} {}{}",
            report.outcome.as_str().to_uppercase(),
            if report.problems.is_empty() { String::new() } else { format!(": {}", report.problems.join("; ")) }
        ),
        DeployQueued { version, emergency, waiting_for, .. } => format!(
            "{}deployment of {version} queued: waits for {}",
            if emergency.is_some() { "EMERGENCY " } else { "" },
            waiting_for.join("; ")
        ),
        DeployDropped { version, why } => format!("queued deployment of {version} dropped: {why}"),
        ApprovalGiven { phase, approver, comment, emergency, .. } => format!(
            "{}approved by {approver}{}{}",
            if *emergency { "emergency deployment " } else { "" },
            phase.map(|p| format!(" (phase {})", p + 1)).unwrap_or_default(),
            if comment.is_empty() { String::new() } else { format!(": {comment}") }
        ),
        ApprovalRejected { approver, comment, .. } => format!("REJECTED by {approver}: {comment}"),
        EmergencyDeclared { emergency, skipped, due, .. } => format!(
            "EMERGENCY deployment for incident {} ({}): bake times shortened{}",
            emergency.incident,
            emergency.severity,
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; owed out of band by {due}: {}", skipped.join(", "))
            }
        ),
        OwedGateSettled { version, gate, outcome, detail } => {
            format!("owed gate {gate} of {version}: {outcome:?} ({detail})")
                .replace("Passed", "passed")
                .replace("Failed", "FAILED")
                .replace("Overdue", "OVERDUE")
        }
        AttestationAdded { version, attestation: a } => format!(
            "attestation {} of {version}: {} ({}, subject {})",
            a.kind,
            if a.passed { "passed" } else { "FAILED" },
            a.source,
            a.subject
        ),
        LineStopped { paused } => format!("LINE STOPPED: {} rollout(s) paused, none may start", paused.len()),
        LineRestarted => "line restarted: rollouts may start and advance again".to_string(),
        IncidentAcknowledged { incident } => format!("incident {incident} acknowledged"),
        IncidentResolved { incident } => format!("incident {incident} resolved"),
        FollowUpCreated { id, incident, title, owner, .. } => format!(
            "follow-up {id} of incident {incident}: {title}{}",
            if owner.is_empty() { String::new() } else { format!(" (owner {owner})") }
        ),
        NotificationDelivered { channel, incident, update, attempts } => {
            format!("update {} of incident {incident} delivered to {channel} (attempt {attempts})", update + 1)
        }
        NotificationFailed { channel, incident, update, error } => {
            format!("update {} of incident {incident} not delivered to {channel}: {error}", update + 1)
        }
        FollowUpAssigned { id, owner } => format!("follow-up {id} assigned to {owner}"),
        FollowUpClosed { id } => format!("follow-up {id} closed"),
        FollowUpReminded { id, .. } => format!("follow-up {id} is overdue: reminder sent to the stakeholders"),
        FollowUpSent { id, channel, message, reference, .. } if !reference.is_empty() => {
            format!("follow-up {id} exported to {channel} as {reference} (message {message})")
        }
        FollowUpSent { id, channel, message, attempts, .. } => {
            format!("follow-up {id}: message {message} delivered to {channel} (attempt {attempts})")
        }
        FollowUpSendFailed { id, channel, message, error } => {
            format!("follow-up {id}: message {message} not delivered to {channel}: {error}")
        }
        IncidentUpdated { incident, state, next_at, .. } => format!(
            "incident {incident} update ({}){}",
            state.as_str(),
            next_at.map(|t| format!(", next by {t}")).unwrap_or_default()
        ),
        FlagKilled { flag } => format!("KILL SWITCH: flag {flag} turned off for every user"),
        FlagRestored { flag } => format!("kill switch released: flag {flag} follows its release again"),
        SmokeTestRan { phase, name, version, passed, detail, .. } => format!(
            "smoke test {name} on {version} in phase {}: {} ({detail})",
            phase + 1,
            if *passed { "passed" } else { "FAILED" }
        ),
        RouterStarted { listen, admin, adopted, .. } => {
            format!("router {} on {listen} (admin {admin})", if *adopted { "adopted" } else { "started" })
        }
        RoutesPublished { table } => format!(
            "routing table {} published to the router tier: {}",
            table.generation,
            table
                .groups
                .iter()
                .map(|g| format!("{} {}%", g.version, g.weight_bp as f64 / 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn action_words(a: &Action) -> String {
    match a {
        Action::StartRouter => "start the router".into(),
        Action::StartReplica { version, replica } => format!("start {version} replica {replica}"),
        Action::StopReplica { version, replica } => format!("stop {version} replica {replica}"),
        Action::Scale { version, replicas } => format!("scale {version} to {replicas}"),
        Action::Backup { migration, .. } => format!("back up the data before migration {migration}"),
        Action::ApplyRoutes { groups, .. } => format!(
            "route {}",
            groups
                .iter()
                .map(|g| format!("{} {}", pct(g.weight_bp as f64 / 10_000.0), g.version))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn summarize(v: &Verdict) -> String {
    let parts: Vec<String> = v.deciding().map(|s| format!("{}: {}", s.signal, s.detail)).collect();
    format!("{} ({})", v.health, parts.join("; "))
}

/// The evidence behind the latest decision about the workload, in plain words.
pub fn why(ws: &WorkloadState) -> String {
    why_with_live(ws, None)
}

/// [`why`], followed by the controller's live verdict on a rollout in progress, each evidence
/// labelled with the moment it is from: the one a decision (or hold) was made on is stored
/// with it and does not change; the live one is the latest tick's.
pub fn why_with_live(ws: &WorkloadState, live: Option<&Verdict>) -> String {
    let Some(r) = ws.latest_rollout() else {
        return format!("{} has had no rollout yet.", ws.name);
    };
    let mut out = String::new();
    let phase = r.current_phase();
    let _ = writeln!(
        out,
        "Rollout {} of {} {} is {}{}.",
        r.id,
        ws.name,
        r.release,
        r.status.as_str(),
        r.from.as_ref().map(|f| format!(" (replacing {f})")).unwrap_or_default()
    );
    // An approved bypass answered the decision that halted the rollout: it went on, and
    // what it waits for now is its progress, not that decision (unless it halted again).
    let bypassed = r.bypass.as_ref().filter(|b| {
        matches!(r.status, RolloutStatus::Progressing | RolloutStatus::Paused | RolloutStatus::Completed)
            && r.halted_at.is_none_or(|h| b.at >= h)
    });
    if let Some(b) = bypassed {
        let _ = writeln!(
            out,
            "{} approved a bypass ({} off): {}; the rollout went on.",
            b.approver,
            b.flags.join(", "),
            b.reason
        );
    }
    match (r.decision.as_ref().filter(|_| bypassed.is_none()), r.status) {
        (Some(d), _) => {
            let _ = writeln!(out, "Decision: {:?}, in phase {:?} at {}% of traffic.", d.action, d.phase_name, d.weight);
            let _ = writeln!(out, "Why: {}", d.summary);
            let _ = writeln!(out, "Rule: {}", d.rule);
            if !d.considered.is_empty() {
                let _ = writeln!(out, "Options weighed:");
                for c in &d.considered {
                    let _ =
                        writeln!(out, "  [{}] {}: {}", if c.chosen { "chosen " } else { "       " }, c.option, c.why);
                }
            }
            if let Some(v) = &d.verdict {
                evidence(&mut out, "Evidence at the decision", v);
            }
        }
        (None, RolloutStatus::Completed) => {
            let _ = writeln!(out, "Every phase passed its gates; {} is now the last known good.", r.release);
            if let Some(v) = &r.last_verdict {
                evidence(&mut out, "Evidence when the last phase passed", v);
            }
        }
        (None, RolloutStatus::Aborted) => {
            let _ =
                writeln!(out, "A person aborted it; traffic returned to {}.", r.from.as_deref().unwrap_or("nothing"));
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "Now in phase {} of {} ({:?}, {}% of traffic), stage {:?}.",
                r.phase + 1,
                r.phases.len(),
                phase.name,
                phase.weight,
                r.stage
            );
            let awaiting_approval = r.held_since.is_some()
                && phase.gates.contains(&crate::spec::Gate::Approval)
                && r.last_verdict.as_ref().is_some_and(|v| v.health == Health::Healthy);
            match &r.last_verdict {
                Some(v) if awaiting_approval => {
                    let _ = writeln!(
                        out,
                        "Waiting for approval: the bake is over and the verdict is healthy; a person must run `ringfence promote {}`.",
                        ws.name
                    );
                    evidence(&mut out, "Evidence when the bake ended", v);
                }
                Some(v) if r.held_since.is_some() => {
                    let _ = writeln!(
                        out,
                        "Held after its bake: the verdict is {}, and only healthy promotes; it passes on its own as soon as the pending signals decide.",
                        v.health
                    );
                    evidence(&mut out, "Evidence when the bake ended", v);
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "No decision yet: it is watched continuously and halts on the first unhealthy verdict."
                    );
                }
            }
        }
    }
    if let Some(v) = live.filter(|_| r.status.is_active()) {
        evidence(&mut out, "Live evidence, now", v);
    }
    if let Some(end) = ws.rollouts.last().and_then(|r| r.ended_at) {
        let _ = writeln!(out, "Ended at {end}, {:.1} s after it started.", end.since(r.started_at) as f64 / 1000.0);
    }
    if let Some(pin) = &ws.pin {
        let _ = writeln!(out, "Desired state is pinned to {} until a new release replaces it.", pin.version);
    }
    out
}

fn evidence(out: &mut String, label: &str, v: &Verdict) {
    let _ = writeln!(
        out,
        "{label} ({} analysis over {:.1} s, data {} ms old):",
        v.analyzer,
        v.window_ms as f64 / 1000.0,
        v.freshness_ms
    );
    for s in &v.signals {
        let mark = match s.health {
            Health::Healthy => "ok     ",
            Health::Unhealthy => "FAILED ",
            // A test that has not decided yet is pending, not a verdict of its own.
            Health::Unknown if s.detail.starts_with("pending") => "pending",
            Health::Unknown => "unknown",
        };
        let _ = writeln!(out, "  [{mark}] {}: {}{}", s.signal, s.detail, numbers(s));
        let _ = writeln!(out, "            rule: {}", s.rule);
    }
}

fn numbers(s: &SignalResult) -> String {
    let fmt = |x: f64| match s.unit.as_str() {
        "ratio" => pct(x),
        "ms" => format!("{x:.1} ms"),
        _ => format!("{x}"),
    };
    let mut parts = Vec::new();
    if let (Some(o), Some(t)) = (s.observed, s.threshold)
        && matches!(s.unit.as_str(), "ratio" | "ms")
    {
        parts.push(format!("observed {} vs limit {}", fmt(o), fmt(t)));
    }
    // An e-value's detail already says how much evidence there is and how much is needed.
    if let Some(b) = s.baseline {
        parts.push(format!(
            "stable {}{}",
            fmt(b),
            s.baseline_sample_size.map(|n| format!(" over {n} requests")).unwrap_or_default()
        ));
    }
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join("; ")) }
}
