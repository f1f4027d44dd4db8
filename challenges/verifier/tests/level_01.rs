//! Level 1 against the real broker: the starter FAILS naming the broken
//! invariants, the reference fix PASSES, the near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_starter_fails_on_leaked_producers_and_unclean_shutdown() {
    let r = play(1, Variant::Starter).await;
    assert_fails_with(&r, &["producer-connections-bounded", "producer-reused", "clean-shutdown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_fix_passes() {
    assert_passes(&play(1, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_01_near_miss_producer_per_request_fails_reuse() {
    let r = play(1, Variant::NearMiss("per-request-producer".into())).await;
    assert_fails_with(&r, &["producer-reused"]);
}
