#!/usr/bin/env bash
# Compiles and links the addon against CUDA libtorch (torch 2.14.1 for CUDA 13, from pip's local wheels)
# with nvcc 13, on a machine without a GPU: proves the CUDA code paths (RESIDUAL_CUDA) build and that
# libtorch_cuda is really linked (DT_NEEDED), which is what makes CUDA available at run time.
# It cannot run CUDA here; the GPU machine runs the CUDA tests (see README, "GPU").
#   bash scripts/ci/build-cuda-check.sh            (WORK=/path keeps the unpacked libtorch there)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-$ROOT/.libtorch-cuda}
SPEC=${CUDA_TORCH_SPEC:-torch==2.14.1}
NVRTC_SPEC=${CUDA_NVRTC_SPEC:-nvidia-cuda-nvrtc==13.0.*}

if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "build-cuda-check: nvcc not found; skipping (the CPU build is unaffected)"
  exit 0
fi
export PATH=/usr/local/cuda/bin:$PATH

if [ ! -f "$WORK/site/torch/share/cmake/Torch/TorchConfig.cmake" ]; then
  rm -rf "$WORK.partial" && mkdir -p "$WORK.partial/wheels"
  echo "build-cuda-check: fetching $SPEC (no retries: fails fast offline)"
  # nvrtc: TorchConfig links it, and a compile-only CUDA toolkit may not have it
  if ! python3 -m pip download --no-deps --only-binary=:all: --retries 0 --timeout 5 --progress-bar off -d "$WORK.partial/wheels" "$SPEC" "$NVRTC_SPEC"; then
    echo "build-cuda-check: cannot download $SPEC; skipping"
    rm -rf "$WORK.partial"
    exit 0
  fi
  python3 - "$WORK.partial/wheels" "$WORK.partial/site" <<'PY'
import sys, zipfile, glob
for whl in glob.glob(sys.argv[1] + '/*.whl'):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if n.startswith(('torch/include/', 'torch/lib/', 'torch/share/', 'nvidia/')) or n == 'torch/version.py':
                z.extract(n, sys.argv[2])
PY
  rm -rf "$WORK.partial/wheels" "$WORK"
  mv "$WORK.partial" "$WORK"
fi

# ProcessGroupNCCL (native/distributed/process_group.cpp, USE_C10D_NCCL): nccl.h from the nvidia-nccl wheel torch depends
# on, and the cuBLAS/cuSPARSE/cuSOLVER headers ATen/cuda/CUDAContext.h includes (headers only).
NCCL_SPECS=${CUDA_NCCL_SPECS:-nvidia-nccl-cu13 nvidia-cublas nvidia-cusparse nvidia-cusolver}
if [ ! -f "$WORK/site/nvidia/nccl/include/nccl.h" ]; then
  rm -rf "$WORK/nccl-wheels" && mkdir -p "$WORK/nccl-wheels"
  # shellcheck disable=SC2086
  if python3 -m pip download --no-deps --only-binary=:all: --retries 0 --timeout 5 --progress-bar off -d "$WORK/nccl-wheels" $NCCL_SPECS; then
    python3 - "$WORK/nccl-wheels" "$WORK/site" <<'PY'
import sys, zipfile, glob
for whl in glob.glob(sys.argv[1] + '/*.whl'):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if n.startswith('nvidia/') and '/include/' in n:
                z.extract(n, sys.argv[2])
PY
  else
    echo "build-cuda-check: cannot download $NCCL_SPECS: the CUDA build will have no 'nccl' backend"
  fi
  rm -rf "$WORK/nccl-wheels"
fi

LT="$WORK/site/torch"
[ -f "$LT/lib/libtorch_cuda.so" ] || { echo "build-cuda-check: $LT has no libtorch_cuda.so"; exit 1; }
echo "build-cuda-check: building against $LT"
# CUDA 13 libraries (cuDNN, cuBLAS, ...) come from nvidia wheels at run time; for compiling and linking
# the toolkit's headers suffice. Arch list: Hopper (the GPU machine); irrelevant to our C++ (no kernels).
NVRTC=$(ls "$WORK"/site/nvidia/*/lib/libnvrtc.so.* 2>/dev/null | grep -v builtins | grep -v alt | head -1)
[ -n "$NVRTC" ] && export RESIDUAL_CMAKE_DEFS="CUDA_nvrtc_LIBRARY=$NVRTC"
LIBTORCH="$LT" TORCH_CUDA_ARCH_LIST=9.0 node "$ROOT/scripts/install/build.mjs" --native-only --out "$ROOT/build-cuda"
ADDON="$ROOT/build-cuda/Release/residual.node"
if ! readelf -d "$ADDON" | grep -q 'libtorch_cuda.so'; then
  echo "build-cuda-check: FAILED: $ADDON does not link libtorch_cuda.so (CUDA would silently be unavailable)"
  exit 1
fi
grep -q '"variant": "cuda"' "$ROOT/build-cuda/Release/residual.json"
if [ -f "$WORK/site/nvidia/nccl/include/nccl.h" ]; then
  # the NCCL backend compiled in: ProcessGroupNCCL's constructor is referenced from native/distributed/process_group.cpp
  nm -DC "$ADDON" | grep 'c10d::ProcessGroupNCCL::ProcessGroupNCCL' >/dev/null \
    || { echo "build-cuda-check: FAILED: the CUDA build does not reference ProcessGroupNCCL"; exit 1; }
  echo "build-cuda-check: ok: ProcessGroupNCCL (backend 'nccl') compiled in"
fi
echo "build-cuda-check: ok: CUDA build links $(readelf -d "$ADDON" | grep -o 'libtorch_cuda.so' | head -1) and libc10_cuda: $(readelf -d "$ADDON" | grep -c 'cuda') CUDA entries"
