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
use crate::stats::BreakerState;

pub(crate) struct Collector(pub(crate) Arc<Shared>);

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ringfence_router::Collector")
    }
}

const NO_EXEMPLAR: Option<&Exemplar<NoLabelSet, u64>> = None;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let shared = &self.0;
        let series = shared.stats.all_series();

        let mut requests = encoder.encode_descriptor(
            "ringfence_router_requests",
            "Requests answered, by the version and group that served them.",
            None,
            MetricType::Counter,
        )?;
        for ((version, group), count, _) in &series {
            let labels = [("version", version.as_str()), ("group", group.as_str())];
            requests.encode_family(&labels)?.encode_counter(count, NO_EXEMPLAR)?;
        }

        let mut errors = encoder.encode_descriptor(
            "ringfence_router_errors",
            "5xx responses and transport errors, by the version and group that served them.",
            None,
            MetricType::Counter,
        )?;
        for ((version, group), _, count) in &series {
            let labels = [("version", version.as_str()), ("group", group.as_str())];
            errors.encode_family(&labels)?.encode_counter(count, NO_EXEMPLAR)?;
        }

        let mut duration = encoder.encode_descriptor(
            "ringfence_router_request_duration",
            "Time from request received to upstream response headers.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (version, latency) in shared.stats.all_latency() {
            let buckets = latency.coarse_buckets();
            let count = buckets.iter().map(|&(_, n)| n).sum();
            let sum = latency.sum_us() as f64 / 1e6;
            let labels = [("version", version.as_str())];
            duration.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let routing = shared.routing.load_full();
        let now = Instant::now();
        let mut breaker = encoder.encode_descriptor(
            "ringfence_router_breaker_open",
            "1 while the upstream's circuit breaker is not closed (open or half-open).",
            None,
            MetricType::Gauge,
        )?;
        for upstream in routing.iter().flat_map(|r| r.upstream_stats(now)) {
            let addr = upstream.addr.to_string();
            let labels = [("upstream", addr.as_str()), ("version", upstream.version.as_str())];
            let open = i64::from(upstream.state != BreakerState::Closed);
            breaker.encode_family(&labels)?.encode_gauge(&open)?;
        }

        let generation = routing.as_ref().map_or(0, |r| r.table.generation);
        encoder
            .encode_descriptor(
                "ringfence_router_table_generation",
                "Generation of the routing table being served, 0 before the first.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&generation)?;
        Ok(())
    }
}
