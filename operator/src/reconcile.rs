//! One reconcile: fetch (the controller hands us the Challenge), validate,
//! build, server-side apply, observe, then patch the status computed from
//! what was observed. Level-triggered and idempotent: running it twice in a
//! row changes nothing the second time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dojo_crds::{Challenge, ChallengeStatus, Phase};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span, warn};

use crate::build::{Objects, build};
use crate::error::Error;
use crate::metrics::{ComponentReady, Metrics};
use crate::status::{self, Decision, JobObservation, Observation, VerifierPod, Waiting};
use crate::validate::{
    ATTEMPT_LABEL, CHALLENGE_LABEL, COMPONENT_LABEL, MANAGER, ValidChallenge, validate,
};

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub report_grace: Duration,
    pub applied: Arc<AppliedCache>,
    pub cache: Cache,
}

/// What the watches hold of the objects whose status decides the phase:
/// a reconcile reads them here instead of asking the API server (their
/// changes are what trigger it in the first place).
pub struct Cache {
    pub statefulsets: Store<StatefulSet>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
}

impl Cache {
    /// Until every watch has listed once, an absent object may exist: a
    /// Verifying Challenge would look unprovisioned after a restart.
    async fn ready(&self) -> Result<(), Error> {
        let stopped = |_| Error::CacheStopped;
        self.statefulsets
            .wait_until_ready()
            .await
            .map_err(stopped)?;
        self.deployments.wait_until_ready().await.map_err(stopped)?;
        self.jobs.wait_until_ready().await.map_err(stopped)?;
        self.pods.wait_until_ready().await.map_err(stopped)
    }

    /// The pods in `ns` carrying every label of `labels`.
    fn pods(&self, ns: &str, labels: &[(&str, &str)]) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| {
            p.namespace().as_deref() == Some(ns)
                && labels
                    .iter()
                    .all(|(k, v)| p.labels().get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// Drops what `observe` never reads from a cached object: the pod
/// templates and pod specs are most of their size.
pub trait Trim {
    fn trim(&mut self);
}

macro_rules! trim_pod_template {
    ($($kind:ty),*) => {$(
        impl Trim for $kind {
            fn trim(&mut self) {
                if let Some(spec) = self.spec.as_mut() {
                    spec.template = Default::default();
                }
            }
        }
    )*};
}

trim_pod_template!(StatefulSet, Deployment, Job);

impl Trim for Pod {
    fn trim(&mut self) {
        self.spec = None;
    }
}

fn cached<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    ns: &str,
    name: &str,
) -> Option<Arc<K>> {
    store.get(&ObjectRef::new(name).within(ns))
}

/// What was last applied per Challenge, to skip re-applying identical
/// objects on every status change of a pod.
#[derive(Default)]
pub struct AppliedCache(Mutex<HashMap<String, Applied>>);

/// The spec, attempt and stage a Challenge's objects were last applied for.
#[derive(Clone, Debug, PartialEq)]
struct Applied {
    uid: String,
    generation: Option<i64>,
    attempt: u32,
    verifying: bool,
    at: Instant,
}

/// Even when nothing changed, objects are re-applied this often: a
/// deletion is seen at once (the owned kinds are watched), but an edit by
/// hand or a deletion missed while a watch restarted comes back only so.
const REAPPLY_EVERY: Duration = Duration::from_secs(300);

impl AppliedCache {
    fn is_fresh(&self, key: &str, this: &Applied) -> bool {
        self.0.lock().unwrap().get(key).is_some_and(|a| {
            (&a.uid, a.generation, a.attempt, a.verifying)
                == (&this.uid, this.generation, this.attempt, this.verifying)
                && a.at.elapsed() < REAPPLY_EVERY
        })
    }

    fn record(&self, key: String, this: Applied) {
        let mut applied = self.0.lock().unwrap();
        // Expired entries (deleted Challenges among them) are useless.
        applied.retain(|_, a| a.at.elapsed() < REAPPLY_EVERY);
        applied.insert(key, this);
    }

    /// An object of a Challenge was deleted: its next reconcile applies
    /// everything again instead of trusting what was last applied.
    pub fn forget<K: Resource>(&self, gone: &K) {
        let Some(owner) = gone
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == Challenge::kind(&()))
        else {
            return;
        };
        let key = format!(
            "{}/{}",
            gone.meta().namespace.as_deref().unwrap_or_default(),
            owner.name
        );
        self.0.lock().unwrap().remove(&key);
    }
}

/// The controller's entry point: the pipeline plus metrics and a Warning
/// Event for errors that will be retried.
pub async fn reconcile(ch: Arc<Challenge>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", namespace = %ch.namespace().unwrap_or_default(), name = %ch.name_any());
    let start = Instant::now();
    let result = reconcile_inner(&ch, &ctx).instrument(span.clone()).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[label])
        .observe(start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let _enter = span.enter();
        warn!(error = %e, reason = e.reason(), "reconcile failed; retrying");
        publish(&ctx, &ch, EventType::Warning, e.reason(), e.to_string()).await;
    }
    result
}

