// Output sizes of the residual tfjs backend's kernels (lib/tfjs/kernels/util.ts, checkSize): every kernel
// whose output (or largest intermediate) size comes from an argument computes that size and refuses it
// before allocating when it passes the one limit (a numeric tensor: the largest ArrayBuffer; a string
// tensor or a JS array: a quarter of V8's heap limit), with a RangeError naming the kernel and the size.
// Before, tf.oneHot of one index with depth 2^31 did not finish and depth 2^27 peaked at 3.45 GB.
//
// Each case calls the kernel directly (as tfjs's engine does, without the op layer's own checks) with
// small inputs and one huge argument: a refusal costs nothing, so the test also proves no allocation was
// attempted (an attempt would take seconds and gigabytes, or fail differently). The peak-memory cases
// and the string kernels (bounded by the heap) run in child processes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { memory as residualMemory } from '../../lib/index.js';
import { ResidualBackend, kernelConfigs } from '../../lib/tfjs/index.js';
import { MAX_TENSOR_BYTES } from '../../lib/tfjs/kernels/util.js';
import { fixtures } from '../support/helpers.js';

beforeAll(async () => {
  await tf.setBackend('residual');
});

type In = { v: number[] | string[]; s: number[]; d?: tf.DataType };
interface Case {
  kernel: string;
  inputs: Record<string, In | In[]>;
  attrs: Record<string, unknown>;
  /** What the message must say besides the kernel's name (default: 'bytes'). */
  says?: RegExp;
}
const f = (v: number[], s: number[] = [v.length]): In => ({ v, s, d: 'float32' });
const i32 = (v: number[], s: number[] = [v.length]): In => ({ v, s, d: 'int32' });
const zeros = (n: number): number[] => new Array<number>(n).fill(0);
const BIG = 70_000; // BIG * BIG float32 values: 19.6 GB, from inputs of 280 kB

