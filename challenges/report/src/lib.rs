//! The verifier's report: JSON for machines, a table for people, and a
//! size-bounded JSON for a pod's termination message (what the operator
//! reads in a cluster). Its own crate so that the verifier writes and the
//! operator reads the very same types.

use serde::{Deserialize, Serialize};

/// Three-valued, as in Maelstrom: `Error` means the check could not be
/// judged (the environment failed), which is not the learner's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

/// One judged invariant, with what was seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable id, e.g. `no-loss`: metrics and hints key on it.
    pub id: String,
    pub title: String,
    pub verdict: Verdict,
    /// One line: what was measured against what was required.
    pub summary: String,
    /// The offending operations (order ids, message ids, timestamps),
    /// at most [`Check::MAX_EVIDENCE`] lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Check {
    pub const MAX_EVIDENCE: usize = 20;

    pub fn new(id: &str, title: &str, verdict: Verdict, summary: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            title: title.into(),
            verdict,
            summary: summary.into(),
            evidence: Vec::new(),
        }
    }

    pub fn pass(id: &str, title: &str, summary: impl Into<String>) -> Check {
        Check::new(id, title, Verdict::Pass, summary)
    }

    pub fn fail(id: &str, title: &str, summary: impl Into<String>) -> Check {
        Check::new(id, title, Verdict::Fail, summary)
    }

    pub fn error(id: &str, title: &str, summary: impl Into<String>) -> Check {
        Check::new(id, title, Verdict::Error, summary)
    }

    /// Adds evidence lines, keeping the first [`Check::MAX_EVIDENCE`] and
    /// saying how many more there were.
    pub fn with_evidence<I: IntoIterator<Item = S>, S: Into<String>>(mut self, lines: I) -> Check {
        let mut extra = 0usize;
        for line in lines {
            if self.evidence.len() < Self::MAX_EVIDENCE {
                self.evidence.push(line.into());
            } else {
                extra += 1;
            }
        }
        if extra > 0 {
            self.evidence.push(format!("... and {extra} more"));
        }
        self
    }
}

/// A measured number: throughput, p99, lost, duplicated, RTO...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// A measured curve, one point every `step_ms`: a level's drain (lag over
/// time), shown as a sparkline in the table and as numbers in the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub unit: String,
    pub step_ms: u64,
    pub points: Vec<f64>,
}