/// Retry transient failures soon, with a little spread.
pub fn error_policy(_ch: Arc<Challenge>, _e: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_inner(ch: &Challenge, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let prev = ch.status.clone().unwrap_or_default();
    let image = ch.spec.workload.image.clone();
    let new_attempt = prev.workload_image.as_deref() != Some(image.as_str());
    let mut status = if new_attempt {
        fresh_attempt(&prev, image, now)
    } else {
        prev.clone()
    };
    let generation = ch.metadata.generation;
    status.observed_generation = generation;

    let v = match validate(ch, status.attempts) {
        Ok(v) => v,
        Err(e) if e.is_terminal() => {
            end_in_error(&mut status, &e, generation, now);
            finish(ctx, ch, &prev, &status, Some(&e)).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    if new_attempt {
        ctx.metrics
            .attempts
            .with_label_values(&[&v.level.number.to_string()])
            .inc();
        if v.attempt > 1 {
            delete_old_verifiers(ctx, &v).await?;
        }
    }
    ctx.cache.ready().await?;
    let verifying = cached(&ctx.cache.jobs, &v.namespace, &v.verifier_job_name()).is_some();
    let objects = build(&v, verifying);
    let key = format!("{}/{}", v.namespace, v.name);
    let this = Applied {
        uid: v.owner.uid.clone(),
        generation,
        attempt: v.attempt,
        verifying,
        at: Instant::now(),
    };
    if !ctx.applied.is_fresh(&key, &this) {
        apply_all(ctx, &objects).await?;
        ctx.applied.record(key, this);
    }
    status::set_condition(
        &mut status.conditions,
        "Provisioned",
        true,
        "Applied",
        "every object of the Challenge is applied".into(),
        generation,
        now,
    );
    ctx.metrics.set_components(
        &v.namespace,
        &v.name,
        v.level.number,
        components(&ctx.cache, &v),
    );

    if status.phase.is_final() {
        finish(ctx, ch, &prev, &status, None).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let obs = observe(&ctx.cache, &v);
    let decision = status::decide(&status, &v, &obs, now, ctx.report_grace);
    if decision.create_job {
        apply(ctx, &objects.verifier_job).await?;
    }
    apply_decision(&mut status, &v, &obs, &decision, generation, now);
    if let Some(report) = &decision.report {
        let level = v.level.number.to_string();
        for c in &report.checks {
            ctx.metrics
                .checks
                .with_label_values(&[level.as_str(), c.id.as_str(), c.verdict.as_str()])
                .inc();
        }
    }
    if decision.phase.is_final() {
        ctx.metrics
            .verdicts
            .with_label_values(&[&v.level.number.to_string(), decision.phase.as_str()])
            .inc();
    }
    if decision.phase == Phase::Passed
        && prev.passed_at.is_none()
        && let Some(first) = status
            .started_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
    {
        let secs = now.duration_since(first).as_secs_f64().max(0.0);
        ctx.metrics
            .time_to_pass
            .with_label_values(&[&v.level.number.to_string()])
            .observe(secs);
    }
    finish(ctx, ch, &prev, &status, decision.error.as_ref()).await?;
    Ok(Action::requeue(decision.requeue))
}

/// A new attempt keeps the history (attempts, first start, first pass) and
/// forgets the previous run's verdict.
fn fresh_attempt(prev: &ChallengeStatus, image: String, now: Timestamp) -> ChallengeStatus {
    ChallengeStatus {
        phase: Phase::Pending,
        attempts: prev.attempts + 1,
        workload_image: Some(image),
        started_at: prev.started_at.clone().or_else(|| Some(now.to_string())),
        attempt_started_at: Some(now.to_string()),
        passed_at: prev.passed_at.clone(),
        conditions: prev.conditions.clone(),
        ..Default::default()
    }
}

fn end_in_error(status: &mut ChallengeStatus, e: &Error, generation: Option<i64>, now: Timestamp) {
    status.phase = Phase::Error;
    status.finished_at = Some(now.to_string());
    status::set_condition(
        &mut status.conditions,
        "Complete",
        true,
        e.reason(),
        e.to_string(),
        generation,
        now,
    );
}

fn apply_decision(
    status: &mut ChallengeStatus,
    v: &ValidChallenge,
    obs: &Observation,
    d: &Decision,
    generation: Option<i64>,
    now: Timestamp,
) {
    let was = status.phase;
    status.phase = d.phase;
    let stamp = || Some(now.to_string());
    match d.phase {
        Phase::Running if status.running_at.is_none() => status.running_at = stamp(),
        Phase::Verifying if status.verifying_at.is_none() => {
            status.running_at = status.running_at.clone().or_else(stamp);
            status.verifying_at = stamp();
        }
        _ => {}
    }
    let ready = obs.job.is_some()
        || (obs.namesrv_ready && obs.brokers_ready >= v.level.brokers as i32 && obs.workload_ready);
    let (reason, msg) = if ready {
        ("Ready", "RocketMQ and the workload are ready".to_string())
    } else {
        (
            "Provisioning",
            "waiting for RocketMQ and the workload".to_string(),
        )
    };
    status::set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        msg,
        generation,
        now,
    );
    if let Some(report) = &d.report {
        status::record_report(status, report);
    }
    if d.phase.is_final() && !was.is_final() {
        status.finished_at = stamp();
        if d.phase == Phase::Passed && status.passed_at.is_none() {
            status.passed_at = stamp();
        }
        let (reason, msg) = match (&d.error, d.phase) {
            (Some(e), _) => (e.reason(), e.to_string()),
            (None, Phase::Passed) => (
                "Passed",
                format!(
                    "{} checks passed",
                    status.checks_summary.clone().unwrap_or_default()
                ),
            ),
            (None, _) => (
                "Failed",
                format!(
                    "{} checks passed: see status.checks for the evidence",
                    status.checks_summary.clone().unwrap_or_default()
                ),
            ),
        };
        status::set_condition(
            &mut status.conditions,
            "Complete",
            true,
            reason,
            msg,
            generation,
            now,
        );
    } else if !d.phase.is_final() {
        status::set_condition(
            &mut status.conditions,
            "Complete",
            false,
            d.phase.as_str(),
            format!("attempt {} is {}", v.attempt, d.phase),
            generation,
            now,
        );
    }
}

/// Patches the status if it changed and records the phase change as an Event.
async fn finish(
    ctx: &Context,
    ch: &Challenge,
    prev: &ChallengeStatus,
    status: &ChallengeStatus,
    error: Option<&Error>,
) -> Result<(), Error> {
    if prev == status {
        return Ok(());
    }
    let api: Api<Challenge> =
        Api::namespaced(ctx.client.clone(), &ch.namespace().unwrap_or_default());
    let patch = json!({ "status": merge_patch(&serde_json::to_value(prev).unwrap_or_default(), &serde_json::to_value(status).unwrap_or_default()) });
    ctx.metrics.api_requests.with_label_values(&["patch"]).inc();
    api.patch_status(
        &ch.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube("patching the Challenge status"))?;
    if prev.phase != status.phase || prev.attempts != status.attempts {
        info!(from = %prev.phase, to = %status.phase, attempt = status.attempts, "phase changed");
        let (kind, reason, note) = match error {
            Some(e) => (EventType::Warning, e.reason().to_string(), e.to_string()),
            None => (
                EventType::Normal,
                status.phase.as_str().to_string(),
                format!(
                    "attempt {}: {} -> {}",
                    status.attempts, prev.phase, status.phase
                ),
            ),
        };
        publish(ctx, ch, kind, &reason, note).await;
    }
    Ok(())
}

/// A JSON merge patch from `old` to `new`: fields that disappeared become null.
fn merge_patch(old: &Value, new: &Value) -> Value {
    let mut patch = new.clone();
    if let (Some(old), Some(p)) = (old.as_object(), patch.as_object_mut()) {
        for k in old.keys() {
            p.entry(k.clone()).or_insert(Value::Null);
        }
    }
    patch
}

async fn publish(ctx: &Context, ch: &Challenge, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics
        .api_requests
        .with_label_values(&["create"])
        .inc();
    if let Err(e) = ctx.recorder.publish(&event, &ch.object_ref(&())).await {
        warn!(error = %e, "could not publish an Event");
    }
}

async fn apply<K>(ctx: &Context, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    ctx.metrics.api_requests.with_label_values(&["apply"]).inc();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(Error::kube(format!("applying {} {name}", K::kind(&()))))
}

async fn apply_all(ctx: &Context, o: &Objects) -> Result<(), Error> {
    apply(ctx, &o.namesrv_service).await?;
    apply(ctx, &o.namesrv).await?;
    apply(ctx, &o.broker_config).await?;
    apply(ctx, &o.broker_service).await?;
    for broker in &o.brokers {
        apply(ctx, broker).await?;
    }
    if let Some(pdb) = &o.broker_pdb {
        apply(ctx, pdb).await?;
    }
    apply(ctx, &o.verifier_account).await?;
    apply(ctx, &o.verifier_role).await?;
    apply(ctx, &o.verifier_binding).await?;
    apply(ctx, &o.world_service).await?;
    apply(ctx, &o.isolation).await?;
    apply(ctx, &o.verifier_apiserver).await?;
    apply(ctx, &o.workload).await
}

/// Jobs of earlier attempts go (with their pods): the world Service must
/// select only the current verifier.
async fn delete_old_verifiers(ctx: &Context, v: &ValidChallenge) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let lp = ListParams::default().labels(&format!(
        "{CHALLENGE_LABEL}={},{COMPONENT_LABEL}=verifier,{ATTEMPT_LABEL}!={}",
        v.name, v.attempt
    ));
    ctx.metrics.api_requests.with_label_values(&["list"]).inc();
    for job in jobs
        .list(&lp)
        .await
        .map_err(Error::kube("listing old verifier Jobs"))?
        .items
    {
        ctx.metrics
            .api_requests
            .with_label_values(&["delete"])
            .inc();
        match jobs
            .delete(&job.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "deleting the old verifier Job {}",
                    job.name_any()
                ))(e));
            }
        }
    }
    Ok(())
}

