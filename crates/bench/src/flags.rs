//! `ringfence-bench flags`: how fast flags are evaluated.
//!
//! 1. In process: nanoseconds per evaluation of `ringfence-flags` and of Unleash's Rust engine
//!    `unleash-yggdrasil`, on comparable rules, in the same process and the same run, in
//!    interleaved batches so that drift (other builds on the machine, frequency changes) hits
//!    both alike. The bar: ours takes at most as long per evaluation as yggdrasil's on every
//!    rule.
//! 2. Over HTTP: OFREP evaluations per second answered by a real `ringfence router` process on
//!    loopback, single-flag and bulk, over a few keep-alive connections.
//!
//! The comparison is conservative for ringfence: our figure is a whole OpenFeature resolution
//! (value, variant, reason, metadata), yggdrasil's is its cheapest call, `is_enabled` (a bool).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use ringfence::http::HttpClient;
use ringfence_flags::{Context, FlagSet};
use serde_json::{Value, json};
use unleash_yggdrasil::{Context as UnleashContext, EngineState, UpdateMessage};

use crate::Output;
use crate::procs::Router;
use crate::stats::{Summary, summarize};

/// The yggdrasil release measured; kept equal to the pin in crates/bench/Cargo.toml.
const YGGDRASIL_VERSION: &str = "0.21.7";

/// Distinct evaluation contexts, cycled through so neither engine measures one cached answer.
const CONTEXTS: usize = 64;

