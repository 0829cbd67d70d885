//! The blameless postmortem draft of a failed rollout, written from the event log: what
//! happened, its impact and timeline, how long detection, mitigation and recovery took, the
//! decision with the options it weighed and its evidence, and prompts for the team. Every
//! failed deployment gets one, without exception: it exists as soon as the incident does.

use std::fmt::Write;

use crate::chart;
use crate::command::{CommandError, ErrorCode};
use crate::event::{Event, EventKind};
use crate::health::SignalSample;
use crate::state::WorkloadState;
use crate::time::Timestamp;

fn minutes(ms: u64) -> String {
    if ms < 60_000 { format!("{:.1} s", ms as f64 / 1000.0) } else { format!("{:.1} min", ms as f64 / 60_000.0) }
}

/// The draft, in Markdown. `events`: the workload's events (its timeline comes from them).
/// `rollout`: the failed rollout; the latest incident's when absent.
pub fn draft(ws: &WorkloadState, events: &[Event], rollout: Option<&str>) -> Result<String, CommandError> {
    let incident = match rollout {
        Some(id) => ws.incidents.get(id),
        None => ws.incidents.values().max_by_key(|i| i.detected_at),
    }
    .ok_or_else(|| CommandError {
        code: ErrorCode::NotFound,
        message: match rollout {
            Some(id) => format!("rollout {id} of {} did not fail: no incident, no postmortem", ws.name),
            None => format!("{} has had no failed rollout: no postmortem to write", ws.name),
        },
    })?;
    let r = ws.rollout(&incident.rollout_id).ok_or_else(|| CommandError {
        code: ErrorCode::NotFound,
        message: format!("rollout {} is not in {}'s history", incident.rollout_id, ws.name),
    })?;
    let r = crate::rollout::detailed(r, events);
    let decision = r.decision.as_ref();
    let mut o = String::new();
    let _ = writeln!(o, "# Postmortem (draft): {} {} — rollout {}\n", ws.name, r.release, r.id);
    let _ = writeln!(
        o,
        "_Blameless: this describes what the system and the process allowed, not who erred. Written from the event log; edit it into the team's own words._\n"
    );
    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(
        o,
        "{} replaced {} on {} ({}). {}. Incident {} ({}), {}.\n",
        r.release,
        r.from.as_deref().unwrap_or("nothing"),
        ws.name,
        format!("{:?}", ws.spec.workload.criticality).to_lowercase(),
        incident.summary,
        incident.id,
        incident.severity_name(),
        incident.state.as_str()
    );
    if let Some(e) = &r.emergency {
        let _ =
            writeln!(o, "It was an emergency deployment for {} ({}): {}.\n", e.incident, e.severity, e.justification);
    }

    let _ = writeln!(o, "## Impact\n");
    let phase = decision.map(|d| (d.phase_name.clone(), d.weight));
    if let Some((name, weight)) = &phase {
        let _ = writeln!(o, "- Exposure when it was stopped: phase {name}, {weight}% of users on {}.", r.release);
    }
    if let Some(v) = decision.and_then(|d| d.verdict.as_ref()) {
        for s in v.signals.iter().filter(|s| s.health == crate::health::Health::Unhealthy) {
            let _ = writeln!(o, "- {} on {}: {}.", s.signal, s.version, s.detail);
        }
        let _ = writeln!(o, "- Judged over {} of traffic ({} analysis).", minutes(v.window_ms), v.analyzer);
    }
    let met = samples(events, &r.id)
        .iter()
        .filter(|s| s.version == r.release && s.at.millis() - s.span_ms as i64 <= incident.detected_at.millis())
        .filter_map(|s| s.users)
        .max();
    if let Some(users) = met {
        let _ = writeln!(o, "- About {users} distinct users were sent to {} before the halt.", r.release);
    }
    let exposed_ms = incident.mitigated_at.unwrap_or(incident.detected_at).since(r.started_at);
    let _ =
        writeln!(o, "- Users could meet {} for {} (rollout start to mitigation).\n", r.release, minutes(exposed_ms));

    let _ = writeln!(o, "## Times\n");
    let _ = writeln!(o, "| measure | time |\n|---|---|");
    let _ = writeln!(
        o,
        "| time to detect (rollout start to halt) | {} |",
        minutes(incident.detected_at.since(r.started_at))
    );
    match incident.mitigated_at {
        Some(m) => {
            let _ = writeln!(
                o,
                "| time to mitigate (halt to verified mitigation) | {} |",
                minutes(m.since(incident.detected_at))
            );
        }
        None => {
            let _ = writeln!(o, "| time to mitigate | not mitigated yet |");
        }
    }
    match incident.resolved_at {
        Some(t) => {
            let _ = writeln!(o, "| time to restore (halt to resolved) | {} |", minutes(t.since(incident.detected_at)));
        }
        None => {
            let _ = writeln!(o, "| time to restore | not resolved yet |");
        }
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Timeline (UTC)\n");
    for e in events.iter().filter(|e| {
        e.kind.rollout_id() == Some(r.id.as_str())
            || matches!(&e.kind, EventKind::IncidentAcknowledged { incident: i } | EventKind::IncidentResolved { incident: i } if *i == incident.id)
    }) {
        if matches!(
            e.kind,
            EventKind::ActionIntended { .. }
                | EventKind::ActionSucceeded { .. }
                | EventKind::ReplicaStopped { .. }
                | EventKind::SignalsRecorded { .. }
        ) {
            continue;
        }
        let _ = writeln!(o, "- {} — {} — {}", e.at, e.actor, crate::explain::describe(e));
    }
    let _ = writeln!(o);

    let samples = samples(events, &r.id);
    if !samples.is_empty() {
        let _ = writeln!(o, "## Signals\n");
        let _ = writeln!(
            o,
            "What the router counted for each version, before the halt and after it (chart: \
             `ringfence postmortem {} {} --svg FILE`).\n",
            ws.name, r.id
        );
        let _ = writeln!(
            o,
            "| version | window | requests | errors | error rate | worst p99 | users (about) |\n|---|---|---|---|---|---|---|"
        );
        for (version, window, s) in summary(&samples, incident.detected_at) {
            let _ = writeln!(
                o,
                "| {version} | {window} | {} | {} | {} | {} | {} |",
                s.requests,
                s.errors,
                if s.requests == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}%", s.errors as f64 * 100.0 / s.requests as f64)
                },
                s.worst_p99_us.map_or("-".to_string(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
                s.users.map_or("-".to_string(), |u| u.to_string()),
            );
        }
        let _ = writeln!(
            o,
            "\nUsers: distinct users the router had sent to the version by the end of the window, since it \
             started serving it (an estimate within about 5%).\n"
        );
    }

    if let Some(d) = decision {
        let _ = writeln!(o, "## The decision\n");
        let _ = writeln!(o, "{:?}: {} (rule: {}).\n", d.action, d.summary, d.rule);
        if !d.considered.is_empty() {
            let _ = writeln!(o, "| option | chosen | why |\n|---|---|---|");
            for c in &d.considered {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} |",
                    c.option,
                    if c.chosen { "yes" } else { "" },
                    c.why.replace('|', "/")
                );
            }
            let _ = writeln!(o);
        }
        if let Some(v) = &d.verdict {
            let _ = writeln!(o, "Evidence:\n");
            for s in &v.signals {
                let _ = writeln!(o, "- {} ({}, {}): {}", s.signal, s.version, s.health, s.detail);
            }
            let _ = writeln!(o);
        }
    }

    let _ = writeln!(o, "## Contributing factors (to discuss)\n");
    for q in [
        "What made this change look safe before it shipped, and what would have shown otherwise?",
        "Which check, test or staging environment could have met this failure before users did?",
        "Was the signal that caught it the earliest one available? What would have caught it sooner?",
        "Did the mitigation restore service as expected? What slowed it down, if anything?",
        "What did the people responding need to know that was hard to find?",
    ] {
        let _ = writeln!(o, "- {q}");
    }
    let _ = writeln!(o, "\n## Follow-up items\n");
    let mut items = ws.follow_ups.values().filter(|f| f.incident == incident.id).peekable();
    if items.peek().is_none() {
        let _ = writeln!(
            o,
            "- [ ] (add them: `ringfence followup add {} --incident {} --title ...`)",
            ws.name, incident.id
        );
    }
    for f in items {
        let _ = writeln!(
            o,
            "- [{}] {} {}{}{}",
            if f.closed_at.is_some() { "x" } else { " " },
            f.id,
            f.title,
            if f.owner.is_empty() { String::new() } else { format!(" (owner {})", f.owner) },
            f.due.map(|d| format!(", due {d}")).unwrap_or_default()
        );
    }
    Ok(o)
}

