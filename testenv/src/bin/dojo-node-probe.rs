//! Runs in a pod of the real-node tests: sends a message through the name
//! server at `NAMESRV_ADDR` and reads it back (a producer and a pull
//! consumer, as the environment's own readiness probe does). Exits 0 when
//! the message came back, 1 when not, 2 without `NAMESRV_ADDR`.

#![recursion_limit = "512"]

use std::time::Duration;

use dojo_testenv::Clients;
use dojo_testenv::rocketmq::probe_send_receive;

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("api") {
        std::process::exit(match apiserver_version().await {
            Ok(v) => {
                println!("apiserver {v} answered in-cluster");
                0
            }
            Err(e) => {
                eprintln!("no answer from the apiserver in-cluster: {e}");
                1
            }
        });
    }
    let Ok(addr) = std::env::var("NAMESRV_ADDR") else {
        eprintln!("NAMESRV_ADDR is not set: the pod must name the name server (host:port)");
        std::process::exit(2);
    };
    let clients = match Clients::new("node-probe", addr.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("RocketMQ clients for {addr}: {e}");
            std::process::exit(1);
        }
    };
    match probe_send_receive(&clients, Duration::from_secs(120)).await {
        Ok(()) => println!("sent and received a message through {addr}"),
        Err(e) => {
            eprintln!("no round trip through {addr}: {e}");
            std::process::exit(1);
        }
    }
}

async fn apiserver_version() -> Result<String, kube::Error> {
    let client = kube::Client::try_default().await?;
    Ok(client.apiserver_version().await?.git_version)
}
