//! The CRD as applied to a cluster: the schema derived from the types plus
//! the CEL rules (`x-kubernetes-validations`) that relate fields to each
//! other. The rules live in one place, here, and the level budgets in them
//! come from the level table, so the two cannot drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::challenge::{Challenge, RESERVED_ENV};
use crate::levels::{DEFAULT_ZONES, LEVELS};

/// Path of the committed CRD, relative to the crate.
pub const CRD_FILE: &str = "challenge.yaml";

fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// The run budget in CEL: the override, else the level's default.
fn budget_expr() -> String {
    let defaults: Vec<String> = LEVELS.iter().map(|l| l.run_seconds.to_string()).collect();
    format!(
        "(has(self.overrides) && has(self.overrides.runSeconds) ? self.overrides.runSeconds : [{}][self.level - 1])",
        defaults.join(", ")
    )
}

fn quoted_list(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", q.join(", "))
}

/// `(path into the schema, rules)`; `[]` steps into array items, `{}` into map values.
fn rules() -> Vec<(&'static [&'static str], Vec<Value>)> {
    let budget = budget_expr();
    let zones = quoted_list(&DEFAULT_ZONES);
    let image_rule = |what: &str| {
        rule(
            "self.matches('^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$')",
            &format!(
                "{what} must be an image reference such as registry.example/shop/orders:1.2 (letters, digits and . _ / : @ -, no spaces)"
            ),
        )
    };
    vec![
        (
            &[],
            vec![
                rule(
                    "size(self.metadata.name) <= 40",
                    "a Challenge's name is at most 40 characters: it prefixes the names of everything created for it",
                ),
                rule(
                    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                    "a Challenge's name starts with a lowercase letter and holds only lowercase letters, digits and '-' (it names Services)",
                ),
            ],
        ),
        (
            &["spec"],
            vec![
                json!({
                    "rule": format!("self.level < 1 || self.level > 12 || !has(self.faults) || self.faults.all(f, f.atSeconds + (has(f.durationSeconds) ? f.durationSeconds : 0) <= {budget})"),
                    // A static message: the apiserver prices a messageExpression
                    // over this rule far above its CEL cost budget.
                    "message": format!("every fault must end (atSeconds + durationSeconds) inside the run budget: spec.overrides.runSeconds if set, else the level's default (levels 1 to 12: {} s)", LEVELS.iter().map(|l| l.run_seconds.to_string()).collect::<Vec<_>>().join(", ")),
                    "fieldPath": ".faults",
                }),
                json!({
                    "rule": "self.level == 12 || !has(self.rocketmq) || !has(self.rocketmq.zones)",
                    "message": "spec.rocketmq.zones is only for level 12, the multi-zone level: remove it",
                    "fieldPath": ".rocketmq.zones",
                }),
                json!({
                    "rule": "self.level == 12 || !has(self.faults) || self.faults.all(f, !has(f.zone) && (!has(f.component) || f.component != 'broker-leader'))",
                    "message": "zone faults and the broker-leader target need the DLedger group of level 12: target namesrv, broker or workload instead",
                    "fieldPath": ".faults",
                }),
                json!({
                    "rule": format!("!has(self.faults) || self.faults.all(f, !has(f.zone) || f.zone in (has(self.rocketmq) && has(self.rocketmq.zones) ? self.rocketmq.zones : {zones}))"),
                    "message": format!("a fault's zone must be one of spec.rocketmq.zones (by default {})", DEFAULT_ZONES.join(", ")),
                    "fieldPath": ".faults",
                }),
                rule(
                    "self.level == oldSelf.level",
                    "spec.level cannot change: create a new Challenge to play another level",
                ),
                rule(
                    "has(self.faults) == has(oldSelf.faults) && (!has(self.faults) || self.faults == oldSelf.faults)",
                    "spec.faults cannot change once a Challenge exists: a schedule changed mid-run would judge nothing; delete and re-create the Challenge",
                ),
                rule(
                    "has(self.overrides) == has(oldSelf.overrides) && (!has(self.overrides) || self.overrides == oldSelf.overrides)",
                    "spec.overrides cannot change once a Challenge exists: delete and re-create the Challenge",
                ),
                rule(
                    "has(self.rocketmq) == has(oldSelf.rocketmq) && (!has(self.rocketmq) || self.rocketmq == oldSelf.rocketmq)",
                    "spec.rocketmq cannot change once a Challenge exists (the cluster would be rebuilt mid-run): delete and re-create the Challenge",
                ),
            ],
        ),
        (
            &["spec", "faults", "[]"],
            vec![
                rule(
                    "has(self.component) != has(self.zone)",
                    "a fault targets exactly one of component and zone",
                ),
                rule(
                    "self.action != 'kill' || !has(self.durationSeconds)",
                    "a kill is instantaneous (the pod restarts): remove durationSeconds",
                ),
                rule(
                    "self.action == 'kill' || has(self.durationSeconds)",
                    "pause and isolate faults need durationSeconds: how long the fault lasts",
                ),
            ],
        ),
        (
            &["spec", "rocketmq", "zones"],
            vec![rule(
                "self.all(z, self.exists_one(y, y == z))",
                "spec.rocketmq.zones must name three distinct zones",
            )],
        ),
        (
            &["spec", "rocketmq", "image"],
            vec![image_rule("spec.rocketmq.image")],
        ),
        (
            &["spec", "verifier", "image"],
            vec![image_rule("spec.verifier.image")],
        ),
        (
            &["spec", "workload", "image"],
            vec![image_rule("spec.workload.image")],
        ),
        (
            &["spec", "workload", "env", "[]", "name"],
            vec![rule(
                &format!("!(self in {})", quoted_list(&RESERVED_ENV)),
                &format!(
                    "this variable is set by the operator (the environment contract: {}): remove it from spec.workload.env",
                    RESERVED_ENV.join(", ")
                ),
            )],
        ),
        (
            &["spec", "workload", "resources", "requests"],
            vec![rule(
                "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",
                "resources name cpu, memory or ephemeral-storage only",
            )],
        ),
        (
            &["spec", "workload", "resources", "limits"],
            vec![rule(
                "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",
                "resources name cpu, memory or ephemeral-storage only",
            )],
        ),
    ]
}

