// PyTorch checkpoints read without Python: fixtures from scripts/fixtures/make-torch-checkpoint-fixtures.py,
// each compared element by element (and dtype by dtype) with the values torch wrote to a JSON side file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, describe, expect, test } from 'vitest';
import { Tensor, TorchDType, load, loadTorchCheckpoint, loadTorchPickle, memory, save } from '../../lib/index.js';
import { unpickle } from '../../lib/io/unpickle.js';
import { ZipReader } from '../../lib/io/zip.js';
import { fixtures } from '../support/helpers.js';

const dir = path.join(fixtures, 'torch');
const fx = (name: string): string => path.join(dir, name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-torch-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Expected {
  dtype: string;
  shape: number[];
  data: (number | string | boolean)[];
  requiresGrad: boolean;
}
const expectedOf = (json: string): Record<string, Expected> => JSON.parse(fs.readFileSync(fx(json), 'utf8'));

/** Exact comparison: int64 as BigInt, half/bfloat16 widened to float32 (exact), bool as 0/1. */
function expectTensor(t: Tensor, e: Expected, what: string): void {
  expect(t.dtype, `${what} dtype`).toBe(e.dtype);
  expect(t.shape, `${what} shape`).toEqual(e.shape);
  expect(t.device, `${what} device`).toBe('cpu');
  expect(t.requiresGrad, `${what} requiresGrad`).toBe(e.requiresGrad);
  const got = Array.from(t.toTypedArray() as ArrayLike<number | bigint>);
  const want = e.data.map((x) => (e.dtype === 'int64' ? BigInt(x) : typeof x === 'boolean' ? Number(x) : x));
  expect(got, `${what} values`).toEqual(want);
}

/** Checkpoint keys keep the pickle's order; safetensors files do not record one (`ordered: false`). */
function expectMatches(got: Record<string, Tensor>, want: Record<string, Expected>, file: string, ordered = true): void {
  const keys = (r: object): string[] => (ordered ? Object.keys(r) : Object.keys(r).sort());
  expect(keys(got), `${file} keys`).toEqual(keys(want));
  for (const [k, e] of Object.entries(want)) expectTensor(got[k], e, `${file} '${k}'`);
}

function disposeAll(r: Record<string, Tensor>): void {
  for (const t of Object.values(r)) t.dispose();
}

describe('state dicts', () => {
  const want = expectedOf('model_state.json');

  test('conv + bn + linear state dict (OrderedDict with _metadata, int64 num_batches_tracked)', () => {
    const sd = loadTorchCheckpoint(fx('model_state.pt'));
    expectMatches(sd, want, 'model_state.pt');
    expect(Object.keys(sd)).toContain('1.num_batches_tracked');
    expect(sd['1.num_batches_tracked'].item()).toBe(1);
    expect(sd['1.running_var'].toArray()).not.toEqual([1, 1]); // the fixture ran a batch: stats moved
    disposeAll(sd);
  });

  test('the same state dict pickled with protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)', () => {
    const sd = loadTorchCheckpoint(fx('model_state_p4.pt'));
    expectMatches(sd, want, 'model_state_p4.pt');
    disposeAll(sd);
  });

  test('a big-endian archive (byteorder "big") gives the same values', () => {
    const sd = loadTorchCheckpoint(fx('model_state_bigendian.pt'));
    expectMatches(sd, want, 'model_state_bigendian.pt');
    disposeAll(sd);
  });

  test('load() dispatches zip files to the checkpoint loader', () => {
    const sd = load(fx('model_state.pt'));
    expectMatches(sd, want, 'load(model_state.pt)');
    // ...and everything else to safetensors: a round trip through save() / load().
    const f = path.join(tmp, 'model.safetensors');
    save(sd, f);
    const back = load(f);
    expectMatches(back, want, 'load(model.safetensors)', false);
    disposeAll(back);
    disposeAll(sd);
  });

  test('only the returned tensors stay alive (storages and index tensors are disposed)', () => {
    const before = memory().tensors;
    const r = loadTorchCheckpoint(fx('mixed.pt'));
    expect(memory().tensors - before).toBe(Object.keys(r).length);
    disposeAll(r);
    expect(memory().tensors).toBe(before);
  });
});

describe('dtypes, views and strides', () => {
  const want = expectedOf('mixed.json');

  for (const file of ['mixed.pt', 'mixed_deflate.pt']) {
    test(`${file}: every dtype, views, transposed / expanded tensors, nested containers`, () => {
      const r = loadTorchCheckpoint(fx(file));
      expectMatches(r, want, file);
      // Non-tensor values are left out of the flat record.
      for (const k of ['epoch', 'lr', 'name', 'none', 'nested.note', 'list.1', 'pair.0']) expect(r).not.toHaveProperty(k);
      disposeAll(r);
    });
  }

  test('int64 beyond 2^53 and float16 / bfloat16 extremes are exact', () => {
    const r = loadTorchCheckpoint(fx('mixed.pt'));
    expect(Array.from(r.long.toTypedArray() as BigInt64Array)).toEqual([0n, -3n, 2n ** 40n + 7n, -(2n ** 62n) - 5n]);
    expect(Array.from(r.half.toTypedArray() as Float32Array)).toEqual([1.5, -2.25, 65504, 6.097555160522461e-5]);
    expect(r.bf16.toTypedArray()[2]).toBe(1.0002555517425873e30);
    disposeAll(r);
  });

  test('views of one storage share memory, as in PyTorch', () => {
    const r = loadTorchCheckpoint(fx('mixed.pt'));
    // view_a = base[2:6], view_b = base.view(3, 4)[1:]: base[4] is view_a[2] and view_b[0][0].
    expect(r.view_b.index(0, 0).item()).toBe(2);
    const el = r.view_a.narrow(0, 2, 1);
    el.fill_(100);
    el.dispose();
    expect(r.view_b.index(0, 0).item()).toBe(100);
    expect(r.view_a.toArray()).toEqual([1, 1.5, 100, 2.5]);
    // The transposed tensor is rebuilt with torch's strides (here a contiguous copy).
    expect(r.transposed.toArray()).toEqual([
      [0.25, 3.25],
      [1.25, 4.25],
      [2.25, 5.25],
    ]);
    disposeAll(r);
  });

  test('a zip whose sizes and offsets are only in zip64 extra fields', () => {
    const r = loadTorchCheckpoint(fx('zip64.pt'));
    expectMatches(r, expectedOf('small.json'), 'zip64.pt');
    disposeAll(r);
  });

  test("tensors saved from 'cuda:0' load onto the CPU", () => {
    const r = loadTorchCheckpoint(fx('cuda_location.pt'));
    expectMatches(r, expectedOf('small.json'), 'cuda_location.pt');
    disposeAll(r);
  });
});

describe('loadTorchPickle: the raw structure', () => {
  test('dicts are Maps, tuples/lists arrays, sets Sets, big ints bigint, dtypes TorchDType', () => {
    const v = loadTorchPickle(fx('mixed.pt')) as Map<string, unknown>;
    expect(v).toBeInstanceOf(Map);
    expect(v.get('epoch')).toBe(3);
    expect(v.get('lr')).toBe(0.1);
    expect(v.get('name')).toBe('mixed');
    expect(v.get('none')).toBeNull();
    expect(v.get('big')).toBe(2n ** 70n);
    expect(v.get('neg')).toBe(-(2 ** 40));
    expect(v.get('pair')).toEqual([1, 2.5]);
    expect(v.get('set')).toEqual(new Set([1, 2]));
    expect(v.get('dtype')).toEqual(new TorchDType('float16'));
    const nested = v.get('nested') as Map<string, Map<string, Tensor>>;
    expect(nested.get('note')).toBe('skipped');
    expect(nested.get('inner')!.get('w')!.toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    const list = v.get('list') as unknown[];
    expect(list[1]).toBe(5);
    expect((list[0] as Tensor).toArray()).toEqual([9]);
    for (const x of v.values()) if (x instanceof Tensor) x.dispose();
  });

  // The object written by the fixture script for plain_p2.pt / plain_p5.pt.
  const shared = [1, 2];
  const plain = new Map<string, unknown>([
    ['ints', [0, 1, -1, 255, 256, 65535, 65536, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, 2n ** 63n, -(2n ** 63n) - 1n, 2n ** 53n + 1n]],
    ['floats', [0.5, -1e300, 1.5e-310, Infinity]],
    ['strs', ['', 'h\u00e9llo \u2603', 'x'.repeat(300)]],
    ['bytes', Uint8Array.of(0, 1, 255)],
    ['tuples', [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]],
    ['set', new Set([7])],
    ['frozen', new Set([8])],
    ['none', null],
    ['bools', [true, false]],
    ['shared', [shared, shared]],
    [
      'intkeys',
      new Map([
        [1, 'a'],
        [-2, 'b'],
      ]),
    ],
  ]);
  for (const proto of [2, 5]) {
    test(`plain Python values, pickle protocol ${proto}`, () => {
      const v = loadTorchPickle(fx(`plain_p${proto}.pt`)) as Map<string, unknown>;
      expect(v).toEqual(plain);
      // Memoized objects come back as one object, as pickle shares them.
      const s = v.get('shared') as unknown[];
      expect(s[0]).toBe(s[1]);
    });
  }

  test('loadTorchCheckpoint wants a dict; a dict without tensors gives {}', () => {
    expect(loadTorchCheckpoint(fx('plain_p2.pt'))).toEqual({});
    const f = writeZip('list.pt', [['list/data.pkl', Uint8Array.from([0x80, 2, 0x5d, 0x2e])]]); // []
    expect(() => loadTorchCheckpoint(f)).toThrow(
      `${f}: expected the checkpoint to hold a dict of tensors (a state dict), found a tuple/list of 0; use loadTorchPickle to read it`,
    );
    expect(loadTorchPickle(f)).toEqual([]);
  });
});

describe('refusing and bad input', () => {
  const marker = 'residual-torch-fixture-pwned';

  test('a pickle calling os.system is refused, and nothing runs', () => {
    const f = fx('malicious.pt');
    expect(() => loadTorchCheckpoint(f)).toThrow(
      `${f}: refusing to load: the checkpoint references 'os.system', which is not a tensor or container (loading never executes code from the file)`,
    );
    expect(() => loadTorchPickle(f)).toThrow(/refusing to load.*'os\.system'/);
    expect(() => load(f)).toThrow(/refusing to load.*'os\.system'/);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test('eval hidden after a real tensor is refused, and the tensor already built is disposed', () => {
    const f = fx('malicious_nested.pt');
    const before = memory().tensors;
    expect(() => loadTorchCheckpoint(f)).toThrow(`${f}: refusing to load: the checkpoint references '__builtin__.eval'`);
    expect(memory().tensors).toBe(before);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test('refuses any global outside the whitelist, via STACK_GLOBAL too', () => {
    // PROTO 4, 'subprocess' 'Popen' STACK_GLOBAL, STOP
    const p = Uint8Array.from([0x80, 4, 0x8c, 10, ...Buffer.from('subprocess'), 0x8c, 5, ...Buffer.from('Popen'), 0x93, 0x2e]);
    const f = writeZip('stackglobal.pt', [['stackglobal/data.pkl', p]]);
    expect(() => loadTorchPickle(f)).toThrow(`${f}: refusing to load: the checkpoint references 'subprocess.Popen'`);
  });

  test('a truncated archive names the file', () => {
    const data = fs.readFileSync(fx('model_state.pt'));
    const f = path.join(tmp, 'truncated.pt');
    fs.writeFileSync(f, data.subarray(0, Math.floor(data.length / 2)));
    expect(() => loadTorchCheckpoint(f)).toThrow(`${f}: not a zip archive, or truncated: no end-of-central-directory record found`);
    expect(() => load(f)).toThrow(f);
    // Cut inside the central directory: the end records survive, the directory does not.
    const g = path.join(tmp, 'truncated2.pt');
    const cd = data.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    fs.writeFileSync(g, Buffer.concat([data.subarray(0, cd - 200), data.subarray(cd)]));
    expect(() => loadTorchCheckpoint(g)).toThrow(new RegExp(`^${escape(g)}: (truncated or )?corrupt zip archive`));
  });

  test('a corrupted tensor entry fails its CRC check, naming the file and entry', () => {
    const data = Buffer.from(fs.readFileSync(fx('model_state.pt')));
    const zr = new ZipReader(fx('model_state.pt'));
    const e = zr.entries.get('model_state/data/0')!;
    zr.close();
    // Find the entry's data start from its local header and flip one bit of the first float.
    const start = e.localHeaderOffset + 30 + data.readUInt16LE(e.localHeaderOffset + 26) + data.readUInt16LE(e.localHeaderOffset + 28);
    data[start] ^= 1;
    const f = path.join(tmp, 'crc.pt');
    fs.writeFileSync(f, data);
    expect(() => loadTorchCheckpoint(f)).toThrow(`${f}: corrupt zip archive: entry 'model_state/data/0' fails its CRC-32 check`);
  });

  test('missing storage entry, missing file, not a zip, legacy format', () => {
    const zr = new ZipReader(fx('zip64.pt'));
    const pkl = zr.read('zip64/data.pkl');
    zr.close();
    const f = writeZip('nostorage.pt', [['nostorage/data.pkl', pkl]]);
    expect(() => loadTorchCheckpoint(f)).toThrow(`${f}: the pickle refers to storage '0' but the archive has no entry nostorage/data/0`);

    expect(() => loadTorchCheckpoint(path.join(tmp, 'nope.pt'))).toThrow(`${path.join(tmp, 'nope.pt')}: no such file`);

    const txt = path.join(tmp, 'text.pt');
    fs.writeFileSync(txt, 'this is not a checkpoint at all, just some text');
    expect(() => loadTorchCheckpoint(txt)).toThrow(`${txt}: not a zip archive, or truncated`);

    const legacy = path.join(tmp, 'legacy.pt');
    fs.writeFileSync(legacy, Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
    expect(() => load(legacy)).toThrow(`${legacy}: this is the legacy (non-zip) torch.save format`);

    const noPkl = writeZip('nopkl.pt', [['x/other.txt', Uint8Array.of(1)]]);
    expect(() => loadTorchCheckpoint(noPkl)).toThrow(`${noPkl}: not a PyTorch checkpoint: the zip archive has no <name>/data.pkl entry`);
  });

  test('a storage too short for its declared element count', () => {
    const zr = new ZipReader(fx('zip64.pt'));
    const pkl = zr.read('zip64/data.pkl');
    const s1 = zr.read('zip64/data/1');
    zr.close();
    const f = writeZip('short.pt', [
      ['short/data.pkl', pkl],
      ['short/data/0', Uint8Array.of(0, 0, 128, 63)],
      ['short/data/1', s1],
    ]);
    expect(() => loadTorchCheckpoint(f)).toThrow(`${f}: storage short/data/0 has 4 bytes, but 3 float32 elements need 12 (truncated?)`);
  });
});

describe('unpickler details', () => {
  const opts = {
    file: 'mem.pkl',
    findClass: (m: string, n: string): never => {
      throw new Error(`no ${m}.${n}`);
    },
  };

  test('a truncated pickle and an unknown opcode give clear errors', () => {
    // BINUNICODE claiming 100 bytes with 2 present.
    expect(() => unpickle(Uint8Array.from([0x80, 2, 0x58, 100, 0, 0, 0, 0x61, 0x62]), opts)).toThrow(
      'mem.pkl: corrupt or unsupported pickle: needs 100 more bytes but the pickle ends at byte 9 (truncated?) (at byte 2)',
    );
    // 'i' (INST, protocol 0) is not supported.
    expect(() => unpickle(Uint8Array.from([0x80, 2, 0x69]), opts)).toThrow("opcode 0x69 'i' is not supported (at byte 2)");
    // REDUCE on a non-callable.
    expect(() => unpickle(Uint8Array.from([0x4b, 1, 0x29, 0x52, 0x2e]), opts)).toThrow('REDUCE on a value that is not an allowed callable');
  });

  test('MARK nesting, POP, POP_MARK, DUP, DICT, LIST, LONG1 of both signs', () => {
    const bytes = [
      0x28, // MARK (outer, closed by the final TUPLE)
      0x28,
      0x4b,
      1,
      0x4b,
      2,
      0x31, // MARK 1 2 POP_MARK: drops both
      0x4b,
      3,
      0x32,
      0x30, // 3 DUP POP: leaves one 3
      0x28,
      0x8c,
      1,
      0x61,
      0x4b,
      4,
      0x64, // MARK 'a' 4 DICT
      0x28,
      0x4b,
      5,
      0x6c, // MARK 5 LIST
      0x8a,
      2,
      0xff,
      0x7f, // LONG1 32767
      0x8a,
      2,
      0x00,
      0x80, // LONG1 -32768
      0x74,
      0x2e, // TUPLE STOP
    ];
    expect(unpickle(Uint8Array.from(bytes), opts)).toEqual([3, new Map([['a', 4]]), [5], 32767, -32768]);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A STORED zip of the given entries (for crafted archives). */
function writeZip(name: string, entries: [string, Uint8Array][]): string {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [n, data] of entries) {
    const nb = Buffer.from(n);
    const crc = zlib.crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nb.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(data.length, 20);
    c.writeUInt32LE(data.length, 24);
    c.writeUInt16LE(nb.length, 28);
    c.writeUInt32LE(offset, 42);
    central.push(c, nb);
    parts.push(local, nb, Buffer.from(data));
    offset += 30 + nb.length + data.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  const f = path.join(tmp, name);
  fs.writeFileSync(f, Buffer.concat([...parts, cd, eocd]));
  return f;
}
