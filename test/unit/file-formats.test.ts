// File-format hardening: every format is validated before use, the work and memory a file
// can demand is bounded, and every bad file raises BadFileError naming it. One test (or more) per class
// of problem, each on a small crafted file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, test } from 'vitest';
import { BadFileError } from '../../lib/core/errors.js';
import { load, loadSafetensors, loadTorchCheckpoint, loadTorchPickle, readSafetensorsHeader, save } from '../../lib/io/index.js';
import { MAX_SAFETENSORS_HEADER } from '../../lib/io/safetensors.js';
import { unpickle } from '../../lib/io/unpickle.js';
import { ZipReader } from '../../lib/io/zip.js';
import { loadIdxImages, parseIdx, readCifarBatches, readIdx, decodeImage } from '../../lib/data/index.js';
import { memory, tensor, type Tensor } from '../../lib/index.js';
import { fixtures } from '../support/helpers.js';
import { cifarBytes, f32, idxBytes, pickle, safetensorsBytes, torchArchive, zipBytes, type PValue } from '../support/format-builders.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-formats-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function write(bytes: Uint8Array, name = `f${++n}`): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, bytes);
  return f;
}

/** fn() throws a BadFileError whose message matches `msg` and whose path is `file`. */
function expectBad(fn: () => unknown, file: string | undefined, msg: string | RegExp): BadFileError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a BadFileError').toBeInstanceOf(BadFileError);
  const e = err as BadFileError;
  if (typeof msg === 'string') expect(e.message).toContain(msg);
  else expect(e.message).toMatch(msg);
  if (file !== undefined) {
    expect(e.path).toBe(file);
    expect(e.message.startsWith(file)).toBe(true);
  }
  expect(e.code).toBe('ERR_RESIDUAL_BAD_FILE');
  return e;
}

function disposeAll(r: Record<string, Tensor>): void {
  for (const t of Object.values(r)) t.dispose();
}

const t3 = { $tensor: { storage: '0', numel: 3, size: [3] } };

