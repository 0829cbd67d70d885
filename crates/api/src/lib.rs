//! The wire types of ringfence's HTTP API: what clients send and what the server answers,
//! and the OpenAPI document generated from them ([`openapi::document`]).
//!
//! These types are the API's contract, apart from the core's model: the server converts its
//! core values into them explicitly (`crates/ringfence/src/server/wire.rs`), so the core can
//! change without changing what clients read. Nothing here does IO or knows the core.
//!
//! Events are the one exception by design: an [`Event`] is an envelope (sequence, time,
//! actor, reason, workload, type) whose payload is the event log's own record, versioned with
//! the store's schema (docs/api.md, "Events").

mod drill;
mod event;
mod governance;
mod incident;
pub mod openapi;
mod plan;
mod release;
mod rollout;
mod signals;
mod token;
mod workload;

pub use drill::{Drill, DrillReport, DrillStarted, FaultCoverage, GameDay, LintFinding, LintReport, StartDrill};
pub use event::Event;
pub use governance::{
    Approval, Attestation, AttestationHook, Difference, Emergency, EmergencyClaim, GovernanceChange, GovernanceStatus,
    LineChange, LineStop, OwedGate, Parity, QueuedDeploy,
};
pub use incident::{
    AssignFollowUp, Dora, DoraDeployment, DoraMetric, FollowUp, Incident, IncidentTransition, IncidentUpdate,
    NewFollowUp, Postmortem,
};
pub use plan::{PhaseAdvice, PhaseNeeds, PlanAdvice};
pub use release::{
    ChangeSize, Metadata, Migration, Release, ReleaseContent, ReleaseCreated, ReleaseHold, ReleaseRequest, Revocation,
};
pub use rollout::{
    Bypass, ComponentHealth, Considered, Decision, Deploy, Gate, Health, HealthModel, Level, MitigationAction, Phase,
    PhaseWindow, Reason, RequiredReason, Rollback, Rollout, RolloutKind, RolloutStatus, Segment, SignalResult,
    SmokeResult, Stage, Started, Traffic, Verdict, Why,
};
pub use signals::{
    AlertState, AlertmanagerAlert, AlertmanagerPayload, AlertsAccepted, FlagChange, FlagGroup, Flags, KilledFlag,
    Report, ReportAccepted, RoutesReport, RoutesReportAccepted,
};
pub use token::{CreateToken, CreatedToken, Token};
pub use workload::{
    Applied, ApplySpec, Criticality, Desired, FiringAlert, GroupFault, LastKnownGood, Leader, LiveHealth, Pin, Replica,
    RolloutSummary, RouteGroup, RouterInfo, TierRouter, WarmStack, WorkloadStatus, WorkloadSummary,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The largest request body the API reads (a spec file, a release with its flags); the CLI
/// checks it before sending, so a refusal is an input error, not a broken connection.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = i64)]
pub struct Timestamp(pub i64);

/// Every refusal: a stable code, a message in the user's terms, and details where there are
/// some (a spec's errors, each with file, line, column and field).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `invalid`, `invalid_spec`, `not_found`, `conflict`, `method_not_allowed`,
    /// `unauthenticated`, `forbidden`, `unsupported_media_type`, `too_large`, `store` (docs/api.md).
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
