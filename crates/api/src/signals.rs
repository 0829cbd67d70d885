//! What users and alerting systems report, and the flags users evaluate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// `POST .../reports`: a user reports a problem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The user's key, as sent in the router's sticky header or cookie (1 to 256 characters,
    /// not blank).
    #[schema(max_length = 256, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub user: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportAccepted {
    pub user: String,
    /// The rollout group that serves the user, when the router could say.
    pub group: Option<String>,
    pub version: Option<String>,
}

/// The answer to a router's report of its counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoutesReportAccepted {
    /// Workloads whose counters were kept.
    pub accepted: Vec<String>,
    /// Workloads not served by the router tier (unknown, deleted or of another router kind).
    pub ignored: Vec<String>,
    /// This server had not heard from the router (its instance) since it started: the router
    /// sends every workload's counters at once, not only those that changed.
    #[serde(default)]
    pub send_all: bool,
}

/// `POST /v1/alerts`: Alertmanager's webhook payload (version 4). Only the fields read here are
/// described; Alertmanager's others are taken and ignored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertmanagerPayload {
    pub alerts: Vec<AlertmanagerAlert>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertmanagerAlert {
    pub status: AlertState,
    /// `alertname`, and the labels a workload's `health.alerts.match` looks for (by default
    /// `workload`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `summary` or `description` is recorded with the alert.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Alertmanager's identity of the alert; the labels when empty.
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// `POST /v1/routes/report`, as a router of the tier sends it. Described here; the server reads
/// the router crate's own type, whose counters are the router's `/v1/stats` snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutesReport {
    /// The router's name (`--name`): 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub router: String,
    /// Per workload, the counters since the router started: its `/v1/stats` snapshot.
    pub workloads: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// The answer to Alertmanager's webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertsAccepted {
    /// `[workload, alertname, status]` for every alert that concerned a workload.
    #[schema(value_type = Vec<Vec<String>>)]
    pub matched: Vec<(String, String, String)>,
    /// Alerts that concerned no workload.
    pub ignored: usize,
}

/// The flags users evaluate now, per rollout group, with the kill switch applied.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Flags {
    pub groups: Vec<FlagGroup>,
    /// Flags turned off by the kill switch, by key.
    pub killed: BTreeMap<String, KilledFlag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagGroup {
    pub group: String,
    pub version: String,
    pub weight_bp: u32,
    /// The flag definitions (flagd's JSON format) this group's users evaluate.
    pub flags: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KilledFlag {
    pub actor: String,
    pub reason: String,
    pub at: Timestamp,
}

/// The answer to a kill or a restore.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagChange {
    pub flag: String,
    pub killed: bool,
    /// The event that recorded it; null when nothing changed.
    pub seq: Option<u64>,
}
