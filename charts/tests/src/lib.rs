//! What the tests of the Helm chart, the dashboards and the alerting rules
//! share: the pinned `helm`, `promtool` and `prometheus` (installed by
//! `testenv/bootstrap/deps.sh helm prometheus`), the PromQL of the
//! dashboards and rules, a real Prometheus on loopback, the binaries of this
//! workspace, and a level played in a cluster ([`level`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dojo_testenv::process::{Process, Spec};

pub mod level;
use serde_json::Value;

/// Pinned in `testenv/bootstrap/deps.sh` too (a test checks they agree).
pub const HELM_VERSION: &str = "v3.22.0";
/// Debian's `prometheus` package of this upstream version.
pub const PROMETHEUS_VERSION: &str = "2.42.0";

/// The scrape job the rules and dashboards select (`job="dojo-operator"`).
pub const JOB: &str = "dojo-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Testenv(#[from] dojo_testenv::Error),
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "building the {bin} binary: {detail} (try `cargo build --bin {bin}` and read its errors)"
    )]
    BinaryBuild { bin: String, detail: String },
    #[error("Prometheus on 127.0.0.1:{port}: {what}: {detail} (its log: {log})")]
    Prometheus {
        port: u16,
        what: String,
        detail: String,
        log: PathBuf,
    },
    #[error("{path}: {detail}")]
    Yaml { path: PathBuf, detail: String },
    #[error("the Kubernetes API: {0}")]
    Kube(String),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository holds this crate")
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/rocketmq-dojo")
}

pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn installed(tool: &'static str, step: &'static str, dir: String, bin: &str) -> Result<PathBuf> {
    let dir = dojo_testenv::cache::root().join(dir);
    if dir.join(".done").is_file() {
        Ok(dir.join("bin").join(bin))
    } else {
        Err(dojo_testenv::Error::NotInstalled {
            tool,
            path: dir,
            step,
        }
        .into())
    }
}

pub fn helm_bin() -> Result<PathBuf> {
    installed("helm", "helm", format!("helm-{HELM_VERSION}"), "helm")
}

/// `prometheus` or `promtool`.
pub fn prometheus_bin(name: &str) -> Result<PathBuf> {
    installed(
        "Prometheus",
        "prometheus",
        format!("prometheus-{PROMETHEUS_VERSION}"),
        name,
    )
}

/// Runs `cmd`; its stdout on success, else an error with its output.
pub fn run(mut cmd: Command) -> Result<String> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

/// `helm` with its config, cache and data in a folder of its own (nothing
/// from the user's helm set-up leaks in), optionally against a cluster.
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    pub fn new() -> Result<Helm> {
        let home = tempfile::tempdir().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        Ok(Helm {
            bin: helm_bin()?,
            home,
            kubeconfig: None,
        })
    }

    pub fn kubeconfig(mut self, path: &Path) -> Helm {
        self.kubeconfig = Some(path.to_path_buf());
        self
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        for (var, sub) in [
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(var, self.home.path().join(sub));
        }
        if let Some(kc) = &self.kubeconfig {
            cmd.env("KUBECONFIG", kc);
        }
        cmd.args(args);
        run(cmd)
    }
}

/// The shared control plane with a real node, or `None` (after saying why)
/// where a real node cannot run here.
pub async fn real_node_plane() -> Option<&'static dojo_testenv::ControlPlane> {
    match dojo_testenv::ControlPlane::shared_with_real_node().await {
        Ok(cp) => Some(cp),
        Err(dojo_testenv::Error::NodeUnsupported { reason }) => {
            eprintln!("SKIPPED: {reason}");
            None
        }
        Err(e) => panic!("starting the control plane with a real node: {e}"),
    }
}