#[derive(Args, Debug, Clone)]
pub struct FlagsArgs {
    /// Batches per engine and rule; the median and the minimum over batches are reported.
    #[arg(long, default_value_t = 21)]
    pub batches: u32,
    /// Evaluations per batch.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: u32,
    /// Seconds of load per OFREP endpoint (after a 0.5 s warm-up); 0 skips the HTTP part.
    #[arg(long, default_value_t = 3.0)]
    pub http_secs: f64,
    /// Concurrent keep-alive connections sending OFREP requests.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

impl FlagsArgs {
    pub fn validate(&self) -> Result<()> {
        if self.batches == 0 || self.iterations == 0 {
            bail!("--batches and --iterations must be at least 1");
        }
        if !(0.0..=60.0).contains(&self.http_secs) {
            bail!("--http-secs must be between 0 and 60, got {}", self.http_secs);
        }
        if !(1..=64).contains(&self.connections) {
            bail!("--connections must be between 1 and 64, got {}", self.connections);
        }
        Ok(())
    }
}

/// The flag set both parts use, in flagd's format. The first three flags have an Unleash twin
/// below; the rest make the bulk answer look like a real application's. It records the
/// `fractional` bucketing every new release records (v3: CBOR-encoded bucketing values), so
/// the splits are measured as users get them.
fn flagd_flags() -> Value {
    json!({
        "$ringfence": {"fractional": ringfence_flags::Bucketing::CURRENT.as_str()},
        "metadata": {"flagSetId": "bench"},
        "flags": {
            "static-on": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "split-50": {
                "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"fractional": [["on", 50], ["off", 50]]}
            },
            "email-10pct": {
                "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [
                    {"ends_with": [{"var": "email"}, "@example.com"]},
                    {"fractional": [["on", 10], ["off", 90]]},
                    null
                ]}
            },
            "banner-text": {"variants": {"a": "Welcome!", "b": "Hello again"}, "defaultVariant": "a",
                "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "b", null]}},
            "page-size": {"variants": {"small": 20, "large": 100}, "defaultVariant": "small",
                "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "large", null]}},
            "discount": {"variants": {"none": 0.0, "some": 0.15}, "defaultVariant": "none",
                "targeting": {"fractional": [["none", 80], ["some", 20]]}},
            "new-client": {"variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"sem_ver": [{"var": "appVersion"}, ">=", "2.0.0"]}, "on", "off"]}},
            "theme": {"variants": {"light": {"bg": "#fff"}, "dark": {"bg": "#000"}}, "defaultVariant": "light"},
            "old-feature": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "kill-switch": {"variants": {"on": true, "off": false}, "defaultVariant": "off"}
        }
    })
}

/// The Unleash twins of the first three flags: a plain enabled toggle, a 50% flexible rollout
/// sticky on the user id, and the same with an `email` ends-with constraint at 10%.
fn unleash_features() -> Value {
    let rollout = |name: &str, percent: u32, constraints: Value| {
        json!({
            "name": name, "type": "release", "enabled": true, "project": "default", "stale": false,
            "impressionData": false, "variants": [],
            "strategies": [{
                "name": "flexibleRollout",
                "constraints": constraints,
                "parameters": {"groupId": name, "rollout": percent.to_string(), "stickiness": "userId"},
                "variants": []
            }]
        })
    };
    json!({
        "version": 2,
        "features": [
            {"name": "static-on", "type": "release", "enabled": true, "project": "default", "stale": false,
             "impressionData": false, "variants": [],
             "strategies": [{"name": "default", "constraints": [], "parameters": {}}]},
            rollout("split-50", 50, json!([])),
            rollout("email-10pct", 10, json!([{
                "contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@example.com"],
                "inverted": false, "caseInsensitive": false
            }])),
        ]
    })
}

/// One comparable rule: the flag key in both engines and what it means.
struct Rule {
    key: &'static str,
    what: &'static str,
    ours: &'static str,
    theirs: &'static str,
}

const RULES: [Rule; 3] = [
    Rule {
        key: "static-on",
        what: "static flag (no rule)",
        ours: "defaultVariant on, no targeting",
        theirs: "enabled toggle, `default` strategy",
    },
    Rule {
        key: "split-50",
        what: "50/50 split on the user key",
        ours: "fractional [[on,50],[off,50]] on targetingKey",
        theirs: "flexibleRollout 50%, stickiness userId",
    },
    Rule {
        key: "email-10pct",
        what: "ends_with(email) then 10% of users",
        ours: "if ends_with(email,@example.com) fractional 10/90",
        theirs: "flexibleRollout 10% + STR_ENDS_WITH email constraint",
    },
];

struct Engines {
    ours: FlagSet,
    theirs: EngineState,
    ctx_ours: Vec<Context>,
    ctx_theirs: Vec<UnleashContext>,
}

impl Engines {
    fn new() -> Result<Engines> {
        let ours = FlagSet::parse_strict(&flagd_flags().to_string())
            .map_err(|e| anyhow!("the bench flag set does not load: {e:?}"))?;
        let theirs = EngineState::default();
        let features: UpdateMessage =
            serde_json::from_value(unleash_features()).context("the Unleash feature set does not parse")?;
        if let Some(warnings) = theirs.take_state(features) {
            bail!("yggdrasil warned about the bench toggles: {warnings:?}");
        }
        let mut ctx_ours = Vec::with_capacity(CONTEXTS);
        let mut ctx_theirs = Vec::with_capacity(CONTEXTS);
        for i in 0..CONTEXTS {
            let user = format!("user-{i}");
            // Three in four users have a matching email, so the constrained rule hashes too.
            let email = if i % 4 == 3 { format!("u{i}@other.org") } else { format!("u{i}@example.com") };
            ctx_ours.push(Context::new().with_targeting_key(user.clone()).with_attribute("email", email.clone()));
            ctx_theirs.push(UnleashContext {
                user_id: Some(user),
                properties: Some(HashMap::from([("email".to_string(), email)])),
                ..UnleashContext::default()
            });
        }
        Ok(Engines { ours, theirs, ctx_ours, ctx_theirs })
    }