describe('.pt: shared structure is walked once (billion laughs)', () => {
  test('a list of two references to a list of two references ... (2^40 paths) loads at once', () => {
    let l: PValue = [1];
    for (let k = 0; k < 40; k++) l = [l, l];
    const f = write(
      torchArchive(
        new Map<PValue, PValue>([
          ['w', t3],
          ['laughs', l],
        ]),
        { 0: f32(1, 2, 3) },
      ),
    );
    expect(fs.statSync(f).size).toBeLessThan(1500);
    const r = loadTorchCheckpoint(f);
    expect(Object.keys(r)).toEqual(['w']);
    disposeAll(r);
    // The raw structure keeps the sharing (no copies).
    const raw = loadTorchPickle(f) as Map<string, unknown[]>;
    const top = raw.get('laughs')!;
    expect(top[0]).toBe(top[1]);
    (raw.get('w') as unknown as Tensor).dispose();
  });

  test('...with a tensor at the bottom: stops at the key limit, naming it', () => {
    let l: PValue = [t3];
    for (let k = 0; k < 40; k++) l = [l, l];
    const f = write(torchArchive(new Map<PValue, PValue>([['laughs', l]]), { 0: f32(1, 2, 3) }));
    const before = memory().tensors;
    expectBad(() => loadTorchCheckpoint(f), f, 'more than 100000 tensor keys (limit maxKeys');
    expectBad(() => loadTorchCheckpoint(f, { maxKeys: 1000 }), f, 'more than 1000 tensor keys (limit maxKeys');
    expect(memory().tensors).toBe(before);
    // Below the limit it is a correct flat record: 2^3 keys, all views of one storage.
    let m: PValue = [t3];
    for (let k = 0; k < 3; k++) m = [m, m];
    const g = write(torchArchive(new Map<PValue, PValue>([['m', m]]), { 0: f32(1, 2, 3) }));
    const r = loadTorchCheckpoint(g);
    expect(Object.keys(r)).toEqual([
      'm.0.0.0.0',
      'm.0.0.1.0',
      'm.0.1.0.0',
      'm.0.1.1.0',
      'm.1.0.0.0',
      'm.1.0.1.0',
      'm.1.1.0.0',
      'm.1.1.1.0',
    ]);
    r['m.0.0.0.0'].fill_(7);
    expect(r['m.1.1.1.0'].toArray()).toEqual([7, 7, 7]);
    disposeAll(r);
  });

  test('a container shared by two keys (model and ema) appears under both', () => {
    const sd = new Map<PValue, PValue>([
      ['w', t3],
      ['b', { $tensor: { storage: '1', numel: 1, size: [1] } }],
    ]);
    const f = write(
      torchArchive(
        new Map<PValue, PValue>([
          ['model', sd],
          ['ema', sd],
          ['epoch', 3],
        ]),
        { 0: f32(1, 2, 3), 1: f32(9) },
      ),
    );
    const r = loadTorchCheckpoint(f);
    expect(Object.keys(r)).toEqual(['model.w', 'model.b', 'ema.w', 'ema.b']);
    expect(r['ema.w'].toArray()).toEqual([1, 2, 3]);
    r['model.w'].dispose(); // each key has its own handle
    expect(r['ema.w'].toArray()).toEqual([1, 2, 3]);
    r['ema.w'].dispose();
    r['model.b'].dispose();
    r['ema.b'].dispose();
  });

  test('a reference cycle, deep nesting and object keys are refused by name', () => {
    // PROTO 2, EMPTY_DICT, BINPUT 0, 'x', EMPTY_LIST, BINPUT 1, BINGET 1, APPEND, SETITEM, STOP:
    // {'x': l} where l = [l].
    const cyc = Uint8Array.from([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x78, 0x5d, 0x71, 1, 0x68, 1, 0x61, 0x73, 0x2e]);
    const f = write(zipBytes([['c/data.pkl', cyc]]));
    expectBad(() => loadTorchCheckpoint(f), f, "reference cycle (a container inside itself) at 'x.0'");
    const raw = loadTorchPickle(f) as Map<string, unknown[]>;
    expect(raw.get('x')![0]).toBe(raw.get('x'));

    let deep: PValue = [t3];
    for (let k = 0; k < 120; k++) deep = [deep];
    const g = write(torchArchive(new Map<PValue, PValue>([['d', deep]]), { 0: f32(1, 2, 3) }));
    expectBad(() => loadTorchCheckpoint(g), g, 'nested deeper than 100 levels (limit maxDepth)');

    const h = write(torchArchive(new Map<PValue, PValue>([[{ $tuple: [1, 2] }, t3]]), { 0: f32(1, 2, 3) }));
    expectBad(() => loadTorchCheckpoint(h), h, "a dict key at '' is a tuple/list of 2");
  });

  test('an object limit bounds the walk', () => {
    const f = write(torchArchive(new Map<PValue, PValue>([['l', Array.from({ length: 5000 }, (_, i) => i)]]), {}));
    expectBad(() => loadTorchCheckpoint(f, { maxObjects: 1000 }), f, 'more than 1000 objects (limit maxObjects)');
    expect(loadTorchCheckpoint(f)).toEqual({});
  });
});

