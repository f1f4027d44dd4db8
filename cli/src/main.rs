//! `dojo`: RocketMQ Dojo on one machine, no cluster needed.
// The RocketMQ client's futures are deep; the compiler needs room to lay them out.
#![recursion_limit = "512"]

mod attempts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use dojo_testenv::RocketMq;
use dojo_verifier::levels::{self, LEVELS, LevelInfo};
use dojo_verifier::progress::Console;
use dojo_verifier::run::{self, PlayError};
use dojo_verifier::{Verdict, workload};

#[derive(Parser)]
#[command(
    name = "dojo",
    version,
    about = "RocketMQ Dojo: hands-on RocketMQ levels against a real cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The levels: number, topic, stars, and whether they can be played yet.
    List,
    /// Play a level: start RocketMQ and the world, build and run the
    /// workload, inject the level's faults, judge it. Exits 0 only on pass.
    Play {
        level: u32,
        /// The workload folder (default: the level's starter in this checkout).
        #[arg(long)]
        workload: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Judge a saved run again with this version's checkers, from the
    /// observations it kept (its artefacts folder, named in its report).
    Judge {
        run_dir: PathBuf,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Show the next hint for a level; hints unlock one per failed attempt.
    Hint { level: u32 },
    /// Copy a level's starter to a folder of your own to work on.
    Reset {
        level: u32,
        /// Where to put it (default: ./level-NN-slug).
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Start a local RocketMQ (and with --kube a Kubernetes control plane),
    /// print where everything listens, and keep it up until Ctrl-C.
    Up {
        /// Also start etcd, kube-apiserver, controller-manager, scheduler and
        /// kwok (a `dojo` built with `--features kube`).
        #[arg(long)]
        kube: bool,
    },
}

/// A usage error or a run that could not happen: message and exit code 2.
struct Refusal(String);

impl<E: std::fmt::Display> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal(e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => list(),
        Command::Play {
            level,
            workload,
            json,
        } => play(level, workload, json).await,
        Command::Judge { run_dir, json } => judge(run_dir, json),
        Command::Hint { level } => hint(level),
        Command::Reset { level, into } => reset(level, into),
        Command::Up { kube } => up(kube).await,
    };
    match result {
        Ok(code) => code,
        Err(Refusal(msg)) => {
            eprintln!("dojo: {msg}");
            ExitCode::from(2)
        }
    }
}

fn list() -> Result<ExitCode, Refusal> {
    println!(
        "{:>3}  {:<6} {:<28} {:<40} PLAYABLE",
        "#", "STARS", "TOPIC", "CORE PROBLEM"
    );
    for l in &LEVELS {
        println!(
            "{:>3}  {:<6} {:<28} {:<40} {}",
            l.number,
            "*".repeat(l.stars as usize),
            l.topic,
            l.problem,
            if l.playable { "yes" } else { "not yet" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn level(n: u32) -> Result<&'static LevelInfo, Refusal> {
    levels::find(n).map_err(Refusal)
}

async fn play(
    n: u32,
    workload: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<ExitCode, Refusal> {
    let info = level(n)?;
    let dir = workload.unwrap_or_else(|| info.dir().join("starter"));
    if !dir.is_dir() {
        return Err(Refusal(format!(
            "workload folder {} does not exist (`dojo reset {n}` makes one)",
            dir.display()
        )));
    }
    let dir = dir.canonicalize()?;
    let mut progress = Console::new();
    let report = match run::play(info, &dir, &run::state_dir().join("runs"), &mut progress).await {
        Ok(r) => r,
        Err(e @ PlayError::Build(_)) => {
            attempts::record(info.number, false)?;
            return Err(Refusal(e.to_string()));
        }
        Err(e) => return Err(Refusal(e.to_string())),
    };
    println!("\n{}", report.render_table());
    if let Some(path) = json {
        std::fs::write(&path, report.to_json())
            .map_err(|e| Refusal(format!("writing {}: {e}", path.display())))?;
    }
    let passed = report.verdict == Verdict::Pass;
    // An `error` verdict is the environment's fault, not an attempt.
    if report.verdict != Verdict::Error {
        let unlocked = attempts::record(info.number, passed)?;
        if !passed && unlocked > 0 {
            println!("A hint is waiting: `dojo hint {n}`.");
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Re-judges a saved run; not an attempt (nothing was played).
fn judge(run_dir: PathBuf, json: Option<PathBuf>) -> Result<ExitCode, Refusal> {
    let report = run::rejudge(&run_dir, &mut Console::new()).map_err(Refusal)?;
    println!("\n{}", report.render_table());
    if let Some(path) = json {
        std::fs::write(&path, report.to_json())
            .map_err(|e| Refusal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(if report.verdict == Verdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn hint(n: u32) -> Result<ExitCode, Refusal> {
    let info = level(n)?;
    let hints = attempts::hints(&info.dir())?;
    match attempts::next_hint(info.number, hints.len())? {
        attempts::NextHint::Locked => {
            println!("No hint yet: hints unlock one per failed attempt (`dojo play {n}`).")
        }
        attempts::NextHint::AllShown => {
            println!(
                "All {} hints of level {n} are shown; here is the last one again:\n",
                hints.len()
            );
            println!(
                "{}",
                hints
                    .last()
                    .map(String::as_str)
                    .unwrap_or("(this level has no hints)")
            );
        }
        attempts::NextHint::Show(i) => println!(
            "Hint {}/{} for level {n}:\n\n{}",
            i + 1,
            hints.len(),
            hints[i]
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn reset(n: u32, into: Option<PathBuf>) -> Result<ExitCode, Refusal> {
    let info = level(n)?;
    let dst = into.unwrap_or_else(|| PathBuf::from(info.dir_name()));
    workload::copy_starter(&info.dir().join("starter"), &dst)?;
    println!(
        "The starter of level {n} is in {}.\nRead {}, fix the code, then: dojo play {n} --workload {}",
        dst.display(),
        info.dir().join("README.md").display(),
        dst.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn up(kube: bool) -> Result<ExitCode, Refusal> {
    if kube && !cfg!(feature = "kube") {
        return Err(Refusal("this dojo was built without Kubernetes: `cargo run -p dojo --features kube -- up --kube`".into()));
    }
    let t0 = Instant::now();
    println!("starting RocketMQ (name server + broker) ...");
    let mq = RocketMq::start().await?;
    println!("RocketMQ ready in {:.1}s", t0.elapsed().as_secs_f64());
    println!("  NAMESRV_ADDR={}", mq.namesrv_addr());
    println!("  broker       {}", mq.broker_addr());
    println!("  data + logs  {}", mq.dir().display());
    #[cfg(feature = "kube")]
    let plane = if kube {
        let t1 = Instant::now();
        println!("starting the Kubernetes control plane ...");
        let plane = dojo_testenv::ControlPlane::start().await?;
        println!("control plane ready in {:.1}s", t1.elapsed().as_secs_f64());
        println!("  API server   {}", plane.server_url());
        println!("  KUBECONFIG={}", plane.kubeconfig_path().display());
        Some(plane)
    } else {
        None
    };
    println!("up; Ctrl-C stops everything");
    let _ = tokio::signal::ctrl_c().await;
    #[cfg(feature = "kube")]
    drop(plane);
    drop(mq);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}
