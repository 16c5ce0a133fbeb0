#!/usr/bin/env node
// GPU training-step throughput: residual against PyTorch eager (and torch.cuda.graphs) on identical
// work, in the same run, trial by trial interleaved; with the gain of each GPU setting and the MFU.
// Self-contained (bench.mjs can call it, or import runResidual/variantsFor).
//
//   node scripts/bench/bench-gpu-step.mjs [--model resnet20] [--batch 128] [--image 32] [--classes 10]
//        [--steps 30] [--trials 5] [--warmup 10] [--variants ladder|targets|one] [--amp] [--channels-last]
//        [--cuda-graphs] [--no-cudnn-benchmark] [--no-fused] [--h2d] [--device cuda]
//        [--python PATH | --no-python] [--json out.json]
//
// A step is: forward, cross-entropy, zero_grad, backward, SGD (momentum 0.9, Nesterov, weight decay
// 5e-4) on one batch already on the GPU (with --h2d: copied each step from pinned host memory,
// non_blocking). `--variants ladder` (the default) measures one setting added at a time, so each
// one's gain shows:
//   plain            fp32, cuDNN benchmark off, foreach (unfused) optimizer
//   +cudnn-benchmark
//   +fused           fused optimizer kernels (at::_fused_sgd_; torch: SGD(fused=True))
//   +channels-last
//   +bf16            bf16 autocast
//   +h2d             the batch copied from pinned host memory each step, non_blocking
//   +cuda-graphs     the whole step captured once and replayed (residual: captureTrainStep; torch:
//                    torch.cuda.graph whole-network capture)
// `--variants targets`: fp32, bf16 + channels-last, and that with CUDA graphs (cuDNN benchmark and fused
// optimizer on in all three). `--variants one` measures the single variant the flags describe.
// Python twin: scripts/bench/bench-gpu-step.py (the same networks as the ResNet parity fixtures); it also
// counts the FLOPs of one training step (torch.utils.flop_counter) for the MFU, which is the achieved
// FLOP rate over the bf16 matmul rate measured here (8192^3, both sides' cuBLAS).
// Output: a line per variant: images/s median [min-max] for residual and PyTorch, the ratio
// residual/PyTorch (above 1: residual is faster), then the MFU lines; --json writes everything.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const r = await import(path.join(root, 'dist', 'index.js'));

const argv = process.argv.slice(2);
function opt(name, dflt) {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) return true;
  return v;
}
const flag = (name) => argv.includes(`--${name}`);
const num = (name, dflt) => {
  const v = Number(opt(name, dflt));
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
};

/** The settings of one measured variant. */
export function variantsFor(base, mode) {
  if (mode === 'one') return [{ name: 'as given', ...base }];
  if (mode === 'targets') {
    // the issue's targets: fp32 with the defaults (cuDNN benchmark, fused), bf16 + channels-last, and
    // the same captured in a CUDA graph
    const d = { ...base, cudnnBenchmark: true, fused: true, h2d: false };
    return [
      { name: 'fp32', ...d, amp: false, channelsLast: false, cudaGraphs: false },
      { name: 'bf16+cl', ...d, amp: true, channelsLast: true, cudaGraphs: false },
      { name: 'bf16+cl+graphs', ...d, amp: true, channelsLast: true, cudaGraphs: true },
    ];
  }
  if (mode !== 'ladder') throw new Error(`--variants must be ladder, targets or one, got ${mode}`);
  const v = [];
  let cur = { ...base, cudnnBenchmark: false, fused: false, channelsLast: false, amp: false, h2d: false, cudaGraphs: false };
  v.push({ name: 'plain', ...cur });
  const steps = [
    ['+cudnn-benchmark', 'cudnnBenchmark'],
    ['+fused', 'fused'],
    ['+channels-last', 'channelsLast'],
    ['+bf16', 'amp'],
    ['+h2d', 'h2d'],
    ['+cuda-graphs', 'cudaGraphs'],
  ];
  // --device cpu (a smoke test of this script where there is no GPU): the CUDA-only settings are left out
  for (const [name, key] of (base.device ?? 'cuda').startsWith('cuda')
    ? steps
    : steps.filter(([, k]) => !['h2d', 'cudaGraphs', 'cudnnBenchmark', 'fused'].includes(k))) {
    cur = { ...cur, [key]: true };
    v.push({ name, ...cur });
  }
  return v;
}

