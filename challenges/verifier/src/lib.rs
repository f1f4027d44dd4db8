//! The verifier: drives each level's scenario and judges it, one checker per
//! level. `report` is the contract with the CLI and the operator.

pub mod report;

pub use report::{Check, Figure, Report, Verdict};
