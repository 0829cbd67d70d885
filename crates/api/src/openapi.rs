//! The OpenAPI document, generated from the wire types and the operations declared here.
//!
//! Each operation below is a declaration, not a handler: the server's router (in
//! `crates/ringfence/src/server/mod.rs`) serves them, and a test there checks that the two
//! list the same routes. `docs/openapi.json` is this document as written by
//! `cargo xtask openapi`; a test fails when it is stale.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::*;

/// The API's description for tools, as served at `GET /v1/openapi.json`.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as pretty JSON, the form committed in `docs/openapi.json`.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// Routes anyone may call without a token.
pub const PUBLIC: &[&str] =
    &["/v1/health", "/v1/hooks/{name}/attestations", "/status", "/status/{name}", "/status/{name}/feed.atom"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ringfence",
        version = "1",
        description = "The ringfence server's HTTP API. Every endpoint but `/v1/health` needs `Authorization: Bearer <token>` and a role that grants it (docs/security.md). Every change is recorded as an event with the token's name as its actor and the request's reason; a refused request changes nothing. See docs/api.md."
    ),
    servers((url = "http://127.0.0.1:7070")),
    paths(
        health, openapi_json, list_workloads, apply_spec, workload_status, delete_workload, list_releases, create_release,
        show_release, clear_hold, revoke_release, attest, deploy, pause, resume, promote, abort, rollback, bypass, redeploy,
        approve, reject, parity, stop_line, restart_line, attestation_hook, list_incidents, show_incident, ack_incident, resolve_incident,
        show_postmortem, show_postmortem_svg, show_dora, show_dora_svg, list_follow_ups, create_follow_up, assign_follow_up, close_follow_up, metrics, status_index, status_page, status_feed, workload_events, why, show_rollout,
        all_events, alerts, plan, lint, list_drills, start_drill, abort_drill, gameday, gameday_svg, list_flags, kill_flag, restore_flag, report, routes, routes_report, list_tokens, create_token,
        revoke_token
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    tags(
        (name = "workloads", description = "Specs, status and the planner"),
        (name = "releases", description = "Immutable, versioned releases"),
        (name = "rollouts", description = "Deploying, steering and explaining rollouts"),
        (name = "events", description = "The event log"),
        (name = "signals", description = "Alerts and user reports"),
        (name = "routing", description = "The router tier: tables and traffic counters"),
        (name = "flags", description = "Feature flags and the kill switch"),
        (name = "governance", description = "Approvals, attestations, environments, stopping the line"),
        (name = "incidents", description = "Incidents of failed rollouts, postmortems, DORA metrics"),
        (name = "drills", description = "Failure-mode analysis, mitigation drills with injected faults, game days"),
        (name = "tokens", description = "API tokens"),
        (name = "server", description = "The server itself")
    )
)]
struct ApiDoc;

/// What every operation shares: the bearer token (but on the public routes), and the error
/// answers that follow from its shape rather than its handler (the layers in front of every
/// handler, the extractors of its path, query and body, the checks and the log every command
/// passes), all in the one error shape. With these, every status an operation can answer is
/// listed (a test sends it generated requests and fails on one that is not).
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token, `rf1.<id>.<secret>` (`ringfence token create`; the server writes the first admin token to `<data-dir>/admin.token`).",
                    ))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            for op in operations(item) {
                let has_query = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)));
                if public {
                    op.security = Some(vec![SecurityRequirement::default()]);
                    add_error(op, "403", "the Host or Origin is not allowed");
                } else {
                    add_error(op, "401", "no token, or one that is unknown, expired or revoked");
                    add_error(op, "403", "the token's roles do not grant this, or the Host or Origin is not allowed");
                }
                if path.contains('{') {
                    add_error(op, "404", "no such workload (or release, rollout, item)");
                }
                if path.contains('{') || has_query || op.request_body.is_some() {
                    add_error(
                        op,
                        "400",
                        "the request does not fit this document: a path segment or query parameter that cannot be read or is out of its range, or a body that is not the JSON expected (a field that does not exist, a wrong type)",
                    );
                }
                if op.request_body.is_some() {
                    add_error(op, "413", "the body is larger than 2 MiB");
                    add_error(op, "415", "the body is not sent as application/json");
                }
            }
            // Every command (a POST with a body, a DELETE) is checked against the state and
            // the rules, and appends to the log; a replica racing another's write is refused
            // with 409 too.
            for op in [&mut item.post, &mut item.delete].into_iter().flatten() {
                add_error(op, "409", "refused in the current state, or another replica changed it at the same moment");
                add_error(op, "422", "read, but a value breaks a rule (the message names it)");
                add_error(op, "500", "the event log could not be written: nothing changed");
            }
        }
        if let Some(components) = doc.components.as_mut() {
            merge_flattened(&mut components.schemas);
        }
    }
}

