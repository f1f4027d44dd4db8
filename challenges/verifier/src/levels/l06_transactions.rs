//! Level 6 — transactional messages. An order service creates the order row
//! in the world's orders table and announces it on `order-created`. The
//! verifier is checkout: it posts the orders over HTTP, a few at a time. The
//! orders table answers slowly (the row is written at once, the answer comes
//! later) and fails some writes (503, nothing written). Twice the verifier
//! crashes the service (SIGKILL) between the two steps: once right after an
//! order's row is written, once while an order's write is failing, then
//! starts it again. Judged from the world's orders table and the broker's
//! topic (the verifier is the downstream reader): every committed order
//! announced exactly once, none announced that was never committed, and the
//! orders a crash left in doubt settled by the broker's check-back in time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dojo_kit::client::MQAdminReadExt;
use dojo_world::{Effect, Fault, FaultRule, History, Kind, OrdersConfig, Outcome, WorldConfig};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::{Ctx, Judgement, Level, LevelInfo};
use crate::broker::{self, AdminSession};
use crate::now_ms;
use crate::platform::Platform;
use crate::report::Check;

pub const TOPIC: &str = "order-created";
/// Where the broker keeps half messages: one copy per check-back it made.
const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// The broker's own group on the half topic: its offset passes a half message
/// once the transaction is settled (committed, rolled back, or given up).
const HALF_GROUP: &str = "CID_RMQ_SYS_TRANS";
const QUEUES: i32 = 4;
const INSTANCE: &str = "orders-0";
const ORDERS: usize = 48;
/// Orders in flight at once, as several checkout pods post them.
const CONCURRENCY: usize = 3;
/// The orders table answers this long after writing (or failing) a row: the
/// window in which the verifier crashes the service between its two steps.
const CREATE_LATENCY_MS: u64 = 600;
/// Orders 5, 13, 21, ... fail their write (503, nothing written).
const FAIL_EVERY: usize = 8;
const FAIL_AT: usize = 5;
/// Crash 1: right after this order's row is written, before it is announced.
const CRASH_AFTER_ROW: usize = 10;
/// Crash 2: while this order's write is failing (its half message, if any,
/// has no row behind it).
const CRASH_DURING_FAILED_WRITE: usize = 29;
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// The level's time for settling an order left in doubt: the broker's first
/// check-back comes 4-6 s after the half message.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

pub struct Transactions;

impl Level for Transactions {
    const INFO: LevelInfo = LevelInfo::playable(
        6,
        "Transactional messages",
        5,
        "half message, local tx, check-back",
    )
    .serving_http()
    .judging_speed()
    .expecting(&[
        ("starter", &["announced-once", "doubt-settled"]),
        ("fix", &[]),
        ("check-back-always-commits", &["no-phantom"]),
        (
            "check-back-from-memory",
            &["announced-once", "doubt-settled"],
        ),
    ]);
    type Observed = Observed;

    /// A slow orders table that fails some writes.
    fn world() -> WorldConfig {
        WorldConfig {
            orders: OrdersConfig {
                create_latency_ms: CREATE_LATENCY_MS,
            },
            faults: vec![Fault::new(
                Kind::OrderCreate,
                FaultRule::Keys((0..ORDERS).filter(|i| fails(*i)).map(order_id).collect()),
            )],
            ..WorldConfig::default()
        }
    }

    async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
        observe(ctx).await
    }

    fn judge(o: &Observed) -> Judgement {
        judge(o)
    }
}

fn fails(i: usize) -> bool {
    i % FAIL_EVERY == FAIL_AT
}

fn order_id(i: usize) -> String {
    format!("order-{i:04}")
}

/// What a run of level 6 observed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// Unix ms of the first order posted.
    started_wall: u64,
    /// How the service answered each order.
    answers: BTreeMap<String, Answer>,
    crashes: Vec<Crash>,
    /// The world's order writes, every outcome.
    creates: History,
    /// What the broker stored on the topic, and its half messages.
    announced: Vec<Stored>,
    halves: Vec<Stored>,
    /// From the last crash until the broker held no transaction in doubt
    /// (or the level's time ran out): what the broker still held then.
    settle_ms: u64,
    halves_unsettled: Result<i64, String>,
    /// The service's exit status if it had exited by itself, and its last lines.
    exit: Option<String>,
    tail: Vec<String>,
}

