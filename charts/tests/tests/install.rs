//! The chart on the real control plane (kube-apiserver, etcd,
//! controller-manager, scheduler, kwok nodes): `helm install`, then the
//! `dojo-operator` binary, run outside the cluster with the token of the
//! chart's ServiceAccount (not admin), reconciles Challenges; a real
//! Prometheus scrapes it and runs every dashboard and rule expression.

use std::path::Path;
use std::time::Duration;

use dojo_chart_tests::*;
use dojo_crds::{Challenge, Phase};
use dojo_testenv::process::{Process, Spec};
use dojo_testenv::{ControlPlane, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(120);

async fn plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("starting the control plane: {e}"))
}

/// One `helm install` of the chart into a namespace of its own.
struct Release {
    namespace: String,
    /// The operator's objects' name: ServiceAccount, ClusterRole, Deployment, Lease.
    operator: String,
}

async fn install(cp: &ControlPlane, prefix: &str) -> Release {
    let namespace = cp.new_namespace(prefix).await.unwrap();
    let chart = chart_dir();
    // --wait: the Deployment's two replicas are scheduled and ready (kwok
    // plays their kubelet), so the manifests passed admission and the scheduler.
    Helm::new()
        .unwrap()
        .kubeconfig(cp.kubeconfig_path())
        .run(&[
            "install",
            &namespace,
            chart.to_str().unwrap(),
            "--namespace",
            &namespace,
            "--wait",
            "--timeout",
            "3m",
        ])
        .unwrap_or_else(|e| panic!("helm install: {e}\n{}", cp.log_tails(10)));
    let operator = format!("{namespace}-rocketmq-dojo-operator");
    Release {
        namespace,
        operator,
    }
}

/// The operator binary as the chart's ServiceAccount, watching `tenant`,
/// taking the chart's Lease in the release namespace; killed on drop.
struct Operator {
    process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Operator {
    async fn start(cp: &ControlPlane, release: &Release, tenant: &str) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let token = cp
            .service_account_token(&release.namespace, &release.operator)
            .await
            .unwrap();
        let kubeconfig = dir.path().join("operator.kubeconfig");
        token_kubeconfig(cp, &token, &kubeconfig).unwrap();
        let port = dojo_testenv::ports::free_port().unwrap();
        let spec = Spec::new(operator_binary(dir.path()).unwrap_or_else(|e| panic!("{e}")))
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args([
                "--namespace",
                tenant,
                "--lease-namespace",
                &release.namespace,
                "--lease-name",
                &release.operator,
                "--identity",
                "outside-1",
            ])
            .args(["--http-addr".to_string(), format!("127.0.0.1:{port}")])
            .die_with_parent();
        let process =
            Process::spawn("dojo-operator", spec, dir.path().join("operator.log")).unwrap();
        Operator {
            process,
            port,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn log(&self) -> String {
        self.process.log_tail(40)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- dojo-operator log -----\n{}", self.log());
        }
    }
}

/// A committed sample (`crds/samples/level-NN-*.yaml`), renamed, applied by the admin.
async fn apply_sample(cp: &ControlPlane, ns: &str, level: u8, name: &str) {
    let dir = repo().join("crds/samples");
    let prefix = format!("level-{level:02}-");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap();
    let mut ch: Challenge = serde_yaml::from_str(&read(&file).unwrap()).unwrap();
    ch.metadata.name = Some(name.into());
    Api::<Challenge>::namespaced(cp.client(), ns)
        .patch(
            name,
            &PatchParams::apply("dojo-chart-test").force(),
            &Patch::Apply(&ch),
        )
        .await
        .unwrap();
}

async fn wait_challenge(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Challenge) -> bool,
) {
    let api: Api<Challenge> = Api::namespaced(cp.client(), ns);
    eventually(&format!("{name}: {what}"), WAIT, || {
        let api = api.clone();
        let ok = &ok;
        async move {
            let ch = api.get(name).await.map_err(|e| e.to_string())?;
            if ok(&ch) {
                Ok(Some(()))
            } else {
                Err(format!(
                    "status {}",
                    serde_json::to_string(&ch.status).unwrap()
                ))
            }
        }
    })
    .await
}

fn running(ch: &Challenge) -> bool {
    ch.status.as_ref().is_some_and(|s| s.running_at.is_some())
}

