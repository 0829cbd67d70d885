//! `[mitigation]`: what happens when a rollout goes wrong.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MitigationSpec {
    /// On an unhealthy verdict, send all traffic back to the stable version and stop the new
    /// one. When false the rollout halts with exposure frozen and waits for a person.
    pub auto_fallback: bool,
    /// A phase held on an unknown verdict (no data, a blind signal, no evidence either way)
    /// for `rollout.max_hold` falls back instead of waiting for a person. Off by default:
    /// unknown is not unhealthy, but a release that cannot show it is good in that long
    /// should not keep serving users where nobody watches.
    #[serde(default)]
    pub fallback_after_max_hold: bool,
}

impl Default for MitigationSpec {
    fn default() -> Self {
        MitigationSpec { auto_fallback: true, fallback_after_max_hold: false }
    }
}
