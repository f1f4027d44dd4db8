//! The last step of a reconcile: what was observed in, the next phase and
//! status out. Pure, so every transition is unit-tested without a server.

use std::time::Duration;

use dojo_crds::{ChallengeStatus, CheckStatus, Condition, FigureStatus, Phase};
use dojo_report::{Report, Verdict};
use k8s_openapi::jiff::Timestamp;

use crate::error::Error;
use crate::validate::ValidChallenge;

/// What the operator saw of a Challenge's objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub namesrv_ready: bool,
    pub brokers_ready: i32,
    pub workload_ready: bool,
    /// A workload pod's container waiting for a reason that will not fix itself.
    pub workload_waiting: Option<Waiting>,
    /// The verifier Job of this attempt, once created.
    pub job: Option<JobObservation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobObservation {
    pub name: String,
    /// The Job's Failed condition (e.g. DeadlineExceeded), if any.
    pub failed: Option<String>,
    pub pod: Option<VerifierPod>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum VerifierPod {
    Pending {
        name: String,
        waiting: Option<Waiting>,
    },
    Running {
        name: String,
    },
    Terminated {
        name: String,
        message: Option<String>,
        finished_at: Option<Timestamp>,
    },
}

/// How long a terminated verifier's report may lag behind its termination
/// (a kubelet writes both at once; a fake node may not).
pub const DEFAULT_REPORT_GRACE: Duration = Duration::from_secs(20);

/// The outcome of one reconcile's judgement.
#[derive(Debug)]
pub struct Decision {
    pub phase: Phase,
    /// Apply the verifier Job now (RocketMQ and the workload are ready).
    pub create_job: bool,
    pub report: Option<Report>,
    /// Why the attempt ended in Error.
    pub error: Option<Error>,
    /// When to look again if nothing changes.
    pub requeue: Duration,
}

const WORKLOAD_IMAGE_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

fn since(ts: Option<&str>, now: Timestamp) -> Duration {
    ts.and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::ZERO)
}

