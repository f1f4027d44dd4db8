//! One local run of a level: build the workload, start RocketMQ and the
//! world, run the scenario through [`LocalPlatform`], keep the artefacts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
#[cfg(feature = "cluster")]
use std::time::Duration;
use std::time::Instant;

use dojo_kit::Clients;
use dojo_testenv::RocketMq;
use dojo_world::{World, WorldHandle};

#[cfg(feature = "cluster")]
use crate::cluster::{JobEnv, KubePlatform};
use crate::levels::{self, Ctx, LevelInfo, Observations};
use crate::local::LocalPlatform;
use crate::now_ms;
use crate::platform::Platform;
use crate::progress::Progress;
use crate::report::{Check, Report, Verdict};
use crate::workload::{self, BuildError};

#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error("level {0} has no scenario yet; `dojo list` shows the playable levels")]
    NotPlayable(u8),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the local RocketMQ did not start: {0}")]
    RocketMq(#[from] dojo_testenv::Error),
    #[error("the world did not start: {0}")]
    World(#[from] dojo_world::WorldError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Where learner state lives: `$DOJO_STATE`, else `$XDG_STATE_HOME/rocketmq-dojo`,
/// else `~/.local/state/rocketmq-dojo`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOJO_STATE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("rocketmq-dojo");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local").join("state").join("rocketmq-dojo")
}

/// Runs `level`'s scenario on `platform`: what it observed, with the peak
/// memory the platform saw; the same for every platform.
pub async fn observe<P: Platform>(
    level: &LevelInfo,
    platform: &mut P,
    world: &WorldHandle,
    clients: &Clients,
    progress: &mut dyn Progress,
    messages: Option<u32>,
    (started_at_ms, start): (u64, Instant),
) -> Observations {
    let mut ctx = Ctx {
        platform,
        world,
        clients,
        progress,
        messages,
    };
    let outcome = levels::observe(level.number, &mut ctx).await;
    let peak_rss = platform.peak_rss_kib().await;
    Observations {
        schema: Observations::SCHEMA,
        level: level.number,
        started_at_ms,
        duration_ms: start.elapsed().as_millis() as u64,
        peak_rss,
        outcome,
    }
}

/// Judges `observed` and shows each check as it is judged.
pub fn judge(observed: &Observations, progress: &mut dyn Progress) -> Report {
    let report = observed.judge().unwrap_or_else(|e| {
        let check = Check::error("judged", "the run's observations are judged", e);
        Report {
            level: observed.level,
            slug: String::new(),
            verdict: Verdict::Error,
            checks: vec![check],
            figures: Vec::new(),
            series: Vec::new(),
            started_at_ms: observed.started_at_ms,
            duration_ms: observed.duration_ms,
            artefacts: None,
        }
    });
    for c in &report.checks {
        progress.check(c);
    }
    report
}

/// Re-judges the run saved in `run_dir` (its `observations.json`) with
/// today's checkers: `dojo judge RUN_DIR`.
pub fn rejudge(run_dir: &Path, progress: &mut dyn Progress) -> Result<Report, String> {
    let observed = Observations::read(&run_dir.join(Observations::FILE))?;
    let mut report = judge(&observed, progress);
    report.artefacts = Some(run_dir.display().to_string());
    Ok(report)
}

/// Plays `level` in a cluster, as the operator's verifier Job: the world
/// served on `WORLD_LISTEN` (the world Service selects this pod), the
/// scenario on the Challenge's pods. An `Err` means the run could not happen.
#[cfg(feature = "cluster")]
pub async fn play_in_cluster(
    level: &LevelInfo,
    progress: &mut dyn Progress,
) -> Result<Report, ClusterError> {
    if !level.playable {
        return Err(ClusterError::NotPlayable(level.number));
    }
    let (started_at_ms, start) = (now_ms(), Instant::now());
    let env = JobEnv::from_env().map_err(ClusterError::Env)?;
    let listen: SocketAddr = env
        .world_listen
        .parse()
        .map_err(|e| ClusterError::Env(format!("WORLD_LISTEN {}: {e}", env.world_listen)))?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| ClusterError::Kube(e.to_string()))?;
    progress.phase(&format!(
        "serving the world on {listen}; waiting for the workload Deployment to make way"
    ));
    let world = World::start(listen, levels::world_config(level.number)).await?;
    let mut platform = KubePlatform::new(client, env.clone(), level.serves_http)
        .await
        .map_err(|e| ClusterError::Kube(e.to_string()))?;
    progress.phase(&format!(
        "waiting until RocketMQ at {} serves",
        env.namesrv_addr
    ));
    let clients =
        Clients::new("verifier", env.namesrv_addr.clone()).map_err(dojo_testenv::Error::from)?;
    if let Err(e) =
        dojo_testenv::rocketmq::probe_send_receive(&clients, Duration::from_secs(120)).await
    {
        return Err(ClusterError::RocketMq(e));
    }
    let observed = observe(
        level,
        &mut platform,
        &world,
        &clients,
        progress,
        env.messages,
        (started_at_ms, start),
    )
    .await;
    platform.finish().await;
    let report = judge(&observed, progress);
    clients.shutdown().await;
    let _ = world.shutdown().await;
    Ok(report)
}

