//! Level 5 — ordered messages. The order-status service publishes every step
//! of an order's life (CREATED → PAID → SHIPPED → DONE) to `order-status`,
//! and its projector applies them to the world's orders table, whose state
//! machine refuses and records every illegal transition. The verifier is
//! checkout, payment and the warehouse: it posts each order's events in
//! order, many orders at once, in three waves — one instance alone, then a
//! second joining (a rebalance), then the second killed with SIGKILL mid-wave
//! and started again (what it had not confirmed is delivered again). Judged
//! from the world: no illegal transition, every order DONE.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dojo_world::{History, Kind, Op, Outcome, Repeats, StateMachine, WorldConfig};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Ctx, Judgement, Level, LevelInfo, group, notifier};
use crate::broker::{self, AdminSession, Pending};
use crate::now_ms;
use crate::platform::Platform;
use crate::report::{Check, Series};

pub const TOPIC: &str = "order-status";
pub const GROUP: &str = "order-projector";
const QUEUES: i32 = 8;
const FIRST: &str = "status-0";
const SECOND: &str = "status-1";
pub const STATUSES: [&str; 4] = ["CREATED", "PAID", "SHIPPED", "DONE"];
/// Orders per wave: one instance alone, two (the rebalance), then the kill
/// and restart. The starter's concurrent listener applies some 40-50 events
/// a second on 2 cores, so waves this size let it show every stretch's
/// illegal transitions in seconds; a wave still puts some 20 events on every
/// queue. The last wave is twice as long: the kill lands early in it.
const WAVE: usize = 40;
const ORDERS: usize = 4 * WAVE;
/// Orders in flight at once; each order's events go one after the other.
const IN_FLIGHT: usize = 16;
/// Tries per event: a send can time out on a loaded broker, and a caller
/// answered 503 tries again.
const ATTEMPTS: usize = 3;
/// The kill comes once the second instance has applied this many events of
/// the last wave: it is then busy, with offsets it has not confirmed.
const KILL_AFTER: usize = 40;
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// From the restart until the broker must hold nothing more for the group.
/// The wait ends as soon as it holds nothing: some 10 s after the restart,
/// when the restarted client first reports its offsets. The bound is for an
/// orderly consumer restarted under a new client id: the broker keeps the
/// dead client's queue locks until 60 s after it last renewed them (every
/// 20 s), and only then does the new one (retrying every second) lock them.
const DRAIN_DEADLINE: Duration = Duration::from_secs(75);
/// Longest wait for a wave's events to reach the table before the next stretch.
const WAVE_LIMIT: Duration = Duration::from_secs(10);
/// How often the drain samples what the broker holds (the drain's series).
const SAMPLE: Duration = Duration::from_millis(500);

fn order_id(i: usize) -> String {
    format!("order-{i:04}")
}

const PHASES: [&str; 3] = [
    "one instance",
    "two instances (rebalance)",
    "kill and restart",
];

pub struct Ordered;

impl Level for Ordered {
    const INFO: LevelInfo = LevelInfo::playable(
        5,
        "Ordered messages",
        4,
        "queue selection, orderly consumption",
    )
    .serving_http()
    .expecting(&[
        ("starter", &["legal-transitions", "all-done"]),
        ("fix", &[]),
        ("orderly-round-robin", &["legal-transitions"]),
        ("hash-on-event-key", &["legal-transitions"]),
    ]);
    type Observed = Observed;

