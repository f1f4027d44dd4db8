//! A real Kubernetes node on this machine, registered to a
//! [`ControlPlane`](crate::ControlPlane) beside its kwok nodes: Debian's
//! containerd 1.6 with runc and the bridge CNI plugin, the kubelet and
//! kube-proxy (iptables mode) of the control plane's release, and CoreDNS
//! answering pod DNS from the API. Pods really run.
//!
//! The pod network exists only on a bridge this node creates: pods reach
//! each other, Service ClusterIPs and the host's bridge address, and have no
//! route beyond this machine (no default route, no masquerade). Needs root;
//! one node per machine at a time, since kube-proxy's iptables chains are
//! global. Teardown removes every process, mount, the bridge, iptables
//! chains, cgroups and what containerd, CNI and the kubelet keep outside the
//! node's folder, and restores the sysctls they change;
//! [`Footprint::leftovers`] checks it.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;

use crate::cache;
use crate::certs::Pki;
use crate::error::{Error, Result};
use crate::images;
use crate::ports;
use crate::process::{self, Component, Process, Spec};

/// The node's name; its kubelet's client certificate says `system:node:dojo-node`.
pub const NODE_NAME: &str = "dojo-node";
/// Label `type=real` on the node (the kwok nodes carry `type=kwok`).
pub const NODE_TYPE: &str = "real";
/// The zone the node is labelled with.
pub const NODE_ZONE: &str = "zone-a";
/// Pod addresses; the first one is the bridge's, which is also the node's
/// address and where CoreDNS answers.
pub const POD_CIDR: &str = "10.89.0.0/24";
pub const NODE_IP: &str = "10.89.0.1";
const BRIDGE: &str = "dojo-cni0";
/// The kubelet's cgroup root, in every cgroup hierarchy.
const CGROUP_ROOT: &str = "dojo-node";
/// Held while a node runs: an abstract socket, released by the kernel when
/// the process ends, leaving no file behind.
const LOCK_NAME: &[u8] = b"rocketmq-dojo-real-node";
const LOCK_WAIT: Duration = Duration::from_secs(600);
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Host settings the kubelet or CNI change; restored on teardown.
const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Folders the kubelet, containerd and CNI write in whatever the config says.
const HOST_DIRS: &[&str] = &[
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/containers",
    "/var/log/pods",
    "/run/netns",
];

/// What the plane hands its node.
pub(crate) struct NodeParams<'a> {
    pub server_url: &'a str,
    /// The apiserver's port on 127.0.0.1, relayed to pods (see [`ApiRelay`]).
    pub api_port: u16,
    pub pki: &'a Pki,
    pub admin_kubeconfig: &'a Path,
    pub dir: PathBuf,
    pub cache_root: &'a Path,
    pub client: kube::Client,
}

#[derive(Clone, Debug)]
struct Binaries {
    kubelet: PathBuf,
    kube_proxy: PathBuf,
    crictl: PathBuf,
    coredns: PathBuf,
}

impl Binaries {
    fn locate(root: &Path) -> Result<Binaries> {
        let bins = Binaries {
            kubelet: cache::node_bin_in(root, "kubelet")?,
            kube_proxy: cache::node_bin_in(root, "kube-proxy")?,
            crictl: cache::crictl_bin_in(root)?,
            coredns: cache::coredns_bin_in(root)?,
        };
        for path in [&bins.kubelet, &bins.kube_proxy, &bins.crictl, &bins.coredns] {
            if !path.is_file() {
                return Err(Error::NotInstalled {
                    tool: "the real node",
                    path: path.clone(),
                    step: "node",
                });
            }
        }
        for (program, hint) in [
            (
                "containerd",
                "as root: apt-get install containerd runc containernetworking-plugins (or testenv/bootstrap/deps.sh node)",
            ),
            ("ctr", "comes with Debian's containerd package"),
            ("runc", "as root: apt-get install runc"),
            ("iptables", "as root: apt-get install iptables"),
            ("ip", "as root: apt-get install iproute2"),
        ] {
            cache::require_program(program, hint)?;
        }
        if !Path::new("/usr/lib/cni/bridge").is_file() {
            return Err(Error::MissingProgram {
                program: "/usr/lib/cni/bridge",
                hint: "as root: apt-get install containernetworking-plugins",
            });
        }
        Ok(bins)
    }
}

