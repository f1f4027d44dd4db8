//! Level 5 against the real broker: the starter FAILS naming the broken
//! invariant, the reference fix PASSES, every near miss FAILS.

#![recursion_limit = "512"]

mod common;

use common::{assert_fails_with, assert_passes, play};
use dojo_verifier::workload::Variant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_05_starter_fails_on_illegal_transitions() {
    let r = play(5, Variant::Starter).await;
    assert_fails_with(&r, &["legal-transitions", "all-done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_05_fix_passes() {
    assert_passes(&play(5, Variant::Fix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_05_near_miss_orderly_round_robin_fails() {
    let r = play(5, Variant::NearMiss("orderly-round-robin".into())).await;
    assert_fails_with(&r, &["legal-transitions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_05_near_miss_hash_on_event_key_fails() {
    let r = play(5, Variant::NearMiss("hash-on-event-key".into())).await;
    assert_fails_with(&r, &["legal-transitions"]);
}