describe('.pt: tensor bounds and memory', () => {
  test("inherited names ('constructor', 'toString', '__proto__') are not storage types or dtypes", () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const t = { $tensor: { storage: '0', numel: 1, size: [1], dtype: name } };
      const f = write(torchArchive(new Map<PValue, PValue>([['w', t]]), { 0: f32(1) }));
      expectBad(() => loadTorchCheckpoint(f), f, new RegExp(`torch\\.${name.replace(/_/g, '_')}`));
    }
  });
  test('stride-0 (expanded) tensors load as views: 4 stored bytes, 2^31 elements, no allocation', () => {
    const big = { $tensor: { storage: '0', numel: 1, size: [2 ** 16, 2 ** 15], stride: [0, 0] } };
    const f = write(torchArchive(new Map<PValue, PValue>([['e', big]]), { 0: f32(2.5) }));
    const before = memory().bytes.cpu ?? 0;
    const r = loadTorchCheckpoint(f);
    expect(r.e.shape).toEqual([2 ** 16, 2 ** 15]);
    expect((memory().bytes.cpu ?? 0) - before).toBeLessThan(1 << 20);
    const corner = r.e.narrow(0, 2 ** 16 - 1, 1).narrow(1, 2 ** 15 - 1, 1);
    expect(corner.item()).toBe(2.5);
    corner.dispose();
    disposeAll(r);
    // A mixed layout: rows expanded, columns a transposed view of a 2x3 storage.
    const mix = { $tensor: { storage: '0', numel: 6, size: [4, 3, 2], stride: [0, 1, 3] } };
    const g = write(torchArchive(new Map<PValue, PValue>([['m', mix]]), { 0: f32(0, 1, 2, 3, 4, 5) }));
    const s = loadTorchCheckpoint(g);
    expect(s.m.toArray()).toEqual(
      Array(4).fill([
        [0, 3],
        [1, 4],
        [2, 5],
      ]),
    );
    // An expanded view saves as its values.
    const st = path.join(tmp, 'expanded.safetensors');
    save(s, st);
    const back = loadSafetensors(st).tensors;
    expect(back.m.toArray()).toEqual(
      Array(4).fill([
        [0, 3],
        [1, 4],
        [2, 5],
      ]),
    );
    disposeAll(back);
    disposeAll(s);
  });

  test('overlapping strides beyond 4 x the file + 64 MiB are refused, naming the limit', () => {
    // 100000 x 100000 with strides (1, 1) over 200000 elements: legal in PyTorch (as_strided), 10^10 to copy.
    const o = { $tensor: { storage: '0', numel: 200000, size: [100000, 100000], stride: [1, 1] } };
    const f = write(torchArchive(new Map<PValue, PValue>([['o', o]]), { 0: new Uint8Array(800000) }));
    expectBad(
      () => loadTorchCheckpoint(f),
      f,
      /would need \d+ bytes to copy, beyond the limit for this file \(4 x its size \+ 64 MiB = \d+ bytes/,
    );
    // A small overlapping view is fine (and copied).
    const small = { $tensor: { storage: '0', numel: 4, size: [3, 2], stride: [1, 1] } };
    const g = write(torchArchive(new Map<PValue, PValue>([['s', small]]), { 0: f32(0, 1, 2, 3) }));
    const r = loadTorchCheckpoint(g);
    expect(r.s.toArray()).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
    disposeAll(r);
  });

  test('out-of-bounds, negative and oversized size/stride/offset are refused', () => {
    const cases: [Record<string, unknown>, string | RegExp][] = [
      [{ size: [4], stride: [1] }, "reaches element 3 of storage '0', which has 3"],
      [{ size: [2], stride: [2], offset: 2 }, 'reaches element 4'],
      [{ size: [2], stride: [-1], offset: 2 }, 'invalid offset/size/stride'],
      [{ size: [-2], stride: [1] }, 'invalid offset/size/stride'],
      [{ size: [2], stride: [1], offset: -1 }, 'invalid offset/size/stride'],
      [{ size: [2, 2], stride: [1] }, 'invalid offset/size/stride'],
      [{ size: [2 ** 30, 2 ** 30, 2 ** 30], stride: [0, 0, 0] }, 'has too many elements'],
      [{ size: Array(65).fill(1), stride: Array(65).fill(1) }, 'at most 64'],
    ];
    for (const [spec, msg] of cases) {
      const v = { $tensor: { storage: '0', numel: 3, size: [3], ...spec } } as PValue;
      const f = write(torchArchive(new Map<PValue, PValue>([['t', v]]), { 0: f32(1, 2, 3) }));
      expectBad(() => loadTorchCheckpoint(f), f, msg);
    }
    // A storage declaring more elements than its bytes.
    const f = write(
      torchArchive(new Map<PValue, PValue>([['t', { $tensor: { storage: '0', numel: 2 ** 40, size: [1] } }]]), { 0: f32(1) }),
    );
    expectBad(() => loadTorchCheckpoint(f), f, 'has 4 bytes, but 1099511627776 float32 elements need');
  });
});

