//! Level 2 — retry and async. The notification service of level 1, under a
//! broker that freezes for a few seconds and later crashes and restarts.
//! The verifier loads it at a steady rate throughout, fires a burst while
//! the broker is frozen, times every request, stops it with SIGTERM, and
//! reads the topic back (keys, and when each message was born).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, oneshot};

use super::notifier::{self, Shutdown, in_runs, notify};
use super::{Ctx, Judgement, Level, LevelInfo};
use crate::broker;
use crate::now_ms;
use crate::platform::{BrokerFault, Platform};
use crate::progress::Progress;
use crate::report::Check;

pub const TOPIC: &str = "order-notify";
const INSTANCE: &str = "notifier-0";
/// Closed-loop clients, each paced to one request per `PACE`: 200 requests/s
/// at most, a rate any correct service sustains while the broker is healthy.
const CONCURRENCY: usize = 8;
const PACE: Duration = Duration::from_millis(40);
/// The longest a request may take, whatever the broker does.
const LATENCY_BOUND: Duration = Duration::from_secs(3);
/// Past this the verifier stops waiting: the request hung.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Healthy load before the freeze: its first second counts (the last
/// second before a fault is left out), some 200 requests.
const HEALTHY_FIRST: Duration = Duration::from_secs(2);
/// Longer than `LATENCY_BOUND` by a second: a request that waits the freeze
/// out cannot pass, while one bounded by a send timeout (1.5-2 s) can.
const STALL: Duration = Duration::from_secs(4);
/// The burst comes once the freeze has set in.
const BURST_AFTER_STALL: Duration = Duration::from_millis(500);
const BURST: usize = 256;
/// Sends the service may have in flight at once; a burst beyond it must be
/// refused (503), neither held open nor queued inside the service.
const MAX_IN_FLIGHT: usize = 64;
/// A refusal takes milliseconds: a burst request still open this long after
/// the burst began is held by the service.
const HELD_AFTER: Duration = Duration::from_secs(1);
/// From the resume to the crash: `RECOVERY`, then 2 s of healthy load that
/// count (a service that stays broken after a freeze fails here), then the
/// second before the fault.
const BETWEEN_FAULTS: Duration = Duration::from_secs(4);
/// Down before the restart begins; the restart (a JVM boot and a probe:
/// 6-27 s measured on 2 busy cores) adds to the outage, so hundreds of sends meet a dead broker. The
/// load stops once the broker serves again: running on proves nothing more,
/// since rocketmq-client-rust 1.0 refuses a restarted broker's address for
/// 30 s (its transport's circuit breaker) and a correct service answers 503
/// throughout.
const BROKER_DOWN: Duration = Duration::from_secs(1);
/// Once a frozen broker resumes, clients may take this long to catch up
/// (measured: the reference fix answers 200 again within 50 ms).
const RECOVERY: Duration = Duration::from_secs(1);
/// A request sent this close to a fault may be caught by it.
const BEFORE_FAULT: Duration = Duration::from_secs(1);
/// Share of the requests sent while the broker is healthy that must be
/// answered 200: a service refusing everything cannot pass.
const MIN_ACCEPTED: f64 = 0.99;
/// A broker answer already on its way when the broker froze may still arrive this late.
const ACK_SLACK: Duration = Duration::from_millis(500);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct RetryAsync;

impl Level for RetryAsync {
    const INFO: LevelInfo = LevelInfo::playable(
        2,
        "Retry and async",
        2,
        "retry policy, async send, timeouts",
    )
    .serving_http()
    .judging_speed()
    .expecting(&[
        (
            "starter",
            &["accepted-on-topic", "acked-by-broker", "inflight-bounded"],
        ),
        ("fix", &[]),
        (
            "blocking-infinite-retry",
            &["latency-bounded", "inflight-bounded"],
        ),
        ("no-backpressure", &["inflight-bounded"]),
    ]);
    type Observed = Observed;

    async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
        // Boxed: the scenario's future is deep, and test threads have small stacks.
        Box::pin(observe(ctx)).await
    }

    fn judge(o: &Observed) -> Judgement {
        judge(o)
    }
}

