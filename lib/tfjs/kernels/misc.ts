// Complex numbers, FFT, sorting/selection, segment sums and counts, sampling, einsum, non-max
// suppression and strings for the residual tfjs backend. Semantics follow tfjs-backend-cpu.
//
// Computed in JS on the read data (as the cpu backend does): Unique (hashing of values/slices),
// NonMaxSuppressionV3/V4/V5 (tfjs-core's own kernel_impls) and StaticRegexReplace (strings).
import { backend_util, kernel_impls, util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { mulberry32 } from '../../core/random.js';
import { native } from '../../addon/binding.js';
import { wrapT } from '../../tensor/tensor.js';
import { code, defineKernel, op, opList, sc, torchDtype, type ResidualBackend, type Tensor } from './util.js';

function fromJs(backend: ResidualBackend, vals: Int32Array | Float32Array, shape: number[], dtype: 'int32' | 'float32'): TensorInfo {
  let t = wrapT(native.fromBuffer(vals, 0, shape, code(dtype), true));
  if (backend.device !== 'cpu') t = t.to(backend.device as 'cuda');
  return backend.output(t, dtype);
}
function notComplex(name: string, ...xs: TensorInfo[]): void {
  for (const x of xs) if (x.dtype === 'complex64' || x.dtype === 'string') throw new Error(`${name}: ${x.dtype} tensors are not supported`);
}

// ---- complex ----

const complex = defineKernel('Complex', ({ inputs, backend }) => {
  const re = backend.tensorOf(inputs.real).to('float32');
  const im = backend.tensorOf(inputs.imag).to('float32');
  return backend.output(op('stack', [re, im], -1), 'complex64');
});
const real = defineKernel('Real', ({ inputs, backend }) => {
  const x = inputs.input;
  const t = backend.tensorOf(x);
  return backend.output(x.dtype === 'complex64' ? t.select(-1, 0).contiguous() : t.to('float32').clone(), 'float32');
});
const imag = defineKernel('Imag', ({ inputs, backend }) => {
  const x = inputs.input;
  const t = backend.tensorOf(x);
  return backend.output(x.dtype === 'complex64' ? t.select(-1, 1).contiguous() : op('zerosLike', t.to('float32')), 'float32');
});
const complexAbs = defineKernel('ComplexAbs', ({ inputs, backend }) => {
  const t = backend.tensorOf(inputs.x).to('float64');
  const re = t.select(-1, 0);
  const im = t.select(-1, 1);
  // hypot in float64 (no overflow of the squares), rounded once to float32
  return backend.output(op('sqrt', op('add', op('mul', re, re), op('mul', im, im), 1)).to('float32'), 'float32');
});
function fft(name: string, inverse: boolean): KernelConfig {
  return defineKernel(name, ({ inputs, backend }) => {
    const x = inputs.input;
    if (x.dtype !== 'complex64') throw new Error(`${name}: expected a complex64 input, got ${x.dtype}`);
    return backend.output(op('fftInterleaved', backend.tensorOf(x), inverse), 'complex64');
  });
}

// ---- sorting and selection ----

const topK = defineKernel('TopK', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notComplex('TopK', x);
  const k = attrs.k as number;
  let t = backend.tensorOf(x);
  if (t.dtype === 'bool') t = t.to('int32');
  // A stable descending sort: ties keep the lower index first, as the cpu backend.
  const [values, indices] = opList('sortStable', t, -1, true);
  return [backend.output(values.narrow(-1, 0, k).contiguous(), x.dtype), backend.output(indices.narrow(-1, 0, k).contiguous(), 'int32')];
});

