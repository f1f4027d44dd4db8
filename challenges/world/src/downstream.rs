//! Downstream APIs with a rate limit (level 11) and the append-only event
//! recorder (trace hops, logistics and anything later levels need to prove).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::history::{Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, Segment};
use crate::state::Shared;

/// Payloads are JSON objects, so a key can be found and the record stays readable.
fn check_object(payload: &Value) -> Result<(), ApiError> {
    if !payload.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object".into(),
            Value::EXAMPLE,
        ));
    }
    Ok(())
}

/// The business key of a payload: its `key`, else its `order_id`.
fn payload_key(payload: &Value) -> Option<String> {
    ["key", "order_id"]
        .iter()
        .find_map(|field| match payload.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

pub(crate) async fn call(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(endpoint): Segment,
    JsonBody(payload): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    check_object(&payload)?;
    let (seq, latency) = {
        let mut state = shared.lock();
        let Some(config) = state.config().downstreams.get(&endpoint).cloned() else {
            let known: Vec<&str> = state
                .config()
                .downstreams
                .keys()
                .map(String::as_str)
                .collect();
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no downstream endpoint {endpoint}"),
                format!("this level's endpoints are: {}", known.join(", ")),
            ));
        };
        let op = Op::Downstream {
            endpoint: endpoint.clone(),
            key: payload_key(&payload),
            payload,
        };
        if let Some(rate) = config.rate_per_sec
            && !state.take_token(&endpoint, rate, config.bucket_size(rate))
        {
            return Err(state.refuse(
                &caller,
                op,
                Outcome::Rejected,
                StatusCode::TOO_MANY_REQUESTS,
                format!("{endpoint} allows {rate} requests/s and this one is over it"),
                "pace calls to the downstream's rate (e.g. a token bucket) and delay, rather than drop, the excess",
            ));
        }
        state.check_fault(&caller, &op)?;
        // Recorded on admission, so timestamps are what the limit judges.
        let seq = state.record(&caller, op, Outcome::Ok, None);
        (seq, Duration::from_millis(config.latency_ms))
    };
    tokio::time::sleep(latency).await;
    Ok(Json(json!({"seq": seq})))
}

pub(crate) async fn event(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(name): Segment,
    JsonBody(payload): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    check_object(&payload)?;
    let mut state = shared.lock();
    let op = Op::Event {
        name,
        key: payload_key(&payload),
        payload,
    };
    state.check_fault(&caller, &op)?;
    let seq = state.record(&caller, op, Outcome::Ok, None);
    Ok(Json(json!({"seq": seq})))
}