/// Why a real node cannot run here, or `None` when it can: not root, no
/// cgroup hierarchy.
pub fn unsupported_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it must run as root (containerd, runc, CNI and kube-proxy change the host's network and cgroups)".into());
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
    {
        return Some(
            "no cgroup hierarchy under /sys/fs/cgroup (mount cgroup v1 controllers or cgroup v2)"
                .into(),
        );
    }
    None
}

/// Where the node leaves traces on the host, and what was there before it
/// started: what [`Footprint::leftovers`] compares against.
#[derive(Clone, Debug)]
pub struct Footprint {
    dir: PathBuf,
    host_entries: Vec<(PathBuf, Option<BTreeSet<String>>)>,
    chains: BTreeSet<String>,
    tables: BTreeSet<String>,
    sysctls: Vec<(&'static str, String)>,
}

impl Footprint {
    fn capture(dir: &Path) -> Footprint {
        Footprint {
            dir: dir.to_path_buf(),
            host_entries: HOST_DIRS
                .iter()
                .map(|d| (PathBuf::from(d), dir_entries(Path::new(d))))
                .collect(),
            chains: iptables_chains(),
            tables: nft_tables(),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|k| Some((*k, read_sysctl(k)?)))
                .collect(),
        }
    }

    /// Everything the node left on the machine: processes, mounts, the
    /// bridge, iptables chains, cgroups, files outside its folder and
    /// changed sysctls. Empty after a complete teardown.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pid in node_pids(&self.dir) {
            out.push(format!(
                "process {pid}: {}",
                cmdline(pid).unwrap_or_default()
            ));
        }
        for m in mounts_under(&self.dir) {
            out.push(format!("mount {}", m.display()));
        }
        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            out.push(format!("bridge {BRIDGE}"));
        }
        for chain in iptables_chains().difference(&self.chains) {
            out.push(format!("iptables chain {chain}"));
        }
        for table in nft_tables().difference(&self.tables) {
            out.push(format!("nft table {table}"));
        }
        for dir in cgroup_dirs() {
            out.push(format!("cgroup {}", dir.display()));
        }
        for (dir, before) in &self.host_entries {
            match (before, dir_entries(dir)) {
                (None, Some(_)) => out.push(format!("folder {}", dir.display())),
                (Some(before), Some(now)) => {
                    out.extend(
                        now.difference(before)
                            .map(|e| format!("file {}", dir.join(e).display())),
                    );
                }
                _ => {}
            }
        }
        for (key, value) in &self.sysctls {
            let now = read_sysctl(key).unwrap_or_default();
            if &now != value {
                out.push(format!("sysctl {key} = {now} (was {value})"));
            }
        }
        if self.dir.exists() {
            out.push(format!("folder {}", self.dir.display()));
        }
        out
    }
}

/// The running parts, stopped in this order.
struct Running {
    kubelet: Process,
    kube_proxy: Process,
    coredns: Process,
    containerd: Process,
    _api_relay: ApiRelay,
    proxy_healthz: u16,
}

