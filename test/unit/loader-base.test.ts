// The one native loader base (native/loader/, lib/data/batches.ts) under both loaders: leaving an epoch
// early stops the workers and frees the batches made ahead; options are read by one set of readers
// that refuse NaN and Infinity everywhere; errors keep their classes through the Promise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { native as N } from '../../lib/addon/binding.js';
import { DataLoader, type Sampler } from '../../lib/data/loader.js';
import { StreamingDataLoader, imageFolderSource } from '../../lib/data/stream.js';
import { BadFileError } from '../../lib/core/errors.js';

let tmp = '';
let root = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-loader-base-'));
  root = path.join(tmp, 'folder');
  for (let id = 0; id < 24; id++) {
    const dir = path.join(root, `c${id % 3}`);
    fs.mkdirSync(dir, { recursive: true });
    const rgba = Buffer.alloc(16 * 12 * 4, id * 9);
    fs.writeFileSync(
      path.join(dir, `${String(id).padStart(3, '0')}.jpg`),
      Buffer.from(jpeg.encode({ data: rgba, width: 16, height: 12 }, 90).data),
    );
  }
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function memoryData(n: number) {
  const px = new Uint8Array(n * 3 * 8 * 8);
  for (let i = 0; i < px.length; i++) px[i] = (i * 31 + 7) % 256;
  return { images: r.tensor(px, { shape: [n, 3, 8, 8] }), labels: r.arange(n, undefined, 1, { dtype: 'int64' }) };
}

type State = { running: boolean; closed: boolean; held: number };
const stateOf = (dl: DataLoader | StreamingDataLoader) => N.loaderState((dl as unknown as { native: unknown }).native) as State;

/** Waits (bounded) until the workers have made `n` batches ahead. */
async function heldAtLeast(dl: DataLoader | StreamingDataLoader, n: number): Promise<number> {
  for (let i = 0; i < 600 && stateOf(dl).held < n; i++) await new Promise((res) => setTimeout(res, 50));
  return stateOf(dl).held;
}

const loaders = {
  memory: () =>
    new DataLoader(memoryData(40), {
      batchSize: 4,
      prefetch: 4,
      workers: 2,
      shuffle: true,
      seed: 3,
      randomCrop: { padding: 2 },
      hflip: true,
    }),
  stream: () =>
    new StreamingDataLoader(imageFolderSource(root), { batchSize: 2, size: 8, prefetch: 4, workers: 2, shuffle: true, seed: 3 }),
};

describe('one iteration for both loaders', () => {
  for (const [kind, make] of Object.entries(loaders)) {
    it(`${kind}: break stops the workers and frees the batches made ahead; the next epoch is whole and the same`, async () => {
      const full = make();
      const want = [...full.iterSync()].map((b) => b.y.toArray());
      full.close();

      const dl = make();
      for await (const b of dl) {
        b.x.dispose();
        expect(await heldAtLeast(dl, 3)).toBeGreaterThanOrEqual(3); // the workers made batches ahead
        break;
      }
      expect(stateOf(dl)).toEqual({ running: false, closed: false, held: 0 });
      expect(dl.epoch).toBe(0); // left early: the epoch does not advance
      for (const b of dl.iterSync()) {
        b.x.dispose();
        break;
      }
      expect(stateOf(dl)).toEqual({ running: false, closed: false, held: 0 });
      // an error thrown in the loop body leaves the same way
      await expect(
        (async () => {
          for await (const b of dl) {
            b.x.dispose();
            throw new Error('stop here');
          }
        })(),
      ).rejects.toThrow('stop here');
      expect(stateOf(dl)).toEqual({ running: false, closed: false, held: 0 });
      const got: unknown[] = [];
      for await (const b of dl) got.push(b.y.toArray());
      expect(got).toEqual(want);
      expect(dl.epoch).toBe(1);
      dl.close();
      expect(stateOf(dl)).toEqual({ running: false, closed: true, held: 0 });
      expect(() => [...dl.iterSync()]).toThrow(/used after close\(\)/);
    });
  }

  it('a sampler with fewer items than the dataset and a partial last batch reads only its items', () => {
    // (the native loader once bounded the last batch by the dataset's size, not the sampler's: it read
    // past the order and crashed)
    const ds = memoryData(10);
    const sampler: Sampler = { setEpoch() {}, indices: () => [9, 3, 5, 7, 1], numSamples: 5 };
    const dl = new DataLoader(ds, { batchSize: 4, sampler });
    expect(dl.length).toBe(2);
    expect([...dl.iterSync()].map((b) => b.y.toArray())).toEqual([[9, 3, 5, 7], [1]]);
    const bad: Sampler = { setEpoch() {}, indices: () => [1, 10], numSamples: 2 };
    expect(() => [...new DataLoader(ds, { batchSize: 4, sampler: bad }).iterSync()]).toThrow(
      /sampler index 10 is outside the dataset \(10 items\)/,
    );
    dl.close();
  });

  it('a stream error reaches the awaiting loop as a BadFileError naming the file; loaderNextSync too', async () => {
    const bad = path.join(tmp, 'bad');
    fs.cpSync(root, bad, { recursive: true });
    const broken = path.join(bad, 'c1', '004.jpg');
    fs.writeFileSync(broken, 'not an image');
    const dl = new StreamingDataLoader(imageFolderSource(bad), { batchSize: 4, size: 8, workers: 2 });
    let err: unknown;
    try {
      for await (const b of dl) b.x.dispose();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BadFileError);
    expect((err as Error).message).toBe(`loaderNext: ${broken}: not a PNG or JPEG image (unrecognised file signature)`);
    let sync: unknown;
    try {
      for (const b of dl.iterSync()) b.x.dispose();
    } catch (e) {
      sync = e;
    }
    expect(sync).toBeInstanceOf(BadFileError);
    expect((sync as Error).message).toMatch(/^loaderNextSync: .*004\.jpg: not a PNG or JPEG image/);
    dl.close();
  });
});

