//! What the API answers when it cannot do what was asked: one JSON shape
//! (`{"error": {"code", "message"}}`) for every refusal, the status that
//! says why, and extractors whose own refusals take that shape too (axum's
//! answer plain text otherwise).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use umbra_client::ClientError;
use utoipa::ToSchema;

/// Why a request was refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: ErrorDetail,
}

/// The reason, for programs and for people.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable word for programs: `invalid_request`, `unauthorized`,
    /// `not_found`, `unknown_user`, `unknown_conversation`, `forbidden`,
    /// `conflict`, `idempotency_conflict`, `too_large`,
    /// `unsupported_media_type`, `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// The same, for people.
    pub message: String,
}

/// A refusal, ready to answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable word.
    pub code: &'static str,
    /// The sentence.
    pub message: String,
    /// For 429: seconds to wait.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is not valid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404: nothing by that name or id.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no token, or not a live one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer TOKEN` with a token from `umbra business token create`",
        )
    }

    /// 429: over the business's rate, with how long to wait.
    pub fn rate_limited(what: &str, rate: u32, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "over this business's limit of {rate} {what} a second: try again in {secs} s"
                ),
            )
        }
    }

    /// 503: the device or the messaging server cannot do it now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: something on this host failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A client library failure, as the API says it.
    pub fn from_client(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::UnknownUser(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_user", message)
            }
            ClientError::UnknownConversation(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_conversation", message)
            }
            ClientError::IdempotencyConflict(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_conflict",
                message,
            ),
            ClientError::Blocked(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            ClientError::Invalid(_) => Self::invalid(message),
            ClientError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            ClientError::KeyChanged(_) | ClientError::Server { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            ClientError::Unreachable { .. } | ClientError::Net(_) | ClientError::Queued(..) => {
                Self::unavailable(message)
            }
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// A JSON body whose refusals are [`ApiError`]s: 415 without a JSON
/// content type, 413 over the size limit, 400 for the rest.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(r) => Err(match r.status() {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::Rejection::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON, with `Content-Type: application/json`",
                ),
                StatusCode::PAYLOAD_TOO_LARGE => Self::Rejection::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the body is larger than this API takes (64 KiB)",
                ),
                _ => ApiError::invalid(
                    "the body is not a valid request: send JSON with `text` and either `to` (a username) \
                     or `conversation` (an id), and nothing else",
                ),
            }),
        }
    }
}

/// A query string whose refusals are [`ApiError`]s (400).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::invalid(format!(
                "the query string is not valid: {}",
                r.body_text()
            ))),
        }
    }
}
