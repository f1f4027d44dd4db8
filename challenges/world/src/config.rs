//! The knobs a level turns: state machine, inventory cost and limits,
//! downstream rate limits, injected faults. All of it can change while the
//! world runs (`WorldHandle::set_config`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::Kind;

/// Everything a level can configure. `Default` is a permissive world: no
/// state machine, free and unlimited inventory, `notify` and `logistics`
/// downstreams without a rate limit, no faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldConfig {
    /// Legal order status transitions; `None` accepts any transition.
    pub state_machine: Option<StateMachine>,
    pub inventory: InventoryConfig,
    pub ledger: LedgerConfig,
    pub orders: OrdersConfig,
    /// The downstream endpoints that exist, by name (`POST /downstream/{name}`).
    pub downstreams: BTreeMap<String, DownstreamConfig>,
    /// Writes the world fails on purpose.
    pub faults: Vec<Fault>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            state_machine: None,
            inventory: InventoryConfig::default(),
            ledger: LedgerConfig::default(),
            orders: OrdersConfig::default(),
            downstreams: ["notify", "logistics"]
                .into_iter()
                .map(|name| (name.to_owned(), DownstreamConfig::default()))
                .collect(),
            faults: Vec::new(),
        }
    }
}

/// The inventory API's cost model (level 4: a fixed latency per call that
/// only batching amortises).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InventoryConfig {
    /// Most items one reserve/restore call may carry.
    pub batch_max: usize,
    /// Fixed time every call takes, whatever its size.
    pub latency_ms: u64,
    /// Calls in flight above this many are answered 429.
    pub concurrency_limit: Option<usize>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            batch_max: 100,
            latency_ms: 0,
            concurrency_limit: None,
        }
    }
}

/// The ledger's answer time (level 3: a slow payment provider). The entry is
/// applied at once and the answer comes `latency_ms` later, so a caller that
/// dies while waiting has debited without hearing so.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerConfig {
    pub latency_ms: u64,
}

/// The orders table's answer time for creating an order (level 6: a slow
/// database). The row is written at once (or, for an injected fault, nothing
/// is) and the answer comes `create_latency_ms` later, so a caller that dies
/// while waiting does not know whether its order exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrdersConfig {
    pub create_latency_ms: u64,
}

/// One downstream API (level 11: it allows N requests/s).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownstreamConfig {
    /// Token-bucket refill rate; `None` means unlimited.
    pub rate_per_sec: Option<f64>,
    /// Bucket size; `None` means one second's worth of tokens (at least 1),
    /// so a client pacing itself at the rate survives network jitter.
    pub burst: Option<u32>,
    /// Fixed time every accepted call takes.
    pub latency_ms: u64,
}

impl DownstreamConfig {
    pub fn limited(rate_per_sec: f64) -> Self {
        DownstreamConfig {
            rate_per_sec: Some(rate_per_sec),
            ..Self::default()
        }
    }

    pub(crate) fn bucket_size(&self, rate: f64) -> f64 {
        self.burst.map_or(rate.max(1.0).ceil(), f64::from)
    }
}

/// The legal order status transitions of a level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    /// The status every order is created in.
    pub initial: String,
    /// Legal `(from, to)` pairs.
    pub transitions: Vec<(String, String)>,
    #[serde(default)]
    pub repeats: Repeats,
}

/// What a transition to a status the order already had means. Redelivery is
/// normal in RocketMQ, so a level decides whether replaying an event is a
/// harmless no-op or a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repeats {
    /// Every repeat is an illegal transition.
    Illegal,
    /// Repeating the current status is a no-op (answered 200, `changed: false`).
    #[default]
    Current,
    /// Moving to any status the order already passed through is a no-op.
    Seen,
}

impl StateMachine {
    /// A chain `a → b → c …`; the first status is the initial one.
    pub fn linear<S: AsRef<str>>(statuses: &[S]) -> Self {
        let names: Vec<String> = statuses.iter().map(|s| s.as_ref().to_owned()).collect();
        StateMachine {
            initial: names.first().cloned().unwrap_or_default(),
            transitions: names
                .windows(2)
                .map(|w| (w[0].clone(), w[1].clone()))
                .collect(),
            repeats: Repeats::default(),
        }
    }

    /// Adds a branch, e.g. `CREATED → CANCELLED` for level 7.
    pub fn with_transition(mut self, from: &str, to: &str) -> Self {
        self.transitions.push((from.to_owned(), to.to_owned()));
        self
    }

    pub fn with_repeats(mut self, repeats: Repeats) -> Self {
        self.repeats = repeats;
        self
    }

    pub fn allows(&self, from: &str, to: &str) -> bool {
        self.transitions.iter().any(|(f, t)| f == from && t == to)
    }

    /// `A→B, B→C` for error hints.
    pub(crate) fn describe(&self) -> String {
        let pairs: Vec<String> = self
            .transitions
            .iter()
            .map(|(f, t)| format!("{f}→{t}"))
            .collect();
        pairs.join(", ")
    }
}

/// A write the world fails on purpose (level 6: "some local writes fail";
/// level 9: transient downstream errors).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Which operation fails.
    pub kind: Kind,
    /// Narrows `downstream` / `event` faults to one endpoint or event name.
    #[serde(default)]
    pub name: Option<String>,
    pub rule: FaultRule,
    /// The HTTP status of the failed call.
    #[serde(default = "default_fault_status")]
    pub status: u16,
}

fn default_fault_status() -> u16 {
    503
}

impl Fault {
    /// A fault answered 503.
    pub fn new(kind: Kind, rule: FaultRule) -> Self {
        Fault {
            kind,
            name: None,
            rule,
            status: default_fault_status(),
        }
    }

    pub fn on(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// Which calls a fault fails. A call's keys are the order ids it names (else
/// its kv key, else the payload's `key`/`order_id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultRule {
    /// The calls with these 1-based numbers among the calls this fault covers.
    Calls(BTreeSet<u64>),
    /// Every call naming one of these keys.
    Keys(BTreeSet<String>),
    /// A fixed share of keys, picked by a seeded hash: the same key always
    /// gets the same answer, so runs are reproducible.
    Fraction { fraction: f64, seed: u64 },
    /// The first N attempts for each key fail, later ones succeed (transient errors).
    FirstAttempts(u32),
}
