//! The HTTP API a business's own systems call: send a text to a customer
//! or into a conversation (with an `Idempotency-Key`), list conversations
//! and messages, look a message's status up, mark a conversation read.
//!
//! Every route but `/openapi.json` takes `Authorization: Bearer TOKEN`; the
//! token says which business the call is for, and every call counts against
//! that business's rates. Every refusal has one JSON shape
//! ([`crate::api_error`]). The document at `/openapi.json` is generated from
//! these handlers ([`ApiDoc`]) and kept in the repository
//! (`crates/umbra-business/openapi.json`), checked equal by a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use umbra_client::ClientError;
use umbra_client::app::{AppConversation, AppMessage, Outgoing, To};
use umbra_client::receipts::{MessageStatus, Status};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::api_error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::device::{Device, ReadJob, SendJob};
use crate::metrics::Metrics;
use crate::ratelimit::Bucket;
use crate::tokens::Tokens;

/// Longest text a message may carry, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Largest request body, in bytes.
const MAX_BODY: usize = 64 * 1024;
/// Longest an API call waits for a business's device.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// One business as the API serves it: its device and its rates.
pub struct Served {
    /// The device's tasks.
    pub device: Device,
    /// Messages a second.
    pub message_rate: u32,
    /// Other requests a second.
    pub request_rate: u32,
    /// Its message bucket.
    pub messages: Mutex<Bucket>,
    /// Its bucket for everything else.
    pub requests: Mutex<Bucket>,
}

/// What every handler shares.
pub struct AppState {
    /// API tokens.
    pub tokens: Mutex<Tokens>,
    /// The businesses, by account username.
    pub businesses: HashMap<String, Arc<Served>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The business a request's token is for.
pub struct Caller(pub Arc<Served>);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let business = state
            .tokens
            .lock()
            .map_err(|_| ApiError::internal("the token store is unusable"))?
            .check(token)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(ApiError::unauthorized)?;
        let served = state.businesses.get(&business).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token is for `{business}`, which this host does not run"),
            )
        })?;
        Ok(Caller(served))
    }
}

impl Served {
    fn take(&self, messages: bool) -> Result<(), ApiError> {
        let (bucket, rate, what) = if messages {
            (&self.messages, self.message_rate, "messages")
        } else {
            (&self.requests, self.request_rate, "requests")
        };
        let mut b = bucket
            .lock()
            .map_err(|_| ApiError::internal("the rate limiter is unusable"))?;
        b.take(1, Instant::now())
            .map_err(|wait| ApiError::rate_limited(what, rate, wait))
    }
}

async fn ask<T>(rx: oneshot::Receiver<Result<T, ClientError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(DEVICE_WAIT, rx).await {
        Ok(Ok(r)) => r.map_err(ApiError::from_client),
        Ok(Err(_)) => Err(ApiError::unavailable(
            "this business's device is shutting down",
        )),
        Err(_) => Err(ApiError::unavailable(
            "this business's device did not answer in time",
        )),
    }
}

/// Hands a read to the business's device and waits for its answer.
async fn read<T>(
    served: &Served,
    job: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> ReadJob,
) -> Result<T, ApiError> {
    let (reply, rx) = oneshot::channel();
    served
        .device
        .read
        .send(job(reply))
        .await
        .map_err(|_| ApiError::unavailable("this business's device is shutting down"))?;
    ask(rx).await
}

fn id_of(hex_id: &str) -> Option<Vec<u8>> {
    (hex_id.len() == 32)
        .then(|| hex::decode(hex_id).ok())
        .flatten()
}

// ---- the API's own shapes -------------------------------------------------

/// A text to send: to a customer (`to`), or into a conversation
/// (`conversation`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SendMessage {
    /// To a customer.
    ToUser(SendToUser),
    /// Into a conversation.
    ToConversation(SendToConversation),
}

/// A text to a customer: their 1:1 conversation with the business, started
/// if there is none yet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendToUser {
    /// The customer's username.
    #[schema(pattern = "^[a-z][a-z0-9_.-]{2,31}$")]
    pub to: String,
    /// The text.
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
}

/// A text into a conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendToConversation {
    /// The conversation's id, as listed.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub conversation: String,
    /// The text.
    #[schema(min_length = 1, max_length = 4096)]
    pub text: String,
}

