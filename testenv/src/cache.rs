//! Where the bootstrap (`testenv/bootstrap/deps.sh`) installs the pinned tools.
//! The versions here and in `deps.sh` must agree; a test checks it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const ROCKETMQ_VERSION: &str = "5.5.0";
pub const KUBE_VERSION: &str = "v1.34.4";
pub const ETCD_VERSION: &str = "v3.6.16";
pub const KWOK_VERSION: &str = "v0.7.0";
pub const CRICTL_VERSION: &str = "v1.34.0";
pub const COREDNS_VERSION: &str = "v1.14.7";

/// The cache root: `$DOJO_CACHE`, else `~/.cache/rocketmq-dojo`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOJO_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("rocketmq-dojo")
}

fn installed(tool: &'static str, step: &'static str, dir: PathBuf) -> Result<PathBuf> {
    if dir.join(".done").is_file() {
        Ok(dir)
    } else {
        Err(Error::NotInstalled {
            tool,
            path: dir,
            step,
        })
    }
}

/// The folder of RocketMQ jars (`lib/*.jar`).
pub fn rocketmq_lib() -> Result<PathBuf> {
    rocketmq_lib_in(&root())
}

/// Path of a Kubernetes binary (`kube-apiserver`, `kubectl`, ...).
pub fn kube_bin(name: &str) -> Result<PathBuf> {
    kube_bin_in(&root(), name)
}

pub fn etcd_bin() -> Result<PathBuf> {
    etcd_bin_in(&root())
}

pub fn kwok_bin() -> Result<PathBuf> {
    kwok_bin_in(&root())
}

// The `_in` variants take the cache root explicitly, so a caller can point at
// another cache without touching the process environment.

pub fn rocketmq_lib_in(root: &Path) -> Result<PathBuf> {
    Ok(installed(
        "Apache RocketMQ",
        "rocketmq",
        root.join(format!("rocketmq-{ROCKETMQ_VERSION}")),
    )?
    .join("lib"))
}

pub fn kube_bin_in(root: &Path, name: &str) -> Result<PathBuf> {
    Ok(installed(
        "Kubernetes",
        "kube",
        root.join(format!("kube-{KUBE_VERSION}")),
    )?
    .join("bin")
    .join(name))
}

pub fn etcd_bin_in(root: &Path) -> Result<PathBuf> {
    Ok(
        installed("etcd", "etcd", root.join(format!("etcd-{ETCD_VERSION}")))?
            .join("bin")
            .join("etcd"),
    )
}

pub fn kwok_bin_in(root: &Path) -> Result<PathBuf> {
    Ok(
        installed("kwok", "kwok", root.join(format!("kwok-{KWOK_VERSION}")))?
            .join("bin")
            .join("kwok"),
    )
}

/// Path of a binary of the real node (`kubelet`, `kube-proxy`, `pause`).
pub fn node_bin_in(root: &Path, name: &str) -> Result<PathBuf> {
    Ok(installed(
        "the real node (kubelet, kube-proxy)",
        "node",
        root.join(format!("node-{KUBE_VERSION}")),
    )?
    .join("bin")
    .join(name))
}

pub fn crictl_bin_in(root: &Path) -> Result<PathBuf> {
    Ok(installed(
        "crictl",
        "node",
        root.join(format!("crictl-{CRICTL_VERSION}")),
    )?
    .join("bin")
    .join("crictl"))
}

pub fn coredns_bin_in(root: &Path) -> Result<PathBuf> {
    Ok(installed(
        "CoreDNS",
        "node",
        root.join(format!("coredns-{COREDNS_VERSION}")),
    )?
    .join("bin")
    .join("coredns"))
}

/// Fails with a clear message when `program` is not on PATH.
pub fn require_program(program: &'static str, hint: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(Error::MissingProgram { program, hint })
}

#[cfg(test)]
mod tests {
    /// The bootstrap script and this module pin the same versions.
    #[test]
    fn versions_match_bootstrap() {
        let script = include_str!("../bootstrap/deps.sh");
        for (var, version) in [
            ("ROCKETMQ_VERSION", super::ROCKETMQ_VERSION),
            ("KUBE_VERSION", super::KUBE_VERSION),
            ("ETCD_VERSION", super::ETCD_VERSION),
            ("KWOK_VERSION", super::KWOK_VERSION),
            ("CRICTL_VERSION", super::CRICTL_VERSION),
            ("COREDNS_VERSION", super::COREDNS_VERSION),
        ] {
            assert!(
                script.contains(&format!("\n{var}={version}\n")),
                "deps.sh must pin {var}={version}"
            );
        }
    }
}
