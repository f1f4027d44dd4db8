//! Order service. Checkout places orders here (`POST /orders`); the payment
//! gateway reports payments (`POST /orders/{order_id}/pay`). A placed order
//! holds its stock and the loyalty points it earns until it is paid; an order
//! still unpaid `PAY_WITHIN` after it was placed is cancelled, and its stock
//! and points go back. The cancel is a delayed message on `order-timeout`,
//! sent when the order is placed and consumed by this same service.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dojo_kit::client::{ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer, MQPushConsumer, MessageListenerConcurrently};
use dojo_kit::model::common::consumer::consume_from_where::ConsumeFromWhere;
use dojo_kit::model::common::message::message_ext::MessageExt;
use dojo_kit::model::common::message::message_single::Message;
use dojo_kit::{Clients, Env, WorldClient, WorldError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::RwLock;

const TOPIC: &str = "order-timeout";
const GROUP: &str = "order-service";
/// How long a customer has to pay: 30 minutes in production, 8 s here.
const PAY_WITHIN: Duration = Duration::from_secs(8);
/// The broker's delay levels 1 to 18, in seconds (`messageDelayLevel`,
/// RocketMQ's default: 1s 5s 10s 30s 1m 2m ... 20m 30m 1h 2h).
const DELAY_LEVELS: [u64; 18] = [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];

/// The delay level that waits `delay` (30 minutes: level 16).
fn delay_level(delay: Duration) -> i32 {
    DELAY_LEVELS.iter().position(|s| Duration::from_secs(*s) == delay).map_or(0, |i| i as i32 + 1)
}

/// An order, as checkout places it. `placed_at_ms` (Unix ms) is when the
/// customer placed it: the time to pay counts from there.
#[derive(Clone, Deserialize)]
struct NewOrder {
    order_id: String,
    customer: String,
    sku: String,
    qty: i64,
    points: i64,
    amount: i64,
    placed_at_ms: u64,
}

/// The body of an `order-timeout` message: what a cancel gives back.
#[derive(Deserialize, Serialize)]
struct Timeout {
    order_id: String,
    customer: String,
    sku: String,
    qty: i64,
    points: i64,
}

struct App {
    world: WorldClient,
    producer: RwLock<DefaultMQProducer>,
}

type Answer = (StatusCode, Json<Value>);

fn failed(order_id: &str, e: impl std::fmt::Display) -> Answer {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "order_id": order_id, "error": e.to_string() })))
}

/// A world call off the async workers: the world's client blocks.
async fn world_post(app: &App, path: String, request_id: String, body: Value) -> Result<Value, WorldError> {
    let world = app.world.clone();
    tokio::task::spawn_blocking(move || world.post(&path, &request_id, &body)).await.expect("world call")
}

async fn place_order(State(app): State<Arc<App>>, Json(order): Json<NewOrder>) -> Answer {
    let id = order.order_id.clone();
    // The order row, its stock and its points.
    let steps = [
        ("/orders".to_string(), json!({ "order_id": id, "amount": order.amount, "customer": order.customer })),
        ("/inventory/reserve".to_string(), json!({ "items": [{ "order_id": id, "sku": order.sku, "qty": order.qty }] })),
        ("/points/grant".to_string(), json!({ "order_id": id, "customer": order.customer, "points": order.points })),
    ];
    for (path, body) in steps {
        if let Err(e) = world_post(&app, path, id.clone(), body).await {
            return failed(&id, e);
        }
    }

    // The cancel, should the customer not pay in time.
    let timeout = Timeout { order_id: id.clone(), customer: order.customer, sku: order.sku, qty: order.qty, points: order.points };
    let body = serde_json::to_vec(&timeout).expect("a timeout serializes");
    let msg = match Message::builder().topic(TOPIC).key(id.clone()).body_slice(&body).delay_level(delay_level(PAY_WITHIN)).build() {
        Ok(m) => m,
        Err(e) => return failed(&id, e),
    };
    if let Err(e) = app.producer.read().await.send(msg).await {
        eprintln!("order {id}: scheduling its cancel failed: {e}");
    }
    (StatusCode::CREATED, Json(json!({ "order_id": id, "status": "CREATED" })))
}

async fn pay_order(State(app): State<Arc<App>>, Path(id): Path<String>) -> Answer {
    // Only an order still waiting for its payment can be paid.
    match world_post(&app, format!("/orders/{id}/status"), format!("pay-{id}"), json!({ "to": "PAID", "from": "CREATED" })).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "order_id": id, "status": "PAID" }))),
        Err(WorldError::Status { status, body, .. }) => (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), Json(body)),
        Err(e) => failed(&id, e),
    }
}

/// Consumes `order-timeout`: each message is an order whose time to pay is up.
struct Canceller {
    world: WorldClient,
}

impl Canceller {
    fn cancel(&self, msg: &MessageExt) -> Result<(), String> {
        let body = msg.body().unwrap_or_default();
        let t: Timeout = serde_json::from_slice(&body).map_err(|e| format!("bad body: {e}"))?;
        let request_id = msg.msg_id().to_string();
        let calls = [
            (format!("/orders/{}/status", t.order_id), json!({ "to": "CANCELLED" })),
            ("/inventory/restore".to_string(), json!({ "items": [{ "order_id": t.order_id, "sku": t.sku, "qty": t.qty }] })),
            ("/points/release".to_string(), json!({ "order_id": t.order_id, "customer": t.customer, "points": t.points })),
        ];
        for (path, body) in calls {
            self.world.post(&path, &request_id, &body).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl MessageListenerConcurrently for Canceller {
    fn consume_message(&self, msgs: &[&MessageExt], _context: &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            if let Err(e) = self.cancel(msg) {
                // The broker delivers it again later.
                eprintln!("cancel {} failed, retrying later: {e}", msg.msg_id());
                return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("order-service", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let mut producer = clients.producer(GROUP);
    producer.start().await.expect("producer start");

    let mut consumer = clients.push_consumer(GROUP);
    // A new group starts at the beginning of the topic: no cancel is skipped.
    consumer.set_consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
    consumer.subscribe(TOPIC, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Canceller { world: WorldClient::from_env(&env) });
    consumer.start().await.expect("consumer start");

    let app = Arc::new(App { world: WorldClient::from_env(&env), producer: RwLock::new(producer) });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/orders", post(place_order))
        .route("/orders/{order_id}/pay", post(pay_order))
        .with_state(Arc::clone(&app));
    let addr = env.listen_addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("order-service {} listening on {addr}, consuming {TOPIC}", env.instance);
    axum::serve(listener, router).with_graceful_shutdown(sigterm()).await.expect("serve");
    consumer.shutdown().await;
    app.producer.write().await.shutdown().await;
    clients.shutdown().await;
}

async fn sigterm() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
