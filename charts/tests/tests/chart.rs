//! The chart, dashboards and rules without a cluster: `helm lint`, `helm
//! template` with the defaults and with every optional flag, the values
//! schema, the copies the chart carries, and `promtool`.

use std::collections::BTreeSet;
use std::process::Command;

use dojo_chart_tests::*;
use serde_yaml::Value;

/// Every optional feature of values.yaml switched on.
const EVERY_FLAG: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "dashboards.enabled=true",
];

fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "rel",
        chart.to_str().unwrap(),
        "--namespace",
        "dojo-system",
    ];
    args.extend_from_slice(extra);
    let out = Helm::new()
        .unwrap()
        .run(&args)
        .unwrap_or_else(|e| panic!("{e}"));
    out.split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn helm_lint_passes_with_defaults_and_with_every_flag() {
    let helm = Helm::new().unwrap();
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let out = helm
        .run(&["lint", "--strict", chart])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    let mut args = vec!["lint", "--strict", chart];
    args.extend_from_slice(EVERY_FLAG);
    let out = helm.run(&args).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn helm_template_renders_the_operator_as_specified() {
    let defaults = template(&[]);
    assert_eq!(
        kinds(&defaults),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
        "the optional objects are off by default"
    );
    let all = template(EVERY_FLAG);
    assert_eq!(
        kinds(&all),
        kinds(&defaults)
            .into_iter()
            .chain(["PrometheusRule".into(), "ServiceMonitor".into()])
            .collect()
    );

    let deploy = find(&defaults, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-rocketmq-dojo-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "localhost/rocketmq-dojo/operator:0.1.0");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string(),
        "{c:?}"
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--lease-name=rel-rocketmq-dojo-operator"),
        "{args:?}"
    );
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "leader election needs both: {env:?}"
    );

    let dashboards = find(&defaults, "ConfigMap");
    assert_eq!(dashboards["metadata"]["labels"]["grafana_dashboard"], "1");
    let keys: BTreeSet<&str> = dashboards["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "game-day.json",
            "learner-progress.json",
            "operator-health.json"
        ]
        .into()
    );

    let monitor = find(&all, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["relabelings"][0]["replacement"], JOB,
        "the rules select job={JOB}"
    );
    let rule = find(&all, "PrometheusRule");
    let file: Value =
        serde_yaml::from_str(&read(&repo().join("prometheus/dojo-rules.yaml")).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
}

#[test]
fn an_image_digest_wins_over_the_tag() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = template(&[
        "--set",
        "operator.image.repository=registry.example/dojo/operator",
        "--set",
        "operator.image.tag=1.2.3",
        "--set",
        &format!("operator.image.digest={digest}"),
    ]);
    assert_eq!(
        find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("registry.example/dojo/operator@{digest}").as_str()
    );
    let docs = template(&["--set", "operator.image.tag=1.2.3"]);
    assert_eq!(
        find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"],
        "localhost/rocketmq-dojo/operator:1.2.3"
    );
}

#[test]
fn the_values_schema_refuses_wrong_values_and_says_where() {
    let helm = Helm::new().unwrap();
    let chart = chart_dir();
    let cases = [
        ("operator.replicas=0", "/operator/replicas", "minimum"),
        (
            "operator.image.pullPolicy=Sometimes",
            "/operator/image/pullPolicy",
            "must be one of",
        ),
        (
            "operator.image.digest=sha256:abc",
            "/operator/image/digest",
            "does not match pattern",
        ),
        (
            "operator.leaseSeconds=1",
            "/operator/leaseSeconds",
            "minimum",
        ),
        ("operator.port=80", "/operator/port", "minimum"),
        (
            "service.type=ExternalName",
            "/service/type",
            "must be one of",
        ),
        (
            "serviceMonitor.interval=30",
            "/serviceMonitor/interval",
            "want string",
        ),
        (
            "serviceMonitor.enabled=yes",
            "/serviceMonitor/enabled",
            "want boolean",
        ),
        (
            "operator.replica=2",
            "/operator",
            "additional properties 'replica' not allowed",
        ),
    ];
    for (set, path, why) in cases {
        let err = helm
            .run(&["template", "rel", chart.to_str().unwrap(), "--set", set])
            .expect_err(set)
            .to_string();
        assert!(
            err.contains(&format!("at '{path}'")) && err.contains(why),
            "--set {set}: {err}"
        );
    }
}

