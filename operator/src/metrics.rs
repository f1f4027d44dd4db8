//! Prometheus metrics of the operator, served on `/metrics`.

use dojo_crds::{Challenge, Phase};
use kube::runtime::reflector::Store;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub api_requests: IntCounterVec,
    challenges: IntGaugeVec,
    pub checks: IntCounterVec,
    pub verdicts: IntCounterVec,
    pub attempts: IntCounterVec,
    pub time_to_pass: HistogramVec,
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(Opts::new("dojo_reconcile_total", "Reconciles by result: ok or the error reason"), &["result"]).unwrap();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("dojo_reconcile_duration_seconds", "Duration of one reconcile by result")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["result"],
        )
        .unwrap();
        let api_requests = IntCounterVec::new(Opts::new("dojo_api_requests_total", "Requests to the API server made by reconciles, by verb"), &["verb"]).unwrap();
        let challenges = IntGaugeVec::new(Opts::new("dojo_challenges", "Challenges by level and phase"), &["level", "phase"]).unwrap();
        let checks = IntCounterVec::new(Opts::new("dojo_checks_total", "Judged checks by level, check id and verdict"), &["level", "check", "verdict"]).unwrap();
        let verdicts = IntCounterVec::new(Opts::new("dojo_attempt_results_total", "Finished attempts by level and final phase"), &["level", "phase"]).unwrap();
        let attempts = IntCounterVec::new(Opts::new("dojo_attempts_total", "Attempts started by level"), &["level"]).unwrap();
        let time_to_pass = HistogramVec::new(
            HistogramOpts::new("dojo_time_to_pass_seconds", "From a Challenge's first attempt to its first pass, by level")
                .buckets(vec![60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0]),
            &["level"],
        )
        .unwrap();
        let leader = IntGauge::new("dojo_operator_leader", "1 while this replica holds the leader Lease").unwrap();
        for c in [&reconciles, &api_requests, &checks, &verdicts, &attempts] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(reconcile_duration.clone())).unwrap();
        registry.register(Box::new(time_to_pass.clone())).unwrap();
        registry.register(Box::new(challenges.clone())).unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        Metrics { registry, reconciles, reconcile_duration, api_requests, challenges, checks, verdicts, attempts, time_to_pass, leader }
    }

    /// The text exposition; the by-phase gauge is counted from the
    /// controller's cache at scrape time, so deleted Challenges drop out.
    pub fn render(&self, store: Option<&Store<Challenge>>) -> String {
        if let Some(store) = store {
            self.challenges.reset();
            for level in 1..=12u8 {
                for phase in Phase::ALL {
                    self.challenges.with_label_values(&[&level.to_string(), phase.as_str()]).set(0);
                }
            }
            for ch in store.state() {
                self.challenges.with_label_values(&[&ch.spec.level.to_string(), ch.phase().as_str()]).inc();
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding never fails");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
