//! The world: the small HTTP service a level's verifier runs in-process and
//! the learner's workload calls for every business effect (orders, ledger,
//! inventory, points, a key-value store, rate-limited downstream APIs, an
//! event recorder). It records every call with time, caller instance and
//! request id, and the verifier judges that record, never what the workload
//! says about itself. The HTTP API is documented in this crate's README.
//!
//! ```no_run
//! # async fn run() -> Result<(), dojo_world::WorldError> {
//! use dojo_world::{Kind, World, WorldConfig};
//! let world = World::start("127.0.0.1:0".parse().unwrap(), WorldConfig::default()).await?;
//! let world_url = world.url(); // hand to the workload as WORLD_URL
//! // ... run the scenario ...
//! let history = world.history();
//! let twice: Vec<_> = history.per_order(Kind::Debit).into_iter().filter(|(_, d)| d.len() > 1).collect();
//! world.shutdown().await?;
//! # Ok(()) }
//! ```

mod config;
mod downstream;
mod error;
mod history;
mod http;
mod inventory;
mod kv;
mod ledger;
mod orders;
mod state;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    DownstreamConfig, Fault, FaultRule, InventoryConfig, LedgerConfig, OrdersConfig, Repeats,
    StateMachine, WorldConfig,
};
pub use error::WorldError;
pub use history::{Effect, History, Item, Kind, KvCas, Op, Outcome};
pub use state::Order;

use state::{Shared, State};

/// How long `shutdown` lets in-flight requests finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts worlds; see [`World::start`].
pub struct World;

impl World {
    /// Binds `addr` (e.g. `127.0.0.1:0` locally, `0.0.0.0:PORT` in a pod)
    /// and serves until the handle is shut down or dropped. Must be called
    /// inside a Tokio runtime.
    pub async fn start(addr: SocketAddr, config: WorldConfig) -> Result<WorldHandle, WorldError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WorldError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| WorldError::Bind { addr, source })?;
        let shared: Shared = Arc::new(Mutex::new(State::new(config)));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(addr = %bound, "world listening");
        Ok(WorldHandle {
            addr: bound,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running world. Dropping it stops the server without waiting.
pub struct WorldHandle {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl WorldHandle {
    /// The address actually bound (the port is chosen when binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for the workload's `WORLD_URL`, without a trailing slash.
    /// An unspecified bind address (`0.0.0.0`) is reached through loopback
    /// here; in a cluster the workload gets the Service's name instead.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A copy of every effect recorded so far.
    pub fn history(&self) -> History {
        History {
            effects: self.shared.lock().effects().to_vec(),
        }
    }

    /// The orders table, sorted by order id.
    pub fn orders(&self) -> Vec<Order> {
        let mut orders: Vec<Order> = self.shared.lock().orders.values().cloned().collect();
        orders.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        orders
    }

    pub fn order(&self, order_id: &str) -> Option<Order> {
        self.shared.lock().orders.get(order_id).cloned()
    }

    pub fn config(&self) -> WorldConfig {
        self.shared.lock().config().clone()
    }

    /// Replaces the configuration; calls from now on see it. Fault counters
    /// restart when the faults change.
    pub fn set_config(&self, config: WorldConfig) {
        self.shared.lock().set_config(config);
    }

    /// Changes part of the configuration, e.g. a fault schedule mid-run.
    pub fn update_config(&self, change: impl FnOnce(&mut WorldConfig)) {
        let mut state = self.shared.lock();
        let mut config = state.config().clone();
        change(&mut config);
        state.set_config(config);
    }

    /// Stops accepting connections, lets in-flight requests finish (for a
    /// few seconds at most) and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), WorldError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(served) => served?.map_err(WorldError::Serve),
            Err(_) => {
                tracing::warn!(
                    "world requests still running after the grace period; dropping them"
                );
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for WorldHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
