//! The verifier: drives each level's scenario through a [`Platform`] and
//! judges it, one checker per level. [`report`] is the contract with the CLI
//! and the operator.

// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

pub mod broker;
pub mod cluster;
pub mod levels;
pub mod local;
pub mod platform;
pub mod progress;
pub mod run;
pub mod workload;

pub use dojo_report as report;
pub use platform::Platform;
pub use report::{Check, Figure, Report, Verdict};

/// Unix milliseconds: what the world's `wall_ms` and the broker's timestamps count.
pub fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