    /// Both engines must answer the same flags, and split the users in about the same shares.
    fn check(&self) -> Result<Vec<(f64, f64)>> {
        let mut shares = Vec::new();
        for rule in &RULES {
            let users = 20_000;
            let (mut on_ours, mut on_theirs) = (0u32, 0u32);
            for i in 0..users {
                let user = format!("check-{i}");
                let email = if i % 4 == 3 { "x@other.org" } else { "x@example.com" };
                let c = Context::new().with_targeting_key(user.clone()).with_attribute("email", email);
                let r = self.ours.evaluate(rule.key, &c);
                if r.error.is_some() {
                    bail!("ringfence-flags failed on {}: {:?}", rule.key, r.error);
                }
                on_ours += u32::from(r.value == Some(&Value::Bool(true)));
                let u = UnleashContext {
                    user_id: Some(user),
                    properties: Some(HashMap::from([("email".to_string(), email.to_string())])),
                    ..UnleashContext::default()
                };
                on_theirs += u32::from(self.theirs.is_enabled(rule.key, &u, &None));
            }
            shares.push((f64::from(on_ours) / f64::from(users), f64::from(on_theirs) / f64::from(users)));
        }
        for ((a, b), rule) in shares.iter().zip(&RULES) {
            if (a - b).abs() > 0.03 {
                bail!("the engines disagree on {}: {:.1}% vs {:.1}% of users on", rule.key, a * 100.0, b * 100.0);
            }
        }
        Ok(shares)
    }

    /// Nanoseconds per evaluation over one batch.
    fn batch_ours(&self, key: &str, n: u32) -> f64 {
        let start = Instant::now();
        for i in 0..n as usize {
            let r = self.ours.evaluate(black_box(key), &self.ctx_ours[i % CONTEXTS]);
            black_box(&r);
        }
        start.elapsed().as_nanos() as f64 / f64::from(n)
    }

    fn batch_theirs(&self, key: &str, n: u32) -> f64 {
        let start = Instant::now();
        for i in 0..n as usize {
            let r = self.theirs.is_enabled(black_box(key), &self.ctx_theirs[i % CONTEXTS], &None);
            black_box(r);
        }
        start.elapsed().as_nanos() as f64 / f64::from(n)
    }
}

struct InProcess {
    rule: &'static Rule,
    ours: Summary,
    theirs: Summary,
    share_on: (f64, f64),
}

impl InProcess {
    fn ratio(&self) -> f64 {
        self.ours.median / self.theirs.median
    }

    fn passed(&self) -> bool {
        self.ours.median <= self.theirs.median
    }
}

fn in_process(args: &FlagsArgs) -> Result<Vec<InProcess>> {
    let engines = Engines::new()?;
    let shares = engines.check()?;
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); RULES.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); RULES.len()];
    // Warm-up, then batches interleaved across engines and rules; which engine goes first
    // alternates, so neither always runs right after the other has warmed the caches.
    for rule in &RULES {
        engines.batch_ours(rule.key, args.iterations / 10 + 1);
        engines.batch_theirs(rule.key, args.iterations / 10 + 1);
    }
    eprintln!(
        "bench: in process, {} batches x {} evaluations x {} rules x 2 engines",
        args.batches,
        args.iterations,
        RULES.len()
    );
    for b in 0..args.batches {
        for (i, rule) in RULES.iter().enumerate() {
            if b % 2 == 0 {
                ours[i].push(engines.batch_ours(rule.key, args.iterations));
                theirs[i].push(engines.batch_theirs(rule.key, args.iterations));
            } else {
                theirs[i].push(engines.batch_theirs(rule.key, args.iterations));
                ours[i].push(engines.batch_ours(rule.key, args.iterations));
            }
        }
    }
    RULES
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            Ok(InProcess {
                rule,
                ours: summarize(&ours[i]).ok_or_else(|| anyhow!("no batch measured"))?,
                theirs: summarize(&theirs[i]).ok_or_else(|| anyhow!("no batch measured"))?,
                share_on: shares[i],
            })
        })
        .collect()
}

struct HttpResult {
    endpoint: &'static str,
    requests: u64,
    evaluations_per_request: u64,
    errors: u64,
    secs: f64,
    latency_ms: Summary,
    p99_ms: f64,
}

impl HttpResult {
    fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    fn evaluations_per_sec(&self) -> f64 {
        self.requests_per_sec() * self.evaluations_per_request as f64
    }
}

