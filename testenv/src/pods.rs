//! What the real-node tests and benchmark run on a [`crate::node`]: pods
//! from the locally built images, and Apache RocketMQ laid out as the
//! operator lays it out (operator/src/build.rs): headless Services,
//! StatefulSets running the image's `sh mqnamesrv` and `sh mqbroker -c`,
//! the broker's config from a ConfigMap with the pod's IP put in at start.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated, Pod, Service};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::node::NODE_TYPE;

/// The name server's port, as in the operator.
pub const NAMESRV_PORT: u16 = 9876;
pub const BROKER_PORT: u16 = 10911;
/// The operator's JVM options for both servers (`JAVA_OPT_EXT`).
const JAVA_OPTS: &str = "-Xms256m -Xmx256m -Xmn128m -XX:MaxDirectMemorySize=256m";

/// A pod spec for the real node running a locally built image
/// (`imagePullPolicy: Never`, no restarts); `container` adds to the one
/// container (`command`, `env`, ...).
pub fn pod_spec(image: &str, container: Value) -> Value {
    let mut c = json!({"name": "main", "image": image, "imagePullPolicy": "Never"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
        c.extend(extra.clone());
    }
    json!({"nodeSelector": {"type": NODE_TYPE}, "restartPolicy": "Never", "enableServiceLinks": false, "containers": [c]})
}

pub fn typed<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::failed("building a Kubernetes object", e))
}

pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// The terminated state of the pod's first container, once there is one.
pub fn terminated(p: &Pod) -> Option<ContainerStateTerminated> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}

/// Whether the pod's first container passes its readiness probe.
pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .is_some_and(|c| c.ready)
}

