//! The deployment hub: HTML pages served by the server itself under `/ui`, for people.
//!
//! - **Same tokens and roles as the API.** A person signs in with an API token
//!   (`/ui/login`); it is kept in a cookie only this server's `/ui` pages get (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` over HTTPS), and every page and action checks it and its
//!   roles as the API does: an action calls the API's own handler, after the permission the
//!   API's policy names for it.
//! - **No cross-site driving.** The guard in front of everything refuses other origins and
//!   cross-site fetches; every form also carries a token derived from the session's
//!   (`csrf`), which another site cannot know, and only `/ui` takes form posts.
//! - **Readable without JavaScript.** Pages are rendered on the server; `app.js` only keeps
//!   them live: it listens to `/ui/stream` (server-sent events, one per change of state) and
//!   swaps the page's `<main>` for a fresh copy, and asks before a destructive action (which
//!   without JavaScript gets a confirmation page instead).
//! - **Nothing loaded from elsewhere.** A strict Content-Security-Policy: the page's own
//!   script and style, no inline code, no frames.

mod pages;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Form, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Redirect;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use ringfence_core::access::{Perm, TokenRecord};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::prelude::*;

/// The session cookie: the API token, for this server's `/ui` pages only.
const COOKIE: &str = "rf_ui";

/// Whether the server answers over HTTPS (the cookie is then `Secure`).
#[derive(Clone, Copy)]
pub struct UiConfig {
    pub secure_cookies: bool,
}

pub fn router(config: UiConfig) -> Router<Arc<Shared>> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/stream", get(stream))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", include_str!("app.css")) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("app.js")) }))
        .route("/ui/w/{name}", get(pages::workload))
        .route("/ui/w/{name}/act", post(act))
        .route("/ui/w/{name}/r/{id}", get(pages::rollout))
        .route("/ui/w/{name}/r/{id}/signals.svg", get(pages::signals_svg))
        .route("/ui/w/{name}/postmortem/{id}", get(pages::postmortem))
        .route("/ui/w/{name}/dora.svg", get(pages::dora_svg))
        .route("/ui/w/{name}/gameday.svg", get(pages::gameday_svg))
        .layer(axum::Extension(config))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The signed-in person: their token's record and the form token of their session.
pub(super) struct UiCaller {
    pub caller: Caller,
    pub csrf: String,
}

impl UiCaller {
    pub fn name(&self) -> &str {
        &self.caller.token.name
    }

    pub fn may(&self, perm: Perm, workload: Option<&str>) -> bool {
        self.caller.may(perm, workload)
    }
}

/// Not signed in (or no longer: revoked, expired): to the sign-in page, coming back after.
pub(super) struct SignIn(String);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        let next = crate::http::encode_component(&self.0);
        Redirect::to(&format!("/ui/login?next={next}")).into_response()
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn csrf_of(token: &str) -> String {
    hex::encode(&Sha256::digest(format!("ringfence-ui-form:{token}").as_bytes())[..16])
}

fn authenticate(sh: &Shared, token: &str) -> Option<TokenRecord> {
    sh.world(|w| w.access.authenticate(token, now()).cloned()).ok()
}

impl FromRequestParts<Arc<Shared>> for UiCaller {
    type Rejection = SignIn;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        sh: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let back = parts.uri.path_and_query().map_or("/ui".to_string(), |p| p.to_string());
        let token = cookie_token(&parts.headers).ok_or_else(|| SignIn(back.clone()))?;
        let record = authenticate(sh, &token).ok_or(SignIn(back))?;
        Ok(UiCaller { csrf: csrf_of(&token), caller: Caller { token: record } })
    }
}

