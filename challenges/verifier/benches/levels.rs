//! `make bench` (levels): per playable level, the wall time of a local run of
//! the reference fix, cold (a fresh copy: its own crate compiles) and warm
//! (the same copy again), the broker's and the workload's peak memory, the
//! level's own figures, and the starter's and each near miss's headline
//! figures beside the fix's, with their ratio. `-- N` benches level N only.
//! Prints a table; asserts nothing.

#![recursion_limit = "512"]

use std::time::Instant;

use dojo_verifier::levels::LEVELS;
use dojo_verifier::progress::Quiet;
use dojo_verifier::run::play;
use dojo_verifier::workload::{self, Variant};
use dojo_verifier::{Figure, Report};

/// What the levels measure that tells a fix from a miss.
const HEADLINES: [&str; 5] = ["throughput", "p99 latency", "throughput (to 99 %)", "drained in", "drain after the last event"];

fn find<'a>(r: &'a Report, name: &str) -> Option<&'a Figure> {
    r.figures.iter().find(|f| f.name == name)
}

fn figure(r: &Report, name: &str) -> String {
    find(r, name).map(|f| format!("{:.1} {}", f.value, f.unit)).unwrap_or_else(|| "-".into())
}

/// A starter's or near miss's verdict, failed checks and headline figures beside the fix's.
fn beside(label: &str, r: &Report, fix: &Report) {
    let failed: Vec<&str> = r.checks.iter().filter(|c| c.verdict != dojo_verifier::Verdict::Pass).map(|c| c.id.as_str()).collect();
    println!("  {label}: verdict {} (failed: {})", r.verdict.as_str(), failed.join(", "));
    for name in HEADLINES {
        let (Some(v), f) = (find(r, name), find(fix, name)) else { continue };
        let ratio = f.filter(|_| v.value != 0.0).map(|f| format!(", fix/this {:.1}x", f.value / v.value)).unwrap_or_default();
        println!("    {name:<28} {:>10.1} {} (fix: {}{ratio})", v.value, v.unit, figure(fix, name));
    }
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
        for variant in std::iter::once(Variant::Starter).chain(Variant::near_misses(&info.dir())) {
            let label = match &variant {
                Variant::NearMiss(name) => format!("near miss {name}"),
                _ => "starter".to_string(),
            };
            let dir = tmp.path().join(label.replace(' ', "-"));
            workload::prepare(&info.dir(), &variant, &dir)?;
            let r = play(info, &dir, &runs, &mut Quiet).await?;
            beside(&label, &r, &fix);
        }
    }
    Ok(())
}
