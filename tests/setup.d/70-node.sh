# The real node of the local cluster (tests/cluster/node.sh, GITOPS_REAL_NODE=1). Debian's
# packages rather than Go builds: containerd 1.6 (CRI v1, which kubelet 1.34 speaks), runc and the
# CNI plugins are security-maintained by Debian and cost no build time (a Go build of containerd
# alone is several minutes on 2 cores); docker-registry is distribution 2.8. kubelet, kube-proxy
# and CoreDNS are Go-built by tests/cluster/build.sh (node, coredns) when up.sh first needs them.
# busybox-static is the smoke test's image (httpd, wget, nslookup); socat forwards the apiserver
# port into the node's network namespace; conntrack is what kube-proxy calls to flush UDP entries.
# redis-server is packed, with exactly the shared libraries it needs, into the demo's redis image
# (tests/apps/build.sh); on a host with systemd the package also starts a system redis on
# 127.0.0.1:6379, which nothing here uses.
want containerd containerd
want runc runc
want containernetworking-plugins /usr/lib/cni/bridge
want docker-registry docker-registry
want skopeo skopeo
want socat socat
want conntrack conntrack
want busybox-static /bin/busybox
want redis-server /usr/bin/redis-server
