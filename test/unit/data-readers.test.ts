// Dataset readers on small files generated in a temporary folder: IDX (raw, gzip), CIFAR binary
// batches, image folders (PNG, JPEG), Fashion-MNIST location, synthetic data; and malformed files.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  FASHION_MNIST_CLASSES,
  findFashionMnist,
  loadCifar10,
  loadCifar100,
  loadFashionMnist,
  loadIdxImages,
  loadImageFolder,
  parseIdx,
  readCifarBatches,
  readIdx,
  syntheticImageDataset,
  verifyFashionMnist,
  disposeDataset,
  getFashionMnist,
} from '../../lib/data/index.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-data-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});
const at = (...p: string[]) => path.join(tmp, ...p);

/** Build IDX bytes: header (type code, big-endian dims) then the given payload bytes. */
function idxBytes(type: number, shape: number[], payload: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * shape.length);
  head[2] = type;
  head[3] = shape.length;
  shape.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, payload]);
}

/** n images of h x w where pixel (i, y, x) = (i * 31 + y * w + x) & 255, labels i % 10. */
function mnistLike(n: number, h: number, w: number): { images: Buffer; labels: Buffer; pixels: Uint8Array } {
  const pixels = new Uint8Array(n * h * w);
  for (let i = 0; i < n; i++) for (let p = 0; p < h * w; p++) pixels[i * h * w + p] = (i * 31 + p) & 255;
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
  return { images: idxBytes(0x08, [n, h, w], pixels), labels: idxBytes(0x08, [n], labels), pixels };
}

