#!/usr/bin/env bash
# Builds the project's images with no container engine and no registry.
# Each image is described once, by images/NAME/Containerfile; this script
# reads the subset of Containerfile those files use (ARG, FROM, one
# `RUN apt-get install`, COPY [--chmod], ENV, WORKDIR, USER, EXPOSE,
# ENTRYPOINT, CMD) and builds the same contents with debootstrap (the Debian
# base, from Debian's packages), umoci (layers and config) and skopeo (a
# docker-archive named localhost/rocketmq-dojo/NAME:TAG that `ctr images
# import` keeps). The Debian bases and the archives are cached under
# ${DOJO_CACHE:-~/.cache/rocketmq-dojo}/images; an unchanged image is not rebuilt.
#
# Usage: images/build.sh [--import CONTAINERD_SOCKET] NAME[=PATH]...
#   NAME is one of: pause rocketmq workload-base operator verifier workload.
#   PATH is what goes into the build context in place of the default:
#     pause     the pause binary      (default: the node bootstrap's)
#     rocketmq  the folder of jars    (default: testenv/bootstrap/deps.sh rocketmq's)
#     operator  the dojo-operator binary (default: target/debug/dojo-operator)
#     verifier  the dojo-verifier binary (default: target/debug/dojo-verifier)
#     workload  the learner's binary  (no default)
#   Any other NAME=PATH is a workload image of that name (images/workload's
#   recipe with PATH as the binary): `level-01-starter=target/release/orders`
#   is localhost/rocketmq-dojo/level-01-starter:TAG, what a level's
#   challenge.yaml names.
#   Images built FROM another of ours (operator, verifier, workload) build it
#   first. Prints one line per image: NAME, reference, archive path, bytes,
#   and the seconds its build took (`cached:Ns` when up to date: N is the
#   last build's).
#   TAG (env) defaults to the project version (crds/Cargo.toml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${DOJO_CACHE:-$HOME/.cache/rocketmq-dojo}
store=$cache/images
layout=$store/oci
# shellcheck source=base.env
source "$here/base.env"
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/crds/Cargo.toml" | head -n1)}
pin() { sed -n "s/^$1=//p" "$repo/testenv/bootstrap/deps.sh"; }
target=${CARGO_TARGET_DIR:-$repo/target}

fail() { printf '[images] FAILED %s: %s\n' "$1" "$2" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1" "not found on PATH: $2"; }

default_source() {
  case $1 in
    pause) echo "$cache/node-$(pin KUBE_VERSION)/bin/pause" ;;
    rocketmq) echo "$cache/rocketmq-$(pin ROCKETMQ_VERSION)/lib" ;;
    operator) echo "$target/debug/dojo-operator" ;;
    verifier) echo "$target/debug/dojo-verifier" ;;
    workload-base) echo "" ;;
    workload) fail workload "name the learner's binary: workload=PATH" ;;
    *) fail "$1" "unknown image (pause, rocketmq, workload-base, operator, verifier, workload, or NAME=PATH for a workload image named NAME)" ;;
  esac
}

# The name the Containerfile COPYs the given source under.
context_name() {
  case $1 in
    pause) echo pause ;; rocketmq) echo lib ;; operator) echo dojo-operator ;;
    verifier) echo dojo-verifier ;; workload) echo workload ;;
  esac
}

ensure_layout() {
  [[ -f $layout/index.json ]] || umoci init --layout "$layout"
}

has_tag() { umoci ls --layout "$layout" | grep -qxF "$1"; }

