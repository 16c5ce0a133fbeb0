// CUDA graphs: every error path that can be reached without a GPU (the CUDA checks of capture and
// replay are in test/gpu/cuda.test.ts). Runs everywhere; the "no CUDA" cases skip where CUDA is present.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as r from '../../lib/index.js';
import { main } from '../../lib/cli/main.js';
import { DeviceError, DisposedTensorError, ShapeError } from '../../lib/core/errors.js';
import { native } from '../../lib/addon/binding.js';
import { Linear } from '../../lib/nn/index.js';
import { GradScaler, SGD } from '../../lib/optim/index.js';
import {
  CudaGraph,
  GraphedTrainStep,
  StaticBatch,
  Trainer,
  captureTrainStep,
  cudaGraphsIncompatibility,
  cudnnBenchmark,
  isCapturing,
  setFusedOptimizer,
  syncOptimizerLr,
  validateConfig,
  DEFAULT_CONFIG,
} from '../../lib/train/index.js';
import { cudaWanted } from '../support/helpers.js';

const tinyStep = (o: Partial<Parameters<typeof captureTrainStep>[0]> = {}) => {
  const lin = new Linear(4, 3);
  return {
    model: lin,
    optimizer: new SGD(lin.parameters(), { lr: 0.1 }),
    forward: (x: r.Tensor, y: r.Tensor) => {
      const logits = lin.call(x);
      return { logits, loss: r.crossEntropy(logits, y) };
    },
    ...o,
  };
};

describe.skipIf(cudaWanted)('CUDA graphs without CUDA', () => {
  it('the native functions throw a DeviceError naming the missing CUDA build/device', () => {
    for (const call of [
      () => native.cudaGraphCreate(0),
      () => native.cudaGraphReplay({}),
      () => native.cudaGraphCaptureBegin({}),
      () => native.cudaGraphDispose({}),
    ]) {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DeviceError);
      expect((err as Error).message).toMatch(/CUDA graphs need a CUDA build\/device/);
    }
  });
  it('CudaGraph and captureTrainStep refuse to start', () => {
    expect(() => new CudaGraph('cuda')).toThrow(DeviceError);
    expect(() => new CudaGraph('cuda')).toThrow(/CUDA graphs need a CUDA build\/device/);
    // the model is on the CPU and there is no CUDA
    expect(() => captureTrainStep(tinyStep())).toThrow(DeviceError);
    expect(() => captureTrainStep(tinyStep())).toThrow(/CUDA graphs need a CUDA build\/device/);
  });
  it('no capture is ever in progress; cuDNN benchmark is a kept setting', () => {
    expect(isCapturing()).toBe(false);
    const prev = cudnnBenchmark(true);
    expect(cudnnBenchmark()).toBe(true);
    expect(cudnnBenchmark(false)).toBe(true);
    expect(cudnnBenchmark()).toBe(false);
    cudnnBenchmark(prev);
  });
});

