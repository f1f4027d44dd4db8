//! `dojo-operator`: the Challenge controller. A reconcile is a pipeline —
//! validate (`validate`), build (`build`), apply and observe (`reconcile`),
//! judge (`status`) — with one error type (`error`), Prometheus metrics
//! (`metrics`), and Lease-based leader election (`leader`).

pub mod build;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod validate;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use dojo_crds::Challenge;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

pub use error::Error;
use leader::{LeaderElector, LeaseConfig};
use metrics::Metrics;
use reconcile::{AppliedCache, Cache, Context};
use validate::{CHALLENGE_LABEL, MANAGED_BY_LABEL, MANAGER};

/// How the operator runs (the binary's flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    pub lease: LeaseConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub http_addr: SocketAddr,
    pub report_grace: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// What the HTTP endpoints read.
#[derive(Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    store: OnceLock<Store<Challenge>>,
    /// The API server answered (the first Lease round went through).
    ready: AtomicBool,
}

/// Serves the HTTP endpoints, then runs the controller while this replica
/// holds the Lease, until `shutdown` resolves: then in-flight reconciles
/// finish, the Lease is released for the standby and `run` returns Ok.
/// Returns an error when leadership is lost (the process should exit and
/// be restarted, as client-go operators do).
pub async fn run(
    client: Client,
    opts: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let shutdown = shutdown.boxed().shared();
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(opts.http_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: opts.http_addr,
            source,
        })?;
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics /healthz /readyz");
    tokio::spawn(serve(listener, shared.clone()));

    let elector = LeaderElector::new(client.clone(), opts.lease.clone());
    // Ready once the API server is reachable, leader or standby.
    elector.try_acquire_or_renew().await?;
    shared.ready.store(true, Ordering::SeqCst);
    info!(identity = %opts.lease.identity, lease = %format!("{}/{}", opts.lease.namespace, opts.lease.name), "waiting for leadership");
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = shutdown.clone() => {
            // The first round above may have taken the Lease.
            elector.release().await?;
            return Ok(());
        }
    }
    shared.metrics.leader.set(1);
    info!(identity = %opts.lease.identity, "leading: reconciling Challenges");

    let controller = controller(client, &opts, shared.clone(), shutdown.clone());
    tokio::select! {
        () = controller => {
            shared.metrics.leader.set(0);
            if shutdown.peek().is_none() {
                return Err(RunError::ControllerStopped);
            }
            elector.release().await?;
            info!(identity = %opts.lease.identity, "released the Lease: stopped");
            Ok(())
        }
        lost = elector.hold() => {
            shared.metrics.leader.set(0);
            Err(RunError::LeaseLost(lost.0))
        }
    }
}

/// An `Api` over `ns`, or over all namespaces.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Only Dojo's own objects are watched, not every pod of the cluster.
fn mine() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"))
}

/// With `reapply`, a deletion makes the owner's next reconcile apply
/// everything again (the object is one `apply_all` writes).
fn forgetting<K: kube::Resource>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    applied: Arc<AppliedCache>,
    reapply: bool,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> {
    events.map_ok(move |event| {
        if let (true, watcher::Event::Delete(gone)) = (reapply, &event) {
            applied.forget(gone);
        }
        event
    })
}

/// Metadata-only events of an owned kind whose contents no reconcile reads
/// (it only needs to know that one changed or went): no bodies held or decoded.
fn owned<K>(
    client: &Client,
    opts: &Options,
    applied: &Arc<AppliedCache>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
{
    let events = watcher(
        scoped::<PartialObjectMeta<K>>(client, &opts.namespace),
        mine(),
    )
    .default_backoff();
    forgetting(events, applied.clone(), true).touched_objects()
}

/// Events of a kind whose status the reconciles judge, kept in `writer`'s
/// store, which `reconcile::observe` reads instead of asking the API
/// server. Only what it reads is kept: no managedFields, no pod templates.
fn cached<K>(
    client: &Client,
    opts: &Options,
    applied: &Arc<AppliedCache>,
    writer: Writer<K>,
    reapply: bool,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + reconcile::Trim
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let events = watcher(scoped::<K>(client, &opts.namespace), mine())
        .default_backoff()
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.trim();
        });
    forgetting(events, applied.clone(), reapply)
        .reflect(writer)
        .touched_objects()
}

async fn controller(
    client: Client,
    opts: &Options,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(opts.lease.identity.clone()),
    };
    let applied = Arc::new(AppliedCache::default());
    let (statefulsets, sts_writer) = reflector::store();
    let (deployments, deployment_writer) = reflector::store();
    let (jobs, job_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: shared.metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        report_grace: opts.report_grace,
        applied: applied.clone(),
        cache: Cache {
            statefulsets,
            deployments,
            jobs,
            pods,
        },
    });
    let (c, a) = (&client, &applied);
    // One watch per kind the Challenge owns, whatever the number of
    // Challenges; a deleted object comes back within a reconcile.
    let controller = Controller::new(
        scoped::<Challenge>(c, &opts.namespace),
        watcher::Config::default(),
    )
    .owns_stream(cached::<StatefulSet>(c, opts, a, sts_writer, true))
    .owns_stream(cached::<Deployment>(c, opts, a, deployment_writer, true))
    // The verifier Job is applied by the phase logic, not by `apply_all`.
    .owns_stream(cached::<Job>(c, opts, a, job_writer, false))
    .owns_stream(owned::<Service>(c, opts, a))
    .owns_stream(owned::<ConfigMap>(c, opts, a))
    .owns_stream(owned::<ServiceAccount>(c, opts, a))
    .owns_stream(owned::<Role>(c, opts, a))
    .owns_stream(owned::<RoleBinding>(c, opts, a))
    .owns_stream(owned::<NetworkPolicy>(c, opts, a))
    .owns_stream(owned::<PodDisruptionBudget>(c, opts, a))
    // Pods are owned by ReplicaSets and Jobs, not by the Challenge:
    // their label names the Challenge (the verifier's report and image
    // pull errors show up on pods first).
    .watches_stream(cached::<Pod>(c, opts, a, pod_writer, false), |pod: Pod| {
        let ns = pod.namespace();
        pod.labels().get(CHALLENGE_LABEL).map(|name| {
            let r = ObjectRef::<Challenge>::new(name);
            match ns {
                Some(ns) => r.within(&ns),
                None => r,
            }
        })
    })
    // A pod's start is a burst of status updates: one reconcile for the lot.
    .with_config(
        kube::runtime::controller::Config::default()
            .concurrency(opts.concurrency)
            .debounce(Duration::from_millis(500)),
    )
    .graceful_shutdown_on(shutdown);
    let _ = shared.store.set(controller.store());
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "controller");
            }
        })
        .await;
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move { s.metrics.render(s.store.get()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<Shared>>| async move {
                if s.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the API server",
                    )
                }
            }),
        )
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the HTTP server stopped");
    }
}

/// Why `run` returned.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("listening on {addr}: {source} (choose another --http-addr)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
    #[error("lost leadership ({0}): exiting so that a restart re-joins the election")]
    LeaseLost(String),
    #[error("the controller stopped: its watch of Challenges ended")]
    ControllerStopped,
}
