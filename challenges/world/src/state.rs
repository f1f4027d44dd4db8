//! The world's tables and its effect log, behind one mutex: every call is a
//! short critical section, and latency is slept outside it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{Fault, FaultRule, WorldConfig};
use crate::history::{Effect, Op, Outcome};
use crate::http::{ApiError, Caller};

pub(crate) type Shared = Arc<Mutex<State>>;

/// A row of the orders table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Order {
    pub order_id: String,
    pub amount: i64,
    pub customer: String,
    pub status: String,
    /// Every status the order went through, the current one last.
    pub statuses: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

pub(crate) struct KvEntry {
    pub value: String,
    /// `seq` of the effect that last wrote it: increases across deletes and
    /// re-creations, so callers can use it as a fencing token.
    pub revision: u64,
    pub expires_at_ms: Option<u64>,
}

/// Tokens of one downstream endpoint's limiter.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(size: f64, now: Instant) -> Self {
        Bucket {
            tokens: size,
            last: now,
        }
    }

    /// Refills at the current rate (so config changes apply at once) and
    /// takes one token if there is one.
    fn take(&mut self, now: Instant, rate: f64, size: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(size);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Calls counted by one configured fault.
#[derive(Default)]
struct FaultCounter {
    calls: u64,
    attempts: HashMap<String, u32>,
}

pub(crate) struct State {
    started: Instant,
    started_wall_ms: u64,
    config: WorldConfig,
    /// One per `config.faults`, reset when the faults change.
    fault_counters: Vec<FaultCounter>,
    effects: Vec<Effect>,
    pub orders: HashMap<String, Order>,
    pub accounts: HashMap<String, i64>,
    pub points: HashMap<String, i64>,
    pub reserved: HashMap<String, i64>,
    pub kv: HashMap<String, KvEntry>,
    buckets: HashMap<String, Bucket>,
    pub inventory_in_flight: usize,
}

impl State {
    pub fn new(config: WorldConfig) -> Self {
        let started_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut state = State {
            started: Instant::now(),
            started_wall_ms,
            config: WorldConfig::default(),
            fault_counters: Vec::new(),
            effects: Vec::new(),
            orders: HashMap::new(),
            accounts: HashMap::new(),
            points: HashMap::new(),
            reserved: HashMap::new(),
            kv: HashMap::new(),
            buckets: HashMap::new(),
            inventory_in_flight: 0,
        };
        state.set_config(config);
        state
    }

    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: WorldConfig) {
        if config.faults != self.config.faults || self.fault_counters.len() != config.faults.len() {
            self.fault_counters = config
                .faults
                .iter()
                .map(|_| FaultCounter::default())
                .collect();
        }
        self.config = config;
    }

    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Appends an effect and returns its `seq`.
    pub fn record(
        &mut self,
        caller: &Caller,
        op: Op,
        outcome: Outcome,
        reason: Option<String>,
    ) -> u64 {
        let seq = self.effects.len() as u64 + 1;
        let at_ms = self.now_ms();
        if outcome != Outcome::Ok {
            tracing::debug!(seq, ?outcome, reason = reason.as_deref(), instance = %caller.instance, "effect refused");
        }
        self.effects.push(Effect {
            seq,
            at_ms,
            wall_ms: self.started_wall_ms + at_ms,
            instance: caller.instance.clone(),
            request_id: caller.request_id.clone(),
            outcome,
            reason,
            op,
        });
        seq
    }

    /// Records a refused call and builds its answer.
    pub fn refuse(
        &mut self,
        caller: &Caller,
        op: Op,
        outcome: Outcome,
        status: StatusCode,
        error: String,
        hint: impl Into<String>,
    ) -> ApiError {
        let seq = self.record(caller, op, outcome, Some(error.clone()));
        ApiError::new(status, error, hint).with_seq(seq)
    }

    /// Counts the call against every fault aimed at it; if one fires, the
    /// call is recorded as failed and its error answer returned.
    pub fn check_fault(&mut self, caller: &Caller, op: &Op) -> Result<(), ApiError> {
        let keys = op.fault_keys();
        let mut fired = None;
        for (fault, counter) in self.config.faults.iter().zip(&mut self.fault_counters) {
            if fault.kind != op.kind()
                || fault.name.as_deref().is_some_and(|n| Some(n) != op.name())
            {
                continue;
            }
            if fires(fault, counter, &keys) && fired.is_none() {
                fired = Some(fault.status);
            }
        }
        match fired {
            None => Ok(()),
            Some(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                Err(self.refuse(
                    caller,
                    op.clone(),
                    Outcome::Failed,
                    status,
                    format!("injected fault: the world failed this {:?} call", op.kind()),
                    "nothing was applied; this failure is part of the level, so handle it as a real outage would be handled",
                ))
            }
        }
    }

    /// Takes a token from a downstream endpoint's bucket.
    pub fn take_token(&mut self, endpoint: &str, rate: f64, size: f64) -> bool {
        let now = Instant::now();
        self.buckets
            .entry(endpoint.to_owned())
            .or_insert_with(|| Bucket::full(size, now))
            .take(now, rate, size)
    }

    /// A kv entry unless it has expired; expired entries behave as absent.
    pub fn live_kv(&self, key: &str) -> Option<&KvEntry> {
        let now = self.now_ms();
        self.kv
            .get(key)
            .filter(|e| e.expires_at_ms.is_none_or(|t| t > now))
    }
}

