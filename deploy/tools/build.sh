#!/usr/bin/env bash
# Build the pinned operations tools from the Go module proxy into the cache, once; later calls reuse them.
#
#   deploy/tools/build.sh helm promtool prometheus kubecheck   (no argument: helm, promtool and kubecheck)
#
# Where: ${BWSM_CACHE_DIR:-~/.cache/bytewax-speechmatics}/tools/<tool>-<version>/<tool>; prints each tool's path.
# Why built, not downloaded: only package registries are reachable, and a pinned `go install` is reproducible.
# Prometheus and promtool are built with `remove_all_sd` (no cloud service-discovery plugins: a third of the build).
set -euo pipefail

HELM_VERSION=v4.3.2
PROMETHEUS_VERSION=v0.316.0  # the Go module version of Prometheus 3.x (cmd/promtool, cmd/prometheus)
here="$(cd "$(dirname "$0")" && pwd)"
cache="${BWSM_CACHE_DIR:-$HOME/.cache/bytewax-speechmatics}/tools"

command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"  # Go's own tarball layout, when not on PATH
command -v go >/dev/null || { echo "tools: need Go (1.26+) to build helm and promtool from the Go module proxy" >&2; exit 2; }

build() {  # build NAME VERSION PACKAGE [go install flags...]
  local name=$1 version=$2 package=$3; shift 3
  local dir="$cache/$name-$version"
  if [[ ! -x "$dir/$name" ]]; then
    local start=$SECONDS
    echo "tools: building $name $version from the Go module proxy (once; cached in $dir)" >&2
    mkdir -p "$dir.tmp"
    GOBIN="$dir.tmp" GOFLAGS=-buildvcs=false go install -trimpath -ldflags='-s -w' "$@" "$package@$version" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "tools: built $name in $((SECONDS - start)) s" >&2
  fi
  echo "$dir/$name"
}

kubecheck() {  # our validator: strict decoding into the Kubernetes API types (see kubecheck/main.go)
  local sum; sum=$(cat "$here/kubecheck/go.mod" "$here/kubecheck/go.sum" "$here/kubecheck/main.go" | sha256sum | cut -c1-12)
  local dir="$cache/kubecheck-$sum"
  if [[ ! -x "$dir/kubecheck" ]]; then
    local start=$SECONDS
    echo "tools: building kubecheck (once; cached in $dir)" >&2
    mkdir -p "$dir"
    (cd "$here/kubecheck" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags='-s -w' -o "$dir/kubecheck.tmp" .) >&2
    mv "$dir/kubecheck.tmp" "$dir/kubecheck"
    echo "tools: built kubecheck in $((SECONDS - start)) s" >&2
  fi
  echo "$dir/kubecheck"
}

tools=("$@")
((${#tools[@]})) || tools=(helm promtool kubecheck)
for tool in "${tools[@]}"; do
  case $tool in
    helm) build helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm ;;
    promtool) build promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool -tags remove_all_sd ;;
    prometheus) build prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus -tags remove_all_sd ;;
    kubecheck) kubecheck ;;
    *) echo "tools: unknown tool $tool (helm, promtool, prometheus, kubecheck)" >&2; exit 2 ;;
  esac
done
