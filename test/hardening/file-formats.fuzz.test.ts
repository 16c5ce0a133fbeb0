// Mutation fuzz of every file format residual reads: small valid files (generated here, plus the real
// torch.save fixtures) get seeded random mutations (bit flips, byte insert / delete, truncation,
// splices, integer fields set to boundary values, numbers in text headers replaced), and each mutant is
// loaded in a child process (many per child) that runs with a 512 MB V8 heap. Every case must end in a
// successful load or a BadFileError, within a per-case bound that only a hang can miss; a child that
// dies (signal, V8 fatal error, runaway allocation) fails the test naming the case and its seed.
//
// RESIDUAL_FUZZ_CASES sets the number of mutants per format (default 300); RESIDUAL_FUZZ_SEED the
// base seed (default 1). The same seed gives the same mutants.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, describe, expect, test } from 'vitest';
import { save } from '../../lib/io/index.js';
import { ZipReader } from '../../lib/io/zip.js';
import { tensor, type Tensor } from '../../lib/index.js';
import { cifarBytes, f32, idxBytes, safetensorsBytes, torchArchive, zipBytes, type PValue } from '../support/format-builders.js';
import { runChildCases, type ChildCasesOutcome } from '../support/child-cases.js';
import { fixtures } from '../support/helpers.js';

const CASES = Number(process.env.RESIDUAL_FUZZ_CASES ?? 300);
const BASE_SEED = Number(process.env.RESIDUAL_FUZZ_SEED ?? 1);
/** A hang detector, not a performance bound: every file here is a few kilobytes. */
const CASE_LIMIT_MS = 5000;
const child = path.join(fixtures, 'format-fuzz-child.mjs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** mulberry32: a small seeded PRNG (deterministic across platforms). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BOUNDARY = [
  0,
  1,
  2,
  0x7f,
  0x80,
  0xff,
  0x100,
  0x7fff,
  0x8000,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xffffffff,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 63,
  2 ** 64 - 1,
];
const TEXT_NUMBERS = [
  '0',
  '1',
  '-1',
  '2',
  '255',
  '4294967295',
  '4294967296',
  '9007199254740991',
  '9007199254740993',
  '18446744073709551615',
  '1e308',
  '-0',
  '1.5',
  '100000000',
];

/** Applies 1-3 random mutations; returns the mutant and a description of what was done. */
function mutate(src: Uint8Array, r: () => number, donors: Uint8Array[]): { bytes: Uint8Array; ops: string[] } {
  let b = Uint8Array.from(src);
  const ops: string[] = [];
  const int = (n: number): number => Math.floor(r() * n);
  const count = 1 + int(3);
  for (let k = 0; k < count; k++) {
    const pos = int(b.length + 1);
    switch (int(8)) {
      case 0: {
        if (!b.length) break;
        const p = Math.min(pos, b.length - 1);
        const bit = int(8);
        b[p] ^= 1 << bit;
        ops.push(`flip ${p}:${bit}`);
        break;
      }
      case 1: {
        if (!b.length) break;
        const p = Math.min(pos, b.length - 1);
        b[p] = int(256);
        ops.push(`set ${p}=${b[p]}`);
        break;
      }
      case 2: {
        const n = 1 + int(8);
        const ins = Uint8Array.from({ length: n }, () => int(256));
        b = Uint8Array.from([...b.subarray(0, pos), ...ins, ...b.subarray(pos)]);
        ops.push(`insert ${pos}+${n}`);
        break;
      }
      case 3: {
        const n = 1 + int(16);
        b = Uint8Array.from([...b.subarray(0, pos), ...b.subarray(pos + n)]);
        ops.push(`delete ${pos}+${n}`);
        break;
      }
      case 4:
        b = b.slice(0, pos);
        ops.push(`truncate ${pos}`);
        break;
      case 5: {
        const d = donors[int(donors.length)];
        const from = int(d.length);
        const n = 1 + int(Math.min(64, d.length - from));
        const chunk = d.subarray(from, from + n);
        if (r() < 0.5) {
          const out = Uint8Array.from(b);
          out.set(chunk.subarray(0, Math.max(0, out.length - pos)), pos);
          b = out;
        } else b = Uint8Array.from([...b.subarray(0, pos), ...chunk, ...b.subarray(pos)]);
        ops.push(`splice ${pos}<-${from}+${n}`);
        break;
      }
      case 6: {
        const width = [1, 2, 4, 8][int(4)];
        if (b.length < width) break;
        const p = Math.min(pos, b.length - width);
        const v = BigInt(BOUNDARY[int(BOUNDARY.length)]) & ((1n << BigInt(8 * width)) - 1n);
        const le = r() < 0.7;
        for (let j = 0; j < width; j++) b[p + (le ? j : width - 1 - j)] = Number((v >> BigInt(8 * j)) & 255n);
        ops.push(`int${width * 8}${le ? 'le' : 'be'} ${p}=${v}`);
        break;
      }
      default: {
        // A number written in text (a JSON header) replaced by a boundary value.
        const text = Buffer.from(b.subarray(0, 4096)).toString('latin1');
        const runs = [...text.matchAll(/\d+/g)];
        if (!runs.length) break;
        const m = runs[int(runs.length)];
        const rep = Buffer.from(TEXT_NUMBERS[int(TEXT_NUMBERS.length)], 'latin1');
        b = Uint8Array.from([...b.subarray(0, m.index!), ...rep, ...b.subarray(m.index! + m[0].length)]);
        ops.push(`number ${m.index}:${m[0]}->${rep.toString('latin1')}`);
      }
    }
  }
  return { bytes: b, ops };
}

