//! Building a learner's workload: a build in its folder, in the dev profile
//! and the target directory `dojo` itself was built in, so the RocketMQ
//! client `dojo` compiled is reused (a workload's first build compiles the
//! kit and the workload: seconds) and a learner's rebuild takes seconds.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Building the workload failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not a workload folder: it has no Cargo.toml (start from `dojo reset N`)")]
    NotAWorkload(PathBuf),
    #[error(
        "the workload in {dir} does not build; fix the errors below (full log: {log}):\n{errors}"
    )]
    Compile {
        dir: PathBuf,
        log: PathBuf,
        errors: String,
    },
    #[error("the workload in {0} built no binary: its Cargo.toml needs a [[bin]] or src/main.rs")]
    NoBinary(PathBuf),
    #[error("`cargo` could not be run ({0}): install Rust (rustup) and make sure cargo is on PATH")]
    Cargo(std::io::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// The target directory workloads build into: the one this program was
/// built in (`dojo` through `cargo run`, a test binary), found from its own
/// path, where the RocketMQ client is compiled already; else (an installed
/// binary, the verifier image) one in the cache, shared by every workload.
pub fn target_dir() -> PathBuf {
    let built_in = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").is_file() && d.join(".rustc_info.json").is_file())
            .map(Path::to_path_buf)
    });
    built_in.unwrap_or_else(|| dojo_testenv::cache::root().join("workload-target"))
}

