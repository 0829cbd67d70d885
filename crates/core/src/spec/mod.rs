//! The workload spec: a TOML file that says how a workload runs, how it rolls out, how its
//! health is judged and how it is mitigated. Parsing reports every problem it can find with
//! file, line, column and field, and nothing is applied unless the whole file is valid.
//!
//! One module per section of the file (`runtime`, `rollout`, `health`, `mitigation`), the
//! rules across fields in `validate`, and the mapping of field paths to places in the text in
//! `locate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

mod drill;
mod governance;
mod health;
mod history;
mod incident;
mod locate;
mod mitigation;
mod rollout;
mod runtime;
mod validate;

pub use drill::*;
pub use governance::*;
pub use health::*;
pub use history::*;
pub use incident::*;
pub use locate::SpecError;
pub use mitigation::*;
pub use rollout::*;
pub use runtime::*;
pub use validate::{check_name, validate};

use locate::Locator;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub workload: WorkloadMeta,
    pub executor: ExecutorSpec,
    #[serde(default)]
    pub router: RouterSpec,
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub health: HealthSpec,
    #[serde(default)]
    pub mitigation: MitigationSpec,
    #[serde(default)]
    pub flags: FlagsSpec,
    /// The workload's data: how it is backed up before a release's migration.
    #[serde(default, skip_serializing_if = "DataSpec::is_default")]
    pub data: DataSpec,
    /// Where the workload sits on the way to production, and what a release needs to get here.
    #[serde(default, skip_serializing_if = "EnvironmentSpec::is_default")]
    pub environment: EnvironmentSpec,
    /// How approval gates are passed.
    #[serde(default, skip_serializing_if = "ApprovalSpec::is_default")]
    pub approval: ApprovalSpec,
    /// The accelerated path for hotfixes during an incident.
    #[serde(default, skip_serializing_if = "EmergencySpec::is_default")]
    pub emergency: EmergencySpec,
    /// When rollouts may start and advance: deployment windows and freezes.
    #[serde(default, skip_serializing_if = "crate::schedule::Schedule::is_default")]
    pub schedule: crate::schedule::Schedule,
    /// Who answers when a rollout fails, and when its incident is over.
    #[serde(default, skip_serializing_if = "IncidentSpec::is_default")]
    pub incident: IncidentSpec,
    /// A public status page for the workload's users.
    #[serde(default, skip_serializing_if = "StatusPageSpec::is_default")]
    pub status_page: StatusPageSpec,
    /// Channels incident updates are delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
    /// How mitigation drills run, and how recent one must be (docs/drills.md).
    #[serde(default, skip_serializing_if = "DrillSpec::is_default")]
    pub drill: DrillSpec,
    /// How much of the workload's past the server keeps in memory (the log keeps it all).
    #[serde(default, skip_serializing_if = "HistorySpec::is_default")]
    pub history: HistorySpec,
}

/// `[data]`: the workload's data and its way back.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// Runs before a rollout of a release that carries a migration, before any of its
    /// instances start: a dump, a snapshot or a point-in-time marker. It prints
    /// `backup=REFERENCE` (where the backup is, or how to restore it), which is recorded with
    /// the rollout. `{workload}`, `{version}`, `{migration}` and `{stable}` are substituted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<Vec<String>>,
    /// How long the backup hook may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

impl DataSpec {
    fn is_default(&self) -> bool {
        *self == DataSpec::default()
    }

    /// The backup hook's time budget: 10 minutes unless set.
    pub fn backup_timeout(&self) -> Dur {
        self.timeout.unwrap_or(Dur::secs(600))
    }
}

impl WorkloadSpec {
    /// The spec as it is kept: OFREP tokens given in the clear become their SHA-256 digests
    /// (the router compares digests), so the log and the API never hold them.
    pub fn sealed(mut self) -> WorkloadSpec {
        self.flags.tokens = self.flags.tokens.iter().map(|t| crate::secret::seal_token(t)).collect();
        self
    }

    /// Whether `self` and `other` make the server execute the same things: the executor's
    /// kind, command and environment, the hooks, and the smoke tests' commands. Code that runs
    /// as the server's user: changing it needs the `execute` permission. So does who may
    /// approve a bypass, or a deployer could name themselves.
    pub fn executes_as(&self, other: &WorkloadSpec) -> bool {
        let smoke_commands = |s: &WorkloadSpec| s.health.smoke.iter().map(|t| t.command.clone()).collect::<Vec<_>>();
        self.executor.kind == other.executor.kind
            && self.executor.command == other.executor.command
            && self.executor.hooks == other.executor.hooks
            && self.executor.env == other.executor.env
            && self.data.backup == other.data.backup
            && self.mitigation.bypass_approvers == other.mitigation.bypass_approvers
            && self.environment.checks == other.environment.checks
            && smoke_commands(self) == smoke_commands(other)
    }