/// A struct that flattens another (`#[serde(flatten)]`) is generated as `allOf` of the two,
/// but each part says `additionalProperties: false`, so no object fits both: the parts are
/// merged into the one object the server reads.
fn merge_flattened(schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>) {
    use utoipa::openapi::schema::{AdditionalProperties, Object};
    let closed = |o: &Object| matches!(o.additional_properties.as_deref(), Some(AdditionalProperties::FreeForm(false)));
    let snapshot = schemas.clone();
    for schema in schemas.values_mut() {
        let RefOr::T(Schema::AllOf(all)) = schema else { continue };
        let parts: Option<Vec<&Object>> = all
            .items
            .iter()
            .map(|p| match p {
                RefOr::T(Schema::Object(o)) => Some(o),
                RefOr::Ref(r) => match r.ref_location.rsplit('/').next().and_then(|n| snapshot.get(n)) {
                    Some(RefOr::T(Schema::Object(o))) => Some(o),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let Some(parts) = parts else { continue };
        if !parts.iter().any(|o| closed(o)) {
            continue;
        }
        let mut merged = Object::new();
        merged.description = all.description.clone();
        for o in parts {
            merged.properties.extend(o.properties.clone());
            merged.required.extend(o.required.iter().cloned());
        }
        merged.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        *schema = RefOr::T(Schema::Object(merged));
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten()
}

fn add_error(op: &mut Operation, status: &str, description: &str) {
    if op.responses.responses.contains_key(status) {
        return;
    }
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build();
    op.responses.responses.insert(status.to_string(), response.into());
}

// --- The operations ------------------------------------------------------------------------

/// Server liveness
///
/// Says only that the server runs; needs no token (for load balancers and supervisors).
#[utoipa::path(get, path = "/v1/health", tag = "server", responses((status = 200, description = "running", body = serde_json::Value)))]
#[allow(dead_code)]
fn health() {}

/// This document
#[utoipa::path(get, path = "/v1/openapi.json", tag = "server", responses((status = 200, description = "the OpenAPI 3.1 document", body = serde_json::Value)))]
#[allow(dead_code)]
fn openapi_json() {}

/// List workloads
///
/// The workloads the token may read, with their stable version and latest rollout.
#[utoipa::path(get, path = "/v1/workloads", tag = "workloads", responses((status = 200, description = "the workloads", body = Vec<WorkloadSummary>)))]
#[allow(dead_code)]
fn list_workloads() {}

/// Apply a workload spec
///
/// Creates the workload or changes its spec. A spec whose executor differs from the one in
/// force (or a new workload's) needs the admin role.
#[utoipa::path(post, path = "/v1/workloads", tag = "workloads", request_body = ApplySpec, responses(
    (status = 200, description = "applied (`changed` is false when it was already in force)", body = Applied),
    (status = 422, description = "the spec has errors: each in `details`, with file, line, column and field", body = ErrorBody)
))]
#[allow(dead_code)]
fn apply_spec() {}

/// Workload status
///
/// Stable version, last known good, pin, router, replicas, desired state, routes, the rollout
/// in progress (or the last) and the controller's latest verdict with every signal.
#[utoipa::path(get, path = "/v1/workloads/{name}", tag = "workloads", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "its status", body = WorkloadStatus)))]
#[allow(dead_code)]
fn workload_status() {}

/// Delete a workload
///
/// Its instances, routes and router are stopped; its history stays readable
/// (`GET .../events`), and applying its spec again brings it back. Refused while a rollout is in
/// progress. Needs the admin role.
#[utoipa::path(delete, path = "/v1/workloads/{name}", tag = "workloads", params(
    ("name" = String, Path, description = "the workload"),
    ("reason" = Option<String>, Query, description = "why, recorded with the event")
), responses(
    (status = 200, description = "deleted; the controller stops what ran", body = Started),
    (status = 409, description = "a rollout is in progress", body = ErrorBody)
))]
#[allow(dead_code)]
fn delete_workload() {}

/// List releases, oldest first
#[utoipa::path(get, path = "/v1/workloads/{name}/releases", tag = "releases", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the releases", body = Vec<Release>)))]
#[allow(dead_code)]
fn list_releases() {}

/// Create an immutable release
///
/// The same version with the same content is accepted again (200); with other content it is
/// refused (409). Config keys that change what the replicas execute need the admin role.
#[utoipa::path(post, path = "/v1/workloads/{name}/releases", tag = "releases", params(("name" = String, Path, description = "the workload")), request_body = ReleaseRequest, responses(
    (status = 201, description = "registered", body = ReleaseCreated),
    (status = 200, description = "already registered with the same content", body = ReleaseCreated),
    (status = 409, description = "the version exists with other content", body = ErrorBody),
    (status = 422, description = "a field out of range, or flags that do not load", body = ErrorBody)
))]
#[allow(dead_code)]
fn create_release() {}

