//! Planning: how long each phase needs at the workload's traffic, and the warnings `apply`
//! and `deploy` give when a bake is too short.

use super::prelude::*;

#[derive(Deserialize)]
pub(super) struct PlanQuery {
    /// Total requests per second to plan for; measured at the router over one second if absent.
    rps: Option<f64>,
}

/// `GET /v1/workloads/{w}/plan`: how long each phase needs, at today's traffic, to catch the
/// target regressions with the configured power and for a release as good as the stable one
/// to pass, and which bakes are too short.
pub(super) async fn plan(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<PlanQuery>,
) -> Result<Json<api::PlanAdvice>, ApiError> {
    let (spec, stable, admin) = plan_inputs(&sh, &name)?;
    let first = match &admin {
        Some(a) => read_stats(&sh, a).await,
        None => None,
    };
    let (rps, measured) = match (q.rps, &first, &admin) {
        (Some(r), _, _) if r.is_finite() && r > 0.0 => (r, false),
        (Some(r), _, _) => {
            return Err(ApiError::new(ErrorKind::BadRequest, format!("rps must be above 0, found {r}")));
        }
        (None, Some(a), Some(admin)) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = read_stats(&sh, admin).await;
            (b.map(|b| total_requests(&b).saturating_sub(total_requests(a)) as f64 / 1.0).unwrap_or(0.0), true)
        }
        _ => (0.0, true),
    };
    Ok(Json(advise(&spec, stable, first.as_ref(), rps, measured)))
}

/// The spec, the stable version and the data plane of a workload.
pub(super) fn plan_inputs(
    sh: &Shared,
    name: &str,
) -> Result<(ringfence_core::spec::WorkloadSpec, Option<String>, Option<crate::traffic::DataPlane>), ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, name)?;
        Ok::<_, ApiError>((ws.spec.clone(), ws.stable.clone(), crate::traffic::data_plane(&sh.data_dir, ws)))
    })
}

pub(super) async fn read_stats(sh: &Shared, at: &crate::traffic::DataPlane) -> Option<ringfence_router::StatsSnapshot> {
    sh.traffic.stats(at).await.ok()
}

pub(super) fn total_requests(s: &ringfence_router::StatsSnapshot) -> u64 {
    s.versions.values().map(|v| v.requests).sum()
}

/// The planner's advice for a spec at `rps`, with the stable version's error rate and latency
/// taken from the router's counters.
pub(super) fn advise(
    spec: &ringfence_core::spec::WorkloadSpec,
    stable: Option<String>,
    stats: Option<&ringfence_router::StatsSnapshot>,
    rps: f64,
    measured: bool,
) -> api::PlanAdvice {
    let stable_stats = stable.as_ref().and_then(|v| stats?.versions.get(v).cloned());
    let stable_error_rate = stable_stats
        .as_ref()
        .map(|s| ringfence_core::analysis::planner::planning_error_rate(s.errors, s.requests))
        .unwrap_or(0.0);
    let latency = stable_stats.map(|s| s.latency_buckets).unwrap_or_default();
    let a = &spec.health.analysis;
    let advice = ringfence_core::analysis::planner::spec_bakes(spec, rps, stable_error_rate, &latency);
    let phases = spec
        .rollout
        .phases
        .iter()
        .zip(advice)
        .map(|(p, adv)| {
            // A preview no user reaches is judged on its health checks alone: no traffic to plan.
            let dark = p.is_dark();
            api::PhaseAdvice {
                name: p.name.clone(),
                weight: p.weight,
                bake_s: adv.bake_s,
                needs: match adv.needed_s {
                    _ if dark => api::PhaseNeeds::GuardsOnly,
                    None => api::PhaseNeeds::GuardsOnly,
                    Some(s) if s.is_finite() => api::PhaseNeeds::Time,
                    Some(_) => api::PhaseNeeds::MoreTraffic,
                },
                needed_s: finite(adv.needed_s).filter(|_| !dark),
                pass_s: finite(adv.pass_s).filter(|_| !dark),
                detect_s: finite(adv.detect_s).filter(|_| !dark),
                warning: if dark {
                    None
                } else if rps <= 0.0 {
                    Some("no traffic measured: nothing can be judged".into())
                } else {
                    adv.warning
                },
            }
        })
        .collect();
    api::PlanAdvice {
        rps,
        measured,
        stable,
        stable_error_rate,
        target_error_ratio: a.target_error_ratio,
        target_latency_ratio: a.target_latency_ratio,
        power: a.power,
        phases,
    }
}

/// Warnings for bakes too short at the workload's traffic, measured as the average request
/// rate since its router started (no wait); none while nothing has been measured yet (no
/// router, under 10 s of uptime, or no traffic), since a plan for no traffic says nothing.
pub(super) async fn bake_warnings(sh: &Shared, name: &str) -> Vec<String> {
    let Ok((spec, stable, Some(admin))) = plan_inputs(sh, name) else { return Vec::new() };
    let Some(stats) = read_stats(sh, &admin).await else { return Vec::new() };
    let uptime_s = stats.uptime_ms as f64 / 1000.0;
    let rps = total_requests(&stats) as f64 / uptime_s.max(1.0);
    if uptime_s < 10.0 || rps <= 0.0 {
        return Vec::new();
    }
    advise(&spec, stable, Some(&stats), rps, true)
        .phases
        .into_iter()
        .filter_map(|p| p.warning)
        .map(|w| format!("{w} (traffic averaged since the router started; `ringfence plan` measures it now)"))
        .collect()
}

/// Seconds as the wire carries them: JSON has no infinity, and serde would write it as null,
/// which would read as "not applicable"; `PhaseNeeds` says which.
fn finite(s: Option<f64>) -> Option<f64> {
    s.filter(|s| s.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_that_cannot_decide_says_so_instead_of_looking_like_the_guarded_one() {
        let text = include_str!("../../../../examples/checkout.toml");
        let spec = ringfence_core::spec::parse("checkout.toml", text).expect("the example spec");
        let busy = advise(&spec, None, None, 1000.0, false);
        let idle = advise(&spec, None, None, 0.0, true);
        let last = busy.phases.last().expect("phases");
        assert_eq!((last.needs, last.needed_s), (api::PhaseNeeds::GuardsOnly, None));
        let first = &busy.phases[0];
        assert_eq!(first.needs, api::PhaseNeeds::Time);
        assert!(first.needed_s.is_some_and(f64::is_finite));
        let first = &idle.phases[0];
        assert_eq!((first.needs, first.needed_s), (api::PhaseNeeds::MoreTraffic, None));
        // A blue-green preview reaches no user: health checks judge it, nothing to plan or warn.
        let bg = text
            .replacen("[rollout]\n", "[rollout]\nmodel = \"blue_green\"\n", 1)
            .replace("weight = 10 ", "weight = 0 ")
            .replace("weight = 25", "weight = 0")
            .replace("weight = 50", "weight = 0");
        let bg = ringfence_core::spec::parse("bg.toml", &bg).expect("a blue-green spec");
        let preview = &advise(&bg, None, None, 1000.0, false).phases[0];
        assert_eq!(
            (preview.needs, preview.needed_s, preview.warning.as_deref()),
            (api::PhaseNeeds::GuardsOnly, None, None)
        );
        // What a script reads: no phase's seconds may be lost to JSON's missing infinity.
        let json = serde_json::to_value(&idle).expect("serializes");
        assert_eq!(json["phases"][0]["needs"], "more_traffic");
    }
}
