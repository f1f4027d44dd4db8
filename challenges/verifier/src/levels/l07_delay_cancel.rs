//! Level 7 — delay and timeout cancel. An order service takes orders (it
//! reserves stock and grants loyalty points) and schedules each order's
//! cancel on `order-timeout`; an order still unpaid `PAY_WITHIN` after it
//! was placed is cancelled (stock restored, points released), a payment
//! before then stops the cancel. The verifier is checkout and the payment
//! gateway: it places orders through two instances and pays some of them
//! through the other instance. While a few orders are placed the broker
//! refuses every send (its `startAcceptSendRequestTimeStamp` moved a second
//! ahead: nothing is stored, the client fails at once). After the last
//! cancel is due it kills one instance (SIGKILL), starts it again, and
//! delivers every cancel message on the topic a second time (a copy: same
//! body and key, new message id). Judged from the world's record: every
//! unpaid order cancelled inside [T, T + slack] and never before T, no paid
//! order cancelled, stock and points given back exactly once per cancelled
//! order, none left pending.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use dojo_kit::client::{BrokerAdmin, DefaultMQAdminExt};
use dojo_kit::model::common::message::STRING_HASH_SET;
use dojo_kit::model::common::message::message_queue::MessageQueue;
use dojo_kit::model::common::message::message_single::Message;
use dojo_world::{Effect, History, Kind, Op, WorldConfig};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::{Ctx, Judgement, Level, LevelInfo, group};
use crate::broker::{self, AdminSession};
use crate::now_ms;
use crate::platform::Platform;
use crate::report::Check;

pub const TOPIC: &str = "order-timeout";
pub const GROUP: &str = "order-service";
const QUEUES: i32 = 4;
/// Two instances behind checkout's load balancer: an order is placed
/// through one and paid through the other, and a cancel is consumed by
/// whichever owns its queue.
const INSTANCES: [&str; 2] = ["orders-0", "orders-1"];
/// T, the time to pay (30 minutes in production). No delay level of the
/// broker's default table (1s 5s 10s 30s 1m ...) lands inside
/// [T, T + SLACK]: only a timer message (any due time) does.
pub const PAY_WITHIN_MS: u64 = 8_000;
/// How late a cancel may come: the timer's precision (the level's broker
/// ticks every 100 ms: measured 50-110 ms late), delivery and the cancel's
/// own world calls, with room for a busy machine. The nearest delay level
/// (10 s) is 2 s late.
pub const SLACK_MS: u64 = 1_500;
const ORDERS: usize = 30;
/// The last six orders are placed while the broker refuses every send.
const REFUSED: std::ops::Range<usize> = 24..30;
/// The refusal starts this long before the first of them (the broker's
/// config is changed by then, even on a busy machine) ...
const REFUSAL_LEAD_MS: u64 = 100;
/// ... and ends this long after it started, 500 ms after the last was
/// placed: a send it makes meets the refusal even on a busy machine.
const REFUSAL_MS: u64 = 1_100;
/// How long the verifier waits for a late cancel beyond the slack after the
/// last order's time is up. A later one (a 10 s delay level: 2-3 s late) is
/// still seen, and judged, while the restart and the copies follow.
const LATE_GRACE_MS: u64 = 1_000;
/// After the copies are sent: the run ends once the world has been quiet
/// this long (and at least `DRAIN_MIN` passed), at most `DRAIN_MAX`.
const QUIET: Duration = Duration::from_millis(1_000);
const DRAIN_MIN: Duration = Duration::from_millis(1_500);
const DRAIN_MAX: Duration = Duration::from_secs(6);
/// Longer than any honest answer: a placement may retry its send through
/// the refusal.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// When order `i` is placed, in ms after the first: 70 ms apart, the
/// refused ones 100 ms apart inside the refusal.
fn offset_ms(i: usize) -> u64 {
    let start = REFUSED.start as u64;
    match i as u64 {
        i if i < start => i * 70,
        i => start * 70 + (i - start) * 100,
    }
}

/// Orders paid, and how long after they were placed: every other order
/// before the refusal, 2.5-4.5 s after it was placed (after the refusal,
/// at least 3.5 s before T).
fn pay_after_ms(i: usize) -> Option<u64> {
    (i % 2 == 1 && !REFUSED.contains(&i)).then(|| 2_500 + (i as u64 % 5) * 500)
}

fn order_id(i: usize) -> String {
    format!("order-{i:04}")
}

