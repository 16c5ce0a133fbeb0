// Sorting and selection kernels of the residual tfjs backend: TopK (a stable sort), Unique (hashing of
// values or slices in JS, as the cpu backend does) and SearchSorted.
import { util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { code, defineKernel, fromJs, longT, notStringOrComplex, op, opList } from './util.js';

export const topKConfig = defineKernel('TopK', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('TopK', x);
  const k = attrs.k as number;
  let t = backend.tensorOf(x);
  if (t.dtype === 'bool') t = t.to('int32');
  // A stable descending sort: ties keep the lower index first, as the cpu backend.
  const [values, indices] = opList('sortStable', t, -1, true);
  return [backend.output(values.narrow(-1, 0, k).contiguous(), x.dtype), backend.output(indices.narrow(-1, 0, k).contiguous(), 'int32')];
});

export const uniqueConfig = defineKernel('Unique', ({ inputs, attrs, backend }) => {
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
    const moved =
      x.shape.length <= 1 ? t.reshape([-1]) : t.permute([axis, ...x.shape.map((_, i) => i).filter((i) => i !== axis)]).contiguous();
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
    const t = backend.tensorOf(x);
    values = backend.output(x.shape.length === 0 ? t.clone() : t.indexSelect(axis, longT(firsts, backend.device)), x.dtype);
  }
  return [values, fromJs(backend, idx, [n], 'int32')];
});

export const searchSortedConfig = defineKernel('SearchSorted', ({ inputs, attrs, backend }) => {
  const { sortedSequence, values } = inputs;
  notStringOrComplex('SearchSorted', sortedSequence, values);
  const seq = backend.tensorOf(sortedSequence).contiguous();
  let v = backend.tensorOf(values).contiguous();
  if (v.dtype !== seq.dtype) v = v.to(seq.dtype);
  return backend.output(op('searchsorted', seq, v, true, attrs.side === 'right'), 'int32');
});

export const configs: KernelConfig[] = [topKConfig, uniqueConfig, searchSortedConfig];
