//! Releases: register one (immutable, by content digest), list and show them.

use super::prelude::*;

#[derive(Serialize)]
pub(super) struct Created {
    created: bool,
    release: Release,
}

pub(super) async fn create_release(
    State(sh): St,
    Actor(who): Actor,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<ReleaseRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
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
    let events = sh.command(&name, &who, "release registered", |w| {
        let (event, release) = command::create_release(w, &name, &req, &who, now())?;
        out = Some(release);
        Ok(event.into_iter().collect())
    })?;
    let created = !events.is_empty();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Created { created, release: out.expect("set on success") })))
}

pub(super) async fn list_releases(State(sh): St, Path(name): Path<String>) -> Result<Json<Vec<Release>>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok(Json(ws.release_order.iter().filter_map(|v| ws.releases.get(v).map(|r| (**r).clone())).collect()))
    })
}

pub(super) async fn show_release(
    State(sh): St,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Release>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        ws.releases
            .get(&version)
            .map(|r| Json((**r).clone()))
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{name} has no release {version:?}")))
    })
}
