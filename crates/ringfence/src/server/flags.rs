//! Feature flags: what users evaluate now, the kill switch and its release.

use super::prelude::*;

/// The flag sets users are evaluating now, per rollout group, with the kill switch applied.
pub(super) async fn list_flags(State(sh): St, Path(name): Path<String>) -> Result<Json<api::Flags>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let groups = ws
            .desired()
            .routes
            .iter()
            .map(|g| api::FlagGroup {
                group: g.name.clone(),
                version: g.version.clone(),
                weight_bp: g.weight_bp,
                flags: ws.flags_for(&g.version),
            })
            .collect();
        let killed = ws.killed_flags.iter().map(|(k, v)| (k.clone(), wire::killed_flag(v))).collect();
        Ok(Json(api::Flags { groups, killed }))
    })
}

/// The kill switch. Always allowed, whatever the rollout state: it is the emergency path.
pub(super) async fn kill_flag(
    State(sh): St,
    Actor(who): Actor,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::FlagChange>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::Invalid, "field `reason`: the kill switch is audited; say why"));
    }
    let events = sh.command(&name, &who, &b.reason, |w| Ok(vec![command::kill_flag(w, &name, &flag)?])).await?;
    Ok(Json(api::FlagChange { flag, killed: true, seq: events.first().map(|e| e.seq) }))
}

pub(super) async fn restore_flag(
    State(sh): St,
    Actor(who): Actor,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::FlagChange>, ApiError> {
    let reason = if b.reason.is_empty() { "kill switch released".to_string() } else { b.reason };
    let events = sh.command(&name, &who, &reason, |w| Ok(vec![command::restore_flag(w, &name, &flag)?])).await?;
    Ok(Json(api::FlagChange { flag, killed: false, seq: events.first().map(|e| e.seq) }))
}