    /// Whether `self` and `other` govern deployments alike: the previous environment, the
    /// required attestations and change size, approvals, the emergency path and the
    /// deployment windows. Weakening them is the admin's, not a pipeline's: changing them
    /// needs the `govern` permission.
    pub fn governs_as(&self, other: &WorkloadSpec) -> bool {
        self.environment == other.environment
            && self.approval == other.approval
            && self.emergency == other.emergency
            && self.schedule == other.schedule
            && self.status_page == other.status_page
            && self.rollout.phases.iter().map(|p| &p.gates).eq(other.rollout.phases.iter().map(|p| &p.gates))
            && (!(self.gated() || other.gated()) || self.exposure() == other.exposure())
    }

    /// Whether people approve its deployments (before the start or at a phase).
    fn gated(&self) -> bool {
        self.approval.before_start || self.rollout.phases.iter().any(|p| p.gates.contains(&Gate::Approval))
    }

    /// Who is exposed when, bakes aside: with approvals in the plan, exposing more users ahead
    /// of an approval is as much governance as the approval itself.
    fn exposure(&self) -> (ExposureModel, Vec<PhaseSpec>, Option<u32>) {
        let phases = self.rollout.phases.iter().map(|p| PhaseSpec { bake: Dur(0), ..p.clone() }).collect();
        let replicas = (self.rollout.model == ExposureModel::Rings).then_some(self.executor.replicas);
        (self.rollout.model, phases, replicas)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagsSpec {
    /// Tokens OFREP clients must present (`Authorization: Bearer T` or `X-API-Key: T`). Empty:
    /// the router's OFREP endpoints are open to anyone who can reach them.
    pub tokens: Vec<String>,
    /// Refuse a release whose flags have any problem, even one flagd loads (docs/flags.md).
    /// Off: such flags load as flagd loads them, and the problems are returned as warnings.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadMeta {
    /// Unique name: letters, digits, `-` and `_`, at most 63 characters.
    pub name: String,
    #[serde(default)]
    pub criticality: Criticality,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// Parses and validates a spec. `file` names the source in error messages.
pub fn parse(file: &str, text: &str) -> Result<WorkloadSpec, Vec<SpecError>> {
    let locator = Locator::new(text);
    let spec: WorkloadSpec = match toml::from_str(text) {
        Ok(spec) => spec,
        Err(err) => {
            let span = err.span();
            let field = span.as_ref().and_then(|s| locator.path_at(s.start)).unwrap_or_default();
            let (line, column) = span.map(|s| locator.line_col(s.start)).unwrap_or((0, 0));
            let message = err.message().trim().to_string();
            return Err(vec![SpecError { file: file.into(), line, column, field, message }]);
        }
    };
    let problems = validate(&spec);
    if problems.is_empty() {
        return Ok(spec);
    }
    Err(problems
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = locator.locate(&field);
            SpecError { file: file.into(), line, column, field, message }
        })
        .collect())
}

/// The line and column (1-based) of a field (`rollout.phases[1].bake`) in a spec's text, or
/// of its nearest parent present; (0, 0) when the text does not parse.
pub fn locate(text: &str, field: &str) -> (usize, usize) {
    Locator::new(text).locate(field)
}

/// A complete, commented example spec: the reference for every field.
pub const EXAMPLE: &str = include_str!("../../../../examples/checkout.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<SpecError> {
        parse("spec.toml", text).expect_err("spec should be refused")
    }