/// `helm install` of the chart as release `ns` into namespace `ns`, with
/// the operator image `image` (imported into the real node, never pulled)
/// on the real node; returns once both operator pods are ready (their
/// readiness probe answers once the operator reached the API server with
/// the token mounted in the pod).
pub fn install_on_real_node(cp: &dojo_testenv::ControlPlane, ns: &str, image: &str) -> Result<()> {
    let (repository, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let chart = chart_dir();
    Helm::new()?
        .kubeconfig(cp.kubeconfig_path())
        .run(&[
            "install",
            ns,
            &chart.display().to_string(),
            "--namespace",
            ns,
            "--wait",
            "--timeout",
            "4m",
            "--set",
            &format!("operator.image.repository={repository}"),
            "--set",
            &format!("operator.image.tag={tag}"),
            "--set",
            "operator.image.pullPolicy=Never",
            "--set",
            &format!(
                "operator.nodeSelector.{}={}",
                dojo_testenv::control_plane::NODE_TYPE_LABEL,
                dojo_testenv::node::NODE_TYPE
            ),
        ])
        .map(|_| ())
}

/// One PromQL expression and where it comes from.
#[derive(Clone, Debug)]
pub struct Query {
    pub source: String,
    pub expr: String,
}

/// Every query of a Grafana dashboard: each panel's targets (rows
/// included) and each query variable (`label_values(metric, label)` becomes
/// `count by (label) (metric)`, the series Grafana reads the values from).
pub fn dashboard_queries(path: &Path) -> Result<Vec<Query>> {
    let text = read(path)?;
    let dash: Value = serde_json::from_str(&text).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut out = Vec::new();
    fn walk(panels: &Value, name: &str, out: &mut Vec<Query>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(Query {
                        source: format!(
                            "{name}: panel {title:?} {}",
                            t["refId"].as_str().unwrap_or("")
                        ),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(&p["panels"], name, out);
        }
    }
    walk(&dash["panels"], &name, &mut out);
    for v in dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
    {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let expr = match q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','))
        {
            Some((metric, label)) => format!("count by ({}) ({})", label.trim(), metric.trim()),
            None => q.to_string(),
        };
        out.push(Query {
            source: format!("{name}: variable {}", v["name"].as_str().unwrap_or("?")),
            expr,
        });
    }
    Ok(out)
}

/// A dashboard expression as Grafana would send it, its variables replaced
/// by what an instant query over the last minutes needs; `Err` names a
/// variable this function does not know.
pub fn substitute_grafana_variables(expr: &str) -> Result<String, String> {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$level", ".*");
    match out.find('$') {
        Some(i) => Err(format!("unknown Grafana variable at {:?}", &out[i..])),
        None => Ok(out),
    }
}

/// The metric selectors of an expression (`dojo_*` and `up`), each with
/// only its positive matchers (`=`, `=~`): what must match a series for
/// the expression to mean anything. A negative matcher (`result!="ok"`)
/// is left out: it may rightly match nothing on a healthy operator.
pub fn positive_selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("dojo_") || name == "up") {
            continue;
        }
        let mut matchers = Vec::new();
        if bytes.get(i) == Some(&b'{') {
            let end = expr[i..].find('}').map(|e| i + e).unwrap_or(expr.len());
            for m in expr[i + 1..end]
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                if !m.contains("!=") && !m.contains("!~") {
                    matchers.push(m.to_string());
                }
            }
            i = end;
        }
        let selector = format!("{name}{{{}}}", matchers.join(","));
        if !out.contains(&selector) {
            out.push(selector);
        }
    }
    out
}

