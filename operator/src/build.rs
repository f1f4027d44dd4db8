//! Pure builders: a `ValidChallenge` in, the Kubernetes objects out. No I/O,
//! so every object is unit-tested without a server. Each object carries the
//! Challenge as controller owner (the garbage collector deletes it with the
//! Challenge) and the Dojo labels.

use std::collections::BTreeMap;

use dojo_crds::{Component, FaultAction};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::validate::{ATTEMPT_LABEL, ValidChallenge};

pub const NAMESRV_PORT: u16 = 9876;
pub const BROKER_PORT: u16 = 10911;
pub const DLEDGER_PORT: u16 = 40911;
pub const WORLD_PORT: u16 = 8080;
pub const OTLP_PORT: u16 = 4317;
const ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Small heaps: an exercise broker, not a production one (see
/// docs/notes/rocketmq.md); the sizes testenv's local servers get
/// (`Role::heap_mb`), so a level runs alike on a laptop and in a cluster.
/// After the image's own options, so they win there too (apache/rocketmq
/// sizes its heap from the machine otherwise).
const NAMESRV_JAVA_OPTS: &str = "-Xms128m -Xmx128m -Xmn64m -XX:MaxDirectMemorySize=256m";
const BROKER_JAVA_OPTS: &str = "-Xms384m -Xmx384m -Xmn192m -XX:MaxDirectMemorySize=256m";
const CONF_DIR: &str = "/etc/rocketmq-dojo";
const BROKER_CONF: &str = "/home/rocketmq/conf/broker.conf";

/// Everything one Challenge owns, in the order it is applied.
#[derive(Clone, Debug)]
pub struct Objects {
    pub namesrv_service: Service,
    pub namesrv: StatefulSet,
    pub broker_config: ConfigMap,
    pub broker_service: Service,
    /// One StatefulSet of one broker per zone (level 12), else one.
    pub brokers: Vec<StatefulSet>,
    /// Level 12 only: keeps a DLedger majority through voluntary disruptions.
    pub broker_pdb: Option<PodDisruptionBudget>,
    pub verifier_account: ServiceAccount,
    pub verifier_role: Role,
    pub verifier_binding: RoleBinding,
    pub world_service: Service,
    pub isolation: NetworkPolicy,
    pub verifier_apiserver: NetworkPolicy,
    pub workload: Deployment,
    /// Applied only once RocketMQ and the workload are ready.
    pub verifier_job: Job,
}

/// `verifying`: the current attempt's verifier Job exists. From then on it
/// runs the learner's image itself (as instances it starts, stops and
/// crashes), so the workload Deployment makes way.
pub fn build(v: &ValidChallenge, verifying: bool) -> Objects {
    Objects {
        namesrv_service: namesrv_service(v),
        namesrv: namesrv(v),
        broker_config: broker_config(v),
        broker_service: broker_service(v),
        brokers: brokers(v),
        broker_pdb: broker_pdb(v),
        verifier_account: verifier_account(v),
        verifier_role: verifier_role(v),
        verifier_binding: verifier_binding(v),
        world_service: world_service(v),
        isolation: isolation(v),
        verifier_apiserver: verifier_apiserver(v),
        workload: workload(v, verifying),
        verifier_job: verifier_job(v),
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| {
        panic!(
            "a builder produced an invalid {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

fn metadata(v: &ValidChallenge, name: String, component: &str) -> Value {
    json!({
        "name": name,
        "namespace": v.namespace,
        "labels": v.labels(component),
        "ownerReferences": [v.owner],
    })
}

fn headless_service(v: &ValidChallenge, component: &str, ports: Value) -> Service {
    typed(json!({
        "metadata": metadata(v, v.object_name(component), component),
        "spec": {
            "clusterIP": "None",
            // Brokers must find each other (DLedger) before they are Ready.
            "publishNotReadyAddresses": true,
            "selector": v.selector(component),
            "ports": ports,
        },
    }))
}

pub fn namesrv_service(v: &ValidChallenge) -> Service {
    headless_service(
        v,
        "namesrv",
        json!([{"name": "namesrv", "port": NAMESRV_PORT}]),
    )
}

pub fn namesrv(v: &ValidChallenge) -> StatefulSet {
    typed(json!({
        "metadata": metadata(v, v.object_name("namesrv"), "namesrv"),
        "spec": {
            "replicas": 1,
            "serviceName": v.object_name("namesrv"),
            "selector": {"matchLabels": v.selector("namesrv")},
            "template": {
                "metadata": {"labels": v.labels("namesrv")},
                "spec": {
                    "enableServiceLinks": false,
                    // The verifier pauses and kills through `kill` in the
                    // container: the server must not be PID 1 there.
                    "shareProcessNamespace": true,
                    "containers": [{
                        "name": "namesrv",
                        "image": v.rocketmq_image,
                        "command": ["sh", "mqnamesrv"],
                        "env": [{"name": "JAVA_OPT_EXT", "value": NAMESRV_JAVA_OPTS}],
                        "ports": [{"name": "namesrv", "containerPort": NAMESRV_PORT}],
                        "readinessProbe": {"tcpSocket": {"port": NAMESRV_PORT}, "periodSeconds": 5},
                        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "768Mi"}},
                    }],
                },
            },
        },
    }))
}

/// `broker-<i>.conf` of broker `i`, with the keys the local test
/// environment uses (testenv's `BrokerConfig::to_properties`); `@POD_IP@`
/// is replaced at start, since a broker registers its own address. The
/// zone is not among them: RocketMQ 5.5.0's BrokerConfig has no zone
/// property, a broker reads it from `ROCKETMQ_ZONE` (see `brokers`).
pub fn broker_conf(v: &ValidChallenge, ordinal: usize) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("brokerClusterName".into(), "dojo".into()),
        (
            "brokerName".into(),
            if v.level.brokers == 3 {
                "dojo-dledger".into()
            } else {
                "broker-a".into()
            },
        ),
        ("brokerId".into(), "0".into()),
        ("brokerIP1".into(), "@POD_IP@".into()),
        ("listenPort".into(), BROKER_PORT.to_string()),
        ("haListenPort".into(), (BROKER_PORT + 1).to_string()),
        ("namesrvAddr".into(), v.namesrv_addr()),
        ("storePathRootDir".into(), "/home/rocketmq/store".into()),
        (
            "storePathCommitLog".into(),
            "/home/rocketmq/store/commitlog".into(),
        ),
        (
            "mappedFileSizeCommitLog".into(),
            (64 * 1024 * 1024).to_string(),
        ),
        (
            "mappedFileSizeConsumeQueue".into(),
            (300_000 * 20).to_string(),
        ),
        ("autoCreateTopicEnable".into(), "true".into()),
        ("autoCreateSubscriptionGroup".into(), "true".into()),
        ("enablePropertyFilter".into(), "true".into()),
        ("traceTopicEnable".into(), "true".into()),
        ("diskMaxUsedSpaceRatio".into(), "95".into()),
        ("flushDiskType".into(), "ASYNC_FLUSH".into()),
    ];
    lines.extend(
        v.level
            .broker_settings
            .iter()
            .map(|(k, val)| (k.to_string(), val.to_string())),
    );
    if v.level.brokers == 3 {
        let service = v.object_name("broker");
        let peers: Vec<String> = v
            .broker_pods()
            .iter()
            .enumerate()
            .map(|(i, pod)| format!("n{i}-{pod}.{service}.{}.svc:{DLEDGER_PORT}", v.namespace))
            .collect();
        lines.extend([
            ("enableDLegerCommitLog".into(), "true".into()),
            ("dLegerGroup".into(), "dojo-dledger".into()),
            ("dLegerPeers".into(), peers.join(";")),
            ("dLegerSelfId".into(), format!("n{ordinal}")),
        ]);
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}

pub fn broker_config(v: &ValidChallenge) -> ConfigMap {
    let data: BTreeMap<String, String> = (0..v.level.brokers as usize)
        .map(|i| (format!("broker-{i}.conf"), broker_conf(v, i)))
        .collect();
    typed(json!({"metadata": metadata(v, v.object_name("broker"), "broker"), "data": data}))
}

pub fn broker_service(v: &ValidChallenge) -> Service {
    headless_service(
        v,
        "broker",
        json!([
            {"name": "broker", "port": BROKER_PORT},
            {"name": "fast", "port": BROKER_PORT - 2},
            {"name": "ha", "port": BROKER_PORT + 1},
            {"name": "dledger", "port": DLEDGER_PORT},
        ]),
    )
}

/// The brokers, one StatefulSet of one pod each when there are zones; each
/// attempt on a new, empty store (see the template's annotation).
///
/// Why one StatefulSet per zone: a broker must know its zone when it
/// starts (it registers it with the name server, and level 12's clients
/// pick brokers by zone), and one StatefulSet template is the same for all
/// its pods. Its pods cannot learn the zone they landed in either: the
/// downward API exposes the node's name but not its labels, and reading the
/// Node would give every broker a cluster-wide Role. So broker `i` gets a
/// StatefulSet that can only schedule into `zones[i]` and says so in its
/// environment; a pod lands in the zone its configuration names, by
/// construction. Every broker gets its own `broker.conf` from the ConfigMap.
pub fn brokers(v: &ValidChallenge) -> Vec<StatefulSet> {
    let start = format!(
        "set -e; sed \"s/@POD_IP@/$POD_IP/\" {CONF_DIR}/broker.conf > {BROKER_CONF}; exec sh mqbroker -c {BROKER_CONF}"
    );
    v.broker_sets()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let mut env = vec![
                json!({"name": "JAVA_OPT_EXT", "value": BROKER_JAVA_OPTS}),
                json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            ];
            let mut pod_spec = json!({
                "enableServiceLinks": false,
                // As the name server's: signals from the verifier reach the broker.
                "shareProcessNamespace": true,
                "containers": [{
                    "name": "broker",
                    "image": v.rocketmq_image,
                    "command": ["sh", "-c", start],
                    "ports": [
                        {"name": "broker", "containerPort": BROKER_PORT},
                        {"name": "fast", "containerPort": BROKER_PORT - 2},
                        {"name": "ha", "containerPort": BROKER_PORT + 1},
                        {"name": "dledger", "containerPort": DLEDGER_PORT},
                    ],
                    "readinessProbe": {"tcpSocket": {"port": BROKER_PORT}, "periodSeconds": 5},
                    "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}},
                    "volumeMounts": [
                        {"name": "config", "mountPath": CONF_DIR},
                        {"name": "conf", "mountPath": "/home/rocketmq/conf"},
                        {"name": "store", "mountPath": "/home/rocketmq/store"},
                    ],
                }],
                // An exercise's messages live as long as its pod: no volume
                // claims to provision or to leave behind.
                "volumes": [
                    {"name": "config", "configMap": {"name": v.object_name("broker"), "items": [{"key": format!("broker-{i}.conf"), "path": "broker.conf"}]}},
                    {"name": "conf", "emptyDir": {}},
                    {"name": "store", "emptyDir": {}},
                ],
            });
            if let Some(zone) = v.zones.get(i) {
                // Read by the broker (RocketMQ's `rocketmq.zone`) and sent
                // with its registration to the name server.
                env.push(json!({"name": "ROCKETMQ_ZONE", "value": zone}));
                pod_spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE_KEY, "operator": "In", "values": [zone]}]}],
                }}});
            }
            pod_spec["containers"][0]["env"] = json!(env);
            typed(json!({
                "metadata": metadata(v, name.clone(), "broker"),
                "spec": {
                    "replicas": 1,
                    "serviceName": v.object_name("broker"),
                    "selector": {"matchLabels": v.broker_selector(i)},
                    // A new attempt rolls the broker onto a fresh store: the
                    // previous attempt's backlog, offsets and half messages
                    // would be the next one's duplicates.
                    "template": {"metadata": {"labels": v.broker_labels(i), "annotations": {ATTEMPT_LABEL: v.attempt.to_string()}}, "spec": pod_spec},
                },
            }))
        })
        .collect()
}