const unique = defineKernel('Unique', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  if (x.dtype === 'complex64') throw new Error('Unique: complex64 tensors are not supported');
  const axis = util.parseAxisParam((attrs.axis as number | undefined) ?? 0, x.shape)[0];
  const n = x.shape[axis];
  const inner = x.shape.length === 0 ? 1 : util.sizeFromShape(x.shape) / Math.max(n, 1);
  let rows: ArrayLike<unknown>;
  if (x.dtype === 'string') {
    const vals = backend.readSync(x.dataId) as Uint8Array[];
    const strs = vals.map((v) => util.decodeString(v));
    if (x.shape.length <= 1) rows = strs;
    else {
      const order = op('arange', 0, strs.length, 1, code('int32'), 'cpu').reshape(x.shape);
      const moved = order.permute([axis, ...x.shape.map((_, i) => i).filter((i) => i !== axis)]).contiguous();
      rows = Array.from(moved.toTypedArray() as Int32Array, (i) => strs[i]);
    }
  } else {
    const t = backend.tensorOf(x);
    const moved = x.shape.length <= 1 ? t.reshape([-1]) : t.permute([axis, ...x.shape.map((_, i) => i).filter((i) => i !== axis)]).contiguous();
    rows = moved.toTypedArray() as ArrayLike<number>;
  }
  const keyOf = (i: number): string => {
    const parts: unknown[] = [];
    for (let j = 0; j < inner; j++) parts.push(rows[i * inner + j]);
    return x.dtype === 'string' ? JSON.stringify(parts) : parts.join(',');
  };
  const seen = new Map<string, number>();
  const firsts: number[] = [];
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const key = keyOf(i);
    let u = seen.get(key);
    if (u === undefined) {
      u = firsts.length;
      seen.set(key, u);
      firsts.push(i);
    }
    idx[i] = u;
  }
  const outShape = [...x.shape];
  if (outShape.length) outShape[axis] = firsts.length;
  let values: TensorInfo;
  if (x.dtype === 'string') {
    const vals = backend.readSync(x.dataId) as Uint8Array[];
    const outer = util.sizeFromShape(x.shape.slice(0, axis));
    const after = util.sizeFromShape(x.shape.slice(axis + 1));
    const out: Uint8Array[] = [];
    for (let o = 0; o < outer; o++) for (const f of firsts) for (let a = 0; a < after; a++) out.push(vals[(o * n + f) * after + a]);
    values = backend.outputStrings(out, outShape);
  } else {
    const sel = new BigInt64Array(firsts.map((f) => BigInt(f)));
    let it = wrapT(native.fromBuffer(sel, 0, [sel.length], code('int64'), true));
    if (backend.device !== 'cpu') it = it.to(backend.device as 'cuda');
    const t = backend.tensorOf(x);
    values = backend.output(x.shape.length === 0 ? t.clone() : t.indexSelect(axis, it), x.dtype);
  }
  return [values, fromJs(backend, idx, [n], 'int32')];
});

const searchSorted = defineKernel('SearchSorted', ({ inputs, attrs, backend }) => {
  const { sortedSequence, values } = inputs;
  notComplex('SearchSorted', sortedSequence, values);
  const seq = backend.tensorOf(sortedSequence).contiguous();
  let v = backend.tensorOf(values).contiguous();
  if (v.dtype !== seq.dtype) v = v.to(seq.dtype);
  return backend.output(op('searchsorted', seq, v, true, attrs.side === 'right'), 'int32');
});

// ---- segments and counts ----

const unsortedSegmentSum = defineKernel('UnsortedSegmentSum', ({ inputs, attrs, backend }) => {
  const { x, segmentIds } = inputs;
  notComplex('UnsortedSegmentSum', x);
  const num = attrs.numSegments as number;
  const rest = x.shape.slice(segmentIds.shape.length);
  let xt = backend.tensorOf(x);
  if (xt.dtype === 'bool') xt = xt.to('int32');
  const ids = backend.tensorOf(segmentIds).to('int64').reshape([-1]);
  const rows = xt.reshape([ids.numel(), ...rest]);
  const ok = op('logicalAnd', op('ge', ids, sc(0)), op('lt', ids, sc(num)));
  const out = op('zeros', [num, ...rest], code(xt.dtype), backend.device);
  const y = op('indexAdd', out, 0, op('indexTensors', ids, [ok]), op('indexTensors', rows, [ok]));
  return backend.output(y, x.dtype);
});

