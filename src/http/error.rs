//! Typed errors turned into HTTP in one place.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Reply;

/// Every error an endpoint returns. OAuth-facing variants carry RFC 6749/6750
/// codes; internal errors are logged and never shown.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid bearer token")]
    InvalidToken,
    #[error("not found")]
    NotFound,
    /// Not found, saying what is missing.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the server is not ready: {0}")]
    Unavailable(String),
    /// Too many failed attempts from this address: retry after that many seconds.
    #[error("too many failed attempts from this address; try again in {0} s")]
    Throttled(u64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidToken => "invalid_token",
            ApiError::NotFound | ApiError::Missing(_) => "not_found",
            ApiError::Forbidden(_) => "access_denied",
            ApiError::PayloadTooLarge(_) => "invalid_request",
            ApiError::Unavailable(_) => "temporarily_unavailable",
            ApiError::Throttled(_) => "too_many_requests",
            ApiError::Internal(_) => "server_error",
        }
    }

    fn description(&self) -> String {
        match self {
            ApiError::Internal(_) => "the server could not complete the request".into(),
            other => other.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    error_description: String,
}

fn render(status: StatusCode, error: &'static str, description: String) -> warp::reply::Response {
    let mut res = warp::reply::with_status(
        warp::reply::json(&ErrorBody {
            error,
            error_description: description.clone(),
        }),
        status,
    )
    .into_response();
    let headers = res.headers_mut();
    headers.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = warp::http::HeaderValue::from_str(&format!(
            "Bearer error=\"{error}\", error_description=\"{}\"",
            description.replace('"', "'")
        ))
    {
        headers.insert("www-authenticate", v);
    }
    res
}

/// The one rejection handler.
pub async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = rejection.find::<ApiError>() {
        if let ApiError::Internal(detail) = e {
            tracing::error!(error = %detail, "internal error");
        }
        let mut res = render(e.status(), e.code(), e.description());
        if let ApiError::Throttled(secs) = e
            && let Ok(v) = warp::http::HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert("retry-after", v);
        }
        return Ok(res);
    }
    if rejection.is_not_found() {
        return Ok(render(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".into(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        return Ok(render(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
        ));
    }
    if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(render(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request body too large".into(),
        ));
    }
    if rejection.find::<warp::reject::LengthRequired>().is_some() {
        return Ok(render(
            StatusCode::LENGTH_REQUIRED,
            "invalid_request",
            "a Content-Length is required".into(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        return Ok(render(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        return Ok(render(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
        ));
    }
    if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        return Ok(render(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            e.to_string(),
        ));
    }
    if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        return Ok(render(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "unsupported content type".into(),
        ));
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(render(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed".into(),
        ));
    }
    tracing::error!(?rejection, "unhandled rejection");
    Ok(render(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the server could not complete the request".into(),
    ))
}