// ------------------------------------------------------------------------------- residual side
/** Sets up one variant; returns {trial(steps) -> seconds, dispose}. */
export function residualVariant(v) {
  const dev = v.device ?? 'cuda';
  const onGpu = dev.startsWith('cuda');
  const sync = () => onGpu && r.cuda.synchronize();
  r.cudnnBenchmark(!!v.cudnnBenchmark);
  r.manualSeed(0);
  const model = r.createRunModel(
    { model: v.model, channelsLast: !!v.channelsLast },
    { classes: Array.from({ length: v.classes }, (_, i) => String(i)), channels: 3 },
    dev,
  );
  const groups = [
    { params: model.parameters().filter((p) => p.ndim > 1), weightDecay: 5e-4 },
    { params: model.parameters().filter((p) => p.ndim <= 1), weightDecay: 0 },
  ];
  const opt = new r.optim.SGD(groups, { lr: 0.01, momentum: 0.9, nesterov: true });
  r.setFusedOptimizer(opt, !!v.fused);
  const mkx = (d) => {
    const x = r.randn([v.batch, 3, v.image, v.image], { device: d });
    return v.channelsLast ? x.contiguous('channelsLast') : x;
  };
  const xDev = mkx(dev);
  const yDev = r.randint(0, v.classes, [v.batch], { device: dev });
  const xHost = v.h2d ? mkx('cpu').pinMemory() : null;
  const yHost = v.h2d ? yDev.cpu().pinMemory() : null;
  const batch = () =>
    v.h2d
      ? { x: xHost.to({ device: dev, nonBlocking: true }), y: yHost.to({ device: dev, nonBlocking: true }), own: true }
      : { x: xDev, y: yDev, own: false };
  const forward = (x, y) => {
    const logits = model.call(x);
    return { logits, loss: r.crossEntropy(logits, y) };
  };
  let graphed = null;
  if (v.cudaGraphs) graphed = r.captureTrainStep({ model, optimizer: opt, forward, amp: !!v.amp, ampDtype: 'bfloat16', warmup: 3 });
  const step = () => {
    const b = batch();
    if (graphed) {
      const o = graphed.step(b.x, b.y);
      o.loss.dispose();
      o.correct.dispose();
    } else {
      r.scope(() => {
        model.train();
        opt.zeroGrad(true);
        const { loss } = v.amp ? r.autocast(onGpu ? 'cuda' : 'cpu', 'bfloat16', () => forward(b.x, b.y)) : forward(b.x, b.y);
        loss.backward();
        opt.step();
      });
    }
    if (b.own) {
      b.x.dispose();
      b.y.dispose();
    }
  };
  for (let i = 0; i < v.warmup; i++) step();
  sync();
  return {
    trial(steps) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < steps; i++) step();
      sync();
      return Number(process.hrtime.bigint() - t0) / 1e9;
    },
    peakBytes: () => (onGpu ? (r.cuda.memoryStats(0).peakAllocatedBytes ?? null) : null),
    dispose() {
      graphed?.dispose();
      model.dispose();
      for (const t of [xDev, yDev, xHost, yHost]) t?.dispose();
      sync();
      if (onGpu) r.cuda.emptyCache();
    },
  };
}

/** The bf16 matmul rate (FLOP/s) on this GPU through residual (cuBLAS): 8192^3, median of 10. */
export function matmulRate(n = 8192) {
  const a = r.randn([n, n], { device: 'cuda' }).to('bfloat16');
  const b = r.randn([n, n], { device: 'cuda' }).to('bfloat16');
  for (let i = 0; i < 3; i++) a.matmul(b).dispose();
  r.cuda.synchronize();
  const times = [];
  for (let t = 0; t < 10; t++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 10; i++) a.matmul(b).dispose();
    r.cuda.synchronize();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9 / 10);
  }
  a.dispose();
  b.dispose();
  return (2 * n ** 3) / median(times);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