function bincountCore(backend: ResidualBackend, x: TensorInfo, weights: TensorInfo, size: number, binary: boolean): Tensor {
  const xt = backend.tensorOf(x).to('int64');
  if (xt.numel() > 0 && (op('any', op('lt', xt, sc(0))).item() as boolean)) throw new Error('Input x must be non-negative!');
  const rowsN = x.shape.length === 2 ? x.shape[0] : 1;
  const wdt: DataType = weights.dtype === 'int32' ? 'int32' : 'float32';
  const dt = torchDtype(wdt);
  const hasW = util.sizeFromShape(weights.shape) > 0;
  const flatX = xt.reshape([-1]);
  const ok = op('lt', flatX, sc(size));
  let pos = flatX;
  if (rowsN > 1 || x.shape.length === 2) {
    const rowIdx = op('arange', 0, rowsN, 1, code('int64'), backend.device).reshape([rowsN, 1]).expand(x.shape).reshape([-1]);
    pos = op('add', op('mul', rowIdx, sc(size)), flatX, 1);
  }
  const w = hasW && !binary ? backend.tensorOf(weights).to(dt).reshape([-1]) : op('onesLike', flatX).to(dt);
  const out = op('zeros', [rowsN * size], code(dt), backend.device);
  let y = op('indexAdd', out, 0, op('indexTensors', pos, [ok]), op('indexTensors', w, [ok]));
  if (binary) y = op('ne', y, sc(0)).to(dt);
  return x.shape.length === 2 ? y.reshape([rowsN, size]) : y;
}
const bincount = defineKernel('Bincount', ({ inputs, attrs, backend }) => {
  const { x, weights } = inputs;
  return backend.output(bincountCore(backend, x, weights, attrs.size as number, false), weights.dtype === 'int32' ? 'int32' : 'float32');
});
const denseBincount = defineKernel('DenseBincount', ({ inputs, attrs, backend }) => {
  const { x, weights } = inputs;
  return backend.output(bincountCore(backend, x, weights, attrs.size as number, !!attrs.binaryOutput), weights.dtype === 'int32' ? 'int32' : 'float32');
});

// ---- sampling, einsum ----

// Samples on the CPU in JS from a PRNG seeded with tf's seed attr (tfjs passes a random one when the
// caller gives none), so the same seed gives the same samples, as tf promises.
const multinomial = defineKernel('Multinomial', ({ inputs, attrs, backend }) => {
  const logitsInfo = inputs.logits;
  const numSamples = attrs.numSamples as number;
  const logits = backend.tensorOf(logitsInfo).to('float32');
  const probs = (attrs.normalized ? logits : op('softmax', logits, -1, undefined)).to('float64');
  const [batch, n] = logitsInfo.shape.length === 1 ? [1, logitsInfo.shape[0]] : [logitsInfo.shape[0], logitsInfo.shape[1]];
  const p = probs.toTypedArray() as Float64Array;
  const rand = seededRandom(Number(attrs.seed ?? 0));
  const out = new Int32Array(batch * numSamples);
  const cdf = new Float64Array(n);
  for (let b = 0; b < batch; b++) {
    let acc = 0;
    for (let i = 0; i < n; i++) cdf[i] = acc += p[b * n + i];
    for (let s = 0; s < numSamples; s++) {
      const r = rand() * acc;
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cdf[mid] > r) hi = mid;
        else lo = mid + 1;
      }
      out[b * numSamples + s] = lo;
    }
  }
  return fromJs(backend, out, [batch, numSamples], 'int32');
});
/** A deterministic PRNG for a tf seed: the seed hashed to 32 bits, then mulberry32 (lib/data). */
function seededRandom(seed: number): () => number {
  let h = 0x9e3779b9 ^ Math.floor(seed * 1e6);
  const s = String(seed);
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x85ebca6b);
  return mulberry32(h >>> 0 || 1);
}

const einsum = defineKernel('Einsum', ({ inputs, attrs, backend }) => {
  const list = inputs as unknown as TensorInfo[];
  notComplex('Einsum', ...list);
  // tf's own checks first (its messages; e.g. no repeated axes, at most two operands), then libtorch.
  const { allDims, idDims } = backend_util.decodeEinsumEquation(attrs.equation as string, list.length);
  backend_util.checkEinsumDimSizes(allDims.length, idDims, list as never);
  const dtype = list.every((t) => t.dtype === 'int32') ? 'int32' : 'float32';
  const ts = list.map((t) => backend.tensorOf(t).to(torchDtype(dtype)));
  return backend.output(op('einsum', attrs.equation as string, ts), dtype);
});

