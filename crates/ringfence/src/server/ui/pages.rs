//! The hub's pages: the overview of every deployment, a workload (its rollout, actions,
//! history and incidents), a rollout (its phases, the decision with the options weighed, the
//! evidence drawn, its events).

use std::fmt::Write;

use api::RolloutStatus;
use ringfence_core::access::Perm;
use ringfence_core::{Timestamp, WorkloadState};

use super::{UiCaller, esc, is_destructive, layout, may_act};
use crate::server::prelude::*;

fn when(t: Timestamp) -> String {
    t.to_string()
}

fn url(s: &str) -> String {
    crate::http::encode_component(s)
}

fn status_badge(status: &str) -> String {
    format!("<span class=\"badge {s}\">{s}</span>", s = esc(status))
}

fn core_status(r: &ringfence_core::Rollout) -> &'static str {
    r.status.as_str()
}

fn pct(weight: f64) -> String {
    let w = format!("{weight:.1}");
    format!("{}%", w.trim_end_matches(".0"))
}

/// `<progress>` of the bake of the rollout's current phase.
fn bake(r: &api::Rollout) -> String {
    let Some(p) = r.phases.get(r.phase) else { return String::new() };
    if !r.status.is_active() || r.stage != api::Stage::Baking {
        return format!("{:?}", r.stage).to_lowercase();
    }
    let total = p.bake_ms.max(1);
    let done = r.baked_ms.min(total);
    format!(
        "<progress max=\"{total}\" value=\"{done}\" aria-label=\"bake of phase {n}\">{pc}%</progress> {s} of {b}",
        n = r.phase + 1,
        pc = done * 100 / total,
        s = ringfence_core::duration::Dur::ms(done),
        b = esc(&p.bake)
    )
}

/// What waits for a person on this workload, in words (empty: nothing).
fn waiting(ws: &WorkloadState, status: &api::WorkloadStatus) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &status.rollout {
        match r.status {
            RolloutStatus::Paused => out.push(format!("rollout {} of {} is paused", r.id, r.release)),
            RolloutStatus::Halted => out.push(format!("rollout {} of {} is halted", r.id, r.release)),
            _ => {}
        }
        if r.status.is_active()
            && r.phases.get(r.phase).is_some_and(|p| !p.gates.is_empty())
            && !r.promote_requested
            && r.stage == api::Stage::Baking
            && r.baked_ms >= r.phases[r.phase].bake_ms
        {
            out.push(format!("phase {} of rollout {} waits at its gate (approve or promote)", r.phase + 1, r.id));
        }
        if r.escalated {
            out.push(format!("rollout {} was escalated: it held past max_hold", r.id));
        }
    }
    if let Some(q) = &status.governance.queued {
        out.push(format!(
            "deployment of {} waits: {} approval(s) of {} given",
            q.version,
            q.approvals.len(),
            q.approvals_needed
        ));
    }
    for g in &status.governance.owed {
        out.push(format!("an emergency deployment owes its {} gate", g.gate));
    }
    if let Some(p) = &status.pin {
        out.push(format!("held on {}: {}", p.version, p.reason));
    }
    for i in ws.incidents.values().filter(|i| i.acknowledged_at.is_none() && i.resolved_at.is_none()) {
        out.push(format!("incident {} (SEV{}) is not acknowledged", i.id, i.severity));
    }
    out
}

fn status_of(sh: &Shared, ws: &WorkloadState, w: &ringfence_core::World) -> api::WorkloadStatus {
    let live = sh.live.lock().expect("live lock").get(&ws.name).cloned();
    wire::status(w, ws, live.as_ref(), now())
}

/// Rollouts the overview lists under "Recent deployments".
const RECENT: usize = 20;