/// How the service answered checkout's `POST /orders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Status(u16),
    /// No answer: the connection broke (a crash) or timed out.
    None(String),
}

/// A crash the verifier caused.
#[derive(Debug, Serialize, Deserialize)]
struct Crash {
    at_ms: u64,
    /// `after order-0010's row was written`.
    moment: String,
    /// Orders in flight when it came, left without an answer.
    in_doubt: Vec<String>,
}

/// One message as the broker stored it: its keys and store time (Unix ms).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    keys: Vec<String>,
    store_ms: u64,
}

/// What happens to the service while a wave of orders goes out.
#[derive(Clone, Copy)]
enum CrashWhen {
    Never,
    /// When the world records this create of order `.0` with outcome `.1`.
    On(usize, Outcome),
}

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    ctx.phase(&format!("creating topic {TOPIC} with {QUEUES} queues"));
    broker::create_topic(ctx.clients, TOPIC, QUEUES)
        .await
        .map_err(|e| Check::error("topic-created", "the verifier creates the topic", e))?;
    let started_wall = now_ms();
    ctx.phase(&format!("starting the order service {INSTANCE}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let mut addr = serve(ctx, &http, "the order service starts").await?;

    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let waves = [
        (
            0..16,
            CrashWhen::On(CRASH_AFTER_ROW, Outcome::Ok),
            format!(
                "crash right after {}'s row is written",
                order_id(CRASH_AFTER_ROW)
            ),
        ),
        (
            16..32,
            CrashWhen::On(CRASH_DURING_FAILED_WRITE, Outcome::Failed),
            format!(
                "crash while {}'s write is failing",
                order_id(CRASH_DURING_FAILED_WRITE)
            ),
        ),
        (32..ORDERS, CrashWhen::Never, "no crash".to_string()),
    ];
    // Orders a crash kept from going out go with the next wave.
    let mut carried: Vec<usize> = Vec::new();
    for (range, crash_when, what) in waves {
        let ids: Vec<usize> = carried.drain(..).chain(range).collect();
        ctx.phase(&format!(
            "orders {} to {}, {CONCURRENCY} at a time; {what}",
            order_id(ids[0]),
            order_id(*ids.last().expect("a wave has orders"))
        ));
        let (unsent, crash) = send_wave(ctx, &http, &addr, ids, crash_when, &mut answers).await;
        carried = unsent;
        match (crash_when, crash) {
            (CrashWhen::Never, _) => {}
            (CrashWhen::On(target, _), None) => {
                stop(ctx).await;
                let tail = ctx.platform.workload_log_tail(INSTANCE, 10).await;
                let history = ctx.world.history();
                let writes: Vec<String> = history
                    .transitions_of(&order_id(target))
                    .iter()
                    .map(|e| describe_write(e, started_wall))
                    .collect();
                return Err(Check::fail(
                    "crash-between-steps",
                    "the verifier crashes the service between writing an order and announcing it",
                    format!(
                        "{} never reached the moment of the crash ({what}): its write was {}",
                        order_id(target),
                        if writes.is_empty() {
                            "never attempted".to_string()
                        } else {
                            writes.join(", ")
                        }
                    ),
                )
                .with_evidence(tail.lines().map(String::from)));
            }
            (CrashWhen::On(target, _), Some(c)) => {
                let target = order_id(target);
                if !c.in_doubt.contains(&target) {
                    stop(ctx).await;
                    return Err(Check::error(
                        "crash-between-steps",
                        "the verifier crashes the service between writing an order and announcing it",
                        format!(
                            "the crash came after {target} was answered ({:?}): this machine was too slow to hit the {CREATE_LATENCY_MS} ms window",
                            answers.get(&target)
                        ),
                    ));
                }
                ctx.phase(&format!(
                    "SIGKILL {}: {} order(s) in doubt ({}); starting it again in {}s",
                    c.moment,
                    c.in_doubt.len(),
                    c.in_doubt.join(", "),
                    RESTART_AFTER.as_secs()
                ));
                crashes.push(c);
                tokio::time::sleep(RESTART_AFTER).await;
                addr = serve(ctx, &http, "the order service starts again after the crash").await?;
            }
        }
    }

    let last_crash = crashes.last().map_or(started_wall, |c| c.at_ms);
    let deadline = Duration::from_millis(
        (last_crash + SETTLE_LIMIT.as_millis() as u64).saturating_sub(now_ms()),
    );
    ctx.phase(&format!("waiting until the broker holds no transaction in doubt (the crashes' check-backs): at most {:.0}s, {}s after the last crash", deadline.as_secs_f64(), SETTLE_LIMIT.as_secs()));
    let halves_unsettled = settle(ctx, deadline).await;
    let settle_ms = now_ms().saturating_sub(last_crash);

    ctx.phase(&format!("reading {TOPIC} and the broker's half messages"));
    let announced = broker::messages_on_topic(ctx.clients, TOPIC).await;
    // Absent when no transactional message was ever sent (the topic does not exist).
    let halves = broker::messages_on_topic(ctx.clients, HALF_TOPIC)
        .await
        .unwrap_or_default();
    let exit = ctx.platform.workload_exit(INSTANCE).await;
    let tail = ctx
        .platform
        .workload_log_tail(INSTANCE, 10)
        .await
        .lines()
        .map(String::from)
        .collect();
    stop(ctx).await;
    let announced = announced.map_err(|e| {
        Check::error(
            "announcements-read",
            "the verifier reads the announcements from the broker",
            e,
        )
    })?;
    let stored = |m: broker::StoredMessage| Stored {
        keys: m.keys,
        store_ms: m.store_ms.max(0) as u64,
    };
    Ok(Observed {
        started_wall,
        answers,
        crashes,
        creates: History {
            effects: ctx
                .world
                .history()
                .of_kind(Kind::OrderCreate)
                .cloned()
                .collect(),
        },
        announced: announced.into_iter().map(stored).collect(),
        halves: halves.into_iter().map(stored).collect(),
        settle_ms,
        halves_unsettled,
        exit,
        tail,
    })
}

/// Waits until the broker holds no half message it has not settled (then no
/// announcement can appear or be withdrawn any more), or `limit`. Returns
/// the half messages still unsettled at the end.
async fn settle<P: Platform>(ctx: &mut Ctx<'_, P>, limit: Duration) -> Result<i64, String> {
    let admin = AdminSession::start(ctx.clients).await?;
    let start = Instant::now();
    let r = loop {
        let r = unsettled_halves(&admin).await;
        if matches!(r, Ok(0)) || start.elapsed() >= limit {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    admin.shutdown().await;
    r
}

/// Half messages the broker has not settled: those above its own group's
/// offset on the half topic, on every broker (asked directly: the admin's
/// usual route goes through the group's retry topic, which this internal
/// group has not). A broker without the half topic (no transactional message
/// was ever sent) holds none.
async fn unsettled_halves(admin: &AdminSession) -> Result<i64, String> {
    let addrs = broker::broker_addrs(admin.admin()).await?;
    let mut unsettled = 0;
    for addr in addrs {
        let stats = MQAdminReadExt::examine_consume_stats(
            admin.admin(),
            HALF_GROUP.into(),
            Some(HALF_TOPIC.into()),
            None,
            Some(addr.clone().into()),
            None,
        )
        .await
        .map_err(|e| format!("half messages on {addr}: {e}"))?;
        unsettled += stats
            .get_offset_table()
            .values()
            .map(|w| {
                broker::QueueProgress {
                    max: w.get_broker_offset(),
                    committed: w.get_consumer_offset(),
                }
                .lag()
            })
            .sum::<i64>();
    }
    Ok(unsettled)
}

async fn stop<P: Platform>(ctx: &mut Ctx<'_, P>) {
    let _ = ctx
        .platform
        .stop_workload(INSTANCE, Duration::from_secs(5))
        .await;
}

/// Starts the service (again, after a crash) and waits until it answers;
/// its address then (in a cluster a new pod, so a new one).
async fn serve<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    http: &reqwest::Client,
    what: &str,
) -> Result<String, Check> {
    ctx.platform
        .start_workload(INSTANCE)
        .await
        .map_err(|e| Check::error("workload-started", what, e.to_string()))?;
    let addr = ctx
        .platform
        .workload_addr(INSTANCE)
        .expect("the order service serves HTTP");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = ctx.platform.workload_exit(INSTANCE).await {
            let tail = ctx.platform.workload_log_tail(INSTANCE, 15).await;
            return Err(Check::fail(
                "workload-started",
                "the order service starts and answers /healthz",
                format!("{INSTANCE} exited at start ({status})"),
            )
            .with_evidence(tail.lines().map(String::from)));
        }
        if http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tail = ctx.platform.workload_log_tail(INSTANCE, 15).await;
    Err(Check::fail(
        "workload-started",
        "the order service starts and answers /healthz",
        format!("no answer on http://{addr}/healthz within 30s"),
    )
    .with_evidence(tail.lines().map(String::from)))
}

async fn post_order(http: reqwest::Client, addr: String, i: usize) -> (String, Answer) {
    let id = order_id(i);
    let order = serde_json::json!({ "order_id": id, "amount": 100 + (i as i64 * 37) % 900, "customer": format!("customer-{:02}", i % 11) });
    let answer = match http
        .post(format!("http://{addr}/orders"))
        .json(&order)
        .send()
        .await
    {
        Ok(r) => Answer::Status(r.status().as_u16()),
        Err(e) => Answer::None(e.to_string()),
    };
    (id, answer)
}

/// Posts orders `ids`, `CONCURRENCY` at a time. With `CrashWhen::On`, kills
/// the service the moment the world records that create, sends nothing more
/// and returns the orders not sent with the crash.
async fn send_wave<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    http: &reqwest::Client,
    addr: &str,
    ids: Vec<usize>,
    when: CrashWhen,
    answers: &mut BTreeMap<String, Answer>,
) -> (Vec<usize>, Option<Crash>) {
    let mut queue = ids.into_iter();
    let mut in_flight: JoinSet<(String, Answer)> = JoinSet::new();
    let mut flying: BTreeSet<String> = BTreeSet::new();
    let mut crash: Option<Crash> = None;
    let trigger = match when {
        CrashWhen::On(target, outcome) => Some((order_id(target), outcome)),
        CrashWhen::Never => None,
    };
    loop {
        while crash.is_none() && in_flight.len() < CONCURRENCY {
            let Some(i) = queue.next() else { break };
            flying.insert(order_id(i));
            in_flight.spawn(post_order(http.clone(), addr.to_string(), i));
        }
        if in_flight.is_empty() {
            break;
        }
        let watching = trigger.as_ref().filter(|_| crash.is_none());
        tokio::select! {
            Some(done) = in_flight.join_next() => {
                let (id, answer) = done.expect("an order post does not panic");
                flying.remove(&id);
                answers.insert(id, answer);
            }
            _ = tokio::time::sleep(Duration::from_millis(10)), if watching.is_some() => {
                let (target, outcome) = watching.expect("guarded");
                let hit = ctx.world.history().of_kind(Kind::OrderCreate).any(|e| e.outcome == *outcome && e.op.order_ids() == [target.as_str()]);
                if hit {
                    let at_ms = now_ms();
                    let killed = ctx.platform.kill_workload(INSTANCE).await;
                    let moment = match (*outcome, killed) {
                        (_, Err(e)) => format!("failed ({e})"),
                        (Outcome::Ok, Ok(())) => format!("after {target}'s row was written, before the service heard so"),
                        (_, Ok(())) => format!("while {target}'s write was failing (nothing written)"),
                    };
                    crash = Some(Crash { at_ms, moment, in_doubt: flying.iter().cloned().collect() });
                }
            }
        }
    }
    if let Some(c) = &mut crash {
        c.in_doubt
            .retain(|id| matches!(answers.get(id), Some(Answer::None(_))));
    }
    (queue.collect(), crash)
}

fn describe_write(e: &Effect, started_wall: u64) -> String {
    let at = secs(e.wall_ms, started_wall);
    match e.outcome {
        Outcome::Ok => format!("row written at {at} (#{} by {})", e.seq, e.instance),
        Outcome::Failed => format!(
            "write failed by the world at {at} (#{}, 503: nothing written)",
            e.seq
        ),
        other => format!(
            "write {other:?} at {at} (#{}): {}",
            e.seq,
            e.reason.as_deref().unwrap_or("")
        ),
    }
}

fn secs(wall_ms: u64, started_wall: u64) -> String {
    format!(
        "{:.1}s",
        wall_ms.saturating_sub(started_wall) as f64 / 1000.0
    )
}

impl Observed {
    /// Store times of the announcements of each order, by order id.
    fn announcements(&self) -> BTreeMap<&str, Vec<u64>> {
        let mut map: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for m in &self.announced {
            for k in &m.keys {
                map.entry(k.as_str()).or_default().push(m.store_ms);
            }
        }
        map
    }

    fn crash_of(&self, id: &str) -> Option<&Crash> {
        self.crashes
            .iter()
            .find(|c| c.in_doubt.iter().any(|d| d == id))
    }

    /// Everything known about one order, for evidence.
    fn story(&self, id: &str) -> String {
        let mut parts: Vec<String> = self
            .creates
            .transitions_of(id)
            .iter()
            .map(|e| describe_write(e, self.started_wall))
            .collect();
        if parts.is_empty() {
            parts.push("no write reached the orders table".into());
        }
        match (self.answers.get(id), self.crash_of(id)) {
            (_, Some(c)) => parts.push(format!(
                "in doubt: SIGKILL at {} {}",
                secs(c.at_ms, self.started_wall),
                c.moment
            )),
            (Some(Answer::Status(s)), None) => parts.push(format!("the service answered {s}")),
            (Some(Answer::None(e)), None) => parts.push(format!("no answer ({e})")),
            (None, None) => parts.push("never sent".into()),
        }
        let halves = self
            .halves
            .iter()
            .filter(|m| m.keys.iter().any(|k| k == id))
            .count();
        if halves > 0 {
            parts.push(format!(
                "{halves} half message cop{} at the broker ({} check-back{})",
                if halves == 1 { "y" } else { "ies" },
                halves - 1,
                if halves == 2 { "" } else { "s" }
            ));
        }
        let ann = self.announcements();
        let times: Vec<String> = ann
            .get(id)
            .map(|t| t.iter().map(|t| secs(*t, self.started_wall)).collect())
            .unwrap_or_default();
        parts.push(if times.is_empty() {
            "never announced".into()
        } else {
            format!("announced at {}", times.join(" and "))
        });
        parts.join("; ")
    }
}

fn judge(o: &Observed) -> Judgement {
    let mut j = Judgement::default();
    let rows: BTreeSet<&str> = o.creates.per_order(Kind::OrderCreate).into_keys().collect();
    let failed_writes = o
        .creates
        .of_kind(Kind::OrderCreate)
        .filter(|e| e.outcome == Outcome::Failed)
        .count();
    let ann = o.announcements();
    let in_doubt: Vec<&str> = o
        .crashes
        .iter()
        .flat_map(|c| c.in_doubt.iter().map(String::as_str))
        .collect();
    let distinct_halves: BTreeSet<&str> = o
        .halves
        .iter()
        .flat_map(|m| m.keys.iter().map(String::as_str))
        .collect();
    j.figure("orders sent", o.answers.len() as f64, "");
    j.figure("orders committed (rows written)", rows.len() as f64, "");
    j.figure("writes failed by the world (503)", failed_writes as f64, "");
    j.figure("announcements on the topic", o.announced.len() as f64, "");
    j.figure("crashes between the two steps", o.crashes.len() as f64, "");
    j.figure("orders left in doubt by a crash", in_doubt.len() as f64, "");
    j.figure("half messages", distinct_halves.len() as f64, "");
    j.figure(
        "check-backs made by the broker",
        o.halves.len().saturating_sub(distinct_halves.len()) as f64,
        "",
    );
    j.figure(
        "settled after the last crash",
        o.settle_ms as f64 / 1000.0,
        "s",
    );

    // Every committed order announced exactly once.
    let wrong: Vec<&str> = rows
        .iter()
        .copied()
        .filter(|id| ann.get(id).map_or(0, Vec::len) != 1)
        .collect();
    j.check(if wrong.is_empty() {
        Check::pass("announced-once", "every committed order is announced exactly once", format!("all {} committed orders have one announcement each", rows.len()))
    } else {
        let missing = wrong.iter().filter(|id| !ann.contains_key(*id)).count();
        Check::fail("announced-once", "every committed order is announced exactly once", format!("{} of {} committed orders are not announced exactly once ({missing} never, {} more than once): downstream never hears of them, or hears twice", wrong.len(), rows.len(), wrong.len() - missing))
            .with_evidence(wrong.iter().map(|id| format!("{id}: {}", o.story(id))))
    });

    // No announcement without a row.
    let phantoms: Vec<&str> = ann
        .keys()
        .copied()
        .filter(|id| !rows.contains(id))
        .collect();
    j.check(if phantoms.is_empty() {
        Check::pass("no-phantom", "no announcement for an order that was never committed", format!("all {} announcements are of committed orders", o.announced.len()))
    } else {
        Check::fail("no-phantom", "no announcement for an order that was never committed", format!("{} announced but never committed: billing and the warehouse act on orders that do not exist", count(phantoms.len(), "order was", "orders were")))
            .with_evidence(phantoms.iter().map(|id| format!("{id}: {}", o.story(id))))
    });

    // What a crash left in doubt: announced in time if its row exists, never if not.
    let unsettled: Vec<String> = o
        .crashes
        .iter()
        .flat_map(|c| c.in_doubt.iter().map(move |id| (c, id.as_str())))
        .filter_map(|(c, id)| {
            let times = ann.get(id).map(Vec::as_slice).unwrap_or_default();
            let settled = if rows.contains(id) {
                times
                    .iter()
                    .any(|t| *t <= c.at_ms + SETTLE_LIMIT.as_millis() as u64)
            } else {
                times.is_empty()
            };
            (!settled).then(|| format!("{id}: {}", o.story(id)))
        })
        .collect();
    let summary = o
        .crashes
        .iter()
        .map(|c| {
            format!(
                "SIGKILL at {} {}: {}",
                secs(c.at_ms, o.started_wall),
                c.moment,
                c.in_doubt.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    j.check(if unsettled.is_empty() {
        Check::pass("doubt-settled", "orders left in doubt by a crash are settled by check-back in time", format!("every order in doubt was settled as its row says within {}s: {summary}", SETTLE_LIMIT.as_secs()))
    } else {
        let broker_says = match &o.halves_unsettled {
            Ok(0) => "the broker held no transaction in doubt any more".to_string(),
            Ok(n) => format!("the broker still held {n} half message(s) in doubt"),
            Err(e) => format!("the broker's half messages could not be read: {e}"),
        };
        Check::fail("doubt-settled", "orders left in doubt by a crash are settled by check-back in time", format!("{} of {} orders left in doubt {} not settled as their row says within {}s of the crash (announced if and only if the row exists); {broker_says} {:.1}s after the last crash", unsettled.len(), in_doubt.len(), if unsettled.len() == 1 { "was" } else { "were" }, SETTLE_LIMIT.as_secs(), o.settle_ms as f64 / 1000.0))
            .with_evidence(unsettled)
    });

    // No lost order: what the world let through and no crash hit is created.
    let lost: Vec<&str> = o
        .answers
        .keys()
        .map(String::as_str)
        .filter(|id| {
            !rows.contains(id) && !in_doubt.contains(id) && !failed_by_world(&o.creates, id)
        })
        .collect();
    j.check(if lost.is_empty() {
        Check::pass(
            "orders-created",
            "every order is created unless its write failed or a crash hit it",
            format!(
                "{} of {} orders created; the rest failed by the world or in doubt",
                rows.len(),
                o.answers.len()
            ),
        )
    } else {
        Check::fail(
            "orders-created",
            "every order is created unless its write failed or a crash hit it",
            format!(
                "{} never created though the orders table would have taken it",
                count(lost.len(), "order was", "orders were")
            ),
        )
        .with_evidence(lost.iter().map(|id| format!("{id}: {}", o.story(id))))
    });

    j.check(match &o.exit {
        None => Check::pass(
            "service-running",
            "the order service keeps running",
            format!("{INSTANCE} was running at the end"),
        ),
        Some(status) => Check::fail(
            "service-running",
            "the order service keeps running",
            format!("{INSTANCE} exited by itself ({status})"),
        )
        .with_evidence(o.tail.iter().cloned()),
    });
    j
}

/// `1 order was` / `3 orders were`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn failed_by_world(history: &History, id: &str) -> bool {
    history
        .of_kind(Kind::OrderCreate)
        .any(|e| e.outcome == Outcome::Failed && e.op.order_ids() == [id])
}