describe('one set of option readers', () => {
  const ds = memoryData(4);
  const mem = (o: object) => () => N.loaderCreate(ds.images._h, ds.labels._h, { batchSize: 2, ...o });
  const stream = (o: object) => () => N.streamCreate({ kind: 'folder', files: ['x.jpg'], labels: [0], ...o });
  const errorOf = (f: () => unknown): Error => {
    try {
      f();
    } catch (e) {
      return e as Error;
    }
    throw new Error('did not throw');
  };

  it('NaN and Infinity are refused for every number, in both loaders', () => {
    for (const make of [mem, stream]) {
      for (const [opts, cls, msg] of [
        [{ mean: [NaN] }, RangeError, /option 'mean' element 0 must be a finite number, got NaN/],
        [{ std: [0.5, Infinity, 1] }, RangeError, /option 'std' element 1 must be a finite number, got Infinity/],
        [{ prefetch: NaN }, RangeError, /option 'prefetch' must be a finite integer, got NaN/],
        [{ seed: Infinity }, RangeError, /option 'seed' must be a finite integer, got Infinity/],
        [{ batchSize: -Infinity }, RangeError, /option 'batchSize' must be a finite integer, got -Infinity/],
      ] as const) {
        const e = errorOf(make(opts));
        expect(e, msg.source).toBeInstanceOf(cls);
        expect(e.message).toMatch(msg);
      }
    }
    expect(errorOf(mem({ randomErasing: NaN })).message).toMatch(/^loaderCreate: option 'randomErasing' must be a finite number, got NaN$/);
    expect(errorOf(mem({ randomErasing: Infinity }))).toBeInstanceOf(RangeError);
    expect(errorOf(mem({ randomErasing: 1.5 })).message).toMatch(/option 'randomErasing' must be a probability in \[0, 1\], got 1.5/);
    expect(errorOf(stream({ size: [Infinity] })).message).toMatch(/option 'size' element 0 must be a finite number, got Infinity/);
    expect(errorOf(stream({ scale: [0.1, NaN] })).message).toMatch(/option 'scale' element 1 must be a finite number, got NaN/);
  });

  it('ranges are stated and checked, not clamped; flags are booleans; one message shape', () => {
    for (const make of [mem, stream]) {
      for (const [opts, cls, msg] of [
        [{ workers: 0 }, RangeError, /option 'workers' must be in 1\.\.64, got 0/],
        [{ workers: 65 }, RangeError, /option 'workers' must be in 1\.\.64, got 65/],
        [{ prefetch: 0 }, RangeError, /option 'prefetch' must be in 1\.\.65536, got 0/],
        [{ batchSize: 2.5 }, TypeError, /option 'batchSize' must be an integer, got 2.5/],
        [{ batchSize: '2' }, TypeError, /option 'batchSize' must be an integer, got string/],
        [{ seed: -1 }, RangeError, /option 'seed' must be at least 0, got -1/],
        [{ shuffle: 1 }, TypeError, /option 'shuffle' must be a boolean, got number/],
        [{ channelsLast: 'yes' }, TypeError, /option 'channelsLast' must be a boolean, got string/],
        [{ device: 3 }, TypeError, /option 'device' must be a device string/],
        [{ device: 'tpu' }, r.DeviceError, /option 'device': unknown device 'tpu'/],
        [{ std: [0] }, RangeError, /std entries must be positive, got 0/],
      ] as const) {
        const e = errorOf(make(opts));
        expect(e, `${JSON.stringify(opts)}: ${msg.source}`).toBeInstanceOf(cls);
        expect(e.message).toMatch(msg);
      }
    }
    expect(errorOf(stream({ size: [8, 8, 8] })).message).toMatch(/option 'size' must have 1 or 2 entries/);
    expect(errorOf(stream({ transform: 'crop' })).message).toMatch(/option 'transform' must be 'train', 'eval' or 'resize', got 'crop'/);
    expect(errorOf(() => N.loaderCreate(ds.images._h, ds.labels._h, 5))).toBeInstanceOf(TypeError);
    expect(errorOf(() => N.imageDecode(new Uint8Array(4), 3, 'big')).message).toMatch(/argument 'options' must be an object, got string/);
    expect(errorOf(() => N.loaderStart({}, 0)).message).toMatch(/argument 'loader' must be a native data loader/);
  });
});
