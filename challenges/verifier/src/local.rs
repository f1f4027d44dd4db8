//! [`Platform`] on one machine: the broker from the test environment, the
//! workload as local processes of the built binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dojo_testenv::RocketMq;
use dojo_testenv::ports;
use dojo_testenv::process::{Process, Spec};

use crate::platform::{BrokerFault, PeakRss, Platform, PlatformError, StopOutcome, WorkloadStats};

struct Instance {
    proc_: Process,
    listen: Option<String>,
    /// Highest peak RSS seen across its lives, in KiB.
    peak_rss_kib: u64,
}

impl Instance {
    /// Reads the peak while the process is alive (it is gone after exit).
    fn note_peak(&mut self) {
        if let Some(kib) = self.proc_.peak_rss_kib() {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
    }
}

pub struct LocalPlatform {
    mq: RocketMq,
    binary: PathBuf,
    level: u8,
    world_url: String,
    /// Where each instance's log goes.
    log_dir: PathBuf,
    /// Whether workloads serve HTTP (they get `DOJO_LISTEN_ADDR`).
    serves_http: bool,
    instances: BTreeMap<String, Instance>,
}

impl LocalPlatform {
    pub fn new(
        mq: RocketMq,
        binary: PathBuf,
        level: u8,
        world_url: String,
        log_dir: PathBuf,
        serves_http: bool,
    ) -> LocalPlatform {
        LocalPlatform {
            mq,
            binary,
            level,
            world_url,
            log_dir,
            serves_http,
            instances: BTreeMap::new(),
        }
    }

    pub fn rocketmq(&mut self) -> &mut RocketMq {
        &mut self.mq
    }

    fn instance(&mut self, name: &str) -> Result<&mut Instance, PlatformError> {
        self.instances
            .get_mut(name)
            .ok_or_else(|| PlatformError::Workload {
                instance: name.into(),
                detail: "was never started".into(),
            })
    }
}

fn werr(instance: &str, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Workload {
        instance: instance.to_string(),
        detail: e.to_string(),
    }
}

impl Platform for LocalPlatform {
    fn namesrv_addr(&self) -> String {
        self.mq.namesrv_addr()
    }

    async fn start_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        if let Some(i) = self.instances.get_mut(instance) {
            if i.proc_.is_running() {
                return Err(werr(instance, "is already running"));
            }
            i.note_peak();
            return i.proc_.restart().map_err(|e| werr(instance, e));
        }
        let listen = if self.serves_http {
            Some(format!(
                "127.0.0.1:{}",
                ports::free_port().map_err(|e| werr(instance, e))?
            ))
        } else {
            None
        };
        let mut spec = Spec::new(&self.binary)
            .env("NAMESRV_ADDR", self.mq.namesrv_addr())
            .env("WORLD_URL", &self.world_url)
            .env("DOJO_LEVEL", self.level.to_string())
            .env("DOJO_INSTANCE", instance)
            .env("RUST_BACKTRACE", "1")
            .die_with_parent();
        if let Some(addr) = &listen {
            spec = spec.env("DOJO_LISTEN_ADDR", addr);
        }
        let proc_ = Process::spawn(instance, spec, self.log_dir.join(format!("{instance}.log")))
            .map_err(|e| werr(instance, e))?;
        self.instances.insert(
            instance.to_string(),
            Instance {
                proc_,
                listen,
                peak_rss_kib: 0,
            },
        );
        Ok(())
    }

    fn workload_addr(&self, instance: &str) -> Option<String> {
        self.instances.get(instance)?.listen.clone()
    }

    async fn stop_workload(
        &mut self,
        instance: &str,
        grace: Duration,
    ) -> Result<StopOutcome, PlatformError> {
        let i = self.instance(instance)?;
        i.note_peak();
        let start = Instant::now();
        let stopped = i.proc_.stop(grace).await.map_err(|e| werr(instance, e))?;
        Ok(StopOutcome {
            exited_in_time: stopped.exited_in_time,
            status: stopped.status,
            success: stopped.success,
            took: start.elapsed(),
        })
    }

    async fn kill_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        let i = self.instance(instance)?;
        i.note_peak();
        i.proc_.kill().map_err(|e| werr(instance, e))
    }

    async fn pause_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        self.instance(instance)?
            .proc_
            .pause()
            .map_err(|e| werr(instance, e))
    }

    async fn resume_workload(&mut self, instance: &str) -> Result<(), PlatformError> {
        self.instance(instance)?
            .proc_
            .resume()
            .map_err(|e| werr(instance, e))
    }

    async fn workload_exit(&mut self, instance: &str) -> Option<String> {
        self.instances.get_mut(instance)?.proc_.exit_status()
    }

    async fn workload_stats(&mut self, instance: &str) -> Option<WorkloadStats> {
        let p = &self.instances.get(instance)?.proc_;
        Some(WorkloadStats {
            threads: p.threads()?,
            rss_kib: p.rss_kib()?,
        })
    }

    async fn workload_log_tail(&mut self, instance: &str, lines: usize) -> String {
        self.instances
            .get(instance)
            .map(|i| i.proc_.log_tail(lines))
            .unwrap_or_default()
    }

    async fn peak_rss_kib(&mut self) -> PeakRss {
        let workload = self
            .instances
            .values_mut()
            .map(|i| {
                i.note_peak();
                i.peak_rss_kib
            })
            .max();
        PeakRss {
            workload,
            broker: self.mq.broker().peak_rss_kib(),
        }
    }

    async fn broker_fault(&mut self, fault: BrokerFault) -> Result<(), PlatformError> {
        let broker = self.mq.broker();
        let r = match fault {
            BrokerFault::Stop => broker.stop().await,
            BrokerFault::Kill => broker.kill(),
            BrokerFault::Stall => broker.pause(),
            BrokerFault::Resume => broker.resume(),
            BrokerFault::Restart => broker.restart().await,
        };
        r.map_err(|e| PlatformError::Broker(e.to_string()))?;
        if fault == BrokerFault::Restart {
            self.mq
                .wait_serving(Duration::from_secs(60))
                .await
                .map_err(|e| PlatformError::Broker(e.to_string()))?;
        }
        Ok(())
    }
}
