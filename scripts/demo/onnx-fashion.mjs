#!/usr/bin/env node
// Train here, serve anywhere: a Fashion-MNIST ResNet-20 trained by residual, exported to ONNX, and the
// whole test set classified by onnxruntime-node next to `residual eval`.
//
//   node scripts/demo/onnx-fashion.mjs [--run DIR] [--web examples/onnx-web] [--screenshot docs/onnx-web.png]
//
// Without --run it trains one (`residual train --quick --out runs/onnx-fashion`, about 2 minutes on a
// laptop CPU). Needs Fashion-MNIST (Debian's dataset-fashion-mnist, or `residual data get fashion-mnist`)
// and the dev dependencies (onnxruntime-node; playwright-core and Debian's chromium for --screenshot).
// It writes RUN/model.onnx, and model.onnx + samples.json (12 test images) for the example page in --web.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'bin', 'residual.js');
const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : d;
};

function residual(args, { quiet = false } = {}) {
  return new Promise((resolve, reject) => {
    const c = execFile(process.execPath, [cli, ...args], { cwd: root, maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`residual ${args.join(' ')} failed:\n${stderr || stdout}`));
      else resolve(stdout);
    });
    if (!quiet) c.stdout.on('data', (d) => process.stdout.write(d));
  });
}

const run = arg('run', path.join('runs', 'onnx-fashion'));
const web = arg('web', path.join(root, 'examples', 'onnx-web'));
const shot = arg('screenshot');
if (!fs.existsSync(path.join(run, 'checkpoint.json'))) {
  console.log(`== training ${run} (residual train --quick)`);
  await residual(['train', '--quick', '--out', run]);
}
const config = JSON.parse(fs.readFileSync(path.join(run, 'checkpoint.json'), 'utf8')).config;
if (config.data !== 'fashion-mnist')
  throw new Error(`${run} was trained on ${config.data}, not Fashion-MNIST (is Fashion-MNIST installed? residual data get fashion-mnist)`);

console.log(`\n== residual export --checkpoint ${run} --format onnx`);
const onnxFile = path.join(run, 'model.onnx');
const exp = JSON.parse(
  await residual(['export', '--checkpoint', run, '--format', 'onnx', '--out', onnxFile, '--force', '--json'], { quiet: true }),
);
console.log(
  `${onnxFile}: opset ${exp.opset}, ${(exp.bytes / 1e6).toFixed(2)} MB, input [${exp.inputShape}] (pixels in [0, 1]), output [${exp.outputShape}]`,
);

console.log(`\n== residual eval --checkpoint ${run}`);
const ev = JSON.parse(await residual(['eval', '--checkpoint', run, '--json'], { quiet: true }));

// residual's own logits for every test image (the same model and normalisation as eval), to compare
// image by image, and the test set itself.
const lib = await import(path.join(root, 'dist', 'index.js'));
const { train, test } = lib.loadData({ data: 'fashion-mnist', dataPath: config.dataPath, seed: config.seed ?? 0 });
const stats = lib.channelStats(train.images);
const ck = lib.loadCheckpoint(run);
const weights = {};
for (const [k, v] of Object.entries(ck.tensors)) if (k.startsWith('model.')) weights[k.slice(6)] = v;
const model = lib.createModel(config.model, { numClasses: weights['fc.weight'].shape[0], inChannels: weights['conv1.weight'].shape[1] });
model.loadStateDict(weights);
model.eval();
const n = test.images.shape[0];
const pixels = test.images.toTypedArray();
const labels = Array.from(test.labels.toTypedArray(), Number);
const [, c, h, w] = test.images.shape;
const per = c * h * w;

console.log(`\n== onnxruntime-node ${ort.env.versions.common}: the ${n} test images`);
const session = await ort.InferenceSession.create(onnxFile, { executionProviders: ['cpu'] });
const B = 500;
let ortRight = 0,
  resRight = 0,
  same = 0,
  maxDiff = 0;
