#!/usr/bin/env bash
# Builds the demo's instavote images without a container engine (kubectl-gitops/image/pack.py):
#   tests/apps/build.sh OUT_DIR
# - vote: tests/apps/vote/main.rs, a static binary compiled by rustc alone (std only, ~2 s);
# - redis: Debian's redis-server (package redis-server) with exactly the shared libraries `ldd`
#   lists for it and the dynamic loader, nothing else.
# Both run as the non-root user 65532. Prints key=value lines: vote_archive=, redis_archive=.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pack="$here/../../kubectl-gitops/image/pack.py"
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
fail() { printf 'apps/build.sh: %s\n' "$*" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || fail "builds linux/amd64 images on x86_64 hosts only"

# ---- vote ------------------------------------------------------------------------------------
rustc --edition 2024 -O -C target-feature=+crt-static -C strip=symbols \
  --target x86_64-unknown-linux-gnu -o "$out/vote" "$here/vote/main.rs"
if ! ldd "$out/vote" 2>&1 | grep -q "statically linked"; then fail "$out/vote is not static"; fi
python3 "$pack" --out "$out/vote.oci.tar" --name instavote/vote --tag demo \
  --entrypoint /vote --user 65532:65532 --port 8080 "file:vote:755:$out/vote" dir:tmp:1777 >/dev/null
echo "vote_archive=$out/vote.oci.tar"

# ---- redis -----------------------------------------------------------------------------------
server=$(command -v redis-server) || fail "redis-server is missing (apt-get install redis-server; tests/setup.d/70-node.sh)"
# redis-server is a link to redis-check-rdb on Debian: the binary picks its role from argv[0],
# so the image holds the resolved file under the name redis-server.
entries=("file:usr/bin/redis-server:755:$(readlink -f "$server")" dir:usr:755 dir:usr/bin:755 dir:data:755:65532 dir:tmp:1777)
declare -A dirs=()
# ldd prints `name => /path (addr)` for libraries and `/path (addr)` for the loader; the vDSO has
# no path. Each file goes in at the path the loader looks for, with the bytes of its target.
while read -r lib; do
  [ -n "$lib" ] || continue
  rel=${lib#/}
  entries+=("file:$rel:755:$(readlink -f "$lib")")
  d=${rel%/*}
  while [ "$d" != "$rel" ] && [ -n "$d" ] && [ -z "${dirs[$d]:-}" ]; do
    dirs[$d]=1
    entries+=("dir:$d:755")
    case $d in */*) d=${d%/*} ;; *) break ;; esac
  done
done < <(ldd "$server" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[ ${#dirs[@]} -gt 0 ] || fail "ldd listed no libraries for $server"
python3 "$pack" --out "$out/redis.oci.tar" --name instavote/redis --tag demo \
  --entrypoint /usr/bin/redis-server --user 65532:65532 --port 6379 \
  --arg=--bind --arg=0.0.0.0 --arg=--protected-mode --arg=no --arg=--save --arg= \
  --arg=--appendonly --arg=no --arg=--dir --arg=/data "${entries[@]}" >/dev/null
echo "redis_archive=$out/redis.oci.tar"
