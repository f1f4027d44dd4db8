//! Level 1 — producer lifecycle. An HTTP notification service sends one
//! message per `POST /notify`. The verifier loads it, watches the broker's
//! producer connections and the process's threads and memory, stops it with
//! SIGTERM, and reads the topic.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::Ctx;
use super::notifier::{self, notify};
use crate::broker;
use crate::platform::{Platform, WorkloadStats};
use crate::report::Check;

pub const TOPIC: &str = "order-notify";
pub const GROUP: &str = "order-notifier";
const INSTANCE: &str = "notifier-0";
/// The load runs for a fixed time, so a slow service simply serves fewer.
const LOAD: Duration = Duration::from_secs(8);
const CONCURRENCY: usize = 8;
/// A producer per instance, plus one the client may open while reconnecting.
const MAX_PRODUCERS: usize = 2;
const MAX_THREAD_GROWTH: u64 = 16;
const MAX_RSS_GROWTH_MIB: f64 = 64.0;
/// The throughput floor, as a share of what the same callers get from
/// `GET /healthz` just before (measured in the same run, so it scales with
/// the machine, the network and how busy both are). Measured on 2 cores: a
/// reused producer gets 24 % of it, a producer per request 3 %; 8 % is a
/// factor of 3 from each.
const MIN_THROUGHPUT_SHARE: f64 = 0.08;
const CAPACITY_PROBE: Duration = Duration::from_secs(2);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Outcome {
    order_id: String,
    status: Option<u16>,
    latency: Duration,
}

/// The higher threads and memory of the two.
fn higher(peak: Option<WorkloadStats>, now: Option<WorkloadStats>) -> Option<WorkloadStats> {
    match (peak, now) {
        (Some(p), Some(s)) => Some(WorkloadStats { threads: p.threads.max(s.threads), rss_kib: p.rss_kib.max(s.rss_kib) }),
        (p, s) => p.or(s),
    }
}

