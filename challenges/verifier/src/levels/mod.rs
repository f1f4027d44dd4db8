//! The level catalogue: one module per playable level, each registering
//! itself once through [`Level`] (its facts, what `dojo list` shows, its
//! world, its scenario and its checker), and one line per level in
//! [`catalogue!`] below.
//!
//! A level is split the way Maelstrom splits a workload from its checker:
//! [`Level::observe`] drives the run through a [`Platform`] and returns what
//! it observed (the world's record, broker reads, workload stats, fault
//! times); [`Level::judge`] maps those observations to checks and figures
//! with no I/O. Every run saves its observations (`observations.json` in its
//! artefacts folder), so `dojo judge RUN_DIR` re-judges a saved run, and the
//! fast lane unit-tests each checker on fixtures recorded from real runs.

use std::path::PathBuf;

use dojo_crds::levels::{LEVELS as FACTS, Level as Facts};
use dojo_kit::Clients;
use dojo_world::{WorldConfig, WorldHandle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::platform::{PeakRss, Platform};
use crate::progress::Progress;
use crate::report::{Check, Figure, Series};

mod group;
mod notifier;

pub mod l01_producer_lifecycle;
pub mod l02_retry_async;
pub mod l03_idempotency;
pub mod l04_backlog;
pub mod l05_ordered;
pub mod l06_transactions;
pub mod l07_delay_cancel;

/// Every level, in order; adding a level moves it from `coming` to `playable`.
macro_rules! catalogue {
    (playable: [$($level:ty),* $(,)?], coming: [$($coming:expr),* $(,)?] $(,)?) => {
        /// The twelve levels, playable or not yet.
        pub const LEVELS: [LevelInfo; 12] = [$(<$level as Level>::INFO,)* $($coming,)*];

        /// The world as level `n` needs it.
        pub fn world_config(n: u8) -> WorldConfig {
            $(if n == <$level as Level>::INFO.number { return <$level as Level>::world(); })*
            WorldConfig::default()
        }

        /// Runs level `n`'s scenario; what it observed, or the check that stopped it.
        pub async fn observe<P: Platform>(n: u8, ctx: &mut Ctx<'_, P>) -> Outcome {
            $(if n == <$level as Level>::INFO.number { return Outcome::of(<$level as Level>::observe(ctx).await); })*
            Outcome::Stopped(Check::error("playable", "the level has a scenario", format!("level {n} is not playable yet")))
        }

        /// Judges what a run of level `n` observed: pure, no I/O.
        pub fn judge(n: u8, outcome: &Outcome) -> Result<Judgement, String> {
            match outcome {
                Outcome::Stopped(check) => Ok(Judgement::stopped(check.clone())),
                Outcome::Observed(value) => {
                    $(if n == <$level as Level>::INFO.number { return judge_as::<$level>(value); })*
                    Err(format!("level {n} has no checker"))
                }
            }
        }
    };
}

catalogue! {
    playable: [
        l01_producer_lifecycle::ProducerLifecycle,
        l02_retry_async::RetryAsync,
        l03_idempotency::Idempotency,
        l04_backlog::Backlog,
        l05_ordered::Ordered,
        l06_transactions::Transactions,
        l07_delay_cancel::DelayCancel,
    ],
    coming: [
        LevelInfo::coming(8, "Filtering and tags", 3, "tags, SQL92, properties, subscriptions"),
        LevelInfo::coming(9, "Dead letters and retry", 4, "max reconsume, DLQ, redrive"),
        LevelInfo::coming(10, "Trace", 4, "trace id propagation, OpenTelemetry, message trace"),
        LevelInfo::coming(11, "Priority and flow control", 5, "per-priority queues, token bucket"),
        LevelInfo::coming(12, "Multi-zone disaster recovery", 6, "DLedger 3 replicas over 3 zones, failover"),
    ],
}

/// One level: what it is, how it is played, how it is judged.
#[allow(async_fn_in_trait)] // Dispatched by the catalogue, never as `dyn`.
pub trait Level {
    /// Its facts and what `dojo list` shows ([`LevelInfo::playable`]).
    const INFO: LevelInfo;
    /// What a run observed: everything [`Level::judge`] needs, serialisable
    /// (saved with every run; the fast lane's fixtures).
    type Observed: Serialize + DeserializeOwned;

    /// The world the workload talks to (ledger latency, faults, state machine).
    fn world() -> WorldConfig {
        WorldConfig::default()
    }

    /// Drives the scenario. `Err` is the check that stopped it early (the
    /// workload did not start, the environment failed): the run's only verdict.
    async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Self::Observed, Check>;

    /// Checks and figures from what was observed: pure, no I/O.
    fn judge(observed: &Self::Observed) -> Judgement;
}

fn judge_as<L: Level>(value: &serde_json::Value) -> Result<Judgement, String> {
    let observed: L::Observed = serde_json::from_value(value.clone()).map_err(|e| {
        format!(
            "level {} observations do not match its checker: {e}",
            L::INFO.number
        )
    })?;
    Ok(L::judge(&observed))
}

/// One level of the catalogue: the facts the CRD and operator share
/// (`dojo_crds::levels`), plus what a learner reads in `dojo list`.
#[derive(Clone, Copy, Debug)]
pub struct LevelInfo {
    pub facts: &'static Facts,
    pub number: u8,
    pub slug: &'static str,
    pub topic: &'static str,
    pub stars: u8,
    pub problem: &'static str,
    /// Whether its scenario exists yet.
    pub playable: bool,
    /// Whether its workload serves HTTP (gets `DOJO_LISTEN_ADDR`).
    pub serves_http: bool,
    /// Whether a check judges speed (throughput, latency, a crash window):
    /// its test runs then have the machine to themselves.
    pub judges_speed: bool,
    /// What each shipped variant must get: `("starter", checks that must
    /// FAIL)`, `("fix", &[])` (PASS), and one entry per near miss by its
    /// patch's name. The fast lane and the end-to-end tests both hold the
    /// level to it; a test fails when it and the level's folder disagree.
    pub expected: &'static [(&'static str, &'static [&'static str])],
}