/// Polls pod `name` until `done` picks a value; on timeout the error shows
/// the pod's last phase and container states.
pub async fn wait_pod<T>(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(&Pod) -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("not created yet");
    loop {
        match pods.get_opt(name).await {
            Ok(Some(p)) => {
                if let Some(v) = done(&p) {
                    return Ok(v);
                }
                last = format!(
                    "phase {:?}, containers {:?}",
                    phase(&p),
                    p.status.as_ref().and_then(|s| s.container_statuses.clone())
                );
            }
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() > timeout {
            return Err(Error::failed(
                format!("pod {name}"),
                format!("not there after {}s; last seen: {last}", timeout.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Until the pod has finished (Succeeded or Failed): it and its container's end.
pub async fn wait_finished(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<(Pod, ContainerStateTerminated)> {
    wait_pod(pods, name, timeout, |p| {
        let done = matches!(phase(p).as_str(), "Succeeded" | "Failed");
        terminated(p).filter(|_| done).map(|t| (p.clone(), t))
    })
    .await
}

/// Name server and broker in namespace `ns` from `image` (the rocketmq
/// image). Returns the name server address by the headless Service's name,
/// as the operator hands it out (`NAMESRV_ADDR`), and by a ClusterIP
/// Service's name (through kube-proxy).
pub async fn create_rocketmq(
    client: &kube::Client,
    ns: &str,
    image: &str,
) -> Result<RocketMqAddrs> {
    let create =
        |what: String, e: kube::Error| Error::failed(format!("creating {what} in {ns}"), e);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for (name, headless, ports) in [
        (
            "dojo-namesrv",
            true,
            json!([{"name": "namesrv", "port": NAMESRV_PORT}]),
        ),
        (
            "dojo-namesrv-vip",
            false,
            json!([{"name": "namesrv", "port": NAMESRV_PORT}]),
        ),
        (
            "dojo-broker",
            true,
            json!([{"name": "broker", "port": BROKER_PORT}, {"name": "fast", "port": BROKER_PORT - 2}, {"name": "ha", "port": BROKER_PORT + 1}]),
        ),
    ] {
        let app = name.trim_end_matches("-vip");
        let mut spec = json!({"selector": {"app": app}, "ports": ports});
        if headless {
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = json!(true);
        }
        let svc: Service = typed(json!({"metadata": {"name": name}, "spec": spec}))?;
        services
            .create(&PostParams::default(), &svc)
            .await
            .map_err(|e| create(format!("Service {name}"), e))?;
    }
    let namesrv = format!("dojo-namesrv.{ns}.svc:{NAMESRV_PORT}");
    let conf: String = [
        ("brokerClusterName", "dojo".to_string()),
        ("brokerName", "broker-a".into()),
        ("brokerId", "0".into()),
        ("brokerIP1", "@POD_IP@".into()),
        ("listenPort", BROKER_PORT.to_string()),
        ("haListenPort", (BROKER_PORT + 1).to_string()),
        ("namesrvAddr", namesrv.clone()),
        ("storePathRootDir", "/home/rocketmq/store".into()),
        (
            "storePathCommitLog",
            "/home/rocketmq/store/commitlog".into(),
        ),
        ("mappedFileSizeCommitLog", (64 * 1024 * 1024).to_string()),
        ("mappedFileSizeConsumeQueue", (300_000 * 20).to_string()),
        ("autoCreateTopicEnable", "true".into()),
        ("autoCreateSubscriptionGroup", "true".into()),
        ("diskMaxUsedSpaceRatio", "95".into()),
        ("flushDiskType", "ASYNC_FLUSH".into()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={v}\n"))
    .collect();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm: ConfigMap =
        typed(json!({"metadata": {"name": "dojo-broker"}, "data": {"broker-0.conf": conf}}))?;
    cms.create(&PostParams::default(), &cm)
        .await
        .map_err(|e| create("ConfigMap dojo-broker".into(), e))?;

    let java_opts = json!({"name": "JAVA_OPT_EXT", "value": JAVA_OPTS});
    let mut namesrv_pod = pod_spec(
        image,
        json!({
            "command": ["sh", "mqnamesrv"],
            "env": [java_opts.clone()],
            "readinessProbe": {"tcpSocket": {"port": NAMESRV_PORT}, "periodSeconds": 1},
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "768Mi"}},
        }),
    );
    namesrv_pod["restartPolicy"] = json!("Always");
    let start = "set -e; ordinal=${HOSTNAME##*-}; sed \"s/@POD_IP@/$POD_IP/\" /etc/rocketmq-dojo/broker-$ordinal.conf > /home/rocketmq/conf/broker.conf; exec sh mqbroker -c /home/rocketmq/conf/broker.conf";
    let mut broker_pod = pod_spec(
        image,
        json!({
            "command": ["sh", "-c", start],
            "env": [java_opts, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "readinessProbe": {"tcpSocket": {"port": BROKER_PORT}, "periodSeconds": 1},
            "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/rocketmq-dojo"},
                {"name": "conf", "mountPath": "/home/rocketmq/conf"},
                {"name": "store", "mountPath": "/home/rocketmq/store"},
            ],
        }),
    );
    broker_pod["restartPolicy"] = json!("Always");
    broker_pod["volumes"] = json!([
        {"name": "config", "configMap": {"name": "dojo-broker"}},
        {"name": "conf", "emptyDir": {}},
        {"name": "store", "emptyDir": {}},
    ]);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    for (name, spec) in [("dojo-namesrv", namesrv_pod), ("dojo-broker", broker_pod)] {
        let set: StatefulSet = typed(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            },
        }))?;
        sts.create(&PostParams::default(), &set)
            .await
            .map_err(|e| create(format!("StatefulSet {name}"), e))?;
    }
    Ok(RocketMqAddrs {
        headless: namesrv,
        cluster_ip: format!("dojo-namesrv-vip.{ns}.svc:{NAMESRV_PORT}"),
    })
}

/// The name server's address two ways (see [`create_rocketmq`]).
#[derive(Clone, Debug)]
pub struct RocketMqAddrs {
    /// By the headless Service (DNS answers the pod's IP), as the operator does.
    pub headless: String,
    /// By a ClusterIP Service (DNS answers the Service IP; kube-proxy forwards).
    pub cluster_ip: String,
}

/// A pod running the node probe (the `workload` image built with
/// `dojo-node-probe`) against `namesrv_addr`.
pub fn probe_pod(name: &str, image: &str, namesrv_addr: &str) -> Result<Pod> {
    typed(json!({
        "metadata": {"name": name},
        "spec": pod_spec(image, json!({"env": [{"name": "NAMESRV_ADDR", "value": namesrv_addr}]})),
    }))
}
