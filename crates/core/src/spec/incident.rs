//! `[incident]`: who answers when a rollout of this workload fails, and when an incident is
//! over.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentSpec {
    /// Who leads the response (a person or a rota), named in every incident.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub commander: String,
    /// Who speaks to stakeholders and users.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub communications: String,
    /// Who is kept informed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stakeholders: Vec<String>,
    /// How support escalates (a pager, a channel, a phone number).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub escalation: String,
    /// How long health must hold after a verified mitigation before the incident resolves
    /// by itself (no crash of the version traffic went back to, no alert firing).
    pub confirm_after: Dur,
    /// The longest time between two status updates of an open incident, by severity: sev1,
    /// sev2, sev3, sev4 (PagerDuty's practice: every 20 minutes at the most severe).
    pub update_every: [Dur; 4],
    /// How often an overdue follow-up item is brought up again on the stakeholder channels
    /// (first as soon as it is overdue).
    pub remind_every: Dur,
}

impl Default for IncidentSpec {
    fn default() -> Self {
        IncidentSpec {
            commander: String::new(),
            communications: String::new(),
            stakeholders: Vec::new(),
            escalation: String::new(),
            confirm_after: Dur::secs(600),
            update_every: [Dur::secs(20 * 60), Dur::secs(30 * 60), Dur::secs(60 * 60), Dur::secs(120 * 60)],
            remind_every: Dur::secs(24 * 3600),
        }
    }
}

impl IncidentSpec {
    pub fn is_default(&self) -> bool {
        *self == IncidentSpec::default()
    }
}

/// `[status_page]`: a public page about this workload's health for its users.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPageSpec {
    /// Serve `/status/WORKLOAD` (HTML) and its Atom feed to anyone, without a token. Off by
    /// default: turning it on publishes the workload's incidents (in plain words).
    pub public: bool,
    /// The name users know the service by; the workload's name when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Name release versions in what users read (off: no internals).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub show_versions: bool,
}

impl StatusPageSpec {
    pub fn is_default(&self) -> bool {
        *self == StatusPageSpec::default()
    }
}

/// `[[notify]]`: a channel incident updates are delivered to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// Unique within the workload: deliveries are recorded per channel name.
    pub name: String,
    pub kind: NotifyKind,
    /// Where to POST (`webhook`, `slack`, `tracker`), or the mail server (`email`): `smtp://HOST:PORT`
    /// (plain, for a relay on a trusted network) or `smtp+starttls://HOST:PORT`.
    pub url: String,
    /// `email`: the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `email`: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// `secret://NAME`: a webhook's Standard Webhooks signing secret (required for `webhook`),
    /// or a tracker's API token (sent as `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Whose version of each update it carries.
    #[serde(default)]
    pub audience: Audience,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// A signed JSON body: `{"type": "incident.updated", ...}`.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
    /// A mail over SMTP to `to`, from `from`.
    Email,
    /// An issue tracker's create-issue endpoint (GitHub's `POST /repos/OWNER/REPO/issues`
    /// shape: `title`, `body`, `labels`): every open follow-up item is exported to it once, and
    /// the tracker's link for it recorded. It gets no incident updates and no reminders.
    Tracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    #[default]
    Stakeholders,
    Users,
}

pub(super) fn validate_incident(spec: &IncidentSpec, bad: &mut dyn FnMut(&str, String)) {
    for (i, d) in spec.update_every.iter().enumerate() {
        if d.as_ms() < 60_000 {
            bad(&format!("incident.update_every[{i}]"), format!("{d}: expected at least 1m"));
        }
    }
    if spec.remind_every.as_ms() < 60_000 {
        bad("incident.remind_every", format!("{}: expected at least 1m", spec.remind_every));
    }
}

pub(super) fn validate_notify(channels: &[NotifySpec], bad: &mut dyn FnMut(&str, String)) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in channels.iter().enumerate() {
        let field = format!("notify[{i}]");
        if let Err(m) = check_name(&c.name) {
            bad(&format!("{field}.name"), format!("{:?}: {m}", c.name));
        } else if !seen.insert(c.name.clone()) {
            bad(&format!("{field}.name"), format!("{:?} is used twice: channel names are unique", c.name));
        }
        let smtp = c.url.starts_with("smtp://") || c.url.starts_with("smtp+starttls://");
        let http = c.url.starts_with("https://") || c.url.starts_with("http://");
        match c.kind {
            NotifyKind::Email if !smtp => bad(
                &format!("{field}.url"),
                format!("{:?}: expected smtp://HOST:PORT or smtp+starttls://HOST:PORT", c.url),
            ),
            NotifyKind::Email => {
                if c.from.as_deref().is_none_or(|f| !f.contains('@')) {
                    bad(&format!("{field}.from"), "an email channel needs a sender address".into());
                }
                if c.to.is_empty() || c.to.iter().any(|t| !t.contains('@')) || c.to.len() > 50 {
                    bad(&format!("{field}.to"), "expected 1 to 50 recipient addresses".into());
                }
            }
            _ if !http => bad(&format!("{field}.url"), format!("{:?}: expected an http:// or https:// URL", c.url)),
            _ => {}
        }
        if c.url.chars().count() > 2048 {
            bad(&format!("{field}.url"), "expected at most 2048 characters".into());
        }
        match (&c.kind, &c.secret) {
            (NotifyKind::Webhook, None) => {
                bad(&format!("{field}.secret"), "a webhook is signed: name its secret (`secret://NAME`)".into())
            }
            (_, Some(s)) if crate::secret::reference(s).is_none() || crate::secret::check_reference(s).is_err() => bad(
                &format!("{field}.secret"),
                "expected `secret://NAME`: the spec is kept in the event log, a secret never is".into(),
            ),
            _ => {}
        }
    }
}
