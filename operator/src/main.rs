//! `dojo-operator`: reconciles `Challenge`s (see the crate docs).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dojo_operator::leader::LeaseConfig;
use dojo_operator::{Options, run};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The RocketMQ Dojo operator: turns Challenges into running exercises and verdicts"
)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "DOJO_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "dojo-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between a standby's attempts to take the Lease.
    #[arg(long, default_value_t = 2)]
    retry_seconds: u64,
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// How long a terminated verifier pod's report may lag its termination.
    #[arg(long, default_value_t = 20)]
    report_grace_seconds: u64,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "dojo".into());
        format!("{host}-{}", std::process::id())
    });
    let lease = LeaseConfig {
        namespace: args.lease_namespace,
        name: args.lease_name,
        identity,
        duration: Duration::from_secs(args.lease_seconds),
        renew_every: Duration::from_secs((args.lease_seconds / 3).max(1)),
        retry_every: Duration::from_secs(args.retry_seconds.max(1)),
    };
    let opts = Options {
        namespace: args.namespace,
        lease,
        http_addr: args.http_addr,
        report_grace: Duration::from_secs(args.report_grace_seconds),
        concurrency: args.concurrency,
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "dojo-operator: no Kubernetes client ({e}): set KUBECONFIG or run in a pod with a ServiceAccount"
            );
            std::process::exit(2);
        }
    };
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    // Stop reconciling, release the Lease for the standby, exit 0.
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
    };
    if let Err(e) = run(client, opts, shutdown).await {
        eprintln!("dojo-operator: {e}");
        std::process::exit(1);
    }
}
