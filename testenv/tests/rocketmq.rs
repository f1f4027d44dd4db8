#![recursion_limit = "512"]
//! `rocketmq-client-rust` against the real Java broker: the riskiest joint of
//! the project, proven first. Every test starts its own RocketMQ on free ports.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dojo_testenv::{Error, RocketMq};
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MQAdminReadExt,
    MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;

/// Collects the keys of every message it is handed.
struct Collect(Arc<Mutex<HashSet<String>>>);

impl MessageListenerConcurrently for Collect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut seen = self.0.lock().unwrap();
        for m in msgs {
            for k in m.keys().unwrap_or_default() {
                seen.insert(k);
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_keyed_messages_reach_a_push_consumer_and_admin_sees_the_producer() {
    let mq = RocketMq::start().await.expect("RocketMQ starts");
    let clients = mq.clients("test").unwrap();
    const N: usize = 1000;
    let topic = "DOJO_TEST_1000";

    let mut producer = clients.producer("dojo_test_producer");
    producer.start().await.expect("producer starts");
    let mut sent = HashSet::new();
    for i in 0..N {
        let key = format!("order-{i:04}");
        let msg = Message::builder()
            .topic(topic)
            .tags("TagA")
            .key(key.clone())
            .body_slice(key.as_bytes())
            .build()
            .unwrap();
        let r = producer
            .send_with_timeout(msg, 5000)
            .await
            .expect("send")
            .expect("send result");
        assert!(r.msg_id.is_some(), "send result without msg id: {r:?}");
        sent.insert(key);
    }

    // The broker reports the producer group's connection (admin API).
    let mut admin = clients.admin();
    admin.start().await.expect("admin starts");
    let conns = MQAdminReadExt::examine_producer_connection_info(
        &admin,
        "dojo_test_producer".into(),
        topic.into(),
    )
    .await
    .expect("producer connection info");
    assert_eq!(
        conns.connection_set().len(),
        1,
        "exactly our one producer connection: {:?}",
        conns.connection_set()
    );
    let cluster = MQAdminReadExt::examine_broker_cluster_info(&admin)
        .await
        .expect("cluster info");
    let brokers = cluster.broker_addr_table.unwrap_or_default();
    assert!(
        brokers.contains_key("broker-a"),
        "cluster info lists broker-a: {brokers:?}"
    );
    admin.shutdown().await;

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut consumer = clients.push_consumer("dojo_test_consumer");
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Collect(Arc::clone(&seen)));
    consumer.start().await.expect("consumer starts");
    wait_for("all 1000 messages", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= N
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let missing: Vec<_> = sent.difference(&seen).take(10).collect();
    assert!(missing.is_empty(), "not consumed: {missing:?}");

    consumer.shutdown().await;
    producer.shutdown().await;
    clients.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_data_and_pause_stalls_it() {
    let mut mq = RocketMq::start().await.expect("RocketMQ starts");
    let clients = mq.clients("test").unwrap();
    let mut producer = clients.producer("dojo_restart_producer");
    producer.start().await.unwrap();
    let topic = "DOJO_TEST_RESTART";
    let first = producer
        .send_with_timeout(
            Message::builder()
                .topic(topic)
                .key("before")
                .body_slice(b"before")
                .build()
                .unwrap(),
            5000,
        )
        .await
        .unwrap()
        .unwrap();

    // SIGSTOP: the broker holds its sockets but answers nothing.
    mq.broker().pause().unwrap();
    let stalled = producer
        .send_with_timeout(
            Message::builder()
                .topic(topic)
                .key("stalled")
                .body_slice(b"x")
                .build()
                .unwrap(),
            1500,
        )
        .await;
    assert!(
        stalled.is_err(),
        "a paused broker must not acknowledge a send: {stalled:?}"
    );
    mq.broker().resume().unwrap();

    // Kill -9 and restart on the same store: the message sent before is still there.
    mq.broker().kill().unwrap();
    assert!(!mq.broker().is_running());
    mq.broker().restart().await.expect("broker restarts");
    mq.wait_serving(Duration::from_secs(60))
        .await
        .expect("serving after restart");
    let consumer = clients.pull_consumer("dojo_restart_reader").unwrap();
    consumer.start().await.unwrap();
    let mq_queue = first.message_queue.clone().unwrap();
    let pulled = consumer
        .pull(&mq_queue, "*", first.queue_offset as i64, 1)
        .await
        .expect("pull after restart");
    let found = pulled.msg_found_list().unwrap_or_default();
    let keys = found.first().and_then(|m| m.keys()).unwrap_or_default();
    assert_eq!(
        keys,
        vec!["before".to_string()],
        "the message sent before the crash survives it"
    );

    let _ = consumer.shutdown().await;
    producer.shutdown().await;
    clients.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_environment_on_a_taken_port_says_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = RocketMq::builder()
        .namesrv_port(port)
        .start()
        .await
        .err()
        .expect("must refuse a port in use");
    assert!(
        matches!(err, Error::PortInUse { port: p, .. } if p == port),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&port.to_string()) && text.contains("already in use"),
        "message names the port and the cause: {text}"
    );
}
