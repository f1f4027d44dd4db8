//! Consumer instances of a level's workload: joining their group, and the
//! moment to crash one mid-batch.

use std::pin::Pin;
use std::time::{Duration, Instant};

use dojo_world::{History, WorldHandle};

use super::Ctx;
use crate::broker;
use crate::platform::Platform;
use crate::report::Check;

/// Starts consumer `instance` and waits until the broker lists `expect`
/// consumers of `group`: only then is a wave sent to it meaningful.
pub async fn start_and_join<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    instance: &str,
    group: &str,
    expect: usize,
) -> Result<(), Check> {
    if let Err(e) = ctx.platform.start_workload(instance).await {
        return Err(Check::error(
            "workload-started",
            "the consumer starts and joins its group",
            e.to_string(),
        ));
    }
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = ctx.platform.workload_exit(instance).await {
            let tail = ctx.platform.workload_log_tail(instance, 15).await;
            return Err(Check::fail(
                "workload-started",
                "the consumer starts and joins its group",
                format!("{instance} exited at start ({status})"),
            )
            .with_evidence(tail.lines().map(String::from)));
        }
        match broker::consumer_clients(ctx.clients, group).await {
            Ok(ids) if ids.len() >= expect => return Ok(()),
            Ok(ids) => last = format!("the broker lists {} consumer(s) of {group}", ids.len()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tail = ctx.platform.workload_log_tail(instance, 15).await;
    Err(Check::fail(
        "workload-started",
        "the consumer starts and joins its group",
        format!("{instance} did not join group {group} within 30s: {last}"),
    )
    .with_evidence(tail.lines().map(String::from)))
}

/// Stops `instances` (5 s each to exit) after noting which of them had
/// already exited, with the last lines of those: `(instance, status)` and
/// `instance: line`, the evidence of a crash the scenario did not cause.
pub async fn stop_noting_exits<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    instances: &[&str],
) -> (Vec<(String, String)>, Vec<String>) {
    let (mut exits, mut tails) = (Vec::new(), Vec::new());
    for i in instances {
        if let Some(status) = ctx.platform.workload_exit(i).await {
            tails.extend(
                ctx.platform
                    .workload_log_tail(i, 8)
                    .await
                    .lines()
                    .map(|l| format!("{i}: {l}")),
            );
            exits.push((i.to_string(), status));
        }
    }
    for i in instances {
        let _ = ctx.platform.stop_workload(i, Duration::from_secs(5)).await;
    }
    (exits, tails)
}

/// Lets `work` (a wave being sent) run while watching the world's record
/// until `busy` holds or `limit` passes: the moment to crash a consumer
/// mid-batch. Returns `work`'s output if it finished meanwhile.
pub async fn until_busy<T>(
    world: &WorldHandle,
    mut work: Pin<&mut impl Future<Output = T>>,
    busy: impl Fn(&History) -> bool,
    limit: Duration,
) -> Option<T> {
    let start = Instant::now();
    let mut done = None;
    loop {
        tokio::select! {
            r = &mut work, if done.is_none() => done = Some(r),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if busy(&world.history()) || start.elapsed() > limit {
                    return done;
                }
            }
        }
    }
}
