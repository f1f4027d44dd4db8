//! The ledger (debit/credit an account for an order, level 3) and loyalty
//! points (grant/release, level 7). Every call is an effect: the world never
//! deduplicates, because counting duplicates is what the checkers do. A
//! ledger entry may carry a key-value compare-and-set applied in the same
//! step, as a database transaction writes a dedup row with the business row.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::history::{KvCas, Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, Segment, check_id, check_positive};
use crate::kv;
use crate::state::{Shared, State as World};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    order_id: String,
    account: String,
    amount: i64,
    #[serde(default)]
    kv_cas: Option<KvCas>,
}

impl Example for Entry {
    const EXAMPLE: &'static str = r#"{"order_id": "o-1", "account": "alice", "amount": 1999, "kv_cas"?: {"key": "pay:o-1", "expect": "PROCESSING", "value": "DONE"}}"#;
}

pub(crate) async fn debit(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<Entry>,
) -> Result<Json<Value>, ApiError> {
    post_entry(&shared, &caller, req, -1).await
}

pub(crate) async fn credit(
    State(shared): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<Entry>,
) -> Result<Json<Value>, ApiError> {
    post_entry(&shared, &caller, req, 1).await
}

async fn post_entry(
    shared: &Shared,
    caller: &Caller,
    req: Entry,
    sign: i64,
) -> Result<Json<Value>, ApiError> {
    check_id("order_id", &req.order_id)?;
    check_id("account", &req.account)?;
    check_positive("amount", req.amount)?;
    if let Some(cas) = &req.kv_cas {
        check_id("kv_cas.key", &cas.key)?;
        kv::check_value(&cas.expect)?;
        kv::check_value(&cas.value)?;
        kv::check_ttl(cas.ttl_ms)?;
    }
    let (order_id, account, amount, kv_cas) = (
        req.order_id,
        req.account.clone(),
        req.amount,
        req.kv_cas.clone(),
    );
    let op = if sign < 0 {
        Op::Debit {
            order_id,
            account,
            amount,
            kv_cas,
        }
    } else {
        Op::Credit {
            order_id,
            account,
            amount,
            kv_cas,
        }
    };
    let (answer, latency) = {
        let mut state = shared.lock();
        let latency = Duration::from_millis(state.config().ledger.latency_ms);
        // An injected fault first: it applies nothing, the kv key included.
        state.check_fault(caller, &op)?;
        if let Some(cas) = &req.kv_cas
            && !kv::cas_matches(&state, &cas.key, &cas.expect)
        {
            let held = state.live_kv(&cas.key).map(|e| e.value.clone());
            let error = match held {
                Some(v) => format!(
                    "kv_cas: key {} holds {v:?}, not {:?}; nothing was applied",
                    cas.key, cas.expect
                ),
                None => format!(
                    "kv_cas: key {} is absent (never set, deleted or expired), not {:?}; nothing was applied",
                    cas.key, cas.expect
                ),
            };
            return Err(state.refuse(
                caller,
                op,
                Outcome::Rejected,
                StatusCode::CONFLICT,
                error,
                "read the key again: someone else may hold it or have finished",
            ));
        }
        let (seq, balance) = record_and_move(
            &mut state,
            caller,
            op,
            |s| &mut s.accounts,
            &req.account,
            sign * amount,
        );
        let mut answer = json!({"seq": seq, "account": req.account, "balance": balance});
        if let Some(cas) = req.kv_cas {
            kv::cas_write(&mut state, &cas.key, cas.value, cas.ttl_ms, seq);
            answer["entry"] = json!(kv::view(&state, &cas.key));
        }
        (answer, latency)
    };
    // Applied already: a caller that dies while waiting has still debited.
    tokio::time::sleep(latency).await;
    Ok(Json(answer))
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
    Ok(record_and_move(state, caller, op, table, holder, delta))
}

/// Records an applied entry and moves the balance; returns `(seq, new balance)`.
fn record_and_move(
    state: &mut World,
    caller: &Caller,
    op: Op,
    table: fn(&mut World) -> &mut HashMap<String, i64>,
    holder: &str,
    delta: i64,
) -> (u64, i64) {
    let seq = state.record(caller, op, Outcome::Ok, None);
    let balance = table(state).entry(holder.to_owned()).or_default();
    *balance = balance.saturating_add(delta);
    (seq, *balance)
}
