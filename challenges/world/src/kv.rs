//! A key-value store with set-if-absent, compare-and-set and TTL: the dedup
//! table and lock of level 3. Expired keys behave as absent.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::history::{Op, Outcome};
use crate::http::{ApiError, Caller, Example, JsonBody, QueryArgs, Segment};
use crate::state::{KvEntry, Shared, State as World};

/// A live entry as answered.
#[derive(Serialize)]
pub(crate) struct EntryView<'a> {
    key: &'a str,
    value: &'a str,
    revision: u64,
    /// Milliseconds until it expires; absent when it never does.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms_left: Option<u64>,
}

pub(crate) fn view<'a>(state: &'a World, key: &'a str) -> Option<EntryView<'a>> {
    let now = state.now_ms();
    state.live_kv(key).map(|e| EntryView {
        key,
        value: &e.value,
        revision: e.revision,
        ttl_ms_left: e.expires_at_ms.map(|t| t.saturating_sub(now)),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetIfAbsent {
    value: String,
    ttl_ms: Option<u64>,
}

impl Example for SetIfAbsent {
    const EXAMPLE: &'static str = r#"{"value": "PROCESSING", "ttl_ms": 30000}"#;
}

pub(crate) async fn set_if_absent(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(key): Segment,
    JsonBody(req): JsonBody<SetIfAbsent>,
) -> Result<Json<Value>, ApiError> {
    check_value(&req.value)?;
    check_ttl(req.ttl_ms)?;
    let mut state = shared.lock();
    let created = state.live_kv(&key).is_none();
    let op = Op::KvSetIfAbsent {
        key: key.clone(),
        value: req.value.clone(),
        ttl_ms: req.ttl_ms,
        created,
    };
    state.check_fault(&caller, &op)?;
    let seq = state.record(&caller, op, Outcome::Ok, None);
    if created {
        let expires_at_ms = req.ttl_ms.map(|ttl| state.now_ms() + ttl);
        state.kv.insert(
            key.clone(),
            KvEntry {
                value: req.value,
                revision: seq,
                expires_at_ms,
            },
        );
    }
    Ok(Json(
        json!({"seq": seq, "created": created, "entry": view(&state, &key)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompareAndSet {
    expect: String,
    value: String,
    /// A new TTL from now; absent keeps the current expiry.
    ttl_ms: Option<u64>,
}

impl Example for CompareAndSet {
    const EXAMPLE: &'static str = r#"{"expect": "PROCESSING", "value": "DONE", "ttl_ms": 600000}"#;
}

pub(crate) async fn compare_and_set(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(key): Segment,
    JsonBody(req): JsonBody<CompareAndSet>,
) -> Result<Json<Value>, ApiError> {
    check_value(&req.expect)?;
    check_value(&req.value)?;
    check_ttl(req.ttl_ms)?;
    let mut state = shared.lock();
    let swapped = cas_matches(&state, &key, &req.expect);
    let op = Op::KvCompareAndSet {
        key: key.clone(),
        expect: req.expect,
        value: req.value.clone(),
        ttl_ms: req.ttl_ms,
        swapped,
    };
    state.check_fault(&caller, &op)?;
    let seq = state.record(&caller, op, Outcome::Ok, None);
    if swapped {
        cas_write(&mut state, &key, req.value, req.ttl_ms, seq);
    }
    Ok(Json(
        json!({"seq": seq, "swapped": swapped, "entry": view(&state, &key)}),
    ))
}

pub(crate) async fn read(
    State(shared): State<Shared>,
    Segment(key): Segment,
) -> Result<Json<Value>, ApiError> {
    let state = shared.lock();
    match view(&state, &key) {
        Some(entry) => Ok(Json(json!(entry))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no key {key}"),
            "the key was never set, was deleted, or its TTL ran out",
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct DeleteQuery {
    /// Deletes only while the value is this (releasing a lock one holds).
    expect: Option<String>,
}

pub(crate) async fn delete(
    State(shared): State<Shared>,
    caller: Caller,
    Segment(key): Segment,
    QueryArgs(q): QueryArgs<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut state = shared.lock();
    let deleted = state
        .live_kv(&key)
        .is_some_and(|e| q.expect.as_ref().is_none_or(|expect| *expect == e.value));
    let op = Op::KvDelete {
        key: key.clone(),
        expect: q.expect,
        deleted,
    };
    state.check_fault(&caller, &op)?;
    let seq = state.record(&caller, op, Outcome::Ok, None);
    // An expired entry is dropped too: it was already absent.
    if deleted || state.live_kv(&key).is_none() {
        state.kv.remove(&key);
    }
    Ok(Json(json!({"seq": seq, "deleted": deleted})))
}

/// Whether a compare-and-set expecting `expect` applies now.
pub(crate) fn cas_matches(state: &World, key: &str, expect: &str) -> bool {
    state.live_kv(key).is_some_and(|e| e.value == expect)
}

/// Writes a matched compare-and-set as effect `seq`.
pub(crate) fn cas_write(
    state: &mut World,
    key: &str,
    value: String,
    ttl_ms: Option<u64>,
    seq: u64,
) {
    let now = state.now_ms();
    if let Some(entry) = state.kv.get_mut(key) {
        entry.value = value;
        entry.revision = seq;
        if let Some(ttl) = ttl_ms {
            entry.expires_at_ms = Some(now + ttl);
        }
    }
}

pub(crate) fn check_value(value: &str) -> Result<(), ApiError> {
    if value.len() > 4096 {
        return Err(ApiError::bad_request(
            "values are at most 4096 bytes".into(),
            "store a state or a small result, not a document",
        ));
    }
    Ok(())
}

pub(crate) fn check_ttl(ttl_ms: Option<u64>) -> Result<(), ApiError> {
    // Bounded so `now + ttl` cannot overflow; a year is forever for a level.
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    match ttl_ms {
        Some(0) => Err(ApiError::bad_request(
            "ttl_ms must be positive".into(),
            "omit ttl_ms for a key that never expires",
        )),
        Some(ttl) if ttl > YEAR_MS => Err(ApiError::bad_request(
            format!("ttl_ms must be at most {YEAR_MS}"),
            "omit ttl_ms for a key that never expires",
        )),
        _ => Ok(()),
    }
}
