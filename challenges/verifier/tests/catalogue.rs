//! The catalogue: each level's folder, its sample Challenge and its
//! registration agree; unknown levels are refused with the list.

use std::collections::BTreeSet;
use std::path::Path;

use dojo_verifier::levels::{self, LEVELS};
use dojo_verifier::workload::Variant;

fn challenges_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn registrations_are_in_order_and_match_the_crd_facts() {
    for (i, l) in LEVELS.iter().enumerate() {
        assert_eq!(
            l.number as usize,
            i + 1,
            "the catalogue lists the levels in order"
        );
        assert_eq!(
            (l.facts.number, l.facts.slug),
            (l.number, l.slug),
            "level {} registers the facts of another",
            l.number
        );
    }
}

#[test]
fn every_level_folder_is_registered_and_playable() {
    let registered: BTreeSet<String> = LEVELS
        .iter()
        .filter(|l| l.playable)
        .map(|l| l.dir_name())
        .collect();
    let folders: BTreeSet<String> = std::fs::read_dir(challenges_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("level-"))
        .collect();
    assert_eq!(
        folders, registered,
        "every level folder has a playable registration, and every playable level a folder"
    );
}

#[test]
fn every_playable_level_ships_its_parts_and_says_what_each_variant_gets() {
    for info in LEVELS.iter().filter(|l| l.playable) {
        let dir = info.dir();
        for part in [
            "README.md",
            "challenge.yaml",
            "starter/Cargo.toml",
            "solution/fix.patch",
            "hints/01.md",
        ] {
            assert!(
                dir.join(part).exists(),
                "level {} lacks {part}",
                info.number
            );
        }
        assert!(
            !Variant::near_misses(&dir).is_empty(),
            "level {} ships no near miss",
            info.number
        );
        let shipped: BTreeSet<String> = Variant::all(&dir)
            .iter()
            .map(|v| v.name().to_string())
            .collect();
        let expected: BTreeSet<String> = info.expected.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            shipped, expected,
            "level {}: the variants its folder ships and those its registration expects",
            info.number
        );
        assert!(
            !info.expected_failures("starter").unwrap().is_empty(),
            "level {}'s starter must fail",
            info.number
        );
        assert!(
            info.expected_failures("fix").unwrap().is_empty(),
            "level {}'s fix must pass",
            info.number
        );
        for v in Variant::all(&dir) {
            let must_fail = matches!(v, Variant::Starter | Variant::NearMiss(_));
            assert_eq!(
                !info.expected_failures(v.name()).unwrap().is_empty(),
                must_fail,
                "level {}: {v:?} must {}",
                info.number,
                if must_fail { "fail" } else { "pass" }
            );
        }
    }
}

#[test]
fn each_challenge_yaml_is_its_sample_and_names_its_level() {
    let samples = challenges_dir().join("../crds/samples");
    for info in LEVELS.iter() {
        let sample = std::fs::read_to_string(samples.join(format!("{}.yaml", info.dir_name())))
            .unwrap_or_else(|e| {
                panic!(
                    "level {}: crds/samples/{}.yaml: {e}",
                    info.number,
                    info.dir_name()
                )
            });
        let doc: serde_yaml::Value = serde_yaml::from_str(&sample).unwrap();
        assert_eq!(
            doc["spec"]["level"].as_u64(),
            Some(u64::from(info.number)),
            "crds/samples/{}.yaml names another level",
            info.dir_name()
        );
        if info.playable {
            let committed = std::fs::read_to_string(info.dir().join("challenge.yaml")).unwrap();
            assert_eq!(
                committed,
                sample,
                "level {}: challenge.yaml and crds/samples/{}.yaml differ",
                info.number,
                info.dir_name()
            );
        }
    }
}

#[test]
fn unknown_level_lists_the_levels() {
    let err = levels::find(13).unwrap_err();
    assert!(
        err.contains("there is no level 13")
            && err.contains("1 producer-lifecycle")
            && err.contains("12 multi-zone-dr"),
        "{err}"
    );
}