const cases: Case[] = [
  {
    kernel: 'OneHot',
    inputs: { indices: i32([0]) },
    attrs: { depth: 2 ** 31, onValue: 1, offValue: 0, dtype: 'int32' },
    says: /\[1,2147483648\].*8589934592 bytes/,
  },
  {
    kernel: 'OneHot',
    inputs: { indices: i32([0]) },
    attrs: { depth: 2.5, onValue: 1, offValue: 0, dtype: 'int32' },
    says: /dimension 2\.5 that is not a non-negative integer/,
  },
  { kernel: 'Fill', inputs: {}, attrs: { shape: [2 ** 20, 2 ** 20], value: 1, dtype: 'float32' } },
  { kernel: 'Fill', inputs: {}, attrs: { shape: [-1, 4], value: 1, dtype: 'float32' }, says: /dimension -1/ },
  { kernel: 'Range', inputs: {}, attrs: { start: 0, stop: 2 ** 40, step: 1, dtype: 'float32' } },
  { kernel: 'Range', inputs: {}, attrs: { start: 0, stop: 1, step: 0, dtype: 'float32' }, says: /Infinity/ },
  { kernel: 'LinSpace', inputs: {}, attrs: { start: 0, stop: 1, num: 2 ** 40 } },
  { kernel: 'Tile', inputs: { x: f([1, 2, 3, 4], [2, 2]) }, attrs: { reps: [2 ** 20, 2 ** 20] } },
  { kernel: 'PadV2', inputs: { x: f([1, 2]) }, attrs: { paddings: [[0, 2 ** 40]], constantValue: 0 } },
  { kernel: 'MirrorPad', inputs: { x: f([1, 2]) }, attrs: { paddings: [[0, 2 ** 40]], mode: 'reflect' }, says: /paddings\[0\]/ },
  {
    kernel: 'SpaceToBatchND',
    inputs: { x: f([1, 2, 3, 4], [1, 2, 2, 1]) },
    attrs: {
      blockShape: [2, 2],
      paddings: [
        [0, 2 ** 40],
        [0, 0],
      ],
    },
  },
  { kernel: 'Concat', inputs: { list: new Array<In>(1100).fill(f(zeros(2 ** 20))) }, attrs: { axis: 0 } },
  { kernel: 'Pack', inputs: { list: new Array<In>(1100).fill(f(zeros(2 ** 20))) }, attrs: { axis: 0 } },
  { kernel: 'Multinomial', inputs: { logits: f([0, 0, 0], [1, 3]) }, attrs: { numSamples: 2 ** 31, seed: 1, normalized: false } },
  { kernel: 'Bincount', inputs: { x: i32([0]), weights: f([]) }, attrs: { size: 2 ** 31 } },
  { kernel: 'DenseBincount', inputs: { x: i32([0]), weights: f([]) }, attrs: { size: 2 ** 31, binaryOutput: false } },
  {
    kernel: 'ResizeBilinear',
    inputs: { images: f([1, 2, 3, 4], [1, 2, 2, 1]) },
    attrs: { size: [2 ** 16, 2 ** 16 + 1], alignCorners: false, halfPixelCenters: false },
  },
  {
    kernel: 'ResizeNearestNeighbor',
    inputs: { images: f([1, 2, 3, 4], [1, 2, 2, 1]) },
    attrs: { size: [2 ** 16, 2 ** 16 + 1], alignCorners: false, halfPixelCenters: false },
  },
  {
    kernel: 'ResizeBilinearGrad',
    inputs: { images: f(zeros(BIG), [1, 1, BIG, 1]), dy: f(zeros(BIG), [1, BIG, 1, 1]) },
    attrs: { alignCorners: false },
    says: /intermediate/,
  },
  {
    kernel: 'CropAndResize',
    inputs: { image: f([1, 2, 3, 4], [1, 2, 2, 1]), boxes: f([0, 0, 1, 1], [1, 4]), boxInd: i32([0]) },
    attrs: { cropSize: [2 ** 16, 2 ** 16 + 1], method: 'bilinear', extrapolationValue: 0 },
  },
  {
    kernel: 'Transform',
    inputs: { image: f([1, 2, 3, 4], [1, 2, 2, 1]), transforms: f([1, 0, 0, 0, 1, 0, 0, 0], [1, 8]) },
    attrs: { interpolation: 'nearest', fillMode: 'constant', fillValue: 0, outputShape: [2 ** 15, 2 ** 15] },
  },
  {
    kernel: 'SparseToDense',
    inputs: { sparseIndices: i32([0]), sparseValues: f([1]), defaultValue: f([0], []) },
    attrs: { outputShape: [2 ** 33] },
  },
  { kernel: 'ScatterNd', inputs: { indices: i32([0], [1, 1]), updates: f([1]) }, attrs: { shape: [2 ** 33] } },
  { kernel: 'UnsortedSegmentSum', inputs: { x: f([1]), segmentIds: i32([0]) }, attrs: { numSegments: 2 ** 33 } },
  { kernel: 'SparseSegmentSum', inputs: { data: f([1, 2, 3, 4], [2, 2]), indices: i32([0]), segmentIds: i32([2 ** 30]) }, attrs: {} },
  {
    kernel: 'SparseFillEmptyRows',
    inputs: { indices: i32([0, 0], [1, 2]), values: f([1]), denseShape: i32([2 ** 31 - 1, 1]), defaultValue: f([0], []) },
    attrs: {},
  },
  {
    kernel: 'RaggedTensorToTensor',
    inputs: { shape: i32([2 ** 20, 2 ** 20]), values: f([1]), defaultValue: f([0], []), rowPartitionTensors: [i32([0, 1])] },
    attrs: { rowPartitionTypes: ['ROW_SPLITS'] },
  },
  { kernel: 'RaggedRange', inputs: { starts: i32([0, 0]), limits: i32([2 ** 31 - 1, 2 ** 31 - 1]), deltas: i32([1, 1]) }, attrs: {} },
  {
    kernel: 'RaggedGather',
    inputs: { paramsNestedSplits: [i32([0, 1_000_000])], paramsDenseValues: f(zeros(1_000_000)), indices: i32(zeros(5000)) },
    attrs: { outputRaggedRank: 1 },
  },
  {
    kernel: 'NonMaxSuppressionV4',
    inputs: { boxes: f([0, 0, 1, 1], [1, 4]), scores: f([1]) },
    attrs: { maxOutputSize: 2 ** 31, iouThreshold: 0.5, scoreThreshold: 0, padToMaxOutputSize: true },
  },
  { kernel: 'Diag', inputs: { x: f(zeros(BIG)) }, attrs: {} },
  { kernel: 'Einsum', inputs: { list: [f(zeros(BIG)), f(zeros(BIG))] }, attrs: { equation: 'i,j->ij' } },
  {
    kernel: 'BatchMatMul',
    inputs: { a: f(zeros(BIG), [BIG, 1]), b: f(zeros(BIG), [1, BIG]) },
    attrs: { transposeA: false, transposeB: false },
  },
  { kernel: 'Add', inputs: { a: f(zeros(BIG), [BIG, 1]), b: f(zeros(BIG), [1, BIG]) }, attrs: {} },
  { kernel: 'Prelu', inputs: { x: f(zeros(BIG), [BIG, 1]), alpha: f(zeros(BIG), [1, BIG]) }, attrs: {} },
  { kernel: 'GatherV2', inputs: { x: f(zeros(BIG), [1, BIG]), indices: i32(zeros(BIG)) }, attrs: { axis: 0, batchDims: 0 } },
  { kernel: 'GatherNd', inputs: { params: f(zeros(BIG), [1, BIG]), indices: i32(zeros(BIG), [BIG, 1]) }, attrs: {} },
  {
    kernel: 'Conv2D',
    inputs: { x: f([1], [1, 1, 1, 1]), filter: f([1], [1, 1, 1, 1]) },
    attrs: { strides: [1, 1], pad: BIG, dataFormat: 'NHWC', dilations: [1, 1] },
  },
  // A huge pad with a huge stride: a small output from a huge padded input.
  {
    kernel: 'Conv2D',
    inputs: { x: f([1], [1, 1, 1, 1]), filter: f([1], [1, 1, 1, 1]) },
    attrs: { strides: [2 * BIG, 2 * BIG], pad: BIG, dataFormat: 'NHWC', dilations: [1, 1] },
    says: /padded input/,
  },
  {
    kernel: 'Conv2DBackpropInput',
    inputs: { dy: f([1], [1, 1, 1, 1]), filter: f([1], [1, 1, 1, 1]) },
    attrs: { inputShape: [1, BIG, BIG, 1], strides: [BIG, BIG], pad: 'valid', dataFormat: 'NHWC' },
  },
  {
    kernel: 'Conv2DBackpropFilter',
    inputs: { x: f([1], [1, 1, 1, 1]), dy: f([1], [1, 1, 1, 1]) },
    attrs: { filterShape: [BIG, BIG, 1, 1], strides: [1, 1], pad: 'valid', dataFormat: 'NHWC' },
  },
  {
    kernel: 'Conv3D',
    inputs: { x: f([1], [1, 1, 1, 1, 1]), filter: f([1], [1, 1, 1, 1, 1]) },
    attrs: { strides: [1, 1, 1], pad: 2000, dataFormat: 'NDHWC', dilations: [1, 1, 1] },
  },
  { kernel: 'MaxPool', inputs: { x: f([1], [1, 1, 1, 1]) }, attrs: { filterSize: [1, 1], strides: [1, 1], pad: BIG } },
  { kernel: 'AvgPool', inputs: { x: f([1], [1, 1, 1, 1]) }, attrs: { filterSize: [1, 1], strides: [1, 1], pad: BIG } },
  {
    kernel: 'MaxPoolWithArgmax',
    inputs: { x: f([1], [1, 1, 1, 1]) },
    attrs: { filterSize: [1, 1], strides: [1, 1], pad: BIG, includeBatchInIndex: false },
  },
  {
    kernel: 'Dilation2D',
    inputs: { x: f(zeros(400 * 400), [1, 400, 400, 1]), filter: f(zeros(100 * 100), [100, 100, 1]) },
    attrs: { strides: [1, 1], pad: 'same', dilations: [1, 1] },
    says: /window taps/,
  },
];

