//! Level 3 against the real broker: the starter FAILS naming the broken
//! invariant, the reference fix PASSES, every near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_03_starter_fails_on_double_debits() {
    let r = play(3, Variant::Starter).await;
    assert_fails_with(&r, &["debited-once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_03_fix_passes() {
    assert_passes(&play(3, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_03_near_miss_in_memory_seen_set_fails_across_instances_and_restarts() {
    let r = play(3, Variant::NearMiss("in-memory-seen-set".into())).await;
    assert_fails_with(&r, &["debited-once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_03_near_miss_debit_then_mark_done_fails_when_killed_between() {
    let r = play(3, Variant::NearMiss("debit-then-mark-done".into())).await;
    assert_fails_with(&r, &["debited-once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_03_near_miss_mark_before_debit_loses_failed_debits() {
    let r = play(3, Variant::NearMiss("mark-before-debit".into())).await;
    assert_fails_with(&r, &["none-lost"]);
}
