//! The catalogue: every playable level ships its parts; unknown levels are
//! refused with the list.

use dojo_verifier::levels;
use dojo_verifier::workload::Variant;

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
