//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok driving three fake nodes,
//! one per zone. Real RBAC, real scheduling, real garbage collection and Job
//! tracking; pods "run" through kwok's default stages (Running, and Job pods
//! complete).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cache;
use crate::certs::{self, Pki};
use crate::error::{Error, Result};
use crate::node::{self, Node as RealNode, NodeParams};
use crate::ports;
use crate::process::{self, Component, Process, Spec};

/// How long each step of the start (etcd, apiserver, the rest) may take.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Probes of a starting component give up after this and retry.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

/// The zones of the fake nodes; node `kwok-<zone>` carries
/// `topology.kubernetes.io/zone=<zone>`.
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// The annotation kwok selects its nodes by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// With a real node beside them, the kwok nodes carry this taint
/// (`NoSchedule`): only pods that tolerate it are "run" by kwok.
pub const KWOK_TAINT: &str = "dojo.test/kwok";
/// Label on every fake node (`type=kwok`).
pub const NODE_TYPE_LABEL: &str = "type";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Service ClusterIPs are allocated here; nothing routes to them.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Issuer of service-account tokens.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Name of the fake node in `zone`.
pub fn node_name(zone: &str) -> String {
    format!("kwok-{zone}")
}

/// Options for [`ControlPlane::start`].
#[derive(Clone, Debug)]
pub struct ControlPlaneBuilder {
    cache_root: Option<PathBuf>,
    dir: Option<PathBuf>,
    sa_credentials: bool,
    real_node: bool,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        ControlPlaneBuilder {
            cache_root: None,
            dir: None,
            sa_credentials: true,
            real_node: false,
        }
    }
}

impl ControlPlaneBuilder {
    /// Look for the binaries under this cache root instead of
    /// [`cache::root`] (`$DOJO_CACHE` or `~/.cache/rocketmq-dojo`).
    pub fn cache_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.cache_root = Some(root.into());
        self
    }

    /// Keep data, certificates and logs in `dir` (kept after drop) instead of a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Whether each controller of kube-controller-manager acts as its own
    /// ServiceAccount with its own RBAC role, as in a real cluster (the
    /// default). `false` runs them all as admin and starts about 5 s faster
    /// (each controller otherwise waits for its account and token).
    pub fn service_account_credentials(mut self, on: bool) -> Self {
        self.sa_credentials = on;
        self
    }

    /// Also start a real node ([`crate::node`]): containerd, kubelet,
    /// kube-proxy and CoreDNS on this machine, so pods really run. The kwok
    /// nodes stay, tainted [`KWOK_TAINT`]. Needs root.
    pub fn real_node(mut self) -> Self {
        self.real_node = true;
        self
    }

    pub async fn start(self) -> Result<ControlPlane> {
        // Boxed: the start future nests kube-client and tower futures deep
        // enough to hit rustc's recursion limit in callers' async fns.
        Box::pin(ControlPlane::start_with(self)).await
    }
}

/// Paths of the six binaries, all checked to exist.
#[derive(Clone, Debug)]
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
    scheduler: PathBuf,
    kubectl: PathBuf,
    kwok: PathBuf,
}

impl Binaries {
    fn locate(root: &Path) -> Result<Binaries> {
        let kube = |name| cache::kube_bin_in(root, name);
        let bins = Binaries {
            etcd: cache::etcd_bin_in(root)?,
            apiserver: kube("kube-apiserver")?,
            controller_manager: kube("kube-controller-manager")?,
            scheduler: kube("kube-scheduler")?,
            kubectl: kube("kubectl")?,
            kwok: cache::kwok_bin_in(root)?,
        };
        // A stamp without its binary: an interrupted or edited install.
        for (path, tool, step) in [
            (&bins.etcd, "etcd", "etcd"),
            (&bins.apiserver, "Kubernetes", "kube"),
            (&bins.controller_manager, "Kubernetes", "kube"),
            (&bins.scheduler, "Kubernetes", "kube"),
            (&bins.kubectl, "Kubernetes", "kube"),
            (&bins.kwok, "kwok", "kwok"),
        ] {
            if !path.is_file() {
                return Err(Error::NotInstalled {
                    tool,
                    path: path.clone(),
                    step,
                });
            }
        }
        Ok(bins)
    }
}

/// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
/// 127.0.0.1, free ports, one temp dir; torn down on drop.
pub struct ControlPlane {
    // Declaration order is drop order: the real node first (its teardown
    // needs only its own runtime), the consumers of the apiserver next, etcd
    // last, then the folder.
    node: Option<RealNode>,
    kwok: Process,
    scheduler: Process,
    controller_manager: Process,
    apiserver: Process,
    etcd: Process,
    server_url: String,
    kubeconfig: PathBuf,
    config: kube::Config,
    pki: Pki,
    kubectl: PathBuf,
    root: PathBuf,
    startup: Duration,
    phases: Vec<(&'static str, Duration)>,
    _tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts the whole plane on free ports in a temp dir; returns when the
    /// apiserver is ready, the `default` ServiceAccount exists and the three
    /// kwok nodes are Ready without taints.
    pub async fn start() -> Result<ControlPlane> {
        ControlPlaneBuilder::default().start().await
    }

    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// The plane with a real node beside the kwok nodes (see
    /// [`ControlPlaneBuilder::real_node`]).
    pub async fn with_real_node() -> Result<ControlPlane> {
        ControlPlaneBuilder::default().real_node().start().await
    }

    async fn start_with(b: ControlPlaneBuilder) -> Result<ControlPlane> {
        let t0 = Instant::now();
        let mut phases = Vec::new();
        let cache_root = b.cache_root.unwrap_or_else(cache::root);
        let bins = Binaries::locate(&cache_root)?;
        if b.real_node
            && let Some(reason) = node::unsupported_reason()
        {
            return Err(Error::NodeUnsupported { reason });
        }
        let (tmp, root) = match b.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                (None, dir)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("dojo-kube-")
                    .tempdir()
                    .map_err(Error::io(std::env::temp_dir()))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let [etcd_port, peer_port, api_port, kcm_port, sched_port] = distinct_free_ports()?;

        // etcd first; the certificates are generated while it boots.
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = spawn(
            "etcd",
            &bins.etcd,
            &root,
            vec![
                "--name=dojo".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=dojo={peer_url}"),
                // Test data: losing it on a power cut is fine, fsync latency is not.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let pki = certs::generate(&root.join("pki"))?;
        let server_url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = root.join("admin.kubeconfig");
        write_file(
            &kubeconfig,
            &kubeconfig_yaml(&server_url, &pki.ca_cert, &admin_user(&pki)),
        )?;
        process::wait_ready(&mut etcd, START_TIMEOUT, POLL, || async move {
            let reply = http_get(etcd_port, "/health").await?;
            if reply.contains("\"health\":\"true\"") {
                Ok(Some(()))
            } else {
                Err(format!("/health answered {reply:?}"))
            }
        })
        .await?;
        phases.push(("etcd healthy", t0.elapsed()));

        let kc = |p: &Path| format!("--kubeconfig={}", p.display());
        let mut apiserver = spawn(
            "kube-apiserver",
            &bins.apiserver,
            &root,
            vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", root.join("apiserver").display()),
                format!("--tls-cert-file={}", pki.apiserver_cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                "--authorization-mode=Node,RBAC".into(),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", pki.sa_pub.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                // Logs and exec reach a real node's kubelet, which trusts
                // client certificates of this CA.
                format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
                format!("--kubelet-client-key={}", pki.admin_key.display()),
                // By address: a node's name is no host name the machine's
                // resolver should be asked about.
                "--kubelet-preferred-address-types=InternalIP".into(),
                // Nothing listens behind the `kubernetes` Service, and a
                // loopback endpoint would be rejected by validation anyway.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
        )?;
        let config = load_config(&kubeconfig).await?;
        let client = kube::Client::try_from(config.clone())
            .map_err(|e| Error::failed("building the admin client", e))?;
        {
            let client = client.clone();
            process::wait_ready(&mut apiserver, START_TIMEOUT, POLL, move || {
                let client = client.clone();
                async move {
                    let req = http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| e.to_string())?;
                    match tokio::time::timeout(PROBE_TIMEOUT, client.request_text(req)).await {
                        Ok(Ok(body)) if body.trim() == "ok" => Ok(Some(())),
                        Ok(Ok(body)) => Err(format!("/readyz answered {body:?}")),
                        Ok(Err(e)) => Err(format!("/readyz: {e}")),
                        Err(_) => Err("/readyz did not answer within 5s".into()),
                    }
                }
            })
            .await?;
        }
        phases.push(("kube-apiserver ready", t0.elapsed()));

        // The consumers of the apiserver start together.
        // No --authentication/authorization-kubeconfig: delegated auth of
        // their own HTTPS endpoints is not needed (health paths are always
        // allowed) and, without a request-header CA on the apiserver, it
        // floods their logs with errors.
        let common = |p: &Path| {
            vec![
                kc(p),
                "--leader-elect=false".to_string(),
                "--bind-address=127.0.0.1".into(),
            ]
        };
        let mut kcm_args = common(&kubeconfig);
        kcm_args.extend([
            format!("--secure-port={kcm_port}"),
            format!("--cert-dir={}", root.join("controller-manager").display()),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca_key.display()),
            format!("--use-service-account-credentials={}", b.sa_credentials),
            "--controllers=*".into(),
            "--cluster-name=dojo".into(),
            // kwok's node heartbeats arrive late when the 2 cores are busy;
            // the default 50 s grace then marks fake nodes NotReady and evicts
            // their pods, which no real fault caused.
            "--node-monitor-grace-period=5m".into(),
        ]);
        let mut controller_manager = spawn(
            "kube-controller-manager",
            &bins.controller_manager,
            &root,
            kcm_args,
        )?;
        let mut sched_args = common(&kubeconfig);
        sched_args.extend([
            format!("--secure-port={sched_port}"),
            format!("--cert-dir={}", root.join("scheduler").display()),
        ]);
        let mut scheduler = spawn("kube-scheduler", &bins.scheduler, &root, sched_args)?;
        let kwok_home = root.join("kwok-home");
        std::fs::create_dir_all(&kwok_home).map_err(Error::io(&kwok_home))?;
        let kwok_spec = Spec::new(&bins.kwok)
            .args([
                kc(&kubeconfig),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                // Room for far more pod IPs than the default /24.
                "--cidr=10.244.0.1/16".into(),
            ])
            // kwok also loads ~/.kwok/kwok.yaml; a private HOME keeps a
            // developer's own kwok config out of the tests. With no stage
            // config it plays its default stages (node ready + heartbeat,
            // pod ready, Job pods complete, pod delete).
            .env("HOME", &kwok_home)
            .cwd(&root)
            .die_with_parent();
        let mut kwok = Process::spawn("kwok", kwok_spec, root.join("kwok.log"))?;
        create_nodes(&client, b.real_node).await?;

        let default_sa = {
            let client = client.clone();
            process::wait_ready(&mut controller_manager, START_TIMEOUT, POLL, move || {
                let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
                async move {
                    match tokio::time::timeout(PROBE_TIMEOUT, sas.get_opt("default")).await {
                        Ok(Ok(Some(_))) => Ok(Some(())),
                        Ok(Ok(None)) => Err("no ServiceAccount default/default yet".into()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the apiserver did not answer within 5s".into()),
                    }
                }
            })
        };
        let nodes_ready = {
            let client = client.clone();
            process::wait_ready(&mut kwok, START_TIMEOUT, POLL, move || {
                let nodes: Api<Node> = Api::all(client.clone());
                async move {
                    match tokio::time::timeout(
                        PROBE_TIMEOUT,
                        nodes.list(&ListParams::default().labels("type=kwok")),
                    )
                    .await
                    {
                        Ok(Ok(list)) => nodes_state(&list.items),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the apiserver did not answer within 5s".into()),
                    }
                }
            })
        };
        let default_sa = async {
            default_sa.await?;
            Ok::<_, Error>(t0.elapsed())
        };
        let nodes_ready = async {
            nodes_ready.await?;
            Ok::<_, Error>(t0.elapsed())
        };
        let (sa, nodes) = tokio::join!(default_sa, nodes_ready);
        phases.push(("default ServiceAccount", sa?));
        phases.push(("nodes Ready", nodes?));
        if let Some(e) = scheduler.exited_error() {
            return Err(e);
        }
        let node = if b.real_node {
            let node = RealNode::start(NodeParams {
                server_url: &server_url,
                api_port,
                pki: &pki,
                admin_kubeconfig: &kubeconfig,
                dir: root.join("node"),
                cache_root: &cache_root,
                client: client.clone(),
            })
            .await?;
            phases.extend(
                node.startup_phases()
                    .iter()
                    .map(|(what, at)| (*what, t0.elapsed() - node.startup_time() + *at)),
            );
            Some(node)
        } else {
            None
        };

        Ok(ControlPlane {
            node,
            kwok,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            server_url,
            kubeconfig,
            config,
            pki,
            kubectl: bins.kubectl,
            root,
            startup: t0.elapsed(),
            phases,
            _tmp: tmp,
        })
    }

    /// The real node, when the plane was started with one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// An admin client (cluster-admin through `system:masters`). Built anew
    /// on each call, so it belongs to the caller's tokio runtime: a client
    /// whose connections were opened on another (since dropped) runtime
    /// fails. Call it inside a runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone())
            .expect("the admin client config was already used to start the plane")
    }

    /// The admin client's configuration (to adjust timeouts and the like).
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// The admin kubeconfig (for kubectl, helm, the operator binary).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA that signed the apiserver's certificate and the client certificates.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The certificates and keys of the plane.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// `kubectl` of the same version.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// The folder holding data, certificates and the logs of every component.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Time from `start` being called to ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// When each readiness milestone was reached, from the start: where
    /// the startup time goes.
    pub fn startup_phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// A client authenticated as ServiceAccount `ns/name` by a real token
    /// (TokenRequest API, valid 24 h): what RBAC tests need.
    pub async fn client_for_service_account(&self, ns: &str, name: &str) -> Result<kube::Client> {
        let token = self.service_account_token(ns, name).await?;
        let user = format!("token: {}", quote(&token));
        let kc =
            Kubeconfig::from_yaml(&kubeconfig_yaml(&self.server_url, &self.pki.ca_cert, &user))
                .map_err(|e| Error::failed("building a service-account kubeconfig", e))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::failed("building a service-account kubeconfig", e))?;
        kube::Client::try_from(config)
            .map_err(|e| Error::failed("building a service-account client", e))
    }

    /// A token for ServiceAccount `ns/name`, from the TokenRequest API.
    pub async fn service_account_token(&self, ns: &str, name: &str) -> Result<String> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client(), ns);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let resp = sas
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                Error::failed(
                    format!("requesting a token for ServiceAccount {ns}/{name}"),
                    format!("{e} (does the ServiceAccount exist?)"),
                )
            })?;
        Ok(resp.status.map(|s| s.token).unwrap_or_default())
    }

    /// Creates a namespace named `<prefix>-<random>` and waits for its
    /// `default` ServiceAccount (pods are refused without it). `prefix` must
    /// be a DNS label of at most 57 characters.
    pub async fn new_namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client();
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some(BTreeMap::from([(
                    "dojo.test/prefix".to_string(),
                    prefix.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::failed(format!("creating a namespace {prefix}-*"), e))?;
        let name = created.metadata.name.unwrap_or_default();
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        let start = Instant::now();
        loop {
            match sas.get_opt("default").await {
                Ok(Some(_)) => return Ok(name),
                Ok(None) if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(None) => {
                    return Err(Error::NotReady {
                        what: format!("namespace {name}"),
                        secs: start.elapsed().as_secs(),
                        detail: "its default ServiceAccount was not created (is the serviceaccount controller running?)".into(),
                        log: self.controller_manager.log_path().to_path_buf(),
                        tail: self.controller_manager.log_tail(20),
                    });
                }
                Err(e) => {
                    return Err(Error::failed(
                        format!("reading ServiceAccount {name}/default"),
                        e,
                    ));
                }
            }
        }
    }

    /// Every process of the plane with its pid and memory.
    pub fn components(&self) -> Vec<Component> {
        self.processes().iter().map(|p| p.component()).collect()
    }

    fn processes(&self) -> [&Process; 5] {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
            &self.kwok,
        ]
    }

    /// The last `lines` lines of every component's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = self
            .node
            .as_ref()
            .map(|n| n.log_tails(lines))
            .unwrap_or_default();
        for p in self.processes() {
            out.push_str(&format!(
                "----- {} ({}), last lines -----\n{}\n",
                p.name(),
                p.log_path().display(),
                p.log_tail(lines)
            ));
        }
        out
    }

    /// A guard that prints [`Self::log_tails`] to stderr if the test panics
    /// while it is alive; for the shared plane, which is never dropped.
    pub fn logs_on_panic(&self) -> LogsOnPanic<'_> {
        LogsOnPanic(self)
    }

    /// The plane shared by every test of this test binary, started on first
    /// use. It runs until the binary exits: its processes die with it
    /// (`PR_SET_PDEATHSIG`) and an exit hook removes its folder.
    pub async fn shared() -> Result<&'static ControlPlane> {
        Self::shared_in(&SHARED, ControlPlaneBuilder::default()).await
    }

    /// Like [`Self::shared`], with a real node: one per test binary, torn
    /// down completely when the binary exits.
    pub async fn shared_with_real_node() -> Result<&'static ControlPlane> {
        if let Some(reason) = node::unsupported_reason() {
            return Err(Error::NodeUnsupported { reason });
        }
        Self::shared_in(&SHARED_REAL, ControlPlaneBuilder::default().real_node()).await
    }

    async fn shared_in(
        cell: &'static SharedCell,
        builder: ControlPlaneBuilder,
    ) -> Result<&'static ControlPlane> {
        // Report a missing install as such, not as a failed start.
        Binaries::locate(&cache::root())?;
        let started = cell
            .get_or_init(|| async {
                let (tx, rx) = tokio::sync::oneshot::channel();
                // A thread of its own: the children die with the thread that
                // spawned them, and test threads and their runtimes end with
                // each test.
                let spawned = std::thread::Builder::new()
                    .name("dojo-control-plane".into())
                    .spawn(move || {
                        let started = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(builder.start()).map_err(|e| e.to_string()),
                            Err(e) => Err(format!("building its runtime: {e}")),
                        };
                        let ok = started.is_ok();
                        let _ = tx.send(started);
                        if ok {
                            loop {
                                std::thread::park();
                            }
                        }
                    });
                if let Err(e) = spawned {
                    return Err(format!("spawning its thread: {e}"));
                }
                let started = rx
                    .await
                    .unwrap_or_else(|_| Err("its thread ended without an answer".into()));
                if started.is_ok() {
                    // SAFETY: registers a plain extern "C" fn without captures.
                    unsafe { libc::atexit(stop_shared_at_exit) };
                }
                started
            })
            .await;
        started
            .as_ref()
            .map_err(|detail| Error::failed("starting the shared control plane", detail))
    }

    /// SIGKILL to every component, reap them, remove the temp dir: the
    /// shared plane's `Drop`, which a `static` never gets.
    fn kill_at_exit(&self) {
        if let Some(node) = &self.node {
            node.teardown();
        }
        for p in self.processes() {
            if let Some(pid) = p.pid() {
                let pid = pid as libc::pid_t;
                // SAFETY: kill(2)/waitpid(2) on children this struct spawned.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
        if let Some(tmp) = &self._tmp {
            let _ = std::fs::remove_dir_all(tmp.path());
        }
    }
}

type SharedCell = tokio::sync::OnceCell<std::result::Result<ControlPlane, String>>;
static SHARED: SharedCell = SharedCell::const_new();
static SHARED_REAL: SharedCell = SharedCell::const_new();

extern "C" fn stop_shared_at_exit() {
    for cell in [&SHARED, &SHARED_REAL] {
        if let Some(Ok(cp)) = cell.get() {
            cp.kill_at_exit();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(20));
        }
    }
}

