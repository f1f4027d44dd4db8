//! `make bench-operator`: the operator under load on the real control plane.
//! Creates BENCH_CHALLENGES (default 1000) level-3 Challenges at once and
//! prints the time until all are Running, reconcile p50/p99, API requests
//! per Challenge and the operator's peak RSS. kwok runs the pods; the bench
//! adds fake nodes so that every pod fits.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use dojo_crds::Challenge;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams};

/// Pods per level-3 Challenge: name server, broker, workload, verifier.
const PODS_PER_CHALLENGE: usize = 4;
/// Few, large fake nodes: each is one more heartbeat for kwok to send, and
/// a node whose heartbeats fall 5 minutes behind on a busy machine turns
/// NotReady, taking its pods' readiness with it for good (kwok readies a
/// pod only once).
const PODS_PER_NODE: usize = 1000;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_CHALLENGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let timeout = Duration::from_secs(
        std::env::var("BENCH_TIMEOUT_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let cp = plane().await;
    add_nodes(cp, (n * PODS_PER_CHALLENGE).div_ceil(PODS_PER_NODE)).await;
    tokio::spawn(renew_node_leases(cp));
    let ns = cp.new_namespace("bench").await.unwrap();
    let op = Operator::start_with_chart_role(cp, &ns).await;
    eventually("the operator leads", common::WAIT, || async {
        Ok((op.metric("dojo_operator_leader").await == 1.0).then_some(()))
    })
    .await;

    let t0 = Instant::now();
    let api: Api<Challenge> = Api::namespaced(cp.client(), &ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut ch = sample(3, &format!("bench-{i}"));
                // The bench measures how long provisioning takes, so the
                // 300 s budget must not cut it short: with 1,000 at once the
                // controller-manager's StatefulSet controller alone needs
                // minutes for the 2,000 StatefulSet pods.
                ch.spec
                    .overrides
                    .get_or_insert_with(Default::default)
                    .provision_seconds = Some(3600);
                api.patch(
                    &format!("bench-{i}"),
                    &PatchParams::apply("dojo-bench"),
                    &Patch::Apply(&ch),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .unwrap();
    let created = t0.elapsed();

    let mut last_report = Instant::now();
    let mut peak_rss_kib = 0;
    // Done when every Challenge got to Running or ended in Error (whose
    // reasons are printed: a bench that hides failures measures nothing).
    let (all_settled, errors) = loop {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let running = list
            .iter()
            .filter(|c| c.status.as_ref().is_some_and(|s| s.running_at.is_some()))
            .count();
        let errors: Vec<String> = list
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.running_at.is_none() && s.phase == dojo_crds::Phase::Error)
            })
            .map(|c| {
                let s = c.status.clone().unwrap_or_default();
                let why = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Complete")
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_default();
                format!("{}: {why}", c.metadata.name.clone().unwrap_or_default())
            })
            .collect();
        peak_rss_kib = peak_rss_kib.max(rss_kib(op.pid(), "VmHWM"));
        if running + errors.len() == n {
            break (t0.elapsed(), errors);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            // Fake nodes that miss heartbeats under load turn NotReady and
            // take their pods' readiness with them: say so when it happens.
            let nodes = Api::<Node>::all(cp.client())
                .list(&ListParams::default().labels("type=kwok"))
                .await
                .unwrap()
                .items;
            let not_ready = nodes.iter().filter(|n| !node_ready(n)).count();
            eprintln!(
                "  {:>6.1}s: {running}/{n} Running, {} in Error, {not_ready}/{} kwok nodes NotReady",
                t0.elapsed().as_secs_f64(),
                errors.len(),
                nodes.len()
            );
            last_report = Instant::now();
        }
        if t0.elapsed() > timeout {
            let stuck: Vec<String> = list
                .iter()
                .filter(|c| c.status.as_ref().is_none_or(|s| s.running_at.is_none()))
                .take(5)
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.metadata.name.clone().unwrap_or_default(),
                        serde_json::to_string(&c.status).unwrap()
                    )
                })
                .collect();
            let pods = Api::<Pod>::namespaced(cp.client(), &ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items;
            let unready = pods
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .is_some_and(|s| s.phase.as_deref() == Some("Running"))
                        && !pod_ready(p)
                })
                .count();
            panic!(
                "only {running}/{n} Challenges Running after {timeout:?}; {unready} of {} pods are Running but not Ready \
                 (kube-controller-manager marks a node's pods NotReady when its heartbeats are more than \
                 --node-monitor-grace-period late, and kwok readies a pod only once); e.g.\n{}\noperator log: {}",
                pods.len(),
                stuck.join("\n"),
                op.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // By reason, with one example each: the reasons are what to fix.
    let mut by_reason: std::collections::BTreeMap<String, (usize, &String)> = Default::default();
    for e in &errors {
        let reason = e.split(": ").nth(1).unwrap_or_default().to_string();
        by_reason.entry(reason).or_insert((0, e)).0 += 1;
    }
    for (reason, (count, example)) in &by_reason {
        println!("  in Error ({count}): {reason}, e.g. {example}");
    }
    let metrics = op.get("/metrics").await.unwrap();
    let requests: f64 = ["apply", "get", "list", "patch", "create", "delete"]
        .iter()
        .map(|v| {
            metric_value(
                &metrics,
                &format!(r#"dojo_api_requests_total{{verb="{v}"}}"#),
            )
        })
        .sum();
    let reconciles = metric_value(&metrics, r#"dojo_reconcile_total{result="ok"}"#);
    let (p50, p99) = (quantile(&metrics, 0.5), quantile(&metrics, 0.99));

    println!("dojo-operator on kwok: {n} level-3 Challenges");
    println!(
        "  created in                     {:>8.1} s",
        created.as_secs_f64()
    );
    println!(
        "  all Running after              {:>8.1} s   ({} of {n} in Error instead)",
        all_settled.as_secs_f64(),
        errors.len()
    );
    println!(
        "  reconciles (ok)                {:>8.0}   ({:.1} per Challenge)",
        reconciles,
        reconciles / n as f64
    );
    println!("  reconcile p50                  {:>8.3} s", p50);
    println!("  reconcile p99                  {:>8.3} s", p99);
    println!(
        "  API requests per Challenge     {:>8.1}   (reconciles' own; watches not counted)",
        requests / n as f64
    );
    println!(
        "  operator peak RSS              {:>8.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    for c in cp.components() {
        println!(
            "  {:<30} {:>8.1} MiB",
            format!("{} RSS", c.name),
            c.rss_kib.unwrap_or(0) as f64 / 1024.0
        );
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `field` (VmRSS, VmHWM) of /proc/<pid>/status in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A quantile of `dojo_reconcile_duration_seconds{result="ok"}`, linearly
/// interpolated inside its bucket (as PromQL's histogram_quantile does).
fn quantile(metrics: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("dojo_reconcile_duration_seconds_bucket{")?;
            if !rest.contains(r#"result="ok""#) {
                return None;
            }
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lo;
            }
            return lo
                + (le - lo)
                    * if count > below {
                        (rank - below) / (count - below)
                    } else {
                        0.0
                    };
        }
        (lo, below) = (le, count);
    }
    lo
}

/// Renews every kwok node's Lease in kube-node-lease, as a kubelet does
/// (and kwok with --node-lease-duration-seconds, which the test
/// environment does not pass). Without it the nodes' only heartbeats are
/// kwok's status updates, which fall more than the controller-manager's
/// 5-minute grace behind once thousands of pods keep kwok and the API
/// server busy: the node lifecycle controller then marks every pod of the
/// node NotReady, for good (kwok readies a pod once), and the bench stalls.
async fn renew_node_leases(cp: &'static dojo_testenv::ControlPlane) {
    let nodes: Api<Node> = Api::all(cp.client());
    let leases: Api<Lease> = Api::namespaced(cp.client(), "kube-node-lease");
    loop {
        for node in nodes
            .list(&ListParams::default().labels("type=kwok"))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
            });
            if let Err(e) = leases
                .patch(
                    &name,
                    &PatchParams::apply("dojo-bench").force(),
                    &Patch::Apply(&lease),
                )
                .await
            {
                eprintln!("  renewing the Lease of node {name}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// More kwok nodes (the plane's three hold 750 pods), spread over the zones.
async fn add_nodes(cp: &dojo_testenv::ControlPlane, count: usize) {
    let nodes: Api<Node> = Api::all(cp.client());
    let zones = dojo_testenv::control_plane::ZONES;
    for i in 0..count {
        let name = format!("kwok-bench-{i}");
        let zone = zones[i % zones.len()];
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "topology.kubernetes.io/region": "dojo", "topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            },
            "status": {
                "allocatable": {"cpu": "256", "memory": "1Ti", "pods": PODS_PER_NODE.to_string()},
                "capacity": {"cpu": "256", "memory": "1Ti", "pods": PODS_PER_NODE.to_string()},
            },
        }))
        .unwrap();
        // Created with its status, as the plane's own nodes are: kwok keeps
        // the allocatable it finds.
        match nodes.create(&Default::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating node {name}: {e}"),
        }
    }
}
