//! `ringfence server`: the versioned JSON HTTP API over the shared state, and the controller
//! loops. [`run`] takes a bound listener and a shutdown token, so tests and the demo run a
//! whole server on `127.0.0.1:0`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringfence_core::command::{self, CommandError, ErrorCode};
use ringfence_core::release::ReleaseRequest;
use ringfence_core::rollout::Rollout;
use ringfence_core::spec::SpecError;
use ringfence_core::state::{Desired, LkgEntry, Pin, ReplicaRecord, RouterRecord};
use ringfence_core::{Event, Release, explain};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::controller;
use crate::state::{AppendError, Shared, now};

pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// How often each workload's controller loop wakes without being told to.
    pub tick: Duration,
    /// Stop the workloads' processes on a clean shutdown (they survive a crash either way,
    /// and the next start adopts them).
    pub stop_workloads_on_exit: bool,
    /// The ringfence binary that runs routers and `{ringfence}` in commands.
    pub ringfence_bin: PathBuf,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            data_dir,
            tick: Duration::from_millis(100),
            stop_workloads_on_exit: true,
            ringfence_bin: std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the ringfence binary: {e}"))?,
        })
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared =
        Shared::open(config.data_dir.clone(), config.ringfence_bin.clone(), config.tick, shutdown.child_token())?;
    let names: Vec<String> = shared.world(|w| w.workloads.keys().cloned().collect());
    for name in &names {
        controller::spawn_workload(&shared, name);
    }
    let app = router(shared.clone());
    let serve_shutdown = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { serve_shutdown.cancelled().await }).await?;
    shared.shutdown.cancel();
    if config.stop_workloads_on_exit {
        // Let the loops see the cancellation before their processes go away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        controller::stop_all(&shared).await;
    }
    Ok(())
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/workloads", get(list_workloads).post(apply_spec))
        .route("/v1/workloads/{name}", get(workload_status))
        .route("/v1/workloads/{name}/releases", get(list_releases).post(create_release))
        .route("/v1/workloads/{name}/releases/{version}", get(show_release))
        .route("/v1/workloads/{name}/deploy", post(deploy))
        .route("/v1/workloads/{name}/pause", verb("pause", command::pause))
        .route("/v1/workloads/{name}/resume", verb("resume", command::resume))
        .route("/v1/workloads/{name}/promote", verb("promote", command::promote))
        .route("/v1/workloads/{name}/abort", verb("abort", command::abort))
        .route("/v1/workloads/{name}/rollback", post(rollback))
        .route("/v1/workloads/{name}/events", get(workload_events))
        .route("/v1/workloads/{name}/why", get(why))
        .route("/v1/workloads/{name}/rollouts/{id}", get(show_rollout))
        .route("/v1/events", get(all_events))
        .route("/v1/alerts", post(alertmanager_webhook))
        .route("/v1/workloads/{name}/plan", get(plan))
        .route("/v1/workloads/{name}/flags", get(list_flags))
        .route("/v1/workloads/{name}/flags/{flag}/kill", post(kill_flag))
        .route("/v1/workloads/{name}/flags/{flag}/restore", post(restore_flag))
        .route("/v1/workloads/{name}/reports", post(user_report))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see docs/api.md",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// One error shape for every endpoint: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let (status, code) = match e.code {
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorCode::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        };
        ApiError::new(status, code, e.message)
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> ApiError {
        match e {
            AppendError::Command(c) => c.into(),
            AppendError::Store(s) => {
                tracing::error!(error = %s, "event log write failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    format!("the event log could not be written: {s}"),
                )
            }
        }
    }
}

impl From<ringfence_store::StoreError> for ApiError {
    fn from(e: ringfence_store::StoreError) -> ApiError {
        AppendError::Store(e).into()
    }
}

