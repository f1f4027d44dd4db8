//! A level in a cluster, as a newcomer plays it after `helm install`: the
//! level's images (built and imported into the real node), its committed
//! `challenge.yaml`, and the verdict read back from the Challenge's status.
//! Shared by `tests/level_in_cluster.rs` and `benches/levels_in_cluster.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dojo_crds::Challenge;
use dojo_testenv::ControlPlane;
use dojo_testenv::images::Built;
use dojo_verifier::levels::LevelInfo;
use dojo_verifier::workload::{self, Variant};
use kube::api::{Api, Patch, PatchParams};

use crate::{Error, Result, install_on_real_node, operator_binary, read, workspace_binary};

/// Provisioning (about 20 s for RocketMQ) plus a level's scenario (one to
/// two minutes) plus slack for a busy machine.
pub const VERDICT: Duration = Duration::from_secs(600);

/// `level-03-starter`: the image name a level's `challenge.yaml` uses for a variant.
pub fn image_name(level: &LevelInfo, variant: &Variant) -> String {
    format!("level-{:02}-{}", level.number, variant.name())
}

/// Builds `variant` of `level` in release, as `dojo play` does, in `tmp`; the binary.
pub fn workload_binary(level: &LevelInfo, variant: &Variant, tmp: &Path) -> Result<PathBuf> {
    let name = image_name(level, variant);
    let dir = tmp.join(&name);
    let failed = |e: workload::BuildError| Error::BinaryBuild {
        bin: name.clone(),
        detail: e.to_string(),
    };
    workload::prepare(&level.dir(), variant, &dir).map_err(failed)?;
    Ok(workload::build(&dir, &tmp.join(format!("{name}-out")))
        .map_err(failed)?
        .binary)
}

/// The operator and verifier images plus RocketMQ's and `variants`' of each
/// level, built (cached when unchanged) and imported into the real node.
pub async fn load_images(
    cp: &ControlPlane,
    levels: &[(&LevelInfo, Vec<Variant>)],
    tmp: &Path,
) -> Result<Vec<Built>> {
    let node = cp.real_node().expect("the plane has a real node");
    let mut names = vec![
        "rocketmq".to_string(),
        format!("operator={}", operator_binary(tmp)?.display()),
        format!(
            "verifier={}",
            workspace_binary("dojo-verifier", "dojo-verifier", tmp)?.display()
        ),
    ];
    for (level, variants) in levels {
        for v in variants {
            let (level, variant, dir) = (**level, v.clone(), tmp.to_path_buf());
            let binary =
                tokio::task::spawn_blocking(move || workload_binary(&level, &variant, &dir))
                    .await
                    .expect("build thread")?;
            names.push(format!("{}={}", image_name(&level, v), binary.display()));
        }
    }
    Ok(node.load_images(&names).await?)
}

/// The reference of image `name` among `built`.
pub fn reference(built: &[Built], name: &str) -> String {
    built
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.reference.clone())
        .unwrap_or_else(|| panic!("no {name} image among {built:?}"))
}

/// `helm install` of the chart with the built operator image, in a new namespace.
pub async fn install(cp: &ControlPlane, built: &[Built]) -> Result<String> {
    let ns = cp.new_namespace("dojo").await?;
    install_on_real_node(cp, &ns, &reference(built, "operator"))?;
    Ok(ns)
}

/// A learner's Challenge: the level's committed `challenge.yaml` in
/// `namespace`, with the project's RocketMQ image (the upstream
/// `apache/rocketmq` cannot be pulled here; ours runs the same commands).
pub struct Learner {
    pub api: Api<Challenge>,
    pub challenge: Challenge,
}

impl Learner {
    pub fn new(
        cp: &ControlPlane,
        namespace: &str,
        level: &LevelInfo,
        built: &[Built],
    ) -> Result<Learner> {
        let yaml = read(&level.dir().join("challenge.yaml"))?;
        let mut challenge: Challenge = serde_yaml::from_str(&yaml).map_err(|e| Error::Yaml {
            path: level.dir().join("challenge.yaml"),
            detail: e.to_string(),
        })?;
        challenge.spec.rocketmq.image = reference(built, "rocketmq");
        Ok(Learner {
            api: Api::namespaced(cp.client(), namespace),
            challenge,
        })
    }

    pub fn name(&self) -> String {
        self.challenge.metadata.name.clone().unwrap_or_default()
    }

    /// Applies the Challenge, with `image` as the workload if given (a new attempt).
    pub async fn apply(&mut self, image: Option<String>) -> Result<()> {
        if let Some(image) = image {
            self.challenge.spec.workload.image = image;
        }
        let ssa = PatchParams::apply("learner").force();
        self.api
            .patch(&self.name(), &ssa, &Patch::Apply(&self.challenge))
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        Ok(())
    }

    /// Waits until attempt `attempt` ended (Passed, Failed or Error); the
    /// Challenge then, and how long it took.
    pub async fn verdict(&self, attempt: u32) -> (Challenge, Duration) {
        let start = Instant::now();
        let name = self.name();
        let ch = dojo_testenv::eventually(
            &format!("attempt {attempt} of {name} ends"),
            VERDICT,
            || async {
                let ch = self.api.get(&name).await.map_err(|e| e.to_string())?;
                let st = ch.status.clone().unwrap_or_default();
                if st.attempts == attempt && st.phase.is_final() {
                    Ok(Some(ch))
                } else {
                    Err(format!("attempt {}: {}", st.attempts, st.phase))
                }
            },
        )
        .await;
        (ch, start.elapsed())
    }
}

/// The status as a learner reads it in `kubectl describe chal`: phase, each check with the start of its evidence.
pub fn table(ch: &Challenge) -> String {
    let st = ch.status.clone().unwrap_or_default();
    let rows: Vec<String> = st
        .checks
        .iter()
        .map(|c| {
            format!(
                "  {:<6} {:<24} {} {}",
                c.verdict,
                c.id,
                c.summary,
                c.evidence
                    .iter()
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        })
        .collect();
    let complete = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default();
    format!(
        "phase {}, checks {} ({complete})\n{}",
        st.phase,
        st.checks_summary.unwrap_or_default(),
        rows.join("\n")
    )
}
