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
