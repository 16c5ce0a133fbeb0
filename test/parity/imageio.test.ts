// Native image decoding (libjpeg-turbo, libpng) against PIL, the ImageNet transforms' geometry against
// torchvision (fixtures: scripts/fixtures/make-image-fixtures.py), and the streaming loaders (image folders and
// WebDataset shards): determinism, partitioning per rank and thread, corrupt files, bounded memory.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixtures } from '../support/helpers.js';
import * as r from '../../lib/index.js';
import { native as N } from '../../lib/addon/binding.js';
import { Tensor } from '../../lib/tensor/tensor.js';
import { mulberry32 } from '../../lib/core/random.js';
import { StreamingDataLoader, expandShards, imageFolderSource, packImageFolder, webDatasetSource } from '../../lib/data/index.js';
import { tarHeader, writeTar } from '../../lib/data/shards.js';

const IMG = path.join(fixtures, 'images');
let tmp = '';
let ref: { tensors: Record<string, Tensor>; metadata: Record<string, string> };

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-imageio-'));
  ref = r.loadSafetensors(path.join(IMG, 'reference.safetensors'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const meta = <T>(k: string): T => JSON.parse(ref.metadata[k]) as T;
const decode = (file: string, channels: 1 | 3 | 4, opts?: object) => new Tensor(N.imageDecode(fs.readFileSync(file), channels, opts));

function maxDiff(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  return a.to('float64').sub(b.to('float64')).abs().max().item() as number;
}

/** A JPEG (jpeg-js encoder) of a solid colour with a little texture; the colour encodes `id`. */
function solidJpeg(id: number, w = 40, h = 30): Buffer {
  const rgba = Buffer.alloc(w * h * 4);
  for (let p = 0; p < w * h; p++) {
    rgba[4 * p] = (id * 37) % 256;
    rgba[4 * p + 1] = (id * 91 + 50) % 256;
    rgba[4 * p + 2] = 128;
    rgba[4 * p + 3] = 255;
  }
  return Buffer.from(jpeg.encode({ data: rgba, width: w, height: h }, 95).data);
}

/** root/<class k>/<i>.jpg, one image per id; class = id % classes. */
function makeFolder(root: string, n: number, classes = n, size: [number, number] = [40, 30]): void {
  for (let id = 0; id < n; id++) {
    const dir = path.join(root, `c${String(id % classes).padStart(3, '0')}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${String(id).padStart(5, '0')}.jpg`), solidJpeg(id, ...size));
  }
}

function epochLabels(dl: StreamingDataLoader, epoch = 0): number[] {
  dl.setEpoch(epoch);
  const out: number[] = [];
  for (const { x, y } of dl.iterSync()) {
    out.push(...(y.toArray() as number[]));
    x.dispose();
    y.dispose();
  }
  return out;
}

describe('native decoding', () => {
  it('decodes JPEG and PNG exactly like PIL (libjpeg-turbo, libpng)', () => {
    const files = meta<Record<string, number[]>>('files');
    for (const name of Object.keys(files)) {
      const got = decode(path.join(IMG, name), 3);
      // The same libraries and settings (accurate integer IDCT, fancy upsampling): identical pixels.
      expect(maxDiff(got, ref.tensors[`decode.${name}.rgb`]), name).toBe(0);
      const lum = ref.tensors[`decode.${name}.l`];
      // Grayscale: ITU-R 601-2 luma, rounded; PIL's fixed-point rounding differs by at most 1.
      if (lum) expect(maxDiff(decode(path.join(IMG, name), 1).squeeze(2), lum), `${name} (L)`).toBeLessThanOrEqual(1);
    }
  });

  it('keeps alpha for RGBA output and gives 255 where the file has none', () => {
    const rgba = decode(path.join(IMG, 'rgba.png'), 4);
    const a = rgba.select(2, 3).flatten().toArray() as number[];
    expect(a.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
    expect(decode(path.join(IMG, 'rgb420.jpg'), 4).select(2, 3).min().item()).toBe(255);
  });

  it('reports truncated, corrupt and oversized files without crashing', () => {
    const jpg = fs.readFileSync(path.join(IMG, 'rgb420.jpg'));
    const png = fs.readFileSync(path.join(IMG, 'rgb.png'));
    expect(() => N.imageDecode(jpg.subarray(0, jpg.length >> 1), 3)).toThrow(/cannot decode JPEG image: Premature end of JPEG file/);
    expect(() => N.imageDecode(png.subarray(0, png.length >> 1), 3)).toThrow(/cannot decode PNG image/);
    const bad = Buffer.from(png);
    bad[40] ^= 0xff; // inside IHDR/IDAT: the CRC check fails
    expect(() => N.imageDecode(bad, 3)).toThrow(/cannot decode PNG image/);
    expect(() => N.imageDecode(Buffer.from('hello world'), 3)).toThrow(/not a PNG or JPEG image/);
    expect(() => N.imageDecode(Buffer.alloc(0), 3)).toThrow(/not a PNG or JPEG image/);
    // the pixel cap is checked from the header, before any pixel is decoded
    expect(() => N.imageDecode(jpg, 3, { maxPixels: 1000 })).toThrow(/61x45 = 2745 pixels, over the limit of 1000/);
    expect(() => N.imageDecode(png, 3, { maxPixels: 1000 })).toThrow(/over the limit of 1000/);
  });

  it('loadImageFolder decodes natively (the one decoder)', () => {
    const root = path.join(tmp, 'small');
    fs.mkdirSync(path.join(root, 'x'), { recursive: true });
    fs.copyFileSync(path.join(IMG, 'rgb.png'), path.join(root, 'x', 'a.png'));
    fs.copyFileSync(path.join(IMG, 'rgb444.jpg'), path.join(root, 'x', 'b.jpg'));
    const ds = r.data.loadImageFolder(root);
    expect(ds.images.shape).toEqual([2, 3, 45, 61]);
    const a = ds.images.select(0, 0).permute([1, 2, 0]);
    expect(maxDiff(a, ref.tensors['decode.rgb.png.rgb'])).toBe(0);
    const b = ds.images.select(0, 1).permute([1, 2, 0]);
    expect(maxDiff(b, ref.tensors['decode.rgb444.jpg.rgb'])).toBe(0);
  });
});

describe('transforms match torchvision', () => {
  // Our resampler computes in float32 from the uint8 pixels, as torchvision does on a float tensor:
  // the same filter (triangle widened by the downscale factor, normalised weights), so the only
  // difference is float32 summation order: well under 1e-3 on the 0..255 scale.
  const TOL = 2e-3;

  it('resized crop (antialiased bilinear) on given boxes: downscale, mixed and upscale', () => {
    const img = decode(path.join(IMG, 'geometry.png'), 3);
    const geo = meta<{ box: number[]; size: number[] }[]>('geometry');
    let worst = 0;
    geo.forEach((g, k) => {
      const out = new Tensor(N.imageResizedCrop(img._h, g.box, g.size, false));
      const d = maxDiff(out, ref.tensors[`geometry.${k}`]);
      worst = Math.max(worst, d);
      expect(d, `box ${g.box} -> ${g.size}`).toBeLessThan(TOL);
      const flipped = new Tensor(N.imageResizedCrop(img._h, g.box, g.size, true));
      expect(maxDiff(flipped, ref.tensors[`geometry.${k}`].flip([2]))).toBeLessThan(TOL);
    });
    expect(worst).toBeGreaterThanOrEqual(0);
  });

  it('evaluation transform: Resize(shorter side) then CenterCrop, through the loader', () => {
    const root = path.join(tmp, 'geo');
    fs.mkdirSync(path.join(root, 'a'), { recursive: true });
    fs.copyFileSync(path.join(IMG, 'geometry.png'), path.join(root, 'a', 'g.png'));
    for (const resize of [40, 37]) {
      const dl = new StreamingDataLoader(imageFolderSource(root), { batchSize: 1, transform: 'eval', size: 32, resize, workers: 1 });
      const [{ x }] = [...dl.iterSync()];
      dl.close();
      // the loader rounds the resampled pixels to uint8 (as PIL's resize and torchvision on uint8 do)
      // before normalising: within half a level of torchvision's float result
      expect(maxDiff(x.squeeze(0).mul(255), ref.tensors[`eval.resize${resize}.crop32`])).toBeLessThan(0.5 + TOL);
    }
  });

  it("RandomResizedCrop's centre-crop fallback after 10 failed tries is torchvision's", () => {
    for (const f of meta<{ hw: number[]; ratio: number[]; box: number[] }[]>('fallback')) {
      const got = Array.from(N.imageRrcBoxes(f.hw[0], f.hw[1], 7, 3, [1, 1, f.ratio[0], f.ratio[1]]) as Float64Array);
      expect(got).toEqual([...f.box, ...f.box, ...f.box]);
    }
  });

  it("RandomResizedCrop's boxes follow torchvision's algorithm in distribution", () => {
    // The reference algorithm (RandomResizedCrop.get_params) with an independent RNG; compare the
    // distributions of area fraction, log aspect ratio and position over 40,000 draws each.
    const H = 375;
    const W = 500;
    const n = 40000;
    const rand = mulberry32(123);
    const pyRound = (v: number) => {
      const f = Math.floor(v);
      const d = v - f;
      return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
    };
    const refBox = (): number[] => {
      for (let t = 0; t < 10; t++) {
        const area = H * W * (0.08 + rand() * 0.92);
        const ar = Math.exp(Math.log(3 / 4) + rand() * (Math.log(4 / 3) - Math.log(3 / 4)));
        const w = pyRound(Math.sqrt(area * ar));
        const h = pyRound(Math.sqrt(area / ar));
        if (w > 0 && w <= W && h > 0 && h <= H) return [Math.floor(rand() * (H - h + 1)), Math.floor(rand() * (W - w + 1)), h, w];
      }
      return [0, 0, H, W];
    };
    const stats = (boxes: number[][]) => {
      const s = { area: 0, logRatio: 0, top: 0, left: 0, full: 0 };
      for (const [i, j, h, w] of boxes) {
        expect(i >= 0 && j >= 0 && i + h <= H && j + w <= W && h > 0 && w > 0).toBe(true);
        s.area += (h * w) / (H * W);
        s.logRatio += Math.log(w / h);
        s.top += h < H ? i / (H - h) : 0.5;
        s.left += w < W ? j / (W - w) : 0.5;
        s.full += h === H && w === W ? 1 : 0;
      }
      for (const k of Object.keys(s) as (keyof typeof s)[]) s[k] /= boxes.length;
      return s;
    };
    const flat = N.imageRrcBoxes(H, W, 42, n) as Float64Array;
    const ours = Array.from({ length: n }, (_, k) => Array.from(flat.subarray(4 * k, 4 * k + 4)));
    const theirs = Array.from({ length: n }, refBox);
    const a = stats(ours);
    const b = stats(theirs);
    // standard errors at n = 40,000: area ~0.0013, log ratio ~0.0008, positions ~0.0015
    expect(Math.abs(a.area - b.area)).toBeLessThan(0.006);
    expect(Math.abs(a.logRatio - b.logRatio)).toBeLessThan(0.004);
    expect(Math.abs(a.top - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(a.left - 0.5)).toBeLessThan(0.01);
    expect(a.area).toBeGreaterThan(0.38);
    expect(a.area).toBeLessThan(0.5);
    // deterministic for a seed
    expect(Array.from(N.imageRrcBoxes(H, W, 42, 50) as Float64Array)).toEqual(Array.from(flat.subarray(0, 200)));
    expect(Array.from(N.imageRrcBoxes(H, W, 43, 50) as Float64Array)).not.toEqual(Array.from(flat.subarray(0, 200)));
  });
});

describe('streaming image folder', () => {
  let root = '';
  beforeAll(() => {
    root = path.join(tmp, 'folder');
    makeFolder(root, 23, 23);
  });

  it('covers every image once per epoch, shuffled by (seed, epoch), identical whatever the thread count', () => {
    const src = imageFolderSource(root);
    const mk = (workers: number, seed = 1) => new StreamingDataLoader(src, { batchSize: 4, size: 16, shuffle: true, seed, workers });
    const a = mk(1);
    expect(a.length).toBe(6);
    const e0 = epochLabels(a, 0);
    expect([...e0].sort((p, q) => p - q)).toEqual([...Array(23).keys()]);
    expect(epochLabels(a, 1)).not.toEqual(e0);
    const b = mk(3);
    expect(epochLabels(b, 0)).toEqual(e0);
    expect(epochLabels(mk(1, 2), 0)).not.toEqual(e0);
    // pixels too: the crop and flip of each sample depend only on (seed, epoch, position)
    const px = (dl: StreamingDataLoader) => {
      dl.setEpoch(0);
      return r.cat([...dl.iterSync()].map((q) => q.x));
    };
    expect(px(a).equal(px(b))).toBe(true);
    a.close();
    b.close();
  });

  it('labels stay with their images through decode and RandomResizedCrop', () => {
    const dl = new StreamingDataLoader(imageFolderSource(root), { batchSize: 8, size: 12, shuffle: true, seed: 3, workers: 2 });
    for (const { x, y } of dl.iterSync()) {
      const red = x.select(1, 0).mean([1, 2]).mul(255).toArray() as number[];
      (y.toArray() as number[]).forEach((id, k) => expect(Math.abs(red[k] - ((id * 37) % 256)), `sample ${id}`).toBeLessThan(4));
    }
    dl.close();
  });

  it("partitions across ranks like PyTorch's DistributedSampler (padded, interleaved)", () => {
    const src = imageFolderSource(root);
    const shares = [0, 1, 2].map((rank) =>
      epochLabels(new StreamingDataLoader(src, { batchSize: 3, size: 8, rank, worldSize: 3, workers: 2 })),
    );
    // 23 samples over 3 ranks: 8 each, the 24th position wraps to sample 0
    expect(shares[0]).toEqual([0, 3, 6, 9, 12, 15, 18, 21]);
    expect(shares[1]).toEqual([1, 4, 7, 10, 13, 16, 19, 22]);
    expect(shares[2]).toEqual([2, 5, 8, 11, 14, 17, 20, 0]);
    // shuffled: the same permutation on every rank, so the shares are still disjoint and complete
    const sh = [0, 1, 2].map((rank) =>
      epochLabels(new StreamingDataLoader(src, { batchSize: 3, size: 8, rank, worldSize: 3, shuffle: true, seed: 9, workers: 2 }), 2),
    );
    expect(new Set(sh.flat()).size).toBe(23);
    expect(sh.flat().length).toBe(24);
  });

  it('corrupt and truncated files: stop with the path, or skip and count', async () => {
    const bad = path.join(tmp, 'badfolder');
    makeFolder(bad, 12, 3);
    const trunc = path.join(bad, 'c001', '00004.jpg');
    fs.writeFileSync(trunc, fs.readFileSync(trunc).subarray(0, 200));
    const garbage = path.join(bad, 'c002', '00005.jpg');
    fs.writeFileSync(garbage, 'not an image at all');
    const src = imageFolderSource(bad);
    const stop = new StreamingDataLoader(src, { batchSize: 4, size: 8, workers: 2 });
    await expect(async () => {
      for await (const b of stop) void b;
    }).rejects.toThrow(new RegExp(`(${trunc}: cannot decode JPEG image|${garbage}: not a PNG or JPEG image)`));
    stop.close();
    const skip = new StreamingDataLoader(src, { batchSize: 4, size: 8, workers: 2, onError: 'skip' });
    let n = 0;
    for await (const { y } of skip) n += y.shape[0];
    expect(n).toBe(10);
    const s = skip.skipped();
    expect(s.count).toBe(2);
    expect(s.errors.map((e) => e.path).sort()).toEqual([trunc, garbage].sort());
    expect(s.errors.find((e) => e.path === trunc)!.message).toMatch(/Premature end of JPEG file/);
    expect(skip.skipped().errors).toEqual([]); // drained
    skip.close();
  });

  it('an epoch left early frees its batches; the next one starts cleanly', async () => {
    const dl = new StreamingDataLoader(imageFolderSource(root), { batchSize: 4, size: 8, workers: 2, prefetch: 2 });
    for (const { x } of dl.iterSync()) {
      x.dispose();
      break;
    }
    for await (const { x } of dl) {
      x.dispose();
      break;
    }
    expect(epochLabels(dl, 0)).toEqual([...Array(23).keys()]);
    dl.close();
    expect(() => [...dl.iterSync()]).toThrow(/used after close/);
  });

  it('refuses images over the pixel limit, by path', () => {
    const dl = new StreamingDataLoader(imageFolderSource(root), { batchSize: 4, size: 8, maxPixels: 100 });
    expect(() => [...dl.iterSync()]).toThrow(/c0\d\d\/000\d\d\.jpg: image is 40x30 = 1200 pixels, over the limit of 100/);
    dl.close();
  });
});

describe('webdataset shards', () => {
  let shardDir = '';
  let pattern = '';
  beforeAll(() => {
    const src = path.join(tmp, 'wds-src');
    makeFolder(src, 57, 57);
    shardDir = path.join(tmp, 'wds');
    const res = packImageFolder(src, shardDir, { shardSize: 8, prefix: 'train', seed: 5 });
    pattern = res.pattern;
  });

  it('packs a folder into ustar shards that tar can list, with classes.json', () => {
    const shards = expandShards(pattern);
    expect(shards.length).toBe(8);
    expect(path.basename(shards[7])).toBe('train-000007.tar');
    expect(JSON.parse(fs.readFileSync(path.join(shardDir, 'classes.json'), 'utf8')).length).toBe(57);
    const scan = N.tarScan(shards[0]) as { samples: number; members: number; maxLabel: number };
    expect(scan.samples).toBe(8);
    expect(scan.members).toBe(16);
    const listed = spawnSync('tar', ['-tf', shards[0]], { encoding: 'utf8' });
    if (!listed.error) expect(listed.stdout.trim().split('\n').length).toBe(16);
    expect(expandShards(path.join(tmp, 'x-{08..11}.tar'))).toEqual(['08', '09', '10', '11'].map((k) => path.join(tmp, `x-${k}.tar`)));
    expect(expandShards('{a,b}-{1..2}')).toEqual(['a-1', 'a-2', 'b-1', 'b-2']);
  });

  it('streams every sample once per epoch; deterministic for a seed; labels stay with images', () => {
    const src = webDatasetSource(pattern);
    expect(src.counts.reduce((a, b) => a + b)).toBe(57);
    const mk = (seed: number) =>
      new StreamingDataLoader(src, { batchSize: 5, size: 8, shuffle: true, seed, workers: 3, shuffleBuffer: 10 });
    const a = mk(1);
    const e0 = epochLabels(a, 0);
    expect([...e0].sort((p, q) => p - q)).toEqual([...Array(57).keys()]);
    expect(epochLabels(mk(1), 0)).toEqual(e0);
    expect(epochLabels(a, 1)).not.toEqual(e0);
    expect(epochLabels(mk(2), 0)).not.toEqual(e0);
    a.setEpoch(0);
    for (const { x, y } of a.iterSync()) {
      const red = x.select(1, 0).mean([1, 2]).mul(255).toArray() as number[];
      (y.toArray() as number[]).forEach((id, k) => expect(Math.abs(red[k] - ((id * 37) % 256))).toBeLessThan(4));
    }
    // length: per thread, whole batches of its shards (3 threads: 3, 3, 2 shards of 8, the last has 1)
    expect(a.length).toBeGreaterThanOrEqual(12);
    a.close();
  });

  it('splits shards across ranks, then across threads', () => {
    const src = webDatasetSource(pattern);
    const per = [0, 1, 2].map((rank) =>
      epochLabels(new StreamingDataLoader(src, { batchSize: 4, size: 8, shuffle: true, seed: 4, rank, worldSize: 3, workers: 2 })),
    );
    const all = per.flat();
    expect(all.length).toBe(57);
    expect(new Set(all).size).toBe(57);
    expect(() => new StreamingDataLoader(src, { batchSize: 4, rank: 0, worldSize: 9 })).toThrow(/fewer shards \(8\) than ranks \(9\)/);
  });

  it('a truncated or corrupt shard: stop naming the shard, or skip the rest of it and go on', async () => {
    const shards = expandShards(pattern);
    const dir = path.join(tmp, 'wds-bad');
    fs.mkdirSync(dir, { recursive: true });
    const copies = shards.map((s) => {
      const d = path.join(dir, path.basename(s));
      fs.copyFileSync(s, d);
      return d;
    });
    const full = fs.readFileSync(copies[2]);
    fs.writeFileSync(copies[2], full.subarray(0, 512 * 7 + 100)); // cut inside a member
    const bad = Buffer.from(fs.readFileSync(copies[5]));
    bad[0] ^= 0x55; // first header's name: the checksum no longer matches
    fs.writeFileSync(copies[5], bad);
    expect(() => N.tarScan(copies[5])).toThrow(/bad tar header checksum/);
    const src = { kind: 'webdataset' as const, shards: copies, counts: copies.map(() => 8), classes: [] };
    const stop = new StreamingDataLoader(src, { batchSize: 4, size: 8, workers: 2 });
    await expect(async () => {
      for await (const b of stop) void b;
    }).rejects.toThrow(/wds-bad\/train-00000[25]\.tar/);
    stop.close();
    const skip = new StreamingDataLoader(src, { batchSize: 4, size: 8, workers: 2, onError: 'skip' });
    const got = epochLabels(skip);
    const s = skip.skipped();
    expect(s.count).toBe(2);
    expect(s.errors.map((e) => path.basename(e.path)).sort()).toEqual(['train-000002.tar', 'train-000005.tar']);
    expect(got.length).toBeGreaterThanOrEqual(57 - 16);
    expect(got.length).toBeLessThan(57);
    skip.close();
  });

  it('a sample missing its label or image is reported by key', () => {
    const f = path.join(tmp, 'nolabel.tar');
    writeTar(f, [
      { name: 'a.jpg', data: solidJpeg(1) },
      { name: 'a.cls', data: Buffer.from('1') },
      { name: 'b.jpg', data: solidJpeg(2) },
      { name: 'c.cls', data: Buffer.from('x') },
    ]);
    const src = { kind: 'webdataset' as const, shards: [f], counts: [3], classes: [] };
    const dl = new StreamingDataLoader(src, { batchSize: 4, size: 8, workers: 1, onError: 'skip' });
    expect(epochLabels(dl)).toEqual([1]);
    const errs = dl.skipped().errors.map((e) => `${path.basename(e.path)}: ${e.message}`);
    expect(errs).toEqual([
      'nolabel.tar:b: sample has no .cls member (an integer class index)',
      'nolabel.tar:c: bad .cls member (not a class index in 0..65535)',
    ]);
    dl.close();
  });

  it('streams a shard set larger than its memory budget with flat RSS', async () => {
    // ~100 MB of shards (600 different 400x300 noisy JPEGs of ~165 KB, packed 3 times under new
    // keys) through a 16 MB shuffle buffer. RSS is sampled after warm-up (a quarter of the batches)
    // and at the end; the growth must stay under the budget (16 MB) + 32 MB, while the data is
    // several times larger than that.
    const dir = path.join(tmp, 'big');
    fs.mkdirSync(dir, { recursive: true });
    const rand = mulberry32(9);
    const imgs: Buffer[] = [];
    for (let k = 0; k < 60; k++) {
      const w = 400;
      const h = 300;
      const rgba = Buffer.alloc(w * h * 4);
      for (let p = 0; p < w * h; p++) {
        rgba[4 * p] = (p % w) & 255;
        rgba[4 * p + 1] = Math.floor(rand() * 256);
        rgba[4 * p + 2] = (k * 4) & 255;
        rgba[4 * p + 3] = 255;
      }
      imgs.push(Buffer.from(jpeg.encode({ data: rgba, width: w, height: h }, 90).data));
    }
    const shards: string[] = [];
    let bytes = 0;
    for (let s = 0; s < 12; s++) {
      const f = path.join(dir, `big-${s}.tar`);
      const members = [];
      for (let k = 0; k < 50; k++) {
        const data = imgs[(s * 50 + k) % imgs.length];
        bytes += data.length;
        members.push({ name: `${s}-${k}.jpg`, data }, { name: `${s}-${k}.cls`, data: Buffer.from(String(k % 10)) });
      }
      writeTar(f, members, { durable: false });
      shards.push(f);
    }
    imgs.length = 0;
    const budget = 16 << 20;
    expect(bytes).toBeGreaterThan(4 * budget);
    const src = webDatasetSource(shards);
    const dl = new StreamingDataLoader(src, {
      batchSize: 16,
      size: 64,
      shuffle: true,
      seed: 1,
      workers: 2,
      shuffleBuffer: 100000,
      shuffleBufferBytes: budget,
    });
    const total = dl.length;
    let b = 0;
    let warm = 0;
    let n = 0;
    for (let epoch = 0; epoch < 2; epoch++) {
      dl.setEpoch(epoch);
      for await (const { x, y } of dl) {
        n += y.shape[0];
        x.dispose();
        y.dispose();
        if (++b === Math.ceil(total / 4)) {
          (globalThis as { gc?: () => void }).gc?.();
          warm = process.memoryUsage().rss;
        }
      }
    }
    (globalThis as { gc?: () => void }).gc?.();
    const growth = process.memoryUsage().rss - warm;
    expect(n).toBe(1200);
    expect(growth).toBeLessThan(budget + (32 << 20));
    dl.close();
  });
});

describe('hostile inputs: oversized images, huge chunks, out-of-range options and labels, strict pax, FIFOs', () => {
  /** A PNG header (signature + IHDR, 8-bit RGB) of any size, then an empty IDAT and IEND. */
  function pngHeader(w: number, h: number): Buffer {
    const crcTable = Array.from({ length: 256 }, (_, n) => {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      return c >>> 0;
    });
    const crc = (b: Buffer) => {
      let c = 0xffffffff;
      for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
      return (c ^ 0xffffffff) >>> 0;
    };
    const chunk = (type: string, data: Buffer) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(data.length);
      const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
      const c = Buffer.alloc(4);
      c.writeUInt32BE(crc(td));
      return Buffer.concat([len, td, c]);
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(w, 0);
    ihdr.writeUInt32BE(h, 4);
    ihdr[8] = 8;
    ihdr[9] = 2;
    return Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', Buffer.alloc(0)),
      chunk('IEND', Buffer.alloc(0)),
    ]);
  }

  /**
   * A valid progressive grayscale JPEG (size x size) whose DC scan is followed by `acScans` AC scans of
   * a few bytes each: end-of-band runs over every block (Huffman tables of one code each).
   */
  function manyScanJpeg(size: number, acScans: number): Buffer {
    const seg = (marker: number, payload: number[]) =>
      Buffer.from([0xff, marker, (payload.length + 2) >> 8, (payload.length + 2) & 255, ...payload]);
    const bits = () => {
      const out: number[] = [];
      let acc = 0;
      let n = 0;
      const put = (v: number, len: number) => {
        for (let i = len - 1; i >= 0; i--) {
          acc = (acc << 1) | ((v >> i) & 1);
          if (++n === 8) {
            out.push(acc);
            if (acc === 0xff) out.push(0); // byte stuffing
            acc = n = 0;
          }
        }
      };
      const done = () => {
        while (n) put(1, 1);
        return out;
      };
      return { put, done };
    };
    const blocks = Math.ceil(size / 8) ** 2;
    const dc = bits();
    for (let k = 0; k < blocks; k++) dc.put(0, 1); // DC difference 0 (category 0, code '0')
    const ac = bits();
    for (let left = blocks; left > 0; left -= 16384) ac.put(0, 15); // EOB14 (code '0') + 14 run bits: 16384 blocks
    const acScan = Buffer.concat([seg(0xda, [1, 1, 0x00, 1, 63, 0x01]), Buffer.from(ac.done())]);
    return Buffer.concat([
      Buffer.from([0xff, 0xd8]),
      seg(0xdb, [0, ...Array(64).fill(1)]),
      seg(0xc2, [8, size >> 8, size & 255, size >> 8, size & 255, 1, 1, 0x11, 0]),
      seg(0xc4, [0x00, 1, ...Array(15).fill(0), 0x00]), // DC table 0: symbol 0
      seg(0xc4, [0x10, 1, ...Array(15).fill(0), 0xe0]), // AC table 0: EOB14
      seg(0xda, [1, 1, 0x00, 0, 0, 0x01]),
      Buffer.from(dc.done()),
      ...Array<Buffer>(acScans).fill(acScan),
      Buffer.from([0xff, 0xd9]),
    ]);
  }

  it('a progressive JPEG of many tiny scans is refused after 500 scans (each one is a pass over every block)', () => {
    // 10,000 such scans of a 2048 x 2048 image are 188 KB and took 9 s to decode
    const ok = new Tensor(N.imageDecode(manyScanJpeg(64, 400), 3));
    expect(ok.shape).toEqual([64, 64, 3]);
    expect(
      ok
        .toArray()
        .flat(2)
        .every((v) => v === 128),
    ).toBe(true); // every coefficient 0: mid-gray
    expect(() => N.imageDecode(manyScanJpeg(64, 600), 3)).toThrow(
      /^imageDecode: cannot decode JPEG image: more than 500 scans \(a progressive JPEG has about 10\)$/,
    );
    const e = (() => {
      try {
        N.imageDecode(manyScanJpeg(64, 600), 1);
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(r.BadFileError);
  });

  it('refuses a tall thin PNG (1 x 30,000,000) from its header, and bounds the resampler buffer', () => {
    expect(() => N.imageDecode(pngHeader(1, 30_000_000), 3)).toThrow(/1x30000000, over the limit of 65535 pixels per side/);
    expect(() => N.imageDecode(pngHeader(70_000, 1), 3)).toThrow(/over the limit of 65535 pixels per side/);
    // 65535 rows resized to 700 columns in one pass: 65535 * 700 * 3 floats = 550 MB of intermediate
    const tall = r.zeros([65535, 1, 3]).to('uint8');
    expect(() => N.imageResizedCrop(tall._h, [0, 0, 65535, 1], [1, 700], false)).toThrow(/intermediate buffer, over the limit of 512 MiB/);
  });

  it('text chunks are dropped: a PNG with a 9 MB tEXt chunk still decodes, to the same pixels', () => {
    const png = fs.readFileSync(path.join(IMG, 'rgb.png'));
    const crcTable = Array.from({ length: 256 }, (_, n) => {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      return c >>> 0;
    });
    const body = Buffer.concat([Buffer.from('tEXtComment\0', 'latin1'), Buffer.alloc(9 << 20, 0x61)]);
    let c = 0xffffffff;
    for (const x of body) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length - 4);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE((c ^ 0xffffffff) >>> 0);
    const withText = Buffer.concat([png.subarray(0, 33), len, body, crc, png.subarray(33)]); // after IHDR
    const a = new Tensor(N.imageDecode(png, 3));
    const b = new Tensor(N.imageDecode(withText, 3));
    expect(maxDiff(a, b)).toBe(0);
  });

  it('numeric options are exact integers in range (no NaN, 1e300 or negatives cast natively)', () => {
    const base = { kind: 'folder', files: ['x.jpg'], labels: [0] };
    expect(() => N.streamCreate({ ...base, batchSize: 1e300 })).toThrow(/batchSize/);
    expect(() => N.streamCreate({ ...base, batchSize: 0 })).toThrow(/batchSize/);
    expect(() => N.streamCreate({ ...base, batchSize: 2.5 })).toThrow(/batchSize/);
    expect(() => N.streamCreate({ ...base, seed: -1 })).toThrow(/seed/);
    expect(() => N.streamCreate({ ...base, workers: 0 })).toThrow(/workers/);
    expect(() => N.streamCreate({ ...base, workers: 1e9 })).toThrow(/workers/);
    expect(() => N.streamCreate({ ...base, maxPixels: 0 })).toThrow(/maxPixels/);
    expect(() => N.streamCreate({ ...base, size: [NaN] })).toThrow(/size/);
    expect(() => N.streamCreate({ ...base, scale: [0.5, 2] })).toThrow(/scale/);
    expect(() => N.streamCreate({ ...base, labels: [1e300] })).toThrow(/labels/);
    expect(() => N.streamCreate({ kind: 'webdataset', shards: ['a.tar'], shardCounts: [-3] })).toThrow(/shardCounts/);
    expect(() => N.imageRrcBoxes(10, 10, -1, 1)).toThrow(/seed/);
    expect(() => N.imageRrcBoxes(10, 10, 1, 1, [0.5, 2, 0.75, 1.33])).toThrow(/scaleHi|scale/);
    expect(() => N.imageRrcBoxes(10, 10, 1, 1, [NaN, 1, 0.75, 1.33])).toThrow(/params/);
    expect((N.imageRrcBoxes(10, 10, 1, 2, [0.08, 1, 0.75, 4 / 3]) as Float64Array).length).toBe(8);
  });

  it('a .cls label over 65535 is refused, and labels must index classes.json', () => {
    const dir = path.join(tmp, 'hostile-labels');
    fs.mkdirSync(dir, { recursive: true });
    const big = path.join(dir, 'big.tar');
    writeTar(big, [
      { name: 'a.jpg', data: solidJpeg(1) },
      { name: 'a.cls', data: Buffer.from('999999999999') },
    ]);
    expect((N.tarScan(big) as { maxLabel: number }).maxLabel).toBe(-1); // not taken as a label
    expect(() => [...new StreamingDataLoader(webDatasetSource([big]), { batchSize: 1, size: 8 }).iterSync()]).toThrow(
      /bad \.cls member \(not a class index in 0\.\.65535\)/,
    );
    const five = path.join(dir, 'five.tar');
    writeTar(five, [
      { name: 'a.jpg', data: solidJpeg(1) },
      { name: 'a.cls', data: Buffer.from('5') },
    ]);
    fs.writeFileSync(path.join(dir, 'classes.json'), JSON.stringify(['x', 'y']));
    let err: unknown;
    try {
      webDatasetSource([five]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(r.BadFileError);
    expect((err as Error).message).toMatch(/five\.tar: class label 5 is not an index into .*classes\.json \(2 classes\)/);
  });

  /** A tar header of type `type` (tarHeader's, retyped, checksum redone). */
  function typedHeader(name: string, size: number, type: string): Buffer {
    const h = Buffer.from(tarHeader(name, size));
    h[156] = type.charCodeAt(0);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += h[i];
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
    return h;
  }
  const pad512 = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

  it('pax headers are parsed strictly; a member cut short by truncation is an error', () => {
    const dir = path.join(tmp, 'hostile-tar');
    fs.mkdirSync(dir, { recursive: true });
    const img = solidJpeg(3);
    const ok = Buffer.from('31 path=long/name/sample01.jpg\n');
    expect(ok.length).toBe(31);
    const good = path.join(dir, 'pax.tar');
    fs.writeFileSync(
      good,
      Buffer.concat([
        typedHeader('PaxHeader', ok.length, 'x'),
        pad512(ok),
        tarHeader('x.jpg', img.length),
        pad512(img),
        Buffer.alloc(1024),
      ]),
    );
    expect((N.tarScan(good) as { samples: number }).samples).toBe(1);
    for (const rec of ['30 path=long/name/sample01.jpg\n', '31 path=long/name/sample01.jpgX', '3x path=a\n', '999 path=a\n', '1 \n']) {
      const body = Buffer.from(rec);
      const f = path.join(dir, 'badpax.tar');
      fs.writeFileSync(
        f,
        Buffer.concat([
          typedHeader('PaxHeader', body.length, 'x'),
          pad512(body),
          tarHeader('x.jpg', img.length),
          pad512(img),
          Buffer.alloc(1024),
        ]),
      );
      expect(() => N.tarScan(f), rec).toThrow(/malformed pax extended header record/);
    }
    // a skipped (non-image) member whose data the file does not hold
    const cut = path.join(dir, 'cut.tar');
    fs.writeFileSync(cut, Buffer.concat([tarHeader('a.txt', 5000), Buffer.alloc(600)]));
    expect(() => N.tarScan(cut)).toThrow(/cut\.tar at byte \d+: truncated tar member/);
  });

  it('a FIFO named like an image is neither listed nor read (it would block a loader thread)', () => {
    const dir = path.join(tmp, 'fifo', 'c0');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'a.jpg'), solidJpeg(1));
    const fifo = path.join(dir, 'b.jpg');
    if (spawnSync('mkfifo', [fifo]).status !== 0) return;
    const src = imageFolderSource(path.dirname(dir));
    expect(src.files.map((f) => path.basename(f))).toEqual(['a.jpg']);
    const dl = new StreamingDataLoader({ ...src, files: [fifo], labels: Int32Array.from([0]) }, { batchSize: 1, size: 8 });
    expect(() => [...dl.iterSync()]).toThrow(/b\.jpg: cannot open: not a regular file/);
    dl.close();
    expect(() => N.tarScan(fifo)).toThrow(/not a regular file/);
  });

  it('class indices come from train/: a val folder lacking a class keeps the training indices', () => {
    const root = path.join(tmp, 'splits');
    for (const [split, classes] of [
      ['train', ['ant', 'bee', 'cat']],
      ['val', ['ant', 'cat']],
    ] as const)
      classes.forEach((c, k) => {
        fs.mkdirSync(path.join(root, split, c), { recursive: true });
        fs.writeFileSync(path.join(root, split, c, `${k}.jpg`), solidJpeg(k));
      });
    const train = imageFolderSource(path.join(root, 'train'));
    const val = imageFolderSource(path.join(root, 'val'), train.classes);
    expect(val.classes).toEqual(['ant', 'bee', 'cat']);
    expect([...val.labels]).toEqual([0, 2]);
    // packed: val's shards are labelled by name against train's classes.json
    const out = path.join(tmp, 'splits-wds');
    const t = packImageFolder(path.join(root, 'train'), out, { prefix: 'train' });
    const v = packImageFolder(path.join(root, 'val'), out, { prefix: 'val', classes: t.classes, shuffle: false });
    expect(JSON.parse(fs.readFileSync(path.join(out, 'classes.json'), 'utf8'))).toEqual(['ant', 'bee', 'cat']);
    expect(v.classes).toEqual(['ant', 'bee', 'cat']);
    const labels = epochLabels(new StreamingDataLoader(webDatasetSource(v.shards), { batchSize: 1, size: 8, transform: 'eval' }));
    expect(labels.sort()).toEqual([0, 2]);
    // a val class unknown to train is an error naming it
    fs.mkdirSync(path.join(root, 'val', 'dog'));
    fs.writeFileSync(path.join(root, 'val', 'dog', 'x.jpg'), solidJpeg(9));
    expect(() => imageFolderSource(path.join(root, 'val'), train.classes)).toThrow(/'dog' not among the 3 training classes/);
    expect(() => packImageFolder(path.join(root, 'val'), out, { prefix: 'val', classes: t.classes })).toThrow(/'dog'/);
  });
});
