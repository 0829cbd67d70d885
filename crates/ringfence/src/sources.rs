//! Signal sources outside the router: smoke tests, Prometheus queries and the usage rate.
//! Each turns what it sees into `SignalResult`s with evidence; a source that cannot see
//! (Prometheus down, no data) says `unknown`, which holds a rollout and never rolls it back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringfence_core::health::{Health, SignalResult};
use ringfence_core::spec::{PromQuery, PrometheusSpec, SmokeSpec};
use ringfence_core::state::ReplicaRecord;

use crate::http::HttpClient;

fn signal(name: String, version: &str, health: Health, rule: String, detail: String) -> SignalResult {
    SignalResult::new(name, version, health, "value", rule, detail)
}

/// Runs one smoke test against every replica of the new version. `Ok` with a summary when
/// all pass, `Err` with the first failure's story otherwise.
/// `accelerated`: an emergency deployment's smoke tests: a command test gets
/// `RINGFENCE_ACCELERATED=1` (to run its quick subset), and each test runs against one replica
/// instead of every one.
pub async fn run_smoke(
    http: &HttpClient,
    test: &SmokeSpec,
    replicas: &[ReplicaRecord],
    accelerated: bool,
) -> Result<String, String> {
    if replicas.is_empty() {
        return Err("no replica of the new version to test".into());
    }
    let replicas = if accelerated { &replicas[..1] } else { replicas };
    for r in replicas {
        let base = format!("http://{}", r.endpoint);
        if let Some(path) = &test.path {
            let url = format!("{base}{path}");
            let resp = http.get(&url, test.timeout.std()).await.map_err(|e| format!("replica {}: {e}", r.replica))?;
            if resp.status.as_u16() != test.expect_status {
                return Err(format!(
                    "replica {}: GET {path} answered {} (expected {})",
                    r.replica,
                    resp.status.as_u16(),
                    test.expect_status
                ));
            }
            if let Some(needle) = &test.contains
                && !String::from_utf8_lossy(&resp.body).contains(needle.as_str())
            {
                return Err(format!("replica {}: GET {path} body does not contain {needle:?}", r.replica));
            }
        } else if let Some(cmd) = &test.command {
            let mut c = tokio::process::Command::new(&cmd[0]);
            c.args(&cmd[1..])
                .env("TARGET_URL", &base)
                .env("RINGFENCE_VERSION", &r.version)
                .env("RINGFENCE_ACCELERATED", if accelerated { "1" } else { "0" })
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(test.timeout.std(), c.output())
                .await
                .map_err(|_| {
                    format!("replica {}: `{}` did not finish within {}", r.replica, cmd.join(" "), test.timeout)
                })?
                .map_err(|e| format!("replica {}: cannot run `{}`: {e}", r.replica, cmd.join(" ")))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().last().unwrap_or("").to_string();
                return Err(format!("replica {}: `{}` exited with {}: {last}", r.replica, cmd.join(" "), out.status));
            }
        }
    }
    Ok(format!("passed on {} replica(s)", replicas.len()))
}

/// The last answer of each Prometheus query, refreshed at the spec's interval.
#[derive(Default)]
pub struct PromCache {
    last_run: Option<Instant>,
    results: HashMap<(String, String), Result<(f64, Instant), String>>,
}

impl PromCache {
    /// Signals for the new version (and its comparison with the stable one).
    pub async fn signals(
        &mut self,
        http: &HttpClient,
        spec: &PrometheusSpec,
        workload: &str,
        version: &str,
        baseline: Option<&str>,
    ) -> Vec<SignalResult> {
        let due = self.last_run.is_none_or(|t| t.elapsed() >= spec.interval.std());
        if due {
            self.last_run = Some(Instant::now());
            for q in &spec.queries {
                let mut versions = vec![version];
                if q.max_ratio_to_baseline.is_some()
                    && let Some(b) = baseline
                {
                    versions.push(b);
                }
                for v in versions {
                    let r = query(http, spec, q, workload, v).await;
                    self.results.insert((q.name.clone(), v.to_string()), r.map(|x| (x, Instant::now())));
                }
            }
        }
        spec.queries.iter().map(|q| self.judge(spec, q, version, baseline)).collect()
    }

