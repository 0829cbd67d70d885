//! `[environment]`, `[approval]` and `[emergency]`: who and what a release must get past
//! before it reaches this workload's users. Deployment windows are `[schedule]`
//! (`crate::schedule`).

use super::*;

/// `[environment]`: where this workload sits on the way to production.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentSpec {
    /// The environment's name (`staging`, `production`), for messages and the parity report.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The workload a release must have completed a rollout in before it may start here (the
    /// previous environment: `checkout-staging` before `checkout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Attestations every release needs before it is deployed here (`code-review`,
    /// `security-scan`, `compliance`, `tests`): each passed, about the release's artifact.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// The largest change (lines added and removed, from the release's metadata) deployed
    /// without `over_size` applying. Small, frequent changes are easier to judge and undo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_change_lines: Option<u64>,
    /// What a larger change does: `warn` (the deploy answers with a warning) or `approve` (it
    /// needs one more approval before it starts).
    #[serde(skip_serializing_if = "OverSize::is_default")]
    pub over_size: OverSize,
    /// Predeployment checks ringfence runs itself: a command or a webhook per check, its
    /// result recorded as an attestation of the check's name. A deployment waits for them;
    /// an emergency deployment skips them and they run right after it, out of band.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// The secret (`secret://NAME`) incoming attestations are signed with (Standard Webhooks):
    /// `POST /v1/hooks/WORKLOAD/attestations` needs no token, only this signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// `[[environment.checks]]`: one predeployment check ringfence runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// The attestation kind it records (`tests`, `security-scan`).
    pub name: String,
    /// A program and its arguments: exit 0 passes. It gets RINGFENCE_WORKLOAD,
    /// RINGFENCE_VERSION, RINGFENCE_ARTIFACT, RINGFENCE_COMMIT and RINGFENCE_CHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A URL that gets a signed JSON POST about the release and answers 2xx with
    /// `{"passed": true|false, "detail": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The webhook's signing secret, `secret://NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long it may take; longer fails it.
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
}

fn default_check_timeout() -> Dur {
    Dur::secs(300)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverSize {
    #[default]
    Warn,
    Approve,
}

impl OverSize {
    fn is_default(&self) -> bool {
        *self == OverSize::Warn
    }
}

impl EnvironmentSpec {
    pub fn is_default(&self) -> bool {
        *self == EnvironmentSpec::default()
    }
}

/// `[approval]`: how many people with the approver role pass an approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSpec {
    /// Approvals a gate needs, each from a different person holding the approver role on
    /// this workload, none of them the release's author or the deployment's starter.
    pub required: u32,
    /// A rollout waits for `required` approvals before it exposes anyone (stakeholders
    /// approve the go-forward plan), besides the phases whose gates name `approval`.
    pub before_start: bool,
    /// How long an approval counts. An approval also stops counting when a deployment window
    /// closes before it was acted on: the phase asks again.
    pub expires: Dur,
}

impl Default for ApprovalSpec {
    fn default() -> Self {
        ApprovalSpec { required: 1, before_start: false, expires: Dur::secs(24 * 3600) }
    }
}

impl ApprovalSpec {
    pub fn is_default(&self) -> bool {
        *self == ApprovalSpec::default()
    }
}

/// `[emergency]`: the accelerated path for a hotfix while an incident is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmergencySpec {
    /// Severities an emergency deployment may name (`sev1`, `sev2`). Empty: no emergency
    /// deployment is accepted for this workload.
    pub severities: Vec<String>,
    /// Each phase's bake time is multiplied by this (0 < factor <= 1).
    pub bake_factor: f64,
    /// How long an emergency approval holds: a deployment not started by then is void.
    pub expires: Dur,
    /// How soon the gates an emergency deployment skipped must pass out of band (missing
    /// attestations, the previous environment, the approvals of phases); overdue ones alert.
    pub out_of_band_within: Dur,
}

