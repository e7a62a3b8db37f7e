# Versions of the Go-built components of the local control plane.
# Sourced by the scripts in this directory; bump here and the caches rebuild.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
KREW_VERSION=v0.4.3
# The cluster DNS of the real node: the CoreDNS release kubeadm pairs with K8S_VERSION.
COREDNS_VERSION=v1.12.1
# Where expensive builds are cached, outside any checkout.
GITOPS_CACHE_DIR=${GITOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops}
# The licence checker of `make test` (deny.toml), built from crates.io into the cache.
CARGO_DENY_VERSION=0.20.2
CARGO_DENY=$GITOPS_CACHE_DIR/bin/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny
# Flux's source-controller and kustomize-controller, built only for the side-by-side bench
# (`build.sh flux`). v1.10.x needs fluxcd/pkg modules the Go module proxy refuses here.
FLUX_VERSION=v1.9.6
FLUX_BIN=$GITOPS_CACHE_DIR/bin/flux-$FLUX_VERSION
# The real sops and age the SOPS compatibility tests encrypt with, built from the Go module proxy.
SOPS_VERSION=v3.13.3
AGE_VERSION=v1.3.2
SOPS_BIN=$GITOPS_CACHE_DIR/bin/sops-$SOPS_VERSION/sops
AGE_BIN_DIR=$GITOPS_CACHE_DIR/bin/age-$AGE_VERSION
# Where `up` keeps the running cluster's state (PKI, logs, PIDs, kubeconfig).
GITOPS_CLUSTER_DIR=${GITOPS_CLUSTER_DIR:-$GITOPS_CACHE_DIR/cluster}
