//! Inventory consumer: every message on `order-created` is a new order line;
//! reserve its items in the inventory so the warehouse can pick them.

use dojo_kit::client::{ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MQPushConsumer, MessageListenerConcurrently};
use dojo_kit::model::common::consumer::consume_from_where::ConsumeFromWhere;
use dojo_kit::model::common::message::message_ext::MessageExt;
use dojo_kit::{Clients, Env, WorldClient};
use serde::{Deserialize, Serialize};
use serde_json::json;

const TOPIC: &str = "order-created";
const GROUP: &str = "inventory-consumer";

/// The body of an `order-created` message, as the inventory wants it.
#[derive(Deserialize, Serialize)]
struct Line {
    order_id: String,
    sku: String,
    qty: i64,
}

struct Inventory {
    world: WorldClient,
}

impl Inventory {
    fn reserve(&self, msg: &MessageExt) -> Result<(), String> {
        let body = msg.body().unwrap_or_default();
        let line: Line = serde_json::from_slice(&body).map_err(|e| format!("bad body: {e}"))?;
        self.world.post("/inventory/reserve", msg.msg_id().as_str(), &json!({ "items": [line] })).map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl MessageListenerConcurrently for Inventory {
    fn consume_message(&self, msgs: &[&MessageExt], _context: &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            if let Err(e) = self.reserve(msg) {
                // The broker delivers it again later.
                eprintln!("reserving {} failed, retrying later: {e}", msg.msg_id());
                return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("inventory-consumer", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let mut consumer = clients.push_consumer(GROUP);
    // A new group starts at the beginning of the topic: no order is skipped.
    consumer.set_consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
    // The inventory service is slow: one order at a time keeps it safe.
    consumer.set_consume_thread_min(1);
    consumer.set_consume_thread_max(1);
    consumer.subscribe(TOPIC, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Inventory { world: WorldClient::from_env(&env) });
    consumer.start().await.expect("consumer start");
    eprintln!("inventory-consumer {} consuming {TOPIC}", env.instance);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    consumer.shutdown().await;
    clients.shutdown().await;
}
