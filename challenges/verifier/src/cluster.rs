//! [`Platform`] on a Challenge's pods: what the verifier Job runs with
//! `--platform kube`, through its namespace-scoped Role (operator/src/build.rs,
//! `verifier_role`).
//!
//! - Workload instances are pods the verifier creates from the workload
//!   Deployment's pod template (the learner's image and the environment
//!   contract), one per life of an instance, owned by the verifier's own pod
//!   so they go with it. `restartPolicy: Never` keeps an exited instance's
//!   status, as a local process's exit status is kept. The Deployment itself
//!   is scaled to zero by the operator while the verifier runs.
//! - Signals (stop, kill, pause, the broker's faults) go through `pods/exec`:
//!   a shell in the container signals that container's own processes. The
//!   pods share their process namespace, so none of those processes is
//!   PID 1, which a signal from inside its namespace cannot stop or kill.
//!   The one requirement on a learner's image: a POSIX `sh` (the workload
//!   base has one).
//! - A stopped or killed broker is restarted by the kubelet on the same
//!   `emptyDir` store (a container restart, not a new pod): `Restart` waits
//!   until it serves again.

// Only the verifier Job plays in a cluster: `dojo` builds without kube.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::kube::api::{Api, AttachParams, AttachedProcess, LogParams, PostParams};
use ::kube::{Client, ResourceExt};
use dojo_kit::Clients;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, EnvVar, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, SimplexStream,
    WriteHalf,
};

use crate::platform::{BrokerFault, PeakRss, Platform, PlatformError, StopOutcome, WorkloadStats};

/// The port an instance serves HTTP on (`DOJO_LISTEN_ADDR`).
pub const WORKLOAD_HTTP_PORT: u16 = 8081;
const CONTAINER_START: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Lists the PIDs of this container's processes that started before the
/// shell running it (so not the shell, nor the `cat`s it forks): the ones
/// in its cgroup. The first is the container's main process.
const CONTAINER_PIDS: &str = r#"cg=$(cat /proc/self/cgroup)
for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" -lt $$ ] && [ "$(cat "$d/cgroup" 2>/dev/null)" = "$cg" ] && echo "$p"; done"#;

/// What the verifier Job's environment says about its run (operator/src/build.rs, `verifier_job`).
#[derive(Clone, Debug)]
pub struct JobEnv {
    pub challenge: String,
    pub namespace: String,
    pub attempt: u32,
    pub pod: String,
    pub namesrv_addr: String,
    pub world_listen: String,
    pub workload_selector: String,
    pub messages: Option<u32>,
}

impl JobEnv {
    /// Reads it; the error names the missing variable.
    pub fn from_env() -> Result<JobEnv, String> {
        let get = |k: &str| {
            std::env::var(k).map_err(|_| format!("{k} is not set: the verifier Job of the operator sets it (`--platform kube` runs only there)"))
        };
        Ok(JobEnv {
            challenge: get("DOJO_CHALLENGE")?,
            namespace: get("DOJO_NAMESPACE")?,
            attempt: get("DOJO_ATTEMPT")?
                .parse()
                .map_err(|_| "DOJO_ATTEMPT must be a number".to_string())?,
            pod: get("DOJO_POD")?,
            namesrv_addr: get("NAMESRV_ADDR")?,
            world_listen: get("WORLD_LISTEN")?,
            workload_selector: get("DOJO_WORKLOAD_SELECTOR")?,
            messages: std::env::var("DOJO_MESSAGES")
                .ok()
                .and_then(|m| m.parse().ok()),
        })
    }
}

/// A shell kept open in an instance's container, reading signal names:
/// an exec takes a few hundred milliseconds to set up, too long for a crash
/// that must land inside a level's window (level 6: 600 ms), so the set-up
/// happens at start and a signal is one line.
struct Signaller {
    _session: AttachedProcess,
    stdin: WriteHalf<SimplexStream>,
    acks: Lines<BufReader<ReadHalf<SimplexStream>>>,
}