/// `GET /ui`: every workload the person may read, what waits for a person, recent deployments.
pub(super) async fn overview(State(sh): St, user: UiCaller) -> Response {
    let main = sh.world(|w| {
        let visible: Vec<&WorkloadState> =
            w.workloads.values().map(|ws| &**ws).filter(|ws| !ws.deleted && user.may(Perm::Read, Some(&ws.name))).collect();
        let mut rows = String::new();
        let mut attention = String::new();
        let mut recent: Vec<(&WorkloadState, &ringfence_core::Rollout)> = Vec::new();
        for ws in &visible {
            let s = status_of(&sh, ws, w);
            let env = s.governance.environment.as_deref().unwrap_or("");
            let (rollout, phase, weight, progress) = match &s.rollout {
                Some(r) => (
                    format!(
                        "<a href=\"/ui/w/{}/r/{}\">{}</a> of {} {}",
                        url(&ws.name),
                        url(&r.id),
                        esc(&r.id),
                        esc(&r.release),
                        status_badge(r.status.as_str())
                    ),
                    format!("{} of {}", r.phase + 1, r.phases.len()),
                    r.phases.get(r.phase).map(|p| pct(p.weight)).unwrap_or_default(),
                    bake(r),
                ),
                None => ("none yet".into(), String::new(), String::new(), String::new()),
            };
            let _ = write!(
                rows,
                "<tr><th scope=\"row\"><a href=\"/ui/w/{u}\">{n}</a></th><td>{env}</td><td>{stable}</td><td>{rollout}</td><td>{phase}</td><td>{weight}</td><td>{progress}</td></tr>",
                u = url(&ws.name),
                n = esc(&ws.name),
                env = esc(env),
                stable = esc(s.stable.as_deref().unwrap_or("none")),
            );
            for item in waiting(ws, &s) {
                let _ = write!(attention, "<li><a href=\"/ui/w/{}\">{}</a>: {}</li>", url(&ws.name), esc(&ws.name), esc(&item));
            }
            // A workload's rollouts are in the order they started: the latest overall are among
            // each one's latest, so the page reads that many of each, not every history.
            recent.extend(ws.rollouts.iter().rev().take(RECENT).map(|r| (*ws, &**r)));
        }
        recent.sort_by_key(|(_, r)| std::cmp::Reverse(r.started_at));
        let mut history = String::new();
        for (ws, r) in recent.iter().take(RECENT) {
            let _ = write!(
                history,
                "<tr><td>{started}</td><td><a href=\"/ui/w/{u}\">{n}</a></td><td><a href=\"/ui/w/{u}/r/{ru}\">{id}</a></td><td>{rel}</td><td>{badge}</td><td>{ended}</td></tr>",
                started = when(r.started_at),
                u = url(&ws.name),
                n = esc(&ws.name),
                ru = url(&r.id),
                id = esc(&r.id),
                rel = esc(&r.release),
                badge = status_badge(core_status(r)),
                ended = r.ended_at.map(when).unwrap_or_default(),
            );
        }
        if attention.is_empty() {
            attention = "<p>Nothing waits for a person.</p>".into();
        } else {
            attention = format!("<ul>{attention}</ul>");
        }
        format!(
            "<h1>Deployments</h1>\
<section aria-labelledby=\"wait\"><h2 id=\"wait\">Waiting for a person</h2>{attention}</section>\
<section aria-labelledby=\"now\"><h2 id=\"now\">Workloads</h2><table><caption>Every workload you may read: what runs, and the rollout in progress or the last one</caption>\
<thead><tr><th scope=\"col\">Workload</th><th scope=\"col\">Environment</th><th scope=\"col\">Stable</th><th scope=\"col\">Rollout</th><th scope=\"col\">Phase</th><th scope=\"col\">Weight</th><th scope=\"col\">Bake</th></tr></thead>\
<tbody>{rows}</tbody></table></section>\
<section aria-labelledby=\"recent\"><h2 id=\"recent\">Recent deployments</h2><table><caption>The {RECENT} latest rollouts</caption>\
<thead><tr><th scope=\"col\">Started</th><th scope=\"col\">Workload</th><th scope=\"col\">Rollout</th><th scope=\"col\">Release</th><th scope=\"col\">Outcome</th><th scope=\"col\">Ended</th></tr></thead>\
<tbody>{history}</tbody></table></section>"
        )
    });
    layout("Deployments", Some(&user), &main)
}

fn not_found(user: &UiCaller, what: &str) -> Response {
    let mut r = layout("Not found", Some(user), &format!("<h1>Not found</h1><p role=\"alert\">{}</p>", esc(what)));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// The action buttons the person may use on the workload now.
fn actions(user: &UiCaller, ws: &WorkloadState, s: &api::WorkloadStatus) -> String {
    let active = s.rollout.as_ref().filter(|r| r.status.is_active());
    let mut offered: Vec<&str> = Vec::new();
    if let Some(r) = active {
        offered.push(if r.status == RolloutStatus::Paused { "resume" } else { "pause" });
        offered.extend(["promote", "approve", "reject", "abort"]);
    } else if s.governance.queued.is_some() {
        offered.extend(["approve", "reject"]);
    }
    if s.stable.is_some() && active.is_none() {
        offered.push("rollback");
    }
    let mut out = String::new();
    for a in offered {
        if !may_act(user, a, &ws.name) {
            continue;
        }
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/w/{u}/act\" class=\"action\"{confirm}>\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"{a}\">\
<label for=\"reason-{a}\" class=\"visually-hidden\">Reason to {a}</label><input id=\"reason-{a}\" name=\"reason\" placeholder=\"reason\" maxlength=\"2048\"{required}>\
<button type=\"submit\" class=\"{class}\">{label}</button></form>",
            u = url(&ws.name),
            csrf = user.csrf,
            confirm = if is_destructive(a) { " data-confirm=\"yes\"" } else { "" },
            required = if a == "reject" { " required" } else { "" },
            class = if is_destructive(a) { "danger" } else { "" },
            label = {
                let mut c = a.chars();
                c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
            },
        );
    }
    if out.is_empty() { "<p>No action your token allows applies now.</p>".into() } else { out }
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    status: String,
    /// From 1.
    #[serde(default = "first_page")]
    page: usize,
}