describe('.pt: keys', () => {
  test("'a.b' and {'a': {'b'}} collide: refused, naming the key", () => {
    const v = new Map<PValue, PValue>([
      ['a.b', t3],
      ['a', new Map<PValue, PValue>([['b', { $tensor: { storage: '1', numel: 1, size: [1] } }]])],
    ]);
    const f = write(torchArchive(v, { 0: f32(1, 2, 3), 1: f32(4) }));
    const before = memory().tensors;
    expectBad(() => loadTorchCheckpoint(f), f, "two entries have the same key 'a.b'");
    expect(memory().tensors).toBe(before);
    // A list index and a string key that print the same collide too.
    const g = write(
      torchArchive(
        new Map<PValue, PValue>([
          ['l', [t3]],
          ['l.0', t3],
        ]),
        { 0: f32(1, 2, 3) },
      ),
    );
    expectBad(() => loadTorchCheckpoint(g), g, "the same key 'l.0'");
  });

  test("'__proto__' and 'constructor' are ordinary keys (null-prototype record)", () => {
    const f = write(
      torchArchive(
        new Map<PValue, PValue>([
          ['__proto__', t3],
          ['constructor', t3],
        ]),
        { 0: f32(1, 2, 3) },
      ),
    );
    const r = loadTorchCheckpoint(f);
    expect(Object.keys(r)).toEqual(['__proto__', 'constructor']);
    expect(Object.getPrototypeOf(r)).toBeNull();
    expect(r.__proto__.toArray()).toEqual([1, 2, 3]);
    disposeAll(r);
  });
});

describe('.pt: the unpickler is linear', () => {
  const opts = {
    file: 'mem.pkl',
    findClass: (m: string, nm: string): never => {
      throw new Error(`no ${m}.${nm}`);
    },
  };

  test('one APPENDS of 500,000 items, a 300 kB LONG4, torch.device of a list', () => {
    const items = 500_000;
    const b = new Uint8Array(4 + 2 * items + 2);
    b.set([0x80, 2, 0x5d, 0x28]);
    for (let i = 0; i < items; i++) b.set([0x4b, i & 255], 4 + 2 * i);
    b.set([0x65, 0x2e], 4 + 2 * items);
    expect((unpickle(b, opts) as unknown[]).length).toBe(items);

    const len = 300_000;
    const long = new Uint8Array(2 + 5 + len + 1);
    long.set([0x80, 2, 0x8b, len & 255, (len >> 8) & 255, (len >> 16) & 255, 0]);
    long[7 + len - 1] = 0x01; // 2^(8*(len-1))
    long[7 + len] = 0x2e;
    const v = unpickle(long, opts) as bigint;
    expect(typeof v).toBe('bigint');
    expect(v === 1n << BigInt(8 * (len - 1))).toBe(true);
  });

  test('every unpickler failure is a BadFileError', () => {
    expectBad(() => unpickle(Uint8Array.from([0x80, 2, 0x58, 100, 0, 0, 0]), opts), 'mem.pkl', 'truncated');
    expectBad(() => unpickle(Uint8Array.from([0x69]), opts), 'mem.pkl', 'opcode 0x69');
    const f = write(torchArchive(new Map<PValue, PValue>([['d', new Map()]]), {}));
    // refusing a global is a bad file too
    const mal = path.join(fixtures, 'torch', 'malicious.pt');
    expectBad(() => loadTorchCheckpoint(mal), mal, "references 'os.system'");
    expect(loadTorchCheckpoint(f)).toEqual({});
  });
});

