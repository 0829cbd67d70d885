//! Incidents, postmortems and DORA metrics on the wire.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// One state change of an incident.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentTransition {
    /// `investigating`, `identified`, `monitoring`, `resolved`.
    pub state: String,
    pub at: Timestamp,
    pub by: String,
    pub note: String,
}

/// A status update, for each audience.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentUpdate {
    pub at: Timestamp,
    pub state: String,
    /// For stakeholders: what is known, the evidence, what is done, the next update.
    pub stakeholders: String,
    /// For users: plain words, no internals.
    pub users: String,
    /// When the next update comes; none once resolved.
    pub next_at: Option<Timestamp>,
}

/// The incident a failed rollout opened (its id is the rollout's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: String,
    pub workload: String,
    pub rollout_id: String,
    pub release: String,
    pub stable: Option<String>,
    /// `sev1` (most severe) to `sev4`.
    pub severity: String,
    /// `investigating`, `identified`, `monitoring`, `resolved`.
    pub state: String,
    pub summary: String,
    pub detected_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub mitigated_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub transitions: Vec<IncidentTransition>,
    /// The status updates sent, oldest first.
    pub updates: Vec<IncidentUpdate>,
    /// The roles `[incident]` names.
    pub commander: String,
    pub communications: String,
    pub stakeholders: Vec<String>,
    pub escalation: String,
}

/// A follow-up item of an incident's postmortem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FollowUp {
    pub id: String,
    pub incident: String,
    pub title: String,
    pub owner: String,
    pub due: Option<Timestamp>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub closed_at: Option<Timestamp>,
    /// Open past its due time.
    pub overdue: bool,
    /// Reminders sent to the stakeholders while it was overdue.
    #[serde(default)]
    pub reminders: u32,
    /// Issue trackers it was exported to: channel name to the tracker's link or id for it.
    #[serde(default)]
    pub exported: std::collections::BTreeMap<String, String>,
}

/// `POST .../followups`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFollowUp {
    /// The incident (its rollout's id) whose postmortem calls for it.
    pub incident: String,
    /// 1 to 300 characters, not blank.
    #[schema(max_length = 300, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub title: String,
    /// At most 64 characters; none when empty.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub owner: String,
    /// Due this long from now (`7d`, `36h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub due_in: Option<String>,
}

/// `POST .../followups/{id}/assign`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignFollowUp {
    /// 1 to 64 characters, not blank.
    #[schema(max_length = 64, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub owner: String,
}

/// `GET .../postmortem`: the blameless draft of a failed rollout, in Markdown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Postmortem {
    pub rollout_id: String,
    pub markdown: String,
}

/// A DORA metric beside the 2024 report's clusters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoraMetric {
    pub value: Option<f64>,
    pub unit: String,
    /// `elite`, `high`, `medium` or `low`, where the clusters are ordered for this metric.
    pub band: Option<String>,
    pub reference: String,
}

/// One deployment as the metrics count it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoraDeployment {
    pub rollout_id: String,
    pub version: String,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub outcome: String,
    pub failed: bool,
    pub rework: bool,
    pub lead_time_ms: Option<u64>,
    /// Where the lead time starts: `commit` (the release's `metadata.committed_at`) or
    /// `registration` (when the pipeline did not say when the change was committed).
    pub lead_time_from: String,
    pub change_lines: Option<u64>,
}

/// `GET .../dora`: the five metrics over a window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dora {
    pub workload: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub deployment_frequency: DoraMetric,
    pub lead_time: DoraMetric,
    pub change_fail_rate: DoraMetric,
    pub recovery_time: DoraMetric,
    pub rework_rate: DoraMetric,
    pub deployments: Vec<DoraDeployment>,
}
