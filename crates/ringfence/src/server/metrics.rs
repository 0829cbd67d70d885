//! `GET /v1/metrics`: ringfence's own effect for Prometheus (OpenMetrics text), rendered at
//! scrape time from the projections (every figure is a fold of the event log, so a restart
//! neither loses nor double-counts): deployments by outcome, halts, mitigations by kind, time
//! to detect and to mitigate, open incidents, queued deployments, the line.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Unit;
use ringfence_core::World;
use ringfence_core::state::WorkloadState;
use ringfence_core::totals::{BOUNDS_S, Histogram};

use super::prelude::*;

const NO_EXEMPLAR: Option<&Exemplar<NoLabelSet, u64>> = None;

#[derive(Default)]
struct Figures {
    deployments: Vec<(String, String, u64)>,
    halts: Vec<(String, u64)>,
    mitigations: Vec<(String, String, u64)>,
    detect: Vec<(String, Histogram)>,
    mitigate: Vec<(String, Histogram)>,
    incidents_open: Vec<(String, String, i64)>,
    queued: Vec<(String, i64)>,
    line_stopped: i64,
    /// (workload, channel, delivered, failed tries)
    notifications: Vec<(String, String, u64, u64)>,
    /// (workload, fault, outcome, count)
    drills: Vec<(String, String, String, u64)>,
    /// Controller ticks since the server started (not from the log: the loops' cost).
    ticks: u64,
}

/// What a scrape reads: the readable workloads' shared snapshots, taken under the state lock
/// (a pointer each) so that the reading runs after the lock is released: commands, the fold
/// and the controllers never wait on it.
fn snapshot(world: &World, caller: &Caller) -> (bool, Vec<std::sync::Arc<WorkloadState>>) {
    let readable = |w: &&std::sync::Arc<WorkloadState>| {
        !w.deleted && caller.may(ringfence_core::access::Perm::Read, Some(&w.name))
    };
    (world.line.is_some(), world.workloads.values().filter(readable).cloned().collect())
}

/// The figures of each workload: its running counts (`ringfence_core::totals`, kept by the
/// fold), not a walk over its history; only the drills (a few per workload) are counted here.
fn figures(line_stopped: bool, workloads: &[std::sync::Arc<WorkloadState>]) -> Figures {
    let mut f = Figures { line_stopped: i64::from(line_stopped), ..Figures::default() };
    for ws in workloads {
        let w = ws.name.clone();
        let t = &ws.totals;
        f.deployments.extend(t.outcomes.iter().map(|(o, n)| (w.clone(), o.clone(), *n)));
        f.halts.push((w.clone(), t.halts));
        f.mitigations.extend(t.actions.iter().map(|(a, n)| (w.clone(), a.clone(), *n)));
        let mut drills: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
        for d in ws.drills.iter() {
            if let Some(r) = &d.report {
                *drills.entry((d.fault.name(), r.outcome.as_str())).or_default() += 1;
            }
        }
        f.drills.extend(drills.into_iter().map(|((fault, o), n)| (w.clone(), fault.to_string(), o.to_string(), n)));
        f.detect.push((w.clone(), t.detect.clone()));
        f.mitigate.push((w.clone(), t.mitigate.clone()));
        f.incidents_open
            .extend(t.open.iter().map(|(s, n)| (w.clone(), s.clone(), i64::try_from(*n).unwrap_or(i64::MAX))));
        f.notifications.extend(t.deliveries.iter().map(|(c, (ok, failed))| (w.clone(), c.clone(), *ok, *failed)));
        f.queued.push((w, i64::from(ws.governance.pending.is_some())));
    }
    f
}

