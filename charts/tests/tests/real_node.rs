//! The chart's Deployment for real: the operator image (built from this
//! workspace by images/build.sh) runs in the chart's two pods on a real
//! node (containerd, runc, kubelet) beside the control plane, with the
//! chart's probes, non-root user, read-only root filesystem and the
//! ServiceAccount token Kubernetes mounts (checked on the process itself). Needs root; skips, saying why,
//! where a real node cannot run.

use std::collections::BTreeSet;
use std::time::Duration;

use dojo_chart_tests::*;
use dojo_crds::Challenge;
use dojo_testenv::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(240);

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test]
async fn the_operator_image_runs_in_the_charts_pods_elects_a_leader_and_reconciles() {
    let Some(cp) = real_node_plane().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let node = cp.real_node().expect("the plane has a real node");
    let dir = tempfile::tempdir().unwrap();
    let binary = operator_binary(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let built = node
        .load_images(&[format!("operator={}", binary.display())])
        .await
        .unwrap_or_else(|e| panic!("building the operator image: {e}"));
    let image = &built
        .iter()
        .find(|b| b.name == "operator")
        .expect("the operator image")
        .reference;

    let ns = cp.new_namespace("dojo-real").await.unwrap();
    let operator = format!("{ns}-rocketmq-dojo-operator");
    install_on_real_node(cp, &ns, image)
        .unwrap_or_else(|e| panic!("helm install: {e}\n{}", node.log_tails(20)));

    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let lp = ListParams::default().labels("app.kubernetes.io/component=operator");
    let names: BTreeSet<String> = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // The chart's securityContext is what the process got: user 65532, no
    // capability, a read-only root filesystem.
    for pod in pods.list(&lp).await.unwrap().items {
        let (pids, _) = node.pod_processes(&pod.uid().unwrap());
        let operator_pids: Vec<u32> = pids
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "dojo-operator")
            })
            .collect();
        assert_eq!(
            operator_pids.len(),
            1,
            "{}: {operator_pids:?}",
            pod.name_any()
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", operator_pids[0])).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(field("Uid:"), ["65532"; 4], "{status}");
        assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", operator_pids[0])).unwrap();
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(4) == Some(&"/"))
            .expect("a root mount");
        assert!(
            root[5].split(',').any(|o| o == "ro"),
            "the root filesystem is writable: {}",
            root.join(" ")
        );
    }

    // One of the two holds the chart's Lease; its /metrics says so, the other's does not.
    let leases: Api<Lease> = Api::namespaced(cp.client(), &ns);
    let leader = eventually("a replica holds the Lease", WAIT, || async {
        Ok(holder(&leases, &operator)
            .await
            .filter(|h| names.contains(h)))
    })
    .await;
    for pod in pods.list(&lp).await.unwrap().items {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("a running pod has an IP");
        let expected = if pod.name_any() == leader {
            "dojo_operator_leader 1"
        } else {
            "dojo_operator_leader 0"
        };
        eventually(
            &format!("{} reports {expected}", pod.name_any()),
            WAIT,
            || {
                let url = format!("http://{ip}:8080/metrics");
                async move {
                    let text = reqwest::get(&url)
                        .await
                        .map_err(|e| e.to_string())?
                        .text()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(text.lines().any(|l| l == expected).then_some(()))
                }
            },
        )
        .await;
    }

    // The leader reconciles as the chart's ServiceAccount: every object of a
    // Challenge applied. A quota of zero pods keeps its pods from being
    // created (their images are not on this node, and nothing may be pulled).
    let tenant = cp.new_namespace("learners-real").await.unwrap();
    let quota: ResourceQuota = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )
    .unwrap();
    Api::<ResourceQuota>::namespaced(cp.client(), &tenant)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    let sample = read(&repo().join("crds/samples/level-01-producer-lifecycle.yaml")).unwrap();
    let mut ch: Challenge = serde_yaml::from_str(&sample).unwrap();
    ch.metadata.name = Some("in-cluster".into());
    let challenges: Api<Challenge> = Api::namespaced(cp.client(), &tenant);
    challenges
        .patch(
            "in-cluster",
            &PatchParams::apply("dojo-chart-test").force(),
            &Patch::Apply(&ch),
        )
        .await
        .unwrap();
    eventually(
        "the in-cluster operator applied every object of the Challenge",
        WAIT,
        || async {
            let ch = challenges
                .get("in-cluster")
                .await
                .map_err(|e| e.to_string())?;
            let provisioned = ch.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Provisioned" && c.status == "True")
            });
            if provisioned {
                Ok(Some(()))
            } else {
                Err(format!(
                    "status {}",
                    serde_json::to_string(&ch.status).unwrap()
                ))
            }
        },
    )
    .await;

    // The leader's pod deleted: it hands the Lease over on SIGTERM and
    // another replica (the standby, or the Deployment's new pod) takes it.
    pods.delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let next = eventually("another replica takes the Lease", WAIT, || async {
        Ok(holder(&leases, &operator).await.filter(|h| *h != leader))
    })
    .await;
    eprintln!(
        "leader {leader}, then {next} (standby: {})",
        names.iter().any(|n| *n == next)
    );

    Helm::new()
        .unwrap()
        .kubeconfig(cp.kubeconfig_path())
        .run(&["uninstall", &ns, "--namespace", &ns, "--wait"])
        .unwrap_or_else(|e| panic!("{e}"));
}
