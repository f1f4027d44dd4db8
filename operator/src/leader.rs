//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go
//! does it: a replica holds the Lease while it renews it; another takes it
//! over once it has expired or its holder released it (on SIGTERM, as
//! client-go's ReleaseOnCancel does). Every write carries the
//! resourceVersion read just before, so two replicas can never both win the
//! same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (pod name, or host + pid).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
    /// How often a standby tries to take the Lease (client-go's retry
    /// period): a released Lease is taken over within this.
    pub retry_every: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "leader election through Lease {namespace}/{name}: {source} (the operator's ServiceAccount needs get, create and update on leases in that namespace)"
)]
pub struct LeaseError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn err(&self, source: kube::Error) -> LeaseError {
        LeaseError {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    /// One round: Ok(true) if this replica holds the Lease afterwards.
    /// A lost race (409 Conflict) is simply "not the leader this round".
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let secs = self.config.duration.as_secs() as i32;
        let existing = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.err(e))?;
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
                let held_for =
                    SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).into());
                // client-go releases with an empty holder, this operator with none.
                let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                let expired = released
                    || spec
                        .renew_time
                        .as_ref()
                        .is_none_or(|t| t.0 + held_for < now);
                if !mine && !expired {
                    return Ok(false);
                }
                if !mine {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(MicroTime(now));
                // `replace` sends the resourceVersion read above: a
                // concurrent writer makes this fail with 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
        };
        match result {
            Ok(held) => Ok(held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), LeaseError> {
        loop {
            if self.try_acquire_or_renew().await? {
                return Ok(());
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
    }

    /// Gives the Lease up if this replica holds it, so that a standby takes
    /// over on its next try instead of after the Lease expires. Call it only
    /// once reconciling has stopped.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        // What client-go writes on ReleaseOnCancel: no holder, a 1 s duration.
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else wrote it in between: it is not ours to release any more.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Renews until a renewal fails or the Lease is lost; returns then, and
    /// the caller must stop reconciling at once.
    pub async fn hold(&self) -> LeaseLost {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return LeaseLost("another replica holds the Lease".into()),
                // A blip is tolerated while the Lease is still ours.
                Err(e)
                    if last_renewed.elapsed() + self.config.renew_every < self.config.duration =>
                {
                    tracing::warn!(error = %e, "renewing the Lease failed; retrying");
                }
                Err(e) => return LeaseLost(e.to_string()),
            }
        }
    }
}

/// Why leadership ended.
#[derive(Debug)]
pub struct LeaseLost(pub String);
