#!/usr/bin/env node
// The README's TensorBoard picture: trains a short Fashion-MNIST run with `residual train` (killed in its
// second epoch and continued with --resume, as a real interruption would be), serves the run folder with
// `tensorboard --logdir` on 127.0.0.1, and takes a screenshot of TensorBoard's scalars page with headless
// Chromium (Debian's chromium, driven by playwright-core). Not part of npm test.
//
//   node scripts/demo/tensorboard-screenshot.mjs [--run DIR] [--out docs/tensorboard-scalars.png]
//
// --run DIR: screenshot an existing run folder instead of training one. Needs: a built residual
// (npm install), Fashion-MNIST (Debian's dataset-fashion-mnist, or one residual downloads), /usr/bin/chromium
// (apt-get install chromium), and TensorBoard: $TENSORBOARD_PYTHON, $RESIDUAL_TEST_PYTHON or
// .cache/python-torch/bin/python with the tensorboard package (scripts/ci/setup-python-torch.sh makes one),
// else `tensorboard` on the PATH.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const outPng = path.resolve(opt('--out', path.join(root, 'docs', 'tensorboard-scalars.png')));
const children = new Set();
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL');
};
process.on('exit', cleanup);

function log(msg) {
  process.stderr.write(`[tensorboard-screenshot] ${msg}\n`);
}

/** Runs `residual train ARGS --json`; calls onEvent for each progress line; resolves with the exit code and signal. */
function train(trainArgs, onEvent = () => {}) {
  const c = spawn(process.execPath, [path.join(root, 'bin', 'residual.js'), 'train', ...trainArgs, '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(c);
  let buf = '';
  c.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        onEvent(JSON.parse(line), c);
      } catch {
        /* not a progress line */
      }
    }
  });
  return new Promise((resolve) =>
    c.on('exit', (code, signal) => {
      children.delete(c);
      resolve({ code, signal });
    }),
  );
}

async function trainDemoRun() {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tb-demo-'));
  const run = path.join(parent, 'resnet20-fashion-mnist');
  const common = [
    '--model',
    'resnet20',
    '--data',
    'fashion-mnist',
    '--epochs',
    '3',
    '--limit-train-batches',
    '100',
    '--limit-test-batches',
    '40',
    '--log-every',
    '5',
    '--out',
    run,
  ];
  log(`training ${run} (3 epochs of 100 steps), killed in epoch 2`);
  let checkpoints = 0;
  const first = await train(common, (ev, c) => {
    if (ev.type === 'checkpoint') checkpoints++;
    if (checkpoints === 1 && ev.type === 'step' && ev.epoch === 2 && ev.step >= 40) c.kill('SIGKILL'); // lost: steps after the checkpoint
  });
  if (first.signal !== 'SIGKILL') throw new Error(`the first training process was not killed in epoch 2 (exit ${first.code})`);
  log('killed in epoch 2; continuing with --resume');
  const second = await train(['--resume', '--out', run]);
  if (second.code !== 0) throw new Error(`residual train --resume failed (exit ${second.code})`);
  return run;
}

function tensorboardCommand() {
  const pythons = [
    process.env.TENSORBOARD_PYTHON,
    process.env.RESIDUAL_TEST_PYTHON,
    path.join(root, '.cache', 'python-torch', 'bin', 'python'),
  ].filter(Boolean);
  for (const py of pythons) {
    try {
      execFileSync(py, ['-c', 'import tensorboard'], { stdio: 'ignore' });
      return [py, ['-m', 'tensorboard.main']];
    } catch {
      /* next */
    }
  }
  return ['tensorboard', []];
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitFor(what, fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

const run = opt('--run') ? path.resolve(opt('--run')) : await trainDemoRun();
const runName = path.basename(run);
const port = await freePort();
const [cmd, pre] = tensorboardCommand();
log(`serving ${path.dirname(run)} with ${cmd} ${pre.join(' ')} on 127.0.0.1:${port}`);
const tb = spawn(cmd, [...pre, '--logdir', path.dirname(run), '--host', '127.0.0.1', '--port', String(port), '--reload_interval', '1'], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
children.add(tb);
const base = `http://127.0.0.1:${port}`;
await waitFor(
  'TensorBoard to list the run',
  async () => {
    const runs = await (await fetch(`${base}/data/runs`)).json();
    return runs.includes(runName);
  },
  60_000,
);
await waitFor(
  'the scalars to load',
  async () => {
    const tags = await (await fetch(`${base}/data/plugin/scalars/tags`)).json();
    return Object.keys(tags[runName] ?? {}).length > 0;
  },
  60_000,
);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
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
  viewport: { width: 1400, height: 1250 },
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  // The scalars dashboard, with the training curves' tags first (the per-layer gradient norms are further down).
  await page.goto(`${base}/#scalars&_smoothingWeight=0&tagFilter=${encodeURIComponent('^(loss|accuracy|learning_rate)')}`, {
    waitUntil: 'networkidle',
  });
  await page.waitForSelector('vz-line-chart2 svg path.line, vz-line-chart2 canvas, tf-scalar-card', { timeout: 60_000 });
  await page.waitForTimeout(4000); // the charts draw after their data arrives
  fs.mkdirSync(path.dirname(outPng), { recursive: true });
  await page.screenshot({ path: outPng });
  log(`wrote ${outPng}`);
} finally {
  await browser.close();
  tb.kill('SIGTERM');
  fs.rmSync(profile, { recursive: true, force: true });
}
