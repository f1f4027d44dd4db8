//! The verifier: drives each level's scenario through a [`Platform`] and
//! judges it, one checker per level. [`report`] is the contract with the CLI
//! and the operator.

// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

pub mod broker;
pub mod levels;
pub mod local;
pub mod platform;
pub mod progress;
pub mod run;
pub mod workload;

pub use platform::Platform;
pub use dojo_report as report;
pub use report::{Check, Figure, Report, Verdict};
