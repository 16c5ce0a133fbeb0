// The residual side of scripts/bench/bench.mjs: the training step (the same work as TrainStep in
// bench.py), the tiny-op cases, their timers, and the memory child run.
import path from 'node:path';
import { peakRssKB } from './machine.mjs';
import { root } from './options.mjs';

export const r = await import(path.join(root, 'dist', 'index.js'));

// ------------------------------------------------------------------------------ residual workloads
/** One training step, the same work as TrainStep in bench.py. */
export function makeStep(c) {
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
  const y = r.tensor(
    Array.from({ length: c.batch }, (_, i) => i % classes),
    { dtype: 'int64', device: c.device },
  );
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

export function tinyCases(dev) {
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
export const TINY_LABEL = {
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

export function timeOp(fn, dev, minMs) {
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

export function matmulTflops(dev, n, dtype, reps) {
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

// ------------------------------------------------------------------------------ memory child mode
// `bench.mjs --child-mem '<json>'`: a fresh process that runs the training steps and prints its peaks.
export function childMem(c) {
  r.setNumThreads(c.threads);
  const base = process.memoryUsage.rss() / 1024;
  const s = makeStep(c);
  const samples = [];
  for (let i = 0; i < c.steps; i++) {
    s.step();
    if (c.sampleEvery && (i + 1) % c.sampleEvery === 0) samples.push([i + 1, Math.round(process.memoryUsage.rss() / 1024)]);
  }
  if (c.device !== 'cpu') r.cuda.synchronize();
  const out = {
    baselineRssKB: Math.round(base),
    peakRssKB: peakRssKB(),
    finalRssKB: Math.round(process.memoryUsage.rss() / 1024),
    samples,
    tensors: r.memory().tensors,
  };
  if (c.device !== 'cpu') out.peakCudaBytes = r.cuda.memoryStats(0).peakAllocatedBytes;
  console.log(JSON.stringify(out));
}