    /// The orders table refuses every transition but the next one; repeating
    /// the current status is a harmless no-op.
    fn world() -> WorldConfig {
        WorldConfig {
            state_machine: Some(StateMachine::linear(&STATUSES).with_repeats(Repeats::Current)),
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

/// What a run of level 5 observed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// Unix ms when the second instance started (the rebalance), when wave 3
    /// started (the kill and restart), and of the SIGKILL.
    rebalance_ms: u64,
    wave3_ms: u64,
    killed_ms: u64,
    /// The group's client ids as the broker listed them: `[instance, id]`
    /// after each start, in order (the killed instance twice).
    client_ids: Vec<(String, Vec<String>)>,
    /// Status changes the world was asked for, every outcome.
    status_changes: usize,
    /// Every transition the state machine refused.
    illegal: Vec<Refusal>,
    /// Events after the kill that did not move an order on (refused, or a
    /// repeat of the current status): mostly the redelivery of what the
    /// killed instance had applied but not confirmed.
    replayed_after_kill: usize,
    /// Orders not DONE at the end: `(order id, statuses it went through)`.
    not_done: Vec<(String, Vec<String>)>,
    /// Events the service never accepted, with its last answer.
    refused: Vec<String>,
    /// What the broker held for the group right after the kill, and at the end of the drain.
    pending_at_kill: Option<Pending>,
    pending_at_end: Result<Pending, String>,
    /// From the restart until the broker held nothing more for the group (or the deadline).
    drain_ms: u64,
    /// Messages the broker held for the group (lag + retry + delayed), every [`SAMPLE`] of the drain.
    drain_series: Vec<f64>,
    /// Instances that had exited by themselves, with their last lines.
    exits: Vec<(String, String)>,
    tails: Vec<String>,
}

/// One transition the orders table refused.
#[derive(Debug, Serialize, Deserialize)]
struct Refusal {
    seq: u64,
    wall_ms: u64,
    instance: String,
    order_id: String,
    to: String,
    /// The statuses the order had gone through when the event arrived.
    seen: Vec<String>,
    message_id: Option<String>,
}

impl Observed {
    fn phase(&self, wall_ms: u64) -> &'static str {
        PHASES[if wall_ms < self.rebalance_ms {
            0
        } else if wall_ms < self.wave3_ms {
            1
        } else {
            2
        }]
    }
}

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    ctx.phase(&format!("creating topic {TOPIC} with {QUEUES} queues"));
    broker::create_topic(ctx.clients, TOPIC, QUEUES)
        .await
        .map_err(|e| Check::error("topic-created", "the verifier creates the topic", e))?;
    let admin = AdminSession::start(ctx.clients).await.map_err(|e| {
        Check::error(
            "broker-read",
            "the verifier reads the group's progress from the broker",
            e,
        )
    })?;
    let r = scenario(ctx, &admin).await;
    admin.shutdown().await;
    r
}

