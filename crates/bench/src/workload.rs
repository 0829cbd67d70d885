//! A workload on the real `ringfence server`, driven over its HTTP API the way a CI pipeline
//! would: apply a spec, register releases, deploy, watch the rollout, read the event log. Shared
//! by the benchmarks that go through the whole stack (`mitigation`, `trust`), together with the
//! guard of the load they send and the reading of what the event log says about a rollout.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use ringfence::client::ApiClient;
use ringfence::loadgen::{self, LoadConfig, LoadSummary, Sample};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Applies a spec (TOML text) as the workload's desired configuration.
/// The spec of a benchmark's workload: `replicas` sample-app replicas behind the built-in
/// router, the `(name, weight, bake)` phases, then `extra` TOML (e.g. `[health.analysis]`).
pub fn sample_spec(name: &str, replicas: u32, phases: &[(&str, u32, &str)], extra: &str) -> String {
    use std::fmt::Write as _;
    let mut spec = format!(
        r#"[workload]
name = "{name}"

[executor]
command = ["{{ringfence}}", "sample-app", "--listen", "127.0.0.1:{{port}}", "--version", "{{version}}"]
replicas = {replicas}

[router]
listen = "127.0.0.1:0"
"#
    );
    for (phase, weight, bake) in phases {
        let _ = write!(spec, "\n[[rollout.phases]]\nname = \"{phase}\"\nweight = {weight}\nbake = \"{bake}\"\n");
    }
    if !extra.is_empty() {
        let _ = write!(spec, "\n{extra}\n");
    }
    spec
}

pub async fn apply_spec(api: &ApiClient, name: &str, spec: &str) -> Result<()> {
    let body = json!({"spec": spec, "file": format!("{name}.toml")});
    let _: Value = api.post("/v1/workloads", &body).await.with_context(|| format!("applying the spec of {name}"))?;
    Ok(())
}

/// Registers a release of the sample app. The artifact names the version, so two releases with
/// the same configuration are still different content and each runs its own processes (a
/// release equal to an earlier one would run on that one's processes).
pub async fn create_release(api: &ApiClient, name: &str, version: &str, config: &Value, message: &str) -> Result<()> {
    let body = json!({
        "version": version,
        "artifact": format!("ringfence sample-app {version}"),
        "config": config,
        "metadata": {"commit": "ringfence-bench", "author": "ringfence-bench", "message": message},
    });
    let _: Value = api
        .post(&format!("/v1/workloads/{name}/releases"), &body)
        .await
        .with_context(|| format!("registering {version} of {name}"))?;
    Ok(())
}

/// Starts a rollout of `version` and returns its id.
pub async fn deploy(api: &ApiClient, name: &str, version: &str) -> Result<String> {
    let v: Value = api
        .post(&format!("/v1/workloads/{name}/deploy"), &json!({"version": version, "reason": "ringfence-bench"}))
        .await
        .with_context(|| format!("deploying {version} of {name}"))?;
    v["rollout_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the deploy of {version} of {name} returned no rollout id: {v}"))
}

/// `promote`, `abort`, `pause` or `resume` of the workload's active rollout.
pub async fn command(api: &ApiClient, name: &str, verb: &str, reason: &str) -> Result<()> {
    let _: Value = api
        .post(&format!("/v1/workloads/{name}/{verb}"), &json!({"reason": reason}))
        .await
        .with_context(|| format!("{verb} on {name}"))?;
    Ok(())
}

pub async fn rollout(api: &ApiClient, name: &str, id: &str) -> Result<Value> {
    Ok(api.get(&format!("/v1/workloads/{name}/rollouts/{id}")).await?)
}

/// The workload's status: router addresses, replicas, and the controller's live verdict.
pub async fn status(api: &ApiClient, name: &str) -> Result<Value> {
    Ok(api.get(&format!("/v1/workloads/{name}")).await?)
}

