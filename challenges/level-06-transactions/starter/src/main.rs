//! Order service: `POST /orders` creates the order row in the orders table
//! and announces it on `order-created` (key: the order id), where billing,
//! the warehouse and the customer e-mails pick it up.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use dojo_kit::client::DefaultMQProducer;
use dojo_kit::model::common::message::message_single::Message;
use dojo_kit::{Clients, Env, WorldClient};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::RwLock;

const TOPIC: &str = "order-created";
const GROUP: &str = "order-service";

/// A new order, as checkout posts it and as it is announced.
#[derive(Clone, Deserialize, Serialize)]
struct NewOrder {
    order_id: String,
    amount: i64,
    customer: String,
}

struct App {
    world: WorldClient,
    producer: RwLock<DefaultMQProducer>,
}

async fn create_order(State(app): State<Arc<App>>, Json(order): Json<NewOrder>) -> (StatusCode, Json<Value>) {
    // 1. The order row. The world's client blocks: keep it off the async workers.
    let world = app.world.clone();
    let row = order.clone();
    let written = tokio::task::spawn_blocking(move || world.post("/orders", &row.order_id, &json!(row))).await.expect("orders write");
    if let Err(e) = written {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "order_id": order.order_id, "error": e.to_string() })));
    }

    // 2. Tell the rest of the shop.
    let body = serde_json::to_vec(&order).expect("an order serializes");
    let msg = match Message::builder().topic(TOPIC).key(order.order_id.clone()).body_slice(&body).build() {
        Ok(m) => m,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "order_id": order.order_id, "error": e.to_string() }))),
    };
    match app.producer.read().await.send(msg).await {
        Ok(_) => (StatusCode::CREATED, Json(json!({ "order_id": order.order_id, "status": "created" }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "order_id": order.order_id, "error": e.to_string() }))),
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("order-service", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let mut producer = clients.producer(GROUP);
    producer.start().await.expect("producer start");
    let app = Arc::new(App { world: WorldClient::from_env(&env), producer: RwLock::new(producer) });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/orders", post(create_order))
        .with_state(Arc::clone(&app));
    let addr = env.listen_addr.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("order-service {} listening on {addr}", env.instance);
    axum::serve(listener, router).with_graceful_shutdown(sigterm()).await.expect("serve");
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
