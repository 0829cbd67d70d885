//! A small HTTP/1 client over hyper: readiness probes, the router's admin API and the CLI
//! talking to the server. `https://` URLs go over TLS (rustls), trusting the certificates of
//! `$RINGFENCE_CA_FILE` when set (a server with its own CA or a self-signed certificate),
//! else the system's bundle (`/etc/ssl/certs/ca-certificates.crt`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Where trusted CA certificates come from when `$RINGFENCE_CA_FILE` is not set.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client configuration, read once per process. A CA file that cannot be read leaves
/// no trusted certificate: every `https://` call then fails, and says the certificate is not
/// trusted, rather than trusting anything.
fn tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let file = std::env::var_os("RINGFENCE_CA_FILE")
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
            let mut roots = rustls::RootCertStore::empty();
            match CertificateDer::pem_file_iter(&file) {
                Ok(certs) => {
                    let (_, rejected) = roots.add_parsable_certificates(certs.flatten());
                    if rejected > 0 {
                        tracing::warn!(file = ?file, rejected, "some CA certificates could not be used");
                    }
                }
                Err(e) => tracing::debug!(file = ?file, error = %e, "no CA certificates for https"),
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            std::sync::Arc::new(config)
        })
        .clone()
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout { method: Method, url: String, timeout: Duration },
    #[error("{method} {url}: {source}")]
    Connect {
        method: Method,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: reading the response failed: {reason}")]
    Body { method: Method, url: String, reason: String },
}

impl HttpError {
    /// The peer is not there at all (refused, unreachable), as opposed to a bad answer.
    pub fn is_connect(&self) -> bool {
        matches!(self, HttpError::Connect { source, .. } if source.is_connect())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a kept connection may sit unused before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient::with_idle_timeout(IDLE_TIMEOUT)
    }

    fn with_idle_timeout(idle: Duration) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls_config()).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        // The timer is what closes idle connections and forgets closed ones: without it the
        // pool only looks at a host's connections when that host is asked again, and every
        // replica the server ever probed (each on a port of its own) stayed in it for good.
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_max_idle_per_host(8)
            .build(connector);
        HttpClient { inner }
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url { url: url.into(), reason: e.to_string() })?;
        let mut req = Request::builder().method(method.clone()).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let has_body = body.is_some();
        if has_body && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| HttpError::Url { url: url.into(), reason: e.to_string() })?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|source| HttpError::Connect {
                method: method.clone(),
                url: url.into(),
                source,
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Body { method: method.clone(), url: url.into(), reason: e.to_string() })?
                .to_bytes();
            Ok(Response { status, headers, body })
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| HttpError::Timeout {
            method: method.clone(),
            url: url.into(),
            timeout,
        })?
    }

    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Response, HttpError> {
        self.request(Method::GET, url, &[], None, timeout).await
    }
}

/// Characters a URL component keeps as they are (RFC 3986's unreserved set); all others are
/// percent-encoded.
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` percent-encoded for a query value or a path segment.
pub fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Answers one keep-alive request on one connection, then says whether the client closed
    /// that connection within `within`.
    async fn closed_by_client(listener: tokio::net::TcpListener, within: Duration) -> bool {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read the request");
            assert!(n > 0, "the client closed before its request was read");
            seen.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.expect("answer");
        matches!(tokio::time::timeout(within, conn.read(&mut buf)).await, Ok(Ok(0)))
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(closed_by_client(listener, Duration::from_secs(10)));
        let client = HttpClient::with_idle_timeout(Duration::from_millis(200));
        let r = client.get(&format!("http://{addr}/"), Duration::from_secs(5)).await.expect("request");
        assert_eq!(r.body.as_ref(), b"ok");
        // The client is kept alive (and so is its pool): only the idle timeout closes it.
        assert!(server.await.expect("server task"), "the pooled connection was still open 10 s after it went idle");
        drop(client);
    }
}