pub struct DelayCancel;

impl Level for DelayCancel {
    const INFO: LevelInfo = LevelInfo::playable(
        7,
        "Delay messages",
        4,
        "delay levels / timer, cancel on pay",
    )
    .serving_http()
    .judging_speed()
    .expecting(&[
        (
            "starter",
            &[
                "cancelled-on-time",
                "paid-never-cancelled",
                "restored-once",
                "none-pending",
            ],
        ),
        ("fix", &[]),
        ("alt-recall", &[]),
        ("fixed-delay-level", &["cancelled-on-time"]),
        ("in-memory-cancelled-set", &["restored-once"]),
        ("payment-check-from-cache", &["paid-never-cancelled"]),
    ]);
    type Observed = Observed;

    /// The shop's tables as they are: no state machine (a cancel over a
    /// payment is on the record, not refused), no faults.
    fn world() -> WorldConfig {
        WorldConfig::default()
    }

    async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
        observe(ctx).await
    }

    fn judge(o: &Observed) -> Judgement {
        judge(o)
    }
}

/// What a run of level 7 observed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// Unix ms when the first order was placed.
    started_wall: u64,
    orders: BTreeMap<String, Order>,
    /// Unix ms from which, and until which, the broker refused every send.
    refused: (u64, u64),
    /// The world's orders, stock and points (the key-value store left out).
    effects: History,
    /// Unix ms of the SIGKILL to `orders-0`, and when it served again.
    killed_at: u64,
    restarted_at: u64,
    /// The cancel messages delivered a second time, and when the verifier
    /// started reading and copying them.
    copies: Vec<Copied>,
    copies_at: u64,
    /// The group's unconfirmed messages on the topic once both instances stopped.
    lag_at_end: Result<i64, String>,
    /// Instances that had exited by themselves, with their last lines.
    exits: Vec<(String, String)>,
    tails: Vec<String>,
}

/// One order, as checkout placed (and perhaps paid) it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    /// The instance it was placed through.
    via: String,
    customer: String,
    sku: String,
    qty: i64,
    points: i64,
    amount: i64,
    /// Unix ms: the time to pay counts from here.
    placed_at: u64,
    placed: Reply,
    pay: Option<Payment>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Payment {
    via: String,
    at: u64,
    reply: Reply,
}

/// How the service answered: its HTTP status (none: no answer) and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Reply {
    status: Option<u16>,
    at: u64,
    detail: String,
}

impl Reply {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn describe(&self, since: u64) -> String {
        match self.status {
            Some(s) => format!(
                "{s} after {:.2}s{}",
                self.at.saturating_sub(since) as f64 / 1000.0,
                if self.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.detail)
                }
            ),
            None => format!("no answer: {}", self.detail),
        }
    }
}

