//! Progress of a run, printed as it happens: phases, then each check as it
//! is judged.

use std::time::Instant;

use crate::report::Check;

pub trait Progress: Send {
    fn phase(&mut self, what: &str);
    fn check(&mut self, check: &Check);
}

/// Prints to stderr with the time since the run started.
pub struct Console {
    start: Instant,
}

impl Console {
    pub fn new() -> Console {
        Console {
            start: Instant::now(),
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Progress for Console {
    fn phase(&mut self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    fn check(&mut self, c: &Check) {
        eprintln!(
            "[{:>6.1}s]   {:<5} {} — {}",
            self.start.elapsed().as_secs_f64(),
            c.verdict.as_str().to_uppercase(),
            c.id,
            c.summary
        );
    }
}

/// Prints nothing (tests that only look at the report).
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&mut self, _: &str) {}
    fn check(&mut self, _: &Check) {}
}
