//! Prometheus exposition, rendered at scrape time from the same atomics as `/v1/stats`.
//!
//! A custom collector instead of prometheus-client's own metric types: its histogram takes a
//! write lock per observation, and keeping one set of counters means the two views agree.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Unit;

use crate::server::Shared;
use crate::stats::{BreakerState, SeriesCounts};

pub(crate) struct Collector(pub(crate) Arc<Shared>);

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ringfence_router::Collector")
    }
}

/// A counter family: its name, its help text, and how to read it off a series.
type Counter = (&'static str, &'static str, fn(&SeriesCounts) -> u64);

const NO_EXEMPLAR: Option<&Exemplar<NoLabelSet, u64>> = None;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let shared = &self.0;
        // Tier mode: every workload's counters, labelled with it; else the one table's.
        let tier = shared.tier.load_full();
        let tier_stats: Vec<(String, Arc<crate::stats::Stats>)> = {
            let map = shared.tier_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.iter().map(|(w, s)| (w.clone(), s.clone())).collect()
        };
        let mut sets: Vec<(&str, &crate::stats::Stats)> = vec![("", &shared.stats)];
        sets.extend(tier_stats.iter().map(|(w, s)| (w.as_str(), &**s)));
        let series: Vec<(&str, SeriesCounts)> =
            sets.iter().flat_map(|&(w, s)| s.all_series().into_iter().map(move |x| (w, x))).collect();

        let counters: [Counter; 3] = [
            ("ringfence_router_requests", "Requests answered, by the version and group that served them.", |c| {
                c.requests
            }),
            (
                "ringfence_router_errors",
                "5xx responses and transport errors, by the version and group that served them.",
                |c| c.errors,
            ),
            (
                "ringfence_router_retries",
                "Requests sent a second time, to another replica of the same version, after the first gave no answer.",
                |c| c.retries,
            ),
        ];
        for (name, help, count) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (workload, c) in &series {
                let labels = labels(workload, &[("version", c.version.as_str()), ("group", c.group.as_str())]);
                family.encode_family(&labels)?.encode_counter(&count(c), NO_EXEMPLAR)?;
            }
        }

        let mut duration = encoder.encode_descriptor(
            "ringfence_router_request_duration",
            "Time from request received to upstream response headers.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for &(workload, stats) in &sets {
            for (version, latency) in stats.all_latency() {
                let buckets = latency.coarse_buckets();
                let count = buckets.iter().map(|&(_, n)| n).sum();
                let sum = latency.sum_us() as f64 / 1e6;
                let labels = labels(workload, &[("version", version.as_str())]);
                duration.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }

        let routing = shared.routing.load_full();
        let routings: Vec<Arc<crate::routing::Routing>> =
            routing.iter().cloned().chain(tier.iter().flat_map(|t| t.routings().cloned())).collect();
        let now = Instant::now();
        let mut breaker = encoder.encode_descriptor(
            "ringfence_router_breaker_open",
            "1 while the upstream's circuit breaker is not closed (open or half-open).",
            None,
            MetricType::Gauge,
        )?;
        for r in &routings {
            for upstream in r.upstream_stats(now) {
                let addr = upstream.addr.to_string();
                let workload = if tier.is_some() { r.table.workload.as_str() } else { "" };
                let labels = labels(workload, &[("upstream", addr.as_str()), ("version", upstream.version.as_str())]);
                let open = i64::from(upstream.state != BreakerState::Closed);
                breaker.encode_family(&labels)?.encode_gauge(&open)?;
            }
        }

        // Tier mode: the highest of the workloads' generations.
        let generation = routings.iter().map(|r| r.table.generation).max().unwrap_or(0);
        encoder
            .encode_descriptor(
                "ringfence_router_table_generation",
                "Generation of the routing table being served, 0 before the first.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&generation)?;

        // Only with worker threads of its own (`RouterConfig::workers`).
        let assigned = shared.balance.assigned();
        if !assigned.is_empty() {
            let mut family = encoder.encode_descriptor(
                "ringfence_router_worker_connections",
                "Users' connections each worker thread serves now (they are spread evenly).",
                None,
                MetricType::Gauge,
            )?;
            for (worker, n) in assigned.iter().enumerate() {
                let worker = worker.to_string();
                family.encode_family(&[("worker", worker.as_str())])?.encode_gauge(&(*n as i64))?;
            }
        }
        Ok(())
    }
}

/// `extra` with `workload` first, when there is one (tier mode).
fn labels<'a>(workload: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::with_capacity(extra.len() + 1);
    if !workload.is_empty() {
        out.push(("workload", workload));
    }
    out.extend_from_slice(extra);
    out
}
