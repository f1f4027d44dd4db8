//! The `Challenge` custom resource (`dojo.rmq.dev/v1alpha1`, short name
//! `chal`): the types, the facts about each level, and the CRD with its CEL
//! validation rules. The generated YAML is committed as `crds/challenge.yaml`.

// The resource and its CRD need kube and schemars; the level facts need
// nothing, which is all `dojo` takes from this crate.
#[cfg(feature = "crd")]
// kube's `printcolumn(...)` repeats `type_` per column, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
pub mod challenge;
pub mod levels;
#[cfg(feature = "crd")]
pub mod schema;

#[cfg(feature = "crd")]
pub use challenge::*;
pub use levels::{LEVELS, Level, level_facts};
#[cfg(feature = "crd")]
pub use schema::{InstallError, crd, crd_yaml, install};

/// The API group of every Dojo resource and label prefix.
pub const GROUP: &str = "dojo.rmq.dev";
