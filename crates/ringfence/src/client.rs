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
    /// `Bearer <token>`, when there is one.
    authorization: Option<String>,
    /// Where the token came from, to say so when the server refuses it.
    token_source: Option<String>,
    http: HttpClient,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<crate::credentials::Found>) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            authorization: token.as_ref().map(|t| format!("Bearer {}", t.token)),
            token_source: token.map(|t| t.source),
            http: HttpClient::new(),
        }
    }

    /// A client with the token found the usual way for `base` (see [`crate::credentials`]).
    pub fn discover(base: &str, token_file: Option<&std::path::Path>) -> Result<ApiClient, CliError> {
        Ok(ApiClient::new(base, crate::credentials::find_token(base, token_file)?))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Bytes, CliError> {
        // The server refuses larger bodies; say so here rather than have it close the
        // connection mid-request, which would read as an unreachable server.
        if let Some(b) = &body
            && b.len() > ringfence_api::MAX_REQUEST_BYTES
        {
            return Err(CliError::new(
                ExitCode::Invalid,
                format!(
                    "{method} {path}: the request is {} bytes; the server accepts at most {} (a spec or flag file this large is refused)",
                    b.len(),
                    ringfence_api::MAX_REQUEST_BYTES
                ),
            ));
        }
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(
                method.clone(),
                &url,
                &self.authorization.iter().map(|a| ("authorization", a.as_str())).collect::<Vec<_>>(),
                body,
                Duration::from_secs(30),
            )
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
            StatusCode::UNAUTHORIZED => {
                let hint = match &self.token_source {
                    Some(s) => format!("the token from {s} was refused"),
                    None => format!(
                        "no token found: set RINGFENCE_TOKEN, pass --token-file, or put one in {}",
                        crate::credentials::candidates(&self.base)
                            .first()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "~/.config/ringfence/token".into())
                    ),
                };
                return Err(CliError::new(ExitCode::Denied, format!("{message}\n{hint}")));
            }
            StatusCode::FORBIDDEN => ExitCode::Denied,
            StatusCode::NOT_FOUND => ExitCode::NotFound,
            StatusCode::CONFLICT => ExitCode::Conflict,
            StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => ExitCode::Invalid,
            _ => ExitCode::Failure,
        };
        Err(CliError::new(code, message))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.call(Method::GET, path, None).await?;
        decode(path, &body)
    }

    /// A GET whose answer is text (a chart), not JSON.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let body = self.call(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.call(Method::DELETE, path, None).await?;
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
    pub async fn events_after(&self, workload: &str, after: u64) -> Result<Vec<ringfence_api::Event>, CliError> {
        self.paged(&format!("/v1/workloads/{workload}/events"), after).await
    }

    /// Every event of the log after `after` (for grants on every workload).
    pub async fn all_events_after(&self, after: u64) -> Result<Vec<ringfence_api::Event>, CliError> {
        self.paged("/v1/events", after).await
    }

    async fn paged(&self, path: &str, after: u64) -> Result<Vec<ringfence_api::Event>, CliError> {
        // The server's largest page (docs/api.md).
        const PAGE: usize = 1000;
        let mut out: Vec<ringfence_api::Event> = Vec::new();
        let mut after = after;
        loop {
            let page: Vec<ringfence_api::Event> = self.get(&format!("{path}?after={after}&limit={PAGE}")).await?;
            // A page also ends at a size bound, so only an empty one says the log ends here.
            let Some(last) = page.last() else { return Ok(out) };
            after = last.seq;
            out.extend(page);
        }
    }
}