/// One release
#[utoipa::path(get, path = "/v1/workloads/{name}/releases/{version}", tag = "releases", params(("name" = String, Path, description = "the workload"), ("version" = String, Path, description = "the release's version")), responses((status = 200, description = "the release", body = Release)))]
#[allow(dead_code)]
fn show_release() {}

/// Clear the hold a mitigation put on a release
///
/// A mitigated release is held: it cannot be deployed again until a person says why it may
/// (the reason is required and recorded).
#[utoipa::path(post, path = "/v1/workloads/{name}/releases/{version}/clear-hold", tag = "releases", params(("name" = String, Path, description = "the workload"), ("version" = String, Path, description = "the release's version")), request_body = RequiredReason, responses(
    (status = 200, description = "cleared", body = Started),
    (status = 409, description = "the release is not held", body = ErrorBody),
    (status = 422, description = "no reason given", body = ErrorBody)
))]
#[allow(dead_code)]
fn clear_hold() {}

/// Revoke a release: it never runs again
///
/// No deploy of it and no rollback to it afterwards. Not the stable version, nor one a rollout
/// in progress involves. The reason is required and recorded.
#[utoipa::path(post, path = "/v1/workloads/{name}/releases/{version}/revoke", tag = "releases", params(("name" = String, Path, description = "the workload"), ("version" = String, Path, description = "the release's version")), request_body = RequiredReason, responses(
    (status = 200, description = "revoked", body = Started),
    (status = 409, description = "already revoked, the stable version, or part of a rollout in progress", body = ErrorBody),
    (status = 422, description = "no reason given", body = ErrorBody)
))]
#[allow(dead_code)]
fn revoke_release() {}

/// Roll a release out through the plan
///
/// Governance applies to every caller: the release must have completed in the previous
/// environment and carry the required attestations; the line must not be stopped. A
/// deployment that needs approvals or a deployment window is queued (`queued` says what it
/// waits for) and starts by itself. With `emergency`, it waits for an emergency approver.
#[utoipa::path(post, path = "/v1/workloads/{name}/deploy", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Deploy, responses(
    (status = 202, description = "the rollout started (or was queued); follow it with `GET .../rollouts/{id}` or the events", body = Started),
    (status = 403, description = "the emergency's severity is not one the spec allows", body = ErrorBody),
    (status = 409, description = "a rollout is in progress, the version is not registered, or governance refuses it (previous environment, attestations, a closed window with `outside = \"refuse\"`, the line stopped)", body = ErrorBody)
))]
#[allow(dead_code)]
fn deploy() {}

/// Pause the rollout in progress
#[utoipa::path(post, path = "/v1/workloads/{name}/pause", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "paused", body = Started),
    (status = 409, description = "no rollout it applies to", body = ErrorBody)
))]
#[allow(dead_code)]
fn pause() {}

/// Resume the rollout in progress
#[utoipa::path(post, path = "/v1/workloads/{name}/resume", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "resumed", body = Started),
    (status = 409, description = "no rollout it applies to", body = ErrorBody)
))]
#[allow(dead_code)]
fn resume() {}

/// Promote the rollout in progress
///
/// Passes the current phase's gates by hand (an approval gate, or a phase held on an unknown
/// verdict). Needs the approver role.
#[utoipa::path(post, path = "/v1/workloads/{name}/promote", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "promoted", body = Started),
    (status = 409, description = "no rollout it applies to", body = ErrorBody)
))]
#[allow(dead_code)]
fn promote() {}

/// Approve what waits for an approval
///
/// A queued deployment (it starts when this was the last thing it waited for), the current
/// phase's approval gate, or the approval an emergency deployment skipped. Needs the approver
/// role (an emergency deployment: emergency-approver); the release's author and the
/// deployment's starter may not approve it (403).
#[utoipa::path(post, path = "/v1/workloads/{name}/approve", tag = "governance", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "recorded", body = GovernanceChange),
    (status = 403, description = "separation of duties, or an emergency deployment and no emergency-approver role", body = ErrorBody),
    (status = 409, description = "nothing waits for an approval, or this person already approved", body = ErrorBody)
))]
#[allow(dead_code)]
fn approve() {}

/// Reject what waits for an approval
///
/// One eligible rejection fails the gate: a queued deployment is dropped, a rollout at an
/// approval gate is aborted (all traffic back to the stable version). The reason is required.
#[utoipa::path(post, path = "/v1/workloads/{name}/reject", tag = "governance", params(("name" = String, Path, description = "the workload")), request_body = RequiredReason, responses(
    (status = 200, description = "recorded", body = GovernanceChange),
    (status = 403, description = "separation of duties", body = ErrorBody),
    (status = 409, description = "nothing waits for an approval", body = ErrorBody),
    (status = 422, description = "no reason given", body = ErrorBody)
))]
#[allow(dead_code)]
fn reject() {}

