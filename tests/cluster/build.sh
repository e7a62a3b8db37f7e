#!/usr/bin/env bash
# Builds (once) the Go binaries of the local control plane and caches them outside the checkout,
# keyed by version:
#   $GITOPS_CACHE_DIR/bin/k8s-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler}
#   $GITOPS_CACHE_DIR/bin/k8s-node-<v>/{kubelet,kube-proxy}   (the real node, same k8s version)
#   $GITOPS_CACHE_DIR/bin/etcd-<v>/etcd, kwok-<v>/kwok, krew-<v>/kubectl-krew, coredns-<v>/coredns
#   $GITOPS_CACHE_DIR/bin/sops-<v>/sops, age-<v>/{age,age-keygen}   (the real SOPS tools)
#   $GITOPS_CACHE_DIR/bin/flux-<v>/{source-controller,kustomize-controller}   (the bench only)
# Each directory holds a SHA256SUMS stamp written after a successful build; a directory whose
# binaries no longer match their stamp is treated as corrupt and rebuilt.
# Usage: build.sh [k8s|node|etcd|kwok|krew|coredns|sops|age|flux ...]   (default: k8s etcd kwok)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false

log() { printf '[build] %s\n' "$*" >&2; }
die() { printf '[build] error: %s\n' "$*" >&2; exit 1; }

# cached DIR BIN... : true when DIR has a stamp that matches every listed binary.
cached() {
  local dir=$1; shift
  [ -f "$dir/SHA256SUMS" ] || return 1
  if ! (cd "$dir" && sha256sum --quiet --check SHA256SUMS >/dev/null 2>&1); then
    log "cache $dir is corrupt (checksum mismatch); rebuilding"
    rm -rf "$dir"
    return 1
  fi
  local b
  for b in "$@"; do [ -x "$dir/$b" ] || { rm -rf "$dir"; return 1; }; done
}

stamp() {
  local dir=$1; shift
  (cd "$dir" && sha256sum "$@" > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
}

# wrapper_module DIR MODULE VERSION: a throwaway module outside the checkout requiring MODULE.
wrapper_module() {
  local dir=$1 module=$2 version=$3
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init gitops.local/build >/dev/null 2>&1 && go mod edit -require="$module@$version")
}

# build_k8s CACHE-NAME COLD-TIME BINARY...: k8s.io/kubernetes/cmd/BINARY at $K8S_VERSION.
build_k8s() {
  local cache=$1 cold=$2; shift 2
  local out="$GITOPS_CACHE_DIR/bin/$cache-$K8S_VERSION"
  local bins=("$@")
  if cached "$out" "${bins[@]}"; then log "${bins[*]} $K8S_VERSION cached in $out"; return; fi
  log "building ${bins[*]} $K8S_VERSION (cold: $cold on 2 cores)"
  local work="$GITOPS_CACHE_DIR/work/$cache-$K8S_VERSION"
  wrapper_module "$work" k8s.io/kubernetes "$K8S_VERSION"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  # Every k8s.io/* module that kubernetes replaces with ./staging/... is published as v0.<minor>.<patch>.
  local staging_version="v0.${K8S_VERSION#v1.}"
  local m
  for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod"); do
    (cd "$work" && go mod edit -replace "$m=$m@$staging_version")
  done
  local major=1 minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$work" && go mod tidy >/dev/null 2>&1 || true)
  mkdir -p "$out.tmp"
  # One `go build` of every binary: the packages they share compile once, and the compiler keeps
  # both cores busy through what would otherwise be each build's serial tail (its link).
  local pkgs=() b
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "  go build ${pkgs[*]}"
  (cd "$work" && for p in "${pkgs[@]}"; do go get "$p@$K8S_VERSION" >/dev/null 2>&1 || true; done
   go build -tags selinux,notest -ldflags "$ld" -o "$out.tmp/" "${pkgs[@]}") \
    || die "go build of ${bins[*]} $K8S_VERSION failed (see output above)"
  stamp "$out.tmp" "${bins[@]}"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "${bins[*]} $K8S_VERSION built into $out"
}

build_simple() { # name module version package binary-name
  local name=$1 module=$2 version=$3 pkg=$4 bin=$5
  local out="$GITOPS_CACHE_DIR/bin/$name-$version"
  if cached "$out" "$bin"; then log "$name $version cached in $out"; return; fi
  log "building $name $version"
  local work="$GITOPS_CACHE_DIR/work/$name-$version"
  wrapper_module "$work" "$module" "$version"
  mkdir -p "$out.tmp"
  (cd "$work" && go get "$pkg@$version" >/dev/null 2>&1 || true
   go build -ldflags "-s -w" -o "$out.tmp/$bin" "$pkg") || die "go build of $pkg@$version failed"
  stamp "$out.tmp" "$bin"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "$name $version built into $out"
}

# go_install NAME VERSION PACKAGE BINARY...: `go install PACKAGE@VERSION` (the module's own go.mod,
# as its authors build it) into $GITOPS_CACHE_DIR/bin/NAME-VERSION. A directory that holds every
# binary but no stamp (written by an older version of this script) is stamped, not rebuilt.
go_install() {
  local name=$1 version=$2 pkg=$3; shift 3
  local out="$GITOPS_CACHE_DIR/bin/$name-$version" b unstamped=true
  for b in "$@"; do [ -x "$out/$b" ] || unstamped=false; done
  if [ ! -f "$out/SHA256SUMS" ] && $unstamped; then stamp "$out" "$@"; fi
  if cached "$out" "$@"; then log "$name $version cached in $out"; return; fi
  log "building $name $version"
  rm -rf "$out.tmp"
  GOBIN="$out.tmp" go install -ldflags "-s -w" "$pkg@$version" || die "go install of $pkg@$version failed"
  stamp "$out.tmp" "$@"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "$name $version built into $out"
}