impl Signaller {
    /// `Ok(true)` once sent; `Ok(false)` if the shell is gone (its
    /// container too, when the signal ended the workload).
    async fn send(&mut self, signal: &str) -> Result<bool, String> {
        if self
            .stdin
            .write_all(format!("{signal}\n").as_bytes())
            .await
            .is_err()
            || self.stdin.flush().await.is_err()
        {
            return Ok(false);
        }
        match tokio::time::timeout(Duration::from_secs(5), self.acks.next_line()).await {
            Ok(Ok(Some(line))) if line == "sent 0" => Ok(true),
            Ok(Ok(Some(line))) => Err(format!("kill -{signal}: {line}")),
            Ok(_) => Ok(false),
            Err(_) => Err(format!(
                "kill -{signal}: no answer from the signalling shell within 5s"
            )),
        }
    }
}

struct Instance {
    pod: String,
    signaller: Option<Signaller>,
    /// How many pods this instance has had (each start is a new pod).
    lives: u32,
    ip: Option<String>,
    /// Once seen, an exit is kept: the pod may be gone later.
    exit: Option<(String, bool)>,
    peak_rss_kib: u64,
}

pub struct KubePlatform {
    pods: Api<Pod>,
    env: JobEnv,
    owner: OwnerReference,
    template: PodTemplateSpec,
    container: String,
    serves_http: bool,
    broker_pod: String,
    broker_peak_rss_kib: Option<u64>,
    /// The broker container's restart count when it was last stopped or killed.
    broker_restarts_at_fault: i32,
    instances: BTreeMap<String, Instance>,
}

fn werr(instance: &str, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Workload {
        instance: instance.to_string(),
        detail: e.to_string(),
    }
}