/// The largest request body the API reads (a spec file, a release with its flags); the CLI
/// checks it before sending, so a refusal is an input error, not a broken connection.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// A JSON body that answers 400 with the serde message when it cannot be read.
pub struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_request" };
            ApiError::new(e.status(), code, e.body_text())
        })?;
        let bytes = if bytes.is_empty() { axum::body::Bytes::from_static(b"{}") } else { bytes };
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("request body: {e}")))
    }
}

/// Query parameters that answer 400 in the API's error shape when they cannot be read
/// (`?after=abc`), instead of axum's plain-text rejection.
pub struct Params<T>(T);

impl<S, T> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
    }
}

fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-ringfence-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_else(|| "anonymous".into())
}

type St = State<Arc<Shared>>;

/// The API described for tools (docs/openapi.json, embedded at build time).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    /// The spec file's text (TOML).
    spec: String,
    /// File name for error messages.
    #[serde(default = "default_file")]
    file: String,
}

fn default_file() -> String {
    "spec.toml".into()
}

#[derive(Serialize)]
struct Applied {
    workload: String,
    changed: bool,
    /// Bakes too short for the workload's measured traffic (see `GET .../plan`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

async fn apply_spec(State(sh): St, headers: HeaderMap, Body(b): Body<ApplyBody>) -> Result<Json<Applied>, ApiError> {
    let spec = ringfence_core::spec::parse(&b.file, &b.spec).map_err(|errors: Vec<SpecError>| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_spec",
        message: errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        details: Some(serde_json::to_value(&errors).unwrap_or_default()),
    })?;
    let name = spec.workload.name.clone();
    let events = sh.command(&name, &actor(&headers), "spec applied", |w| {
        Ok(command::apply_spec(w, &spec)?.into_iter().collect())
    })?;
    controller::spawn_workload(&sh, &name);
    let warnings = bake_warnings(&sh, &name).await;
    Ok(Json(Applied { workload: name, changed: !events.is_empty(), warnings }))
}

#[derive(Serialize)]
struct WorkloadSummary {
    name: String,
    stable: Option<String>,
    rollout: Option<RolloutSummary>,
}

#[derive(Serialize)]
struct RolloutSummary {
    id: String,
    release: String,
    status: String,
    phase: usize,
    phases: usize,
}

fn summary(r: &Rollout) -> RolloutSummary {
    RolloutSummary {
        id: r.id.clone(),
        release: r.release.clone(),
        status: r.status.as_str().into(),
        phase: r.phase + 1,
        phases: r.phases.len(),
    }
}

async fn list_workloads(State(sh): St) -> Json<Vec<WorkloadSummary>> {
    Json(sh.world(|w| {
        w.workloads
            .values()
            .map(|ws| WorkloadSummary {
                name: ws.name.clone(),
                stable: ws.stable.clone(),
                rollout: ws.latest_rollout().map(summary),
            })
            .collect()
    }))
}

/// Everything `ringfence status` shows.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WorkloadStatus {
    pub workload: String,
    pub criticality: ringfence_core::spec::Criticality,
    pub stable: Option<String>,
    pub last_known_good: Option<LkgEntry>,
    pub pin: Option<Pin>,
    pub router: Option<RouterRecord>,
    pub replicas: Vec<ReplicaRecord>,
    pub desired: Desired,
    pub routes: Option<(u64, Vec<ringfence_core::event::RouteGroup>)>,
    pub rollout: Option<Rollout>,
    /// The controller's latest verdict on the rollout in progress, with the health model.
    pub health: Option<crate::state::LiveHealth>,
    pub alerts_firing: Vec<ringfence_core::state::FiringAlert>,
    pub now: ringfence_core::Timestamp,
}

async fn workload_status(State(sh): St, Path(name): Path<String>) -> Result<Json<WorkloadStatus>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok(Json(WorkloadStatus {
            workload: ws.name.clone(),
            criticality: ws.spec.workload.criticality,
            stable: ws.stable.clone(),
            last_known_good: ws.lkg().cloned(),
            pin: ws.pin.clone(),
            router: ws.router.clone(),
            replicas: ws.replicas.values().cloned().collect(),
            desired: ws.desired(),
            routes: ws.routes.clone(),
            rollout: ws.latest_rollout().cloned(),
            health: live.filter(|l| ws.active_rollout().is_some_and(|r| r.id == l.rollout_id)),
            alerts_firing: ws.alerts.values().cloned().collect(),
            now: now(),
        }))
    })
}