describe('zip archives', () => {
  const entries: [string, Uint8Array][] = [
    ['a/data.pkl', pickle(new Map())],
    ['a/data/0', f32(1, 2)],
  ];

  test('an entry count beyond what the directory can hold', () => {
    const z = zipBytes(entries);
    const eocd = z.length - 22;
    z.writeUInt16LE(0xfffe, eocd + 8);
    z.writeUInt16LE(0xfffe, eocd + 10);
    const f = write(z);
    expectBad(() => new ZipReader(f), f, 'claims 65534 entries, but its');
  });

  test('duplicate names and overlapping entries', () => {
    const dup = write(
      zipBytes([
        ['x', f32(1)],
        ['x', f32(2)],
      ]),
    );
    expectBad(() => new ZipReader(dup), dup, "the name 'x' appears twice");
    // Two directory entries pointing at the same local header.
    const z = zipBytes([
      ['x', f32(1)],
      ['y', f32(1)],
    ]);
    const cd = z.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    const second = z.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), cd + 4);
    z.writeUInt32LE(0, second + 42);
    const f = write(z);
    expectBad(() => new ZipReader(f), f, /entries '(x|y)' and '(x|y)' overlap/);
    // An entry whose data runs into the central directory.
    const z2 = zipBytes([['x', f32(1, 2, 3)]]);
    const cd2 = z2.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    z2.writeUInt32LE(1000, cd2 + 20);
    z2.writeUInt32LE(1000, cd2 + 24);
    const g = write(z2);
    expectBad(() => new ZipReader(g), g, 'does not fit before the central directory');
  });

  test('deflate: sizes beyond the maximum ratio, and streams longer than declared', () => {
    const z = zipBytes([['x', new Uint8Array(100_000)]], { deflate: true });
    const cd = z.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    const good = new ZipReader(write(z));
    expect(good.read('x').length).toBe(100_000);
    good.close();
    const bomb = Buffer.from(z);
    bomb.writeUInt32LE(0xfffffff0, cd + 24);
    const f = write(bomb);
    expectBad(() => new ZipReader(f), f, 'claims to inflate');
    const short = Buffer.from(z);
    short.writeUInt32LE(1000, cd + 24);
    const g = write(short);
    const zr = new ZipReader(g);
    expectBad(() => zr.read('x'), g, 'inflates to more than the 1000 bytes the directory says');
    zr.close();
  });

  test('zip64 locator pointing after itself', () => {
    const z = zipBytes(entries);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(z.length), 8);
    const withLoc = Buffer.concat([z.subarray(0, z.length - 22), loc, z.subarray(z.length - 22)]);
    const f = write(withLoc);
    expectBad(() => new ZipReader(f), f, 'does not lie before its locator');
  });
});