fn first_page() -> usize {
    1
}

/// Rollouts per page of a workload's history.
const PAGE: usize = 50;

/// `GET /ui/w/{name}`: the workload now, its actions, its history and incidents.
pub(super) async fn workload(
    State(sh): St,
    user: UiCaller,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return not_found(&user, &format!("No workload {name} you may read."));
    }
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    let main = sh.world(|w| {
        let ws = w.workload(&name).filter(|ws| !ws.deleted)?;
        let s = status_of(&sh, ws, w);
        let latest = ws.latest_rollout();
        let live = live.filter(|l| latest.is_some_and(|r| r.id == l.rollout_id));
        let why = ringfence_core::explain::why_with_live(ws, live.as_ref().map(|l| &l.verdict));
        let mut rows = String::new();
        let matching: Vec<&ringfence_core::Rollout> =
            ws.rollouts.iter().rev().map(|r| &**r).filter(|r| q.status.is_empty() || core_status(r) == q.status).collect();
        let pages = matching.len().div_ceil(PAGE).max(1);
        let page = q.page.clamp(1, pages);
        for r in matching.iter().skip((page - 1) * PAGE).take(PAGE) {
            let _ = write!(
                rows,
                "<tr><td><a href=\"/ui/w/{u}/r/{ru}\">{id}</a></td><td>{rel}</td><td>{from}</td><td>{badge}</td><td>{by}</td><td>{start}</td><td>{end}</td></tr>",
                u = url(&name),
                ru = url(&r.id),
                id = esc(&r.id),
                rel = esc(&r.release),
                from = esc(r.from.as_deref().unwrap_or("")),
                badge = status_badge(core_status(r)),
                by = esc(&r.started_by),
                start = when(r.started_at),
                end = r.ended_at.map(when).unwrap_or_default(),
            );
        }
        let link = |p: usize, label: &str| {
            format!("<a href=\"/ui/w/{}?status={}&amp;page={p}\">{label}</a>", url(&name), url(&q.status))
        };
        let forgotten = match ws.forgotten.rollouts {
            0 => String::new(),
            n => format!(
                " {n} older rollouts are kept in the event log only (<code>[history] rollouts = {}</code>): open one by its id, <code>/ui/w/{}/r/ID</code>.",
                ws.spec.history.rollouts,
                esc(&name)
            ),
        };
        let pager = format!(
            "<nav aria-label=\"Pages of the history\"><p>{} rollouts{}; page {page} of {pages}{}{}.{forgotten}</p></nav>",
            matching.len(),
            if q.status.is_empty() { String::new() } else { format!(" {}", esc(&q.status)) },
            if page > 1 { format!(" · {}", link(page - 1, "newer")) } else { String::new() },
            if page < pages { format!(" · {}", link(page + 1, "older")) } else { String::new() },
        );
        let filters: String = ["", "completed", "mitigated", "aborted", "halted", "progressing", "paused"]
            .iter()
            .map(|f| {
                let label = if f.is_empty() { "all" } else { f };
                let current = if *f == q.status { " aria-current=\"page\"" } else { "" };
                format!("<a href=\"/ui/w/{}?status={f}\"{current}>{label}</a>", url(&name))
            })
            .collect::<Vec<_>>()
            .join(" · ");
        let mut incidents = String::new();
        for i in ws.incidents.values().rev() {
            let updates: String = i
                .updates
                .iter()
                .map(|u| format!("<li><time>{}</time> {:?}: {}</li>", when(u.at), u.state, esc(&u.stakeholders)))
                .collect();
            let updates = if updates.is_empty() {
                String::new()
            } else {
                format!("<details><summary>{} update(s)</summary><ol class=\"timeline\">{updates}</ol></details>", i.updates.len())
            };
            let _ = write!(
                incidents,
                "<li><strong>{id}</strong> SEV{sev} {state:?}: {summary} (detected {at}){pm}{updates}</li>",
                id = esc(&i.id),
                sev = i.severity,
                state = i.state,
                summary = esc(&i.summary),
                at = when(i.detected_at),
                pm = format_args!(
                    " · <a href=\"/ui/w/{u}/r/{r}\">rollout and evidence</a> · <a href=\"/ui/w/{u}/postmortem/{r}\">postmortem draft</a>",
                    u = url(&name),
                    r = url(&i.rollout_id)
                ),
            );
        }
        if incidents.is_empty() {
            incidents = "<p>No incident.</p>".into();
        } else {
            incidents = format!("<ul>{incidents}</ul>");
        }
        let waiting: String = waiting(ws, &s).iter().map(|i| format!("<li>{}</li>", esc(i))).collect();
        let now = now();
        let follow_ups: String = ws
            .follow_ups
            .values()
            .map(|f| {
                let state = match (f.closed_at, f.is_overdue(now)) {
                    (Some(t), _) => format!("closed {}", when(t)),
                    (None, true) => "<strong>overdue</strong>".into(),
                    (None, false) => f.due.map(|d| format!("due {}", when(d))).unwrap_or_else(|| "open".into()),
                };
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
                    esc(&f.id),
                    esc(&f.incident),
                    esc(&f.title),
                    esc(if f.owner.is_empty() { "nobody yet" } else { &f.owner })
                )
            })
            .collect();
        let follow_ups = if follow_ups.is_empty() {
            String::new()
        } else {
            format!(
                "<table><caption>Follow-up items of the incidents</caption><thead><tr><th scope=\"col\">Item</th><th scope=\"col\">Incident</th><th scope=\"col\">What</th><th scope=\"col\">Owner</th><th scope=\"col\">State</th></tr></thead><tbody>{follow_ups}</tbody></table>"
            )
        };
        let flags = flags_section(&user, ws);
        let drills = drills_section(&name, ws);
        let current = match &s.rollout {
            Some(r) => format!(
                "<p class=\"current\">Rollout <a href=\"/ui/w/{u}/r/{ru}\">{id}</a> of {rel} {badge} · phase {p} of {np}{w} · {bake}</p>",
                u = url(&name),
                ru = url(&r.id),
                id = esc(&r.id),
                rel = esc(&r.release),
                badge = status_badge(r.status.as_str()),
                p = r.phase + 1,
                np = r.phases.len(),
                w = r.phases.get(r.phase).map(|p| format!(" at {}", pct(p.weight))).unwrap_or_default(),
                bake = bake(r),
            ),
            None => String::new(),
        };
        Some(format!(
            "<h1>{n}</h1><p>Stable: <strong>{stable}</strong>{lkg}</p>{current}\
{wait}\
<section aria-labelledby=\"why\"><h2 id=\"why\">Now</h2><pre class=\"why\">{why}</pre></section>\
<section aria-labelledby=\"act\"><h2 id=\"act\">Actions</h2>{actions}</section>\
<section aria-labelledby=\"hist\"><h2 id=\"hist\">History</h2><nav aria-label=\"Filter by outcome\">{filters}</nav>\
{pager}<table><caption>Every rollout of {n}, newest first</caption><thead><tr><th scope=\"col\">Rollout</th><th scope=\"col\">Release</th><th scope=\"col\">From</th><th scope=\"col\">Outcome</th><th scope=\"col\">Started by</th><th scope=\"col\">Started</th><th scope=\"col\">Ended</th></tr></thead><tbody>{rows}</tbody></table></section>\
{flags}\
{drills}\
<section aria-labelledby=\"inc\"><h2 id=\"inc\">Incidents</h2>{incidents}{follow_ups}</section>\
<section aria-labelledby=\"dora\"><h2 id=\"dora\">Delivery, last 30 days</h2><img class=\"chart\" src=\"/ui/w/{u}/dora.svg\" alt=\"Deployment frequency, lead time, change fail rate and recovery time of {n} over the last 30 days\"></section>",
            u = url(&name),
            n = esc(&name),
            stable = esc(s.stable.as_deref().unwrap_or("none")),
            lkg = s
                .last_known_good
                .as_ref()
                .map(|l| format!(" · last known good {}", esc(&l.version)))
                .unwrap_or_default(),
            wait = if waiting.is_empty() {
                String::new()
            } else {
                format!("<section aria-labelledby=\"wait\"><h2 id=\"wait\">Waiting for a person</h2><ul>{waiting}</ul></section>")
            },
            why = esc(&why),
            actions = actions(&user, ws, &s),
        ))
    });
    match main {
        Some(main) => layout(&name, Some(&user), &main),
        None => not_found(&user, &format!("No workload {name}.")),
    }
}