#[derive(Serialize)]
struct Created {
    created: bool,
    release: Release,
}

async fn create_release(
    State(sh): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(req): Body<ReleaseRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let who = actor(&headers);
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

async fn list_releases(State(sh): St, Path(name): Path<String>) -> Result<Json<Vec<Release>>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok(Json(ws.release_order.iter().filter_map(|v| ws.releases.get(v).cloned()).collect()))
    })
}

async fn show_release(State(sh): St, Path((name, version)): Path<(String, String)>) -> Result<Json<Release>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        ws.releases.get(&version).cloned().map(Json).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{name} has no release {version:?}"))
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    version: String,
    #[serde(default)]
    reason: String,
}

#[derive(Serialize)]
struct Started {
    rollout_id: String,
    /// Bakes too short for the workload's measured traffic (see `GET .../plan`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

async fn deploy(
    State(sh): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(b): Body<DeployBody>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let reason = if b.reason.is_empty() { format!("deploy {}", b.version) } else { b.reason.clone() };
    let events = sh.command(&name, &actor(&headers), &reason, |w| Ok(vec![command::deploy(w, &name, &b.version)?]))?;
    let id = events.first().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    let warnings = bake_warnings(&sh, &name).await;
    Ok((StatusCode::ACCEPTED, Json(Started { rollout_id: id, warnings })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    to: Option<String>,
}

type Verb = fn(&ringfence_core::World, &str) -> Result<ringfence_core::EventKind, CommandError>;

/// The handler of a rollout verb (pause, resume, promote, abort): same body, same answer.
fn verb(name: &'static str, f: Verb) -> axum::routing::MethodRouter<Arc<Shared>> {
    post(move |State(sh): St, h: HeaderMap, Path(n): Path<String>, Body(b): Body<ReasonBody>| async move {
        simple(sh, h, n, name, b.reason, f).await
    })
}

async fn simple(
    sh: Arc<Shared>,
    headers: HeaderMap,
    name: String,
    verb: &str,
    reason: String,
    f: Verb,
) -> Result<Json<Started>, ApiError> {
    let reason = if reason.is_empty() { verb.to_string() } else { reason };
    let events = sh.command(&name, &actor(&headers), &reason, |w| Ok(vec![f(w, &name)?]))?;
    let id = events.first().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(Started { rollout_id: id, warnings: Vec::new() }))
}

async fn rollback(
    State(sh): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(b): Body<ReasonBody>,
) -> Result<Json<Started>, ApiError> {
    let who = actor(&headers);
    let reason = if b.reason.is_empty() { "rollback to last known good".to_string() } else { b.reason.clone() };
    let events =
        sh.command(&name, &who, &reason, |w| Ok(vec![command::rollback(w, &name, b.to.as_deref(), &who, &b.reason)?]))?;
    let id = events.first().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(Started { rollout_id: id, warnings: Vec::new() }))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

async fn workload_events(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    sh.world(|w| command::workload(w, &name).map(|_| ()))?;
    Ok(Json(sh.events(Some(&name), q.after, q.limit.min(10_000))?))
}

async fn all_events(State(sh): St, Params(q): Params<EventsQuery>) -> Result<Json<Vec<Event>>, ApiError> {
    Ok(Json(sh.events(None, q.after, q.limit.min(10_000))?))
}

#[derive(Serialize, Deserialize)]
pub struct Why {
    pub text: String,
    pub rollout: Option<Rollout>,
}

async fn why(State(sh): St, Path(name): Path<String>) -> Result<Json<Why>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let rollout = ws.latest_rollout().cloned();
        // The live verdict belongs to the rollout it was computed for, not a later one.
        let live = live.filter(|l| rollout.as_ref().is_some_and(|r| r.id == l.rollout_id));
        Ok(Json(Why { text: explain::why_with_live(ws, live.as_ref().map(|l| &l.verdict)), rollout }))
    })
}

