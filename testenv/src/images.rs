//! The project's container images, built by `images/build.sh` from the
//! Containerfiles under `images/` (the one description of each image) as
//! docker-archives in the cache, which a real node imports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The build script, in the repository beside this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("images")
        .join("build.sh")
}

/// One image as `images/build.sh` reported it.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    /// `localhost/rocketmq-dojo/NAME:TAG`, what pods name.
    pub reference: String,
    pub archive: PathBuf,
    pub bytes: u64,
    /// Seconds the (last) build took, when known.
    pub seconds: Option<u64>,
    /// The archive was up to date: nothing was built this time.
    pub cached: bool,
}

/// Builds (or finds up to date) the named images: `pause`, `rocketmq`,
/// `workload-base`, `operator`, `verifier`, or `NAME=PATH` to put another
/// binary or folder in (see `images/build.sh`). Blocks for as long as the
/// build takes (minutes for a first Debian base).
pub fn build<S: AsRef<str>>(images: &[S]) -> Result<Vec<Built>> {
    let script = script();
    let out = Command::new("bash")
        .arg(&script)
        .args(images.iter().map(|s| s.as_ref()))
        .output()
        .map_err(|source| Error::Spawn {
            what: script.display().to_string(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::failed(
            format!(
                "building images {}",
                images
                    .iter()
                    .map(|s| s.as_ref())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            format!("images/build.sh {}:\n{stdout}{stderr}", out.status),
        ));
    }
    stdout.lines().map(parse_line).collect()
}

fn parse_line(line: &str) -> Result<Built> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    let [name, reference, archive, bytes, how] = cols[..] else {
        return Err(Error::failed(
            "reading images/build.sh's report",
            format!("unexpected line {line:?}"),
        ));
    };
    Ok(Built {
        name: name.into(),
        reference: reference.into(),
        archive: archive.into(),
        bytes: bytes.parse().map_err(|e| {
            Error::failed("reading images/build.sh's report", format!("{line:?}: {e}"))
        })?,
        seconds: how
            .trim_start_matches("cached:")
            .strip_suffix('s')
            .and_then(|s| s.parse().ok()),
        cached: how.starts_with("cached:"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_report_lines() {
        let built = super::parse_line(
            "pause localhost/rocketmq-dojo/pause:0.1.0 /c/images/pause-0.1.0.tar 812032 3s",
        )
        .unwrap();
        assert_eq!(
            (built.name.as_str(), built.bytes, built.seconds),
            ("pause", 812032, Some(3))
        );
        let cached = super::parse_line(
            "rocketmq localhost/rocketmq-dojo/rocketmq:0.1.0 /c/r.tar 9 cached:77s",
        )
        .unwrap();
        assert_eq!((cached.seconds, cached.cached), (Some(77), true));
        assert!(super::parse_line("garbage").is_err());
    }
}
