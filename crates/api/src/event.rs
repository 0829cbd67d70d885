//! Events as the API sends them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// One entry of the event log. The envelope (sequence, time, actor, reason, workload, type) is
/// the same for every event; the other fields are the event's payload, which depends on its
/// `type` and is the log's own record, versioned with the store's schema. A client should
/// ignore types it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    pub at: Timestamp,
    /// Who caused it: a token's name for commands, `controller` for automation.
    pub actor: String,
    /// Why, in words.
    pub reason: String,
    /// The workload it concerns; empty for the server's own (tokens).
    pub workload: String,
    /// `rollout_started`, `phase_passed`, `rollout_halted`, `replica_started`... (docs/api.md).
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload.
    #[serde(flatten)]
    #[schema(additional_properties)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// The rollout the event belongs to, if any.
    pub fn rollout_id(&self) -> Option<&str> {
        self.data.get("rollout_id").and_then(|v| v.as_str())
    }
}
