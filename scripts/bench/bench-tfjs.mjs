#!/usr/bin/env node
// The tfjs-layers training step (model.trainOnBatch: forward, loss, tfjs-core's gradients, SGD) of three
// models on the tfjs backends `residual` (libtorch), `cpu` (@tensorflow/tfjs-backend-cpu) and `wasm`
// (@tensorflow/tfjs-backend-wasm), in the same run, on the same model, weights and batch. Reports
// images/s (the median over timed steps after warm-up) and the ratios residual / cpu and residual / wasm
// (above 1: residual is faster), last.
//
//   node scripts/bench/bench-tfjs.mjs [--device cuda] [--only cnn,mobilenet,resnet50] [--backends residual,cpu,wasm]
//        [--budget SECONDS] [--threads N] [--json out.json]
//
// Models (as in test/parity/tfjs-layers.test.ts): a small CNN (32x32, batch 16), a MobileNet-v1-style net
// (64x64, batch 8) and ResNet-50 (keras layout; 32x32, batch 2: the cpu backend needs tens of seconds
// per ResNet-50 step even there). --device cuda adds `residual` on CUDA (a second backend instance,
// `residualcuda`) when the build has CUDA. Each backend gets one warm-up step, then timed steps until 5
// are done or --budget seconds (default 30) have passed (at least 1); the same for predict (forward
// only, read back), which also covers backends that cannot train a model (tfjs-backend-wasm has no
// Conv2DBackpropFilter kernel: its fit step is reported as n/a with the reason). Needs `npm run build`
// first (it imports dist/tfjs). --threads sets libtorch's intra-op threads for residual (the cpu and wasm
// backends compute on one thread): on a machine whose cores are busy with other work, libtorch's
// default (one thread per core) can be several times slower than one thread.
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: args } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    only: { type: 'string' },
    backends: { type: 'string', default: 'residual,cpu,wasm' },
    budget: { type: 'string', default: '30' },
    json: { type: 'string' },
    threads: { type: 'string' },
  },
});
process.env.RESIDUAL_TFJS_DEVICE ??= 'cpu';

const tf = await import('@tensorflow/tfjs-core');
await import('@tensorflow/tfjs-backend-cpu');
const wasm = await import('@tensorflow/tfjs-backend-wasm');
const tfl = await import('@tensorflow/tfjs-layers');
const residual = await import(path.join(root, 'dist/tfjs/index.js'));
const { native } = await import(path.join(root, 'dist/addon/binding.js'));

if (args.threads) native.setNumThreads(Number(args.threads));
wasm.setWasmPaths(path.join(root, 'node_modules/@tensorflow/tfjs-backend-wasm/dist') + '/');
const backends = args.backends.split(',');
if (args.device === 'cuda') {
  if (!native.cudaIsAvailable()) console.log('--device cuda: CUDA is not available in this build/machine; residual runs on the CPU only');
  else {
    tf.registerBackend('residualcuda', () => new residual.ResidualBackend('cuda'), 0);
    for (const k of residual.kernelConfigs) tf.registerKernel({ ...k, backendName: 'residualcuda' });
    backends.splice(1, 0, 'residualcuda');
  }
}

