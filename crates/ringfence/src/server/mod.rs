//! `ringfence server`: the versioned JSON HTTP API over the shared state, and the controller
//! loops. [`run`] takes a bound listener and a shutdown token, so tests and the demo run a
//! whole server on `127.0.0.1:0`.

//!
//! One module per resource, one error type ([`ApiError`]) with one status-code policy, and
//! one table of routes ([`router`]): a new resource is a new module and its lines there.
//! Requests pass two layers before any handler ([`auth`]): the request's origin, then the
//! caller's token and the route's permission.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::handler::Handler;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use ringfence_core::command;
use tokio_util::sync::CancellationToken;

use crate::controller;
use crate::state::Shared;

mod auth;
mod drills;
mod error;
mod events;
mod extract;
mod flags;
mod governance;
mod incidents;
mod listen;
mod metrics;
mod planning;
mod releases;
mod rollouts;
mod routes;
mod signals;
mod status_page;
pub mod tls;
mod tokens;
mod ui;
mod wire;
mod workloads;

pub use error::{ApiError, ErrorKind};
use ringfence_api::MAX_REQUEST_BYTES;
pub use tokens::admin_token_path;

use drills::{abort_drill, gameday, gameday_svg, lint_workload, list_drills, start_drill};
use events::{all_events, workload_events};
use flags::{kill_flag, list_flags, restore_flag};
use governance::{approve, attest, attestation_hook, parity, reject, restart_line, stop_line};
use incidents::{
    ack_incident, assign_follow_up, close_follow_up, create_follow_up, list_follow_ups, list_incidents,
    resolve_incident, show_dora, show_dora_svg, show_incident, show_postmortem, show_postmortem_svg,
};
use planning::plan;
use releases::{clear_hold, create_release, list_releases, revoke_release, show_release};
use rollouts::{bypass, deploy, promote, redeploy, rollback, show_rollout, verb, why};
use signals::{alertmanager_webhook, user_report};
use tokens::{create_token, list_tokens, revoke_token};
use workloads::{apply_spec, delete_workload, list_workloads, workload_status};

/// What every resource module needs, in one import.
mod prelude {
    pub(super) use std::sync::Arc;
    pub(super) use std::time::Duration;

    pub(super) use axum::Json;
    pub(super) use axum::extract::{Query, State};
    pub(super) use axum::http::StatusCode;
    pub(super) use axum::response::{IntoResponse, Response};
    pub(super) use axum::routing::post;
    pub(super) use ringfence_api as api;
    pub(super) use ringfence_core::command::{self, CommandError, ErrorCode};
    pub(super) use ringfence_core::spec::SpecError;
    pub(super) use ringfence_core::{Event, explain};
    pub(super) use serde::Deserialize;

    pub(super) use super::auth::Caller;
    pub(super) use super::error::{ApiError, ErrorKind};
    pub(super) use super::extract::{Actor, Body, Params, Path, St};
    pub(super) use super::planning::bake_warnings;
    pub(super) use super::wire;
    pub(super) use crate::controller;
    pub(super) use crate::state::{AppendError, Shared, now};
}

pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// How often each workload's controller loop wakes without being told to.
    pub tick: Duration,
    /// Stop the workloads' processes on a clean shutdown (they survive a crash either way,
    /// and the next start adopts them).
    pub stop_workloads_on_exit: bool,
    /// The ringfence binary that runs routers and `{ringfence}` in commands.
    pub ringfence_bin: PathBuf,
    /// Names the API answers to besides the loopback ones (`Host` header values).
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this configuration ([`tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the event log is: SQLite in the data directory (the default), or PostgreSQL.
    pub store: crate::state::StoreLocation,
    /// One replica of several on a shared PostgreSQL log: this replica's id.
    pub replica: Option<String>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            data_dir,
            tick: Duration::from_millis(100),
            stop_workloads_on_exit: true,
            allowed_hosts: Vec::new(),
            tls: None,
            store: crate::state::StoreLocation::Sqlite,
            replica: None,
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
    let shared = Shared::open(&config, shutdown.child_token())?;
    if shared.replica.is_some() {
        spawn_replica_tasks(&shared);
    }
    let names: Vec<String> = shared.world(|w| w.workloads.keys().cloned().collect());
    for name in &names {
        controller::spawn_workload(&shared, name);
    }
    if let Some(path) = tokens::bootstrap(&shared).await? {
        tracing::info!(file = %path.display(), "first start: an admin token was written for this machine's CLI (mode 0600)");
        eprintln!(
            "ringfence: first start; the admin token is in {} (readable only by this user). The CLI on this machine finds it there; `ringfence token create` makes tokens for others.",
            path.display()
        );
    }
    let bound = listener.local_addr()?;
    let hosts = Arc::new(auth::HostPolicy::new(bound, &config.allowed_hosts));
    let app = router(shared.clone(), hosts, ui::UiConfig { secure_cookies: config.tls.is_some() });
    let serve_shutdown = shutdown.clone();
    shared.traffic.tier.listening();
    listen::serve(listener, app, listen::Limits::default(), config.tls.clone(), serve_shutdown).await?;
    shared.shutdown.cancel();
    // Every loop finishes the round it is in (its intents recorded) before its processes go.
    // A round is bounded by its own timeouts (readiness, probes, smoke tests); past this
    // bound the server stops anyway, and the next start redoes any open intent.
    shared.tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), shared.tasks.wait()).await.is_err() {
        tracing::warn!("a controller loop did not finish its round within 30 s; stopping anyway");
    }
    // A replica leaves the workloads running for the replica that takes them over.
    shared.release_leases();
    if config.stop_workloads_on_exit && shared.replica.is_none() {
        controller::stop_all(&shared).await;
    }
    if let Err(e) = shared.seal() {
        tracing::warn!(error = %e, "cannot sign the audit log's last digest");
    }
    Ok(())
}

/// A replica's two background duties: follow what the other replicas append (every 100 ms),
/// and take, renew or let go of the workloads' leases, starting the controller of each
/// workload it comes to lead.
fn spawn_replica_tasks(shared: &Arc<Shared>) {
    let sh = shared.clone();
    shared.tasks.spawn(async move {
        loop {
            if let Err(e) = sh.catch_up() {
                tracing::warn!(error = %e, "cannot read what the other replicas appended");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = sh.shutdown.cancelled() => break,
            }
        }
    });
    let sh = shared.clone();
    shared.tasks.spawn(async move {
        loop {
            match sh.renew_leases() {
                Ok(gained) => {
                    for name in gained {
                        controller::spawn_workload(&sh, &name);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the leases"),
            }
            tokio::select! {
                _ = tokio::time::sleep(crate::state::LEASE_RENEW) => {}
                _ = sh.shutdown.cancelled() => break,
            }
        }
    });
}

/// The API's routes and layers, and the pages of the hub (`/ui`, which check the same
/// tokens themselves, from the session cookie). `hosts`: the `Host` names it answers to.
pub fn router(shared: Arc<Shared>, hosts: Arc<auth::HostPolicy>, ui: ui::UiConfig) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorKind::MethodNotAllowed, "this endpoint does not take that method; see docs/api.md")
        })
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), auth::authorize))
        .merge(ui::router(ui))
        .layer(axum::middleware::from_fn_with_state(hosts, auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// The one table of the API's routes. Each line records its method and path as it adds the
/// route, so the OpenAPI document (generated from `ringfence-api`) is compared with what is
/// served, not with text.
fn routes() -> Routes {
    Routes::default()
        .get("/v1/health", || async { Json(serde_json::json!({"status": "ok"})) })
        .get("/v1/openapi.json", openapi)
        .get("/v1/workloads", list_workloads)
        .post("/v1/workloads", apply_spec)
        .get("/v1/workloads/{name}", workload_status)
        .delete("/v1/workloads/{name}", delete_workload)
        .get("/v1/workloads/{name}/releases", list_releases)
        .post("/v1/workloads/{name}/releases", create_release)
        .get("/v1/workloads/{name}/releases/{version}", show_release)
        .post("/v1/workloads/{name}/releases/{version}/clear-hold", clear_hold)
        .post("/v1/workloads/{name}/releases/{version}/revoke", revoke_release)
        .post("/v1/workloads/{name}/deploy", deploy)
        .post_verb("/v1/workloads/{name}/pause", "pause", command::pause)
        .post_verb("/v1/workloads/{name}/resume", "resume", command::resume)
        .post("/v1/workloads/{name}/promote", promote)
        .post_verb("/v1/workloads/{name}/abort", "abort", command::abort)
        .post("/v1/workloads/{name}/rollback", rollback)
        .post("/v1/workloads/{name}/bypass", bypass)
        .post("/v1/workloads/{name}/redeploy", redeploy)
        .post("/v1/workloads/{name}/approve", approve)
        .post("/v1/workloads/{name}/reject", reject)
        .post("/v1/workloads/{name}/releases/{version}/attestations", attest)
        .get("/v1/workloads/{name}/parity", parity)
        .post("/v1/line/stop", stop_line)
        .post("/v1/line/restart", restart_line)
        .post("/v1/hooks/{name}/attestations", attestation_hook)
        .get("/v1/workloads/{name}/incidents", list_incidents)
        .get("/v1/workloads/{name}/incidents/{id}", show_incident)
        .post("/v1/workloads/{name}/incidents/{id}/ack", ack_incident)
        .post("/v1/workloads/{name}/incidents/{id}/resolve", resolve_incident)
        .get("/v1/workloads/{name}/postmortem", show_postmortem)
        .get("/v1/workloads/{name}/dora", show_dora)
        .get("/v1/workloads/{name}/dora.svg", show_dora_svg)
        .get("/v1/workloads/{name}/postmortem.svg", show_postmortem_svg)
        .get("/v1/workloads/{name}/followups", list_follow_ups)
        .post("/v1/workloads/{name}/followups", create_follow_up)
        .post("/v1/workloads/{name}/followups/{id}/assign", assign_follow_up)
        .post("/v1/workloads/{name}/followups/{id}/close", close_follow_up)
        .get("/v1/metrics", metrics::metrics)
        .get("/status", status_page::index)
        .get("/status/{name}", status_page::workload_page)
        .get("/status/{name}/feed.atom", status_page::feed)
        .get("/v1/workloads/{name}/events", workload_events)
        .get("/v1/workloads/{name}/why", why)
        .get("/v1/workloads/{name}/rollouts/{id}", show_rollout)
        .get("/v1/events", all_events)
        .post("/v1/alerts", alertmanager_webhook)
        .get("/v1/workloads/{name}/plan", plan)
        .get("/v1/workloads/{name}/lint", lint_workload)
        .get("/v1/workloads/{name}/drills", list_drills)
        .post("/v1/workloads/{name}/drills", start_drill)
        .post("/v1/workloads/{name}/drills/abort", abort_drill)
        .get("/v1/workloads/{name}/gameday", gameday)
        .get("/v1/workloads/{name}/gameday.svg", gameday_svg)
        .get("/v1/workloads/{name}/flags", list_flags)
        .post("/v1/workloads/{name}/flags/{flag}/kill", kill_flag)
        .post("/v1/workloads/{name}/flags/{flag}/restore", restore_flag)
        .post("/v1/workloads/{name}/reports", user_report)
        .get("/v1/routes", routes::routes)
        .post("/v1/routes/report", routes::report)
        .get("/v1/tokens", list_tokens)
        .post("/v1/tokens", create_token)
        .delete("/v1/tokens/{id}", revoke_token)
}

#[derive(Default)]
struct Routes {
    router: Router<Arc<Shared>>,
    /// (method, path) of every route, in the order added.
    declared: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<Arc<Shared>>) -> Routes {
        self.declared.push((method, path));
        self.router = self.router.route(path, route);
        self
    }

    fn get<H: Handler<T, Arc<Shared>>, T: 'static>(self, path: &'static str, h: H) -> Routes {
        self.add("get", path, get(h))
    }

    fn post<H: Handler<T, Arc<Shared>>, T: 'static>(self, path: &'static str, h: H) -> Routes {
        self.add("post", path, post(h))
    }

    fn delete<H: Handler<T, Arc<Shared>>, T: 'static>(self, path: &'static str, h: H) -> Routes {
        self.add("delete", path, axum::routing::delete(h))
    }

    /// A rollout verb (pause, resume, promote, abort): a POST with a reason.
    fn post_verb(self, path: &'static str, name: &'static str, f: rollouts::Verb) -> Routes {
        self.add("post", path, verb(name, f))
    }
}

/// The API described for tools, generated from the wire types (`ringfence-api`); the same
/// text as docs/openapi.json, which a test keeps current.
pub fn openapi_json() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(ringfence_api::openapi::document_json);
    &DOC
}

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every route the server serves, as (method, path).
    pub(super) fn declared_routes() -> BTreeSet<(String, String)> {
        super::routes().declared.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_only_those() {
        let doc: serde_json::Value = serde_json::from_str(super::openapi_json()).expect("the document is JSON");
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
        assert_eq!(declared.len(), super::routes().declared.len(), "a route is added twice");
        assert_eq!(declared, described, "the OpenAPI document (crates/api) and the server's routes differ");
        // Every schema reference resolves.
        let text = super::openapi_json();
        for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = r.split('"').next().expect("a schema name");
            assert!(doc["components"]["schemas"][name].is_object(), "missing schema {name}");
        }
    }

    /// docs/openapi.json is what people and tools read without a server: the generated
    /// document, written by `cargo xtask openapi`.
    #[test]
    fn the_committed_openapi_document_is_current() {
        let committed = include_str!("../../../../docs/openapi.json");
        assert!(
            committed == super::openapi_json(),
            "docs/openapi.json is stale: run `cargo xtask openapi` and commit it"
        );
    }
}
