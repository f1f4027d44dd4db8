#!/usr/bin/env bash
# `make test`: every test, against real servers, in stages so that a cold
# machine does two things at once.
#   1. the fast lane: `cargo fmt --check`, `cargo clippy -D warnings`, and
#      every level's checker judged on the observations recorded from real
#      runs (no broker; seconds once built);
#   2. the level runs that judge no speed (two side by side) and the crates
#      that need no Kubernetes, while the rest of the bootstrap (Kubernetes,
#      etcd, kwok, helm, the node's parts: tens of minutes of Go compiles on a
#      cold machine) builds in the background at the lowest CPU priority;
#   3. every other crate, on the finished bootstrap;
#   4. the level runs that judge speed (throughput, latency, a crash
#      window), one at a time with the machine to themselves.
# Usage: test.sh   (CARGO, TEST_THREADS and DOJO_CACHE as in the Makefile)
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo=${CARGO:-cargo}
threads=${TEST_THREADS:-2}
cache=${DOJO_CACHE:-$HOME/.cache/rocketmq-dojo}
# The crates whose tests need no Kubernetes; stage 3 runs every other one.
stage2=(dojo-verifier dojo-world dojo-report dojo-kit dojo)

say() { printf '[test] %s\n' "$*"; }
t0=$SECONDS
lap=$SECONDS
stage() { say "$1 took $((SECONDS - lap))s ($((SECONDS - t0))s in)"; lap=$SECONDS; }

testenv/bootstrap/deps.sh rocketmq
mkdir -p "$cache"
log=$cache/deps-background.log
# Its own process group (setsid), so an interrupted run stops its Go builds too.
# A new session is also a new scheduler autogroup, in which nice counts only
# against the group's own processes: the new group itself is lowered too
# (from inside, after setsid, where the kernel has autogroups).
setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 testenv/bootstrap/deps.sh all' >"$log" 2>&1 &
deps=$!
trap 'kill -- -$deps 2>/dev/null || true' EXIT
say "the rest of the bootstrap builds in the background, niced (log: $log)"

failed=0
say "stage 1: the fast lane (fmt, clippy, the checkers on their fixtures)"
$cargo fmt --all --check
$cargo clippy --workspace --all-targets -q -- -D warnings
$cargo test -q -p dojo-verifier --test checkers --test catalogue --lib
stage "stage 1"

$cargo build --workspace --all-targets
say "stage 2: the untimed level runs and the crates that need no Kubernetes (${stage2[*]})"
DOJO_LEVEL_TRIALS=untimed $cargo test --no-fail-fast "${stage2[@]/#/--package=}" -- --test-threads="$threads" || failed=1
stage "stage 2"

say "waiting for the bootstrap"
if ! wait "$deps"; then
  tail -n 30 "$log" >&2
  say "FAILED: the bootstrap (log: $log)"
  exit 1
fi
cat "$log"

say "stage 3: every other crate"
$cargo test --workspace --no-fail-fast "${stage2[@]/#/--exclude=}" -- --test-threads="$threads" || failed=1
stage "stage 3"

say "stage 4: the level runs that judge speed, one at a time"
DOJO_LEVEL_TRIALS=timed $cargo test --no-fail-fast --package=dojo-verifier --test levels -- --test-threads=1 || failed=1
stage "stage 4"
say "done in $((SECONDS - t0))s$([[ $failed -eq 0 ]] || echo ': some tests FAILED (above)')"
exit "$failed"
