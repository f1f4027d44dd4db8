//! Level 2 — retry and async. The notification service of level 1, under a
//! broker that freezes for a few seconds and later restarts. The verifier
//! loads it at a steady rate throughout, fires a burst while the broker is
//! frozen, times every request, stops it with SIGTERM, and reads the topic
//! back (keys, and when each message was born).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, oneshot};

use super::Ctx;
use super::notifier::{self, notify};
use crate::broker;
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
const HEALTHY_FIRST: Duration = Duration::from_secs(5);
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
const BETWEEN_FAULTS: Duration = Duration::from_secs(8);
const BROKER_DOWN: Duration = Duration::from_secs(3);
const AFTER_RESTART: Duration = Duration::from_secs(8);
/// Once a frozen broker resumes, clients may take this long to catch up.
const RECOVERY: Duration = Duration::from_secs(3);
/// A request sent this close to a fault may be caught by it.
const BEFORE_FAULT: Duration = Duration::from_secs(1);
/// Share of the requests sent while the broker is healthy that must be
/// answered 200: a service refusing everything cannot pass.
const MIN_ACCEPTED: f64 = 0.99;
/// A broker answer already on its way when the broker froze may still arrive this late.
const ACK_SLACK: Duration = Duration::from_millis(500);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Outcome {
    order_id: String,
    /// Since the start of the load.
    start: Duration,
    latency: Duration,
    status: Option<u16>,
}

impl Outcome {
    fn end(&self) -> Duration {
        self.start + self.latency
    }
}

/// When each fault began and ended, as offsets from the start of the load.
#[derive(Clone, Copy, Debug, Default)]
struct Schedule {
    stall: Duration,
    resume: Duration,
    kill: Duration,
    killed: Duration,
    restart: Duration,
    restarted: Duration,
}

pub async fn run<P: Platform>(ctx: &mut Ctx<'_, P>) {
    // Boxed: the scenario's future is deep, and test threads have small stacks.
    Box::pin(scenario(ctx)).await
}

