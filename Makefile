# Every entry point of RocketMQ Dojo. `make play` and `make test` do all the
# set-up themselves (through the bootstrap, testenv/bootstrap/deps.sh) on a fresh machine.

CARGO ?= cargo
# Two cores here: two test binaries at a time, each test starting real servers.
TEST_THREADS ?= 2

.PHONY: deps play test bench build clean-cache crds bench-operator

## Install the pinned RocketMQ jars, Kubernetes, etcd and kwok into ~/.cache/rocketmq-dojo.
deps:
	@testenv/bootstrap/deps.sh all

build:
	$(CARGO) build --workspace --all-targets

## Play level 1 with its starter: builds it, runs it against a local RocketMQ, prints the verdict.
## A FAIL verdict is the expected outcome for a starter; only a run that could not happen fails make.
## Local play needs only the RocketMQ jars, not the Kubernetes tools.
## Not quiet: the first run compiles `dojo` and the RocketMQ client (minutes),
## and cargo's lines show it; the workload then reuses that build (README, "The first run").
LEVEL ?= 1
play:
	@testenv/bootstrap/deps.sh rocketmq
	@$(CARGO) run -p dojo -- play $(LEVEL); status=$$?; [ $$status -le 1 ]

## Every test, against real servers: the level tests while the Kubernetes tools build, then the rest (testenv/bootstrap/test.sh).
test:
	@CARGO=$(CARGO) TEST_THREADS=$(TEST_THREADS) testenv/bootstrap/test.sh

## Start-up times and memory of the environment; per level, wall time and memory of the fix, and near misses beside it.
# `cargo test --bench` runs them in the dev profile, as learners run `dojo`,
# reusing the test build instead of compiling the workspace again in release.
bench: deps
	$(CARGO) test -q -p dojo-testenv --bench environment
	$(CARGO) test -q -p dojo-verifier --bench levels

## Regenerate the Challenge CRD YAML (crds/challenge.yaml) from the Rust types.
crds:
	$(CARGO) run -q -p dojo-crds --bin crdgen -- --write

## The operator under load on kwok: BENCH_CHALLENGES Challenges (default 1000).
bench-operator: deps
	BENCH_CHALLENGES=$${BENCH_CHALLENGES:-1000} $(CARGO) bench -p dojo-operator --bench operator

clean-cache:
	rm -rf $${DOJO_CACHE:-$$HOME/.cache/rocketmq-dojo}

.PHONY: chart-test chart-sync

## The Helm chart, dashboards and alerting rules: lint, template, schema, promtool, and install on the real control plane.
chart-test: deps
	$(CARGO) test -p dojo-chart-tests -- --test-threads=$(TEST_THREADS)

## Copy into the chart what it carries from elsewhere (Helm reads only inside the chart); a test fails while they differ.
chart-sync:
	cp crds/challenge.yaml charts/rocketmq-dojo/crds/challenge.yaml
	cp operator/deploy/clusterrole.yaml charts/rocketmq-dojo/files/operator-clusterrole.yaml
	cp prometheus/dojo-rules.yaml charts/rocketmq-dojo/files/dojo-rules.yaml
	rm -f charts/rocketmq-dojo/dashboards/*.json && cp grafana/*.json charts/rocketmq-dojo/dashboards/

.PHONY: images bench-node bench-cluster

## Build the project's images (images/README.md) as archives in the cache, imported by a real node;
## IMPORT=<containerd socket> also imports them into that containerd (namespace k8s.io).
images: deps
	$(CARGO) build --workspace --bins
	images/build.sh $(if $(IMPORT),--import $(IMPORT)) pause rocketmq workload-base operator verifier

## The real node's figures: bootstrap, start, image builds, pod start latency, broker in pods vs local (root).
bench-node: deps
	$(CARGO) test -q -p dojo-testenv --bench node

## Each level end to end in a cluster on the real node (chart, challenge.yaml, verifier Job): starter, then fix; LEVELS="1 3" picks some (root).
bench-cluster: deps
	$(CARGO) test -q -p dojo-chart-tests --bench levels_in_cluster -- $(LEVELS)