/// A message queued for sending: saved on this host before this answer, sent
/// to the messaging server right after.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// The message's id.
    pub id: String,
    /// Its conversation's id.
    pub conversation: String,
    /// `pending` until the server holds it (then webhooks say `sent`,
    /// `delivered`, `read` or `failed`).
    pub status: StatusWord,
    /// True when an earlier request with the same `Idempotency-Key` made
    /// this message (nothing was sent again).
    pub replayed: bool,
}

/// How far a message got.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusWord {
    /// Saved here; the messaging server does not hold it yet.
    Pending,
    /// The messaging server holds it.
    Sent,
    /// The recipient's device has it.
    Delivered,
    /// The recipient was shown it.
    Read,
    /// The messaging server refused it for good.
    Failed,
}

impl From<Status> for StatusWord {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => Self::Pending,
            Status::Sent => Self::Sent,
            Status::Delivered => Self::Delivered,
            Status::Read => Self::Read,
            Status::Failed => Self::Failed,
        }
    }
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationOut {
    /// Its id.
    pub id: String,
    /// `direct` (1:1) or `group`.
    pub kind: String,
    /// Its name here (the customer's username for a 1:1 chat).
    pub name: String,
    /// For a 1:1 chat: the customer.
    pub peer: Option<String>,
    /// False once left.
    pub active: bool,
    /// When it began (ms since the Unix epoch).
    pub created_ms: u64,
}

impl From<AppConversation> for ConversationOut {
    fn from(c: AppConversation) -> Self {
        Self {
            id: c.id,
            kind: c.kind,
            name: c.name,
            peer: c.peer,
            active: c.active,
            created_ms: c.created_ms,
        }
    }
}

/// A page of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversations {
    /// Oldest first.
    pub conversations: Vec<ConversationOut>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// Where one of our messages is with one recipient.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientOut {
    /// The recipient.
    pub username: String,
    /// How far.
    pub status: StatusWord,
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// Its id.
    pub id: String,
    /// Its conversation's id.
    pub conversation: String,
    /// Who wrote it.
    pub from: String,
    /// Whether this business did.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When it was sent, as its sender says (ms since the Unix epoch).
    pub sent_ms: u64,
    /// Its place, for paging (`before`).
    pub seq: i64,
    /// For the business's own: how far it got overall.
    pub status: Option<StatusWord>,
    /// For the business's own: per recipient.
    pub recipients: Option<Vec<RecipientOut>>,
}

fn status_parts(s: Option<MessageStatus>) -> (Option<StatusWord>, Option<Vec<RecipientOut>>) {
    match s {
        None => (None, None),
        Some(s) => (
            Some(s.status.into()),
            Some(
                s.recipients
                    .into_iter()
                    .map(|r| RecipientOut {
                        username: r.username,
                        status: r.status.into(),
                    })
                    .collect(),
            ),
        ),
    }
}

impl From<AppMessage> for MessageOut {
    fn from(m: AppMessage) -> Self {
        let (status, recipients) = status_parts(m.status);
        Self {
            id: m.id,
            conversation: m.conversation,
            from: m.from,
            outgoing: m.outgoing,
            text: m.text,
            sent_ms: m.sent_ms,
            seq: m.seq,
            status,
            recipients,
        }
    }
}

/// A page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Messages {
    /// Newest first.
    pub messages: Vec<MessageOut>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<i64>,
}

/// The business this token is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusinessOut {
    /// Its account.
    pub username: String,
    /// The name its customers see.
    pub name: String,
    /// Whether the server's operator verified that name.
    pub verified: bool,
    /// Who runs its endpoint and can read its chats: absent when the
    /// business does.
    pub host: Option<String>,
    /// Messages a second it may send.
    pub messages_per_second: u32,
}

/// Paging of conversations.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationPage {
    /// Most to return [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only those after this conversation id.
    #[param(pattern = "^[0-9a-f]{32}$")]
    pub after: Option<String>,
}

/// Paging of messages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagePage {
    /// Most to return [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Only those before this place (a message's `seq`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

fn limit_of(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=200 => Ok(n as usize),
        _ => Err(ApiError::invalid("limit is between 1 and 200")),
    }
}

// ---- handlers ----------------------------------------------------------------