/// The workspace's `[profile.*]` tables, as a cargo config file: a workload
/// builds with them so that its dependencies are the very units `dojo`
/// built (a profile that differs in one setting compiles everything again).
fn workspace_profiles() -> String {
    let mut out = String::new();
    let mut in_profile = false;
    for line in include_str!("../../../Cargo.toml").lines() {
        if line.starts_with('[') {
            in_profile = line.starts_with("[profile.");
        }
        if in_profile {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The kit every workload depends on by path.
pub fn kit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("kit")
        .canonicalize()
        .expect("challenges/kit exists beside the verifier")
}

#[derive(Debug)]
pub struct Built {
    pub binary: PathBuf,
    pub took: Duration,
}

/// Builds the workload in `dir` and copies its binary into `out_dir` (so two
/// variants built one after the other never overwrite each other's binary).
/// Cargo's lines go to `out_dir/build.log` as they come and to stderr (on a
/// terminal with cargo's own progress bar).
pub fn build(dir: &Path, out_dir: &Path) -> Result<Built, BuildError> {
    if !dir.join("Cargo.toml").is_file() {
        return Err(BuildError::NotAWorkload(dir.to_path_buf()));
    }
    let start = Instant::now();
    let io = |what: String| move |source| BuildError::Io { what, source };
    std::fs::create_dir_all(out_dir).map_err(io(format!("creating {}", out_dir.display())))?;
    let profiles = out_dir.join("profiles.toml");
    std::fs::write(&profiles, workspace_profiles())
        .map_err(io(format!("writing {}", profiles.display())))?;
    let log = out_dir.join("build.log");
    let mut log_file =
        std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let terminal = std::io::stderr().is_terminal();
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        // The dev profile, as `dojo` is built: its dependencies are the
        // units `dojo` compiled, so nothing but the kit and the workload
        // compiles (measured, and why not release: README, "The first run").
        .args([
            "rustc",
            "--message-format=json-diagnostic-rendered-ansi",
            "--config",
        ])
        .arg(&profiles)
        // Cargo leaves a workspace root's path out of its identity, so two
        // folders holding the same package (the starter and a learner's copy)
        // would share one fingerprint in the shared target dir and the second
        // build would look fresh. An extra `-C metadata` (only on the
        // workload's own crate, never its dependencies) keys it by folder.
        .args(["--", "-C"])
        .arg(format!("metadata=dojo-{:016x}", folder_key(dir)))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never")
        .env(
            "CARGO_TERM_PROGRESS_WHEN",
            if terminal { "always" } else { "never" },
        )
        .env("CARGO_TERM_PROGRESS_WIDTH", terminal_width().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::Cargo)?;
    // Cargo's own lines (Compiling, Finished, its progress bar) come on
    // stderr: read on a thread, passed on as they come.
    let mut stderr = child.stderr.take().expect("piped");
    let mut log_for_thread = log_file
        .try_clone()
        .map_err(io(format!("opening {}", log.display())))?;
    let stderr_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if terminal {
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            for &b in &buf[..n] {
                match b {
                    // The progress bar redraws itself after a carriage return:
                    // only what follows the last one is a line for the log.
                    b'\r' => line.clear(),
                    b'\n' => {
                        line.push(b'\n');
                        let _ = log_for_thread.write_all(&line);
                        if !terminal {
                            let _ = std::io::stderr().write_all(&line);
                        }
                        line.clear();
                    }
                    _ => line.push(b),
                }
            }
        }
    });
    let mut binary = None;
    let mut errors = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match msg["reason"].as_str() {
            Some("compiler-artifact") => {
                if let Some(exe) = msg["executable"].as_str() {
                    binary = Some(PathBuf::from(exe));
                }
            }
            Some("compiler-message") => {
                if let Some(rendered) = msg["message"]["rendered"].as_str() {
                    let rendered = strip_ansi(rendered);
                    let _ = log_file.write_all(rendered.as_bytes());
                    if msg["message"]["level"] == "error" {
                        errors.push(rendered);
                    }
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
        return Err(BuildError::Compile {
            dir: dir.to_path_buf(),
            log,
            errors: errors.into_iter().take(5).collect::<Vec<_>>().join("\n"),
        });
    }
    let built = binary.ok_or_else(|| BuildError::NoBinary(dir.to_path_buf()))?;
    let dest = out_dir.join(built.file_name().expect("a binary has a file name"));
    std::fs::copy(&built, &dest).map_err(io(format!("copying {}", built.display())))?;
    Ok(Built {
        binary: dest,
        took: start.elapsed(),
    })
}

/// The columns of the terminal on stderr (cargo draws its bar that wide).
fn terminal_width() -> u16 {
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the one passed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        size.ws_col
    } else {
        80
    }
}

/// A stable key of a folder's path.
fn folder_key(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .hash(&mut h);
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
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists; pick another folder or remove it", dst.display()),
        ));
    }
    copy_dir(starter, dst)?;
    let manifest = dst.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let kit = kit_dir();
    std::fs::write(
        &manifest,
        text.replace(
            "path = \"../../kit\"",
            &format!("path = {:?}", kit.display().to_string()),
        ),
    )
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
        .map_err(|source| BuildError::Io {
            what: "running `patch` (Debian: apt-get install patch)".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildError::Io {
            what: format!(
                "applying {}: {}{}",
                patch.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
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
    /// The starter with another correct design, `solution/<name>.patch`:
    /// it must pass too (a check judges the invariant, not one implementation).
    Alternative(String),
    /// The starter with `near-misses/<name>.patch`.
    NearMiss(String),
}

impl Variant {
    /// `starter`, `fix`, or the patch's name: how a level's `expected` names it.
    pub fn name(&self) -> &str {
        match self {
            Variant::Starter => "starter",
            Variant::Fix => "fix",
            Variant::Alternative(n) | Variant::NearMiss(n) => n,
        }
    }

    /// Every variant a level ships: the starter, the fix, each other
    /// correct design, each near miss.
    pub fn all(level_dir: &Path) -> Vec<Variant> {
        let mut all = vec![Variant::Starter, Variant::Fix];
        all.extend(
            patches(&level_dir.join("solution"))
                .into_iter()
                .filter(|n| n != "fix")
                .map(Variant::Alternative),
        );
        all.extend(Variant::near_misses(level_dir));
        all
    }

    /// The near misses a level ships (`near-misses/*.patch`), by name.
    pub fn near_misses(level_dir: &Path) -> Vec<Variant> {
        patches(&level_dir.join("near-misses"))
            .into_iter()
            .map(Variant::NearMiss)
            .collect()
    }
}

/// The names of the `*.patch` files in `dir`, sorted.
fn patches(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".patch")
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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
        Variant::Alternative(name) => apply_patch(
            dst,
            &level_dir.join("solution").join(format!("{name}.patch")),
        ),
        Variant::NearMiss(name) => apply_patch(
            dst,
            &level_dir.join("near-misses").join(format!("{name}.patch")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::process::Command;

    /// `name vX.Y.Z [features]` of every package `cargo tree` resolves in `dir` for `args`.
    fn resolved(dir: &Path, args: &[&str]) -> BTreeSet<String> {
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            // Locked: a lock file that needs updating fails here instead of being rewritten.
            .args([
                "tree",
                "--locked",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "-f",
                "{p} [{f}]",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo tree in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // Strip the workspace-relative path and the marks of repeated and proc-macro packages.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.replace(" (*)", "").replace(" (proc-macro)", ""))
            .map(|l| match (l.find(" ("), l.find(") [")) {
                (Some(a), Some(b)) => format!("{}{}", &l[..a], &l[b + 1..]),
                _ => l,
            })
            .collect()
    }

    fn package(line: &str) -> &str {
        line.split(" [").next().unwrap_or(line)
    }

    /// Every starter resolves each crate it shares with `dojo` to the same
    /// version with the same features: else its first build compiles the
    /// RocketMQ client again instead of reusing `dojo`'s (minutes, not seconds).
    #[test]
    fn starters_resolve_the_crates_dojo_builds_alike() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dojo = resolved(&root, &["-p", "dojo"]);
        let dojo_packages: BTreeSet<&str> = dojo.iter().map(|l| package(l)).collect();
        let dojo_names: BTreeSet<&str> = dojo_packages
            .iter()
            .filter_map(|p| p.split(' ').next())
            .collect();
        let mut starters: Vec<_> = std::fs::read_dir(root.join("challenges"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join("starter"))
            .filter(|s| s.join("Cargo.toml").is_file())
            .collect();
        starters.sort();
        assert!(!starters.is_empty());
        for starter in starters {
            let differ: Vec<String> = resolved(&starter, &[])
                .into_iter()
                .filter(|l| {
                    let p = package(l);
                    let shared = p.split(' ').next().is_some_and(|n| dojo_names.contains(n));
                    shared && (!dojo_packages.contains(p) || !dojo.contains(l))
                })
                .collect();
            assert!(
                differ.is_empty(),
                "{} resolves these otherwise than `cargo build -p dojo` (versions: copy the workspace's Cargo.lock over the starter's and run `cargo tree` there to trim it; features: have challenges/kit ask for the same ones):\n{}",
                starter.display(),
                differ.join("\n")
            );
        }
    }
}