    #[test]
    fn example_is_valid() {
        let spec = parse("checkout.toml", EXAMPLE).unwrap();
        assert_eq!(spec.workload.name, "checkout");
        assert_eq!(spec.rollout.phases.last().unwrap().weight_bp(), 10_000);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let errs = errors("[workload]\nname = \"a\"\ncriticality = \n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 3, "{errs:?}");
        assert!(errs[0].column > 1);
    }

    #[test]
    fn type_error_names_field() {
        let text = EXAMPLE.replace("replicas = 2", "replicas = \"two\"");
        let errs = errors(&text);
        assert_eq!(errs[0].field, "executor.replicas", "{errs:?}");
        let line = text.lines().position(|l| l.starts_with("replicas = \"two\"")).unwrap() + 1;
        assert_eq!(errs[0].line, line);
        assert!(errs[0].message.contains("expected"), "{}", errs[0].message);
    }

    #[test]
    fn unknown_field_is_refused_with_its_place() {
        let text = EXAMPLE.replace("[health]\n", "[health]\nmax_eror_rate = 0.1\n");
        let errs = errors(&text);
        assert!(errs[0].message.contains("max_eror_rate"), "{errs:?}");
        assert_eq!(errs[0].field, "health.max_eror_rate");
    }

    /// Found by the spec's fuzz target: NaN and infinities passed checks written as `x <= 1`,
    /// and the log (JSON) stored them as null, which it could not read back.
    #[test]
    fn numbers_json_cannot_hold_are_refused_with_their_place() {
        for (value, shown) in [("nan", "NaN"), ("inf", "inf"), ("-inf", "-inf")] {
            let text = EXAMPLE.replace("target_error_ratio = 4.0", &format!("target_error_ratio = {value}"));
            let errs = errors(&text);
            let e = errs.iter().find(|e| e.field == "health.analysis.target_error_ratio").expect("the field is named");
            let line = text.lines().position(|l| l.starts_with("target_error_ratio")).unwrap() + 1;
            assert_eq!(e.line, line, "{errs:?}");
            assert!(e.message.contains(shown) || e.message.contains("ratio above 1"), "{}", e.message);
        }
        let text = EXAMPLE.replace("target_latency_ratio = 1.5", "target_latency_ratio = inf");
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.field == "health.analysis.target_latency_ratio"
                && e.message == "expected a finite number, found inf"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_place() {
        let text = EXAMPLE
            .replace("name = \"checkout\"", "name = \"check out\"")
            .replace("weight = 50", "weight = 5")
            .replace("max_error_rate = 0.05", "max_error_rate = 5.0");
        let errs = errors(&text);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"workload.name"), "{fields:?}");
        assert!(fields.contains(&"rollout.phases[2].weight"), "{fields:?}");
        assert!(fields.contains(&"health.max_error_rate"), "{fields:?}");
        for e in &errs {
            assert!(e.line > 0, "{e}");
        }
        let weight = errs.iter().find(|e| e.field == "rollout.phases[2].weight").unwrap();
        let line = text.lines().position(|l| l.trim() == "weight = 5").unwrap() + 1;
        assert_eq!(weight.line, line, "{weight}");
    }

