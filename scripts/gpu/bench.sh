#!/usr/bin/env bash
# One command on the GPU machine (see ../shared/gpu/README.md): build against its PyTorch (CUDA), run
# the CUDA tests (test/gpu/cuda.test.ts: CUDA graphs against eager, fused optimizers against foreach, ...;
# test/gpu/cuda-graphs.test.ts: the error paths), then the GPU training-step benchmarks against PyTorch
# eager and torch.cuda.graphs (scripts/bench/bench-gpu-step.mjs) and a CLI run with --cuda-graphs. Each stage
# has its own time limit so that one hang cannot eat the machine's time; logs and JSON go to $OUT (8
# files at most come back).
#   source .gpu/on-device.sh && bash scripts/gpu/bench.sh          (about 8 minutes on an H200)
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -f .gpu/on-device.sh ] && ! command -v node >/dev/null && source .gpu/on-device.sh
stage() { echo "== $1 ($(date -u +%T))" | tee -a "$OUT/summary.log"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'; } >> "$OUT/summary.log" 2>&1

stage build
timeout 240 node scripts/install/build.mjs > "$OUT/build.log" 2>&1; echo "build rc $?" | tee -a "$OUT/summary.log"
readelf -d build/Release/residual.node | grep -c 'libtorch_cuda' | sed 's/^/libtorch_cuda NEEDED entries: /' | tee -a "$OUT/summary.log"
node -e "const r=require('./dist/index.js'); console.log('cuda from node:', r.cuda.isAvailable(), r.cuda.deviceCount(), r.buildInfo().variant)" 2>&1 | tee -a "$OUT/summary.log"

stage "cuda tests"
RESIDUAL_TEST_CUDA=1 timeout 150 node node_modules/vitest/vitest.mjs run test/gpu/cuda.test.ts test/gpu/cuda-graphs.test.ts > "$OUT/cuda-tests.log" 2>&1
echo "cuda tests rc $?" | tee -a "$OUT/summary.log"
grep -E "✓|×|Tests |FAIL|Error" "$OUT/cuda-tests.log" | head -40 >> "$OUT/summary.log"

stage "resnet20 b128: each setting's gain, residual vs torch"
timeout 120 node scripts/bench/bench-gpu-step.mjs --model resnet20 --batch 128 --image 32 --classes 10 --variants ladder \
  --steps 50 --trials 5 --warmup 10 --json "$OUT/resnet20.json" 2>&1 | tee "$OUT/resnet20.log" | tail -25 >> "$OUT/summary.log"

stage "resnet50 b256 224x224: fp32, bf16 + channels-last, + CUDA graphs"
timeout 180 node scripts/bench/bench-gpu-step.mjs --model resnet50 --batch 256 --image 224 --classes 1000 --variants targets \
  --steps 10 --trials 3 --warmup 5 --json "$OUT/resnet50.json" 2>&1 | tee "$OUT/resnet50.log" | tail -15 >> "$OUT/summary.log"

stage "cli: train eager (loader copies on the default stream / on a side stream) and --cuda-graphs (synthetic, 60 steps)"
run() {  # label, env, flags
  env $2 timeout 45 node bin/residual.js train --model resnet20 --data synthetic --epochs 1 --batch-size 128 --limit-train-batches 60 \
    --limit-test-batches 2 --device cuda --workers 4 --log-every 20 $3 --json --out "/tmp/cg-run-$1" 2>&1 | grep -E '"type":"(step|done)"' | tail -2 | sed "s/^/$1 /" >> "$OUT/summary.log"
}
run eager-default-stream RESIDUAL_LOADER_COPY_STREAM=0 --no-cuda-graphs
run eager-copy-stream RESIDUAL_LOADER_COPY_STREAM=1 --no-cuda-graphs
run graphs-copy-stream RESIDUAL_LOADER_COPY_STREAM=1 --cuda-graphs
stage done
