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
# Where `up` keeps the running cluster's state (PKI, logs, PIDs, kubeconfig).
GITOPS_CLUSTER_DIR=${GITOPS_CLUSTER_DIR:-$GITOPS_CACHE_DIR/cluster}
