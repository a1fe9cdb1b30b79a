#!/usr/bin/env bash
# `make demo`: the hetvis job end to end on Fashion-MNIST with the cpu preset (see README).
# Every stage is resumable: re-running skips what is finished.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-runs}"
preset="${PRESET:-cpu}"
bin="$root/target/release"
out="$runs/fm"
mkdir -p "$out"

echo "== CMP-NAS pipeline ($preset preset): gallery ResNet-101 -> BCT super-network -> search per tier"
echo "   -> retrain winners -> MobileNetV2 / ShuffleNetV2 baselines (BCT and independent) -> evaluation"
"$bin/hetvis-train" pipeline --preset "$preset" --out "$out"

echo
echo "== Gallery index: the Fashion-MNIST train split embedded with the gallery model, HNSW"
if [ -f "$out/index/manifest.json" ]; then
  echo "   $out/index exists; skipping (delete it to rebuild)"
else
  "$bin/hetvis-index" build --model "$out/gallery/model.onnx" --source fashion-mnist:train --out "$out/index"
fi
"$bin/hetvis-index" verify "$out/index" --queries 500

# The query model the server answers with: the first tier's searched winner, else its BCT MobileNetV2 baseline.
query=""
for cand in "$out"/tier-*/cmpnas-bct/model.onnx "$out"/tier-*/mobilenetv2-bct/model.onnx; do
  if [ -f "$cand" ]; then query="$cand"; break; fi
done

echo
echo "demo done:"
echo "  report:          $out/report/report.md (and report.json)"
echo "  figure:          $out/report/accuracy_vs_mmacs.svg"
echo "  searches:        $out/tier-*/search/{best.json,search_log.jsonl,reward.svg}"
echo "  models (ONNX):   $out/gallery/model.onnx, $out/tier-*/*/model.onnx"
echo "  gallery index:   $out/index (hetvis-index info|search $out/index ...)"
echo "  server:          $bin/hetvis-serve --index $out/index --query-model $query --gallery-model $out/gallery/model.onnx --fashion-mnist /usr/share/datasets/fashion-mnist"

# The server: started once the index and a compatible query model exist; Ctrl-C (or SIGTERM) stops it cleanly.
# DEMO_SERVE=0 skips it (CI-style runs); HETVIS_ADDR picks the address.
if [ "${DEMO_SERVE:-1}" != 0 ] && [ -n "$query" ]; then
  echo
  echo "== Search server: open http://${HETVIS_ADDR:-127.0.0.1:8080}/ (Ctrl-C stops it)"
  exec "$bin/hetvis-serve" --index "$out/index" --query-model "$query" \
    --gallery-model "$out/gallery/model.onnx" --fashion-mnist "${HETVIS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
fi
