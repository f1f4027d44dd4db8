//! What the verifier reads from the broker through the admin API and plain
//! pulls: it judges the broker's records, never the workload's word.

use std::collections::BTreeMap;

use dojo_kit::Clients;
use dojo_kit::client::{DefaultMQAdminExt, MQAdminReadExt};
use dojo_kit::model::common::message::message_queue::MessageQueue;

/// The producers the broker holds for group `group` on `topic`, as
/// `mqadmin producerConnection` lists them: `client id (ip:port)` each. The
/// client id names a producer instance; several may share one TCP connection.
pub async fn producer_connections(
    clients: &Clients,
    group: &str,
    topic: &str,
) -> Result<Vec<String>, String> {
    let r = with_admin(clients, async |admin| {
        MQAdminReadExt::examine_producer_connection_info(admin, group.into(), topic.into())
            .await
            .map(|c| {
                let mut addrs: Vec<String> = c
                    .connection_set()
                    .iter()
                    .map(|conn| format!("{} ({})", conn.get_client_id(), conn.get_client_addr()))
                    .collect();
                addrs.sort();
                addrs
            })
            .map_err(|e| format!("producer connections of {group}: {e}"))
    })
    .await;
    empty_when_offline(r)
}

/// Runs `read` with a started admin session, shut down afterwards.
async fn with_admin<T>(
    clients: &Clients,
    read: impl AsyncFnOnce(&DefaultMQAdminExt) -> Result<T, String>,
) -> Result<T, String> {
    let session = AdminSession::start(clients).await?;
    let r = read(session.admin()).await;
    session.shutdown().await;
    r
}

