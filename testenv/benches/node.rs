//! `make bench-node`: the real node's figures. What the bootstrap took when
//! it ran (cold), the node's warm start, each image's build time (the last
//! real build when it is up to date) and size, pod start latency (created →
//! Running) for a small image and for the RocketMQ image, and the broker's
//! time to serve in pods against the local process. Prints; asserts nothing.
//! Needs root.

#![recursion_limit = "512"]

use std::time::{Duration, Instant};

use dojo_testenv::pods::{self, phase, ready, wait_finished, wait_pod};
use dojo_testenv::{ControlPlane, RocketMq, cache, images};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Seconds from the pod's creation to the first time `done` holds, polled
/// every 100 ms from here (so a figure is at most 0.1 s late).
async fn latency(
    pods: &Api<Pod>,
    name: &str,
    created: Instant,
    done: impl Fn(&Pod) -> bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    wait_pod(pods, name, WAIT, |p| done(p).then_some(())).await?;
    Ok(created.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(reason) = dojo_testenv::node::unsupported_reason() {
        println!("SKIPPED: {reason}");
        return Ok(());
    }
    println!(
        "node bootstrap, cold (seconds each step took when `deps.sh node` built it, cache {})",
        cache::root().display()
    );
    for dir in [
        format!("node-{}", cache::KUBE_VERSION),
        format!("crictl-{}", cache::CRICTL_VERSION),
        format!("coredns-{}", cache::COREDNS_VERSION),
    ] {
        let s = std::fs::read_to_string(cache::root().join(&dir).join(".done")).unwrap_or_default();
        println!(
            "    {dir:<22} {:>6}",
            if s.trim().is_empty() {
                "-".to_string()
            } else {
                format!("{}s", s.trim())
            }
        );
    }

    let t = Instant::now();
    let cp = ControlPlane::with_real_node().await?;
    let node = cp.real_node().expect("a real node");
    println!(
        "control plane + real node, warm start to node Ready: {}",
        secs(t.elapsed())
    );
    for (phase, at) in cp.startup_phases() {
        println!("    {phase:<28} at {}", secs(*at));
    }

    let mut names = vec![
        "workload-base".to_string(),
        "rocketmq".into(),
        "operator".into(),
    ];
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "../target".into());
    if target.join("debug/dojo-verifier").is_file() {
        names.push("verifier".into());
    }
    names.push(format!(
        "workload={}",
        env!("CARGO_BIN_EXE_dojo-node-probe")
    ));
    let t = Instant::now();
    let built = tokio::task::spawn_blocking(move || images::build(&names)).await??;
    println!(
        "images (build seconds: this run, or the last real build when up to date; this run took {})",
        secs(t.elapsed())
    );
    for b in &built {
        let how = if b.cached { "last build" } else { "built now" };
        let s = b
            .seconds
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "?".into());
        println!(
            "    {:<14} {:>7.1} MiB  {s:>5} ({how})",
            b.name,
            b.bytes as f64 / 1048576.0
        );
    }
    for b in &built {
        let t = Instant::now();
        node.import_archive(&b.archive)?;
        println!(
            "    import {:<14} into containerd: {}",
            b.name,
            secs(t.elapsed())
        );
    }
    let image = |name: &str| {
        built
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.reference.clone())
            .expect("built")
    };

    let ns = cp.new_namespace("bench-node").await?;
    let pods_api: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let mut small = Vec::new();
    for i in 0..3 {
        let name = format!("small-{i}");
        let pod: Pod = pods::typed(json!({
            "metadata": {"name": name},
            "spec": pods::pod_spec(&image("workload-base"), json!({"command": ["sleep", "3600"]})),
        }))?;
        let created = Instant::now();
        pods_api.create(&PostParams::default(), &pod).await?;
        small.push(latency(&pods_api, &name, created, |p| phase(p) == "Running").await?);
    }
    println!(
        "pod start, created → Running, workload-base image: {}",
        small
            .iter()
            .map(|d| secs(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let created = Instant::now();
    let addrs = pods::create_rocketmq(&cp.client(), &ns, &image("rocketmq")).await?;
    let running = latency(&pods_api, "dojo-broker-0", created, |p| {
        phase(p) == "Running"
    })
    .await?;
    let namesrv_running = latency(&pods_api, "dojo-namesrv-0", created, |p| {
        phase(p) == "Running"
    })
    .await?;
    let broker_ready = latency(&pods_api, "dojo-broker-0", created, ready).await?;
    println!(
        "pod start, created → Running, rocketmq image: name server {}, broker {}",
        secs(namesrv_running),
        secs(running)
    );
    pods_api
        .create(
            &PostParams::default(),
            &pods::probe_pod("client", &image("workload"), &addrs.headless)?,
        )
        .await?;
    let (_, state) = wait_finished(&pods_api, "client", WAIT).await?;
    let served = created.elapsed();
    println!(
        "RocketMQ in pods: broker Ready (port open) {} after the StatefulSets were created; a client pod's send + receive done at {} (exit {})",
        secs(broker_ready),
        secs(served),
        state.exit_code
    );
    drop(cp);

    let t = Instant::now();
    let mq = RocketMq::start().await?;
    println!(
        "RocketMQ as local processes (name server + broker), start to send + receive: {}",
        secs(t.elapsed())
    );
    drop(mq);
    Ok(())
}