describe('safetensors', () => {
  const hdr = (o: object) => o;
  const good = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [4], data_offsets: [8, 12] } };
  const data = Buffer.concat([f32(1, 2), Uint8Array.of(1, 2, 3, 4)]);

  test('a valid file loads', () => {
    const r = loadSafetensors(write(safetensorsBytes(good, data)));
    expect(r.tensors.a.toArray()).toEqual([1, 2]);
    expect(r.tensors.b.toArray()).toEqual([1, 2, 3, 4]);
    disposeAll(r.tensors);
  });

  test('4 bytes inserted after the header: the data no longer tiles, refused', () => {
    const h = { x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } };
    const f = write(safetensorsBytes(h, Buffer.concat([Buffer.alloc(4), f32(1, 2, 3, 4)])));
    expectBad(() => loadSafetensors(f), f, "4 bytes after the last tensor's data belong to no tensor");
  });

  const cases: [string, string | object, Uint8Array, string | RegExp][] = [
    [
      'overlap',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [4], data_offsets: [4, 8] } },
      data.subarray(0, 8),
      /overlaps tensor "a"/,
    ],
    ['gap', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, data.subarray(0, 8), '4 bytes of data before tensor "a"'],
    ['truncated', good, data.subarray(0, 10), 'the tensors need 12 bytes of data but the file has 10'],
    ['trailing', good, Buffer.concat([data, Buffer.alloc(1)]), '1 bytes after the last tensor'],
    [
      'duplicate key',
      '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
      Uint8Array.of(1, 2),
      'duplicate key "a"',
    ],
    [
      'duplicate key (escaped)',
      '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\\u0061":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
      Uint8Array.of(1, 2),
      'duplicate key "a"',
    ],
    [
      'duplicate inner key',
      '{"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}}',
      Uint8Array.of(1),
      'duplicate key "dtype"',
    ],
    ['array header', '[1,2]', new Uint8Array(0), 'is [1,2], not a JSON object'],
    ['number header', '42', new Uint8Array(0), 'not a JSON object'],
    ['not JSON', '{"a":', new Uint8Array(0), 'not valid JSON'],
    ['unknown dtype', { a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, Uint8Array.of(1), 'unsupported dtype "F8_E4M3"'],
    ['proto dtype', { a: { dtype: '__proto__', shape: [1], data_offsets: [0, 1] } }, Uint8Array.of(1), 'unsupported dtype "__proto__"'],
    ['negative shape', { a: { dtype: 'U8', shape: [-1], data_offsets: [0, 0] } }, new Uint8Array(0), 'invalid shape [-1]'],
    ['float shape', { a: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, Uint8Array.of(1), 'invalid shape'],
    ['1.0 shape', '{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', Uint8Array.of(1), 'invalid shape'],
    ['string shape', { a: { dtype: 'U8', shape: ['1'], data_offsets: [0, 1] } }, Uint8Array.of(1), 'invalid shape'],
    ['huge shape', '{"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,1]}}', Uint8Array.of(1), 'invalid shape'],
    [
      'unaddressable shape',
      { a: { dtype: 'F64', shape: [2 ** 30, 2 ** 30], data_offsets: [0, 1] } },
      Uint8Array.of(1),
      'too large to address',
    ],
    [
      'byte count',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } },
      new Uint8Array(4),
      'spans 4 bytes, its shape [2] float32 needs 8',
    ],
    ['reversed offsets', { a: { dtype: 'U8', shape: [0], data_offsets: [4, 0] } }, new Uint8Array(4), 'end before they begin'],
    ['bad offsets', { a: { dtype: 'U8', shape: [1], data_offsets: [0] } }, Uint8Array.of(1), 'invalid data_offsets'],
    ['metadata value', { __metadata__: { k: 1 } }, new Uint8Array(0), 'metadata "k" is 1, not a string'],
    ['metadata kind', { __metadata__: ['x'] }, new Uint8Array(0), 'not an object of strings'],
    ['entry kind', { a: 3 }, new Uint8Array(0), 'tensor "a" is 3, not an object'],
  ];
  for (const [what, h, d, msg] of cases) {
    test(`refused: ${what}`, () => {
      const f = write(safetensorsBytes(h, d));
      expectBad(() => loadSafetensors(f), f, msg);
      expectBad(() => readSafetensorsHeader(f), f, msg);
      expectBad(() => load(f), f, msg);
    });
  }

  test('header length beyond the file, beyond the cap, too short a file, bad UTF-8', () => {
    const b = safetensorsBytes(good, data);
    b.writeBigUInt64LE(BigInt(b.length), 0);
    const f = write(b);
    expectBad(() => loadSafetensors(f), f, 'exceeds the file');
    b.writeBigUInt64LE(BigInt(MAX_SAFETENSORS_HEADER + 1), 0);
    const g = write(b);
    expectBad(() => loadSafetensors(g), g, `exceeds the limit of ${MAX_SAFETENSORS_HEADER} bytes`);
    b.writeBigUInt64LE(2n ** 64n - 1n, 0);
    const h = write(b);
    expectBad(() => loadSafetensors(h), h, 'exceeds the limit');
    const s = write(Uint8Array.of(1, 2, 3));
    expectBad(() => loadSafetensors(s), s, 'too short');
    const u = write(safetensorsBytes(Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1')));
    const ub = Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0xff, 0x7d])]);
    fs.writeFileSync(u, ub);
    expectBad(() => loadSafetensors(u), u, 'not valid UTF-8');
  });

  test("'__proto__', 'constructor' and odd names round-trip; '__metadata__' cannot be a tensor name", () => {
    const names = ['__proto__', 'constructor', 'toString', '', '0', 'é ☃ 😀', 'a.b'];
    const sd: Record<string, Tensor> = Object.create(null);
    names.forEach((k, i) => (sd[k] = tensor([i, i + 0.5])));
    const f = path.join(tmp, 'names.safetensors');
    save(sd, f, { ['__proto__']: 'meta', note: 'x' });
    const r = loadSafetensors(f);
    expect(Object.keys(r.tensors).sort()).toEqual([...names].sort());
    expect(Object.getPrototypeOf(r.tensors)).toBeNull();
    names.forEach((k, i) => expect(r.tensors[k].toArray()).toEqual([i, i + 0.5]));
    expect(r.metadata.__proto__).toBe('meta');
    expect(Object.getPrototypeOf(r.metadata)).toBeNull();
    disposeAll(r.tensors);
    disposeAll(sd);
    const m: Record<string, Tensor> = { __metadata__: tensor([1]) };
    expect(() => save(m, path.join(tmp, 'm.safetensors'))).toThrow("a tensor cannot be named '__metadata__'");
    m.__metadata__.dispose();
  });

  test('a failed save keeps the previous file and leaves no temporary file', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'atomic-'));
    const f = path.join(dir, 'w.safetensors');
    const a = tensor([1, 2, 3]);
    save({ a }, f);
    const before = fs.readFileSync(f);
    const gone = tensor([4]);
    gone.dispose();
    expect(() => save({ a, z: gone }, f)).toThrow();
    expect(fs.readFileSync(f).equals(before)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['w.safetensors']);
    a.dispose();
  });
});