impl Default for EmergencySpec {
    fn default() -> Self {
        EmergencySpec {
            severities: Vec::new(),
            bake_factor: 0.25,
            expires: Dur::secs(2 * 3600),
            out_of_band_within: Dur::secs(24 * 3600),
        }
    }
}

impl EmergencySpec {
    pub fn is_default(&self) -> bool {
        *self == EmergencySpec::default()
    }
}

/// The rules of these sections a type cannot express.
pub(super) fn validate(spec: &WorkloadSpec, bad: &mut dyn FnMut(&str, String)) {
    let env = &spec.environment;
    if let Some(after) = &env.after {
        if let Err(m) = check_name(after) {
            bad("environment.after", format!("{after:?}: {m}"));
        } else if *after == spec.workload.name {
            bad("environment.after", format!("{after:?} is this workload: name the previous environment's workload"));
        }
    }
    if env.name.len() > 63 {
        bad("environment.name", "expected at most 63 characters".into());
    }
    for (i, r) in env.requires.iter().enumerate() {
        if let Err(m) = check_name(r) {
            bad(&format!("environment.requires[{i}]"), format!("{r:?}: {m}"));
        }
    }
    for (i, c) in env.checks.iter().enumerate() {
        let field = format!("environment.checks[{i}]");
        if let Err(m) = check_name(&c.name) {
            bad(&format!("{field}.name"), format!("{:?}: {m}", c.name));
        }
        match (&c.command, &c.webhook) {
            (Some(cmd), None) if cmd.is_empty() || cmd[0].trim().is_empty() => {
                bad(&format!("{field}.command"), "expected a non-empty list: the program, then its arguments".into());
            }
            (None, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                bad(&format!("{field}.webhook"), format!("{url:?}: expected an http:// or https:// URL"));
            }
            (None, Some(_)) if c.secret.is_none() => {
                bad(&format!("{field}.secret"), "a webhook check is signed: name its secret (`secret://NAME`)".into());
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => bad(&field, "expected exactly one of `command` and `webhook`".into()),
        }
        if let Some(secret) = &c.secret
            && (crate::secret::reference(secret).is_none() || crate::secret::check_reference(secret).is_err())
        {
            bad(
                &format!("{field}.secret"),
                "expected `secret://NAME`: the spec is kept in the event log, a secret never is".into(),
            );
        }
        if c.timeout.as_ms() == 0 {
            bad(&format!("{field}.timeout"), "expected a timeout above zero".into());
        }
    }
    if let Some(secret) = &env.webhook_secret
        && (crate::secret::reference(secret).is_none() || crate::secret::check_reference(secret).is_err())
    {
        bad(
            "environment.webhook_secret",
            "expected `secret://NAME`: the spec is kept in the event log, a secret never is".into(),
        );
    }
    if env.max_change_lines == Some(0) {
        bad("environment.max_change_lines", "expected a number above 0 (leave it out for no bound)".into());
    }
    if spec.approval.required == 0 {
        bad("approval.required", "expected at least 1: an approval gate that needs nobody is no gate".into());
    }
    if spec.approval.required > 10 {
        bad("approval.required", format!("{} approvals: expected at most 10", spec.approval.required));
    }
    if spec.approval.expires.as_ms() < 60_000 {
        bad("approval.expires", format!("{}: expected at least 1m", spec.approval.expires));
    }
    let em = &spec.emergency;
    if !(em.bake_factor > 0.0 && em.bake_factor <= 1.0) {
        bad("emergency.bake_factor", format!("{}: expected a factor above 0 and at most 1", em.bake_factor));
    }
    for (i, s) in em.severities.iter().enumerate() {
        if let Err(m) = check_name(s) {
            bad(&format!("emergency.severities[{i}]"), format!("{s:?}: {m}"));
        }
    }
    if let Err(problems) = spec.schedule.validate() {
        for (field, m) in problems {
            bad(field.as_str(), m);
        }
    }
}
