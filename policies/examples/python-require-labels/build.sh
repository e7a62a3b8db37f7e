#!/usr/bin/env bash
# Builds the Python example policy with componentize-py (pinned) and prints the path of the
# component. The component (an 18 MB CPython build) is not committed: it is cached outside the
# checkout, keyed by the componentize-py version and the sha256 of app.py, this script and the WIT.
# `--stub-wasi`: CPython links sockets, which the host refuses; stubbed, every WASI import traps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
. "$root/tests/cluster/versions.sh"
version=0.25.1
tool="$GITOPS_CACHE_DIR/componentize-py-$version"
if [ ! -x "$tool/bin/componentize-py" ]; then
  python3 -m venv "$tool" >&2
  "$tool/bin/pip" install -q "componentize-py==$version" >&2
fi
key=$(cat "$here/app.py" "$here/build.sh" "$root"/wit/v0.1.0/*.wit | sha256sum | cut -c1-16)
out="$GITOPS_CACHE_DIR/policy-examples/require-labels-$version-$key.wasm"
if [ ! -s "$out" ]; then
  mkdir -p "$(dirname "$out")"
  "$tool/bin/componentize-py" -d "$root/wit/v0.1.0" -w policy componentize --stub-wasi -p "$here" app -o "$out.tmp" >&2
  mv "$out.tmp" "$out"
fi
echo "$out"
