//! The `Challenge` custom resource types (filled by the CRD issue).