/// Every alerting or recording rule's expression of a Prometheus rule file.
pub fn rule_queries(path: &Path) -> Result<Vec<Query>> {
    let text = read(path)?;
    let file: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut out = Vec::new();
    for group in file["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            if let Some(expr) = rule["expr"].as_str() {
                out.push(Query {
                    source: format!("rule {name}"),
                    expr: expr.trim().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A real Prometheus on a free loopback port, scraping `targets` every
/// second as job [`JOB`] and evaluating `rule_files`; killed on drop.
pub struct Prometheus {
    process: Process,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    pub async fn start(targets: &[String], rule_files: &[PathBuf]) -> Result<Prometheus> {
        let bin = prometheus_bin("prometheus")?;
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let port = dojo_testenv::ports::free_port()?;
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        });
        // JSON is YAML: no YAML writer needed.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let spec = Spec::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .die_with_parent();
        let process = Process::spawn("prometheus", spec, dir.path().join("prometheus.log"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        let prom = Prometheus {
            process,
            port,
            dir,
            http,
        };
        let start = Instant::now();
        loop {
            match prom.http.get(prom.url("/-/ready")).send().await {
                Ok(r) if r.status().is_success() => return Ok(prom),
                _ if start.elapsed() > Duration::from_secs(30) => {
                    return Err(prom.error("not ready after 30 s", prom.log_tail()));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Prometheus {
            port: self.port,
            what: what.into(),
            detail: detail.to_string(),
            log: self.dir.path().join("prometheus.log"),
        }
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(20)
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let url = reqwest::Url::parse_with_params(&self.url(path), params)
            .map_err(|e| self.error(path, e))?;
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.error(path, e))?
            .json()
            .await
            .map_err(|e| self.error(path, e))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(self.error(
                &format!("{path} {params:?}"),
                format!("{}: {}", body["errorType"], body["error"]),
            ))
        }
    }

    /// An instant query; the series it returned (an error when Prometheus
    /// refused the expression).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The loaded rule groups with each rule's health and last error.
    pub async fn rule_groups(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/rules", &[]).await?["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The scrape targets with their health.
    pub async fn targets(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/targets", &[]).await?["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// Binary `bin` of package `package` of this workspace, built if needed
/// and copied into `dir` (a concurrent build may replace Cargo's copy while
/// it runs). Cargo hands a binary's path only to its own crate's tests, so
/// this asks Cargo for it.
///
/// Built on its own (`-p PACKAGE`), as a platform team builds it: no other
/// crate of the workspace lends it a feature (the operator's rustls crypto
/// provider among them), so a binary that only works inside a bigger build
/// fails here.
pub fn workspace_binary(package: &str, bin: &str, dir: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo()).args([
        "build",
        "-q",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json",
    ]);
    let failed = |detail: String| Error::BinaryBuild {
        bin: bin.into(),
        detail,
    };
    let out = run(cmd).map_err(|e| failed(e.to_string()))?;
    let built = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| failed(format!("cargo named no {bin} executable")))?;
    let copy = dir.join(bin);
    std::fs::copy(&built, &copy).map_err(|source| Error::Io {
        path: copy.clone(),
        source,
    })?;
    Ok(copy)
}

/// The `dojo-operator` binary (see [`workspace_binary`]).
pub fn operator_binary(dir: &Path) -> Result<PathBuf> {
    workspace_binary("dojo-operator", "dojo-operator", dir)
}

/// A kubeconfig authenticating with `token` against the control plane
/// (what a pod with the ServiceAccount's token sees).
pub fn token_kubeconfig(cp: &dojo_testenv::ControlPlane, token: &str, path: &Path) -> Result<()> {
    let q = |s: &str| Value::from(s).to_string();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dojo\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: dojo\n  context: {{cluster: dojo, user: sa}}\ncurrent-context: dojo\n",
        q(cp.server_url()),
        q(&cp.ca_cert_path().display().to_string()),
        q(token)
    );
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_keep_positive_matchers_only() {
        let expr = r#"(sum(rate(dojo_reconcile_total{job="dojo-operator",result!="ok"}[5m])) or vector(0)) / sum(rate(dojo_reconcile_total{job="dojo-operator"}[5m])) + absent(up{job="dojo-operator"} == 1) + histogram_quantile(0.9, sum by (le) (dojo_x_bucket))"#;
        assert_eq!(
            positive_selectors(expr),
            [
                r#"dojo_reconcile_total{job="dojo-operator"}"#,
                r#"up{job="dojo-operator"}"#,
                "dojo_x_bucket{}"
            ]
        );
    }

    #[test]
    fn grafana_variables_are_substituted_or_named() {
        assert_eq!(
            substitute_grafana_variables(r#"rate(x{level=~"$level"}[$__rate_interval])"#).unwrap(),
            r#"rate(x{level=~".*"}[1m])"#
        );
        assert!(
            substitute_grafana_variables("x[$__interval]")
                .unwrap_err()
                .contains("$__interval")
        );
    }
}