fn waiting_of(pod: &Pod) -> Option<Waiting> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        Some(Waiting {
            reason: w.reason.clone().unwrap_or_default(),
            message: w.message.clone().unwrap_or_default(),
        })
    })
}

fn ready_replicas(cache: &Cache, ns: &str, name: &str) -> i32 {
    cached(&cache.statefulsets, ns, name)
        .and_then(|s| s.status.as_ref()?.ready_replicas)
        .unwrap_or(0)
}

/// Ready replicas of the StatefulSet's current template only: 0 while a
/// new attempt rolls its pod.
fn rolled_out_ready(cache: &Cache, ns: &str, name: &str) -> i32 {
    cached(&cache.statefulsets, ns, name).map_or(0, |s| {
        let st = s.status.clone().unwrap_or_default();
        let current = st.observed_generation >= s.metadata.generation
            && st.update_revision.is_some()
            && st.current_revision == st.update_revision;
        if current {
            st.ready_replicas
                .unwrap_or(0)
                .min(st.updated_replicas.unwrap_or(0))
        } else {
            0
        }
    })
}

/// Each StatefulSet's readiness for `dojo_component_ready`: unlike
/// `observe`'s, also while the verifier's faults take them down.
fn components(cache: &Cache, v: &ValidChallenge) -> Vec<ComponentReady> {
    let ready = |name: &str| ready_replicas(cache, &v.namespace, name) >= 1;
    let namesrv = ComponentReady {
        component: "namesrv",
        zone: String::new(),
        ready: ready(&v.object_name("namesrv")),
    };
    let brokers = v
        .broker_sets()
        .into_iter()
        .enumerate()
        .map(|(i, name)| ComponentReady {
            component: "broker",
            zone: v.zones.get(i).cloned().unwrap_or_default(),
            ready: ready(&name),
        });
    std::iter::once(namesrv).chain(brokers).collect()
}

