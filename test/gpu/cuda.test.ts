// CUDA: runs when CUDA is available or RESIDUAL_TEST_CUDA=1 (then it must not skip); the CPU twin of
// each check runs everywhere.
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeviceError, DisposedTensorError, ShapeError } from '../../lib/core/errors.js';
import { DataLoader } from '../../lib/data/loader.js';
import { disposeDataset, syntheticImageDataset } from '../../lib/data/dataset.js';
import { createModel } from '../../lib/models/index.js';
import type { Module } from '../../lib/nn/module.js';
import { Adam, AdamW, SGD, type Optimizer } from '../../lib/optim/index.js';
import {
  CudaGraph,
  Trainer,
  captureTrainStep,
  createRunModel,
  cudnnBenchmark,
  isCapturing,
  setFusedOptimizer,
} from '../../lib/train/index.js';
import { cudaWanted, expectClose } from '../support/helpers.js';

describe.runIf(cudaWanted)('CUDA', () => {
  it('is available and reports devices', () => {
    expect(r.cuda.isAvailable()).toBe(true);
    expect(r.cuda.deviceCount()).toBeGreaterThan(0);
    const d = r.cuda.devices()[0];
    expect(d.totalMemory).toBeGreaterThan(1e9);
    expect(r.buildInfo().variant).toBe('cuda');
  });
  it('moves tensors and computes the same conv2d/batchNorm forward and backward as the CPU', () => {
    r.manualSeed(3);
    const x = r.randn([4, 3, 16, 16]);
    const w = r.randn([8, 3, 3, 3]);
    const run = (dev: r.Device) => {
      // detach(): on the CPU to() returns the tensor itself, which must not become a grad leaf of x
      const xd = x.to(dev).detach().requiresGrad_(true);
      const wd = w.to(dev).detach().requiresGrad_(true);
      const y = r.batchNorm(r.conv2d(xd, wd, null, { padding: 1, stride: 2 }), null, null, { training: true });
      const loss = r.relu(y).pow(2).mean();
      loss.backward();
      return { loss: loss.cpu(), gx: xd.grad!.cpu(), gw: wd.grad!.cpu() };
    };
    const c = run('cpu');
    const g = run('cuda');
    expectClose(g.loss, c.loss, { atol: 1e-4, rtol: 1e-3 });
    expectClose(g.gx, c.gx, { atol: 1e-4, rtol: 1e-3 });
    expectClose(g.gw, c.gw, { atol: 1e-3, rtol: 1e-3 });
  });
  it('optimizer steps on CUDA match the CPU', () => {
    const p0 = r.randn([64]);
    const g0 = r.randn([64]);
    const step = (dev: r.Device) => {
      const p = p0.to(dev).requiresGrad_(true);
      const o = new Adam([p], { lr: 0.01 });
      for (let i = 0; i < 3; i++) {
        p.grad = g0.to(dev);
        o.step();
      }
      return p.detach().cpu();
    };
    expectClose(step('cuda'), step('cpu'), { atol: 1e-6, rtol: 1e-5 });
  });
  it('memory counters and allocator stats per device', () => {
    r.cuda.synchronize();
    const before = r.memory().bytes['cuda:0'] ?? 0;
    const t = r.zeros([1024, 1024], { device: 'cuda' });
    expect((r.memory().bytes['cuda:0'] ?? 0) - before).toBe(4 * 1024 * 1024);
    const s = r.cuda.memoryStats(0);
    expect(s.allocatedBytes).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    t.dispose();
    r.cuda.emptyCache();
    expect(r.cuda.memoryStats(0).reservedBytes).toBeLessThanOrEqual(s.reservedBytes!);
  });
  it('autocast runs conv2d in bfloat16', () => {
    const x = r.randn([2, 3, 8, 8], { device: 'cuda' });
    const w = r.randn([4, 3, 3, 3], { device: 'cuda' });
    const y = r.autocast('cuda', 'bfloat16', () => r.conv2d(x, w));
    expect(y.dtype).toBe('bfloat16');
  });
});