async fn scenario<P: Platform>(ctx: &mut Ctx<'_, P>) {
    let Some((http, addr)) = notifier::start(ctx, INSTANCE, HTTP_TIMEOUT).await else { return };

    ctx.phase(&format!(
        "load: {} requests/s; broker frozen {}s from t={}s with a burst of {BURST}, then stopped {}s and restarted",
        CONCURRENCY as u64 * 1000 / PACE.as_millis() as u64,
        STALL.as_secs(),
        HEALTHY_FIRST.as_secs(),
        BROKER_DOWN.as_secs()
    ));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let t0_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let (stalled_tx, stalled_rx) = oneshot::channel::<()>();
    let steady = futures::future::join_all((0..CONCURRENCY).map(|_| {
        let (http, addr, outcomes, next, done) = (http.clone(), addr.clone(), Arc::clone(&outcomes), Arc::clone(&next), Arc::clone(&done));
        async move {
            while !done.load(Ordering::Relaxed) {
                let order_id = format!("order-{:05}", next.fetch_add(1, Ordering::Relaxed));
                let start = t0.elapsed();
                let status = notify(&http, &addr, &order_id).await;
                let latency = t0.elapsed() - start;
                outcomes.lock().await.push(Outcome { order_id, start, latency, status });
                tokio::time::sleep_until(tokio::time::Instant::from_std(t0) + start + PACE).await;
            }
        }
    }));
    let burst = {
        let (http, addr, outcomes) = (http.clone(), addr.clone(), Arc::clone(&outcomes));
        async move {
            stalled_rx.await.ok()?;
            tokio::time::sleep(BURST_AFTER_STALL).await;
            let at = t0.elapsed();
            futures::future::join_all((0..BURST).map(|i| {
                let (http, addr, outcomes) = (http.clone(), addr.clone(), Arc::clone(&outcomes));
                async move {
                    let order_id = format!("burst-{i:03}");
                    let start = t0.elapsed();
                    let status = notify(&http, &addr, &order_id).await;
                    let latency = t0.elapsed() - start;
                    outcomes.lock().await.push(Outcome { order_id, start, latency, status });
                }
            }))
            .await;
            Some(at)
        }
    };
    let faults = drive_faults(&mut *ctx.platform, &mut *ctx.progress, t0, stalled_tx, &done);
    let (schedule, _, burst_at) = tokio::join!(Box::pin(faults), Box::pin(steady), Box::pin(burst));
    let elapsed = t0.elapsed();
    let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
    outcomes.sort_by_key(|o| o.start);

    let requests = outcomes.len();
    let accepted: BTreeSet<&str> = outcomes.iter().filter(|o| o.status == Some(200)).map(|o| o.order_id.as_str()).collect();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    ctx.figure("requests", requests as f64, "");
    ctx.figure("accepted (200)", accepted.len() as f64, "");
    ctx.figure("throughput", requests as f64 / elapsed.as_secs_f64(), "requests/s");
    ctx.figure("p99 latency", p99.as_secs_f64() * 1000.0, "ms");
    ctx.figure("max latency", max.as_secs_f64() * 1000.0, "ms");

    ctx.phase(&format!("SIGTERM to {INSTANCE}, {}s to exit", SHUTDOWN_GRACE.as_secs()));
    let stop = ctx.platform.stop_workload(INSTANCE, SHUTDOWN_GRACE).await;

    let s = match schedule {
        Ok(s) => s,
        Err(e) => {
            ctx.judge(Check::error("broker-faults", "the verifier freezes and restarts the broker", e));
            return;
        }
    };
    // How long after the broker was back the service acknowledged again.
    if let Some(back) = outcomes.iter().filter(|o| o.status == Some(200) && o.start >= s.restart).map(Outcome::end).min() {
        ctx.figure("first 200 after the broker restart", (back.saturating_sub(s.restarted)).as_secs_f64(), "s");
    }
    ctx.figure("broker down (kill to serving again)", (s.restarted - s.kill).as_secs_f64(), "s");
    ctx.phase(&format!("reading topic {TOPIC} from the broker"));
    let on_topic = Box::pin(broker::messages_on_topic(ctx.clients, TOPIC)).await;
    let secs = |d: Duration| d.as_secs_f64();

    // Requests sent while the broker was healthy. Everything from the kill
    // on is left out: rocketmq-client-rust 1.0 reconnects to a restarted
    // broker only after up to ~30 s, which no service fix can shorten.
    let faulty = [(s.stall, s.resume + RECOVERY), (s.kill, Duration::MAX)];
    let healthy: Vec<&Outcome> = outcomes.iter().filter(|o| faulty.iter().all(|&(from, to)| o.start + BEFORE_FAULT < from || o.start > to)).collect();
    let healthy_ok = healthy.iter().filter(|o| o.status == Some(200)).count();
    let need = (healthy.len() as f64 * MIN_ACCEPTED).ceil() as usize;
    ctx.judge(if !healthy.is_empty() && healthy_ok >= need {
        Check::pass("requests-accepted", "requests sent while the broker is healthy are accepted", format!("{healthy_ok}/{} answered 200 (need {need})", healthy.len()))
    } else {
        Check::fail("requests-accepted", "requests sent while the broker is healthy are accepted", format!("only {healthy_ok}/{} requests sent while the broker was healthy answered 200 (need {need})", healthy.len()))
            .with_evidence(healthy.iter().filter(|o| o.status != Some(200)).map(|o| format!("{} at t={:.1}s: {}", o.order_id, secs(o.start), status_text(o.status))))
    });

    ctx.judge(match &on_topic {
        Err(e) => Check::error("accepted-on-topic", "every accepted request's message is on the topic", format!("could not read {TOPIC}: {e}")),
        Ok(messages) => {
            let keys: BTreeSet<&str> = messages.iter().flat_map(|m| m.keys.iter().map(String::as_str)).collect();
            let missing: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == Some(200) && !keys.contains(o.order_id.as_str())).collect();
            if missing.is_empty() {
                Check::pass("accepted-on-topic", "every accepted request's message is on the topic", format!("all {} accepted order ids found on {TOPIC}", accepted.len()))
            } else {
                Check::fail("accepted-on-topic", "every accepted request's message is on the topic", format!("{} order ids answered 200 but absent from {TOPIC}", missing.len()))
                    .with_evidence(missing.iter().map(|o| format!("{}: answered 200 at t={:.1}s, no message with this key", o.order_id, secs(o.end()))))
            }
        }
    });

    // Nothing can be stored while the broker is frozen or down, so a 200 then
    // was sent before the broker had the message.
    let blind = [(s.stall + ACK_SLACK, s.resume, "frozen"), (s.killed + ACK_SLACK, s.restart, "down")];
    let early: Vec<(&Outcome, &str)> = outcomes
        .iter()
        .filter(|o| o.status == Some(200))
        .filter_map(|o| blind.iter().find(|&&(from, to, _)| o.end() >= from && o.end() < to).map(|&(_, _, why)| (o, why)))
        .collect();
    let windows = format!("frozen {:.1}-{:.1}s, down {:.1}-{:.1}s", secs(s.stall), secs(s.resume), secs(s.killed), secs(s.restart));
    ctx.judge(if early.is_empty() {
        Check::pass("acked-by-broker", "200 only once the broker has the message", format!("no request answered 200 while the broker could not store anything ({windows})"))
    } else {
        Check::fail("acked-by-broker", "200 only once the broker has the message", format!("{} requests answered 200 while the broker could not store anything ({windows})", early.len()))
            .with_evidence(early.iter().map(|(o, why)| format!("{}: answered 200 at t={:.2}s, broker {why}", o.order_id, secs(o.end()))))
    });

    let slow: Vec<&Outcome> = outcomes.iter().filter(|o| o.latency > LATENCY_BOUND || o.status.is_none()).collect();
    ctx.judge(if slow.is_empty() {
        Check::pass("latency-bounded", "every request is answered within its timeout", format!("slowest {:.0} ms, p99 {:.0} ms (bound {} ms)", secs(max) * 1000.0, secs(p99) * 1000.0, LATENCY_BOUND.as_millis()))
    } else {
        Check::fail("latency-bounded", "every request is answered within its timeout", format!("{} requests took longer than {} ms; slowest {:.0} ms", slow.len(), LATENCY_BOUND.as_millis(), secs(max) * 1000.0))
            .with_evidence(slow.iter().map(|o| format!("{} sent at t={:.1}s: {} after {:.0} ms", o.order_id, secs(o.start), status_text(o.status), secs(o.latency) * 1000.0)))
    });

    // In flight while frozen, seen two ways from outside: requests the
    // service holds open, and sends it starts (the broker stores them once it
    // resumes, stamped with when they were born).
    let mut figures = Vec::new();
    let inflight = match burst_at {
        None => Check::error("inflight-bounded", "sends in flight stay bounded when the broker stalls", "the burst was not sent: the broker was never frozen"),
        Some(b) => {
            let mut held = (0, b);
            let mut t = b + HELD_AFTER;
            while t < s.resume {
                let open = outcomes.iter().filter(|o| o.start <= t && o.end() > t).count();
                if open > held.0 {
                    held = (open, t);
                }
                t += Duration::from_millis(50);
            }
            let (from_ms, to_ms) = (t0_unix_ms + b.as_millis() as i64, t0_unix_ms + (b + HELD_AFTER).as_millis() as i64);
            let started = on_topic.as_ref().map(|m| m.iter().filter(|m| m.born_ms >= from_ms && m.born_ms <= to_ms).count());
            figures.push(("requests held open while frozen", held.0));
            let held_line = format!("{} requests held open at t={:.2}s ({:.1}s into the burst)", held.0, secs(held.1), secs(held.1 - b));
            match started {
                Err(e) if held.0 <= MAX_IN_FLIGHT => Check::error("inflight-bounded", "sends in flight stay bounded when the broker stalls", format!("{held_line}; could not read {TOPIC}: {e}")),
                _ => {
                    let started = started.unwrap_or(0);
                    figures.push(("sends started in the burst's first second", started));
                    let started_line = format!("{started} sends started in the first {}s of the burst (messages born then, stored after the broker resumed)", HELD_AFTER.as_secs());
                    let summary = format!("{held_line}; {started_line}; limit {MAX_IN_FLIGHT}");
                    let evidence = [held_line.clone(), started_line.clone(), format!("burst of {BURST} at t={:.1}s; broker frozen {:.1}-{:.1}s", secs(b), secs(s.stall), secs(s.resume))];
                    if held.0.max(started) <= MAX_IN_FLIGHT {
                        Check::pass("inflight-bounded", "sends in flight stay bounded when the broker stalls", summary)
                    } else {
                        Check::fail("inflight-bounded", "sends in flight stay bounded when the broker stalls", format!("more than {MAX_IN_FLIGHT} sends in flight while the broker was frozen: {summary}")).with_evidence(evidence)
                    }
                }
            }
        }
    };
    for (name, value) in figures {
        ctx.figure(name, value as f64, "");
    }
    ctx.judge(inflight);

    ctx.judge(match stop {
        Err(e) => Check::error("clean-shutdown", "on SIGTERM it shuts down cleanly", e.to_string()),
        Ok(s) if s.success => Check::pass("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("exited with {} after {:.1}s", s.status, s.took.as_secs_f64())),
        Ok(s) if s.exited_in_time => Check::fail("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("it died with {} instead of shutting its producer down and exiting 0", s.status)),
        Ok(s) => Check::fail("clean-shutdown", "on SIGTERM it shuts down cleanly", format!("still running {}s after SIGTERM; killed ({})", SHUTDOWN_GRACE.as_secs(), s.status)),
    });
}

/// The broker's schedule: healthy, frozen (the burst's cue goes out on
/// `stalled`), healthy, stopped, restarted, healthy; then the load stops.
async fn drive_faults<P: Platform>(platform: &mut P, progress: &mut dyn Progress, t0: Instant, stalled: oneshot::Sender<()>, done: &AtomicBool) -> Result<Schedule, String> {
    let mut s = Schedule::default();
    let r: Result<(), String> = async {
        let fault = |f: BrokerFault, e: crate::platform::PlatformError| format!("{f:?}: {e}");
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0) + HEALTHY_FIRST).await;
        progress.phase(&format!("freezing the broker (SIGSTOP) for {}s", STALL.as_secs()));
        s.stall = t0.elapsed();
        platform.broker_fault(BrokerFault::Stall).await.map_err(|e| fault(BrokerFault::Stall, e))?;
        let _ = stalled.send(());
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0) + s.stall + STALL).await;
        platform.broker_fault(BrokerFault::Resume).await.map_err(|e| fault(BrokerFault::Resume, e))?;
        s.resume = t0.elapsed();
        tokio::time::sleep(BETWEEN_FAULTS).await;
        progress.phase(&format!("killing the broker (SIGKILL), restarting it {}s later", BROKER_DOWN.as_secs()));
        s.kill = t0.elapsed();
        platform.broker_fault(BrokerFault::Kill).await.map_err(|e| fault(BrokerFault::Kill, e))?;
        s.killed = t0.elapsed();
        tokio::time::sleep(BROKER_DOWN).await;
        s.restart = t0.elapsed();
        platform.broker_fault(BrokerFault::Restart).await.map_err(|e| fault(BrokerFault::Restart, e))?;
        s.restarted = t0.elapsed();
        progress.phase(&format!("broker back after {:.1}s; load goes on {}s", (s.restarted - s.kill).as_secs_f64(), AFTER_RESTART.as_secs()));
        tokio::time::sleep(AFTER_RESTART).await;
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

fn status_text(status: Option<u16>) -> String {
    status.map_or(format!("no answer within {}s", HTTP_TIMEOUT.as_secs()), |s| format!("HTTP {s}"))
}
