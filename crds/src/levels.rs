//! What the operator and the CRD's validation need to know about each level:
//! one table, so the CEL budget rule and the builders cannot drift apart.

/// Facts about one level (see `docs/LEVELS.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub number: u8,
    /// The level folder's suffix: `challenges/level-NN-<slug>/`.
    pub slug: &'static str,
    /// Default time budget of one verifier run; faults must end inside it.
    pub run_seconds: u32,
    /// Brokers in the RocketMQ cluster (3 = one DLedger group over three zones).
    pub brokers: u8,
    /// The workload gets `OTEL_EXPORTER_OTLP_ENDPOINT` (the trace level).
    pub otlp: bool,
    /// `broker.conf` settings the level's scenario relies on, locally and in a cluster.
    pub broker_settings: &'static [(&'static str, &'static str)],
}

pub const FIRST: u8 = 1;
pub const LAST: u8 = 12;

/// Longest run budget an override may ask for.
pub const MAX_RUN_SECONDS: u32 = 3600;
/// Shortest run budget an override may ask for.
pub const MIN_RUN_SECONDS: u32 = 10;

/// Zones level 12 spreads its brokers over when `spec.rocketmq.zones` is absent.
pub const DEFAULT_ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

const fn level(number: u8, slug: &'static str, run_seconds: u32) -> Level {
    Level {
        number,
        slug,
        run_seconds,
        brokers: if number == 12 { 3 } else { 1 },
        otlp: number == 10,
        broker_settings: &[],
    }
}

impl Level {
    const fn with_broker_settings(
        self,
        broker_settings: &'static [(&'static str, &'static str)],
    ) -> Level {
        Level {
            broker_settings,
            ..self
        }
    }
}

/// Level 6: the broker asks about a half message once it is 4 s old, every
/// second after that (defaults: 6 s, then every 30 s), and writes its record
/// of committed and rolled-back ones within 200 ms (default 3 s, after which
/// it would ask about transactions already settled).
const TRANSACTION_CHECKS: [(&str, &str); 3] = [
    ("transactionTimeOut", "4000"),
    ("transactionCheckInterval", "1000"),
    ("transactionOpBatchInterval", "200"),
];

/// Consumer retries come back after 1 s, 2 s, ... instead of 10 s, 30 s, 1 min,
/// ...: a retried message is delivered again within the level's run. A
/// retry's delay level is 3 + its reconsume count; the table has 18 levels.
const FAST_RETRIES: [(&str, &str); 1] = [(
    "messageDelayLevel",
    "1s 1s 1s 2s 2s 2s 3s 3s 3s 4s 4s 4s 5s 5s 5s 6s 6s 6s",
)];

/// Level 7: timer messages are due within 100 ms of their time (default
/// 1 s: a cancel would be up to a second late), and a payment may recall
/// an order's cancel (off by default: the recall fails).
const TIMER_CANCELS: [(&str, &str); 2] =
    [("timerPrecisionMs", "100"), ("recallMessageEnable", "true")];

pub const LEVELS: [Level; 12] = [
    level(1, "producer-lifecycle", 60),
    level(2, "retry-async", 90),
    level(3, "idempotency", 90).with_broker_settings(&FAST_RETRIES),
    level(4, "backlog", 120).with_broker_settings(&FAST_RETRIES),
    level(5, "ordered", 90),
    level(6, "transactions", 90).with_broker_settings(&TRANSACTION_CHECKS),
    level(7, "delay-cancel", 90).with_broker_settings(&TIMER_CANCELS),
    level(8, "filtering", 60),
    level(9, "dead-letters", 90),
    level(10, "trace", 90),
    level(11, "priority", 120),
    level(12, "multi-zone-dr", 180),
];

/// The facts of level `n`, or `None` outside 1..=12.
pub fn level_facts(n: u8) -> Option<&'static Level> {
    LEVELS.iter().find(|l| l.number == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_complete() {
        for (i, l) in LEVELS.iter().enumerate() {
            assert_eq!(l.number as usize, i + 1);
            assert!((MIN_RUN_SECONDS..=MAX_RUN_SECONDS).contains(&l.run_seconds));
        }
        assert_eq!(LEVELS.len(), (LAST - FIRST + 1) as usize);
        assert_eq!(level_facts(12).unwrap().brokers, 3);
        assert!(level_facts(10).unwrap().otlp);
        assert!(level_facts(0).is_none() && level_facts(13).is_none());
    }
}
