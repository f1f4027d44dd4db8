//! What both test binaries read: the crate's folders of YAML cases.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A folder of this crate.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The `.yaml` files of folder `name`, sorted.
pub fn yaml_files(name: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}
