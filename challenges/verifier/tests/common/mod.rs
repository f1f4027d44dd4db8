//! What the level tests share: a level's variants held to what its
//! registration expects ([`dojo_verifier::levels::LevelInfo::expected`]),
//! and where the fast lane's fixtures live.

#![allow(dead_code)] // Each test binary uses a part of it.

use std::path::PathBuf;

use dojo_verifier::levels::LevelInfo;
use dojo_verifier::{Report, Verdict};

/// `challenges/verifier/fixtures/level-NN/`: observations recorded from real
/// runs, one file per variant (`starter.json`, `fix.json`, `<near miss>.json`).
pub fn fixtures_dir(level: &LevelInfo) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("level-{:02}", level.number))
}

/// A fixture stays small enough to commit and to judge in milliseconds.
pub const FIXTURE_MAX_BYTES: u64 = 512 * 1024;

/// Whether `report` is what `level` expects of variant `name`: FAIL naming
/// each expected check with evidence (and nothing unjudgeable), or PASS.
pub fn meets_expectation(level: &LevelInfo, name: &str, report: &Report) -> Result<(), String> {
    let table = report.render_table();
    let Some(expected) = level.expected_failures(name) else {
        return Err(format!(
            "level {} does not say what variant {name} must get (its `expected`)",
            level.number
        ));
    };
    if expected.is_empty() {
        return if report.verdict == Verdict::Pass {
            Ok(())
        } else {
            Err(format!("{name} must PASS\n{table}"))
        };
    }
    if report.verdict != Verdict::Fail {
        return Err(format!("{name} must FAIL\n{table}"));
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.id.as_str())
        .collect();
    for id in expected {
        let Some(check) = report
            .checks
            .iter()
            .find(|c| c.id == *id && c.verdict == Verdict::Fail)
        else {
            return Err(format!(
                "{name}: check {id} must fail; failed: {failed:?}\n{table}"
            ));
        };
        if check.summary.is_empty()
            || (check.evidence.is_empty() && !check.summary.chars().any(|c| c.is_ascii_digit()))
        {
            return Err(format!("{name}: check {id} must carry evidence: {check:?}"));
        }
    }
    if report.checks.iter().any(|c| c.verdict == Verdict::Error) {
        return Err(format!("{name}: no check may be unjudgeable\n{table}"));
    }
    Ok(())
}
