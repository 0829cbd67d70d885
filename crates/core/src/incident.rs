//! Incidents: every halted rollout opens one, and only one (it is keyed on the rollout), with a
//! severity from the workload's criticality and how the mitigation went. Its states follow
//! Statuspage's (investigating, identified, monitoring, resolved), each transition validated
//! and timed: detected when the rollout halts, acknowledged by a person, mitigated when the
//! mitigation is verified, resolved by a person or once health has held for
//! `[incident] confirm_after` after the mitigation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorCode};
use crate::event::EventKind;
use crate::spec::{Audience, Criticality, NotifyKind};
use crate::state::{WorkloadState, World};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Detected: the rollout halted; what is wrong is being looked at.
    Investigating,
    /// A person acknowledged it and owns it.
    Identified,
    /// The mitigation is verified; health is watched before it is called resolved.
    Monitoring,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Investigating => "investigating",
            IncidentState::Identified => "identified",
            IncidentState::Monitoring => "monitoring",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// One state change, as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: IncidentState,
    pub at: Timestamp,
    pub by: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `<rollout id>`: one incident per failed rollout, by construction.
    pub id: String,
    pub workload: String,
    pub rollout_id: String,
    pub release: String,
    /// The version traffic went back to.
    pub stable: Option<String>,
    /// 1 (most severe) to 4.
    pub severity: u8,
    pub state: IncidentState,
    /// What went wrong, as the decision said it.
    pub summary: String,
    pub detected_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub mitigated_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub transitions: Vec<Transition>,
    /// The status updates sent, oldest first.
    #[serde(default)]
    pub updates: Vec<Update>,
}

/// One status update, for each audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub at: Timestamp,
    pub state: IncidentState,
    pub stakeholders: String,
    pub users: String,
    pub next_at: Option<Timestamp>,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.state != IncidentState::Resolved
    }

    pub fn severity_name(&self) -> String {
        format!("sev{}", self.severity)
    }
}

/// The severity of a failed rollout of a workload of `criticality`: critical is sev1, low
/// sev4; one level worse when the mitigation could not be verified.
pub fn severity(criticality: Criticality, unverified: bool) -> u8 {
    let base: u8 = match criticality {
        Criticality::Critical => 1,
        Criticality::High => 2,
        Criticality::Medium => 3,
        Criticality::Low => 4,
    };
    if unverified { base.saturating_sub(1).max(1) } else { base }
}

/// Folds an event into the workload's incidents, and keeps the index of those a tick has
/// work for.
pub(crate) fn apply(ws: &mut WorkloadState, actor: &str, reason: &str, kind: &EventKind, at: Timestamp) {
    fold(ws, actor, reason, kind, at);
    match kind {
        EventKind::RolloutHalted { rollout_id: id, .. }
        | EventKind::MitigationCompleted { rollout_id: id, .. }
        | EventKind::IncidentAcknowledged { incident: id }
        | EventKind::IncidentUpdated { incident: id, .. }
        | EventKind::NotificationDelivered { incident: id, .. }
        | EventKind::NotificationFailed { incident: id, .. }
        | EventKind::IncidentResolved { incident: id } => refresh(ws, id, at),
        EventKind::FollowUpCreated { id, .. } => {
            ws.follow_ups_open.insert(id.clone());
        }
        EventKind::FollowUpClosed { id } => {
            ws.follow_ups_open.remove(id);
        }
        _ => {}
    }
}

/// Whether a tick has work for incident `i` (at `at`, the time of the event folded last):
/// it is open (confirmations, promised updates), it owes an update (its state changed since
/// the last), or one of its updates fresh at `at` is neither delivered nor given up on some
/// channel that gets updates. An incident none of that holds for stays out of every tick's
/// look until an event touches it again, or a spec change brings a new channel.
pub(crate) fn astir(ws: &WorkloadState, i: &Incident, at: Timestamp) -> bool {
    let settled = |d: Option<&Delivery>| d.is_some_and(|d| d.delivered_at.is_some() || d.attempts >= MAX_ATTEMPTS);
    i.is_open()
        || update_owed(i)
        || ws.spec.notify.iter().filter(|c| c.kind != NotifyKind::Tracker).any(|c| {
            i.updates.iter().enumerate().any(|(n, u)| {
                at.since(u.at) < FRESH_MS && !settled(ws.deliveries.get(&(c.name.clone(), i.id.clone(), n)))
            })
        })
}

