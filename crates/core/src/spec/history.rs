//! `[history]`: how much of a workload's past the server keeps in memory.

use serde::{Deserialize, Serialize};

/// The most rollouts `[history] rollouts` may keep: a workload's projection past this size
/// is what this section exists to avoid.
pub const MAX_KEPT_ROLLOUTS: u32 = 100_000;

/// `[history]`: the event log keeps every event for good; the server's projection keeps the
/// newest ended rollouts (with their incidents and deliveries) and lets older ones go, so its
/// memory follows this number, not the workload's age. What it let go is read back from the
/// log when asked for (docs/spec.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySpec {
    /// Ended rollouts kept in memory, the newest. The projection lets the oldest go in
    /// batches, once a tenth more have ended, so it holds this many to 10% more.
    pub rollouts: u32,
}

impl Default for HistorySpec {
    fn default() -> Self {
        HistorySpec { rollouts: 1000 }
    }
}

impl HistorySpec {
    pub(super) fn is_default(&self) -> bool {
        *self == HistorySpec::default()
    }
}

pub(super) fn validate(h: &HistorySpec, bad: &mut impl FnMut(&str, String)) {
    let least = crate::state::DETAILED_ROLLOUTS as u32;
    if !(least..=MAX_KEPT_ROLLOUTS).contains(&h.rollouts) {
        bad(
            "history.rollouts",
            format!(
                "expected {least} to {MAX_KEPT_ROLLOUTS} (ended rollouts kept in memory; the log keeps them all), found {}",
                h.rollouts
            ),
        );
    }
}