/// The page around `main`: landmarks, the signed-in name, the live-update script.
pub(super) fn layout(title: &str, who: Option<&UiCaller>, main: &str) -> Response {
    let account = match who {
        Some(u) => format!(
            "<form method=\"post\" action=\"/ui/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<span>Signed in as <strong>{}</strong></span> <button type=\"submit\">Sign out</button></form>",
            u.csrf,
            esc(u.name())
        ),
        None => String::new(),
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title} · ringfence</title><link rel=\"stylesheet\" href=\"/ui/app.css\"><script src=\"/ui/app.js\" defer></script></head>\
<body><a class=\"skip\" href=\"#main\">Skip to content</a><header><nav aria-label=\"Main\"><a href=\"/ui\" class=\"brand\">ringfence</a> \
<a href=\"/ui\">Deployments</a></nav>{account}</header><main id=\"main\" tabindex=\"-1\">{main}</main>\
<footer><p>Live: this page updates itself as deployments move (<span id=\"live\" role=\"status\">not connected</span>).</p></footer></body></html>",
        title = esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // `same-origin`, not `no-referrer`: with the latter a browser sends `Origin: null` on
            // form posts, which the guard refuses as another origin.
            (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

pub(super) fn esc(s: &str) -> String {
    ringfence_core::chart::esc(s)
}

#[derive(Deserialize)]
struct Next {
    #[serde(default)]
    next: String,
}

/// Only a path of this server's UI: never an absolute URL (an open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\') { next } else { "/ui" }
}

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)));
    format!(
        "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/ui/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<p><label for=\"token\">API token</label><br><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required size=\"60\"></p>\
<p><button type=\"submit\">Sign in</button></p></form>\
<p>Use a token of yours (<code>ringfence token create NAME --role viewer</code>); the pages show and allow what its roles do. \
On this machine the server's first admin token is in <code>&lt;data-dir&gt;/admin.token</code>.</p>",
        esc(safe_next(next))
    )
}

