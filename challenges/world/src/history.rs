//! The record of every effect, and the queries checkers run on it. A
//! `History` read back from a run's artefact answers the same queries as a
//! live one, so a remote verifier judges the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::WorldError;

/// One call the world answered with a business meaning, whatever its outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Global order of effects, from 1.
    pub seq: u64,
    /// Milliseconds since the world started.
    pub at_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// `X-Dojo-Instance` of the caller, `"unknown"` without it.
    pub instance: String,
    /// `X-Request-Id` of the caller.
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// Why the outcome is not `ok`.
    pub reason: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied.
    Ok,
    /// Refused by a limit or a precondition (429, 409 duplicate or conflict, 404).
    Rejected,
    /// Failed on purpose by an injected fault (503 by default); nothing applied.
    Failed,
    /// Refused by the level's state machine (409).
    Illegal,
}

/// What was asked, with its key fields. Serialized flat into `Effect` with
/// a `kind` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    OrderCreate {
        order_id: String,
        amount: i64,
        customer: String,
        status: String,
    },
    OrderStatus {
        order_id: String,
        /// The expected current status the caller sent, if any.
        expected: Option<String>,
        to: String,
        /// The statuses the order had gone through when the call arrived.
        seen: Vec<String>,
        /// False for an accepted repeat (no-op).
        changed: bool,
    },
    Debit {
        order_id: String,
        account: String,
        amount: i64,
        /// The compare-and-set applied in the same step, if the call carried one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kv_cas: Option<KvCas>,
    },
    Credit {
        order_id: String,
        account: String,
        amount: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kv_cas: Option<KvCas>,
    },
    Reserve {
        items: Vec<Item>,
    },
    Restore {
        items: Vec<Item>,
    },
    Grant {
        order_id: String,
        customer: String,
        points: i64,
    },
    Release {
        order_id: String,
        customer: String,
        points: i64,
    },
    KvSetIfAbsent {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
        created: bool,
    },
    KvCompareAndSet {
        key: String,
        expect: String,
        value: String,
        ttl_ms: Option<u64>,
        swapped: bool,
    },
    KvDelete {
        key: String,
        expect: Option<String>,
        deleted: bool,
    },
    Downstream {
        endpoint: String,
        key: Option<String>,
        payload: serde_json::Value,
    },
    Event {
        name: String,
        key: Option<String>,
        payload: serde_json::Value,
    },
}

/// A key-value compare-and-set carried by a ledger entry: the entry applies
/// only if the key holds `expect`, and then the key holds `value`, in one
/// step (the dedup row and the ledger row in one database transaction).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCas {
    pub key: String,
    pub expect: String,
    pub value: String,
    /// A new TTL from now; absent keeps the current expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// One line of an inventory batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub order_id: String,
    pub sku: String,
    pub qty: i64,
}

/// The kinds of `Op`, to query and to aim faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OrderCreate,
    OrderStatus,
    Debit,
    Credit,
    Reserve,
    Restore,
    Grant,
    Release,
    KvSetIfAbsent,
    KvCompareAndSet,
    KvDelete,
    Downstream,
    Event,
}

impl Op {
    pub fn kind(&self) -> Kind {
        match self {
            Op::OrderCreate { .. } => Kind::OrderCreate,
            Op::OrderStatus { .. } => Kind::OrderStatus,
            Op::Debit { .. } => Kind::Debit,
            Op::Credit { .. } => Kind::Credit,
            Op::Reserve { .. } => Kind::Reserve,
            Op::Restore { .. } => Kind::Restore,
            Op::Grant { .. } => Kind::Grant,
            Op::Release { .. } => Kind::Release,
            Op::KvSetIfAbsent { .. } => Kind::KvSetIfAbsent,
            Op::KvCompareAndSet { .. } => Kind::KvCompareAndSet,
            Op::KvDelete { .. } => Kind::KvDelete,
            Op::Downstream { .. } => Kind::Downstream,
            Op::Event { .. } => Kind::Event,
        }
    }

