//! Order-status service. Checkout, payment and the warehouse `POST /events`
//! as an order moves CREATED → PAID → SHIPPED → DONE; each event is published
//! to `order-status`. The projector (group `order-projector`) consumes them
//! and keeps the orders table in the world up to date.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dojo_kit::client::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer, MQPushConsumer, MessageListenerConcurrently,
};
use dojo_kit::model::common::consumer::consume_from_where::ConsumeFromWhere;
use dojo_kit::model::common::message::message_ext::MessageExt;
use dojo_kit::model::common::message::message_single::Message;
use dojo_kit::{Clients, Env, WorldClient, WorldError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TOPIC: &str = "order-status";
const PRODUCER_GROUP: &str = "order-status-service";
const CONSUMER_GROUP: &str = "order-projector";

/// One step of an order's life, as it travels on `order-status`.
#[derive(Deserialize, Serialize)]
struct Event {
    order_id: String,
    status: String,
    customer: String,
    amount: i64,
}

/// `POST /events`: published once the broker has stored it.
async fn publish(State(producer): State<Arc<DefaultMQProducer>>, Json(event): Json<Event>) -> (StatusCode, Json<Value>) {
    let body = serde_json::to_vec(&event).expect("an event serialises");
    // A unique key per event makes each one easy to find in the console.
    let key = format!("{}:{}", event.order_id, event.status);
    let msg = match Message::builder().topic(TOPIC).key(key).body_slice(&body).build() {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e.to_string() }))),
    };
    match producer.send(msg).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "order_id": event.order_id, "status": event.status }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))),
    }
}

/// Applies events to the orders table.
struct Projector {
    world: WorldClient,
}

impl Projector {
    fn apply(&self, event: &Event, request_id: &str) -> Result<Value, WorldError> {
        if event.status == "CREATED" {
            self.world.post("/orders", request_id, &json!({ "order_id": event.order_id, "customer": event.customer, "amount": event.amount }))
        } else {
            self.world.post(&format!("/orders/{}/status", event.order_id), request_id, &json!({ "to": event.status }))
        }
    }
}

impl MessageListenerConcurrently for Projector {
    fn consume_message(&self, msgs: &[&MessageExt], _context: &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            let body = msg.body().unwrap_or_default();
            let event: Event = match serde_json::from_slice(&body) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("skipping {}: bad body: {e}", msg.msg_id());
                    continue;
                }
            };
            match self.apply(&event, msg.msg_id().as_str()) {
                Ok(_) => {}
                // The table refused it: nothing to retry.
                Err(e) if e.status() == Some(409) => eprintln!("{} {} refused: {e}", event.order_id, event.status),
                Err(e) => {
                    eprintln!("{} {} failed, retrying later: {e}", event.order_id, event.status);
                    return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
                }
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("order-status", env.namesrv_addr.clone()).expect("RocketMQ client runtime");

    let mut producer = clients.producer(PRODUCER_GROUP);
    producer.start().await.expect("producer start");
    let producer = Arc::new(producer);

    let mut consumer = clients.push_consumer(CONSUMER_GROUP);
    consumer.set_consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
    consumer.subscribe(TOPIC, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Projector { world: WorldClient::from_env(&env) });
    consumer.start().await.expect("consumer start");

    let router = Router::new().route("/healthz", get(|| async { "ok" })).route("/events", post(publish)).with_state(Arc::clone(&producer));
    let addr = env.listen_addr.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("order-status {} listening on {addr}, projecting {TOPIC}", env.instance);
    axum::serve(listener, router).with_graceful_shutdown(sigterm()).await.expect("serve");

    consumer.shutdown().await;
    if let Ok(mut producer) = Arc::try_unwrap(producer) {
        producer.shutdown().await;
    }
    clients.shutdown().await;
}

async fn sigterm() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