/// The chart carries copies of files that live elsewhere in the repository
/// (Helm reads only inside the chart); `make chart-sync` refreshes them.
#[test]
fn the_charts_copies_equal_their_sources() {
    let repo = repo();
    let chart = chart_dir();
    let mut pairs = vec![
        (
            "crds/challenge.yaml".to_string(),
            "crds/challenge.yaml".to_string(),
        ),
        (
            "operator/deploy/clusterrole.yaml".into(),
            "files/operator-clusterrole.yaml".into(),
        ),
        (
            "prometheus/dojo-rules.yaml".into(),
            "files/dojo-rules.yaml".into(),
        ),
    ];
    let dashboards: BTreeSet<String> = std::fs::read_dir(repo.join("grafana"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let copied: BTreeSet<String> = std::fs::read_dir(chart.join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dashboards, copied,
        "grafana/ and the chart's dashboards/ hold different files: run `make chart-sync`"
    );
    pairs.extend(
        dashboards
            .iter()
            .map(|d| (format!("grafana/{d}"), format!("dashboards/{d}"))),
    );
    for (source, copy) in pairs {
        assert!(
            read(&repo.join(&source)).unwrap() == read(&chart.join(&copy)).unwrap(),
            "charts/rocketmq-dojo/{copy} differs from {source}: run `make chart-sync`"
        );
    }
}

/// What the operator's own integration tests run with is what the chart grants.
#[test]
fn the_rendered_cluster_role_grants_exactly_the_operators_rules() {
    let operator: Value =
        serde_yaml::from_str(&read(&repo().join("operator/deploy/clusterrole.yaml")).unwrap())
            .unwrap();
    let docs = template(&[]);
    assert_eq!(find(&docs, "ClusterRole")["rules"], operator["rules"]);
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "rel-rocketmq-dojo-operator");
    assert_eq!(
        binding["subjects"][0]["name"],
        find(&docs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(binding["subjects"][0]["namespace"], "dojo-system");
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = prometheus_bin("promtool").unwrap();
    let dir = repo().join("prometheus");
    let mut check = Command::new(&promtool);
    check
        .current_dir(&dir)
        .args(["check", "rules", "dojo-rules.yaml"]);
    let out = run(check).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    let mut test = Command::new(&promtool);
    test.current_dir(&dir)
        .args(["test", "rules", "dojo-rules.test.yaml"]);
    let out = run(test).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every panel and variable query of every dashboard is plain PromQL once
/// Grafana's variables are replaced (the live test runs them).
#[test]
fn every_dashboard_query_uses_known_variables() {
    let dir = repo().join("grafana");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        for q in dashboard_queries(&entry.unwrap().path()).unwrap() {
            substitute_grafana_variables(&q.expr).unwrap_or_else(|e| panic!("{}: {e}", q.source));
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} queries found");
}

#[test]
fn the_bootstrap_pins_the_same_versions() {
    let script = read(&repo().join("testenv/bootstrap/deps.sh")).unwrap();
    for (var, version) in [
        ("HELM_VERSION", HELM_VERSION),
        ("PROMETHEUS_VERSION", PROMETHEUS_VERSION),
    ] {
        assert!(
            script.contains(&format!("\n{var}={version}\n")),
            "deps.sh must pin {var}={version}"
        );
    }
    let version = run({
        let mut c = Command::new(helm_bin().unwrap());
        c.arg("version").arg("--short");
        c
    })
    .unwrap();
    assert!(version.starts_with(HELM_VERSION), "{version}");
}