/// `GET /ui/w/{name}/r/{id}`: the rollout's phases, decision, evidence and events.
pub(super) async fn rollout(State(sh): St, user: UiCaller, Path((name, id)): Path<(String, String)>) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return not_found(&user, &format!("No workload {name} you may read."));
    }
    let events = match sh.rollout_events(&name, &id) {
        Ok(e) => e,
        Err(e) => return not_found(&user, &format!("The event log cannot be read: {e}")),
    };
    // One the projection let go under `[history]` is read back from the whole log.
    let (forgotten, events) = match sh.world(|w| w.workload(&name).is_some_and(|ws| ws.forgot_rollout(&id))) {
        true => match sh.forgotten_rollout(&name, &id) {
            Ok(Some((r, its_events))) => (Some(r), its_events),
            Ok(None) => (None, events),
            Err(e) => return not_found(&user, &format!("The event log cannot be read: {e}")),
        },
        false => (None, events),
    };
    let main = sh.world(|w| {
        let ws = w.workload(&name)?;
        let core = match &forgotten {
            Some(r) => std::borrow::Cow::Borrowed(r),
            None => ringfence_core::rollout::detailed(ws.rollout(&id)?, &events),
        };
        let r = wire::rollout(&core, now());
        let mut phases = String::new();
        for (i, p) in r.phases.iter().enumerate() {
            let state = if i < r.phase || (i == r.phase && r.status == RolloutStatus::Completed) {
                "passed"
            } else if i == r.phase {
                r.status.as_str()
            } else {
                "to come"
            };
            let current = if i == r.phase && r.status.is_active() { " aria-current=\"step\"" } else { "" };
            let _ = write!(
                phases,
                "<li{current} class=\"phase {cls}\"><strong>{name}</strong> {w} for {bake} <span>{state}</span>{progress}</li>",
                cls = state.replace(' ', "-"),
                name = esc(&p.name),
                w = pct(p.weight),
                bake = esc(&p.bake),
                progress = if i == r.phase && r.status.is_active() { format!(" {}", bake(&r)) } else { String::new() },
            );
        }
        let decision = match &r.decision {
            Some(d) => {
                let options: String = d
                    .considered
                    .iter()
                    .map(|c| {
                        format!(
                            "<li>{}<strong>{}</strong>: {}</li>",
                            if c.chosen { "chosen: " } else { "" },
                            esc(&c.option),
                            esc(&c.why)
                        )
                    })
                    .collect();
                format!(
                    "<section aria-labelledby=\"dec\"><h2 id=\"dec\">Decision</h2><p class=\"decision\">{}</p><p>Rule: {}</p><h3>Options weighed</h3><ul>{options}</ul></section>",
                    esc(&d.summary),
                    esc(&d.rule)
                )
            }
            None => String::new(),
        };
        let evidence = match &r.last_verdict {
            Some(v) => {
                let num = |x: Option<f64>| x.map(|x| format!("{:.4}", x).trim_end_matches('0').trim_end_matches('.').to_string()).unwrap_or_default();
                let rows: String = v
                    .signals
                    .iter()
                    .map(|s| {
                        let health = format!("{:?}", s.health).to_lowercase();
                        format!(
                            "<tr class=\"{health}\"><th scope=\"row\">{sig}</th><td>{ver}</td><td><span class=\"badge {health}\">{health}</span></td><td>{obs}</td><td>{thr}</td><td>{base}</td><td>{n}</td><td>{rule}<br><small>{detail}</small></td></tr>",
                            sig = esc(&s.signal),
                            ver = esc(&s.version),
                            obs = num(s.observed),
                            thr = num(s.threshold),
                            base = num(s.baseline),
                            n = s.sample_size,
                            rule = esc(&s.rule),
                            detail = esc(&s.detail),
                        )
                    })
                    .collect();
                format!(
                    "<section aria-labelledby=\"ev\"><h2 id=\"ev\">Evidence</h2><p>The last verdict: <strong>{h}</strong> ({a}, over {w}).</p>\
<table><caption>Every signal behind the verdict, with its threshold and the rule it was judged by</caption><thead><tr><th scope=\"col\">Signal</th><th scope=\"col\">Version</th><th scope=\"col\">Verdict</th><th scope=\"col\">Observed</th><th scope=\"col\">Threshold</th><th scope=\"col\">Stable</th><th scope=\"col\">Samples</th><th scope=\"col\">Rule</th></tr></thead><tbody>{rows}</tbody></table></section>",
                    h = format!("{:?}", v.health).to_lowercase(),
                    a = esc(&v.analyzer),
                    w = ringfence_core::duration::Dur::ms(v.window_ms),
                )
            }
            None => String::new(),
        };
        let windows = phase_windows(&r);
        let has_signals = events.iter().any(
            |e| matches!(&e.kind, ringfence_core::EventKind::SignalsRecorded { rollout_id, .. } if *rollout_id == id),
        );
        let chart = if has_signals {
            format!(
                "<section aria-labelledby=\"sig\"><h2 id=\"sig\">Signals</h2><img src=\"/ui/w/{u}/r/{ru}/signals.svg?at={seq}\" alt=\"Error rate, p99 latency and requests per second of {rel} and the stable version during the rollout\" class=\"chart\"></section>",
                u = url(&name),
                ru = url(&id),
                rel = esc(&r.release),
                seq = core.last_seq
            )
        } else {
            String::new()
        };
        let mut timeline = String::new();
        for e in events.iter().filter(|e| e.kind.rollout_id() == Some(id.as_str())) {
            let _ = write!(
                timeline,
                "<li><time>{}</time> {} <span class=\"actor\">({})</span></li>",
                when(e.at),
                esc(&ringfence_core::explain::describe(e)),
                esc(&e.actor)
            );
        }
        Some(format!(
            "<p><a href=\"/ui/w/{u}\">{n}</a></p><h1>Rollout {id} of {rel}</h1>\
<p>{badge} · from {from} · started by {by} at {start}{end} · reason: {reason}</p>\
<section aria-labelledby=\"ph\"><h2 id=\"ph\">Phases</h2><ol class=\"phases\">{phases}</ol></section>\
{decision}{chart}{evidence}{windows}\
<section aria-labelledby=\"tl\"><h2 id=\"tl\">Timeline</h2><ol class=\"timeline\">{timeline}</ol></section>",
            u = url(&name),
            n = esc(&name),
            id = esc(&r.id),
            rel = esc(&r.release),
            badge = status_badge(r.status.as_str()),
            from = esc(r.from.as_deref().unwrap_or("nothing")),
            by = esc(&r.started_by),
            start = when(core.started_at),
            end = core.ended_at.map(|t| format!(", ended {}", when(t))).unwrap_or_default(),
            reason = esc(&r.reason),
        ))
    });
    match main {
        Some(main) => layout(&format!("{name} {id}"), Some(&user), &main),
        None => not_found(&user, &format!("No rollout {id} of {name}.")),
    }
}