// ---- non-max suppression (tfjs-core's implementations, on the read data) ----

const nmsV3 = defineKernel('NonMaxSuppressionV3', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold } = attrs as unknown as Record<string, number>;
  const { selectedIndices } = kernel_impls.nonMaxSuppressionV3Impl(boxes, scores, maxOutputSize, iouThreshold, scoreThreshold);
  return fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32');
});
const nmsV4 = defineKernel('NonMaxSuppressionV4', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold, padToMaxOutputSize } = attrs as unknown as Record<string, number>;
  const { selectedIndices, validOutputs } = kernel_impls.nonMaxSuppressionV4Impl(boxes, scores, maxOutputSize, iouThreshold, scoreThreshold, !!padToMaxOutputSize);
  return [fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32'), fromJs(backend, new Int32Array([validOutputs ?? 0]), [], 'int32')];
});
const nmsV5 = defineKernel('NonMaxSuppressionV5', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold, softNmsSigma } = attrs as unknown as Record<string, number>;
  const { selectedIndices, selectedScores } = kernel_impls.nonMaxSuppressionV5Impl(boxes, scores, maxOutputSize, iouThreshold, scoreThreshold, softNmsSigma);
  return [fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32'), fromJs(backend, new Float32Array(selectedScores ?? []), [selectedScores?.length ?? 0], 'float32')];
});

// ---- strings ----

const staticRegexReplace = defineKernel('StaticRegexReplace', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  if (x.dtype !== 'string') throw new Error('StaticRegexReplace: expected a string tensor');
  const { pattern, rewrite, replaceGlobal } = attrs as unknown as { pattern: string; rewrite: string; replaceGlobal: boolean };
  const re = new RegExp(pattern, replaceGlobal ? 'g' : '');
  const vals = (backend.readSync(x.dataId) as Uint8Array[]).map((v) => util.encodeString(util.decodeString(v).replace(re, rewrite)));
  return backend.outputStrings(vals, x.shape);
});

// StringToHashBucketFast: tf's Fingerprint64 of each string (tfjs-core's own), modulo the bucket count.
const stringToHashBucketFast = defineKernel('StringToHashBucketFast', ({ inputs, attrs, backend }) => {
  const x = inputs.input;
  const n = attrs.numBuckets as number;
  if (n <= 0) throw new Error('Number of buckets must be at least 1');
  const vals = backend.readSync(x.dataId) as Uint8Array[];
  const out = Int32Array.from(vals, (v) => util.fingerPrint64(v).modulo(n).getLowBitsUnsigned());
  return fromJs(backend, out, x.shape, 'int32');
});

// StringSplit: each string of a vector cut at every byte that is one of the delimiter's bytes (an
// empty delimiter cuts between all bytes; an empty string gives no token), as a sparse [batch, max] result.
const stringSplit = defineKernel('StringSplit', ({ inputs, attrs, backend }) => {
  const { input, delimiter } = inputs;
  const skipEmpty = !!attrs.skipEmpty;
  const strs = backend.readSync(input.dataId) as Uint8Array[];
  const delim = (backend.readSync(delimiter.dataId) as Uint8Array[])[0] ?? new Uint8Array(0);
  const isDelim = new Uint8Array(256);
  for (const c of delim) isDelim[c] = 1;
  const tokens: Uint8Array[] = [];
  const rows: number[] = [];
  const cols: number[] = [];
  let widest = 0;
  strs.forEach((str, row) => {
    let count = 0;
    const push = (t: Uint8Array): void => {
      if (skipEmpty && t.length === 0) return;
      tokens.push(t);
      rows.push(row);
      cols.push(count++);
    };
    if (str.length > 0) {
      if (delim.length === 0) for (let i = 0; i < str.length; i++) push(str.subarray(i, i + 1));
      else {
        let start = 0;
        for (let i = 0; i <= str.length; i++) {
          if (i === str.length || isDelim[str[i]]) {
            push(str.subarray(start, i));
            start = i + 1;
          }
        }
      }
    }
    widest = Math.max(widest, count);
  });
  const idx = new Int32Array(tokens.length * 2);
  for (let i = 0; i < tokens.length; i++) {
    idx[2 * i] = rows[i];
    idx[2 * i + 1] = cols[i];
  }
  return [
    fromJs(backend, idx, [tokens.length, 2], 'int32'),
    backend.outputStrings(tokens, [tokens.length]),
    fromJs(backend, new Int32Array([strs.length, widest]), [2], 'int32'),
  ];
});