/// The incident's state changed since its last update (or it has none yet).
fn update_owed(i: &Incident) -> bool {
    let last_change = i.transitions.last().map_or(i.detected_at, |t| t.at);
    i.updates.last().is_none_or(|u| u.at < last_change || u.state != i.state)
}

/// Puts incident `id` in or out of the tick's index after an event touched it.
fn refresh(ws: &mut WorkloadState, id: &str, at: Timestamp) {
    match ws.incidents.get(id) {
        Some(i) if astir(ws, i, at) => {
            if !ws.incidents_astir.contains(id) {
                ws.incidents_astir.insert(id.to_owned());
            }
        }
        _ => {
            ws.incidents_astir.remove(id);
        }
    }
}

/// Rebuilds the tick's index of incidents (the notification channels changed).
pub(crate) fn refresh_all(ws: &mut WorkloadState, at: Timestamp) {
    let astir = ws.incidents.values().filter(|i| astir(ws, i, at)).map(|i| i.id.clone()).collect();
    ws.incidents_astir = astir;
}

/// The incidents a tick looks at, in id order (as `ws.incidents`).
fn ticking(ws: &WorkloadState) -> impl Iterator<Item = &Incident> {
    ws.incidents_astir.iter().filter_map(|id| ws.incidents.get(id).map(|i| &**i))
}

/// The follow-ups a tick looks at, in id order (as `ws.follow_ups`).
fn open_follow_ups(ws: &WorkloadState) -> impl Iterator<Item = &FollowUp> {
    ws.follow_ups_open.iter().filter_map(|id| ws.follow_ups.get(id))
}

