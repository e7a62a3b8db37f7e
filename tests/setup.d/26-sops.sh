# The real `sops` and `age` (tests/tests/sops_compat.rs encrypts with them and compares with the
# reconciler's decryption; the demos encrypt redis's password with them), built once from the Go
# module proxy by tests/cluster/build.sh (targets `sops` and `age`, with the control plane's Go
# builds at the end of setup.sh), cached by version (SOPS_VERSION, AGE_VERSION in
# tests/cluster/versions.sh).
want openssh-client ssh-keygen