/// See [`ControlPlane::logs_on_panic`].
#[must_use = "the logs are printed when the guard is dropped during a panic"]
pub struct LogsOnPanic<'a>(&'a ControlPlane);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.log_tails(20));
        }
    }
}

fn spawn(name: &str, program: &Path, root: &Path, args: Vec<String>) -> Result<Process> {
    let spec = Spec::new(program).args(args).cwd(root).die_with_parent();
    Process::spawn(name, spec, root.join(format!("{name}.log")))
}

fn distinct_free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut out = [0u16; N];
    let mut n = 0;
    for _ in 0..N * 20 {
        let p = ports::free_port()?;
        if !out[..n].contains(&p) {
            out[n] = p;
            n += 1;
            if n == N {
                return Ok(out);
            }
        }
    }
    Err(Error::failed(
        "picking free ports",
        format!("found no {N} distinct free ports on 127.0.0.1"),
    ))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))
}

/// A YAML (JSON) string literal: paths and tokens are written verbatim.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn admin_user(pki: &Pki) -> String {
    cert_user(&pki.admin_cert, &pki.admin_key)
}

/// The `user:` body of a kubeconfig for a client certificate.
pub(crate) fn cert_user(cert: &Path, key: &Path) -> String {
    format!(
        "client-certificate: {}\n    client-key: {}",
        quote(&cert.display().to_string()),
        quote(&key.display().to_string())
    )
}