fn fold(ws: &mut WorkloadState, actor: &str, reason: &str, kind: &EventKind, at: Timestamp) {
    let criticality = ws.spec.workload.criticality;
    match kind {
        EventKind::RolloutHalted { rollout_id, decision } if !ws.incidents.contains_key(rollout_id) => {
            let Some(r) = ws.rollout(rollout_id) else { return };
            // A drill's halt is rehearsed, not suffered: its report is the drill's own.
            if crate::drill::is_drill(r) {
                return;
            }
            let incident = Incident {
                id: rollout_id.clone(),
                workload: ws.name.clone(),
                rollout_id: rollout_id.clone(),
                release: r.release.clone(),
                stable: r.from.clone(),
                severity: severity(criticality, false),
                state: IncidentState::Investigating,
                summary: decision.summary.clone(),
                detected_at: at,
                acknowledged_at: None,
                mitigated_at: None,
                resolved_at: None,
                updates: Vec::new(),
                transitions: vec![Transition {
                    state: IncidentState::Investigating,
                    at,
                    by: actor.into(),
                    note: decision.summary.clone(),
                }],
            };
            std::sync::Arc::make_mut(&mut ws.incidents).insert(rollout_id.clone(), std::sync::Arc::new(incident));
        }
        EventKind::MitigationCompleted { rollout_id, verified, detail } => {
            if let Some(i) = std::sync::Arc::make_mut(&mut ws.incidents)
                .get_mut(rollout_id)
                .map(std::sync::Arc::make_mut)
                .filter(|i| i.is_open())
            {
                if *verified {
                    i.mitigated_at = Some(at);
                    i.state = IncidentState::Monitoring;
                    i.transitions.push(Transition {
                        state: IncidentState::Monitoring,
                        at,
                        by: actor.into(),
                        note: detail.clone(),
                    });
                } else {
                    i.severity = severity(criticality, true).min(i.severity);
                    i.transitions.push(Transition { state: i.state, at, by: actor.into(), note: detail.clone() });
                }
            }
        }
        EventKind::IncidentAcknowledged { incident } => {
            if let Some(i) = std::sync::Arc::make_mut(&mut ws.incidents).get_mut(incident).map(std::sync::Arc::make_mut)
            {
                i.acknowledged_at = Some(at);
                if i.state == IncidentState::Investigating {
                    i.state = IncidentState::Identified;
                }
                i.transitions.push(Transition {
                    state: i.state,
                    at,
                    by: actor.into(),
                    note: format!("acknowledged: {reason}"),
                });
            }
        }
        EventKind::IncidentUpdated { incident, state, stakeholders, users, next_at } => {
            if let Some(i) = std::sync::Arc::make_mut(&mut ws.incidents).get_mut(incident).map(std::sync::Arc::make_mut)
            {
                i.updates.push(Update {
                    at,
                    state: *state,
                    stakeholders: stakeholders.clone(),
                    users: users.clone(),
                    next_at: *next_at,
                });
            }
        }
        EventKind::FollowUpCreated { id, incident, title, owner, due } => {
            std::sync::Arc::make_mut(&mut ws.follow_ups).insert(
                id.clone(),
                FollowUp {
                    id: id.clone(),
                    incident: incident.clone(),
                    title: title.clone(),
                    owner: owner.clone(),
                    due: *due,
                    created_at: at,
                    created_by: actor.into(),
                    closed_at: None,
                    reminders: Vec::new(),
                    exported: BTreeMap::new(),
                },
            );
        }
        EventKind::FollowUpReminded { id, text } => {
            if let Some(f) = std::sync::Arc::make_mut(&mut ws.follow_ups).get_mut(id) {
                f.reminders.push(Reminder { at, text: text.clone() });
            }
        }
        EventKind::FollowUpSent { id, channel, message, reference, .. } => {
            let d = std::sync::Arc::make_mut(&mut ws.deliveries)
                .entry((channel.clone(), follow_up_subject(id), *message))
                .or_default();
            d.attempts += 1;
            d.delivered_at = Some(at);
            if !reference.is_empty()
                && let Some(f) = std::sync::Arc::make_mut(&mut ws.follow_ups).get_mut(id)
            {
                f.exported.insert(channel.clone(), reference.clone());
            }
        }
        EventKind::FollowUpSendFailed { id, channel, message, error } => {
            let d = std::sync::Arc::make_mut(&mut ws.deliveries)
                .entry((channel.clone(), follow_up_subject(id), *message))
                .or_default();
            d.attempts += 1;
            d.last_attempt = Some(at);
            d.last_error = error.clone();
        }
        EventKind::NotificationDelivered { channel, incident, update, .. } => {
            let d = std::sync::Arc::make_mut(&mut ws.deliveries)
                .entry((channel.clone(), incident.clone(), *update))
                .or_default();
            d.attempts += 1;
            d.delivered_at = Some(at);
        }
        EventKind::NotificationFailed { channel, incident, update, error } => {
            let d = std::sync::Arc::make_mut(&mut ws.deliveries)
                .entry((channel.clone(), incident.clone(), *update))
                .or_default();
            d.attempts += 1;
            d.last_attempt = Some(at);
            d.last_error = error.clone();
        }
        EventKind::FollowUpAssigned { id, owner } => {
            if let Some(f) = std::sync::Arc::make_mut(&mut ws.follow_ups).get_mut(id) {
                f.owner = owner.clone();
            }
        }
        EventKind::FollowUpClosed { id } => {
            if let Some(f) = std::sync::Arc::make_mut(&mut ws.follow_ups).get_mut(id) {
                f.closed_at.get_or_insert(at);
            }
        }
        EventKind::IncidentResolved { incident } => {
            if let Some(i) = std::sync::Arc::make_mut(&mut ws.incidents).get_mut(incident).map(std::sync::Arc::make_mut)
            {
                i.state = IncidentState::Resolved;
                i.resolved_at = Some(at);
                i.transitions.push(Transition {
                    state: IncidentState::Resolved,
                    at,
                    by: actor.into(),
                    note: reason.into(),
                });
            }
        }
        _ => {}
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError { code, message: message.into() }
}

fn find<'a>(ws: &'a WorkloadState, id: &str) -> Result<&'a Incident, CommandError> {
    ws.incidents.get(id).map(|i| &**i).ok_or_else(|| {
        err(ErrorCode::NotFound, format!("{} has no incident {id:?} (`ringfence incident list {}`)", ws.name, ws.name))
    })
}

/// A person takes the incident: investigating becomes identified.
pub fn acknowledge(world: &World, name: &str, id: &str) -> Result<EventKind, CommandError> {
    let ws = crate::command::workload(world, name)?;
    let i = find(ws, id)?;
    if i.acknowledged_at.is_some() || !i.is_open() {
        return Err(err(
            ErrorCode::Conflict,
            format!("incident {id} is {} and was acknowledged already", i.state.as_str()),
        ));
    }
    Ok(EventKind::IncidentAcknowledged { incident: id.into() })
}