/// Ends the attempt's verifier as a kubelet would: the container
/// terminates and its termination message is `message` (the report).
async fn finish_verifier(cp: &ControlPlane, ns: &str, job: &str, message: &str) {
    let api: Api<Pod> = Api::namespaced(cp.client(), ns);
    // kwok completes a Job's pod itself, without a message: written before
    // that, the report would be erased by kwok's own write.
    let pod = eventually(
        &format!("kwok completed the pod of Job {job}"),
        WAIT,
        || async {
            let lp = ListParams::default().labels(&format!("job-name={job}"));
            let pods = api.list(&lp).await.map_err(|e| e.to_string())?.items;
            Ok(pods
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
                .map(|p| p.name_any()))
        },
    )
    .await;
    eventually(&format!("pod {pod} terminated with a report"), WAIT, || {
        let (api, pod) = (api.clone(), pod.clone());
        async move {
            let mut p = api.get(&pod).await.map_err(|e| e.to_string())?;
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            );
            let status = p.status.get_or_insert_with(Default::default);
            let Some(cs) = status
                .container_statuses
                .as_mut()
                .and_then(|cs| cs.iter_mut().find(|c| c.name == "verifier"))
            else {
                return Err("no container status yet".into());
            };
            cs.state = Some(k8s_openapi::api::core::v1::ContainerState {
                terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    message: Some(message.into()),
                    started_at: Some(now.clone()),
                    finished_at: Some(now),
                    ..Default::default()
                }),
                ..Default::default()
            });
            api.replace_status(&pod, &PostParams::default(), &p)
                .await
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
        }
    })
    .await
}

fn passing_report(level: u8) -> String {
    use dojo_report::{Check, Report, TERMINATION_MESSAGE_LIMIT, Verdict};
    let checks = vec![
        Check::new("no-loss", "no order is lost", Verdict::Pass, "as measured"),
        Check::new(
            "no-duplicates",
            "no order is paid twice",
            Verdict::Pass,
            "as measured",
        ),
    ];
    Report {
        level,
        slug: "chart-test".into(),
        verdict: Report::overall(&checks),
        checks,
        figures: vec![],
        series: vec![],
        started_at_ms: 0,
        duration_ms: 1000,
        artefacts: None,
    }
    .to_bounded_json(TERMINATION_MESSAGE_LIMIT)
}

/// A game day's report: the figures the game-day dashboard shows, and a
/// check the verifier could not judge (so the attempt ends in Error).
fn game_day_report() -> String {
    use dojo_report::{Check, Figure, Report, TERMINATION_MESSAGE_LIMIT, Verdict};
    let checks = vec![Check::new(
        "zone-failover",
        "the group fails over within the RTO",
        Verdict::Error,
        "the name server did not answer after zone-b came back",
    )];
    let figure = |name: &str, value, unit: &str| Figure {
        name: name.into(),
        value,
        unit: unit.into(),
    };
    let figures = vec![
        figure("RTO", 42.0, "s"),
        figure("lost", 0.0, "messages"),
        figure("duplicated", 3.0, "messages"),
    ];
    Report {
        level: 12,
        slug: "chart-test".into(),
        verdict: Report::overall(&checks),
        checks,
        figures,
        series: vec![],
        started_at_ms: 0,
        duration_ms: 1000,
        artefacts: None,
    }
    .to_bounded_json(TERMINATION_MESSAGE_LIMIT)
}

fn rules_of(path: &Path) -> serde_json::Value {
    let file: serde_json::Value = serde_yaml::from_str(&read(path).unwrap()).unwrap();
    file["rules"].clone()
}

