// Mutation fuzz of checkpoint.json (lib/train/checkpoint.ts, lib/train/state.ts). A real run's sidecar
// gets seeded mutations, drawn with fast-check from a fixed seed: values anywhere in the document replaced
// by boundary values (negative, fractional, huge, 2^60, strings for numbers, paths out of the folder,
// null, arrays, objects), keys deleted or added ('__proto__' among them), elements repeated, and damage
// to the text (a number written as 1e999, 1e308 or 2^64, a key repeated, the text cut, a character
// changed). Each mutant is resumed by a Trainer in a child process (many per child), in a copy of the run
// folder. Every case must be accepted (checked, restored, its records trimmed) or refused with a
// BadFileError, within a bound only a hang can miss; a refusal must leave metrics.jsonl, config.json and
// the weights as they were; a child that dies fails the test naming the case and how to make it again.
// One refusal is not about the file: a valid checkpoint of a run with another world size is refused for
// this single-process job with the message that says so.
//
// RESIDUAL_FUZZ_CASES sets the number of mutants (default 300); RESIDUAL_FUZZ_SEED the seed (default 1).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Trainer } from '../../lib/train/index.js';
import { runChildCases, type ChildCasesOutcome } from '../support/child-cases.js';
import { fixtures } from '../support/helpers.js';

const CASES = Number(process.env.RESIDUAL_FUZZ_CASES ?? 300);
const SEED = Number(process.env.RESIDUAL_FUZZ_SEED ?? 1);
/** A hang detector, not a performance bound: an accepted case reads a 4 MB weights file. */
const CASE_LIMIT_MS = 10_000;
const child = path.join(fixtures, 'checkpoint-fuzz-child.mjs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-ckpt-fuzz-'));
const seedRun = path.join(tmp, 'seed-run');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  // AdamW (per-parameter step counts), a warm-up before a multistep schedule (nested schedule states).
  const t = new Trainer({
    model: 'resnet20',
    data: 'synthetic',
    syntheticTrain: 64,
    syntheticTest: 32,
    batchSize: 16,
    epochs: 2,
    optimizer: 'adamw',
    lr: 0.01,
    schedule: 'multistep',
    warmupEpochs: 1,
    logEvery: 1,
    workers: 1,
    limitTestBatches: 1,
    device: 'cpu',
    out: seedRun,
  });
  await t.fit();
  t.dispose();
}, 300_000);

// ---- mutations -------------------------------------------------------------------------------------

const BOUNDARY: unknown[] = [
  -5,
  -1,
  0,
  0.5,
  1,
  2,
  3,
  8,
  9,
  255,
  65536,
  65537,
  2 ** 31,
  2 ** 53,
  2 ** 60,
  1e308,
  -1e308,
  '2',
  '',
  'x',
  'cuda',
  'OneCycleLR',
  '../x',
  '/etc/passwd',
  '../other/checkpoint-e0002-s0000008.safetensors',
  'checkpoint-e0001-s0000004.safetensors',
  null,
  true,
  false,
  [],
  {},
  [1, 2],
  { a: 1 },
  '__proto__',
];
const TEXT_NUMBERS = ['1e999', '-1e999', '1e308', '1.5', '-0', '9007199254740993', '18446744073709551615', '0.1', '-1'];
type Op =
  | { kind: 'set'; at: number; value: unknown }
  | { kind: 'delete'; at: number }
  | { kind: 'add'; at: number; key: string; value: unknown }
  | { kind: 'repeat'; at: number }
  | { kind: 'number'; at: number; text: string }
  | { kind: 'dupkey'; at: number }
  | { kind: 'cut'; at: number }
  | { kind: 'char'; at: number; code: number };
const value = fc.constantFrom(...BOUNDARY);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('add' as const),
      at: fc.nat(),
      key: fc.constantFrom('extra', '__proto__', 'constructor', 'epoch'),
      value,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('repeat' as const), at: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('number' as const), at: fc.nat(), text: fc.constantFrom(...TEXT_NUMBERS) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('dupkey' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('char' as const), at: fc.nat(), code: fc.integer({ min: 0, max: 0x7f }) }) },
);

type Container = Record<string, unknown> | unknown[];
/** Every place in the document: [container, key], depth first. */
function places(v: unknown, out: [Container, string | number][] = []): [Container, string | number][] {
  if (Array.isArray(v)) v.forEach((x, i) => (out.push([v, i]), places(x, out)));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) (out.push([v as Container, k]), places(x, out));
  return out;
}
const label = (c: Container, k: string | number) => (Array.isArray(c) ? `[${k}]` : `.${k}`);