async fn load(args: &FlagsArgs, url: String, endpoint: &'static str, per_request: u64) -> Result<HttpResult> {
    let http = Arc::new(HttpClient::new());
    let warmup = Duration::from_millis(500);
    let run = Duration::from_secs_f64(args.http_secs);
    let start = Instant::now();
    let (measure_from, stop_at) = (start + warmup, start + warmup + run);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut latencies, mut first_error) = (0u64, 0u64, Vec::new(), None);
            let mut i = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                i += 1;
                let body =
                    format!(r#"{{"context":{{"targetingKey":"user-{c}-{}","email":"u@example.com"}}}}"#, i % 512);
                let r =
                    http.request(hyper::Method::POST, &url, &[], Some(Bytes::from(body)), Duration::from_secs(5)).await;
                if sent < measure_from {
                    continue;
                }
                match r {
                    Ok(r) if r.status.is_success() => {
                        ok += 1;
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, errors, latencies, first_error)
        }));
    }
    let (mut requests, mut errors, mut latencies, mut first_error) = (0, 0, Vec::new(), None);
    for t in tasks {
        let (ok, err, lat, first) = t.await.context("load task")?;
        requests += ok;
        errors += err;
        latencies.extend(lat);
        first_error = first_error.or(first);
    }
    if let Some(e) = &first_error {
        eprintln!("bench: {errors} OFREP requests to {url} failed; the first: {e}");
    }
    let secs = run.as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let p99_ms =
        latencies.get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1))).copied();
    Ok(HttpResult {
        endpoint,
        requests,
        evaluations_per_request: per_request,
        errors,
        secs,
        latency_ms: summarize(&latencies).ok_or_else(|| {
            anyhow!("no OFREP request to {url} succeeded: {}", first_error.as_deref().unwrap_or("no request was sent"))
        })?,
        p99_ms: p99_ms.unwrap_or(f64::NAN),
    })
}

async fn over_http(args: &FlagsArgs, ringfence: &Path) -> Result<Vec<HttpResult>> {
    // One group, as a workload with a single stable release has. The upstream is never
    // contacted: OFREP is answered by the router itself.
    let table = json!({
        "generation": 1,
        "workload": "bench",
        "groups": [{"name": "stable", "version": "v1", "weight_bp": 10_000,
                    "upstreams": ["127.0.0.1:9"], "flags": flagd_flags()}]
    });
    let router = Router::start(ringfence, &table).await?;
    let base = format!("http://{}/ofrep/v1/evaluate/flags", router.listen);
    let flags = FlagSet::parse_strict(&flagd_flags().to_string()).map_err(|e| anyhow!("{e:?}"))?;
    eprintln!("bench: OFREP single-flag evaluations on {} ({} connections)", router.listen, args.connections);
    let single = load(args, format!("{base}/split-50"), "single flag (POST .../flags/split-50)", 1).await?;
    eprintln!("bench: OFREP bulk evaluations");
    let bulk = load(args, base, "bulk (POST .../flags, every flag)", flags.len() as u64).await?;
    Ok(vec![single, bulk])
}

