#!/usr/bin/env bash
# Run on the GPU machine (see ../shared/gpu/README.md): builds against its PyTorch (CUDA), checks that
# CUDA is really linked and available from Node, runs the whole suite with RESIDUAL_TEST_CUDA=1, the
# per-op benchmark on CUDA and CPU, and a short training throughput check. Logs go to $OUT (at most 8
# files come back). The packed Node has no npx: vitest runs as node node_modules/vitest/vitest.mjs.
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
echo "== build"; time node scripts/install/build.mjs --native-only 2>&1 | tail -5 | tee "$OUT/build.log"
readelf -d build/Release/residual.node | grep NEEDED | tee -a "$OUT/build.log"
echo "== cuda from node"
node -e "const r=require('./dist/index.js'); console.log('cuda', r.cuda.isAvailable(), r.cuda.deviceCount(), JSON.stringify(r.cuda.devices()), JSON.stringify({...r.buildInfo(), config: undefined}))" 2>&1 | tee "$OUT/cuda.txt"
echo "== tests"; node node_modules/vitest/vitest.mjs run 2>&1 | tee "$OUT/test.log" | grep -E "✓|×|Test Files|Tests |FAIL|skipped" | tail -40
echo "== bench cuda"; node scripts/bench/bench.mjs --only ops --device cuda --no-python 2>&1 | tee "$OUT/bench-cuda.log"
echo "== bench cpu"; node scripts/bench/bench.mjs --only ops --no-python 2>&1 | tee "$OUT/bench-cpu.log"
echo "== training on CUDA (synthetic, amp + channels-last) and throughput of the wide nets"
for m in resnet20 wrn16_8 wrn28_10; do
  node bin/residual.js train --model $m --data synthetic --epochs 1 --batch-size 128 --limit-train-batches 40 --limit-test-batches 4 \
    --device cuda --amp --channels-last --workers 4 --log-every 20 --out /tmp/gpu-$m 2>&1 | tail -4 | tee -a "$OUT/train-throughput.log"
done