/// Record a predeployment check about a release
///
/// Code review, security scan, compliance, tests: environments require theirs
/// (`environment.requires`). A check an emergency deployment skipped is settled by it.
#[utoipa::path(post, path = "/v1/workloads/{name}/releases/{version}/attestations", tag = "governance", params(("name" = String, Path, description = "the workload"), ("version" = String, Path, description = "the release's version")), request_body = Attestation, responses(
    (status = 201, description = "recorded", body = GovernanceChange),
    (status = 422, description = "a field empty or too long", body = ErrorBody)
))]
#[allow(dead_code)]
fn attest() {}

/// Parity report
///
/// How this workload's desired state differs from another environment's beyond the version:
/// the spec (scale, executor, plan, health), the stable release's configuration keys and flags.
#[utoipa::path(get, path = "/v1/workloads/{name}/parity", tag = "governance", params(
    ("name" = String, Path, description = "the workload"),
    ("against" = Option<String>, Query, description = "the other environment's workload (default: environment.after, or the workload whose environment.after is this one)")
), responses((status = 200, description = "the differences", body = Parity), (status = 422, description = "no environment to compare with", body = ErrorBody)))]
#[allow(dead_code)]
fn parity() {}

/// Receive a signed attestation
///
/// For systems that sign instead of holding a token (a CI server, a scanner): no bearer
/// token; the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), HMAC-SHA256 with the workload's `environment.webhook_secret`. A
/// timestamp more than five minutes off, a bad signature or an id already received is refused
/// (401), and nothing is recorded.
#[utoipa::path(post, path = "/v1/hooks/{name}/attestations", tag = "governance", params(("name" = String, Path, description = "the workload")), request_body = AttestationHook, responses(
    (status = 201, description = "recorded", body = GovernanceChange),
    (status = 401, description = "unsigned, badly signed, stale, a replay, or a workload that takes no signed attestations (one answer for all, so nothing is learnt without the secret)", body = ErrorBody),
    (status = 404, description = "no such release", body = ErrorBody)
))]
#[allow(dead_code)]
fn attestation_hook() {}

/// A workload's incidents, newest first
///
/// Every halted rollout opens one, keyed on the rollout (never two), with its severity, state,
/// transitions and the roles the spec's `[incident]` names.
#[utoipa::path(get, path = "/v1/workloads/{name}/incidents", tag = "incidents", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the incidents", body = Vec<Incident>)))]
#[allow(dead_code)]
fn list_incidents() {}

/// One incident
///
/// Also one whose rollout the server's memory let go under `[history]`: read back from the
/// event log (a pass over the workload's log).
#[utoipa::path(get, path = "/v1/workloads/{name}/incidents/{id}", tag = "incidents", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the incident (the rollout's id)")), responses(
    (status = 200, description = "the incident", body = Incident),
    (status = 404, description = "no such workload or incident", body = ErrorBody)
))]
#[allow(dead_code)]
fn show_incident() {}

/// Acknowledge an incident
///
/// Investigating becomes identified. Needs the deployer role.
#[utoipa::path(post, path = "/v1/workloads/{name}/incidents/{id}/ack", tag = "incidents", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the incident (the rollout's id)")), request_body = Reason, responses(
    (status = 200, description = "acknowledged", body = Incident),
    (status = 409, description = "acknowledged already, or resolved", body = ErrorBody)
))]
#[allow(dead_code)]
fn ack_incident() {}

/// Resolve an incident
///
/// Only once its mitigation is verified (state monitoring). Without a person, it resolves when
/// health has held for `[incident] confirm_after`. Needs the deployer role.
#[utoipa::path(post, path = "/v1/workloads/{name}/incidents/{id}/resolve", tag = "incidents", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the incident (the rollout's id)")), request_body = Reason, responses(
    (status = 200, description = "resolved", body = Incident),
    (status = 409, description = "not mitigated yet, or resolved already", body = ErrorBody)
))]
#[allow(dead_code)]
fn resolve_incident() {}

/// The postmortem draft of a failed rollout
///
/// Blameless, in Markdown, written from the event log: summary, impact, times to detect,
/// mitigate and restore, the timeline, the decision with its options and evidence, prompts.
#[utoipa::path(get, path = "/v1/workloads/{name}/postmortem", tag = "incidents", params(
    ("name" = String, Path, description = "the workload"),
    ("rollout" = Option<String>, Query, description = "the failed rollout (default: the latest incident's)")
), responses(
    (status = 200, description = "the draft", body = Postmortem),
    (status = 500, description = "the event log could not be read", body = ErrorBody)
))]
#[allow(dead_code)]
fn show_postmortem() {}