#[tokio::test]
async fn helm_install_then_the_operator_runs_challenges_as_the_charts_service_account_and_prometheus_answers_every_query()
 {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let release = install(cp, "dojo-system").await;
    let ns = &release.namespace;

    // What helm installed: the CRD (established), the RBAC objects, the operator.
    let crd = Api::<CustomResourceDefinition>::all(cp.client())
        .get("challenges.dojo.rmq.dev")
        .await
        .unwrap();
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{conditions:?}"
    );
    Api::<ServiceAccount>::namespaced(cp.client(), ns)
        .get(&release.operator)
        .await
        .unwrap();
    let role = Api::<ClusterRole>::all(cp.client())
        .get(&release.operator)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&role.rules).unwrap(),
        rules_of(&repo().join("operator/deploy/clusterrole.yaml"))
    );
    let binding = Api::<ClusterRoleBinding>::all(cp.client())
        .get(&release.operator)
        .await
        .unwrap();
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        (
            "ServiceAccount",
            release.operator.as_str(),
            Some(ns.as_str())
        )
    );
    let deploy = Api::<Deployment>::namespaced(cp.client(), ns)
        .get(&release.operator)
        .await
        .unwrap();
    assert_eq!(deploy.status.and_then(|s| s.ready_replicas), Some(2));
    let lp = ListParams::default().labels("app.kubernetes.io/component=operator");
    let nodes: std::collections::BTreeSet<String> = Api::<Pod>::namespaced(cp.client(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.spec?.node_name)
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "the two replicas spread over two nodes: {nodes:?}"
    );
    let dashboards = Api::<ConfigMap>::namespaced(cp.client(), ns)
        .get(&format!("{ns}-rocketmq-dojo-dashboards"))
        .await
        .unwrap();
    assert_eq!(
        dashboards
            .labels()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1")
    );

    // The real operator, outside the cluster, with the chart's ServiceAccount token.
    let tenant = cp.new_namespace("learners").await.unwrap();
    let op = Operator::start(cp, &release, &tenant).await;
    let prom = Prometheus::start(
        &[format!("127.0.0.1:{}", op.port)],
        &[repo().join("prometheus/dojo-rules.yaml")],
    )
    .await
    .unwrap();
    // Scraped before the first reconcile, so the rates see it happen.
    eventually(
        "Prometheus scraped the operator as leader",
        WAIT,
        || async {
            let leader = prom
                .query("dojo_operator_leader == 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok((!leader.is_empty()).then_some(()))
        },
    )
    .await;

    // A level reaches Running on kwok and passes; a game-day level runs and
    // ends in Error (its verifier measured the failover but could not judge it).
    apply_sample(cp, &tenant, 1, "learner").await;
    apply_sample(cp, &tenant, 12, "gameday").await;
    wait_challenge(cp, &tenant, "learner", "phase reaches Running", running).await;
    wait_challenge(cp, &tenant, "gameday", "phase reaches Running", running).await;
    finish_verifier(cp, &tenant, "learner-verifier-1", &passing_report(1)).await;
    finish_verifier(cp, &tenant, "gameday-verifier-1", &game_day_report()).await;
    wait_challenge(cp, &tenant, "learner", "phase Passed", |c| {
        c.phase() == Phase::Passed
    })
    .await;
    wait_challenge(cp, &tenant, "gameday", "phase Error", |c| {
        c.phase() == Phase::Error
    })
    .await;

    // Prometheus has scraped the verdicts.
    for series in [
        r#"dojo_attempt_results_total{phase="Passed"}"#,
        r#"dojo_attempt_results_total{phase="Error"}"#,
        "dojo_time_to_pass_seconds_count",
        r#"dojo_operator_leader"#,
    ] {
        eventually(&format!("Prometheus scraped {series}"), WAIT, || async {
            let found = prom.query(series).await.map_err(|e| e.to_string())?;
            Ok((!found.is_empty()).then_some(()))
        })
        .await;
    }
    let targets = prom.targets().await.unwrap();
    assert!(
        targets.len() == 1 && targets[0]["health"] == "up",
        "{targets:?}"
    );

    // Every dashboard query as Grafana would send it; of each alert, the
    // expression (valid, though empty while nothing is wrong) and every
    // series it selects.
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(repo().join("grafana")).unwrap() {
        for q in dashboard_queries(&entry.unwrap().path()).unwrap() {
            let expr = substitute_grafana_variables(&q.expr).unwrap();
            queries.push(Query { expr, ..q });
        }
    }
    for q in rule_queries(&repo().join("prometheus/dojo-rules.yaml")).unwrap() {
        prom.query(&q.expr)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.source));
        queries.extend(positive_selectors(&q.expr).into_iter().map(|expr| Query {
            source: q.source.clone(),
            expr,
        }));
    }
    // A rate needs two scrapes of a series inside its window.
    let answered = eventually(
        "every query returns a series",
        Duration::from_secs(60),
        || async {
            let mut answered = Vec::new();
            let mut empty = Vec::new();
            for q in &queries {
                let series = prom
                    .query(&q.expr)
                    .await
                    .map_err(|e| format!("{}: {e}", q.source))?;
                match series.first() {
                    Some(s) => answered.push(format!(
                        "{} -> {} series, e.g. {}",
                        q.source,
                        series.len(),
                        s["value"][1]
                    )),
                    None => empty.push(format!("{}: {}", q.source, q.expr)),
                }
            }
            if empty.is_empty() {
                Ok(Some(answered))
            } else {
                Err(format!(
                    "{} of {} returned no series:\n{}",
                    empty.len(),
                    queries.len(),
                    empty.join("\n")
                ))
            }
        },
    )
    .await;
    eprintln!("{}", answered.join("\n"));

    // What the dashboards say of this run: one attempt per level, level 1
    // passed both its checks, level 12 ended in Error with its figures, every
    // broker is up (labels in Prometheus's order, by name).
    let panel = |dashboard: &str, title: &str| {
        let q = queries
            .iter()
            .find(|q| {
                q.source
                    .starts_with(&format!("{dashboard}.json: panel {title:?} A"))
            })
            .unwrap_or_else(|| panic!("no panel {title:?} in {dashboard}"));
        let prom = &prom;
        async move {
            let mut values: Vec<(String, String)> = prom
                .query(&q.expr)
                .await
                .unwrap()
                .iter()
                .map(|s| {
                    let labels: Vec<&str> = s["metric"]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|v| v.as_str().unwrap())
                        .collect();
                    (
                        labels.join(" "),
                        s["value"][1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            values.sort();
            values
        }
    };
    let pair = |l: &str, v: &str| (l.to_string(), v.to_string());
    let learner = "learner-progress";
    assert_eq!(
        panel(learner, "Challenges by level and phase").await,
        [pair("1 Passed", "1"), pair("12 Error", "1")]
    );
    assert_eq!(
        panel(learner, "Attempts started by level").await,
        [pair("1", "1"), pair("12", "1")]
    );
    assert_eq!(
        panel(learner, "Attempt results by level").await,
        [pair("1 Passed", "1"), pair("12 Error", "1")]
    );
    assert_eq!(
        panel(learner, "Checks passed and failed by check id").await,
        [
            pair("no-duplicates 1 pass", "1"),
            pair("no-loss 1 pass", "1"),
            pair("zone-failover 12 error", "1")
        ]
    );
    assert_eq!(panel(learner, "Pass rate").await, [pair("", "0.5")]);
    let gameday = format!("gameday {tenant}");
    assert_eq!(
        panel("game-day", "RTO by Challenge").await,
        [pair(&gameday, "42")]
    );
    assert_eq!(
        panel("game-day", "Lost messages by Challenge").await,
        [pair(&gameday, "0")]
    );
    assert_eq!(
        panel("game-day", "Duplicated messages by Challenge").await,
        [pair(&gameday, "3")]
    );
    let zone = |z: &str| pair(&format!("gameday {tenant} {z}"), "1");
    assert_eq!(
        panel("game-day", "Brokers up or down by zone").await,
        [
            zone("zone-a"),
            zone("zone-b"),
            zone("zone-c"),
            pair(&format!("learner {tenant}"), "1")
        ]
    );
    // Prometheus evaluates the rules itself: every one is healthy.
    let groups = prom.rule_groups().await.unwrap();
    let rules: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), 6, "{groups:?}");
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    eprintln!(
        "{} dashboard and rule queries answered; the operator's peak RSS: {:?} KiB",
        queries.len(),
        op.process.peak_rss_kib()
    );
}

