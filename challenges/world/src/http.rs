//! The HTTP surface: routes, the caller's identity, and extractors that turn
//! every malformed request into a 4xx `{"error", "hint"}` instead of axum's
//! plain-text rejections.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::history::History;
use crate::state::Shared;
use crate::{downstream, inventory, kv, ledger, orders};

/// Bodies are small business records; a cap keeps the history bounded.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest id, key, status or name accepted.
const MAX_ID_LEN: usize = 256;

pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/_world/history", get(history))
        .route("/orders", post(orders::create))
        .route("/orders/{order_id}", get(orders::read))
        .route("/orders/{order_id}/status", post(orders::transition))
        .route("/ledger/debit", post(ledger::debit))
        .route("/ledger/credit", post(ledger::credit))
        .route("/ledger/accounts/{account}", get(ledger::balance))
        .route("/points/grant", post(ledger::grant))
        .route("/points/release", post(ledger::release))
        .route("/points/customers/{customer}", get(ledger::points))
        .route("/inventory/reserve", post(inventory::reserve))
        .route("/inventory/restore", post(inventory::restore))
        .route("/inventory/skus/{sku}", get(inventory::reserved))
        .route("/kv/{key}", get(kv::read).delete(kv::delete))
        .route("/kv/{key}/set-if-absent", post(kv::set_if_absent))
        .route("/kv/{key}/compare-and-set", post(kv::compare_and_set))
        .route("/downstream/{endpoint}", post(downstream::call))
        .route("/events/{name}", post(downstream::event))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
    /// Only effects with a larger `seq`, to page through a long run.
    #[serde(default)]
    since: u64,
}

async fn history(
    State(shared): State<Shared>,
    QueryArgs(q): QueryArgs<HistoryQuery>,
) -> Json<History> {
    let state = shared.lock();
    let effects = state
        .effects()
        .iter()
        .filter(|e| e.seq > q.since)
        .cloned()
        .collect();
    Json(History { effects })
}

async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route".into(),
        "the world's routes are listed in challenges/world/README.md; GET /healthz answers if the world is up",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route exists but not with this method".into(),
        "writes are POST (DELETE for /kv/{key}), reads are GET; see challenges/world/README.md",
    )
}

/// Who is calling: `X-Dojo-Instance` and `X-Request-Id`.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub instance: String,
    pub request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(MAX_ID_LEN).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        Ok(Caller {
            instance: header("x-dojo-instance").unwrap_or_else(|| "unknown".to_owned()),
            request_id: header("x-request-id"),
        })
    }
}

/// The JSON error answer every 4xx/5xx carries.
#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    error: String,
    hint: String,
    /// The recorded effect, when the refusal was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: String, hint: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            hint: hint.into(),
            seq: None,
        }
    }

    pub fn bad_request(error: String, hint: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, hint)
    }

    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

/// A request body type with an example for error hints.
pub(crate) trait Example {
    const EXAMPLE: &'static str;
}

impl Example for serde_json::Value {
    const EXAMPLE: &'static str = r#"{"order_id": "o-1", "anything": "else"}"#;
}

/// `Json<T>` whose rejection is an `ApiError` showing the expected body.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Example> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(body)| JsonBody(body))
            .map_err(|e: JsonRejection| {
                ApiError::new(
                    e.status(),
                    e.body_text(),
                    format!(
                        "send the header Content-Type: application/json and a body like {}",
                        T::EXAMPLE
                    ),
                )
            })
    }
}

/// The single path parameter of a route, percent-decoded.
pub(crate) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| {
                ApiError::new(
                    e.status(),
                    e.body_text(),
                    "path parameters are UTF-8, percent-encoded",
                )
            })?;
        check_id("path parameter", &segment)?;
        Ok(Segment(segment))
    }
}

/// `Query<T>` whose rejection is an `ApiError`.
pub(crate) struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryArgs(q))
            .map_err(|e: QueryRejection| {
                ApiError::new(
                    e.status(),
                    e.body_text(),
                    "see challenges/world/README.md for this route's query parameters",
                )
            })
    }
}

/// Ids, keys, statuses and names: non-empty, bounded, no control characters.
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            format!("{field} must be 1 to {MAX_ID_LEN} bytes without control characters"),
            format!("got {:?}", value.chars().take(40).collect::<String>()),
        ));
    }
    Ok(())
}

pub(crate) fn check_positive(field: &str, value: i64) -> Result<(), ApiError> {
    if value <= 0 {
        return Err(ApiError::bad_request(
            format!("{field} must be a positive integer, got {value}"),
            "amounts are integers in the smallest unit (cents, items, points); to undo a debit, credit it",
        ));
    }
    Ok(())
}