pub struct Report {
    args: FlagsArgs,
    in_process: Vec<InProcess>,
    http: Vec<HttpResult>,
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.in_process.iter().all(InProcess::passed) && self.http.iter().all(|h| h.errors == 0)
    }

    fn table(&self) -> String {
        use std::fmt::Write as _;
        let a = &self.args;
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench flags: flag evaluation, in process and over OFREP");
        let _ = writeln!(
            o,
            "  engines  ringfence-flags {} vs unleash-yggdrasil {YGGDRASIL_VERSION}, same process, same run",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            o,
            "  method   {} batches x {} evaluations per engine and rule, over {CONTEXTS} contexts, engines interleaved;\n           ns/eval = batch time / evaluations; median and min over the batches",
            a.batches, a.iterations
        );
        let _ = writeln!(
            o,
            "  calls    ours: FlagSet::evaluate (value, variant, reason, metadata), fractional bucketing {}; theirs: EngineState::is_enabled (a bool)",
            ringfence_flags::Bucketing::CURRENT
        );
        let _ = writeln!(o, "  bar      ringfence-flags median ns/eval <= yggdrasil's on every rule");
        let _ = writeln!(o);
        let _ =
            writeln!(o, " {:<36} {:>17} {:>17} {:>7}     bar  result", "rule", "ringfence-flags", "yggdrasil", "ratio");
        let _ = writeln!(o, " {:<36} {:>8} {:>8} {:>8} {:>8}", "", "median", "min", "median", "min");
        for r in &self.in_process {
            let _ = writeln!(
                o,
                " {:<36} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.2}    <= 1  {}",
                r.rule.what,
                r.ours.median,
                r.ours.min,
                r.theirs.median,
                r.theirs.min,
                r.ratio(),
                if r.passed() { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(o, "\n rules (share of users on: ringfence / yggdrasil, over 20 000 users)");
        for r in &self.in_process {
            let _ = writeln!(o, "   {:<12} ours:   {}", r.rule.key, r.rule.ours);
            let _ = writeln!(
                o,
                "   {:<12} theirs: {}   ({:.1}% / {:.1}%)",
                "",
                r.rule.theirs,
                r.share_on.0 * 100.0,
                r.share_on.1 * 100.0
            );
        }
        if self.http.is_empty() {
            let _ = writeln!(o, "\nOFREP over HTTP: skipped (--http-secs 0)");
            return o;
        }
        let _ = writeln!(
            o,
            "\nOFREP over HTTP on loopback: a `ringfence router` process, {} keep-alive connections, {:.1} s per endpoint\n  (client and router share this machine's {} CPUs)",
            a.connections,
            a.http_secs,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let _ = writeln!(
            o,
            " {:<40} {:>11} {:>14} {:>8} {:>8} {:>7}",
            "endpoint", "requests/s", "evaluations/s", "p50 ms", "p99 ms", "errors"
        );
        for h in &self.http {
            let _ = writeln!(
                o,
                " {:<40} {:>11.0} {:>14.0} {:>8.3} {:>8.3} {:>7}",
                h.endpoint,
                h.requests_per_sec(),
                h.evaluations_per_sec(),
                h.latency_ms.median,
                h.p99_ms,
                h.errors
            );
        }
        let _ = writeln!(
            o,
            "  (bulk: one request evaluates all {} flags of the set; evaluations/s counts each)",
            self.http.last().map(|h| h.evaluations_per_request).unwrap_or(0)
        );
        let _ = writeln!(o, "\nresult: {}", if self.passed() { "PASS" } else { "FAIL" });
        o
    }

    fn json(&self) -> Value {
        json!({
            "benchmark": "flags",
            "yggdrasil": YGGDRASIL_VERSION,
            "batches": self.args.batches,
            "iterations": self.args.iterations,
            "in_process": self.in_process.iter().map(|r| json!({
                "rule": r.rule.key,
                "what": r.rule.what,
                "ringfence_ns": r.ours.json(),
                "yggdrasil_ns": r.theirs.json(),
                "ratio": r.ratio(),
                "passed": r.passed(),
            })).collect::<Vec<_>>(),
            "http": self.http.iter().map(|h| json!({
                "endpoint": h.endpoint,
                "connections": self.args.connections,
                "requests_per_sec": h.requests_per_sec(),
                "evaluations_per_sec": h.evaluations_per_sec(),
                "latency_ms": h.latency_ms.json(),
                "p99_ms": h.p99_ms,
                "errors": h.errors,
            })).collect::<Vec<_>>(),
            "passed": self.passed(),
        })
    }
}

pub async fn run(args: &FlagsArgs, ringfence: &Path) -> Result<Report> {
    let in_process = in_process(args)?;
    let http = if args.http_secs > 0.0 { over_http(args, ringfence).await? } else { Vec::new() };
    Ok(Report { args: args.clone(), in_process, http })
}