/// A latency quantile (µs) of a histogram of `(upper bound, count)`: the bound of the bucket
/// holding it.
fn quantile_us(buckets: &[(u64, u64)], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    buckets
        .iter()
        .find(|&&(_, n)| {
            seen += n;
            seen >= rank
        })
        .map(|&(upper, _)| upper)
}

/// The traffic each passed comparison phase was judged on: the evidence of every verdict that
/// let the rollout go on.
fn phase_windows(r: &api::Rollout) -> String {
    if r.windows.is_empty() {
        return String::new();
    }
    let side = |t: &api::Traffic| {
        let rate = if t.requests > 0 { t.errors as f64 * 100.0 / t.requests as f64 } else { 0.0 };
        let ms = |q| {
            quantile_us(&t.latency_us, q).map(|us| format!("{:.1}", us as f64 / 1000.0)).unwrap_or_else(|| "-".into())
        };
        format!("<td>{}</td><td>{} ({rate:.2}%)</td><td>{}</td><td>{}</td>", t.requests, t.errors, ms(0.5), ms(0.99))
    };
    let rows: String = r
        .windows
        .iter()
        .map(|w| {
            let name = r.phases.get(w.phase).map(|p| p.name.as_str()).unwrap_or("");
            format!(
                "<tr><th scope=\"row\">{n}. {name}</th><td>{weight}</td>{new}{stable}</tr>",
                n = w.phase + 1,
                name = esc(name),
                weight = pct(w.weight_bp as f64 / 100.0),
                new = side(&w.canary),
                stable = side(&w.stable),
            )
        })
        .collect();
    format!(
        "<section aria-labelledby=\"win\"><h2 id=\"win\">Evidence of each passed phase</h2><table><caption>The traffic of the new and the stable version each passed phase was judged on (latency: upper bounds of the histogram buckets)</caption>\
<thead><tr><th scope=\"col\" rowspan=\"2\">Phase</th><th scope=\"col\" rowspan=\"2\">Weight</th><th scope=\"colgroup\" colspan=\"4\">New version</th><th scope=\"colgroup\" colspan=\"4\">Stable version</th></tr>\
<tr><th scope=\"col\">Requests</th><th scope=\"col\">Errors</th><th scope=\"col\">p50 ms</th><th scope=\"col\">p99 ms</th><th scope=\"col\">Requests</th><th scope=\"col\">Errors</th><th scope=\"col\">p50 ms</th><th scope=\"col\">p99 ms</th></tr></thead>\
<tbody>{rows}</tbody></table></section>"
    )
}