/// The three waves, the kill, the restart and the drain; what they left in the world.
async fn scenario<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    admin: &AdminSession,
) -> Result<Observed, Check> {
    let mut client_ids = Vec::new();
    ctx.phase(&format!("starting {FIRST}"));
    let (http, addr) = start(ctx, FIRST, 1, &mut client_ids).await?;
    let mut refused: Vec<String> = Vec::new();

    ctx.phase(&format!(
        "wave 1: orders 0-{} to {FIRST} alone, {IN_FLIGHT} at a time",
        WAVE - 1
    ));
    refused.extend(post_wave(&http, &addr, 0..WAVE).await);
    wait_delivered(ctx, admin, 0..WAVE, WAVE_LIMIT).await;

    ctx.phase(&format!(
        "starting {SECOND}: the two instances split the queues"
    ));
    let rebalance_ms = now_ms();
    start(ctx, SECOND, 2, &mut client_ids).await?;
    ctx.phase(&format!("wave 2: orders {WAVE}-{}", 2 * WAVE - 1));
    refused.extend(post_wave(&http, &addr, WAVE..2 * WAVE).await);
    wait_delivered(ctx, admin, WAVE..2 * WAVE, WAVE_LIMIT).await;

    ctx.phase(&format!(
        "wave 3: orders {}-{}; SIGKILL to {SECOND} mid-wave, then start it again",
        2 * WAVE,
        ORDERS - 1
    ));
    let wave3_ms = now_ms();
    let (killed_ms, kill, pending_at_kill, posted) = {
        let wave3 = post_wave(&http, &addr, 2 * WAVE..ORDERS);
        let mut wave3 = std::pin::pin!(wave3);
        // Kill once the second instance is busy with this wave.
        let busy = |h: &History| {
            h.of_kind(Kind::OrderStatus)
                .chain(h.of_kind(Kind::OrderCreate))
                .filter(|e| e.instance == SECOND && e.wall_ms >= wave3_ms)
                .count()
                >= KILL_AFTER
        };
        let posted =
            group::until_busy(ctx.world, wave3.as_mut(), busy, Duration::from_secs(20)).await;
        let killed_ms = now_ms();
        let kill = ctx.platform.kill_workload(SECOND).await;
        let pending_at_kill = broker::pending(admin.admin(), GROUP, TOPIC).await.ok();
        let posted = match posted {
            Some(r) => r,
            None => wave3.await,
        };
        (killed_ms, kill, pending_at_kill, posted)
    };
    refused.extend(posted);
    kill.map_err(|e| {
        Check::error(
            "consumer-killed",
            "the verifier kills a consumer mid-wave",
            e.to_string(),
        )
    })?;
    tokio::time::sleep(RESTART_AFTER).await;
    ctx.phase(&format!("starting {SECOND} again"));
    start(ctx, SECOND, 2, &mut client_ids).await?;

    ctx.phase(&format!("waiting until the broker holds nothing more for {GROUP} (lag, retry topic, delayed): at most {}s", DRAIN_DEADLINE.as_secs()));
    let drain = Instant::now();
    let mut drain_series = Vec::new();
    let pending_at_end = loop {
        let p = broker::pending(admin.admin(), GROUP, TOPIC).await;
        if let Ok(p) = &p {
            drain_series.push((p.lag + p.retry_lag + p.scheduled) as f64);
        }
        if p.as_ref().is_ok_and(Pending::is_empty) || drain.elapsed() >= DRAIN_DEADLINE {
            break p;
        }
        tokio::time::sleep(SAMPLE).await;
    };
    let drain_ms = drain.elapsed().as_millis() as u64;
    ctx.phase(&format!(
        "{} after {:.1}s; stopping {FIRST} and {SECOND}",
        if pending_at_end.as_ref().is_ok_and(Pending::is_empty) {
            "drained"
        } else {
            "deadline"
        },
        drain_ms as f64 / 1000.0
    ));

    let (exits, tails) = group::stop_noting_exits(ctx, &[FIRST, SECOND]).await;
    let history = ctx.world.history();
    let status_changes = history.of_kind(Kind::OrderStatus).count();
    let illegal = history
        .of_kind(Kind::OrderStatus)
        .filter(|e| e.outcome == Outcome::Illegal)
        .filter_map(|e| match &e.op {
            Op::OrderStatus {
                order_id, to, seen, ..
            } => Some(Refusal {
                seq: e.seq,
                wall_ms: e.wall_ms,
                instance: e.instance.clone(),
                order_id: order_id.clone(),
                to: to.clone(),
                seen: seen.clone(),
                message_id: e.request_id.clone(),
            }),
            _ => None,
        })
        .collect();
    let replayed_after_kill = history
        .effects
        .iter()
        .filter(|e| e.wall_ms >= killed_ms)
        .filter(|e| {
            e.outcome != Outcome::Ok || matches!(e.op, Op::OrderStatus { changed: false, .. })
        })
        .count();
    let table: BTreeMap<String, Vec<String>> = ctx
        .world
        .orders()
        .into_iter()
        .map(|o| (o.order_id, o.statuses))
        .collect();
    let not_done = (0..ORDERS)
        .map(order_id)
        .filter(|id| {
            table
                .get(id)
                .and_then(|s| s.last())
                .is_none_or(|s| s != "DONE")
        })
        .map(|id| {
            let statuses = table.get(&id).cloned().unwrap_or_default();
            (id, statuses)
        });
    Ok(Observed {
        rebalance_ms,
        wave3_ms,
        killed_ms,
        client_ids,
        status_changes,
        illegal,
        replayed_after_kill,
        not_done: not_done.collect(),
        refused,
        pending_at_kill,
        pending_at_end,
        drain_ms,
        drain_series,
        exits,
        tails,
    })
}

