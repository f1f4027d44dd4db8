//! Apache RocketMQ started from the jars the bootstrap fetched: the same
//! main classes and configuration files as the `apache/rocketmq` image, with
//! heaps and mapped files sized for a 2-core test machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(deprecated)]
use rocketmq_client_rust::DefaultMQPullConsumer;
use rocketmq_model::common::message::message_single::Message;

use crate::cache;
use crate::error::{Error, Result};
use crate::ports;
use crate::process::{self, Component, Process, Spec};
use dojo_kit::Clients;

/// How long a name server or broker gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The topic the readiness probe sends to and reads back.
pub const PROBE_TOPIC: &str = "DOJO_READY";

/// Which server a [`Server`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    NameServer,
    Broker,
}

impl Role {
    fn main_class(self) -> &'static str {
        match self {
            Role::NameServer => "org.apache.rocketmq.namesrv.NamesrvStartup",
            Role::Broker => "org.apache.rocketmq.broker.BrokerStartup",
        }
    }

    fn heap_mb(self) -> u32 {
        match self {
            Role::NameServer => 128,
            Role::Broker => 384,
        }
    }
}

/// One RocketMQ server process: its config file, home folder and log.
#[derive(Debug)]
pub struct Server {
    role: Role,
    name: String,
    port: u16,
    home: PathBuf,
    proc_: Process,
}

/// The `java` to run: `$JAVA_HOME/bin/java`, else the one on PATH.
fn java() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let java = PathBuf::from(home).join("bin").join("java");
        if java.is_file() {
            return Ok(java);
        }
    }
    cache::require_program(
        "java",
        "install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME",
    )
}

impl Server {
    /// Writes `conf` (Java properties) into `home` and starts the server.
    /// Returns once its port accepts connections and it logged its boot.
    pub async fn start(
        role: Role,
        name: &str,
        home: &Path,
        port: u16,
        conf: &str,
    ) -> Result<Server> {
        let lib = cache::rocketmq_lib()?;
        let java = java()?;
        ports::ensure_free(port, name)?;
        std::fs::create_dir_all(home).map_err(Error::io(home))?;
        let conf_path = home.join(match role {
            Role::NameServer => "namesrv.conf",
            Role::Broker => "broker.conf",
        });
        std::fs::write(&conf_path, conf).map_err(Error::io(&conf_path))?;
        let heap = role.heap_mb();
        let spec = Spec::new(java)
            .args([
                format!("-Xms{heap}m"),
                format!("-Xmx{heap}m"),
                "-XX:MaxDirectMemorySize=256m".into(),
                "-XX:+UseSerialGC".into(),
                "-XX:CICompilerCount=2".into(),
                "-XX:-UsePerfData".into(),
                // RocketMQ logs under ${user.home}/logs/rocketmqlogs.
                format!("-Duser.home={}", home.display()),
                "-Drocketmq.client.logUseSlf4j=true".into(),
                "-cp".into(),
                format!("{}/*", lib.display()),
                role.main_class().into(),
                "-c".into(),
                conf_path.display().to_string(),
            ])
            .env("ROCKETMQ_HOME", home)
            .cwd(home)
            // A test binary killed by a signal leaks no JVM (started from
            // the test's or a runtime worker's thread, which outlives it).
            .die_with_parent();
        let proc_ = Process::spawn(name, spec, home.join("console.log"))?;
        let mut server = Server {
            role,
            name: name.to_string(),
            port,
            home: home.to_path_buf(),
            proc_,
        };
        server.wait_booted().await?;
        Ok(server)
    }

    async fn wait_booted(&mut self) -> Result<()> {
        let port = self.port;
        let log = self.proc_.log_path().to_path_buf();
        let since = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        process::wait_ready(
            &mut self.proc_,
            START_TIMEOUT,
            Duration::from_millis(200),
            || {
                let log = log.clone();
                async move {
                    let booted = std::fs::read(&log)
                        .map(|b| {
                            String::from_utf8_lossy(&b[since as usize..]).contains("boot success")
                        })
                        .unwrap_or(false);
                    let listening = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok();
                    match (booted, listening) {
                        (true, true) => Ok(Some(())),
                        (false, _) => Err("no \"boot success\" line in its log yet".to_string()),
                        (true, false) => Err(format!("port {port} does not accept connections")),
                    }
                }
            },
        )
        .await
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, what clients and peers dial.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's home: config file, console log, `logs/rocketmqlogs/`, store.
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc_.pid()
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_.rss_kib()
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_.peak_rss_kib()
    }

    pub fn component(&self) -> Component {
        self.proc_.component()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc_.is_running()
    }

    /// Graceful stop (SIGTERM, the JVM's shutdown hooks run), SIGKILL after 15 s.
    pub async fn stop(&mut self) -> Result<()> {
        self.proc_.stop(Duration::from_secs(15)).await.map(drop)
    }

    /// SIGKILL: a crash, nothing flushed beyond what the store already wrote.
    pub fn kill(&mut self) -> Result<()> {
        self.proc_.kill()
    }