/// Decides one fault for one call, counting it.
fn fires(fault: &Fault, counter: &mut FaultCounter, keys: &[&str]) -> bool {
    counter.calls += 1;
    match &fault.rule {
        FaultRule::Calls(numbers) => numbers.contains(&counter.calls),
        FaultRule::Keys(set) => keys.iter().any(|k| set.contains(*k)),
        FaultRule::Fraction { fraction, seed } => {
            // Keyless calls are picked by their call number instead.
            let call = counter.calls.to_string();
            let keys: Vec<&str> = if keys.is_empty() {
                vec![&call]
            } else {
                keys.to_vec()
            };
            keys.iter().any(|k| picked(*seed, k) < *fraction)
        }
        FaultRule::FirstAttempts(n) => {
            let keys: &[&str] = if keys.is_empty() { &[""] } else { keys };
            let mut any = false;
            for key in keys {
                let attempts = counter.attempts.entry((*key).to_owned()).or_default();
                *attempts += 1;
                any |= *attempts <= *n;
            }
            any
        }
    }
}

/// A stable pseudo-random number in [0, 1) for a key, so the same keys fail
/// in every run: FNV-1a over the key, then SplitMix64's finalizer, since FNV
/// alone spreads short similar keys (o-1, o-2, ...) poorly.
fn picked(seed: u64, key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = hash ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::full(3.0, start);
        let taken = (0..10).filter(|_| bucket.take(start, 10.0, 3.0)).count();
        assert_eq!(taken, 3, "a full bucket gives exactly its size at once");
        assert!(
            !bucket.take(start + Duration::from_millis(50), 10.0, 3.0),
            "half a token is not a token"
        );
        assert!(
            bucket.take(start + Duration::from_millis(100), 10.0, 3.0),
            "one token per 1/rate s"
        );
        let later = start + Duration::from_secs(60);
        let taken = (0..10).filter(|_| bucket.take(later, 10.0, 3.0)).count();
        assert_eq!(taken, 3, "refill is capped at the bucket size");
    }

    #[test]
    fn fraction_is_stable_and_close_to_its_share() {
        let chosen = (0..2000)
            .filter(|i| picked(7, &format!("o-{i}")) < 0.25)
            .count();
        assert!(
            (400..600).contains(&chosen),
            "{chosen} of 2000 keys chosen for 25%"
        );
        assert_eq!(picked(7, "o-1"), picked(7, "o-1"));
        assert_ne!(picked(7, "o-1"), picked(8, "o-1"));
    }
}
