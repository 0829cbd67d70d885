//! The API client the CLI and the demo use.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exit::{CliError, ExitCode};
use crate::http::HttpClient;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    actor: String,
    http: HttpClient,
}

impl ApiClient {
    pub fn new(base: &str, actor: &str) -> ApiClient {
        ApiClient { base: base.trim_end_matches('/').to_string(), actor: actor.to_string(), http: HttpClient::new() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Bytes, CliError> {
        // The server refuses larger bodies; say so here rather than have it close the
        // connection mid-request, which would read as an unreachable server.
        if let Some(b) = &body
            && b.len() > crate::api::MAX_REQUEST_BYTES
        {
            return Err(CliError::new(
                ExitCode::Invalid,
                format!(
                    "{method} {path}: the request is {} bytes; the server accepts at most {} (a spec or flag file this large is refused)",
                    b.len(),
                    crate::api::MAX_REQUEST_BYTES
                ),
            ));
        }
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(method.clone(), &url, &[("x-ringfence-actor", &self.actor)], body, Duration::from_secs(30))
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CliError::new(
                        ExitCode::Unreachable,
                        format!(
                            "cannot reach the ringfence server at {}: {e}\nStart one with `ringfence server`, or point --server / RINGFENCE_SERVER at it.",
                            self.base
                        ),
                    )
                } else {
                    CliError::new(ExitCode::Unreachable, format!("the ringfence server at {} did not answer: {e}", self.base))
                }
            })?;
        if resp.status.is_success() {
            return Ok(resp.body);
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        let message = v["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{method} {path}: {} {}", resp.status, String::from_utf8_lossy(&resp.body)));
        let code = match resp.status {
            StatusCode::NOT_FOUND => ExitCode::NotFound,
            StatusCode::CONFLICT => ExitCode::Conflict,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
                ExitCode::Invalid
            }
            _ => ExitCode::Failure,
        };
        Err(CliError::new(code, message))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.call(Method::GET, path, None).await?;
        decode(path, &body)
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, CliError> {
        let bytes = Bytes::from(serde_json::to_vec(body).expect("request bodies serialize"));
        let body = self.call(Method::POST, path, Some(bytes)).await?;
        decode(path, &body)
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, CliError> {
    serde_json::from_slice(body)
        .map_err(|e| CliError::new(ExitCode::Failure, format!("the server's answer to {path} cannot be read: {e}")))
}

impl ApiClient {
    /// Every event of a workload after `after`, however many pages that takes.
    pub async fn events_after(&self, workload: &str, after: u64) -> Result<Vec<ringfence_core::Event>, CliError> {
        const PAGE: usize = 1000;
        let mut out: Vec<ringfence_core::Event> = Vec::new();
        let mut after = after;
        loop {
            let page: Vec<ringfence_core::Event> =
                self.get(&format!("/v1/workloads/{workload}/events?after={after}&limit={PAGE}")).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|e| e.seq).unwrap_or(after);
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}