/// The next phase of an attempt that has not ended yet.
pub fn decide(
    status: &ChallengeStatus,
    v: &ValidChallenge,
    obs: &Observation,
    now: Timestamp,
    grace: Duration,
) -> Decision {
    let go = |phase, requeue| Decision {
        phase,
        create_job: false,
        report: None,
        error: None,
        requeue,
    };
    let fail = |e: Error| Decision {
        phase: Phase::Error,
        create_job: false,
        report: None,
        error: Some(e),
        requeue: Duration::from_secs(300),
    };
    if let Some(job) = &obs.job {
        return match &job.pod {
            Some(VerifierPod::Terminated {
                message: Some(m), ..
            }) if !m.trim().is_empty() => match serde_json::from_str::<Report>(m) {
                Ok(report) => {
                    let (phase, error) = match report.verdict {
                        Verdict::Pass => (Phase::Passed, None),
                        Verdict::Fail => (Phase::Failed, None),
                        Verdict::Error => {
                            let judged: Vec<String> = report
                                .checks
                                .iter()
                                .filter(|c| c.verdict == Verdict::Error)
                                .map(|c| format!("{}: {}", c.id, c.summary))
                                .collect();
                            (
                                Phase::Error,
                                Some(Error::VerifierCouldNotJudge {
                                    detail: if judged.is_empty() {
                                        "no check was judged".into()
                                    } else {
                                        judged.join("; ")
                                    },
                                }),
                            )
                        }
                    };
                    Decision {
                        phase,
                        create_job: false,
                        report: Some(report),
                        error,
                        requeue: Duration::from_secs(300),
                    }
                }
                Err(e) => fail(Error::VerifierReportUnreadable {
                    detail: e.to_string(),
                }),
            },
            Some(VerifierPod::Terminated {
                name, finished_at, ..
            }) => {
                let waited = finished_at
                    .map(|t| Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO))
                    .unwrap_or(grace);
                if waited < grace {
                    go(Phase::Verifying, grace - waited)
                } else {
                    fail(Error::VerifierReportMissing { pod: name.clone() })
                }
            }
            _ if job.failed.is_some() => fail(Error::VerifierFailed {
                job: job.name.clone(),
                detail: job.failed.clone().unwrap_or_default(),
            }),
            Some(VerifierPod::Running { .. }) => go(Phase::Verifying, Duration::from_secs(30)),
            Some(VerifierPod::Pending {
                waiting: Some(w), ..
            }) if WORKLOAD_IMAGE_REASONS.contains(&w.reason.as_str()) => {
                fail(Error::VerifierImageUnavailable {
                    image: v.verifier_image.clone(),
                    detail: format!("{}: {}", w.reason, w.message),
                })
            }
            _ => go(Phase::Running, Duration::from_secs(30)),
        };
    }
    if let Some(w) = &obs.workload_waiting {
        if WORKLOAD_IMAGE_REASONS.contains(&w.reason.as_str()) {
            return fail(Error::WorkloadImagePullFailed {
                image: v.workload.image.clone(),
                detail: format!("{}: {}", w.reason, w.message),
            });
        }
        if w.reason == "CrashLoopBackOff" || w.reason == "CreateContainerConfigError" {
            return fail(Error::WorkloadCrashing {
                namespace: v.namespace.clone(),
                deployment: v.object_name("workload"),
                detail: format!("{}: {}", w.reason, w.message),
            });
        }
    }
    let mut waiting = Vec::new();
    if !obs.namesrv_ready {
        waiting.push(format!(
            "StatefulSet {} (name server)",
            v.object_name("namesrv")
        ));
    }
    if obs.brokers_ready < v.level.brokers as i32 {
        waiting.push(format!(
            "StatefulSet {} ({}/{} brokers ready)",
            v.broker_sets().join(", "),
            obs.brokers_ready,
            v.level.brokers
        ));
    }
    if !obs.workload_ready {
        waiting.push(format!(
            "Deployment {} (workload)",
            v.object_name("workload")
        ));
    }
    if waiting.is_empty() {
        return Decision {
            phase: Phase::Running,
            create_job: true,
            report: None,
            error: None,
            requeue: Duration::from_secs(30),
        };
    }
    let budget = Duration::from_secs(v.provision_seconds.into());
    let spent = since(status.attempt_started_at.as_deref(), now);
    if spent >= budget {
        return fail(Error::ProvisionTimedOut {
            seconds: v.provision_seconds,
            waiting: waiting.join(", "),
        });
    }
    go(
        Phase::Provisioning,
        (budget - spent).min(Duration::from_secs(30)),
    )
}

/// Sets condition `type_`, keeping its transition time when its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    let new = |last: String| Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.clone(),
        last_transition_time: last,
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => *c = new(c.last_transition_time.clone()),
        Some(c) => *c = new(now.to_string()),
        None => conditions.push(new(now.to_string())),
    }
}

/// 0 to 100: the share of checks passed, less 5 per attempt after the first.
pub fn score(passed: u32, total: u32, attempts: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    (passed * 100 / total).saturating_sub(5 * attempts.saturating_sub(1))
}