// --------------------------------------------------------------------------------- Python twin
class PyTwin {
  constructor(python) {
    this.proc = spawn(python, [path.join(root, 'scripts', 'bench', 'bench-gpu-step.py'), 'serve'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.lines = readline.createInterface({ input: this.proc.stdout });
    this.waiting = [];
    this.lines.on('line', (l) => this.waiting.shift()?.(l));
    this.proc.on('exit', (code) => {
      for (const w of this.waiting.splice(0)) w(JSON.stringify({ error: `python exited (${code})` }));
    });
  }
  ask(req) {
    return new Promise((resolve, reject) => {
      this.waiting.push((l) => {
        const m = JSON.parse(l);
        if (m.error) reject(new Error(`python: ${m.error}`));
        else resolve(m);
      });
      this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }
  close() {
    this.proc.stdin.end();
  }
}

async function main() {
  const device = opt('device', 'cuda');
  if (device.startsWith('cuda') && !r.cuda.isAvailable()) {
    console.error(
      'bench-gpu-step: CUDA is not available (this measures GPU training steps; build against a CUDA libtorch and run on a GPU machine)',
    );
    process.exit(2);
  }
  const base = {
    model: opt('model', 'resnet20'),
    batch: num('batch', 128),
    image: num('image', 32),
    classes: num('classes', 10),
    warmup: num('warmup', 10),
    device,
    amp: flag('amp'),
    channelsLast: flag('channels-last'),
    cudaGraphs: flag('cuda-graphs'),
    cudnnBenchmark: !flag('no-cudnn-benchmark'),
    fused: !flag('no-fused'),
    h2d: flag('h2d'),
  };
  const steps = num('steps', 30);
  const trials = num('trials', 5);
  const variants = variantsFor(base, opt('variants', 'ladder'));
  const pyPath = flag('no-python') ? null : opt('python', 'python3');
  const py = pyPath ? new PyTwin(pyPath) : null;
  const info = py ? await py.ask({ cmd: 'info' }).catch((e) => (console.error(String(e)), null)) : null;
  const gpu = r.cuda.devices()[0];
  console.log(
    `bench-gpu-step: ${gpu?.name ?? 'GPU'}; residual (libtorch ${r.buildInfo().libtorch})${info ? `; PyTorch ${info.torch} (CUDA ${info.cuda}, cuDNN ${info.cudnn})` : ''}`,
  );
  console.log(
    `${base.model}, batch ${base.batch}, ${base.image}x${base.image}; ${trials} trials of ${steps} steps after ${base.warmup} warm-up steps; images/s median [min-max]`,
  );
  const results = [];
  for (const v of variants) {
    const rv = residualVariant(v);
    let pyReady = false;
    if (py) {
      try {
        await py.ask({ cmd: 'setup', variant: v });
        pyReady = true;
      } catch (e) {
        console.error(`  (PyTorch ${v.name}: ${e.message})`);
      }
    }
    const rs = [];
    const ps = [];
    for (let t = 0; t < trials; t++) {
      rs.push((v.batch * steps) / rv.trial(steps));
      if (pyReady) ps.push((v.batch * steps) / (await py.ask({ cmd: 'trial', steps })).seconds);
    }
    const peak = rv.peakBytes();
    rv.dispose();
    const pyPeak = pyReady ? (await py.ask({ cmd: 'teardown' })).peakBytes : null;
    const row = {
      variant: v.name,
      settings: v,
      residual: rs,
      torch: ps,
      residualMedian: median(rs),
      torchMedian: ps.length ? median(ps) : null,
      residualPeakBytesSoFar: peak,
      torchPeakBytesOfVariant: pyPeak,
    };
    results.push(row);
    const fmt = (xs) => `${median(xs).toFixed(0)} [${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}]`;
    console.log(
      `  ${v.name.padEnd(18)} residual ${fmt(rs).padEnd(22)} ${ps.length ? `torch ${fmt(ps).padEnd(22)} ratio ${(row.residualMedian / row.torchMedian).toFixed(2)}x` : ''}`,
    );
  }
  // the torch.cuda.graphs figure against torch eager with the same settings (the last two ladder rows)
  const rate = device.startsWith('cuda') ? matmulRate() : null;
  let flops = null;
  if (py) {
    try {
      flops = (await py.ask({ cmd: 'flops', variant: { ...base, amp: false, cudaGraphs: false } })).flopsPerStep;
    } catch (e) {
      console.error(`  (FLOP count: ${e.message})`);
    }
  }
  if (rate) console.log(`bf16 matmul rate (8192^3, cuBLAS through residual): ${(rate / 1e12).toFixed(0)} TFLOP/s`);
  if (flops) console.log(`FLOPs per training step (torch.utils.flop_counter, forward + backward): ${(flops / 1e9).toFixed(1)} GFLOP`);
  if (flops && rate) {
    for (const row of results) {
      const mfu = (img) => ((img / base.batch) * flops) / rate;
      console.log(
        `  MFU ${row.variant.padEnd(18)} residual ${(100 * mfu(row.residualMedian)).toFixed(1)}%${row.torchMedian ? `  torch ${(100 * mfu(row.torchMedian)).toFixed(1)}%` : ''}`,
      );
    }
  }
  py?.close();
  const jsonOut = opt('json', null);
  if (jsonOut)
    fs.writeFileSync(
      jsonOut,
      JSON.stringify({ gpu, base, steps, trials, torch: info, matmulFlops: rate, flopsPerStep: flops, results }, null, 2),
    );
  // ratios last
  console.log('ratios residual/PyTorch (images/s; above 1: residual is faster):');
  for (const row of results)
    if (row.torchMedian) console.log(`  ${row.variant.padEnd(18)} ${(row.residualMedian / row.torchMedian).toFixed(2)}x`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
