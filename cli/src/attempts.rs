//! Attempts per level, recorded locally; they unlock hints.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Record {
    attempts: u32,
    failed: u32,
    passed: bool,
    hints_shown: usize,
}

fn path() -> std::path::PathBuf {
    dojo_verifier::run::state_dir().join("attempts.json")
}

fn load() -> BTreeMap<u8, Record> {
    std::fs::read_to_string(path())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn save(all: &BTreeMap<u8, Record>) -> std::io::Result<()> {
    let p = path();
    std::fs::create_dir_all(p.parent().expect("a file in a folder"))?;
    std::fs::write(p, serde_json::to_string_pretty(all).expect("serialisable"))
}

/// Records an attempt; returns how many hints are unlocked but not yet shown.
pub fn record(level: u8, passed: bool) -> std::io::Result<usize> {
    let mut all = load();
    let r = all.entry(level).or_default();
    r.attempts += 1;
    if passed {
        r.passed = true;
    } else {
        r.failed += 1;
    }
    let waiting = (r.failed as usize).saturating_sub(r.hints_shown);
    save(&all)?;
    Ok(waiting)
}

pub enum NextHint {
    Locked,
    AllShown,
    Show(usize),
}

/// The next hint to show, marking it shown.
pub fn next_hint(level: u8, available: usize) -> std::io::Result<NextHint> {
    let mut all = load();
    let r = all.entry(level).or_default();
    if r.hints_shown >= available {
        return Ok(NextHint::AllShown);
    }
    if r.hints_shown >= r.failed as usize {
        return Ok(NextHint::Locked);
    }
    let i = r.hints_shown;
    r.hints_shown += 1;
    save(&all)?;
    Ok(NextHint::Show(i))
}

/// A level's hints, gentle to explicit: `hints/01.md`, `hints/02.md`, ...
pub fn hints(level_dir: &Path) -> std::io::Result<Vec<String>> {
    let dir = level_dir.join("hints");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    files.sort();
    files.iter().map(std::fs::read_to_string).collect()
}
