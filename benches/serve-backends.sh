#!/usr/bin/env bash
# /search throughput and latency of hetvis-serve on the embedded index and on a Milvus collection holding the
# same gallery, side by side (serve-load against each, alternating backends). Uses the gallery model and the
# embedded index that `target/release/backends` left in runs/bench/backends, builds the Milvus collection from
# the same model and images, and starts and stops Milvus itself (scripts/milvus.sh, loopback only).
#
#   benches/serve-backends.sh [OUT_DIR]     (default runs/bench/serve-backends)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-runs/bench/serve-backends}"
work=runs/bench/backends
model="$work/gallery.onnx"
[ -f "$model" ] && [ -f "$work/index/manifest.json" ] || { echo "run target/release/backends first" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed to wait for the servers (apt-get install curl)" >&2; exit 1; }
mkdir -p "$out"
milvus_dir="$(mktemp -d "${TMPDIR:-/tmp}/hetvis-serve-backends.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/milvus.sh stop "$milvus_dir" || true
  rm -rf "$milvus_dir"
}
trap cleanup EXIT
uri="$(scripts/milvus.sh start "$milvus_dir")"
target/release/hetvis-index build --milvus "$uri" --collection fm_serve_backends --model "$model" \
  --source fashion-mnist:train --no-progress
serve() { # NAME PORT ARGS...
  local name="$1" port="$2"; shift 2
  target/release/hetvis-serve --query-model "$model" --gallery-model "$model" --addr "127.0.0.1:$port" "$@" \
    >"$out/$name.stdout" 2>"$out/$name.stderr" &
  pids+=($!)
}
serve embedded 18081 --index "$work/index"
serve milvus 18082 --milvus "$uri" --collection fm_serve_backends
for port in 18081 18082; do
  until curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"graph":"\(ready\|milvus\)"'; do sleep 1; done
done
for pass in 1 2; do
  for b in embedded:18081 milvus:18082; do
    target/release/serve-load --url "http://127.0.0.1:${b#*:}" --modes query --concurrency 1,8 \
      --requests 2000 --seconds 20 --json "$out/${b%%:*}-$pass.json"
  done
done