    fn judge(&self, spec: &PrometheusSpec, q: &PromQuery, version: &str, baseline: Option<&str>) -> SignalResult {
        let name = format!("prometheus:{}", q.name);
        let rule = describe_limits(q);
        let fresh = |v: &str| -> Result<f64, String> {
            match self.results.get(&(q.name.clone(), v.to_string())) {
                None => Err("not queried yet".into()),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok((x, at))) if at.elapsed() > spec.max_staleness.std() => {
                    Err(format!("last value {x} is {}s old", at.elapsed().as_secs()))
                }
                Some(Ok((x, _))) => Ok(*x),
            }
        };
        let value = match fresh(version) {
            Ok(v) => v,
            Err(why) => return signal(name, version, Health::Unknown, rule, format!("no data: {why}")),
        };
        let base = baseline.and_then(|b| fresh(b).ok());
        let mut bad = Vec::new();
        if let Some(max) = q.max
            && value > max
        {
            bad.push(format!("{value} > max {max}"));
        }
        if let Some(min) = q.min
            && value < min
        {
            bad.push(format!("{value} < min {min}"));
        }
        let mut health = if bad.is_empty() { Health::Healthy } else { Health::Unhealthy };
        if let Some(ratio) = q.max_ratio_to_baseline {
            match base {
                Some(b) if b > 0.0 && value > b * ratio => bad.push(format!("{value} > {ratio} x stable {b}")),
                Some(_) => {}
                None if health == Health::Healthy && baseline.is_some() => health = Health::Unknown,
                None => {}
            }
            if !bad.is_empty() {
                health = Health::Unhealthy;
            }
        }
        let mut s = signal(
            name,
            version,
            health,
            rule,
            if bad.is_empty() { format!("{} = {value}", q.name) } else { bad.join("; ") },
        );
        s.observed = Some(value);
        s.threshold = q.max.or(q.min);
        s.baseline = base;
        s
    }
}

fn describe_limits(q: &PromQuery) -> String {
    let mut parts = Vec::new();
    if let Some(m) = q.max {
        parts.push(format!("at most {m}"));
    }
    if let Some(m) = q.min {
        parts.push(format!("at least {m}"));
    }
    if let Some(r) = q.max_ratio_to_baseline {
        parts.push(format!("at most {r} x the stable version"));
    }
    format!("{} ({}) {}", q.name, q.query, parts.join(", "))
}

/// One instant query. A vector result must have exactly one sample; a scalar is taken as is.
async fn query(
    http: &HttpClient,
    spec: &PrometheusSpec,
    q: &PromQuery,
    workload: &str,
    version: &str,
) -> Result<f64, String> {
    let promql = q.query.replace("{version}", version).replace("{workload}", workload);
    let url =
        format!("{}/api/v1/query?query={}", spec.url.trim_end_matches('/'), crate::http::encode_component(&promql));
    let resp = http.get(&url, spec.timeout.std()).await.map_err(|e| format!("Prometheus unreachable: {e}"))?;
    let body: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("Prometheus answered {} with unreadable JSON: {e}", resp.status))?;
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus refused the query: {}",
            body["error"].as_str().unwrap_or(&String::from_utf8_lossy(&resp.body))
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            match result.len() {
                0 => return Err("the query returned no series".into()),
                1 => result[0]["value"][1].clone(),
                n => return Err(format!("the query returned {n} series; aggregate it to one")),
            }
        }
        Some("scalar") => data["result"][1].clone(),
        other => return Err(format!("unsupported result type {other:?}")),
    };
    let v: f64 = value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("cannot read the value {value}"))?;
    if v.is_nan() {
        return Err("the query returned NaN (no traffic in its window?)".into());
    }
    Ok(v)
}

/// The router's total request rate, smoothed, measured while no rollout is judged: the
/// reference for the usage signal.
#[derive(Default)]
pub struct UsageMeter {
    last: Option<(Instant, u64)>,
    rps: Option<f64>,
}

impl UsageMeter {
    pub fn observe(&mut self, total_requests: u64) {
        let now = Instant::now();
        if let Some((t, n)) = self.last {
            let dt = now.duration_since(t);
            if dt >= Duration::from_millis(500) {
                let rate = total_requests.saturating_sub(n) as f64 / dt.as_secs_f64();
                self.rps = Some(match self.rps {
                    Some(old) => 0.7 * old + 0.3 * rate,
                    None => rate,
                });
                self.last = Some((now, total_requests));
            }
        } else {
            self.last = Some((now, total_requests));
        }
    }

    pub fn rps(&self) -> Option<f64> {
        self.rps
    }
}