/// What a run of level 2 observed. Times are ms into the load.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    load_ms: u64,
    schedule: Schedule,
    /// When the burst went out (none: the broker was never frozen).
    burst_at: Option<u64>,
    /// Request `order-{i:05}` at index `i`.
    steady: Vec<Request>,
    /// Request `burst-{i:03}` at index `i`.
    burst: Vec<Request>,
    /// What the topic held afterwards.
    stored: Result<Stored, String>,
    stop: Shutdown,
}

/// One request: when it was sent, how long it took (ms), and its HTTP
/// status (none: no answer within `HTTP_TIMEOUT`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Request(u64, u64, Option<u16>);

impl Request {
    fn start(&self) -> u64 {
        self.0
    }
    fn latency(&self) -> u64 {
        self.1
    }
    fn status(&self) -> Option<u16> {
        self.2
    }
    fn end(&self) -> u64 {
        self.0 + self.1
    }
    fn ok(&self) -> bool {
        self.2 == Some(200)
    }
}

/// When each fault began and ended.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Schedule {
    stall: u64,
    resume: u64,
    kill: u64,
    killed: u64,
    restart: u64,
    restarted: u64,
}

/// The topic as the broker stored it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// Numbers of the `order-N` and `burst-N` keys found, as `[first, last]` runs.
    orders: Vec<[u32; 2]>,
    burst: Vec<[u32; 2]>,
    /// When each message was born (the producer stamps it when it builds
    /// the send request), sorted: a message born while the broker was
    /// frozen was a send in flight.
    born: Vec<i64>,
}

/// What the load tasks record: a request's name and number, and the request.
type Outcome = (bool, usize, Request);

async fn observe<P: Platform>(ctx: &mut Ctx<'_, P>) -> Result<Observed, Check> {
    let (http, addr) = notifier::start(ctx, INSTANCE, HTTP_TIMEOUT).await?;

    ctx.phase(&format!(
        "load: {} requests/s; broker frozen {}s from t={}s with a burst of {BURST}, killed {}s later, restarted {}s after that; the load stops once it serves again",
        CONCURRENCY as u64 * 1000 / PACE.as_millis() as u64,
        STALL.as_secs(),
        HEALTHY_FIRST.as_secs(),
        BETWEEN_FAULTS.as_secs(),
        BROKER_DOWN.as_secs()
    ));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let t0_unix_ms = now_ms() as i64;
    let ms = move |at: Instant| at.duration_since(t0).as_millis() as u64;
    let (stalled_tx, stalled_rx) = oneshot::channel::<()>();
    let steady = futures::future::join_all((0..CONCURRENCY).map(|_| {
        let (http, addr, outcomes, next, done) = (
            http.clone(),
            addr.clone(),
            Arc::clone(&outcomes),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        async move {
            while !done.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let status = notify(&http, &addr, &format!("order-{i:05}")).await;
                outcomes.lock().await.push((
                    false,
                    i,
                    Request(ms(start), start.elapsed().as_millis() as u64, status),
                ));
                tokio::time::sleep_until(tokio::time::Instant::from_std(start + PACE)).await;
            }
        }
    }));
    let burst = {
        let (http, addr, outcomes) = (http.clone(), addr.clone(), Arc::clone(&outcomes));
        async move {
            stalled_rx.await.ok()?;
            tokio::time::sleep(BURST_AFTER_STALL).await;
            let at = ms(Instant::now());
            futures::future::join_all((0..BURST).map(|i| {
                let (http, addr, outcomes) = (http.clone(), addr.clone(), Arc::clone(&outcomes));
                async move {
                    let start = Instant::now();
                    let status = notify(&http, &addr, &format!("burst-{i:03}")).await;
                    outcomes.lock().await.push((
                        true,
                        i,
                        Request(ms(start), start.elapsed().as_millis() as u64, status),
                    ));
                }
            }))
            .await;
            Some(at)
        }
    };
    let faults = drive_faults(
        &mut *ctx.platform,
        &mut *ctx.progress,
        t0,
        stalled_tx,
        &done,
    );
    let (schedule, _, burst_at) = tokio::join!(Box::pin(faults), Box::pin(steady), Box::pin(burst));
    let load_ms = ms(Instant::now());
    let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
    outcomes.sort_by_key(|&(b, i, _)| (b, i));
    let (burst, steady): (Vec<Outcome>, Vec<Outcome>) = outcomes.into_iter().partition(|o| o.0);
    let (steady, burst) = (
        steady.into_iter().map(|o| o.2).collect(),
        burst.into_iter().map(|o| o.2).collect(),
    );

    let stop = notifier::stop(ctx, INSTANCE, SHUTDOWN_GRACE).await;
    let schedule = schedule.map_err(|e| {
        Check::error(
            "broker-faults",
            "the verifier freezes and restarts the broker",
            e,
        )
    })?;

    ctx.phase(&format!("reading topic {TOPIC} from the broker"));
    let stored = Box::pin(broker::messages_on_topic(ctx.clients, TOPIC))
        .await
        .map(|messages| {
            let numbers = |prefix: &str| {
                notifier::runs(
                    messages
                        .iter()
                        .flat_map(|m| &m.keys)
                        .filter_map(|k| k.strip_prefix(prefix)?.parse().ok()),
                )
            };
            let mut born: Vec<i64> = messages.iter().map(|m| m.born_ms - t0_unix_ms).collect();
            born.sort_unstable();
            Stored {
                orders: numbers("order-"),
                burst: numbers("burst-"),
                born,
            }
        });
    Ok(Observed {
        load_ms,
        schedule,
        burst_at,
        steady,
        burst,
        stored,
        stop,
    })
}