describe('CUDA graphs: error paths on any machine', () => {
  it('a CPU device is refused by name', () => {
    expect(() => new CudaGraph('cpu')).toThrow(DeviceError);
    expect(() => new CudaGraph('cpu')).toThrow(/CUDA graphs need a CUDA device, got 'cpu'/);
  });
  it('incompatible options are refused before anything runs', () => {
    expect(() => captureTrainStep(tinyStep({ amp: true, ampDtype: 'float16' }))).toThrow(/float16 loss scaling/);
    expect(() => captureTrainStep(tinyStep({ clipGradNorm: 1 }))).toThrow(/cannot capture clipGradNorm/);
    expect(() => captureTrainStep(tinyStep({ scaler: new GradScaler() }))).toThrow(/GradScaler/);
    expect(() => captureTrainStep(tinyStep({ warmup: 0 }))).toThrow(RangeError);
    expect(() => captureTrainStep(tinyStep({ warmup: 1.5 }))).toThrow(/warmup must be an integer from 1 to 1000, got 1.5/);
    expect(cudaGraphsIncompatibility({ device: 'cuda:1', amp: true, ampDtype: 'bfloat16' })).toBeNull();
    expect(cudaGraphsIncompatibility({ distributed: true })).toMatch(/data-parallel/);
  });
  it('static buffers: CPU tensors into CUDA buffers, wrong shapes, dtypes, memory format, use after dispose', () => {
    const cudaBuf = new StaticBatch('cuda');
    expect(() => cudaBuf.fill(r.zeros([2, 3]), r.zeros([2], { dtype: 'int64' }))).toThrow(DeviceError);
    expect(() => cudaBuf.fill(r.zeros([2, 3]), r.zeros([2], { dtype: 'int64' }))).toThrow(/x is on cpu, the static buffers on cuda/);

    const b = new StaticBatch('cpu');
    const x0 = r.randn([4, 3, 5, 5]);
    const y0 = r.tensor([0, 1, 2, 1], { dtype: 'int64' });
    const s = b.fill(x0, y0);
    expect(s.x.toArray()).toEqual(x0.toArray());
    expect(s.y.toArray()).toEqual([0, 1, 2, 1]);
    // the same buffers receive the next batch
    const x1 = r.randn([4, 3, 5, 5]);
    const s1 = b.fill(x1, r.tensor([2, 2, 0, 0], { dtype: 'int64' }));
    expect(s1.x).toBe(s.x);
    expect(s1.x.toArray()).toEqual(x1.toArray());
    expect(s1.y.toArray()).toEqual([2, 2, 0, 0]);
    // a partial last batch, another dtype, another memory format
    expect(() => b.fill(r.randn([3, 3, 5, 5]), r.tensor([0, 1, 2], { dtype: 'int64' }))).toThrow(ShapeError);
    expect(() => b.fill(r.randn([3, 3, 5, 5]), y0)).toThrow(/x is \[3, 3, 5, 5\] float32, the static buffer \[4, 3, 5, 5\] float32/);
    expect(() => b.fill(x0.to('float64'), y0)).toThrow(/float64, the static buffer \[4, 3, 5, 5\] float32/);
    expect(() => b.fill(x0, y0.to('int32'))).toThrow(/y is \[4\] int32/);
    expect(() => b.fill(x0.contiguous('channelsLast'), y0)).toThrow(/\(channels-last\), the static buffer/);
    expect(() => b.fill(x0, 3 as unknown as r.Tensor)).toThrow(TypeError);
    b.dispose();
    expect(() => b.fill(x0, y0)).toThrow(DisposedTensorError);
    expect(() => b.fill(x0, y0)).toThrow(/disposed/);
  });
  it("static buffers allocated inside a caller's scope() outlive it (the captured step owns them)", () => {
    const b = new StaticBatch('cpu');
    const x0 = r.randn([2, 3]);
    const y0 = r.tensor([1, 0], { dtype: 'int64' });
    // the first fill allocates the buffers inside a scope that does not return them (a training loop's)
    r.scope(() => {
      b.fill(x0, y0);
    });
    const s0 = { x: b.x!, y: b.y! };
    expect(s0.x.disposed).toBe(false);
    const x1 = r.randn([2, 3]);
    const s1 = r.scope(() => b.fill(x1, r.tensor([0, 2], { dtype: 'int64' })));
    expect(s1.x).toBe(s0.x);
    expect(s1.x.toArray()).toEqual(x1.toArray());
    expect(s1.y.toArray()).toEqual([0, 2]);
    b.dispose();
    expect(s0.x.disposed).toBe(true);
    for (const t of [x0, y0, x1]) t.dispose();
  });
  it('a dispose() the native side refuses leaves the CudaGraph live (not marked disposed over a graph that still exists)', () => {
    // a live-looking object whose native handle the CPU build refuses (on CUDA: a graph still capturing)
    const g = Object.assign(Object.create(CudaGraph.prototype) as object, { disposed: false, g: {} }) as unknown as CudaGraph;
    expect(() => g.dispose()).toThrow();
    expect((g as unknown as { disposed: boolean }).disposed).toBe(false);
  });
  it('replay and step after dispose: the JS-side guards refuse before any native call (the native side is checked on the GPU)', () => {
    // objects in their disposed state, as dispose() leaves them (no CUDA is needed to reach the guards)
    const g = Object.assign(Object.create(CudaGraph.prototype) as object, { disposed: true }) as unknown as CudaGraph;
    expect(() => g.replay()).toThrow(DisposedTensorError);
    expect(() => g.replay()).toThrow(/CudaGraph.replay: the CUDA graph was disposed/);
    expect(() => g.capture(() => 1)).toThrow(/CudaGraph.capture: the CUDA graph was disposed/);
    expect(() => g.warmup(() => 1)).toThrow(DisposedTensorError);
    expect(g.state).toBe('disposed');
    g.dispose(); // idempotent
    const s = Object.assign(Object.create(GraphedTrainStep.prototype) as object, { disposed: true }) as unknown as GraphedTrainStep;
    expect(() => s.step(r.zeros([1]), r.zeros([1]))).toThrow(/GraphedTrainStep.step: the captured training step was disposed/);
    expect(s.phase).toBe('disposed');
  });
  it('the optimizer controls: lr sync validates its input; CPU groups keep the foreach path', () => {
    const p = r.randn([5]).requiresGrad_(true);
    const o = new SGD([p], { lr: 0.1, momentum: 0.9 });
    expect(() => native.optimSyncLr((o as unknown as { native: unknown }).native, [0.1, 0.2])).toThrow(
      /lrs has 2 entries, the optimizer has 1 groups/,
    );
    expect(() => native.optimSyncLr((o as unknown as { native: unknown }).native, [NaN])).toThrow(RangeError);
    expect(() => native.optimSyncLr((o as unknown as { native: unknown }).native, [-1])).toThrow(
      /lrs\[0\] must be a finite number >= 0, got [^,]*-1/,
    );
    syncOptimizerLr(o); // CPU groups: nothing to write, no error
    expect(setFusedOptimizer(o, false)).toBe(true);
    expect(setFusedOptimizer(o, true)).toBe(false);
    // the CPU step is the foreach path, fused on or not: p - lr * g on the first step (buffer = grad)
    const p0 = p.detach().clone();
    p.grad = r.ones([5]);
    o.step();
    const want = p0.sub(0.1).toArray() as number[];
    (p.detach().toArray() as number[]).forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
    expect(() => setFusedOptimizer({} as never, true)).toThrow(/expected a residual Optimizer/);
  });
});

