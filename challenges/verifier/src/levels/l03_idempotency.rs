//! Level 3 — idempotency. A payment consumer debits the ledger once per paid
//! order. The verifier is the producer: it sends the orders, sends some of
//! them twice (a producer retry: same key, new message id, another queue),
//! runs one consumer, then two (a rebalance splits the queues, so a retry
//! lands on the other instance), then kills one with SIGKILL mid-batch and
//! starts it again (what it consumed but had not committed is delivered
//! again). The ledger answers slowly and fails some debits. Judged from the
//! world's record: every order debited exactly once, none lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dojo_kit::client::DefaultMQProducer;
use dojo_kit::model::common::message::message_queue::MessageQueue;
use dojo_kit::model::common::message::message_single::Message;
use dojo_world::{Effect, Fault, FaultRule, History, Kind, LedgerConfig, Op, Outcome, WorldConfig};
use serde::{Deserialize, Serialize};

use super::{Ctx, Judgement, Level, LevelInfo, group};
use crate::broker::{self, AdminSession};
use crate::now_ms;
use crate::platform::Platform;
use crate::report::Check;

pub const TOPIC: &str = "order-paid";
pub const GROUP: &str = "payment-consumer";
/// Four queues: with two consumers each owns two (averaged allocation), so
/// queue q and queue q+2 always belong to different instances.
const QUEUES: i32 = 4;
const FIRST: &str = "payment-0";
const SECOND: &str = "payment-1";
const WAVE: usize = 100;
const WAVES: usize = 3;
/// Every 4th order is sent twice, the copy to the queue two further on.
const RETRY_EVERY: usize = 4;
const SEND_GAP: Duration = Duration::from_millis(6);
/// The ledger answers this long after applying a debit: a consumer killed
/// while it waits has debited without hearing so.
const LEDGER_LATENCY_MS: u64 = 100;
/// The kill comes once the first instance has debited this many orders of
/// the last wave: it is then mid-batch, with debits in flight.
const KILL_AFTER: usize = 12;
const RESTART_AFTER: Duration = Duration::from_millis(1500);
/// The run ends once every order is debited and the broker holds nothing
/// more for the group: every message confirmed (the client confirms every
/// 5 s), no retry waiting out its delay or in the retry topic. A late
/// duplicate can only come from one of those. Retries come back after 1 s,
/// 2 s, ... (the level's broker `messageDelayLevel`, `dojo_crds::levels`).
/// rocketmq-client-rust 1.0 runs listener calls on a small blocking lane (2 x
/// CPUs at once, a queue of 8 x CPUs); a consume request that finds it full
/// counts as failed and comes back through the retry topic without the
/// listener having seen it: the deadline leaves room for several rounds.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Neither the world nor the broker changed for this long: a consumer that
/// holds messages without confirming them (retries come back within 6 s).
const STUCK: Duration = Duration::from_secs(15);
/// With orders undebited, how long the broker must hold nothing for the group
/// before the run ends: longer than the client's 5 s between confirmations.
const NOTHING_LEFT: Duration = Duration::from_secs(6);

pub struct Idempotency;

impl Level for Idempotency {
    const INFO: LevelInfo =
        LevelInfo::playable(3, "Idempotency", 3, "dedup table, distributed lock").expecting(&[
            ("starter", &["debited-once"]),
            ("fix", &[]),
            ("in-memory-seen-set", &["debited-once"]),
            ("debit-then-mark-done", &["debited-once"]),
            ("mark-before-debit", &["none-lost"]),
        ]);
    type Observed = Observed;

