// Property-based tests (fast-check) of the file parsers: safetensors round trip and the header rules
// (accepted exactly when an independent model of the rules accepts), the strict JSON reader, the
// unpickler on random pickles, the zip reader (round trip, and BadFileError-or-intact on damage), IDX
// round trip. Fixed seeds and bounded runs: the file takes a few seconds.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import { BadFileError } from '../../lib/core/errors.js';
import { loadSafetensors, saveSafetensors, validateSafetensorsHeader } from '../../lib/io/safetensors.js';
import { JsonFloat, parseStrictJson, type JsonValue } from '../../lib/io/json.js';
import { PyCallable, unpickle } from '../../lib/io/unpickle.js';
import { ZipReader } from '../../lib/io/zip.js';
import { parseIdx } from '../../lib/data/idx.js';
import { native as N } from '../../lib/addon/binding.js';
import { DTYPE_SIZE, tensor, type DType, type Tensor } from '../../lib/index.js';
import { idxBytes, pickle, zipBytes, type PValue } from '../support/format-builders.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-prop-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const params = (numRuns: number) => ({ numRuns, seed: 20261129 });
let fileNo = 0;
const tmpFile = () => path.join(tmp, `p${++fileNo}`);

const ST: Record<string, DType> = {
  F32: 'float32',
  F64: 'float64',
  F16: 'float16',
  BF16: 'bfloat16',
  I32: 'int32',
  I64: 'int64',
  U8: 'uint8',
  I8: 'int8',
  I16: 'int16',
  BOOL: 'bool',
};
const DTYPES = Object.values(ST);

/** Tensor names: any Unicode, plus the names that break naive readers. */
const nameArb = fc
  .oneof(
    fc.string({ unit: 'binary', maxLength: 10 }),
    fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', '', 'a.b', '0'),
  )
  .filter((s) => s !== '__metadata__');

