//! The `Challenge` resource: what a learner (or a game-day runbook) asks for,
//! and what the operator reports back. Field-level bounds live here as
//! schemars attributes; the cross-field CEL rules live in `schema.rs`.

use std::collections::BTreeMap;
use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The RocketMQ server image the levels are written against.
pub const DEFAULT_ROCKETMQ_IMAGE: &str = "apache/rocketmq:5.5.0";
pub const DEFAULT_ROCKETMQ_VERSION: &str = "5.5.0";
/// The verifier image built from this workspace (same version as the operator).
pub const DEFAULT_VERIFIER_IMAGE: &str = concat!(
    "localhost/rocketmq-dojo/verifier:",
    env!("CARGO_PKG_VERSION")
);

/// Environment variables the operator sets on the workload (the contract of
/// docs/DESIGN.md); a learner's `spec.workload.env` may not override them.
pub const RESERVED_ENV: [&str; 5] = [
    "NAMESRV_ADDR",
    "WORLD_URL",
    "DOJO_LEVEL",
    "DOJO_INSTANCE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// One RocketMQ exercise: a level, the learner's workload image, and
/// optionally a game-day fault schedule.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dojo.rmq.dev",
    version = "v1alpha1",
    kind = "Challenge",
    namespaced,
    shortname = "chal",
    status = "ChallengeStatus",
    doc = "A RocketMQ Dojo exercise: the operator deploys the level's RocketMQ cluster, the learner's workload and the verifier, and writes the verdict into the status.",
    printcolumn(name = "Level", type_ = "integer", json_path = ".spec.level"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Checks",
        type_ = "string",
        description = "checks passed / checks judged",
        json_path = ".status.checksSummary"
    ),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeSpec {
    /// The level to play, 1 to 12 (`dojo list`; docs/LEVELS.md in the project).
    #[schemars(range(min = 1, max = 12))]
    pub level: u8,
    /// The learner's program: its image and how to start it.
    pub workload: Workload,
    /// Changes to the level's defaults (time budget, scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Overrides>,
    /// A game-day fault schedule, played by the verifier in addition to the level's own faults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub faults: Vec<Fault>,
    /// The RocketMQ server to run.
    #[serde(default)]
    pub rocketmq: RocketMq,
    /// The verifier to run.
    #[serde(default)]
    pub verifier: Verifier,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// The learner's image, e.g. `registry.example/shop/orders:1.2`. Changing it starts a new attempt.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub args: Option<Vec<String>>,
    /// Extra environment; the contract variables (NAMESRV_ADDR, WORLD_URL, DOJO_LEVEL, DOJO_INSTANCE, OTEL_EXPORTER_OTLP_ENDPOINT) are set by the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvVar {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Requests and limits as in a Pod (`cpu`, `memory`, `ephemeral-storage`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// A Kubernetes quantity written as a string (`512Mi`) or a number (`1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "QuantityRepr", into = "String")]
pub struct Quantity(pub String);

#[derive(Deserialize)]
#[serde(untagged)]
enum QuantityRepr {
    Text(String),
    Int(i64),
    Float(f64),
}

impl From<QuantityRepr> for Quantity {
    fn from(r: QuantityRepr) -> Self {
        Quantity(match r {
            QuantityRepr::Text(s) => s,
            QuantityRepr::Int(i) => i.to_string(),
            QuantityRepr::Float(f) => f.to_string(),
        })
    }
}

impl From<Quantity> for String {
    fn from(q: Quantity) -> String {
        q.0
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true, "description": "a quantity such as 500m, 1, 256Mi" })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    /// Time budget of the verifier's run (default: the level's). Faults must end inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 3600))]
    pub run_seconds: Option<u32>,
    /// How long RocketMQ and the workload may take to become ready before the Challenge is in Error (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 3600))]
    pub provision_seconds: Option<u32>,
    /// Messages the scenario sends (default: the level's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub messages: Option<u32>,
    /// Offered load in messages per second (default: the level's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub rate_per_second: Option<u32>,
}

/// One scheduled fault: at `atSeconds` into the run, `action` hits a component or a zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Offset from the start of the verifier's run.
    #[schemars(range(min = 0, max = 3600))]
    pub at_seconds: u32,
    pub action: FaultAction,
    /// What to hit (exactly one of component and zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
    /// Which zone to hit (level 12 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub zone: Option<String>,
    /// How long a pause or an isolation lasts (a kill is instantaneous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub duration_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// Delete the pod (SIGKILL): it restarts.
    Kill,
    /// Freeze the process (SIGSTOP) for the duration.
    Pause,
    /// Cut it off the network for the duration.
    Isolate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Namesrv,
    Broker,
    /// The DLedger leader of the moment (level 12).
    BrokerLeader,
    Workload,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RocketMq {
    #[serde(default = "default_rocketmq_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    #[serde(default = "default_rocketmq_version")]
    #[schemars(length(min = 1, max = 64))]
    pub version: String,
    /// Level 12 only: the three zones (values of `topology.kubernetes.io/zone`) of the DLedger group; default zone-a, zone-b, zone-c.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 3), inner(length(min = 1, max = 63)))]
    pub zones: Option<Vec<String>>,
}

impl Default for RocketMq {
    fn default() -> Self {
        RocketMq {
            image: default_rocketmq_image(),
            version: default_rocketmq_version(),
            zones: None,
        }
    }
}

fn default_rocketmq_image() -> String {
    DEFAULT_ROCKETMQ_IMAGE.into()
}

fn default_rocketmq_version() -> String {
    DEFAULT_ROCKETMQ_VERSION.into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verifier {
    #[serde(default = "default_verifier_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            image: default_verifier_image(),
        }
    }
}

fn default_verifier_image() -> String {
    DEFAULT_VERIFIER_IMAGE.into()
}

/// Where a Challenge is; the operator moves it from what it observes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing created yet.
    #[default]
    Pending,
    /// Objects applied; RocketMQ and the workload are starting.
    Provisioning,
    /// RocketMQ and the workload are ready; the verifier is starting.
    Running,
    /// The verifier is driving the scenario.
    Verifying,
    Passed,
    Failed,
    /// The run could not proceed or could not be judged; the `Complete` condition says why and what to do.
    Error,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Running,
        Phase::Verifying,
        Phase::Passed,
        Phase::Failed,
        Phase::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Verifying => "Verifying",
            Phase::Passed => "Passed",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
        }
    }

    /// Passed, Failed and Error end an attempt.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Passed | Phase::Failed | Phase::Error)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeStatus {
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Runs started so far; a new one starts when `spec.workload.image` changes.
    #[serde(default)]
    pub attempts: u32,
    /// The workload image of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_image: Option<String>,
    /// The verifier's verdict of the current attempt: pass, fail or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    #[serde(default)]
    pub checks_passed: u32,
    #[serde(default)]
    pub checks_total: u32,
    /// `passed/total`, for `kubectl get chal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_summary: Option<String>,
    /// 0 to 100: the share of checks passed (in per cent), less 5 per attempt after the first, never below 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    /// Figures measured by the verifier (RTO, lost, duplicated, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<FigureStatus>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifying_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When an attempt first passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_at: Option<String>,
}

/// A Kubernetes-style condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One verifier check as reported (evidence capped by the verifier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub id: String,
    pub title: String,
    /// pass, fail or error.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FigureStatus {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Challenge {
    /// The phase, `Pending` before the operator wrote any status.
    pub fn phase(&self) -> Phase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