impl Series {
    /// `▁▂▄█` scaled from 0 to the highest point.
    pub fn sparkline(&self) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let max = self.points.iter().copied().fold(0.0_f64, f64::max);
        self.points
            .iter()
            .map(|&v| {
                if max <= 0.0 || v <= 0.0 {
                    ' '
                } else {
                    BARS[(((v / max) * 7.0).round() as usize).min(7)]
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub level: u8,
    pub slug: String,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Series>,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// Where this run's artefacts (report, world history, logs) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefacts: Option<String>,
}

/// Pods' termination messages are cut at 4096 bytes by the kubelet.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

impl Report {
    /// The overall verdict: fail if any check failed, else error if any could
    /// not be judged, else pass. No checks at all is an error.
    pub fn overall(checks: &[Check]) -> Verdict {
        if checks.iter().any(|c| c.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if checks.is_empty() || checks.iter().any(|c| c.verdict == Verdict::Error) {
            Verdict::Error
        } else {
            Verdict::Pass
        }
    }

    pub fn passed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Pass)
            .count()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Compact JSON of at most `limit` bytes: evidence is dropped from the
    /// end first, then summaries are shortened; checks and verdicts always stay.
    pub fn to_bounded_json(&self, limit: usize) -> String {
        let mut r = self.clone();
        r.artefacts = None;
        let fits = |r: &Report| {
            serde_json::to_string(r)
                .map(|s| s.len() <= limit)
                .unwrap_or(false)
        };
        // Curves are for people and dashboards; the termination message needs verdicts.
        if !fits(&r) {
            r.series.clear();
        }
        while !fits(&r) {
            if let Some(c) = r.checks.iter_mut().rev().find(|c| !c.evidence.is_empty()) {
                c.evidence.pop();
                continue;
            }
            if let Some(c) = r
                .checks
                .iter_mut()
                .filter(|c| c.summary.chars().count() > 40)
                .max_by_key(|c| c.summary.len())
            {
                let cut: String = c
                    .summary
                    .chars()
                    .take(c.summary.chars().count() / 2)
                    .collect();
                c.summary = format!("{cut}…");
                continue;
            }
            if r.figures.pop().is_some() {
                continue;
            }
            break;
        }
        serde_json::to_string(&r).expect("a report always serialises")
    }

    /// The report as a table for people.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let id_w = self
            .checks
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(2)
            .max(5);
        out.push_str(&format!(
            "Level {} ({}) — {} — {}/{} checks passed in {:.1}s\n\n",
            self.level,
            self.slug,
            self.verdict.as_str().to_uppercase(),
            self.passed(),
            self.checks.len(),
            self.duration_ms as f64 / 1000.0
        ));
        out.push_str(&format!(
            "  {:<6} {:<id_w$}  {}\n",
            "VERDICT", "CHECK", "WHAT WAS SEEN"
        ));
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<6}  {:<id_w$}  {}\n",
                c.verdict.as_str().to_uppercase(),
                c.id,
                c.title
            ));
            out.push_str(&format!("  {:<6}  {:<id_w$}    {}\n", "", "", c.summary));
            for e in &c.evidence {
                out.push_str(&format!("  {:<6}  {:<id_w$}    - {}\n", "", "", e));
            }
        }
        if !self.figures.is_empty() {
            out.push_str("\n  FIGURES\n");
            for f in &self.figures {
                out.push_str(&format!(
                    "    {:<28} {:>12} {}\n",
                    f.name,
                    format_value(f.value),
                    f.unit
                ));
            }
        }
        for s in &self.series {
            let peak = s.points.iter().copied().fold(0.0_f64, f64::max);
            out.push_str(&format!(
                "\n  {} ({} points, one per {:.1}s, peak {} {})\n    |{}|\n",
                s.name,
                s.points.len(),
                s.step_ms as f64 / 1000.0,
                format_value(peak),
                s.unit,
                s.sparkline()
            ));
        }
        if let Some(a) = &self.artefacts {
            out.push_str(&format!("\n  artefacts: {a}\n"));
        }
        out
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<Check>) -> Report {
        Report {
            level: 3,
            slug: "idempotency".into(),
            verdict: Report::overall(&checks),
            checks,
            figures: vec![Figure {
                name: "duplicated".into(),
                value: 2.0,
                unit: "orders".into(),
            }],
            series: vec![Series {
                name: "lag".into(),
                unit: "messages".into(),
                step_ms: 1000,
                points: vec![0.0, 8.0, 4.0, 1.0, 0.0],
            }],
            started_at_ms: 0,
            duration_ms: 61_500,
            artefacts: Some("/tmp/run".into()),
        }
    }

    #[test]
    fn overall_verdict_is_three_valued() {
        assert_eq!(
            Report::overall(&[Check::pass("a", "A", ""), Check::pass("b", "B", "")]),
            Verdict::Pass
        );
        assert_eq!(
            Report::overall(&[Check::pass("a", "A", ""), Check::error("b", "B", "")]),
            Verdict::Error
        );
        assert_eq!(
            Report::overall(&[Check::error("a", "A", ""), Check::fail("b", "B", "")]),
            Verdict::Fail
        );
        assert_eq!(
            Report::overall(&[]),
            Verdict::Error,
            "nothing judged is not a pass"
        );
    }

    #[test]
    fn evidence_is_capped_and_says_how_much_was_cut() {
        let c = Check::fail("x", "X", "").with_evidence((0..50).map(|i| format!("order-{i}")));
        assert_eq!(c.evidence.len(), Check::MAX_EVIDENCE + 1);
        assert_eq!(c.evidence.last().unwrap(), "... and 30 more");
    }

    #[test]
    fn json_round_trips() {
        let r = report(vec![
            Check::fail(
                "exactly-once",
                "every order debited once",
                "2 orders debited twice",
            )
            .with_evidence(["order-7: debits #12, #15"]),
        ]);
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert!(r.to_json().contains("\"verdict\": \"fail\""));
    }

    #[test]
    fn bounded_json_fits_and_keeps_every_verdict() {
        let checks = (0..8)
            .map(|i| {
                Check::fail(&format!("check-{i}"), "a title", "x".repeat(300))
                    .with_evidence((0..20).map(|j| format!("order-{j}: {}", "y".repeat(80))))
            })
            .collect();
        let r = report(checks);
        let s = r.to_bounded_json(TERMINATION_MESSAGE_LIMIT);
        assert!(s.len() <= TERMINATION_MESSAGE_LIMIT, "{} bytes", s.len());
        let back: Report = serde_json::from_str(&s).unwrap();
        assert_eq!(back.checks.len(), 8);
        assert!(back.checks.iter().all(|c| c.verdict == Verdict::Fail));
        assert_eq!(back.verdict, Verdict::Fail);
    }

    #[test]
    fn table_names_checks_evidence_and_figures() {
        let r = report(vec![
            Check::pass("no-loss", "no order lost", "500/500 debited"),
            Check::fail(
                "exactly-once",
                "every order debited once",
                "2 orders debited twice",
            )
            .with_evidence(["order-7: debits #12, #15"]),
        ]);
        let t = r.render_table();
        assert!(t.contains("FAIL") && t.contains("1/2 checks passed"), "{t}");
        assert!(t.contains("order-7: debits #12, #15"));
        assert!(t.contains("duplicated") && t.contains("artefacts: /tmp/run"));
        assert!(
            t.contains("lag (5 points, one per 1.0s, peak 8 messages)") && t.contains("| █▅▂ |"),
            "{t}"
        );
    }
}
