//! Feature flags: what users evaluate now, the kill switch and its release.

use super::prelude::*;

/// The flag sets users are evaluating now, per rollout group, with the kill switch applied.
pub(super) async fn list_flags(State(sh): St, Path(name): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let groups: Vec<serde_json::Value> = ws
            .desired()
            .routes
            .iter()
            .map(|g| {
                serde_json::json!({
                    "group": g.name, "version": g.version, "weight_bp": g.weight_bp,
                    "flags": ws.flags_for(&g.version),
                })
            })
            .collect();
        Ok(Json(serde_json::json!({"groups": groups, "killed": ws.killed_flags})))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KillBody {
    #[serde(default)]
    reason: String,
}

/// The kill switch. Always allowed, whatever the rollout state: it is the emergency path.
pub(super) async fn kill_flag(
    State(sh): St,
    Actor(who): Actor,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<KillBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::Invalid, "field `reason`: the kill switch is audited; say why"));
    }
    let events = sh.command(&name, &who, &b.reason, |w| Ok(vec![command::kill_flag(w, &name, &flag)?]))?;
    Ok(Json(serde_json::json!({"flag": flag, "killed": true, "seq": events.first().map(|e| e.seq)})))
}

pub(super) async fn restore_flag(
    State(sh): St,
    Actor(who): Actor,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<KillBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = if b.reason.is_empty() { "kill switch released".to_string() } else { b.reason };
    let events = sh.command(&name, &who, &reason, |w| Ok(vec![command::restore_flag(w, &name, &flag)?]))?;
    Ok(Json(serde_json::json!({"flag": flag, "killed": false, "seq": events.first().map(|e| e.seq)})))
}
