//! Signals from outside: Alertmanager's webhook and user reports.

use super::prelude::*;

/// `POST /v1/alerts`: point an Alertmanager webhook receiver here. An alert concerns a
/// workload when it carries all the labels of the workload's `health.alerts.match` (by
/// default `workload=<name>`); a firing one halts that workload's rollout.
pub(super) async fn alertmanager_webhook(
    State(sh): St,
    Body(body): Body<api::AlertmanagerPayload>,
) -> Result<Json<api::AlertsAccepted>, ApiError> {
    let workloads: Vec<(String, std::collections::BTreeMap<String, String>)> = sh
        .world(|w| w.workloads.values().map(|ws| (ws.name.clone(), ws.spec.health.alerts.matchers.clone())).collect());
    let mut matched = Vec::new();
    let mut ignored = 0;
    for a in body.alerts {
        let status = a.status.as_str();
        let alertname = a.labels.get("alertname").cloned().unwrap_or_else(|| "unnamed".into());
        let fingerprint = if a.fingerprint.is_empty() {
            a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        } else {
            a.fingerprint.clone()
        };
        let summary = a.annotations.get("summary").or(a.annotations.get("description")).cloned().unwrap_or_default();
        let mut any = false;
        for (name, matchers) in &workloads {
            let concerns = if matchers.is_empty() {
                a.labels.get("workload") == Some(name)
            } else {
                matchers.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            };
            if !concerns {
                continue;
            }
            any = true;
            sh.command(name, "alertmanager", &format!("alert {alertname} {status}"), |_| {
                Ok(vec![ringfence_core::EventKind::AlertReceived {
                    fingerprint: fingerprint.clone(),
                    alertname: alertname.clone(),
                    status: status.to_string(),
                    labels: a.labels.clone(),
                    summary: summary.clone(),
                }])
            })
            .await?;
            matched.push((name.clone(), alertname.clone(), status.to_string()));
        }
        if !any {
            ignored += 1;
        }
    }
    Ok(Json(api::AlertsAccepted { matched, ignored }))
}

/// `POST /v1/workloads/{w}/reports`: a user reports a problem. The user's key is mapped to the
/// rollout group and version the router sends them to, so reports count per group.
pub(super) async fn user_report(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Report>,
) -> Result<Json<api::ReportAccepted>, ApiError> {
    if b.user.trim().is_empty() || b.user.chars().count() > 256 {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "field `user`: expected the user's key (1 to 256 characters), as sent in the sticky header or cookie",
        ));
    }
    let plane = sh.world(|w| command::workload(w, &name).map(|ws| crate::traffic::data_plane(&sh.data_dir, ws)))?;
    let mut group = None;
    let mut version = None;
    // The router says which group served the user; without it the report still counts,
    // against no group.
    if let Some(at) = plane
        && let Ok(a) = sh.traffic.assign(&at, &b.user).await
    {
        group = a.group;
        version = a.version;
    }
    let message: String = b.message.chars().take(2000).collect();
    sh.command(&name, &who, "user report", |_| {
        Ok(vec![ringfence_core::EventKind::UserReported {
            user: b.user.clone(),
            group: group.clone(),
            version: version.clone(),
            message: message.clone(),
        }])
    })
    .await?;
    Ok(Json(api::ReportAccepted { user: b.user, group, version }))
}