/// The broker answers "not online" when a group has no connection at all.
fn empty_when_offline(r: Result<Vec<String>, String>) -> Result<Vec<String>, String> {
    match r {
        Err(e) if e.contains("not online") || e.contains("NOT_ONLINE") || e.contains("206") => {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// Every message on `topic`: how many times each key occurs, read queue by
/// queue from the lowest to the highest offset.
pub async fn keys_on_topic(
    clients: &Clients,
    topic: &str,
) -> Result<BTreeMap<String, usize>, String> {
    let mut keys = BTreeMap::new();
    for m in messages_on_topic(clients, topic).await? {
        for k in m.keys {
            *keys.entry(k).or_insert(0) += 1;
        }
    }
    Ok(keys)
}

/// One message as the broker stored it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub keys: Vec<String>,
    /// Unix ms, by the producer's clock, when it built the send request: a
    /// message born while the broker could not answer was a send in flight.
    pub born_ms: i64,
    /// Unix ms, by the broker's clock, when it stored the message.
    pub store_ms: i64,
}

/// Every message on `topic`, read queue by queue from the lowest to the
/// highest offset.
#[allow(deprecated)] // Classic pull: the one client that reads exact offsets.
pub async fn messages_on_topic(
    clients: &Clients,
    topic: &str,
) -> Result<Vec<StoredMessage>, String> {
    let consumer = clients
        .pull_consumer("DOJO_VERIFIER_READER")
        .map_err(|e| e.to_string())?;
    let r = async {
        consumer
            .start()
            .await
            .map_err(|e| format!("reader start: {e}"))?;
        let queues = consumer
            .fetch_subscribe_message_queues(topic)
            .await
            .map_err(|e| format!("queues of {topic}: {e}"))?;
        let mut messages = Vec::new();
        for mq in queues {
            let mut offset = consumer
                .min_offset(&mq)
                .await
                .map_err(|e| format!("min offset: {e}"))?;
            let max = consumer
                .max_offset(&mq)
                .await
                .map_err(|e| format!("max offset: {e}"))?;
            while offset < max {
                let pulled = consumer
                    .pull(&mq, "*", offset, 32)
                    .await
                    .map_err(|e| format!("pull {topic} at {offset}: {e}"))?;
                let found = pulled.msg_found_list().unwrap_or_default();
                for m in found {
                    messages.push(StoredMessage {
                        keys: m.keys().unwrap_or_default(),
                        born_ms: m.born_timestamp(),
                        store_ms: m.store_timestamp(),
                    });
                }
                let next = pulled.next_begin_offset() as i64;
                if next <= offset {
                    break;
                }
                offset = next;
            }
        }
        Ok(messages)
    }
    .await;
    dojo_kit::shutdown_pull_consumer_in_background(consumer);
    r
}

/// Creates `topic` with `queues` read and write queues on the brokers that
/// serve the default topic, so a consumer finds its route before the first
/// message, and returns its queues as a producer sees them, by queue id.
pub async fn create_topic(
    clients: &Clients,
    topic: &str,
    queues: i32,
) -> Result<Vec<MessageQueue>, String> {
    let mut producer = clients.producer("DOJO_VERIFIER_ADMIN");
    let r = async {
        producer
            .start()
            .await
            .map_err(|e| format!("admin producer start: {e}"))?;
        producer
            .create_topic("TBW102", topic, queues, Default::default())
            .await
            .map_err(|e| format!("creating {topic}: {e}"))?;
        // The broker registers the new topic with the name server at once;
        // the route may still take a moment to be served.
        let start = std::time::Instant::now();
        loop {
            let mut found = producer
                .fetch_publish_message_queues(topic)
                .await
                .unwrap_or_default();
            if found.len() == queues as usize {
                found.sort_by_key(|q| q.queue_id());
                return Ok(found);
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                return Err(format!(
                    "{topic} shows {} of {queues} queues after 20s",
                    found.len()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    .await;
    producer.shutdown().await;
    r
}

/// The consumer clients the broker holds for `group`, by client id
/// (`mqadmin consumerConnection`); empty when none is online.
pub async fn consumer_clients(clients: &Clients, group: &str) -> Result<Vec<String>, String> {
    let r = with_admin(clients, async |admin| {
        MQAdminReadExt::examine_consumer_connection_info(admin, group.into(), None)
            .await
            .map(|c| {
                let mut ids: Vec<String> = c
                    .get_connection_set()
                    .iter()
                    .map(|conn| conn.get_client_id().to_string())
                    .collect();
                ids.sort();
                ids
            })
            .map_err(|e| format!("consumer connections of {group}: {e}"))
    })
    .await;
    empty_when_offline(r)
}

/// The offsets the broker has committed for `group` on `topic`, by queue id:
/// a message at or above its queue's committed offset is delivered again to
/// whoever consumes that queue next.
pub async fn committed_offsets(
    clients: &Clients,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, String> {
    let progress = with_admin(clients, async |admin| {
        consume_progress(admin, group, topic).await
    })
    .await?;
    Ok(progress
        .into_iter()
        .map(|(q, p)| (q, p.committed))
        .collect())
}

/// Where one queue stands for a consumer group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueProgress {
    /// The queue's next offset on the broker.
    pub max: i64,
    /// The group's committed offset (the next message it has not confirmed).
    pub committed: i64,
}

impl QueueProgress {
    /// Messages on the queue the group has not confirmed.
    pub fn lag(&self) -> i64 {
        (self.max - self.committed.max(0)).max(0)
    }
}

/// The group's progress on `topic`, by queue id, as `mqadmin consumerProgress` shows it.
pub async fn consume_progress(
    admin: &DefaultMQAdminExt,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, QueueProgress>, String> {
    MQAdminReadExt::examine_consume_stats(admin, group.into(), Some(topic.into()), None, None, None)
        .await
        .map(|stats| {
            stats
                .get_offset_table()
                .iter()
                .filter(|(mq, _)| mq.topic() == topic)
                .map(|(mq, w)| {
                    (
                        mq.queue_id(),
                        QueueProgress {
                            max: w.get_broker_offset(),
                            committed: w.get_consumer_offset(),
                        },
                    )
                })
                .collect()
        })
        .map_err(|e| format!("consume stats of {group}: {e}"))
}

/// An admin session kept open across many reads (a scenario sampling lag
/// every second would otherwise start a client per sample).
pub struct AdminSession(DefaultMQAdminExt);

impl AdminSession {
    pub async fn start(clients: &Clients) -> Result<AdminSession, String> {
        let mut admin = clients.admin();
        match admin.start().await {
            Ok(()) => Ok(AdminSession(admin)),
            Err(e) => {
                admin.shutdown().await;
                Err(format!("admin start: {e}"))
            }
        }
    }

    pub fn admin(&self) -> &DefaultMQAdminExt {
        &self.0
    }

    pub async fn shutdown(mut self) {
        self.0.shutdown().await;
    }
}

/// Work the broker still holds for a consumer group: what a level waits on
/// instead of a quiet period. Redeliveries wait first in the broker's delay
/// queues (`SCHEDULE_TOPIC_XXXX`, one per delay level, for every group at
/// once), then in the group's retry topic `%RETRY%<group>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Messages on the topic the group has not confirmed.
    pub lag: i64,
    /// Messages in `%RETRY%<group>` the group has not confirmed.
    pub retry_lag: i64,
    /// Messages waiting out a delay level on any broker (retries of every
    /// group, and delayed messages): an upper bound for this group's.
    pub scheduled: i64,
}

impl Pending {
    /// Nothing left to deliver: every message confirmed, no retry waiting.
    pub fn is_empty(&self) -> bool {
        self.lag == 0 && self.retry_lag == 0 && self.scheduled == 0
    }
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lag {}, retry topic {}, waiting out a delay {}",
            self.lag, self.retry_lag, self.scheduled
        )
    }
}

/// What the broker still holds for `group` on `topic` (see [`Pending`]).
pub async fn pending(
    admin: &DefaultMQAdminExt,
    group: &str,
    topic: &str,
) -> Result<Pending, String> {
    let lag = consume_progress(admin, group, topic)
        .await?
        .values()
        .map(QueueProgress::lag)
        .sum();
    // The retry topic exists once the first message came back; before, the broker says so.
    let retry_topic = format!("%RETRY%{group}");
    let retry_lag = match consume_progress(admin, group, &retry_topic).await {
        Ok(p) => p.values().map(QueueProgress::lag).sum(),
        Err(_) => 0,
    };
    Ok(Pending {
        lag,
        retry_lag,
        scheduled: scheduled(admin).await?,
    })
}

/// Every broker's address (leaders and followers), from the cluster's record
/// on the name server: runtime stats and internal groups are asked per broker.
pub async fn broker_addrs(admin: &DefaultMQAdminExt) -> Result<Vec<String>, String> {
    let cluster = MQAdminReadExt::examine_broker_cluster_info(admin)
        .await
        .map_err(|e| format!("cluster info: {e}"))?;
    Ok(cluster
        .broker_addr_table
        .iter()
        .flat_map(|t| t.values())
        .flat_map(|b| {
            b.broker_addrs()
                .values()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Messages waiting out a delay level on every broker: the broker's runtime
/// stats hold `scheduleMessageOffset_<level>` = `delivered,stored` per level.
pub async fn scheduled(admin: &DefaultMQAdminExt) -> Result<i64, String> {
    let addrs = broker_addrs(admin).await?;
    let mut waiting = 0;
    for addr in addrs {
        let stats = MQAdminReadExt::fetch_broker_runtime_stats(admin, addr.clone().into())
            .await
            .map_err(|e| format!("runtime stats of {addr}: {e}"))?;
        for (k, v) in &stats.table {
            if k.starts_with("scheduleMessageOffset_")
                && let Some((delivered, stored)) = v.split_once(',')
            {
                waiting += (stored.trim().parse::<i64>().unwrap_or(0)
                    - delivered.trim().parse::<i64>().unwrap_or(0))
                .max(0);
            }
        }
    }
    Ok(waiting)
}