/// The postmortem's signals, drawn
///
/// SVG: error rate, p99 and p50 latency and requests per second of the new and the stable version
/// around the incident, the halt and the mitigation marked, the thresholds dashed, with a
/// title and a description in words.
#[utoipa::path(get, path = "/v1/workloads/{name}/postmortem.svg", tag = "incidents", params(
    ("name" = String, Path, description = "the workload"),
    ("rollout" = Option<String>, Query, description = "the failed rollout (default: the latest incident's)")
), responses(
    (status = 200, description = "the chart", content_type = "image/svg+xml", body = String),
    (status = 404, description = "no such failed rollout, or no traffic recorded for it", body = ErrorBody),
    (status = 500, description = "the event log could not be read", body = ErrorBody)
))]
#[allow(dead_code)]
fn show_postmortem_svg() {}

/// DORA metrics
///
/// Deployment frequency, lead time for changes, change fail rate, failed deployment recovery
/// time and deployment rework rate over the last `days`, from the event log, beside the 2024
/// report's clusters, with every deployment counted.
#[utoipa::path(get, path = "/v1/workloads/{name}/dora", tag = "incidents", params(
    ("name" = String, Path, description = "the workload"),
    ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "the window in days back from now (default 30, 1 to 3660)")
), responses((status = 200, description = "the metrics", body = Dora)))]
#[allow(dead_code)]
fn show_dora() {}

/// DORA metrics, drawn
///
/// SVG: deployments per day (completed green, failed red) and each deployment's change size,
/// with a title and a description in words.
#[utoipa::path(get, path = "/v1/workloads/{name}/dora.svg", tag = "incidents", params(
    ("name" = String, Path, description = "the workload"),
    ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "the window in days back from now (default 30, 1 to 3660)")
), responses((status = 200, description = "the chart", content_type = "image/svg+xml", body = String)))]
#[allow(dead_code)]
fn show_dora_svg() {}

/// Failure-mode analysis of a workload's deployment path
///
/// Findings from its spec, its plan at its traffic and its history (releases, last known good,
/// drills, the previous environment, emergency approvers), each with its rule, severity, the
/// spec field, the fix and the recommendation it serves (docs/drills.md).
#[utoipa::path(get, path = "/v1/workloads/{name}/lint", tag = "drills", params(
    ("name" = String, Path, description = "the workload"),
    ("rps" = Option<f64>, Query, description = "requests per second to check the bakes at (default: the router's average since it started)")
), responses((status = 200, description = "the findings", body = LintReport)))]
#[allow(dead_code)]
fn lint() {}

/// A workload's drills, newest first
#[utoipa::path(get, path = "/v1/workloads/{name}/drills", tag = "drills", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the drills", body = Vec<Drill>)))]
#[allow(dead_code)]
fn list_drills() {}

/// Start a drill
///
/// A rollout of a drill release (the stable release's content under a drill version) through
/// one phase capped at `[drill] max_weight`, with the fault injected when its bake begins: by
/// the router for the drill version's share (`error-rate`, `latency`), by the executor
/// (`crash`, `hang`: the process executor only), or at the signal seam (`signal-outage`). It
/// must be detected and mitigated within `[drill] detect_within` and `mitigate_within`; it
/// never promotes, opens no incident and counts in no DORA metric. Refused while a rollout
/// runs and outside the deployment windows unless `outside_window`. Needs the deployer role.
#[utoipa::path(post, path = "/v1/workloads/{name}/drills", tag = "drills", params(("name" = String, Path, description = "the workload")), request_body = StartDrill, responses(
    (status = 201, description = "started", body = DrillStarted),
    (status = 409, description = "a rollout or a drill runs, a deployment is queued, no stable release, or outside a deployment window", body = ErrorBody),
    (status = 422, description = "an unknown fault, a bad weight, or a fault this workload's executor or router cannot carry out", body = ErrorBody)
))]
#[allow(dead_code)]
fn start_drill() {}

/// Abort the running drill
///
/// Its rollout is aborted (the users go back to the stable version, its instances stop) and
/// the drill is recorded as aborted. Needs the deployer role.
#[utoipa::path(post, path = "/v1/workloads/{name}/drills/abort", tag = "drills", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "aborted", body = DrillStarted),
    (status = 409, description = "no drill runs", body = ErrorBody)
))]
#[allow(dead_code)]
fn abort_drill() {}

