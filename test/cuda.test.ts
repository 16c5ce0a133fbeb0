// CUDA: runs when CUDA is available or RESIDUAL_TEST_CUDA=1 (then it must not skip); the CPU twin of
// each check runs everywhere.
import { describe, expect, it } from 'vitest';
import * as r from '../lib/index.js';
import { Adam } from '../lib/optim/index.js';
import { cudaWanted, expectClose } from './helpers.js';

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