    /// SIGSTOP: the process hangs with its sockets open (a stalled broker).
    pub fn pause(&mut self) -> Result<()> {
        self.proc_.pause()
    }

    pub fn resume(&mut self) -> Result<()> {
        self.proc_.resume()
    }

    /// Starts it again with the same config and data, once stopped or killed;
    /// returns when it has booted.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc_.kill()?;
        // The kernel may hold the port a moment after a kill.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports::is_free(self.port) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ports::ensure_free(self.port, &self.name)?;
        self.proc_.restart()?;
        self.wait_booted().await
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc_.log_tail(lines)
    }

    /// The broker's own main log (`broker.log`), where elections and store
    /// errors are written, for diagnostics.
    pub fn main_log(&self) -> PathBuf {
        let file = match self.role {
            Role::NameServer => "namesrv.log",
            Role::Broker => "broker.log",
        };
        self.home.join("logs").join("rocketmqlogs").join(file)
    }
}

/// A broker's settings, written as `broker.conf`.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u32,
    pub listen_port: u16,
    pub namesrv_addr: String,
    pub store_dir: PathBuf,
    /// Further `key=value` settings, applied last (they win).
    pub extra: Vec<(String, String)>,
}

impl BrokerConfig {
    pub fn to_properties(&self) -> String {
        let mut s = String::new();
        let store = self.store_dir.display();
        let mut put = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(s, "{k}={v}");
        };
        put("brokerClusterName", &self.cluster);
        put("brokerName", &self.broker_name);
        put("brokerId", &self.broker_id);
        put("brokerIP1", &"127.0.0.1");
        put("listenPort", &self.listen_port);
        put("haListenPort", &(self.listen_port + 1));
        put("namesrvAddr", &self.namesrv_addr);
        put("storePathRootDir", &store);
        put("storePathCommitLog", &format!("{store}/commitlog"));
        // 64 MiB commit-log files instead of 1 GiB: a test broker must not
        // reserve gigabytes of disk.
        put("mappedFileSizeCommitLog", &(64 * 1024 * 1024));
        put("mappedFileSizeConsumeQueue", &(300_000 * 20));
        put("autoCreateTopicEnable", &true);
        put("autoCreateSubscriptionGroup", &true);
        // Level features: SQL92 filters and message trace.
        put("enablePropertyFilter", &true);
        put("traceTopicEnable", &true);
        // Reject nothing for disk pressure on a busy developer machine.
        put("diskMaxUsedSpaceRatio", &95);
        put("flushDiskType", &"ASYNC_FLUSH");
        for (k, v) in &self.extra {
            put(k, v);
        }
        s
    }
}

/// Options for [`RocketMq::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RocketMqBuilder {
    namesrv_port: Option<u16>,
    broker_port: Option<u16>,
    extra: Vec<(String, String)>,
    dir: Option<PathBuf>,
}

impl RocketMqBuilder {
    /// A fixed name-server port instead of a free one.
    pub fn namesrv_port(mut self, port: u16) -> Self {
        self.namesrv_port = Some(port);
        self
    }

    /// A fixed broker port (it also uses port - 2 and port + 1).
    pub fn broker_port(mut self, port: u16) -> Self {
        self.broker_port = Some(port);
        self
    }

    /// A further `broker.conf` setting.
    pub fn broker_setting(mut self, key: &str, value: impl ToString) -> Self {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }

    /// Keep data and logs in `dir` (kept after drop) instead of a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> Result<RocketMq> {
        RocketMq::start_with(self).await
    }
}