const resPred = new Int32Array(n);
for (let s = 0; s < n; s += B) {
  const m = Math.min(B, n - s);
  const x = Float32Array.from(pixels.subarray(s * per, (s + m) * per), (p) => p / 255);
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [m, c, h, w]) });
  const yo = out[session.outputNames[0]].data;
  const yr = lib.noGrad(() =>
    lib.scope(() => {
      const xt = lib.tensor(x, { shape: [m, c, h, w] });
      const norm = xt.sub(lib.tensor(stats.mean).reshape([1, c, 1, 1])).div(lib.tensor(stats.std).reshape([1, c, 1, 1]));
      return model.call(norm).toTypedArray();
    }),
  );
  const k = yo.length / m;
  for (let i = 0; i < m; i++) {
    let a = 0,
      b = 0;
    for (let j = 0; j < k; j++) {
      if (yo[i * k + j] > yo[i * k + a]) a = j;
      if (yr[i * k + j] > yr[i * k + b]) b = j;
      maxDiff = Math.max(maxDiff, Math.abs(yo[i * k + j] - yr[i * k + j]));
    }
    ortRight += a === labels[s + i];
    resRight += b === labels[s + i];
    same += a === b;
    resPred[s + i] = b;
  }
}
await session.release();
const pct = (v) => `${((v / n) * 100).toFixed(2)}% (${v}/${n})`;
console.log(`residual eval:              accuracy ${(ev.acc * 100).toFixed(2)}% (${Math.round(ev.acc * ev.images)}/${ev.images})`);
console.log(`onnxruntime-node:           accuracy ${pct(ortRight)}`);
console.log(`residual forward, same run: accuracy ${pct(resRight)}`);
console.log(`image by image: the same class for ${same}/${n} images; max |logit difference| ${maxDiff.toExponential(2)}`);

// The example page's data: the model and the first 12 test images.
fs.mkdirSync(web, { recursive: true });
fs.copyFileSync(onnxFile, path.join(web, 'model.onnx'));
const pick = Array.from({ length: 12 }, (_, i) => i);
const samples = {
  classes: train.classes,
  shape: [c, h, w],
  images: pick.map((i) => ({ index: i, pixels: Array.from(pixels.subarray(i * per, (i + 1) * per)), label: labels[i] })),
  residual: { predictions: pick.map((i) => resPred[i]) },
};
fs.writeFileSync(path.join(web, 'samples.json'), JSON.stringify(samples));
console.log(
  `\nwrote ${path.join(web, 'model.onnx')} and samples.json (test images ${pick.join(', ')}); serve them: node examples/onnx-web/serve.mjs`,
);
model.dispose();

if (shot) {
  const { serve } = await import(path.join(root, 'examples', 'onnx-web', 'serve.mjs'));
  const { chromium } = await import('playwright-core');
  const server = await serve({ port: 0, data: web });
  const profile = fs.mkdtempSync(path.join((await import('node:os')).tmpdir(), 'residual-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.RESIDUAL_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1010, height: 470 },
  });
  try {
    const page = await context.newPage();
    await page.goto(server.url);
    await page.waitForFunction(() => document.body.dataset.done, undefined, { timeout: 120_000 });
    const r = await page.evaluate(() => window.results);
    if (r.error) throw new Error(`the page failed: ${r.error}`);
    const agree = r.predictions.every((p, i) => p === samples.residual.predictions[i]);
    console.log(`\n== the page in headless Chromium: ${await page.textContent('#status')}`);
    console.log(
      `page predictions ${JSON.stringify(r.predictions)}; residual ${JSON.stringify(samples.residual.predictions)}: ${agree ? 'equal' : 'DIFFERENT'}`,
    );
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
    if (!agree) process.exitCode = 1;
  } finally {
    await context.close();
    await server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
if (ortRight !== resRight || Math.abs(ortRight / n - ev.acc) > 1e-9) process.exitCode = 1;