/// The broker's schedule: healthy, frozen (the burst's cue goes out on
/// `stalled`), healthy, killed, restarted; the load stops once the broker
/// serves again.
async fn drive_faults<P: Platform>(
    platform: &mut P,
    progress: &mut dyn Progress,
    t0: Instant,
    stalled: oneshot::Sender<()>,
    done: &AtomicBool,
) -> Result<Schedule, String> {
    let mut s = Schedule::default();
    let at = || t0.elapsed().as_millis() as u64;
    let r: Result<(), String> = async {
        let fault = |f: BrokerFault, e: crate::platform::PlatformError| format!("{f:?}: {e}");
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + HEALTHY_FIRST)).await;
        progress.phase(&format!(
            "freezing the broker (SIGSTOP) for {}s",
            STALL.as_secs()
        ));
        s.stall = at();
        platform
            .broker_fault(BrokerFault::Stall)
            .await
            .map_err(|e| fault(BrokerFault::Stall, e))?;
        let _ = stalled.send(());
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            t0 + Duration::from_millis(s.stall) + STALL,
        ))
        .await;
        platform
            .broker_fault(BrokerFault::Resume)
            .await
            .map_err(|e| fault(BrokerFault::Resume, e))?;
        s.resume = at();
        tokio::time::sleep(BETWEEN_FAULTS).await;
        progress.phase(&format!(
            "killing the broker (SIGKILL), restarting it {}s later",
            BROKER_DOWN.as_secs()
        ));
        s.kill = at();
        platform
            .broker_fault(BrokerFault::Kill)
            .await
            .map_err(|e| fault(BrokerFault::Kill, e))?;
        s.killed = at();
        tokio::time::sleep(BROKER_DOWN).await;
        s.restart = at();
        platform
            .broker_fault(BrokerFault::Restart)
            .await
            .map_err(|e| fault(BrokerFault::Restart, e))?;
        s.restarted = at();
        progress.phase(&format!(
            "broker serving again {:.1}s after the kill",
            (s.restarted - s.kill) as f64 / 1000.0
        ));
        Ok(())
    }
    .await;
    if r.is_err() {
        // Never leave the broker frozen for the rest of the run.
        let _ = platform.broker_fault(BrokerFault::Resume).await;
    }
    done.store(true, Ordering::Relaxed);
    r.map(|_| s)
}