// StringNGrams: the n-grams of each row of ragged string data. Each n-gram joins, with the separator,
// its left pads, its tokens and its right pads (tf's padding rule: up to width - 1 pads a side, or
// padWidth); preserveShortSequences gives a row too short for any n-gram one n-gram of the whole row.
const stringNGrams = defineKernel('StringNGrams', ({ inputs, attrs, backend }) => {
  const { data, dataSplits } = inputs;
  const a = attrs as unknown as { separator: string; nGramWidths: number[]; leftPad: string; rightPad: string; padWidth: number; preserveShortSequences: boolean };
  const sep = util.encodeString(a.separator);
  const lpad = util.encodeString(a.leftPad);
  const rpad = util.encodeString(a.rightPad);
  const tokens = backend.readSync(data.dataId) as Uint8Array[];
  const splits = Array.from(backend.readSync(dataSplits.dataId) as ArrayLike<number>);
  const n = tokens.length;
  if (splits.length > 0) {
    if (splits[0] !== 0) throw new Error(`First split value must be 0, got ${splits[0]}`);
    for (let i = 1; i < splits.length; i++) {
      if (splits[i] < splits[i - 1] || splits[i] > n) throw new Error(`Invalid split value ${splits[i]}, must be in [${splits[i - 1]}, ${n}]`);
    }
    if (splits[splits.length - 1] !== n) throw new Error(`Last split value must be data size. Expected ${n}, got ${splits[splits.length - 1]}`);
  }
  const rowsN = splits.length - 1;
  const padOf = (w: number): number => Math.min(a.padWidth < 0 ? w - 1 : a.padWidth, w - 1);
  const countOf = (len: number, w: number): number => Math.max(0, len + 2 * padOf(w) - w + 1);
  const join = (parts: Uint8Array[]): Uint8Array => {
    const size = parts.reduce((acc, p) => acc + p.length, 0) + Math.max(0, parts.length - 1) * sep.length;
    const out = new Uint8Array(size);
    let o = 0;
    parts.forEach((p, i) => {
      if (i > 0) {
        out.set(sep, o);
        o += sep.length;
      }
      out.set(p, o);
      o += p.length;
    });
    return out;
  };
  const grams = (start: number, len: number, w: number, count: number, out: Uint8Array[]): void => {
    const p = padOf(w);
    for (let g = 0; g < count; g++) {
      const left = Math.max(0, p - g);
      const right = Math.max(0, p - (count - g - 1));
      const take = w - left - right;
      const from = start + (left > 0 ? 0 : g - p);
      const parts: Uint8Array[] = [];
      for (let k = 0; k < left; k++) parts.push(lpad);
      for (let k = 0; k < take; k++) parts.push(tokens[from + k]);
      for (let k = 0; k < right; k++) parts.push(rpad);
      out.push(join(parts));
    }
  };
  const out: Uint8Array[] = [];
  const outSplits = new Int32Array(Math.max(splits.length, 0));
  if (n > 0 && splits.length > 0) {
    for (let r = 0; r < rowsN; r++) {
      const start = splits[r];
      const len = splits[r + 1] - start;
      const before = out.length;
      for (const w of a.nGramWidths) grams(start, len, w, countOf(len, w), out);
      if (a.preserveShortSequences && out.length === before && len > 0) grams(start, len, len + 2 * a.padWidth, 1, out);
      outSplits[r + 1] = out.length;
    }
  }
  return [backend.outputStrings(out, [out.length]), fromJs(backend, outSplits, [outSplits.length], 'int32')];
});

export const configs: KernelConfig[] = [
  stringNGrams, stringToHashBucketFast, stringSplit,
  complex, real, imag, complexAbs, fft('FFT', false), fft('IFFT', true), topK, unique, searchSorted, unsortedSegmentSum,
  bincount, denseBincount, multinomial, einsum, nmsV3, nmsV4, nmsV5, staticRegexReplace,
];
