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

use dojo_world::{Effect, History, Kind, Op, Outcome, Repeats, StateMachine, WorldConfig};
use futures::StreamExt;

use super::{Ctx, group, notifier};
use crate::broker::{self, AdminSession};
use crate::now_ms;
use crate::platform::Platform;
use crate::report::Check;

pub const TOPIC: &str = "order-status";
pub const GROUP: &str = "order-projector";
const QUEUES: i32 = 8;
const FIRST: &str = "status-0";
const SECOND: &str = "status-1";
pub const STATUSES: [&str; 4] = ["CREATED", "PAID", "SHIPPED", "DONE"];
const WAVE: usize = 120;
/// Orders in flight at once; each order's events go one after the other.
const IN_FLIGHT: usize = 16;
/// Tries per event: a send can time out on a loaded broker, and a caller
/// answered 503 tries again.
const ATTEMPTS: usize = 3;
/// The kill comes once the second instance has applied this many events of
/// the last wave: it is then busy, with offsets it has not confirmed.
const KILL_AFTER: usize = 40;
const RESTART_AFTER: Duration = Duration::from_millis(1500);
/// From the last event posted until every order must be DONE. An orderly
/// consumer takes over a dead instance's queues only once the broker's lock
/// on them expires (60 s after the dead client last renewed it) and its next
/// lock attempt (every 20 s) succeeds.
const DRAIN_DEADLINE: Duration = Duration::from_secs(100);
/// The wait ends early once the world has been this quiet and the group has
/// confirmed every message: nothing is left to deliver.
const QUIET: Duration = Duration::from_secs(5);
/// Quiet time after the last order is DONE, for late redeliveries.
const SETTLE: Duration = Duration::from_secs(4);

/// The orders table refuses every transition but the next one; repeating
/// the current status is a harmless no-op.
pub fn world_config() -> WorldConfig {
    WorldConfig { state_machine: Some(StateMachine::linear(&STATUSES).with_repeats(Repeats::Current)), ..WorldConfig::default() }
}

fn order_id(i: usize) -> String {
    format!("order-{i:04}")
}

const PHASES: [&str; 3] = ["one instance", "two instances (rebalance)", "kill and restart"];

/// The three stretches of the run, by wall-clock start, for evidence.
struct Phases {
    rebalance_ms: u64,
    restart_ms: u64,
}

impl Phases {
    fn of(&self, wall_ms: u64) -> &'static str {
        PHASES[if wall_ms < self.rebalance_ms {
            0
        } else if wall_ms < self.restart_ms {
            1
        } else {
            2
        }]
    }
}

pub async fn run<P: Platform>(ctx: &mut Ctx<'_, P>) {
    ctx.phase(&format!("creating topic {TOPIC} with {QUEUES} queues"));
    if let Err(e) = broker::create_topic(ctx.clients, TOPIC, QUEUES).await {
        return ctx.judge(Check::error("topic-created", "the verifier creates the topic", e));
    }
    ctx.phase(&format!("starting {FIRST}"));
    let Some((http, addr)) = start(ctx, FIRST, 1).await else { return };
    let mut refused: Vec<String> = Vec::new();

    ctx.phase(&format!("wave 1: orders 0-{} to {FIRST} alone, {IN_FLIGHT} at a time", WAVE - 1));
    refused.extend(post_wave(&http, &addr, 0..WAVE).await);
    wait_done(ctx, WAVE, Duration::from_secs(15)).await;

    ctx.phase(&format!("starting {SECOND}: the two instances split the queues"));
    let rebalance_ms = now_ms();
    if start(ctx, SECOND, 2).await.is_none() {
        return;
    }
    ctx.phase(&format!("wave 2: orders {WAVE}-{}", 2 * WAVE - 1));
    refused.extend(post_wave(&http, &addr, WAVE..2 * WAVE).await);
    wait_done(ctx, 2 * WAVE, Duration::from_secs(15)).await;

    ctx.phase(&format!("wave 3: orders {}-{}; SIGKILL to {SECOND} mid-wave, then start it again", 2 * WAVE, 3 * WAVE - 1));
    let restart_ms = now_ms();
    let wave3 = post_wave(&http, &addr, 2 * WAVE..3 * WAVE);
    let mut wave3 = std::pin::pin!(wave3);
    // Kill once the second instance is busy with this wave.
    let busy = |h: &History| h.of_kind(Kind::OrderStatus).chain(h.of_kind(Kind::OrderCreate)).filter(|e| e.instance == SECOND && e.wall_ms >= restart_ms).count() >= KILL_AFTER;
    let posted = group::until_busy(ctx.world, wave3.as_mut(), busy, Duration::from_secs(20)).await;
    let killed_ms = now_ms();
    if let Err(e) = ctx.platform.kill_workload(SECOND).await {
        return ctx.judge(Check::error("consumer-killed", "the verifier kills a consumer mid-wave", e.to_string()));
    }
    refused.extend(match posted {
        Some(r) => r,
        None => wave3.await,
    });
    tokio::time::sleep(RESTART_AFTER).await;
    ctx.phase(&format!("starting {SECOND} again"));
    if start(ctx, SECOND, 2).await.is_none() {
        return;
    }

    ctx.phase(&format!("waiting up to {}s for every order to be DONE, or for nothing left to deliver", DRAIN_DEADLINE.as_secs()));
    let drain = Instant::now();
    let all_done = wait_settled(ctx, 3 * WAVE).await;
    let drained_in = drain.elapsed();
    if all_done {
        tokio::time::sleep(SETTLE).await;
    }
    let (exits, tails) = group::stop_noting_exits(ctx, &[FIRST, SECOND]).await;
    let history = ctx.world.history();
    ctx.figure("drain after the last event", drained_in.as_secs_f64(), "s");
    ctx.figure("killed at", killed_ms.saturating_sub(restart_ms) as f64 / 1000.0, "s into wave 3");
    judge(ctx, &history, &Phases { rebalance_ms, restart_ms }, &refused, exits, tails);
}

