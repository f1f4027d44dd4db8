//! The operator against the real control plane (kube-apiserver, etcd,
//! controller-manager, scheduler, kwok nodes). Each test has its own
//! namespace and its own `dojo-operator` process, running as the chart's
//! ClusterRole, watching only that namespace.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use dojo_crds::{Challenge, Phase};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateWaiting, Event, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// `(kind, name)` of every object carrying the Challenge's label, with its owners' names.
async fn owned_objects(
    cp: &dojo_testenv::ControlPlane,
    ns: &str,
    name: &str,
) -> Vec<(String, String, Vec<String>)> {
    async fn list<K>(
        cp: &dojo_testenv::ControlPlane,
        ns: &str,
        lp: &ListParams,
        out: &mut Vec<(String, String, Vec<String>)>,
    ) where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        for o in Api::<K>::namespaced(cp.client(), ns)
            .list(lp)
            .await
            .unwrap()
            .items
        {
            let owners = o
                .owner_references()
                .iter()
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect();
            out.push((K::kind(&()).to_string(), o.name_any(), owners));
        }
    }
    let lp = ListParams::default().labels(&format!("dojo.rmq.dev/challenge={name}"));
    let mut out = Vec::new();
    list::<StatefulSet>(cp, ns, &lp, &mut out).await;
    list::<Deployment>(cp, ns, &lp, &mut out).await;
    list::<Job>(cp, ns, &lp, &mut out).await;
    list::<Service>(cp, ns, &lp, &mut out).await;
    list::<ConfigMap>(cp, ns, &lp, &mut out).await;
    list::<ServiceAccount>(cp, ns, &lp, &mut out).await;
    list::<Role>(cp, ns, &lp, &mut out).await;
    list::<RoleBinding>(cp, ns, &lp, &mut out).await;
    list::<NetworkPolicy>(cp, ns, &lp, &mut out).await;
    list::<PodDisruptionBudget>(cp, ns, &lp, &mut out).await;
    out.sort();
    out
}

fn reached(ch: &Challenge, phase: Phase) -> bool {
    let s = ch.status.clone().unwrap_or_default();
    match phase {
        Phase::Running => s.running_at.is_some(),
        other => s.phase == other,
    }
}

async fn event_reasons(cp: &dojo_testenv::ControlPlane, ns: &str) -> Vec<String> {
    let events = Api::<Event>::namespaced(cp.client(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    events
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("Challenge"))
        .filter_map(|e| e.reason)
        .collect()
}

fn running_nodes(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect()
}

#[tokio::test]
async fn a_level_runs_with_every_object_owned_and_labelled() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-level").await.unwrap();
    let _op = Operator::start_with_chart_role(cp, &ns).await;
    let created = apply_challenge(cp, &ns, &sample(3, "orders")).await;
    let uid = created.uid().unwrap();

    let ch = wait_status(cp, &ns, "orders", "phase reaches Running", |c| {
        reached(c, Phase::Running)
    })
    .await;
    let status = ch.status.unwrap();
    assert_eq!(status.attempts, 1);
    assert_eq!(status.observed_generation, ch.metadata.generation);
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Ready"
            && c.status == "True"
            && c.observed_generation == ch.metadata.generation),
        "{:?}",
        status.conditions
    );

    let objects = owned_objects(cp, &ns, "orders").await;
    let kinds: BTreeSet<String> = objects.iter().map(|(k, n, _)| format!("{k}/{n}")).collect();
    for expected in [
        "StatefulSet/orders-namesrv",
        "StatefulSet/orders-broker",
        "Deployment/orders-workload",
        "Job/orders-verifier-1",
        "Service/orders-namesrv",
        "Service/orders-broker",
        "Service/orders-world",
        "ConfigMap/orders-broker",
        "ServiceAccount/orders-verifier",
        "Role/orders-verifier",
        "RoleBinding/orders-verifier",
        "NetworkPolicy/orders-isolation",
        "NetworkPolicy/orders-verifier-apiserver",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} missing from {kinds:?}"
        );
    }
    for (kind, name, owners) in &objects {
        assert_eq!(owners, &["Challenge/orders".to_string()], "{kind}/{name}");
    }
    // Owner references carry the uid: the garbage collector keys on it.
    let sts = Api::<StatefulSet>::namespaced(cp.client(), &ns)
        .get("orders-broker")
        .await
        .unwrap();
    assert_eq!(sts.owner_references()[0].uid, uid);
    let labels = sts.labels();
    assert_eq!(labels["dojo.rmq.dev/level"], "3");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "dojo-operator");
    assert_eq!(labels["app.kubernetes.io/instance"], "orders");

    for component in ["namesrv", "broker", "workload"] {
        let pods = pods(cp, &ns, "orders", component).await;
        let nodes = running_nodes(&pods);
        assert_eq!(nodes.len(), 1, "{component}: {pods:?}");
        assert!(nodes[0].starts_with("kwok-"), "{nodes:?}");
    }
    let workload = &pods(cp, &ns, "orders", "workload").await[0];
    let env: Vec<String> = workload.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        env,
        ["NAMESRV_ADDR", "WORLD_URL", "DOJO_LEVEL", "DOJO_INSTANCE"]
    );

    let reasons = event_reasons(cp, &ns).await;
    assert!(
        reasons.iter().any(|r| r == "Provisioning") && reasons.iter().any(|r| r == "Running"),
        "{reasons:?}"
    );

    let out = Command::new(cp.kubectl_path())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["get", "chal", "-n", &ns])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("kubectl get chal:\n{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "LEVEL", "PHASE", "CHECKS", "ATTEMPTS", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!((row[0], row[1]), ("orders", "3"), "{table}");
}