function mk(x: In): tf.Tensor {
  return x.d === undefined && typeof x.v[0] === 'string' ? tf.tensor(x.v as string[], x.s, 'string') : tf.tensor(x.v as number[], x.s, x.d);
}

describe('kernel output sizes are computed and bounded before anything is allocated', () => {
  it(`every kernel whose output size comes from an argument refuses a size past the limit (${MAX_TENSOR_BYTES} bytes) with a RangeError naming it`, () => {
    const b = tf.backend() as ResidualBackend;
    const ids0 = b.numDataIds();
    const native0 = residualMemory().tensors;
    const byName = new Map(kernelConfigs.map((k) => [k.kernelName, k]));
    const wrong: string[] = [];
    for (const c of cases) {
      const k = byName.get(c.kernel);
      expect(k, c.kernel).toBeDefined();
      const made: tf.Tensor[] = [];
      const inputs: Record<string, tf.TensorInfo | tf.TensorInfo[]> = {};
      for (const [name, v] of Object.entries(c.inputs)) {
        if (Array.isArray(v)) {
          // A list input (Concat, Pack, Einsum, ragged partitions): the same small tensor may be listed many times.
          const cache = new Map<In, tf.Tensor>();
          inputs[name] = v.map((x) => {
            if (!cache.has(x)) {
              const t = mk(x);
              made.push(t);
              cache.set(x, t);
            }
            return cache.get(x)!;
          });
        } else {
          const t = mk(v);
          made.push(t);
          inputs[name] = t;
        }
      }
      // List kernels take the list itself as their inputs (as tfjs passes them).
      const kernelInputs = 'list' in inputs ? inputs.list : inputs;
      try {
        const out = k!.kernelFunc({ inputs: kernelInputs as never, attrs: c.attrs as tf.NamedAttrMap, backend: b });
        for (const o of Array.isArray(out) ? out : [out]) b.disposeData(o.dataId);
        wrong.push(`${c.kernel} ${JSON.stringify(c.attrs)}: returned instead of refusing`);
      } catch (e) {
        const m = (e as Error).message;
        if (!(e instanceof RangeError)) wrong.push(`${c.kernel}: ${(e as Error).constructor.name}: ${m}`);
        else if (!m.startsWith(`${c.kernel}:`)) wrong.push(`${c.kernel}: the message does not start with the kernel's name: ${m}`);
        else if (!(c.says ?? /bytes/).test(m)) wrong.push(`${c.kernel}: the message does not say ${c.says ?? /bytes/}: ${m}`);
      }
      tf.dispose(made);
    }
    expect(wrong).toEqual([]);
    expect(b.numDataIds()).toBe(ids0);
    expect(residualMemory().tensors).toBe(native0);
  });

  it('tf.oneHot, tf.range, tf.fill and tf.tile through the public ops: refused at once, and in-range sizes still compute', async () => {
    const idx = tf.tensor1d([1, -1, 3], 'int32');
    expect(() => tf.oneHot(idx, 2 ** 31)).toThrow(/^OneHot: the output \[3,2147483648\] \(int32\)/);
    expect(() => tf.range(0, 2 ** 33)).toThrow(RangeError);
    expect(() => tf.fill([2 ** 17, 2 ** 17], 1)).toThrow(/^Fill: .*17179869184 elements/);
    const ones = tf.ones([2, 2]);
    expect(() => tf.tile(ones, [2 ** 16, 2 ** 16])).toThrow(/^Tile: /);
    // The same kernels in range, against the cpu backend's results.
    const y = tf.oneHot(idx, 4, 5, -2);
    expect(Array.from(await y.data())).toEqual([-2, 5, -2, -2, -2, -2, -2, -2, -2, -2, -2, 5]);
    const z = tf.oneHot(idx, 3, 1.5, 0.25, 'float32');
    expect(Array.from(await z.data())).toEqual([0.25, 1.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]);
    expect(Array.from(await tf.range(5, 0, -2).data())).toEqual([5, 3, 1]);
    tf.dispose([idx, y, z, ones]);
  });
});

