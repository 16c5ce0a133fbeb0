// The native DataLoader: batching, seeded shuffling, augmentation, normalisation and determinism.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';
import * as r from '../../lib/index.js';
import { DataLoader } from '../../lib/data/loader.js';

function dataset(n: number, c = 1, h = 4, w = 4) {
  const px = new Uint8Array(n * c * h * w);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37 + 11) % 256;
  return {
    images: r.tensor(px, { shape: [n, c, h, w] }),
    labels: r.arange(n, undefined, 1, { dtype: 'int64' }),
  };
}

describe('DataLoader', () => {
  it('batches in order without shuffling, with a last partial batch unless dropLast', async () => {
    const ds = dataset(10);
    const dl = new DataLoader(ds, { batchSize: 4 });
    expect(dl.length).toBe(3);
    const ys: number[][] = [];
    for await (const { x, y } of dl) {
      ys.push(y.toArray() as number[]);
      expect(x.dtype).toBe('float32');
      expect(x.shape.slice(1)).toEqual([1, 4, 4]);
    }
    expect(ys).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
    ]);
    const dl2 = new DataLoader(ds, { batchSize: 4, dropLast: true });
    expect(dl2.length).toBe(2);
    expect([...dl2.iterSync()].length).toBe(2);
    dl.close();
    dl2.close();
  });

  it('normalises: (pixel / 255 - mean) / std', () => {
    const ds = dataset(2, 3, 2, 2);
    const dl = new DataLoader(ds, { batchSize: 2, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.5] });
    const [{ x }] = [...dl.iterSync()];
    const px = ds.images.to('float32').div(255);
    const mean = r.tensor([0.5, 0.4, 0.3]).reshape([1, 3, 1, 1]);
    const std = r.tensor([0.2, 0.25, 0.5]).reshape([1, 3, 1, 1]);
    expect(x.allclose(px.sub(mean).div(std), 1e-5, 1e-5)).toBe(true);
  });

  it('shuffles deterministically by (seed, epoch) and covers every sample once', () => {
    const ds = dataset(50);
    const order = (seed: number, epoch: number, workers = 1) => {
      const dl = new DataLoader(ds, { batchSize: 8, shuffle: true, seed, workers });
      dl.setEpoch(epoch);
      const out = [...dl.iterSync()].flatMap((b) => b.y.toArray() as number[]);
      dl.close();
      return out;
    };
    const a = order(1, 0);
    expect([...a].sort((p, q) => p - q)).toEqual([...Array(50).keys()]);
    expect(order(1, 0, 3)).toEqual(a);
    expect(order(1, 1)).not.toEqual(a);
    expect(order(2, 0)).not.toEqual(a);
  });

  it('augmentation (crop with padding, flip) is deterministic given the seed, whatever the threads', () => {
    const ds = dataset(16, 3, 8, 8);
    const run = (workers: number, seed = 5) => {
      const dl = new DataLoader(ds, { batchSize: 4, shuffle: true, seed, randomCrop: { padding: 2 }, hflip: true, workers, prefetch: 3 });
      const xs = [...dl.iterSync()].map((b) => b.x);
      dl.close();
      return r.cat(xs);
    };
    const a = run(1);
    expect(a.equal(run(4))).toBe(true);
    expect(a.equal(run(1, 6))).toBe(false);
    // augmentation changed something, but every output pixel is either a source pixel or padding (0)
    const plain = new DataLoader(ds, { batchSize: 16, shuffle: true, seed: 5 });
    const [{ x: p }] = [...plain.iterSync()];
    expect(a.equal(p)).toBe(false);
    const vals = new Set(Array.from(ds.images.toTypedArray() as Uint8Array));
    vals.add(0);
    for (const v of a.toTypedArray() as Float32Array) {
      const px = Math.round(v * 255);
      expect(Math.abs(v * 255 - px)).toBeLessThan(1e-3);
      expect(vals.has(px)).toBe(true);
    }
  });

  it('a flip alone mirrors each image or leaves it', () => {
    // 64 images, each flipped with p = 0.5: all or none flipped has probability 2^-63 for any seed
    const ds = dataset(64, 1, 3, 5);
    const dl = new DataLoader(ds, { batchSize: 64, hflip: true, seed: 9 });
    const [{ x }] = [...dl.iterSync()];
    const src = ds.images.to('float32').div(255);
    let flipped = 0;
    for (let i = 0; i < 64; i++) {
      const xi = x.select(0, i);
      const si = src.select(0, i);
      if (xi.allclose(si)) continue;
      expect(xi.allclose(si.flip(2))).toBe(true);
      flipped++;
    }
    expect(flipped).toBeGreaterThan(0);
    expect(flipped).toBeLessThan(64);
  });

  it('random erasing blanks one rectangle of 2%-40% of each image (to the mean), deterministically', () => {
    const n = 32;
    const images = r.full([n, 2, 10, 10], 200, { dtype: 'uint8' });
    const labels = r.zeros([n], { dtype: 'int64' });
    const run = () => {
      const dl = new DataLoader({ images, labels }, { batchSize: n, randomErasing: 1, mean: [0.2], std: [0.5], seed: 3 });
      const [{ x }] = [...dl.iterSync()];
      dl.close();
      return x;
    };
    const x = run();
    expect(x.equal(run())).toBe(true);
    const v = x.toTypedArray() as Float32Array;
    const on = (200 / 255 - 0.2) / 0.5;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 2; c++) {
        const plane = v.subarray((i * 2 + c) * 100, (i * 2 + c + 1) * 100);
        const erased = plane.filter((p) => p === 0).length;
        expect(plane.every((p) => p === 0 || Math.abs(p - on) < 1e-5)).toBe(true);
        expect(erased).toBeGreaterThanOrEqual(1);
        expect(erased).toBeLessThanOrEqual(45);
      }
    }
    expect(() => new DataLoader({ images, labels }, { batchSize: 2, randomErasing: 2 })).toThrow(
      /option 'randomErasing' must be a probability in \[0, 1\], got 2/,
    );
  });

  it('rejects bad input with clear errors', () => {
    expect(() => new DataLoader({ images: r.zeros([4, 1, 2, 2]), labels: r.zeros([4], { dtype: 'int64' }) }, { batchSize: 2 })).toThrow(
      /images must be a uint8 tensor \[N, C, H, W\], got Float/,
    );
    const ds = dataset(4);
    expect(() => new DataLoader({ images: ds.images, labels: r.zeros([3], { dtype: 'int64' }) }, { batchSize: 2 })).toThrow(
      /labels must be \[N\] with N = 4/,
    );
    expect(() => new DataLoader(ds, { batchSize: 0 })).toThrow(/batchSize must be a positive integer/);
    expect(() => new DataLoader(ds, { batchSize: 2, mean: [0.1, 0.2] })).toThrow(/mean\/std must have 1 or 1 entries/);
  });

  it('close() while a batch is awaited rejects it instead of hanging', async () => {
    const ds = dataset(64, 3, 32, 32);
    const dl = new DataLoader(ds, { batchSize: 64, prefetch: 1 });
    const it = dl[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.done).toBe(false);
    const pending = it.next(); // the only batch was taken: this one ends the epoch or waits
    dl.close();
    const outcome = await pending.then(
      () => 'resolved',
      (e: Error) => e.message,
    ); // settles either way (end of epoch, or rejected as closed), never hangs
    expect(outcome).toMatch(/^resolved$|the data loader was closed/);
    expect(() => [...dl.iterSync()]).toThrow(/used after close\(\)/);
  });

  it('terminating a worker thread that awaits the loader does not take the process down', () => {
    const lib = path.join(root, 'dist', 'index.js');
    const code = `
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`
        const r = require(${JSON.stringify(lib)});
        const images = r.zeros([20000, 3, 32, 32], { dtype: 'uint8' });
        const labels = r.zeros([20000], { dtype: 'int64' });
        const dl = new r.data.DataLoader({ images, labels }, { batchSize: 4096, workers: 1, prefetch: 1, randomCrop: { padding: 4 } });
        (async () => { for await (const b of dl) { b.x.dispose(); } })();
        require('node:worker_threads').parentPort.postMessage('started');
      \`, { eval: true });
      w.once('message', () => setTimeout(() => w.terminate().then(() => console.log('terminated')), 20));
    `;
    const res = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
    expect(res.stderr).not.toMatch(/terminate called|Aborted/);
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/terminated/);
  });
});
