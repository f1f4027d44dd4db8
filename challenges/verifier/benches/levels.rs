//! `make bench` (levels): per playable level, what a learner waits for and
//! what the test suite pays:
//! - warm `dojo play` (median of 3) of the starter and of the reference fix;
//! - the end-to-end wall time of one run of every variant it ships (what
//!   `tests/levels.rs` runs), each building its workload;
//! - the fast lane: judging every fixture of the level (`tests/checkers.rs`);
//! - the fix's own figures, and each near miss's verdict and headline
//!   figures beside them.
//!
//! `-- N` benches level N only. `BENCH_COLD=1` first times a cold `make play`
//! (empty target dir and cache in a temporary folder: every crate and the
//! RocketMQ jars from the registries). Prints tables; asserts nothing.

#![recursion_limit = "512"]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dojo_verifier::levels::{LEVELS, LevelInfo, Observations};
use dojo_verifier::progress::Quiet;
use dojo_verifier::run::play;
use dojo_verifier::workload::{self, Variant};
use dojo_verifier::{Figure, Report};

/// What the levels measure that tells a fix from a miss.
const HEADLINES: [&str; 5] = [
    "throughput",
    "p99 latency",
    "throughput (to 99 %)",
    "drained in",
    "drain after the last event",
];

fn find<'a>(r: &'a Report, name: &str) -> Option<&'a Figure> {
    r.figures.iter().find(|f| f.name == name)
}

fn figure(r: &Report, name: &str) -> String {
    find(r, name)
        .map(|f| format!("{:.1} {}", f.value, f.unit))
        .unwrap_or_else(|| "-".into())
}

/// A near miss's verdict, failed checks and headline figures beside the fix's.
fn beside(label: &str, r: &Report, fix: &Report) {
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.verdict != dojo_verifier::Verdict::Pass)
        .map(|c| c.id.as_str())
        .collect();
    println!(
        "  {label}: verdict {} (failed: {})",
        r.verdict.as_str(),
        failed.join(", ")
    );
    for name in HEADLINES {
        let (Some(v), f) = (find(r, name), find(fix, name)) else {
            continue;
        };
        let ratio = f
            .filter(|_| v.value != 0.0)
            .map(|f| format!(", fix/this {:.1}x", f.value / v.value))
            .unwrap_or_default();
        println!(
            "    {name:<28} {:>10.1} {} (fix: {}{ratio})",
            v.value,
            v.unit,
            figure(fix, name)
        );
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Judges every fixture of `level`: the fast lane's cost for it.
fn fast_lane(level: &LevelInfo) -> Duration {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("level-{:02}", level.number));
    let t = Instant::now();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if let Ok(o) = Observations::read(&entry.path()) {
            let _ = o.judge();
        }
    }
    t.elapsed()
}

/// `make play` from nothing: a fresh target dir and cache.
fn cold_make_play() -> std::io::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let t = Instant::now();
    let status = Command::new("make")
        .arg("-C")
        .arg(&root)
        .arg("play")
        .env("CARGO_TARGET_DIR", tmp.path().join("target"))
        .env("DOJO_CACHE", tmp.path().join("cache"))
        .env("DOJO_STATE", tmp.path().join("state"))
        .status()?;
    println!(
        "cold `make play`: {:.0}s ({status})\n",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("BENCH_COLD").is_some() {
        cold_make_play()?;
    }
    let only: Option<u8> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let mut rows = Vec::new();
    for info in LEVELS
        .iter()
        .filter(|l| l.playable && only.is_none_or(|n| n == l.number))
    {
        let tmp = tempfile::tempdir()?;
        let runs = tmp.path().join("runs");
        println!("level {} ({})", info.number, info.slug);
        let mut end_to_end = Duration::ZERO;
        let mut fix = None;
        let mut medians = Vec::new();
        for variant in Variant::all(&info.dir()) {
            let dir = tmp.path().join(variant.name());
            workload::prepare(&info.dir(), &variant, &dir)?;
            // The first run builds the copy (as a test does); the warm runs reuse it.
            let repeats = if matches!(variant, Variant::NearMiss(_)) {
                1
            } else {
                4
            };
            let mut warm = Vec::new();
            let mut last = None;
            for i in 0..repeats {
                let t = Instant::now();
                let r = play(info, &dir, &runs, &mut Quiet).await?;
                if i == 0 {
                    end_to_end += t.elapsed();
                } else {
                    warm.push(t.elapsed());
                }
                last = Some(r);
            }
            let r = last.expect("at least one run");
            match &variant {
                Variant::NearMiss(name) => {
                    beside(&format!("near miss {name}"), &r, fix.as_ref().unwrap_or(&r))
                }
                v => {
                    let m = median(warm);
                    println!(
                        "  {:<8} warm play median {:>5.1}s  verdict {:<5}  workload peak RSS {:>10}  broker peak RSS {:>10}",
                        v.name(),
                        m.as_secs_f64(),
                        r.verdict.as_str(),
                        figure(&r, "workload peak RSS"),
                        figure(&r, "broker peak RSS")
                    );
                    medians.push(m);
                    if *v == Variant::Fix {
                        println!("  figures of the fix:");
                        for f in &r.figures {
                            println!("    {:<32} {:>10.1} {}", f.name, f.value, f.unit);
                        }
                        fix = Some(r);
                    }
                }
            }
        }
        rows.push((info.number, medians, end_to_end, fast_lane(info)));
    }
    println!(
        "\n| level | starter, warm play (median of 3) | fix, warm play (median of 3) | end to end, every variant once | fast lane |"
    );
    println!("|---|---|---|---|---|");
    for (n, m, e2e, lane) in rows {
        println!(
            "| {n} | {:.1} s | {:.1} s | {:.0} s | {:.0} ms |",
            m[0].as_secs_f64(),
            m[1].as_secs_f64(),
            e2e.as_secs_f64(),
            lane.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
