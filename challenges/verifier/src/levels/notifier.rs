//! The order-notifier HTTP service that levels 1 and 2 load: starting it,
//! waiting until it answers, one `POST /notify`, stopping it, and what both
//! levels observe and judge the same way.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::platform::Platform;
use crate::report::Check;

/// Starts `instance`, waits for `/healthz`, sends 20 warm-up requests.
/// Returns the HTTP client and the address, or the `workload-started` check
/// that stops the run.
pub async fn start<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    instance: &str,
    timeout: Duration,
) -> Result<(reqwest::Client, String), Check> {
    ctx.phase(&format!("starting workload instance {instance}"));
    if let Err(e) = ctx.platform.start_workload(instance).await {
        return Err(Check::error(
            "workload-started",
            "the workload starts",
            e.to_string(),
        ));
    }
    let addr = ctx
        .platform
        .workload_addr(instance)
        .expect("notifier workloads serve HTTP");
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("HTTP client");
    if let Err(why) = wait_healthy(ctx, instance, &http, &addr).await {
        let tail = ctx.platform.workload_log_tail(instance, 15).await;
        return Err(Check::fail(
            "workload-started",
            "the workload starts and answers /healthz",
            why,
        )
        .with_evidence(tail.lines().map(String::from)));
    }
    ctx.phase("warm-up: 20 requests");
    for i in 0..20 {
        let _ = notify(&http, &addr, &format!("warmup-{i}")).await;
    }
    Ok((http, addr))
}

/// Waits until workload `instance` answers `GET /healthz` (level 5 serves the same way).
pub(super) async fn wait_healthy<P: Platform>(
    ctx: &mut Ctx<'_, P>,
    instance: &str,
    http: &reqwest::Client,
    addr: &str,
) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(status) = ctx.platform.workload_exit(instance).await {
            return Err(format!("the workload exited at start ({status})"));
        }
        if http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("no answer on http://{addr}/healthz within 30s"))
}

/// Requests per second `concurrency` callers get from `GET /healthz` in
/// `for_`: what this machine, network and verifier can carry at the moment
/// with no RocketMQ in the path, the yardstick for a throughput floor.
pub async fn healthz_rate(
    http: &reqwest::Client,
    addr: &str,
    concurrency: usize,
    for_: Duration,
) -> f64 {
    let start = Instant::now();
    let answered: usize = futures::future::join_all((0..concurrency).map(|_| async move {
        let mut n = 0;
        while start.elapsed() < for_ {
            if http
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
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
    http.post(format!("http://{addr}/notify"))
        .json(&serde_json::json!({ "order_id": order_id }))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// How the service ended on SIGTERM.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    /// The platform could not stop it.
    Error(String),
    /// `status` as the platform tells it (`exit status: 0`, `signal: 15 (SIGTERM)`).
    Stopped {
        status: String,
        success: bool,
        exited_in_time: bool,
        took_ms: u64,
    },
}

/// SIGTERM to `instance`, `grace` to exit.
pub async fn stop<P: Platform>(ctx: &mut Ctx<'_, P>, instance: &str, grace: Duration) -> Shutdown {
    ctx.phase(&format!(
        "SIGTERM to {instance}, {}s to exit",
        grace.as_secs()
    ));
    match ctx.platform.stop_workload(instance, grace).await {
        Err(e) => Shutdown::Error(e.to_string()),
        Ok(s) => Shutdown::Stopped {
            status: s.status,
            success: s.success,
            exited_in_time: s.exited_in_time,
            took_ms: s.took.as_millis() as u64,
        },
    }
}

/// `clean-shutdown`: exit 0 within `grace` of SIGTERM.
pub fn shutdown_check(stop: &Shutdown, grace: Duration) -> Check {
    const TITLE: &str = "on SIGTERM it shuts down cleanly";
    match stop {
        Shutdown::Error(e) => Check::error("clean-shutdown", TITLE, e.clone()),
        Shutdown::Stopped {
            status,
            success: true,
            took_ms,
            ..
        } => Check::pass(
            "clean-shutdown",
            TITLE,
            format!(
                "exited with {status} after {:.1}s",
                *took_ms as f64 / 1000.0
            ),
        ),
        Shutdown::Stopped {
            status,
            exited_in_time: true,
            ..
        } => Check::fail(
            "clean-shutdown",
            TITLE,
            format!("it died with {status} instead of shutting its producer down and exiting 0"),
        ),
        Shutdown::Stopped { status, .. } => Check::fail(
            "clean-shutdown",
            TITLE,
            format!(
                "still running {}s after SIGTERM; killed ({status})",
                grace.as_secs()
            ),
        ),
    }
}

/// A set of numbers (order numbers found on a topic) as sorted, inclusive
/// `[first, last]` runs: a few pairs where the numbers are nearly all there.
pub fn runs(numbers: impl IntoIterator<Item = u32>) -> Vec<[u32; 2]> {
    let mut sorted: Vec<u32> = numbers.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<[u32; 2]> = Vec::new();
    for n in sorted {
        match out.last_mut() {
            Some(r) if r[1] + 1 == n => r[1] = n,
            _ => out.push([n, n]),
        }
    }
    out
}

/// Whether `n` is in `runs` (as [`runs`] makes them).
pub fn in_runs(runs: &[[u32; 2]], n: u32) -> bool {
    let i = runs.partition_point(|r| r[1] < n);
    runs.get(i).is_some_and(|r| r[0] <= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip() {
        let r = runs([5, 1, 2, 3, 9, 3, 10]);
        assert_eq!(r, vec![[1, 3], [5, 5], [9, 10]]);
        for n in 0..12 {
            assert_eq!(in_runs(&r, n), [1, 2, 3, 5, 9, 10].contains(&n), "{n}");
        }
    }
}
