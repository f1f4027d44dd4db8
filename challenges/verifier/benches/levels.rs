//! `make bench` (levels): per playable level, the wall time of a local run of
//! the reference fix, cold (a fresh copy: its own crate compiles) and warm
//! (the same copy again), the broker's and the workload's peak memory, the
//! level's own figures, and each near miss's figures beside the fix's.
//! Prints a table; asserts nothing.

#![recursion_limit = "512"]

use std::time::Instant;

use dojo_verifier::levels::LEVELS;
use dojo_verifier::progress::Quiet;
use dojo_verifier::run::play;
use dojo_verifier::workload::{self, Variant};
use dojo_verifier::{Figure, Report};

fn figure(r: &Report, name: &str) -> String {
    r.figures.iter().find(|f| f.name == name).map(|f: &Figure| format!("{:.1} {}", f.value, f.unit)).unwrap_or_else(|| "-".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only: Option<u8> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    for info in LEVELS.iter().filter(|l| l.playable && only.is_none_or(|n| n == l.number)) {
        let tmp = tempfile::tempdir()?;
        let runs = tmp.path().join("runs");
        let fix_dir = tmp.path().join("fix");
        workload::prepare(&info.dir(), &Variant::Fix, &fix_dir)?;
        println!("level {} ({})", info.number, info.slug);
        let mut reports = Vec::new();
        for label in ["cold", "warm"] {
            let t = Instant::now();
            let r = play(info, &fix_dir, &runs, &mut Quiet).await?;
            println!("  fix, {label:<4}  {:>6.1}s wall  verdict {:<5}  workload peak RSS {:>10}  broker peak RSS {:>10}", t.elapsed().as_secs_f64(), r.verdict.as_str(), figure(&r, "workload peak RSS"), figure(&r, "broker peak RSS"));
            reports.push(r);
        }
        let fix = reports.pop().expect("two runs");
        println!("  figures of the fix (warm run):");
        for f in &fix.figures {
            println!("    {:<32} {:>10.1} {}", f.name, f.value, f.unit);
        }
        for nm in Variant::near_misses(&info.dir()) {
            let Variant::NearMiss(name) = &nm else { continue };
            let dir = tmp.path().join(name);
            workload::prepare(&info.dir(), &nm, &dir)?;
            let r = play(info, &dir, &runs, &mut Quiet).await?;
            println!("  near miss {name}: verdict {}; throughput {} (fix: {}), p99 {} (fix: {})", r.verdict.as_str(), figure(&r, "throughput"), figure(&fix, "throughput"), figure(&r, "p99 latency"), figure(&fix, "p99 latency"));
        }
    }
    Ok(())
}