/// Starts `instance`, waits until it joins the group and answers HTTP;
/// notes the group's client ids then.
async fn start<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    instance: &str,
    members: usize,
    client_ids: &mut Vec<(String, Vec<String>)>,
) -> Result<(reqwest::Client, String), Check> {
    group::start_and_join(ctx, instance, GROUP, members).await?;
    client_ids.push((
        instance.to_string(),
        broker::consumer_clients(ctx.clients, GROUP)
            .await
            .unwrap_or_default(),
    ));
    let addr = ctx
        .platform
        .workload_addr(instance)
        .expect("the order-status service serves HTTP");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    if let Err(why) = notifier::wait_healthy(ctx, instance, &http, &addr).await {
        let tail = ctx.platform.workload_log_tail(instance, 15).await;
        return Err(Check::fail(
            "workload-started",
            "the service starts and answers /healthz",
            why,
        )
        .with_evidence(tail.lines().map(String::from)));
    }
    Ok((http, addr))
}

/// Posts every event of orders `range`, each order's four in order (the
/// next only once the previous was accepted), `IN_FLIGHT` orders at once.
/// Like any caller, it tries a refused event again (`ATTEMPTS` in all).
/// Returns the events the service never accepted, with its last answer.
async fn post_wave(
    http: &reqwest::Client,
    addr: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    futures::stream::iter(range)
        .map(|i| async move {
            let id = order_id(i);
            for status in STATUSES {
                let body = serde_json::json!({ "order_id": id, "status": status, "customer": format!("customer-{:02}", i % 23), "amount": 500 + (i as i64 * 37) % 5000 });
                for attempt in 1..=ATTEMPTS {
                    let last = match http.post(format!("http://{addr}/events")).json(&body).send().await {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) => format!("answered {}: {}", r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(e) => e.to_string(),
                    };
                    if attempt == ATTEMPTS {
                        return Some(format!("{id} {status}: {ATTEMPTS} attempts, the last {last}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            None
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

/// Paces the scenario: waits until every event of orders `range` has
/// reached the orders table (applied or refused) or waits at the broker for
/// redelivery, or `limit`: the next stretch need not wait out a retry's delay.
async fn wait_delivered<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    admin: &AdminSession,
    range: std::ops::Range<usize>,
    limit: Duration,
) {
    let ids: Vec<String> = range.map(order_id).collect();
    let start = Instant::now();
    while start.elapsed() < limit {
        let h = ctx.world.history();
        let delivered = h
            .of_kind(Kind::OrderCreate)
            .chain(h.of_kind(Kind::OrderStatus))
            .filter(|e| {
                e.op.order_ids()
                    .first()
                    .is_some_and(|id| ids.binary_search_by(|i| i.as_str().cmp(id)).is_ok())
            })
            .count();
        let pending = broker::pending(admin.admin(), GROUP, TOPIC)
            .await
            .unwrap_or_default();
        if delivered as i64 + pending.retry_lag + pending.scheduled
            >= (ids.len() * STATUSES.len()) as i64
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn judge(o: &Observed) -> Judgement {
    let mut j = Judgement::default();
    let mut per_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &o.illegal {
        *per_phase.entry(o.phase(r.wall_ms)).or_default() += 1;
    }
    j.figure("orders", ORDERS as f64, "");
    j.figure("events posted", (ORDERS * STATUSES.len()) as f64, "");
    for phase in PHASES {
        j.figure(
            &format!("illegal: {phase}"),
            per_phase.get(phase).copied().unwrap_or(0) as f64,
            "transitions",
        );
    }
    j.figure(
        "killed at",
        o.killed_ms.saturating_sub(o.wave3_ms) as f64 / 1000.0,
        "s into wave 3",
    );
    if let Some(p) = &o.pending_at_kill {
        j.figure("unconfirmed when killed", p.lag as f64, "messages");
    }
    j.figure(
        "refused or repeated after the kill",
        o.replayed_after_kill as f64,
        "events",
    );
    j.figure("drain after the restart", o.drain_ms as f64 / 1000.0, "s");
    j.series.push(Series {
        name: "held by the broker during the drain".into(),
        unit: "messages".into(),
        step_ms: SAMPLE.as_millis() as u64,
        points: o.drain_series.clone(),
    });

    // Legal transitions only, from the world's own refusals.
    let mut orders_hit: Vec<&str> = o.illegal.iter().map(|r| r.order_id.as_str()).collect();
    orders_hit.sort();
    orders_hit.dedup();
    const LEGAL: &str = "every order moves CREATED → PAID → SHIPPED → DONE, one step at a time";
    j.check(if o.illegal.is_empty() {
        Check::pass("legal-transitions", LEGAL, format!("no illegal transition among {} status changes", o.status_changes))
    } else {
        let phases_seen: Vec<String> = PHASES.iter().filter_map(|p| per_phase.get(p).map(|n| format!("{n} with {p}"))).collect();
        Check::fail("legal-transitions", LEGAL, format!("{} illegal transitions on {} orders ({}): events of one order were applied out of order", o.illegal.len(), orders_hit.len(), phases_seen.join(", "))).with_evidence(o.illegal.iter().map(|r| {
            let was = match r.seen.last() {
                None => "the order did not exist yet".to_string(),
                Some(at) => format!("the order was {at} (seen {})", r.seen.join(" → ")),
            };
            format!("{}: {} refused, #{} by {} during {}: {was} (message {})", r.order_id, r.to, r.seq, r.instance, o.phase(r.wall_ms), r.message_id.as_deref().unwrap_or("-"))
        }))
    });

    // Every order reaches DONE: a refused event that is dropped leaves it stuck.
    let drained = o.pending_at_end.as_ref().is_ok_and(Pending::is_empty);
    j.figure("orders not DONE", o.not_done.len() as f64, "");
    j.check(if o.not_done.is_empty() {
        Check::pass(
            "all-done",
            "every order ends DONE",
            format!("all {ORDERS} orders are DONE"),
        )
    } else {
        let broker_says = match &o.pending_at_end {
            Ok(p) if drained => {
                format!("the broker had delivered everything ({p}): no event is left to move them")
            }
            Ok(p) => format!(
                "after {:.0}s the broker still held {p}",
                o.drain_ms as f64 / 1000.0
            ),
            Err(e) => format!("the broker's progress could not be read: {e}"),
        };
        let mut evidence: Vec<String> = Vec::new();
        if !drained && let Some(ids) = relocked(o) {
            evidence.push(ids);
        }
        evidence.extend(o.not_done.iter().map(|(id, seen)| {
            format!(
                "{id}: {}",
                if seen.is_empty() {
                    "never created".to_string()
                } else {
                    format!(
                        "stopped at {} (seen {})",
                        seen.last().map(String::as_str).unwrap_or("-"),
                        seen.join(" → ")
                    )
                }
            )
        }));
        Check::fail(
            "all-done",
            "every order ends DONE",
            format!(
                "{} of {ORDERS} orders never reached DONE; {broker_says}",
                o.not_done.len()
            ),
        )
        .with_evidence(evidence)
    });

    j.check(if o.refused.is_empty() {
        Check::pass(
            "events-accepted",
            "the service accepts every event",
            format!("{} events accepted", ORDERS * STATUSES.len()),
        )
    } else {
        Check::fail(
            "events-accepted",
            "the service accepts every event",
            format!("{} events were not accepted", o.refused.len()),
        )
        .with_evidence(o.refused.iter().cloned())
    });

    j.check(if o.exits.is_empty() {
        Check::pass(
            "consumer-running",
            "the service keeps running",
            format!("{FIRST} and {SECOND} were running at the end"),
        )
    } else {
        Check::fail(
            "consumer-running",
            "the service keeps running",
            format!(
                "{} exited by itself",
                o.exits
                    .iter()
                    .map(|(i, s)| format!("{i} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_evidence(o.tails.iter().cloned())
    });
    j
}

/// Why a queue may still have been held at the end: the restarted
/// instance's client id differs from its predecessor's, whose queue locks
/// the broker keeps until they expire.
fn relocked(o: &Observed) -> Option<String> {
    let ids: Vec<&Vec<String>> = o
        .client_ids
        .iter()
        .filter(|(i, _)| i == SECOND)
        .map(|(_, ids)| ids)
        .collect();
    let [before, after] = ids.as_slice() else {
        return None;
    };
    let gone: Vec<&String> = before.iter().filter(|id| !after.contains(id)).collect();
    (!gone.is_empty()).then(|| format!("{SECOND} came back under a new client id ({} instead of {}): the broker keeps a dead client's queue locks for 60 s, so an orderly consumer takes its queues over only then", after.iter().filter(|id| !before.contains(id)).cloned().collect::<Vec<_>>().join(", "), gone.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")))
}
