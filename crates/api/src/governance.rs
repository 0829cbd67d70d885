//! Governance on the wire: attestations, approvals, queued deployments, owed gates, the line,
//! and the parity report.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// An emergency deployment's claim (`POST .../deploy` with `emergency`): the reason of the
/// deploy is its justification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyClaim {
    /// The incident it answers (`INC-1234`).
    pub incident: String,
    /// Its severity, one the spec's `emergency.severities` lists.
    pub severity: String,
}

/// A predeployment check's result about a release (`POST .../releases/{version}/attestations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// `code-review`, `security-scan`, `compliance`, `tests`, ... (1 to 63 letters, digits, `-`
    /// or `_`).
    #[schema(max_length = 63, pattern = r"^[A-Za-z0-9_-]+$")]
    pub kind: String,
    /// Who or what checked: the review's URL, the scanner's run (1 to 512 characters, not blank).
    #[schema(max_length = 512, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub source: String,
    /// What was checked: the artifact, its digest (`sha256:...`), or the release's commit (1 to
    /// 512 characters, not blank).
    #[schema(max_length = 512, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub subject: String,
    pub passed: bool,
    /// When the check ran; when it was recorded if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
    /// At most 4096 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(max_length = 4096)]
    pub detail: String,
}

/// The answer to an approval, a rejection or an attestation: what it changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GovernanceChange {
    /// One line per event it recorded.
    pub recorded: Vec<String>,
    /// The rollout it started or stopped, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
}

/// One approval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub by: String,
    pub at: Timestamp,
    pub comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<usize>,
}

/// A deployment waiting to start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueuedDeploy {
    pub version: String,
    pub requested_by: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<Emergency>,
    pub approvals_needed: u32,
    pub approvals: Vec<Approval>,
    /// What it waited for when it was queued.
    pub waiting_for: Vec<String>,
}

/// An emergency deployment's incident, severity and justification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Emergency {
    pub incident: String,
    pub severity: String,
    pub justification: String,
}

/// A gate an emergency deployment skipped, owed out of band.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwedGate {
    pub version: String,
    pub rollout_id: String,
    pub gate: String,
    pub due: Timestamp,
    /// `passed`, `failed`, `overdue`; absent while owed and not yet due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The line stopped for every workload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineStop {
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
}

/// A workload's governance now (part of its status).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GovernanceStatus {
    /// The environment's name and the workload a release must complete in first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<LineStop>,
    /// Why rollouts may not start or advance now (a closed window, a freeze), if they may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    /// When the next deployment window opens, while it is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_open: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<QueuedDeploy>,
    /// Approvals of the rollout in progress' phases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// The emergency the rollout in progress (or the last) answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<Emergency>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<OwedGate>,
}

/// `GET .../parity`: how one environment's desired state differs from another's beyond the
/// version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Parity {
    pub workload: String,
    pub against: String,
    pub workload_version: Option<String>,
    pub against_version: Option<String>,
    pub differences: Vec<Difference>,
}

/// One difference: in the spec, the stable release's configuration, or its flags.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Difference {
    /// `spec`, `config` or `flags`.
    pub area: String,
    pub key: String,
    /// The value in the workload asked about; absent where the key is absent.
    #[schema(value_type = Option<Object>)]
    pub workload: Option<serde_json::Value>,
    /// The value in the other environment.
    #[schema(value_type = Option<Object>)]
    pub against: Option<serde_json::Value>,
}

/// `POST /v1/line/stop` and `/v1/line/restart`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineChange {
    /// The rollouts it paused or resumed, as `workload/rollout`.
    pub rollouts: Vec<String>,
}

/// `POST /v1/hooks/{name}/attestations`: a signed attestation about one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationHook {
    /// The workload it is about: the same as in the path (signed, so an attestation cannot be
    /// replayed to another workload that shares the secret).
    pub workload: String,
    pub version: String,
    #[serde(flatten)]
    pub attestation: Attestation,
}
