//! The RocketMQ client runtime that workloads, the verifier, tests and
//! benchmarks share: `rocketmq-client-rust` needs an application-owned
//! runtime and telemetry handle, and an orderly shutdown (clients first, then
//! the runtime).

use std::sync::Arc;

#[allow(deprecated)]
use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, DefaultMQAdminExt, DefaultMQProducer,
    DefaultMQPullConsumer, DefaultMQPushConsumer,
};
use rocketmq_observability::TelemetryRuntimeGuard;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

/// Setting up the client runtime or a client failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct KitError {
    pub what: &'static str,
    pub detail: String,
}

type Result<T> = std::result::Result<T, KitError>;

fn failed(what: &'static str, detail: impl std::fmt::Display) -> KitError {
    KitError {
        what,
        detail: detail.to_string(),
    }
}

/// Owns a client runtime; builds producers, consumers and admin sessions
/// pointed at one name server.
pub struct Clients {
    namesrv: String,
    owner: std::sync::Mutex<Option<RuntimeOwner>>,
    runtime: Arc<ClientRuntime>,
    _telemetry: TelemetryRuntimeGuard,
}

impl Clients {
    pub fn new(scope: &'static str, namesrv: impl Into<String>) -> Result<Clients> {
        let owner = RuntimeOwner::plan(RuntimeConfig {
            thread_name: format!("dojo-{scope}"),
            ..Default::default()
        })
        .map_err(|e| failed("RocketMQ client runtime", format!("{e:?}")))?
        .build()
        .map_err(|e| failed("RocketMQ client runtime", e))?;
        let telemetry = TelemetryRuntimeGuard::noop();
        let runtime = ClientRuntime::try_new(
            owner.root_context().component(scope),
            ClientRuntimeConfig::default(),
            telemetry.handle(),
        )
        .map_err(|e| failed("RocketMQ client runtime", e))?;
        Ok(Clients {
            namesrv: namesrv.into(),
            owner: std::sync::Mutex::new(Some(owner)),
            runtime,
            _telemetry: telemetry,
        })
    }

    pub fn namesrv(&self) -> &str {
        &self.namesrv
    }

    pub fn runtime(&self) -> Arc<ClientRuntime> {
        Arc::clone(&self.runtime)
    }

    /// A producer (not started) of `group`.
    pub fn producer(&self, group: &str) -> DefaultMQProducer {
        DefaultMQProducer::builder(self.runtime())
            .producer_group(group.to_string())
            .name_server_addr(self.namesrv.clone())
            .build()
    }

    /// A push consumer (not started) of `group`.
    pub fn push_consumer(&self, group: &str) -> DefaultMQPushConsumer {
        DefaultMQPushConsumer::builder(self.runtime())
            .consumer_group(group.to_string())
            .name_server_addr(self.namesrv.clone())
            .build()
    }

    /// A classic pull consumer (not started) of `group`: deprecated for
    /// applications, but the one client that reads an exact queue offset,
    /// which is what probes and checkers need.
    #[allow(deprecated)]
    pub fn pull_consumer(&self, group: &str) -> Result<DefaultMQPullConsumer> {
        DefaultMQPullConsumer::builder(self.runtime())
            .consumer_group(group.to_string())
            .name_server_addr(self.namesrv.clone())
            .build()
            .map_err(|e| failed("pull consumer", e))
    }

    /// An admin session (not started).
    pub fn admin(&self) -> DefaultMQAdminExt {
        let mut admin = DefaultMQAdminExt::new(self.runtime());
        admin.set_namesrv_addr(&self.namesrv);
        admin
    }

    /// Shuts the runtime down; call after every client built from it is
    /// shut down. Takes `&self` so a service can share its `Clients`.
    pub async fn shutdown(&self) {
        let _ = self.runtime.shutdown().await;
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(owner) = owner {
            let _ = owner.shutdown_tasks().await;
            let _ = owner.shutdown_background();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Dropping a runtime inside async code panics; hand it to the background.
        if let Some(owner) = self
            .owner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = owner.shutdown_background();
        }
    }
}

/// Shuts a pull consumer down without waiting: in rocketmq-client-rust 1.0
/// its shutdown takes ~20 s (the lite-pull teardown it wraps), and nothing
/// that reads exact offsets needs to wait for it.
#[allow(deprecated)]
pub fn shutdown_pull_consumer_in_background(consumer: DefaultMQPullConsumer) {
    tokio::spawn(async move {
        let _ = consumer.shutdown().await;
    });
}
