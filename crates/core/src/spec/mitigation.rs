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
    /// The signals trusted to trigger an automatic mitigation (`error_rate`, `crash`,
    /// `alert:HighLatency`, ...; a name ending in `*` is a prefix). Empty: every signal. A
    /// verdict made unhealthy only by signals not listed halts with exposure frozen and waits
    /// for a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted: Vec<String>,
}

impl Default for MitigationSpec {
    fn default() -> Self {
        MitigationSpec { auto_fallback: true, fallback_after_max_hold: false, trusted: Vec::new() }
    }
}

impl MitigationSpec {
    /// Whether a failing signal may trigger an automatic mitigation.
    pub fn trusts(&self, signal: &str) -> bool {
        self.trusted.is_empty()
            || self.trusted.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => signal.starts_with(prefix),
                None => t == signal,
            })
    }
}
