# The two commands of the README. Everything they need is installed by the scripts they call.
.PHONY: demo test cluster-up cluster-down crds

# The main job: the seed's story end to end on a local control plane, a real git server and the
# reconciler, driven with `kubectl gitops` (tests/demo.sh).
demo:
	bash tests/demo.sh

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
