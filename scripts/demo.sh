#!/usr/bin/env bash
# `make demo`: the furthest real part of the hetvis pipeline that exists (see README, "What `make demo` does").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-runs}"
bin="$root/target/release"
mkdir -p "$runs"

echo "== 1. Fashion-MNIST, read from the Debian package"
"$bin/hetvis-model" data

echo "== 2. ONNX Runtime, loaded from the project venv"
"$bin/hetvis-model" runtime

echo "== 3. libtorch through tch: a small classifier trained on Fashion-MNIST (1 epoch), scored on the test split"
"$bin/hetvis-train" smoke --epochs 1 --out "$runs/smoke"
echo "demo done: outputs under $runs/"