/// A real node: see the module documentation. Torn down on drop (the plane
/// drops it before itself).
pub struct Node {
    running: Mutex<Option<Running>>,
    /// Released only once teardown is complete: the next node's baseline
    /// must not see this one's traces, nor its cleanup remove the next one's.
    lock: Mutex<Option<UnixListener>>,
    footprint: Footprint,
    bins: Binaries,
    socket: PathBuf,
    startup: Duration,
    phases: Vec<(&'static str, Duration)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.footprint.dir)
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) async fn start(p: NodeParams<'_>) -> Result<Node> {
        let t0 = Instant::now();
        let mut phases = Vec::new();
        if let Some(reason) = unsupported_reason() {
            return Err(Error::NodeUnsupported { reason });
        }
        let bins = Binaries::locate(p.cache_root)?;
        // The sandbox image: built once (a static binary on scratch), cached.
        let pause = tokio::task::spawn_blocking(|| images::build(&["pause"]))
            .await
            .map_err(|e| Error::failed("building the pause image", e))??;
        let lock = wait_for_lock().await?;
        let dir = p.dir.clone();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let footprint = Footprint::capture(&dir);
        let socket = dir.join("containerd.sock");
        let mut node = Node {
            running: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            footprint,
            bins,
            socket,
            startup: Duration::ZERO,
            phases: Vec::new(),
        };
        // From here on, a failure tears down what was started (Drop).
        let running = node
            .start_parts(&p, &pause[0].reference, &mut phases, t0)
            .await;
        match running {
            Ok(r) => {
                *node.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
            Err(e) => {
                node.teardown();
                return Err(e);
            }
        }
        node.wait_ready(&p.client, &mut phases, t0).await?;
        publish_api_endpoint(&p.client).await?;
        node.startup = t0.elapsed();
        node.phases = phases;
        Ok(node)
    }

    async fn start_parts(
        &self,
        p: &NodeParams<'_>,
        pause: &str,
        phases: &mut Vec<(&'static str, Duration)>,
        t0: Instant,
    ) -> Result<Running> {
        let dir = &self.footprint.dir;
        let [kubelet_port, kubelet_healthz, proxy_healthz, proxy_metrics] = distinct_free_ports()?;
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        let api_relay = ApiRelay::start(p.api_port)?;

        write(&dir.join("containerd.toml"), &containerd_config(dir, pause))?;
        std::fs::create_dir_all(dir.join("cni")).map_err(Error::io(dir.join("cni")))?;
        write(&dir.join("cni").join("10-dojo.conflist"), &cni_config(dir))?;
        let spec = Spec::new("containerd")
            .arg("--config")
            .arg(dir.join("containerd.toml"))
            .cwd(dir)
            .die_with_parent();
        let mut containerd = Process::spawn("containerd", spec, dir.join("containerd.log"))?;
        let crictl = self.bins.crictl.clone();
        let endpoint = format!("unix://{}", self.socket.display());
        process::wait_ready(
            &mut containerd,
            START_TIMEOUT,
            Duration::from_millis(200),
            || {
                let (crictl, endpoint) = (crictl.clone(), endpoint.clone());
                async move {
                    let info = capture(
                        &crictl,
                        &["--runtime-endpoint", &endpoint, "--timeout", "5s", "info"],
                    )?;
                    if info.contains("\"NetworkReady\"") && !info.contains("\"status\": false") {
                        Ok(Some(()))
                    } else {
                        Err(format!(
                            "CRI not ready: {}",
                            info.chars().take(400).collect::<String>()
                        ))
                    }
                }
            },
        )
        .await?;
        self.import_archive(&images_dir().join(format!("pause-{}.tar", tag_of(pause))))?;
        phases.push(("containerd (CRI) ready", t0.elapsed()));

        // Pod DNS: Service and pod names from the API, nothing forwarded.
        let corefile = dir.join("Corefile");
        write(&corefile, &corefile_text(p.admin_kubeconfig))?;
        let spec = Spec::new(&self.bins.coredns)
            .arg("-conf")
            .arg(&corefile)
            .cwd(dir)
            .die_with_parent();
        let coredns = Process::spawn("coredns", spec, dir.join("coredns.log"))?;

        let pki = p.pki;
        let kubeconfig = |name: &str, cert: &Path, key: &Path| -> Result<PathBuf> {
            let path = dir.join(format!("{name}.kubeconfig"));
            write(
                &path,
                &crate::control_plane::kubeconfig_yaml(
                    p.server_url,
                    &pki.ca_cert,
                    &crate::control_plane::cert_user(cert, key),
                ),
            )?;
            Ok(path)
        };
        let proxy_kc = kubeconfig("kube-proxy", &pki.kube_proxy_cert, &pki.kube_proxy_key)?;
        write(
            &dir.join("kube-proxy.yaml"),
            &kube_proxy_config(&proxy_kc, proxy_healthz, proxy_metrics),
        )?;
        let spec = Spec::new(&self.bins.kube_proxy)
            .arg(format!(
                "--config={}",
                dir.join("kube-proxy.yaml").display()
            ))
            .cwd(dir)
            .die_with_parent();
        let kube_proxy = Process::spawn("kube-proxy", spec, dir.join("kube-proxy.log"))?;

        create_cgroup_root()?;
        let kubelet_kc = kubeconfig("kubelet", &pki.kubelet_cert, &pki.kubelet_key)?;
        write(
            &dir.join("kubelet.yaml"),
            &kubelet_config(
                dir,
                &pki.ca_cert,
                &self.socket,
                kubelet_port,
                kubelet_healthz,
            ),
        )?;
        let spec = Spec::new(&self.bins.kubelet)
            .args([
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet-pki").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                format!(
                    "--node-labels=type={NODE_TYPE},{}={NODE_ZONE}",
                    crate::control_plane::ZONE_LABEL
                ),
            ])
            .cwd(dir)
            .die_with_parent();
        let kubelet = Process::spawn("kubelet", spec, dir.join("kubelet.log"))?;
        Ok(Running {
            kubelet,
            kube_proxy,
            coredns,
            containerd,
            _api_relay: api_relay,
            proxy_healthz,
        })
    }

    /// Until the Node is Ready and the kubelet has dropped its not-ready taint.
    async fn wait_ready(
        &self,
        client: &kube::Client,
        phases: &mut Vec<(&'static str, Duration)>,
        t0: Instant,
    ) -> Result<()> {
        let nodes: Api<NodeObject> = Api::all(client.clone());
        let start = Instant::now();
        let mut last = String::from("not registered yet");
        loop {
            if let Some(e) = self.with_running(|r| r.kubelet.exited_error()).flatten() {
                return Err(e);
            }
            match nodes.get_opt(NODE_NAME).await {
                Ok(Some(n)) => {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
                    let taints: Vec<String> = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| t.key)
                        .collect();
                    match ready {
                        Some(c) if c.status == "True" && taints.is_empty() => break,
                        Some(c) => {
                            last = format!(
                                "Ready={} ({}), taints {taints:?}",
                                c.status,
                                c.message.clone().unwrap_or_default()
                            )
                        }
                        None => last = "no Ready condition yet".into(),
                    }
                }
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() > START_TIMEOUT {
                let tail = self
                    .with_running(|r| r.kubelet.log_tail(20))
                    .unwrap_or_default();
                return Err(Error::NotReady {
                    what: format!("node {NODE_NAME}"),
                    secs: start.elapsed().as_secs(),
                    detail: last,
                    log: self.footprint.dir.join("kubelet.log"),
                    tail,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        phases.push(("node Ready", t0.elapsed()));
        // kube-proxy is healthy once it has seen its Node and synced its rules.
        let port = self.with_running(|r| r.proxy_healthz).unwrap_or_default();
        let start = Instant::now();
        loop {
            let reply = crate::control_plane::http_get(port, "/healthz")
                .await
                .unwrap_or_default();
            if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
                break;
            }
            if let Some(e) = self.with_running(|r| r.kube_proxy.exited_error()).flatten() {
                return Err(e);
            }
            if start.elapsed() > START_TIMEOUT {
                let tail = self
                    .with_running(|r| r.kube_proxy.log_tail(20))
                    .unwrap_or_default();
                let detail = reply.lines().next().unwrap_or("no answer").to_string();
                return Err(Error::NotReady {
                    what: "kube-proxy".into(),
                    secs: start.elapsed().as_secs(),
                    detail,
                    log: self.footprint.dir.join("kube-proxy.log"),
                    tail,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        phases.push(("kube-proxy synced", t0.elapsed()));
        Ok(())
    }

    fn with_running<T>(&self, f: impl FnOnce(&mut Running) -> T) -> Option<T> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(f)
    }

    /// Imports a docker-archive (from [`images::build`]) into the node's
    /// containerd; pods then run it with `imagePullPolicy: Never` or
    /// `IfNotPresent`.
    pub fn import_archive(&self, archive: &Path) -> Result<()> {
        let socket = self.socket.display().to_string();
        let archive_s = archive.display().to_string();
        run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive_s,
            ],
        )
        .map(drop)
        .map_err(|e| {
            Error::failed(
                format!("importing {archive_s} into the node's containerd"),
                e,
            )
        })
    }

    /// Builds the named images (see [`images::build`]) and imports them.
    pub async fn load_images(&self, names: &[String]) -> Result<Vec<images::Built>> {
        let names = names.to_vec();
        let built = tokio::task::spawn_blocking(move || images::build(&names))
            .await
            .map_err(|e| Error::failed("building images", e))??;
        for b in &built {
            self.import_archive(&b.archive)?;
        }
        Ok(built)
    }

    /// The folder of the node: configs, logs, containerd's and the kubelet's state.
    pub fn dir(&self) -> &Path {
        &self.footprint.dir
    }

    /// What to compare the machine against after the node is gone.
    pub fn footprint(&self) -> Footprint {
        self.footprint.clone()
    }

    /// `crictl` with the node's runtime endpoint, for diagnostics.
    pub fn crictl(&self, args: &[&str]) -> Result<String> {
        let endpoint = format!("unix://{}", self.socket.display());
        let mut all = vec!["--runtime-endpoint", endpoint.as_str(), "--timeout", "30s"];
        all.extend_from_slice(args);
        capture(&self.bins.crictl, &all).map_err(|e| Error::failed("crictl", e))
    }

    /// Processes living in the cgroups of the pod with this UID (its
    /// containers and its sandbox), and those cgroups' folders.
    pub fn pod_processes(&self, uid: &str) -> (Vec<u32>, Vec<PathBuf>) {
        let mut pids = BTreeSet::new();
        let dirs: Vec<PathBuf> = cgroup_dirs()
            .into_iter()
            .filter(|d| d.to_string_lossy().contains(&format!("pod{uid}")))
            .collect();
        for dir in &dirs {
            collect_procs(dir, &mut pids);
        }
        (pids.into_iter().collect(), dirs)
    }

    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    pub fn startup_phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    pub fn components(&self) -> Vec<Component> {
        self.with_running(|r| {
            [&r.containerd, &r.coredns, &r.kube_proxy, &r.kubelet]
                .iter()
                .map(|p| p.component())
                .collect()
        })
        .unwrap_or_default()
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        self.with_running(|r| {
            for p in [&r.containerd, &r.coredns, &r.kube_proxy, &r.kubelet] {
                out.push_str(&format!(
                    "----- {} ({}), last lines -----\n{}\n",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(lines)
                ));
            }
        });
        out
    }

    /// Stops everything and removes every trace (see the module
    /// documentation). Idempotent; synchronous, so it also runs at exit.
    pub fn teardown(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let dir = &self.footprint.dir;
        let endpoint = format!("unix://{}", self.socket.display());
        if let Some(mut r) = running {
            // The kubelet would restart what the runtime stops.
            let _ = r.kubelet.kill();
            let crictl = |args: &[&str]| {
                let mut all = vec!["--runtime-endpoint", endpoint.as_str(), "--timeout", "60s"];
                all.extend_from_slice(args);
                capture(&self.bins.crictl, &all)
            };
            // Stopping a sandbox runs CNI DEL: veth, IP and netns go with it.
            if let Err(e) = crictl(&["rmp", "--all", "--force"]) {
                eprintln!("node teardown: crictl rmp: {e}");
            }
            let _ = r.kube_proxy.kill();
            let _ = r.coredns.kill();
            if let Err(e) = capture(&self.bins.kube_proxy, &["--cleanup"]) {
                eprintln!("node teardown: kube-proxy --cleanup: {e}");
            }
            stop_gracefully(&mut r.containerd, Duration::from_secs(10));
        }
        // Whatever survived: shims (they leave containerd's process group),
        // container processes, mounts, the bridge, chains, cgroups, files.
        for pid in node_pids(dir) {
            // SAFETY: kill(2) on a pid just read from /proc.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for dir in cgroup_dirs().into_iter().rev() {
            let _ = std::fs::remove_dir(&dir);
        }
        for m in mounts_under(dir).into_iter().rev() {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 on a path read from mountinfo.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
        remove_new_chains(&self.footprint.chains);
        // iptables (nft) creates its tables on first use and never removes them.
        for table in nft_tables().difference(&self.footprint.tables) {
            let words: Vec<&str> = table.split(' ').collect();
            if nft_table_is_empty(table) {
                let mut args = vec!["delete", "table"];
                args.extend(&words);
                let _ = capture("nft", &args);
            }
        }
        for (host_dir, before) in &self.footprint.host_entries {
            let Some(now) = dir_entries(host_dir) else {
                continue;
            };
            let new: Vec<&String> = match before {
                None => now.iter().collect(),
                Some(before) => now.difference(before).collect(),
            };
            for e in new {
                let path = host_dir.join(e);
                if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
                    // Network namespaces are bind mounts.
                    // SAFETY: as above.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
            if before.is_none() {
                let _ = std::fs::remove_dir(host_dir);
            }
        }
        for (key, value) in &self.footprint.sysctls {
            if read_sysctl(key).as_deref() != Some(value.as_str()) {
                let _ = std::fs::write(Path::new("/proc/sys").join(key), value);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(20));
        }
        self.teardown();
    }
}

/// Pods reach the apiserver as in any cluster, through the `kubernetes`
/// Service: its EndpointSlice (see [`publish_api_endpoint`]) names the
/// node's address, where this relay hands the bytes to the apiserver, which
/// listens on loopback only. TLS passes through untouched.
struct ApiRelay {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The port the `kubernetes` Service's endpoint and the relay use.
const API_RELAY_PORT: u16 = 443;

impl ApiRelay {
    fn start(api_port: u16) -> Result<ApiRelay> {
        let what =
            || format!("listening on {NODE_IP}:{API_RELAY_PORT} for pods' apiserver traffic");
        let listener =
            TcpListener::bind((NODE_IP, API_RELAY_PORT)).map_err(|e| Error::failed(what(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::failed(what(), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dojo-api-relay".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((pod, _)) => {
                            if let Ok(api) = TcpStream::connect(("127.0.0.1", api_port)) {
                                relay(pod, api);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| Error::failed(what(), e))?;
        Ok(ApiRelay {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) {
    let _ = a.set_nonblocking(false);
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    let one_way = |from: &mut TcpStream, to: &mut TcpStream| {
        let _ = std::io::copy(from, to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    let _ = std::thread::Builder::new()
        .name("dojo-api-relay-up".into())
        .spawn(move || one_way(&mut a, &mut b));
    let _ = std::thread::Builder::new()
        .name("dojo-api-relay-down".into())
        .spawn(move || one_way(&mut b2, &mut a2));
}

/// The `kubernetes` Service's endpoint: the plane runs no endpoint
/// reconciler (its apiserver is on loopback), so the node publishes the
/// relay's address.
async fn publish_api_endpoint(client: &kube::Client) -> Result<()> {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "dojo-testenv"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": API_RELAY_PORT, "protocol": "TCP"}],
    }))
    .map_err(|e| Error::failed("building the kubernetes EndpointSlice", e))?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&kube::api::PostParams::default(), &slice)
        .await
        .map_err(|e| Error::failed("publishing the apiserver's endpoint for pods", e))?;
    Ok(())
}

async fn wait_for_lock() -> Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(LOCK_NAME)
        .map_err(|e| Error::failed("naming the node lock", e))?;
    let start = Instant::now();
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(Error::failed(
                    "taking the real-node lock",
                    format!(
                        "{e}: another real node has run on this machine for {}s; stop that test or benchmark first",
                        start.elapsed().as_secs()
                    ),
                ));
            }
        }
    }
}

fn stop_gracefully(p: &mut Process, grace: Duration) {
    if let Some(pid) = p.pid() {
        // SAFETY: kill(2) on the group of a child we spawned and have not reaped.
        if p.exit_status().is_none() {
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while p.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = p.kill();
}

fn distinct_free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut out = [0u16; N];
    let mut n = 0;
    while n < N {
        let p = ports::free_port()?;
        if !out[..n].contains(&p) {
            out[n] = p;
            n += 1;
        }
    }
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))
}

/// Runs a host tool; its output, or its stderr as the error.
fn capture(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
) -> std::result::Result<String, String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.to_string_lossy()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {}: {}: {}",
            program.to_string_lossy(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    capture(program, args).map_err(|e| Error::failed("setting up the real node", e))
}

fn images_dir() -> PathBuf {
    cache::root().join("images")
}

/// `localhost/rocketmq-dojo/pause:0.1.0` → `0.1.0`.
fn tag_of(reference: &str) -> &str {
    reference.rsplit(':').next().unwrap_or(reference)
}

fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key))
        .ok()
        .map(|s| s.trim().to_string())
}

fn dir_entries(dir: &Path) -> Option<BTreeSet<String>> {
    let rd = std::fs::read_dir(dir).ok()?;
    Some(
        rd.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

/// Processes of the node: any whose command line names its folder
/// (containerd, its shims, the kubelet...) or that lives in its cgroups.
fn node_pids(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let dir = dir.display().to_string();
    let mut pids = BTreeSet::new();
    for d in cgroup_dirs() {
        collect_procs(&d, &mut pids);
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && cmdline(pid).is_some_and(|c| c.contains(&dir)) {
            pids.insert(pid);
        }
    }
    pids.into_iter().collect()
}

fn collect_procs(dir: &Path, pids: &mut BTreeSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
}

/// Every cgroup folder under the kubelet's root, in every hierarchy,
/// parents before children.
fn cgroup_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.join(CGROUP_ROOT)];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        bases.push(e.path().join(CGROUP_ROOT));
    }
    for base in bases {
        if base.is_dir() {
            walk(&base, &mut out);
        }
    }
    out
}

/// The kubelet's cgroup root must exist in every hierarchy; a cpuset
/// cgroup (v1) starts with no CPUs and memory nodes, so it gets its parent's.
fn create_cgroup_root() -> Result<()> {
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .map_err(Error::io("/sys/fs/cgroup"))?
        .flatten()
    {
        let parent = e.path();
        if !parent.join("cgroup.procs").is_file() {
            continue;
        }
        let dir = parent.join(CGROUP_ROOT);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(parent.join(file)) {
                std::fs::write(dir.join(file), v.trim()).map_err(Error::io(dir.join(file)))?;
            }
        }
    }
    Ok(())
}

/// Mount points at or under `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

const IPTABLES: [&str; 2] = ["iptables", "ip6tables"];

/// `family/table/chain` of every user chain, both families.
fn iptables_chains() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for family in IPTABLES {
        let Ok(text) = capture(format!("{family}-save"), &[]) else {
            continue;
        };
        let mut table = "";
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t;
            } else if let Some(rest) = line.strip_prefix(':') {
                let chain = rest.split(' ').next().unwrap_or("");
                if !matches!(
                    chain,
                    "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING"
                ) {
                    out.insert(format!("{family}/{table}/{chain}"));
                }
            }
        }
    }
    out
}

/// Drops every chain that did not exist before the node (and the rules
/// jumping to them), by restoring each family's rules without them;
/// everything else is kept as it is.
fn remove_new_chains(before: &BTreeSet<String>) {
    for family in IPTABLES {
        let Ok(text) = capture(format!("{family}-save"), &[]) else {
            continue;
        };
        let mut table = String::new();
        let mut kept = String::new();
        let mut changed = false;
        let new_chains: BTreeSet<String> = iptables_chains()
            .difference(before)
            .filter_map(|c| c.strip_prefix(&format!("{family}/")).map(str::to_string))
            .collect();
        if new_chains.is_empty() {
            continue;
        }
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            }
            let is_new = |chain: &str| new_chains.contains(&format!("{table}/{chain}"));
            let drop = if let Some(rest) = line.strip_prefix(':') {
                is_new(rest.split(' ').next().unwrap_or(""))
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let words: Vec<&str> = rest.split(' ').collect();
                is_new(words[0])
                    || words
                        .windows(2)
                        .any(|w| matches!(w[0], "-j" | "-g") && is_new(w[1]))
            } else {
                false
            };
            if drop {
                changed = true;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if changed {
            let restore = format!("{family}-restore");
            let fed = Command::new(&restore)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child
                        .stdin
                        .take()
                        .map(|mut s| s.write_all(kept.as_bytes()))
                        .transpose()?;
                    child.wait()
                });
            if !fed.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("node teardown: {restore} failed: {fed:?}");
            }
        }
    }
}