/// A person resolves the incident. Only once its mitigation is verified (monitoring): health
/// that is not restored is not resolved, whoever says so.
pub fn resolve(world: &World, name: &str, id: &str) -> Result<EventKind, CommandError> {
    let ws = crate::command::workload(world, name)?;
    let i = find(ws, id)?;
    match i.state {
        IncidentState::Resolved => Err(err(ErrorCode::Conflict, format!("incident {id} is resolved already"))),
        IncidentState::Monitoring => Ok(EventKind::IncidentResolved { incident: id.into() }),
        s => Err(err(
            ErrorCode::Conflict,
            format!(
                "incident {id} is {}: its mitigation is not verified yet (health not restored), so it cannot be resolved",
                s.as_str()
            ),
        )),
    }
}

/// Incidents whose health has held since the mitigation for `[incident] confirm_after`,
/// with no crash of the version traffic went back to and no alert firing: resolved by the
/// controller.
pub fn confirmed(ws: &WorkloadState, now: Timestamp) -> Vec<EventKind> {
    let wait = ws.spec.incident.confirm_after.as_ms();
    ticking(ws)
        .filter(|i| i.state == IncidentState::Monitoring)
        .filter(|i| i.mitigated_at.is_some_and(|m| now.since(m) >= wait))
        .filter(|i| {
            let since = i.mitigated_at.unwrap_or(now);
            !ws.crashes.iter().any(|c| Some(&c.version) == i.stable.as_ref() && c.at >= since) && ws.alerts.is_empty()
        })
        .map(|i| EventKind::IncidentResolved { incident: i.id.clone() })
        .collect()
}

/// What a workload's users read about an incident in `state`: plain words, no internals.
pub fn public_words(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Investigating => "We are investigating a problem affecting some users.",
        IncidentState::Identified => "The problem has been identified and is being worked on.",
        IncidentState::Monitoring => "A fix is in place. We are watching to make sure it holds.",
        IncidentState::Resolved => "This incident is resolved. Thank you for your patience.",
    }
}

/// The days the public status page draws, today last; a workload with a public page keeps
/// every incident it draws on one of them (not resolved before them) in memory (`[history]`).
pub const STATUS_PAGE_DAYS: u32 = 90;

/// The most severe incident open on each of the last `days` days up to `now` (oldest first;
/// `None`: none that day). An incident counts on every day from its detection to its
/// resolution.
pub fn by_day(ws: &WorkloadState, now: Timestamp, days: u32) -> Vec<Option<u8>> {
    const DAY: i64 = 86_400_000;
    let today = now.millis().div_euclid(DAY);
    (0..i64::from(days))
        .rev()
        .map(|back| {
            let (start, end) = ((today - back) * DAY, (today - back + 1) * DAY);
            ws.incidents
                .values()
                .filter(|i| i.detected_at.millis() < end && i.resolved_at.is_none_or(|r| r.millis() >= start))
                .map(|i| i.severity)
                .min()
        })
        .collect()
}

/// The status updates due at `now`: one after every change of state not yet announced, and,
/// while an incident is open, one when the previous update's promised time has come. Each
/// names when the next one comes (none once resolved).
pub fn updates_due(ws: &WorkloadState, now: Timestamp) -> Vec<EventKind> {
    let mut out = Vec::new();
    for i in ticking(ws) {
        let last = i.updates.last();
        let changed = update_owed(i);
        let promised = last.and_then(|u| u.next_at).is_some_and(|t| now >= t);
        if !(changed || (i.is_open() && promised)) {
            continue;
        }
        let every = ws.spec.incident.update_every[usize::from(i.severity.clamp(1, 4) - 1)];
        let next_at = i.is_open().then(|| now.plus_ms(every.as_ms()));
        let next = next_at.map(|t| format!(" Next update by {t}.")).unwrap_or_default();
        let roles = &ws.spec.incident;
        let mut stakeholders =
            format!("[{}] {} {} — {}: {}.", i.severity_name(), ws.name, i.release, i.state.as_str(), i.summary);
        if let Some(m) = i.mitigated_at {
            stakeholders.push_str(&format!(
                " Mitigated at {m}, {} after detection.",
                crate::duration::Dur(m.since(i.detected_at))
            ));
        }
        if !roles.commander.is_empty() {
            stakeholders.push_str(&format!(" Commander: {}.", roles.commander));
        }
        if !roles.escalation.is_empty() && i.is_open() {
            stakeholders.push_str(&format!(" Escalation: {}.", roles.escalation));
        }
        stakeholders.push_str(&next);
        let name = if ws.spec.status_page.title.is_empty() { &ws.name } else { &ws.spec.status_page.title };
        let versions = if ws.spec.status_page.show_versions {
            match &i.stable {
                Some(stable) => format!(" Affected release: {}; serving {stable}.", i.release),
                None => format!(" Affected release: {}.", i.release),
            }
        } else {
            String::new()
        };
        let users = format!("{}: {}{versions}{next}", name, public_words(i.state));
        out.push(EventKind::IncidentUpdated { incident: i.id.clone(), state: i.state, stakeholders, users, next_at });
    }
    out
}

