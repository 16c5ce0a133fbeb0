// CPU memory caching (setCpuMemoryCaching) and the CPU training defaults that use it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { Trainer } from '../../lib/train/index.js';

afterEach(() => {
  r.setCpuMemoryCaching(false);
});

describe('setCpuMemoryCaching', () => {
  it('returns the previous setting, and getCpuMemoryCaching reports it', () => {
    expect(r.setCpuMemoryCaching(false)).toBe(false);
    expect(r.getCpuMemoryCaching()).toBe(false);
    expect(r.setCpuMemoryCaching(true)).toBe(false);
    expect(r.getCpuMemoryCaching()).toBe(true);
    expect(r.setCpuMemoryCaching(true)).toBe(true);
    expect(r.setCpuMemoryCaching(false)).toBe(true);
    expect(r.getCpuMemoryCaching()).toBe(false);
  });

  it('refuses a non-boolean, naming the argument', () => {
    expect(() => r.setCpuMemoryCaching(1 as unknown as boolean)).toThrow(/enabled/);
    expect(() => r.setCpuMemoryCaching(undefined as unknown as boolean)).toThrow(/enabled/);
    expect(r.getCpuMemoryCaching()).toBe(false);
  });

  it('leaves tensors, dispose and the memory counters as they are', () => {
    const base = r.memory();
    r.setCpuMemoryCaching(true);
    expect(r.memory()).toEqual(base);
    const a = r.randn([256, 1024]); // 1 MiB: a heap block under caching, an mmap without it
    const b = a.mul(2);
    expect(r.memory().tensors).toBe(base.tensors + 2);
    expect(r.memory().bytes.cpu).toBe(base.bytes.cpu + 2 * 256 * 1024 * 4);
    const sum = r.scope(() => b.sub(a).sub(a).abs().max().item());
    expect(sum).toBe(0);
    a.dispose();
    b.dispose();
    expect(() => a.add(1)).toThrow(/disposed/);
    expect(r.memory()).toEqual(base);
    r.setCpuMemoryCaching(false);
    expect(r.memory()).toEqual(base);
  });

  it('resident memory does not grow over many training steps with caching on', () => {
    // With caching on, freed memory stays mapped: RSS rises to the step's peak and then must stay
    // there, since every step allocates the same sizes again. A leak of even 1% of the step's working
    // set per step would add half of it over the 50 steps measured; the bound is that half.
    r.setCpuMemoryCaching(true);
    // one intra-op thread: OpenMP's spin-waiting makes a loaded machine's steps many times slower
    const threads = r.getNumThreads();
    r.setNumThreads(1);
    r.manualSeed(0);
    const model = r.createModel('resnet20', { numClasses: 10 });
    model.train();
    const x = r.randn([8, 3, 32, 32]);
    const y = r.tensor(
      Array.from({ length: 8 }, (_, i) => i % 10),
      { dtype: 'int64' },
    );
    const opt = new r.optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    const step = () =>
      r.scope(() => {
        const loss = r.crossEntropy(model.call(x), y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
      });
    const rss0 = process.memoryUsage().rss;
    const live0 = r.memory();
    for (let i = 0; i < 10; i++) step();
    const rss10 = process.memoryUsage().rss;
    for (let i = 0; i < 50; i++) step();
    const rss60 = process.memoryUsage().rss;
    // the step leaves no tensors behind (momentum buffers and grads were made in the first step)
    const after10 = r.memory();
    step();
    expect(r.memory()).toEqual(after10);
    expect(after10.tensors).toBeGreaterThanOrEqual(live0.tensors);
    const workingSet = Math.max(rss10 - rss0, 1 << 20);
    expect(rss60 - rss10).toBeLessThan(workingSet / 2);
    opt.zeroGrad();
    model.dispose();
    x.dispose();
    y.dispose();
    r.setNumThreads(threads);
  });
});

describe('CPU training defaults', () => {
  const small = (out: string, extra: Record<string, unknown> = {}) => ({
    model: 'resnet20',
    data: 'synthetic' as const,
    syntheticTrain: 32,
    syntheticTest: 16,
    batchSize: 16,
    epochs: 1,
    limitTrainBatches: 1,
    limitTestBatches: 1,
    workers: 1,
    device: 'cpu' as const,
    augment: false,
    out,
    ...extra,
  });
  const conv = (t: Trainer) => t.model.parameters().find((p) => p.ndim === 4 && p.shape[1] > 1)!;

  it('on the CPU: channels-last weights and CPU memory caching during fit(), restored after; config.json records both', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cpudef-'));
    const t = new Trainer(small(out));
    try {
      expect(t.cfg.channelsLast).toBe(true);
      expect(t.cfg.cpuMemoryCaching).toBe(true);
      const w = conv(t);
      expect(w.isContiguous('channelsLast') && !w.isContiguous()).toBe(true);
      const seen: boolean[] = [];
      expect(r.getCpuMemoryCaching()).toBe(false);
      await t.fit((p) => {
        if (p.type === 'step' || p.type === 'epoch') seen.push(r.getCpuMemoryCaching());
      });
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((s) => s)).toBe(true);
      expect(r.getCpuMemoryCaching()).toBe(false);
      const saved = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(saved).toMatchObject({ channelsLast: true, cpuMemoryCaching: true });
    } finally {
      t.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('both can be turned off', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cpudef-'));
    const t = new Trainer(small(out, { channelsLast: false, cpuMemoryCaching: false }));
    try {
      expect(t.cfg.channelsLast).toBe(false);
      const w = conv(t);
      expect(w.isContiguous()).toBe(true);
      const seen: boolean[] = [];
      await t.fit((p) => {
        if (p.type === 'step' || p.type === 'epoch') seen.push(r.getCpuMemoryCaching());
      });
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.some((s) => s)).toBe(false);
    } finally {
      t.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('a non-boolean setting is a TypeError naming the setting', () => {
    expect(() => new Trainer(small(os.tmpdir(), { cpuMemoryCaching: 'yes' }))).toThrow(/^cpuMemoryCaching must be true or false, got yes$/);
    expect(() => new Trainer(small(os.tmpdir(), { channelsLast: 1 }))).toThrow(/^channelsLast must be true or false, got 1$/);
  });
});
