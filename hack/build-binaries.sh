#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) from the Go module proxy into a cache outside the repo, keyed by
# version. Skips what is already built. A cold build takes many minutes on two
# cores, so progress (packages compiled, elapsed time) is printed while it runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The pinned versions are read from the wrapper modules, the one place they live.
module_version() { awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2} $1=="require" && $2==m {print $3}' "$1" | head -1; }
K8S_VERSION="$(module_version "$HERE/k8s/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(module_version "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)"
CACHE="${SZ_CACHE_DIR:-$HOME/.cache/schedulezero}"
K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
HELM_VERSION="$(module_version "$HERE/helm/go.mod" helm.sh/helm/v3)"
HELM_BIN="$CACHE/bin/helm-$HELM_VERSION"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Runs `go build -v` and reports how many packages were compiled every 30 s, so a
# 20-minute cold build never looks hung.
build_with_progress() {
  local label="$1"; shift
  local start=$SECONDS vlog
  vlog="$(mktemp)"
  log "building $label ..."
  ( "$@" 2>"$vlog" ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if (( (SECONDS - start) % 30 < 5 )) && kill -0 "$pid" 2>/dev/null; then
      log "  $label: $(grep -vc '^#' "$vlog" || true) packages compiled, $((SECONDS - start)) s elapsed"
    fi
  done
  if ! wait "$pid"; then
    grep -v '^[a-z0-9./_-]*$' "$vlog" >&2 || cat "$vlog" >&2
    rm -f "$vlog"
    log "FAILED: $label"
    return 1
  fi
  rm -f "$vlog"
  log "built $label in $((SECONDS - start)) s"
}

if [[ -x "$ETCD_BIN/etcd" ]]; then
  log "etcd $ETCD_VERSION cached at $ETCD_BIN"
else
  mkdir -p "$ETCD_BIN"
  (cd "$HERE/etcd" && build_with_progress "etcd $ETCD_VERSION" \
    go build -v -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
fi

COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler)
missing=()
for c in "${COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || missing+=("$c"); done
if (( ${#missing[@]} == 0 )); then
  log "kubernetes $K8S_VERSION cached at $K8S_BIN"
else
  mkdir -p "$K8S_BIN"
  minor="${K8S_VERSION#v}"; major="${minor%%.*}"; minor="${minor#*.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # One `go build` for all missing components: they share most packages, and the
  # go command compiles each shared package once.
  pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  tmp="$K8S_BIN/.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HERE/k8s" && build_with_progress "kubernetes $K8S_VERSION (${missing[*]})" \
    go build -v -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for c in "${missing[@]}"; do mv "$tmp/$c" "$K8S_BIN/$c"; done
  rm -rf "$tmp"
fi

if [[ -x "$HELM_BIN/helm" ]]; then
  log "helm $HELM_VERSION cached at $HELM_BIN"
else
  mkdir -p "$HELM_BIN"
  (cd "$HERE/helm" && build_with_progress "helm $HELM_VERSION" \
    go build -v -trimpath -ldflags "-s -w" -o "$HELM_BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$HELM_BIN/helm.tmp" "$HELM_BIN/helm"
fi

printf '%s\n%s\n%s\n' "$ETCD_BIN" "$K8S_BIN" "$HELM_BIN" > "$CACHE/bin/current"
log "ready: $ETCD_BIN $K8S_BIN"
