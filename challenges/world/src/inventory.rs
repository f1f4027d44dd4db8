//! The inventory API (level 4): batches of items, a fixed latency per call
//! and a limit on calls in flight, so only batching and bounded concurrency
//! drain a backlog in time. Restores are what level 7's cancel does.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::history::{Item, Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, Segment, check_id, check_positive};
use crate::state::Shared;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    items: Vec<Item>,
}

impl Example for Batch {
    const EXAMPLE: &'static str = r#"{"items": [{"order_id": "o-1", "sku": "sku-7", "qty": 2}]}"#;
}

pub(crate) async fn reserve(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(batch): JsonBody<Batch>,
) -> Result<Json<Value>, ApiError> {
    call(shared, caller, batch.items, true).await
}

pub(crate) async fn restore(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(batch): JsonBody<Batch>,
) -> Result<Json<Value>, ApiError> {
    call(shared, caller, batch.items, false).await
}

pub(crate) async fn reserved(State(shared): State<Shared>, Segment(sku): Segment) -> Json<Value> {
    let reserved = shared.lock().reserved.get(&sku).copied().unwrap_or(0);
    Json(json!({"sku": sku, "reserved": reserved}))
}

/// Frees the in-flight slot however the call ends, client disconnect included.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().inventory_in_flight -= 1;
    }
}

async fn call(
    shared: Shared,
    caller: Caller,
    items: Vec<Item>,
    reserve: bool,
) -> Result<Json<Value>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "items is empty".into(),
            Batch::EXAMPLE,
        ));
    }
    for item in &items {
        check_id("order_id", &item.order_id)?;
        check_id("sku", &item.sku)?;
        check_positive("qty", item.qty)?;
    }

    let op = if reserve {
        Op::Reserve {
            items: items.clone(),
        }
    } else {
        Op::Restore {
            items: items.clone(),
        }
    };
    let (latency, slot) = {
        let mut state = shared.lock();
        let config = state.config().inventory.clone();
        if items.len() > config.batch_max {
            return Err(ApiError::bad_request(
                format!(
                    "{} items in one call; the most is {}",
                    items.len(),
                    config.batch_max
                ),
                "split the batch",
            ));
        }
        if let Some(limit) = config.concurrency_limit
            && state.inventory_in_flight >= limit
        {
            return Err(state.refuse(
                &caller,
                op,
                Outcome::Rejected,
                StatusCode::TOO_MANY_REQUESTS,
                format!("{limit} inventory calls already in flight"),
                format!("the inventory takes at most {limit} concurrent calls; batch items instead of adding calls"),
            ));
        }
        state.inventory_in_flight += 1;
        (
            Duration::from_millis(config.latency_ms),
            InFlight(shared.clone()),
        )
    };
    tokio::time::sleep(latency).await;
    drop(slot);

    let mut state = shared.lock();
    state.check_fault(&caller, &op)?;
    let sign = if reserve { 1 } else { -1 };
    for item in &items {
        let reserved = state.reserved.entry(item.sku.clone()).or_default();
        *reserved = reserved.saturating_add(sign * item.qty);
    }
    let count = items.len();
    let seq = state.record(&caller, op, Outcome::Ok, None);
    Ok(Json(json!({"seq": seq, "items": count})))
}