pub fn broker_pdb(v: &ValidChallenge) -> Option<PodDisruptionBudget> {
    (v.level.brokers == 3).then(|| {
        typed(json!({
            "metadata": metadata(v, v.object_name("broker"), "broker"),
            "spec": {"minAvailable": 2, "selector": {"matchLabels": v.selector("broker")}},
        }))
    })
}

/// Exactly the environment contract of docs/DESIGN.md, plus the learner's own
/// variables; no pods while the verifier runs (see [`build`]).
pub fn workload(v: &ValidChallenge, verifying: bool) -> Deployment {
    let mut env = vec![
        json!({"name": "NAMESRV_ADDR", "value": v.namesrv_addr()}),
        json!({"name": "WORLD_URL", "value": v.world_url()}),
        json!({"name": "DOJO_LEVEL", "value": v.level.number.to_string()}),
        json!({"name": "DOJO_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
    ];
    if v.level.otlp {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": v.otlp_endpoint()}));
    }
    env.extend(
        v.workload
            .env
            .iter()
            .map(|e| json!({"name": e.name, "value": e.value})),
    );
    let mut container = json!({"name": "workload", "image": v.workload.image, "env": env});
    if let Some(p) = v.workload.image_pull_policy {
        container["imagePullPolicy"] = json!(p.as_str());
    }
    if let Some(c) = &v.workload.command {
        container["command"] = json!(c);
    }
    if let Some(a) = &v.workload.args {
        container["args"] = json!(a);
    }
    if let Some(r) = &v.workload.resources {
        container["resources"] = json!({"requests": r.requests, "limits": r.limits});
    }
    let mut labels = v.labels("workload");
    labels.insert(ATTEMPT_LABEL.into(), v.attempt.to_string());
    typed(json!({
        "metadata": metadata(v, v.object_name("workload"), "workload"),
        "spec": {
            "replicas": if verifying { 0 } else { 1 },
            // Two versions of a learner's program at once would blur the verdict.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": v.selector("workload")},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"enableServiceLinks": false, "automountServiceAccountToken": false, "containers": [container]},
            },
        },
    }))
}

pub fn verifier_account(v: &ValidChallenge) -> ServiceAccount {
    typed(json!({"metadata": metadata(v, v.object_name("verifier"), "verifier")}))
}

/// Only what the verifier needs, in this namespace: read the workload's pod
/// template, run the learner's image as pods of its own (create them, read
/// their logs), signal processes in pods (exec `kill`: stop, crash, pause,
/// also the broker's), delete the Challenge's RocketMQ pods by name, and
/// cut pods off with NetworkPolicies. Pods' names are not known in advance
/// for its own, so create and exec are not narrowed by name.
pub fn verifier_role(v: &ValidChallenge) -> Role {
    let mut rocketmq_pods = vec![format!("{}-0", v.object_name("namesrv"))];
    rocketmq_pods.extend(v.broker_pods());
    typed(json!({
        "metadata": metadata(v, v.object_name("verifier"), "verifier"),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"], "resourceNames": rocketmq_pods},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": [v.object_name("workload")]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "create", "delete"]},
        ],
    }))
}

