//! The real test environment of RocketMQ Dojo, started on loopback by the
//! project itself (see `bootstrap/deps.sh` for what gets installed):
//!
//! - [`RocketMq`]: an Apache RocketMQ name server and broker;
//! - [`DLedgerGroup`]: a name server and three brokers forming one DLedger
//!   group, one broker per zone;
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler and kwok with three fake nodes in three zones, and on
//!   request a real node ([`node`]: containerd, kubelet, kube-proxy, CoreDNS)
//!   running the project's images ([`images`]).
//!
//! Everything listens on 127.0.0.1 on free ports, keeps its data and logs in a
//! temporary folder, and is torn down on drop.
//!
//! The Kubernetes parts ([`ControlPlane`], [`node`], [`images`], [`pods`],
//! [`certs`]) are behind the default feature `kube`; `dojo` and the verifier
//! image use only the RocketMQ runner and build without it.

// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

pub mod cache;
#[cfg(feature = "kube")]
pub mod certs;
#[cfg(feature = "kube")]
pub mod control_plane;
pub mod dledger;
mod error;
#[cfg(feature = "kube")]
pub mod images;
#[cfg(feature = "kube")]
pub mod node;
#[cfg(feature = "kube")]
pub mod pods;
pub mod ports;
pub mod process;
pub mod rocketmq;

#[cfg(feature = "kube")]
pub use control_plane::{ControlPlane, ControlPlaneBuilder};
pub use dledger::DLedgerGroup;
pub use dojo_kit::Clients;
pub use error::{Error, Result};
pub use rocketmq::{BrokerConfig, RocketMq, RocketMqBuilder, Role, Server};

/// For tests: polls `probe` until it yields a value; panics with its last
/// complaint after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let start = std::time::Instant::now();
    let mut last = String::from("nothing observed yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not after {timeout:?}; last seen: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