impl LevelInfo {
    /// A level with a scenario and a checker.
    pub const fn playable(
        n: u8,
        topic: &'static str,
        stars: u8,
        problem: &'static str,
    ) -> LevelInfo {
        let facts = &FACTS[(n - 1) as usize];
        LevelInfo {
            facts,
            number: facts.number,
            slug: facts.slug,
            topic,
            stars,
            problem,
            playable: true,
            serves_http: false,
            judges_speed: false,
            expected: &[],
        }
    }

    /// A level listed in the catalogue whose scenario does not exist yet.
    pub const fn coming(n: u8, topic: &'static str, stars: u8, problem: &'static str) -> LevelInfo {
        LevelInfo {
            playable: false,
            ..LevelInfo::playable(n, topic, stars, problem)
        }
    }

    /// Its workload serves HTTP (the verifier calls it).
    pub const fn serving_http(self) -> LevelInfo {
        LevelInfo {
            serves_http: true,
            ..self
        }
    }

    /// A check judges speed: test runs get the machine to themselves.
    pub const fn judging_speed(self) -> LevelInfo {
        LevelInfo {
            judges_speed: true,
            ..self
        }
    }

    /// What each variant must get (see [`LevelInfo::expected`]).
    pub const fn expecting(
        self,
        expected: &'static [(&'static str, &'static [&'static str])],
    ) -> LevelInfo {
        LevelInfo { expected, ..self }
    }

    /// The checks variant `name` must fail (empty: it must pass), if the level names it.
    pub fn expected_failures(&self, name: &str) -> Option<&'static [&'static str]> {
        self.expected
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }

    /// `level-01-producer-lifecycle`.
    pub fn dir_name(&self) -> String {
        format!("level-{:02}-{}", self.number, self.slug)
    }

    /// The level's folder in this checkout.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(self.dir_name())
    }
}