pub fn verifier_binding(v: &ValidChallenge) -> RoleBinding {
    typed(json!({
        "metadata": metadata(v, v.object_name("verifier"), "verifier"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": v.object_name("verifier")},
        "subjects": [{"kind": "ServiceAccount", "name": v.object_name("verifier"), "namespace": v.namespace}],
    }))
}

/// The world: served by the verifier pod of the current attempt.
pub fn world_service(v: &ValidChallenge) -> Service {
    let mut ports = vec![json!({"name": "http", "port": WORLD_PORT})];
    if v.level.otlp {
        ports.push(json!({"name": "otlp", "port": OTLP_PORT}));
    }
    typed(json!({
        "metadata": metadata(v, v.object_name("world"), "world"),
        "spec": {"selector": v.selector("verifier"), "ports": ports},
    }))
}

/// The Challenge's pods talk to each other and to DNS, nothing else.
pub fn isolation(v: &ValidChallenge) -> NetworkPolicy {
    let own = json!({"podSelector": {"matchLabels": v.challenge_selector()}});
    typed(json!({
        "metadata": metadata(v, v.object_name("isolation"), "isolation"),
        "spec": {
            "podSelector": {"matchLabels": v.challenge_selector()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [own]}],
            "egress": [
                {"to": [own]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        },
    }))
}

/// The verifier alone may also reach the API server (fault injection).
pub fn verifier_apiserver(v: &ValidChallenge) -> NetworkPolicy {
    typed(json!({
        "metadata": metadata(v, v.object_name("verifier-apiserver"), "isolation"),
        "spec": {
            "podSelector": {"matchLabels": v.selector("verifier")},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}],
        },
    }))
}

