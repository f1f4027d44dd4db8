//! `make bench-cluster [LEVELS="1 2"]`: each level end to end in a cluster
//! on the real node (the chart's operator, the level's challenge.yaml, the
//! verifier Job on the Challenge's pods): the starter's image, then the
//! fix's as the next attempt. Prints per attempt the verdict, the checks
//! passed and the seconds from apply to verdict, then the checks of every
//! run. Needs root.

use std::time::Duration;

use dojo_chart_tests::level::{self, Learner, table};
use dojo_testenv::ControlPlane;
use dojo_verifier::levels::{self, LevelInfo};
use dojo_verifier::workload::Variant;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; level numbers are the other arguments.
    let mut chosen: Vec<&'static LevelInfo> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u32>().ok())
        .map(|n| levels::find(n).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    if chosen.is_empty() {
        chosen = levels::LEVELS.iter().filter(|l| l.playable).collect();
    }
    let cp = ControlPlane::with_real_node()
        .await
        .unwrap_or_else(|e| panic!("starting the control plane with a real node: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let wanted: Vec<(&LevelInfo, Vec<Variant>)> = chosen
        .iter()
        .map(|l| (*l, vec![Variant::Starter, Variant::Fix]))
        .collect();
    let built = level::load_images(&cp, &wanted, tmp.path())
        .await
        .unwrap_or_else(|e| panic!("building and importing images: {e}"));
    level::install(&cp, &built)
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));

    let mut rows: Vec<(u8, &str, String, String, Duration)> = Vec::new();
    let mut details = Vec::new();
    for info in &chosen {
        let tenant = cp
            .new_namespace(&format!("level-{:02}", info.number))
            .await
            .unwrap();
        let mut learner = Learner::new(&cp, &tenant, info, &built).unwrap();
        for (attempt, (variant, image)) in [
            (Variant::Starter, None),
            (
                Variant::Fix,
                Some(level::reference(
                    &built,
                    &level::image_name(info, &Variant::Fix),
                )),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            learner.apply(image).await.unwrap();
            let (ch, took) = learner.verdict(attempt as u32 + 1).await;
            let st = ch.status.clone().unwrap_or_default();
            let name = if variant == Variant::Starter {
                "starter"
            } else {
                "fix"
            };
            eprintln!(
                "level {} {name}: {} in {:.0}s",
                info.number,
                st.phase,
                took.as_secs_f64()
            );
            rows.push((
                info.number,
                name,
                st.phase.to_string(),
                st.checks_summary.clone().unwrap_or_default(),
                took,
            ));
            details.push(format!("level {} {name}: {}", info.number, table(&ch)));
        }
    }
    println!(
        "\n{:<6} {:<8} {:<8} {:<7} {:>10}",
        "level", "variant", "verdict", "checks", "apply→end"
    );
    for (level, variant, phase, checks, took) in &rows {
        println!(
            "{level:<6} {variant:<8} {phase:<8} {checks:<7} {:>9.0}s",
            took.as_secs_f64()
        );
    }
    println!("\n{}", details.join("\n\n"));
}
