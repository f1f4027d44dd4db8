//! The bootstrap refuses clearly when a toolchain is missing, and the crate
//! refuses clearly when the bootstrap has not run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PATH holding only the shell tools `deps.sh` needs: no java, mvn or go.
fn bare_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "bash", "mkdir", "rm", "du", "cut", "tail", "dirname", "touch", "env", "cat",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

fn run_deps(step: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = bare_path(tmp.path());
    let out = Command::new(path.join("bash"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bootstrap/deps.sh"))
        .arg(step)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", tmp.path())
        .env("DOJO_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn missing_java_names_the_step_and_what_to_install() {
    let (ok, out) = run_deps("rocketmq");
    assert!(!ok, "must fail without java: {out}");
    assert!(
        out.contains("FAILED step rocketmq")
            && out.contains("'java' not found")
            && out.contains("JDK 17"),
        "{out}"
    );
}

#[test]
fn missing_go_names_the_step_and_what_to_install() {
    for step in ["kube", "etcd", "kwok", "helm"] {
        let (ok, out) = run_deps(step);
        assert!(!ok, "must fail without go: {out}");
        assert!(
            out.contains(&format!("FAILED step {step}"))
                && out.contains("'go' not found")
                && out.contains("Go 1.24"),
            "{out}"
        );
    }
}

#[test]
fn unknown_step_lists_the_known_ones() {
    let (ok, out) = run_deps("kafka");
    assert!(!ok);
    assert!(
        out.contains("unknown target 'kafka'")
            && out.contains("rocketmq, kube, etcd, kwok, helm, prometheus, node, all"),
        "{out}"
    );
}

#[test]
fn servers_refuse_to_start_before_the_bootstrap_ran() {
    let empty = tempfile::tempdir().unwrap();
    let err = dojo_testenv::cache::rocketmq_lib_in(empty.path()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("make deps") && text.contains("Apache RocketMQ"),
        "{text}"
    );
}