/// Where users send the workload's traffic.
pub async fn router_address(api: &ApiClient, name: &str) -> Result<std::net::SocketAddr> {
    let status = status(api, name).await?;
    status["router"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{name} has no router address in its status: {}", status["router"]))
}

/// `ringfence why`: the evidence behind the latest decision, in words.
pub async fn why(api: &ApiClient, name: &str) -> Result<String> {
    let v: Value = api.get(&format!("/v1/workloads/{name}/why")).await?;
    Ok(v["text"].as_str().unwrap_or_default().to_string())
}

/// Polls the rollout until it stops progressing and returns its status. `halted` ends the wait
/// too: with automatic fallback on it should not happen, and it would wait for a person.
pub async fn wait_rollout(api: &ApiClient, name: &str, id: &str, timeout: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let r = rollout(api, name, id).await?;
        let status = r["status"].as_str().unwrap_or_default();
        if !matches!(status, "progressing" | "paused" | "mitigating") {
            return Ok(status.to_string());
        }
        if started.elapsed() > timeout {
            bail!("rollout {id} was still {status} after {timeout:?}");
        }
        // Fine enough: this only decides when to go on, not what is measured.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The workload's events after sequence number `after`, oldest first.
pub async fn events_after(api: &ApiClient, name: &str, after: u64) -> Result<Vec<Value>> {
    // Page by page until an empty one: a page ends at 1,000 events or a size bound.
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let v: Value = api.get(&format!("/v1/workloads/{name}/events?after={after}&limit={PAGE}")).await?;
        let Value::Array(page) = v else { bail!("the events of {name} are not a list: {v}") };
        let Some(last) = page.last().and_then(|e| e["seq"].as_u64()) else { return Ok(out) };
        after = last;
        out.extend(page);
    }
}

pub async fn workload_events(api: &ApiClient, name: &str) -> Result<Vec<Value>> {
    events_after(api, name, 0).await
}

/// Open-loop load on a workload's router, stopped when dropped, so an error mid-run does not
/// leave it sending.
pub struct Load {
    task: tokio::task::JoinHandle<LoadSummary>,
    shutdown: CancellationToken,
}

impl Load {
    /// `samples` receives every finished request, when given.
    pub fn start(cfg: LoadConfig, samples: Option<UnboundedSender<Sample>>) -> Result<Load> {
        cfg.validate().map_err(|e| anyhow!("load generator: {e}"))?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(loadgen::run(cfg, samples, shutdown.clone()));
        Ok(Load { task, shutdown })
    }

    /// Stops the load and returns its totals. In-flight requests are abandoned: the callers
    /// stop it well after what they measure.
    pub async fn stop(mut self) -> LoadSummary {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

/// Maps the load generator's monotonic instants onto the wall clock of the event log, so both
/// can be put on one timeline. Good to a millisecond, the resolution of event times, over the
/// few minutes of a run.
#[derive(Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall_ms: f64,
}

impl Clock {
    pub fn now() -> Clock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
        Clock { instant: Instant::now(), wall_ms: wall }
    }

    pub fn wall_ms(&self, t: Instant) -> f64 {
        match t.checked_duration_since(self.instant) {
            Some(d) => self.wall_ms + d.as_secs_f64() * 1000.0,
            None => self.wall_ms - self.instant.duration_since(t).as_secs_f64() * 1000.0,
        }
    }
}

/// `a - b` in milliseconds, negative when `a` is earlier.
pub fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(b.duration_since(a).as_secs_f64() * 1000.0),
    }
}

/// What the decision of a halt says.
#[derive(Debug, Clone, Default)]
pub struct Halt {
    pub phase: String,
    pub weight: Option<f64>,
    /// The signals that made the verdict unhealthy, e.g. `error_rate`.
    pub signals: Vec<String>,
    /// Requests to the new version in the health window when it halted, and their error rate.
    pub window_requests: Option<u64>,
    pub window_error_rate: Option<f64>,
    pub verified: Option<bool>,
}

/// What the event log says about one rollout of a new version. Times are event times, ms
/// since the epoch.
#[derive(Debug, Default)]
pub struct EventFacts {
    pub started: f64,
    /// The last replica of the new version started (and ready).
    pub replicas_ready: Option<i64>,
    /// The router acknowledged the first table sending traffic to the new version.
    pub routed: Option<i64>,
    /// The first phase's bake began: the health window opens.
    pub bake_started: Option<i64>,
    pub halted: Option<i64>,
    /// The router acknowledged the first table without the new version after the halt.
    pub routes_back: Option<i64>,
    pub mitigated: Option<i64>,
    pub halt: Halt,
}