/// Game day
///
/// Every failure mode a drill exercises: whether automatic mitigation acts on it, whether its
/// drills cover it (`covered`, `stale`, `failing`, `not_drilled`), their counts and median
/// times, and every ended drill for the trends.
#[utoipa::path(get, path = "/v1/workloads/{name}/gameday", tag = "drills", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the game day", body = GameDay)))]
#[allow(dead_code)]
fn gameday() {}

/// Game day, drawn
///
/// SVG: time to detect and time to mitigate of every ended drill, a line per fault, failed
/// drills marked, with a title and a description in words.
#[utoipa::path(get, path = "/v1/workloads/{name}/gameday.svg", tag = "drills", params(("name" = String, Path, description = "the workload")), responses(
    (status = 200, description = "the chart", content_type = "image/svg+xml", body = String),
    (status = 404, description = "no ended drill", body = ErrorBody)
))]
#[allow(dead_code)]
fn gameday_svg() {}

/// Follow-up items
///
/// The improvements the postmortems call for, open and closed, with their owners and due
/// times (`overdue` when open past it).
#[utoipa::path(get, path = "/v1/workloads/{name}/followups", tag = "incidents", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the items", body = Vec<FollowUp>)))]
#[allow(dead_code)]
fn list_follow_ups() {}

/// Add a follow-up item to an incident's postmortem
///
/// Needs the deployer role.
#[utoipa::path(post, path = "/v1/workloads/{name}/followups", tag = "incidents", params(("name" = String, Path, description = "the workload")), request_body = NewFollowUp, responses(
    (status = 201, description = "added", body = FollowUp),
    (status = 422, description = "a field empty, too long, or a due time that is not a duration", body = ErrorBody)
))]
#[allow(dead_code)]
fn create_follow_up() {}

/// Assign a follow-up item
#[utoipa::path(post, path = "/v1/workloads/{name}/followups/{id}/assign", tag = "incidents", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the item")), request_body = AssignFollowUp, responses(
    (status = 200, description = "assigned", body = FollowUp),
    (status = 409, description = "the item is closed", body = ErrorBody)
))]
#[allow(dead_code)]
fn assign_follow_up() {}

/// Close a follow-up item
#[utoipa::path(post, path = "/v1/workloads/{name}/followups/{id}/close", tag = "incidents", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the item")), request_body = Reason, responses(
    (status = 200, description = "closed", body = FollowUp),
    (status = 409, description = "closed already", body = ErrorBody)
))]
#[allow(dead_code)]
fn close_follow_up() {}

/// ringfence's own metrics (Prometheus)
///
/// OpenMetrics text: `ringfence_deployments` by outcome, `ringfence_halts`,
/// `ringfence_mitigations` by action, the histograms `ringfence_time_to_detect_seconds` and
/// `ringfence_time_to_mitigate_seconds`, `ringfence_incidents_open` by severity,
/// `ringfence_deployments_queued`, `ringfence_line_stopped`; for the workloads the token may
/// read; and `ringfence_controller_ticks`, the controller's looks since the server started. Scrape it with a viewer token (`authorization: credentials_file`).
#[utoipa::path(get, path = "/v1/metrics", tag = "incidents", responses((status = 200, description = "the metrics", content_type = "application/openmetrics-text", body = String)))]
#[allow(dead_code)]
fn metrics() {}

/// The public status pages
///
/// An index of the workloads whose spec sets `[status_page] public`, with whether each is
/// operational. HTML, no token, no JavaScript.
#[utoipa::path(get, path = "/status", tag = "incidents", responses((status = 200, description = "the index", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn status_index() {}

/// A workload's public status page
///
/// Current status, open incidents with their updates in plain words, the last 90 days at a
/// glance, past incidents. Only for a workload whose spec sets `[status_page] public`; any
/// other answers 404 as if it did not exist.
#[utoipa::path(get, path = "/status/{name}", tag = "incidents", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the page", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn status_page() {}

/// A workload's status updates as an Atom feed
#[utoipa::path(get, path = "/status/{name}/feed.atom", tag = "incidents", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the feed", content_type = "application/atom+xml", body = String)))]
#[allow(dead_code)]
fn status_feed() {}

/// Stop the line
///
/// Pauses every progressing rollout of every workload and refuses to start, resume or
/// promote any until the line restarts. Rollbacks and automatic fallbacks still run. Needs
/// the admin role on every workload; the reason is required.
#[utoipa::path(post, path = "/v1/line/stop", tag = "governance", request_body = RequiredReason, responses(
    (status = 200, description = "stopped: the rollouts it paused", body = LineChange),
    (status = 409, description = "already stopped", body = ErrorBody),
    (status = 422, description = "no reason given", body = ErrorBody)
))]
#[allow(dead_code)]
fn stop_line() {}