describe('CUDA absent', () => {
  it.skipIf(cudaWanted)('reports unavailable and errors clearly on CUDA tensors', () => {
    expect(r.cuda.isAvailable()).toBe(false);
    expect(r.cuda.deviceCount()).toBe(0);
    expect(() => r.zeros([2], { device: 'cuda' })).toThrow(/zeros: .*(CUDA|cuda)/);
    expect(() => r.cuda.synchronize()).toThrow(/CUDA is not available/);
    expect(r.cuda.memoryStats()).toEqual({});
  });
  it('autocast regions nest and restore the outer dtype', () => {
    const x = r.randn([1, 3, 8, 8]);
    const w = r.randn([4, 3, 3, 3]);
    const dtypes = r.autocast('cpu', 'bfloat16', () => {
      const inner = r.autocast('cpu', 'float16', () => r.conv2d(x, w).dtype);
      return [inner, r.conv2d(x, w).dtype];
    });
    expect(dtypes).toEqual(['float16', 'bfloat16']);
    expect(r.conv2d(x, w).dtype).toBe('float32');
  });
  it('CPU autocast runs conv2d in bfloat16 (the CPU twin of the CUDA check)', () => {
    const y = r.autocast('cpu', 'bfloat16', () => r.conv2d(r.randn([1, 3, 8, 8]), r.randn([4, 3, 3, 3])));
    expect(y.dtype).toBe('bfloat16');
    expect(r.conv2d(r.randn([1, 3, 8, 8]), r.randn([4, 3, 3, 3])).dtype).toBe('float32');
  });
});

