//! The reader's side of the verifier's report (`dojo_verifier::report::Report`,
//! the JSON the verifier writes to /dev/termination-log, at most 4096
//! bytes). Only the fields the operator uses; unknown fields are ignored,
//! so the verifier may add some. The operator does not link the verifier
//! itself: that crate carries the RocketMQ client and the scenarios, which
//! have no place in the operator's image.

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub verdict: Verdict,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Report {
    pub level: u8,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    #[serde(default)]
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.verdict == Verdict::Pass).count()
    }
}