/// The flags users evaluate now, each with its kill switch (for those who may use it).
fn flags_section(user: &UiCaller, ws: &WorkloadState) -> String {
    let mut keys: std::collections::BTreeSet<String> = ws.killed_flags.keys().cloned().collect();
    for g in &ws.desired().routes {
        if let Some(doc) = ws.flags_for(&g.version)
            && let Some(flags) = doc.get("flags").and_then(|f| f.as_object())
        {
            keys.extend(flags.keys().cloned());
        }
    }
    if keys.is_empty() {
        return String::new();
    }
    let may_kill = may_act(user, "kill", &ws.name);
    let rows: String = keys
        .iter()
        .map(|k| {
            let killed = ws.killed_flags.contains_key(k);
            let action = if killed { "restore" } else { "kill" };
            let button = if may_kill {
                format!(
                    "<form method=\"post\" action=\"/ui/w/{u}/act\" class=\"action\"{confirm}><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"flag\" value=\"{k}\">\
<label for=\"reason-{action}-{k}\" class=\"visually-hidden\">Reason to {action} {k}</label><input id=\"reason-{action}-{k}\" name=\"reason\" placeholder=\"reason\" maxlength=\"2048\"{required}>\
<button type=\"submit\" class=\"{class}\">{label} {k}</button></form>",
                    u = url(&ws.name),
                    csrf = user.csrf,
                    k = esc(k),
                    confirm = if killed { "" } else { " data-confirm=\"yes\"" },
                    required = if killed { "" } else { " required" },
                    class = if killed { "" } else { "danger" },
                    label = if killed { "Restore" } else { "Kill" },
                )
            } else {
                String::new()
            };
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{button}</td></tr>",
                esc(k),
                if killed { "<strong>killed</strong>: off for every user" } else { "as its release defines" }
            )
        })
        .collect();
    format!(
        "<section aria-labelledby=\"flags\"><h2 id=\"flags\">Flags</h2><table><caption>The flags users evaluate now, and the kill switch</caption><thead><tr><th scope=\"col\">Flag</th><th scope=\"col\">State</th><th scope=\"col\">Kill switch</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

/// `GET /ui/w/{name}/postmortem/{id}`: the blameless draft of a failed rollout.
pub(super) async fn postmortem(State(sh): St, user: UiCaller, Path((name, id)): Path<(String, String)>) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return not_found(&user, &format!("No workload {name} you may read."));
    }
    let events = match sh.events(Some(&name), 0, usize::MAX) {
        Ok(e) => e,
        Err(e) => return not_found(&user, &format!("The event log cannot be read: {e}")),
    };
    let draft = sh.world(|w| {
        let ws = w.workload(&name)?;
        ringfence_core::postmortem::draft(ws, &events, Some(&id)).ok()
    });
    match draft {
        Some(markdown) => layout(
            &format!("Postmortem {id}"),
            Some(&user),
            &format!(
                "<p><a href=\"/ui/w/{u}\">{n}</a> · <a href=\"/ui/w/{u}/r/{r}\">the rollout</a></p><h1>Postmortem draft: {id}</h1><pre class=\"why\">{md}</pre>",
                u = url(&name),
                n = esc(&name),
                r = url(&id),
                id = esc(&id),
                md = esc(&markdown)
            ),
        ),
        None => not_found(&user, &format!("No failed rollout {id} of {name}.")),
    }
}