fn observe(cache: &Cache, v: &ValidChallenge) -> Observation {
    let ns = v.namespace.as_str();
    if let Some(job) = cached(&cache.jobs, ns, &v.verifier_job_name()) {
        // RocketMQ's and the workload's readiness no longer decide the
        // phase: the verifier's faults take them down on purpose.
        let job = Some(observe_job(cache, v, &job));
        return Observation {
            namesrv_ready: true,
            brokers_ready: v.level.brokers.into(),
            workload_ready: true,
            job,
            ..Default::default()
        };
    }
    let namesrv_ready = ready_replicas(cache, ns, &v.object_name("namesrv")) >= 1;
    let brokers_ready = v
        .broker_sets()
        .iter()
        .map(|name| rolled_out_ready(cache, ns, name))
        .sum();
    let workload_ready =
        cached(&cache.deployments, ns, &v.object_name("workload")).is_some_and(|d| {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            st.observed_generation >= d.metadata.generation
                && st.updated_replicas.unwrap_or(0) >= want
                && st.available_replicas.unwrap_or(0) >= want
        });
    let workload_waiting = if workload_ready {
        None
    } else {
        let attempt = v.attempt.to_string();
        cache
            .pods(
                ns,
                &[
                    (CHALLENGE_LABEL, &v.name),
                    (COMPONENT_LABEL, "workload"),
                    (ATTEMPT_LABEL, &attempt),
                ],
            )
            .iter()
            .find_map(|p| waiting_of(p))
    };
    Observation {
        namesrv_ready,
        brokers_ready,
        workload_ready,
        workload_waiting,
        job: None,
    }
}

