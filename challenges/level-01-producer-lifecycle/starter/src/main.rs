//! Order-notification service: every `POST /notify` publishes one message to
//! the `order-notify` topic, keyed by the order id, and answers 200 once the
//! broker has it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dojo_kit::model::common::message::message_single::Message;
use dojo_kit::{Clients, Env};
use serde::Deserialize;
use serde_json::{Value, json};

const TOPIC: &str = "order-notify";
const GROUP: &str = "order-notifier";

#[derive(Deserialize)]
struct Notify {
    order_id: String,
}

struct App {
    clients: Clients,
}

async fn notify(State(app): State<Arc<App>>, Json(req): Json<Notify>) -> (StatusCode, Json<Value>) {
    let msg = match Message::builder().topic(TOPIC).key(req.order_id.clone()).body_slice(req.order_id.as_bytes()).build() {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e.to_string() }))),
    };
    let mut producer = app.clients.producer(GROUP);
    if let Err(e) = producer.start().await {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() })));
    }
    match producer.send(msg).await {
        Ok(Some(sent)) => (StatusCode::OK, Json(json!({ "order_id": req.order_id, "msg_id": sent.msg_id.map(|m| m.to_string()) }))),
        Ok(None) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "no send result" }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))),
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("order-notifier", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let app = Arc::new(App { clients });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/notify", post(notify))
        .with_state(app);
    let addr = env.listen_addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("order-notifier {} listening on {addr}", env.instance);
    axum::serve(listener, router).await.expect("serve");
}