/// `family name` of every nftables table (empty without the `nft` tool).
fn nft_tables() -> BTreeSet<String> {
    let text = capture("nft", &["list", "tables"]).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// A table holding only empty base chains (what iptables-nft leaves).
fn nft_table_is_empty(table: &str) -> bool {
    let mut args = vec!["list", "table"];
    args.extend(table.split(' '));
    let Ok(text) = capture("nft", &args) else {
        return false;
    };
    text.lines().map(str::trim).all(|l| {
        l.is_empty()
            || l == "}"
            || l.starts_with("table ")
            || l.starts_with("chain ")
            || l.starts_with("type ")
    })
}

fn containerd_config(dir: &Path, pause: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
# Only what a CRI node uses; the others probe the host's file systems.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built locally; nothing can be pulled again.
  sandbox_image = "{pause}"
  # The VM's bounding set lacks CAP_SYS_RESOURCE: runc cannot lower
  # oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_hugetlb_controller = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
    )
}

/// The bridge with host-local addresses. No default route and no masquerade:
/// pods reach the pod network, Service ClusterIPs (through the node) and
/// the node itself, nothing beyond this machine.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "dojo",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                "routes": [{"dst": crate::control_plane::SERVICE_CIDR, "gw": NODE_IP}],
                "dataDir": dir.join("cni-ipam"),
            },
        }],
    })
    .to_string()
}

