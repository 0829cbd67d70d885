//! Releases: register one (immutable, by content digest), list and show them.

use super::prelude::*;
use crate::state::Shared;
use ringfence_core::WorkloadState;
use ringfence_core::release::Release;

pub(super) async fn create_release(
    State(sh): St,
    Actor(who): Actor,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<api::ReleaseRequest>,
) -> Result<(StatusCode, Json<api::ReleaseCreated>), ApiError> {
    let mut req = wire::release_request(req).map_err(|m| ApiError::new(ErrorKind::Invalid, m))?;
    // Flags load as flagd loads them; what flagd loads but cannot evaluate is a warning. The
    // release records the fractional bucketing, so its users keep their buckets across upgrades.
    let mut warnings = Vec::new();
    if let Some(flags) = req.content.flags.as_mut()
        && let Ok((_, problems)) = ringfence_flags::FlagSet::parse_lenient(&flags.to_string())
    {
        warnings = problems.iter().map(|p| format!("flags: {p} ({})", p.effect.describe())).collect();
        ringfence_flags::prepare_document(flags);
    }
    let loaders = ringfence_core::release::code_loading_keys(&req.content.config);
    if !loaders.is_empty() && !caller.may(ringfence_core::access::Perm::Execute, Some(&name)) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "config sets {}, which changes what the replicas execute: that needs the admin role on {name}",
                loaders.join(", ")
            ),
        ));
    }
    let mut out = None;
    let events = sh
        .command(&name, &who, "release registered", |w| {
            if !warnings.is_empty() && command::workload(w, &name)?.spec.flags.strict {
                return Err(CommandError {
                    code: ErrorCode::Invalid,
                    message: format!("field `flags` ([flags] strict = true): {}", warnings.join("; ")),
                });
            }
            let (event, release) = command::create_release(w, &name, &req, &who, now())?;
            out = Some(release);
            Ok(event.into_iter().collect())
        })
        .await?;
    let created = !events.is_empty();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(api::ReleaseCreated { created, release: wire::release(&out.expect("set on success")), warnings })))
}

pub(super) async fn list_releases(
    State(sh): St,
    Path(name): Path<String>,
) -> Result<Json<Vec<api::Release>>, ApiError> {
    // Those `[history]` let go are read back from the log, folded whole (once some are).
    let mut whole = None;
    loop {
        let listed = sh.world(|w| {
            let ws = command::workload(w, &name)?;
            if !ws.releases_let_go.is_empty() && whole.is_none() {
                return Ok::<_, ApiError>(None);
            }
            let folded = whole.as_ref().and_then(Option::as_ref);
            let release = |v: &String| {
                ws.releases.get(v).or_else(|| folded.and_then(|f: &Arc<WorkloadState>| f.releases.get(v))).cloned()
            };
            Ok(Some(ws.release_order.iter().filter_map(release).map(|r| wire::release_in(ws, &r)).collect()))
        })?;
        match listed {
            Some(list) => return Ok(Json(list)),
            None => whole = Some(sh.whole_history(&name)?),
        }
    }
}

/// Release `version` of `name` read back from the log when `[history]` let it go (`None` when
/// it is held whole, or unknown).
pub(super) fn read_back(sh: &Shared, name: &str, version: &str) -> Result<Option<Release>, ApiError> {
    match sh.let_go_release(name, version)? {
        None => Ok(None),
        Some((_, Some(release))) => Ok(Some(release)),
        Some((seq, None)) => Err(ApiError::new(
            ErrorKind::Store,
            format!(
                "release {version} of {name} is let go from memory, but event {seq} of the log is not its registration"
            ),
        )),
    }
}

pub(super) async fn show_release(
    State(sh): St,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<api::Release>, ApiError> {
    // One `[history]` let go is read back from the log.
    let let_go = read_back(&sh, &name, &version)?;
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        ws.releases
            .get(&version)
            .map(|r| &**r)
            .or(let_go.as_ref())
            .map(|r| Json(wire::release_in(ws, r)))
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{name} has no release {version:?}")))
    })
}

/// `POST .../releases/{version}/clear-hold`: a person says a mitigated release may be deployed
/// again, and why.
pub(super) async fn clear_hold(
    State(sh): St,
    who: Actor,
    Path((name, version)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Started>, ApiError> {
    audited(&sh, who, &name, &version, &b.reason, "why the release may be deployed again", command::clear_hold).await
}

/// `POST .../releases/{version}/revoke`: a person decides a release must never run again.
pub(super) async fn revoke_release(
    State(sh): St,
    who: Actor,
    Path((name, version)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Started>, ApiError> {
    audited(&sh, who, &name, &version, &b.reason, "why the release must never run again", command::revoke_release).await
}

/// A command on one release that a person must give a reason for.
async fn audited(
    sh: &Shared,
    Actor(who): Actor,
    name: &str,
    version: &str,
    reason: &str,
    say: &str,
    f: fn(&ringfence_core::World, &str, &str) -> Result<ringfence_core::EventKind, CommandError>,
) -> Result<Json<api::Started>, ApiError> {
    if reason.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::Invalid, format!("field `reason`: say {say}")));
    }
    sh.command(name, &who, reason, |w| Ok(vec![f(w, name, version)?])).await?;
    Ok(Json(api::Started { rollout_id: String::new(), warnings: Vec::new(), queued: Vec::new() }))
}