/// Checks that the broker behind `clients`' name server stores and serves a
/// message: send one to [`PROBE_TOPIC`], then pull that very message back.
/// Retries until `timeout`; the error says which step failed last.
pub async fn probe_send_receive(
    clients: &Clients,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let start = Instant::now();
    let mut producer = clients.producer("DOJO_READY_PRODUCER");
    let consumer = clients
        .pull_consumer("DOJO_READY_CONSUMER")
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    let result = async {
        producer
            .start()
            .await
            .map_err(|e| format!("producer start: {e}"))?;
        consumer
            .start()
            .await
            .map_err(|e| format!("pull consumer start: {e}"))?;
        while start.elapsed() < timeout {
            match probe_once(&producer, &consumer).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }
    .await;
    producer.shutdown().await;
    dojo_kit::shutdown_pull_consumer_in_background(consumer);
    result
}

#[allow(deprecated)]
async fn probe_once(
    producer: &rocketmq_client_rust::DefaultMQProducer,
    consumer: &DefaultMQPullConsumer,
) -> std::result::Result<(), String> {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = format!(
        "probe-{}-{}",
        std::process::id(),
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let msg = Message::builder()
        .topic(PROBE_TOPIC)
        .key(key.clone())
        .body_slice(b"ready?")
        .build()
        .map_err(|e| e.to_string())?;
    let sent = producer
        .send_with_timeout(msg, 3000)
        .await
        .map_err(|e| format!("send: {e}"))?
        .ok_or("send: no result")?;
    let mq = sent.message_queue.ok_or("send: result without a queue")?;
    let pulled = consumer
        .pull(&mq, "*", sent.queue_offset as i64, 1)
        .await
        .map_err(|e| format!("pull: {e}"))?;
    match pulled.msg_found_list().unwrap_or_default().first() {
        Some(m) if m.keys().unwrap_or_default().contains(&key) => Ok(()),
        Some(m) => Err(format!(
            "pull at offset {} returned keys {:?}, not {key}",
            sent.queue_offset,
            m.keys()
        )),
        None => Err(format!(
            "pull found nothing at offset {} ({:?})",
            sent.queue_offset,
            pulled.pull_status()
        )),
    }
}

/// A name server and one broker (cluster `dojo`, broker `broker-a`).
pub struct RocketMq {
    // Dropped last: the servers are killed before their folder goes.
    namesrv: Server,
    broker: Server,
    config: BrokerConfig,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl RocketMq {
    /// Starts on free ports in a temp dir; ready when a client can send and receive.
    pub async fn start() -> Result<RocketMq> {
        RocketMqBuilder::default().start().await
    }

    pub fn builder() -> RocketMqBuilder {
        RocketMqBuilder::default()
    }

    async fn start_with(b: RocketMqBuilder) -> Result<RocketMq> {
        cache::rocketmq_lib()?;
        let (tmp, root) = match b.dir {
            Some(dir) => (None, dir),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("dojo-rocketmq-")
                    .tempdir()
                    .map_err(Error::io(std::env::temp_dir()))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ns_port = match b.namesrv_port {
            Some(p) => p,
            None => ports::free_port()?,
        };
        let broker_port = match b.broker_port {
            Some(p) => p,
            None => ports::free_port_block(4)? + 2,
        };
        for (p, what) in [
            (ns_port, "name server"),
            (broker_port - 2, "broker (fast port)"),
            (broker_port, "broker"),
            (broker_port + 1, "broker (HA port)"),
        ] {
            ports::ensure_free(p, what)?;
        }
        let ns_home = root.join("namesrv");
        let namesrv = Server::start(
            Role::NameServer,
            "namesrv",
            &ns_home,
            ns_port,
            &format!("listenPort={ns_port}\n"),
        )
        .await?;
        let config = BrokerConfig {
            cluster: "dojo".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            listen_port: broker_port,
            namesrv_addr: namesrv.addr(),
            store_dir: root.join("broker").join("store"),
            extra: b.extra,
        };
        let broker = Server::start(
            Role::Broker,
            "broker-a",
            &root.join("broker"),
            broker_port,
            &config.to_properties(),
        )
        .await?;
        let mq = RocketMq {
            namesrv,
            broker,
            config,
            root,
            _tmp: tmp,
        };
        mq.wait_serving(START_TIMEOUT).await?;
        Ok(mq)
    }

    /// Waits until a client can send a message and read it back.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let clients = Clients::new("ready-probe", self.namesrv_addr())?;
        let r = probe_send_receive(&clients, timeout).await;
        clients.shutdown().await;
        r.map_err(|detail| Error::NotReady {
            what: "RocketMQ (send and receive)".into(),
            secs: timeout.as_secs(),
            detail,
            log: self.broker.main_log(),
            tail: process::tail(&self.broker.main_log(), 20),
        })
    }

    /// `127.0.0.1:port` of the name server: the `NAMESRV_ADDR` of workloads.
    pub fn namesrv_addr(&self) -> String {
        self.namesrv.addr()
    }

    pub fn broker_addr(&self) -> String {
        self.broker.addr()
    }

    pub fn cluster(&self) -> &str {
        &self.config.cluster
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn namesrv(&mut self) -> &mut Server {
        &mut self.namesrv
    }

    /// The broker, for stop / kill / pause / resume / restart.
    pub fn broker(&mut self) -> &mut Server {
        &mut self.broker
    }

    /// The folder holding both servers' config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Name, pid and memory of both servers, for benchmarks.
    pub fn components(&self) -> Vec<Component> {
        vec![self.namesrv.component(), self.broker.component()]
    }

    /// Clients pointed at this cluster's name server.
    pub fn clients(&self, scope: &'static str) -> Result<Clients> {
        Ok(Clients::new(scope, self.namesrv_addr())?)
    }
}

impl Drop for RocketMq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_tails(&[&self.namesrv, &self.broker]);
        }
    }
}

/// On a failing test: the end of each server's logs, to stderr.
pub(crate) fn print_tails(servers: &[&Server]) {
    for s in servers {
        eprintln!(
            "----- {} ({}) console, last lines -----\n{}",
            s.name(),
            s.addr(),
            s.log_tail(15)
        );
        eprintln!(
            "----- {} main log {} -----\n{}",
            s.name(),
            s.main_log().display(),
            process::tail(&s.main_log(), 15)
        );
    }
}