/// An improvement a postmortem calls for, on the workload's backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    pub id: String,
    pub incident: String,
    pub title: String,
    pub owner: String,
    pub due: Option<Timestamp>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub closed_at: Option<Timestamp>,
    /// Reminders sent while it was overdue, oldest first.
    #[serde(default)]
    pub reminders: Vec<Reminder>,
    /// Issue trackers it was exported to: channel name to the tracker's link or id for it.
    #[serde(default)]
    pub exported: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reminder {
    pub at: Timestamp,
    pub text: String,
}

impl FollowUp {
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.closed_at.is_none() && self.due.is_some_and(|d| now > d)
    }
}

/// A follow-up item of incident `incident`.
pub fn follow_up(
    world: &World,
    name: &str,
    incident: &str,
    title: &str,
    owner: &str,
    due: Option<Timestamp>,
) -> Result<EventKind, CommandError> {
    let ws = crate::command::workload(world, name)?;
    find(ws, incident)?;
    if title.trim().is_empty() || title.chars().count() > 300 {
        return Err(err(ErrorCode::Invalid, "field `title`: expected 1 to 300 characters"));
    }
    if owner.chars().count() > 64 {
        return Err(err(ErrorCode::Invalid, "field `owner`: expected at most 64 characters"));
    }
    if ws.follow_ups.len() >= 10_000 {
        return Err(err(ErrorCode::Conflict, format!("{name} has 10000 follow-up items: close some first")));
    }
    Ok(EventKind::FollowUpCreated {
        id: format!("fu-{}", ws.follow_ups.len() + 1),
        incident: incident.into(),
        title: title.trim().into(),
        owner: owner.trim().into(),
        due,
    })
}

fn open_follow_up<'a>(ws: &'a WorkloadState, id: &str) -> Result<&'a FollowUp, CommandError> {
    let f = ws
        .follow_ups
        .get(id)
        .ok_or_else(|| err(ErrorCode::NotFound, format!("{} has no follow-up item {id:?}", ws.name)))?;
    if f.closed_at.is_some() {
        return Err(err(ErrorCode::Conflict, format!("follow-up {id} is closed")));
    }
    Ok(f)
}

pub fn assign_follow_up(world: &World, name: &str, id: &str, owner: &str) -> Result<EventKind, CommandError> {
    let ws = crate::command::workload(world, name)?;
    open_follow_up(ws, id)?;
    if owner.trim().is_empty() || owner.chars().count() > 64 {
        return Err(err(ErrorCode::Invalid, "field `owner`: expected 1 to 64 characters"));
    }
    Ok(EventKind::FollowUpAssigned { id: id.into(), owner: owner.trim().into() })
}

pub fn close_follow_up(world: &World, name: &str, id: &str) -> Result<EventKind, CommandError> {
    let ws = crate::command::workload(world, name)?;
    open_follow_up(ws, id)?;
    Ok(EventKind::FollowUpClosed { id: id.into() })
}

/// One update's delivery to one channel.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delivery {
    pub attempts: u32,
    pub delivered_at: Option<Timestamp>,
    pub last_attempt: Option<Timestamp>,
    pub last_error: String,
}

/// Tries of one delivery before it is given up (and stays visible as failed).
pub const MAX_ATTEMPTS: u32 = 10;
/// Updates older than this are not sent to a channel added later.
const FRESH_MS: u64 = 24 * 3_600_000;

/// A delivery to make now: the channel, the incident, the update's index, and the update.
#[derive(Debug, Clone)]
pub struct Due {
    pub channel: crate::spec::NotifySpec,
    pub incident: Incident,
    pub update: usize,
}

