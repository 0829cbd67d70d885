//! OFREP (OpenFeature Remote Evaluation Protocol) on the router's own listener, under
//! `/ofrep/v1/`. The router knows which rollout group a user is in, so it evaluates a flag with
//! the definitions of the release that serves that user: a flag change rolls out to the same
//! users, in the same phases, as code would. The flag sets are compiled when a table is
//! installed; an evaluation reads them through the same lock-free table pointer as routing.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ringfence_flags::{Context, ErrorCode, FlagSet, Resolution};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::proxy::ProxyBody;
use crate::routing::Routing;

pub(crate) const PREFIX: &str = "/ofrep/";
const MAX_BODY: usize = 64 * 1024;

pub(crate) async fn handle(routing: Arc<Routing>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let key = match path.strip_prefix("/ofrep/v1/evaluate/flags") {
        Some("") | Some("/") => None,
        Some(rest) if rest.starts_with('/') => Some(percent_decode(&rest[1..])),
        _ => {
            return json_response(StatusCode::NOT_FOUND, &json!({"errorDetails": format!("no OFREP endpoint {path}")}));
        }
    };
    if req.method() == Method::OPTIONS {
        return cors(Response::builder().status(StatusCode::NO_CONTENT).body(empty()).expect("static response"));
    }
    if req.method() != Method::POST {
        let mut response =
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"errorDetails": "OFREP evaluations are POST"}));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        return response;
    }
    if !authorized(&routing, req.headers()) {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"errorCode": "GENERAL", "errorDetails": "a valid bearer token or X-API-Key is required"}),
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(String::from);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(key.as_deref(), ErrorCode::ParseError, &format!("cannot read the request body: {e}")),
    };
    let ctx = match context(&body) {
        Ok(c) => c,
        Err((code, msg)) => return bad(key.as_deref(), code, &msg),
    };
    // Users without a targeting key are not in any canary: they get the last group (stable).
    let group = match ctx.targeting_key() {
        // By the key alone: a segment's users and prefixes count, its header does not.
        Some(k) => routing.table.group_index(k, |_| None),
        None => routing.groups.len().checked_sub(1),
    }
    .map(|i| &routing.groups[i]);
    let empty_set;
    let flags: &FlagSet = match group.and_then(|g| g.flags.as_deref()) {
        Some(f) => f,
        None => {
            empty_set = FlagSet::parse(r#"{"flags":{}}"#).expect("the empty flag set parses");
            &empty_set
        }
    };
    let mut response = match key {
        Some(key) => single(flags, &key, &ctx),
        None => bulk(flags, &ctx, if_none_match.as_deref()),
    };
    if let Some(g) = group {
        response.headers_mut().insert(crate::proxy::GROUP_HEADER, g.name_header.clone());
        response.headers_mut().insert(crate::proxy::VERSION_HEADER, g.version_header.clone());
    }
    response
}

fn authorized(routing: &Routing, headers: &hyper::HeaderMap) -> bool {
    if routing.flag_tokens.is_empty() {
        return true;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(token) = presented else { return false };
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    routing.flag_tokens.contains(&digest)
}

fn context(body: &Bytes) -> Result<Context, (ErrorCode, String)> {
    if body.is_empty() {
        return Ok(with_now(Context::new()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| (ErrorCode::ParseError, format!("the request body is not JSON: {e}")))?;
    let ctx = match v.get("context") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(other) => return Err((ErrorCode::InvalidContext, format!("`context` must be an object, found {other}"))),
    };
    Context::from_json(ctx).map(with_now).map_err(|e| (ErrorCode::InvalidContext, e.message))
}

fn with_now(ctx: Context) -> Context {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64);
    ctx.with_timestamp(now.unwrap_or(0))
}

/// One evaluation as OFREP writes it: a success (possibly without a value) or a failure.
fn evaluation(key: &str, r: &Resolution<'_>) -> (StatusCode, Value) {
    match &r.error {
        Some(e) => (
            if e.code == ErrorCode::FlagNotFound { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST },
            json!({"key": key, "errorCode": e.code.as_str(), "errorDetails": e.message}),
        ),
        None => {
            let mut out = Map::new();
            out.insert("key".into(), Value::String(key.into()));
            if let Some(v) = r.value {
                out.insert("value".into(), v.clone());
            }
            out.insert("reason".into(), Value::String(r.reason.as_str().into()));
            // A value-less success (DISABLED, or no default variant: OFREP's `codeDefaultFlag`)
            // has no variant. The key is still sent, as the empty string: the Python provider
            // reads `variant` unconditionally, and the spec types it as a string (so not `null`).
            // flagd's own OFREP service writes the same.
            out.insert("variant".into(), Value::String(r.variant.unwrap_or_default().into()));
            out.insert("metadata".into(), Value::Object(r.metadata.clone()));
            (StatusCode::OK, Value::Object(out))
        }
    }
}

fn single(flags: &FlagSet, key: &str, ctx: &Context) -> Response<ProxyBody> {
    let r = flags.evaluate(key, ctx);
    let (status, body) = evaluation(key, &r);
    json_response(status, &body)
}

fn bulk(flags: &FlagSet, ctx: &Context, if_none_match: Option<&str>) -> Response<ProxyBody> {
    let entries: Vec<Value> = flags.keys().map(|k| evaluation(k, &flags.evaluate(k, ctx)).1).collect();
    let body = json!({"flags": entries, "metadata": flags.metadata()});
    let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
    // The ETag names this exact answer for this context, so a client can revalidate cheaply.
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..32]);
    let matches = if_none_match.is_some_and(|inm| {
        inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    });
    let mut response = if matches {
        cors(Response::builder().status(StatusCode::NOT_MODIFIED).body(empty()).expect("static response"))
    } else {
        raw_json(StatusCode::OK, bytes)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn bad(key: Option<&str>, code: ErrorCode, details: &str) -> Response<ProxyBody> {
    let mut body = json!({"errorCode": code.as_str(), "errorDetails": details});
    if let Some(k) = key {
        body["key"] = Value::String(k.into());
    }
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn empty() -> ProxyBody {
    Either::Right(Full::new(Bytes::new()))
}

fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    cors(response)
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    raw_json(status, serde_json::to_vec(body).expect("JSON values serialize"))
}

/// Browsers (the web SDK) call OFREP cross-origin.
fn cors(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, x-api-key, if-none-match"),
    );
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag"));
    response
}

/// A path segment: `%XX` decoded, `+` kept (it is a space only in form-encoded queries).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