describe('IDX, CIFAR, image folders', () => {
  test('an int32 label near 2^31 is refused before anything is sized by it', () => {
    const img = write(idxBytes(0x08, [2, 2, 2], new Uint8Array(8)));
    const lab = Buffer.alloc(8);
    lab.writeInt32BE(1, 0);
    lab.writeInt32BE(2 ** 31 - 2, 4);
    const l = write(idxBytes(0x0c, [2], lab));
    expectBad(() => loadIdxImages(img, l), l, `label 1 is ${2 ** 31 - 2}; labels must be below 65536`);
    // With class names the bound is their count.
    const ok = Buffer.alloc(8);
    ok.writeInt32BE(1, 0);
    ok.writeInt32BE(3, 4);
    const l2 = write(idxBytes(0x0c, [2], ok));
    expectBad(() => loadIdxImages(img, l2, { classes: ['a', 'b', 'c'] }), l2, 'label 1 is 3, out of range for 3 classes');
    const neg = Buffer.alloc(8);
    neg.writeInt32BE(-1, 4);
    expectBad(() => loadIdxImages(img, write(idxBytes(0x0c, [2], neg))), undefined, 'label 1 is negative (-1)');
  });

  test('IDX sizes are validated exactly, and every failure is a BadFileError naming the file', () => {
    const f = write(idxBytes(0x08, [0xffffffff, 0xffffffff, 0xffffffff], new Uint8Array(4)));
    expectBad(() => readIdx(f), f, 'is too large for any file');
    const g = write(idxBytes(0x08, [3], new Uint8Array(2)));
    expectBad(() => readIdx(g), g, 'truncated: expected 3 bytes');
    const h = write(idxBytes(0x08, [3], new Uint8Array(4)));
    expectBad(() => readIdx(h), h, '1 unexpected bytes after the data');
    const k = write(idxBytes(0x07, [3], new Uint8Array(3)));
    expectBad(() => readIdx(k), k, 'unknown IDX type code 0x07');
    const gz = write(zlib.gzipSync(idxBytes(0x08, [3], new Uint8Array(3))).subarray(0, 12));
    expectBad(() => readIdx(gz), gz, 'corrupt or truncated gzip data');
    expect(() => parseIdx(Uint8Array.of(1, 2, 3, 4), 'bytes')).toThrow(BadFileError);
  });

  test('CIFAR-100: both label bytes are checked; BadFileError names file and record', () => {
    const f = write(
      cifarBytes([
        [3, 50],
        [25, 7],
      ]),
    );
    expectBad(() => readCifarBatches([f], { variant: 'cifar100' }), f, 'record 1 has coarse label 25, expected < 20');
    const g = write(cifarBytes([[3, 150]]));
    expectBad(() => readCifarBatches([g], { variant: 'cifar100', labels: 'coarse' }), g, 'record 0 has fine label 150, expected < 100');
    const h = write(cifarBytes([[3]]).subarray(0, 100));
    expectBad(() => readCifarBatches([h]), h, 'is not a multiple of the cifar10 record size');
  });

  test('a PNG declaring 100000 x 100000 pixels is refused before decoding', () => {
    const png = PNG.sync.write(Object.assign(new PNG({ width: 2, height: 2 }), { data: Buffer.alloc(16, 255) }));
    const big = Buffer.from(png);
    big.writeUInt32BE(100000, 16);
    big.writeUInt32BE(100000, 20);
    const f = write(big, 'big.png');
    expectBad(() => decodeImage(f), f, 'declares 100000x100000 pixels');
    expect(decodeImage(write(png, 'ok.png')).width).toBe(2);
  });
});
