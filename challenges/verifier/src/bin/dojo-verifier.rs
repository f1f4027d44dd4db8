//! `dojo-verifier`: the verifier as a program of its own, what the operator's
//! verifier Job runs (`dojo-verifier --level N --platform kube`) and what
//! `make images` packs into the verifier image.
//!
//! `--platform local` plays a level on this machine exactly as `dojo play`
//! does (same `run::play`), without the learner's attempts and hints.
//! `--platform kube` plays it on the Challenge's pods
//! ([`dojo_verifier::cluster::KubePlatform`]) and writes the report,
//! size-bounded, to the termination message the operator reads; a run that
//! could not happen is a report too, whose only check is an `error`.

#![recursion_limit = "512"]

use std::path::PathBuf;
use std::process::ExitCode;

use dojo_verifier::levels;
use dojo_verifier::progress::Console;
use dojo_verifier::report::{Check, Report, TERMINATION_MESSAGE_LIMIT};
use dojo_verifier::{Verdict, run};

const USAGE: &str = "usage: dojo-verifier --level N [--platform local|kube] [--workload DIR] [--json FILE] [--termination-log FILE]";

#[derive(Debug)]
struct Args {
    level: u32,
    platform: String,
    workload: Option<PathBuf>,
    json: Option<PathBuf>,
    termination_log: PathBuf,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut level, mut platform, mut workload, mut json) = (None, "local".to_string(), None, None);
    let mut termination_log = PathBuf::from("/dev/termination-log");
    while let Some(flag) = argv.next() {
        let mut value = || {
            argv.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--level" => {
                level = Some(
                    value()?
                        .parse::<u32>()
                        .map_err(|e| format!("--level: {e}; {USAGE}"))?,
                )
            }
            "--platform" => platform = value()?,
            "--workload" => workload = Some(PathBuf::from(value()?)),
            "--json" => json = Some(PathBuf::from(value()?)),
            "--termination-log" => termination_log = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}; {USAGE}")),
        }
    }
    let level = level
        .or_else(|| std::env::var("DOJO_LEVEL").ok()?.parse().ok())
        .ok_or_else(|| format!("which level? {USAGE}"))?;
    Ok(Args {
        level,
        platform,
        workload,
        json,
        termination_log,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let info = match levels::find(args.level) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = match args.platform.as_str() {
        "local" => {
            let dir = args.workload.unwrap_or_else(|| info.dir().join("starter"));
            match run::play(
                info,
                &dir,
                &run::state_dir().join("runs"),
                &mut Console::new(),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("level {} could not run: {e}", info.number);
                    return ExitCode::from(2);
                }
            }
        }
        "kube" => {
            let report = match run::play_in_cluster(info, &mut Console::new()).await {
                Ok(r) => r,
                // Could not run at all: still a report, so the Challenge's status says why.
                Err(e) => {
                    let checks = vec![Check::error(
                        "platform",
                        "the verifier runs the level on the Challenge's pods",
                        e.to_string(),
                    )];
                    Report {
                        level: info.number,
                        slug: info.slug.into(),
                        verdict: Report::overall(&checks),
                        checks,
                        figures: vec![],
                        series: vec![],
                        started_at_ms: dojo_verifier::now_ms(),
                        duration_ms: 0,
                        artefacts: None,
                    }
                }
            };
            if let Err(e) = std::fs::write(
                &args.termination_log,
                report.to_bounded_json(TERMINATION_MESSAGE_LIMIT),
            ) {
                eprintln!(
                    "writing the report to {}: {e}",
                    args.termination_log.display()
                );
            }
            report
        }
        other => {
            eprintln!("unknown platform {other}: local or kube; {USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("\n{}", report.render_table());
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!("writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    match report.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::FAILURE,
        Verdict::Error => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn the_jobs_command_line_parses() {
        let a = args("--level 6 --platform kube").unwrap();
        assert_eq!(
            (a.level, a.platform.as_str(), a.termination_log),
            (6, "kube", PathBuf::from("/dev/termination-log"))
        );
    }

    #[test]
    fn bad_arguments_say_what_is_expected() {
        assert!(
            args("--level")
                .unwrap_err()
                .contains("--level needs a value")
        );
        assert!(args("--level x").unwrap_err().contains("usage"));
        assert!(
            args("--levle 3")
                .unwrap_err()
                .contains("unknown argument --levle")
        );
    }
}
