//! The HTTP routes' extractors: axum's [`Path`] and [`Query`], with their
//! refusals (a path segment that is not UTF-8, a malformed query parameter)
//! answered as the API's JSON error instead of the framework's plain text.
//! Bodies are read as bytes (see [`super::limits::bodies`]) and parsed by the
//! routes themselves, whose errors already have the API's shape.

use super::http::error_body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

/// The route's path parameters, or the API's JSON error.
pub(crate) struct ApiPath<T>(pub(crate) T);

/// The query string, or the API's JSON error.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(e) => Err(refused(e.status(), &path_problem(&e))),
        }
    }
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(refused(e.status(), &query_problem(&e))),
        }
    }
}

/// What is wrong with a path, and the fix.
pub(crate) fn path_problem(e: &PathRejection) -> String {
    format!(
        "the path is not valid ({}); percent-encode each id and name as UTF-8",
        e.body_text()
    )
}

/// What is wrong with a query string, and the fix.
pub(crate) fn query_problem(e: &QueryRejection) -> String {
    format!(
        "the query string is not valid ({}); check the parameters against the route table (e.g. ?timeout_ms=5000)",
        e.body_text()
    )
}

/// A framework's refusal with `status`, as the API's JSON error: never
/// retryable, since the same request gets the same answer.
pub(crate) fn refused(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        s if s.is_client_error() => tonic::Code::InvalidArgument,
        _ => tonic::Code::Internal,
    };
    error_body(status, code, message)
}