#[tokio::test]
async fn level_12_brokers_land_one_per_zone() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-zones").await.unwrap();
    let _op = Operator::start_with_chart_role(cp, &ns).await;
    apply_challenge(cp, &ns, &sample(12, "dr")).await;
    wait_status(cp, &ns, "dr", "phase reaches Running", |c| {
        reached(c, Phase::Running)
    })
    .await;
    let brokers = pods(cp, &ns, "dr", "broker").await;
    let nodes: BTreeSet<String> = running_nodes(&brokers).into_iter().collect();
    let zones: BTreeSet<String> = ["kwok-zone-a", "kwok-zone-b", "kwok-zone-c"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(nodes, zones, "one broker per zone: {brokers:?}");
    // Each broker is told the zone the scheduler put it in.
    for pod in &brokers {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let env = pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let zone = env
            .iter()
            .find(|e| e.name == "ROCKETMQ_ZONE")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert_eq!(node, format!("kwok-{zone}"), "{}", pod.name_any());
    }
    let pdb = Api::<PodDisruptionBudget>::namespaced(cp.client(), &ns)
        .get("dr-broker")
        .await
        .unwrap();
    assert_eq!(pdb.owner_references()[0].name, "dr");
}

/// A report exactly as the verifier writes it to its termination message:
/// `(id, verdict, evidence)` per check.
fn report(checks: &[(&str, &str, &[&str])]) -> String {
    use dojo_report::{Check, Figure, Report, TERMINATION_MESSAGE_LIMIT, Verdict};
    let checks: Vec<Check> = checks
        .iter()
        .map(|(id, v, ev)| {
            let verdict = match *v {
                "pass" => Verdict::Pass,
                "fail" => Verdict::Fail,
                _ => Verdict::Error,
            };
            Check::new(id, &format!("{id} holds"), verdict, "as measured")
                .with_evidence(ev.iter().copied())
        })
        .collect();
    let figures = vec![Figure {
        name: "duplicated".into(),
        value: 2.0,
        unit: "orders".into(),
    }];
    Report {
        level: 3,
        slug: "idempotency".into(),
        verdict: Report::overall(&checks),
        checks,
        figures,
        series: vec![],
        started_at_ms: 0,
        duration_ms: 61000,
        artefacts: None,
    }
    .to_bounded_json(TERMINATION_MESSAGE_LIMIT)
}