describe('optimizer state for captured steps', () => {
  it("loaded buffers take the parameter's layout, and a later load writes into the same buffer", () => {
    const p = r.randn([4, 3, 2, 2]).contiguous('channelsLast').requiresGrad_(true);
    const o = new SGD([p], { lr: 0.1, momentum: 0.9 });
    const groups = o.stateDict().paramGroups;
    o.loadStateDict({ state: { 0: { momentum_buffer: r.ones([4, 3, 2, 2]) } }, paramGroups: groups });
    const b = o.stateDict().state[0].momentum_buffer as r.Tensor;
    expect(b.isContiguous('channelsLast')).toBe(true);
    expect(b.sum().item()).toBe(48);
    // the same memory receives the next load (a captured graph keeps using it)
    o.loadStateDict({ state: { 0: { momentum_buffer: r.full([4, 3, 2, 2], 2) } }, paramGroups: groups });
    expect(b.sum().item()).toBe(96);
    // and the step uses it: buf = 0.9 * 2 + grad(1) = 2.8; p -= 0.1 * 2.8
    const p0 = p.detach().clone();
    p.grad = r.ones([4, 3, 2, 2]).contiguous('channelsLast');
    o.step();
    // (sums in float64: only the float32 rounding of each element remains, ~1e-7 relative)
    expect(b.to('float64').sum().item()).toBeCloseTo(48 * 2.8, 4);
    expect(p.detach().sub(p0).to('float64').sum().item()).toBeCloseTo(-48 * 0.28, 4);
  });
});

describe('Trainer and CLI: --cuda-graphs', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-graphs-'));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  it('validateConfig refuses incompatible settings and non-booleans', () => {
    const cfg = { ...DEFAULT_CONFIG, cudaGraphs: true };
    expect(() => validateConfig({ ...cfg, amp: true, ampDtype: 'float16' })).toThrow(
      /cudaGraphs: CUDA graphs cannot capture float16 loss scaling.*use ampDtype: 'bfloat16'/,
    );
    expect(() => validateConfig({ ...cfg, clipGradNorm: 1 })).toThrow(/cudaGraphs: CUDA graphs cannot capture clipGradNorm/);
    expect(() => validateConfig({ ...cfg, cudaGraphs: 'yes' as unknown as boolean })).toThrow(/cudaGraphs must be true or false, got yes/);
    expect(() => validateConfig({ ...cfg, cudnnBenchmark: 1 as unknown as boolean })).toThrow(/cudnnBenchmark must be true or false/);
    expect(() => validateConfig({ ...cfg, amp: true, ampDtype: 'bfloat16' })).not.toThrow();
  });
  it('a CPU run with cudaGraphs is refused with a DeviceError naming the device', () => {
    const make = () =>
      new Trainer({
        model: 'resnet20',
        data: 'synthetic',
        syntheticTrain: 32,
        syntheticTest: 16,
        batchSize: 16,
        device: 'cpu',
        cudaGraphs: true,
        out: tmp,
      });
    expect(make).toThrow(DeviceError);
    expect(make).toThrow(/cudaGraphs: CUDA graphs need a CUDA device \(the run is on cpu\): use device: 'cuda'/);
  });
  it('residual train --cuda-graphs errors clearly on the CPU and with incompatible options', async () => {
    const err: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
    vi.spyOn(console, 'log').mockImplementation(() => {});
    const base = ['train', '--data', 'synthetic', '--epochs', '1', '--limit-train-batches', '1', '--out', path.join(tmp, 'run')];
    expect(await main([...base, '--device', 'cpu', '--cuda-graphs'])).not.toBe(0);
    expect(err.join('\n')).toMatch(
      /--cuda-graphs: CUDA graphs need a CUDA device \(the run is on cpu\): use --device cuda on a machine with a GPU, or train without --cuda-graphs/,
    );
    err.length = 0;
    expect(await main([...base, '--cuda-graphs', '--amp', '--amp-dtype', 'float16'])).not.toBe(0);
    expect(err.join('\n')).toMatch(/float16 loss scaling.*use --amp-dtype bfloat16/);
    err.length = 0;
    expect(await main([...base, '--cuda-graphs', '--clip-grad-norm', '1'])).not.toBe(0);
    expect(err.join('\n')).toMatch(/--cuda-graphs: CUDA graphs cannot capture --clip-grad-norm/);
    expect(fs.existsSync(path.join(tmp, 'run', 'checkpoint.json'))).toBe(false);
  });
  it('--help lists --cuda-graphs and --cudnn-benchmark', async () => {
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
    expect(await main(['train', '--help'])).toBe(0);
    expect(out.join('\n')).toMatch(/--cuda-graphs/);
    expect(out.join('\n')).toMatch(/--\[no-\]cudnn-benchmark/);
  });
});
