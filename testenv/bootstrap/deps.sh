#!/usr/bin/env bash
# Installs everything the test environment needs, pinned and cached outside
# the repository (DOJO_CACHE, default ~/.cache/rocketmq-dojo), one folder per
# tool and version. Idempotent: a step whose stamp exists is skipped.
# Usage: deps.sh [rocketmq|kube|etcd|kwok|all]...
set -euo pipefail

ROCKETMQ_VERSION=5.5.0
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0

here=$(cd "$(dirname "$0")" && pwd)
cache=${DOJO_CACHE:-$HOME/.cache/rocketmq-dojo}
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$cache"

step() { printf '[deps] %-34s %s\n' "$1" "$2"; }
fail() { printf '[deps] FAILED step %s: %s\n' "$1" "$2" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$2" "'$1' not found on PATH: $3"; }

# run STEP DIR LOG CMD...: runs CMD, keeps its output in LOG, and on failure
# names the step and shows the end of the log.
run() {
  local name=$1 log=$2; shift 2
  if ! "$@" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    fail "$name" "see $log"
  fi
}

rocketmq() {
  local dir=$cache/rocketmq-$ROCKETMQ_VERSION
  if [[ -f $dir/.done ]]; then step rocketmq "cached ($dir)"; return; fi
  need java rocketmq "install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)"
  need mvn rocketmq "install Maven (Debian: apt-get install maven)"
  step rocketmq "fetching Apache RocketMQ $ROCKETMQ_VERSION jars from Maven Central"
  local t0=$SECONDS
  rm -rf "$dir"; mkdir -p "$dir"
  run rocketmq "$dir/../rocketmq-fetch.log" mvn -B -q -f "$here/rocketmq/pom.xml" \
    -Drocketmq.version=$ROCKETMQ_VERSION dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/lib"
  echo "$((SECONDS - t0))" > "$dir/.done"
  step rocketmq "done in $((SECONDS - t0))s ($(du -sh "$dir" | cut -f1))"
}

kube() {
  local dir=$cache/kube-$KUBE_VERSION
  if [[ -f $dir/.done ]]; then step kube "cached ($dir)"; return; fi
  need go kube "install Go 1.24+ (Debian: apt-get install golang)"
  step kube "building kube-apiserver, controller-manager, scheduler, kubectl $KUBE_VERSION (cold: about 7 minutes on 2 cores)"
  local t0=$SECONDS minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  mkdir -p "$dir/bin"
  (cd "$here/kube" && run kube "$dir/../kube-build.log" go build -trimpath -ldflags "$ld" -o "$dir/bin/" ./cmd/...)
  echo "$((SECONDS - t0))" > "$dir/.done"
  step kube "done in $((SECONDS - t0))s ($(du -sh "$dir" | cut -f1))"
}

etcd() {
  local dir=$cache/etcd-$ETCD_VERSION
  if [[ -f $dir/.done ]]; then step etcd "cached ($dir)"; return; fi
  need go etcd "install Go 1.24+"
  step etcd "building etcd $ETCD_VERSION"
  local t0=$SECONDS
  mkdir -p "$dir/bin"
  (cd "$here/etcd" && run etcd "$dir/../etcd-build.log" go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .)
  echo "$((SECONDS - t0))" > "$dir/.done"
  step etcd "done in $((SECONDS - t0))s"
}

kwok() {
  local dir=$cache/kwok-$KWOK_VERSION
  if [[ -f $dir/.done ]]; then step kwok "cached ($dir)"; return; fi
  need go kwok "install Go 1.24+"
  step kwok "building kwok $KWOK_VERSION"
  local t0=$SECONDS
  mkdir -p "$dir/bin"
  run kwok "$dir/../kwok-build.log" env GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  echo "$((SECONDS - t0))" > "$dir/.done"
  step kwok "done in $((SECONDS - t0))s"
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(all)
t_all=$SECONDS
for t in "${targets[@]}"; do
  case $t in
    all) rocketmq; etcd; kwok; kube ;;
    rocketmq|kube|etcd|kwok) $t ;;
    *) fail args "unknown target '$t' (rocketmq, kube, etcd, kwok, all)" ;;
  esac
done
step total "$((SECONDS - t_all))s, cache $(du -sh "$cache" 2>/dev/null | cut -f1) in $cache"
