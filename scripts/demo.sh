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
echo "demo done:"
echo "  report:          $out/report/report.md (and report.json)"
echo "  figure:          $out/report/accuracy_vs_mmacs.svg"
echo "  searches:        $out/tier-*/search/{best.json,search_log.jsonl,reward.svg}"
echo "  models (ONNX):   $out/gallery/model.onnx, $out/tier-*/*/model.onnx"