# debian_base PACKAGES...: tag of a Debian minbase image with PACKAGES, built
# once per package set.
debian_base() {
  local key tag
  key=$(printf '%s\n' "$DEBIAN_SUITE" "$@" | sha256sum | cut -c1-12)
  tag=debian-$DEBIAN_SUITE-$key
  if has_tag "$tag"; then echo "$tag"; return; fi
  need debootstrap "apt-get install debootstrap"
  local work=$store/tmp/$tag
  rm -rf "$work"; mkdir -p "$work" "$store/debs"
  local include=()
  [[ $# -gt 0 ]] && include=("--include=$(IFS=,; echo "$*")")
  printf '[images] debootstrap %s %s (once per package set)\n' "$DEBIAN_SUITE" "$*" >&2
  debootstrap --variant=minbase "${include[@]}" --cache-dir="$store/debs" \
    "$DEBIAN_SUITE" "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work.log" 2>&1 \
    || { tail -n 20 "$work.log" >&2; fail debootstrap "see $work.log"; }
  # What an image never needs: package lists and caches, docs, device nodes
  # (the runtime mounts its own /dev).
  rm -rf "$work/rootfs"/var/cache/apt/* "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/usr/share/{doc,man,info} \
    "$work/rootfs"/var/log/* "$work/rootfs"/dev/*
  umoci new --image "$layout:$tag"
  umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
  rm -rf "$work/bundle/rootfs"
  mv "$work/rootfs" "$work/bundle/rootfs"
  umoci repack --image "$layout:$tag" "$work/bundle"
  umoci config --image "$layout:$tag" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  rm -rf "$work" "$work.log"
  echo "$tag"
}

# json_words '["a", "b"]': a, b one per line (the exec form of ENTRYPOINT/CMD).
json_words() { python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$1"; }

declare -A built=()

# report NAME ARCHIVE HOW: one line per image: name, reference, archive,
# bytes, and the build's seconds (HOW).
report() {
  printf '%-14s %s %s %s %s\n' "$1" "localhost/rocketmq-dojo/$1:$TAG" "$2" "$(stat -c %s "$2")" "$3"
}

build() {
  local name=$1 source=$2
  [[ -n ${built[$name]:-} ]] && return
  # A name of no recipe of its own is a workload image (see the usage).
  local recipe=$name
  [[ -d $here/$name ]] || recipe=workload
  local file=$here/$recipe/Containerfile
  [[ -f $file ]] || fail "$name" "no $file"
  local t0=$SECONDS ctx=$store/tmp/ctx-$name
  rm -rf "$ctx"; mkdir -p "$ctx"
  find "$here/$recipe" -maxdepth 1 -type f ! -name Containerfile -exec cp -p {} "$ctx/" \;
  if [[ -n $source ]]; then
    [[ -e $source ]] || fail "$name" "$source does not exist (build it first, or pass $name=PATH)"
    local dest=$ctx/$(context_name "$recipe")
    if [[ -d $source ]]; then cp -rL "$source" "$dest"
    # Debug info is most of a debug binary and nothing a container needs.
    elif [[ $(head -c4 "$source" | od -An -c | tr -d ' ') == 177ELF ]] && command -v objcopy >/dev/null; then
      objcopy --strip-debug "$source" "$dest"
    else cp -L "$source" "$dest"; fi
  fi

  # The Containerfile, one instruction per line (no continuations in ours).
  local from="" pkgs=() copies=() cfg=()
  while read -r instr rest; do
    case ${instr^^} in
      ''|\#*|ARG) ;;
      FROM) from=${rest//\$\{TAG\}/$TAG} ;;
      RUN)
        [[ $rest == *"apt-get install"* ]] || fail "$name" "only 'RUN apt-get ... install PKGS' is understood here: $rest"
        local words; read -ra words <<<"${rest#*apt-get install}"
        for w in "${words[@]}"; do
          [[ $w == '&&' ]] && break
          [[ $w == -* ]] || pkgs+=("$w")
        done ;;
      COPY) copies+=("$rest") ;;
      ENV) cfg+=(--config.env "$rest") ;;
      WORKDIR) cfg+=(--config.workingdir "$rest") ;;
      USER) cfg+=(--config.user "$rest") ;;
      EXPOSE) for p in $rest; do cfg+=(--config.exposedports "$p/tcp"); done ;;
      ENTRYPOINT) while read -r w; do cfg+=(--config.entrypoint "$w"); done < <(json_words "$rest") ;;
      CMD) while read -r w; do cfg+=(--config.cmd "$w"); done < <(json_words "$rest") ;;
      *) fail "$name" "instruction $instr is not understood by images/build.sh" ;;
    esac
  done <"$file"

  # Unchanged recipe, context and base: keep the archive.
  local out=$store/$name-$TAG.tar key
  key=$( { cat "$here/base.env" "$file"; echo "$from ${pkgs[*]}"; (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum);
           if [[ $from == localhost/rocketmq-dojo/* ]]; then cat "$store/$(basename "${from%%:*}")-$TAG.key" 2>/dev/null || true; fi; } |
           sha256sum | cut -c1-16)
  local image=$name-$TAG
  if [[ -f $out && $(cat "$store/$image.key" 2>/dev/null) == "$key" ]] && has_tag "$image"; then
    built[$name]=1
    report "$name" "$out" "cached:$(cat "$store/$image.secs" 2>/dev/null || echo ?)s"
    rm -rf "$ctx"; return
  fi

  if has_tag "$image"; then umoci rm --image "$layout:$image"; fi
  case $from in
    scratch) umoci new --image "$layout:$image" ;;
    "\${DEBIAN_IMAGE}") local base; base=$(debian_base "${pkgs[@]}"); umoci tag --image "$layout:$base" "$image" ;;
    localhost/rocketmq-dojo/*)
      local parent; parent=$(basename "${from%%:*}")
      build "$parent" "$(default_source "$parent")"
      umoci tag --image "$layout:$parent-$TAG" "$image" ;;
    *) fail "$name" "FROM $from: only scratch, \${DEBIAN_IMAGE} and localhost/rocketmq-dojo/NAME:\${TAG} are understood" ;;
  esac
  for c in "${copies[@]}"; do
    local mode="" args; read -ra args <<<"$c"
    if [[ ${args[0]} == --chmod=* ]]; then mode=${args[0]#--chmod=}; args=("${args[@]:1}"); fi
    [[ ${#args[@]} -eq 2 ]] || fail "$name" "COPY takes one source and one target: $c"
    [[ -e $ctx/${args[0]} ]] || fail "$name" "COPY ${args[0]}: not in the build context"
    [[ -n $mode ]] && chmod "$mode" "$ctx/${args[0]}"
    umoci insert --image "$layout:$image" "$ctx/${args[0]}" "${args[1]}" >/dev/null
  done
  [[ ${#cfg[@]} -eq 0 ]] || umoci config --image "$layout:$image" "${cfg[@]}"
  umoci gc --layout "$layout"
  rm -f "$out"
  skopeo copy -q "oci:$layout:$image" "docker-archive:$out:localhost/rocketmq-dojo/$name:$TAG"
  echo "$key" >"$store/$image.key"
  echo "$((SECONDS - t0))" >"$store/$image.secs"
  rm -rf "$ctx"
  built[$name]=1
  report "$name" "$out" "$((SECONDS - t0))s"
}

import_to=""
if [[ ${1:-} == --import ]]; then import_to=$2; shift 2; fi
[[ $# -gt 0 ]] || fail usage "name the images: pause rocketmq workload-base operator verifier workload=PATH"
need umoci "apt-get install umoci"
need skopeo "apt-get install skopeo"
# One build at a time per cache: builds share the OCI layout and its tags.
mkdir -p "$store"
exec 9>"$store/.lock"
flock 9
ensure_layout
for arg in "$@"; do
  name=${arg%%=*}
  [[ $name =~ ^[a-z0-9][a-z0-9._-]*$ ]] || fail "$name" "an image name is lower-case letters, digits, '.', '_' and '-'"
  if [[ $arg == *=* ]]; then source_path=${arg#*=}; else source_path=$(default_source "$name"); fi
  build "$name" "$source_path"
  if [[ -n $import_to ]]; then
    ctr --address "$import_to" -n k8s.io images import "$store/$name-$TAG.tar" >/dev/null
  fi
done
