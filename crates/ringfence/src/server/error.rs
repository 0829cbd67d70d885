//! One error shape for every endpoint and one status-code policy: every refusal of the API
//! is an [`ApiError`], whatever refused it.

use super::prelude::*;

/// What went wrong, in the API's terms. The HTTP status and the `code` of the body follow
/// from it here and nowhere else (docs/api.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be read: not JSON, a field that does not exist, a bad query string.
    BadRequest,
    /// The request was read but refused: a value out of range, a rule broken.
    Invalid,
    /// A spec file with errors (each with file, line, column and field in `details`).
    InvalidSpec,
    NotFound,
    /// Refused in the current state (a rollout in progress, a release with other content).
    Conflict,
    /// No valid token.
    Unauthenticated,
    /// A valid token without the permission, or a request from a foreign host or origin.
    Forbidden,
    /// A mutating request that is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than [`super::MAX_REQUEST_BYTES`].
    TooLarge,
    MethodNotAllowed,
    /// The event log could not be written: nothing was changed.
    Store,
}

impl ErrorKind {
    fn status_and_code(self) -> (StatusCode, &'static str) {
        match self {
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ErrorKind::InvalidSpec => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorKind::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ErrorKind::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ErrorKind::Store => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        }
    }
}

/// One error shape for every endpoint: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into(), details: None }
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn status(&self) -> StatusCode {
        self.kind.status_and_code().0
    }

    pub(super) fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.kind.status_and_code();
        let mut body = serde_json::json!({"error": {"code": code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut resp = (status, Json(body)).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let kind = match e.code {
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::Invalid => ErrorKind::Invalid,
            ErrorCode::Forbidden => ErrorKind::Forbidden,
        };
        ApiError::new(kind, e.message)
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> ApiError {
        match e {
            AppendError::Command(c) => c.into(),
            // Replicas: another one appended between this one's look at the log and its write.
            AppendError::Store(s @ ringfence_store::StoreError::Conflict { .. }) => {
                tracing::warn!(error = %s, "a command raced another replica's");
                ApiError::new(
                    ErrorKind::Conflict,
                    "another replica changed this at the same moment; nothing was written: try again",
                )
            }
            AppendError::Store(s) => {
                tracing::error!(error = %s, "event log write failed");
                ApiError::new(ErrorKind::Store, format!("the event log could not be written: {s}"))
            }
        }
    }
}

impl From<ringfence_store::StoreError> for ApiError {
    fn from(e: ringfence_store::StoreError) -> ApiError {
        AppendError::Store(e).into()
    }
}