/// Sends a text to a customer or into a conversation.
///
/// The message is saved on this host before the answer (so it goes out even
/// if the host stops right after) and sent at once. With an
/// `Idempotency-Key`, the same request made again (after a timeout, a
/// restart) answers with the first message and sends nothing more; the same
/// key with another request is refused (422). Keys are kept for a day.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    request_body = SendMessage,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
         description = "Makes a repeat of this request answer with the first message (1 to 255 printable ASCII characters, no spaces)"),
    ),
    responses(
        (status = 202, description = "Saved, and on its way", body = Queued,
         headers(("Idempotent-Replayed" = String, description = "`true` when an earlier request with this key made the message"))),
        (status = 400, description = "Not a valid request", body = ErrorBody),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here, or the business blocked this customer", body = ErrorBody),
        (status = 404, description = "No such customer or conversation", body = ErrorBody),
        (status = 409, description = "The messaging server refused to start this conversation", body = ErrorBody),
        (status = 413, description = "The body or the message is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "This Idempotency-Key was used for another request", body = ErrorBody),
        (status = 429, description = "Over the business's rate of messages; see Retry-After", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The messaging server cannot be reached to start a conversation; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn send_message(
    Caller(served): Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    served.take(true)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| {
                    (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..0x7f).contains(&b))
                })
                .ok_or_else(|| {
                    ApiError::invalid("Idempotency-Key has 1 to 255 printable ASCII characters")
                })?;
            Some(k.to_string())
        }
    };
    let (to, text) = match req {
        SendMessage::ToUser(SendToUser { to, text }) => {
            umbra_client::validate_username(&to)
                .map_err(|_| ApiError::invalid(format!("`{to}` is not a username")))?;
            (To::User(to), text)
        }
        SendMessage::ToConversation(SendToConversation { conversation, text }) => (
            To::Conversation(
                id_of(&conversation)
                    .ok_or_else(|| ApiError::invalid("conversation is a 32-digit hex id"))?,
            ),
            text,
        ),
    };
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(format!(
            "text has 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    let (reply, rx) = oneshot::channel();
    served
        .device
        .send
        .send(SendJob {
            item: Outgoing {
                to,
                text,
                idempotency_key: key,
            },
            reply,
        })
        .await
        .map_err(|_| ApiError::unavailable("this business's device is shutting down"))?;
    let posted = ask(rx).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Queued {
            id: posted.id,
            conversation: posted.conversation,
            status: StatusWord::Pending,
            replayed: posted.replayed,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        "idempotent-replayed",
        HeaderValue::from_static(if posted.replayed { "true" } else { "false" }),
    );
    Ok(response)
}

/// Lists the business's conversations, oldest first.
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "conversations",
    params(ConversationPage),
    responses(
        (status = 200, description = "A page of conversations", body = Conversations),
        (status = 400, description = "Not a valid request", body = ErrorBody),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here", body = ErrorBody),
        (status = 429, description = "Over the business's rate of requests", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The business's device is busy or stopping; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_conversations(
    Caller(served): Caller,
    ApiQuery(page): ApiQuery<ConversationPage>,
) -> Result<Json<Conversations>, ApiError> {
    served.take(false)?;
    let limit = limit_of(page.limit)?;
    let after = match page.after {
        None => None,
        Some(a) => Some(id_of(&a).ok_or_else(|| ApiError::invalid("after is a 32-digit hex id"))?),
    };
    let list = read(&served, |reply| ReadJob::Conversations {
        limit,
        after,
        reply,
    })
    .await?;
    let next_after = (list.len() == limit)
        .then(|| list.last().map(|c| c.id.clone()))
        .flatten();
    Ok(Json(Conversations {
        conversations: list.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Lists a conversation's messages, newest first.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id"), MessagePage),
    responses(
        (status = 200, description = "A page of messages", body = Messages),
        (status = 400, description = "Not a valid request", body = ErrorBody),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 429, description = "Over the business's rate of requests", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The business's device is busy or stopping; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_messages(
    Caller(served): Caller,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<MessagePage>,
) -> Result<Json<Messages>, ApiError> {
    served.take(false)?;
    let limit = limit_of(page.limit)?;
    if page.before.is_some_and(|b| b < 1) {
        return Err(ApiError::invalid("before is at least 1"));
    }
    let conversation = id_of(&id).ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let list = read(&served, |reply| ReadJob::Messages {
        conversation,
        limit,
        before: page.before,
        reply,
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let next_before = (list.len() == limit)
        .then(|| list.last().map(|m| m.seq))
        .flatten();
    Ok(Json(Messages {
        messages: list.into_iter().map(Into::into).collect(),
        next_before,
    }))
}

/// Marks a conversation read: read receipts go back to its customers for
/// what it holds (if the business's read receipts are on).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/read",
    tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Marked read"),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 429, description = "Over the business's rate of requests", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The business's device is busy or stopping; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn mark_read(
    Caller(served): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    served.take(false)?;
    let conversation = id_of(&id).ok_or_else(|| ApiError::not_found("no such conversation"))?;
    if read(&served, |reply| ReadJob::MarkRead {
        conversation,
        reply,
    })
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such conversation"))
    }
}

/// Looks a message up: the business's own with its status, overall and per
/// recipient.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "The message's id")),
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 429, description = "Over the business's rate of requests", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The business's device is busy or stopping; try again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_message(
    Caller(served): Caller,
    Path(id): Path<String>,
) -> Result<Json<MessageOut>, ApiError> {
    served.take(false)?;
    let id = id_of(&id).ok_or_else(|| ApiError::not_found("no such message"))?;
    read(&served, |reply| ReadJob::Message { id, reply })
        .await?
        .map(|m| Json(m.into()))
        .ok_or_else(|| ApiError::not_found("no such message"))
}

/// The business this token is for: its name, badge and who runs it.
#[utoipa::path(
    get,
    path = "/v1/business",
    tag = "business",
    responses(
        (status = 200, description = "The business", body = BusinessOut),
        (status = 401, description = "No token, or not a live one", body = ErrorBody),
        (status = 403, description = "The token's business is not run here", body = ErrorBody),
        (status = 429, description = "Over the business's rate of requests", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security(("bearer" = []))
)]
pub async fn get_business(Caller(served): Caller) -> Result<Json<BusinessOut>, ApiError> {
    served.take(false)?;
    let d = &served.device;
    Ok(Json(BusinessOut {
        username: d.username.clone(),
        name: d.name.clone(),
        verified: d.verified,
        host: d.host.clone(),
        messages_per_second: served.message_rate,
    }))
}

/// Adds the bearer scheme to the document.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `umbra business token create`: it says which business the call is for",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Umbra business API",
        description = "What a business's own systems use to talk with its customers on Umbra, through the business host (`umbra business serve`) that runs its devices. Webhooks (message.received, message.status) are described in the README.",
        license(name = "AGPL-3.0-or-later")
    ),
    paths(send_message, list_conversations, list_messages, mark_read, get_message, get_business),
    components(schemas(
        SendMessage, SendToUser, SendToConversation, Queued, StatusWord, Conversations, ConversationOut, Messages, MessageOut,
        RecipientOut, BusinessOut, ErrorBody, crate::api_error::ErrorDetail
    )),
    modifiers(&Bearer),
    tags(
        (name = "messages", description = "Sending, and looking a message up"),
        (name = "conversations", description = "The business's conversations and their messages"),
        (name = "business", description = "The business itself"),
    )
)]
pub struct ApiDoc;

/// The document, as served and as kept in the repository.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route: see /openapi.json")
}

/// Counts each answer by its class.
async fn count(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(req).await;
    let s = response.status();
    if s.is_success() {
        state.metrics.api_ok.inc();
    } else if s == StatusCode::TOO_MANY_REQUESTS {
        state.metrics.api_rate_limited.inc();
    } else if s.is_client_error() {
        state.metrics.api_client_errors.inc();
    } else if s.is_server_error() {
        state.metrics.api_server_errors.inc();
    }
    response
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/messages", post(send_message))
        .route("/v1/messages/{id}", get(get_message))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}/messages", get(list_messages))
        .route("/v1/conversations/{id}/read", post(mark_read))
        .route("/v1/business", get(get_business))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document in the repository is the one the code serves:
    /// `UMBRA_WRITE_OPENAPI=1 cargo test -p umbra-business` rewrites it.
    #[test]
    fn the_document_in_the_repository_is_the_served_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let now = openapi_json() + "\n";
        if std::env::var_os("UMBRA_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &now).expect("write openapi.json");
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == now,
            "crates/umbra-business/openapi.json is not what the API serves: \
             run `UMBRA_WRITE_OPENAPI=1 cargo test -p umbra-business` and commit it"
        );
    }
}
