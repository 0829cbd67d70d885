//! Drills, game days and the failure-mode analysis (`lint`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// `POST .../drills`: start a drill.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDrill {
    /// `error-rate`, `error-rate=0.3`, `latency`, `latency=300ms`, `crash`, `hang`,
    /// `signal-outage`.
    #[schema(max_length = 64)]
    pub fault: String,
    /// Percent of users on the drill release; capped by the spec's `[drill] max_weight`
    /// (its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Run outside the workload's deployment windows.
    #[serde(default)]
    pub outside_window: bool,
    /// Why (recorded with the drill), at most 2048 bytes.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub reason: String,
}

/// How a drill ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrillReport {
    /// `passed`, `failed` or `aborted`.
    pub outcome: String,
    pub ended_at: Timestamp,
    /// From the fault taking effect to the halt (the hold, for a signal outage).
    pub time_to_detect_ms: Option<u64>,
    /// From detection to the users back on the stable version.
    pub time_to_mitigate_ms: Option<u64>,
    /// The drill version's requests, and how many failed: the users the drill affected.
    pub requests: u64,
    pub failed_requests: u64,
    /// The mitigation the decision engine chose (`fallback`, `hold`), if one was.
    pub mitigation: Option<String>,
    /// What went wrong; empty when it passed.
    pub problems: Vec<String>,
}

/// One drill.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Drill {
    pub id: String,
    pub workload: String,
    /// The fault as `--fault` takes it, with its value.
    pub fault: String,
    /// The trigger it exercises (a signal of `[mitigation] trusted`; `unknown` for the hold on
    /// no evidence).
    pub trigger: String,
    /// The drill release: the stable release's content under a drill version.
    pub version: String,
    pub stable: String,
    pub rollout_id: String,
    pub started_at: Timestamp,
    pub started_by: String,
    pub reason: String,
    pub scheduled: bool,
    /// Percent of users exposed.
    pub weight: f64,
    pub injected_at: Option<Timestamp>,
    /// How the fault was carried out, in words.
    pub injection: String,
    pub detect_within_ms: u64,
    pub mitigate_within_ms: u64,
    /// `running`, `passed`, `failed` or `aborted`.
    pub status: String,
    pub report: Option<DrillReport>,
}

/// `POST .../drills`, `POST .../drills/abort`: the drill and the log's last sequence number.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrillStarted {
    pub drill: Drill,
    pub seq: u64,
}

/// One failure mode on a game day: is it drilled, and how did its drills go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaultCoverage {
    pub fault: String,
    pub trigger: String,
    /// Whether automatic mitigation acts on the trigger (`[mitigation] trusted`, `auto_fallback`;
    /// for `unknown`, `fallback_after_max_hold`).
    pub automatic: bool,
    /// `covered` (the last drill passed within `[drill] max_age`), `stale`, `failing` (the
    /// last one failed) or `not_drilled`.
    pub status: String,
    pub drills: u32,
    pub passed: u32,
    pub failed: u32,
    pub last: Option<Drill>,
    /// Median times of its passed drills.
    pub median_detect_ms: Option<u64>,
    pub median_mitigate_ms: Option<u64>,
    /// Times of its first and of its latest passed drill: the trend.
    pub first_detect_ms: Option<u64>,
    pub latest_detect_ms: Option<u64>,
    pub first_mitigate_ms: Option<u64>,
    pub latest_mitigate_ms: Option<u64>,
}

/// `GET .../gameday`: every failure mode, its drills and their trend.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GameDay {
    pub workload: String,
    pub coverage: Vec<FaultCoverage>,
    /// Every ended drill, oldest first: the trend of times to detect and to mitigate.
    pub drills: Vec<Drill>,
}

/// One finding of the failure-mode analysis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LintFinding {
    pub rule: String,
    /// `error`, `warning` or `note`.
    pub severity: String,
    /// The spec field it is about; empty when it is about the workload's history.
    pub field: String,
    pub message: String,
    pub fix: String,
    /// The recommendation it serves.
    pub seed: String,
}

/// `GET .../lint`: the failure-mode analysis of a workload's spec, plan and history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LintReport {
    pub workload: String,
    /// The traffic the bakes were checked at (requests per second), when measured or given.
    pub rps: Option<f64>,
    pub findings: Vec<LintFinding>,
    pub errors: u32,
    pub warnings: u32,
    pub notes: u32,
}
