//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use dojo_crds::{Challenge, Phase};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Whether one StatefulSet of a Challenge (the name server, a broker) has a
/// ready pod, as its last reconcile saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentReady {
    pub component: &'static str,
    /// The broker's zone (level 12), else empty.
    pub zone: String,
    pub ready: bool,
}

/// A Challenge's level and components, by namespace and name.
type Components = HashMap<(String, String), (u8, Vec<ComponentReady>)>;

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
    figures: GaugeVec,
    component_ready: IntGaugeVec,
    components: Mutex<Components>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "dojo_reconcile_total",
                "Reconciles by result: ok or the error reason",
            ),
            &["result"],
        )
        .unwrap();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "dojo_reconcile_duration_seconds",
                "Duration of one reconcile by result",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["result"],
        )
        .unwrap();
        let api_requests = IntCounterVec::new(
            Opts::new(
                "dojo_api_requests_total",
                "Requests to the API server made by reconciles, by verb",
            ),
            &["verb"],
        )
        .unwrap();
        let challenges = IntGaugeVec::new(
            Opts::new("dojo_challenges", "Challenges by level and phase"),
            &["level", "phase"],
        )
        .unwrap();
        let checks = IntCounterVec::new(
            Opts::new(
                "dojo_checks_total",
                "Judged checks by level, check id and verdict",
            ),
            &["level", "check", "verdict"],
        )
        .unwrap();
        let verdicts = IntCounterVec::new(
            Opts::new(
                "dojo_attempt_results_total",
                "Finished attempts by level and final phase",
            ),
            &["level", "phase"],
        )
        .unwrap();
        let attempts = IntCounterVec::new(
            Opts::new("dojo_attempts_total", "Attempts started by level"),
            &["level"],
        )
        .unwrap();
        let time_to_pass = HistogramVec::new(
            HistogramOpts::new(
                "dojo_time_to_pass_seconds",
                "From a Challenge's first attempt to its first pass, by level",
            )
            .buckets(vec![
                60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
            ]),
            &["level"],
        )
        .unwrap();
        let leader = IntGauge::new(
            "dojo_operator_leader",
            "1 while this replica holds the leader Lease",
        )
        .unwrap();
        let figures = GaugeVec::new(
            Opts::new("dojo_challenge_figure", "A figure of the current attempt's verifier report (RTO, lost, duplicated, ...), its name in snake case"),
            &["namespace", "challenge", "level", "figure", "unit"],
        )
        .unwrap();
        let component_ready = IntGaugeVec::new(
            Opts::new("dojo_component_ready", "1 while a Challenge's name server or broker (one per zone on level 12) has a ready pod"),
            &["namespace", "challenge", "level", "component", "zone"],
        )
        .unwrap();
        for c in [&reconciles, &api_requests, &checks, &verdicts, &attempts] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry
            .register(Box::new(reconcile_duration.clone()))
            .unwrap();
        registry.register(Box::new(time_to_pass.clone())).unwrap();
        registry.register(Box::new(challenges.clone())).unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        registry.register(Box::new(figures.clone())).unwrap();
        registry
            .register(Box::new(component_ready.clone()))
            .unwrap();
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            api_requests,
            challenges,
            checks,
            verdicts,
            attempts,
            time_to_pass,
            leader,
            figures,
            component_ready,
            components: Mutex::default(),
        }
    }

    /// Records what a reconcile saw of a Challenge's StatefulSets.
    pub fn set_components(
        &self,
        namespace: &str,
        challenge: &str,
        level: u8,
        components: Vec<ComponentReady>,
    ) {
        self.components.lock().unwrap().insert(
            (namespace.to_string(), challenge.to_string()),
            (level, components),
        );
    }

    /// The text exposition. The by-phase, figure and component gauges are
    /// rebuilt from the controller's cache at scrape time, so a deleted
    /// Challenge's series go with it (a long-running operator keeps none).
    pub fn render(&self, store: Option<&Store<Challenge>>) -> String {
        // Held to the end: two scrapes at once must not reset each other's gauges.
        let mut components = self.components.lock().unwrap();
        if let Some(store) = store {
            let challenges = store.state();
            self.figures.reset();
            for ch in &challenges {
                let (ns, name, level) = (
                    ch.namespace().unwrap_or_default(),
                    ch.name_any(),
                    ch.spec.level.to_string(),
                );
                for f in ch.status.iter().flat_map(|s| &s.figures) {
                    self.figures
                        .with_label_values(&[&ns, &name, &level, &figure_label(&f.name), &f.unit])
                        .set(f.value);
                }
            }
            self.component_ready.reset();
            let live: HashSet<(String, String)> = challenges
                .iter()
                .map(|ch| (ch.namespace().unwrap_or_default(), ch.name_any()))
                .collect();
            components.retain(|key, _| live.contains(key));
            for ((ns, name), (level, cs)) in components.iter() {
                for c in cs {
                    self.component_ready
                        .with_label_values(&[ns, name, &level.to_string(), c.component, &c.zone])
                        .set(c.ready.into());
                }
            }
            self.challenges.reset();
            for level in 1..=12u8 {
                for phase in Phase::ALL {
                    self.challenges
                        .with_label_values(&[&level.to_string(), phase.as_str()])
                        .set(0);
                }
            }
            for ch in &challenges {
                self.challenges
                    .with_label_values(&[&ch.spec.level.to_string(), ch.phase().as_str()])
                    .inc();
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// A figure's name as a label value: lower case, each run of other
/// characters than letters and digits one `_` ("RTO" is `rto`, "p99
/// latency" `p99_latency`), so a dashboard can select it exactly.
pub fn figure_label(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.truncate(out.trim_end_matches('_').len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::challenge;
    use dojo_crds::{ChallengeStatus, FigureStatus};
    use kube::runtime::{reflector, watcher};

    #[test]
    fn figure_names_become_snake_case_label_values() {
        assert_eq!(figure_label("RTO"), "rto");
        assert_eq!(figure_label("p99 latency"), "p99_latency");
        assert_eq!(figure_label("accepted (200)"), "accepted_200");
        assert_eq!(figure_label(" -- lost -- "), "lost");
    }

    fn series<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .collect()
    }

    #[test]
    fn figures_and_components_follow_the_challenges_in_the_cache() {
        let (store, mut writer) = reflector::store();
        let mut ch = challenge(12);
        let figure = |name: &str, value, unit: &str| FigureStatus {
            name: name.into(),
            value,
            unit: unit.into(),
        };
        ch.status = Some(ChallengeStatus {
            figures: vec![figure("RTO", 12.5, "s"), figure("lost", 0.0, "messages")],
            ..Default::default()
        });
        writer.apply_watcher_event(&watcher::Event::Apply(ch.clone()));
        let m = Metrics::new();
        let broker = |zone: &str, ready| ComponentReady {
            component: "broker",
            zone: zone.into(),
            ready,
        };
        m.set_components(
            "team-a",
            "orders",
            12,
            vec![
                ComponentReady {
                    component: "namesrv",
                    zone: String::new(),
                    ready: true,
                },
                broker("zone-a", true),
                broker("zone-b", false),
            ],
        );

        let text = m.render(Some(&store));
        assert_eq!(
            series(&text, "dojo_challenge_figure"),
            [
                r#"dojo_challenge_figure{challenge="orders",figure="lost",level="12",namespace="team-a",unit="messages"} 0"#,
                r#"dojo_challenge_figure{challenge="orders",figure="rto",level="12",namespace="team-a",unit="s"} 12.5"#,
            ]
        );
        let ready = series(&text, "dojo_component_ready");
        assert_eq!(ready.len(), 3, "{ready:?}");
        assert!(ready.contains(&r#"dojo_component_ready{challenge="orders",component="broker",level="12",namespace="team-a",zone="zone-b"} 0"#), "{ready:?}");

        // Deleted: its series go at the next scrape.
        writer.apply_watcher_event(&watcher::Event::Delete(ch));
        let text = m.render(Some(&store));
        assert!(
            series(&text, "dojo_challenge_figure").is_empty()
                && series(&text, "dojo_component_ready").is_empty(),
            "{text}"
        );
        assert!(m.components.lock().unwrap().is_empty());
    }
}