// ---- in child processes: peak memory, and the kernels bounded by the JS heap ----

interface ChildResult {
  i: number;
  r: string;
  m?: string;
  rssDelta?: number;
}
function runChild(args: string[], cases: unknown[], env: Record<string, string> = {}): Promise<ChildResult[]> {
  const child = path.join(fixtures, 'tfjs-kernel-child.mjs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tfjs-kernels-'));
  const file = path.join(dir, 'cases.json');
  fs.writeFileSync(file, JSON.stringify(cases));
  return new Promise<ChildResult[]>((resolve, reject) => {
    const p = spawn(process.execPath, [...args, child, file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    // A hang detector, not a performance bound.
    const timer = setTimeout(() => p.kill('SIGKILL'), 240_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0)
        reject(
          new Error(
            `child exited with ${code ?? signal}: ${err
              .trim()
              .split('\n')
              .filter((l) => !/^\s+at /.test(l))
              .slice(-8)
              .join(' | ')}`,
          ),
        );
      else
        resolve(
          out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as ChildResult),
        );
    });
  }).finally(() => fs.rmSync(dir, { recursive: true, force: true }));
}

describe('kernel memory (child processes)', () => {
  // Each case runs alone in a fresh process: its peak RSS over the process's peak before the call. A
  // kernel that builds its output in place takes about the output's bytes (plus a copy of its small
  // inputs); 1.5x the output leaves room for allocator rounding. Before, OneHot's int64 range and
  // float intermediates took about 7x its output.
  const MiB = 2 ** 20;
  const peakCases = [
    {
      name: 'OneHot depth 2^25 (128 MiB int32)',
      bytes: 128 * MiB,
      c: {
        kernel: 'OneHot',
        inputs: { indices: { v: [3], s: [1], d: 'int32' } },
        attrs: { depth: 2 ** 25, onValue: 1, offValue: -1, dtype: 'int32' },
      },
    },
    {
      name: 'Range 2^25 (128 MiB float32)',
      bytes: 128 * MiB,
      c: { kernel: 'Range', inputs: {}, attrs: { start: 0, stop: 2 ** 25, step: 1, dtype: 'float32' } },
    },
    {
      name: 'RaggedRange 2^25 values (128 MiB int32)',
      bytes: 128 * MiB,
      c: {
        kernel: 'RaggedRange',
        inputs: {
          starts: { v: [0], s: [1], d: 'int32' },
          limits: { v: [2 ** 25], s: [1], d: 'int32' },
          deltas: { v: [1], s: [1], d: 'int32' },
        },
        attrs: {},
      },
    },
  ];
  for (const pc of peakCases) {
    it(`${pc.name}: the peak is at most 1.5x the output`, async () => {
      const [r] = await runChild(['--expose-gc'], [{ ...pc.c, measure: true }]);
      expect(r.r, r.m).toBe('ok');
      console.log(`${pc.name}: peak RSS growth ${(r.rssDelta! / MiB).toFixed(1)} MiB`);
      expect(
        r.rssDelta!,
        `peak RSS growth ${Math.round(r.rssDelta! / MiB)} MiB for an output of ${pc.bytes / MiB} MiB`,
      ).toBeLessThanOrEqual(1.5 * pc.bytes);
    });
  }

  it('RESIDUAL_TFJS_MAX_TENSOR_BYTES sets the limit (here 1 MiB: a 4 MiB Fill is refused, a 1 MiB one made); a bad value is refused at import', async () => {
    const fill = (n: number) => ({ kernel: 'Fill', inputs: {}, attrs: { shape: [n], value: 1, dtype: 'float32' } });
    const res = await runChild([], [fill(2 ** 20), fill(2 ** 18)], { RESIDUAL_TFJS_MAX_TENSOR_BYTES: String(2 ** 20) });
    expect(res.map((r) => r.r)).toEqual(['error:RangeError', 'ok']);
    expect(res[0].m).toMatch(
      /^Fill: the output \[1048576\] \(float32\) would hold 1048576 elements, 4194304 bytes .*more than one tensor of the residual backend may hold \(1048576 bytes/,
    );
    await expect(runChild([], [fill(1)], { RESIDUAL_TFJS_MAX_TENSOR_BYTES: '4GB' })).rejects.toThrow(
      /RESIDUAL_TFJS_MAX_TENSOR_BYTES must be a whole number of bytes in \[1, \d+\].*got "4GB"/,
    );
  });

  it('string kernels stop at the JS heap share (a 64 MB heap): StringSplit, StringNGrams, StaticRegexReplace, Fill; no V8 heap crash', async () => {
    const s = (v: string[]): In => ({ v, s: [v.length], d: 'string' });
    const heapCases = [
      // An empty delimiter makes a token of each of 4 M bytes.
      {
        kernel: 'StringSplit',
        inputs: { input: s(['a'.repeat(4_000_000)]), delimiter: { v: [''], s: [], d: 'string' } },
        attrs: { skipEmpty: false },
      },
      {
        kernel: 'StringNGrams',
        inputs: { data: s(['a']), dataSplits: { v: [0, 1], s: [2], d: 'int32' } },
        attrs: { separator: ' ', nGramWidths: [2 ** 31], leftPad: 'L', rightPad: 'R', padWidth: -1, preserveShortSequences: false },
      },
      {
        kernel: 'StaticRegexReplace',
        inputs: { x: s(new Array(64).fill('a'.repeat(1000))) },
        attrs: { pattern: '', rewrite: 'x'.repeat(1000), replaceGlobal: true },
      },
      { kernel: 'Fill', inputs: {}, attrs: { shape: [2 ** 24], value: 'abc', dtype: 'string' } },
      // In range: still computed.
      {
        kernel: 'StringSplit',
        inputs: { input: s(['a b', 'c']), delimiter: { v: [' '], s: [], d: 'string' } },
        attrs: { skipEmpty: false },
        ok: true,
      },
    ];
    const res = await runChild(['--max-old-space-size=64'], heapCases);
    expect(res.length).toBe(heapCases.length);
    for (const [i, r] of res.entries()) {
      const c = heapCases[i] as { kernel: string; ok?: boolean };
      if (c.ok) expect(r.r, r.m).toBe('ok');
      else {
        expect(r.r, `${c.kernel}: ${r.m}`).toBe('error:RangeError');
        expect(r.m).toMatch(new RegExp(`^${c.kernel}: .*heap`));
      }
    }
  });
});
