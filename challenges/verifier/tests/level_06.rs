//! Level 6 against the real broker: the starter FAILS naming the broken
//! invariant, the reference fix PASSES, every near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_06_starter_loses_the_announcement_of_an_order_written_before_a_crash() {
    let r = play(6, Variant::Starter).await;
    assert_fails_with(&r, &["announced-once", "doubt-settled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_06_fix_passes() {
    assert_passes(&play(6, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_06_near_miss_check_back_always_commits_announces_a_failed_order() {
    let r = play(6, Variant::NearMiss("check-back-always-commits".into())).await;
    assert_fails_with(&r, &["no-phantom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_06_near_miss_check_back_from_memory_leaves_orders_unknown_forever() {
    let r = play(6, Variant::NearMiss("check-back-from-memory".into())).await;
    assert_fails_with(&r, &["announced-once", "doubt-settled"]);
}
