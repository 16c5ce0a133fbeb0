// Mutation fuzz of TensorFlow.js models read by the residual backend's file:// handler (lib/tfjs/io.ts):
// model.json (structure-aware mutations of the weights manifest and the rest of the JSON, drawn with
// fast-check from a fixed seed, and byte-level mutations of the JSON text) and the weights files
// (truncated, extended, replaced by a FIFO, a folder or a symlink out of the folder). Every mutant is
// loaded in a child process (many per child, 512 MB V8 heap, test/fixtures/tfjs-io-child.mjs) with the
// handler, and its weights decoded with tf.io.decodeWeights; mutants that leave the topology alone are
// also loaded with tf.loadLayersModel and run once. Every case must end in a successful load or a
// clear error (BadFileError from the handler; tfjs-layers' own errors for a manifest that does not fit
// the topology), within a per-case bound only a hang can miss; a child that dies (signal, V8 fatal
// error, runaway allocation) fails the test naming the case and its seed. A file outside the model's
// folder (secret.bin, sized like the weights, full of a marker) must never be read: a load whose weight
// data holds the marker fails the test.
//
// RESIDUAL_FUZZ_CASES sets the number of mutants (default 300); RESIDUAL_FUZZ_SEED the base seed
// (default 1). The same seed gives the same mutants.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterAll, describe, expect, test } from 'vitest';
import '../../lib/tfjs/index.js';
import { runChildCases, type ChildCasesOutcome } from '../support/child-cases.js';
import { fixtures } from '../support/helpers.js';

const CASES = Number(process.env.RESIDUAL_FUZZ_CASES ?? 300);
const BASE_SEED = Number(process.env.RESIDUAL_FUZZ_SEED ?? 1);
/** A hang detector, not a performance bound: every model here is a few kilobytes. */
const CASE_LIMIT_MS = 5000;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tfjs-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const MARKER = '5ec4e75ec4e7c0de';

interface Case {
  model: string;
  how: 'handler' | 'layers';
  marker: string;
  /** How to reproduce: seed, seed model, mutations. */
  what: string;
}
interface Result {
  i: number;
  r: string;
  ms: number;
  m?: string;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Hostile values for weights paths: out of the folder, special files, odd names. */
function hostilePaths(dir: string, secret: string): string[] {
  return [
    '../secret.bin',
    secret,
    '/dev/zero',
    '/proc/self/environ',
    'fifo',
    'link-out',
    'link-zero',
    'link-dir/secret.bin',
    'sub',
    '.',
    '..',
    '',
    'sub/../../secret.bin',
    './sub/../w.bin',
    'missing.bin',
    'w\u0000.bin',
    'x'.repeat(5000),
    'C:\\secret.bin',
    '%2e%2e/secret.bin',
    `${dir}/../secret.bin`,
    'w.bin/',
  ];
}
/** Hostile JSON values for any field. */
const HOSTILE: Json[] = [
  null,
  true,
  -1,
  0,
  0.5,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 60,
  1e308,
  -0,
  '',
  'float64',
  'string',
  'complex64',
  [],
  {},
  [[[[[]]]]],
  [-1],
  [2 ** 31, 2 ** 31],
  [1e300],
  { dtype: 'uint8' },
  { dtype: 'float16' },
];

/** All JSON pointers (as key lists) into `v`. */
function pointers(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => pointers(x, [...at, i], out));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) pointers(x, [...at, k], out);
  return out;
}
function getAt(v: Json, p: (string | number)[]): Json {
  return p.reduce<Json>((o, k) => (o as Record<string | number, Json>)[k], v);
}
function setAt(v: Json, p: (string | number)[], x: Json | undefined): Json {
  if (p.length === 0) return x === undefined ? null : x;
  const parent = getAt(v, p.slice(0, -1)) as Record<string | number, Json> | Json[];
  const k = p[p.length - 1];
  if (x === undefined) {
    if (Array.isArray(parent)) parent.splice(k as number, 1);
    else delete (parent as Record<string, Json>)[k as string];
  } else (parent as Record<string | number, Json>)[k] = x;
  return v;
}