/// Starts `instance`, waits until it joins the group and answers HTTP.
async fn start<P: Platform>(ctx: &mut Ctx<'_, P>, instance: &str, members: usize) -> Option<(reqwest::Client, String)> {
    if let Err(check) = group::start_and_join(ctx, instance, GROUP, members).await {
        ctx.judge(check);
        return None;
    }
    let addr = ctx.platform.workload_addr(instance).expect("the order-status service serves HTTP");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
    if let Err(why) = notifier::wait_healthy(ctx, instance, &http, &addr).await {
        let tail = ctx.platform.workload_log_tail(instance, 15).await;
        ctx.judge(Check::fail("workload-started", "the service starts and answers /healthz", why).with_evidence(tail.lines().map(String::from)));
        return None;
    }
    Some((http, addr))
}

/// Posts every event of orders `range`, each order's four in order (the
/// next only once the previous was accepted), `IN_FLIGHT` orders at once.
/// Like any caller, it tries a refused event again (`ATTEMPTS` in all).
/// Returns the events the service never accepted, with its last answer.
async fn post_wave(http: &reqwest::Client, addr: &str, range: std::ops::Range<usize>) -> Vec<String> {
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

/// Paces the scenario: waits until the first `orders` orders are DONE.
async fn wait_done<P: Platform>(ctx: &mut Ctx<'_, P>, orders: usize, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if done_count(&ctx.world.history(), orders) >= orders {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every order is DONE (true), or until the group has confirmed
/// every message and the world has been quiet for `QUIET` (false: stuck
/// orders stay stuck), or the deadline.
async fn wait_settled<P: Platform>(ctx: &mut Ctx<'_, P>, orders: usize) -> bool {
    let admin = AdminSession::start(ctx.clients).await.ok();
    let start = Instant::now();
    let (mut effects, mut quiet_since) = (0, Instant::now());
    let done = loop {
        let h = ctx.world.history();
        if done_count(&h, orders) >= orders {
            break true;
        }
        if h.effects.len() != effects {
            (effects, quiet_since) = (h.effects.len(), Instant::now());
        }
        if quiet_since.elapsed() >= QUIET
            && let Some(admin) = &admin
            && broker::consume_progress(admin.admin(), GROUP, TOPIC).await.is_ok_and(|p| p.values().all(|q| q.lag() == 0))
        {
            break false;
        }
        if start.elapsed() >= DRAIN_DEADLINE {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    done
}

fn done_count(history: &History, orders: usize) -> usize {
    let ids: Vec<String> = (0..orders).map(order_id).collect();
    let statuses = last_statuses(history);
    ids.iter().filter(|id| statuses.get(id.as_str()).is_some_and(|s| *s == "DONE")).count()
}

/// Each order's status after the last applied effect.
fn last_statuses(history: &History) -> BTreeMap<&str, &str> {
    let mut at = BTreeMap::new();
    for e in history.effects.iter().filter(|e| e.outcome == Outcome::Ok) {
        match &e.op {
            Op::OrderCreate { order_id, .. } => {
                at.insert(order_id.as_str(), STATUSES[0]);
            }
            Op::OrderStatus { order_id, to, changed: true, .. } => {
                at.insert(order_id.as_str(), to.as_str());
            }
            _ => {}
        }
    }
    at
}

fn judge<P: Platform>(ctx: &mut Ctx<'_, P>, history: &History, phases: &Phases, refused: &[String], exits: Vec<(String, String)>, tails: Vec<String>) {
    let orders = 3 * WAVE;
    let illegal: Vec<&Effect> = history.of_kind(Kind::OrderStatus).filter(|e| e.outcome == Outcome::Illegal).collect();
    let mut per_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &illegal {
        *per_phase.entry(phases.of(e.wall_ms)).or_default() += 1;
    }
    ctx.figure("orders", orders as f64, "");
    ctx.figure("events posted", (orders * STATUSES.len()) as f64, "");
    for phase in PHASES {
        ctx.figure(&format!("illegal: {phase}"), per_phase.get(phase).copied().unwrap_or(0) as f64, "transitions");
    }

    // Legal transitions only, from the world's own refusals.
    let mut orders_hit: Vec<&str> = illegal.iter().filter_map(|e| e.op.order_ids().first().copied()).collect();
    orders_hit.sort();
    orders_hit.dedup();
    ctx.judge(if illegal.is_empty() {
        Check::pass("legal-transitions", "every order moves CREATED → PAID → SHIPPED → DONE, one step at a time", format!("no illegal transition among {} status changes", history.of_kind(Kind::OrderStatus).count()))
    } else {
        let phases_seen: Vec<String> = PHASES.iter().filter_map(|p| per_phase.get(p).map(|n| format!("{n} with {p}"))).collect();
        Check::fail("legal-transitions", "every order moves CREATED → PAID → SHIPPED → DONE, one step at a time", format!("{} illegal transitions on {} orders ({}): events of one order were applied out of order", illegal.len(), orders_hit.len(), phases_seen.join(", ")))
            .with_evidence(illegal.iter().map(|e| {
                let Op::OrderStatus { order_id, to, seen, .. } = &e.op else { unreachable!("filtered on order_status") };
                let was = if seen.is_empty() { "not created yet".to_string() } else { format!("at {} (seen {})", seen.last().map(String::as_str).unwrap_or("-"), seen.join(" → ")) };
                format!("{order_id}: {to} applied while {was}, #{} by {} during {} (message {})", e.seq, e.instance, phases.of(e.wall_ms), e.request_id.as_deref().unwrap_or("-"))
            }))
    });

    // Every order reaches DONE: a refused event that is dropped leaves it stuck.
    let statuses = last_statuses(history);
    let stuck: Vec<String> = (0..orders).map(order_id).filter(|id| statuses.get(id.as_str()) != Some(&"DONE")).map(|id| format!("{id}: {}", statuses.get(id.as_str()).unwrap_or(&"never created"))).collect();
    ctx.figure("orders not DONE", stuck.len() as f64, "");
    ctx.judge(if stuck.is_empty() {
        Check::pass("all-done", "every order ends DONE", format!("all {orders} orders are DONE"))
    } else {
        Check::fail("all-done", "every order ends DONE", format!("{} of {orders} orders never reached DONE", stuck.len())).with_evidence(stuck)
    });

    ctx.judge(if refused.is_empty() {
        Check::pass("events-accepted", "the service accepts every event", format!("{} events accepted", orders * STATUSES.len()))
    } else {
        Check::fail("events-accepted", "the service accepts every event", format!("{} events were not accepted", refused.len())).with_evidence(refused.iter().cloned())
    });

    ctx.judge(if exits.is_empty() {
        Check::pass("consumer-running", "the service keeps running", format!("{FIRST} and {SECOND} were running at the end"))
    } else {
        Check::fail("consumer-running", "the service keeps running", format!("{} exited by itself", exits.iter().map(|(i, s)| format!("{i} ({s})")).collect::<Vec<_>>().join(", "))).with_evidence(tails)
    });
}