/// A cancel message the verifier delivered a second time.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Copied {
    key: String,
    queue: i32,
    offset: i64,
}

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    ctx.phase(&format!("creating topic {TOPIC} with {QUEUES} queues"));
    broker::create_topic(ctx.clients, TOPIC, QUEUES)
        .await
        .map_err(|e| Check::error("topic-created", "the verifier creates the topic", e))?;
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| Check::error("http-client", "the verifier's HTTP client", e.to_string()))?;
    for (n, instance) in INSTANCES.iter().enumerate() {
        ctx.phase(&format!("starting {instance}"));
        start_serving(ctx, &http, instance, n + 1).await?;
    }
    let addrs: Vec<String> = INSTANCES
        .iter()
        .map(|i| ctx.platform.workload_addr(i).unwrap_or_default())
        .collect();
    let admin = AdminSession::start(ctx.clients)
        .await
        .map_err(|e| Check::error("broker-admin", "the verifier's admin session", e))?;
    let brokers = broker_addrs(admin.admin())
        .await
        .map_err(|e| Check::error("broker-admin", "the verifier finds the broker", e))?;

    ctx.phase(&format!(
        "placing {ORDERS} orders through both instances, paying {} of them 2.5-4.5 s later through the other; the broker refuses every send while orders {}-{} are placed",
        (0..ORDERS).filter(|i| pay_after_ms(*i).is_some()).count(),
        order_id(REFUSED.start),
        order_id(REFUSED.end - 1)
    ));
    let t0 = tokio::time::Instant::now();
    let started_wall = now_ms();
    let mut placements = JoinSet::new();
    let mut payments = JoinSet::new();
    for i in 0..ORDERS {
        let order = Order {
            via: INSTANCES[i % 2].to_string(),
            customer: format!("customer-{:02}", i % 7),
            sku: format!("sku-{}", i % 5),
            qty: 1 + (i as i64 % 3),
            points: 10 * (1 + i as i64 % 4),
            amount: 500 + (i as i64 * 37) % 900,
            placed_at: 0,
            placed: Reply {
                status: None,
                at: 0,
                detail: String::new(),
            },
            pay: None,
        };
        let (client, addr) = (http.clone(), addrs[i % 2].clone());
        let at = t0 + Duration::from_millis(offset_ms(i));
        placements.spawn(async move {
            tokio::time::sleep_until(at).await;
            (i, place(&client, &addr, i, order).await)
        });
        if let Some(after) = pay_after_ms(i) {
            let (http, via) = (http.clone(), (i + 1) % 2);
            let (addr, at) = (addrs[via].clone(), at + Duration::from_millis(after));
            payments.spawn(async move {
                tokio::time::sleep_until(at).await;
                (
                    i,
                    Payment {
                        via: INSTANCES[via].to_string(),
                        at: now_ms(),
                        reply: post(
                            &http,
                            &format!("http://{addr}/orders/{}/pay", order_id(i)),
                            None,
                        )
                        .await,
                    },
                )
            });
        }
    }
    // The refusal: the broker accepts sends again at `until`, by itself.
    tokio::time::sleep_until(
        t0 + Duration::from_millis(offset_ms(REFUSED.start) - REFUSAL_LEAD_MS),
    )
    .await;
    let until = now_ms() + REFUSAL_MS;
    let refusing = refuse_sends_until(admin.admin(), &brokers, until).await;
    // Refusing from the moment the broker confirmed it.
    let refused = (now_ms(), until);
    if let Err(e) = refusing {
        admin.shutdown().await;
        return Err(Check::error(
            "broker-refuses",
            "the verifier makes the broker refuse sends for a second",
            e,
        ));
    }
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    while let Some(r) = placements.join_next().await {
        let (i, order) = r.expect("a placement task");
        orders.insert(order_id(i), order);
    }
    while let Some(r) = payments.join_next().await {
        let (i, payment) = r.expect("a payment task");
        if let Some(o) = orders.get_mut(&order_id(i)) {
            o.pay = Some(payment);
        }
    }
    admin.shutdown().await;

    let last_due = orders
        .values()
        .map(|o| o.placed_at)
        .max()
        .unwrap_or(started_wall)
        + PAY_WITHIN_MS;
    ctx.phase(&format!("waiting for the cancels: every order paid or cancelled, or {:.0}s after the last order's time is up", (SLACK_MS + LATE_GRACE_MS) as f64 / 1000.0));
    loop {
        let open = ctx
            .world
            .orders()
            .iter()
            .filter(|o| orders.contains_key(&o.order_id) && o.status == "CREATED")
            .count();
        if open == 0 || now_ms() > last_due + SLACK_MS + LATE_GRACE_MS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A cancel in flight finishes before the crash.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (first, second) = (INSTANCES[0], INSTANCES[1]);
    ctx.phase(&format!("SIGKILL to {first}, then starting it again"));
    let killed_at = now_ms();
    ctx.platform.kill_workload(first).await.map_err(|e| {
        Check::error(
            "consumer-killed",
            "the verifier kills an instance",
            e.to_string(),
        )
    })?;
    // The broker drops the dead consumer once its connection closes.
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(5)
        && broker::consumer_clients(ctx.clients, GROUP)
            .await
            .map_or(true, |c| c.len() > 1)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start_serving(ctx, &http, first, 2).await?;
    let restarted_at = now_ms();
    // Both instances rebalance once the broker tells them the group changed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    ctx.phase(&format!(
        "delivering every cancel message on {TOPIC} a second time"
    ));
    let copies_at = now_ms();
    let copies = copy_messages(ctx).await.map_err(|e| {
        Check::error(
            "copies-sent",
            "the verifier delivers the cancel messages again",
            e,
        )
    })?;
    let drain = Instant::now();
    let (mut seen, mut quiet_since) = (ctx.world.history().effects.len(), Instant::now());
    while drain.elapsed() < DRAIN_MAX {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = ctx.world.history().effects.len();
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        } else if drain.elapsed() >= DRAIN_MIN && quiet_since.elapsed() >= QUIET {
            break;
        }
    }

    let (exits, tails) = group::stop_noting_exits(ctx, &[first, second]).await;
    // Stopped gracefully, the consumers confirmed what they consumed.
    let lag_at_end = broker::committed_offsets(ctx.clients, GROUP, TOPIC).await;
    let lag_at_end = match (lag_at_end, topic_max_offsets(ctx).await) {
        (Ok(committed), Ok(max)) => Ok(max
            .iter()
            .map(|(q, m)| (m - committed.get(q).copied().unwrap_or(0).max(0)).max(0))
            .sum()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let history = ctx.world.history();
    let kinds = [
        Kind::OrderCreate,
        Kind::OrderStatus,
        Kind::Reserve,
        Kind::Restore,
        Kind::Grant,
        Kind::Release,
    ];
    let effects = History {
        effects: history
            .effects
            .into_iter()
            .filter(|e| kinds.contains(&e.op.kind()))
            .collect(),
    };
    Ok(Observed {
        started_wall,
        orders,
        refused,
        effects,
        killed_at,
        restarted_at,
        copies,
        copies_at,
        lag_at_end,
        exits,
        tails,
    })
}

/// Starts `instance`, waits until the broker lists `expect` consumers of the
/// group and the instance answers HTTP.
async fn start_serving<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    http: &reqwest::Client,
    instance: &str,
    expect: usize,
) -> Result<(), Check> {
    group::start_and_join(ctx, instance, GROUP, expect).await?;
    let addr = ctx.platform.workload_addr(instance).unwrap_or_default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if let Some(status) = ctx.platform.workload_exit(instance).await {
            let tail = ctx.platform.workload_log_tail(instance, 15).await;
            return Err(Check::fail(
                "workload-started",
                "the order service starts and serves",
                format!("{instance} exited at start ({status})"),
            )
            .with_evidence(tail.lines().map(String::from)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = ctx.platform.workload_log_tail(instance, 15).await;
    Err(Check::fail(
        "workload-started",
        "the order service starts and serves",
        format!("{instance} did not answer GET /healthz on {addr} within 30s"),
    )
    .with_evidence(tail.lines().map(String::from)))
}

/// Places order `i` through the instance at `addr`, as checkout does.
async fn place(http: &reqwest::Client, addr: &str, i: usize, mut order: Order) -> Order {
    order.placed_at = now_ms();
    let body = serde_json::json!({
        "order_id": order_id(i), "customer": order.customer, "sku": order.sku, "qty": order.qty,
        "points": order.points, "amount": order.amount, "placed_at_ms": order.placed_at,
    });
    order.placed = post(http, &format!("http://{addr}/orders"), Some(body)).await;
    order
}

async fn post(http: &reqwest::Client, url: &str, body: Option<serde_json::Value>) -> Reply {
    let req = http.post(url);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            // The service's reason: the `error` of a JSON answer, else its first 200 characters.
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from));
            let detail = if (200..300).contains(&status) {
                String::new()
            } else {
                reason.unwrap_or_else(|| text.chars().take(200).collect())
            };
            Reply {
                status: Some(status),
                at: now_ms(),
                detail,
            }
        }
        Err(e) => Reply {
            status: None,
            at: now_ms(),
            detail: e.to_string(),
        },
    }
}

