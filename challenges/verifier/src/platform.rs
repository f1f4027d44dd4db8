//! What a level may do to the world around the workload. Levels drive their
//! scenario only through this trait, so the same scenario runs on local
//! processes ([`crate::local::LocalPlatform`]) and on a Challenge's pods
//! ([`crate::kube::KubePlatform`]).

use std::time::Duration;

/// A platform action that failed; the scenario reports it as an `error`
/// verdict (the environment failed, not the learner).
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("workload instance {instance}: {detail}")]
    Workload { instance: String, detail: String },
    #[error("broker: {0}")]
    Broker(String),
    #[error("{0}")]
    Other(String),
}

/// How a workload instance ended when asked to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct StopOutcome {
    /// Exited on its own within the grace period (else it was killed).
    pub exited_in_time: bool,
    /// `exit status: 0`, `signal: 15 (SIGTERM)`, ...
    pub status: String,
    pub success: bool,
    pub took: Duration,
}

/// Threads and memory of a workload instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkloadStats {
    pub threads: u64,
    pub rss_kib: u64,
}

/// Peak resident memory, in KiB: the report's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeakRss {
    pub workload: Option<u64>,
    pub broker: Option<u64>,
}

/// Faults on the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerFault {
    /// SIGTERM, graceful.
    Stop,
    /// SIGKILL.
    Kill,
    /// Frozen: connections stay open, nothing is answered.
    Stall,
    /// Unfreeze after `Stall`.
    Resume,
    /// Start again after `Stop`/`Kill`, on the same store; returns once serving.
    Restart,
}

#[allow(async_fn_in_trait)] // Used generically, never as `dyn`.
pub trait Platform {
    /// The `NAMESRV_ADDR` workloads get, reachable from the verifier too.
    fn namesrv_addr(&self) -> String;

    /// Starts (or starts again) workload instance `instance`.
    async fn start_workload(&mut self, instance: &str) -> Result<(), PlatformError>;

    /// Where instance `instance` serves HTTP, as the verifier reaches it; it
    /// may change when the instance starts again (in a cluster, a new pod).
    fn workload_addr(&self, instance: &str) -> Option<String>;

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop_workload(
        &mut self,
        instance: &str,
        grace: Duration,
    ) -> Result<StopOutcome, PlatformError>;

    /// SIGKILL: a crash.
    async fn kill_workload(&mut self, instance: &str) -> Result<(), PlatformError>;

    async fn pause_workload(&mut self, instance: &str) -> Result<(), PlatformError>;

    async fn resume_workload(&mut self, instance: &str) -> Result<(), PlatformError>;

    /// `None` while the instance runs; `Some(status)` once it exited.
    async fn workload_exit(&mut self, instance: &str) -> Option<String>;

    /// Threads and memory, if the platform can see them.
    async fn workload_stats(&mut self, instance: &str) -> Option<WorkloadStats>;

    /// The last lines the instance wrote (for evidence when it crashes).
    async fn workload_log_tail(&mut self, instance: &str, lines: usize) -> String;

    /// The highest resident memory seen so far of any workload instance and
    /// of the broker, in KiB, where the platform can see them.
    async fn peak_rss_kib(&mut self) -> PeakRss;

    async fn broker_fault(&mut self, fault: BrokerFault) -> Result<(), PlatformError>;
}
