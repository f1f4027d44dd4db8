//! Order-notification service: every `POST /notify` publishes one message to
//! the `order-notify` topic, keyed by the order id. Checkout must never wait
//! for the broker, so the message goes out asynchronously.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dojo_kit::client::DefaultMQProducer;
use dojo_kit::model::common::message::message_single::Message;
use dojo_kit::{Clients, Env};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::RwLock;

const TOPIC: &str = "order-notify";
const GROUP: &str = "order-notifier";

#[derive(Deserialize)]
struct Notify {
    order_id: String,
}

struct App {
    // One producer for the whole process, shut down on SIGTERM (level 1).
    producer: RwLock<DefaultMQProducer>,
}

async fn notify(State(app): State<Arc<App>>, Json(req): Json<Notify>) -> (StatusCode, Json<Value>) {
    let msg = match Message::builder().topic(TOPIC).key(req.order_id.clone()).body_slice(req.order_id.as_bytes()).build() {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e.to_string() }))),
    };
    // Fire and forget: the client sends in the background and calls back
    // when the broker answers, so checkout never waits on RocketMQ.
    let queued = app.producer.read().await.send_with_callback(msg, |_result, _error| {}).await;
    match queued {
        Ok(()) => (StatusCode::OK, Json(json!({ "order_id": req.order_id, "status": "queued" }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))),
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("order-notifier", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let mut producer = clients.producer(GROUP);
    // The broker is fast and a failed send is rare: don't send anything twice.
    producer.set_retry_times_when_send_failed(0);
    producer.set_retry_times_when_send_async_failed(0);
    // Never give up on a slow broker.
    producer.set_send_msg_timeout(600_000);
    producer.start().await.expect("producer start");
    let app = Arc::new(App { producer: RwLock::new(producer) });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/notify", post(notify))
        .with_state(Arc::clone(&app));
    let addr = env.listen_addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("order-notifier {} listening on {addr}", env.instance);
    axum::serve(listener, router).with_graceful_shutdown(sigterm()).await.expect("serve");
    app.producer.write().await.shutdown().await;
    clients.shutdown().await;
    eprintln!("order-notifier {} stopped cleanly", env.instance);
}

async fn sigterm() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
