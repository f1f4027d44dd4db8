//! Building a learner's workload: a release build in its folder, with
//! one target directory in the cache shared by every workload, so the
//! RocketMQ client is compiled once and a learner's rebuild takes seconds.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Building the workload failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not a workload folder: it has no Cargo.toml (start from `dojo reset N`)")]
    NotAWorkload(PathBuf),
    #[error("the workload in {dir} does not build; fix the errors below (full log: {log}):\n{errors}")]
    Compile { dir: PathBuf, log: PathBuf, errors: String },
    #[error("the workload in {0} built no binary: its Cargo.toml needs a [[bin]] or src/main.rs")]
    NoBinary(PathBuf),
    #[error("`cargo` could not be run ({0}): install Rust (rustup) and make sure cargo is on PATH")]
    Cargo(std::io::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// The cache folder all workloads build into.
pub fn target_dir() -> PathBuf {
    dojo_testenv::cache::root().join("workload-target")
}

/// The kit every workload depends on by path.
pub fn kit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("kit").canonicalize().expect("challenges/kit exists beside the verifier")
}

#[derive(Debug)]
pub struct Built {
    pub binary: PathBuf,
    pub took: Duration,
}

/// Builds the workload in `dir` and copies its binary into `out_dir` (so two
/// variants built one after the other never overwrite each other's binary).
pub fn build(dir: &Path, out_dir: &Path) -> Result<Built, BuildError> {
    if !dir.join("Cargo.toml").is_file() {
        return Err(BuildError::NotAWorkload(dir.to_path_buf()));
    }
    let start = Instant::now();
    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Io { what: format!("creating {}", out_dir.display()), source })?;
    let log = out_dir.join("build.log");
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        // Cargo leaves a workspace root's path out of its identity, so two
        // folders holding the same package (the starter and a learner's copy)
        // would share one fingerprint in the shared target dir and the second
        // build would look fresh. An extra `-C metadata` (only on the
        // workload's own crate, never its dependencies) keys it by folder.
        .args(["rustc", "--release", "--message-format=json-diagnostic-rendered-ansi", "--", "-C"])
        .arg(format!("metadata=dojo-{:016x}", folder_key(dir)))
        // The workload's own crate unoptimised, its dependencies (the
        // RocketMQ client, tokio, axum) optimised: the crate then builds in
        // seconds instead of one to two minutes on two cores (measured: 5 s
        // vs 99 s of CPU), which is what a learner iterating waits for, and
        // what a level's test pays per variant. The levels judge design
        // (batching, ordering, backpressure), not the optimiser.
        .args(["-C", "opt-level=0"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::Cargo)?;
    let stderr = child.stderr.take().expect("piped");
    // Cargo's progress goes to stderr: keep it in the log, read it on a thread.
    let log_for_thread = log.clone();
    let stderr_thread = std::thread::spawn(move || {
        let text: Vec<String> = std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect();
        let _ = std::fs::write(&log_for_thread, text.join("\n"));
    });
    let mut binary = None;
    let mut errors = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        match msg["reason"].as_str() {
            Some("compiler-artifact") => {
                if let Some(exe) = msg["executable"].as_str() {
                    binary = Some(PathBuf::from(exe));
                }
            }
            Some("compiler-message") if msg["message"]["level"] == "error" => {
                if let Some(rendered) = msg["message"]["rendered"].as_str() {
                    errors.push(strip_ansi(rendered));
                }
            }
            _ => {}
        }
    }
    let status = child.wait().map_err(BuildError::Cargo)?;
    let _ = stderr_thread.join();
    if !status.success() {
        if errors.is_empty() {
            errors.push(dojo_testenv::process::tail(&log, 20));
        }
        return Err(BuildError::Compile { dir: dir.to_path_buf(), log, errors: errors.into_iter().take(5).collect::<Vec<_>>().join("\n") });
    }
    let built = binary.ok_or_else(|| BuildError::NoBinary(dir.to_path_buf()))?;
    let dest = out_dir.join(built.file_name().expect("a binary has a file name"));
    std::fs::copy(&built, &dest).map_err(|source| BuildError::Io { what: format!("copying {}", built.display()), source })?;
    Ok(Built { binary: dest, took: start.elapsed() })
}

/// A stable key of a folder's path.
fn folder_key(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).hash(&mut h);
    h.finish()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Copies a level's starter to `dst` (which must not exist) for the learner
/// to edit, pointing its kit dependency at this checkout's kit.
pub fn copy_starter(starter: &Path, dst: &Path) -> std::io::Result<()> {
    if dst.exists() {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists; pick another folder or remove it", dst.display())));
    }
    copy_dir(starter, dst)?;
    let manifest = dst.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let kit = kit_dir();
    std::fs::write(&manifest, text.replace("path = \"../../kit\"", &format!("path = {:?}", kit.display().to_string())))
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let to = dst.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Applies a unified diff (the reference fix or a near miss) inside `dir`.
pub fn apply_patch(dir: &Path, patch: &Path) -> Result<(), BuildError> {
    let out = Command::new("patch")
        .args(["-p1", "--forward", "--batch", "-i"])
        .arg(patch)
        .current_dir(dir)
        .output()
        .map_err(|source| BuildError::Io { what: "running `patch` (Debian: apt-get install patch)".into(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::Io {
            what: format!("applying {}: {}{}", patch.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            source: std::io::Error::other("patch failed"),
        })
    }
}

/// Which version of a level's workload to prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The starter as shipped.
    Starter,
    /// The starter with `solution/fix.patch`.
    Fix,
    /// The starter with `near-misses/<name>.patch`.
    NearMiss(String),
}

impl Variant {
    /// The near misses a level ships (`near-misses/*.patch`), by name.
    pub fn near_misses(level_dir: &Path) -> Vec<Variant> {
        let mut names: Vec<String> = std::fs::read_dir(level_dir.join("near-misses"))
            .map(|rd| rd.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.strip_suffix(".patch").map(String::from)).collect())
            .unwrap_or_default();
        names.sort();
        names.into_iter().map(Variant::NearMiss).collect()
    }
}

/// Copies the level's starter into `dst` and applies the variant's patch.
pub fn prepare(level_dir: &Path, variant: &Variant, dst: &Path) -> Result<(), BuildError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| BuildError::Io { what, source }
    };
    copy_starter(&level_dir.join("starter"), dst).map_err(io("copying the starter"))?;
    match variant {
        Variant::Starter => Ok(()),
        Variant::Fix => apply_patch(dst, &level_dir.join("solution").join("fix.patch")),
        Variant::NearMiss(name) => apply_patch(dst, &level_dir.join("near-misses").join(format!("{name}.patch"))),
    }
}
