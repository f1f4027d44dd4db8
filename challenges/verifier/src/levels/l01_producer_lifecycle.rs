//! Level 1 — producer lifecycle. An HTTP notification service sends one
//! message per `POST /notify`. The verifier loads it, watches the broker's
//! producer connections and the process's threads and memory, stops it with
//! SIGTERM, and reads the topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::notifier::{self, Shutdown, in_runs, notify};
use super::{Ctx, Judgement, Level, LevelInfo};
use crate::broker;
use crate::platform::{Platform, WorkloadStats};
use crate::report::Check;

pub const TOPIC: &str = "order-notify";
pub const GROUP: &str = "order-notifier";
const INSTANCE: &str = "notifier-0";
/// The load runs for a fixed time, so a slow service simply serves fewer.
/// A producer per request shows within the first sample (250 ms), and 5 s
/// is 20 samples and thousands of requests from a reused producer: enough
/// for the throughput ratio (8x apart, below) to stand clear of noise.
const LOAD: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
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

pub struct ProducerLifecycle;

impl Level for ProducerLifecycle {
    const INFO: LevelInfo = LevelInfo::playable(
        1,
        "Resource management",
        1,
        "producer lifecycle, connection reuse",
    )
    .serving_http()
    .judging_speed()
    .expecting(&[
        (
            "starter",
            &[
                "producer-connections-bounded",
                "producer-reused",
                "clean-shutdown",
            ],
        ),
        ("fix", &[]),
        ("per-request-producer", &["producer-reused"]),
    ]);
    type Observed = Observed;

    async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
        observe(ctx).await
    }

    fn judge(o: &Observed) -> Judgement {
        judge(o)
    }
}

/// What a run of level 1 observed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// Requests/s the same callers got from `GET /healthz` just before the load.
    capacity: f64,
    load_ms: u64,
    /// Request `order-{i:05}` at index `i`: its HTTP status (none: no
    /// answer) and its latency in µs.
    requests: Vec<(Option<u16>, u64)>,
    /// Every producer of the group the broker listed, once each.
    producers: Vec<String>,
    /// The broker's producers of the group, ms into the load: indexes into
    /// `producers`, or why the read failed.
    samples: Vec<(u64, Result<Vec<u32>, String>)>,
    /// Threads and memory before the load, and the highest seen during it.
    baseline: Option<Stats>,
    peak: Option<Stats>,
    /// Order numbers whose message is on the topic, as `[first, last]` runs.
    on_topic: Result<Vec<[u32; 2]>, String>,
    stop: Shutdown,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Stats {
    threads: u64,
    rss_kib: u64,
}

impl From<WorkloadStats> for Stats {
    fn from(s: WorkloadStats) -> Stats {
        Stats {
            threads: s.threads,
            rss_kib: s.rss_kib,
        }
    }
}

/// The higher threads and memory of the two.
fn higher(peak: Option<Stats>, now: Option<Stats>) -> Option<Stats> {
    match (peak, now) {
        (Some(p), Some(s)) => Some(Stats {
            threads: p.threads.max(s.threads),
            rss_kib: p.rss_kib.max(s.rss_kib),
        }),
        (p, s) => p.or(s),
    }
}