async fn show_rollout(State(sh): St, Path((name, id)): Path<(String, String)>) -> Result<Json<Rollout>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        ws.rollout(&id)
            .cloned()
            .map(Json)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{name} has no rollout {id:?}")))
    })
}

/// Alertmanager's webhook body (the fields ringfence reads).
#[derive(Deserialize)]
struct AlertmanagerBody {
    alerts: Vec<AmAlert>,
}

#[derive(Deserialize)]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: String,
}

#[derive(Serialize)]
struct AlertsAccepted {
    /// (workload, alertname, status) for every alert that concerned a workload.
    matched: Vec<(String, String, String)>,
    ignored: usize,
}

/// `POST /v1/alerts`: point an Alertmanager webhook receiver here. An alert concerns a
/// workload when it carries all the labels of the workload's `health.alerts.match` (by
/// default `workload=<name>`); a firing one halts that workload's rollout.
async fn alertmanager_webhook(
    State(sh): St,
    Body(body): Body<AlertmanagerBody>,
) -> Result<Json<AlertsAccepted>, ApiError> {
    let workloads: Vec<(String, std::collections::BTreeMap<String, String>)> = sh
        .world(|w| w.workloads.values().map(|ws| (ws.name.clone(), ws.spec.health.alerts.matchers.clone())).collect());
    let mut matched = Vec::new();
    let mut ignored = 0;
    for a in body.alerts {
        if a.status != "firing" && a.status != "resolved" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("alert status must be \"firing\" or \"resolved\", found {:?}", a.status),
            ));
        }
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
            sh.command(name, "alertmanager", &format!("alert {alertname} {}", a.status), |_| {
                Ok(vec![ringfence_core::EventKind::AlertReceived {
                    fingerprint: fingerprint.clone(),
                    alertname: alertname.clone(),
                    status: a.status.clone(),
                    labels: a.labels.clone(),
                    summary: summary.clone(),
                }])
            })?;
            matched.push((name.clone(), alertname.clone(), a.status.clone()));
        }
        if !any {
            ignored += 1;
        }
    }
    Ok(Json(AlertsAccepted { matched, ignored }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    user: String,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
pub struct ReportAccepted {
    pub user: String,
    pub group: Option<String>,
    pub version: Option<String>,
}

/// `POST /v1/workloads/{w}/reports`: a user reports a problem. The user's key is mapped to the
/// rollout group and version the router sends them to, so reports count per group.
async fn user_report(
    State(sh): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(b): Body<ReportBody>,
) -> Result<Json<ReportAccepted>, ApiError> {
    if b.user.trim().is_empty() || b.user.len() > 256 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "field `user`: expected the user's key (1 to 256 characters), as sent in the sticky header or cookie",
        ));
    }
    let admin = sh.world(|w| command::workload(w, &name).map(|ws| ws.router.as_ref().map(|r| r.admin.clone())))?;
    let mut group = None;
    let mut version = None;
    if let Some(admin) = admin {
        let url = format!("http://{admin}/v1/assign?user={}", crate::http::encode_component(&b.user));
        if let Ok(resp) = sh.http.get(&url, Duration::from_secs(2)).await
            && resp.status.is_success()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&resp.body)
        {
            group = v["group"].as_str().map(String::from);
            version = v["version"].as_str().map(String::from);
        }
    }
    let message: String = b.message.chars().take(2000).collect();
    sh.command(&name, &actor(&headers), "user report", |_| {
        Ok(vec![ringfence_core::EventKind::UserReported {
            user: b.user.clone(),
            group: group.clone(),
            version: version.clone(),
            message: message.clone(),
        }])
    })?;
    Ok(Json(ReportAccepted { user: b.user, group, version }))
}