fn judge(o: &Observed) -> Judgement {
    let mut j = Judgement::default();
    let s = &o.schedule;
    let secs = |ms: u64| ms as f64 / 1000.0;
    let d = |d: Duration| d.as_millis() as u64;
    // Every request in the order it was sent, with its name.
    let mut all: Vec<(String, &Request)> = o
        .steady
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("order-{i:05}"), r))
        .chain(
            o.burst
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("burst-{i:03}"), r)),
        )
        .collect();
    all.sort_by_key(|(_, r)| r.start());

    let requests = all.len();
    let accepted = all.iter().filter(|(_, r)| r.ok()).count();
    let mut latencies: Vec<u64> = all.iter().map(|(_, r)| r.latency()).collect();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    j.figure("requests", requests as f64, "");
    j.figure("accepted (200)", accepted as f64, "");
    j.figure(
        "throughput",
        requests as f64 / secs(o.load_ms.max(1)),
        "requests/s",
    );
    j.figure("p99 latency", p99 as f64, "ms");
    j.figure("max latency", max as f64, "ms");
    j.figure(
        "broker down (kill to serving again)",
        secs(s.restarted - s.kill),
        "s",
    );

    // Requests sent while the broker was healthy. Everything from the kill
    // on is left out: rocketmq-client-rust 1.0 reconnects to a restarted
    // broker only after up to ~30 s, which no service fix can shorten.
    let faulty = [(s.stall, s.resume + d(RECOVERY)), (s.kill, u64::MAX)];
    let healthy: Vec<&(String, &Request)> = all
        .iter()
        .filter(|(_, r)| {
            faulty
                .iter()
                .all(|&(from, to)| r.start() + d(BEFORE_FAULT) < from || r.start() > to)
        })
        .collect();
    let healthy_ok = healthy.iter().filter(|(_, r)| r.ok()).count();
    let need = (healthy.len() as f64 * MIN_ACCEPTED).ceil() as usize;
    j.check(if !healthy.is_empty() && healthy_ok >= need {
        Check::pass("requests-accepted", "requests sent while the broker is healthy are accepted", format!("{healthy_ok}/{} answered 200 (need {need})", healthy.len()))
    } else {
        Check::fail("requests-accepted", "requests sent while the broker is healthy are accepted", format!("only {healthy_ok}/{} requests sent while the broker was healthy answered 200 (need {need})", healthy.len()))
            .with_evidence(healthy.iter().filter(|(_, r)| !r.ok()).map(|(id, r)| format!("{id} at t={:.1}s: {}", secs(r.start()), status_text(r.status()))))
    });

    j.check(match &o.stored {
        Err(e) => Check::error(
            "accepted-on-topic",
            "every accepted request's message is on the topic",
            format!("could not read {TOPIC}: {e}"),
        ),
        Ok(stored) => {
            let found = |id: &str| match (id.strip_prefix("order-"), id.strip_prefix("burst-")) {
                (Some(n), _) => n.parse().is_ok_and(|n| in_runs(&stored.orders, n)),
                (_, Some(n)) => n.parse().is_ok_and(|n| in_runs(&stored.burst, n)),
                _ => false,
            };
            let missing: Vec<String> = all
                .iter()
                .filter(|(id, r)| r.ok() && !found(id))
                .map(|(id, r)| {
                    format!(
                        "{id}: answered 200 at t={:.1}s, no message with this key",
                        secs(r.end())
                    )
                })
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
                .with_evidence(missing)
            }
        }
    });

    // Nothing can be stored while the broker is frozen or down, so a 200 then
    // was sent before the broker had the message.
    let blind = [
        (s.stall + d(ACK_SLACK), s.resume, "frozen"),
        (s.killed + d(ACK_SLACK), s.restart, "down"),
    ];
    let early: Vec<(&String, &Request, &str)> = all
        .iter()
        .filter(|(_, r)| r.ok())
        .filter_map(|(id, r)| {
            blind
                .iter()
                .find(|&&(from, to, _)| r.end() >= from && r.end() < to)
                .map(|&(_, _, why)| (id, *r, why))
        })
        .collect();
    let windows = format!(
        "frozen {:.1}-{:.1}s, down {:.1}-{:.1}s",
        secs(s.stall),
        secs(s.resume),
        secs(s.killed),
        secs(s.restart)
    );
    j.check(if early.is_empty() {
        Check::pass(
            "acked-by-broker",
            "200 only once the broker has the message",
            format!(
                "no request answered 200 while the broker could not store anything ({windows})"
            ),
        )
    } else {
        Check::fail(
            "acked-by-broker",
            "200 only once the broker has the message",
            format!(
                "{} requests answered 200 while the broker could not store anything ({windows})",
                early.len()
            ),
        )
        .with_evidence(early.iter().map(|(id, r, why)| {
            format!(
                "{id}: answered 200 at t={:.2}s, broker {why}",
                secs(r.end())
            )
        }))
    });

    let slow: Vec<&(String, &Request)> = all
        .iter()
        .filter(|(_, r)| r.latency() > d(LATENCY_BOUND) || r.status().is_none())
        .collect();
    j.check(if slow.is_empty() {
        Check::pass(
            "latency-bounded",
            "every request is answered within its timeout",
            format!(
                "slowest {max} ms, p99 {p99} ms (bound {} ms)",
                LATENCY_BOUND.as_millis()
            ),
        )
    } else {
        Check::fail(
            "latency-bounded",
            "every request is answered within its timeout",
            format!(
                "{} requests took longer than {} ms; slowest {max} ms",
                slow.len(),
                LATENCY_BOUND.as_millis()
            ),
        )
        .with_evidence(slow.iter().map(|(id, r)| {
            format!(
                "{id} sent at t={:.1}s: {} after {} ms",
                secs(r.start()),
                status_text(r.status()),
                r.latency()
            )
        }))
    });

    // In flight while frozen, seen two ways from outside: requests the
    // service holds open, and sends it starts (the broker stores them once it
    // resumes, stamped with when they were born).
    const TITLE: &str = "sends in flight stay bounded when the broker stalls";
    let inflight = match o.burst_at {
        None => Check::error(
            "inflight-bounded",
            TITLE,
            "the burst was not sent: the broker was never frozen",
        ),
        Some(b) => {
            let mut held = (0, b);
            let mut t = b + d(HELD_AFTER);
            while t < s.resume {
                let open = all
                    .iter()
                    .filter(|(_, r)| r.start() <= t && r.end() > t)
                    .count();
                if open > held.0 {
                    held = (open, t);
                }
                t += 50;
            }
            j.figure("requests held open while frozen", held.0 as f64, "");
            let held_line = format!(
                "{} requests held open at t={:.2}s ({:.1}s into the burst)",
                held.0,
                secs(held.1),
                secs(held.1 - b)
            );
            match &o.stored {
                Err(e) if held.0 <= MAX_IN_FLIGHT => Check::error(
                    "inflight-bounded",
                    TITLE,
                    format!("{held_line}; could not read {TOPIC}: {e}"),
                ),
                stored => {
                    let window = b as i64..=(b + d(HELD_AFTER)) as i64;
                    let started = stored.as_ref().map_or(0, |st| {
                        st.born.iter().filter(|t| window.contains(t)).count()
                    });
                    j.figure(
                        "sends started in the burst's first second",
                        started as f64,
                        "",
                    );
                    let started_line = format!(
                        "{started} sends started in the first {}s of the burst (messages born then, stored after the broker resumed)",
                        HELD_AFTER.as_secs()
                    );
                    let summary = format!("{held_line}; {started_line}; limit {MAX_IN_FLIGHT}");
                    if held.0.max(started) <= MAX_IN_FLIGHT {
                        Check::pass("inflight-bounded", TITLE, summary)
                    } else {
                        let evidence = [
                            held_line.clone(),
                            started_line.clone(),
                            format!(
                                "burst of {BURST} at t={:.1}s; broker frozen {:.1}-{:.1}s",
                                secs(b),
                                secs(s.stall),
                                secs(s.resume)
                            ),
                        ];
                        Check::fail("inflight-bounded", TITLE, format!("more than {MAX_IN_FLIGHT} sends in flight while the broker was frozen: {summary}")).with_evidence(evidence)
                    }
                }
            }
        }
    };
    j.check(inflight);

    j.check(notifier::shutdown_check(&o.stop, SHUTDOWN_GRACE));
    j
}

fn status_text(status: Option<u16>) -> String {
    status.map_or(
        format!("no answer within {}s", HTTP_TIMEOUT.as_secs()),
        |s| format!("HTTP {s}"),
    )
}