/** One structured mutation program, drawn by fast-check (values are indices into the lists above). */
const program = fc.array(
  fc.record({
    kind: fc.constantFrom('path', 'hostile', 'json', 'delete', 'dup', 'shape', 'bytes', 'weights'),
    pick: fc.nat(),
    value: fc.jsonValue({ maxDepth: 2 }),
    n: fc.nat(),
  }),
  { minLength: 1, maxLength: 3 },
);
type Program = typeof program extends fc.Arbitrary<infer T> ? T : never;

/** Byte-level mutation of a text (flip, set, insert, delete, truncate, a number replaced). */
function mutateBytes(b: Uint8Array, n: number, pick: number): { bytes: Uint8Array; op: string } {
  const pos = pick % (b.length + 1);
  switch (n % 5) {
    case 0: {
      const out = Uint8Array.from(b);
      if (out.length) out[Math.min(pos, out.length - 1)] ^= 1 << (n % 8);
      return { bytes: out, op: `flip ${pos}` };
    }
    case 1:
      return {
        bytes: Uint8Array.from([
          ...b.subarray(0, pos),
          ...new TextEncoder().encode(['"', '{', ']', ',', '\\u0000', '99999999999'][n % 6]),
          ...b.subarray(pos),
        ]),
        op: `insert ${pos}`,
      };
    case 2:
      return { bytes: Uint8Array.from([...b.subarray(0, pos), ...b.subarray(pos + 1 + (n % 16))]), op: `delete ${pos}` };
    case 3:
      return { bytes: b.slice(0, pos), op: `truncate ${pos}` };
    default: {
      const text = Buffer.from(b).toString('latin1');
      const runs = [...text.matchAll(/\d+/g)];
      if (!runs.length) return { bytes: b, op: 'none' };
      const m = runs[pick % runs.length];
      const rep = ['0', '-1', '4294967296', '9007199254740993', '1e308', '1.5', '2147483648'][n % 7];
      return {
        bytes: Uint8Array.from([...b.subarray(0, m.index!), ...Buffer.from(rep, 'latin1'), ...b.subarray(m.index! + m[0].length)]),
        op: `number ${m[0]}->${rep}`,
      };
    }
  }
}

/** Runs the cases in child processes (test/support/child-cases.ts). */
async function runCases(cases: Case[]): Promise<ChildCasesOutcome<Result>> {
  const file = path.join(tmp, 'cases.json');
  fs.writeFileSync(file, JSON.stringify(cases));
  const child = path.join(fixtures, 'tfjs-io-child.mjs');
  return runChildCases<Result>({ child, args: [file], count: cases.length, what: (i) => cases[i].what, caseLimitMs: CASE_LIMIT_MS });
}

