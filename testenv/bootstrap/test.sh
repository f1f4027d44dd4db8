#!/usr/bin/env bash
# `make test`: every test, against real servers, in three stages so that a cold
# machine does two things at once. The level tests (and the crates beside
# them) need only the RocketMQ jars; they run while the rest of the bootstrap
# (Kubernetes, etcd, kwok, helm, the node's parts: tens of minutes of Go
# compiles) builds in the background at the lowest CPU priority, so it takes
# mostly the cores the level scenarios leave idle (they mostly wait) and
# hardly slows their timed checks. The rest of the suite then runs on the
# finished bootstrap, and level 1 (a throughput check) last, alone.
# Usage: test.sh   (CARGO, TEST_THREADS and DOJO_CACHE as in the Makefile)
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo=${CARGO:-cargo}
threads=${TEST_THREADS:-2}
cache=${DOJO_CACHE:-$HOME/.cache/rocketmq-dojo}
# The crates whose tests need no Kubernetes; stage 2 runs every other one.
stage1=(dojo-verifier dojo-world dojo-report dojo-kit dojo)

say() { printf '[test] %s\n' "$*"; }
t0=$SECONDS

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
$cargo build --workspace --all-targets
say "stage 1: the crates that need no Kubernetes (${stage1[*]}), $((SECONDS - t0))s in"
# Level 1 judges throughput: its tests run last, alone (stage 3).
$cargo test --no-fail-fast "${stage1[@]/#/--package=}" -- --test-threads="$threads" --skip level_01_ || failed=1

say "stage 1 done at $((SECONDS - t0))s; waiting for the bootstrap"
if ! wait "$deps"; then
  tail -n 30 "$log" >&2
  say "FAILED: the bootstrap (log: $log)"
  exit 1
fi
cat "$log"

say "stage 2: every other crate, $((SECONDS - t0))s in"
$cargo test --workspace --no-fail-fast "${stage1[@]/#/--exclude=}" -- --test-threads="$threads" || failed=1

# Level 1's fix must answer 300 requests/s: with the machine to itself, as a
# learner's `dojo play 1` has it (beside another scenario and a compile it
# fell to 67-201/s in CI runs; alone it makes 1,100-1,400/s).
say "stage 3: level 1, one test at a time, $((SECONDS - t0))s in"
$cargo test --no-fail-fast --package=dojo-verifier --test level_01 -- --test-threads=1 || failed=1
say "done in $((SECONDS - t0))s$([[ $failed -eq 0 ]] || echo ': some tests FAILED (above)')"
exit "$failed"