describe('IDX', () => {
  test('raw and gzip images + labels give the same dataset', () => {
    const { images, labels, pixels } = mnistLike(12, 5, 4);
    fs.writeFileSync(at('img-idx3-ubyte'), images);
    fs.writeFileSync(at('lab-idx1-ubyte'), labels);
    fs.writeFileSync(at('img-idx3-ubyte.gz'), zlib.gzipSync(images));
    fs.writeFileSync(at('lab-idx1-ubyte.gz'), zlib.gzipSync(labels));
    for (const gz of ['', '.gz']) {
      const ds = loadIdxImages(at(`img-idx3-ubyte${gz}`), at(`lab-idx1-ubyte${gz}`));
      expect(ds.images.shape).toEqual([12, 1, 5, 4]);
      expect(ds.images.dtype).toBe('uint8');
      expect(ds.labels.dtype).toBe('int64');
      expect(ds.labels.toArray()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
      expect(Array.from(ds.images.toTypedArray())).toEqual(Array.from(pixels));
      expect(ds.classes).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
      // Pixel (image 3, row 2, col 1) = 3*31 + 2*4 + 1 = 102.
      expect((ds.images.toArray() as number[][][][])[3][0][2][1]).toBe(102);
      disposeDataset(ds);
    }
  });

  test('gzip is detected from the content, not the file name', () => {
    const { labels } = mnistLike(3, 2, 2);
    fs.writeFileSync(at('labels-no-suffix'), zlib.gzipSync(labels));
    expect(Array.from(readIdx(at('labels-no-suffix')).data)).toEqual([0, 1, 2]);
  });

  test('multi-byte types are big-endian on disk', () => {
    const be = Buffer.alloc(3 * 4);
    [1.5, -2.25, 1e6].forEach((v, i) => be.writeFloatBE(v, 4 * i));
    const f = parseIdx(idxBytes(0x0d, [3], be), 'f32');
    expect(f.dtype).toBe('float32');
    expect(Array.from(f.data)).toEqual([1.5, -2.25, 1e6]);

    const i32 = Buffer.alloc(2 * 4);
    i32.writeInt32BE(-5, 0);
    i32.writeInt32BE(70000, 4);
    const a = parseIdx(idxBytes(0x0c, [1, 2], i32));
    expect(a.shape).toEqual([1, 2]);
    expect(Array.from(a.data)).toEqual([-5, 70000]);

    const i16 = Buffer.alloc(4);
    i16.writeInt16BE(-300, 0);
    i16.writeInt16BE(300, 2);
    expect(Array.from(parseIdx(idxBytes(0x0b, [2], i16)).data)).toEqual([-300, 300]);

    const f64 = Buffer.alloc(8);
    f64.writeDoubleBE(Math.PI, 0);
    expect(parseIdx(idxBytes(0x0e, [1], f64)).data[0]).toBe(Math.PI);

    expect(Array.from(parseIdx(idxBytes(0x09, [2], Buffer.from([0xff, 0x7f]))).data)).toEqual([-1, 127]);
  });

  test('malformed IDX files name the file and what was expected', () => {
    fs.writeFileSync(at('bad-magic'), Buffer.from([0x12, 0x34, 0x08, 0x01, 0, 0, 0, 1, 7]));
    expect(() => readIdx(at('bad-magic'))).toThrow(
      `${at('bad-magic')}: not an IDX file: bad magic 12 34 08 01, expected 00 00 <type> <ndims>`,
    );

    fs.writeFileSync(at('bad-type'), idxBytes(0x0a, [1], Buffer.from([1])));
    expect(() => readIdx(at('bad-type'))).toThrow(/bad-type: unknown IDX type code 0x0a/);

    const { images } = mnistLike(4, 3, 3);
    fs.writeFileSync(at('truncated'), images.subarray(0, images.length - 5));
    expect(() => readIdx(at('truncated'))).toThrow(
      `${at('truncated')}: truncated: expected 36 bytes of data for shape [4, 3, 3] (unsigned byte), found 31`,
    );

    fs.writeFileSync(at('short-header'), Buffer.from([0, 0, 8, 3, 0, 0, 0, 4]));
    expect(() => readIdx(at('short-header'))).toThrow(/short-header: truncated header: 3 dimensions need 16 bytes, found 8/);

    const gz = zlib.gzipSync(images);
    fs.writeFileSync(at('truncated.gz'), gz.subarray(0, gz.length - 10));
    expect(() => readIdx(at('truncated.gz'))).toThrow(/truncated\.gz: corrupt or truncated gzip data/);

    expect(() => readIdx(at('does-not-exist'))).toThrow(/cannot read .*does-not-exist/);
  });

  test('image and label counts must agree', () => {
    const a = mnistLike(5, 2, 2);
    const b = mnistLike(4, 2, 2);
    fs.writeFileSync(at('i5'), a.images);
    fs.writeFileSync(at('l4'), b.labels);
    expect(() => loadIdxImages(at('i5'), at('l4'))).toThrow(`${at('l4')} has 4 labels but ${at('i5')} has 5 images`);
    // Labels in the images' place: wrong rank.
    expect(() => loadIdxImages(at('l4'), at('l4'))).toThrow(/expected images as unsigned bytes of shape \[N, H, W\], found uint8 \[4\]/);
  });
});

/** CIFAR records: label bytes then 3072 pixels with pixel p of record i = (i * 7 + p) & 255. */
function cifarBytes(labels: number[][]): Buffer {
  const rec = labels[0].length + 3072;
  const b = Buffer.alloc(labels.length * rec);
  labels.forEach((ls, i) => {
    ls.forEach((l, j) => (b[i * rec + j] = l));
    for (let p = 0; p < 3072; p++) b[i * rec + ls.length + p] = (i * 7 + p) & 255;
  });
  return b;
}

describe('CIFAR', () => {
  test('CIFAR-10 batches concatenate in order, pixels in C, H, W', () => {
    fs.writeFileSync(at('b1.bin'), cifarBytes([[3], [9]]));
    fs.writeFileSync(at('b2.bin'), cifarBytes([[0]]));
    const ds = readCifarBatches([at('b1.bin'), at('b2.bin')], { variant: 'cifar10' });
    expect(ds.images.shape).toEqual([3, 3, 32, 32]);
    expect(ds.labels.toArray()).toEqual([3, 9, 0]);
    expect(ds.classes[3]).toBe('cat');
    const px = ds.images.toTypedArray();
    // Record 1, green channel (c=1), row 2, col 5: p = 1024 + 2*32 + 5 = 1093 -> (7 + 1093) & 255 = 76.
    expect(px[1 * 3072 + 1093]).toBe(76);
    // Record 2 is the first of the second file: its own index 0.
    expect(px[2 * 3072 + 10]).toBe(10);
  });

  test('CIFAR-100 fine and coarse labels', () => {
    fs.writeFileSync(
      at('c100.bin'),
      cifarBytes([
        [4, 77],
        [19, 2],
      ]),
    );
    expect(readCifarBatches([at('c100.bin')], { variant: 'cifar100' }).labels.toArray()).toEqual([77, 2]);
    const coarse = readCifarBatches([at('c100.bin')], { variant: 'cifar100', labels: 'coarse' });
    expect(coarse.labels.toArray()).toEqual([4, 19]);
    expect(coarse.classes.length).toBe(20);
  });

  test('wrong record size names file, size and record size', () => {
    fs.writeFileSync(at('short.bin'), cifarBytes([[1], [2]]).subarray(0, 5000));
    expect(() => readCifarBatches([at('short.bin')])).toThrow(
      `${at('short.bin')}: size 5000 bytes is not a multiple of the cifar10 record size 3073 (1 label byte + 3072 pixels); wrong variant or truncated file?`,
    );
    // A CIFAR-10 file read as CIFAR-100 (2 records of 3073 = 6146 bytes, not a multiple of 3074).
    fs.writeFileSync(at('ten.bin'), cifarBytes([[1], [2]]));
    expect(() => readCifarBatches([at('ten.bin')], { variant: 'cifar100' })).toThrow(
      /size 6146 bytes is not a multiple of the cifar100 record size 3074/,
    );
    // A label out of range.
    fs.writeFileSync(at('label.bin'), cifarBytes([[12]]));
    expect(() => readCifarBatches([at('label.bin')])).toThrow(/label\.bin: record 0 has label 12, expected < 10/);
  });

  test('loadCifar10 on the cifar-10-batches-bin layout with batches.meta.txt', () => {
    const d = at('cifar', 'cifar-10-batches-bin');
    fs.mkdirSync(d, { recursive: true });
    for (let k = 1; k <= 5; k++) fs.writeFileSync(path.join(d, `data_batch_${k}.bin`), cifarBytes([[k], [k + 1]]));
    fs.writeFileSync(path.join(d, 'test_batch.bin'), cifarBytes([[0]]));
    fs.writeFileSync(path.join(d, 'batches.meta.txt'), 'a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n');
    const { train, test: te, dir } = loadCifar10(at('cifar'));
    expect(dir).toBe(d);
    expect(train.images.shape).toEqual([10, 3, 32, 32]);
    expect(train.labels.toArray()).toEqual([1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    expect(te.images.shape).toEqual([1, 3, 32, 32]);
    expect(train.classes).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8', 'a9']);
    fs.rmSync(path.join(d, 'data_batch_4.bin'));
    expect(() => loadCifar10(d)).toThrow(/missing data_batch_4\.bin/);
    expect(() => loadCifar10(at('nowhere'))).toThrow(/no test_batch\.bin here or in/);
  });

  test('loadCifar100 on the cifar-100-binary layout', () => {
    const d = at('c100', 'cifar-100-binary');
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(
      path.join(d, 'train.bin'),
      cifarBytes([
        [1, 50],
        [2, 99],
      ]),
    );
    fs.writeFileSync(path.join(d, 'test.bin'), cifarBytes([[3, 7]]));
    const { train, test: te } = loadCifar100(at('c100'));
    expect(train.labels.toArray()).toEqual([50, 99]);
    expect(te.labels.toArray()).toEqual([7]);
    expect(train.classes.length).toBe(100);
  });
});

describe('image folder', () => {
  // Class 'cat' holds PNGs, class 'dog' a JPEG; 'zebra' sorts last. Colours are known per file.
  const W = 6;
  const H = 4;
  function rgbaImage(w: number, h: number, f: (x: number, y: number) => [number, number, number, number]): Buffer {
    const d = Buffer.alloc(w * h * 4);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) d.set(f(x, y), (y * w + x) * 4);
    return d;
  }
  function writePng(file: string, w: number, h: number, f: (x: number, y: number) => [number, number, number, number]): void {
    const png = new PNG({ width: w, height: h });
    png.data = rgbaImage(w, h, f);
    fs.writeFileSync(file, PNG.sync.write(png));
  }

  beforeAll(() => {
    const root = at('folder');
    for (const c of ['cat', 'dog', 'zebra']) fs.mkdirSync(path.join(root, c), { recursive: true });
    writePng(path.join(root, 'cat', 'b.png'), W, H, (x, y) => [10 * x, 20 * y, 200, 255]);
    writePng(path.join(root, 'cat', 'a.png'), W, H, () => [255, 0, 0, 128]);
    // A flat-colour JPEG: compression keeps it within a few levels.
    const jpg = jpeg.encode({ width: W, height: H, data: rgbaImage(W, H, () => [40, 160, 90, 255]) }, 95);
    fs.writeFileSync(path.join(root, 'dog', 'x.JPG'), jpg.data);
    fs.writeFileSync(path.join(root, 'dog', 'notes.txt'), 'not an image, skipped');
    writePng(path.join(root, 'zebra', 'z.png'), W, H, (x) => (x < 3 ? [0, 0, 0, 255] : [255, 255, 255, 255]));
  });

  test('classes sorted, files sorted, RGB in C, H, W', () => {
    const ds = loadImageFolder(at('folder'));
    expect(ds.classes).toEqual(['cat', 'dog', 'zebra']);
    expect(ds.images.shape).toEqual([4, 3, H, W]);
    expect(ds.labels.toArray()).toEqual([0, 0, 1, 2]);
    const im = ds.images.toArray() as number[][][][];
    // a.png (first, sorted) is pure red; alpha dropped.
    expect([im[0][0][2][3], im[0][1][2][3], im[0][2][2][3]]).toEqual([255, 0, 0]);
    // b.png pixel (x=5, y=3) = [50, 60, 200].
    expect([im[1][0][3][5], im[1][1][3][5], im[1][2][3][5]]).toEqual([50, 60, 200]);
    // JPEG: within JPEG error of [40, 160, 90].
    for (const [c, v] of [
      [0, 40],
      [1, 160],
      [2, 90],
    ])
      expect(Math.abs(im[2][c][1][1] - v)).toBeLessThanOrEqual(4);
    expect(im[3][0][0][0]).toBe(0);
    expect(im[3][0][0][5]).toBe(255);
  });

  test('grayscale uses 0.299 R + 0.587 G + 0.114 B', () => {
    const ds = loadImageFolder(at('folder'), { channels: 1 });
    expect(ds.images.shape).toEqual([4, 1, H, W]);
    const im = ds.images.toArray() as number[][][][];
    expect(im[0][0][0][0]).toBe(Math.round(0.299 * 255)); // 76
    expect(im[1][0][3][5]).toBe(Math.round(0.299 * 50 + 0.587 * 60 + 0.114 * 200)); // 73
  });

  test('resize (bilinear) to a given size', () => {
    const ds = loadImageFolder(at('folder'), { size: [2, 3] });
    expect(ds.images.shape).toEqual([4, 3, 2, 3]);
    const im = ds.images.toArray() as number[][][][];
    // zebra 6 wide -> 3 wide: output x samples input x = 0.5, 2.5, 4.5: [0, 128, 255] (rounded).
    expect(im[3][0][0]).toEqual([0, 128, 255]);
    // b.png red = 10 x at x = 0.5, 2.5, 4.5 -> 5, 25, 45.
    expect(im[1][0][1]).toEqual([5, 25, 45]);
  });

  test('different sizes without size, and undecodable files, are errors naming the file', () => {
    const root = at('folder2');
    fs.mkdirSync(path.join(root, 'a'), { recursive: true });
    writePng(path.join(root, 'a', '1.png'), 4, 4, () => [1, 2, 3, 255]);
    writePng(path.join(root, 'a', '2.png'), 5, 4, () => [1, 2, 3, 255]);
    expect(() => loadImageFolder(root)).toThrow(
      `${path.join(root, 'a', '2.png')}: image is 5x4 but ${path.join(root, 'a', '1.png')} is 4x4; pass size: [height, width] to resize all images`,
    );
    expect(loadImageFolder(root, { size: [4, 4] }).images.shape).toEqual([2, 3, 4, 4]);

    fs.writeFileSync(
      path.join(root, 'a', '3.png'),
      Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('garbage')]),
    );
    expect(() => loadImageFolder(root, { size: [4, 4] })).toThrow(new RegExp(`${path.join(root, 'a', '3.png')}: cannot decode PNG image`));

    fs.writeFileSync(path.join(root, 'a', '3.png'), 'plain text with a .png name');
    expect(() => loadImageFolder(root, { size: [4, 4] })).toThrow(
      `${path.join(root, 'a', '3.png')}: not a PNG or JPEG image (unrecognised file signature)`,
    );

    fs.writeFileSync(path.join(root, 'a', '3.png'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 1, 2, 3]));
    expect(() => loadImageFolder(root, { size: [4, 4] })).toThrow(/3\.png: cannot decode JPEG image/);

    fs.mkdirSync(path.join(root, 'empty'));
    fs.rmSync(path.join(root, 'a', '3.png'));
    expect(() => loadImageFolder(root, { size: [4, 4] })).toThrow(/class 'empty' has no \.png, \.jpg or \.jpeg files/);
    expect(() => loadImageFolder(at('folder'), { channels: 2 as 1 })).toThrow(/channels must be 1 or 3, got 2/);
  });
});

