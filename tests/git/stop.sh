#!/usr/bin/env bash
# Stops exactly the processes tests/git/serve.sh recorded in RUN-DIR/pids, then removes RUN-DIR
# unless --keep is given.   tests/git/stop.sh RUN-DIR [--keep]
set -uo pipefail
run=${1:?usage: stop.sh RUN-DIR [--keep]}
[ -f "$run/pids" ] || exit 0
while read -r pid; do
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
done < "$run/pids"
for _ in $(seq 1 40); do
  alive=0
  while read -r pid; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done < "$run/pids"
  [ $alive = 0 ] && break
  sleep 0.05
done
while read -r pid; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; done < "$run/pids"
[ "${2:-}" = --keep ] || rm -rf "$run"
