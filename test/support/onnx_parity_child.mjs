// The residual side of a parity check of one registry network, in a process of its own (the 1000-layer
// networks take minutes of synchronous libtorch work on a loaded machine: a vitest worker must not block
// that long). Uses the built package (dist/).
//   node test/support/onnx_parity_child.mjs '{"name": "resnet1202", "shape": [3, 8, 8], "numClasses": 10, "seed": 2, "dir": "/tmp/x"}'
// Builds the network, calibrates its BatchNorms as test/support/onnx.ts's calibrate() does, exports
// DIR/NAME.onnx, writes the inputs (batch 1 and 5) and residual's float32 logits, and prints one JSON line:
// { file, info, runs: [{input, shape, expected}], noise } (noise: max |float32 - float64| logits).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const lib = await import(path.join(root, 'dist', 'index.js'));
const { name, shape, numClasses, seed, dir } = JSON.parse(process.argv[2]);

lib.manualSeed(seed);
const model = lib.createModel(name, { inChannels: shape[0], numClasses });
// calibrate(): random BatchNorm scale/shift, then running statistics from one training-mode batch
lib.noGrad(() => {
  for (const m of model.modules()) {
    if (!(m instanceof lib.nn.BatchNorm2d)) continue;
    const w = lib.rand([m.numFeatures]).add(0.5);
    const b = lib.rand([m.numFeatures]).sub(0.5);
    m.weight.copy_(w);
    m.bias.copy_(b);
    w.dispose();
    b.dispose();
    m.momentum = null;
  }
  model.train();
  const x = lib.randn([6, ...shape]);
  model.call(x).dispose();
  x.dispose();
  model.eval();
});
const file = path.join(dir, `${name}.onnx`);
const info = lib.exportOnnx(model, file, { inputShape: shape });
const runs = [];
const ys = [];
for (const n of [1, 5]) {
  const x = lib.randn([n, ...shape]);
  const y = lib.noGrad(() => model.call(x));
  const base = path.join(dir, `${name}.b${n}`);
  fs.writeFileSync(`${base}.x.bin`, Buffer.from(x.toTypedArray().buffer));
  fs.writeFileSync(`${base}.res.bin`, Buffer.from(y.toTypedArray().buffer));
  runs.push({ input: `${base}.x.bin`, shape: x.shape, expected: `${base}.res.bin` });
  ys.push([x, y]);
}
// every batch again in float64 (a chaotic network's noise differs from image to image)
model.double();
let noise = 0;
for (const [x, y] of ys) {
  const x64 = x.to('float64');
  const y64 = lib.noGrad(() => model.call(x64));
  const a = y.toTypedArray();
  const b = y64.toTypedArray();
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= noise)) noise = d;
  }
}
console.log(JSON.stringify({ file, info, runs, noise: Number.isFinite(noise) ? noise : null }));
