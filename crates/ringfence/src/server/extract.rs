//! How requests are read: bodies, query strings and path segments refused in the API's error
//! shape, with a size limit; who is asking. Handlers take these, never axum's own extractors,
//! whose rejections are plain text.

use super::prelude::*;

/// A JSON object body that answers 400 with the serde message when it cannot be read (an
/// empty body is `{}`).
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            let kind =
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE { ErrorKind::TooLarge } else { ErrorKind::BadRequest };
            ApiError::new(kind, e.body_text())
        })?;
        let bytes = if bytes.is_empty() { axum::body::Bytes::from_static(b"{}") } else { bytes };
        // Every body is an object; serde would also read a struct from an array of its fields
        // in order (`[]` as every field left out), which no client means.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(ErrorKind::BadRequest, "request body: expected a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("request body: {e}")))
    }
}

/// Query parameters that answer 400 in the API's error shape when they cannot be read
/// (`?after=abc`), instead of axum's plain-text rejection.
pub struct Params<T>(pub T);

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
            .map_err(|e| ApiError::new(ErrorKind::BadRequest, e.body_text()))
    }
}

/// Path parameters that answer 400 in the API's error shape when they cannot be read
/// (`/v1/workloads/%FF`: not UTF-8), instead of axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Path(p))
            .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("path: {}", e.body_text())))
    }
}

/// Who is asking: the name of the caller's token, set by [`super::auth::authorize`] for
/// every authenticated request; the actor of every event the request causes.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorKind::Store, "no request context: the server's layers are misconfigured"))
    }
}

pub(super) type St = State<Arc<Shared>>;