async fn verifier_pod(cp: &dojo_testenv::ControlPlane, ns: &str, job: &str) -> String {
    eventually(&format!("a pod of Job {job}"), WAIT, || async move {
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let pods = Api::<Pod>::namespaced(cp.client(), ns)
            .list(&lp)
            .await
            .map_err(|e| e.to_string())?
            .items;
        Ok(pods.first().map(|p| p.name_any()))
    })
    .await
}

/// `dojo_challenges` is counted from the operator's cache at scrape time,
/// which may trail the API server a moment behind on a busy machine.
async fn counted(op: &Operator, phase: &str) {
    let series = format!(r#"dojo_challenges{{level="3",phase="{phase}"}}"#);
    eventually(&format!("{series} at 1"), WAIT, || async {
        Ok((op.metric(&series).await == 1.0).then_some(()))
    })
    .await;
}

#[tokio::test]
async fn the_verdict_reaches_status_and_metrics_and_a_new_image_is_a_new_attempt() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-verdict").await.unwrap();
    let op = Operator::start_with_chart_role(cp, &ns).await;
    let mut ch = sample(3, "pay");
    apply_challenge(cp, &ns, &ch).await;

    let pod = verifier_pod(cp, &ns, "pay-verifier-1").await;
    let failing = report(&[
        ("no-loss", "pass", &[]),
        (
            "exactly-once",
            "fail",
            &["order-7: debits #12, #15", "order-9: debits #20, #31"],
        ),
    ]);
    terminate_verifier(cp, &ns, &pod, &failing).await;
    let done = wait_status(cp, &ns, "pay", "phase Failed", |c| {
        c.phase() == Phase::Failed
    })
    .await;
    let s = done.status.unwrap();
    assert_eq!(s.verdict.as_deref(), Some("fail"));
    assert_eq!(s.checks_summary.as_deref(), Some("1/2"));
    assert_eq!(s.score, Some(50));
    assert_eq!(s.checks[1].id, "exactly-once");
    assert_eq!(s.checks[1].evidence[0], "order-7: debits #12, #15");
    assert_eq!(s.figures[0].name, "duplicated");
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True" && c.reason == "Failed"),
        "{:?}",
        s.conditions
    );
    let metrics = op.get("/metrics").await.unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            r#"dojo_checks_total{check="exactly-once",level="3",verdict="fail"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"dojo_checks_total{check="no-loss",level="3",verdict="pass"}"#
        ),
        1.0
    );
    counted(&op, "Failed").await;
    assert_eq!(
        metric_value(&metrics, r#"dojo_attempts_total{level="3"}"#),
        1.0
    );

    // The learner pushes a fix: a new image is a new attempt with a new verifier.
    ch.spec.workload.image = "localhost/rocketmq-dojo/level-03-fixed:0.1.0".into();
    apply_challenge(cp, &ns, &ch).await;
    let pod = verifier_pod(cp, &ns, "pay-verifier-2").await;
    let passing = report(&[("no-loss", "pass", &[]), ("exactly-once", "pass", &[])]);
    terminate_verifier(cp, &ns, &pod, &passing).await;
    let done = wait_status(cp, &ns, "pay", "phase Passed", |c| {
        c.phase() == Phase::Passed
    })
    .await;
    let s = done.status.unwrap();
    assert_eq!(
        (s.attempts, s.checks_summary.as_deref(), s.score),
        (2, Some("2/2"), Some(95))
    );
    assert!(s.passed_at.is_some());
    // The first attempt's verifier is gone: the world Service selects one pod.
    eventually("the first verifier Job deleted", WAIT, || async {
        let gone = Api::<Job>::namespaced(cp.client(), &ns)
            .get_opt("pay-verifier-1")
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await;
    let metrics = op.get("/metrics").await.unwrap();
    assert_eq!(
        metric_value(&metrics, r#"dojo_attempts_total{level="3"}"#),
        2.0
    );
    assert_eq!(
        metric_value(&metrics, r#"dojo_time_to_pass_seconds_count{level="3"}"#),
        1.0,
        "{metrics}"
    );
    counted(&op, "Passed").await;
    assert!(metric_value(&metrics, r#"dojo_reconcile_total{result="ok"}"#) > 0.0);
}

#[tokio::test]
async fn deleting_the_challenge_leaves_nothing_behind() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-delete").await.unwrap();
    let _op = Operator::start_with_chart_role(cp, &ns).await;
    apply_challenge(cp, &ns, &sample(12, "gone")).await;
    wait_status(cp, &ns, "gone", "phase reaches Running", |c| {
        reached(c, Phase::Running)
    })
    .await;
    assert!(owned_objects(cp, &ns, "gone").await.len() >= 16);

    Api::<Challenge>::namespaced(cp.client(), &ns)
        .delete("gone", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "every object and pod of the Challenge collected",
        WAIT,
        || async {
            let left = owned_objects(cp, &ns, "gone").await;
            let lp = ListParams::default().labels("dojo.rmq.dev/challenge=gone");
            let pods = Api::<Pod>::namespaced(cp.client(), &ns)
                .list(&lp)
                .await
                .map_err(|e| e.to_string())?
                .items;
            if left.is_empty() && pods.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("left: {left:?}, {} pods", pods.len()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_restart_mid_reconcile_converges_without_duplicates() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-restart").await.unwrap();
    let kubeconfig = operator_kubeconfig(cp, &ns).await;
    let spec = || OperatorSpec {
        kubeconfig: &kubeconfig,
        namespace: &ns,
        identity: "op-1",
        lease_seconds: 15,
    };
    let mut op = Operator::start(cp, spec());
    apply_challenge(cp, &ns, &sample(12, "crash")).await;
    // SIGKILL as soon as the first objects exist, before the rest are applied.
    eventually("the first object applied", WAIT, || async {
        Ok(Api::<Service>::namespaced(cp.client(), &ns)
            .get_opt("crash-namesrv")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ()))
    })
    .await;
    op.kill();
    let partial = owned_objects(cp, &ns, "crash").await.len();

    // Same identity: it holds the Lease it left and resumes at once.
    let _op = Operator::start(cp, spec());
    wait_status(
        cp,
        &ns,
        "crash",
        "phase reaches Running after the restart",
        |c| reached(c, Phase::Running),
    )
    .await;
    let objects = owned_objects(cp, &ns, "crash").await;
    eprintln!(
        "{partial} objects when killed, {} after the restart",
        objects.len()
    );
    let names: Vec<String> = objects.iter().map(|(k, n, _)| format!("{k}/{n}")).collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "duplicates: {names:?}");
    // 14 kinds of object, three broker StatefulSets among them.
    assert_eq!(objects.len(), 16, "{names:?}");
    assert!(
        objects
            .iter()
            .all(|(_, _, owners)| owners == &["Challenge/crash".to_string()]),
        "{objects:?}"
    );
    assert_eq!(pods(cp, &ns, "crash", "broker").await.len(), 3);
    assert_eq!(pods(cp, &ns, "crash", "workload").await.len(), 1);
    assert_eq!(
        challenge(cp, &ns, "crash").await.status.unwrap().attempts,
        1
    );
}

/// Two replicas as the chart's ClusterRole: replica-a leading, replica-b ready as standby.
async fn leader_and_standby(
    cp: &dojo_testenv::ControlPlane,
    ns: &str,
    lease_seconds: u64,
) -> (Operator, Operator) {
    let kubeconfig = operator_kubeconfig(cp, ns).await;
    let spec = |identity| OperatorSpec {
        kubeconfig: &kubeconfig,
        namespace: ns,
        identity,
        lease_seconds,
    };
    let a = Operator::start(cp, spec("replica-a"));
    // Let replica-a take the Lease first.
    eventually("replica-a leads", WAIT, || async {
        Ok((a.metric("dojo_operator_leader").await == 1.0).then_some(()))
    })
    .await;
    let b = Operator::start(cp, spec("replica-b"));
    eventually("replica-b ready as standby", WAIT, || async {
        Ok(b.get("/readyz")
            .await
            .ok()
            .filter(|r| r == "ok")
            .map(|_| ()))
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn of_two_replicas_only_the_leader_reconciles() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-leader").await.unwrap();
    let (mut a, b) = leader_and_standby(cp, &ns, 4).await;

    apply_challenge(cp, &ns, &sample(5, "first")).await;
    wait_status(cp, &ns, "first", "phase reaches Running", |c| {
        reached(c, Phase::Running)
    })
    .await;
    let ok = r#"dojo_reconcile_total{result="ok"}"#;
    assert!(a.metric(ok).await > 0.0);
    assert_eq!(b.metric(ok).await, 0.0, "the standby reconciled");
    assert_eq!(b.metric("dojo_operator_leader").await, 0.0);

    // The leader dies; the standby takes over once the Lease expires.
    a.kill();
    apply_challenge(cp, &ns, &sample(6, "second")).await;
    wait_status(
        cp,
        &ns,
        "second",
        "the new leader runs the second Challenge",
        |c| reached(c, Phase::Running),
    )
    .await;
    assert_eq!(b.metric("dojo_operator_leader").await, 1.0);
    assert!(b.metric(ok).await > 0.0);
}

#[tokio::test]
async fn sigterm_hands_the_lease_to_the_standby_at_once() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-sigterm").await.unwrap();
    // A Lease far longer than WAIT: the standby can only take over in time
    // if the leader releases it.
    let (mut a, b) = leader_and_standby(cp, &ns, 600).await;
    apply_challenge(cp, &ns, &sample(5, "before")).await;
    wait_status(cp, &ns, "before", "phase reaches Running", |c| {
        reached(c, Phase::Running)
    })
    .await;

    let status = a.terminate();
    assert!(
        status.success(),
        "SIGTERM must end the operator with 0, got {status:?}:\n{}",
        a.log_tail()
    );
    apply_challenge(cp, &ns, &sample(6, "after")).await;
    wait_status(cp, &ns, "after", "the standby runs a new Challenge", |c| {
        reached(c, Phase::Running)
    })
    .await;
    assert_eq!(b.metric("dojo_operator_leader").await, 1.0);
    let lease = Api::<Lease>::namespaced(cp.client(), &ns)
        .get("dojo-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("replica-b"));
}

#[tokio::test]
async fn objects_deleted_by_hand_come_back_without_waiting_for_the_resync() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-heal").await.unwrap();
    let _op = Operator::start_with_chart_role(cp, &ns).await;
    apply_challenge(cp, &ns, &sample(3, "heal")).await;
    // Once the verifier Job exists the phase no longer depends on RocketMQ
    // and the workload: only the watches can notice they are gone.
    verifier_pod(cp, &ns, "heal-verifier-1").await;
    let before = owned_objects(cp, &ns, "heal").await;
    let client = cp.client();
    let dp = DeleteParams::background();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("heal-workload", &dp)
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .delete("heal-world", &dp)
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .delete("heal-broker", &dp)
        .await
        .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns)
        .delete("heal-verifier", &dp)
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .delete("heal-isolation", &dp)
        .await
        .unwrap();
    // WAIT (90 s) is well under the 5-minute re-apply of unchanged Challenges.
    eventually("every deleted object re-applied", WAIT, || async {
        let now = owned_objects(cp, &ns, "heal").await;
        let names = |l: &[(String, String, Vec<String>)]| {
            l.iter()
                .map(|(k, n, _)| format!("{k}/{n}"))
                .collect::<BTreeSet<_>>()
        };
        let missing: Vec<String> = names(&before).difference(&names(&now)).cloned().collect();
        if missing.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("still missing: {missing:?}"))
        }
    })
    .await;
    let workload = Api::<Deployment>::namespaced(client, &ns)
        .get("heal-workload")
        .await
        .unwrap();
    assert_eq!(workload.owner_references()[0].name, "heal");
}

/// Level 12 with a zone no node is in: its broker never schedules, so the
/// Challenge stays Provisioning while the test plays the workload's kubelet.
async fn stuck_in_provisioning(
    cp: &dojo_testenv::ControlPlane,
    ns: &str,
    name: &str,
    image: &str,
) -> Challenge {
    let mut ch = sample(12, name);
    ch.spec.rocketmq.zones = Some(vec![
        "zone-a".into(),
        "zone-b".into(),
        "zone-nowhere".into(),
    ]);
    ch.spec.workload.image = image.into();
    apply_challenge(cp, ns, &ch).await;
    ch
}

/// The workload pod of `attempt` once kwok has started it.
async fn workload_pod(
    cp: &dojo_testenv::ControlPlane,
    ns: &str,
    name: &str,
    attempt: u32,
) -> String {
    eventually(&format!("the workload pod of attempt {attempt} started"), WAIT, || async move {
        let lp = ListParams::default().labels(&format!("dojo.rmq.dev/challenge={name},app.kubernetes.io/component=workload,dojo.rmq.dev/attempt={attempt}"));
        let pods = Api::<Pod>::namespaced(cp.client(), ns).list(&lp).await.map_err(|e| e.to_string())?.items;
        Ok(pods.into_iter().find(|p| p.status.as_ref().is_some_and(|s| s.pod_ip.is_some())).map(|p| p.name_any()))
    })
    .await
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

/// The Complete condition of an attempt that ended in Error, once it has.
async fn error_condition(
    cp: &dojo_testenv::ControlPlane,
    ns: &str,
    name: &str,
    attempt: u32,
) -> dojo_crds::Condition {
    let ch = wait_status(cp, ns, name, &format!("attempt {attempt} in Error"), |c| {
        c.phase() == Phase::Error && c.status.as_ref().is_some_and(|s| s.attempts == attempt)
    })
    .await;
    ch.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Complete")
        .unwrap()
}

#[tokio::test]
async fn a_workload_that_cannot_start_ends_the_attempt_saying_what_to_do() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("op-workload").await.unwrap();
    let _op = Operator::start_with_chart_role(cp, &ns).await;
    let image = "localhost/rocketmq-dojo/not-pushed:0.1.0";
    let mut ch = stuck_in_provisioning(cp, &ns, "shop", image).await;

    let pod = workload_pod(cp, &ns, "shop", 1).await;
    let not_found = format!("failed to pull and unpack image \"{image}\": not found");
    set_container_state(
        cp,
        &ns,
        &pod,
        "workload",
        "Pending",
        waiting("ErrImagePull", &not_found),
    )
    .await;
    let complete = error_condition(cp, &ns, "shop", 1).await;
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("True", "WorkloadImagePullFailed")
    );
    assert!(
        complete.message.contains(image)
            && complete
                .message
                .contains("push it or fix spec.workload.image"),
        "{}",
        complete.message
    );
    eventually("a WorkloadImagePullFailed Event", WAIT, || async {
        Ok(event_reasons(cp, &ns)
            .await
            .iter()
            .any(|r| r == "WorkloadImagePullFailed")
            .then_some(()))
    })
    .await;

    // The learner pushes an image that starts, then crashes over and over.
    ch.spec.workload.image = "localhost/rocketmq-dojo/crashes:0.1.0".into();
    apply_challenge(cp, &ns, &ch).await;
    let pod = workload_pod(cp, &ns, "shop", 2).await;
    set_container_state(
        cp,
        &ns,
        &pod,
        "workload",
        "Running",
        waiting(
            "CrashLoopBackOff",
            "back-off 40s restarting failed container=workload",
        ),
    )
    .await;
    let complete = error_condition(cp, &ns, "shop", 2).await;
    assert_eq!(complete.reason, "WorkloadCrashing");
    assert!(
        complete.message.contains(&format!(
            "kubectl logs -n {ns} deploy/shop-workload --previous"
        )),
        "{}",
        complete.message
    );
    eventually("a WorkloadCrashing Event", WAIT, || async {
        Ok(event_reasons(cp, &ns)
            .await
            .iter()
            .any(|r| r == "WorkloadCrashing")
            .then_some(()))
    })
    .await;
}