describe('mutation fuzz of tfjs model.json + weights (child processes, 512 MB heap)', () => {
  test('every mutant loads or is refused with a clear error; none crashes, hangs or reads outside its folder', async () => {
    if (process.platform === 'win32') return; // FIFOs and symlinks as planted here are POSIX
    await tf.setBackend('residual');
    // Seed models: a layers model saved by the handler, and a hand-made manifest of several groups and
    // shards with every weight kind tfjs decodes (strings, bool, complex, quantized).
    const seedDir = path.join(tmp, 'seed');
    const m = tfl.sequential({
      layers: [
        tfl.layers.conv2d({ inputShape: [4, 4, 1], filters: 2, kernelSize: 3 }),
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 3 }),
      ],
    });
    await m.save(`file://${seedDir}`);
    m.dispose();
    const layersJson = JSON.parse(fs.readFileSync(path.join(seedDir, 'model.json'), 'utf8')) as Json;
    const layersWeights = new Uint8Array(fs.readFileSync(path.join(seedDir, 'weights.bin')));
    const enc = await tf.io.encodeWeights({
      s: tf.tensor1d(['a', 'bc', ''], 'string'),
      b: tf.tensor1d([true, false], 'bool'),
      z: tf.complex([1], [2]),
      i: tf.tensor1d([3, 4], 'int32'),
    });
    const encBytes = new Uint8Array(enc.data as ArrayBuffer);
    const q = Uint8Array.from([1, 2, 3, 0, 60, 0, 188]); // uint8 x3, float16 1 and -1
    const mixedJson: Json = {
      modelTopology: { note: 'manifest only' },
      weightsManifest: [
        { paths: ['w.bin', 'w2.bin'], weights: enc.specs as unknown as Json },
        {
          paths: ['q.bin'],
          weights: [
            { name: 'q', shape: [3], dtype: 'float32', quantization: { dtype: 'uint8', min: 0, scale: 0.5 } },
            { name: 'h', shape: [2], dtype: 'float32', quantization: { dtype: 'float16' } },
          ],
        },
      ],
    };
    const seeds = [
      { name: 'layers', json: layersJson, files: { 'w.bin': layersWeights } as Record<string, Uint8Array>, layers: true },
      {
        name: 'mixed',
        json: mixedJson,
        files: { 'w.bin': encBytes.subarray(0, 9), 'w2.bin': encBytes.subarray(9), 'q.bin': q } as Record<string, Uint8Array>,
        layers: false,
      },
    ];
    // The layers seed names its file w.bin (the handler wrote ./weights.bin).
    (layersJson as { weightsManifest: { paths: string[] }[] }).weightsManifest[0].paths = ['w.bin'];
    // Outside every model folder: the secret, sized like each seed's first weights file.
    const secret = path.join(tmp, 'secret.bin');
    const size = Math.max(layersWeights.length, 64);
    fs.writeFileSync(secret, Buffer.alloc(size, Buffer.from(MARKER, 'hex')));

    const arb = fc.tuple(fc.nat({ max: seeds.length - 1 }), program);
    const drawn = fc.sample(arb, { seed: BASE_SEED, numRuns: CASES });
    const cases: Case[] = [];
    for (const [i, [si, prog]] of drawn.entries()) {
      const seed = seeds[si];
      const dir = path.join(tmp, `c${i}`);
      fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
      // Planted in every folder: a FIFO, links out (to the secret, /dev/zero, a folder outside), a folder.
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
      fs.symlinkSync(secret, path.join(dir, 'link-out'));
      fs.symlinkSync('/dev/zero', path.join(dir, 'link-zero'));
      fs.symlinkSync(tmp, path.join(dir, 'link-dir'));
      for (const [name, data] of Object.entries(seed.files)) fs.writeFileSync(path.join(dir, name), data);
      let json = structuredClone(seed.json);
      let text: Uint8Array | null = null;
      const ops: string[] = [];
      let topologyTouched = false;
      for (const step of prog as Program) {
        const ptrs = pointers(json);
        const inManifest = ptrs.filter((p) => p[0] === 'weightsManifest');
        // Three in four mutations hit the weights manifest.
        const pool = inManifest.length && step.pick % 4 !== 0 ? inManifest : ptrs;
        const p = pool[step.n % pool.length];
        if (['hostile', 'json', 'delete', 'dup'].includes(step.kind) && p[0] !== 'weightsManifest') topologyTouched = true;
        switch (step.kind) {
          case 'path': {
            const paths = ptrs.filter((x) => x[0] === 'weightsManifest' && x[2] === 'paths' && x.length === 4);
            const hp = hostilePaths(dir, secret);
            const v = hp[step.pick % hp.length];
            if (paths.length) json = setAt(json, paths[step.n % paths.length], v);
            ops.push(`path ${JSON.stringify(v).slice(0, 40)}`);
            break;
          }
          case 'hostile':
            json = setAt(json, p, HOSTILE[step.pick % HOSTILE.length]);
            ops.push(`${p.join('.')}=${JSON.stringify(HOSTILE[step.pick % HOSTILE.length])}`);
            break;
          case 'json':
            json = setAt(json, p, step.value as Json);
            ops.push(`${p.join('.')}=${JSON.stringify(step.value).slice(0, 40)}`);
            break;
          case 'delete':
            json = setAt(json, p, undefined);
            ops.push(`delete ${p.join('.')}`);
            break;
          case 'dup': {
            const parent = p.length ? getAt(json, p.slice(0, -1)) : null;
            if (Array.isArray(parent)) parent.push(structuredClone(parent[p[p.length - 1] as number]));
            ops.push(`dup ${p.join('.')}`);
            break;
          }
          case 'shape': {
            const shapes = ptrs.filter((x) => x[x.length - 1] === 'shape');
            if (shapes.length)
              json = setAt(
                json,
                shapes[step.n % shapes.length],
                [[2 ** 31, 2 ** 31], [0], [1e9], [-2], [3, 0.5], [2 ** 26]][step.pick % 6],
              );
            ops.push('shape');
            break;
          }
          case 'bytes': {
            const r = mutateBytes(text ?? new TextEncoder().encode(JSON.stringify(json)), step.n, step.pick);
            text = r.bytes;
            topologyTouched = true;
            ops.push(`text ${r.op}`);
            break;
          }
          default: {
            // The first weights file: truncated, extended, or replaced by a FIFO / folder / link out.
            const w = path.join(dir, 'w.bin');
            const data = seed.files['w.bin'];
            const k = step.n % 6;
            fs.rmSync(w, { recursive: true, force: true });
            if (k === 0) fs.writeFileSync(w, data.subarray(0, step.pick % (data.length + 1)));
            else if (k === 1) fs.writeFileSync(w, Uint8Array.from([...data, ...new Uint8Array(1 + (step.pick % 64))]));
            else if (k === 2) execFileSync('mkfifo', [w]);
            else if (k === 3) fs.mkdirSync(w);
            else if (k === 4) fs.symlinkSync(secret, w);
            else fs.symlinkSync('/dev/zero', w);
            ops.push(`weights ${['truncated', 'extended', 'FIFO', 'folder', 'link to secret', 'link to /dev/zero'][k]}`);
          }
        }
      }
      const file = path.join(dir, 'model.json');
      fs.writeFileSync(file, text ?? JSON.stringify(json));
      const what = `seed ${BASE_SEED} case ${i}, ${seed.name}, ${ops.join('; ')}`;
      cases.push({ model: file, how: 'handler', marker: MARKER, what });
      if (seed.layers && !topologyTouched) cases.push({ model: file, how: 'layers', marker: MARKER, what: `${what} (tf.loadLayersModel)` });
    }

    const out = await runCases(cases);
    const by: Record<string, number> = {};
    for (const r of out.results) by[`${cases[r.i].how} ${r.r}`] = (by[`${cases[r.i].how} ${r.r}`] ?? 0) + 1;
    const slowest = Math.max(0, ...out.results.map((r) => r.ms));
    console.log(
      `fuzz tfjs model: ${cases.length} cases (${CASES} mutants), ${JSON.stringify(by)}, crashes ${out.crashes.length}, slowest ${slowest} ms, child max RSS ${Math.round(out.maxRSS / 2 ** 20)} MiB`,
    );
    for (const r of out.results)
      if (cases[r.i].how === 'layers' && r.r !== 'ok' && r.r !== 'error:BadFileError')
        console.log(`tf.loadLayersModel refused case ${r.i}: ${r.r}: ${r.m}`);
    expect(out.crashes, 'crashed cases').toEqual([]);
    expect(out.results.length).toBe(cases.length);
    // The handler: a load, or a BadFileError naming the file; never a read of the secret.
    const leaks = out.results.filter((r) => r.r === 'leak').map((r) => `case ${r.i} (${cases[r.i].what})`);
    expect(leaks, 'loads that read the file outside the folder').toEqual([]);
    const wrong = out.results
      .filter(
        (r) =>
          r.r !== 'ok' &&
          (cases[r.i].how === 'handler'
            ? r.r !== 'error:BadFileError' || !/^file:\/\/ load: /.test(r.m ?? '')
            : !/^error:/.test(r.r) || !r.m || /Cannot read propert|is not a function|is not iterable/.test(r.m)),
      )
      .map((r) => `case ${r.i} (${cases[r.i].what}): ${r.r}: ${r.m}`);
    expect(wrong, 'outcomes other than a load or a clear error').toEqual([]);
    const slow = out.results.filter((r) => r.ms > CASE_LIMIT_MS).map((r) => `case ${r.i} (${cases[r.i].what}): ${r.ms} ms`);
    expect(slow, `cases over ${CASE_LIMIT_MS} ms`).toEqual([]);
    expect(out.maxRSS, 'child memory').toBeLessThan(1.5 * 2 ** 30);
    // The fuzz reaches both sides: some mutants load, most are refused.
    expect(out.results.some((r) => r.r === 'ok')).toBe(true);
    expect(out.results.some((r) => r.r === 'error:BadFileError')).toBe(true);
  });
});
