//! The real test environment of RocketMQ Dojo, started on loopback by the
//! project itself (see `bootstrap/deps.sh` for what gets installed):
//!
//! - [`RocketMq`]: an Apache RocketMQ name server and broker;
//! - [`DLedgerGroup`]: a name server and three brokers forming one DLedger
//!   group, one broker per zone;
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler and kwok with three fake nodes in three zones.
//!
//! Everything listens on 127.0.0.1 on free ports, keeps its data and logs in a
//! temporary folder, and is torn down on drop.

// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

pub mod cache;
pub mod certs;
pub mod control_plane;
pub mod dledger;
mod error;
pub mod ports;
pub mod process;
pub mod rocketmq;

pub use dojo_kit::Clients;
pub use control_plane::{ControlPlane, ControlPlaneBuilder};
pub use dledger::DLedgerGroup;
pub use error::{Error, Result};
pub use rocketmq::{BrokerConfig, RocketMq, RocketMqBuilder, Role, Server};
