# Every entry point of RocketMQ Dojo. `make play` and `make test` do all the
# set-up themselves (through `make deps`) on a fresh machine.

CARGO ?= cargo
# Two cores here: two test binaries at a time, each test starting real servers.
TEST_THREADS ?= 2

.PHONY: deps play test bench build clean-cache crds bench-operator

## Install the pinned RocketMQ jars, Kubernetes, etcd and kwok into ~/.cache/rocketmq-dojo.
deps:
	@testenv/bootstrap/deps.sh all

build:
	$(CARGO) build --workspace --all-targets

## Start the local environment and show where everything listens (Ctrl-C ends it).
play: deps
	$(CARGO) run -q -p dojo -- up

## Every test, against real servers.
test: deps
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=$(TEST_THREADS)

## Start-up times and memory of each part of the environment.
bench: deps
	$(CARGO) bench -p dojo-testenv --bench environment

## Regenerate the Challenge CRD YAML (crds/challenge.yaml) from the Rust types.
crds:
	$(CARGO) run -q -p dojo-crds --bin crdgen -- --write

## The operator under load on kwok: BENCH_CHALLENGES Challenges (default 1000).
bench-operator: deps
	BENCH_CHALLENGES=$${BENCH_CHALLENGES:-1000} $(CARGO) bench -p dojo-operator --bench operator

clean-cache:
	rm -rf $${DOJO_CACHE:-$$HOME/.cache/rocketmq-dojo}