    /// The order ids this op names, once per mention (a batch naming an
    /// order twice names it twice).
    pub fn order_ids(&self) -> Vec<&str> {
        match self {
            Op::OrderCreate { order_id, .. }
            | Op::OrderStatus { order_id, .. }
            | Op::Debit { order_id, .. }
            | Op::Credit { order_id, .. }
            | Op::Grant { order_id, .. }
            | Op::Release { order_id, .. } => vec![order_id],
            Op::Reserve { items } | Op::Restore { items } => {
                items.iter().map(|i| i.order_id.as_str()).collect()
            }
            Op::KvSetIfAbsent { .. }
            | Op::KvCompareAndSet { .. }
            | Op::KvDelete { .. }
            | Op::Downstream { .. }
            | Op::Event { .. } => Vec::new(),
        }
    }

    /// The endpoint or event name, for ops that have one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Op::Downstream { endpoint, .. } => Some(endpoint),
            Op::Event { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The keys faults are decided on.
    pub(crate) fn fault_keys(&self) -> Vec<&str> {
        match self {
            Op::KvSetIfAbsent { key, .. }
            | Op::KvCompareAndSet { key, .. }
            | Op::KvDelete { key, .. } => vec![key],
            Op::Downstream { key, .. } | Op::Event { key, .. } => {
                key.as_deref().into_iter().collect()
            }
            _ => self.order_ids(),
        }
    }
}

/// Every effect the world recorded, in `seq` order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub effects: Vec<Effect>,
}

impl History {
    /// Writes the history as JSON (a run's artefact).
    pub fn write_json(&self, path: &Path) -> Result<(), WorldError> {
        let io = |source| WorldError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        serde_json::to_writer(&mut out, self).map_err(|source| WorldError::Json {
            path: path.to_owned(),
            source,
        })?;
        out.flush().map_err(io)
    }

    pub fn read_json(path: &Path) -> Result<History, WorldError> {
        let file = File::open(path).map_err(|source| WorldError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_reader(BufReader::new(file)).map_err(|source| WorldError::Json {
            path: path.to_owned(),
            source,
        })
    }

    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Effect> {
        self.effects.iter().filter(move |e| e.op.kind() == kind)
    }

    /// E.g. `with_outcome(Outcome::Illegal)`: every illegal transition.
    pub fn with_outcome(&self, outcome: Outcome) -> impl Iterator<Item = &Effect> {
        self.effects.iter().filter(move |e| e.outcome == outcome)
    }

    /// Applied effects of one kind grouped by order id, e.g. debits per
    /// order (level 3: exactly one each) or reservations per order (level 4).
    /// An effect naming an order twice is listed twice.
    pub fn per_order(&self, kind: Kind) -> BTreeMap<&str, Vec<&Effect>> {
        let mut map: BTreeMap<&str, Vec<&Effect>> = BTreeMap::new();
        for effect in self.of_kind(kind).filter(|e| e.outcome == Outcome::Ok) {
            for id in effect.op.order_ids() {
                map.entry(id).or_default().push(effect);
            }
        }
        map
    }

    /// Creation and status calls of one order, every outcome, in order.
    pub fn transitions_of(&self, order_id: &str) -> Vec<&Effect> {
        self.effects
            .iter()
            .filter(|e| matches!(e.op, Op::OrderCreate { .. } | Op::OrderStatus { .. }))
            .filter(|e| e.op.order_ids() == [order_id])
            .collect()
    }

    /// When each accepted call to a downstream endpoint arrived (level 11).
    pub fn downstream_times_ms(&self, endpoint: &str) -> Vec<u64> {
        self.of_kind(Kind::Downstream)
            .filter(|e| e.outcome == Outcome::Ok && e.op.name() == Some(endpoint))
            .map(|e| e.at_ms)
            .collect()
    }
}