    /// A slow ledger that fails a few debits (503, nothing applied), as a
    /// payment provider does.
    fn world() -> WorldConfig {
        WorldConfig {
            ledger: LedgerConfig {
                latency_ms: LEDGER_LATENCY_MS,
            },
            faults: vec![Fault::new(
                Kind::Debit,
                FaultRule::Calls((1..=30).map(|i| i * 13).collect()),
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

/// What a run of level 3 observed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// What the verifier sent, by order id.
    orders: BTreeMap<String, Order>,
    /// The world's debits, every outcome.
    debits: History,
    /// Unix ms of the SIGKILL to the first instance, and of the first send.
    killed_at: u64,
    started_wall: u64,
    /// The group's committed offsets per queue when the instance died.
    committed: Result<BTreeMap<i32, i64>, String>,
    /// From the restart until every order was debited and the broker held nothing more.
    drain_ms: u64,
    /// Instances that had exited by themselves, with their last lines.
    exits: Vec<(String, String)>,
    tails: Vec<String>,
}

/// What the verifier sent for one order.
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    account: String,
    amount: i64,
    /// `(queue id, queue offset, msg id)` of each copy sent.
    copies: Vec<(i32, u64, String)>,
}

fn order_id(i: usize) -> String {
    format!("order-{i:04}")
}

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    ctx.phase(&format!("creating topic {TOPIC} with {QUEUES} queues"));
    let queues = match broker::create_topic(ctx.clients, TOPIC, QUEUES).await {
        Ok(q) => q,
        Err(e) => {
            return Err(Check::error(
                "topic-created",
                "the verifier creates the topic",
                e,
            ));
        }
    };
    let mut producer = ctx.clients.producer("payment-gateway");
    if let Err(e) = producer.start().await {
        return Err(Check::error(
            "producer-started",
            "the verifier's producer starts",
            e.to_string(),
        ));
    }
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let started_wall = now_ms();

    ctx.phase(&format!("starting {FIRST} alone"));
    if let Err(check) = group::start_and_join(ctx, FIRST, GROUP, 1).await {
        producer.shutdown().await;
        return Err(check);
    }

    ctx.phase(&format!(
        "wave 1: orders 0-{} to {FIRST} alone, every {RETRY_EVERY}th sent twice",
        WAVE - 1
    ));
    if let Err(e) = send_wave(&producer, &queues, &mut orders, 0..WAVE).await {
        producer.shutdown().await;
        return Err(Check::error(
            "orders-sent",
            "the verifier sends the orders",
            e,
        ));
    }
    wait_debited(ctx, &orders, 0.95, Duration::from_secs(15)).await;

    ctx.phase(&format!(
        "starting {SECOND}: two instances share the queues"
    ));
    if let Err(check) = group::start_and_join(ctx, SECOND, GROUP, 2).await {
        producer.shutdown().await;
        return Err(check);
    }
    // Both rebalance as soon as the broker tells them the group changed.
    tokio::time::sleep(Duration::from_secs(3)).await;

    ctx.phase(&format!(
        "wave 2: orders {WAVE}-{}, each retry sent to the other instance's queues",
        2 * WAVE - 1
    ));
    if let Err(e) = send_wave(&producer, &queues, &mut orders, WAVE..2 * WAVE).await {
        producer.shutdown().await;
        return Err(Check::error(
            "orders-sent",
            "the verifier sends the orders",
            e,
        ));
    }
    wait_debited(ctx, &orders, 0.95, Duration::from_secs(15)).await;

    ctx.phase(&format!(
        "wave 3: orders {}-{}; SIGKILL to {FIRST} mid-batch, then start it again",
        2 * WAVE,
        WAVES * WAVE - 1
    ));
    let wave3: Vec<String> = (2 * WAVE..WAVES * WAVE).map(order_id).collect();
    let mut sent3: BTreeMap<String, Order> = BTreeMap::new();
    let (killed_at, kill, committed, send_result) = {
        let send3 = send_wave(&producer, &queues, &mut sent3, 2 * WAVE..WAVES * WAVE);
        let mut send3 = std::pin::pin!(send3);
        // Kill once the first instance has debited enough of the wave: it is
        // then busy, with debits in flight.
        let busy = |h: &dojo_world::History| {
            h.per_order(Kind::Debit)
                .iter()
                .filter(|(o, d)| {
                    wave3.iter().any(|w| w == *o) && d.iter().any(|e| e.instance == FIRST)
                })
                .count()
                >= KILL_AFTER
        };
        let send_result =
            group::until_busy(ctx.world, send3.as_mut(), busy, Duration::from_secs(20)).await;
        let killed_at = now_ms();
        let kill = ctx.platform.kill_workload(FIRST).await;
        // What the broker had committed when the instance died: above it, what
        // the dead instance consumed is delivered again.
        let committed = broker::committed_offsets(ctx.clients, GROUP, TOPIC).await;
        let send_result = match send_result {
            Some(r) => r,
            None => send3.await,
        };
        (killed_at, kill, committed, send_result)
    };
    orders.append(&mut sent3);
    if let Err(e) = kill {
        producer.shutdown().await;
        return Err(Check::error(
            "consumer-killed",
            "the verifier kills a consumer mid-batch",
            e.to_string(),
        ));
    }
    if let Err(e) = send_result {
        producer.shutdown().await;
        return Err(Check::error(
            "orders-sent",
            "the verifier sends the orders",
            e,
        ));
    }
    tokio::time::sleep(RESTART_AFTER).await;
    ctx.phase(&format!("starting {FIRST} again"));
    if let Err(check) = group::start_and_join(ctx, FIRST, GROUP, 2).await {
        producer.shutdown().await;
        return Err(check);
    }
    producer.shutdown().await;

    ctx.phase(&format!("waiting until every order is debited and the broker holds nothing more for {GROUP} (at most {}s)", DRAIN_DEADLINE.as_secs()));
    let drain_start = Instant::now();
    let admin = AdminSession::start(ctx.clients)
        .await
        .map_err(|e| Check::error("broker-read", "the verifier reads the group's progress", e))?;
    let mut last = String::new();
    // Orders still undebited with nothing left to deliver stay so: the
    // broker is asked twice, a few seconds apart (a listener call in flight
    // shows as lag until the client confirms it).
    let mut empty_since: Option<Instant> = None;
    let mut moved_at = Instant::now();
    while drain_start.elapsed() < DRAIN_DEADLINE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let debited = ctx.world.history().per_order(Kind::Debit).len();
        match broker::pending(admin.admin(), GROUP, TOPIC).await {
            Ok(p) if p.is_empty() => {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if debited >= orders.len() || since.elapsed() >= NOTHING_LEFT {
                    break;
                }
            }
            Ok(p) => {
                empty_since = None;
                let now = format!(
                    "{debited} of {} orders debited; the broker still holds {p}",
                    orders.len()
                );
                if now != last {
                    ctx.phase(&now);
                    last = now;
                    moved_at = Instant::now();
                } else if moved_at.elapsed() >= STUCK {
                    ctx.phase(&format!("nothing moved for {}s: judging", STUCK.as_secs()));
                    break;
                }
            }
            Err(e) => last = e,
        }
    }
    admin.shutdown().await;
    let drain = drain_start.elapsed();

    let debits = History {
        effects: ctx.world.history().of_kind(Kind::Debit).cloned().collect(),
    };
    let (exits, tails) = group::stop_noting_exits(ctx, &[FIRST, SECOND]).await;
    Ok(Observed {
        orders,
        debits,
        killed_at,
        started_wall,
        committed,
        drain_ms: drain.as_millis() as u64,
        exits,
        tails,
    })
}

/// Sends orders `range`, each to the next queue in turn; every
/// `RETRY_EVERY`th is sent again (new message id) two queues further on.
async fn send_wave(
    producer: &DefaultMQProducer,
    queues: &[MessageQueue],
    orders: &mut BTreeMap<String, Order>,
    range: std::ops::Range<usize>,
) -> Result<(), String> {
    for i in range {
        let id = order_id(i);
        let account = format!("customer-{:02}", i % 17);
        let amount = 100 + (i as i64 * 37) % 900;
        let body =
            serde_json::json!({ "order_id": id, "account": account, "amount": amount }).to_string();
        let q = i % queues.len();
        let mut targets = vec![q];
        if i % RETRY_EVERY == 0 {
            targets.push((q + 2) % queues.len());
        }
        let mut copies = Vec::new();
        for t in targets {
            let msg = Message::builder()
                .topic(TOPIC)
                .key(id.clone())
                .body_slice(body.as_bytes())
                .build()
                .map_err(|e| e.to_string())?;
            let sent = producer
                .send_to_queue(msg, queues[t].clone())
                .await
                .map_err(|e| format!("send {id}: {e}"))?
                .ok_or_else(|| format!("send {id}: no result"))?;
            copies.push((
                queues[t].queue_id(),
                sent.queue_offset,
                sent.msg_id.map(|m| m.to_string()).unwrap_or_default(),
            ));
            tokio::time::sleep(SEND_GAP).await;
        }
        orders.insert(
            id,
            Order {
                account,
                amount,
                copies,
            },
        );
    }
    Ok(())
}

/// Paces the scenario: waits until `share` of the orders sent so far are debited.
async fn wait_debited<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    orders: &BTreeMap<String, Order>,
    share: f64,
    limit: Duration,
) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let debited = ctx
            .world
            .history()
            .per_order(Kind::Debit)
            .keys()
            .filter(|o| orders.contains_key(**o))
            .count();
        if debited as f64 >= share * orders.len() as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn judge(o: &Observed) -> Judgement {
    let Observed {
        orders,
        debits: history,
        killed_at,
        started_wall,
        committed,
        drain_ms,
        exits,
        tails,
    } = o;
    let (killed_at, started_wall) = (*killed_at, *started_wall);
    let drain = Duration::from_millis(*drain_ms);
    let mut j = Judgement::default();
    let debits = history.per_order(Kind::Debit);
    let who = |e: &Effect| {
        let when = if e.instance == FIRST {
            if e.wall_ms < killed_at {
                " before the kill"
            } else {
                " after its restart"
            }
        } else {
            ""
        };
        format!(
            "#{} by {}{when} at {:.1}s (request {})",
            e.seq,
            e.instance,
            e.wall_ms.saturating_sub(started_wall) as f64 / 1000.0,
            e.request_id.as_deref().unwrap_or("-")
        )
    };
    let sent_as = |o: &Order| {
        if o.copies.len() > 1 {
            let qs: Vec<String> = o
                .copies
                .iter()
                .map(|(q, off, _)| format!("queue {q} offset {off}"))
                .collect();
            format!("sent twice by producer retry: {}", qs.join(" and "))
        } else {
            let (q, off, _) = &o.copies[0];
            format!("sent once (queue {q} offset {off})")
        }
    };

    let copies: usize = orders.values().map(|o| o.copies.len()).sum();
    j.figure("orders sent", orders.len() as f64, "");
    j.figure("messages sent", copies as f64, "");
    j.figure(
        "producer-retry duplicates",
        (copies - orders.len()) as f64,
        "messages",
    );

    // What the kill caused: messages the dead instance had consumed (their
    // order debited by it) at or above the committed offset of their queue.
    if let Ok(committed) = &committed {
        let redelivered = orders
            .iter()
            .filter(|(id, _)| {
                debits.get(id.as_str()).is_some_and(|d| {
                    d.iter()
                        .any(|e| e.instance == FIRST && e.wall_ms < killed_at)
                })
            })
            .flat_map(|(_, o)| o.copies.iter())
            .filter(|(q, off, _)| committed.get(q).is_some_and(|c| (*off as i64) >= *c))
            .count();
        j.figure(
            "consumed by the killed instance, not committed",
            redelivered as f64,
            "messages",
        );
    }
    let failed_debits = history
        .of_kind(Kind::Debit)
        .filter(|e| e.outcome == Outcome::Failed)
        .count();
    let refused_debits = history
        .of_kind(Kind::Debit)
        .filter(|e| e.outcome == Outcome::Rejected)
        .count();
    j.figure(
        "debits failed by the ledger (503)",
        failed_debits as f64,
        "",
    );
    j.figure("debits refused by their kv_cas", refused_debits as f64, "");
    j.figure("drain after the restart", drain.as_secs_f64(), "s");

    // Exactly once: the world's debits, never the workload's word.
    let twice: Vec<(&String, &Vec<&Effect>)> = orders
        .keys()
        .filter_map(|id| {
            debits
                .get(id.as_str())
                .filter(|d| d.len() > 1)
                .map(|d| (id, d))
        })
        .collect();
    let applied: usize = debits.values().map(Vec::len).sum();
    j.figure("debits applied", applied as f64, "");
    j.figure("orders debited more than once", twice.len() as f64, "");
    j.check(if twice.is_empty() {
        Check::pass("debited-once", "no paid order is debited twice", format!("no order of {} has more than one debit ({applied} debits applied)", orders.len()))
    } else {
        let extra: usize = twice.iter().map(|(_, d)| d.len() - 1).sum();
        Check::fail("debited-once", "no paid order is debited twice", format!("{} of {} orders were debited more than once ({extra} extra debits): duplicates reached the ledger", twice.len(), orders.len()))
            .with_evidence(twice.iter().map(|(id, d)| format!("{id} ({}): {} debits: {}", sent_as(&orders[*id]), d.len(), d.iter().map(|e| who(e)).collect::<Vec<_>>().join(", "))))
    });

    // None lost: every order sent is debited.
    let lost: Vec<&String> = orders
        .keys()
        .filter(|id| !debits.contains_key(id.as_str()))
        .collect();
    j.figure("orders never debited", lost.len() as f64, "");
    j.check(if lost.is_empty() {
        Check::pass(
            "none-lost",
            "every paid order is debited",
            format!("all {} orders debited", orders.len()),
        )
    } else {
        let last_try = |id: &str| {
            history
                .of_kind(Kind::Debit)
                .filter(|e| e.op.order_ids() == [id])
                .last()
                .map_or("no debit was ever attempted".to_string(), |e| {
                    format!(
                        "last attempt #{} by {} was {:?}: {}",
                        e.seq,
                        e.instance,
                        e.outcome,
                        e.reason.as_deref().unwrap_or("")
                    )
                })
        };
        Check::fail(
            "none-lost",
            "every paid order is debited",
            format!(
                "{} of {} orders were never debited ({:.0}s after the last send)",
                lost.len(),
                orders.len(),
                drain.as_secs_f64()
            ),
        )
        .with_evidence(
            lost.iter()
                .map(|id| format!("{id} ({}): {}", sent_as(&orders[*id]), last_try(id))),
        )
    });

    // The right debit: the order's account and amount, and no order the verifier never sent.
    let wrong: Vec<String> = debits
        .iter()
        .flat_map(|(id, d)| d.iter().map(move |e| (id, e)))
        .filter_map(|(id, e)| {
            let Op::Debit {
                account, amount, ..
            } = &e.op
            else {
                return None;
            };
            match orders.get(*id) {
                None => Some(format!(
                    "{id}: debit #{} by {} for an order that was never sent",
                    e.seq, e.instance
                )),
                Some(o) if (&o.account, o.amount) != (account, *amount) => Some(format!(
                    "{id}: debit #{} took {amount} from {account}; the order says {} from {}",
                    e.seq, o.amount, o.account
                )),
                Some(_) => None,
            }
        })
        .collect();
    j.check(if wrong.is_empty() {
        Check::pass(
            "debits-match-orders",
            "each debit takes the order's amount from the order's account",
            format!("{applied} debits match their orders"),
        )
    } else {
        Check::fail(
            "debits-match-orders",
            "each debit takes the order's amount from the order's account",
            format!("{} debits do not match an order sent", wrong.len()),
        )
        .with_evidence(wrong)
    });

    // The consumer keeps running: an instance that dies by itself stops paying.
    j.check(if exits.is_empty() {
        Check::pass(
            "consumer-running",
            "the consumers keep running",
            format!("{FIRST} and {SECOND} were running at the end"),
        )
    } else {
        Check::fail(
            "consumer-running",
            "the consumers keep running",
            format!(
                "{} exited by itself: {}",
                exits
                    .iter()
                    .map(|(i, _)| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                exits
                    .iter()
                    .map(|(i, s)| format!("{i} {s}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_evidence(tails.iter())
    });
    j
}
