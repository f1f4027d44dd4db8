//! The world over real HTTP on 127.0.0.1: every route, the concurrency and
//! timing guarantees levels rely on, fault injection, and garbage input.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dojo_world::{
    DownstreamConfig, Fault, FaultRule, History, InventoryConfig, Kind, Op, Outcome, Repeats,
    StateMachine, World, WorldConfig, WorldHandle,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

async fn start(config: WorldConfig) -> (WorldHandle, Client) {
    let world = World::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let client = Client {
        base: world.url(),
        http: reqwest::Client::new(),
        instance: "test".into(),
    };
    (world, client)
}

#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
    instance: String,
}

impl Client {
    fn as_instance(&self, instance: &str) -> Client {
        Client {
            instance: instance.into(),
            ..self.clone()
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Dojo-Instance", &self.instance);
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} answered non-JSON {text:?}: {e}"));
    (status, body)
}

fn level5() -> WorldConfig {
    WorldConfig {
        state_machine: Some(StateMachine::linear(&[
            "CREATED", "PAID", "SHIPPED", "DONE",
        ])),
        ..WorldConfig::default()
    }
}

fn order(id: &str) -> Value {
    json!({"order_id": id, "amount": 1999, "customer": "alice"})
}

#[tokio::test]
async fn health_and_unknown_routes_answer_json() {
    let (world, c) = start(WorldConfig::default()).await;
    assert_eq!(c.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = c.get("/nope").await;
    assert_eq!(status, 404);
    assert!(body["hint"].as_str().unwrap().contains("README"));
    let (status, body) = c.send(Method::DELETE, "/orders", None).await;
    assert_eq!(status, 405, "{body}");
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn orders_without_state_machine_accept_any_transition() {
    let (world, c) = start(WorldConfig::default()).await;
    let (status, body) = c.post("/orders", order("o-1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["order"]["status"], "CREATED");
    assert_eq!(
        c.post("/orders", order("o-1")).await.0,
        409,
        "a second create is a duplicate"
    );

    let (status, body) = c
        .post("/orders/o-1/status", json!({"to": "WHATEVER"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    let (status, body) = c
        .post("/orders/o-1/status", json!({"to": "WHATEVER"}))
        .await;
    assert_eq!(
        (status, &body["changed"]),
        (200, &json!(false)),
        "repeating the current status is a no-op"
    );
    assert_eq!(
        c.post("/orders/o-2/status", json!({"to": "PAID"})).await.0,
        404
    );

    let (status, body) = c.get("/orders/o-1").await;
    assert_eq!(status, 200);
    assert_eq!(body["statuses"], json!(["CREATED", "WHATEVER"]));
    assert_eq!(body["amount"], 1999);
    assert_eq!(c.get("/orders/o-2").await.0, 404);

    assert_eq!(world.order("o-1").unwrap().status, "WHATEVER");
    assert_eq!(world.orders().len(), 1);
    let outcomes: Vec<Outcome> = world.history().effects.iter().map(|e| e.outcome).collect();
    use Outcome::*;
    assert_eq!(outcomes, [Ok, Rejected, Ok, Ok, Rejected]);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_machine_records_every_illegal_transition() {
    let (world, c) = start(level5()).await;
    // Out of order: PAID before the order exists, SHIPPED before PAID.
    assert_eq!(
        c.post("/orders/o-1/status", json!({"to": "PAID"})).await.0,
        409
    );
    assert_eq!(c.post("/orders", order("o-1")).await.0, 201);
    let (status, body) = c.post("/orders/o-1/status", json!({"to": "SHIPPED"})).await;
    assert_eq!(status, 409);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("CREATED → SHIPPED"),
        "{body}"
    );
    assert!(
        body["hint"].as_str().unwrap().contains("CREATED→PAID"),
        "{body}"
    );
    assert!(
        body["seq"].is_u64(),
        "the refusal names its recorded effect"
    );
    for to in ["PAID", "SHIPPED", "DONE"] {
        assert_eq!(
            c.post("/orders/o-1/status", json!({"to": to})).await.0,
            200,
            "{to}"
        );
    }
    assert_eq!(
        c.post("/orders/o-1/status", json!({"to": "DONE"})).await.0,
        200,
        "a redelivered event repeats"
    );
    assert_eq!(
        c.post("/orders/o-1/status", json!({"to": "PAID"})).await.0,
        409,
        "going back is illegal"
    );
    let (status, _) = c
        .post(
            "/orders",
            json!({"order_id": "o-2", "amount": 1, "customer": "bob", "status": "PAID"}),
        )
        .await;
    assert_eq!(status, 409, "orders start in the initial status");

    let history = world.history();
    let illegal: Vec<_> = history.with_outcome(Outcome::Illegal).collect();
    assert_eq!(illegal.len(), 4);
    let Op::OrderStatus { seen, to, .. } = &illegal[2].op else {
        panic!("{:?}", illegal[2])
    };
    assert_eq!(
        (seen.join(","), to.as_str()),
        ("CREATED,PAID,SHIPPED,DONE".into(), "PAID")
    );
    assert_eq!(history.transitions_of("o-1").len(), 8);
    assert_eq!(
        world.order("o-1").unwrap().statuses,
        ["CREATED", "PAID", "SHIPPED", "DONE"]
    );

    // A stricter level makes even repeats illegal.
    world.update_config(|c| {
        c.state_machine = c
            .state_machine
            .take()
            .map(|m| m.with_repeats(Repeats::Illegal))
    });
    assert_eq!(
        c.post("/orders/o-1/status", json!({"to": "DONE"})).await.0,
        409
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_with_from_is_a_conflict_not_an_illegal_transition() {
    let machine =
        StateMachine::linear(&["CREATED", "PAID"]).with_transition("CREATED", "CANCELLED");
    let (world, c) = start(WorldConfig {
        state_machine: Some(machine),
        ..WorldConfig::default()
    })
    .await;
    for id in ["o-1", "o-2"] {
        c.post("/orders", order(id)).await;
    }
    c.post("/orders/o-1/status", json!({"to": "PAID"})).await;
    // The fixed canceller: cancel only while unpaid.
    let (status, body) = c
        .post(
            "/orders/o-1/status",
            json!({"to": "CANCELLED", "from": "CREATED"}),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is PAID, not CREATED"),
        "{body}"
    );
    assert_eq!(
        c.post(
            "/orders/o-2/status",
            json!({"to": "CANCELLED", "from": "CREATED"})
        )
        .await
        .0,
        200
    );
    // The starter: cancel without looking.
    assert_eq!(
        c.post("/orders/o-1/status", json!({"to": "CANCELLED"}))
            .await
            .0,
        409
    );

    let history = world.history();
    let outcomes: Vec<Outcome> = history
        .transitions_of("o-1")
        .iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Rejected,
            Outcome::Illegal
        ]
    );
    assert_eq!(world.order("o-1").unwrap().status, "PAID");
    assert_eq!(world.order("o-2").unwrap().status, "CANCELLED");
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn ledger_records_every_call_with_its_caller() {
    let (world, c) = start(WorldConfig::default()).await;
    let debit = json!({"order_id": "o-1", "account": "alice", "amount": 500});
    let resp = c
        .http
        .post(format!("{}/ledger/debit", c.base))
        .header("X-Dojo-Instance", "consumer-a")
        .header("X-Request-Id", "msg-17")
        .json(&debit)
        .send()
        .await
        .unwrap();
    let (status, body) = answer(resp).await;
    assert_eq!((status, body["balance"].as_i64()), (200, Some(-500)));
    // A redelivery debits again: the world never deduplicates.
    assert_eq!(
        c.as_instance("consumer-b")
            .post("/ledger/debit", debit)
            .await
            .0,
        200
    );
    c.post(
        "/ledger/debit",
        json!({"order_id": "o-2", "account": "alice", "amount": 100}),
    )
    .await;
    let (_, body) = c
        .post(
            "/ledger/credit",
            json!({"order_id": "o-1", "account": "alice", "amount": 500}),
        )
        .await;
    assert_eq!(body["balance"], -600);
    assert_eq!(
        c.get("/ledger/accounts/alice").await.1,
        json!({"account": "alice", "balance": -600})
    );
    assert_eq!(c.get("/ledger/accounts/nobody").await.1["balance"], 0);

    let history = world.history();
    let debits = history.per_order(Kind::Debit);
    assert_eq!(debits["o-1"].len(), 2);
    assert_eq!(debits["o-2"].len(), 1);
    let first = debits["o-1"][0];
    assert_eq!(
        (first.instance.as_str(), first.request_id.as_deref()),
        ("consumer-a", Some("msg-17"))
    );
    assert_eq!(debits["o-1"][1].instance, "consumer-b");
    assert_eq!(debits["o-2"][0].instance, "test");
    assert_eq!(history.per_order(Kind::Credit)["o-1"].len(), 1);
    assert!(
        history
            .effects
            .windows(2)
            .all(|w| w[0].seq + 1 == w[1].seq && w[0].at_ms <= w[1].at_ms)
    );
    assert!(history.effects[0].wall_ms > 1_600_000_000_000);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn caller_defaults_to_unknown() {
    let (world, c) = start(WorldConfig::default()).await;
    let resp = c
        .http
        .post(format!("{}/events/logistics", c.base))
        .json(&json!({"order_id": 42, "carrier": "dhl"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(resp).await.0, 200);
    let effect = &world.history().effects[0];
    assert_eq!(
        (effect.instance.as_str(), effect.request_id.as_deref()),
        ("unknown", None)
    );
    let Op::Event { name, key, payload } = &effect.op else {
        panic!("{effect:?}")
    };
    assert_eq!(
        (name.as_str(), key.as_deref(), &payload["carrier"]),
        ("logistics", Some("42"), &json!("dhl"))
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn points_grant_and_release() {
    let (world, c) = start(WorldConfig::default()).await;
    let entry = json!({"order_id": "o-1", "customer": "bob", "points": 30});
    assert_eq!(c.post("/points/grant", entry.clone()).await.1["points"], 30);
    assert_eq!(c.post("/points/release", entry).await.1["points"], 0);
    assert_eq!(
        c.get("/points/customers/bob").await.1,
        json!({"customer": "bob", "points": 0})
    );
    let history = world.history();
    assert_eq!(history.per_order(Kind::Grant)["o-1"].len(), 1);
    assert_eq!(history.per_order(Kind::Release)["o-1"].len(), 1);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn inventory_takes_batches_up_to_batch_max() {
    let config = WorldConfig {
        inventory: InventoryConfig {
            batch_max: 3,
            ..InventoryConfig::default()
        },
        ..WorldConfig::default()
    };
    let (world, c) = start(config).await;
    let item = |o: &str, qty: i64| json!({"order_id": o, "sku": "sku-1", "qty": qty});
    let (status, body) = c
        .post(
            "/inventory/reserve",
            json!({"items": [item("o-1", 2), item("o-2", 1), item("o-2", 1)]}),
        )
        .await;
    assert_eq!((status, &body["items"]), (200, &json!(3)), "{body}");
    let (status, body) = c
        .post(
            "/inventory/reserve",
            json!({"items": vec![item("o-3", 1); 4]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("the most is 3"),
        "{body}"
    );
    assert_eq!(
        c.post("/inventory/restore", json!({"items": [item("o-1", 2)]}))
            .await
            .0,
        200
    );
    assert_eq!(
        c.get("/inventory/skus/sku-1").await.1,
        json!({"sku": "sku-1", "reserved": 2})
    );

    world.update_config(|c| c.inventory.batch_max = 1);
    assert_eq!(
        c.post(
            "/inventory/reserve",
            json!({"items": [item("o-4", 1), item("o-5", 1)]})
        )
        .await
        .0,
        400
    );

    let history = world.history();
    let reserved = history.per_order(Kind::Reserve);
    assert_eq!(reserved["o-1"].len(), 1);
    assert_eq!(
        reserved["o-2"].len(),
        2,
        "one batch naming an order twice is a double effect"
    );
    assert!(
        !reserved.contains_key("o-3"),
        "refused batches are not effects"
    );
    assert_eq!(history.per_order(Kind::Restore)["o-1"].len(), 1);
    assert_eq!(history.effects.len(), 2);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn inventory_latency_is_per_call_not_per_item() {
    let inventory = InventoryConfig {
        latency_ms: 60,
        ..InventoryConfig::default()
    };
    let (world, c) = start(WorldConfig {
        inventory,
        ..WorldConfig::default()
    })
    .await;
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"order_id": format!("o-{i}"), "sku": "s", "qty": 1}))
        .collect();
    let started = Instant::now();
    assert_eq!(
        c.post("/inventory/reserve", json!({"items": items}))
            .await
            .0,
        200
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(60), "{took:?}");
    assert!(
        took < Duration::from_millis(3000),
        "a batch costs one call's latency, took {took:?}"
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn inventory_rejects_calls_over_its_concurrency_limit() {
    let inventory = InventoryConfig {
        latency_ms: 2000,
        concurrency_limit: Some(2),
        ..InventoryConfig::default()
    };
    let (world, c) = start(WorldConfig {
        inventory,
        ..WorldConfig::default()
    })
    .await;
    let mut calls = JoinSet::new();
    for i in 0..6 {
        let c = c.clone();
        calls.spawn(async move {
            c.post(
                "/inventory/reserve",
                json!({"items": [{"order_id": format!("o-{i}"), "sku": "s", "qty": 1}]}),
            )
            .await
            .0
        });
    }
    let mut statuses: Vec<u16> = calls.join_all().await;
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    // Slots are freed once calls end.
    assert_eq!(
        c.post(
            "/inventory/reserve",
            json!({"items": [{"order_id": "o-9", "sku": "s", "qty": 1}]})
        )
        .await
        .0,
        200
    );
    let history = world.history();
    assert_eq!(history.with_outcome(Outcome::Rejected).count(), 4);
    assert_eq!(history.per_order(Kind::Reserve).len(), 3);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn set_if_absent_creates_exactly_once_under_100_concurrent_calls() {
    let (world, c) = start(WorldConfig::default()).await;
    let mut calls = JoinSet::new();
    for i in 0..100 {
        let c = c.as_instance(&format!("i-{i}"));
        calls.spawn(async move {
            c.post(
                "/kv/pay:o-1/set-if-absent",
                json!({"value": format!("PROCESSING by {i}"), "ttl_ms": 60000}),
            )
            .await
        });
    }
    let answers = calls.join_all().await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(_, b)| b["created"] == true)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1);
    let winner = &created[0]["entry"];
    assert!(
        answers
            .iter()
            .all(|(_, b)| b["entry"]["value"] == winner["value"]
                && b["entry"]["revision"] == winner["revision"])
    );
    let recorded = world
        .history()
        .of_kind(Kind::KvSetIfAbsent)
        .filter(|e| matches!(e.op, Op::KvSetIfAbsent { created: true, .. }))
        .count();
    assert_eq!(recorded, 1);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn kv_compare_and_set_read_and_delete() {
    let (world, c) = start(WorldConfig::default()).await;
    let (_, body) = c
        .post(
            "/kv/pay:o-1/set-if-absent",
            json!({"value": "PROCESSING", "ttl_ms": 30000}),
        )
        .await;
    let revision = body["entry"]["revision"].as_u64().unwrap();
    let (_, body) = c
        .post(
            "/kv/pay:o-1/compare-and-set",
            json!({"expect": "PROCESSING", "value": "DONE"}),
        )
        .await;
    assert_eq!(body["swapped"], true);
    assert_eq!(body["entry"]["value"], "DONE");
    assert!(
        body["entry"]["revision"].as_u64().unwrap() > revision,
        "revisions grow: fencing tokens"
    );
    assert!(
        body["entry"]["ttl_ms_left"].as_u64().unwrap() <= 30000,
        "the TTL is kept without ttl_ms"
    );
    let (_, body) = c
        .post(
            "/kv/pay:o-1/compare-and-set",
            json!({"expect": "PROCESSING", "value": "DONE"}),
        )
        .await;
    assert_eq!(
        (&body["swapped"], &body["entry"]["value"]),
        (&json!(false), &json!("DONE"))
    );
    let (_, body) = c
        .post("/kv/pay:o-1/set-if-absent", json!({"value": "PROCESSING"}))
        .await;
    assert_eq!(
        (&body["created"], &body["entry"]["value"]),
        (&json!(false), &json!("DONE"))
    );
    let (_, body) = c
        .post(
            "/kv/pay:o-1/compare-and-set",
            json!({"expect": "DONE", "value": "KEEP", "ttl_ms": 5000}),
        )
        .await;
    assert!(body["entry"]["ttl_ms_left"].as_u64().unwrap() <= 5000);

    let (status, body) = c.get("/kv/pay:o-1").await;
    assert_eq!((status, &body["value"]), (200, &json!("KEEP")));
    assert_eq!(
        c.send(Method::DELETE, "/kv/pay:o-1?expect=OTHER", None)
            .await
            .1["deleted"],
        false
    );
    assert_eq!(
        c.send(Method::DELETE, "/kv/pay:o-1?expect=KEEP", None)
            .await
            .1["deleted"],
        true
    );
    assert_eq!(c.get("/kv/pay:o-1").await.0, 404);
    assert_eq!(
        c.send(Method::DELETE, "/kv/pay:o-1", None).await.1["deleted"],
        false
    );
    // Keys are path segments: percent-encode a slash.
    c.post("/kv/a%2Fb/set-if-absent", json!({"value": "x"}))
        .await;
    assert_eq!(c.get("/kv/a%2Fb").await.1["key"], "a/b");
    assert_eq!(
        c.post(
            "/kv/missing/compare-and-set",
            json!({"expect": "A", "value": "B"})
        )
        .await
        .1["swapped"],
        false
    );
    assert_eq!(world.history().effects.len(), 10, "reads are not effects");
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn kv_keys_expire_after_their_ttl() {
    let (world, c) = start(WorldConfig::default()).await;
    c.post(
        "/kv/lock/set-if-absent",
        json!({"value": "a", "ttl_ms": 1000}),
    )
    .await;
    assert_eq!(c.get("/kv/lock").await.0, 200);
    assert_eq!(
        c.post("/kv/lock/set-if-absent", json!({"value": "b"}))
            .await
            .1["created"],
        false
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(c.get("/kv/lock").await.0, 404);
    assert_eq!(
        c.post(
            "/kv/lock/compare-and-set",
            json!({"expect": "a", "value": "c"})
        )
        .await
        .1["swapped"],
        false
    );
    assert_eq!(
        c.send(Method::DELETE, "/kv/lock", None).await.1["deleted"],
        false
    );
    let (_, body) = c
        .post("/kv/lock/set-if-absent", json!({"value": "b"}))
        .await;
    assert_eq!(
        (&body["created"], &body["entry"]["value"]),
        (&json!(true), &json!("b"))
    );
    assert!(
        body["entry"].get("ttl_ms_left").is_none(),
        "no ttl_ms: never expires"
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn downstream_rate_limit_bounds_accepted_calls() {
    // A slow rate keeps the bounds exact even on a loaded machine.
    let mut config = WorldConfig::default();
    config.downstreams.insert(
        "notify".into(),
        DownstreamConfig {
            burst: Some(5),
            ..DownstreamConfig::limited(2.0)
        },
    );
    let (world, c) = start(config).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let call = c.post("/downstream/notify", json!({"order_id": "o-1"}));
        statuses.push(call.await.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let rejected = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(accepted + rejected, statuses.len());
    assert_eq!(statuses[..5], [200; 5], "the burst is accepted");
    assert!(
        accepted as f64 <= 5.0 + 2.0 * elapsed + 1.0,
        "{accepted} accepted in {elapsed}s"
    );
    assert!(rejected > 0, "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = c
        .post("/downstream/notify", json!({"order_id": "o-2"}))
        .await;
    assert_eq!(status, 200, "tokens refill at the rate");

    let history = world.history();
    let times = history.downstream_times_ms("notify");
    assert_eq!(times.len(), accepted + 1);
    // Any window of 1 s holds at most the burst plus a second's refill.
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(
            in_window <= 5 + 2 + 1,
            "{in_window} calls in 1 s from {t} ms"
        );
    }
    let refused: Vec<_> = history.with_outcome(Outcome::Rejected).collect();
    assert_eq!(refused.len(), rejected);
    assert!(
        refused[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("2 requests/s")
    );

    assert_eq!(
        c.post("/downstream/logistics", json!({"order_id": "o-1"}))
            .await
            .0,
        200,
        "unlimited"
    );
    let (status, body) = c.post("/downstream/nope", json!({})).await;
    assert_eq!(status, 404);
    assert!(
        body["hint"].as_str().unwrap().contains("logistics, notify"),
        "{body}"
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_fail_writes_and_are_recorded() {
    let faults = vec![
        Fault::new(Kind::OrderCreate, FaultRule::Calls(BTreeSet::from([2]))),
        Fault::new(
            Kind::Debit,
            FaultRule::Keys(BTreeSet::from(["o-bad".to_owned()])),
        ),
        Fault::new(Kind::Downstream, FaultRule::FirstAttempts(2))
            .on("notify")
            .with_status(500),
    ];
    let (world, c) = start(WorldConfig {
        faults,
        ..WorldConfig::default()
    })
    .await;

    assert_eq!(c.post("/orders", order("o-1")).await.0, 201);
    let (status, body) = c.post("/orders", order("o-2")).await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("injected fault"),
        "{body}"
    );
    assert_eq!(
        c.get("/orders/o-2").await.0,
        404,
        "a failed write writes nothing"
    );
    assert_eq!(
        c.post("/orders", order("o-2")).await.0,
        201,
        "only the 2nd call fails"
    );

    assert_eq!(
        c.post(
            "/ledger/debit",
            json!({"order_id": "o-bad", "account": "a", "amount": 1})
        )
        .await
        .0,
        503
    );
    assert_eq!(
        c.post(
            "/ledger/debit",
            json!({"order_id": "o-bad", "account": "a", "amount": 1})
        )
        .await
        .0,
        503
    );
    assert_eq!(
        c.post(
            "/ledger/debit",
            json!({"order_id": "o-ok", "account": "a", "amount": 1})
        )
        .await
        .0,
        200
    );
    assert_eq!(c.get("/ledger/accounts/a").await.1["balance"], -1);

    let notify = |key: &str| json!({"key": key});
    assert_eq!(c.post("/downstream/notify", notify("k1")).await.0, 500);
    assert_eq!(c.post("/downstream/notify", notify("k2")).await.0, 500);
    assert_eq!(c.post("/downstream/notify", notify("k1")).await.0, 500);
    assert_eq!(
        c.post("/downstream/notify", notify("k1")).await.0,
        200,
        "transient: the third attempt succeeds"
    );
    assert_eq!(
        c.post("/downstream/logistics", notify("k1")).await.0,
        200,
        "the fault is aimed at notify only"
    );

    // Faults change at run time; a fraction picks the same keys every time.
    world.update_config(|c| {
        c.faults = vec![Fault::new(
            Kind::Credit,
            FaultRule::Fraction {
                fraction: 0.5,
                seed: 3,
            },
        )]
    });
    let mut failed = Vec::new();
    for i in 0..40 {
        let credit = json!({"order_id": format!("o-{i}"), "account": "a", "amount": 1});
        if c.post("/ledger/credit", credit).await.0 == 503 {
            failed.push(i);
        }
    }
    assert!(
        (8..=32).contains(&failed.len()),
        "{} of 40 failed",
        failed.len()
    );
    for i in &failed {
        let credit = json!({"order_id": format!("o-{i}"), "account": "a", "amount": 1});
        assert_eq!(c.post("/ledger/credit", credit).await.0, 503);
    }

    let history = world.history();
    assert_eq!(
        history.with_outcome(Outcome::Failed).count(),
        1 + 2 + 3 + 2 * failed.len()
    );
    assert_eq!(history.per_order(Kind::OrderCreate).len(), 2);
    assert!(!history.per_order(Kind::Debit).contains_key("o-bad"));
    assert_eq!(history.per_order(Kind::Credit).len(), 40 - failed.len());
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn history_is_served_and_round_trips_through_a_file() {
    let (world, c) = start(level5()).await;
    c.post("/orders", order("o-1")).await;
    c.post("/orders/o-1/status", json!({"to": "DONE"})).await;
    c.post("/kv/k/set-if-absent", json!({"value": "v", "ttl_ms": 1000}))
        .await;
    c.post(
        "/inventory/reserve",
        json!({"items": [{"order_id": "o-1", "sku": "s", "qty": 1}]}),
    )
    .await;
    c.post("/events/trace", json!({"key": "t-1", "span": "x"}))
        .await;

    let (status, served) = c.get("/_world/history").await;
    assert_eq!(status, 200);
    let served: History = serde_json::from_value(served).unwrap();
    assert_eq!(served, world.history());
    let (_, later) = c.get("/_world/history?since=3").await;
    assert_eq!(later["effects"].as_array().unwrap().len(), 2);
    assert_eq!(later["effects"][0]["kind"], "reserve");
    assert_eq!(later["effects"][0]["items"][0]["sku"], "s");
    assert_eq!(c.get("/_world/history?since=abc").await.0, 400);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.json");
    world.history().write_json(&path).unwrap();
    assert_eq!(History::read_json(&path).unwrap(), served);
    assert!(History::read_json(&dir.path().join("missing.json")).is_err());
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn garbage_gets_a_json_4xx_at_every_route() {
    let (world, c) = start(level5()).await;
    let long = "x".repeat(300);
    let batch: Vec<Value> = (0..101)
        .map(|i| json!({"order_id": format!("o-{i}"), "sku": "s", "qty": 1}))
        .collect();
    let ledger = vec![
        json!({"order_id": "o-1", "account": "a", "amount": -5}),
        json!({"order_id": "o-1", "account": "a", "amount": 0}),
        json!({"order_id": "o-1", "account": "a", "amount": 1.5}),
        json!({"order_id": "o-1", "account": "", "amount": 1}),
        json!({"order_id": "o-1", "amount": 1}),
        json!({"order_id": long, "account": "a", "amount": 1}),
    ];
    let points = vec![
        json!({"order_id": "o-1", "customer": "c", "points": -5}),
        json!({"order_id": "o-1", "customer": "c"}),
        json!({"order_id": "o\u{0}", "customer": "c", "points": 1}),
    ];
    let inventory = vec![
        json!({"items": []}),
        json!({"items": "all"}),
        json!({"items": [{"order_id": "o", "sku": "s", "qty": 0}]}),
        json!({"items": [{"order_id": "o", "sku": "", "qty": 1}]}),
        json!({"items": [{"order_id": "o", "qty": 1}]}),
        json!({"items": batch}),
    ];
    let routes: Vec<(&str, Vec<Value>)> = vec![
        (
            "/orders",
            vec![
                json!({"order_id": "o-1", "amount": -5, "customer": "c"}),
                json!({"order_id": "o-1", "amount": "ten", "customer": "c"}),
                json!({"order_id": 5, "amount": 1, "customer": "c"}),
                json!({"order_id": long, "amount": 1, "customer": "c"}),
                json!({"order_id": "o\n1", "amount": 1, "customer": "c"}),
                json!({"order_id": "o-1", "amount": 1}),
                json!({"order_id": "o-1", "amount": 1, "customer": "c", "status": ""}),
                json!({"order_id": "o-1", "amount": 1, "customer": "c", "color": "red"}),
            ],
        ),
        (
            "/orders/o-1/status",
            vec![
                json!({"to": ""}),
                json!({"to": 5}),
                json!({"from": "A"}),
                json!({"to": long}),
                json!({"to": "PAID", "from": ""}),
            ],
        ),
        ("/ledger/debit", ledger.clone()),
        ("/ledger/credit", ledger),
        ("/points/grant", points.clone()),
        ("/points/release", points),
        ("/inventory/reserve", inventory.clone()),
        ("/inventory/restore", inventory),
        (
            "/kv/k/set-if-absent",
            vec![
                json!({"value": "v", "ttl_ms": -1}),
                json!({"value": "v", "ttl_ms": 0}),
                json!({"value": "v", "ttl_ms": 99_999_999_999_999_u64}),
                json!({"value": 7}),
                json!({"value": "v".repeat(5000)}),
                json!({}),
            ],
        ),
        (
            "/kv/k/compare-and-set",
            vec![
                json!({"value": "b"}),
                json!({"expect": "a", "value": "b", "ttl_ms": 0}),
                json!({"expect": null, "value": "b"}),
            ],
        ),
        ("/downstream/notify", vec![]),
        ("/events/trace", vec![]),
    ];
    // Not a JSON object at all: wrong for every route.
    let garbage: Vec<String> = [
        "",
        "not json",
        "{",
        "[]",
        "null",
        "42",
        "\"str\"",
        "{\"a\": }",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("[{}]", "1,".repeat(40 * 1024))])
    .collect();

    let mut checked = 0;
    for (path, bad) in routes {
        let bodies = garbage
            .iter()
            .cloned()
            .chain(bad.iter().map(Value::to_string));
        for body in bodies {
            for content_type in ["application/json", "text/plain"] {
                let resp = c
                    .http
                    .post(format!("{}{path}", c.base))
                    .header("Content-Type", content_type)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let (status, answer) = answer(resp).await;
                let shown = &body[..body.len().min(80)];
                assert!(
                    (400..500).contains(&status),
                    "POST {path} {shown:?} as {content_type} answered {status} {answer}"
                );
                assert!(
                    answer["error"].is_string() && answer["hint"].is_string(),
                    "POST {path} {shown:?}: {answer}"
                );
                checked += 1;
            }
        }
    }
    let bad_paths = [
        (Method::GET, "/orders/%00".to_owned()),
        (Method::GET, format!("/orders/{}", "o".repeat(300))),
        (Method::GET, "/orders/%FF%FE".to_owned()),
        (Method::GET, "/kv/%0A".to_owned()),
        (Method::DELETE, "/kv/%00".to_owned()),
        (Method::GET, "/ledger/accounts/%00".to_owned()),
        (Method::GET, "/points/customers/%00".to_owned()),
        (Method::GET, "/inventory/skus/%00".to_owned()),
        (Method::POST, "/downstream/%00".to_owned()),
        (Method::POST, "/events/%00".to_owned()),
        (Method::GET, "/_world/history?since=-1".to_owned()),
        (Method::PUT, "/orders".to_owned()),
        (Method::GET, "/ledger/debit".to_owned()),
        (Method::POST, "/nope/nope".to_owned()),
    ];
    for (method, path) in bad_paths {
        let (status, answer) = c
            .send(method.clone(), &path, Some(json!({"key": "k"})))
            .await;
        assert!(
            (400..500).contains(&status),
            "{method} {path} answered {status} {answer}"
        );
        assert!(
            answer["error"].is_string() && answer["hint"].is_string(),
            "{method} {path}: {answer}"
        );
        checked += 1;
    }
    assert!(checked > 250, "{checked}");
    assert_eq!(c.get("/healthz").await.0, 200, "the world survived");
    assert!(
        world.history().effects.is_empty(),
        "malformed requests are not effects"
    );
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (world, c) = start(WorldConfig::default()).await;
    assert_eq!(c.get("/healthz").await.0, 200);
    world.shutdown().await.unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", c.base))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn unspecified_bind_address_is_reached_through_loopback() {
    let world = World::start("0.0.0.0:0".parse().unwrap(), WorldConfig::default())
        .await
        .unwrap();
    assert!(
        world.url().starts_with("http://127.0.0.1:"),
        "{}",
        world.url()
    );
    let resp = reqwest::get(format!("{}/healthz", world.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn ledger_entry_with_kv_cas_applies_both_or_neither() {
    let (world, c) = start(WorldConfig::default()).await;
    c.post(
        "/kv/pay:o-1/set-if-absent",
        json!({"value": "PROCESSING:a", "ttl_ms": 30000}),
    )
    .await;
    let guarded = |expect: &str| {
        json!({"order_id": "o-1", "account": "alice", "amount": 500,
               "kv_cas": {"key": "pay:o-1", "expect": expect, "value": "DONE"}})
    };
    // Someone else's claim: nothing applied, the refusal is on the record.
    let (status, body) = c.post("/ledger/debit", guarded("PROCESSING:b")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("PROCESSING:a"),
        "{body}"
    );
    assert_eq!(c.get("/kv/pay:o-1").await.1["value"], "PROCESSING:a");
    let (status, body) = c.post("/ledger/debit", guarded("PROCESSING:a")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["balance"].as_i64(), &body["entry"]["value"]),
        (Some(-500), &json!("DONE"))
    );
    assert_eq!(
        body["entry"]["revision"], body["seq"],
        "the key is written by the debit itself"
    );
    // The same claim again (a redelivery that still holds the old token).
    assert_eq!(
        c.post("/ledger/debit", guarded("PROCESSING:a")).await.0,
        409
    );
    assert_eq!(c.get("/ledger/accounts/alice").await.1["balance"], -500);
    // An injected failure applies neither the debit nor the key.
    world.update_config(|cfg| {
        cfg.faults.push(Fault::new(
            Kind::Debit,
            FaultRule::Keys(["o-2".to_owned()].into()),
        ))
    });
    c.post("/kv/pay:o-2/set-if-absent", json!({"value": "P"}))
        .await;
    let failed = json!({"order_id": "o-2", "account": "alice", "amount": 1,
                        "kv_cas": {"key": "pay:o-2", "expect": "P", "value": "DONE"}});
    assert_eq!(c.post("/ledger/debit", failed).await.0, 503);
    assert_eq!(c.get("/kv/pay:o-2").await.1["value"], "P");

    let history = world.history();
    assert_eq!(history.per_order(Kind::Debit)["o-1"].len(), 1);
    assert_eq!(history.with_outcome(Outcome::Rejected).count(), 2);
    let applied = history.per_order(Kind::Debit)["o-1"][0];
    assert!(
        matches!(&applied.op, Op::Debit { kv_cas: Some(cas), .. } if cas.expect == "PROCESSING:a")
    );
    let back: History = serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
    assert_eq!(back, history);
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn ledger_latency_answers_late_but_applies_at_once() {
    let (world, c) = start(WorldConfig {
        ledger: dojo_world::LedgerConfig { latency_ms: 300 },
        ..WorldConfig::default()
    })
    .await;
    let started = Instant::now();
    let call = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(
                "/ledger/debit",
                json!({"order_id": "o-1", "account": "a", "amount": 1}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        world.history().per_order(Kind::Debit)["o-1"].len(),
        1,
        "applied before the answer"
    );
    assert_eq!(call.await.unwrap().0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    world.shutdown().await.unwrap();
}

#[tokio::test]
async fn order_create_latency_answers_late_after_writing_or_failing() {
    let (world, c) = start(WorldConfig {
        orders: dojo_world::OrdersConfig {
            create_latency_ms: 300,
        },
        faults: vec![Fault::new(
            Kind::OrderCreate,
            FaultRule::Keys(["o-2".to_string()].into()),
        )],
        ..WorldConfig::default()
    })
    .await;
    let started = Instant::now();
    let calls: Vec<_> = ["o-1", "o-2"]
        .into_iter()
        .map(|id| {
            let c = c.clone();
            tokio::spawn(async move {
                c.post(
                    "/orders",
                    json!({"order_id": id, "amount": 1, "customer": "a"}),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let history = world.history();
    assert_eq!(
        history.per_order(Kind::OrderCreate)["o-1"].len(),
        1,
        "written before the answer"
    );
    assert_eq!(
        history.with_outcome(Outcome::Failed).count(),
        1,
        "failed before the answer"
    );
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap().0);
    }
    assert_eq!(statuses, [201, 503]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    world.shutdown().await.unwrap();
}