fn corefile_text(kubeconfig: &Path) -> String {
    format!(
        ".:53 {{
    bind {NODE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {} dojo
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
",
        kubeconfig.display()
    )
}

fn kube_proxy_config(kubeconfig: &Path, healthz: u16, metrics: u16) -> String {
    serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": format!("127.0.0.1:{healthz}"),
        "metricsBindAddress": format!("127.0.0.1:{metrics}"),
        // NodePorts only on the bridge, never on the machine's own interfaces.
        "nodePortAddresses": [format!("{NODE_IP}/32")],
        // No route_localnet, and the host's conntrack sysctls stay as they are.
        "iptables": {"localhostNodePorts": false, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    })
    .to_string()
}

fn kubelet_config(dir: &Path, ca: &Path, socket: &Path, port: u16, healthz: u16) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        // The apiserver (logs, exec) authenticates with a client certificate
        // of the plane's CA.
        "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": false}, "x509": {"clientCAFile": ca}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
        // No systemd here, and cgroups are v1.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{CGROUP_ROOT}"),
        "failCgroupV1": false,
        "failSwapOn": false,
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        // Pods never get the host's resolvers: names resolve in the cluster only.
        "resolvConf": "",
        "podLogsDir": dir.join("pod-logs"),
        "volumePluginDir": dir.join("volume-plugins"),
        // Images are built locally and cannot be pulled again: never collect
        // them. The disk is shared with other work: evict only when it is
        // really full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": false,
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "registerNode": true,
        "maxPods": 50,
        "shutdownGracePeriod": "0s",
    })
    .to_string()
}