// ---- models ----
const L = tfl.layers;
function cnn() {
  const m = tfl.sequential();
  m.add(L.conv2d({ inputShape: [32, 32, 3], filters: 32, kernelSize: 3, padding: 'same', activation: 'relu' }));
  m.add(L.maxPooling2d({ poolSize: 2 }));
  m.add(L.conv2d({ filters: 64, kernelSize: 3, padding: 'same' }));
  m.add(L.batchNormalization());
  m.add(L.activation({ activation: 'relu' }));
  m.add(L.maxPooling2d({ poolSize: 2 }));
  m.add(L.flatten());
  m.add(L.dense({ units: 10, activation: 'softmax' }));
  return m;
}
function mobilenet() {
  const input = tfl.input({ shape: [64, 64, 3] });
  const bnRelu6 = (x) => L.reLU({ maxValue: 6 }).apply(L.batchNormalization().apply(x));
  let x = bnRelu6(L.conv2d({ filters: 32, kernelSize: 3, strides: 2, padding: 'same', useBias: false }).apply(input));
  for (const [filters, stride] of [
    [64, 1],
    [128, 2],
    [128, 1],
    [256, 2],
    [256, 1],
    [512, 2],
  ]) {
    x = bnRelu6(L.depthwiseConv2d({ kernelSize: 3, strides: stride, padding: 'same', useBias: false }).apply(x));
    x = bnRelu6(L.conv2d({ filters, kernelSize: 1, padding: 'same', useBias: false }).apply(x));
  }
  x = L.globalAveragePooling2d({}).apply(x);
  return tfl.model({ inputs: input, outputs: L.dense({ units: 10, activation: 'softmax' }).apply(x) });
}
function resnet50(size) {
  const input = tfl.input({ shape: [size, size, 3] });
  const conv = (x, f, k, s = 1, pad = 'same') => L.conv2d({ filters: f, kernelSize: k, strides: s, padding: pad }).apply(x);
  const bn = (x) => L.batchNormalization({ axis: 3 }).apply(x);
  const relu = (x) => L.activation({ activation: 'relu' }).apply(x);
  const block = (x, f, stride, convShortcut) => {
    const sc = convShortcut ? bn(conv(x, 4 * f, 1, stride)) : x;
    let y = relu(bn(conv(x, f, 1, stride)));
    y = relu(bn(conv(y, f, 3)));
    y = bn(conv(y, 4 * f, 1));
    return relu(L.add().apply([sc, y]));
  };
  let x = L.zeroPadding2d({ padding: 3 }).apply(input);
  x = relu(bn(conv(x, 64, 7, 2, 'valid')));
  x = L.zeroPadding2d({ padding: 1 }).apply(x);
  x = L.maxPooling2d({ poolSize: 3, strides: 2 }).apply(x);
  for (const [f, n, s] of [
    [64, 3, 1],
    [128, 4, 2],
    [256, 6, 2],
    [512, 3, 2],
  ]) {
    x = block(x, f, s, true);
    for (let i = 1; i < n; i++) x = block(x, f, 1, false);
  }
  x = L.globalAveragePooling2d({}).apply(x);
  return tfl.model({ inputs: input, outputs: L.dense({ units: 10, activation: 'softmax' }).apply(x) });
}
const MODELS = {
  cnn: { build: cnn, shape: [16, 32, 32, 3], label: 'small CNN 32x32, batch 16' },
  mobilenet: { build: mobilenet, shape: [8, 64, 64, 3], label: 'MobileNet-v1-style 64x64, batch 8' },
  resnet50: { build: () => resnet50(32), shape: [2, 32, 32, 3], label: 'ResNet-50 32x32, batch 2' },
};
const only = args.only ? args.only.split(',') : Object.keys(MODELS);
const budgetMs = Number(args.budget) * 1000;

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Times `step` (async, finished when it resolves): 1 warm-up, then up to 5 steps within the budget. */
async function timed(step) {
  await step();
  const times = [];
  const start = performance.now();
  while (times.length < 5 && (times.length === 0 || performance.now() - start < budgetMs)) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
    await new Promise((r) => setImmediate(r));
  }
  return times;
}

