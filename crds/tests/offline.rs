//! Checks that need no server: the committed YAML is fresh, the samples
//! parse, and every malformed case says what it expects.

use dojo_crds::{Challenge, crd_yaml, level_facts};

mod common;
use common::{dir, yaml_files};

#[test]
fn committed_crd_yaml_is_fresh() {
    let committed = std::fs::read_to_string(dir("challenge.yaml")).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "crds/challenge.yaml is stale: run `make crds` and commit it"
    );
}

#[test]
fn every_sample_parses_and_there_is_one_per_level() {
    let files = yaml_files("samples");
    let mut levels: Vec<u8> = files
        .iter()
        .map(|f| {
            let c: Challenge = serde_yaml::from_str(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let slug = level_facts(c.spec.level).unwrap().slug;
            assert!(
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with(&format!("{slug}.yaml")),
                "{} is not named after its level",
                f.display()
            );
            c.spec.level
        })
        .collect();
    levels.sort();
    assert_eq!(levels, (1..=12).collect::<Vec<u8>>());
}

#[test]
fn every_invalid_case_names_the_message_it_expects() {
    let files = yaml_files("tests/invalid");
    assert!(
        files.len() >= 15,
        "the issue asks for at least 15 malformed Challenges, found {}",
        files.len()
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# expect: "),
            "{} must start with `# expect: <message fragment>`",
            f.display()
        );
    }
}
