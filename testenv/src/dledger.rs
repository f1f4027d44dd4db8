//! Three brokers in three "zones" forming one DLedger group (one Raft group
//! replicating the commit log), with one name server: the level-12 cluster.
//!
//! `isolate(zone)` freezes the zone's broker with SIGSTOP. Why not a network
//! cut: this machine has neither iptables nor nftables, and a network
//! namespace per zone would put the brokers on non-loopback addresses that
//! the test process (and a learner's laptop without root) cannot reach. A
//! frozen broker looks partitioned to its peers and to clients (connections
//! hang, heartbeats stop); what it cannot show is a cut-off leader that keeps
//! running — level 12's split-brain check will need the namespace variant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rocketmq_client_rust::MQAdminReadExt;

use crate::error::{Error, Result};
use crate::ports;
use crate::process::Component;
use crate::rocketmq::{self, BrokerConfig, Role, Server, print_tails};
use dojo_kit::Clients;

/// The zones, in order; broker `i` lives in `ZONES[i]` with DLedger id `n{i}`.
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// The broker (and DLedger group) name all three share.
pub const GROUP: &str = "broker-dledger";

/// One name server and a DLedger group of three brokers.
pub struct DLedgerGroup {
    namesrv: Server,
    brokers: Vec<Server>,
    configs: Vec<BrokerConfig>,
    frozen: Vec<bool>,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn zone_index(zone: &str) -> Result<usize> {
    ZONES.iter().position(|z| *z == zone).ok_or_else(|| {
        Error::failed(
            format!("zone {zone:?}"),
            format!("no such zone; the zones are {ZONES:?}"),
        )
    })
}

impl DLedgerGroup {
    /// Starts the name server and the three brokers (in parallel); returns
    /// once a leader is elected and a client can send and receive.
    pub async fn start() -> Result<DLedgerGroup> {
        crate::cache::rocketmq_lib()?;
        let tmp = tempfile::Builder::new()
            .prefix("dojo-dledger-")
            .tempdir()
            .map_err(Error::io(std::env::temp_dir()))?;
        let root = tmp.path().to_path_buf();
        let ns_port = ports::free_port()?;
        let namesrv = Server::start(
            Role::NameServer,
            "namesrv",
            &root.join("namesrv"),
            ns_port,
            &format!("listenPort={ns_port}\n"),
        )
        .await?;

        // Per broker: fast port (main - 2), main, HA (main + 1), and a DLedger port.
        let mut mains = Vec::new();
        let mut peers = Vec::new();
        for i in 0..ZONES.len() {
            mains.push(ports::free_port_block(4)? + 2);
            peers.push(format!("n{i}-127.0.0.1:{}", ports::free_port()?));
        }
        let peers = peers.join(";");
        let configs: Vec<BrokerConfig> = ZONES
            .iter()
            .enumerate()
            .map(|(i, zone)| BrokerConfig {
                cluster: "dojo".into(),
                broker_name: GROUP.into(),
                broker_id: 0,
                listen_port: mains[i],
                namesrv_addr: namesrv.addr(),
                store_dir: root.join(zone).join("store"),
                extra: vec![
                    ("enableDLegerCommitLog".into(), "true".into()),
                    ("dLegerGroup".into(), GROUP.into()),
                    ("dLegerPeers".into(), peers.clone()),
                    ("dLegerSelfId".into(), format!("n{i}")),
                    // Clients pick brokers by zone in level 12.
                    ("zoneName".into(), (*zone).into()),
                ],
            })
            .collect();
        let starts = configs.iter().zip(ZONES).map(|(c, zone)| {
            let home = root.join(zone);
            let conf = c.to_properties();
            async move {
                Server::start(
                    Role::Broker,
                    &format!("broker-{zone}"),
                    &home,
                    c.listen_port,
                    &conf,
                )
                .await
            }
        });
        let brokers = futures::future::try_join_all(starts).await?;
        let group = DLedgerGroup {
            namesrv,
            brokers,
            configs,
            frozen: vec![false; ZONES.len()],
            root,
            _tmp: tmp,
        };
        group.wait_leader(Duration::from_secs(60)).await?;
        let clients = group.clients("ready-probe")?;
        let probe = rocketmq::probe_send_receive(&clients, Duration::from_secs(60)).await;
        clients.shutdown().await;
        probe.map_err(|detail| Error::NotReady {
            what: "DLedger group (send and receive)".into(),
            secs: 60,
            detail,
            log: group.root.clone(),
            tail: String::new(),
        })?;
        Ok(group)
    }

