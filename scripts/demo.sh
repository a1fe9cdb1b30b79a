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

echo
echo "demo done:"
echo "  report:          $out/report/report.md (and report.json)"
echo "  figure:          $out/report/accuracy_vs_mmacs.svg"
echo "  searches:        $out/tier-*/search/{best.json,search_log.jsonl,reward.svg}"
echo "  models (ONNX):   $out/gallery/model.onnx, $out/tier-*/*/model.onnx"
echo "  gallery index:   $out/index (hetvis-index info|search $out/index ...)"
