//! The level catalogue and one scenario module per playable level.

use std::path::PathBuf;

use dojo_crds::levels::{LEVELS as FACTS, Level};
use dojo_kit::Clients;
use dojo_world::WorldHandle;

use crate::platform::Platform;
use crate::progress::Progress;
use crate::report::{Check, Figure, Series};

pub mod l01_producer_lifecycle;
mod notifier;
mod group;
pub mod l02_retry_async;
pub mod l03_idempotency;
pub mod l04_backlog;
pub mod l05_ordered;
pub mod l06_transactions;

/// One level of the catalogue: the facts the CRD and operator share
/// (`dojo_crds::levels`), plus what a learner reads in `dojo list`.
#[derive(Clone, Copy, Debug)]
pub struct LevelInfo {
    pub facts: &'static Level,
    pub number: u8,
    pub slug: &'static str,
    pub topic: &'static str,
    pub stars: u8,
    pub problem: &'static str,
    /// Whether its scenario exists yet.
    pub playable: bool,
    /// Whether its workload serves HTTP (gets `DOJO_LISTEN_ADDR`).
    pub serves_http: bool,
}

const fn level(n: u8, topic: &'static str, stars: u8, problem: &'static str, playable: bool, serves_http: bool) -> LevelInfo {
    let facts = &FACTS[(n - 1) as usize];
    LevelInfo { facts, number: facts.number, slug: facts.slug, topic, stars, problem, playable, serves_http }
}

pub const LEVELS: [LevelInfo; 12] = [
    level(1, "Resource management", 1, "producer lifecycle, connection reuse", true, true),
    level(2, "Retry and async", 2, "retry policy, async send, timeouts", true, true),
    level(3, "Idempotency", 3, "dedup table, distributed lock", true, false),
    level(4, "Performance", 3, "consumer concurrency, batching", true, false),
    level(5, "Ordered messages", 4, "queue selection, orderly consumption", true, true),
    level(6, "Transactional messages", 5, "half message, local tx, check-back", true, true),
    level(7, "Delay messages", 4, "delay levels / timer, cancel on pay", false, false),
    level(8, "Filtering and tags", 3, "tags, SQL92, properties, subscriptions", false, false),
    level(9, "Dead letters and retry", 4, "max reconsume, DLQ, redrive", false, false),
    level(10, "Trace", 4, "trace id propagation, OpenTelemetry, message trace", false, false),
    level(11, "Priority and flow control", 5, "per-priority queues, token bucket", false, false),
    level(12, "Multi-zone disaster recovery", 6, "DLedger 3 replicas over 3 zones, failover", false, false),
];

impl LevelInfo {
    /// `level-01-producer-lifecycle`.
    pub fn dir_name(&self) -> String {
        format!("level-{:02}-{}", self.number, self.slug)
    }

    /// The level's folder in this checkout.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(self.dir_name())
    }
}

/// The level numbered `n`, or an error listing the levels that exist.
pub fn find(n: u32) -> Result<&'static LevelInfo, String> {
    LEVELS.iter().find(|l| u32::from(l.number) == n).ok_or_else(|| {
        let list: Vec<String> = LEVELS.iter().map(|l| format!("{} {}", l.number, l.slug)).collect();
        format!("there is no level {n}; the levels are 1-12: {} (`dojo list` shows them)", list.join(", "))
    })
}

/// What a scenario gets: the platform to act through, the world to judge,
/// the verifier's own RocketMQ clients, and where to report progress.
pub struct Ctx<'a, P: Platform> {
    pub platform: &'a mut P,
    pub world: &'a WorldHandle,
    pub clients: &'a Clients,
    pub progress: &'a mut dyn Progress,
    pub figures: Vec<Figure>,
    pub series: Vec<Series>,
    pub checks: Vec<Check>,
    /// The run's scale overrides (a Challenge's `spec.overrides`); `None` keeps the level's default.
    pub messages: Option<u32>,
}

impl<P: Platform> Ctx<'_, P> {
    pub fn phase(&mut self, what: &str) {
        self.progress.phase(what);
    }

    /// Records a judged check and shows it at once.
    pub fn judge(&mut self, check: Check) {
        self.progress.check(&check);
        self.checks.push(check);
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure { name: name.into(), value, unit: unit.into() });
    }
}

/// Runs level `info`'s scenario; the checks and figures land in `ctx`.
pub async fn run<P: Platform>(info: &LevelInfo, ctx: &mut Ctx<'_, P>) {
    match info.number {
        1 => l01_producer_lifecycle::run(ctx).await,
        2 => l02_retry_async::run(ctx).await,
        3 => l03_idempotency::run(ctx).await,
        4 => l04_backlog::run(ctx).await,
        5 => l05_ordered::run(ctx).await,
        6 => l06_transactions::run(ctx).await,
        n => ctx.judge(Check::error("playable", "the level has a scenario", format!("level {n} is not playable yet"))),
    }
}
