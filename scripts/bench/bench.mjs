#!/usr/bin/env node
// `npm run bench`: residual against Python PyTorch eager on the same machine, in the same run, on the
// same work, interleaved trial by trial (a load that comes and goes hits both sides), with warm-up,
// repeated trials, medians and spread; residual / PyTorch ratios (below 1: residual is faster).
//
//   node scripts/bench/bench.mjs [--quick] [--only ops,resnet20,resnet50,scaling,memory,matmul]
//        [--device cpu|cuda] [--json out.json] [--python /path/to/python | --no-python]
//        [--threads N] [--cudnn-benchmark] [--write-md [BENCHMARKS.md]]
//
// Workloads (--only picks some; the default runs all that fit the device):
//   ops       per-op overhead on tiny tensors (1 intra-op thread on both sides)
//   resnet20  CIFAR ResNet-20 training step, 32x32, batch 128 (fp32; channels-last too; bf16 on GPU)
//   resnet50  ResNet-50 training step, 224x224, batch 32 on CPU / 256 on GPU (fp32; bf16 autocast +
//             channels-last on GPU)
//   scaling   step time against batch size (ResNet-20) and against depth (20, 56, 110, 1202)
//   memory    peak RSS (and peak CUDA memory) of the same step, each side in its own fresh process;
//             RSS sampled over 1,000 steps (growth)
//   matmul    (GPU) the measured bf16 matmul rate, for MFU
// A training step on both sides: forward, cross-entropy, zero_grad (set to none), backward, SGD
// (momentum 0.9, weight decay 5e-4). The Python side is scripts/bench/bench.py (same model definitions as
// the ResNet parity fixtures), run with --python, or the Python of scripts/ci/setup-python-torch.sh.
// Output: a table per workload on stdout, the ratios last; --json writes everything (machine, versions,
// every trial); --write-md writes the markdown between this machine's markers in BENCHMARKS.md.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const r = await import(path.join(root, 'dist', 'index.js'));

// ---------------------------------------------------------------------------------------- options
const argv = process.argv.slice(2);
function opt(name, dflt) {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) return true;
  return v;
}
const flag = (name) => argv.includes(`--${name}`);

/** Physical cores (distinct package/core pairs), or the logical CPUs where the topology is not readable. */
function physicalCores() {
  try {
    const dir = '/sys/devices/system/cpu';
    const seen = new Set();
    for (const e of fs.readdirSync(dir)) {
      if (!/^cpu\d+$/.test(e)) continue;
      const t = path.join(dir, e, 'topology');
      if (!fs.existsSync(t)) continue;
      seen.add(`${fs.readFileSync(path.join(t, 'physical_package_id'), 'utf8').trim()}:${fs.readFileSync(path.join(t, 'core_id'), 'utf8').trim()}`);
    }
    if (seen.size) return Math.min(seen.size, os.availableParallelism());
  } catch {
    /* fall through */
  }
  return os.availableParallelism();
}

