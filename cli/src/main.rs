//! `dojo`: RocketMQ Dojo on one machine, no cluster needed.
// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use dojo_testenv::{ControlPlane, RocketMq};

#[derive(Parser)]
#[command(name = "dojo", version, about = "RocketMQ Dojo: hands-on RocketMQ levels against a real cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local RocketMQ (and with --kube a Kubernetes control plane),
    /// print where everything listens, and keep it up until Ctrl-C.
    Up {
        /// Also start etcd, kube-apiserver, controller-manager, scheduler and kwok.
        #[arg(long)]
        kube: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { kube } => match up(kube).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dojo up: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn up(kube: bool) -> dojo_testenv::Result<()> {
    let t0 = Instant::now();
    println!("starting RocketMQ (name server + broker) ...");
    let mq = RocketMq::start().await?;
    println!("RocketMQ ready in {:.1}s", t0.elapsed().as_secs_f64());
    println!("  NAMESRV_ADDR={}", mq.namesrv_addr());
    println!("  broker       {}", mq.broker_addr());
    println!("  data + logs  {}", mq.dir().display());
    let plane = if kube {
        let t1 = Instant::now();
        println!("starting the Kubernetes control plane ...");
        let plane = ControlPlane::start().await?;
        println!("control plane ready in {:.1}s", t1.elapsed().as_secs_f64());
        println!("  API server   {}", plane.server_url());
        println!("  KUBECONFIG={}", plane.kubeconfig_path().display());
        Some(plane)
    } else {
        None
    };
    println!("up; Ctrl-C stops everything");
    let _ = tokio::signal::ctrl_c().await;
    drop(plane);
    drop(mq);
    println!("stopped");
    Ok(())
}