/// Reads the events of `rollout`, which deploys version `new`, from the workload's log.
pub fn read_events(events: &[Value], rollout: &str, new: &str) -> Result<EventFacts> {
    let mut facts = EventFacts::default();
    let mut started = false;
    // op_id -> whether the route table it applies sends traffic to the new version.
    let mut route_ops: Vec<(String, bool)> = Vec::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or_default();
        let at = e["at"].as_i64();
        let ours = e["rollout_id"].as_str() == Some(rollout);
        if !started {
            if kind == "rollout_started" && ours {
                started = true;
                facts.started = at.ok_or_else(|| anyhow!("rollout_started has no time: {e}"))? as f64;
            }
            continue;
        }
        match kind {
            "replica_started" if e["version"].as_str() == Some(new) && facts.halted.is_none() => {
                facts.replicas_ready = at;
            }
            "bake_started" if ours && facts.bake_started.is_none() => facts.bake_started = at,
            "rollout_halted" if ours => {
                facts.halted = at;
                facts.halt = read_decision(&e["decision"]);
            }
            "mitigation_completed" if ours => {
                facts.mitigated = at;
                facts.halt.verified = e["verified"].as_bool();
            }
            "action_intended" if e["action"].as_str() == Some("apply_routes") => {
                let to_new = e["groups"].as_array().is_some_and(|groups| {
                    groups.iter().any(|g| g["version"].as_str() == Some(new) && g["weight_bp"].as_u64() > Some(0))
                });
                if let Some(op) = e["op_id"].as_str() {
                    route_ops.push((op.to_string(), to_new));
                }
            }
            "action_succeeded" => {
                let op = e["op_id"].as_str().unwrap_or_default();
                match route_ops.iter().find(|(id, _)| id == op) {
                    Some((_, true)) if facts.routed.is_none() && facts.halted.is_none() => facts.routed = at,
                    Some((_, false)) if facts.halted.is_some() && facts.routes_back.is_none() => {
                        facts.routes_back = at;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !started {
        bail!("the event log has no rollout_started for {rollout}");
    }
    Ok(facts)
}

/// The phase, weight, failing signals and window of a halt decision.
pub fn read_decision(d: &Value) -> Halt {
    let signals = d["verdict"]["signals"].as_array().cloned().unwrap_or_default();
    let unhealthy: Vec<String> = signals
        .iter()
        .filter(|s| s["health"].as_str() == Some("unhealthy"))
        .filter_map(|s| s["signal"].as_str().map(str::to_owned))
        .collect();
    let error_rate = signals.iter().find(|s| s["signal"].as_str() == Some("error_rate"));
    let traffic = signals.iter().find(|s| s["signal"].as_str() == Some("traffic"));
    Halt {
        phase: d["phase_name"].as_str().unwrap_or_default().to_string(),
        weight: d["weight"].as_f64(),
        signals: unhealthy,
        window_requests: traffic.or(error_rate).and_then(|s| s["sample_size"].as_u64()),
        window_error_rate: error_rate.and_then(|s| s["observed"].as_f64()),
        verified: None,
    }
}

/// Processes the server started for a workload, from its events.
pub fn pids(events: &[Value]) -> Vec<u32> {
    // Routers carry a pid; replicas an instance of the process executor, `proc:<pid>:<start>`,
    // or, from builds before the executor seam (a `--baseline`), a pid too.
    let pid = |e: &Value| e["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
    let instance_pid =
        |e: &Value| e["instance"].as_str()?.strip_prefix("proc:")?.split(':').next()?.parse::<u32>().ok();
    events
        .iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("router_started") => pid(e),
            Some("replica_started") => instance_pid(e).or_else(|| pid(e)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_benchmarks_specs_are_valid() {
        let plain = sample_spec("w", 2, &[("canary", 10, "10s"), ("all", 100, "1s")], "");
        let held = sample_spec("w", 1, &[("canary", 10, "1h"), ("all", 100, "1s")], "[rollout]\nmax_hold = \"2h\"");
        let strict = sample_spec("w", 1, &[("canary", 20, "2s"), ("all", 100, "1s")], "[health.analysis]\npower = 0");
        for spec in [plain, held, strict] {
            let parsed = ringfence_core::spec::parse("bench.toml", &spec);
            assert!(parsed.is_ok(), "{spec}\n{parsed:?}");
        }
        let held = ringfence_core::spec::parse(
            "b.toml",
            &sample_spec("w", 1, &[("c", 100, "1h")], "[rollout]\nmax_hold = \"2h\""),
        )
        .unwrap();
        assert_eq!(held.rollout.phases.len(), 1);
        assert_eq!(held.executor.replicas, 1);
    }

    /// An event as the API returns it.
    pub fn ev(kind: &str, at: i64, extra: Value) -> Value {
        let mut e = json!({"seq": 0, "at": at, "actor": "controller", "reason": "", "workload": "w", "type": kind});
        if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
            e.extend(extra);
        }
        e
    }

    /// A route change to `v2_bp` basis points on v2, intended then done.
    pub fn routes(op: &str, at: i64, v2_bp: u64) -> [Value; 2] {
        [
            ev(
                "action_intended",
                at,
                json!({"op_id": op, "action": "apply_routes", "generation": 1, "groups": [
                    {"name": "canary", "version": "v2", "weight_bp": v2_bp},
                    {"name": "stable", "version": "v1", "weight_bp": 10_000 - v2_bp}]}),
            ),
            ev("action_succeeded", at + 1, json!({"op_id": op, "detail": ""})),
        ]
    }

    #[test]
    fn the_event_log_gives_the_timeline_of_the_bad_rollout() {
        let id = json!("w-2");
        let mut events = vec![
            // The first rollout's events are not ours.
            ev("rollout_started", 100, json!({"rollout_id": "w-1"})),
            ev("replica_started", 110, json!({"version": "v1", "instance": "proc:1:77"})),
            ev("bake_started", 120, json!({"rollout_id": "w-1"})),
            ev("rollout_started", 1000, json!({"rollout_id": id})),
            ev("replica_started", 1050, json!({"version": "v2", "instance": "proc:2:78"})),
            ev("replica_started", 1100, json!({"version": "v2", "instance": "proc:3:79"})),
        ];
        events.extend(routes("op-1", 1110, 1000));
        events.push(ev("bake_started", 1115, json!({"rollout_id": id})));
        events.push(ev(
            "rollout_halted",
            2200,
            json!({"rollout_id": id, "decision": {"phase_name": "canary", "weight": 10.0, "verdict": {"signals": [
                {"signal": "traffic", "health": "healthy", "sample_size": 21},
                {"signal": "error_rate", "health": "unhealthy", "sample_size": 21, "observed": 0.19},
            ]}}}),
        ));
        events.extend(routes("op-2", 2201, 0));
        events.push(ev("mitigation_completed", 2300, json!({"rollout_id": id, "verified": true})));
        let f = read_events(&events, "w-2", "v2").unwrap();
        assert_eq!(f.started, 1000.0);
        assert_eq!(f.replicas_ready, Some(1100));
        assert_eq!(f.routed, Some(1111));
        assert_eq!(f.bake_started, Some(1115));
        assert_eq!(f.halted, Some(2200));
        assert_eq!(f.routes_back, Some(2202));
        assert_eq!(f.mitigated, Some(2300));
        assert_eq!(f.halt.signals, vec!["error_rate".to_string()]);
        assert_eq!((f.halt.window_requests, f.halt.window_error_rate), (Some(21), Some(0.19)));
        assert_eq!((f.halt.phase.as_str(), f.halt.weight, f.halt.verified), ("canary", Some(10.0), Some(true)));
        assert_eq!(pids(&events), vec![1, 2, 3]);
        let before_the_executor_seam = ev("replica_started", 1050, json!({"version": "v2", "pid": 4, "port": 8080}));
        assert_eq!(pids(&[before_the_executor_seam]), vec![4]);
        assert!(read_events(&events, "w-9", "v2").is_err());
    }

    #[test]
    fn signed_ms_is_negative_when_the_first_is_earlier() {
        let b = Instant::now();
        let a = b + Duration::from_millis(860);
        assert_eq!(signed_ms(a, b), 860.0);
        assert_eq!(signed_ms(b, a), -860.0);
    }
}