// CUDA graphs (lib/train/graphs.ts, native/graphs.cpp) and the fused optimizer kernels. The error paths
// that need no GPU are in test/gpu/cuda-graphs.test.ts.
describe.runIf(cudaWanted)('CUDA graphs and fused optimizers', () => {
  // Tolerances: float32 training steps whose only difference is summation order (cuDNN's backward
  // kernels accumulate with atomics; the fused optimizer keeps lr as float32): each step's loss agrees to
  // a few float32 ulps times the reduction depth; over a handful of steps with lr <= 0.1 the difference
  // stays below 1e-4 absolute on a loss of ~2.3 (rtol 1e-3 leaves a margin of 10x).
  const LOSS_TOL = { atol: 1e-4, rtol: 1e-3 };

  it('a captured graph replays its kernels on new data in the static input; replay after dispose is refused', () => {
    const x = r.zeros([1000], { device: 'cuda' });
    const y = r.zeros([1000], { device: 'cuda' });
    const g = new CudaGraph('cuda');
    expect(g.state).toBe('not captured yet');
    expect(() => g.replay()).toThrow(/capture it first/);
    g.warmup(() => y.copy_(x.mul(2).add(1)));
    g.capture(() => {
      expect(isCapturing()).toBe(true);
      y.copy_(x.mul(2).add(1));
    });
    expect(isCapturing()).toBe(false);
    expect(g.state).toBe('captured');
    g.keep([x, y]);
    for (const v of [3, -0.5, 7]) {
      x.fill_(v);
      g.replay();
      expect(y.cpu().toArray()).toEqual(new Array(1000).fill(2 * v + 1));
    }
    expect(g.replays).toBe(3);
    expect(() => g.capture(() => {})).toThrow(/captured once/);
    g.dispose();
    g.dispose();
    expect(g.state).toBe('disposed');
    expect(() => g.replay()).toThrow(DisposedTensorError);
    // the kept tensors stay usable from JS
    expect((y.cpu().toArray() as number[])[0]).toBe(15);
  });

  it('fused SGD/Adam/AdamW kernels match the foreach path on CUDA (state and step counts too)', () => {
    r.manualSeed(11);
    const p0 = r.randn([257]).cuda();
    const p1 = r.randn([16, 3, 3, 3]).cuda();
    const grads = Array.from({ length: 4 }, () => [r.randn([257]).cuda(), r.randn([16, 3, 3, 3]).cuda()]);
    const run = (make: (ps: r.Tensor[]) => Optimizer, fused: boolean) => {
      const ps = [p0.clone().requiresGrad_(true), p1.clone().requiresGrad_(true)];
      const o = make(ps);
      setFusedOptimizer(o, fused);
      for (const [ga, gb] of grads) {
        ps[0].grad = ga.clone();
        ps[1].grad = gb.clone();
        o.step();
        o.paramGroups[0].lr *= 0.9; // a schedule
      }
      const sd = o.stateDict();
      return { ps: ps.map((p) => p.detach().cpu()), steps: Object.values(sd.state).map((s) => s.step ?? 0) };
    };
    const makers: [string, (ps: r.Tensor[]) => Optimizer][] = [
      ['sgd nesterov wd', (ps) => new SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4 })],
      ['sgd dampening', (ps) => new SGD(ps, { lr: 0.1, momentum: 0.8, dampening: 0.1 })],
      ['sgd plain', (ps) => new SGD(ps, { lr: 0.1 })],
      ['adam amsgrad', (ps) => new Adam(ps, { lr: 0.01, weightDecay: 1e-2, amsgrad: true })],
      ['adamw', (ps) => new AdamW(ps, { lr: 0.01 })],
    ];
    for (const [name, make] of makers) {
      const f = run(make, true);
      const e = run(make, false);
      // float32 math either way; the fused kernels compute the bias corrections in float32
      f.ps.forEach((p, i) => expectClose(p, e.ps[i], { atol: 1e-6, rtol: 1e-5, what: `${name} param ${i}` }));
      expect(f.steps, name).toEqual(e.steps);
    }
  });

  // The same small ResNet trained N steps eagerly and with the captured step, from the same weights on
  // the same batches, with a changing lr: the losses agree step by step.
  const trainBoth = (opts: { optimizer: 'sgd' | 'adamw'; amp?: boolean; channelsLast?: boolean }) => {
    const prevBench = cudnnBenchmark(false);
    r.manualSeed(5);
    const init = createModel('resnet20', { numClasses: 10, inChannels: 3 });
    const weights = init.stateDict();
    const batches = Array.from({ length: 10 }, () => {
      const x = r.randn([32, 3, 32, 32]).cuda();
      return { x: opts.channelsLast ? x.contiguous('channelsLast') : x, y: r.randint(0, 10, [32]).cuda() };
    });
    const lrAt = (i: number) => 0.05 * (1 - i / 20);
    const make = (): { model: Module; opt: Optimizer } => {
      // as the trainer builds it: on the GPU, conv weights channels-last when asked; then the same weights
      const model = createRunModel(
        { model: 'resnet20', channelsLast: !!opts.channelsLast },
        { classes: [...'0123456789'], channels: 3 },
        'cuda',
      );
      model.loadStateDict(weights);
      if (opts.channelsLast) expect(model.parameters()[0].isContiguous('channelsLast')).toBe(true);
      const params = model.parameters();
      const opt =
        opts.optimizer === 'sgd'
          ? new SGD(params, { lr: lrAt(0), momentum: 0.9, nesterov: true, weightDecay: 5e-4 })
          : new AdamW(params, { lr: lrAt(0) / 10 });
      return { model, opt };
    };
    const forwardOf = (model: Module) => (x: r.Tensor, y: r.Tensor) => {
      const logits = model.call(x);
      return { logits, loss: r.crossEntropy(logits, y) };
    };
    // eager
    const e = make();
    const eager: number[] = [];
    batches.forEach(({ x, y }, i) => {
      e.opt.paramGroups[0].lr = lrAt(i) / (opts.optimizer === 'sgd' ? 1 : 10);
      r.scope(() => {
        e.model.train();
        e.opt.zeroGrad(false);
        const { loss } = opts.amp ? r.autocast('cuda', 'bfloat16', () => forwardOf(e.model)(x, y)) : forwardOf(e.model)(x, y);
        loss.backward();
        e.opt.step();
        eager.push(loss.item() as number);
      });
    });
    // graphed
    const g = make();
    const step = captureTrainStep({
      model: g.model,
      optimizer: g.opt,
      forward: forwardOf(g.model),
      warmup: 3,
      amp: opts.amp,
      ampDtype: 'bfloat16',
    });
    const graphed: number[] = [];
    batches.forEach(({ x, y }, i) => {
      g.opt.paramGroups[0].lr = lrAt(i) / (opts.optimizer === 'sgd' ? 1 : 10);
      const { loss, correct } = step.step(x, y);
      graphed.push(loss.item() as number);
      expect(correct.item() as number).toBeGreaterThanOrEqual(0);
      loss.dispose();
      correct.dispose();
    });
    expect(step.phase).toBe('captured');
    expect(step.graph.replays).toBe(batches.length - 3);
    const we = e.model.parameters().map((p) => p.detach().cpu());
    const wg = g.model.parameters().map((p) => p.detach().cpu());
    cudnnBenchmark(prevBench);
    return { eager, graphed, we, wg, step, batches };
  };

  it('ResNet-20, SGD (Nesterov, weight decay) with a changing lr: captured-step losses match the eager ones', () => {
    const { eager, graphed, we, wg, step, batches } = trainBoth({ optimizer: 'sgd' });
    expect(eager.every(Number.isFinite)).toBe(true);
    expectClose(r.tensor(graphed), r.tensor(eager), { ...LOSS_TOL, what: 'losses' });
    // and the weights after 10 steps
    wg.forEach((w, i) => expectClose(w, we[i], { atol: 1e-3, rtol: 1e-2, what: `weight ${i}` }));
    // error paths on a live captured step
    expect(() => step.step(batches[0].x.cpu(), batches[0].y)).toThrow(DeviceError);
    expect(() => step.step(batches[0].x.narrow(0, 0, 16), batches[0].y.narrow(0, 0, 16))).toThrow(ShapeError);
    step.dispose();
    expect(() => step.step(batches[0].x, batches[0].y)).toThrow(DisposedTensorError);
    expect(() => step.graph.replay()).toThrow(DisposedTensorError);
  });

  it('AdamW with bf16 autocast and channels-last: captured-step losses match the eager ones', () => {
    const { eager, graphed, step } = trainBoth({ optimizer: 'adamw', amp: true, channelsLast: true });
    step.dispose();
    // bfloat16 forward: the same kernels run either way, so the agreement is still float32-level
    // summation-order noise amplified through bf16 rounding of activations (8 bits): 1e-2 relative
    expectClose(r.tensor(graphed), r.tensor(eager), { atol: 1e-2, rtol: 1e-2, what: 'bf16 losses' });
  });

  it('the Trainer with cudaGraphs trains like the eager Trainer (same seed, same batches)', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cg-'));
    try {
      const cfg = {
        model: 'resnet20',
        data: 'synthetic' as const,
        syntheticTrain: 512,
        syntheticTest: 64,
        batchSize: 64,
        epochs: 1,
        device: 'cuda' as const,
        augment: false,
        logEvery: 1,
        limitTrainBatches: 8,
        cudnnBenchmark: false,
      };
      const a = new Trainer({ ...cfg, out: path.join(tmp, 'a') });
      await a.fit();
      const b = new Trainer({ ...cfg, out: path.join(tmp, 'b'), cudaGraphs: true });
      await b.fit();
      const la = a.history.steps.map((s) => s.loss);
      const lb = b.history.steps.map((s) => s.loss);
      expect(lb.length).toBe(8);
      expectClose(r.tensor(lb), r.tensor(la), { ...LOSS_TOL, what: 'trainer losses' });
      expect(b.history.epochs[0].testAcc!).toBeCloseTo(a.history.epochs[0].testAcc!, 1);
      a.dispose();
      b.dispose();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('the data loader to CUDA (pinned, copied on a side stream) gives the same batches as to the CPU', async () => {
    const ds = syntheticImageDataset({ n: 96, channels: 3, size: 16, classes: 10, seed: 4 });
    const opts = {
      batchSize: 32,
      shuffle: true,
      seed: 9,
      randomCrop: { padding: 2 },
      hflip: true,
      workers: 3,
      prefetch: 3,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    };
    const cpu = new DataLoader(ds, { ...opts, device: 'cpu' });
    const gpu = new DataLoader(ds, { ...opts, device: 'cuda', channelsLast: true });
    const a: { x: r.Tensor; y: r.Tensor }[] = [];
    for await (const b of cpu) a.push(b);
    let i = 0;
    for await (const b of gpu) {
      expect(b.x.device).toBe('cuda:0');
      expect(b.x.isContiguous('channelsLast')).toBe(true);
      // the same floats: the copy is exact
      expect(b.x.cpu().contiguous().toArray()).toEqual(a[i].x.toArray());
      expect(b.y.cpu().toArray()).toEqual(a[i].y.toArray());
      // the batch is used on the default stream right away (the copy finished before it was handed out)
      // (float32 sums in two summation orders: within 1e-5 of the sum of magnitudes)
      const tol = 1e-5 * (a[i].x.abs().sum().item() as number);
      expect(Math.abs((b.x.sum().item() as number) - (a[i].x.sum().item() as number))).toBeLessThan(tol);
      i++;
    }
    expect(i).toBe(3);
    cpu.close();
    gpu.close();
    disposeDataset(ds);
  });

  it('a step that reads a value on the host during capture fails with an error, not a crash; CUDA stays usable', () => {
    const x = r.ones([8], { device: 'cuda' });
    const g = new CudaGraph('cuda');
    g.warmup(() => x.sum());
    expect(() => g.capture(() => x.sum().item())).toThrow();
    expect(g.state).toBe('disposed');
    expect(isCapturing()).toBe(false);
    expect(x.sum().item()).toBe(8);
    // the same inside a captured training step: a clear error, the step disposed
    const lin = createModel('resnet20', { numClasses: 10, inChannels: 3 }).to('cuda');
    const opt = new SGD(lin.parameters(), { lr: 0.1, momentum: 0.9 });
    const step = captureTrainStep({
      model: lin,
      optimizer: opt,
      warmup: 1,
      forward: (bx, by) => {
        const logits = lin.call(bx);
        const loss = r.crossEntropy(logits, by);
        if (!Number.isFinite(loss.item() as number)) throw new Error('unreachable');
        return { logits, loss };
      },
    });
    const bx = r.randn([4, 3, 32, 32], { device: 'cuda' });
    const by = r.randint(0, 10, [4], { device: 'cuda' });
    const w = step.step(bx, by); // warm-up: eager, item() is fine
    expect(Number.isFinite(w.loss.item() as number)).toBe(true);
    expect(() => step.step(bx, by)).toThrow(/capturing the training step in a CUDA graph failed/);
    expect(step.phase).toBe('disposed');
    expect(() => step.step(bx, by)).toThrow(DisposedTensorError);
    expect(r.crossEntropy(lin.call(bx), by).item()).toBeGreaterThan(0);
  });
});
