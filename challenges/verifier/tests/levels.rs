//! Every playable level end to end against a real broker, one trial per
//! variant it ships (`level_NN::starter`, `level_NN::fix`,
//! `level_NN::<near miss>`), each held to what the level's registration
//! expects: the starter FAILS naming the broken invariants with evidence,
//! the fix PASSES, each near miss FAILS. Solvability is proven on every run.
//!
//! Runs side by side (`--test-threads`), except a level whose checks judge
//! speed, whose runs have the machine to themselves. `DOJO_LEVEL_TRIALS=timed`
//! runs only those levels, `untimed` only the others (`make test` runs the
//! untimed ones while the bootstrap compiles beside them, the timed ones
//! after). Each trial prints its wall time. `DOJO_RECORD_FIXTURES=1` also
//! saves each run's observations as the fast lane's fixture
//! (`tests/checkers.rs`).

#![recursion_limit = "512"]

mod common;

use std::sync::RwLock;
use std::time::Instant;

use common::{fixtures_dir, meets_expectation};
use dojo_verifier::levels::{LEVELS, LevelInfo, Observations};
use dojo_verifier::progress::Console;
use dojo_verifier::workload::{self, Variant};
use libtest_mimic::{Arguments, Failed, Trial};

/// Runs that judge speed take it for writing (alone); the others for reading (side by side).
static MACHINE: RwLock<()> = RwLock::new(());

fn play(level: &'static LevelInfo, variant: Variant) -> Result<(), Failed> {
    let _machine = if level.judges_speed {
        (
            None,
            Some(MACHINE.write().unwrap_or_else(|e| e.into_inner())),
        )
    } else {
        (
            Some(MACHINE.read().unwrap_or_else(|e| e.into_inner())),
            None,
        )
    };
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path().join("workload");
    workload::prepare(&level.dir(), &variant, &dir)
        .map_err(|e| format!("preparing {variant:?}: {e}"))?;
    let report = rt
        .block_on(dojo_verifier::run::play(
            level,
            &dir,
            &tmp.path().join("runs"),
            &mut Console::new(),
        ))
        .map_err(|e| format!("level {} {variant:?} could not run: {e}", level.number))?;
    eprintln!(
        "{}\n[levels] level {} {}: {} in {:.1}s",
        report.render_table(),
        level.number,
        variant.name(),
        report.verdict.as_str(),
        start.elapsed().as_secs_f64()
    );
    if std::env::var_os("DOJO_RECORD_FIXTURES").is_some() {
        let from = std::path::Path::new(report.artefacts.as_deref().unwrap_or_default())
            .join(Observations::FILE);
        let to = fixtures_dir(level).join(format!("{}.json", variant.name()));
        std::fs::create_dir_all(fixtures_dir(level))
            .and_then(|_| std::fs::copy(&from, &to))
            .map_err(|e| format!("recording {}: {e}", to.display()))?;
    }
    meets_expectation(level, variant.name(), &report).map_err(Failed::from)
}

fn main() {
    let args = Arguments::from_args();
    let which = std::env::var("DOJO_LEVEL_TRIALS").unwrap_or_default();
    let chosen = |l: &LevelInfo| match which.as_str() {
        "timed" => l.judges_speed,
        "untimed" => !l.judges_speed,
        _ => true,
    };
    let trials = LEVELS
        .iter()
        .filter(|l| l.playable && chosen(l))
        .flat_map(|level| {
            Variant::all(&level.dir()).into_iter().map(move |v| {
                Trial::test(
                    format!("level_{:02}::{}", level.number, v.name()),
                    move || play(level, v),
                )
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