async fn login_page(Query(q): Query<Next>) -> Response {
    layout("Sign in", None, &login_form(&q.next, None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(sh): St,
    axum::Extension(config): axum::Extension<UiConfig>,
    Form(f): Form<LoginForm>,
) -> Response {
    let token = f.token.trim();
    if token.len() > 512 || authenticate(&sh, token).is_none() {
        tracing::info!("UI sign-in refused: unknown, expired or revoked token");
        let mut r = layout("Sign in", None, &login_form(&f.next, Some("That token is unknown, expired or revoked.")));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if config.secure_cookies { "; Secure" } else { "" }
    );
    let mut r = Redirect::to(safe_next(&f.next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(user: Result<UiCaller, SignIn>, Form(f): Form<CsrfForm>) -> Response {
    if let Ok(u) = &user
        && f.csrf != u.csrf
    {
        return forbidden(Some(u), "This form is not from this server's pages: nothing was done.");
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("rf_ui=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"));
    r
}

fn forbidden(who: Option<&UiCaller>, why: &str) -> Response {
    let mut r = layout("Not allowed", who, &format!("<h1>Not allowed</h1><p role=\"alert\">{}</p>", esc(why)));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// `/ui/stream`: an event per change of the state the pages show (at most four a second).
async fn stream(State(sh): St, _user: UiCaller) -> Response {
    let mut changes = sh.changes();
    let shutdown = sh.shutdown.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
            let seq = *changes.borrow_and_update();
            if tx.send(SseEvent::default().event("change").data(seq.to_string())).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Sse::new(Changes(rx)).keep_alive(KeepAlive::default()).into_response()
}

/// The events of one `/ui/stream` client.
pub(super) struct Changes(tokio::sync::mpsc::Receiver<SseEvent>);

impl futures_core::Stream for Changes {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

#[derive(Deserialize)]
struct ActForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
    /// Set by the confirmation (the script's dialog, or the confirmation page).
    #[serde(default)]
    confirmed: String,
    /// The flag of a kill switch action.
    #[serde(default)]
    flag: String,
}

/// The actions, each with the API route whose policy and handler it goes through, and
/// whether it is destructive (asked twice).
const ACTIONS: &[(&str, &str, bool)] = &[
    ("pause", "/v1/workloads/{name}/pause", false),
    ("resume", "/v1/workloads/{name}/resume", false),
    ("promote", "/v1/workloads/{name}/promote", false),
    ("approve", "/v1/workloads/{name}/approve", false),
    ("reject", "/v1/workloads/{name}/reject", true),
    ("abort", "/v1/workloads/{name}/abort", true),
    ("rollback", "/v1/workloads/{name}/rollback", true),
    ("kill", "/v1/workloads/{name}/flags/{flag}/kill", true),
    ("restore", "/v1/workloads/{name}/flags/{flag}/restore", false),
];

/// Whether `user` may take `action` on `workload` (as the API's policy says).
pub(super) fn may_act(user: &UiCaller, action: &str, workload: &str) -> bool {
    ACTIONS.iter().find(|(a, _, _)| *a == action).is_some_and(|(_, route, _)| {
        super::auth::policy(&axum::http::Method::POST, route).is_some_and(|(perm, _)| user.may(perm, Some(workload)))
    })
}

pub(super) fn is_destructive(action: &str) -> bool {
    ACTIONS.iter().any(|(a, _, d)| *a == action && *d)
}

/// `POST /ui/w/{name}/act`: one of [`ACTIONS`], through the API's handler.
async fn act(State(sh): St, user: UiCaller, Path(name): Path<String>, Form(f): Form<ActForm>) -> Response {
    if f.csrf != user.csrf {
        return forbidden(Some(&user), "This form is not from this server's pages: nothing was done.");
    }
    if f.reason.chars().count() > 2048 {
        return forbidden(Some(&user), "The reason is longer than 2048 characters: nothing was done.");
    }
    let Some(&(action, route, destructive)) = ACTIONS.iter().find(|(a, _, _)| *a == f.action) else {
        return forbidden(Some(&user), &format!("There is no action {:?}.", f.action));
    };
    if !may_act(&user, action, &name) {
        let perm =
            super::auth::policy(&axum::http::Method::POST, route).map(|(p, _)| p.to_string()).unwrap_or_default();
        return forbidden(Some(&user), &format!("Your token may not {perm} on {name}: nothing was done."));
    }
    if destructive && f.confirmed != "yes" {
        return pages::confirm(&user, &name, action, &f.flag, &f.reason);
    }
    let who = Actor(user.name().to_owned());
    let reason = f.reason.clone();
    let result: Result<String, ApiError> = async {
        let id = |s: api::Started| s.rollout_id;
        Ok(match action {
            "pause" => {
                id(super::rollouts::simple(sh.clone(), who, name.clone(), "pause", reason, command::pause).await?.0)
            }
            "resume" => {
                id(super::rollouts::simple(sh.clone(), who, name.clone(), "resume", reason, command::resume).await?.0)
            }
            "abort" => {
                id(super::rollouts::simple(sh.clone(), who, name.clone(), "abort", reason, command::abort).await?.0)
            }
            "promote" => {
                id(super::rollouts::promote(State(sh.clone()), who, Path(name.clone()), Body(api::Reason { reason }))
                    .await?
                    .0)
            }
            "rollback" => id(super::rollouts::rollback(
                State(sh.clone()),
                who,
                Path(name.clone()),
                Body(api::Rollback { to: None, reason }),
            )
            .await?
            .0),
            "approve" => super::governance::approve(
                State(sh.clone()),
                user.caller.clone(),
                who,
                Path(name.clone()),
                Body(api::Reason { reason }),
            )
            .await?
            .0
            .rollout_id
            .unwrap_or_default(),
            "reject" => super::governance::reject(
                State(sh.clone()),
                user.caller.clone(),
                who,
                Path(name.clone()),
                Body(api::Reason { reason }),
            )
            .await?
            .0
            .rollout_id
            .unwrap_or_default(),
            "kill" => {
                let _killed = super::flags::kill_flag(
                    State(sh.clone()),
                    who,
                    Path((name.clone(), f.flag.clone())),
                    Body(api::Reason { reason }),
                )
                .await?;
                String::new()
            }
            "restore" => {
                let _restored = super::flags::restore_flag(
                    State(sh.clone()),
                    who,
                    Path((name.clone(), f.flag.clone())),
                    Body(api::Reason { reason }),
                )
                .await?;
                String::new()
            }
            _ => unreachable!("listed in ACTIONS"),
        })
    }
    .await;
    match result {
        Ok(rollout) => {
            tracing::info!(workload = name, action, actor = user.name(), "action taken from the UI");
            let to = if rollout.is_empty() {
                format!("/ui/w/{}", crate::http::encode_component(&name))
            } else {
                format!("/ui/w/{}/r/{}", crate::http::encode_component(&name), crate::http::encode_component(&rollout))
            };
            Redirect::to(&to).into_response()
        }
        Err(e) => {
            let mut r = layout(
                "Refused",
                Some(&user),
                &format!(
                    "<h1>{} was refused</h1><p role=\"alert\">{}</p><p><a href=\"/ui/w/{}\">Back to {}</a></p>",
                    esc(action),
                    esc(e.message()),
                    esc(&crate::http::encode_component(&name)),
                    esc(&name)
                ),
            );
            *r.status_mut() = e.status();
            r
        }
    }
}
