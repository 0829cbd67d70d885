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

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use ringfence_core::command;
use tokio_util::sync::CancellationToken;

use crate::controller;
use crate::state::Shared;

mod auth;
mod error;
mod events;
mod extract;
mod flags;
mod listen;
mod planning;
mod releases;
mod rollouts;
mod signals;
pub mod tls;
mod tokens;
mod workloads;

use crate::api::MAX_REQUEST_BYTES;
pub use error::{ApiError, ErrorKind};
pub use tokens::admin_token_path;

use events::{all_events, workload_events};
use flags::{kill_flag, list_flags, restore_flag};
use planning::plan;
use releases::{create_release, list_releases, show_release};
use rollouts::{deploy, rollback, show_rollout, verb, why};
use signals::{alertmanager_webhook, user_report};
use tokens::{create_token, list_tokens, revoke_token};
use workloads::{apply_spec, list_workloads, workload_status};

/// What every resource module needs, in one import.
mod prelude {
    pub(super) use std::sync::Arc;
    pub(super) use std::time::Duration;

    pub(super) use axum::Json;
    pub(super) use axum::extract::{Path, Query, State};
    pub(super) use axum::http::StatusCode;
    pub(super) use axum::response::{IntoResponse, Response};
    pub(super) use axum::routing::post;
    pub(super) use ringfence_core::command::{self, CommandError, ErrorCode};
    pub(super) use ringfence_core::release::ReleaseRequest;
    pub(super) use ringfence_core::rollout::Rollout;
    pub(super) use ringfence_core::spec::SpecError;
    pub(super) use ringfence_core::{Event, Release, explain};
    pub(super) use serde::{Deserialize, Serialize};

    pub(super) use super::auth::Caller;
    pub(super) use super::error::{ApiError, ErrorKind};
    pub(super) use super::extract::{Actor, Body, Params, St};
    pub(super) use super::planning::bake_warnings;
    pub(super) use crate::api::{PhaseAdvice, PhaseNeeds, PlanAdvice, ReportAccepted, Why, WorkloadStatus};
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
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            data_dir,
            tick: Duration::from_millis(100),
            stop_workloads_on_exit: true,
            allowed_hosts: Vec::new(),
            tls: None,
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
    if let Some(path) = tokens::bootstrap(&shared)? {
        tracing::info!(file = %path.display(), "first start: an admin token was written for this machine's CLI (mode 0600)");
        eprintln!(
            "ringfence: first start; the admin token is in {} (readable only by this user). The CLI on this machine finds it there; `ringfence token create` makes tokens for others.",
            path.display()
        );
    }
    let bound = listener.local_addr()?;
    let hosts = Arc::new(auth::HostPolicy::new(bound, &config.allowed_hosts));
    let app = router(shared.clone(), hosts);
    let serve_shutdown = shutdown.clone();
    listen::serve(listener, app, listen::Limits::default(), config.tls.clone(), serve_shutdown).await?;
    shared.shutdown.cancel();
    // Every loop finishes the round it is in (its intents recorded) before its processes go.
    // A round is bounded by its own timeouts (readiness, probes, smoke tests); past this
    // bound the server stops anyway, and the next start redoes any open intent.
    shared.tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), shared.tasks.wait()).await.is_err() {
        tracing::warn!("a controller loop did not finish its round within 30 s; stopping anyway");
    }
    if config.stop_workloads_on_exit {
        controller::stop_all(&shared).await;
    }
    Ok(())
}

/// The API's routes and layers. `hosts`: the `Host` names it answers to.
pub fn router(shared: Arc<Shared>, hosts: Arc<auth::HostPolicy>) -> Router {
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
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorKind::MethodNotAllowed, "this endpoint does not take that method; see docs/api.md")
        })
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), auth::authorize))
        .layer(axum::middleware::from_fn_with_state(hosts, auth::guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// The API described for tools (docs/openapi.json, embedded at build time).
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every route the server declares, as (method, path), read from this file's router so
    /// that a route added without its description fails here.
    pub(super) fn declared_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
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