/// `exit status: 0`, `signal: 9 (SIGKILL)`, as a local process's status
/// reads; a container killed by signal N exits with 128 + N.
fn exit_text(code: i32, signal: Option<i32>) -> String {
    let signal = signal
        .filter(|s| *s > 0)
        .or((code > 128 && code < 160).then_some(code - 128));
    match signal {
        Some(s) => {
            let name = match s {
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("signal: {s}{name}")
        }
        None => format!("exit status: {code}"),
    }
}

/// The exit of `container` in `pod`, if it terminated: (status, success).
fn terminated(pod: &Pod, container: &str) -> Option<(String, bool)> {
    let t = container_status(pod, container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some((exit_text(t.exit_code, t.signal), t.exit_code == 0))
}

/// Why an exec into `container` of `pod` could not start.
fn exec_failed(pod: &str, container: &str, e: ::kube::Error) -> String {
    format!(
        "exec in {pod}/{container}: {e} (the verifier signals a container's processes with its `sh`)"
    )
}

fn container_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

impl KubePlatform {
    /// Reads the verifier's own pod (the owner of the instances) and the
    /// workload Deployment's template, then waits until the Deployment's
    /// pods are gone: two copies of the learner's program at once would
    /// blur the verdict.
    pub async fn new(
        client: Client,
        env: JobEnv,
        serves_http: bool,
    ) -> Result<KubePlatform, PlatformError> {
        let other =
            |what: String| move |e: ::kube::Error| PlatformError::Other(format!("{what}: {e}"));
        let pods: Api<Pod> = Api::namespaced(client.clone(), &env.namespace);
        let me = pods
            .get(&env.pod)
            .await
            .map_err(other(format!("reading the verifier's own pod {}", env.pod)))?;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: me.name_any(),
            uid: me.uid().unwrap_or_default(),
            ..Default::default()
        };
        let deployment = format!("{}-workload", env.challenge);
        let d = Api::<Deployment>::namespaced(client, &env.namespace)
            .get(&deployment)
            .await
            .map_err(other(format!(
                "reading the workload Deployment {deployment}"
            )))?;
        let template = d.spec.map(|s| s.template).ok_or_else(|| {
            PlatformError::Other(format!("the Deployment {deployment} has no pod template"))
        })?;
        let container = template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .ok_or_else(|| {
                PlatformError::Other(format!("the Deployment {deployment} has no container"))
            })?;
        let start = Instant::now();
        let lp = ::kube::api::ListParams::default().labels(&env.workload_selector);
        loop {
            let left = pods
                .list(&lp)
                .await
                .map_err(other("listing the workload Deployment's pods".into()))?
                .items;
            if left.is_empty() {
                break;
            }
            if start.elapsed() > CONTAINER_START {
                let names: Vec<String> = left.iter().map(|p| p.name_any()).collect();
                return Err(PlatformError::Other(format!(
                    "the workload Deployment's pods are still there after {}s: {}; the operator scales it to 0 while the verifier runs",
                    CONTAINER_START.as_secs(),
                    names.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let broker_pod = format!("{}-broker-0", env.challenge);
        Ok(KubePlatform {
            pods,
            env,
            owner,
            template,
            container,
            serves_http,
            broker_pod,
            broker_peak_rss_kib: None,
            broker_restarts_at_fault: 0,
            instances: BTreeMap::new(),
        })
    }

    /// The pod of instance `instance`'s `life`th start.
    fn instance_pod(&self, instance: &str, life: u32) -> Pod {
        let name = format!(
            "{}-w{}-{instance}-{life}",
            self.env.challenge, self.env.attempt
        );
        let mut t = self.template.clone();
        let mut meta = t.metadata.take().unwrap_or_default();
        let labels = meta.labels.get_or_insert_with(Default::default);
        // Out of the Deployment's selector, so its ReplicaSet leaves them alone.
        labels.insert(
            "app.kubernetes.io/component".into(),
            "workload-instance".into(),
        );
        labels.insert("dojo.rmq.dev/instance".into(), instance.into());
        meta.name = Some(name);
        meta.namespace = Some(self.env.namespace.clone());
        meta.owner_references = Some(vec![self.owner.clone()]);
        let mut spec = t.spec.take().unwrap_or_default();
        spec.restart_policy = Some("Never".into());
        spec.share_process_namespace = Some(true);
        spec.termination_grace_period_seconds = Some(5);
        let c = &mut spec.containers[0];
        let env = c.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.name != "DOJO_INSTANCE" && e.name != "DOJO_LISTEN_ADDR");
        env.push(EnvVar {
            name: "DOJO_INSTANCE".into(),
            value: Some(instance.into()),
            ..Default::default()
        });
        if self.serves_http {
            env.push(EnvVar {
                name: "DOJO_LISTEN_ADDR".into(),
                value: Some(format!("0.0.0.0:{WORKLOAD_HTTP_PORT}")),
                ..Default::default()
            });
        }
        Pod {
            metadata: meta,
            spec: Some(spec),
            status: None,
        }
    }

    /// Runs `script` with `sh -c` in `container` of `pod`: its stdout, or
    /// what went wrong.
    async fn exec(&self, pod: &str, container: &str, script: &str) -> Result<String, String> {
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let mut p = self
            .pods
            .exec(pod, ["sh", "-c", script], &params)
            .await
            .map_err(|e| exec_failed(pod, container, e))?;
        let (mut out, mut err) = (String::new(), String::new());
        let (mut so, mut se) = (
            p.stdout().ok_or("no stdout")?,
            p.stderr().ok_or("no stderr")?,
        );
        let _ = tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err));
        let status = match p.take_status() {
            Some(s) => s.await,
            None => None,
        };
        let _ = p.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(out),
            Some(s) => Err(format!(
                "`sh -c` in {pod}/{container} failed: {} {}",
                s.message.unwrap_or_default(),
                err.trim()
            )),
            None => Err(format!(
                "`sh -c` in {pod}/{container} ended without a status: {}",
                err.trim()
            )),
        }
    }

    /// Opens a [`Signaller`] in `container` of `pod`.
    async fn signaller(&self, pod: &str, container: &str) -> Result<Signaller, String> {
        let script = format!(
            "while read -r sig; do pids=$({CONTAINER_PIDS}); if [ -n \"$pids\" ]; then kill -$sig $pids; echo \"sent $?\"; else echo 'no process left'; fi; done"
        );
        let params = AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut session = self
            .pods
            .exec(pod, ["sh", "-c", script.as_str()], &params)
            .await
            .map_err(|e| exec_failed(pod, container, e))?;
        let stdin = session.stdin().ok_or("no stdin")?;
        let acks = BufReader::new(session.stdout().ok_or("no stdout")?).lines();
        Ok(Signaller {
            _session: session,
            stdin,
            acks,
        })
    }

    /// Signals instance `instance` through its [`Signaller`], or one exec if it has none (left).
    async fn signal_instance(&mut self, instance: &str, signal: &str) -> Result<(), PlatformError> {
        let i = self.instance(instance)?;
        if let Some(s) = i.signaller.as_mut() {
            match s.send(signal).await {
                Ok(true) => return Ok(()),
                Ok(false) => i.signaller = None,
                Err(e) => return Err(werr(instance, e)),
            }
        }
        let pod = i.pod.clone();
        self.signal(&pod, &self.container, signal)
            .await
            .map_err(|e| werr(instance, e))
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to every process of the container.
    async fn signal(&self, pod: &str, container: &str, signal: &str) -> Result<(), String> {
        let script = format!(
            "pids=$({CONTAINER_PIDS}); [ -n \"$pids\" ] || {{ echo 'no process left' >&2; exit 1; }}; kill -{signal} $pids"
        );
        self.exec(pod, container, &script).await.map(|_| ())
    }

    /// `Threads`, `VmRSS` and `VmHWM` (peak) of the container's main process.
    async fn stats(&self, pod: &str, container: &str) -> Option<(WorkloadStats, u64)> {
        let script = format!(
            "main=$({CONTAINER_PIDS} | head -n 1); while read -r k v _; do case $k in Threads:|VmRSS:|VmHWM:) echo \"$k $v\";; esac; done < /proc/$main/status"
        );
        let out = self.exec(pod, container, &script).await.ok()?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        Some((
            WorkloadStats {
                threads: field("Threads:")?,
                rss_kib: field("VmRSS:")?,
            },
            field("VmHWM:").unwrap_or(0),
        ))
    }

    fn instance(&mut self, name: &str) -> Result<&mut Instance, PlatformError> {
        self.instances
            .get_mut(name)
            .ok_or_else(|| PlatformError::Workload {
                instance: name.into(),
                detail: "was never started".into(),
            })
    }

    /// Waits until instance `instance` has exited, up to `limit`.
    async fn wait_exit(&mut self, instance: &str, limit: Duration) -> Option<(String, bool)> {
        let start = Instant::now();
        loop {
            if self.workload_exit(instance).await.is_some() {
                return self.instances.get(instance)?.exit.clone();
            }
            if start.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn note_broker_peak(&mut self) {
        if let Some((_, hwm)) = self.stats(&self.broker_pod, "broker").await {
            self.broker_peak_rss_kib = Some(self.broker_peak_rss_kib.unwrap_or(0).max(hwm));
        }
    }

    async fn broker_restarts(&self) -> Result<i32, PlatformError> {
        let p =
            self.pods.get(&self.broker_pod).await.map_err(|e| {
                PlatformError::Broker(format!("reading pod {}: {e}", self.broker_pod))
            })?;
        Ok(container_status(&p, "broker").map_or(0, |c| c.restart_count))
    }

    /// Kills whatever instance still runs: the Job's pod stays after the
    /// run (its report is read from it), and so would they.
    pub async fn finish(&mut self) {
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            if self.workload_exit(&name).await.is_none() {
                let _ = self.kill_workload(&name).await;
            }
        }
    }
}

impl Platform for KubePlatform {
    fn namesrv_addr(&self) -> String {
        self.env.namesrv_addr.clone()
    }

    async fn start_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        let life = match self.instances.get(instance) {
            Some(i) if i.exit.is_none() => return Err(werr(instance, "is already running")),
            Some(i) => i.lives + 1,
            None => 1,
        };
        let pod = self.instance_pod(instance, life);
        let name = pod.name_any();
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| werr(instance, format!("creating pod {name}: {e}")))?;
        self.instances.insert(
            instance.into(),
            Instance {
                pod: name.clone(),
                signaller: None,
                lives: life,
                ip: None,
                exit: None,
                peak_rss_kib: 0,
            },
        );
        // Started (or already ended) with an address; else why not.
        let start = Instant::now();
        loop {
            let p = self
                .pods
                .get(&name)
                .await
                .map_err(|e| werr(instance, format!("reading pod {name}: {e}")))?;
            let state = container_status(&p, &self.container)
                .and_then(|c| c.state.clone())
                .unwrap_or_default();
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
            if ip.is_some() && (state.running.is_some() || state.terminated.is_some()) {
                // Without one, signals fall back to an exec each.
                let signaller = if state.running.is_some() {
                    self.signaller(&name, &self.container).await.ok()
                } else {
                    None
                };
                let i = self.instance(instance)?;
                (i.ip, i.signaller) = (ip, signaller);
                return Ok(());
            }
            if let Some(w) = state.waiting.filter(|w| {
                w.reason
                    .as_deref()
                    .is_some_and(|r| r != "ContainerCreating")
            }) && (start.elapsed() > Duration::from_secs(30)
                || matches!(
                    w.reason.as_deref(),
                    Some("ErrImageNeverPull" | "InvalidImageName" | "CreateContainerConfigError")
                ))
            {
                return Err(werr(
                    instance,
                    format!(
                        "pod {name} cannot start: {} {}",
                        w.reason.unwrap_or_default(),
                        w.message.unwrap_or_default()
                    ),
                ));
            }
            if start.elapsed() > CONTAINER_START {
                return Err(werr(
                    instance,
                    format!(
                        "pod {name} did not start within {}s (phase {})",
                        CONTAINER_START.as_secs(),
                        p.status.and_then(|s| s.phase).unwrap_or_default()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn workload_addr(&self, instance: &str) -> Option<String> {
        let ip = self.instances.get(instance)?.ip.as_ref()?;
        self.serves_http
            .then(|| format!("{ip}:{WORKLOAD_HTTP_PORT}"))
    }

    async fn stop_workload(
        &mut self,
        instance: &str,
        grace: Duration,
    ) -> Result<StopOutcome, PlatformError> {
        let start = Instant::now();
        if let Some((status, success)) = self.instance(instance)?.exit.clone() {
            return Ok(StopOutcome {
                exited_in_time: true,
                status,
                success,
                took: Duration::ZERO,
            });
        }
        // A last look at its memory while it runs: the peak RSS figure.
        self.workload_stats(instance).await;
        if let Err(e) = self.signal_instance(instance, "TERM").await {
            // It may have exited meanwhile; else the signal really failed.
            if self.workload_exit(instance).await.is_none() {
                return Err(e);
            }
        }
        if let Some((status, success)) = self.wait_exit(instance, grace).await {
            return Ok(StopOutcome {
                exited_in_time: true,
                status,
                success,
                took: start.elapsed(),
            });
        }
        self.signal_instance(instance, "KILL").await?;
        let (status, _) = self
            .wait_exit(instance, Duration::from_secs(30))
            .await
            .ok_or_else(|| werr(instance, "did not exit after SIGKILL within 30s"))?;
        Ok(StopOutcome {
            exited_in_time: false,
            status,
            success: false,
            took: start.elapsed(),
        })
    }

    async fn kill_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        if self.instance(instance)?.exit.is_some() {
            return Ok(());
        }
        // No look at its memory first: that exec would delay the crash.
        self.signal_instance(instance, "KILL").await?;
        // Dead once the kubelet says so: a start right after must not find it running.
        self.wait_exit(instance, Duration::from_secs(30))
            .await
            .map(|_| ())
            .ok_or_else(|| werr(instance, "did not exit after SIGKILL within 30s"))
    }

    async fn pause_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        self.signal_instance(instance, "STOP").await
    }

    async fn resume_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        self.signal_instance(instance, "CONT").await
    }

    async fn workload_exit(&mut self, instance: &str) -> Option<String> {
        let i = self.instances.get(instance)?;
        if let Some((status, _)) = &i.exit {
            return Some(status.clone());
        }
        let pod = i.pod.clone();
        let exit = match self.pods.get_opt(&pod).await {
            Ok(Some(p)) => terminated(&p, &self.container).or_else(|| {
                // Evicted or failed before its container ran.
                let st = p.status.as_ref()?;
                (st.phase.as_deref() == Some("Failed")
                    && container_status(&p, &self.container).is_none())
                .then(|| {
                    (
                        format!(
                            "pod failed: {} {}",
                            st.reason.clone().unwrap_or_default(),
                            st.message.clone().unwrap_or_default()
                        ),
                        false,
                    )
                })
            }),
            Ok(None) => Some((format!("pod {pod} was deleted"), false)),
            // The API server did not answer: no news, not an exit.
            Err(_) => None,
        };
        let i = self.instances.get_mut(instance)?;
        i.exit = exit;
        i.exit.as_ref().map(|(s, _)| s.clone())
    }

    async fn workload_stats(&mut self, instance: &str) -> Option<WorkloadStats> {
        let i = self.instances.get(instance).filter(|i| i.exit.is_none())?;
        let (stats, hwm) = self.stats(&i.pod.clone(), &self.container).await?;
        let i = self.instances.get_mut(instance)?;
        i.peak_rss_kib = i.peak_rss_kib.max(hwm);
        Some(stats)
    }

    async fn workload_log_tail(&mut self, instance: &str, lines: usize) -> String {
        let Some(pod) = self.instances.get(instance).map(|i| i.pod.clone()) else {
            return String::new();
        };
        let lp = LogParams {
            container: Some(self.container.clone()),
            tail_lines: Some(lines as i64),
            ..Default::default()
        };
        self.pods
            .logs(&pod, &lp)
            .await
            .unwrap_or_else(|e| format!("(the log of pod {pod} could not be read: {e})"))
    }

    async fn peak_rss_kib(&mut self) -> PeakRss {
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in &names {
            self.workload_stats(name).await;
        }
        self.note_broker_peak().await;
        let workload = self
            .instances
            .values()
            .map(|i| i.peak_rss_kib)
            .filter(|k| *k > 0)
            .max();
        PeakRss {
            workload,
            broker: self.broker_peak_rss_kib,
        }
    }

    async fn broker_fault(&mut self, fault: BrokerFault) -> Result<(), PlatformError> {
        let berr = |e: String| PlatformError::Broker(e);
        let pod = self.broker_pod.clone();
        match fault {
            BrokerFault::Stall => self.signal(&pod, "broker", "STOP").await.map_err(berr),
            BrokerFault::Resume => self.signal(&pod, "broker", "CONT").await.map_err(berr),
            BrokerFault::Stop | BrokerFault::Kill => {
                self.note_broker_peak().await;
                self.broker_restarts_at_fault = self.broker_restarts().await?;
                self.signal(
                    &pod,
                    "broker",
                    if fault == BrokerFault::Stop {
                        "TERM"
                    } else {
                        "KILL"
                    },
                )
                .await
                .map_err(berr)
            }
            BrokerFault::Restart => {
                // The kubelet restarts the container on its own; wait until
                // it runs again, then until it serves.
                let start = Instant::now();
                loop {
                    let p = self
                        .pods
                        .get(&pod)
                        .await
                        .map_err(|e| berr(format!("reading pod {pod}: {e}")))?;
                    let c = container_status(&p, "broker");
                    let running = c.and_then(|c| c.state.as_ref()?.running.as_ref()).is_some();
                    if running && c.is_some_and(|c| c.restart_count > self.broker_restarts_at_fault)
                    {
                        break;
                    }
                    if start.elapsed() > CONTAINER_START {
                        return Err(berr(format!(
                            "the broker container of {pod} did not run again within {}s",
                            CONTAINER_START.as_secs()
                        )));
                    }
                    tokio::time::sleep(POLL).await;
                }
                let clients = Clients::new("ready-probe", self.env.namesrv_addr.clone())
                    .map_err(|e| berr(e.to_string()))?;
                let r =
                    dojo_testenv::rocketmq::probe_send_receive(&clients, Duration::from_secs(60))
                        .await;
                clients.shutdown().await;
                r.map_err(|e| berr(format!("the restarted broker does not serve: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_local_processs_do() {
        assert_eq!(exit_text(0, None), "exit status: 0");
        assert_eq!(exit_text(3, None), "exit status: 3");
        assert_eq!(exit_text(137, None), "signal: 9 (SIGKILL)");
        assert_eq!(exit_text(143, Some(0)), "signal: 15 (SIGTERM)");
        assert_eq!(exit_text(1, Some(11)), "signal: 11 (SIGSEGV)");
    }
}
