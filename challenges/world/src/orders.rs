//! The orders table and its optional state machine (levels 5, 6, 7).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Repeats;
use crate::history::{Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, Segment, check_id, check_positive};
use crate::state::{Order, Shared, State as WorldState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    order_id: String,
    amount: i64,
    customer: String,
    /// Defaults to the state machine's initial status, else `CREATED`.
    status: Option<String>,
}

impl Example for CreateOrder {
    const EXAMPLE: &'static str = r#"{"order_id": "o-1", "amount": 1999, "customer": "alice"}"#;
}

pub(crate) async fn create(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateOrder>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_id("order_id", &req.order_id)?;
    check_id("customer", &req.customer)?;
    check_positive("amount", req.amount)?;
    if let Some(status) = &req.status {
        check_id("status", status)?;
    }

    let (answer, latency) = {
        let mut state = shared.lock();
        let latency = Duration::from_millis(state.config().orders.create_latency_ms);
        (write_row(&mut state, &caller, req), latency)
    };
    // Written (or failed) already: a caller that dies while waiting does not
    // know which.
    tokio::time::sleep(latency).await;
    answer
}

/// Writes the row of a new order (or refuses it) under the world's lock.
fn write_row(
    state: &mut WorldState,
    caller: &Caller,
    req: CreateOrder,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let initial = state
        .config()
        .state_machine
        .as_ref()
        .map(|m| m.initial.clone());
    let status = req
        .status
        .or_else(|| initial.clone())
        .unwrap_or_else(|| "CREATED".to_owned());
    let op = Op::OrderCreate {
        order_id: req.order_id.clone(),
        amount: req.amount,
        customer: req.customer.clone(),
        status: status.clone(),
    };
    state.check_fault(caller, &op)?;
    if let Some(initial) = initial
        && status != initial
    {
        return Err(state.refuse(
            caller,
            op,
            Outcome::Illegal,
            StatusCode::CONFLICT,
            format!("order {} cannot start in {status}", req.order_id),
            format!("in this level every order starts in {initial}"),
        ));
    }
    if state.orders.contains_key(&req.order_id) {
        return Err(state.refuse(
            caller,
            op,
            Outcome::Rejected,
            StatusCode::CONFLICT,
            format!("order {} already exists", req.order_id),
            "the row was written before; a second create is a duplicate (GET /orders/{order_id} reads it)",
        ));
    }
    let seq = state.record(caller, op, Outcome::Ok, None);
    let now = state.now_ms();
    let order = Order {
        order_id: req.order_id.clone(),
        amount: req.amount,
        customer: req.customer,
        status: status.clone(),
        statuses: vec![status],
        created_at_ms: now,
        updated_at_ms: now,
    };
    state.orders.insert(req.order_id, order.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({"seq": seq, "order": order})),
    ))
}

pub(crate) async fn read(
    State(shared): State<Shared>,
    Segment(order_id): Segment,
) -> Result<Json<Order>, ApiError> {
    let state = shared.lock();
    state
        .orders
        .get(&order_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no order {order_id}"),
                "orders exist once POST /orders created them",
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transition {
    to: String,
    /// Applies only if the order is currently in this status (compare-and-set).
    from: Option<String>,
}

impl Example for Transition {
    const EXAMPLE: &'static str = r#"{"to": "PAID"} or {"to": "CANCELLED", "from": "CREATED"}"#;
}

pub(crate) async fn transition(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(order_id): Segment,
    JsonBody(req): JsonBody<Transition>,
) -> Result<Json<Value>, ApiError> {
    check_id("to", &req.to)?;
    if let Some(from) = &req.from {
        check_id("from", from)?;
    }

    let mut state = shared.lock();
    let machine = state.config().state_machine.clone();
    let seen = state
        .orders
        .get(&order_id)
        .map(|o| o.statuses.clone())
        .unwrap_or_default();
    let op = |changed| Op::OrderStatus {
        order_id: order_id.clone(),
        expected: req.from.clone(),
        to: req.to.clone(),
        seen: seen.clone(),
        changed,
    };
    state.check_fault(&caller, &op(false))?;

    let Some(current) = seen.last() else {
        // Under a state machine an event for an order not yet created is an
        // out-of-order delivery, which is what levels 5 and 7 judge.
        let (outcome, status) = match machine {
            Some(_) => (Outcome::Illegal, StatusCode::CONFLICT),
            None => (Outcome::Rejected, StatusCode::NOT_FOUND),
        };
        return Err(state.refuse(
            &caller,
            op(false),
            outcome,
            status,
            format!("no order {order_id} to move to {}", req.to),
            "the order must be created (POST /orders) before its status changes",
        ));
    };
    if let Some(from) = &req.from
        && from != current
    {
        return Err(state.refuse(
            &caller,
            op(false),
            Outcome::Rejected,
            StatusCode::CONFLICT,
            format!("order {order_id} is {current}, not {from}"),
            "a transition with \"from\" applies only while the order is in that status; nothing changed",
        ));
    }

    let repeats = machine.as_ref().map_or(Repeats::Current, |m| m.repeats);
    let repeat = match repeats {
        Repeats::Illegal => false,
        Repeats::Current => *current == req.to,
        Repeats::Seen => seen.contains(&req.to),
    };
    if !repeat
        && let Some(machine) = &machine
        && !machine.allows(current, &req.to)
    {
        return Err(state.refuse(
            &caller,
            op(false),
            Outcome::Illegal,
            StatusCode::CONFLICT,
            format!(
                "illegal transition of order {order_id}: {current} → {} (seen {})",
                req.to,
                seen.join(" → ")
            ),
            format!(
                "this level allows only {}; one order's events must be applied in order",
                machine.describe()
            ),
        ));
    }

    let seq = state.record(&caller, op(!repeat), Outcome::Ok, None);
    let now = state.now_ms();
    let order = state
        .orders
        .get_mut(&order_id)
        .expect("the order was read under this same lock");
    if !repeat {
        order.status = req.to.clone();
        order.statuses.push(req.to);
        order.updated_at_ms = now;
    }
    Ok(Json(
        json!({"seq": seq, "changed": !repeat, "order": order}),
    ))
}
