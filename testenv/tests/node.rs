//! A real node: pods from the project's own images really run on this
//! machine (containerd + runc + bridge CNI + kubelet + kube-proxy +
//! CoreDNS), one node shared by the tests of this binary and torn down when
//! it exits. Needs root and `make deps`; images are built on first use
//! (images/build.sh, cached). Skips, saying why, where a node cannot run.

#![recursion_limit = "512"]

use std::time::Duration;

use dojo_testenv::images::Built;
use dojo_testenv::pods::{self, phase, pod_spec, terminated, typed, wait_finished};
use dojo_testenv::{ControlPlane, Error, eventually};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);

/// The shared plane with its node and the images the tests run, or `None`
/// (after saying why) where a node cannot run.
async fn node() -> Option<(&'static ControlPlane, &'static Images)> {
    let cp = match ControlPlane::shared_with_real_node().await {
        Ok(cp) => cp,
        Err(Error::NodeUnsupported { reason }) => {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        Err(e) => panic!("starting the control plane with a real node: {e}"),
    };
    let images = IMAGES
        .get_or_init(|| async {
            let probe = format!("workload={}", env!("CARGO_BIN_EXE_dojo-node-probe"));
            let names = ["workload-base".to_string(), "rocketmq".into(), probe];
            let node = cp.real_node().expect("the plane has a real node");
            let built = node
                .load_images(&names)
                .await
                .unwrap_or_else(|e| panic!("building and importing images: {e}"));
            let find = |name: &str| {
                built
                    .iter()
                    .find(|b| b.name == name)
                    .cloned()
                    .expect("built")
            };
            Images {
                base: find("workload-base"),
                rocketmq: find("rocketmq"),
                probe: find("workload"),
            }
        })
        .await;
    Some((cp, images))
}

struct Images {
    base: Built,
    rocketmq: Built,
    probe: Built,
}

static IMAGES: tokio::sync::OnceCell<Images> = tokio::sync::OnceCell::const_new();

fn obj<T: DeserializeOwned>(v: Value) -> T {
    typed(v).expect("a valid object")
}

#[tokio::test]
async fn pod_from_the_project_image_runs_logs_and_exits_with_its_code() {
    let Some((cp, images)) = node().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-exit").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod: Pod = obj(json!({
        "metadata": {"name": "exit-seven"},
        "spec": pod_spec(&images.base.reference, json!({"command": ["sh", "-c", "echo hello from $(hostname) as $(id -u); exit 7"]})),
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let (pod, state) = wait_finished(&pods, "exit-seven", WAIT).await.unwrap();
    assert_eq!(state.exit_code, 7, "{state:?}");
    assert_eq!(phase(&pod), "Failed");
    let logs = pods
        .logs("exit-seven", &LogParams::default())
        .await
        .unwrap();
    assert_eq!(
        logs.trim(),
        "hello from exit-seven as 65532",
        "the workload base runs as its unprivileged user"
    );

    // Deleted, it leaves nothing running: no process and no cgroup of it.
    let uid = pod.metadata.uid.clone().unwrap();
    let node = cp.real_node().unwrap();
    pods.delete("exit-seven", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted pod's processes and cgroups gone",
        WAIT,
        || async {
            let gone = pods
                .get_opt("exit-seven")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            let (pids, dirs) = node.pod_processes(&uid);
            if gone && pids.is_empty() && dirs.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!(
                    "pod object gone: {gone}, processes {pids:?}, cgroups {dirs:?}"
                ))
            }
        },
    )
    .await;
}

/// In-cluster clients (the operator, the verifier Job) reach the apiserver
/// through the `kubernetes` Service with their ServiceAccount token.
#[tokio::test]
async fn pod_reaches_the_apiserver_through_the_kubernetes_service() {
    let Some((cp, images)) = node().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-api").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod: Pod = obj(
        json!({"metadata": {"name": "in-cluster"}, "spec": pod_spec(&images.probe.reference, json!({"args": ["api"]}))}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let (_, state) = wait_finished(&pods, "in-cluster", WAIT).await.unwrap();
    let logs = pods
        .logs("in-cluster", &LogParams::default())
        .await
        .unwrap();
    assert_eq!(state.exit_code, 0, "{logs}");
    assert_eq!(
        logs.trim(),
        format!(
            "apiserver {} answered in-cluster",
            dojo_testenv::cache::KUBE_VERSION
        )
    );
}

#[tokio::test]
async fn job_pod_reports_through_its_termination_message() {
    let Some((cp, images)) = node().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-job").await.unwrap();
    let report = r#"{"verdict":"PASS","level":1}"#;
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let job: Job = obj(json!({
        "metadata": {"name": "verifier"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": pod_spec(&images.base.reference, json!({
                "command": ["sh", "-c", format!("printf '%s' '{report}' > /dev/termination-log")],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }))},
        },
    }));
    jobs.create(&PostParams::default(), &job).await.unwrap();
    eventually("the Job complete", WAIT, || async {
        let j = jobs.get("verifier").await.map_err(|e| e.to_string())?;
        let succeeded = j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
        if succeeded == 1 {
            Ok(Some(()))
        } else {
            Err(format!("status {:?}", j.status))
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let list = pods
        .list(&ListParams::default().labels("job-name=verifier"))
        .await
        .unwrap();
    let [pod] = &list.items[..] else {
        panic!("one pod for the Job, got {}", list.items.len())
    };
    let state = terminated(pod).expect("the Job's pod terminated");
    assert_eq!(state.exit_code, 0);
    assert_eq!(
        state.message.as_deref(),
        Some(report),
        "the API shows the termination message"
    );
}

/// The name server and broker as the operator lays them out (headless
/// Services, StatefulSets; the broker finds the name server by Service
/// name), and two client pods: one given the name server's address as the
/// operator gives it to a workload (the headless Service's name), one by a
/// ClusterIP Service's name (through kube-proxy).
#[tokio::test]
async fn rocketmq_pods_serve_client_pods_through_services() {
    let Some((cp, images)) = node().await else {
        return;
    };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-rocketmq").await.unwrap();
    let addrs = pods::create_rocketmq(&cp.client(), &ns, &images.rocketmq.reference)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    for (name, addr) in [
        ("client-headless", &addrs.headless),
        ("client-cluster-ip", &addrs.cluster_ip),
    ] {
        pods.create(
            &PostParams::default(),
            &pods::probe_pod(name, &images.probe.reference, addr).unwrap(),
        )
        .await
        .unwrap();
    }
    for (name, addr) in [
        ("client-headless", &addrs.headless),
        ("client-cluster-ip", &addrs.cluster_ip),
    ] {
        let (_, state) = wait_finished(&pods, name, WAIT).await.unwrap();
        let logs = pods
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_default();
        let broker = pods
            .logs(
                "dojo-broker-0",
                &LogParams {
                    tail_lines: Some(20),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_default();
        assert_eq!(state.exit_code, 0, "{name}: {logs}\nbroker pod: {broker}");
        assert!(
            logs.contains(&format!("sent and received a message through {addr}")),
            "{name}: {logs}"
        );
    }
}
