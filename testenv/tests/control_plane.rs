//! The control plane against the real binaries: scheduling by zone and by
//! topology spread, RBAC with a real service-account token, the garbage
//! collector, Jobs completing through kwok, and the error when nothing is
//! installed. Every test works in a namespace of its own on the shared plane.

use std::collections::BTreeSet;
use std::time::Duration;

use dojo_testenv::control_plane::{ZONE_LABEL, ZONES, node_name};
use dojo_testenv::{ControlPlane, Error, eventually};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

async fn plane() -> &'static ControlPlane {
    match ControlPlane::shared().await {
        Ok(cp) => cp,
        Err(e) => panic!("starting the control plane: {e}"),
    }
}

fn obj<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// A pod template that kwok "runs": the image is never pulled.
fn pod_template(app: &str, spec_extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "containers": [{"name": "main", "image": "registry.invalid/dojo/app:1"}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": spec})
}

fn running_on(pods: &[Pod]) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| {
            Some((
                p.metadata.name.clone()?,
                p.spec.as_ref()?.node_name.clone()?,
            ))
        })
        .collect()
}

fn describe(pods: &[Pod]) -> String {
    let each: Vec<String> = pods
        .iter()
        .map(|p| {
            format!(
                "{} on {:?} phase {:?}",
                p.metadata.name.as_deref().unwrap_or("?"),
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                p.status.as_ref().and_then(|s| s.phase.as_deref())
            )
        })
        .collect();
    format!("{} pod(s): [{}]", pods.len(), each.join(", "))
}

#[tokio::test]
async fn reports_startup_time_and_components() {
    let cp = plane().await;
    let components = cp.components();
    eprintln!(
        "control plane ready in {:.1}s at {}",
        cp.startup_time().as_secs_f64(),
        cp.server_url()
    );
    for (phase, at) in cp.startup_phases() {
        eprintln!("  {phase:<24} at {:.1}s", at.as_secs_f64());
    }
    for c in &components {
        eprintln!(
            "  {:<24} pid {:?} rss {} MiB",
            c.name,
            c.pid,
            c.rss_kib.unwrap_or(0) / 1024
        );
    }
    let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]
    );
    assert!(
        components
            .iter()
            .all(|c| c.pid.is_some() && c.rss_kib.is_some_and(|r| r > 0)),
        "{components:?}"
    );
    assert!(cp.kubeconfig_path().is_file());
    assert!(cp.kubectl_path().is_file());
    assert!(cp.server_url().starts_with("https://127.0.0.1:"));

    // The nodes as promised: one per zone, kwok-managed, schedulable.
    let nodes: Api<Node> = Api::all(cp.client());
    for zone in ZONES {
        let node = nodes.get(&node_name(zone)).await.expect("the node exists");
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(ZONE_LABEL).map(String::as_str), Some(zone));
        assert_eq!(labels.get("type").map(String::as_str), Some("kwok"));
        assert!(
            node.spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn deployment_with_zone_selector_runs_in_that_zone() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("zone-select").await.unwrap();
    let client = cp.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = obj(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template("web", json!({"nodeSelector": {ZONE_LABEL: "zone-b"}})),
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let placed = eventually("a web pod Running", WAIT, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            let running = running_on(&list.items);
            if running.len() == 1 {
                Ok(Some(running))
            } else {
                Err(describe(&list.items))
            }
        }
    })
    .await;
    assert_eq!(placed[0].1, node_name("zone-b"), "{placed:?}");
}

#[tokio::test]
async fn statefulset_spreads_over_three_zones() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("spread").await.unwrap();
    let client = cp.client();
    let sts: StatefulSet = obj(json!({
        "metadata": {"name": "broker"},
        "spec": {
            "replicas": 3,
            "serviceName": "broker",
            "selector": {"matchLabels": {"app": "broker"}},
            "template": pod_template("broker", json!({
                "topologySpreadConstraints": [{
                    "maxSkew": 1,
                    "topologyKey": ZONE_LABEL,
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "broker"}},
                }],
            })),
        },
    }));
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let placed = eventually("three broker pods Running", WAIT, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=broker"))
                .await
                .map_err(|e| e.to_string())?;
            let running = running_on(&list.items);
            if running.len() == 3 {
                Ok(Some(running))
            } else {
                Err(describe(&list.items))
            }
        }
    })
    .await;
    let nodes: BTreeSet<String> = placed.iter().map(|(_, node)| node.clone()).collect();
    let expected: BTreeSet<String> = ZONES.iter().map(|z| node_name(z)).collect();
    assert_eq!(nodes, expected, "one broker per zone: {placed:?}");
}