/// A kubeconfig with one cluster, one user (`user` is the body of its
/// `user:` map, indented by four spaces after the first line) and one context.
pub(crate) fn kubeconfig_yaml(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: dojo
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: dojo-user
  user:
    {user}
contexts:
- name: dojo
  context:
    cluster: dojo
    user: dojo-user
    namespace: default
current-context: dojo
",
        server = quote(server),
        ca = quote(&ca.display().to_string()),
    )
}

async fn load_config(kubeconfig: &Path) -> Result<kube::Config> {
    let what = || format!("loading {}", kubeconfig.display());
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::failed(what(), e))?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::failed(what(), e))
}

/// The three fake nodes: generous capacity, one per zone; tainted
/// [`KWOK_TAINT`] when a real node runs beside them.
async fn create_nodes(client: &kube::Client, tainted: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for zone in ZONES {
        let name = node_name(zone);
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    KWOK_NODE_ANNOTATION: "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    NODE_TYPE_LABEL: "kwok",
                    ZONE_LABEL: zone,
                    "topology.kubernetes.io/region": "dojo",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {
                "taints": if tainted { serde_json::json!([{"key": KWOK_TAINT, "value": "true", "effect": "NoSchedule"}]) } else { serde_json::json!([]) },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "1Ti"},
                "capacity": {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "1Ti"},
            },
        }))
        .map_err(|e| Error::failed("building a Node", e))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(|e| Error::failed(format!("creating Node {name}"), e))?;
    }
    Ok(())
}

/// `Ok(Some(()))` once the three nodes are Ready and untainted (the node
/// lifecycle controller taints a node until it turns Ready).
fn nodes_state(nodes: &[Node]) -> std::result::Result<Option<()>, String> {
    let mut waiting = Vec::new();
    for zone in ZONES {
        let name = node_name(zone);
        let Some(node) = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
        else {
            waiting.push(format!("{name} missing"));
            continue;
        };
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let taints: Vec<String> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.key != KWOK_TAINT)
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        if !ready {
            waiting.push(format!("{name} not Ready"));
        } else if !taints.is_empty() {
            waiting.push(format!("{name} tainted {}", taints.join(",")));
        }
    }
    if waiting.is_empty() {
        Ok(Some(()))
    } else {
        Err(waiting.join("; "))
    }
}

/// A bare HTTP/1.0 GET on 127.0.0.1 (etcd's plain-HTTP health endpoint).
pub(crate) async fn http_get(port: u16, path: &str) -> std::result::Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
}