/// The traffic samples recorded for rollout `id`, oldest first.
pub fn samples(events: &[Event], id: &str) -> Vec<SignalSample> {
    let mut out: Vec<SignalSample> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SignalsRecorded { rollout_id, samples } if rollout_id == id => Some(samples.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    out.sort_by_key(|s| s.at);
    out
}

#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    worst_p99_us: Option<u64>,
    /// Distinct users by the window's end (cumulative counts: the latest).
    users: Option<u64>,
}

/// Per version, the totals of the intervals that began before `halt`, and of the later ones.
fn summary(samples: &[SignalSample], halt: Timestamp) -> Vec<(String, &'static str, Totals)> {
    let mut out: Vec<(String, &'static str, Totals)> = Vec::new();
    for s in samples {
        // By the interval's start: the one the halt fell in counts before it.
        let window =
            if s.at.millis() - s.span_ms as i64 <= halt.millis() { "before the halt" } else { "after the halt" };
        let i = match out.iter().position(|(v, w, _)| *v == s.version && *w == window) {
            Some(i) => i,
            None => {
                out.push((s.version.clone(), window, Totals::default()));
                out.len() - 1
            }
        };
        let t = &mut out[i].2;
        t.requests += s.requests;
        t.errors += s.errors;
        t.worst_p99_us = t.worst_p99_us.max(s.p99_us);
        t.users = t.users.max(s.users);
    }
    out.sort_by(|a, b| (a.1 != "before the halt", &a.0).cmp(&(b.1 != "before the halt", &b.0)));
    out
}

/// The key signals of the new and the stable version around the incident of rollout
/// `rollout` (the latest incident's when absent): error rate and p99 latency over time, with
/// the halt and the mitigation marked and the error-rate threshold drawn. `None` when nothing
/// was recorded for it.
pub fn signals_svg(
    ws: &WorkloadState,
    events: &[Event],
    rollout: Option<&str>,
) -> Result<Option<String>, CommandError> {
    let incident = match rollout {
        Some(id) => ws.incidents.get(id),
        None => ws.incidents.values().max_by_key(|i| i.detected_at),
    }
    .ok_or_else(|| CommandError {
        code: ErrorCode::NotFound,
        message: format!("{}: no such failed rollout, no postmortem chart", ws.name),
    })?;
    let mut marks = vec![chart::Mark { at: incident.detected_at, label: "halted".into() }];
    if let Some(m) = incident.mitigated_at {
        marks.push(chart::Mark { at: m, label: "mitigated".into() });
    }
    let samples = samples(events, &incident.rollout_id);
    let words: Vec<String> = summary(&samples, incident.detected_at)
        .iter()
        .map(|(v, w, t)| {
            format!(
                "{v} {w}: {} requests, {} errors{}",
                t.requests,
                t.errors,
                t.worst_p99_us.map(|us| format!(", worst p99 {:.1} ms", us as f64 / 1000.0)).unwrap_or_default()
            )
        })
        .collect();
    Ok(draw(
        ws,
        &samples,
        &incident.release,
        incident.stable.as_deref(),
        &format!("{} {}: the new and the stable version around incident {}", ws.name, incident.release, incident.id),
        &format!("{}. Halted at {}.", words.join("; "), incident.detected_at),
        &marks,
    ))
}

/// The signals recorded during rollout `id` (any rollout, failed or not) drawn as
/// [`signals_svg`] draws an incident's; `None` when the rollout is unknown or nothing was
/// recorded.
pub fn rollout_svg(ws: &WorkloadState, events: &[Event], id: &str) -> Option<String> {
    let r = ws.rollout(id)?;
    let samples = samples(events, id);
    let mut marks = Vec::new();
    if let Some(d) = &r.decision {
        marks.push(chart::Mark {
            at: r.ended_at.unwrap_or(r.updated_at),
            label: format!("{:?}", d.action).to_lowercase(),
        });
    } else if let Some(end) = r.ended_at {
        marks.push(chart::Mark { at: end, label: r.status.as_str().into() });
    }
    draw(
        ws,
        &samples,
        &r.release,
        r.from.as_deref().filter(|f| *f != r.release),
        &format!("{} rollout {} of {}: the new and the stable version", ws.name, r.id, r.release),
        &format!("{} samples of traffic per version recorded during the rollout.", samples.len()),
        &marks,
    )
}

/// Four panels (error rate, p99 and p50 latency, requests per second) of `release` against
/// `stable`.
fn draw(
    ws: &WorkloadState,
    samples: &[SignalSample],
    release: &str,
    stable: Option<&str>,
    title: &str,
    description: &str,
    marks: &[chart::Mark],
) -> Option<String> {
    if samples.is_empty() {
        return None;
    }
    let versions: Vec<(&str, &'static str, String)> = std::iter::once((release, chart::NEW, "new"))
        .chain(stable.map(|s| (s, chart::STABLE, "stable")))
        .map(|(v, c, role)| (v, c, format!("{v} ({role})")))
        .collect();
    let line = |f: &dyn Fn(&SignalSample) -> Option<f64>| -> Vec<chart::Series> {
        versions
            .iter()
            .map(|(v, colour, name)| chart::Series {
                name: name.clone(),
                colour,
                points: samples.iter().filter(|s| s.version == *v).filter_map(|s| Some((s.at, f(s)?))).collect(),
            })
            .collect()
    };
    let panels = [
        chart::Panel {
            label: "error rate (%)".into(),
            series: line(&|s| (s.requests > 0).then(|| s.errors as f64 * 100.0 / s.requests as f64)),
            threshold: Some(ws.spec.health.max_error_rate * 100.0),
        },
        chart::Panel {
            label: "p99 latency (ms)".into(),
            series: line(&|s| s.p99_us.map(|us| us as f64 / 1000.0)),
            threshold: ws.spec.health.max_p99_latency.map(|d| d.as_ms() as f64),
        },
        chart::Panel {
            label: "p50 latency (ms)".into(),
            series: line(&|s| s.p50_us.map(|us| us as f64 / 1000.0)),
            threshold: None,
        },
        chart::Panel {
            label: "requests per second".into(),
            series: line(&|s| Some(s.requests as f64 * 1000.0 / s.span_ms.max(1) as f64)),
            threshold: None,
        },
    ];
    Some(chart::lines(title, description, &panels, marks))
}