/// Every broker's address; none at all is an error here (nothing to refuse sends).
async fn broker_addrs(admin: &DefaultMQAdminExt) -> Result<Vec<String>, String> {
    let addrs = broker::broker_addrs(admin).await?;
    if addrs.is_empty() {
        Err("the name server lists no broker".into())
    } else {
        Ok(addrs)
    }
}

/// Makes every broker refuse every send until `until_ms` (Unix ms): the
/// broker answers "broker unable to service, until ..." and stores nothing
/// before its `startAcceptSendRequestTimeStamp`, then serves again by itself.
async fn refuse_sends_until(
    admin: &DefaultMQAdminExt,
    brokers: &[String],
    until_ms: u64,
) -> Result<(), String> {
    for addr in brokers {
        let props = HashMap::from([(
            "startAcceptSendRequestTimeStamp".into(),
            until_ms.to_string().into(),
        )]);
        BrokerAdmin::update_broker_config(admin, addr.clone().into(), props)
            .await
            .map_err(|e| format!("updating {addr}'s config: {e}"))?;
    }
    Ok(())
}

/// Sends a copy of every message on the topic to its own queue: the same
/// body, key, tags and properties, a new message id, delivered at once. A
/// consumer sees the same cancel twice, as after a producer retry or a redelivery.
#[allow(deprecated)] // Classic pull: the one client that reads exact offsets.
async fn copy_messages<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Vec<Copied>, String> {
    let reader = ctx
        .clients
        .pull_consumer("DOJO_VERIFIER_READER")
        .map_err(|e| e.to_string())?;
    let read = async {
        reader
            .start()
            .await
            .map_err(|e| format!("reader start: {e}"))?;
        let mut queues = reader
            .fetch_subscribe_message_queues(TOPIC)
            .await
            .map_err(|e| format!("queues of {TOPIC}: {e}"))?;
        queues.sort_by_key(MessageQueue::queue_id);
        let mut found = Vec::new();
        for mq in queues {
            let mut offset = reader
                .min_offset(&mq)
                .await
                .map_err(|e| format!("min offset: {e}"))?;
            let max = reader
                .max_offset(&mq)
                .await
                .map_err(|e| format!("max offset: {e}"))?;
            while offset < max {
                let pulled = reader
                    .pull(&mq, "*", offset, 32)
                    .await
                    .map_err(|e| format!("pull {TOPIC} at {offset}: {e}"))?;
                for m in pulled.msg_found_list().unwrap_or_default() {
                    let mut b = Message::builder()
                        .topic(TOPIC)
                        .body_slice(&m.body().unwrap_or_default());
                    let keys = m.message_inner().keys().unwrap_or_default();
                    if !keys.is_empty() {
                        b = b.keys(keys.clone());
                    }
                    if let Some(tags) = m.get_tags() {
                        b = b.tags(tags);
                    }
                    for (k, v) in m.properties() {
                        if !STRING_HASH_SET.contains(k.as_str()) {
                            b = b
                                .raw_property(k.clone(), v.clone())
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    let copy = b.build().map_err(|e| e.to_string())?;
                    found.push((
                        mq.clone(),
                        Copied {
                            key: keys.join(" "),
                            queue: mq.queue_id(),
                            offset: m.queue_offset(),
                        },
                        copy,
                    ));
                }
                let next = pulled.next_begin_offset() as i64;
                if next <= offset {
                    break;
                }
                offset = next;
            }
        }
        Ok::<_, String>(found)
    }
    .await;
    dojo_kit::shutdown_pull_consumer_in_background(reader);
    let found = read?;
    let mut producer = ctx.clients.producer("checkout-replay");
    producer
        .start()
        .await
        .map_err(|e| format!("producer start: {e}"))?;
    let mut copies = Vec::new();
    let mut failed = None;
    for (mq, copied, msg) in found {
        match producer.send_to_queue(msg, mq).await {
            Ok(_) => copies.push(copied),
            Err(e) => {
                failed = Some(format!(
                    "copy of {} (queue {} offset {}): {e}",
                    copied.key, copied.queue, copied.offset
                ));
                break;
            }
        }
    }
    producer.shutdown().await;
    match failed {
        Some(e) => Err(e),
        None => Ok(copies),
    }
}

/// The topic's next offset per queue.
#[allow(deprecated)]
async fn topic_max_offsets<P: Platform>(
    ctx: &mut Ctx<'_, P>,
) -> Result<BTreeMap<i32, i64>, String> {
    let reader = ctx
        .clients
        .pull_consumer("DOJO_VERIFIER_READER")
        .map_err(|e| e.to_string())?;
    let r = async {
        reader
            .start()
            .await
            .map_err(|e| format!("reader start: {e}"))?;
        let mut max = BTreeMap::new();
        for mq in reader
            .fetch_subscribe_message_queues(TOPIC)
            .await
            .map_err(|e| format!("queues of {TOPIC}: {e}"))?
        {
            max.insert(
                mq.queue_id(),
                reader
                    .max_offset(&mq)
                    .await
                    .map_err(|e| format!("max offset: {e}"))?,
            );
        }
        Ok(max)
    }
    .await;
    dojo_kit::shutdown_pull_consumer_in_background(reader);
    r
}

/// What the world recorded of one order.
#[derive(Default)]
struct Record<'a> {
    created: bool,
    /// Applied status changes (a repeat of the current status is none), in order.
    changes: Vec<&'a Effect>,
    reserves: Vec<&'a Effect>,
    restores: Vec<&'a Effect>,
    grants: Vec<&'a Effect>,
    releases: Vec<&'a Effect>,
}

impl Record<'_> {
    fn first_to(&self, status: &str) -> Option<&Effect> {
        self.changes
            .iter()
            .copied()
            .find(|e| matches!(&e.op, Op::OrderStatus { to, .. } if to == status))
    }

    fn final_status(&self) -> Option<&str> {
        match self.changes.last().map(|e| &e.op) {
            Some(Op::OrderStatus { to, .. }) => Some(to),
            _ => self.created.then_some("CREATED"),
        }
    }
}

