#!/usr/bin/env bash
# Installs everything the test environment needs, pinned and cached outside
# the repository (DOJO_CACHE, default ~/.cache/rocketmq-dojo), one folder per
# tool and version. Idempotent: a step whose stamp exists is skipped.
# Usage: deps.sh [rocketmq|kube|etcd|kwok|helm|prometheus|node|all]...
set -euo pipefail

ROCKETMQ_VERSION=5.5.0
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.22.0
# Debian's package (bookworm); any Debian revision of this upstream version.
PROMETHEUS_VERSION=2.42.0
CRICTL_VERSION=v1.34.0
COREDNS_VERSION=v1.14.7

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

# Stamps the release into every Kubernetes binary (else /version says v0.0.0).
kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
}

kube() {
  local dir=$cache/kube-$KUBE_VERSION
  if [[ -f $dir/.done ]]; then step kube "cached ($dir)"; return; fi
  need go kube "install Go 1.24+ (Debian: apt-get install golang)"
  step kube "building kube-apiserver, controller-manager, scheduler, kubectl $KUBE_VERSION (cold: about 7 minutes on 2 cores)"
  local t0=$SECONDS ld; ld=$(kube_ldflags)
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

helm() {
  local dir=$cache/helm-$HELM_VERSION
  if [[ -f $dir/.done ]]; then step helm "cached ($dir)"; return; fi
  need go helm "install Go 1.24+"
  step helm "building helm $HELM_VERSION"
  local t0=$SECONDS client_go
  mkdir -p "$dir/bin"
  # The wrapper module's go.sum pins every dependency. Stamped as helm's own
  # Makefile does: its version, and the Kubernetes version `helm template`
  # and `helm lint` assume (client-go v0.N is Kubernetes 1.N).
  client_go=$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  client_go=${client_go#v0.}
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${client_go%%.*}"
  done
  (cd "$here/helm" && run helm "$dir/../helm-build.log" go build -trimpath -ldflags "$ld" -o "$dir/bin/helm" helm.sh/helm/v3/cmd/helm)
  echo "$((SECONDS - t0))" > "$dir/.done"
  step helm "done in $((SECONDS - t0))s"
}

# Prometheus and promtool from Debian's package, unpacked into the cache:
# nothing is installed system-wide and no service starts.
prometheus() {
  local dir=$cache/prometheus-$PROMETHEUS_VERSION
  if [[ -f $dir/.done ]]; then step prometheus "cached ($dir)"; return; fi
  need apt-get prometheus "Debian's apt is needed to fetch the prometheus package"
  need dpkg-deb prometheus "Debian's dpkg is needed to unpack the prometheus package"
  step prometheus "fetching Debian's prometheus $PROMETHEUS_VERSION"
  local t0=$SECONDS tmp
  tmp=$(mktemp -d); rm -rf "$dir"; mkdir -p "$dir/bin"
  # An empty package list (fresh machine) needs one `apt-get update`.
  if ! (cd "$tmp" && apt-get download prometheus >"$dir/../prometheus-fetch.log" 2>&1); then
    run prometheus "$dir/../prometheus-update.log" apt-get update -qq
    (cd "$tmp" && run prometheus "$dir/../prometheus-fetch.log" apt-get download prometheus)
  fi
  local deb version
  deb=$(ls "$tmp"/prometheus_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  [[ $version == "$PROMETHEUS_VERSION+"* ]] || fail prometheus "Debian serves prometheus $version, not $PROMETHEUS_VERSION: bump PROMETHEUS_VERSION here and in charts/tests"
  run prometheus "$dir/../prometheus-unpack.log" dpkg-deb -x "$deb" "$dir/root"
  ln -s ../root/usr/bin/prometheus ../root/usr/bin/promtool "$dir/bin/"
  rm -rf "$tmp"
  echo "$version" > "$dir/.done"
  step prometheus "done in $((SECONDS - t0))s ($version)"
}

# The real node's system parts from Debian (containerd 1.6, runc, the CNI
# plugins, iptables, and the image tools umoci, skopeo, debootstrap),
# installed with apt-get when missing and we are root (CI is); no service is
# started.
node_packages() {
  local missing=()
  for c in containerd runc ctr iptables nft conntrack umoci skopeo debootstrap objcopy; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [[ -x /usr/lib/cni/bridge ]] || missing+=(cni-plugins)
  [[ ${#missing[@]} -eq 0 ]] && return
  [[ $(id -u) -eq 0 ]] || fail node "missing ${missing[*]}: as root, apt-get install containerd runc containernetworking-plugins iptables nftables conntrack umoci skopeo debootstrap binutils"
  step node "apt-get install containerd runc containernetworking-plugins iptables nftables conntrack umoci skopeo debootstrap binutils"
  run node "$cache/node-apt.log" apt-get update -qq
  run node "$cache/node-apt.log" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    containerd runc containernetworking-plugins iptables nftables conntrack umoci skopeo debootstrap binutils
}

# kubelet and kube-proxy of the control plane's release (same wrapper
# module, mains under kube/node/) and the pod sandbox's pause binary.
node() {
  node_packages
  local dir=$cache/node-$KUBE_VERSION
  if [[ -f $dir/.done ]]; then step node "cached ($dir)"; else
    need go node "install Go 1.24+"
    step node "building kubelet, kube-proxy $KUBE_VERSION and pause (cold: a few minutes after kube)"
    local t0=$SECONDS ld; ld=$(kube_ldflags)
    mkdir -p "$dir/bin"
    (cd "$here/kube" && run node "$dir/../node-build.log" go build -trimpath -ldflags "$ld" -o "$dir/bin/" ./node/...)
    (cd "$here/pause" && run node "$dir/../node-build.log" env CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin/pause" .)
    echo "$((SECONDS - t0))" > "$dir/.done"
    step node "done in $((SECONDS - t0))s"
  fi
  crictl
  coredns
}

# go_install TOOL VERSION MODULE@VERSION: a plain `go install` into the cache.
go_install() {
  local tool=$1 version=$2 dir=$cache/$1-$2
  if [[ -f $dir/.done ]]; then step "$tool" "cached ($dir)"; return; fi
  need go "$tool" "install Go 1.24+"
  step "$tool" "building $tool $version"
  local t0=$SECONDS
  mkdir -p "$dir/bin"
  run "$tool" "$dir/../$tool-build.log" env GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" "$3"
  echo "$((SECONDS - t0))" > "$dir/.done"
  step "$tool" "done in $((SECONDS - t0))s"
}

# A CRI client: the node's teardown stops and removes pod sandboxes with it.
crictl() { go_install crictl "$CRICTL_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"; }

# Pod DNS: Service and pod names, answered from the API by CoreDNS's
# kubernetes plugin.
coredns() { go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"; }

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(all)
t_all=$SECONDS
for t in "${targets[@]}"; do
  case $t in
    all) rocketmq; etcd; kwok; kube; helm; prometheus; node ;;
    rocketmq|kube|etcd|kwok|helm|prometheus|node|crictl|coredns) $t ;;
    *) fail args "unknown target '$t' (rocketmq, kube, etcd, kwok, helm, prometheus, node, all)" ;;
  esac
done
step total "$((SECONDS - t_all))s, cache $(du -sh "$cache" 2>/dev/null | cut -f1) in $cache"
