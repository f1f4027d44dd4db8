//! Shared by the operator's integration tests: the real control plane, the
//! real `dojo-operator` binary (as a process, with the chart's ClusterRole),
//! Challenges from the committed samples, and polling.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dojo_crds::Challenge;
use dojo_testenv::ControlPlane;
pub use dojo_testenv::eventually;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

pub const WAIT: Duration = Duration::from_secs(90);

pub async fn plane() -> &'static ControlPlane {
    let cp = ControlPlane::shared()
        .await
        .unwrap_or_else(|e| panic!("starting the control plane: {e}"));
    dojo_crds::install(cp.client()).await.unwrap();
    cp
}

/// A committed sample (`crds/samples/level-NN-*.yaml`), renamed.
pub fn sample(level: u8, name: &str) -> Challenge {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/samples");
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
    let mut ch: Challenge = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    ch.metadata.name = Some(name.into());
    ch
}

pub async fn apply_challenge(cp: &ControlPlane, ns: &str, ch: &Challenge) -> Challenge {
    let api: Api<Challenge> = Api::namespaced(cp.client(), ns);
    let name = ch.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("dojo-test").force(),
        &Patch::Apply(ch),
    )
    .await
    .unwrap()
}

pub async fn challenge(cp: &ControlPlane, ns: &str, name: &str) -> Challenge {
    Api::<Challenge>::namespaced(cp.client(), ns)
        .get(name)
        .await
        .unwrap()
}

/// Waits until the Challenge's status satisfies `ok`; returns it.
pub async fn wait_status(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Challenge) -> bool,
) -> Challenge {
    let api: Api<Challenge> = Api::namespaced(cp.client(), ns);
    eventually(what, WAIT, || {
        let api = api.clone();
        let ok = &ok;
        async move {
            let ch = api.get(name).await.map_err(|e| e.to_string())?;
            if ok(&ch) {
                Ok(Some(ch))
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

/// Identity the operator's ServiceAccount is bound to the chart's ClusterRole with.
pub const OPERATOR_SA: &str = "dojo-operator";

/// The chart's ClusterRole (operator/deploy/clusterrole.yaml), bound to
/// ServiceAccount `ns/dojo-operator`; returns a kubeconfig with its token.
pub async fn operator_kubeconfig(cp: &ControlPlane, ns: &str) -> PathBuf {
    let client = cp.client();
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/clusterrole.yaml"),
    )
    .unwrap();
    let role: ClusterRole = serde_yaml::from_str(&yaml).unwrap();
    let ssa = PatchParams::apply("dojo-test").force();
    Api::<ClusterRole>::all(client.clone())
        .patch("dojo-operator", &ssa, &Patch::Apply(&role))
        .await
        .unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": OPERATOR_SA}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("dojo-operator-{ns}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dojo-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client)
        .patch(
            &format!("dojo-operator-{ns}"),
            &ssa,
            &Patch::Apply(&binding),
        )
        .await
        .unwrap();
    let token = cp.service_account_token(ns, OPERATOR_SA).await.unwrap();
    let path = cp.dir().join(format!("operator-{ns}.kubeconfig"));
    let q = |s: &str| serde_json::Value::from(s).to_string();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dojo\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: op\n  user:\n    token: {}\ncontexts:\n- name: dojo\n  context: {{cluster: dojo, user: op}}\ncurrent-context: dojo\n",
            q(cp.server_url()),
            q(&cp.ca_cert_path().display().to_string()),
            q(&token)
        ),
    )
    .unwrap();
    path
}

/// The `dojo-operator` binary as a process, killed on drop.
pub struct Operator {
    child: Child,
    pub port: u16,
    pub identity: String,
    pub log: PathBuf,
}

pub struct OperatorSpec<'a> {
    pub kubeconfig: &'a Path,
    pub namespace: &'a str,
    pub identity: &'a str,
    pub lease_seconds: u64,
}