/// The level numbered `n`, or an error listing the levels that exist.
pub fn find(n: u32) -> Result<&'static LevelInfo, String> {
    LEVELS
        .iter()
        .find(|l| u32::from(l.number) == n)
        .ok_or_else(|| {
            let list: Vec<String> = LEVELS
                .iter()
                .map(|l| format!("{} {}", l.number, l.slug))
                .collect();
            format!(
                "there is no level {n}; the levels are 1-12: {} (`dojo list` shows them)",
                list.join(", ")
            )
        })
}

/// What a scenario gets: the platform to act through, the world to watch,
/// the verifier's own RocketMQ clients, and where to report progress.
pub struct Ctx<'a, P: Platform> {
    pub platform: &'a mut P,
    pub world: &'a WorldHandle,
    pub clients: &'a Clients,
    pub progress: &'a mut dyn Progress,
    /// The run's scale overrides (a Challenge's `spec.overrides`); `None` keeps the level's default.
    pub messages: Option<u32>,
}

impl<P: Platform> Ctx<'_, P> {
    pub fn phase(&mut self, what: &str) {
        self.progress.phase(what);
    }
}

/// What a scenario ended with: its observations, or the check that stopped
/// it before there was anything to judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Observed(serde_json::Value),
    Stopped(Check),
}

impl Outcome {
    fn of<T: Serialize>(r: Result<T, Check>) -> Outcome {
        match r.map(|o| serde_json::to_value(o)) {
            Ok(Ok(v)) => Outcome::Observed(v),
            Ok(Err(e)) => Outcome::Stopped(Check::error(
                "observations-saved",
                "the run's observations serialise",
                e.to_string(),
            )),
            Err(check) => Outcome::Stopped(check),
        }
    }
}

/// Everything a run observed, as saved in `observations.json`: the input of
/// `dojo judge` and of the fast lane's fixtures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// [`Observations::SCHEMA`] when written.
    pub schema: u32,
    pub level: u8,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    #[serde(default)]
    pub peak_rss: PeakRss,
    pub outcome: Outcome,
}

impl Observations {
    pub const SCHEMA: u32 = 1;
    pub const FILE: &'static str = "observations.json";

    pub fn read(path: &std::path::Path) -> Result<Observations, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let o: Observations = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a run's observations: {e}", path.display()))?;
        if o.schema != Observations::SCHEMA {
            return Err(format!(
                "{} has observations schema {}; this verifier reads schema {}",
                path.display(),
                o.schema,
                Observations::SCHEMA
            ));
        }
        Ok(o)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("observations serialise")
    }

    /// Judges them: the report of the run they came from.
    pub fn judge(&self) -> Result<crate::Report, String> {
        let info = find(u32::from(self.level))?;
        let mut j = judge(self.level, &self.outcome)?;
        for (name, kib) in [
            ("workload peak RSS", self.peak_rss.workload),
            ("broker peak RSS", self.peak_rss.broker),
        ] {
            if let Some(kib) = kib {
                j.figure(name, kib as f64 / 1024.0, "MiB");
            }
        }
        let Judgement {
            checks,
            figures,
            series,
        } = j;
        Ok(crate::Report {
            level: info.number,
            slug: info.slug.into(),
            verdict: crate::Report::overall(&checks),
            checks,
            figures,
            series,
            started_at_ms: self.started_at_ms,
            duration_ms: self.duration_ms,
            artefacts: None,
        })
    }
}

/// A checker's result: checks in the order a learner should read them, and figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    pub checks: Vec<Check>,
    pub figures: Vec<Figure>,
    pub series: Vec<Series>,
}

impl Judgement {
    fn stopped(check: Check) -> Judgement {
        Judgement {
            checks: vec![check],
            ..Judgement::default()
        }
    }

    pub fn check(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }
}
