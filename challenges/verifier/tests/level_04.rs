//! Level 4 against the real broker: the starter FAILS naming the broken
//! invariant, the reference fix PASSES, the near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_04_starter_fails_to_drain_the_backlog() {
    let r = play(4, Variant::Starter).await;
    assert_fails_with(&r, &["drained-in-time", "throughput", "lag-zero"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_04_fix_passes() {
    let r = play(4, Variant::Fix).await;
    assert_passes(&r);
    assert!(r.series.iter().any(|s| s.name.starts_with("lag") && s.points.iter().any(|p| *p > 0.0)), "the report carries the drain curve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_04_near_miss_more_threads_one_call_per_order_misses_the_cut_off() {
    let r = play(4, Variant::NearMiss("more-threads-one-call-per-order".into())).await;
    assert_fails_with(&r, &["drained-in-time", "throughput"]);
}
