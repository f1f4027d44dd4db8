//! `make bench`: how long each part of the test environment takes to come up
//! warm, what the cold bootstrap took when it ran, and the memory of every
//! component. Prints a table; asserts nothing.

#![recursion_limit = "512"]

use std::time::Instant;

use dojo_testenv::process::Component;
use dojo_testenv::{ControlPlane, DLedgerGroup, RocketMq, cache};

fn print_components(components: &[Component]) {
    for c in components {
        let rss = c
            .rss_kib
            .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into());
        println!("    {:<28} RSS {rss:>9}", c.name);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "cold bootstrap (seconds each step took when `make deps` installed it, cache {})",
        cache::root().display()
    );
    for (tool, dir) in [
        ("rocketmq", format!("rocketmq-{}", cache::ROCKETMQ_VERSION)),
        ("etcd", format!("etcd-{}", cache::ETCD_VERSION)),
        ("kwok", format!("kwok-{}", cache::KWOK_VERSION)),
        ("kube", format!("kube-{}", cache::KUBE_VERSION)),
    ] {
        let secs =
            std::fs::read_to_string(cache::root().join(&dir).join(".done")).unwrap_or_default();
        let secs = secs.trim();
        println!(
            "    {tool:<10} {:>6}",
            if secs.is_empty() {
                "-".to_string()
            } else {
                format!("{secs}s")
            }
        );
    }

    let t = Instant::now();
    let mq = RocketMq::start().await?;
    println!(
        "RocketMQ (name server + broker), warm start to send+receive: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    print_components(&mq.components());
    drop(mq);

    let t = Instant::now();
    let group = DLedgerGroup::start().await?;
    println!(
        "DLedger group (name server + 3 brokers), warm start to leader + send+receive: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    print_components(&group.components());
    drop(group);

    let t = Instant::now();
    let plane = ControlPlane::start().await?;
    println!(
        "Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok + 3 nodes), warm start to ready: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    for (phase, at) in plane.startup_phases() {
        println!("    {phase:<28} at {:.1}s", at.as_secs_f64());
    }
    print_components(&plane.components());
    Ok(())
}
