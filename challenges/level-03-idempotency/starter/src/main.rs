//! Payment consumer: every message on `order-paid` says an order was paid;
//! debit the customer's account in the ledger for it.

use dojo_kit::client::{ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MQPushConsumer, MessageListenerConcurrently};
use dojo_kit::model::common::consumer::consume_from_where::ConsumeFromWhere;
use dojo_kit::model::common::message::message_ext::MessageExt;
use dojo_kit::{Clients, Env, WorldClient};
use serde::Deserialize;
use serde_json::json;

const TOPIC: &str = "order-paid";
const GROUP: &str = "payment-consumer";

/// The body of an `order-paid` message.
#[derive(Deserialize)]
struct Paid {
    order_id: String,
    account: String,
    amount: i64,
}

struct Payments {
    world: WorldClient,
}

impl Payments {
    fn pay(&self, msg: &MessageExt) -> Result<(), String> {
        let body = msg.body().unwrap_or_default();
        let paid: Paid = serde_json::from_slice(&body).map_err(|e| format!("bad body: {e}"))?;
        self.world
            .post("/ledger/debit", msg.msg_id().as_str(), &json!({ "order_id": paid.order_id, "account": paid.account, "amount": paid.amount }))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl MessageListenerConcurrently for Payments {
    fn consume_message(&self, msgs: &[&MessageExt], _context: &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            if let Err(e) = self.pay(msg) {
                // The broker delivers it again later.
                eprintln!("payment {} failed, retrying later: {e}", msg.msg_id());
                return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() {
    let env = Env::from_env().expect("environment");
    let clients = Clients::new("payment-consumer", env.namesrv_addr.clone()).expect("RocketMQ client runtime");
    let mut consumer = clients.push_consumer(GROUP);
    // A new group starts at the beginning of the topic: no paid order is skipped.
    consumer.set_consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
    consumer.subscribe(TOPIC, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Payments { world: WorldClient::from_env(&env) });
    consumer.start().await.expect("consumer start");
    eprintln!("payment-consumer {} consuming {TOPIC}", env.instance);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    consumer.shutdown().await;
    clients.shutdown().await;
}