/** Applies the ops: the structural ones to the parsed document, then the textual ones to its text. */
function apply(doc: Record<string, unknown>, ops: Op[]): { text: string; what: string[] } {
  const what: string[] = [];
  for (const op of ops) {
    const all = places(doc);
    const [c, k] = all[op.at % all.length];
    if (op.kind === 'set') {
      if (Array.isArray(c)) c[k as number] = structuredClone(op.value);
      else Object.defineProperty(c, k, { value: structuredClone(op.value), enumerable: true, writable: true, configurable: true });
      what.push(`set ${label(c, k)}=${JSON.stringify(op.value)}`);
    } else if (op.kind === 'delete') {
      if (Array.isArray(c)) c.splice(k as number, 1);
      else delete c[k as string];
      what.push(`delete ${label(c, k)}`);
    } else if (op.kind === 'add') {
      const target = (c as Record<string | number, unknown>)[k];
      const into = target && typeof target === 'object' && !Array.isArray(target) ? (target as object) : doc;
      Object.defineProperty(into, op.key, { value: structuredClone(op.value), enumerable: true, writable: true, configurable: true });
      what.push(`add ${op.key}=${JSON.stringify(op.value)}`);
    } else if (op.kind === 'repeat' && Array.isArray(c)) {
      c.push(structuredClone(c[k as number]));
      what.push(`repeat ${label(c, k)}`);
    }
  }
  let text = JSON.stringify(doc);
  for (const op of ops) {
    if (op.kind === 'number') {
      const nums = [...text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
      if (!nums.length) continue;
      const m = nums[op.at % nums.length];
      text = text.slice(0, m.index) + op.text + text.slice(m.index! + m[0].length);
      what.push(`number ${m[0]}->${op.text}`);
    } else if (op.kind === 'dupkey') {
      const keys = [...text.matchAll(/"([^"\\]+)":/g)];
      if (!keys.length) continue;
      const m = keys[op.at % keys.length];
      text = `${text.slice(0, m.index)}"${m[1]}":0,${text.slice(m.index)}`;
      what.push(`dupkey ${m[1]}`);
    } else if (op.kind === 'cut') {
      const at = op.at % text.length;
      text = text.slice(0, at);
      what.push(`cut ${at}`);
    } else if (op.kind === 'char') {
      const at = op.at % text.length;
      text = text.slice(0, at) + String.fromCharCode(op.code) + text.slice(at + 1);
      what.push(`char ${at}=${op.code}`);
    }
  }
  return { text, what };
}

// ---- running the cases ---------------------------------------------------------------------------

interface Result {
  i: number;
  r: string;
  ms: number;
  m?: string;
  changed: string[];
}

/** Runs the cases in child processes (test/support/child-cases.ts). */
async function runCases(file: string, n: number, what: string[]): Promise<ChildCasesOutcome<Result>> {
  // Startup (libtorch, the Trainer) may take a while on a busy machine.
  return runChildCases<Result>({
    child,
    args: [file, seedRun, path.join(tmp, 'work')],
    count: n,
    what: (i) => what[i],
    caseLimitMs: CASE_LIMIT_MS,
    startupMs: 180_000,
  });
}

/** The one refusal that is not about the file: a valid checkpoint of a job with another world size. */
const OTHER_WORLD = /^resume: true: the run was trained with \d+ ranks and is now started with 1: refused/;

describe('mutation fuzz (child processes, 512 MB heap)', () => {
  test('checkpoint.json: accepted, or refused with a BadFileError before anything on disk changes', async () => {
    const seedText = fs.readFileSync(path.join(seedRun, 'checkpoint.json'), 'utf8');
    const dir = path.join(tmp, 'mutants');
    fs.mkdirSync(dir);
    // Case 0 is the seed itself: it must be accepted.
    const samples = [[], ...fc.sample(fc.array(opArb, { minLength: 1, maxLength: 3 }), { seed: SEED, numRuns: CASES })];
    const what: string[] = [];
    const cases = samples.map((ops, i) => {
      const { text, what: w } = apply(JSON.parse(seedText), ops);
      const file = path.join(dir, `m${i}.json`);
      fs.writeFileSync(file, text);
      what.push(`seed ${SEED} case ${i}: ${w.join(', ') || 'unchanged'}`);
      return { file };
    });
    const list = path.join(tmp, 'cases.json');
    fs.writeFileSync(list, JSON.stringify(cases));
    const out = await runCases(list, cases.length, what);

    const by: Record<string, number> = {};
    for (const r of out.results) by[r.r] = (by[r.r] ?? 0) + 1;
    console.log(
      `fuzz checkpoint.json: ${cases.length} cases, ${JSON.stringify(by)}, crashes ${out.crashes.length}, slowest ${Math.max(0, ...out.results.map((r) => r.ms))} ms, child max RSS ${Math.round(out.maxRSS / 2 ** 20)} MiB`,
    );
    const messages = [
      ...new Set(
        out.results.filter((r) => r.m).map((r) => r.m!.replace(/^\S*checkpoint\.json/, 'checkpoint.json').replace(/\/\S*\//g, '')),
      ),
    ];
    console.log(`${messages.length} distinct refusals, e.g.:\n  ${messages.slice(0, 12).join('\n  ')}`);
    expect(out.crashes, 'crashed or hung cases').toEqual([]);
    expect(out.results[0], 'the seed checkpoint, unchanged').toMatchObject({ i: 0, r: 'ok' });
    expect(out.results.length).toBe(cases.length);
    const wrong = out.results.filter(
      (r) => r.r !== 'ok' && r.r !== 'error:BadFileError' && !(r.r === 'error:Error' && OTHER_WORLD.test(r.m ?? '')),
    );
    expect(
      wrong.map((r) => `${what[r.i]}: ${r.r}: ${r.m}`),
      'outcomes other than accepted / BadFileError',
    ).toEqual([]);
    const changed = out.results.filter((r) => r.changed.length);
    expect(
      changed.map((r) => `${what[r.i]}: refused (${r.m}) after changing ${r.changed.join(', ')}`),
      'refusals that changed the run folder',
    ).toEqual([]);
    const slow = out.results.filter((r) => r.ms > CASE_LIMIT_MS).map((r) => `${what[r.i]}: ${r.ms} ms`);
    expect(slow, `cases over ${CASE_LIMIT_MS} ms`).toEqual([]);
    // Both outcomes occur (the mutations reach past the first check, and some leave a valid file).
    expect(by.ok ?? 0).toBeGreaterThan(0);
    expect(by['error:BadFileError'] ?? 0).toBeGreaterThan(0);
  }, 900_000);
});