    pub fn namesrv_addr(&self) -> String {
        self.namesrv.addr()
    }

    pub fn clients(&self, scope: &'static str) -> Result<Clients> {
        Ok(Clients::new(scope, self.namesrv_addr())?)
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The broker of `zone`, for its address, pid, logs or a manual signal.
    pub fn broker(&mut self, zone: &str) -> Result<&mut Server> {
        Ok(&mut self.brokers[zone_index(zone)?])
    }

    pub fn namesrv(&mut self) -> &mut Server {
        &mut self.namesrv
    }

    pub fn broker_config(&self, zone: &str) -> Result<&BrokerConfig> {
        Ok(&self.configs[zone_index(zone)?])
    }

    /// The zone whose broker the name server currently lists as master
    /// (broker id 0): the DLedger leader as clients see it.
    pub async fn leader(&self) -> Result<Option<&'static str>> {
        let clients = self.clients("leader-query")?;
        let mut admin = clients.admin();
        let result = async {
            admin
                .start()
                .await
                .map_err(|e| Error::failed("admin session", e))?;
            MQAdminReadExt::examine_broker_cluster_info(&admin)
                .await
                .map_err(|e| Error::failed("cluster info from the name server", e))
        }
        .await;
        admin.shutdown().await;
        clients.shutdown().await;
        let info = result?;
        let master = info
            .broker_addr_table
            .as_ref()
            .and_then(|t| t.get(GROUP))
            .and_then(|b| b.broker_addrs().get(&0).cloned());
        let by_addr: HashMap<String, &'static str> = self
            .configs
            .iter()
            .zip(ZONES)
            .map(|(c, z)| (format!("127.0.0.1:{}", c.listen_port), z))
            .collect();
        Ok(master.and_then(|addr| by_addr.get(addr.as_str()).copied()))
    }

    /// Waits until a leader other than `not` (if given) is listed; returns it
    /// and how long the wait took.
    pub async fn wait_new_leader(
        &self,
        not: Option<&str>,
        timeout: Duration,
    ) -> Result<(&'static str, Duration)> {
        let start = Instant::now();
        loop {
            if let Ok(Some(zone)) = self.leader().await
                && Some(zone) != not
            {
                return Ok((zone, start.elapsed()));
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: "DLedger leader election".into(),
                    secs: timeout.as_secs(),
                    detail: format!("no leader other than {not:?} listed by the name server"),
                    log: self.root.clone(),
                    tail: self
                        .brokers
                        .iter()
                        .map(|b| {
                            format!("[{}]\n{}", b.name(), crate::process::tail(&b.main_log(), 8))
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_leader(&self, timeout: Duration) -> Result<(&'static str, Duration)> {
        self.wait_new_leader(None, timeout).await
    }

    /// SIGKILL the zone's broker.
    pub fn kill(&mut self, zone: &str) -> Result<()> {
        self.brokers[zone_index(zone)?].kill()
    }

    /// Starts a killed or stopped broker again on its own store.
    pub async fn restart(&mut self, zone: &str) -> Result<()> {
        let i = zone_index(zone)?;
        self.frozen[i] = false;
        self.brokers[i].restart().await
    }

    /// Cuts the zone off (SIGSTOP: see the module docs for why).
    pub fn isolate(&mut self, zone: &str) -> Result<()> {
        let i = zone_index(zone)?;
        self.brokers[i].pause()?;
        self.frozen[i] = true;
        Ok(())
    }

    /// Reconnects every isolated zone.
    pub fn heal(&mut self) -> Result<()> {
        for (b, frozen) in self.brokers.iter_mut().zip(self.frozen.iter_mut()) {
            if *frozen {
                b.resume()?;
                *frozen = false;
            }
        }
        Ok(())
    }

    /// Name, pid and memory of every server, for benchmarks.
    pub fn components(&self) -> Vec<Component> {
        std::iter::once(&self.namesrv)
            .chain(&self.brokers)
            .map(Server::component)
            .collect()
    }
}

impl Drop for DLedgerGroup {
    fn drop(&mut self) {
        // Frozen processes cannot die from SIGTERM; SIGKILL on drop works anyway.
        if std::thread::panicking() {
            let all: Vec<&Server> = std::iter::once(&self.namesrv)
                .chain(&self.brokers)
                .collect();
            print_tails(&all);
        }
    }
}