/// The flag sets users are evaluating now, per rollout group, with the kill switch applied.
async fn list_flags(State(sh): St, Path(name): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
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
struct KillBody {
    #[serde(default)]
    reason: String,
}

/// The kill switch. Always allowed, whatever the rollout state: it is the emergency path.
async fn kill_flag(
    State(sh): St,
    headers: HeaderMap,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<KillBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "field `reason`: the kill switch is audited; say why",
        ));
    }
    let events = sh.command(&name, &actor(&headers), &b.reason, |w| Ok(vec![command::kill_flag(w, &name, &flag)?]))?;
    Ok(Json(serde_json::json!({"flag": flag, "killed": true, "seq": events.first().map(|e| e.seq)})))
}

async fn restore_flag(
    State(sh): St,
    headers: HeaderMap,
    Path((name, flag)): Path<(String, String)>,
    Body(b): Body<KillBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = if b.reason.is_empty() { "kill switch released".to_string() } else { b.reason };
    let events = sh.command(&name, &actor(&headers), &reason, |w| Ok(vec![command::restore_flag(w, &name, &flag)?]))?;
    Ok(Json(serde_json::json!({"flag": flag, "killed": false, "seq": events.first().map(|e| e.seq)})))
}

#[derive(Deserialize)]
struct PlanQuery {
    /// Total requests per second to plan for; measured at the router over one second if absent.
    rps: Option<f64>,
}

#[derive(Serialize, Deserialize)]
pub struct PlanAdvice {
    pub rps: f64,
    pub measured: bool,
    pub stable: Option<String>,
    pub stable_error_rate: f64,
    pub target_error_ratio: f64,
    pub target_latency_ratio: f64,
    /// The spec's power requirement; 0 means phases pass without it.
    pub power: f64,
    pub phases: Vec<PhaseAdvice>,
}

#[derive(Serialize, Deserialize)]
pub struct PhaseAdvice {
    pub name: String,
    pub weight: f64,
    pub bake_s: f64,
    /// What the phase needs: the time for a release as good as the stable one to pass (the
    /// figure `status` counts down), or with `power = 0` the time to catch the targets.
    pub needed_s: Option<f64>,
    /// The time for a release as good as the stable one to pass (95% of the time).
    #[serde(default)]
    pub pass_s: Option<f64>,
    /// The time to catch the target regressions (80% of the time, or the spec's power).
    #[serde(default)]
    pub detect_s: Option<f64>,
    pub warning: Option<String>,
}

/// `GET /v1/workloads/{w}/plan`: how long each phase needs, at today's traffic, to catch the
/// target regressions with the configured power and for a release as good as the stable one
/// to pass, and which bakes are too short.
async fn plan(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<PlanQuery>,
) -> Result<Json<PlanAdvice>, ApiError> {
    let (spec, stable, admin) = plan_inputs(&sh, &name)?;
    let first = match &admin {
        Some(a) => read_stats(&sh, a).await,
        None => None,
    };
    let (rps, measured) = match (q.rps, &first, &admin) {
        (Some(r), _, _) if r.is_finite() && r > 0.0 => (r, false),
        (Some(r), _, _) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("rps must be above 0, found {r}"),
            ));
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

/// The spec, the stable version and the router's admin address of a workload.
fn plan_inputs(
    sh: &Shared,
    name: &str,
) -> Result<(ringfence_core::spec::WorkloadSpec, Option<String>, Option<String>), ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, name)?;
        Ok::<_, ApiError>((ws.spec.clone(), ws.stable.clone(), ws.router.as_ref().map(|r| r.admin.clone())))
    })
}

async fn read_stats(sh: &Shared, admin: &str) -> Option<ringfence_router::StatsSnapshot> {
    let r = sh.http.get(&format!("http://{admin}/v1/stats"), Duration::from_secs(2)).await.ok()?;
    serde_json::from_slice::<ringfence_router::StatsSnapshot>(&r.body).ok()
}

fn total_requests(s: &ringfence_router::StatsSnapshot) -> u64 {
    s.versions.values().map(|v| v.requests).sum()
}

