//! Step one of a reconcile: turn the raw `Challenge` into a `ValidChallenge`
//! whose every field is known good, so the builders never handle a missing
//! or contradictory value. The CRD's CEL rules refuse most bad input at the
//! API server; this repeats the checks the builders rely on (an older CRD
//! may still be installed).

use std::collections::BTreeMap;

use dojo_crds::levels::{DEFAULT_ZONES, Level};
use dojo_crds::{Challenge, Fault, FaultAction, RESERVED_ENV, Workload, level_facts};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::error::Error;

/// Seconds RocketMQ and the workload may take to be ready unless overridden.
pub const DEFAULT_PROVISION_SECONDS: u32 = 300;

#[derive(Clone, Debug, PartialEq)]
pub struct ValidChallenge {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub level: &'static Level,
    pub attempt: u32,
    pub workload: Workload,
    pub run_seconds: u32,
    pub provision_seconds: u32,
    pub messages: Option<u32>,
    pub rate_per_second: Option<u32>,
    pub faults: Vec<Fault>,
    pub rocketmq_image: String,
    pub rocketmq_version: String,
    /// The zones of the DLedger group (level 12), empty otherwise.
    pub zones: Vec<String>,
    pub verifier_image: String,
}

/// Validates `ch` for attempt number `attempt` (1-based).
pub fn validate(ch: &Challenge, attempt: u32) -> Result<ValidChallenge, Error> {
    let invalid = |msg: String| Error::InvalidSpec(msg);
    let name = ch
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let namespace = ch.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let owner = ch
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let spec = &ch.spec;
    let level = level_facts(spec.level)
        .ok_or_else(|| invalid(format!("spec.level is {}, levels are 1 to 12", spec.level)))?;
    if name.len() > 40 {
        return Err(invalid(format!(
            "the name {name:?} is longer than 40 characters: re-create the Challenge with a shorter name"
        )));
    }
    if spec.workload.image.trim().is_empty() || spec.workload.image.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "spec.workload.image {:?} is not an image reference",
            spec.workload.image
        )));
    }
    if let Some(env) = spec
        .workload
        .env
        .iter()
        .find(|e| RESERVED_ENV.contains(&e.name.as_str()))
    {
        return Err(invalid(format!(
            "spec.workload.env sets {}, which the operator sets: remove it",
            env.name
        )));
    }
    let overrides = spec.overrides.clone().unwrap_or_default();
    let run_seconds = overrides.run_seconds.unwrap_or(level.run_seconds);
    let zones = if level.brokers == 3 {
        let zones = spec
            .rocketmq
            .zones
            .clone()
            .unwrap_or_else(|| DEFAULT_ZONES.iter().map(|z| z.to_string()).collect());
        let mut distinct = zones.clone();
        distinct.sort();
        distinct.dedup();
        if zones.len() != 3 || distinct.len() != 3 {
            return Err(invalid(format!(
                "spec.rocketmq.zones must name three distinct zones, got {zones:?}"
            )));
        }
        zones
    } else if spec.rocketmq.zones.is_some() {
        return Err(invalid(
            "spec.rocketmq.zones is only for level 12: remove it".into(),
        ));
    } else {
        Vec::new()
    };
    for (i, f) in spec.faults.iter().enumerate() {
        let end = f.at_seconds + f.duration_seconds.unwrap_or(0);
        if end > run_seconds {
            return Err(invalid(format!(
                "spec.faults[{i}] ends at {end} s, after the run budget of {run_seconds} s"
            )));
        }
        if f.component.is_some() == f.zone.is_some() {
            return Err(invalid(format!(
                "spec.faults[{i}] must target exactly one of component and zone"
            )));
        }
        if (f.action == FaultAction::Kill) == f.duration_seconds.is_some() {
            return Err(invalid(format!(
                "spec.faults[{i}]: kill takes no durationSeconds, pause and isolate need one"
            )));
        }
        if let Some(z) = &f.zone
            && !zones.contains(z)
        {
            return Err(invalid(format!(
                "spec.faults[{i}] targets zone {z}, which is not one of the Challenge's zones {zones:?}"
            )));
        }
    }
    Ok(ValidChallenge {
        name,
        namespace,
        owner,
        level,
        attempt: attempt.max(1),
        workload: spec.workload.clone(),
        run_seconds,
        provision_seconds: overrides
            .provision_seconds
            .unwrap_or(DEFAULT_PROVISION_SECONDS),
        messages: overrides.messages,
        rate_per_second: overrides.rate_per_second,
        faults: spec.faults.clone(),
        rocketmq_image: spec.rocketmq.image.clone(),
        rocketmq_version: spec.rocketmq.version.clone(),
        zones,
        verifier_image: spec.verifier.image.clone(),
    })
}

/// Label keys of Dojo objects.
pub const CHALLENGE_LABEL: &str = "dojo.rmq.dev/challenge";
pub const LEVEL_LABEL: &str = "dojo.rmq.dev/level";
pub const ATTEMPT_LABEL: &str = "dojo.rmq.dev/attempt";
/// Which broker of the DLedger group a pod is (level 12).
pub const BROKER_LABEL: &str = "dojo.rmq.dev/broker";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "dojo-operator";