fn observe_job(cache: &Cache, v: &ValidChallenge, job: &Job) -> JobObservation {
    let failed = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default()
                    )
                })
        });
    let attempt = v.attempt.to_string();
    let pods = cache.pods(
        &v.namespace,
        &[
            (CHALLENGE_LABEL, &v.name),
            (COMPONENT_LABEL, "verifier"),
            (ATTEMPT_LABEL, &attempt),
        ],
    );
    // The newest pod speaks for the Job (backoffLimit 0: there is one).
    let pod = pods
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
        .map(|p| {
            let name = p.name_any();
            let container = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == "verifier"))
                .cloned();
            let state = container.and_then(|c| c.state);
            if let Some(t) = state.as_ref().and_then(|s| s.terminated.as_ref()) {
                VerifierPod::Terminated {
                    name,
                    message: t.message.clone(),
                    finished_at: t.finished_at.as_ref().map(|f| f.0),
                }
            } else if state.as_ref().is_some_and(|s| s.running.is_some()) {
                VerifierPod::Running { name }
            } else {
                VerifierPod::Pending {
                    waiting: waiting_of(&p),
                    name,
                }
            }
        });
    JobObservation {
        name: job.name_any(),
        failed,
        pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::challenge;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use kube::runtime::{reflector, watcher};

    #[test]
    fn components_name_each_brokers_zone_and_see_it_down() {
        let v = validate(&challenge(12), 1).unwrap();
        let (statefulsets, mut writer) = reflector::store();
        for (name, ready) in [
            ("orders-namesrv", 1),
            ("orders-broker-0", 1),
            ("orders-broker-1", 0),
        ] {
            let mut sts = StatefulSet {
                status: Some(StatefulSetStatus {
                    ready_replicas: Some(ready),
                    ..Default::default()
                }),
                ..Default::default()
            };
            sts.metadata.name = Some(name.into());
            sts.metadata.namespace = Some("team-a".into());
            writer.apply_watcher_event(&watcher::Event::Apply(sts));
        }
        let cache = Cache {
            statefulsets,
            deployments: reflector::store().0,
            jobs: reflector::store().0,
            pods: reflector::store().0,
        };
        let seen: Vec<(&str, String, bool)> = components(&cache, &v)
            .into_iter()
            .map(|c| (c.component, c.zone, c.ready))
            .collect();
        let c = |component, zone: &str, ready| (component, zone.to_string(), ready);
        // broker-2 has no StatefulSet yet: down too.
        assert_eq!(
            seen,
            [
                c("namesrv", "", true),
                c("broker", "zone-a", true),
                c("broker", "zone-b", false),
                c("broker", "zone-c", false)
            ]
        );
    }
}