fn step<'a>(schema: &'a mut Value, path: &[&str]) -> &'a mut Value {
    let mut at = schema;
    for p in path {
        at = match *p {
            "[]" => &mut at["items"],
            "{}" => &mut at["additionalProperties"],
            name => &mut at["properties"][name],
        };
        assert!(
            at.is_object(),
            "the schema has no {path:?}: a CEL rule points at a field that was renamed"
        );
    }
    at
}

/// The full CRD: derived schema plus CEL rules.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(Challenge::crd()).expect("a CRD serialises");
    let schema = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    // CEL cost is estimated from declared sizes: bound the name (the only
    // metadata field a CRD schema may constrain) so the name rules fit.
    schema["properties"]["metadata"] = json!({ "type": "object", "properties": { "name": { "type": "string", "maxLength": 63 } } });
    // The apiserver bounds CEL cost by the sizes of maps too.
    for p in [
        ["spec", "workload", "resources", "requests"],
        ["spec", "workload", "resources", "limits"],
    ] {
        step(schema, &p)["maxProperties"] = json!(3);
    }
    for (path, rules) in rules() {
        let at = step(schema, path);
        at["x-kubernetes-validations"] = Value::Array(rules);
    }
    serde_json::from_value(crd).expect("the CRD still parses after adding rules")
}

/// The committed YAML (`crds/challenge.yaml`), with a header saying how to regenerate it.
pub fn crd_yaml() -> String {
    let body = serde_yaml::to_string(&crd()).expect("a CRD serialises to YAML");
    format!(
        "# Generated by `make crds` (cargo run -p dojo-crds --bin crdgen) from crds/src: do not edit.\n{body}"
    )
}

/// Applies the CRD (server-side apply as `dojo`) and waits until the API
/// server serves it: what tests and `dojo up --kube` need before creating Challenges.
pub async fn install(client: kube::Client) -> Result<(), InstallError> {
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("dojo").force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(InstallError::Apply)?;
    let established = await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(std::time::Duration::from_secs(30), established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(InstallError::Wait(e.to_string())),
        Err(_) => Err(InstallError::Wait(
            "not Established after 30s: see the kube-apiserver log".into(),
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("applying the Challenge CRD (does the client have cluster-admin?): {0}")]
    Apply(#[source] kube::Error),
    #[error("waiting for the Challenge CRD to be served: {0}")]
    Wait(String),
}
