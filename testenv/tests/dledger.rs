// ONE_GROUP_AT_A_TIME is held across awaits on purpose: each test has its own
// runtime, and the lock only keeps two DLedger groups from running at once.
#![allow(clippy::await_holding_lock)]
#![recursion_limit = "512"]
//! The level-12 cluster: a DLedger group of three brokers, one per zone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dojo_testenv::DLedgerGroup;
use dojo_testenv::dledger::ZONES;
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MQPushConsumer,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;

struct Collect(Arc<Mutex<HashSet<String>>>);

impl MessageListenerConcurrently for Collect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _ctx: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut seen = self.0.lock().unwrap();
        seen.extend(msgs.iter().flat_map(|m| m.keys().unwrap_or_default()));
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

/// Two groups at once are eight JVMs on two cores: elections would time out.
static ONE_GROUP_AT_A_TIME: Mutex<()> = Mutex::new(());

fn msg(topic: &str, key: &str) -> Message {
    Message::builder()
        .topic(topic)
        .key(key.to_string())
        .body_slice(key.as_bytes())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_new_leader_elected_and_nothing_acknowledged_is_lost() {
    let _one = ONE_GROUP_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut group = DLedgerGroup::start().await.expect("DLedger group starts");
    eprintln!("DLedger group ready in {:.1}s", t0.elapsed().as_secs_f64());
    let (leader, _) = group.wait_leader(Duration::from_secs(30)).await.unwrap();
    assert!(ZONES.contains(&leader));

    let clients = group.clients("test").unwrap();
    let topic = "DOJO_DLEDGER";
    let mut producer = clients.producer("dojo_dledger_producer");
    producer.start().await.unwrap();
    let mut acked = HashSet::new();
    for i in 0..50 {
        let key = format!("before-{i}");
        producer
            .send_with_timeout(msg(topic, &key), 5000)
            .await
            .expect("send before failover")
            .expect("result");
        acked.insert(key);
    }

    let killed_at = Instant::now();
    group.kill(leader).unwrap();
    let (new_leader, _) = group
        .wait_new_leader(Some(leader), Duration::from_secs(60))
        .await
        .expect("a new leader is elected");
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, leader);

    // Keep sending until the new leader acknowledges writes: that is the
    // failover time a client sees.
    let mut i = 0;
    let writable = loop {
        let key = format!("after-{i}");
        if producer
            .send_with_timeout(msg(topic, &key), 3000)
            .await
            .is_ok_and(|r| r.is_some())
        {
            acked.insert(key);
            break killed_at.elapsed();
        }
        i += 1;
        assert!(
            killed_at.elapsed() < Duration::from_secs(90),
            "no write accepted 90s after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for j in 0..50 {
        let key = format!("after-ok-{j}");
        producer
            .send_with_timeout(msg(topic, &key), 5000)
            .await
            .expect("send after failover")
            .expect("result");
        acked.insert(key);
    }
    eprintln!(
        "FIGURE failover: leader {leader} killed, {new_leader} listed as leader after {:.1}s, writes accepted after {:.1}s",
        elected.as_secs_f64(),
        writable.as_secs_f64()
    );

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut consumer = clients.push_consumer("dojo_dledger_consumer");
    consumer.subscribe(topic, "*").await.unwrap();
    consumer.register_message_listener_concurrently(Collect(Arc::clone(&seen)));
    consumer.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !acked.is_subset(&seen.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&seen).take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never consumed: {lost:?} ({} acked, {} seen)",
        acked.len(),
        seen.len()
    );

    consumer.shutdown().await;
    producer.shutdown().await;
    clients.shutdown().await;

    // The killed zone rejoins as a follower.
    group.restart(leader).await.expect("old leader restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_the_leader_zone_moves_leadership_and_heal_brings_it_back() {
    let _one = ONE_GROUP_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut group = DLedgerGroup::start().await.expect("DLedger group starts");
    let (leader, _) = group.wait_leader(Duration::from_secs(30)).await.unwrap();
    group.isolate(leader).unwrap();
    let (new_leader, took) = group
        .wait_new_leader(Some(leader), Duration::from_secs(60))
        .await
        .expect("a leader outside the isolated zone");
    assert_ne!(new_leader, leader);
    eprintln!(
        "FIGURE isolation: {leader} cut off, {new_leader} leads after {:.1}s",
        took.as_secs_f64()
    );
    group.heal().unwrap();
    assert!(group.broker(leader).unwrap().is_running());
    assert!(
        group.isolate("zone-z").is_err(),
        "unknown zones are refused"
    );
}