describe('safetensors', () => {
  test('round trip: random dtypes, shapes, names and metadata come back byte for byte', () => {
    const entry = fc.record({
      name: nameArb,
      dtype: fc.constantFrom(...DTYPES),
      shape: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
      fill: fc.integer({ min: 0, max: 255 }),
    });
    const meta = fc.uniqueArray(fc.tuple(fc.oneof(nameArb, fc.constant('__proto__')), fc.string({ unit: 'binary', maxLength: 6 })), {
      selector: ([k]) => k,
      maxLength: 3,
    });
    fc.assert(
      fc.property(fc.uniqueArray(entry, { selector: (e) => e.name, maxLength: 6 }), meta, (entries, metaPairs) => {
        const sd: Record<string, Tensor> = Object.create(null);
        const bytes: Record<string, Uint8Array> = Object.create(null);
        for (const e of entries) {
          const n = e.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[e.dtype];
          const b = Uint8Array.from({ length: n }, (_, i) => (e.dtype === 'bool' ? (e.fill + i) & 1 : (e.fill * 31 + i * 7) & 255));
          bytes[e.name] = b;
          sd[e.name] = tensor(b.slice().buffer, { dtype: e.dtype, shape: e.shape });
        }
        const metadata: Record<string, string> = Object.create(null);
        for (const [k, v] of metaPairs) metadata[k] = v;
        const f = tmpFile();
        try {
          saveSafetensors(sd, f, metadata);
          const r = loadSafetensors(f);
          try {
            expect(Object.keys(r.tensors).sort()).toEqual(entries.map((e) => e.name).sort());
            for (const e of entries) {
              const t = r.tensors[e.name];
              expect(t.dtype).toBe(e.dtype);
              expect(t.shape).toEqual(e.shape);
              expect(new Uint8Array(N.toBuffer(t._h))).toEqual(bytes[e.name]);
            }
            expect({ ...r.metadata }).toEqual({ ...metadata });
          } finally {
            for (const t of Object.values(r.tensors)) t.dispose();
          }
        } finally {
          for (const t of Object.values(sd)) t.dispose();
          fs.rmSync(f, { force: true });
        }
      }),
      params(60),
    );
  });

  // Header entries whose fields are valid or not; the text is written by hand so keys can repeat.
  const fieldArb = {
    name: fc.constantFrom('a', 'b', 'c', '__proto__', 'é'),
    dtype: fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...Object.keys(ST)) },
      { weight: 1, arbitrary: fc.constantFrom('F8_E4M3', 'f32', 'U16', 'toString', 3) },
    ),
    shape: fc.array(
      fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 0, max: 3 }) },
        { weight: 1, arbitrary: fc.constantFrom(-1, 1.5, '2', 2 ** 53, null) },
      ),
      { maxLength: 3 },
    ),
    offsets: fc.oneof(
      { weight: 6, arbitrary: fc.constant('auto' as const) },
      { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 40 })) },
      { weight: 1, arbitrary: fc.constantFrom([0], [0, 1, 2], 'x', [-1, 0]) },
    ),
  };
  const metaArb = fc.constantFrom('none', 'ok', 'null', 'number-value', 'array', 'twice');
  test('the header is accepted exactly when the format rules accept it', () => {
    const seen = { accepted: 0, rejected: 0 };
    fc.assert(
      fc.property(
        fc.array(fc.record(fieldArb), { maxLength: 5 }),
        metaArb,
        fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }) }),
        fc.boolean(),
        (entries, meta, slack, shuffle) => {
          // Auto offsets tile the data in order; explicit ones are whatever was drawn.
          let at = 0;
          const values = entries.map((e) => {
            const numel = e.shape.reduce((a: number, b) => a * (typeof b === 'number' ? b : 1), 1);
            const size = typeof e.dtype === 'string' && e.dtype in ST ? DTYPE_SIZE[ST[e.dtype]] : 1;
            let offs: unknown = e.offsets;
            if (e.offsets === 'auto') {
              offs = [at, at + Math.max(0, numel * size)];
              at += Math.max(0, numel * size);
            }
            return { dtype: e.dtype, shape: e.shape, data_offsets: offs };
          });
          if (shuffle) values.reverse();
          const names = entries.map((e) => e.name);
          const parts = values.map((v, i) => `${JSON.stringify(names[i])}:${JSON.stringify(v)}`);
          const metaText: Record<string, string> = {
            ok: '{"k":"v"}',
            null: 'null',
            'number-value': '{"k":1}',
            array: '["x"]',
            twice: '{"k":"v"}',
          };
          if (meta !== 'none') parts.push(`"__metadata__":${metaText[meta]}`);
          if (meta === 'twice') parts.push(`"__metadata__":${metaText[meta]}`);
          const text = `{${parts.join(',')}}`;
          const dataLength = Math.max(0, at + slack);

          // The model: the rules, written independently of the reader.
          const model = (): boolean => {
            const all = [...names, ...(meta === 'none' ? [] : ['__metadata__']), ...(meta === 'twice' ? ['__metadata__'] : [])];
            if (new Set(all).size !== all.length) return false;
            if (meta === 'number-value' || meta === 'array') return false;
            const ranges: [number, number][] = [];
            for (const v of values) {
              if (typeof v.dtype !== 'string' || !(v.dtype in ST)) return false;
              if (!v.shape.every((s) => Number.isSafeInteger(s) && (s as number) >= 0)) return false;
              const o = v.data_offsets;
              if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x) && x >= 0)) return false;
              const numel = (v.shape as number[]).reduce((a, b) => a * b, 1);
              if (o[1] < o[0] || o[1] - o[0] !== numel * DTYPE_SIZE[ST[v.dtype]]) return false;
              ranges.push([o[0], o[1]]);
            }
            ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
            let end = 0;
            for (const [b, e] of ranges) {
              if (b !== end) return false;
              end = e;
            }
            return end === dataLength;
          };
          let accepted = true;
          try {
            validateSafetensorsHeader(parseStrictJson(text), dataLength, 'h.safetensors');
          } catch (e) {
            if (!(e instanceof BadFileError)) {
              // A duplicate key is found by the JSON reader, which the loader turns into a BadFileError.
              expect((e as Error).message).toMatch(/duplicate key/);
            }
            accepted = false;
          }
          expect(accepted, text).toBe(model());
          seen[accepted ? 'accepted' : 'rejected']++;
        },
      ),
      params(400),
    );
    // Both sides of the rules are exercised.
    expect(seen.accepted).toBeGreaterThan(40);
    expect(seen.rejected).toBeGreaterThan(40);
  });

  test('strict JSON reads what JSON.parse reads, when keys are unique', () => {
    const plain = (v: JsonValue): unknown => {
      if (v instanceof JsonFloat) return v.value;
      if (typeof v === 'bigint') return Number(v);
      if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x)]));
      if (Array.isArray(v)) return v.map(plain);
      return v;
    };
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v);
        expect(plain(parseStrictJson(text))).toEqual(JSON.parse(text));
      }),
      params(300),
    );
  });
});

