//! The RocketMQ Dojo workload kit: what every level's workload needs besides
//! the part the level is about.
//!
//! - [`Env`]: the environment contract (`NAMESRV_ADDR`, `WORLD_URL`,
//!   `DOJO_LEVEL`, `DOJO_INSTANCE`, and `DOJO_LISTEN_ADDR` for workloads that
//!   serve HTTP), the same locally and in a cluster;
//! - [`Clients`]: the `rocketmq-client-rust` runtime with producer, consumer
//!   and admin builders pointed at the name server;
//! - [`WorldClient`]: calls to the world (ledger, inventory, key-value
//!   store...), each tagged with the instance and a request id.

// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

mod env;
mod rmq;
mod world;

pub use env::Env;
pub use rmq::{Clients, KitError, shutdown_pull_consumer_in_background};
pub use world::{WorldClient, WorldError};

/// The RocketMQ client crates, re-exported so a workload needs one dependency.
pub use rocketmq_client_rust as client;
pub use rocketmq_model as model;