/// The planner's advice for a spec at `rps`, with the stable version's error rate and latency
/// taken from the router's counters.
fn advise(
    spec: &ringfence_core::spec::WorkloadSpec,
    stable: Option<String>,
    stats: Option<&ringfence_router::StatsSnapshot>,
    rps: f64,
    measured: bool,
) -> PlanAdvice {
    use ringfence_core::analysis::SequentialConfig;
    use ringfence_core::analysis::planner::{PhasePlan, Regression, check_bakes};
    let stable_stats = stable.as_ref().and_then(|v| stats?.versions.get(v).cloned());
    let stable_error_rate =
        stable_stats.as_ref().filter(|s| s.requests > 0).map(|s| s.errors as f64 / s.requests as f64).unwrap_or(0.0);
    let latency = stable_stats.map(|s| s.latency_buckets).unwrap_or_default();
    let a = &spec.health.analysis;
    let config = SequentialConfig::from_spec(a);
    let plan: Vec<PhasePlan> = spec
        .rollout
        .phases
        .iter()
        .map(|p| PhasePlan { weight_bp: p.weight_bp(), bake_s: p.bake.as_ms() as f64 / 1000.0 })
        .collect();
    let target_rate = config.pass_error_limit(stable_error_rate);
    // Latency can only be planned from the stable version's latency distribution, and only
    // when the target slow-down at its p99 exceeds the latency margin: x1.5 of a 0.3 ms
    // service is a difference not worth acting on.
    let mut regressions = vec![Regression::ErrorRate(target_rate)];
    let p99_us = ringfence_core::analysis::latency::Hist::new(&latency, &[]).quantile(0.99);
    if let Some(p99) = p99_us
        && p99 as f64 * (a.target_latency_ratio - 1.0) > config.latency_margin_us as f64
    {
        regressions.push(Regression::LatencyScale(a.target_latency_ratio));
    }
    let advice = check_bakes(&config, &plan, rps, stable_error_rate, &latency, &regressions);
    let phases = spec
        .rollout
        .phases
        .iter()
        .zip(advice)
        .map(|(p, adv)| PhaseAdvice {
            name: p.name.clone(),
            weight: p.weight,
            bake_s: adv.bake_s,
            needed_s: adv.needed_s,
            pass_s: adv.pass_s,
            detect_s: adv.detect_s,
            warning: if rps <= 0.0 { Some("no traffic measured: nothing can be judged".into()) } else { adv.warning },
        })
        .collect();
    PlanAdvice {
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
async fn bake_warnings(sh: &Shared, name: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every route the server declares, as (method, path), read from this file's router so
    /// that a route added without its description fails here.
    fn declared_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("server.rs");
        let mut routes = BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let rest = &line[".route(\"".len()..];
            let (path, handlers) = rest.split_once('"').expect("a quoted path");
            let methods: Vec<&str> = if handlers.contains("verb(") {
                vec!["post"]
            } else {
                ["get(", "post(", "put(", "delete("]
                    .iter()
                    .filter(|m| handlers.contains(*m))
                    .map(|m| m.trim_end_matches('('))
                    .collect()
            };
            assert!(!methods.is_empty(), "no method found for {path}: {line}");
            for m in methods {
                routes.insert((m.to_string(), path.to_string()));
            }
        }
        routes
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_only_those() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut described = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                assert!(op["summary"].is_string(), "{method} {path} has no summary");
                assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" {
                        let name = p["name"].as_str().expect("a parameter name");
                        assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: no {{{name}}} in the path");
                    }
                }
                described.insert((method.clone(), path.clone()));
            }
        }
        let declared = declared_routes();
        assert!(declared.len() > 20, "the route scan found only {declared:?}");
        assert_eq!(declared, described, "docs/openapi.json and the server's routes differ");
        // Every schema reference resolves.
        let text = super::OPENAPI;
        for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = r.split('"').next().expect("a schema name");
            assert!(doc["components"]["schemas"][name].is_object(), "missing schema {name}");
        }
    }
}