fn order_id(i: usize) -> String {
    format!("order-{i:05}")
}

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    let (http, addr) = notifier::start(ctx, INSTANCE, Duration::from_secs(10)).await?;
    let baseline = ctx.platform.workload_stats(INSTANCE).await.map(Stats::from);
    ctx.phase(&format!(
        "yardstick: {}s of GET /healthz, {CONCURRENCY} at a time",
        CAPACITY_PROBE.as_secs()
    ));
    let capacity = notifier::healthz_rate(&http, &addr, CONCURRENCY, CAPACITY_PROBE).await;

    ctx.phase(&format!(
        "load: {}s of requests, {CONCURRENCY} at a time, sampling the broker's producers",
        LOAD.as_secs()
    ));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // A task of its own: the samples below may take a while (in a cluster
    // each one is an exec), and the load must not wait for them.
    let load = tokio::spawn(futures::future::join_all((0..CONCURRENCY).map(|_| {
        let (http, addr, outcomes, next) = (
            http.clone(),
            addr.clone(),
            Arc::clone(&outcomes),
            Arc::clone(&next),
        );
        async move {
            while started.elapsed() < LOAD {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let status = notify(&http, &addr, &order_id(i)).await;
                outcomes
                    .lock()
                    .await
                    .push((i, status, t.elapsed().as_micros() as u64));
            }
        }
    })));
    let mut load = std::pin::pin!(load);
    let mut producers: Vec<String> = Vec::new();
    let mut index: BTreeMap<String, u32> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut sample = async |t: Duration| {
        let conns = broker::producer_connections(ctx.clients, GROUP, TOPIC)
            .await
            .map(|ids| {
                ids.into_iter()
                    .map(|id| {
                        *index.entry(id.clone()).or_insert_with(|| {
                            producers.push(id);
                            producers.len() as u32 - 1
                        })
                    })
                    .collect()
            });
        samples.push((t.as_millis() as u64, conns));
    };
    let mut peak = baseline;
    let mut stats_at = Instant::now();
    loop {
        tokio::select! {
            _ = &mut load => break,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {
                sample(started.elapsed()).await;
                // Threads and memory once a second: in a cluster each look
                // is an exec, whose CPU the load would miss.
                if stats_at.elapsed() >= Duration::from_secs(1) {
                    stats_at = Instant::now();
                    peak = higher(peak, ctx.platform.workload_stats(INSTANCE).await.map(Stats::from));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    // One more look once the load is over: producers never shut down are still there.
    sample(elapsed).await;
    peak = higher(
        peak,
        ctx.platform.workload_stats(INSTANCE).await.map(Stats::from),
    );
    let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
    outcomes.sort_by_key(|o| o.0);
    let requests = outcomes
        .into_iter()
        .map(|(_, status, us)| (status, us))
        .collect();

    let stop = notifier::stop(ctx, INSTANCE, SHUTDOWN_GRACE).await;

    ctx.phase(&format!("reading topic {TOPIC} from the broker"));
    let on_topic = broker::keys_on_topic(ctx.clients, TOPIC).await.map(|keys| {
        notifier::runs(
            keys.keys()
                .filter_map(|k| k.strip_prefix("order-")?.parse().ok()),
        )
    });
    Ok(Observed {
        capacity,
        load_ms: elapsed.as_millis() as u64,
        requests,
        producers,
        samples,
        baseline,
        peak,
        on_topic,
        stop,
    })
}

fn judge(o: &Observed) -> Judgement {
    let mut j = Judgement::default();
    let min_throughput = o.capacity * MIN_THROUGHPUT_SHARE;
    j.figure("GET /healthz rate (yardstick)", o.capacity, "requests/s");

    let requests = o.requests.len();
    let accepted = o.requests.iter().filter(|r| r.0 == Some(200)).count();
    let throughput = requests as f64 / (o.load_ms.max(1) as f64 / 1000.0);
    let mut latencies: Vec<u64> = o.requests.iter().map(|r| r.1).collect();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let ms = |us: u64| us as f64 / 1000.0;
    j.figure("requests", requests as f64, "");
    j.figure("accepted (200)", accepted as f64, "");
    j.figure("throughput", throughput, "requests/s");
    j.figure("p99 latency", ms(p99), "ms");

    // Checks, judged in order of what a learner should look at first.
    let min_accepted = requests * 99 / 100;
    j.check(if accepted >= min_accepted {
        Check::pass(
            "requests-accepted",
            "the service accepts the requests it is sent",
            format!("{accepted}/{requests} answered 200"),
        )
    } else {
        Check::fail(
            "requests-accepted",
            "the service accepts the requests it is sent",
            format!("only {accepted}/{requests} answered 200 (need {min_accepted})"),
        )
        .with_evidence(
            o.requests
                .iter()
                .enumerate()
                .filter(|(_, r)| r.0 != Some(200))
                .map(|(i, r)| {
                    format!(
                        "{}: {}",
                        order_id(i),
                        r.0.map_or("no answer".to_string(), |s| format!("HTTP {s}"))
                    )
                }),
        )
    });

    j.check(match &o.on_topic {
        Err(e) => Check::error(
            "accepted-on-topic",
            "every accepted request's message is on the topic",
            format!("could not read {TOPIC}: {e}"),
        ),
        Ok(found) => {
            let missing: Vec<usize> = o
                .requests
                .iter()
                .enumerate()
                .filter(|(i, r)| r.0 == Some(200) && !in_runs(found, *i as u32))
                .map(|(i, _)| i)
                .collect();
            if missing.is_empty() {
                Check::pass(
                    "accepted-on-topic",
                    "every accepted request's message is on the topic",
                    format!("all {accepted} accepted order ids found on {TOPIC}"),
                )
            } else {
                Check::fail(
                    "accepted-on-topic",
                    "every accepted request's message is on the topic",
                    format!(
                        "{} order ids answered 200 but absent from {TOPIC}",
                        missing.len()
                    ),
                )
                .with_evidence(
                    missing.iter().map(|i| {
                        format!("{}: answered 200, no message with this key", order_id(*i))
                    }),
                )
            }
        }
    });

    let t = |ms: u64| ms as f64 / 1000.0;
    let peak_conns = o
        .samples
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok().map(Vec::len))
        .max();
    j.figure(
        "peak producer connections",
        peak_conns.unwrap_or(0) as f64,
        "",
    );
    j.check(match peak_conns {
        None => Check::error("producer-connections-bounded", "the broker holds a bounded number of producer connections", "no sample of the broker's producer connections succeeded")
            .with_evidence(o.samples.iter().filter_map(|(at, c)| c.as_ref().err().map(|e| format!("t={:.1}s: {e}", t(*at))))),
        Some(peak) if peak <= MAX_PRODUCERS => Check::pass("producer-connections-bounded", "the broker holds a bounded number of producer connections", format!("at most {peak} connection(s) for group {GROUP} (limit {MAX_PRODUCERS})")),
        Some(peak) => Check::fail("producer-connections-bounded", "the broker holds a bounded number of producer connections", format!("the broker held up to {peak} producers of group {GROUP} at once (limit {MAX_PRODUCERS}): producers are left open"))
            .with_evidence(o.samples.iter().filter_map(|(at, c)| c.as_ref().ok().map(|n| format!("t={:.1}s: {} producer connections", t(*at), n.len())))),
    });

    // Reuse: the same producer all along, not a fresh one per request (one
    // started and shut down per request leaves few alive at any instant).
    let distinct = o.producers.len();
    j.figure("distinct producers seen", distinct as f64, "");
    j.check(match peak_conns {
        None => Check::error("producer-reused", "requests reuse one producer", "no sample of the broker's producers succeeded"),
        Some(_) if distinct <= MAX_PRODUCERS => Check::pass("producer-reused", "requests reuse one producer", format!("{distinct} distinct producer(s) over {} samples", o.samples.len())),
        Some(_) => Check::fail("producer-reused", "requests reuse one producer", format!("the broker saw {distinct} distinct producers of group {GROUP} over {} samples (limit {MAX_PRODUCERS}): a producer is started per request", o.samples.len()))
            .with_evidence(o.producers.iter()),
    });

    let resources = match (o.baseline, o.peak) {
        (Some(b), Some(p)) => {
            let threads = p.threads.saturating_sub(b.threads);
            let rss = (p.rss_kib.saturating_sub(b.rss_kib)) as f64 / 1024.0;
            j.figure("thread growth", threads as f64, "threads");
            j.figure("RSS growth", rss, "MiB");
            let summary = format!(
                "threads {} -> {} (+{threads}, limit +{MAX_THREAD_GROWTH}), RSS {:.0} -> {:.0} MiB (+{rss:.0}, limit +{MAX_RSS_GROWTH_MIB:.0})",
                b.threads,
                p.threads,
                b.rss_kib as f64 / 1024.0,
                p.rss_kib as f64 / 1024.0
            );
            if threads <= MAX_THREAD_GROWTH && rss <= MAX_RSS_GROWTH_MIB {
                Check::pass(
                    "resources-bounded",
                    "threads and memory stay bounded under load",
                    summary,
                )
            } else {
                Check::fail(
                    "resources-bounded",
                    "threads and memory stay bounded under load",
                    summary,
                )
            }
        }
        _ => Check::error(
            "resources-bounded",
            "threads and memory stay bounded under load",
            "the platform could not read the workload's threads and memory",
        ),
    };
    j.check(resources);

    let floor = format!(
        "{min_throughput:.0} = {:.0} % of the {:.0} requests/s GET /healthz got",
        MIN_THROUGHPUT_SHARE * 100.0,
        o.capacity
    );
    j.check(if throughput >= min_throughput {
        Check::pass(
            "throughput",
            "the service keeps up with the load",
            format!(
                "{throughput:.0} requests/s (floor {floor}), p99 {:.0} ms",
                ms(p99)
            ),
        )
    } else {
        Check::fail(
            "throughput",
            "the service keeps up with the load",
            format!(
                "{throughput:.0} requests/s, below the floor of {floor}; p99 {:.0} ms",
                ms(p99)
            ),
        )
        .with_evidence(
            o.requests
                .iter()
                .enumerate()
                .filter(|(_, r)| r.1 >= p99)
                .take(5)
                .map(|(i, r)| format!("{}: {:.0} ms", order_id(i), ms(r.1))),
        )
    });

    j.check(notifier::shutdown_check(&o.stop, SHUTDOWN_GRACE));
    j
}