// ------------------------------------------------------------------------------ memory child mode
// `bench.mjs --child-mem '<json>'`: a fresh process that runs the training steps and prints its peaks.
// Peak RSS of this process image: VmHWM (getrusage's maxrss survives exec, so a child spawned from a
// big parent would report the parent's peak).
function peakRssKB() {
  try {
    const m = /VmHWM:\s*(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS;
}
if (flag('child-mem')) {
  const c = JSON.parse(opt('child-mem'));
  r.setNumThreads(c.threads);
  const base = process.memoryUsage.rss() / 1024;
  const s = makeStep(c);
  const samples = [];
  for (let i = 0; i < c.steps; i++) {
    s.step();
    if (c.sampleEvery && (i + 1) % c.sampleEvery === 0) samples.push([i + 1, Math.round(process.memoryUsage.rss() / 1024)]);
  }
  if (c.device !== 'cpu') r.cuda.synchronize();
  const out = { baselineRssKB: Math.round(base), peakRssKB: peakRssKB(), finalRssKB: Math.round(process.memoryUsage.rss() / 1024), samples, tensors: r.memory().tensors };
  if (c.device !== 'cpu') out.peakCudaBytes = r.cuda.memoryStats(0).peakAllocatedBytes;
  console.log(JSON.stringify(out));
  process.exit(0);
}

const quick = flag('quick');
const device = opt('device', 'cpu');
const gpu = device !== 'cpu';
const jsonOut = opt('json', null);
const writeMd = flag('write-md') ? (typeof opt('write-md') === 'string' ? opt('write-md') : path.join(root, 'BENCHMARKS.md')) : null;
const threads = Number(opt('threads', physicalCores()));
const ALL = gpu ? ['ops', 'resnet20', 'resnet50', 'scaling', 'memory', 'matmul'] : ['ops', 'resnet20', 'resnet50', 'scaling', 'memory'];
const only = typeof opt('only') === 'string' ? opt('only').split(',') : ALL;
for (const w of only) if (![...ALL, 'matmul'].includes(w)) throw new Error(`--only: unknown workload '${w}' (known: ${ALL.join(', ')})`);
if (gpu && !r.cuda.isAvailable()) throw new Error(`--device ${device}: this build of residual has no CUDA device (buildInfo: ${JSON.stringify(r.buildInfo())})`);
if (!(Number.isInteger(threads) && threads >= 1)) throw new Error(`--threads: expected a positive integer, got ${opt('threads')}`);

// ------------------------------------------------------------------------------ residual workloads
/** One training step, the same work as TrainStep in bench.py. */
function makeStep(c) {
  r.manualSeed(0);
  // CPU memory caching (setCpuMemoryCaching) is process-wide: on for this row's steps, off in free().
  if (c.cpuCaching) r.setCpuMemoryCaching(true);
  const classes = c.image >= 64 ? 1000 : 10;
  const model = r.createModel(c.model, { numClasses: classes });
  if (c.device !== 'cpu') model.to(c.device);
  if (c.channelsLast) model.to({ memoryFormat: 'channelsLast' }); // in place, as the trainer does
  model.train();
  let x = r.randn([c.batch, 3, c.image, c.image], { device: c.device });
  if (c.channelsLast) {
    const y = x.contiguous('channelsLast');
    x.dispose();
    x = y;
  }
  const y = r.tensor(Array.from({ length: c.batch }, (_, i) => i % classes), { dtype: 'int64', device: c.device });
  const opt = new r.optim.SGD(model.parameters(), { lr: c.lr ?? 0.01, momentum: 0.9, weightDecay: 5e-4 });
  const devType = c.device === 'cpu' ? 'cpu' : 'cuda';
  if (c.graphs) {
    // The whole step (forward, backward, optimizer) captured once in a CUDA graph and replayed
    // (lib/train/graphs.ts); it also counts correct predictions, which the eager step does not.
    const g = r.captureTrainStep({
      model,
      optimizer: opt,
      amp: !!c.amp,
      ampDtype: 'bfloat16',
      forward: (xx, yy) => {
        const logits = model.call(xx);
        return { logits, loss: r.crossEntropy(logits, yy) };
      },
    });
    const gstep = () => {
      const o = g.step(x, y);
      o.loss.dispose();
      o.correct.dispose();
    };
    return {
      step: gstep,
      run(steps) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < steps; i++) gstep();
        r.cuda.synchronize();
        const ms = performance.now() - t0;
        const cu = process.cpuUsage(c0);
        this.lastCpuMs = (cu.user + cu.system) / 1000;
        return ms;
      },
      free() {
        g.dispose();
        model.dispose();
        x.dispose();
        y.dispose();
      },
    };
  }
  const step = () =>
    r.scope(() => {
      const loss = c.amp ? r.autocast(devType, 'bfloat16', () => r.crossEntropy(model.call(x), y)) : r.crossEntropy(model.call(x), y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    });
  return {
    step,
    run(steps) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) step();
      if (c.device !== 'cpu') r.cuda.synchronize();
      const ms = performance.now() - t0;
      const cu = process.cpuUsage(c0);
      this.lastCpuMs = (cu.user + cu.system) / 1000;
      return ms;
    },
    free() {
      opt.zeroGrad();
      model.dispose();
      x.dispose();
      y.dispose();
      if (c.cpuCaching) r.setCpuMemoryCaching(false);
    },
  };
}

function tinyCases(dev) {
  const a = r.ones([1], { device: dev });
  const b = r.ones([1], { device: dev });
  const m = r.ones([1, 1], { device: dev });
  const x = r.randn([1, 3, 8, 8], { device: dev });
  const w = r.randn([4, 3, 3, 3], { device: dev });
  const xg = x.clone().requiresGrad_(true);
  const wg = w.clone().requiresGrad_(true);
  return {
    add: () => a.add(b).dispose(),
    'add scalar': () => a.add(1).dispose(),
    sub: () => a.sub(b).dispose(),
    mul: () => a.mul(b).dispose(),
    div: () => a.div(b).dispose(),
    relu: () => a.relu().dispose(),
    exp: () => a.exp().dispose(),
    sum: () => a.sum().dispose(),
    'matmul 1x1': () => m.matmul(m).dispose(),
    view: () => a.view(1, 1).dispose(),
    'conv2d fwd': () => r.conv2d(x, w, null, { padding: 1 }).dispose(),
    'conv2d fwd+bwd': () => {
      const yy = r.conv2d(xg, wg, null, { padding: 1 });
      const s = yy.sum();
      s.backward();
      yy.dispose();
      s.dispose();
      xg.grad = null;
      wg.grad = null;
    },
  };
}
const TINY_LABEL = {
  add: 'add (1 element)',
  'add scalar': 'add scalar (1 element)',
  sub: 'sub (1 element)',
  mul: 'mul (1 element)',
  div: 'div (1 element)',
  relu: 'relu (1 element)',
  exp: 'exp (1 element)',
  sum: 'sum (1 element)',
  'matmul 1x1': 'matmul (1x1 @ 1x1)',
  view: 'view (1 element)',
  'conv2d fwd': 'conv2d fwd (1x3x8x8, 4x3x3x3)',
  'conv2d fwd+bwd': 'conv2d fwd+bwd (same)',
};