/// Restart the line
///
/// The rollouts the stop paused resume.
#[utoipa::path(post, path = "/v1/line/restart", tag = "governance", request_body = Reason, responses(
    (status = 200, description = "restarted: the rollouts it resumed", body = LineChange),
    (status = 409, description = "the line is not stopped", body = ErrorBody)
))]
#[allow(dead_code)]
fn restart_line() {}

/// Approve the bypass a halted rollout offers
///
/// The release's guard flags are turned off and the rollout goes on from its current phase.
/// Needs the approver role and a name in the spec's `mitigation.bypass_approvers`; the reason
/// is required and recorded.
#[utoipa::path(post, path = "/v1/workloads/{name}/bypass", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = RequiredReason, responses(
    (status = 200, description = "approved: the flags are off and the rollout goes on", body = Started),
    (status = 403, description = "this caller is not one of the spec's bypass approvers", body = ErrorBody),
    (status = 409, description = "no rollout offers a bypass", body = ErrorBody),
    (status = 422, description = "no reason given", body = ErrorBody)
))]
#[allow(dead_code)]
fn bypass() {}

/// Redeploy the stable version onto fresh instances
///
/// One instance at a time: each leaves the traffic split, stops, and its slot starts afresh
/// (for instances that fail, not code). Refused while a rollout is in progress.
#[utoipa::path(post, path = "/v1/workloads/{name}/redeploy", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "the redeploy began", body = Started),
    (status = 409, description = "a rollout or a redeploy is in progress, or there is no stable version", body = ErrorBody)
))]
#[allow(dead_code)]
fn redeploy() {}

/// Abort the rollout in progress
#[utoipa::path(post, path = "/v1/workloads/{name}/abort", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Reason, responses(
    (status = 200, description = "aborted: traffic returns to the stable version", body = Started),
    (status = 409, description = "no rollout it applies to", body = ErrorBody)
))]
#[allow(dead_code)]
fn abort() {}

/// Roll back to the last known good
///
/// To the latest last known good release, or to `to`, on the fast path (one phase at 100%,
/// judged on probes and crashes).
#[utoipa::path(post, path = "/v1/workloads/{name}/rollback", tag = "rollouts", params(("name" = String, Path, description = "the workload")), request_body = Rollback, responses(
    (status = 200, description = "the rollback started, or the rollout in progress is falling back", body = Started),
    (status = 409, description = "nothing to roll back to, `to` is revoked or already stable, or a rollback is already under way", body = ErrorBody),
    (status = 422, description = "`to` was never last known good", body = ErrorBody)
))]
#[allow(dead_code)]
fn rollback() {}

/// The workload's events
///
/// At most 1000 events or 4 MiB per answer; page on with `after` until a page is empty.
#[utoipa::path(get, path = "/v1/workloads/{name}/events", tag = "events", params(
    ("name" = String, Path, description = "the workload"),
    ("after" = Option<u64>, Query, description = "only events after this sequence number"),
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (1 to 1000; default 1000)")
), responses(
    (status = 200, description = "the events, oldest first", body = Vec<Event>),
    (status = 500, description = "the event log could not be read", body = ErrorBody)
))]
#[allow(dead_code)]
fn workload_events() {}

/// The last decision in plain words, with its evidence
#[utoipa::path(get, path = "/v1/workloads/{name}/why", tag = "rollouts", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the explanation", body = Why)))]
#[allow(dead_code)]
fn why() {}

/// One rollout
///
/// Status, phase, stage, plan, decision, last verdict, times, and `windows`: the traffic each
/// passed comparison phase was judged on.
#[utoipa::path(get, path = "/v1/workloads/{name}/rollouts/{id}", tag = "rollouts", params(("name" = String, Path, description = "the workload"), ("id" = String, Path, description = "the rollout")), responses((status = 200, description = "the rollout", body = Rollout)))]
#[allow(dead_code)]
fn show_rollout() {}

/// Every workload's events
///
/// For tokens with a grant on `*`. Secrets in them are redacted; paged as the workload's.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(
    ("after" = Option<u64>, Query, description = "only events after this sequence number"),
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many (1 to 1000; default 1000)")
), responses(
    (status = 200, description = "the events, oldest first", body = Vec<Event>),
    (status = 500, description = "the event log could not be read", body = ErrorBody)
))]
#[allow(dead_code)]
fn all_events() {}

/// Alertmanager webhook receiver
///
/// A firing alert carrying every label of a workload's `health.alerts.match` (by default
/// `workload=<name>`) halts that workload's rollout. The body is Alertmanager's webhook
/// payload (version 4).
#[utoipa::path(post, path = "/v1/alerts", tag = "signals", request_body = AlertmanagerPayload, responses((status = 200, description = "the alerts that concerned a workload", body = AlertsAccepted)))]
#[allow(dead_code)]
fn alerts() {}