impl ValidChallenge {
    /// `<challenge>-<suffix>`: every object's name.
    pub fn object_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// What selects one component's pods (stable for the Challenge's life).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CHALLENGE_LABEL.to_string(), self.name.clone()),
            (COMPONENT_LABEL.to_string(), component.to_string()),
        ])
    }

    /// Every label of an object of `component`.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector(component);
        l.extend([
            (
                "app.kubernetes.io/name".to_string(),
                "rocketmq-dojo".to_string(),
            ),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (
                "app.kubernetes.io/part-of".to_string(),
                "rocketmq-dojo".to_string(),
            ),
            (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
            (LEVEL_LABEL.to_string(), self.level.number.to_string()),
        ]);
        l
    }

    /// The broker StatefulSets: `<name>-broker`, or for the DLedger group
    /// `<name>-broker-<i>`, one per zone (see `build::brokers`).
    pub fn broker_sets(&self) -> Vec<String> {
        if self.zones.is_empty() {
            vec![self.object_name("broker")]
        } else {
            (0..self.zones.len())
                .map(|i| self.object_name(&format!("broker-{i}")))
                .collect()
        }
    }

    /// The broker pods, in broker order (each StatefulSet runs one).
    pub fn broker_pods(&self) -> Vec<String> {
        self.broker_sets()
            .into_iter()
            .map(|s| format!("{s}-0"))
            .collect()
    }

    /// What selects broker `i`'s pod: the StatefulSets of a DLedger group
    /// must not select each other's pods.
    pub fn broker_selector(&self, i: usize) -> BTreeMap<String, String> {
        let mut s = self.selector("broker");
        if !self.zones.is_empty() {
            s.insert(BROKER_LABEL.to_string(), i.to_string());
        }
        s
    }

    pub fn broker_labels(&self, i: usize) -> BTreeMap<String, String> {
        let mut l = self.labels("broker");
        l.extend(self.broker_selector(i));
        l
    }

    /// Only the challenge label: selects every pod of the Challenge.
    pub fn challenge_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(CHALLENGE_LABEL.to_string(), self.name.clone())])
    }

    /// The verifier Job of the current attempt (a Job's pod template is
    /// immutable, so each attempt gets its own).
    pub fn verifier_job_name(&self) -> String {
        self.object_name(&format!("verifier-{}", self.attempt))
    }

    pub fn namesrv_addr(&self) -> String {
        format!(
            "{}.{}.svc:{}",
            self.object_name("namesrv"),
            self.namespace,
            crate::build::NAMESRV_PORT
        )
    }

    pub fn world_url(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.object_name("world"),
            self.namespace,
            crate::build::WORLD_PORT
        )
    }

    pub fn otlp_endpoint(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.object_name("world"),
            self.namespace,
            crate::build::OTLP_PORT
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dojo_crds::{ChallengeSpec, Component};

    pub fn challenge(level: u8) -> Challenge {
        let yaml =
            format!("{{level: {level}, workload: {{image: registry.example/shop/orders:1.0}}}}");
        let spec: ChallengeSpec = serde_yaml::from_str(&yaml).unwrap();
        let mut ch = Challenge::new("orders", spec);
        ch.metadata.namespace = Some("team-a".into());
        ch.metadata.uid = Some("0000-1111".into());
        ch
    }

    #[test]
    fn level_defaults_fill_the_validated_type() {
        let v = validate(&challenge(3), 1).unwrap();
        assert_eq!(v.run_seconds, 90);
        assert_eq!(v.provision_seconds, DEFAULT_PROVISION_SECONDS);
        assert!(v.zones.is_empty());
        assert_eq!(v.owner.kind, "Challenge");
        assert_eq!(v.owner.controller, Some(true));
        let v12 = validate(&challenge(12), 2).unwrap();
        assert_eq!(v12.zones, ["zone-a", "zone-b", "zone-c"]);
        assert_eq!(v12.verifier_job_name(), "orders-verifier-2");
    }

    #[test]
    fn contradictions_are_refused_with_what_to_do() {
        let mut ch = challenge(3);
        ch.spec.faults.push(Fault {
            at_seconds: 85,
            action: FaultAction::Pause,
            component: Some(Component::Broker),
            zone: None,
            duration_seconds: Some(10),
        });
        let e = validate(&ch, 1).unwrap_err();
        assert!(
            e.to_string().contains("after the run budget of 90 s"),
            "{e}"
        );

        let mut ch = challenge(1);
        ch.spec.workload.env.push(dojo_crds::EnvVar {
            name: "WORLD_URL".into(),
            value: "x".into(),
        });
        assert!(
            validate(&ch, 1)
                .unwrap_err()
                .to_string()
                .contains("remove it")
        );

        let mut ch = challenge(3);
        ch.metadata.uid = None;
        assert!(matches!(
            validate(&ch, 1),
            Err(Error::MissingMetadata("uid"))
        ));
    }
}