    #[test]
    fn last_phase_must_be_full() {
        let text = EXAMPLE.replace("weight = 100", "weight = 90");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.message.contains("100%")), "{errs:?}");
    }

    #[test]
    fn command_needs_port() {
        let text = EXAMPLE.replace("\"127.0.0.1:{port}\"", "\"127.0.0.1:9000\"");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.field == "executor.command"), "{errs:?}");
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let text = EXAMPLE.replace("{version}", "{verison}");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.message.contains("{verison}")), "{errs:?}");
    }

    /// The example spec with the command executor: `hooks` is the body of `[executor.hooks]`.
    fn with_hooks(hooks: &str) -> String {
        let command = EXAMPLE.lines().find(|l| l.starts_with("command = ")).unwrap();
        EXAMPLE
            .replace(command, "")
            .replace("kind = \"process\"", "kind = \"command\"")
            .replace("[executor.readiness]", &format!("[executor.hooks]\n{hooks}\n\n[executor.readiness]"))
    }

    #[test]
    fn the_command_executor_takes_hooks_with_their_placeholders() {
        let spec = parse(
            "c.toml",
            &with_hooks(
                "deploy = [\"deploy.sh\", \"{version}\"]\nstop = [\"stop.sh\", \"{instance}\", \"{endpoint}\"]",
            ),
        )
        .expect("valid");
        let hooks = spec.executor.hooks.expect("hooks");
        assert_eq!((hooks.timeout.as_ms(), hooks.status), (60_000, None));
        // A change of hooks is a change of what runs as the server's user.
        let other = parse("c.toml", &with_hooks("deploy = [\"other.sh\"]\nstop = [\"stop.sh\"]")).unwrap();
        assert!(
            !parse(
                "c.toml",
                &with_hooks(
                    "deploy = [\"deploy.sh\", \"{version}\"]\nstop = [\"stop.sh\", \"{instance}\", \"{endpoint}\"]"
                )
            )
            .unwrap()
            .executes_as(&other)
        );
    }

    #[test]
    fn the_command_executor_refuses_what_it_cannot_run_with_the_field() {
        let cases = [
            (with_hooks("deploy = []\nstop = [\"s\"]"), "executor.hooks.deploy", "non-empty"),
            (with_hooks("deploy = [\"d\", \"{host}\"]\nstop = [\"s\"]"), "executor.hooks.deploy", "{host}"),
            (with_hooks("deploy = [\"d\"]\nstop = [\"s\"]\ntimeout = \"0s\""), "executor.hooks.timeout", "above zero"),
            (with_hooks("deploy = [\"d\"]"), "executor.hooks", "stop"),
            (EXAMPLE.replace("kind = \"process\"", "kind = \"command\""), "executor.hooks", "needs [executor.hooks]"),
            (
                with_hooks("deploy = [\"d\"]\nstop = [\"s\"]").replace("kind = \"command\"", "kind = \"process\""),
                "executor.hooks",
                "for `kind = \"command\"`",
            ),
        ];
        for (text, field, says) in cases {
            let errs = errors(&text);
            assert!(
                errs.iter().any(|e| e.field.starts_with(field) && e.message.contains(says) && e.line > 0),
                "{field} {says:?}: {errs:?}"
            );
        }
        // `{instance}` means nothing to the process executor.
        let errs = errors(&EXAMPLE.replace("{version}", "{instance}"));
        assert!(errs.iter().any(|e| e.message.contains("{instance}")), "{errs:?}");
    }

    #[test]
    fn a_phase_at_zero_percent_needs_the_users_who_see_it() {
        let staff = "[[rollout.phases]]\nname = \"staff\"\nweight = 0\nbake = \"1m\"\nsegment = { header = \"x-ring\", values = [\"staff\"], prefixes = [\"qa-\"] }\n\n[[rollout.phases]]\nname = \"canary\"";
        let text = EXAMPLE.replacen("[[rollout.phases]]\nname = \"canary\"", staff, 1);
        let spec = parse("c.toml", &text).expect("a staff ring first");
        let seg = spec.rollout.phases[0].segment.as_ref().expect("segment");
        assert_eq!((seg.header.as_deref(), seg.prefixes.len()), (Some("x-ring"), 1));
        let errs = errors(
            &text.replace("segment = { header = \"x-ring\", values = [\"staff\"], prefixes = [\"qa-\"] }\n", ""),
        );
        assert!(
            errs.iter().any(|e| e.field == "rollout.phases[0].weight" && e.message.contains("needs a `segment`")),
            "{errs:?}"
        );
        let errs = errors(&text.replace("values = [\"staff\"], ", ""));
        assert!(errs.iter().any(|e| e.field == "rollout.phases[0].segment.values" && e.line > 0), "{errs:?}");
        let errs = errors(&text.replace("[router]\n", "[router]\npin_header = \"x user\"\n"));
        assert!(errs.iter().any(|e| e.field == "router.pin_header"), "{errs:?}");
    }

    #[test]
    fn the_request_body_limit_is_a_size_with_its_unit() {
        assert_eq!(parse("c.toml", EXAMPLE).unwrap().router.max_request_body, None, "the router's default");
        let text = EXAMPLE.replacen("[router]\n", "[router]\nmax_request_body = \"2 MiB\"\n", 1);
        let spec = parse("c.toml", &text).expect("a size");
        assert_eq!(spec.router.max_request_body.map(|b| b.as_u64()), Some(2 * 1024 * 1024));
        for (value, says) in [("\"lots\"", "lots"), ("\"0 B\"", "at least 1 B")] {
            let errs = errors(&text.replace("\"2 MiB\"", value));
            assert!(
                errs.iter().any(|e| e.field == "router.max_request_body" && e.message.contains(says) && e.line > 0),
                "{value}: {errs:?}"
            );
        }
    }

    #[test]
    fn a_tier_workload_is_matched_by_host_and_path_prefix() {
        let text = EXAMPLE.replacen(
            "[router]\n",
            "[router]\nkind = \"tier\"\nhost = \"shop.example.com\"\npath_prefix = \"/cart\"\n",
            1,
        );
        let spec = parse("c.toml", &text).expect("a tier spec");
        assert_eq!(spec.router.kind, RouterKind::Tier);
        assert_eq!(
            (spec.router.host.as_deref(), spec.router.path_prefix.as_deref()),
            (Some("shop.example.com"), Some("/cart"))
        );
        for (from, to, field) in [
            ("\"shop.example.com\"", "\"Shop.example.com:80\"", "router.host"),
            ("\"/cart\"", "\"cart\"", "router.path_prefix"),
            ("\"/cart\"", "\"/cart/\"", "router.path_prefix"),
            ("\"/cart\"", "\"/cart?x=1\"", "router.path_prefix"),
        ] {
            let errs = errors(&text.replace(from, to));
            assert!(errs.iter().any(|e| e.field == field && e.line > 0), "{to}: {errs:?}");
        }
        // Host and prefix select among the tier's workloads only.
        let errs = errors(&text.replace("kind = \"tier\"\n", ""));
        assert!(errs.iter().any(|e| e.field == "router.host" && e.message.contains("tier")), "{errs:?}");
    }

    #[test]
    fn an_haproxy_data_plane_names_its_socket_backend_file_and_logs() {
        let haproxy = "[router.haproxy]\nsocket = \"/run/haproxy/admin.sock\"\nbackend = \"checkout\"\nconfig = \"/etc/haproxy/haproxy.cfg\"\nlog = \"/run/ringfence/checkout-haproxy.sock\"\n\n[router.breaker]";
        let text = EXAMPLE
            .replacen("[router]\n", "[router]\nkind = \"haproxy\"\n", 1)
            .replacen("[router.breaker]", haproxy, 1)
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:8080\"");
        let spec = parse("c.toml", &text).expect("an HAProxy spec");
        let h = spec.router.haproxy.as_ref().expect("[router.haproxy]");
        assert_eq!((h.backend.as_str(), h.server_options.as_str()), ("checkout", "check inter 1s"));
        let errs = errors(&text.replace("[router.haproxy]\n", "[router.other]\n"));
        assert!(!errs.is_empty());
        let errs = errors(&text.replace("backend = \"checkout\"", "backend = \"check out\""));
        assert!(errs.iter().any(|e| e.field == "router.haproxy.backend" && e.line > 0), "{errs:?}");
        let errs = errors(&text.replace("\"/run/haproxy/admin.sock\"", "\"admin.sock\""));
        assert!(errs.iter().any(|e| e.field == "router.haproxy.socket" && e.message.contains("absolute")), "{errs:?}");
        let errs = errors(&text.replace("[router]\n", "[router]\npin_header = \"x-pin\"\n"));
        assert!(errs.iter().any(|e| e.field == "router.pin_header" && e.message.contains("HAProxy")), "{errs:?}");
        let errs = errors(&text.replace("[router]\n", "[router]\nmax_request_body = \"1 MiB\"\n"));
        assert!(errs.iter().any(|e| e.field == "router.max_request_body" && e.message.contains("HAProxy")), "{errs:?}");
        let ring = text.replacen("weight = 10 ", "weight = 0\nsegment = { prefixes = [\"qa-\"] } #", 1);
        let errs = errors(&ring);
        assert!(
            errs.iter().any(|e| e.field.ends_with(".segment") && e.message.contains("built-in router")),
            "{errs:?}"
        );
        let errs = errors(&EXAMPLE.replacen("[router]\n", "[router]\nkind = \"haproxy\"\n", 1));
        assert!(
            errs.iter().any(|e| e.field == "router.haproxy" && e.message.contains("needs [router.haproxy]")),
            "{errs:?}"
        );
    }

    #[test]
    fn who_may_approve_a_bypass_is_changed_like_what_executes() {
        let base = parse("c.toml", EXAMPLE).unwrap();
        let named = EXAMPLE.replacen("[mitigation]\n", "[mitigation]\nbypass_approvers = [\"mallory\"]\n", 1);
        let named = parse("c.toml", &named).expect("approvers");
        assert!(!base.executes_as(&named), "a deployer must not name the approvers");
        assert!(named.executes_as(&named.clone()));
    }

    #[test]
    fn a_watch_window_is_for_a_canary() {
        let watched = EXAMPLE.replacen("[rollout]\n", "[rollout]\nwatch = \"10m\"\n", 1);
        let spec = parse("c.toml", &watched).expect("a watched canary");
        assert_eq!(spec.rollout.warm_for().as_ms(), 600_000);
        let rings = watched.replacen("[rollout]\n", "[rollout]\nmodel = \"rings\"\n", 1).replacen(
            "replicas = 2",
            "replicas = 4",
            1,
        );
        assert!(errors(&rings).iter().any(|e| e.field == "rollout.watch"));
        assert_eq!(parse("c.toml", EXAMPLE).unwrap().rollout.warm_for().as_ms(), 0, "off by default");
    }

    #[test]
    fn rings_need_instances_to_spare_and_every_ring_adds_some() {
        let rings = EXAMPLE.replacen("[rollout]\n", "[rollout]\nmodel = \"rings\"\n", 1);
        // 10% and 25% of 2 instances are both one instance.
        let errs = errors(&rings);
        assert!(
            errs.iter().any(|e| e.field == "rollout.phases[1].weight" && e.message.contains("each ring must add")),
            "{errs:?}"
        );
        let four = rings.replacen("replicas = 2", "replicas = 4", 1).replacen("weight = 10 ", "weight = 0 ", 1);
        let errs = errors(&four);
        assert!(errs.iter().any(|e| e.field == "rollout.phases[0].weight"), "{errs:?}");
        let one = rings.replacen("replicas = 2", "replicas = 1", 1);
        assert!(errors(&one).iter().any(|e| e.field == "executor.replicas"));
    }

    #[test]
    fn a_business_critical_workload_is_deployed_side_by_side_unless_it_says_why_not() {
        let critical = EXAMPLE.replacen("criticality = \"high\"", "criticality = \"critical\"", 1);
        parse("c.toml", &critical).expect("a canary is side by side");
        let big_bang = critical
            .replacen("weight = 10 ", "weight = 100 #", 1)
            .replace("weight = 25\n", "weight = 100\n")
            .replace("weight = 50\n", "weight = 100\n");
        let errs = errors(&big_bang);
        assert!(
            errs.iter().any(|e| e.field == "rollout.phases[0].weight" && e.message.contains("side by side")),
            "{errs:?}"
        );
        let why = big_bang.replacen(
            "[rollout]\n",
            "[rollout]\nnot_side_by_side = \"a single-tenant batch service; nobody waits on it\"\n",
            1,
        );
        let spec = parse("c.toml", &why).expect("an override with its reason");
        assert!(spec.rollout.not_side_by_side.is_some());
        let empty = big_bang.replacen("[rollout]\n", "[rollout]\nnot_side_by_side = \" \"\n", 1);
        assert!(errors(&empty).iter().any(|e| e.field == "rollout.not_side_by_side"));
    }

    #[test]
    fn blue_green_previews_at_zero_and_switches_at_a_hundred_only() {
        let text = EXAMPLE.replacen("[rollout]\n", "[rollout]\nmodel = \"blue_green\"\n", 1);
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.field == "rollout.phases[0].weight" && e.message.contains("0 (a preview) or 100")),
            "{errs:?}"
        );
        let fixed = text
            .replace("weight = 10 ", "weight = 0 ")
            .replace("weight = 25", "weight = 0")
            .replace("weight = 50", "weight = 0");
        let spec = parse("bg.toml", &fixed).expect("previews, then the switch");
        assert!(spec.rollout.phases[0].is_dark() && !spec.rollout.phases.last().unwrap().is_dark());
    }

    #[test]
    fn shadow_traffic_comes_before_any_user_is_exposed() {
        let shadow = |extra: &str| {
            EXAMPLE.replacen(
                "name = \"canary\"\nweight = 10 ",
                &format!("name = \"shadow\"\nweight = 0\nshadow = 20\n{extra}bake = \"1m\"\n\n[[rollout.phases]]\nname = \"canary\"\nweight = 10 "),
                1,
            )
        };
        let spec = parse("s.toml", &shadow("")).expect("a shadow phase first");
        let p = &spec.rollout.phases[0];
        assert_eq!((p.shadow_bp(), p.is_dark(), p.share_is_observed()), (2000, false, true));
        let errs = errors(&shadow("").replace("shadow = 20", "shadow = 120"));
        assert!(errs.iter().any(|e| e.field == "rollout.phases[0].shadow" && e.message.contains("120")), "{errs:?}");
        let errs = errors(&shadow("").replacen("weight = 0\nshadow", "weight = 5\nshadow", 1));
        assert!(
            errs.iter().any(|e| e.field == "rollout.phases[0].shadow" && e.message.contains("weight = 0")),
            "{errs:?}"
        );
    }

    #[test]
    fn display_reads_like_a_compiler() {
        let e = SpecError { file: "a.toml".into(), line: 3, column: 7, field: "x.y".into(), message: "bad".into() };
        assert_eq!(e.to_string(), "a.toml:3:7: field `x.y`: bad");
    }
}
