//! A real node: pods from the project's own images really run on this
//! machine (containerd + runc + bridge CNI + kubelet + kube-proxy +
//! CoreDNS), one node shared by the tests of this binary and torn down when
//! it exits. Needs root and `make deps`; images are built on first use
//! (images/build.sh, cached). Skips, saying why, where a node cannot run.

#![recursion_limit = "512"]

use std::time::Duration;

use dojo_testenv::images::Built;
use dojo_testenv::node::NODE_TYPE;
use dojo_testenv::{ControlPlane, Error, eventually};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
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
            let built = node.load_images(&names).await.unwrap_or_else(|e| panic!("building and importing images: {e}"));
            let find = |name: &str| built.iter().find(|b| b.name == name).cloned().expect("built");
            Images { base: find("workload-base"), rocketmq: find("rocketmq"), probe: find("workload") }
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
    serde_json::from_value(v).expect("a valid object")
}

/// A pod spec that runs on the real node, from a locally built image.
fn pod_spec(image: &str, container: Value) -> Value {
    let mut c = json!({"name": "main", "image": image, "imagePullPolicy": "Never"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
        c.extend(extra.clone());
    }
    json!({"nodeSelector": {"type": NODE_TYPE}, "restartPolicy": "Never", "enableServiceLinks": false, "containers": [c]})
}

fn phase(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

/// The terminated state of the pod's first container, once there is one.
fn terminated(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone()
}

/// Until the pod has finished: phase Succeeded or Failed.
async fn wait_terminated(pods: &Api<Pod>, name: &str) -> (Pod, k8s_openapi::api::core::v1::ContainerStateTerminated) {
    eventually(&format!("pod {name} terminated"), WAIT, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let done = matches!(phase(&p).as_str(), "Succeeded" | "Failed");
        match terminated(&p) {
            Some(t) if done => Ok(Some((p, t))),
            _ => Err(format!("phase {:?}, status {:?}", phase(&p), p.status.as_ref().and_then(|s| s.container_statuses.clone()))),
        }
    })
    .await
}

#[tokio::test]
async fn pod_from_the_project_image_runs_logs_and_exits_with_its_code() {
    let Some((cp, images)) = node().await else { return };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-exit").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod: Pod = obj(json!({
        "metadata": {"name": "exit-seven"},
        "spec": pod_spec(&images.base.reference, json!({"command": ["sh", "-c", "echo hello from $(hostname) as $(id -u); exit 7"]})),
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let (pod, state) = wait_terminated(&pods, "exit-seven").await;
    assert_eq!(state.exit_code, 7, "{state:?}");
    assert_eq!(phase(&pod), "Failed");
    let logs = pods.logs("exit-seven", &LogParams::default()).await.unwrap();
    assert_eq!(logs.trim(), "hello from exit-seven as 65532", "the workload base runs as its unprivileged user");

    // Deleted, it leaves nothing running: no process and no cgroup of it.
    let uid = pod.metadata.uid.clone().unwrap();
    let node = cp.real_node().unwrap();
    pods.delete("exit-seven", &DeleteParams::default()).await.unwrap();
    eventually("the deleted pod's processes and cgroups gone", WAIT, || async {
        let gone = pods.get_opt("exit-seven").await.map_err(|e| e.to_string())?.is_none();
        let (pids, dirs) = node.pod_processes(&uid);
        if gone && pids.is_empty() && dirs.is_empty() { Ok(Some(())) } else { Err(format!("pod object gone: {gone}, processes {pids:?}, cgroups {dirs:?}")) }
    })
    .await;
}

#[tokio::test]
async fn job_pod_reports_through_its_termination_message() {
    let Some((cp, images)) = node().await else { return };
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
        if succeeded == 1 { Ok(Some(())) } else { Err(format!("status {:?}", j.status)) }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let list = pods.list(&ListParams::default().labels("job-name=verifier")).await.unwrap();
    let [pod] = &list.items[..] else { panic!("one pod for the Job, got {}", list.items.len()) };
    let state = terminated(pod).expect("the Job's pod terminated");
    assert_eq!(state.exit_code, 0);
    assert_eq!(state.message.as_deref(), Some(report), "the API shows the termination message");
}

/// The name server and broker as the operator lays them out
/// (operator/src/build.rs): headless Services, StatefulSets running
/// `sh mqnamesrv` and `sh mqbroker -c` with the pod's IP put in the broker's
/// config; a client in a second pod finds them by Service name.
#[tokio::test]
async fn rocketmq_pods_serve_a_client_pod_through_services() {
    let Some((cp, images)) = node().await else { return };
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("node-rocketmq").await.unwrap();
    let client = cp.client();
    let namesrv_addr = format!("dojo-namesrv.{ns}.svc:9876");
    let java_opts = json!({"name": "JAVA_OPT_EXT", "value": "-Xms256m -Xmx256m -Xmn128m -XX:MaxDirectMemorySize=256m"});
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for (name, ports) in [
        ("dojo-namesrv", json!([{"name": "namesrv", "port": 9876}])),
        ("dojo-broker", json!([{"name": "broker", "port": 10911}, {"name": "fast", "port": 10909}, {"name": "ha", "port": 10912}])),
    ] {
        let svc: Service = obj(json!({
            "metadata": {"name": name},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"app": name}, "ports": ports},
        }));
        services.create(&PostParams::default(), &svc).await.unwrap();
    }
    let conf = [
        "brokerClusterName=dojo",
        "brokerName=broker-a",
        "brokerId=0",
        "brokerIP1=@POD_IP@",
        "listenPort=10911",
        "haListenPort=10912",
        &format!("namesrvAddr={namesrv_addr}"),
        "storePathRootDir=/home/rocketmq/store",
        "storePathCommitLog=/home/rocketmq/store/commitlog",
        "mappedFileSizeCommitLog=67108864",
        "mappedFileSizeConsumeQueue=6000000",
        "autoCreateTopicEnable=true",
        "autoCreateSubscriptionGroup=true",
        "diskMaxUsedSpaceRatio=95",
        "flushDiskType=ASYNC_FLUSH",
    ]
    .join("\n");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": "dojo-broker"}, "data": {"broker-0.conf": conf}}))).await.unwrap();

    let statefulset = |name: &str, spec: Value| -> StatefulSet {
        obj(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            },
        }))
    };
    let mut namesrv = pod_spec(&images.rocketmq.reference, json!({
        "command": ["sh", "mqnamesrv"],
        "env": [java_opts.clone()],
        "readinessProbe": {"tcpSocket": {"port": 9876}, "periodSeconds": 2},
    }));
    namesrv["restartPolicy"] = json!("Always");
    let start = "set -e; ordinal=${HOSTNAME##*-}; sed \"s/@POD_IP@/$POD_IP/\" /etc/rocketmq-dojo/broker-$ordinal.conf > /home/rocketmq/conf/broker.conf; exec sh mqbroker -c /home/rocketmq/conf/broker.conf";
    let mut broker = pod_spec(&images.rocketmq.reference, json!({
        "command": ["sh", "-c", start],
        "env": [java_opts, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {"tcpSocket": {"port": 10911}, "periodSeconds": 2},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/rocketmq-dojo"},
            {"name": "conf", "mountPath": "/home/rocketmq/conf"},
            {"name": "store", "mountPath": "/home/rocketmq/store"},
        ],
    }));
    broker["restartPolicy"] = json!("Always");
    broker["volumes"] = json!([
        {"name": "config", "configMap": {"name": "dojo-broker"}},
        {"name": "conf", "emptyDir": {}},
        {"name": "store", "emptyDir": {}},
    ]);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    sts.create(&PostParams::default(), &statefulset("dojo-namesrv", namesrv)).await.unwrap();
    sts.create(&PostParams::default(), &statefulset("dojo-broker", broker)).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let probe: Pod = obj(json!({
        "metadata": {"name": "client"},
        "spec": pod_spec(&images.probe.reference, json!({"env": [{"name": "NAMESRV_ADDR", "value": namesrv_addr}]})),
    }));
    pods.create(&PostParams::default(), &probe).await.unwrap();
    let (_, state) = wait_terminated(&pods, "client").await;
    let logs = pods.logs("client", &LogParams::default()).await.unwrap_or_default();
    let broker_logs = pods.logs("dojo-broker-0", &LogParams { tail_lines: Some(20), ..Default::default() }).await.unwrap_or_default();
    assert_eq!(state.exit_code, 0, "client pod: {logs}\nbroker pod: {broker_logs}");
    assert!(logs.contains(&format!("sent and received a message through {namesrv_addr}")), "{logs}");
}
