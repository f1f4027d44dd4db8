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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use dojo_crds::Challenge;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

pub use error::Error;
use leader::{LeaderElector, LeaseConfig};
use metrics::Metrics;
use reconcile::Context;
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
/// holds the Lease. Returns an error when leadership is lost (the process
/// should exit and be restarted, as client-go operators do).
pub async fn run(client: Client, opts: Options) -> Result<(), RunError> {
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(opts.http_addr).await.map_err(|source| RunError::Listen { addr: opts.http_addr, source })?;
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics /healthz /readyz");
    tokio::spawn(serve(listener, shared.clone()));

    let elector = LeaderElector::new(client.clone(), opts.lease.clone());
    // Ready once the API server is reachable, leader or standby.
    elector.try_acquire_or_renew().await?;
    shared.ready.store(true, Ordering::SeqCst);
    info!(identity = %opts.lease.identity, lease = %format!("{}/{}", opts.lease.namespace, opts.lease.name), "waiting for leadership");
    elector.acquire().await?;
    shared.metrics.leader.set(1);
    info!(identity = %opts.lease.identity, "leading: reconciling Challenges");

    let controller = controller(client, &opts, shared.clone());
    tokio::select! {
        () = controller => Err(RunError::ControllerStopped),
        lost = elector.hold() => {
            shared.metrics.leader.set(0);
            Err(RunError::LeaseLost(lost.0))
        }
    }
}

async fn controller(client: Client, opts: &Options, shared: Arc<Shared>) {
    let api = |c: &Client| -> Api<Challenge> {
        match &opts.namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    fn owned<K: kube::Resource<DynamicType = ()>>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Only Dojo's own objects are cached, not every pod of the cluster.
    let mine = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let reporter = Reporter { controller: MANAGER.into(), instance: Some(opts.lease.identity.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: shared.metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        report_grace: opts.report_grace,
        applied: Default::default(),
    });
    let controller = Controller::new(api(&client), watcher::Config::default())
        .owns(owned::<StatefulSet>(&client, &opts.namespace), mine.clone())
        .owns(owned::<Deployment>(&client, &opts.namespace), mine.clone())
        .owns(owned::<Job>(&client, &opts.namespace), mine.clone())
        // Pods are owned by ReplicaSets and Jobs, not by the Challenge:
        // their label names the Challenge (the verifier's report and image
        // pull errors show up on pods first).
        .watches(owned::<Pod>(&client, &opts.namespace), mine, |pod: Pod| {
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
        .with_config(kube::runtime::controller::Config::default().concurrency(opts.concurrency).debounce(Duration::from_millis(500)));
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
        .route("/metrics", get(|State(s): State<Arc<Shared>>| async move { s.metrics.render(s.store.get()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<Shared>>| async move {
                if s.ready.load(Ordering::SeqCst) { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "waiting for the API server") }
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
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
    #[error("lost leadership ({0}): exiting so that a restart re-joins the election")]
    LeaseLost(String),
    #[error("the controller stopped: its watch of Challenges ended")]
    ControllerStopped,
}