function timeOp(fn, dev, minMs) {
  for (let i = 0; i < 200; i++) fn();
  let n = 100;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    if (dev !== 'cpu') r.cuda.synchronize();
    const ns = Number(process.hrtime.bigint() - t0);
    if (ns > minMs * 1e6) return ns / n;
    n *= 2;
  }
}

function matmulTflops(dev, n, dtype, reps) {
  const a = r.randn([n, n], { device: dev, dtype });
  const b = r.randn([n, n], { device: dev, dtype });
  for (let i = 0; i < 3; i++) a.matmul(b).dispose();
  r.cuda.synchronize();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) a.matmul(b).dispose();
  r.cuda.synchronize();
  const s = (performance.now() - t0) / 1000;
  a.dispose();
  b.dispose();
  return (2 * n ** 3 * reps) / s / 1e12;
}

// ------------------------------------------------------------------------------------ Python side
function findPython() {
  if (flag('no-python')) return null;
  const p = opt('python', null);
  if (typeof p === 'string') return p;
  if (process.env.RESIDUAL_TEST_PYTHON) return process.env.RESIDUAL_TEST_PYTHON;
  const s = spawnSync('bash', [path.join(root, 'scripts', 'ci', 'setup-python-torch.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (s.status === 0) return s.stdout.trim().split('\n').pop();
  console.error('(no Python with torch: scripts/ci/setup-python-torch.sh failed; residual figures only. Pass --python)');
  return null;
}

class PySide {
  constructor(python) {
    this.python = python;
    this.proc = spawn(python, [path.join(root, 'scripts', 'bench', 'bench.py'), 'serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
    this.proc.on('error', (e) => {
      console.error(`python: ${e.message}`);
    });
  }
  async ask(req) {
    this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    const { value, done } = await this.lines.next();
    if (done) throw new Error(`bench.py exited (request ${JSON.stringify(req)})`);
    const res = JSON.parse(value);
    if (!res.ok) throw new Error(`bench.py: ${res.error} (request ${JSON.stringify(req)})`);
    return res;
  }
  async close() {
    try {
      await this.ask({ op: 'quit' });
    } catch {
      /* already gone */
    }
    this.proc.stdin.end();
  }
}

// --------------------------------------------------------------------------------------- statistics
function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => {
    const i = (s.length - 1) * p;
    const lo = Math.floor(i);
    return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
  };
  return { median: q(0.5), min: s[0], max: s[s.length - 1], q1: q(0.25), q3: q(0.75), n: s.length };
}
const ratioOf = (a, b) => (a && b ? a.median / b.median : null);

// ------------------------------------------------------------------------------------------ machine
function cpuModel() {
  return os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
}
const info = r.buildInfo();
const machine = {
  cpu: cpuModel(),
  logicalCpus: os.cpus().length,
  physicalCores: physicalCores(),
  memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
  loadAverageAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  gpu: gpu ? r.cuda.devices()[0]?.name ?? null : null,
  os: `${os.type()} ${os.release()}`,
};
const versions = { residual: JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version, libtorch: info.libtorch, variant: info.variant, node: process.version };

const py = (() => {
  const p = findPython();
  return p ? new PySide(p) : null;
})();
r.setNumThreads(threads);
// --cudnn-benchmark: cuDNN picks its convolution algorithms by timing them, on both sides.
const cudnnBenchmark = flag('cudnn-benchmark');
if (cudnnBenchmark && gpu) r.cudnnBenchmark(true);
if (py) {
  const pi = await py.ask({ op: 'init', threads, cudnnBenchmark });
  versions.pytorch = pi.torch;
  versions.python = pi.python;
  versions.pytorchCpuCapability = pi.cpuCapability;
  if (pi.gpu) versions.pytorchGpu = pi.gpu;
}
const results = { machine, versions, device, threads, cudnnBenchmark, quick, started: new Date().toISOString(), workloads: {} };

function log(s = '') {
  console.log(s);
}

// -------------------------------------------------------------------------------------- the runner
/** Trains `cfg` on both sides, interleaved trial by trial (the order alternates); ms per step. */
async function compareStep(id, cfg, { trials, steps, warmup }) {
  const c = { device, ...cfg };
  const mine = makeStep(c);
  mine.run(warmup);
  if (py) {
    // vsPytorchDefault: PyTorch runs in its default configuration (contiguous layout), whatever
    // residual's row uses; bench.py ignores cpuCaching (a residual setting).
    await py.ask({ op: 'setup', id, config: c.vsPytorchDefault ? { ...c, channelsLast: false } : c });
    await py.ask({ op: 'run', id, steps: warmup });
  }
  const rs = [];
  const ps = [];
  const rc = [];
  const pc = [];
  for (let t = 0; t < trials; t++) {
    const order = t % 2 === 0 ? ['r', 'p'] : ['p', 'r'];
    for (const side of order) {
      if (side === 'r') {
        rs.push(mine.run(steps) / steps);
        rc.push(mine.lastCpuMs / steps);
      } else if (py) {
        const res = await py.ask({ op: 'run', id, steps });
        ps.push(res.ms / steps);
        pc.push(res.cpuMs / steps);
      }
    }
  }
  mine.free();
  if (py) await py.ask({ op: 'free', id });
  const row = { config: c, trials, stepsPerTrial: steps, warmup, residualMs: stats(rs), pytorchMs: py ? stats(ps) : null, residualTrialsMs: rs, pytorchTrialsMs: ps, residualCpuMs: stats(rc), pytorchCpuMs: py ? stats(pc) : null };
  row.ratio = ratioOf(row.residualMs, row.pytorchMs);
  row.residualImagesPerSec = (1000 * c.batch) / row.residualMs.median;
  row.pytorchImagesPerSec = py ? (1000 * c.batch) / row.pytorchMs.median : null;
  const f = (s) => (s ? `${s.median.toFixed(1)} [${s.min.toFixed(1)}-${s.max.toFixed(1)}]` : 'n/a');
  const cr = ratioOf(row.residualCpuMs, row.pytorchCpuMs);
  log(`  ${id.padEnd(34)} residual ${f(row.residualMs).padEnd(24)} PyTorch ${f(row.pytorchMs).padEnd(24)} ratio ${row.ratio ? row.ratio.toFixed(2) : 'n/a'} (CPU time: ${row.residualCpuMs.median.toFixed(1)} vs ${row.pytorchCpuMs ? row.pytorchCpuMs.median.toFixed(1) : 'n/a'} ms, ratio ${cr ? cr.toFixed(2) : 'n/a'})`);
  return row;
}

function cfgLabel(c) {
  if (c.vsPytorchDefault)
    return `${c.model}, batch ${c.batch}, ${c.image}x${c.image}: residual with its CPU training defaults (channels-last, CPU memory caching) / PyTorch eager default (contiguous)`;
  const parts = [`${c.model}`, `batch ${c.batch}`, `${c.image}x${c.image}`, c.amp ? 'bf16 autocast' : 'fp32'];
  if (c.channelsLast) parts.push('channels-last');
  if (c.cpuCaching) parts.push('residual with CPU memory caching');
  if (c.graphs) parts.push('residual with CUDA graphs (PyTorch eager)');
  return parts.join(', ');
}

const W = results.workloads;

if (only.includes('ops')) {
  log(`ops: per-op overhead on tiny tensors, 1 intra-op thread on both sides (ns/op, median [min-max] of ${quick ? 1 : 5} trials)`);
  r.setNumThreads(1);
  if (py) await py.ask({ op: 'threads', threads: 1 });
  const cases = tinyCases(device);
  const names = quick ? ['add', 'mul'] : Object.keys(cases);
  const trials = quick ? 1 : 5;
  const minMs = quick ? 20 : 300;
  const rows = [];
  for (const name of names) {
    const rs = [];
    const ps = [];
    for (let t = 0; t < trials; t++) {
      const order = t % 2 === 0 ? ['r', 'p'] : ['p', 'r'];
      for (const side of order) {
        if (side === 'r') rs.push(timeOp(cases[name], device, minMs));
        else if (py) ps.push((await py.ask({ op: 'tiny', name, device, minMs })).ns);
      }
    }
    const row = { op: TINY_LABEL[name], residualNs: stats(rs), pytorchNs: py ? stats(ps) : null };
    row.ratio = ratioOf(row.residualNs, row.pytorchNs);
    rows.push(row);
    log(`  ${row.op.padEnd(34)} residual ${row.residualNs.median.toFixed(0).padStart(7)} PyTorch ${(row.pytorchNs ? row.pytorchNs.median.toFixed(0) : 'n/a').padStart(7)} ratio ${row.ratio ? row.ratio.toFixed(2) : 'n/a'}`);
  }
  W.ops = { threads: 1, trials, minMsPerTrial: minMs, rows };
  r.setNumThreads(threads);
  if (py) await py.ask({ op: 'threads', threads });
}

const stepPlan = (trials, steps, warmup) => (quick ? { trials: 1, steps: 1, warmup: 1 } : { trials, steps, warmup });

if (only.includes('resnet20')) {
  log(`resnet20: training step, ms per step, median [min-max]; ${threads} threads`);
  const batch = quick ? 4 : 128;
  const variants = [
    { model: 'resnet20', batch, image: 32 },
    { model: 'resnet20', batch, image: 32, channelsLast: true },
  ];
  if (!gpu) {
    // What `residual train` does on a CPU (lib/train/trainer.ts): channels-last and CPU memory
    // caching. First caching alone (same layout on both sides), then the trainer's defaults against
    // PyTorch eager in its default configuration. The rows above compare identical settings.
    variants.push({ model: 'resnet20', batch, image: 32, cpuCaching: true });
    variants.push({ model: 'resnet20', batch, image: 32, channelsLast: true, cpuCaching: true, vsPytorchDefault: true });
  }
  if (gpu) {
    variants.push({ model: 'resnet20', batch, image: 32, amp: true, channelsLast: true });
    // residual with CUDA graphs against PyTorch eager (bench.py ignores `graphs`)
    variants.push({ model: 'resnet20', batch, image: 32, graphs: true });
  }
  const rows = [];
  for (const v of variants) {
    try {
      rows.push({ label: cfgLabel(v), ...(await compareStep(cfgLabel(v), v, stepPlan(gpu ? 10 : 7, gpu ? 20 : 3, gpu ? 10 : 2))) });
    } catch (e) {
      if (!v.graphs) throw e;
      console.error(`(${cfgLabel(v)} failed: ${e.message})`);
      rows.push({ label: cfgLabel(v), config: v, error: String(e.message) });
    }
  }
  W.resnet20 = { rows };
}

if (only.includes('resnet50')) {
  log(`resnet50: training step, ms per step, median [min-max]; ${threads} threads`);
  const batch = quick ? 2 : gpu ? 256 : 32;
  const image = quick ? 64 : 224;
  const variants = gpu
    ? [
        { model: 'resnet50', batch, image },
        { model: 'resnet50', batch, image, amp: true, channelsLast: true },
      ]
    : [{ model: 'resnet50', batch, image }];
  const rows = [];
  for (const v of variants) rows.push({ label: cfgLabel(v), ...(await compareStep(cfgLabel(v), v, stepPlan(gpu ? 5 : 3, gpu ? 10 : 1, gpu ? 5 : 1))) });
  W.resnet50 = { rows };
}

if (only.includes('matmul') && gpu) {
  const n = quick ? 1024 : 8192;
  const reps = quick ? 3 : 50;
  const rs = [];
  const ps = [];
  for (let t = 0; t < (quick ? 1 : 3); t++) {
    rs.push(matmulTflops(device, n, 'bfloat16', reps));
    if (py) ps.push((await py.ask({ op: 'matmul', device, n, dtype: 'bfloat16', reps })).tflops);
  }
  W.matmul = { n, dtype: 'bfloat16', residualTflops: stats(rs), pytorchTflops: py ? stats(ps) : null };
  log(`matmul: bf16 ${n}x${n}: residual ${W.matmul.residualTflops.median.toFixed(0)} TFLOP/s, PyTorch ${py ? W.matmul.pytorchTflops.median.toFixed(0) : 'n/a'}`);
}

if (only.includes('scaling')) {
  const batches = quick ? [2, 4] : gpu ? [64, 128, 256, 512, 1024] : [16, 32, 64, 128, 256];
  const depthBatch = quick ? 2 : gpu ? 128 : 16;
  const depths = quick ? [20] : [20, 56, 110, 1202];
  log(`scaling: ResNet-20 step against batch size; depth at batch ${depthBatch}`);
  const byBatch = [];
  for (const b of batches) {
    const c = { model: 'resnet20', batch: b, image: 32 };
    byBatch.push({ batch: b, ...(await compareStep(`resnet20 batch ${b}`, c, stepPlan(gpu ? 5 : 3, gpu ? 10 : Math.max(1, Math.round(256 / b)), gpu ? 5 : 1))) });
  }
  const byDepth = [];
  for (const d of depths) {
    const c = { model: `resnet${d}`, batch: depthBatch, image: 32 };
    byDepth.push({ depth: d, ...(await compareStep(`resnet${d} batch ${depthBatch}`, c, stepPlan(3, d >= 1202 ? 1 : gpu ? 10 : 2, 1))) });
  }
  W.scaling = { byBatch, byDepth, depthBatch };
}

if (only.includes('memory')) {
  // Each side in a fresh process: the peak of the step itself, then RSS sampled over many steps.
  const peakCfg = quick ? { model: 'resnet20', batch: 4, image: 32, steps: 2 } : gpu ? { model: 'resnet50', batch: 256, image: 224, amp: true, channelsLast: true, steps: 5 } : { model: 'resnet20', batch: 128, image: 32, steps: 5 };
  const growthCfg = quick ? { model: 'resnet20', batch: 2, image: 32, steps: 20, sampleEvery: 5 } : { model: 'resnet20', batch: gpu ? 128 : 16, image: 32, steps: 1000, sampleEvery: 50 };
  const python = py ? py.python : null;
  const runMem = (side, cfg) => {
    const c = JSON.stringify({ device, threads, ...cfg });
    const p = side === 'r' ? spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child-mem', c], { encoding: 'utf8', maxBuffer: 1 << 24 }) : spawnSync(python, [path.join(root, 'scripts', 'bench', 'bench.py'), 'mem', c], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (p.status !== 0) throw new Error(`memory run (${side === 'r' ? 'residual' : 'PyTorch'}) failed: ${(p.stderr || '').trim().split('\n').slice(-5).join('\n')}`);
    return JSON.parse(p.stdout.trim().split('\n').pop());
  };
  const growth = (res) => {
    // RSS after the first tenth of the steps (warm: caches, allocator pools) against the last sample.
    const s = res.samples;
    if (s.length < 2) return null;
    const from = s[Math.max(0, Math.floor(s.length / 10) - 1)];
    const to = s[s.length - 1];
    return { fromStep: from[0], toStep: to[0], fromKB: from[1], toKB: to[1], kb: to[1] - from[1] };
  };
  log(`memory: peak of ${cfgLabel(peakCfg)} (${peakCfg.steps} steps) and RSS over ${growthCfg.steps} steps of ${cfgLabel(growthCfg)}, each in a fresh process`);
  const peak = { config: peakCfg, residual: runMem('r', peakCfg), pytorch: py ? runMem('p', peakCfg) : null };
  const gr = { config: growthCfg, residual: runMem('r', growthCfg), pytorch: py ? runMem('p', growthCfg) : null };
  gr.residualGrowth = growth(gr.residual);
  gr.pytorchGrowth = gr.pytorch ? growth(gr.pytorch) : null;
  W.memory = { peak, growth: gr };
  const mb = (kb) => (kb == null ? 'n/a' : `${(kb / 1024).toFixed(0)} MB`);
  log(`  peak RSS: residual ${mb(peak.residual.peakRssKB)} (at start ${mb(peak.residual.baselineRssKB)}), PyTorch ${mb(peak.pytorch?.peakRssKB)} (at start ${mb(peak.pytorch?.baselineRssKB)})`);
  if (gpu) log(`  peak CUDA memory: residual ${(peak.residual.peakCudaBytes / 2 ** 20).toFixed(0)} MB, PyTorch ${peak.pytorch ? (peak.pytorch.peakCudaBytes / 2 ** 20).toFixed(0) : 'n/a'} MB`);
  log(`  RSS growth from step ${gr.residualGrowth?.fromStep} to ${gr.residualGrowth?.toStep}: residual ${mb(gr.residualGrowth?.kb)}, PyTorch ${mb(gr.pytorchGrowth?.kb)}; residual live tensors at the end ${gr.residual.tensors}`);
}

if (py) await py.close();
results.finished = new Date().toISOString();
results.loadAverageAtEnd = os.loadavg().map((x) => +x.toFixed(2));

// -------------------------------------------------------------------------------------- reporting
/** ResNet-20: residual channels-last (fp32) against PyTorch contiguous (its default), from the same run. */
function crossDefault() {
  const rows = W.resnet20?.rows ?? [];
  const cl = rows.find((x) => x.config.channelsLast && !x.config.amp && !x.config.cpuCaching);
  const pt = rows.find((x) => !x.config.channelsLast && !x.config.amp && !x.config.cpuCaching);
  if (!cl || !pt || !pt.pytorchMs) return null;
  return { time: ratioOf(cl.residualMs, pt.pytorchMs), cpu: ratioOf(cl.residualCpuMs, pt.pytorchCpuMs) };
}

function markdown() {
  const L = [];
  const f0 = (x) => (x == null ? 'n/a' : Math.abs(x) < 10 ? x.toFixed(1) : Math.round(x).toLocaleString('en-US'));
  const f1 = (x) => (x == null ? 'n/a' : x.toFixed(1));
  const spread = (s, fmt) => (s ? `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})` : 'n/a');
  const rat = (x) => (x == null ? 'n/a' : x.toFixed(2));
  const m = results.machine;
  L.push(`### ${m.cpu}, ${m.physicalCores} cores${m.gpu ? `, ${m.gpu}` : ''} (device ${device})`);
  L.push('');
  L.push(`residual ${versions.residual} on libtorch ${versions.libtorch} (${versions.variant}), Node ${versions.node}; PyTorch ${versions.pytorch ?? 'n/a'} (Python ${versions.python ?? 'n/a'}, CPU capability ${versions.pytorchCpuCapability ?? 'n/a'}). ` +
    `Intra-op threads: ${threads} on both sides unless said otherwise. Load average ${m.loadAverageAtStart[0]} at the start, ${results.loadAverageAtEnd[0]} at the end (${m.logicalCpus} logical CPUs). ` +
    `Generated by \`node scripts/bench/bench.mjs${quick ? ' --quick' : ''}${device !== 'cpu' ? ` --device ${device}` : ''}\` on ${results.started.slice(0, 10)}; median (min-max) over trials, residual and PyTorch interleaved trial by trial; ratio = residual / PyTorch (below 1: residual is faster). CPU time is the process's user + system time over the same steps (all its threads): a loaded machine stretches wall time more than CPU time.`);
  L.push('');
  if (W.ops) {
    L.push(`Per-op overhead on tiny tensors, 1 intra-op thread, ns per op (${W.ops.trials} trials of at least ${W.ops.minMsPerTrial} ms):`);
    L.push('');
    L.push('| op | residual ns | PyTorch ns | ratio |');
    L.push('| --- | ---: | ---: | ---: |');
    for (const row of W.ops.rows) L.push(`| ${row.op} | ${spread(row.residualNs, f0)} | ${spread(row.pytorchNs, f0)} | ${rat(row.ratio)} |`);
    L.push('');
  }
  const stepTable = (title, rows, first) => {
    L.push(title);
    L.push('');
    L.push(`| ${first} | residual ms/step | PyTorch ms/step | residual img/s | PyTorch img/s | ratio (time) | CPU ms/step residual / PyTorch (ratio) |`);
    L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const row of rows) {
      if (row.error) {
        L.push(`| ${row.label} | failed: ${row.error.replace(/\|/g, '/').slice(0, 200)} | | | | | |`);
        continue;
      }
      const cpu = row.pytorchCpuMs ? `${f1(row.residualCpuMs.median)} / ${f1(row.pytorchCpuMs.median)} (${rat(ratioOf(row.residualCpuMs, row.pytorchCpuMs))})` : `${f1(row.residualCpuMs.median)} / n/a`;
      L.push(`| ${row.label} | ${spread(row.residualMs, f1)} | ${spread(row.pytorchMs, f1)} | ${f0(row.residualImagesPerSec)} | ${f0(row.pytorchImagesPerSec)} | ${rat(row.ratio)} | ${cpu} |`);
    }
    L.push('');
  };
  const plan = (rows) => (rows[0] ? `${rows[0].trials} trials of ${rows[0].stepsPerTrial} step(s) after ${rows[0].warmup} warm-up step(s)` : '');
  if (W.resnet20) {
    stepTable(`ResNet-20 training step (SGD momentum 0.9, weight decay 5e-4, cross-entropy), ${plan(W.resnet20.rows)}:`, W.resnet20.rows, 'setting');
    const x = crossDefault();
    if (x) {
      L.push(`residual with channels-last against PyTorch with its default (contiguous) layout: ${rat(x.time)} (time), ${rat(x.cpu)} (CPU time).`);
      L.push('');
    }
  }
  if (W.resnet50) stepTable(`ResNet-50 training step, ${plan(W.resnet50.rows)}:`, W.resnet50.rows, 'setting');
  if (W.matmul) {
    L.push(`Measured bf16 matmul rate (${W.matmul.n}x${W.matmul.n}): residual ${f0(W.matmul.residualTflops.median)} TFLOP/s, PyTorch ${W.matmul.pytorchTflops ? f0(W.matmul.pytorchTflops.median) : 'n/a'} TFLOP/s.`);
    const bf = W.resnet50?.rows.find((x) => x.config.amp);
    if (bf) {
      // ResNet-50 at 224x224: 4.09 GMAC forward per image; a training step is about 3x the forward.
      const flopsPerImage = 3 * 2 * 4.09e9 * (bf.config.image / 224) ** 2;
      const mfu = (ips) => (ips ? `${((100 * ips * flopsPerImage) / (W.matmul.residualTflops.median * 1e12)).toFixed(1)}%` : 'n/a');
      L.push(`MFU of the bf16 ResNet-50 step (about ${(flopsPerImage / 1e9).toFixed(1)} GFLOP per image, 3x the forward's 4.09 GMAC, over the measured matmul rate): residual ${mfu(bf.residualImagesPerSec)}, PyTorch ${mfu(bf.pytorchImagesPerSec)}.`);
    }
    L.push('');
  }
  if (W.scaling) {
    const rows = W.scaling.byBatch.map((x) => ({ ...x, label: `${x.batch}` }));
    stepTable(`How cost grows with the batch (ResNet-20, fp32):`, rows, 'batch');
    const drows = W.scaling.byDepth.map((x) => ({ ...x, label: `ResNet-${x.depth}` }));
    stepTable(`How cost grows with depth (fp32, batch ${W.scaling.depthBatch}${!gpu && !quick ? ': a smaller batch than 128 on CPU so that ResNet-1202 fits the time' : ''}):`, drows, 'depth');
  }
  if (W.memory) {
    const mb = (kb) => (kb == null ? 'n/a' : `${f0(kb / 1024)} MB`);
    const p = W.memory.peak;
    const g = W.memory.growth;
    L.push(`Memory, each side in its own fresh process: ${cfgLabel(p.config)}, ${p.config.steps} steps; then RSS sampled every ${g.config.sampleEvery} steps over ${g.config.steps} steps of ${cfgLabel(g.config)}:`);
    L.push('');
    L.push('| measure | residual | PyTorch |');
    L.push('| --- | ---: | ---: |');
    L.push(`| RSS at start (runtime + library loaded) | ${mb(p.residual.baselineRssKB)} | ${mb(p.pytorch?.baselineRssKB)} |`);
    L.push(`| peak RSS | ${mb(p.residual.peakRssKB)} | ${mb(p.pytorch?.peakRssKB)} |`);
    L.push(`| peak RSS minus RSS at start | ${mb(p.residual.peakRssKB - p.residual.baselineRssKB)} | ${p.pytorch ? mb(p.pytorch.peakRssKB - p.pytorch.baselineRssKB) : 'n/a'} |`);
    if (gpu) L.push(`| peak CUDA memory allocated | ${f0(p.residual.peakCudaBytes / 2 ** 20)} MB | ${p.pytorch ? `${f0(p.pytorch.peakCudaBytes / 2 ** 20)} MB` : 'n/a'} |`);
    const gg = (x) => (x ? `${mb(x.fromKB)} -> ${mb(x.toKB)} (${x.kb >= 0 ? '+' : ''}${f0(x.kb / 1024)} MB)` : 'n/a');
    L.push(`| RSS from step ${g.residualGrowth?.fromStep} to step ${g.residualGrowth?.toStep} | ${gg(g.residualGrowth)} | ${gg(g.pytorchGrowth)} |`);
    L.push('');
  }
  return L.join('\n');
}

function machineKey() {
  return `${results.machine.cpu} ${results.machine.physicalCores}c ${results.machine.gpu ?? ''} ${device}`.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

const md = markdown();
results.markdown = md;
if (jsonOut) fs.writeFileSync(jsonOut, `${JSON.stringify(results, null, 2)}\n`);
if (writeMd) {
  const key = machineKey();
  const begin = `<!-- bench.mjs begin ${key} -->`;
  const end = `<!-- bench.mjs end ${key} -->`;
  let doc = fs.existsSync(writeMd) ? fs.readFileSync(writeMd, 'utf8') : '# Benchmarks\n';
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  const block = `${begin}\n${md}\n${end}`;
  if (i >= 0 && j > i) doc = doc.slice(0, i) + block + doc.slice(j + end.length);
  else {
    const head = '## Side by side with PyTorch eager (`npm run bench`)';
    if (!doc.includes(head)) doc = `${doc.trimEnd()}\n\n${head}\n\nRegenerated by \`node scripts/bench/bench.mjs --write-md\` (one section per machine and device, between markers).\n`;
    const at = doc.indexOf(head) + head.length;
    const nextH2 = doc.indexOf('\n## ', at);
    const ins = nextH2 < 0 ? doc.length : nextH2;
    doc = `${doc.slice(0, ins).trimEnd()}\n\n${block}\n${doc.slice(ins)}`;
  }
  fs.writeFileSync(writeMd, doc.endsWith('\n') ? doc : `${doc}\n`);
}

log('');
log(md);
log('');
// The ratios, last.
log(`Ratios residual / PyTorch (time; below 1 = residual faster), ${machine.cpu}${machine.gpu ? ` + ${machine.gpu}` : ''}, device ${device}:`);
const ratioLines = [];
if (W.ops) for (const row of W.ops.rows) ratioLines.push([`op ${row.op}`, row.ratio]);
for (const k of ['resnet20', 'resnet50']) if (W[k]) for (const row of W[k].rows) ratioLines.push([row.label, row.ratio ?? null]);
if (crossDefault()) ratioLines.push(['resnet20 residual channels-last / PyTorch default', crossDefault().time]);
if (W.scaling) {
  for (const row of W.scaling.byBatch) ratioLines.push([`resnet20 batch ${row.batch}`, row.ratio]);
  for (const row of W.scaling.byDepth) ratioLines.push([`resnet${row.depth} batch ${W.scaling.depthBatch}`, row.ratio]);
}
if (W.memory?.peak.pytorch) ratioLines.push(['peak RSS', W.memory.peak.residual.peakRssKB / W.memory.peak.pytorch.peakRssKB]);
for (const [k, v] of ratioLines) log(`  ${k.padEnd(44)} ${v == null ? 'n/a' : v.toFixed(2)}`);
