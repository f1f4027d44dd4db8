//! The one error type of the operator. Each variant's name is the `reason`
//! of the Event and the condition it causes and the `result` label of the
//! reconcile metrics. Terminal variants end the attempt in phase Error with
//! a message saying what to do; the others are retried with backoff.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Challenge is invalid: {0}")]
    InvalidSpec(String),
    #[error("the Challenge has no metadata.{0} (it was not read from the API server)")]
    MissingMetadata(&'static str),
    #[error(
        "the workload image {image} cannot be pulled ({detail}): push it or fix spec.workload.image (check the name and tag, and that the cluster can pull from that registry); a new image starts a new attempt"
    )]
    WorkloadImagePullFailed { image: String, detail: String },
    #[error(
        "the workload crashes ({detail}): see why with `kubectl logs -n {namespace} deploy/{deployment} --previous`, fix the program and set spec.workload.image to the new image"
    )]
    WorkloadCrashing {
        namespace: String,
        deployment: String,
        detail: String,
    },
    #[error(
        "not ready after {seconds} s: {waiting}; see `kubectl describe` of those objects (raise spec.overrides.provisionSeconds on a slow cluster)"
    )]
    ProvisionTimedOut { seconds: u32, waiting: String },
    #[error(
        "the verifier image {image} cannot be pulled ({detail}): install the verifier image matching the operator or set spec.verifier.image"
    )]
    VerifierImageUnavailable { image: String, detail: String },
    #[error(
        "the verifier Job {job} failed without a report ({detail}): see `kubectl logs job/{job}`; change spec.workload.image to start a new attempt"
    )]
    VerifierFailed { job: String, detail: String },
    #[error(
        "the verifier pod {pod} ended without a report in its termination message: see `kubectl logs pod/{pod}`"
    )]
    VerifierReportMissing { pod: String },
    #[error(
        "the verifier's report could not be read ({detail}): the verifier and operator versions may differ"
    )]
    VerifierReportUnreadable { detail: String },
    #[error(
        "the verifier could not judge the run: {detail}; this is not the workload's fault, re-run by changing spec.workload.image (e.g. a new tag)"
    )]
    VerifierCouldNotJudge { detail: String },
    #[error("the operator's watches stopped before they listed once: restart the operator")]
    CacheStopped,
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// The Event reason, condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::WorkloadImagePullFailed { .. } => "WorkloadImagePullFailed",
            Error::WorkloadCrashing { .. } => "WorkloadCrashing",
            Error::ProvisionTimedOut { .. } => "ProvisionTimedOut",
            Error::VerifierImageUnavailable { .. } => "VerifierImageUnavailable",
            Error::VerifierFailed { .. } => "VerifierFailed",
            Error::VerifierReportMissing { .. } => "VerifierReportMissing",
            Error::VerifierReportUnreadable { .. } => "VerifierReportUnreadable",
            Error::VerifierCouldNotJudge { .. } => "VerifierCouldNotJudge",
            Error::CacheStopped => "CacheStopped",
            Error::Kube { .. } => "KubeApiError",
        }
    }

    /// Whether the attempt ends in phase Error (no retry can help until the spec changes).
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Error::Kube { .. } | Error::MissingMetadata(_) | Error::CacheStopped
        )
    }
}