/// Routing tables for the router tier
///
/// The tables of every workload with `[router] kind = "tier"` that the token may route (role
/// `router`), with the host and path prefix that select each, as `{"etag", "cursor", "routes":
/// [{"host", "path_prefix", "table"}]}`. Send the last `ETag` back in `If-None-Match` with
/// `wait` to hold the request open until the set changes, and the last `cursor` in `since` to
/// be sent a delta: `"workloads"` names every workload of the set in order, and `"routes"` holds
/// only those changed after the cursor (the others are as the router holds them). A cursor this
/// server did not give out (another server's, or one from before its restart) gets the whole set.
#[utoipa::path(get, path = "/v1/routes", tag = "routing", params(
    ("wait" = Option<u64>, Query, maximum = 60, description = "seconds (up to 60) to wait for a change of the set named by If-None-Match"),
    ("since" = Option<String>, Query, description = "the cursor of the set the router holds: only the routes changed after it are sent"),
    ("If-None-Match" = Option<String>, Header, description = "the ETag of the set the router serves")
), responses(
    (status = 200, description = "the table set, with its ETag", body = serde_json::Value),
    (status = 304, description = "the set named by If-None-Match is still current after `wait`"),
))]
#[allow(dead_code)]
fn routes() {}

/// A router's traffic counters
///
/// `{"router": NAME, "workloads": {WORKLOAD: <the router's /v1/stats snapshot>}}`, counters
/// since the router started. Every router of the tier reports every second; the analysis
/// reads their sum. A workload the token may not route refuses the whole report.
#[utoipa::path(post, path = "/v1/routes/report", tag = "routing", request_body = RoutesReport, responses(
    (status = 200, description = "what was kept", body = RoutesReportAccepted)
))]
#[allow(dead_code)]
fn routes_report() {}

/// How long each phase needs at today's traffic
#[utoipa::path(get, path = "/v1/workloads/{name}/plan", tag = "workloads", params(
    ("name" = String, Path, description = "the workload"),
    ("rps" = Option<f64>, Query, exclusive_minimum = 0, description = "plan for this request rate (above 0) instead of the one measured at the router")
), responses(
    (status = 200, description = "the advice per phase", body = PlanAdvice)
))]
#[allow(dead_code)]
fn plan() {}

/// Flags per rollout group, and the killed ones
#[utoipa::path(get, path = "/v1/workloads/{name}/flags", tag = "flags", params(("name" = String, Path, description = "the workload")), responses((status = 200, description = "the flags users evaluate now", body = Flags)))]
#[allow(dead_code)]
fn list_flags() {}

/// Kill switch: the flag serves its default everywhere
///
/// Always allowed, whatever the rollout state. The reason is required (it is audited).
#[utoipa::path(post, path = "/v1/workloads/{name}/flags/{flag}/kill", tag = "flags", params(("name" = String, Path, description = "the workload"), ("flag" = String, Path, description = "the flag's key")), request_body = RequiredReason, responses(
    (status = 200, description = "killed", body = FlagChange),
    (status = 422, description = "no reason given, or no release defines the flag", body = ErrorBody)
))]
#[allow(dead_code)]
fn kill_flag() {}

/// Undo a kill
#[utoipa::path(post, path = "/v1/workloads/{name}/flags/{flag}/restore", tag = "flags", params(("name" = String, Path, description = "the workload"), ("flag" = String, Path, description = "the flag's key")), request_body = Reason, responses(
    (status = 200, description = "restored", body = FlagChange),
    (status = 409, description = "the flag is not killed", body = ErrorBody)
))]
#[allow(dead_code)]
fn restore_flag() {}

/// A user reports a problem
///
/// The user is mapped to the rollout group and version that serve them; reports per group are
/// a health signal.
#[utoipa::path(post, path = "/v1/workloads/{name}/reports", tag = "signals", params(("name" = String, Path, description = "the workload")), request_body = Report, responses(
    (status = 200, description = "filed", body = ReportAccepted),
    (status = 422, description = "no user key, or one longer than 256 characters", body = ErrorBody)
))]
#[allow(dead_code)]
fn report() {}

/// List the tokens (never a secret or a hash)
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, description = "the tokens", body = Vec<Token>)))]
#[allow(dead_code)]
fn list_tokens() {}

/// Create a token
///
/// The answer holds the token itself, shown this once.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses(
    (status = 201, description = "created", body = CreatedToken),
    (status = 422, description = "a bad name, grant or expiry", body = ErrorBody)
))]
#[allow(dead_code)]
fn create_token() {}

/// Revoke a token at once
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "the token's id")), responses(
    (status = 200, description = "revoked (again: no change)", body = Token),
    (status = 404, description = "no such token", body = ErrorBody)
))]
#[allow(dead_code)]
fn revoke_token() {}
