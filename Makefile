# The two commands of the README. Everything they need is installed by the scripts they call.
.PHONY: demo demo-fast test cluster-up cluster-down crds

# The main job: the seed's story end to end with real containers: a local control plane with a
# real node, a real git server, the reconciler as a Pod from its image and the instavote app's
# vote and redis containers, driven with `kubectl gitops` (tests/demo.sh; root).
demo:
	bash tests/demo.sh

# The same story without a container runtime: the reconciler as a local process, pods on kwok's
# fake nodes (tests/demo-fast.sh; no root needed).
demo-fast:
	bash tests/demo-fast.sh

# Every test: fmt, clippy, unit tests, then the conformance suite on a local control plane.
test:
	bash tests/run-all.sh

cluster-up:
	bash tests/cluster/up.sh
cluster-down:
	bash tests/cluster/down.sh

# Regenerate reconciler/config/crd from the API types.
crds:
	cargo run --bin gitops-crdgen

# The bench suite (not tests): each bench prints its figure, its goal and the ratio against a
# baseline measured in the same run.
.PHONY: bench
bench:
	bash tests/bench.sh