/// The same run with one permission taken from the chart's ClusterRole:
/// the operator's reconciles are refused, and the Challenge never runs.
/// Then `helm uninstall`.
#[tokio::test]
async fn a_permission_missing_from_the_cluster_role_stops_the_challenge() {
    let cp = plane().await;
    let _logs = cp.logs_on_panic();
    let release = install(cp, "dojo-norbac").await;
    let roles: Api<ClusterRole> = Api::all(cp.client());
    let mut role = roles.get(&release.operator).await.unwrap();
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "networkpolicies"))
    });
    assert_eq!(rules.len(), before - 1);
    roles
        .replace(&release.operator, &PostParams::default(), &role)
        .await
        .unwrap();

    let tenant = cp.new_namespace("learners-norbac").await.unwrap();
    let op = Operator::start(cp, &release, &tenant).await;
    apply_sample(cp, &tenant, 1, "blocked").await;
    eventually(
        "the operator's reconciles refused by RBAC",
        WAIT,
        || async {
            let metrics = op.metrics().await;
            Ok(metrics
                .lines()
                .any(|l| l.starts_with(r#"dojo_reconcile_total{result="KubeApiError"}"#))
                .then_some(()))
        },
    )
    .await;
    assert!(op.log().contains("forbidden"), "{}", op.log());
    let ch = Api::<Challenge>::namespaced(cp.client(), &tenant)
        .get("blocked")
        .await
        .unwrap();
    assert!(
        !running(&ch),
        "ran without the networkpolicies permission: {:?}",
        ch.status
    );

    // `helm uninstall` takes the operator and its RBAC away and leaves the CRD (and the Challenges).
    drop(op);
    Helm::new()
        .unwrap()
        .kubeconfig(cp.kubeconfig_path())
        .run(&[
            "uninstall",
            &release.namespace,
            "--namespace",
            &release.namespace,
            "--wait",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(roles.get_opt(&release.operator).await.unwrap().is_none());
    assert!(
        Api::<ClusterRoleBinding>::all(cp.client())
            .get_opt(&release.operator)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Deployment>::namespaced(cp.client(), &release.namespace)
            .get_opt(&release.operator)
            .await
            .unwrap()
            .is_none()
    );
    Api::<CustomResourceDefinition>::all(cp.client())
        .get("challenges.dojo.rmq.dev")
        .await
        .unwrap();
    Api::<Challenge>::namespaced(cp.client(), &tenant)
        .get("blocked")
        .await
        .unwrap();
}