/// Whether a message with this delivery record is to be tried at `now`: at once the first
/// time, then 2 s, 4 s, 8 s... after each failure (at most 5 min), up to [`MAX_ATTEMPTS`] tries, never
/// again once delivered.
fn try_now(d: Option<&Delivery>, now: Timestamp) -> bool {
    match d {
        None => true,
        Some(d) if d.delivered_at.is_some() || d.attempts >= MAX_ATTEMPTS => false,
        Some(d) => {
            let wait = (1_000u64 << d.attempts.min(9)).min(300_000);
            d.last_attempt.is_none_or(|t| now.since(t) >= wait)
        }
    }
}

/// Deliveries due at `now`: every recent update not yet delivered to a channel (issue
/// trackers get none), with the retries of [`try_now`].
pub fn deliveries_due(ws: &WorkloadState, now: Timestamp) -> Vec<Due> {
    let mut out = Vec::new();
    for c in ws.spec.notify.iter().filter(|c| c.kind != NotifyKind::Tracker) {
        for i in ticking(ws) {
            for (n, _) in i.updates.iter().enumerate().filter(|(_, u)| now.since(u.at) < FRESH_MS) {
                if try_now(ws.deliveries.get(&(c.name.clone(), i.id.clone(), n)), now) {
                    out.push(Due { channel: c.clone(), incident: i.clone(), update: n });
                }
            }
        }
    }
    out
}

/// The outbox's key for follow-up `id`'s messages, beside the incidents' ids (which never hold
/// a `/`).
pub fn follow_up_subject(id: &str) -> String {
    format!("followup/{id}")
}

/// Reminders due at `now`: one for each open follow-up item past its due time, as soon as it
/// is, then every `[incident] remind_every`, when a stakeholder channel is there to carry it.
pub fn reminders_due(ws: &WorkloadState, now: Timestamp) -> Vec<EventKind> {
    let carried = ws.spec.notify.iter().any(|c| c.kind != NotifyKind::Tracker && c.audience == Audience::Stakeholders);
    if !carried {
        return Vec::new();
    }
    let every = ws.spec.incident.remind_every.as_ms();
    open_follow_ups(ws)
        .filter(|f| f.is_overdue(now))
        .filter(|f| f.reminders.last().is_none_or(|r| now.since(r.at) >= every))
        .map(|f| {
            let due = f.due.unwrap_or(now);
            let owner = if f.owner.is_empty() { "no owner".to_string() } else { format!("owner {}", f.owner) };
            EventKind::FollowUpReminded {
                id: f.id.clone(),
                text: format!(
                    "[follow-up overdue] {} {} (incident {}): {} — {owner}, due {due}, overdue by {}. \
                     Close it when done: `ringfence followup close {} {}`.",
                    ws.name,
                    f.id,
                    f.incident,
                    f.title,
                    crate::duration::Dur(now.since(due)),
                    ws.name,
                    f.id
                ),
            }
        })
        .collect()
}

/// A follow-up's message to make now: reminder `message` to a stakeholder channel, or the item
/// itself (message 0) to an issue tracker.
#[derive(Debug, Clone)]
pub struct FollowUpDue {
    pub channel: crate::spec::NotifySpec,
    pub follow_up: FollowUp,
    pub incident: Option<Incident>,
    pub message: usize,
}

/// Follow-up messages due at `now`: every open item not yet exported to each issue tracker,
/// and every recent reminder not yet delivered to each stakeholder channel, with the retries
/// of [`try_now`].
pub fn follow_up_sends_due(ws: &WorkloadState, now: Timestamp) -> Vec<FollowUpDue> {
    let mut out = Vec::new();
    for c in &ws.spec.notify {
        // A closed follow-up is exported and reminded of no more.
        for f in open_follow_ups(ws) {
            let subject = follow_up_subject(&f.id);
            let messages: Vec<usize> = match c.kind {
                NotifyKind::Tracker if f.closed_at.is_none() && !f.exported.contains_key(&c.name) => vec![0],
                NotifyKind::Tracker => Vec::new(),
                _ if c.audience != Audience::Stakeholders => Vec::new(),
                _ => f
                    .reminders
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| now.since(r.at) < FRESH_MS && f.closed_at.is_none())
                    .map(|(n, _)| n)
                    .collect(),
            };
            for n in messages {
                if try_now(ws.deliveries.get(&(c.name.clone(), subject.clone(), n)), now) {
                    out.push(FollowUpDue {
                        channel: c.clone(),
                        follow_up: f.clone(),
                        incident: ws.incidents.get(&f.incident).map(|i| (**i).clone()),
                        message: n,
                    });
                }
            }
        }
    }
    out
}
