//! The `Challenge` custom resource (`dojo.rmq.dev/v1alpha1`, short name
//! `chal`): the types, the facts about each level, and the CRD with its CEL
//! validation rules. The generated YAML is committed as `crds/challenge.yaml`.

pub mod challenge;
pub mod levels;
pub mod schema;

pub use challenge::*;
pub use levels::{LEVELS, Level, level_facts};
pub use schema::{InstallError, crd, crd_yaml, install};

/// The API group of every Dojo resource and label prefix.
pub const GROUP: &str = "dojo.rmq.dev";