# CoreDNS for the real node's cluster DNS, with only the plugins the node's Corefile uses (the
# stock build links the AWS, Azure and Google Cloud SDKs for plugins that would send queries off
# the machine). The order of dnsserver.Directives is CoreDNS's own plugin order (plugin.cfg).
build_coredns() {
  local out="$GITOPS_CACHE_DIR/bin/coredns-$COREDNS_VERSION"
  if cached "$out" coredns; then log "coredns $COREDNS_VERSION cached in $out"; return; fi
  log "building coredns $COREDNS_VERSION (errors, health, ready, reload, cache, kubernetes)"
  local work="$GITOPS_CACHE_DIR/work/coredns-$COREDNS_VERSION"
  wrapper_module "$work" github.com/coredns/coredns "$COREDNS_VERSION"
  local plugins=(reload ready health errors cache kubernetes) imports="" directives="" p
  for p in "${plugins[@]}"; do
    imports="$imports	_ \"github.com/coredns/coredns/plugin/$p\"
"
    directives="$directives\"$p\", "
  done
  cat > "$work/main.go" <<GO
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
$imports)

func init() { dnsserver.Directives = []string{$directives} }

func main() { coremain.Run() }
GO
  mkdir -p "$out.tmp"
  (cd "$work" && go mod tidy >/dev/null 2>&1 && go build -ldflags "-s -w" -o "$out.tmp/coredns" .) \
    || die "go build of coredns $COREDNS_VERSION failed"
  stamp "$out.tmp" coredns
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "coredns $COREDNS_VERSION built into $out"
}

# Modules a Flux controller requires at a version the Go module proxy refuses, each with the
# closest version it serves: "controller module version".
FLUX_SUBSTITUTES=(
  "source-controller github.com/fluxcd/pkg/artifact v0.18.0"
)

# Flux's controllers keep their main package at the module root and carry replace directives in
# their go.mod, which a dependent module ignores: each is built from a wrapper module that
# requires it as a tool and copies its non-local replace directives (the local ones point into
# its own tree, e.g. ./api, whose published module at the required version is the same code).
# `go mod tidy -e` because a test-only dependency of source-controller is refused by the proxy.
build_flux() {
  local out="$FLUX_BIN" controllers=(source-controller kustomize-controller)
  if cached "$out" "${controllers[@]}"; then log "flux $FLUX_VERSION cached in $out"; return; fi
  log "building flux $FLUX_VERSION ${controllers[*]} (cold: 10-20 min on 2 cores)"
  mkdir -p "$out.tmp"
  local c module work gomod sub
  for c in "${controllers[@]}"; do
    module=github.com/fluxcd/$c
    work="$GITOPS_CACHE_DIR/work/flux-$FLUX_VERSION/$c"
    wrapper_module "$work" "$module" "$FLUX_VERSION"
    gomod=$(go mod download -json "$module@$FLUX_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] || die "could not download $module@$FLUX_VERSION from the Go module proxy"
    # Non-local replacements name a version; local ones (./api) do not.
    local r
    for r in $(go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    if new.get("Version"):
        at = "@" + old["Version"] if old.get("Version") else ""
        print(old["Path"] + at + "=" + new["Path"] + "@" + new["Version"])
'); do
      (cd "$work" && go mod edit -replace "$r")
    done
    local sub_controller sub_module sub_version
    for sub in "${FLUX_SUBSTITUTES[@]}"; do
      read -r sub_controller sub_module sub_version <<< "$sub"
      if [ "$sub_controller" = "$c" ]; then
        (cd "$work" && go mod edit -replace "$sub_module=$sub_module@$sub_version")
      fi
    done
    (cd "$work" && go mod edit -tool "$module") || die "go mod edit -tool $module failed"
    log "  go mod tidy -e ($c)"
    (cd "$work" && go mod tidy -e >"$work/tidy.log" 2>&1) || die "go mod tidy of $c failed: see $work/tidy.log"
    log "  go build $module"
    (cd "$work" && go build -ldflags "-s -w" -o "$out.tmp/$c" "$module") \
      || die "go build of $module@$FLUX_VERSION failed (see output above)"
  done
  stamp "$out.tmp" "${controllers[@]}"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "flux $FLUX_VERSION built into $out"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(k8s etcd kwok)
command -v go >/dev/null || die "go is not installed (Go >= 1.24 needed to build the control plane)"
for t in "${targets[@]}"; do
  case "$t" in
    k8s) build_k8s k8s "5-10 min" kube-apiserver kube-controller-manager kube-scheduler ;;
    node) build_k8s k8s-node "2-5 min after k8s" kubelet kube-proxy ;;
    coredns) build_coredns ;;
    etcd) build_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 etcd ;;
    kwok) build_simple kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok ;;
    krew) build_simple krew sigs.k8s.io/krew "$KREW_VERSION" sigs.k8s.io/krew/cmd/krew kubectl-krew ;;
    sops) go_install sops "$SOPS_VERSION" github.com/getsops/sops/v3/cmd/sops sops ;;
    age) go_install age "$AGE_VERSION" "filippo.io/age/cmd/..." age age-keygen ;;
    flux) build_flux ;;
    *) die "unknown target '$t' (expected k8s, node, etcd, kwok, krew, coredns, sops, age or flux)" ;;
  esac
done
