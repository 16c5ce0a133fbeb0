#!/usr/bin/env bash
# Run on the GPU machine: Fashion-MNIST to convergence with a wide ResNet, as many epochs as fit in
# about 6 minutes (measured throughput first). Dataset in $RESIDUAL_DATA. Results to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/out}
MODEL=${MODEL:-wrn16_8}
BUDGET=${BUDGET:-360}
mkdir -p "$OUT"
[ -f build/Release/residual.node ] || node scripts/install/build.mjs --native-only 2>&1 | tail -2
COMMON="--model $MODEL --data fashion-mnist --batch-size 128 --device cuda --amp --channels-last --workers 4"
node bin/residual.js train $COMMON --epochs 1 --limit-train-batches 60 --limit-test-batches 2 --log-every 20 --json --out /tmp/probe > /tmp/probe.log 2>&1
ips=$(grep '"type":"step"' /tmp/probe.log | tail -1 | python3 -c "import sys,json; print(json.loads(sys.stdin.read())['imagesPerSec'])")
EPOCHS=$(python3 -c "print(max(5, min(60, int($BUDGET * $ips / 60000 * 0.85))))")
echo "probe: $ips images/s -> $EPOCHS epochs" | tee "$OUT/train.log"
/usr/bin/time -v node bin/residual.js train $COMMON --epochs "$EPOCHS" --lr 0.1 --schedule cosine --warmup-epochs 1 \
  --random-erasing 0.3 --log-every 100 --out /tmp/run 2>&1 | tee -a "$OUT/train.log" | grep -E "^epoch [0-9]+/[0-9]+:|test accuracy|Elapsed|Maximum resident"
cp /tmp/run/report.png /tmp/run/report.svg /tmp/run/metrics.jsonl /tmp/run/config.json "$OUT/" 2>/dev/null
