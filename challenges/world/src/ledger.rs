//! The ledger (debit/credit an account for an order, level 3) and loyalty
//! points (grant/release, level 7). Every call is an effect: the world never
//! deduplicates, because counting duplicates is what the checkers do.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::history::{Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, Segment, check_id, check_positive};
use crate::state::{Shared, State as World};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    order_id: String,
    account: String,
    amount: i64,
}

impl Example for Entry {
    const EXAMPLE: &'static str = r#"{"order_id": "o-1", "account": "alice", "amount": 1999}"#;
}

pub(crate) async fn debit(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<Entry>,
) -> Result<Json<Value>, ApiError> {
    post_entry(&shared, &caller, req, -1)
}

pub(crate) async fn credit(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<Entry>,
) -> Result<Json<Value>, ApiError> {
    post_entry(&shared, &caller, req, 1)
}

fn post_entry(
    shared: &Shared,
    caller: &Caller,
    req: Entry,
    sign: i64,
) -> Result<Json<Value>, ApiError> {
    check_id("order_id", &req.order_id)?;
    check_id("account", &req.account)?;
    check_positive("amount", req.amount)?;
    let (order_id, account, amount) = (req.order_id, req.account.clone(), req.amount);
    let op = if sign < 0 {
        Op::Debit {
            order_id,
            account,
            amount,
        }
    } else {
        Op::Credit {
            order_id,
            account,
            amount,
        }
    };
    let mut state = shared.lock();
    let (seq, balance) = apply(
        &mut state,
        caller,
        op,
        |s| &mut s.accounts,
        &req.account,
        sign * amount,
    )?;
    Ok(Json(
        json!({"seq": seq, "account": req.account, "balance": balance}),
    ))
}

pub(crate) async fn balance(
    State(shared): State<Shared>,
    Segment(account): Segment,
) -> Json<Value> {
    let balance = shared.lock().accounts.get(&account).copied().unwrap_or(0);
    Json(json!({"account": account, "balance": balance}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointsEntry {
    order_id: String,
    customer: String,
    points: i64,
}

impl Example for PointsEntry {
    const EXAMPLE: &'static str = r#"{"order_id": "o-1", "customer": "alice", "points": 20}"#;
}

pub(crate) async fn grant(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<PointsEntry>,
) -> Result<Json<Value>, ApiError> {
    post_points(&shared, &caller, req, 1)
}

pub(crate) async fn release(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<PointsEntry>,
) -> Result<Json<Value>, ApiError> {
    post_points(&shared, &caller, req, -1)
}

fn post_points(
    shared: &Shared,
    caller: &Caller,
    req: PointsEntry,
    sign: i64,
) -> Result<Json<Value>, ApiError> {
    check_id("order_id", &req.order_id)?;
    check_id("customer", &req.customer)?;
    check_positive("points", req.points)?;
    let (order_id, customer, points) = (req.order_id, req.customer.clone(), req.points);
    let op = if sign > 0 {
        Op::Grant {
            order_id,
            customer,
            points,
        }
    } else {
        Op::Release {
            order_id,
            customer,
            points,
        }
    };
    let mut state = shared.lock();
    let (seq, balance) = apply(
        &mut state,
        caller,
        op,
        |s| &mut s.points,
        &req.customer,
        sign * points,
    )?;
    Ok(Json(
        json!({"seq": seq, "customer": req.customer, "points": balance}),
    ))
}

pub(crate) async fn points(
    State(shared): State<Shared>,
    Segment(customer): Segment,
) -> Json<Value> {
    let points = shared.lock().points.get(&customer).copied().unwrap_or(0);
    Json(json!({"customer": customer, "points": points}))
}

/// Fault check, record, then move a balance; returns `(seq, new balance)`.
fn apply(
    state: &mut World,
    caller: &Caller,
    op: Op,
    table: fn(&mut World) -> &mut HashMap<String, i64>,
    holder: &str,
    delta: i64,
) -> Result<(u64, i64), ApiError> {
    state.check_fault(caller, &op)?;
    let seq = state.record(caller, op, Outcome::Ok, None);
    let balance = table(state).entry(holder.to_owned()).or_default();
    *balance = balance.saturating_add(delta);
    Ok((seq, *balance))
}