async function benchOne(backend, spec, init, x, y) {
  await tf.setBackend(backend);
  await tf.ready();
  const model = spec.build();
  const shapes = model.getWeights().map((w) => w.shape);
  model.setWeights(init.map((v, i) => tf.tensor(v, shapes[i])));
  model.compile({ optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy' });
  const xs = tf.tensor(x, spec.shape);
  const ys = tf.tensor(y, [spec.shape[0], 10]);
  const res = {};
  try {
    const pt = await timed(async () => {
      const p = model.predict(xs);
      await p.data();
      p.dispose();
    });
    res.predict = { ms: median(pt), imgPerS: (spec.shape[0] * 1000) / median(pt), steps: pt.length };
    try {
      const ft = await timed(async () => {
        const loss = await model.trainOnBatch(xs, ys); // the loss is read back: the step has finished
        if (!Number.isFinite(loss)) throw new Error(`loss ${loss}`);
      });
      res.fit = { ms: median(ft), imgPerS: (spec.shape[0] * 1000) / median(ft), steps: ft.length };
    } catch (e) {
      res.fit = { error: String(e?.message ?? e).split('\n')[0] };
    }
  } finally {
    tf.dispose([xs, ys]);
    model.dispose();
  }
  return res;
}

console.log(
  `tfjs fit step (trainOnBatch), images/s (median of timed steps after 1 warm-up); ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(' ')}`,
);
console.log(
  `backends: ${backends.join(', ')}; tfjs-core ${tf.version_core}; residual device ${tf.findBackend('residual')?.device ?? '?'}, ${native.getNumThreads()} libtorch threads`,
);
const results = {};
for (const name of only) {
  const spec = MODELS[name];
  if (!spec) throw new Error(`--only: unknown model ${name} (${Object.keys(MODELS).join(', ')})`);
  await tf.setBackend('cpu');
  const m0 = spec.build();
  const init = m0.getWeights().map((w) => Float32Array.from(w.dataSync()));
  m0.dispose();
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const xt = tf.randomNormal([n], 0, 1, 'float32', 1);
  const x = Float32Array.from(xt.dataSync());
  xt.dispose();
  const y = new Float32Array(spec.shape[0] * 10);
  for (let i = 0; i < spec.shape[0]; i++) y[i * 10 + (i % 10)] = 1;
  results[name] = {};
  for (const b of backends) {
    let r;
    try {
      r = await benchOne(b, spec, init, x, y);
    } catch (e) {
      r = { predict: { error: String(e?.message ?? e).split('\n')[0] }, fit: { error: 'not run' } };
    }
    results[name][b] = r;
    for (const what of ['fit', 'predict']) {
      const q = r[what];
      const cell = q.imgPerS
        ? `${q.imgPerS.toFixed(1).padStart(9)} img/s  (${q.ms.toFixed(1)} ms/step, ${q.steps} timed)`
        : `      n/a  (${q.error})`;
      console.log(`  ${spec.label.padEnd(36)} ${what.padEnd(8)} ${b.padEnd(13)} ${cell}`);
    }
  }
}

const cuda = backends.includes('residualcuda');
console.log(
  '\n| model | step | ' +
    backends.join(' img/s | ') +
    ' img/s | residual / cpu | residual / wasm |' +
    (cuda ? ' residual CUDA / cpu |' : ''),
);
console.log('|---|---|' + backends.map(() => '---:|').join('') + '---:|---:|' + (cuda ? '---:|' : ''));
const ratio = (a, b) => (a?.imgPerS && b?.imgPerS ? (a.imgPerS / b.imgPerS).toFixed(1) + 'x' : 'n/a');
for (const what of ['fit', 'predict']) {
  for (const name of only) {
    const r = results[name];
    const cells = backends.map((b) => (r[b]?.[what]?.imgPerS ? r[b][what].imgPerS.toFixed(1) : 'n/a'));
    let line = `| ${MODELS[name].label} | ${what} | ${cells.join(' | ')} | ${ratio(r.residual?.[what], r.cpu?.[what])} | ${ratio(r.residual?.[what], r.wasm?.[what])} |`;
    if (cuda) line += ` ${ratio(r.residualcuda?.[what], r.cpu?.[what])} |`;
    console.log(line);
  }
}
console.log("(ratios: residual images/s over the other backend's; above 1 residual is faster)");
if (args.json)
  fs.writeFileSync(
    args.json,
    JSON.stringify({ machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, loadavg: os.loadavg() }, results }, null, 2),
  );
