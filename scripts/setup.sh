#!/usr/bin/env bash
# One-command set-up: a project-local venv with the native libraries hetvis links against
# (libtorch for the trainer, ONNX Runtime for everything that embeds), the Fashion-MNIST data set, headless
# Chromium for the web page's browser test, Milvus standalone for the Milvus backend's tests (.venv-milvus),
# and a LIBTORCH directory that torch-sys can build against. Idempotent and fast when already done.
#
#   scripts/setup.sh          CPU libraries (default)
#   GPU=1 scripts/setup.sh    CUDA builds: full torch wheel with its CUDA stack, onnxruntime-gpu
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
gpu="${GPU:-0}"
[ "$gpu" = "1" ] && flavour=gpu || flavour=cpu

torch_version=2.13.0
ort_version=1.31.1
stamp="$venv/.hetvis-setup-$flavour-torch$torch_version-ort$ort_version"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages: directly as root, through passwordless sudo, else stops with the one command to run.
apt_install() {
  local sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo_cmd=(sudo -n)
    else
      die "missing Debian package(s) $* and this is not root. Run once:
    sudo apt-get update && sudo apt-get install -y $*
then re-run 'make setup'."
    fi
  fi
  log "installing Debian package(s) $*"
  if ! DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    log "apt-get update (package lists are stale or missing)"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "$@"
  fi
}

ensure_fashion_mnist() {
  local dir=/usr/share/datasets/fashion-mnist
  if [ -s "$dir/train-images-idx3-ubyte.gz" ] && [ -s "$dir/t10k-labels-idx1-ubyte.gz" ]; then
    return
  fi
  apt_install dataset-fashion-mnist
  [ -s "$dir/train-images-idx3-ubyte.gz" ] || die "dataset-fashion-mnist installed but $dir is empty"
}

# Headless Chromium drives the server's web page in the end-to-end tests (tests/tests/server_page.rs).
ensure_chromium() {
  command -v chromium >/dev/null && return
  apt_install chromium
  command -v chromium >/dev/null || die "chromium installed but not on PATH"
}

# libjpeg-turbo's TurboJPEG library: JPEG queries are decoded at the scale the model needs (models/src/jpeg.rs).
ensure_turbojpeg() {
  pkg-config --exists libturbojpeg 2>/dev/null && return
  apt_install libturbojpeg0-dev pkg-config
  pkg-config --exists libturbojpeg || die "libturbojpeg0-dev installed but pkg-config cannot find libturbojpeg"
}

ensure_venv() {
  if [ -f "$stamp" ] && [ -e "$venv/libtorch/lib/libtorch_cpu.so" ]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 (3.11) is required"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv"
    python3 -m venv "$venv"
  fi
  # A flavour switch (cpu <-> gpu) must also relink torch-sys, which only rebuilds when $LIBTORCH changes name.
  if compgen -G "$venv/.hetvis-setup-*" >/dev/null && command -v cargo >/dev/null; then
    (cd "$root" && cargo clean -q -p torch-sys 2>/dev/null) || true
  fi
  rm -f "$venv"/.hetvis-setup-*
  local pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q)
  if [ "$flavour" = gpu ]; then
    log "installing torch==$torch_version with CUDA dependencies and onnxruntime-gpu==$ort_version (several GB)"
    "$venv/bin/python" -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true
    "${pip[@]}" "torch==$torch_version" "onnxruntime-gpu==$ort_version"
  else
    # The registry's torch wheel is a CUDA build. libtorch_cpu.so itself only NEEDs cudart and cupti,
    # so install torch without its dependency list plus those two small runtime wheels.
    log "installing torch==$torch_version (CPU libraries only) and onnxruntime==$ort_version"
    "$venv/bin/python" -m pip uninstall -y -q onnxruntime-gpu >/dev/null 2>&1 || true
    "${pip[@]}" --no-deps "torch==$torch_version" 'nvidia-cuda-runtime==13.0.96.*' 'nvidia-cuda-cupti==13.0.85.*'
    "${pip[@]}" --no-deps "onnxruntime==$ort_version"
  fi
  make_libtorch_dir
  touch "$stamp"
}

