//! Every playable level against the real broker: the starter FAILS naming
//! the broken invariants, the reference fix PASSES, every near miss FAILS.
//! Runs are serialised: each starts its own RocketMQ and loads the machine.

#![recursion_limit = "512"]

use std::sync::Mutex;

use dojo_verifier::levels::{self, LevelInfo};
use dojo_verifier::progress::Console;
use dojo_verifier::workload::{self, Variant};
use dojo_verifier::{Report, Verdict};

static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

async fn play(level: u32, variant: Variant) -> Report {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let info: &LevelInfo = levels::find(level).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("workload");
    workload::prepare(&info.dir(), &variant, &dir).unwrap_or_else(|e| panic!("preparing {variant:?}: {e}"));
    let report = dojo_verifier::run::play(info, &dir, &tmp.path().join("runs"), &mut Console::new()).await.unwrap_or_else(|e| panic!("level {level} {variant:?} could not run: {e}"));
    eprintln!("{}", report.render_table());
    report
}

fn failed(report: &Report) -> Vec<&str> {
    report.checks.iter().filter(|c| c.verdict == Verdict::Fail).map(|c| c.id.as_str()).collect()
}

fn assert_fails_with(report: &Report, expected: &[&str]) {
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render_table());
    let failed = failed(report);
    for id in expected {
        assert!(failed.contains(id), "check {id} must fail; failed: {failed:?}\n{}", report.render_table());
        let check = report.checks.iter().find(|c| c.id == *id).unwrap();
        assert!(!check.summary.is_empty() && (!check.evidence.is_empty() || check.summary.chars().any(|c| c.is_ascii_digit())), "check {id} must carry evidence: {check:?}");
    }
    assert!(!report.checks.iter().any(|c| c.verdict == Verdict::Error), "no check may be unjudgeable: {}", report.render_table());
}

fn assert_passes(report: &Report) {
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render_table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_starter_fails_on_leaked_producers_and_unclean_shutdown() {
    let r = play(1, Variant::Starter).await;
    assert_fails_with(&r, &["producer-connections-bounded", "producer-reused", "clean-shutdown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_fix_passes() {
    assert_passes(&play(1, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_near_miss_producer_per_request_fails_reuse() {
    let r = play(1, Variant::NearMiss("per-request-producer".into())).await;
    assert_fails_with(&r, &["producer-reused"]);
}

#[test]
fn every_playable_level_ships_its_parts() {
    for info in levels::LEVELS.iter().filter(|l| l.playable) {
        let dir = info.dir();
        for part in ["README.md", "challenge.yaml", "starter/Cargo.toml", "solution/fix.patch", "hints/01.md"] {
            assert!(dir.join(part).exists(), "level {} lacks {part}", info.number);
        }
        assert!(!Variant::near_misses(&dir).is_empty(), "level {} ships no near miss", info.number);
    }
}

#[test]
fn unknown_level_lists_the_levels() {
    let err = levels::find(13).unwrap_err();
    assert!(err.contains("there is no level 13") && err.contains("1 producer-lifecycle") && err.contains("12 multi-zone-dr"), "{err}");
}