/// Writes the verifier's report into the status.
pub fn record_report(status: &mut ChallengeStatus, report: &Report) {
    status.verdict = Some(report.verdict.as_str().into());
    status.checks = report
        .checks
        .iter()
        .map(|c| CheckStatus {
            id: c.id.clone(),
            title: c.title.clone(),
            verdict: c.verdict.as_str().into(),
            summary: c.summary.clone(),
            evidence: c.evidence.clone(),
        })
        .collect();
    status.checks_passed = report.passed() as u32;
    status.checks_total = report.checks.len() as u32;
    status.checks_summary = Some(format!("{}/{}", status.checks_passed, status.checks_total));
    status.score = Some(score(
        status.checks_passed,
        status.checks_total,
        status.attempts,
    ));
    status.figures = report
        .figures
        .iter()
        .map(|f| FigureStatus {
            name: f.name.clone(),
            value: f.value,
            unit: f.unit.clone(),
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::challenge;
    use crate::validate::validate;

    fn v(level: u8) -> ValidChallenge {
        validate(&challenge(level), 1).unwrap()
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    fn started(ago_secs: i64) -> ChallengeStatus {
        ChallengeStatus {
            attempt_started_at: Some(
                (now() - k8s_openapi::jiff::SignedDuration::from_secs(ago_secs)).to_string(),
            ),
            ..Default::default()
        }
    }

    fn ready() -> Observation {
        Observation {
            namesrv_ready: true,
            brokers_ready: 1,
            workload_ready: true,
            ..Default::default()
        }
    }

    fn with_pod(pod: VerifierPod) -> Observation {
        Observation {
            job: Some(JobObservation {
                name: "orders-verifier-1".into(),
                failed: None,
                pod: Some(pod),
            }),
            ..ready()
        }
    }

    /// A report exactly as the verifier writes it.
    fn report(checks: &[(&str, &str)]) -> String {
        let checks: Vec<dojo_report::Check> = checks
            .iter()
            .map(|(id, v)| {
                let verdict = match *v {
                    "pass" => Verdict::Pass,
                    "fail" => Verdict::Fail,
                    _ => Verdict::Error,
                };
                dojo_report::Check::new(id, id, verdict, "seen")
                    .with_evidence([format!("{id}-evidence")])
            })
            .collect();
        let r = Report {
            level: 3,
            slug: "idempotency".into(),
            verdict: Report::overall(&checks),
            checks,
            figures: vec![],
            series: vec![],
            started_at_ms: 0,
            duration_ms: 1000,
            artefacts: None,
        };
        r.to_bounded_json(dojo_report::TERMINATION_MESSAGE_LIMIT)
    }

    #[test]
    fn provisioning_until_ready_then_running_with_the_job() {
        let d = decide(
            &started(10),
            &v(3),
            &Observation::default(),
            now(),
            DEFAULT_REPORT_GRACE,
        );
        assert_eq!((d.phase, d.create_job), (Phase::Provisioning, false));
        let d = decide(&started(10), &v(3), &ready(), now(), DEFAULT_REPORT_GRACE);
        assert_eq!((d.phase, d.create_job), (Phase::Running, true));
        let twelve = Observation {
            brokers_ready: 2,
            ..ready()
        };
        assert_eq!(
            decide(&started(10), &v(12), &twelve, now(), DEFAULT_REPORT_GRACE).phase,
            Phase::Provisioning
        );
    }

    #[test]
    fn provisioning_times_out_naming_what_is_not_ready() {
        let obs = Observation {
            namesrv_ready: true,
            brokers_ready: 0,
            workload_ready: true,
            ..Default::default()
        };
        let d = decide(&started(301), &v(3), &obs, now(), DEFAULT_REPORT_GRACE);
        assert_eq!(d.phase, Phase::Error);
        let e = d.error.unwrap();
        assert_eq!(e.reason(), "ProvisionTimedOut");
        assert!(
            e.to_string().contains("orders-broker (0/1 brokers ready)"),
            "{e}"
        );
    }

    #[test]
    fn a_workload_that_cannot_start_is_an_error_saying_what_to_do() {
        let waiting = |reason: &str| Observation {
            workload_waiting: Some(Waiting {
                reason: reason.into(),
                message: "details".into(),
            }),
            ..Default::default()
        };
        for pull in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let d = decide(
                &started(5),
                &v(3),
                &waiting(pull),
                now(),
                DEFAULT_REPORT_GRACE,
            );
            assert_eq!(d.phase, Phase::Error);
            let e = d.error.unwrap();
            assert_eq!(e.reason(), "WorkloadImagePullFailed");
            let msg = e.to_string();
            assert!(
                msg.contains("registry.example/shop/orders:1.0")
                    && msg.contains("push it or fix spec.workload.image")
                    && msg.contains(pull),
                "{msg}"
            );
        }
        let e = decide(
            &started(5),
            &v(3),
            &waiting("CrashLoopBackOff"),
            now(),
            DEFAULT_REPORT_GRACE,
        )
        .error
        .unwrap();
        assert_eq!(e.reason(), "WorkloadCrashing");
        assert!(
            e.to_string()
                .contains("kubectl logs -n team-a deploy/orders-workload --previous"),
            "{e}"
        );
        // Waiting to be created is not a reason to give up.
        assert_eq!(
            decide(
                &started(5),
                &v(3),
                &waiting("ContainerCreating"),
                now(),
                DEFAULT_REPORT_GRACE
            )
            .phase,
            Phase::Provisioning
        );
    }

    #[test]
    fn verifier_running_is_verifying_and_its_report_decides() {
        let d = decide(
            &started(5),
            &v(3),
            &with_pod(VerifierPod::Running { name: "p".into() }),
            now(),
            DEFAULT_REPORT_GRACE,
        );
        assert_eq!(d.phase, Phase::Verifying);
        let msg = report(&[("no-loss", "pass"), ("exactly-once", "fail")]);
        let d = decide(
            &started(5),
            &v(3),
            &with_pod(VerifierPod::Terminated {
                name: "p".into(),
                message: Some(msg),
                finished_at: Some(now()),
            }),
            now(),
            DEFAULT_REPORT_GRACE,
        );
        assert_eq!(d.phase, Phase::Failed);
        let mut status = ChallengeStatus {
            attempts: 1,
            ..Default::default()
        };
        record_report(&mut status, d.report.as_ref().unwrap());
        assert_eq!(status.checks_summary.as_deref(), Some("1/2"));
        assert_eq!(status.score, Some(50));
        assert_eq!(status.checks[1].evidence, ["exactly-once-evidence"]);
        let pass = report(&[("no-loss", "pass")]);
        let d = decide(
            &started(5),
            &v(3),
            &with_pod(VerifierPod::Terminated {
                name: "p".into(),
                message: Some(pass),
                finished_at: None,
            }),
            now(),
            DEFAULT_REPORT_GRACE,
        );
        assert_eq!(d.phase, Phase::Passed);
        let judged_nothing = report(&[("no-loss", "error")]);
        let d = decide(
            &started(5),
            &v(3),
            &with_pod(VerifierPod::Terminated {
                name: "p".into(),
                message: Some(judged_nothing),
                finished_at: None,
            }),
            now(),
            DEFAULT_REPORT_GRACE,
        );
        assert_eq!(d.error.unwrap().reason(), "VerifierCouldNotJudge");
    }

    #[test]
    fn a_report_may_lag_the_termination_for_the_grace_period_only() {
        let ended = |ago| {
            with_pod(VerifierPod::Terminated {
                name: "p".into(),
                message: None,
                finished_at: Some(now() - k8s_openapi::jiff::SignedDuration::from_secs(ago)),
            })
        };
        let d = decide(&started(60), &v(3), &ended(5), now(), DEFAULT_REPORT_GRACE);
        assert_eq!(
            (d.phase, d.requeue),
            (Phase::Verifying, Duration::from_secs(15))
        );
        let d = decide(&started(60), &v(3), &ended(25), now(), DEFAULT_REPORT_GRACE);
        assert_eq!(d.error.unwrap().reason(), "VerifierReportMissing");
        let garbage = with_pod(VerifierPod::Terminated {
            name: "p".into(),
            message: Some("panic: oops".into()),
            finished_at: None,
        });
        assert_eq!(
            decide(&started(60), &v(3), &garbage, now(), DEFAULT_REPORT_GRACE)
                .error
                .unwrap()
                .reason(),
            "VerifierReportUnreadable"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut cs = Vec::new();
        set_condition(
            &mut cs,
            "Ready",
            false,
            "Provisioning",
            "waiting".into(),
            Some(1),
            now(),
        );
        let later: Timestamp = "2026-01-01T00:20:00Z".parse().unwrap();
        set_condition(
            &mut cs,
            "Ready",
            false,
            "Provisioning",
            "still waiting".into(),
            Some(2),
            later,
        );
        assert_eq!(
            (
                cs[0].last_transition_time.as_str(),
                cs[0].observed_generation
            ),
            ("2026-01-01T00:10:00Z", Some(2))
        );
        set_condition(&mut cs, "Ready", true, "Ready", "ok".into(), Some(2), later);
        assert_eq!(cs[0].last_transition_time, "2026-01-01T00:20:00Z");
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn score_rewards_checks_and_few_attempts() {
        assert_eq!(score(4, 4, 1), 100);
        assert_eq!(score(4, 4, 3), 90);
        assert_eq!(score(1, 3, 1), 33);
        assert_eq!(score(0, 0, 1), 0);
        assert_eq!(score(1, 1, 40), 0);
    }
}