# torch-sys wants a LIBTORCH directory with include/ and lib/. Build one from symlinks into the wheel.
# On CPU, leave out the CUDA libraries (torch-sys would link torch_cuda when present) and point
# libtorch.so (a shim that NEEDs libtorch_cuda.so) at libtorch_cpu.so.
make_libtorch_dir() {
  local site torch_dir lt
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  torch_dir="$site/torch"
  [ -f "$torch_dir/lib/libtorch_cpu.so" ] || die "torch wheel has no lib/libtorch_cpu.so under $torch_dir"
  lt="$venv/libtorch"
  rm -rf "$lt"
  mkdir -p "$lt/lib"
  ln -s "$torch_dir/include" "$lt/include"
  [ -d "$torch_dir/share" ] && ln -s "$torch_dir/share" "$lt/share"
  local f name
  for f in "$torch_dir"/lib/*; do
    name="$(basename "$f")"
    if [ "$flavour" = cpu ]; then
      case "$name" in
        libtorch_cuda*.so|libc10_cuda.so|libtorch.so|libtorch_nvshmem.so|libcaffe2_nvrtc.so|libtorch_python.so) continue ;;
      esac
    fi
    ln -s "$f" "$lt/lib/$name"
  done
  [ "$flavour" = cpu ] && ln -s "$torch_dir/lib/libtorch_cpu.so" "$lt/lib/libtorch.so"
  echo "$torch_version" >"$lt/build-version"
  echo "$flavour" >"$lt/flavour"
}

# `BENCH=1`: PyTorch eager for the tch-vs-PyTorch benchmark. torch's Python extension links the CUDA stack
# even on CPU, so this installs the wheel's full dependency list into the same venv (several GB; the torch
# files themselves, which tch links, are unchanged).
ensure_bench_deps() {
  local bench_stamp="$venv/.hetvis-bench-torch$torch_version"
  [ -f "$bench_stamp" ] && return
  log "installing torch==$torch_version with its dependencies for PyTorch eager (benchmark only, several GB)"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q "torch==$torch_version"
  "$venv/bin/python" -c 'import torch' || die "PyTorch does not import in $venv"
  touch "$bench_stamp"
}

# `PHOTO_BENCH=1`: the Python comparison service of the photo serving benchmark (benches/python/photo_service.py)
# in its own venv, pinned: PIL (JPEG draft mode), the same ONNX Runtime, hnswlib (built from its sdist), FastAPI.
ensure_photo_bench_deps() {
  local pvenv="$root/.venv-photo"
  local photo_stamp="$pvenv/.hetvis-photo-ort$ort_version"
  [ -f "$photo_stamp" ] && return
  log "installing the photo benchmark's Python service into $pvenv"
  [ -x "$pvenv/bin/python" ] || python3 -m venv "$pvenv"
  "$pvenv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    "onnxruntime==$ort_version" numpy==2.4.6 pillow==13.0.0 hnswlib==0.8.0 fastapi==0.165.0 \
    starlette==1.10.0 uvicorn==0.55.0
  "$pvenv/bin/python" -c 'import hnswlib, onnxruntime, PIL, fastapi, uvicorn' || die "the photo service's venv is broken"
  touch "$photo_stamp"
}

# Milvus standalone from PyPI in its own venv (the server package needs nothing else): the Milvus backend's tests
# run against a real instance that scripts/milvus.sh starts and stops.
milvus_version=2.3.5
ensure_milvus() {
  local mvenv="$root/.venv-milvus"
  local milvus_stamp="$mvenv/.hetvis-milvus-$milvus_version"
  [ -f "$milvus_stamp" ] && return
  log "installing Milvus standalone $milvus_version into $mvenv"
  [ -x "$mvenv/bin/python" ] || python3 -m venv "$mvenv"
  "$mvenv/bin/python" -m pip install --disable-pip-version-check --no-input -q "milvus==$milvus_version"
  [ -x "$mvenv/bin/milvus-server" ] || die "milvus==$milvus_version installed but $mvenv/bin/milvus-server is missing"
  touch "$milvus_stamp"
}

ensure_fashion_mnist
ensure_milvus
ensure_chromium
ensure_turbojpeg
ensure_venv
[ "${BENCH:-0}" = 1 ] && ensure_bench_deps
[ "${PHOTO_BENCH:-0}" = 1 ] && ensure_photo_bench_deps
log "ready ($flavour): venv $(du -sh "$venv" 2>/dev/null | cut -f1), LIBTORCH=$venv/libtorch"