describe('Fashion-MNIST location', () => {
  const saved = { data: process.env.RESIDUAL_DATA, home: process.env.RESIDUAL_HOME };
  afterEach(() => {
    for (const [k, v] of [
      ['RESIDUAL_DATA', saved.data],
      ['RESIDUAL_HOME', saved.home],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  /** Tiny stand-in files with Fashion-MNIST's names (not its content). */
  function fakeFashion(dir: string, gz: boolean): void {
    fs.mkdirSync(dir, { recursive: true });
    const tr = mnistLike(20, 28, 28);
    const te = mnistLike(10, 28, 28);
    const put = (name: string, b: Buffer) => fs.writeFileSync(path.join(dir, name + (gz ? '.gz' : '')), gz ? zlib.gzipSync(b) : b);
    put('train-images-idx3-ubyte', tr.images);
    put('train-labels-idx1-ubyte', tr.labels);
    put('t10k-images-idx3-ubyte', te.images);
    put('t10k-labels-idx1-ubyte', te.labels);
  }

  test('explicit path, then RESIDUAL_DATA (folder or fashion-mnist sub-folder), then cache', () => {
    fakeFashion(at('fm-explicit'), false);
    fakeFashion(at('envdata', 'fashion-mnist'), true);
    fakeFashion(at('home', 'datasets', 'fashion-mnist'), true);

    expect(findFashionMnist({ path: at('fm-explicit') })).toEqual({ dir: at('fm-explicit'), source: 'path' });
    // An explicit path that lacks the files is not silently replaced by another copy.
    expect(findFashionMnist({ path: at('nowhere') })).toBeNull();
    expect(() => loadFashionMnist({ path: at('nowhere') })).toThrow(
      /Fashion-MNIST not found.*\n.*nowhere \(path\)[\s\S]*residual data get fashion-mnist/,
    );

    process.env.RESIDUAL_DATA = at('envdata');
    expect(findFashionMnist()).toEqual({ dir: at('envdata', 'fashion-mnist'), source: 'RESIDUAL_DATA' });

    const fm = loadFashionMnist();
    expect(fm.train.images.shape).toEqual([20, 1, 28, 28]);
    expect(fm.test.images.shape).toEqual([10, 1, 28, 28]);
    expect(fm.train.classes).toEqual(FASHION_MNIST_CLASSES);
    expect(fm.train.name).toBe('fashion-mnist');

    // The cache is found when nothing earlier holds the data (and Debian's copy is absent).
    process.env.RESIDUAL_DATA = at('nowhere');
    process.env.RESIDUAL_HOME = at('home');
    const f = findFashionMnist();
    if (!fs.existsSync('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz')) {
      expect(f).toEqual({ dir: at('home', 'datasets', 'fashion-mnist'), source: 'cache' });
    } else {
      expect(f?.source).toBe('debian');
    }
  });

  test('checksums: stand-in files are rejected with the file named', () => {
    expect(() => verifyFashionMnist(at('fm-explicit'))).toThrow(
      /failed the checksum check:\n.*train-images-idx3-ubyte: SHA-256 of the uncompressed data is [0-9a-f]{64} \(15696 bytes\), expected c59f468a/,
    );
    expect(() => verifyFashionMnist(at('nowhere'))).toThrow(/Fashion-MNIST files missing/);
  });

  const debian = '/usr/share/datasets/fashion-mnist';
  test.skipIf(!fs.existsSync(path.join(debian, 'train-images-idx3-ubyte.gz')))('the real dataset from the Debian package', () => {
    verifyFashionMnist(debian);
    const fm = loadFashionMnist({ path: debian });
    expect(fm.train.images.shape).toEqual([60000, 1, 28, 28]);
    expect(fm.test.images.shape).toEqual([10000, 1, 28, 28]);
    // First labels of the published files: train 9 (Ankle boot), 0, 0, 3; test 9, 2, 1, 1.
    expect(fm.train.labels.narrow(0, 0, 4).toArray()).toEqual([9, 0, 0, 3]);
    expect(fm.test.labels.narrow(0, 0, 4).toArray()).toEqual([9, 2, 1, 1]);
    // Balanced: 6000 training images per class.
    const counts = new Array(10).fill(0);
    for (const v of fm.train.labels.toTypedArray() as BigInt64Array) counts[Number(v)]++;
    expect(counts).toEqual(new Array(10).fill(6000));
    disposeDataset(fm.train);
    disposeDataset(fm.test);
  });
});

describe('residual data get fashion-mnist (download path, from a local server)', () => {
  const saved = { home: process.env.RESIDUAL_HOME, url: process.env.RESIDUAL_FASHION_MNIST_URL };
  let server: http.Server;
  let base = '';
  let serveDir = '';
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const f = path.join(serveDir, path.basename(req.url ?? ''));
      if (!fs.existsSync(f)) {
        res.writeHead(404).end('no such file');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(fs.readFileSync(f));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  });
  afterAll(() => {
    server.close();
    for (const [k, v] of [
      ['RESIDUAL_HOME', saved.home],
      ['RESIDUAL_FASHION_MNIST_URL', saved.url],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test('a file with the wrong content is refused and not kept; a missing one names the URL', async () => {
    serveDir = at('served-fake');
    fs.mkdirSync(serveDir, { recursive: true });
    const { labels } = mnistLike(5, 2, 2);
    fs.writeFileSync(path.join(serveDir, 'train-images-idx3-ubyte.gz'), zlib.gzipSync(labels));
    process.env.RESIDUAL_HOME = at('dl-home');
    process.env.RESIDUAL_FASHION_MNIST_URL = base;
    await expect(getFashionMnist({ method: 'download', quiet: true })).rejects.toThrow(
      new RegExp(`${base}train-images-idx3-ubyte\\.gz: SHA-256 of the downloaded data is [0-9a-f]{64}, expected c59f468a.*; not saved`),
    );
    expect(fs.readdirSync(at('dl-home', 'datasets', 'fashion-mnist'))).toEqual([]);
    fs.rmSync(path.join(serveDir, 'train-images-idx3-ubyte.gz'));
    await expect(getFashionMnist({ method: 'download', quiet: true })).rejects.toThrow(
      `cannot download ${base}train-images-idx3-ubyte.gz: HTTP 404`,
    );
  });

  const debian = '/usr/share/datasets/fashion-mnist';
  test.skipIf(!fs.existsSync(path.join(debian, 'train-images-idx3-ubyte.gz')))(
    'the real files download into the cache and verify',
    async () => {
      serveDir = debian;
      process.env.RESIDUAL_HOME = at('dl-home2');
      process.env.RESIDUAL_FASHION_MNIST_URL = base;
      const lines: string[] = [];
      const r = await getFashionMnist({ method: 'download', log: (l) => lines.push(l) });
      expect(r).toEqual({ dir: at('dl-home2', 'datasets', 'fashion-mnist'), how: 'download', source: 'cache' });
      expect(fs.readdirSync(r.dir).sort()).toEqual([
        't10k-images-idx3-ubyte.gz',
        't10k-labels-idx1-ubyte.gz',
        'train-images-idx3-ubyte.gz',
        'train-labels-idx1-ubyte.gz',
      ]);
      expect(lines[0]).toBe(`downloading ${base}train-images-idx3-ubyte.gz`);
      expect(lines[lines.length - 1]).toBe(`downloaded to ${r.dir}; checksums OK`);
      // Already installed (Debian's copy comes first): 'auto' only verifies.
      expect(await getFashionMnist({ quiet: true })).toEqual({ dir: debian, how: 'present', source: 'debian' });
    },
  );
});

describe('synthetic data', () => {
  test('deterministic, balanced, labelled, and separable by class means', () => {
    const a = syntheticImageDataset({ n: 200, seed: 7 });
    const b = syntheticImageDataset({ n: 200, seed: 7 });
    const c = syntheticImageDataset({ n: 200, seed: 8 });
    expect(a.name).toBe('synthetic');
    expect(a.images.shape).toEqual([200, 1, 28, 28]);
    expect(a.classes.length).toBe(10);
    const pa = a.images.toTypedArray();
    expect(Buffer.from(pa).equals(Buffer.from(b.images.toTypedArray()))).toBe(true);
    expect(Buffer.from(pa).equals(Buffer.from(c.images.toTypedArray()))).toBe(false);
    const la = Array.from(a.labels.toTypedArray() as BigInt64Array, Number);
    expect(la).toEqual(Array.from(b.labels.toTypedArray() as BigInt64Array, Number));
    const counts = new Array(10).fill(0);
    la.forEach((l) => counts[l]++);
    expect(counts).toEqual(new Array(10).fill(20));

    // Learnable: a nearest-class-mean classifier fitted on the first half classifies the second
    // half far above chance (10%).
    const P = 28 * 28;
    const means = Array.from({ length: 10 }, () => new Float64Array(P));
    const cnt = new Array(10).fill(0);
    for (let i = 0; i < 100; i++) {
      cnt[la[i]]++;
      for (let p = 0; p < P; p++) means[la[i]][p] += pa[i * P + p] as number;
    }
    means.forEach((m, k) => m.forEach((_, p) => (m[p] /= Math.max(1, cnt[k]))));
    let right = 0;
    for (let i = 100; i < 200; i++) {
      let best = -1;
      let bestD = Infinity;
      for (let k = 0; k < 10; k++) {
        let d = 0;
        for (let p = 0; p < P; p++) d += ((pa[i * P + p] as number) - means[k][p]) ** 2;
        if (d < bestD) [bestD, best] = [d, k];
      }
      if (best === la[i]) right++;
    }
    expect(right).toBeGreaterThanOrEqual(70);

    const rgb = syntheticImageDataset({ n: 10, channels: 3, size: 16, classes: 4 });
    expect(rgb.images.shape).toEqual([10, 3, 16, 16]);
    expect(rgb.classes).toEqual(['horizontal stripes', 'vertical stripes', 'diagonal stripes', 'anti-diagonal stripes']);
    expect(() => syntheticImageDataset({ classes: 11 })).toThrow(/classes must be an integer in \[2, 10\], got 11/);
  });
});