#[cfg(feature = "cluster")]
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("level {0} has no scenario yet")]
    NotPlayable(u8),
    #[error("{0}")]
    Env(String),
    #[error("the Kubernetes API: {0}")]
    Kube(String),
    #[error("the world did not start: {0}")]
    World(#[from] dojo_world::WorldError),
    #[error("the RocketMQ client: {0}")]
    Client(#[from] dojo_testenv::Error),
    #[error("the Challenge's RocketMQ does not serve: {0}")]
    RocketMq(String),
}

/// Plays `level` with the workload in `workload_dir`; artefacts go to a new
/// folder under `runs_dir`. An `Err` means the run could not happen at all;
/// a run that happened always yields a report (whose verdict may be `error`).
pub async fn play(
    level: &LevelInfo,
    workload_dir: &Path,
    runs_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Report, PlayError> {
    if !level.playable {
        return Err(PlayError::NotPlayable(level.number));
    }
    let started_at_ms = now_ms();
    let start = Instant::now();
    let run_dir = runs_dir.join(format!("{}-{started_at_ms}", level.dir_name()));
    let io = |what: String| move |source| PlayError::Io { what, source };
    std::fs::create_dir_all(&run_dir).map_err(io(format!("creating {}", run_dir.display())))?;

    progress.phase(&format!(
        "building the workload in {} (first build compiles the RocketMQ client: minutes)",
        workload_dir.display()
    ));
    let dir = workload_dir.to_path_buf();
    let out = run_dir.join("workload");
    let built = tokio::task::spawn_blocking(move || workload::build(&dir, &out))
        .await
        .expect("build thread")?;
    progress.phase(&format!("built in {:.1}s", built.took.as_secs_f64()));

    progress.phase("starting RocketMQ (name server + broker) and the world");
    let (mq, world) = tokio::join!(
        level
            .facts
            .broker_settings
            .iter()
            .fold(
                RocketMq::builder().dir(run_dir.join("rocketmq")),
                |b, (k, v)| b.broker_setting(k, v)
            )
            .start(),
        World::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            levels::world_config(level.number)
        )
    );
    let (mq, world) = (mq?, world?);
    let clients = Clients::new("verifier", mq.namesrv_addr()).map_err(dojo_testenv::Error::from)?;
    let mut platform = LocalPlatform::new(
        mq,
        built.binary,
        level.number,
        world.url(),
        run_dir.clone(),
        level.serves_http,
    );

    let observed = observe(
        level,
        &mut platform,
        &world,
        &clients,
        progress,
        None,
        (started_at_ms, start),
    )
    .await;
    std::fs::write(run_dir.join(Observations::FILE), observed.to_json())
        .map_err(io(format!("writing {}", Observations::FILE)))?;
    let mut report = judge(&observed, progress);
    report.artefacts = Some(run_dir.display().to_string());
    let _ = world
        .history()
        .write_json(&run_dir.join("world-history.json"));
    std::fs::write(run_dir.join("report.json"), report.to_json())
        .map_err(io("writing report.json".into()))?;
    // Clients before the broker they talk to; workloads die with the platform.
    clients.shutdown().await;
    drop(platform);
    let _ = world.shutdown().await;
    Ok(report)
}