pub async fn run<P: Platform>(ctx: &mut Ctx<'_, P>) {
    let Some((http, addr)) = notifier::start(ctx, INSTANCE, Duration::from_secs(10)).await else { return };
    let baseline = ctx.platform.workload_stats(INSTANCE).await;
    ctx.phase(&format!("yardstick: {}s of GET /healthz, {CONCURRENCY} at a time", CAPACITY_PROBE.as_secs()));
    let capacity = notifier::healthz_rate(&http, &addr, CONCURRENCY, CAPACITY_PROBE).await;
    let min_throughput = capacity * MIN_THROUGHPUT_SHARE;
    ctx.figure("GET /healthz rate (yardstick)", capacity, "requests/s");

    ctx.phase(&format!("load: {}s of requests, {CONCURRENCY} at a time, sampling the broker's producers", LOAD.as_secs()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    // A task of its own: the samples below may take a while (in a cluster
    // each one is an exec), and the load must not wait for them.
    let load = tokio::spawn(futures::future::join_all((0..CONCURRENCY).map(|_| {
        let (http, addr, outcomes, next) = (http.clone(), addr.clone(), Arc::clone(&outcomes), Arc::clone(&next));
        async move {
            while started.elapsed() < LOAD {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let order_id = format!("order-{i:05}");
                let t = Instant::now();
                let status = notify(&http, &addr, &order_id).await;
                outcomes.lock().await.push(Outcome { order_id, status, latency: t.elapsed() });
            }
        }
    })));
    let mut load = std::pin::pin!(load);
    let mut samples: Vec<(f64, Result<Vec<String>, String>)> = Vec::new();
    let mut peak_stats = baseline;
    let mut stats_at = Instant::now();
    loop {
        tokio::select! {
            _ = &mut load => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let conns = broker::producer_connections(ctx.clients, GROUP, TOPIC).await;
                samples.push((started.elapsed().as_secs_f64(), conns));
                // Threads and memory once a second: in a cluster each look
                // is an exec, whose CPU the load would miss.
                if stats_at.elapsed() >= Duration::from_secs(1) {
                    stats_at = Instant::now();
                    peak_stats = higher(peak_stats, ctx.platform.workload_stats(INSTANCE).await);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    // One more look once the load is over: connections that were never closed are still there.
    samples.push((elapsed.as_secs_f64(), broker::producer_connections(ctx.clients, GROUP, TOPIC).await));
    peak_stats = higher(peak_stats, ctx.platform.workload_stats(INSTANCE).await);
    let outcomes = std::mem::take(&mut *outcomes.lock().await);

    let accepted: BTreeSet<String> = outcomes.iter().filter(|o| o.status == Some(200)).map(|o| o.order_id.clone()).collect();
    let requests = outcomes.len();
    let throughput = requests as f64 / elapsed.as_secs_f64();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
    ctx.figure("requests", requests as f64, "");
    ctx.figure("accepted (200)", accepted.len() as f64, "");
    ctx.figure("throughput", throughput, "requests/s");
    ctx.figure("p99 latency", p99.as_secs_f64() * 1000.0, "ms");

    ctx.phase(&format!("SIGTERM to {INSTANCE}, {}s to exit", SHUTDOWN_GRACE.as_secs()));
    let stop = ctx.platform.stop_workload(INSTANCE, SHUTDOWN_GRACE).await;

    ctx.phase(&format!("reading topic {TOPIC} from the broker"));
    let on_topic = broker::keys_on_topic(ctx.clients, TOPIC).await;

    // Checks, judged in order of what a learner should look at first.
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != Some(200)).collect();
    let min_accepted = requests * 99 / 100;
    ctx.judge(if accepted.len() >= min_accepted {
        Check::pass("requests-accepted", "the service accepts the requests it is sent", format!("{}/{requests} answered 200", accepted.len()))
    } else {
        Check::fail("requests-accepted", "the service accepts the requests it is sent", format!("only {}/{requests} answered 200 (need {min_accepted})", accepted.len()))
            .with_evidence(refused.iter().map(|o| format!("{}: {}", o.order_id, o.status.map_or("no answer".to_string(), |s| format!("HTTP {s}")))))
    });

    ctx.judge(match &on_topic {
        Err(e) => Check::error("accepted-on-topic", "every accepted request's message is on the topic", format!("could not read {TOPIC}: {e}")),
        Ok(keys) => {
            let missing: Vec<&String> = accepted.iter().filter(|k| !keys.contains_key(*k)).collect();
            if missing.is_empty() {
                Check::pass("accepted-on-topic", "every accepted request's message is on the topic", format!("all {} accepted order ids found on {TOPIC}", accepted.len()))
            } else {
                Check::fail("accepted-on-topic", "every accepted request's message is on the topic", format!("{} order ids answered 200 but absent from {TOPIC}", missing.len()))
                    .with_evidence(missing.iter().map(|k| format!("{k}: answered 200, no message with this key")))
            }
        }
    });

    let peak_conns = samples.iter().filter_map(|(_, c)| c.as_ref().ok().map(Vec::len)).max();
    ctx.figure("peak producer connections", peak_conns.unwrap_or(0) as f64, "");
    ctx.judge(match peak_conns {
        None => Check::error("producer-connections-bounded", "the broker holds a bounded number of producer connections", "no sample of the broker's producer connections succeeded")
            .with_evidence(samples.iter().filter_map(|(t, c)| c.as_ref().err().map(|e| format!("t={t:.1}s: {e}")))),
        Some(peak) if peak <= MAX_PRODUCERS => Check::pass("producer-connections-bounded", "the broker holds a bounded number of producer connections", format!("at most {peak} connection(s) for group {GROUP} (limit {MAX_PRODUCERS})")),
        Some(peak) => Check::fail("producer-connections-bounded", "the broker holds a bounded number of producer connections", format!("the broker held up to {peak} producers of group {GROUP} at once (limit {MAX_PRODUCERS}): producers are left open"))
            .with_evidence(samples.iter().filter_map(|(t, c)| c.as_ref().ok().map(|n| format!("t={t:.1}s: {} producer connections", n.len())))),
    });

    // Reuse: the same producer all along, not a fresh one per request (one
    // started and shut down per request leaves few alive at any instant).
    let distinct: BTreeSet<&String> = samples.iter().filter_map(|(_, c)| c.as_ref().ok()).flatten().collect();
    ctx.figure("distinct producers seen", distinct.len() as f64, "");
    ctx.judge(match peak_conns {
        None => Check::error("producer-reused", "requests reuse one producer", "no sample of the broker's producers succeeded"),
        Some(_) if distinct.len() <= MAX_PRODUCERS => Check::pass("producer-reused", "requests reuse one producer", format!("{} distinct producer(s) over {} samples", distinct.len(), samples.len())),
        Some(_) => Check::fail("producer-reused", "requests reuse one producer", format!("the broker saw {} distinct producers of group {GROUP} over {} samples (limit {MAX_PRODUCERS}): a producer is started per request", distinct.len(), samples.len()))
            .with_evidence(distinct.iter().map(|p| p.to_string())),
    });

    let resources = match (baseline, peak_stats) {
        (Some(b), Some(p)) => {
            let threads = p.threads.saturating_sub(b.threads);
            let rss = (p.rss_kib.saturating_sub(b.rss_kib)) as f64 / 1024.0;
            ctx.figure("thread growth", threads as f64, "threads");
            ctx.figure("RSS growth", rss, "MiB");
            let summary = format!("threads {} -> {} (+{threads}, limit +{MAX_THREAD_GROWTH}), RSS {:.0} -> {:.0} MiB (+{rss:.0}, limit +{MAX_RSS_GROWTH_MIB:.0})", b.threads, p.threads, b.rss_kib as f64 / 1024.0, p.rss_kib as f64 / 1024.0);
            if threads <= MAX_THREAD_GROWTH && rss <= MAX_RSS_GROWTH_MIB {
                Check::pass("resources-bounded", "threads and memory stay bounded under load", summary)
            } else {
                Check::fail("resources-bounded", "threads and memory stay bounded under load", summary)
            }
        }
        _ => Check::error("resources-bounded", "threads and memory stay bounded under load", "the platform could not read the workload's threads and memory"),
    };
    ctx.judge(resources);

    let floor = format!("{min_throughput:.0} = {:.0} % of the {capacity:.0} requests/s GET /healthz got", MIN_THROUGHPUT_SHARE * 100.0);
    ctx.judge(if throughput >= min_throughput {
        Check::pass("throughput", "the service keeps up with the load", format!("{throughput:.0} requests/s (floor {floor}), p99 {:.0} ms", p99.as_secs_f64() * 1000.0))
    } else {
        Check::fail("throughput", "the service keeps up with the load", format!("{throughput:.0} requests/s, below the floor of {floor}; p99 {:.0} ms", p99.as_secs_f64() * 1000.0))
            .with_evidence(outcomes.iter().filter(|o| o.latency >= p99).take(5).map(|o| format!("{}: {:.0} ms", o.order_id, o.latency.as_secs_f64() * 1000.0)))
    });

    ctx.judge(match stop {
        Err(e) => Check::error("clean-shutdown", "on SIGTERM it shuts down cleanly", e.to_string()),
        Ok(s) if s.success => Check::pass("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("exited with {} after {:.1}s", s.status, s.took.as_secs_f64())),
        Ok(s) if s.exited_in_time => Check::fail("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("it died with {} instead of shutting its producer down and exiting 0", s.status)),
        Ok(s) => Check::fail("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("still running {}s after SIGTERM; killed ({})", SHUTDOWN_GRACE.as_secs(), s.status)),
    });
}