fn records(history: &History) -> BTreeMap<&str, Record<'_>> {
    let mut map: BTreeMap<&str, Record<'_>> = BTreeMap::new();
    for e in history
        .effects
        .iter()
        .filter(|e| e.outcome == dojo_world::Outcome::Ok)
    {
        for id in e.op.order_ids() {
            let r = map.entry(id).or_default();
            match &e.op {
                Op::OrderCreate { .. } => r.created = true,
                Op::OrderStatus { changed: true, .. } => r.changes.push(e),
                Op::Reserve { .. } => r.reserves.push(e),
                Op::Restore { .. } => r.restores.push(e),
                Op::Grant { .. } => r.grants.push(e),
                Op::Release { .. } => r.releases.push(e),
                _ => {}
            }
        }
    }
    map
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn judge(o: &Observed) -> Judgement {
    let mut j = Judgement::default();
    let t = |ms: u64| format!("{:.2}s", ms.saturating_sub(o.started_wall) as f64 / 1000.0);
    let by = |e: &Effect| {
        let after = if e.instance == INSTANCES[0] && e.wall_ms >= o.restarted_at {
            " after its restart"
        } else {
            ""
        };
        format!("#{} by {}{after} at {}", e.seq, e.instance, t(e.wall_ms))
    };
    let in_refusal = |ord: &Order| (o.refused.0..o.refused.1).contains(&ord.placed_at);
    let records = records(&o.effects);
    let none = Record::default();
    let rec = |id: &str| records.get(id).unwrap_or(&none);
    let copied = |id: &str| o.copies.iter().any(|c| c.key.split(' ').any(|k| k == id));

    let paid_planned = o.orders.values().filter(|ord| ord.pay.is_some()).count();
    j.figure("orders placed", o.orders.len() as f64, "");
    j.figure(
        "orders paid before their time was up",
        paid_planned as f64,
        "",
    );
    j.figure(
        "broker refused every send for",
        (o.refused.1 - o.refused.0) as f64 / 1000.0,
        "s",
    );
    let refused_answers: Vec<u64> = o
        .orders
        .values()
        .filter(|ord| in_refusal(ord))
        .map(|ord| ord.placed.at.saturating_sub(ord.placed_at))
        .collect();
    if let Some(slowest) = refused_answers.iter().max() {
        j.figure(
            "slowest answer to an order placed during the refusal",
            *slowest as f64 / 1000.0,
            "s",
        );
    }
    j.figure("cancel messages delivered twice", o.copies.len() as f64, "");

    // Placed: every order answered 201 and written.
    let unplaced: Vec<String> = o
        .orders
        .iter()
        .filter(|(id, ord)| !ord.placed.ok() || !rec(id).created)
        .map(|(id, ord)| {
            format!(
                "{id} via {} at {}{}: answered {}{}",
                ord.via,
                t(ord.placed_at),
                if in_refusal(ord) {
                    " (while the broker refused sends)"
                } else {
                    ""
                },
                ord.placed.describe(ord.placed_at),
                if rec(id).created {
                    ""
                } else {
                    "; no order row was written"
                }
            )
        })
        .collect();
    j.check(if unplaced.is_empty() {
        Check::pass("orders-placed", "every order checkout places is taken", format!("all {} orders answered 201 and written, {} of them placed while the broker refused sends", o.orders.len(), refused_answers.len()))
    } else {
        Check::fail("orders-placed", "every order checkout places is taken", format!("{} of {} orders were not taken", unplaced.len(), o.orders.len())).with_evidence(unplaced)
    });

    // On time: each order's cancel inside [T, T + slack] after it was placed.
    let mut lateness: Vec<i64> = Vec::new();
    let mut off_time: Vec<String> = Vec::new();
    for (id, ord) in &o.orders {
        let Some(c) = rec(id).first_to("CANCELLED") else {
            continue;
        };
        let due = ord.placed_at + PAY_WITHIN_MS;
        let late = c.wall_ms as i64 - due as i64;
        lateness.push(late);
        let paid = if ord.pay.is_some() { "paid" } else { "unpaid" };
        if late < 0 {
            off_time.push(format!(
                "{id} ({paid}, placed at {}): cancelled {}, {:.2}s BEFORE its time was up",
                t(ord.placed_at),
                by(c),
                -late as f64 / 1000.0
            ));
        } else if late as u64 > SLACK_MS {
            off_time.push(format!(
                "{id} ({paid}, placed at {}{}): cancelled {}, {:.2}s after its time was up",
                t(ord.placed_at),
                if in_refusal(ord) {
                    " while the broker refused sends"
                } else {
                    ""
                },
                by(c),
                late as f64 / 1000.0
            ));
        }
    }
    lateness.sort_unstable();
    if !lateness.is_empty() {
        j.figure(
            "cancel lateness p50",
            percentile(&lateness, 50.0) as f64,
            "ms",
        );
        j.figure(
            "cancel lateness p99",
            percentile(&lateness, 99.0) as f64,
            "ms",
        );
        j.figure("cancel lateness min", lateness[0] as f64, "ms");
    }
    let window = format!(
        "[{:.0}s, {:.1}s] after the order was placed",
        PAY_WITHIN_MS as f64 / 1000.0,
        (PAY_WITHIN_MS + SLACK_MS) as f64 / 1000.0
    );
    j.check(if off_time.is_empty() {
        let range = match (lateness.first(), lateness.last()) {
            (Some(a), Some(b)) => format!(": {a}-{b} ms after the time was up"),
            _ => String::new(),
        };
        Check::pass(
            "cancelled-on-time",
            "every cancel comes once the time to pay is up, and not much later",
            format!("all {} cancels inside {window}{range}", lateness.len()),
        )
    } else {
        Check::fail(
            "cancelled-on-time",
            "every cancel comes once the time to pay is up, and not much later",
            format!(
                "{} of {} cancels outside {window}",
                off_time.len(),
                lateness.len()
            ),
        )
        .with_evidence(off_time)
    });

    // Paid: a payment before the time is up is taken, and stops the cancel.
    let mut wrongly: Vec<String> = Vec::new();
    for (id, ord) in &o.orders {
        let Some(pay) = &ord.pay else { continue };
        let r = rec(id);
        let cancelled = r.first_to("CANCELLED").map(|c| {
            format!(
                "; cancelled {} (request {})",
                by(c),
                c.request_id.as_deref().unwrap_or("-")
            )
        });
        let paid = r.first_to("PAID");
        if !pay.reply.ok() || paid.is_none() {
            wrongly.push(format!(
                "{id}: paid at {} via {} ({:.1}s before its time was up), answered {}{}",
                t(pay.at),
                pay.via,
                (ord.placed_at + PAY_WITHIN_MS).saturating_sub(pay.at) as f64 / 1000.0,
                pay.reply.describe(pay.at),
                cancelled.unwrap_or_default()
            ));
        } else if let Some(c) = cancelled {
            wrongly.push(format!(
                "{id}: placed via {}, paid at {} via {} (taken {}){c}",
                ord.via,
                t(pay.at),
                pay.via,
                paid.map(by).unwrap_or_default()
            ));
        }
    }
    j.check(if wrongly.is_empty() {
        Check::pass(
            "paid-never-cancelled",
            "a payment before the time is up stops the cancel",
            format!("all {paid_planned} payments taken, none of those orders cancelled"),
        )
    } else {
        Check::fail(
            "paid-never-cancelled",
            "a payment before the time is up stops the cancel",
            format!(
                "{} of {paid_planned} orders paid in time were refused or cancelled",
                wrongly.len()
            ),
        )
        .with_evidence(wrongly)
    });

    // Given back once: one restore of the order's stock, one release of its
    // points, per cancelled order; none for the others.
    let mut twice: Vec<String> = Vec::new();
    let mut restores_applied = 0;
    for (id, ord) in &o.orders {
        let r = rec(id);
        restores_applied += r.restores.len() + r.releases.len();
        let cancelled = r.first_to("CANCELLED").is_some();
        let expected = usize::from(cancelled);
        let wrong_stock: Vec<String> = r
            .restores
            .iter()
            .filter_map(|e| match &e.op {
                Op::Restore { items } => items
                    .iter()
                    .find(|i| i.order_id == *id && (i.sku != ord.sku || i.qty != ord.qty))
                    .map(|i| {
                        format!(
                            "restore {} gave back {} x {}; the order holds {} x {}",
                            by(e),
                            i.qty,
                            i.sku,
                            ord.qty,
                            ord.sku
                        )
                    }),
                _ => None,
            })
            .collect();
        let wrong_points: Vec<String> = r
            .releases
            .iter()
            .filter_map(|e| match &e.op {
                Op::Release {
                    customer, points, ..
                } if *points != ord.points || *customer != ord.customer => Some(format!(
                    "release {} gave back {points} points of {customer}; the order holds {} of {}",
                    by(e),
                    ord.points,
                    ord.customer
                )),
                _ => None,
            })
            .collect();
        if r.restores.len() != expected
            || r.releases.len() != expected
            || !wrong_stock.is_empty()
            || !wrong_points.is_empty()
        {
            let what = if cancelled {
                "cancelled"
            } else {
                "not cancelled"
            };
            let dup = if copied(id) {
                ", its cancel message delivered twice"
            } else {
                ""
            };
            let list = |v: &[&Effect]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter().map(|e| by(e)).collect::<Vec<_>>().join(", ")
                }
            };
            let mut line = format!(
                "{id} ({what}{dup}): {} stock restores ({}), {} points releases ({})",
                r.restores.len(),
                list(&r.restores),
                r.releases.len(),
                list(&r.releases)
            );
            for w in wrong_stock.iter().chain(&wrong_points) {
                line.push_str("; ");
                line.push_str(w);
            }
            twice.push(line);
        }
    }
    j.figure("restores and releases applied", restores_applied as f64, "");
    let cancelled_count = o
        .orders
        .keys()
        .filter(|id| rec(id).first_to("CANCELLED").is_some())
        .count();
    j.check(if twice.is_empty() {
        Check::pass("restored-once", "a cancel gives back the order's stock and points exactly once", format!("{cancelled_count} cancelled orders each got one restore and one release, duplicated cancel messages included; the others none"))
    } else {
        Check::fail("restored-once", "a cancel gives back the order's stock and points exactly once", format!("{} orders were given back other than once (killed {} at {}, {} cancel messages delivered twice from {})", twice.len(), INSTANCES[0], t(o.killed_at), o.copies.len(), t(o.copies_at))).with_evidence(twice)
    });

    // Settled: every order ends paid or cancelled.
    let pending: Vec<String> = o
        .orders
        .iter()
        .filter_map(|(id, ord)| {
            let status = rec(id).final_status()?;
            (status != "PAID" && status != "CANCELLED").then(|| {
                let why = if in_refusal(ord) { " while the broker refused sends" } else { "" };
                format!("{id} (placed at {} via {}{why}, answered {}): still {status} at the end, {:.1}s after its time was up", t(ord.placed_at), ord.via, ord.placed.describe(ord.placed_at), o.copies_at.saturating_sub(ord.placed_at + PAY_WITHIN_MS) as f64 / 1000.0)
            })
        })
        .collect();
    if let Ok(lag) = &o.lag_at_end {
        j.figure(
            "cancel messages left unconfirmed at the end",
            *lag as f64,
            "",
        );
    }
    j.check(if pending.is_empty() {
        Check::pass(
            "none-pending",
            "no order is left waiting: each ends paid or cancelled",
            format!(
                "all {} orders written ended PAID or CANCELLED",
                o.orders.keys().filter(|id| rec(id).created).count()
            ),
        )
    } else {
        Check::fail(
            "none-pending",
            "no order is left waiting: each ends paid or cancelled",
            format!(
                "{} orders never ended: their stock and points are held forever",
                pending.len()
            ),
        )
        .with_evidence(pending)
    });

    j.check(if o.exits.is_empty() {
        Check::pass(
            "service-running",
            "the order service keeps running",
            format!(
                "{} and {} were running at the end",
                INSTANCES[0], INSTANCES[1]
            ),
        )
    } else {
        Check::fail(
            "service-running",
            "the order service keeps running",
            format!(
                "{} exited by itself",
                o.exits
                    .iter()
                    .map(|(i, s)| format!("{i} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_evidence(o.tails.iter())
    });
    j
}
