// String kernels of the residual tfjs backend, computed in JS on the encoded bytes (as the cpu backend
// does): StaticRegexReplace, StringToHashBucketFast (tf's Fingerprint64), StringSplit, StringNGrams.
// Their outputs live in the JS heap, and their sizes come from the data and the attributes (a rewrite,
// a delimiter, n-gram widths and pads): each string is accounted for (StringBudget) before it is made.
import { util } from '@tensorflow/tfjs-core';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { defineKernel, fromJs, StringBudget } from './util.js';

export const staticRegexReplaceConfig = defineKernel('StaticRegexReplace', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  if (x.dtype !== 'string') throw new Error('StaticRegexReplace: expected a string tensor');
  const { pattern, rewrite, replaceGlobal } = attrs as unknown as { pattern: string; rewrite: string; replaceGlobal: boolean };
  const re = new RegExp(pattern, replaceGlobal ? 'g' : '');
  const budget = new StringBudget('StaticRegexReplace');
  const vals = (backend.readSync(x.dataId) as Uint8Array[]).map((v) => {
    const e = util.encodeString(util.decodeString(v).replace(re, rewrite));
    budget.add(e.length);
    return e;
  });
  return backend.outputStrings(vals, x.shape);
});

// StringToHashBucketFast: tf's Fingerprint64 of each string (tfjs-core's own), modulo the bucket count.
export const stringToHashBucketFastConfig = defineKernel('StringToHashBucketFast', ({ inputs, attrs, backend }) => {
  const x = inputs.input;
  const n = attrs.numBuckets as number;
  if (n <= 0) throw new Error('Number of buckets must be at least 1');
  const vals = backend.readSync(x.dataId) as Uint8Array[];
  const out = Int32Array.from(vals, (v) => util.fingerPrint64(v).modulo(n).getLowBitsUnsigned());
  return fromJs(backend, out, x.shape, 'int32');
});

// StringSplit: each string of a vector cut at every byte that is one of the delimiter's bytes (an
// empty delimiter cuts between all bytes; an empty string gives no token), as a sparse [batch, max] result.
export const stringSplitConfig = defineKernel('StringSplit', ({ inputs, attrs, backend }) => {
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
  // (an empty delimiter makes a token of every byte: the tokens are counted against the string limit)
  const budget = new StringBudget('StringSplit', 'values');
  strs.forEach((str, row) => {
    let count = 0;
    const push = (t: Uint8Array): void => {
      if (skipEmpty && t.length === 0) return;
      budget.add(t.length);
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
export const stringNGramsConfig = defineKernel('StringNGrams', ({ inputs, attrs, backend }) => {
  const { data, dataSplits } = inputs;
  const a = attrs as unknown as {
    separator: string;
    nGramWidths: number[];
    leftPad: string;
    rightPad: string;
    padWidth: number;
    preserveShortSequences: boolean;
  };
  const sep = util.encodeString(a.separator);
  const lpad = util.encodeString(a.leftPad);
  const rpad = util.encodeString(a.rightPad);
  const tokens = backend.readSync(data.dataId) as Uint8Array[];
  const splits = Array.from(backend.readSync(dataSplits.dataId) as ArrayLike<number>);
  const n = tokens.length;
  if (splits.length > 0) {
    if (splits[0] !== 0) throw new Error(`First split value must be 0, got ${splits[0]}`);
    for (let i = 1; i < splits.length; i++) {
      if (splits[i] < splits[i - 1] || splits[i] > n)
        throw new Error(`Invalid split value ${splits[i]}, must be in [${splits[i - 1]}, ${n}]`);
    }
    if (splits[splits.length - 1] !== n)
      throw new Error(`Last split value must be data size. Expected ${n}, got ${splits[splits.length - 1]}`);
  }
  const rowsN = splits.length - 1;
  const padOf = (w: number): number => Math.min(a.padWidth < 0 ? w - 1 : a.padWidth, w - 1);
  const countOf = (len: number, w: number): number => Math.max(0, len + 2 * padOf(w) - w + 1);
  // The widths and pads are attributes: an n-gram's size is computed (and accounted for, at least a byte
  // per part joined, so the work is bounded too) before it is made.
  const budget = new StringBudget('StringNGrams', 'nGrams');
  const gram = (left: number, from: number, take: number, right: number): Uint8Array => {
    const parts = left + Math.max(0, take) + right;
    let size = left * lpad.length + right * rpad.length + Math.max(0, parts - 1) * sep.length;
    for (let k = 0; k < take; k++) size += tokens[from + k].length;
    budget.add(Math.max(size, parts));
    const res = new Uint8Array(size);
    let o = 0;
    let i = 0;
    const put = (b: Uint8Array): void => {
      if (i++ > 0) {
        res.set(sep, o);
        o += sep.length;
      }
      res.set(b, o);
      o += b.length;
    };
    for (let k = 0; k < left; k++) put(lpad);
    for (let k = 0; k < take; k++) put(tokens[from + k]);
    for (let k = 0; k < right; k++) put(rpad);
    return res;
  };
  const grams = (start: number, len: number, w: number, count: number, out: Uint8Array[]): void => {
    const p = padOf(w);
    for (let g = 0; g < count; g++) {
      const left = Math.max(0, p - g);
      const right = Math.max(0, p - (count - g - 1));
      const take = w - left - right;
      const from = start + (left > 0 ? 0 : g - p);
      out.push(gram(left, from, take, right));
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

export const configs: KernelConfig[] = [staticRegexReplaceConfig, stringToHashBucketFastConfig, stringSplitConfig, stringNGramsConfig];