/// `GET /ui/w/{name}/dora.svg`: the DORA metrics of the last 30 days, drawn.
/// The workload's drills: which failure modes they cover, and their times (docs/drills.md).
fn drills_section(name: &str, ws: &WorkloadState) -> String {
    let secs = |ms: Option<u64>| ms.map_or("-".to_string(), |m| format!("{:.1} s", m as f64 / 1000.0));
    let rows: String = ringfence_core::drill::coverage(ws, now())
        .iter()
        .map(|c| {
            let last = c.last.as_ref().map_or("never".to_string(), |d| {
                let r = d.report.as_ref();
                format!(
                    "{} {}",
                    esc(&d.id),
                    r.map_or(String::new(), |r| format!("{} {}", r.outcome.as_str(), when(r.ended_at)))
                )
            });
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{} of {}</td><td>{}</td><td>{}</td><td>{last}</td></tr>",
                c.fault,
                c.trigger,
                if c.automatic { "yes" } else { "no" },
                c.status,
                c.status.replace('_', " "),
                c.passed,
                c.drills,
                secs(c.median_detect_ms),
                secs(c.median_mitigate_ms)
            )
        })
        .collect();
    let running = ws.drills.iter().rev().find(|d| d.is_running()).map_or(String::new(), |d| {
        format!(
            "<p class=\"current\">Drill {} runs: {} on {} ({}% of users).</p>",
            esc(&d.id),
            esc(&d.fault.describe()),
            esc(&d.version),
            d.weight_bp as f64 / 100.0
        )
    });
    let chart = if ws.drills.iter().any(|d| d.report.is_some()) {
        format!(
            "<img class=\"chart\" src=\"/ui/w/{}/gameday.svg\" alt=\"Time to detect and time to mitigate of every drill of {}, a line per fault\">",
            url(name),
            esc(name)
        )
    } else {
        String::new()
    };
    format!(
        "<section aria-labelledby=\"drills\"><h2 id=\"drills\">Drills</h2>{running}<table><caption>Each failure mode a drill exercises (`ringfence drill {n} --fault F`), and whether automatic mitigation relies on it</caption><thead><tr><th scope=\"col\">Fault</th><th scope=\"col\">Trigger</th><th scope=\"col\">Automatic</th><th scope=\"col\">Status</th><th scope=\"col\">Passed</th><th scope=\"col\">Detect (median)</th><th scope=\"col\">Mitigate (median)</th><th scope=\"col\">Last drill</th></tr></thead><tbody>{rows}</tbody></table>{chart}</section>",
        n = esc(name)
    )
}