fn fault_json(f: &dojo_crds::Fault) -> Value {
    let action = match f.action {
        FaultAction::Kill => "kill",
        FaultAction::Pause => "pause",
        FaultAction::Isolate => "isolate",
    };
    let component = f.component.map(|c| match c {
        Component::Namesrv => "namesrv",
        Component::Broker => "broker",
        Component::BrokerLeader => "broker-leader",
        Component::Workload => "workload",
    });
    json!({"atSeconds": f.at_seconds, "action": action, "component": component, "zone": f.zone, "durationSeconds": f.duration_seconds})
}

/// The verifier of the current attempt. It writes its report, size-bounded,
/// to /dev/termination-log, which the operator reads from the pod status.
pub fn verifier_job(v: &ValidChallenge) -> Job {
    let mut env = vec![
        json!({"name": "DOJO_CHALLENGE", "value": v.name}),
        json!({"name": "DOJO_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        // Its own pod owns the workload instances it starts.
        json!({"name": "DOJO_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "DOJO_ATTEMPT", "value": v.attempt.to_string()}),
        json!({"name": "DOJO_LEVEL", "value": v.level.number.to_string()}),
        json!({"name": "NAMESRV_ADDR", "value": v.namesrv_addr()}),
        json!({"name": "DOJO_RUN_SECONDS", "value": v.run_seconds.to_string()}),
        json!({"name": "DOJO_WORKLOAD_SELECTOR", "value": format!("dojo.rmq.dev/challenge={},app.kubernetes.io/component=workload", v.name)}),
        json!({"name": "DOJO_FAULTS", "value": Value::Array(v.faults.iter().map(fault_json).collect()).to_string()}),
        json!({"name": "WORLD_LISTEN", "value": format!("0.0.0.0:{WORLD_PORT}")}),
    ];
    if let Some(m) = v.messages {
        env.push(json!({"name": "DOJO_MESSAGES", "value": m.to_string()}));
    }
    if let Some(r) = v.rate_per_second {
        env.push(json!({"name": "DOJO_RATE_PER_SECOND", "value": r.to_string()}));
    }
    if !v.zones.is_empty() {
        env.push(json!({"name": "DOJO_ZONES", "value": v.zones.join(",")}));
    }
    let mut ports = vec![json!({"name": "http", "containerPort": WORLD_PORT})];
    if v.level.otlp {
        env.push(json!({"name": "OTLP_LISTEN", "value": format!("0.0.0.0:{OTLP_PORT}")}));
        ports.push(json!({"name": "otlp", "containerPort": OTLP_PORT}));
    }
    let mut labels = v.labels("verifier");
    labels.insert(ATTEMPT_LABEL.into(), v.attempt.to_string());
    let mut meta = metadata(v, v.verifier_job_name(), "verifier");
    meta["labels"] = json!(labels);
    typed(json!({
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            // The run budget plus time to start and to write the report.
            "activeDeadlineSeconds": v.run_seconds + 180,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": v.object_name("verifier"),
                    "restartPolicy": "Never",
                    "enableServiceLinks": false,
                    "containers": [{
                        "name": "verifier",
                        "image": v.verifier_image,
                        "command": ["dojo-verifier", "--level", v.level.number.to_string(), "--platform", "kube"],
                        "env": env,
                        "ports": ports,
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    }],
                },
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::challenge;
    use crate::validate::{BROKER_LABEL, validate};
    use k8s_openapi::api::core::v1::PodSpec;
    use std::collections::BTreeSet;

    fn valid(level: u8) -> ValidChallenge {
        validate(&challenge(level), 1).unwrap()
    }

    fn env_names(spec: &PodSpec) -> Vec<String> {
        spec.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn every_object_is_owned_and_labelled() {
        let v = valid(12);
        let o = build(&v, false);
        let metas = [
            &o.namesrv_service.metadata,
            &o.namesrv.metadata,
            &o.broker_config.metadata,
            &o.broker_service.metadata,
            &o.brokers[0].metadata,
            &o.brokers[1].metadata,
            &o.brokers[2].metadata,
            &o.broker_pdb.as_ref().unwrap().metadata,
            &o.verifier_account.metadata,
            &o.verifier_role.metadata,
            &o.verifier_binding.metadata,
            &o.world_service.metadata,
            &o.isolation.metadata,
            &o.verifier_apiserver.metadata,
            &o.workload.metadata,
            &o.verifier_job.metadata,
        ];
        for m in metas {
            let name = m.name.as_deref().unwrap();
            assert!(name.starts_with("orders-"), "{name}");
            assert_eq!(m.namespace.as_deref(), Some("team-a"));
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(
                (
                    owners[0].kind.as_str(),
                    owners[0].name.as_str(),
                    owners[0].controller
                ),
                ("Challenge", "orders", Some(true))
            );
            let labels = m.labels.as_ref().unwrap();
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
            ] {
                assert!(labels.contains_key(key), "{name} lacks {key}");
            }
            assert_eq!(labels["dojo.rmq.dev/challenge"], "orders");
            assert_eq!(labels["dojo.rmq.dev/level"], "12");
        }
    }

    #[test]
    fn workload_gets_exactly_the_environment_contract() {
        let o = build(&valid(3), false);
        let spec = o.workload.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            env_names(&spec),
            ["NAMESRV_ADDR", "WORLD_URL", "DOJO_LEVEL", "DOJO_INSTANCE"]
        );
        let env = spec.containers[0].env.clone().unwrap();
        assert_eq!(
            env[0].value.as_deref(),
            Some("orders-namesrv.team-a.svc:9876")
        );
        assert_eq!(
            env[1].value.as_deref(),
            Some("http://orders-world.team-a.svc:8080")
        );
        assert_eq!(env[2].value.as_deref(), Some("3"));
        let field = env[3]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.field_path, "metadata.name");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.example/shop/orders:1.0")
        );

        let spec10 = build(&valid(10), false)
            .workload
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(
            env_names(&spec10).last().map(String::as_str),
            Some("OTEL_EXPORTER_OTLP_ENDPOINT")
        );
    }

    #[test]
    fn the_workload_makes_way_while_the_verifier_runs_the_learners_image() {
        let v = valid(3);
        let replicas = |verifying| build(&v, verifying).workload.spec.unwrap().replicas;
        assert_eq!((replicas(false), replicas(true)), (Some(1), Some(0)));
        // The verifier reads this template, and its own pod owns the instances.
        let role = verifier_role(&v).rules.unwrap();
        let allows = |resource: &str, verb: &str| {
            role.iter().any(|r| {
                r.resources.as_ref().unwrap().iter().any(|x| x == resource)
                    && r.verbs.iter().any(|x| x == verb)
            })
        };
        for (resource, verb) in [
            ("deployments", "get"),
            ("pods", "create"),
            ("pods/exec", "create"),
            ("pods/log", "get"),
        ] {
            assert!(allows(resource, verb), "{resource} {verb}");
        }
        assert!(!allows("deployments", "patch") && !allows("deployments/scale", "patch"));
        let job = verifier_job(&v).spec.unwrap().template.spec.unwrap();
        let pod_env = job.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .find(|e| e.name == "DOJO_POD")
            .unwrap();
        assert_eq!(
            pod_env.value_from.unwrap().field_ref.unwrap().field_path,
            "metadata.name"
        );
        // Signals from inside a container reach a server that is not PID 1.
        let o = build(&v, true);
        assert_eq!(
            o.brokers[0]
                .spec
                .clone()
                .unwrap()
                .template
                .spec
                .unwrap()
                .share_process_namespace,
            Some(true)
        );
        assert_eq!(
            o.namesrv
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .share_process_namespace,
            Some(true)
        );
    }

    #[test]
    fn each_attempt_gets_a_broker_on_a_fresh_store() {
        let annotation = |attempt| {
            let sts = brokers(&validate(&challenge(4), attempt).unwrap()).remove(0);
            sts.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[ATTEMPT_LABEL]
                .clone()
        };
        assert_eq!(
            (annotation(1), annotation(2)),
            ("1".to_string(), "2".to_string())
        );
    }

    #[test]
    fn learner_env_command_and_resources_are_passed_through() {
        let mut ch = challenge(4);
        ch.spec.workload.env.push(dojo_crds::EnvVar {
            name: "RUST_LOG".into(),
            value: "debug".into(),
        });
        ch.spec.workload.command = Some(vec!["/app/orders".into()]);
        ch.spec.workload.resources =
            Some(serde_yaml::from_str("{requests: {cpu: 1, memory: 256Mi}}").unwrap());
        let d = workload(&validate(&ch, 1).unwrap(), false);
        let c = d.spec.unwrap().template.spec.unwrap().containers.remove(0);
        assert_eq!(c.env.unwrap().last().unwrap().name, "RUST_LOG");
        assert_eq!(c.command.unwrap(), ["/app/orders"]);
        assert_eq!(c.resources.unwrap().requests.unwrap()["cpu"].0, "1");
    }

    #[test]
    fn single_broker_below_level_12() {
        let v = valid(5);
        let o = build(&v, false);
        assert_eq!(o.brokers.len(), 1);
        assert_eq!(o.brokers[0].metadata.name.as_deref(), Some("orders-broker"));
        assert_eq!(o.brokers[0].spec.as_ref().unwrap().replicas, Some(1));
        assert!(o.broker_pdb.is_none());
        let conf = &o.broker_config.data.as_ref().unwrap()["broker-0.conf"];
        assert!(conf.contains("namesrvAddr=orders-namesrv.team-a.svc:9876\n"));
        assert!(
            conf.contains("enablePropertyFilter=true\n")
                && conf.contains("traceTopicEnable=true\n")
        );
        assert!(!conf.contains("DLeger"));
        let pod = o.brokers[0].spec.clone().unwrap().template.spec.unwrap();
        assert!(pod.affinity.is_none());
        assert!(!env_names(&pod).contains(&"ROCKETMQ_ZONE".to_string()));
        assert_eq!(
            o.namesrv.spec.unwrap().template.spec.unwrap().containers[0]
                .command
                .clone()
                .unwrap(),
            ["sh", "mqnamesrv"]
        );
    }

    #[test]
    fn level_12_is_one_dledger_group_with_one_broker_pinned_to_each_zone() {
        let mut ch = challenge(12);
        ch.spec.rocketmq.zones = Some(vec!["eu-1a".into(), "eu-1b".into(), "eu-1c".into()]);
        let v = validate(&ch, 1).unwrap();
        let o = build(&v, false);
        assert_eq!(o.brokers.len(), 3);
        let data = o.broker_config.data.unwrap();
        assert_eq!(data.len(), 3);
        let mut selectors = BTreeSet::new();
        for (i, (sts, zone)) in o
            .brokers
            .iter()
            .zip(["eu-1a", "eu-1b", "eu-1c"])
            .enumerate()
        {
            assert_eq!(
                sts.metadata.name.as_deref(),
                Some(format!("orders-broker-{i}").as_str())
            );
            let spec = sts.spec.clone().unwrap();
            assert_eq!(
                (spec.replicas, spec.service_name.as_deref()),
                (Some(1), Some("orders-broker"))
            );
            // The selectors of the three StatefulSets are disjoint and match their own template.
            let selector = spec.selector.match_labels.unwrap();
            let labels = spec.template.metadata.unwrap().labels.unwrap();
            assert!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{selector:?} vs {labels:?}"
            );
            assert!(selectors.insert(selector[BROKER_LABEL].clone()));
            let pod = spec.template.spec.unwrap();
            // Scheduled only into its zone, and told which zone that is.
            let terms = &pod
                .affinity
                .clone()
                .unwrap()
                .node_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .unwrap()
                .node_selector_terms;
            let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
            assert_eq!(
                (
                    expr.key.as_str(),
                    expr.operator.as_str(),
                    expr.values.clone().unwrap()
                ),
                (ZONE_KEY, "In", vec![zone.to_string()])
            );
            let env: BTreeMap<String, String> = pod.containers[0]
                .env
                .clone()
                .unwrap()
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            assert_eq!(env["ROCKETMQ_ZONE"], zone);
            // Its own broker.conf, whatever its pod's name.
            let items = pod.volumes.unwrap()[0]
                .config_map
                .clone()
                .unwrap()
                .items
                .unwrap();
            assert_eq!(
                (items[0].key.clone(), items[0].path.as_str()),
                (format!("broker-{i}.conf"), "broker.conf")
            );
            let conf = &data[&items[0].key];
            assert!(conf.contains("enableDLegerCommitLog=true\n"));
            assert!(conf.contains(&format!("dLegerSelfId=n{i}\n")));
            assert!(conf.contains("dLegerPeers=n0-orders-broker-0-0.orders-broker.team-a.svc:40911;n1-orders-broker-1-0.orders-broker.team-a.svc:40911;n2-orders-broker-2-0."));
            assert!(conf.contains("brokerName=dojo-dledger\n"));
        }
        let pdb = o.broker_pdb.unwrap().spec.unwrap();
        assert_eq!(
            pdb.min_available.unwrap(),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2)
        );
        assert_eq!(
            pdb.selector.unwrap().match_labels.unwrap(),
            v.selector("broker")
        );
    }

    #[test]
    fn verifier_job_carries_the_run_and_reports_through_its_termination_message() {
        let mut ch = challenge(12);
        ch.spec.faults = serde_yaml::from_str("[{atSeconds: 30, action: kill, component: broker-leader}, {atSeconds: 60, action: isolate, zone: zone-b, durationSeconds: 30}]").unwrap();
        let v = validate(&ch, 3).unwrap();
        let job = verifier_job(&v);
        assert_eq!(job.metadata.name.as_deref(), Some("orders-verifier-3"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("orders-verifier"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(dojo_crds::DEFAULT_VERIFIER_IMAGE));
        assert_eq!(
            c.command.clone().unwrap(),
            ["dojo-verifier", "--level", "12", "--platform", "kube"]
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        let env: BTreeMap<String, String> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        assert_eq!(env["DOJO_ZONES"], "zone-a,zone-b,zone-c");
        let faults: Value = serde_json::from_str(&env["DOJO_FAULTS"]).unwrap();
        assert_eq!(faults[1]["zone"], "zone-b");
        assert_eq!(faults[0]["component"], "broker-leader");
    }

    #[test]
    fn broker_conf_carries_the_level_settings_the_scenario_relies_on() {
        let six = broker_conf(&valid(6), 0);
        assert!(
            six.contains("transactionCheckInterval=1000\n")
                && six.contains("transactionTimeOut=4000\n"),
            "{six}"
        );
        assert!(!broker_conf(&valid(1), 0).contains("transactionCheckInterval"));
    }

    #[test]
    fn verifier_role_is_namespaced_and_names_its_pods() {
        let role = verifier_role(&valid(12));
        let rules = role.rules.unwrap();
        let delete = rules
            .iter()
            .find(|r| {
                r.verbs.contains(&"delete".to_string())
                    && r.resources.as_ref().unwrap() == &["pods"]
            })
            .unwrap();
        assert_eq!(
            delete.resource_names.clone().unwrap(),
            [
                "orders-namesrv-0",
                "orders-broker-0-0",
                "orders-broker-1-0",
                "orders-broker-2-0"
            ]
        );
        assert!(rules.iter().all(|r| !r.verbs.contains(&"*".to_string())));
        let binding = verifier_binding(&valid(12));
        assert_eq!(
            binding.subjects.unwrap()[0].namespace.as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn network_policy_admits_only_the_challenge_and_dns() {
        let np = isolation(&valid(3)).spec.unwrap();
        assert_eq!(
            np.pod_selector.unwrap().match_labels.unwrap()["dojo.rmq.dev/challenge"],
            "orders"
        );
        assert_eq!(np.policy_types.unwrap(), ["Ingress", "Egress"]);
        let egress = np.egress.unwrap();
        assert_eq!(egress.len(), 2);
        let dns_ports: Vec<i32> = egress[1]
            .ports
            .clone()
            .unwrap()
            .iter()
            .map(|p| match p.port.clone().unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(dns_ports, [53, 53]);
        let from = &np.ingress.unwrap()[0].from.clone().unwrap()[0];
        assert_eq!(
            from.pod_selector.clone().unwrap().match_labels.unwrap()["dojo.rmq.dev/challenge"],
            "orders"
        );
    }
}