interface Case {
  format: 'safetensors' | 'pt' | 'idx' | 'cifar';
  files: string[];
  variant?: string;
  /** How to reproduce: seed, seed file, mutations. */
  what: string;
}
interface Result {
  i: number;
  r: string;
  ms: number;
  m?: string;
}

/** Runs the cases in child processes (test/support/child-cases.ts). */
async function runCases(cases: Case[]): Promise<ChildCasesOutcome<Result>> {
  const file = path.join(tmp, `cases-${cases[0].format}.json`);
  fs.writeFileSync(file, JSON.stringify(cases));
  return runChildCases<Result>({ child, args: [file], count: cases.length, what: (i) => cases[i].what, caseLimitMs: CASE_LIMIT_MS });
}

function summary(format: string, cases: Case[], out: { results: Result[]; crashes: string[]; maxRSS: number }): string {
  const by: Record<string, number> = {};
  for (const r of out.results) by[r.r] = (by[r.r] ?? 0) + 1;
  const slowest = Math.max(0, ...out.results.map((r) => r.ms));
  return `fuzz ${format}: ${cases.length} cases, ${JSON.stringify(by)}, crashes ${out.crashes.length}, slowest ${slowest} ms, child max RSS ${Math.round(out.maxRSS / 2 ** 20)} MiB`;
}

function check(format: string, cases: Case[], out: { results: Result[]; crashes: string[]; maxRSS: number }): void {
  console.log(summary(format, cases, out));
  expect(out.crashes, 'crashed cases').toEqual([]);
  const wrong = out.results
    .filter((r) => r.r !== 'ok' && r.r !== 'error:BadFileError')
    .map((r) => `case ${r.i} (${cases[r.i].what}): ${r.r}: ${r.m}`);
  expect(wrong, 'outcomes other than ok / BadFileError').toEqual([]);
  const slow = out.results.filter((r) => r.ms > CASE_LIMIT_MS).map((r) => `case ${r.i} (${cases[r.i].what}): ${r.ms} ms`);
  expect(slow, `cases over ${CASE_LIMIT_MS} ms`).toEqual([]);
  expect(out.results.length).toBe(cases.length);
  expect(out.maxRSS, 'child memory').toBeLessThan(1.5 * 2 ** 30);
}

/** Writes mutants of `seeds` (chosen per case) as cases of `format`. */
function makeCases(
  format: Case['format'],
  seeds: { name: string; bytes: Uint8Array; mutate?: (b: Uint8Array) => Uint8Array }[],
  files: (mutant: string, seedName: string) => Pick<Case, 'files' | 'variant'>,
  seedOffset: number,
): Case[] {
  const dir = path.join(tmp, format);
  fs.mkdirSync(dir, { recursive: true });
  const donors = seeds.map((s) => s.bytes);
  const cases: Case[] = [];
  for (let i = 0; i < CASES; i++) {
    const seed = BASE_SEED * 1_000_003 + seedOffset + i;
    const r = rng(seed);
    const s = seeds[Math.floor(r() * seeds.length)];
    const { bytes, ops } = mutate(s.bytes, r, donors);
    const f = path.join(dir, `m${i}`);
    fs.writeFileSync(f, s.mutate ? s.mutate(bytes) : bytes);
    cases.push({ format, ...files(f, s.name), what: `seed ${seed}, ${s.name}, ${ops.join(', ')}` });
  }
  return cases;
}

