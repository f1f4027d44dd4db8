//! The order-notifier HTTP service that levels 1 and 2 load: starting it,
//! waiting until it answers, and one `POST /notify`.

use std::time::{Duration, Instant};

use super::Ctx;
use crate::platform::Platform;
use crate::report::Check;

/// Starts `instance`, waits for `/healthz`, sends 20 warm-up requests.
/// Returns the HTTP client and the address, or `None` once it has judged
/// `workload-started` (the run stops there).
pub async fn start<P: Platform>(ctx: &mut Ctx<'_, P>, instance: &str, timeout: Duration) -> Option<(reqwest::Client, String)> {
    ctx.phase(&format!("starting workload instance {instance}"));
    if let Err(e) = ctx.platform.start_workload(instance).await {
        ctx.judge(Check::error("workload-started", "the workload starts", e.to_string()));
        return None;
    }
    let addr = ctx.platform.workload_addr(instance).expect("notifier workloads serve HTTP");
    let http = reqwest::Client::builder().timeout(timeout).build().expect("HTTP client");
    if let Err(why) = wait_healthy(ctx, instance, &http, &addr).await {
        let tail = ctx.platform.workload_log_tail(instance, 15).await;
        ctx.judge(Check::fail("workload-started", "the workload starts and answers /healthz", why).with_evidence(tail.lines().map(String::from)));
        return None;
    }
    ctx.phase("warm-up: 20 requests");
    for i in 0..20 {
        let _ = notify(&http, &addr, &format!("warmup-{i}")).await;
    }
    Some((http, addr))
}

/// Waits until workload `instance` answers `GET /healthz` (level 2 serves the same way).
pub(super) async fn wait_healthy<P: Platform>(ctx: &mut Ctx<'_, P>, instance: &str, http: &reqwest::Client, addr: &str) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = ctx.platform.workload_exit(instance).await {
            return Err(format!("the workload exited at start ({status})"));
        }
        if http.get(format!("http://{addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("no answer on http://{addr}/healthz within 30s"))
}

/// Requests per second `concurrency` callers get from `GET /healthz` in
/// `for_`: what this machine, network and verifier can carry at the moment
/// with no RocketMQ in the path, the yardstick for a throughput floor.
pub async fn healthz_rate(http: &reqwest::Client, addr: &str, concurrency: usize, for_: Duration) -> f64 {
    let start = Instant::now();
    let answered: usize = futures::future::join_all((0..concurrency).map(|_| async move {
        let mut n = 0;
        while start.elapsed() < for_ {
            if http.get(format!("http://{addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                n += 1;
            }
        }
        n
    }))
    .await
    .into_iter()
    .sum();
    answered as f64 / start.elapsed().as_secs_f64()
}

/// `POST /notify` for `order_id`: the HTTP status, or `None` without an answer.
pub async fn notify(http: &reqwest::Client, addr: &str, order_id: &str) -> Option<u16> {
    http.post(format!("http://{addr}/notify")).json(&serde_json::json!({ "order_id": order_id })).send().await.ok().map(|r| r.status().as_u16())
}