describe('unpickler', () => {
  const findClass = (m: string, n: string): unknown => {
    if (m === 'builtins' && n === 'set') return new PyCallable('builtins.set', (a) => new Set(a[0] as unknown[]));
    throw new Error(`no ${m}.${n}`);
  };
  /** What the unpickler gives for a value the builder pickled. */
  const expected = (v: PValue): unknown => {
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) return v;
      return Number.isSafeInteger(v) ? v + 0 : BigInt(v); // -0 is written as the int 0
    }
    if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    if (Array.isArray(v)) return v.map(expected);
    if (v instanceof Map) return new Map([...v].map(([k, x]) => [expected(k), expected(x)]));
    if (v instanceof Set) return new Set(v);
    if (v !== null && typeof v === 'object' && '$tuple' in v) return v.$tuple.map(expected);
    return v;
  };
  const { tree } = fc.letrec<{ tree: PValue; leaf: PValue }>((tie) => ({
    leaf: fc.oneof(
      fc.constant(null),
      fc.boolean(),
      fc.integer(),
      fc.bigInt({ min: -(2n ** 100n), max: 2n ** 100n }),
      fc.double(),
      fc.string({ unit: 'binary', maxLength: 12 }),
      fc.uint8Array({ maxLength: 8 }),
      fc.uniqueArray(fc.integer({ min: -1000, max: 1000 }), { maxLength: 4 }).map((a) => new Set(a)),
    ),
    tree: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      tie('leaf'),
      fc.array(tie('tree'), { maxLength: 4 }),
      fc.array(tie('tree'), { maxLength: 4 }).map((a) => ({ $tuple: a })),
      fc
        .uniqueArray(fc.tuple(fc.oneof(fc.string({ unit: 'binary', maxLength: 6 }), fc.integer()), tie('tree')), {
          selector: ([k]) => k,
          maxLength: 4,
        })
        .map((e) => new Map<PValue, PValue>(e)),
    ),
  }));
  test('random pickles of supported values unpickle to the same values', () => {
    fc.assert(
      fc.property(tree, (v) => {
        expect(unpickle(pickle(v), { file: 'x.pkl', findClass })).toEqual(expected(v));
      }),
      params(300),
    );
  });

  test('any damage to a pickle gives a value or a BadFileError, never another error', () => {
    fc.assert(
      fc.property(
        tree,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.nat(),
        (v, edits, cut) => {
          const p = pickle(v);
          for (const [at, b] of edits) p[at % p.length] = b;
          try {
            unpickle(p.subarray(0, p.length - (cut % 3)), {
              file: 'x.pkl',
              findClass: () => {
                throw new BadFileError('refused');
              },
            });
          } catch (e) {
            expect(e).toBeInstanceOf(BadFileError);
          }
        },
      ),
      params(300),
    );
  });
});

