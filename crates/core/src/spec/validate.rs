//! The rules a type cannot express, each with the field it is about.

use super::*;

/// Checks the rules a type cannot express. Returns (field path, what was expected) pairs.
pub fn validate(spec: &WorkloadSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |field: &str, msg: String| out.push((field.to_string(), msg));
    governance::validate(spec, &mut bad);
    incident::validate_notify(&spec.notify, &mut bad);
    incident::validate_incident(&spec.incident, &mut bad);
    drill::validate(&spec.drill, &mut bad);
    history::validate(&spec.history, &mut bad);

    if let Err(msg) = check_name(&spec.workload.name) {
        bad("workload.name", msg);
    }
    let ex = &spec.executor;
    match (ex.kind, &ex.hooks) {
        (ExecutorKind::Process, hooks) => {
            if hooks.is_some() {
                bad("executor.hooks", "hooks are for `kind = \"command\"`; the process executor runs `command`".into());
            }
            if ex.command.is_empty() || ex.command[0].trim().is_empty() {
                bad("executor.command", "expected a non-empty list: the program, then its arguments".into());
            }
            if !ex.command.iter().any(|a| a.contains("{port}")) {
                bad(
                    "executor.command",
                    "expected `{port}` in some argument: each replica listens on a port ringfence picks".into(),
                );
            }
            for arg in &ex.command {
                if let Some(unknown) = unknown_placeholder(arg, false) {
                    bad(
                        "executor.command",
                        format!("unknown placeholder `{{{unknown}}}` in {arg:?}; known: {PLACEHOLDERS}"),
                    );
                }
            }
        }
        (ExecutorKind::Command, None) => {
            bad("executor.hooks", "`kind = \"command\"` needs [executor.hooks] with `deploy` and `stop`".into());
        }
        (ExecutorKind::Command, Some(hooks)) => {
            if !ex.command.is_empty() {
                bad("executor.command", "the command executor runs its hooks, not `command`: remove it".into());
            }
            for (name, hook) in hooks.all() {
                let field = format!("executor.hooks.{name}");
                if hook.is_empty() || hook[0].trim().is_empty() {
                    bad(&field, "expected a non-empty list: the program, then its arguments".into());
                }
                for arg in hook {
                    if let Some(unknown) = unknown_placeholder(arg, true) {
                        bad(
                            &field,
                            format!(
                                "unknown placeholder `{{{unknown}}}` in {arg:?}; known: {PLACEHOLDERS}, {{instance}}, {{endpoint}}"
                            ),
                        );
                    }
                }
            }
            if hooks.timeout.as_ms() == 0 {
                bad("executor.hooks.timeout", "expected a timeout above zero".into());
            }
            if hooks.status_every.as_ms() < 100 {
                bad("executor.hooks.status_every", "expected at least 100ms between two runs of `status`".into());
            }
        }
    }
    if ex.replicas == 0 || ex.replicas > 64 {
        bad("executor.replicas", format!("expected 1 to 64 replicas, found {}", ex.replicas));
    }
    if let Some(c) = ex.replica_capacity
        && !(c > 0.0 && c <= 10_000_000.0)
    {
        bad(
            "executor.replica_capacity",
            format!("expected requests per second above 0 and at most 10000000, found {c}"),
        );
    }
    for (key, value) in &ex.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            bad(&format!("executor.env.{key}"), format!("invalid environment variable name {key:?}"));
        }
        if let Err(m) = crate::secret::check_reference(value) {
            bad(&format!("executor.env.{key}"), m);
        }
    }
    for (i, t) in spec.flags.tokens.iter().enumerate() {
        if let Err(m) = crate::secret::check_reference(t) {
            bad(&format!("flags.tokens[{i}]"), m);
        }
    }
    if !ex.readiness.path.starts_with('/') {
        bad("executor.readiness.path", format!("expected a path starting with `/`, found {:?}", ex.readiness.path));
    }
    if ex.readiness.timeout.as_ms() == 0 {
        bad("executor.readiness.timeout", "expected a timeout above zero".into());
    }
    if ex.readiness.interval.as_ms() == 0 {
        bad("executor.readiness.interval", "expected an interval above zero".into());
    }

    let r = &spec.router;
    if r.listen.parse::<std::net::SocketAddr>().is_err() {
        bad("router.listen", format!("expected an address like \"127.0.0.1:8080\", found {:?}", r.listen));
    }
    if !is_token(&r.sticky_header) {
        bad("router.sticky_header", format!("expected an HTTP header name, found {:?}", r.sticky_header));
    }
    if !is_token(&r.sticky_cookie) {
        bad("router.sticky_cookie", format!("expected a cookie name, found {:?}", r.sticky_cookie));
    }
    if let Some(h) = &r.pin_header
        && (!is_token(h) || h.eq_ignore_ascii_case(&r.sticky_header))
    {
        bad("router.pin_header", format!("expected an HTTP header name other than the sticky header, found {h:?}"));
    }
    if let Some(limit) = r.max_request_body
        && limit.as_u64() == 0
    {
        bad("router.max_request_body", "expected a size of at least 1 B, such as \"100 MiB\", found 0".into());
    }
    match (r.kind, &r.haproxy) {
        (RouterKind::Builtin, Some(_)) => {
            bad("router.haproxy", "[router.haproxy] is for `kind = \"haproxy\"`".into());
        }
        (RouterKind::Haproxy, None) => {
            bad(
                "router.haproxy",
                "`kind = \"haproxy\"` needs [router.haproxy] with `socket`, `backend`, `config` and `log`".into(),
            );
        }
        (RouterKind::Haproxy, Some(h)) => {
            for (field, value) in [("socket", &h.socket), ("config", &h.config), ("log", &h.log)] {
                if !value.starts_with('/') {
                    bad(&format!("router.haproxy.{field}"), format!("expected an absolute path, found {value:?}"));
                }
            }
            if h.backend.is_empty() || !h.backend.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
                bad(
                    "router.haproxy.backend",
                    format!("expected an HAProxy proxy name (letters, digits, `-_.:`), found {:?}", h.backend),
                );
            }
            if h.server_options.contains('\n') || h.server_options.contains(';') {
                bad("router.haproxy.server_options", "expected one line of server keywords, without `;`".into());
            }
            if r.pin_header.is_some() {
                bad(
                    "router.pin_header",
                    "HAProxy routes by weight only: a pin header needs the built-in router".into(),
                );
            }
            if r.max_request_body.is_some() {
                bad(
                    "router.max_request_body",
                    "HAProxy keeps its own limits (`http-request deny if { req.body_size gt ... }`): this one is for the built-in router".into(),
                );
            }
            if r.listen.ends_with(":0") {
                bad("router.listen", format!("expected the HAProxy frontend's address, found {:?}", r.listen));
            }
        }
        (RouterKind::Builtin | RouterKind::Tier, None) => {}
        (RouterKind::Tier, Some(_)) => {
            bad("router.haproxy", "[router.haproxy] is for `kind = \"haproxy\"`".into());
        }
    }
    if r.kind != RouterKind::Tier {
        for (field, set) in [("router.host", r.host.is_some()), ("router.path_prefix", r.path_prefix.is_some())] {
            if set {
                bad(
                    field,
                    "only a workload served by the router tier (`kind = \"tier\"`) is matched by host or path".into(),
                );
            }
        }
    }
    if let Some(h) = &r.host
        && (h.is_empty()
            || h.len() > 253
            || !h.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        bad("router.host", format!("expected a host name in lower case, without a port, found {h:?}"));
    }
    if let Some(p) = &r.path_prefix
        && (!p.starts_with('/')
            || p.len() > 512
            || (p.len() > 1 && p.ends_with('/'))
            || !p.chars().all(|c| c.is_ascii_graphic() && c != '?' && c != '#'))
    {
        bad("router.path_prefix", format!("expected a path like \"/shop\" (no query, no trailing `/`), found {p:?}"));
    }
    let b = &r.breaker;
    if b.consecutive_failures == 0 {
        bad("router.breaker.consecutive_failures", "expected at least 1".into());
    }
    if b.window == 0 {
        bad("router.breaker.window", "expected at least 1".into());
    }
    if !(0.0..=1.0).contains(&b.min_success_rate) {
        bad(
            "router.breaker.min_success_rate",
            format!("expected a fraction from 0 to 1, found {}", b.min_success_rate),
        );
    }

    let phases = &spec.rollout.phases;
    if phases.is_empty() {
        bad("rollout.phases", "expected at least one phase; the last must have weight 100".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut prev = 0.0;
    for (i, p) in phases.iter().enumerate() {
        let at = |f: &str| format!("rollout.phases[{i}].{f}");
        if check_name(&p.name).is_err() {
            bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", p.name));
        } else if !names.insert(p.name.clone()) {
            bad(&at("name"), format!("phase name {:?} is used twice", p.name));
        }
        if spec.router.kind == RouterKind::Haproxy && (p.segment.is_some() || p.shadow.is_some()) {
            bad(
                &at(if p.segment.is_some() { "segment" } else { "shadow" }),
                "HAProxy routes by weight only: a ring of chosen users or shadow traffic needs the built-in router"
                    .into(),
            );
        }
        if let Some((field, message)) = p.segment.as_ref().and_then(|s| s.problem()) {
            bad(&at(&format!("segment.{field}")), message);
        }
        if let Some(s) = p.shadow {
            if !(s > 0.0 && s <= 100.0) {
                bad(&at("shadow"), format!("expected a percentage above 0 and at most 100, found {s}"));
            } else if p.weight != 0.0 || p.segment.is_some() {
                bad(
                    &at("shadow"),
                    "shadow traffic comes before any user is exposed: only with `weight = 0` and no `segment`".into(),
                );
            }
        }
        let blue_green = spec.rollout.model == ExposureModel::BlueGreen;
        if p.weight == 0.0 && p.segment.is_none() && p.shadow.is_none() && !blue_green {
            bad(
                &at("weight"),
                "expected a percentage above 0; a phase at 0% needs a `segment` (the users who see it), `shadow` (copies of requests) or `model = \"blue_green\"` (a preview)".into(),
            );
        } else if blue_green && p.weight != 0.0 && p.weight != 100.0 {
            bad(
                &at("weight"),
                format!(
                    "blue-green switches all traffic at once: expected 0 (a preview) or 100 (the switch), found {}",
                    p.weight
                ),
            );
        } else if !(p.weight >= 0.0 && p.weight <= 100.0) {
            bad(&at("weight"), format!("expected a percentage from 0 to 100, found {}", p.weight));
        } else if p.weight < prev {
            bad(&at("weight"), format!("expected weights that never decrease; {} follows {}", p.weight, prev));
        }
        prev = p.weight.max(prev);
        let mut seen = Vec::new();
        for g in &p.gates {
            if seen.contains(g) {
                bad(&at("gates"), format!("gate {g:?} is listed twice"));
            }
            seen.push(*g);
        }
    }
    let rings = spec.rollout.model == ExposureModel::Rings;
    if spec.rollout.watch.as_ms() > 0 && spec.rollout.model != ExposureModel::Canary {
        bad(
            "rollout.watch",
            "a watch window keeps a canary's old stack: blue-green keeps it for `keep_old_for`, and rings replace it in place".into(),
        );
    }
    let replicas = spec.executor.replicas;
    if rings {
        if replicas < 2 {
            bad(
                "executor.replicas",
                format!(
                    "rings update some instances while the others keep the stable version: expected at least 2, found {replicas}"
                ),
            );
        }
        let mut before = 0;
        for (i, p) in phases.iter().enumerate() {
            let at = |f: &str| format!("rollout.phases[{i}].{f}");
            if p.segment.is_some() || p.shadow.is_some() {
                bad(
                    &at(if p.segment.is_some() { "segment" } else { "shadow" }),
                    "rings update instances: a ring of chosen users or shadow traffic needs `model = \"canary\"`"
                        .into(),
                );
            }
            let size = super::ring_size(p.weight, replicas);
            if p.weight > 0.0 && size <= before {
                bad(
                    &at("weight"),
                    format!(
                        "{}% of {replicas} instances is {size} instance(s), no more than the ring before it updated: each ring must add instances",
                        p.weight
                    ),
                );
            }
            before = size;
        }
    }
    if spec.workload.criticality == Criticality::Critical {
        match &spec.rollout.not_side_by_side {
            Some(why) if why.trim().is_empty() => {
                bad(
                    "rollout.not_side_by_side",
                    "expected the reason this workload is not deployed side by side".into(),
                );
            }
            Some(_) => {}
            None => {
                let first = phases.first();
                let all_at_once = first
                    .is_some_and(|p| p.weight >= 100.0 || (rings && super::ring_size(p.weight, replicas) >= replicas));
                if all_at_once {
                    bad(
                        "rollout.phases[0].weight",
                        "a business-critical workload is deployed side by side: the first phase must leave the stable version serving (below 100%, or a blue-green preview at 0%), or `rollout.not_side_by_side` must say why not".into(),
                    );
                }
                if spec.rollout.model == ExposureModel::BlueGreen && spec.rollout.keep_old_for.as_ms() == 0 {
                    bad(
                        "rollout.keep_old_for",
                        "a business-critical workload keeps the old stack after a blue-green switch (the way back): expected a time above 0, or `rollout.not_side_by_side` saying why not".into(),
                    );
                }
            }
        }
    }
    if let Some(last) = phases.last()
        && last.weight != 100.0
    {
        bad(
            &format!("rollout.phases[{}].weight", phases.len() - 1),
            format!("expected the last phase to send 100% of traffic to the new version, found {}", last.weight),
        );
    }

    let h = &spec.health;
    if !(0.0..=1.0).contains(&h.max_error_rate) {
        bad(
            "health.max_error_rate",
            format!("expected a fraction from 0 to 1 (0.05 is 5%), found {}", h.max_error_rate),
        );
    }
    if h.min_requests == 0 {
        bad("health.min_requests", "expected at least 1: a verdict from no traffic is unknown, never healthy".into());
    }
    if !h.probe.path.starts_with('/') {
        bad("health.probe.path", format!("expected a path starting with `/`, found {:?}", h.probe.path));
    }
    if h.probe.failure_threshold == 0 {
        bad("health.probe.failure_threshold", "expected at least 1".into());
    }
    if h.probe.interval.as_ms() == 0 {
        bad("health.probe.interval", "expected an interval above zero".into());
    }
    let a = &h.analysis;
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        bad("health.analysis.alpha", format!("expected a probability between 0 and 1 (e.g. 0.005), found {}", a.alpha));
    }
    if !(0.0..1.0).contains(&a.power) {
        bad(
            "health.analysis.power",
            format!("expected a probability from 0 up to (not including) 1, found {}", a.power),
        );
    }
    if a.target_error_ratio <= 1.0 {
        bad("health.analysis.target_error_ratio", format!("expected a ratio above 1, found {}", a.target_error_ratio));
    }
    if a.target_latency_ratio <= 1.0 {
        bad(
            "health.analysis.target_latency_ratio",
            format!("expected a ratio above 1, found {}", a.target_latency_ratio),
        );
    }
    let m = &a.margin;
    if !(1.0..=100.0).contains(&m.error_ratio) {
        bad("health.analysis.margin.error_ratio", format!("expected a ratio from 1 to 100, found {}", m.error_ratio));
    }
    if !(0.0..=100.0).contains(&m.error_points) {
        bad(
            "health.analysis.margin.error_points",
            format!("expected percentage points from 0 to 100 (0.1 is 0.1%), found {}", m.error_points),
        );
    }
    if !(1.0..=100.0).contains(&m.latency_ratio) {
        bad(
            "health.analysis.margin.latency_ratio",
            format!("expected a ratio from 1 to 100, found {}", m.latency_ratio),
        );
    }
    if m.latency.as_ms() > 60_000 {
        bad("health.analysis.margin.latency", format!("expected at most 60s, found {}", m.latency));
    }
    if a.target_error_ratio < m.error_ratio || a.target_latency_ratio < m.latency_ratio {
        bad(
            "health.analysis.margin",
            format!(
                "expected a margin no larger than the target (errors x{} vs target x{}, latency x{} vs target x{}): a phase must be able to pass on a release within the margin",
                m.error_ratio, a.target_error_ratio, m.latency_ratio, a.target_latency_ratio
            ),
        );
    }
    if !(0.0..=1.0).contains(&h.min_usage_ratio) {
        bad("health.min_usage_ratio", format!("expected a fraction from 0 to 1, found {}", h.min_usage_ratio));
    }
    for (i, t) in h.smoke.iter().enumerate() {
        let at = |f: &str| format!("health.smoke[{i}].{f}");
        if check_name(&t.name).is_err() {
            bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", t.name));
        }
        match (&t.path, &t.command) {
            (Some(_), Some(_)) => bad(&at("command"), "expected either `path` or `command`, not both".into()),
            (None, None) => bad(&at("path"), "expected `path` (an HTTP check) or `command`".into()),
            (Some(p), None) if !p.starts_with('/') => {
                bad(&at("path"), format!("expected a path starting with `/`, found {p:?}"))
            }
            (None, Some(c)) if c.is_empty() => bad(&at("command"), "expected a non-empty command".into()),
            _ => {}
        }
    }
    if let Some(p) = &h.prometheus {
        if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
            bad("health.prometheus.url", format!("expected an http:// URL, found {:?}", p.url));
        }
        for (i, q) in p.queries.iter().enumerate() {
            let at = |f: &str| format!("health.prometheus.queries[{i}].{f}");
            if check_name(&q.name).is_err() {
                bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", q.name));
            }
            if q.query.trim().is_empty() {
                bad(&at("query"), "expected a PromQL expression".into());
            }
            if q.max.is_none() && q.min.is_none() && q.max_ratio_to_baseline.is_none() {
                bad(&at("max"), "expected a limit: `max`, `min` or `max_ratio_to_baseline`".into());
            }
        }
    }
    const KNOWN: [&str; 12] = [
        "error_rate",
        "latency_p99",
        "probe",
        "crash",
        "start",
        "breaker",
        "traffic",
        "smoke",
        "alert",
        "user_reports",
        "usage",
        "sample_ratio",
    ];
    for (i, c) in h.components.iter().enumerate() {
        if c.signals.is_empty() {
            bad(&format!("health.components[{i}].signals"), "expected at least one signal".into());
        }
        for sig in &c.signals {
            let prom = sig.strip_prefix("prometheus:");
            let ok = KNOWN.contains(&sig.as_str())
                || sig.starts_with("latency")
                || prom.is_some_and(|n| h.prometheus.as_ref().is_some_and(|p| p.queries.iter().any(|q| q.name == n)));
            if !ok {
                bad(
                    &format!("health.components[{i}].signals"),
                    format!("unknown signal {sig:?}; known: {}, prometheus:<query name>", KNOWN.join(", ")),
                );
            }
        }
    }
    // The log keeps a spec as JSON, which has no NaN or infinity: such a number would be stored
    // as null, and the log could not be read back. Every number, whatever its field.
    if let Ok(value) = toml::Value::try_from(spec) {
        let mut found = Vec::new();
        non_finite(&value, "", &mut found);
        for (field, x) in found {
            if !out.iter().any(|(f, _)| *f == field) {
                out.push((field, format!("expected a finite number, found {x}")));
            }
        }
    }
    out
}

/// The fields of `value` (under `path`) holding NaN or an infinity.
fn non_finite(value: &toml::Value, path: &str, found: &mut Vec<(String, f64)>) {
    match value {
        toml::Value::Float(x) if !x.is_finite() => found.push((path.to_string(), *x)),
        toml::Value::Table(t) => {
            for (k, v) in t {
                non_finite(v, &if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, found);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                non_finite(v, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("expected 1 to 63 characters, found {:?}", name));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("expected letters, digits, `-` or `_` only, found {name:?}"));
    }
    Ok(())
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const PLACEHOLDERS: &str = "{version}, {port}, {replica}, {workload}, {ringfence}";

/// The first placeholder of `arg` that is not substituted; `hook`: a command executor's hook,
/// which also knows `{instance}` and `{endpoint}`.
pub(super) fn unknown_placeholder(arg: &str, hook: bool) -> Option<String> {
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}')?;
        let name = &after[..end];
        let known = matches!(name, "version" | "port" | "replica" | "workload" | "ringfence")
            || (hook && matches!(name, "instance" | "endpoint" | "replicas"));
        if !known {
            return Some(name.to_string());
        }
        rest = &after[end + 1..];
    }
    None
}