describe('mutation fuzz (child processes, 512 MB heap)', () => {
  test('safetensors', async () => {
    const a = path.join(tmp, 'seed-a.safetensors');
    const sd: Record<string, Tensor> = Object.create(null);
    sd.w = tensor([
      [1, 2],
      [3, 4],
    ]);
    sd['__proto__'] = tensor([5], { dtype: 'int64' });
    sd.empty = tensor([], { dtype: 'float16' });
    sd['é.☃'] = tensor([1, 0, 1], { dtype: 'uint8' });
    save(sd, a, { note: 'seed', n: '3' });
    for (const t of Object.values(sd)) t.dispose();
    const b = safetensorsBytes(
      {
        x: { dtype: 'BF16', shape: [2, 1], data_offsets: [0, 4] },
        y: { dtype: 'I32', shape: [], data_offsets: [4, 8] },
        __metadata__: { k: 'v' },
      },
      new Uint8Array(8).fill(7),
    );
    const c = safetensorsBytes({ z: { dtype: 'BOOL', shape: [0, 3], data_offsets: [0, 0] } });
    const seeds = [
      { name: 'saved', bytes: new Uint8Array(fs.readFileSync(a)) },
      { name: 'bf16+i32', bytes: new Uint8Array(b) },
      { name: 'empty', bytes: new Uint8Array(c) },
    ];
    const cases = makeCases('safetensors', seeds, (f) => ({ files: [f] }), 0);
    check('safetensors', cases, await runCases(cases));
  });

  test('.pt (zip-level and pickle-level mutations)', async () => {
    const torchDir = path.join(fixtures, 'torch');
    const real = [
      'model_state.pt',
      'model_state_p4.pt',
      'mixed.pt',
      'mixed_deflate.pt',
      'zip64.pt',
      'plain_p2.pt',
      'cuda_location.pt',
      'model_state_bigendian.pt',
    ];
    let shared: PValue = [{ $tensor: { storage: '0', numel: 4, size: [2, 2], stride: [1, 2] } }];
    for (let k = 0; k < 6; k++) shared = [shared, shared];
    const made = torchArchive(
      new Map<PValue, PValue>([
        ['expanded', { $tensor: { storage: '0', numel: 4, size: [3, 4], stride: [0, 1] } }],
        ['shared', shared],
        ['big', 2n ** 70n],
        ['t', { $tuple: [1.5, 'x', null, true] }],
      ]),
      { 0: f32(1, 2, 3, 4) },
    );
    const seeds: { name: string; bytes: Uint8Array; mutate?: (b: Uint8Array) => Uint8Array }[] = [];
    for (const name of real) seeds.push({ name, bytes: new Uint8Array(fs.readFileSync(path.join(torchDir, name))) });
    seeds.push({ name: 'generated', bytes: new Uint8Array(made) });
    // Pickle-level seeds: the mutation hits data.pkl, and the archive is rebuilt with valid CRCs, so
    // the mutant reaches the unpickler and the tensor checks instead of failing the CRC check.
    for (const { name, bytes } of [...seeds]) {
      const f = path.join(tmp, `seed-${name}`);
      fs.writeFileSync(f, bytes);
      const zr = new ZipReader(f);
      const entries: [string, Uint8Array][] = zr.names().map((n) => [n, zr.read(n)]);
      zr.close();
      const pkl = entries.find(([n]) => n.endsWith('/data.pkl'))!;
      seeds.push({
        name: `${name} (pickle)`,
        bytes: pkl[1],
        mutate: (p) => zipBytes(entries.map(([n, d]): [string, Uint8Array] => [n, n === pkl[0] ? p : d])),
      });
    }
    const cases = makeCases('pt', seeds, (f) => ({ files: [f] }), 100_000);
    check('.pt', cases, await runCases(cases));
  });

  test('IDX (images and labels, raw and gzip)', async () => {
    const n = 6;
    const img = idxBytes(
      0x08,
      [n, 4, 3],
      Uint8Array.from({ length: n * 12 }, (_, i) => i & 255),
    );
    const lab8 = idxBytes(
      0x08,
      [n],
      Uint8Array.from({ length: n }, (_, i) => i % 3),
    );
    const lab32 = Buffer.alloc(4 * n);
    for (let i = 0; i < n; i++) lab32.writeInt32BE(i, 4 * i);
    const lab32f = idxBytes(0x0c, [n], lab32);
    const good = { img: path.join(tmp, 'seed-img'), lab: path.join(tmp, 'seed-lab') };
    fs.writeFileSync(good.img, img);
    fs.writeFileSync(good.lab, lab8);
    const gz = (b: Uint8Array) => zlib.gzipSync(b);
    const seeds = [
      { name: 'images', bytes: new Uint8Array(img) },
      { name: 'labels u8', bytes: new Uint8Array(lab8) },
      { name: 'labels i32', bytes: new Uint8Array(lab32f) },
      { name: 'labels i32 gz', bytes: new Uint8Array(lab32f), mutate: gz },
      { name: 'images gz', bytes: new Uint8Array(img), mutate: gz },
    ];
    // The mutant is the image file when its seed is an image file, else the label file.
    const cases = makeCases('idx', seeds, (f, seed) => ({ files: seed.startsWith('images') ? [f, good.lab] : [good.img, f] }), 200_000);
    check('IDX', cases, await runCases(cases));
  });

  test('CIFAR-10 / CIFAR-100 binary', async () => {
    const seeds = [
      { name: 'cifar10', bytes: new Uint8Array(cifarBytes([[3], [9]])) },
      {
        name: 'cifar100',
        bytes: new Uint8Array(
          cifarBytes([
            [19, 99],
            [0, 0],
          ]),
        ),
      },
    ];
    // The variant follows the seed, so the mutant is read as what it was.
    const cases = makeCases('cifar', seeds, (f, seed) => ({ files: [f], variant: seed }), 300_000);
    check('CIFAR', cases, await runCases(cases));
  });
});