/// `GET /ui/w/{name}/gameday.svg`: the drills' times, drawn.
pub(super) async fn gameday_svg(State(sh): St, user: UiCaller, Path(name): Path<String>) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match sh.world(|w| w.workload(&name).and_then(ringfence_core::drill::game_day_svg)) {
        Some(svg) => svg_response(svg),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(super) async fn dora_svg(State(sh): St, user: UiCaller, Path(name): Path<String>) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let to = now();
    let from = Timestamp(to.0 - 30 * 86_400_000);
    // Drawn on every view of the workload's page: from what the projection keeps, never by
    // folding the whole log again (the API's `dora.svg` does that); when the window reaches
    // back past what is kept, the chart starts after the newest rollout let go, and says so
    // with its dates.
    let svg = sh.world(|w| {
        w.workload(&name).map(|ws| {
            let from = ws.forgotten.until.map_or(from, |until| from.max(until.plus_ms(1)));
            ringfence_core::dora::svg(&ringfence_core::dora::compute(ws, from, to))
        })
    });
    match svg {
        Some(svg) => svg_response(svg),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn svg_response(svg: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "image/svg+xml"), (axum::http::header::CACHE_CONTROL, "no-store")], svg)
        .into_response()
}

/// `GET /ui/w/{name}/r/{id}/signals.svg`: the recorded traffic of the rollout, drawn.
pub(super) async fn signals_svg(State(sh): St, user: UiCaller, Path((name, id)): Path<(String, String)>) -> Response {
    if !user.may(Perm::Read, Some(&name)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(events) = sh.rollout_events(&name, &id) else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    let svg = sh.world(|w| {
        let ws = w.workload(&name)?;
        ringfence_core::postmortem::rollout_svg(ws, &events, &id)
    });
    match svg {
        Some(svg) => svg_response(svg),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The confirmation page of a destructive action (without JavaScript, or with it off).
pub(super) fn confirm(user: &UiCaller, name: &str, action: &str, flag: &str, reason: &str) -> Response {
    let main = format!(
        "<h1>{action} {n}{f}?</h1><p>This cannot be taken back by the same button.</p>\
<form method=\"post\" action=\"/ui/w/{u}/act\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
<input type=\"hidden\" name=\"flag\" value=\"{flag}\">\
<p><label for=\"reason\">Reason</label><br><input id=\"reason\" name=\"reason\" value=\"{reason}\" maxlength=\"2048\"></p>\
<p><button type=\"submit\" class=\"danger\">Yes, {action}</button> <a href=\"/ui/w/{u}\">No, back</a></p></form>",
        action = esc(action),
        n = esc(name),
        u = url(name),
        csrf = user.csrf,
        reason = esc(reason),
        f = if flag.is_empty() { String::new() } else { format!(": flag {}", esc(flag)) },
        flag = esc(flag),
    );
    layout(&format!("{action} {name}?"), Some(user), &main)
}