impl Operator {
    pub fn start(cp: &ControlPlane, spec: OperatorSpec<'_>) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = cp
            .dir()
            .join(format!("operator-{}-{}.log", spec.namespace, spec.identity));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dojo-operator"))
            .env("KUBECONFIG", spec.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args([
                "--namespace",
                spec.namespace,
                "--lease-namespace",
                spec.namespace,
                "--identity",
                spec.identity,
            ])
            .args([
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-seconds",
                &spec.lease_seconds.to_string(),
            ])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the dojo-operator binary starts");
        Operator {
            child,
            port,
            identity: spec.identity.into(),
            log,
        }
    }

    /// Runs as the chart's ClusterRole, alone in `ns`.
    pub async fn start_with_chart_role(cp: &ControlPlane, ns: &str) -> Operator {
        let kubeconfig = operator_kubeconfig(cp, ns).await;
        Operator::start(
            cp,
            OperatorSpec {
                kubeconfig: &kubeconfig,
                namespace: ns,
                identity: "op-1",
                lease_seconds: 15,
            },
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as a kubelet stops a pod; returns once the process exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which wait() has not reaped yet.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0,
            "signalling the operator"
        );
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator still runs {WAIT:?} after SIGTERM:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no chance to clean anything up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub async fn get(&self, path: &str) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(text))
    }

    /// The value of one sample line of /metrics (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.unwrap_or_default();
        metric_value(&text, series)
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- operator {} log ({}) -----\n{}",
                self.identity,
                self.log.display(),
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// The pods of one component of a Challenge.
pub async fn pods(cp: &ControlPlane, ns: &str, challenge: &str, component: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!(
        "dojo.rmq.dev/challenge={challenge},app.kubernetes.io/component={component}"
    ));
    Api::<Pod>::namespaced(cp.client(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
}

/// Plays the kubelet: `container` of `pod` is in `state`, not ready, and the
/// pod in `phase` (kwok leaves a pod alone once it has an IP).
pub async fn set_container_state(
    cp: &ControlPlane,
    ns: &str,
    pod: &str,
    container: &str,
    phase: &str,
    state: ContainerState,
) {
    let api: Api<Pod> = Api::namespaced(cp.client(), ns);
    eventually(
        &format!("pod {pod}'s container {container} set to {state:?}"),
        WAIT,
        || {
            let (api, state) = (api.clone(), state.clone());
            async move {
                let mut p = api.get(pod).await.map_err(|e| e.to_string())?;
                let now = Time(k8s_openapi::jiff::Timestamp::now());
                let status = p.status.get_or_insert_with(Default::default);
                status.phase = Some(phase.into());
                for c in status
                    .conditions
                    .iter_mut()
                    .flatten()
                    .filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
                {
                    c.status = "False".into();
                    c.last_transition_time = Some(now.clone());
                }
                let Some(cs) = status
                    .container_statuses
                    .as_mut()
                    .and_then(|cs| cs.iter_mut().find(|c| c.name == container))
                else {
                    return Err("no container status yet".into());
                };
                cs.ready = false;
                cs.started = Some(false);
                cs.state = Some(state);
                match api.replace_status(pod, &PostParams::default(), &p).await {
                    Ok(_) => Ok(Some(())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
}

/// Plays the verifier's end as a kubelet would: the container terminates
/// and its termination message is the report.
pub async fn terminate_verifier(cp: &ControlPlane, ns: &str, pod: &str, report: &str) {
    // kwok completes Job pods itself, without a message: writing before it
    // has done so races its write, which would erase the report.
    let api: Api<Pod> = Api::namespaced(cp.client(), ns);
    eventually(&format!("kwok completed pod {pod}"), WAIT, || async {
        let p = api.get(pod).await.map_err(|e| e.to_string())?;
        Ok((p.status.and_then(|s| s.phase).as_deref() == Some("Succeeded")).then_some(()))
    })
    .await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let terminated = ContainerStateTerminated {
        exit_code: 0,
        reason: Some("Completed".into()),
        message: Some(report.to_string()),
        started_at: Some(now.clone()),
        finished_at: Some(now),
        ..Default::default()
    };
    set_container_state(
        cp,
        ns,
        pod,
        "verifier",
        "Succeeded",
        ContainerState {
            terminated: Some(terminated),
            ..Default::default()
        },
    )
    .await
}