#[tokio::test]
async fn role_grants_secrets_in_its_namespace_only() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let own = cp.new_namespace("rbac-own").await.unwrap();
    let other = cp.new_namespace("rbac-other").await.unwrap();
    let admin = cp.client();
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(admin.clone(), &own)
        .create(&pp, &obj(json!({"metadata": {"name": "reader"}})))
        .await
        .unwrap();
    let role: Role = obj(json!({
        "metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
    }));
    Api::<Role>::namespaced(admin.clone(), &own)
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: RoleBinding = obj(json!({
        "metadata": {"name": "reader-reads-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": own}],
    }));
    Api::<RoleBinding>::namespaced(admin.clone(), &own)
        .create(&pp, &binding)
        .await
        .unwrap();
    for ns in [&own, &other] {
        let secret: Secret = obj(json!({"metadata": {"name": "token"}, "stringData": {"key": ns}}));
        Api::<Secret>::namespaced(admin.clone(), ns)
            .create(&pp, &secret)
            .await
            .unwrap();
    }

    let reader = cp.client_for_service_account(&own, "reader").await.unwrap();
    let mine: Api<Secret> = Api::namespaced(reader.clone(), &own);
    // The authorizer reads RBAC through an informer: allow it a moment.
    let names = eventually("the reader lists its own secrets", WAIT, || {
        let mine = mine.clone();
        async move {
            let list = mine
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(
                list.items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect::<Vec<_>>(),
            ))
        }
    })
    .await;
    assert_eq!(names, ["token"]);

    let theirs: Api<Secret> = Api::namespaced(reader, &other);
    match theirs.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{own}:reader")),
                "{}",
                status.message
            );
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("gc").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cp.client(), &ns);
    let pp = PostParams::default();
    let owner = cms
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "owner"}, "data": {"role": "owner"}})),
        )
        .await
        .unwrap();
    let dependent: ConfigMap = obj(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}],
        },
        "data": {"role": "dependent"},
    }));
    cms.create(&pp, &dependent).await.unwrap();

    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the dependent ConfigMap collected", WAIT, || {
        let cms = cms.clone();
        async move {
            match cms.get_opt("dependent").await.map_err(|e| e.to_string())? {
                None => Ok(Some(())),
                Some(_) => Err("the dependent is still there".into()),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn job_pod_completes_and_job_succeeds() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let ns = cp.new_namespace("job").await.unwrap();
    let client = cp.client();
    let job: Job = obj(json!({
        "metadata": {"name": "verify"},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template("verify", json!({"restartPolicy": "Never"})),
        },
    }));
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    eventually("the Job succeeded", WAIT, || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get("verify").await.map_err(|e| e.to_string())?;
            let status = job.status.unwrap_or_default();
            if status.succeeded == Some(1) {
                Ok(Some(()))
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;
    let pods = Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels("app=verify"))
        .await
        .unwrap();
    let phases: Vec<_> = pods
        .items
        .iter()
        .map(|p| p.status.as_ref().and_then(|s| s.phase.clone()))
        .collect();
    assert_eq!(phases, [Some("Succeeded".to_string())]);
}

#[tokio::test]
async fn missing_binaries_say_to_run_make_deps() {
    let empty = tempfile::tempdir().unwrap();
    let err = ControlPlane::builder()
        .cache_root(empty.path())
        .start()
        .await
        .expect_err("nothing is installed there");
    assert!(matches!(err, Error::NotInstalled { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("make deps"), "{msg}");
    assert!(
        msg.contains(&empty.path().display().to_string()),
        "names where it looked: {msg}"
    );
}
