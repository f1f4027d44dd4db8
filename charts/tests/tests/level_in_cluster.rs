//! A level end to end in a cluster, the way the chart's README walks a
//! newcomer through it: `helm install` (the operator image in the chart's
//! pods), `kubectl apply -f challenges/level-03-idempotency/challenge.yaml`
//! with the starter's image, watch the verdict land in the Challenge's
//! status, change `spec.workload.image` to the fixed image, watch it pass.
//! Everything really runs on a real node: the name server and broker pods,
//! the verifier Job (`dojo-verifier --platform kube`) serving the world and
//! starting, crashing and stopping the learner's image as pods of its own.
//! Needs root; skips, saying why, where a real node cannot run.

use dojo_chart_tests::level::{self, Learner, reference, table};
use dojo_chart_tests::{Helm, real_node_plane};
use dojo_crds::Phase;
use dojo_verifier::workload::Variant;

#[tokio::test]
async fn level_3_fails_with_the_starter_then_passes_with_the_fix_in_a_cluster() {
    let Some(cp) = real_node_plane().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let info = dojo_verifier::levels::find(3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let built = level::load_images(
        cp,
        &[(info, vec![Variant::Starter, Variant::Fix])],
        tmp.path(),
    )
    .await
    .unwrap_or_else(|e| panic!("building and importing images: {e}"));
    // The Challenge's default verifier image is the one just built: nothing to override.
    assert_eq!(
        reference(&built, "verifier"),
        dojo_crds::DEFAULT_VERIFIER_IMAGE
    );
    let ns = level::install(cp, &built)
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));

    // The level's own challenge.yaml, as committed: its image is the starter's.
    let tenant = cp.new_namespace("learner").await.unwrap();
    let mut learner = Learner::new(cp, &tenant, info, &built).unwrap();
    assert_eq!(
        learner.challenge.spec.workload.image,
        reference(&built, "level-03-starter"),
        "challenge.yaml names the starter image images/build.sh makes"
    );
    learner.apply(None).await.unwrap();
    let (failed, _) = learner.verdict(1).await;
    let st = failed.status.clone().unwrap();
    assert_eq!(
        st.phase,
        Phase::Failed,
        "the starter must fail: {}",
        table(&failed)
    );
    let broken = st
        .checks
        .iter()
        .find(|c| c.id == "debited-once")
        .unwrap_or_else(|| panic!("no debited-once check: {}", table(&failed)));
    assert_eq!(broken.verdict, "fail", "{}", table(&failed));
    assert!(
        !broken.evidence.is_empty(),
        "the failure names the orders debited twice: {}",
        table(&failed)
    );
    assert!(
        st.checks.iter().all(|c| c.verdict != "error"),
        "every check judged: {}",
        table(&failed)
    );
    eprintln!("attempt 1 (starter):\n{}", table(&failed));

    // The learner fixes the code, builds and pushes a new image, and points the Challenge at it.
    learner
        .apply(Some(reference(&built, "level-03-fix")))
        .await
        .unwrap();
    let (passed, _) = learner.verdict(2).await;
    assert_eq!(
        passed.status.as_ref().unwrap().phase,
        Phase::Passed,
        "the fix must pass: {}",
        table(&passed)
    );
    eprintln!("attempt 2 (fix):\n{}", table(&passed));

    Helm::new()
        .unwrap()
        .kubeconfig(cp.kubeconfig_path())
        .run(&["uninstall", &ns, "--namespace", &ns, "--wait"])
        .unwrap_or_else(|e| panic!("{e}"));
}
