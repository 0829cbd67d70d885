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
    /// Who may approve a bypass (token names): when a release whose new code paths are behind
    /// flags (`guarded_by`) turns unhealthy, turning those flags off may keep it. Empty: a
    /// bypass is never offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass_approvers: Vec<String>,
    /// How long an offered bypass waits for an approver, exposure frozen; then all traffic
    /// returns to the stable version.
    #[serde(default = "default_bypass_wait", skip_serializing_if = "is_default_bypass_wait")]
    pub bypass_wait: Dur,
    /// How long a release may run with its guard flags turned off by a bypass before that
    /// escalates (someone must fix the feature or restore the flags).
    #[serde(default = "default_max_degraded", skip_serializing_if = "is_default_max_degraded")]
    pub max_degraded: Dur,
}

fn default_bypass_wait() -> Dur {
    Dur::secs(120)
}

fn is_default_bypass_wait(d: &Dur) -> bool {
    *d == default_bypass_wait()
}

fn default_max_degraded() -> Dur {
    Dur::secs(3600)
}

fn is_default_max_degraded(d: &Dur) -> bool {
    *d == default_max_degraded()
}

impl Default for MitigationSpec {
    fn default() -> Self {
        MitigationSpec {
            auto_fallback: true,
            fallback_after_max_hold: false,
            trusted: Vec::new(),
            bypass_approvers: Vec::new(),
            bypass_wait: default_bypass_wait(),
            max_degraded: default_max_degraded(),
        }
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