struct Collector(Figures);

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ringfence::server::metrics::Collector")
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let f = &self.0;
        let mut e = encoder.encode_descriptor(
            "ringfence_deployments",
            "Rollouts that ended, by workload and outcome (completed, mitigated, aborted).",
            None,
            MetricType::Counter,
        )?;
        for (w, outcome, n) in &f.deployments {
            e.encode_family(&[("workload", w.as_str()), ("outcome", outcome.as_str())])?
                .encode_counter(n, NO_EXEMPLAR)?;
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_halts",
            "Rollouts halted (each opened an incident), by workload.",
            None,
            MetricType::Counter,
        )?;
        for (w, n) in &f.halts {
            e.encode_family(&[("workload", w.as_str())])?.encode_counter(n, NO_EXEMPLAR)?;
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_mitigations",
            "Decisions on halted rollouts, by workload and action (fallback, rollback, hold, ...).",
            None,
            MetricType::Counter,
        )?;
        for (w, action, n) in &f.mitigations {
            e.encode_family(&[("workload", w.as_str()), ("action", action.as_str())])?
                .encode_counter(n, NO_EXEMPLAR)?;
        }
        for (name, help, series) in [
            ("ringfence_time_to_detect", "From a failed rollout's start to its halt.", &f.detect),
            ("ringfence_time_to_mitigate", "From a halt to its verified mitigation.", &f.mitigate),
        ] {
            let mut e = encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for (w, h) in series {
                // Counts per bucket (the encoder makes them cumulative), the last one +Inf.
                let per_bucket: Vec<(f64, u64)> =
                    BOUNDS_S.iter().copied().chain(std::iter::once(f64::MAX)).zip(h.buckets).collect();
                e.encode_family(&[("workload", w.as_str())])?.encode_histogram::<NoLabelSet>(
                    h.sum_ms as f64 / 1000.0,
                    h.count,
                    &per_bucket,
                    None,
                )?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_incidents_open",
            "Incidents not resolved, by workload and severity.",
            None,
            MetricType::Gauge,
        )?;
        for (w, sev, n) in &f.incidents_open {
            e.encode_family(&[("workload", w.as_str()), ("severity", sev.as_str())])?.encode_gauge(n)?;
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_deployments_queued",
            "1 while a deployment of the workload waits for approvals, checks or a window.",
            None,
            MetricType::Gauge,
        )?;
        for (w, n) in &f.queued {
            e.encode_family(&[("workload", w.as_str())])?.encode_gauge(n)?;
        }
        for (name, help, pick) in [
            ("ringfence_notifications_delivered", "Incident updates delivered, by workload and channel.", 0),
            ("ringfence_notifications_failed", "Failed tries to deliver incident updates, by workload and channel.", 1),
        ] {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (w, channel, ok, failed) in &f.notifications {
                let n = if pick == 0 { ok } else { failed };
                e.encode_family(&[("workload", w.as_str()), ("channel", channel.as_str())])?
                    .encode_counter(n, NO_EXEMPLAR)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_drills",
            "Mitigation drills that ended, by workload, fault and outcome (passed, failed, aborted).",
            None,
            MetricType::Counter,
        )?;
        for (w, fault, outcome, n) in &f.drills {
            e.encode_family(&[("workload", w.as_str()), ("fault", fault.as_str()), ("outcome", outcome.as_str())])?
                .encode_counter(n, NO_EXEMPLAR)?;
        }
        let mut e = encoder.encode_descriptor(
            "ringfence_line_stopped",
            "1 while the line is stopped (every rollout paused, none started).",
            None,
            MetricType::Gauge,
        )?;
        e.encode_gauge(&f.line_stopped)?;
        let mut e = encoder.encode_descriptor(
            "ringfence_controller_ticks",
            "Controller loop ticks (a look at one workload) since this server started: what the loops cost.",
            None,
            MetricType::Counter,
        )?;
        e.encode_counter::<NoLabelSet, _, u64>(&f.ticks, None)?;
        Ok(())
    }
}

/// `GET /v1/metrics`: the workloads the caller may read.
pub(super) async fn metrics(State(sh): St, caller: Caller) -> Result<Response, ApiError> {
    let (line_stopped, workloads) = sh.world(|w| snapshot(w, &caller));
    let mut figures = figures(line_stopped, &workloads);
    figures.ticks = sh.ticks.load(std::sync::atomic::Ordering::Relaxed);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collector(figures)));
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)
        .map_err(|e| ApiError::new(ErrorKind::Store, format!("encoding metrics: {e}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response())
}
