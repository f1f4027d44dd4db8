//! A real node's teardown leaves nothing on the machine: with a pod running
//! behind a ClusterIP Service (network namespace, veth, mounts, cgroups,
//! kube-proxy's chains), dropping the plane removes every process, mount,
//! the bridge, every iptables chain and nft table it added, its cgroups and
//! files, and restores the sysctls. Its own test binary: one node per
//! machine at a time, and the shared one of `tests/node.rs` lives until its
//! binary exits.

#![recursion_limit = "512"]

use std::time::Duration;

use dojo_testenv::node::NODE_TYPE;
use dojo_testenv::{ControlPlane, Error, eventually};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test]
async fn teardown_leaves_no_process_mount_bridge_chain_or_cgroup() {
    let cp = match ControlPlane::with_real_node().await {
        Ok(cp) => cp,
        Err(Error::NodeUnsupported { reason }) => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
        Err(e) => panic!("starting the control plane with a real node: {e}"),
    };
    let node = cp.real_node().expect("a real node");
    let footprint = node.footprint();
    let ns = cp.new_namespace("node-teardown").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    // The sandbox image is all a pod needs here: it just holds on.
    let pause = dojo_testenv::images::build(&["pause"]).unwrap().remove(0);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "holder", "labels": {"app": "holder"}},
        "spec": {
            "nodeSelector": {"type": NODE_TYPE},
            "containers": [{"name": "main", "image": pause.reference, "imagePullPolicy": "Never"}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let services: Api<Service> = Api::namespaced(cp.client(), &ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "holder"},
        "spec": {"selector": {"app": "holder"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let uid = eventually("the pod Running", Duration::from_secs(120), || async {
        let p = pods.get("holder").await.map_err(|e| e.to_string())?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Running" {
            Ok(p.metadata.uid)
        } else {
            Err(format!("phase {phase:?}"))
        }
    })
    .await;
    let (pids, _) = node.pod_processes(&uid);
    assert!(
        !pids.is_empty(),
        "the running pod has processes in its cgroups"
    );
    let traces = footprint.leftovers();
    for kind in ["process", "mount", "bridge", "iptables chain", "cgroup"] {
        assert!(
            traces.iter().any(|t| t.starts_with(kind)),
            "a running node shows a {kind}: {traces:#?}"
        );
    }

    drop(cp);
    let left = footprint.leftovers();
    assert!(left.is_empty(), "left behind on the machine: {left:#?}");
}
