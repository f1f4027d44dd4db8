//! What every level's test needs: prepare a variant, play it, judge the report.

#![allow(dead_code)] // Each test binary uses a part of it.

use std::sync::Mutex;

use dojo_verifier::levels::{self, LevelInfo};
use dojo_verifier::progress::Console;
use dojo_verifier::workload::{self, Variant};
use dojo_verifier::{Report, Verdict};

static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

pub async fn play(level: u32, variant: Variant) -> Report {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let info: &LevelInfo = levels::find(level).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("workload");
    workload::prepare(&info.dir(), &variant, &dir).unwrap_or_else(|e| panic!("preparing {variant:?}: {e}"));
    let report = dojo_verifier::run::play(info, &dir, &tmp.path().join("runs"), &mut Console::new()).await.unwrap_or_else(|e| panic!("level {level} {variant:?} could not run: {e}"));
    eprintln!("{}", report.render_table());
    report
}

pub fn failed(report: &Report) -> Vec<&str> {
    report.checks.iter().filter(|c| c.verdict == Verdict::Fail).map(|c| c.id.as_str()).collect()
}

pub fn assert_fails_with(report: &Report, expected: &[&str]) {
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render_table());
    let failed = failed(report);
    for id in expected {
        assert!(failed.contains(id), "check {id} must fail; failed: {failed:?}\n{}", report.render_table());
        let check = report.checks.iter().find(|c| c.id == *id).unwrap();
        assert!(!check.summary.is_empty() && (!check.evidence.is_empty() || check.summary.chars().any(|c| c.is_ascii_digit())), "check {id} must carry evidence: {check:?}");
    }
    assert!(!report.checks.iter().any(|c| c.verdict == Verdict::Error), "no check may be unjudgeable: {}", report.render_table());
}

pub fn assert_passes(report: &Report) {
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render_table());
}