describe('zip reader', () => {
  const entriesArb = fc.uniqueArray(
    fc.tuple(fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }), fc.uint8Array({ maxLength: 300 })),
    { selector: ([n]) => n, minLength: 1, maxLength: 5 },
  );
  test('round trip, STORED and DEFLATE', () => {
    fc.assert(
      fc.property(entriesArb, fc.boolean(), (entries, deflate) => {
        const f = tmpFile();
        fs.writeFileSync(f, zipBytes(entries, { deflate }));
        const z = new ZipReader(f);
        try {
          expect(z.names()).toEqual(entries.map(([n]) => n));
          for (const [n, d] of entries) expect(z.read(n)).toEqual(d);
        } finally {
          z.close();
          fs.rmSync(f);
        }
      }),
      params(100),
    );
  });

  test('damage (byte edits, truncation) gives intact data or a BadFileError', () => {
    fc.assert(
      fc.property(
        entriesArb,
        fc.boolean(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        fc.nat(),
        (entries, deflate, edits, cut) => {
          const b = zipBytes(entries, { deflate });
          for (const [at, v] of edits) b[at % b.length] = v;
          const f = tmpFile();
          fs.writeFileSync(f, b.subarray(0, b.length - (cut % 4 === 0 ? cut % b.length : 0)));
          try {
            const z = new ZipReader(f);
            try {
              const want = new Map(entries);
              for (const n of z.names()) {
                const d = z.read(n);
                // CRC-32 catches every damaged payload that still parses (up to CRC collisions).
                if (want.has(n)) expect(d).toEqual(want.get(n));
              }
            } finally {
              z.close();
            }
          } catch (e) {
            expect(e).toBeInstanceOf(BadFileError);
          } finally {
            fs.rmSync(f);
          }
        },
      ),
      params(200),
    );
  });
});

describe('IDX', () => {
  const types = [
    { code: 0x08, size: 1, put: (dv: DataView, i: number, v: number) => dv.setUint8(i, v), gen: fc.integer({ min: 0, max: 255 }) },
    { code: 0x09, size: 1, put: (dv: DataView, i: number, v: number) => dv.setInt8(i, v), gen: fc.integer({ min: -128, max: 127 }) },
    { code: 0x0b, size: 2, put: (dv: DataView, i: number, v: number) => dv.setInt16(i, v), gen: fc.integer({ min: -32768, max: 32767 }) },
    { code: 0x0c, size: 4, put: (dv: DataView, i: number, v: number) => dv.setInt32(i, v), gen: fc.integer() },
    { code: 0x0d, size: 4, put: (dv: DataView, i: number, v: number) => dv.setFloat32(i, v), gen: fc.float({ noNaN: true }) },
    { code: 0x0e, size: 8, put: (dv: DataView, i: number, v: number) => dv.setFloat64(i, v), gen: fc.double({ noNaN: true }) },
  ];
  test('round trip of every type and shape; any other length is a BadFileError', () => {
    const arb = fc
      .tuple(fc.integer({ min: 0, max: types.length - 1 }), fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 3 }))
      .chain(([t, shape]) =>
        fc.tuple(
          fc.constant(t),
          fc.constant(shape),
          fc.array(types[t].gen, { minLength: shape.reduce((a, b) => a * b, 1), maxLength: shape.reduce((a, b) => a * b, 1) }),
          fc.integer({ min: -2, max: 2 }),
        ),
      );
    fc.assert(
      fc.property(arb, ([t, shape, values, slack]) => {
        const ty = types[t];
        const payload = new Uint8Array(values.length * ty.size);
        const dv = new DataView(payload.buffer);
        values.forEach((v, i) => ty.put(dv, i * ty.size, v));
        const got = parseIdx(idxBytes(ty.code, shape, payload), 'p');
        expect(got.shape).toEqual(shape);
        expect(Array.from(got.data)).toEqual(values.map((v) => (ty.code === 0x0d ? Math.fround(v) : v)));
        if (slack !== 0 && payload.length + slack >= 0) {
          const other = slack > 0 ? Uint8Array.from([...payload, ...new Uint8Array(slack)]) : payload.subarray(0, payload.length + slack);
          expect(() => parseIdx(idxBytes(ty.code, shape, other), 'p')).toThrow(BadFileError);
        }
      }),
      params(200),
    );
  });
});
