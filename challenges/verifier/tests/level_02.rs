//! Level 2 against the real broker: the starter FAILS naming the broken
//! invariants, the reference fix PASSES, each near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_02_starter_fails_on_lost_messages_early_acks_and_unbounded_sends() {
    let r = play(2, Variant::Starter).await;
    assert_fails_with(&r, &["accepted-on-topic", "acked-by-broker", "inflight-bounded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_02_fix_passes() {
    assert_passes(&play(2, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_02_near_miss_blocking_infinite_retry_fails_latency() {
    let r = play(2, Variant::NearMiss("blocking-infinite-retry".into())).await;
    assert_fails_with(&r, &["latency-bounded", "inflight-bounded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_02_near_miss_no_backpressure_fails_inflight_bound() {
    let r = play(2, Variant::NearMiss("no-backpressure".into())).await;
    assert_fails_with(&r, &["inflight-bounded"]);
}
