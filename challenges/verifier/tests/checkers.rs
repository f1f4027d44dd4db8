//! The fast lane: every level's checker judged on observations recorded from
//! real runs of its starter, its fix and each near miss
//! (`fixtures/level-NN/*.json`). No broker, no workload: seconds. A level
//! whose folder ships a variant without a fixture fails here.
//!
//! Re-record a level's fixtures with `DOJO_RECORD_FIXTURES=1 cargo test -p
//! dojo-verifier --test levels level_NN`.

mod common;

use common::{FIXTURE_MAX_BYTES, fixtures_dir, meets_expectation};
use dojo_verifier::levels::{LEVELS, Observations};
use dojo_verifier::workload::Variant;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for level in LEVELS.iter().filter(|l| l.playable) {
        for variant in Variant::all(&level.dir()) {
            let name = variant.name().to_string();
            trials.push(Trial::test(format!("level_{:02}::{name}", level.number), move || {
                let path = fixtures_dir(level).join(format!("{name}.json"));
                let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}; record it (see this file's header)", path.display()))?.len();
                if size > FIXTURE_MAX_BYTES {
                    return Err(Failed::from(format!("{} is {size} bytes (limit {FIXTURE_MAX_BYTES}): observe less, or more compactly", path.display())));
                }
                let observed = Observations::read(&path)?;
                if observed.level != level.number {
                    return Err(format!("{} holds level {}'s observations", path.display(), observed.level).into());
                }
                let report = observed.judge()?;
                meets_expectation(level, &name, &report).map_err(Failed::from)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
