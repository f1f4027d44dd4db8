//! What the verifier reads from the broker through the admin API and plain
//! pulls: it judges the broker's records, never the workload's word.

use std::collections::BTreeMap;

use dojo_kit::Clients;
use dojo_kit::client::MQAdminReadExt;

/// The producers the broker holds for group `group` on `topic`, as
/// `mqadmin producerConnection` lists them: `client id (ip:port)` each. The
/// client id names a producer instance; several may share one TCP connection.
pub async fn producer_connections(clients: &Clients, group: &str, topic: &str) -> Result<Vec<String>, String> {
    let mut admin = clients.admin();
    let r = async {
        admin.start().await.map_err(|e| format!("admin start: {e}"))?;
        MQAdminReadExt::examine_producer_connection_info(&admin, group.into(), topic.into())
            .await
            .map(|c| {
                let mut addrs: Vec<String> = c.connection_set().iter().map(|conn| format!("{} ({})", conn.get_client_id(), conn.get_client_addr())).collect();
                addrs.sort();
                addrs
            })
            .map_err(|e| format!("producer connections of {group}: {e}"))
    }
    .await;
    admin.shutdown().await;
    // The broker answers "not online" when the group has no connection at all.
    match r {
        Err(e) if e.contains("not online") || e.contains("NOT_ONLINE") || e.contains("206") => Ok(Vec::new()),
        other => other,
    }
}

/// Every message on `topic`: how many times each key occurs, read queue by
/// queue from the lowest to the highest offset.
#[allow(deprecated)] // Classic pull: the one client that reads exact offsets.
pub async fn keys_on_topic(clients: &Clients, topic: &str) -> Result<BTreeMap<String, usize>, String> {
    let consumer = clients.pull_consumer("DOJO_VERIFIER_READER").map_err(|e| e.to_string())?;
    let r = async {
        consumer.start().await.map_err(|e| format!("reader start: {e}"))?;
        let queues = consumer.fetch_subscribe_message_queues(topic).await.map_err(|e| format!("queues of {topic}: {e}"))?;
        let mut keys = BTreeMap::new();
        for mq in queues {
            let mut offset = consumer.min_offset(&mq).await.map_err(|e| format!("min offset: {e}"))?;
            let max = consumer.max_offset(&mq).await.map_err(|e| format!("max offset: {e}"))?;
            while offset < max {
                let pulled = consumer.pull(&mq, "*", offset, 32).await.map_err(|e| format!("pull {topic} at {offset}: {e}"))?;
                let found = pulled.msg_found_list().unwrap_or_default();
                for m in found {
                    for k in m.keys().unwrap_or_default() {
                        *keys.entry(k).or_insert(0) += 1;
                    }
                }
                let next = pulled.next_begin_offset() as i64;
                if next <= offset {
                    break;
                }
                offset = next;
            }
        }
        Ok(keys)
    }
    .await;
    dojo_kit::shutdown_pull_consumer_in_background(consumer);
    r
}
