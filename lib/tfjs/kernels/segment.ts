// Segment reductions and counts of the residual tfjs backend: UnsortedSegmentSum, SparseSegmentSum,
// SparseSegmentMean (libtorch's index_add after tf's checks, with its messages), Bincount and
// DenseBincount.
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import {
  checkSize,
  code,
  defineKernel,
  ints,
  longT,
  notStringOrComplex,
  op,
  sc,
  torchDtype,
  type ResidualBackend,
  type Tensor,
} from './util.js';

export const unsortedSegmentSumConfig = defineKernel('UnsortedSegmentSum', ({ inputs, attrs, backend }) => {
  const { x, segmentIds } = inputs;
  notStringOrComplex('UnsortedSegmentSum', x);
  const num = attrs.numSegments as number;
  const rest = x.shape.slice(segmentIds.shape.length);
  checkSize('UnsortedSegmentSum', [num, ...rest], x.dtype);
  let xt = backend.tensorOf(x);
  if (xt.dtype === 'bool') xt = xt.to('int32');
  const ids = backend.tensorOf(segmentIds).to('int64').reshape([-1]);
  const rows = xt.reshape([ids.numel(), ...rest]);
  const ok = op('logicalAnd', op('ge', ids, sc(0)), op('lt', ids, sc(num)));
  const out = op('zeros', [num, ...rest], code(xt.dtype), backend.device);
  const y = op('indexAdd', out, 0, op('indexTensors', ids, [ok]), op('indexTensors', rows, [ok]));
  return backend.output(y, x.dtype);
});

function bincountCore(name: string, backend: ResidualBackend, x: TensorInfo, weights: TensorInfo, size: number, binary: boolean): Tensor {
  const wdt: DataType = weights.dtype === 'int32' ? 'int32' : 'float32';
  checkSize(name, x.shape.length === 2 ? [x.shape[0], size] : [size], wdt);
  const xt = backend.tensorOf(x).to('int64');
  if (xt.numel() > 0 && (op('any', op('lt', xt, sc(0))).item() as boolean)) throw new Error('Input x must be non-negative!');
  const rowsN = x.shape.length === 2 ? x.shape[0] : 1;
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
export const bincountConfig = defineKernel('Bincount', ({ inputs, attrs, backend }) => {
  const { x, weights } = inputs;
  return backend.output(
    bincountCore('Bincount', backend, x, weights, attrs.size as number, false),
    weights.dtype === 'int32' ? 'int32' : 'float32',
  );
});
export const denseBincountConfig = defineKernel('DenseBincount', ({ inputs, attrs, backend }) => {
  const { x, weights } = inputs;
  return backend.output(
    bincountCore('DenseBincount', backend, x, weights, attrs.size as number, !!attrs.binaryOutput),
    weights.dtype === 'int32' ? 'int32' : 'float32',
  );
});

/**
 * tf's checks of a sparse segment reduction, in tf's order and with its messages: segment ids sorted,
 * in range, indices in range. Returns the number of output rows.
 */
function checkSegments(indices: Int32Array, seg: Int32Array, inputRows: number): number {
  const n = indices.length;
  const rows = n > 0 ? seg[n - 1] + 1 : 0;
  if (rows < 0) throw new Error(backend_util.getSparseSegmentReductionNegativeSegmentIdsErrorMessage());
  if (n === 0) return rows;
  if (rows <= 0) throw new Error(backend_util.getSparseSegmentReductionNegativeSegmentIdsErrorMessage());
  // Walk the runs of equal ids: a run's successor must be larger, and the run's id and indices in range.
  let start = 0;
  while (start < n) {
    const id = seg[start];
    let end = start + 1;
    while (end < n && seg[end] === id) end++;
    if (end < n && id >= seg[end]) throw new Error(backend_util.getSparseSegmentReductionNonIncreasingSegmentIdsErrorMessage());
    if (id < 0 || id >= rows) throw new Error(backend_util.getSparseSegmentReductionSegmentIdOutOfRangeErrorMessage(id, rows));
    for (let i = start; i < end; i++) {
      if (indices[i] < 0 || indices[i] >= inputRows)
        throw new Error(backend_util.getSparseSegmentReductionIndicesOutOfRangeErrorMessage(i, indices[i], inputRows));
    }
    start = end;
  }
  return rows;
}

function sparseSegment(name: string, mean: boolean): KernelConfig {
  return defineKernel(name, ({ inputs, backend }) => {
    const { data, indices, segmentIds } = inputs;
    if (data.shape.length < 1) throw new Error(`${name}: data must be at least rank 1`);
    const idx = ints(backend, indices);
    const seg = ints(backend, segmentIds);
    const rows = checkSegments(idx, seg, data.shape[0]);
    const outShape = [rows, ...data.shape.slice(1)];
    // (the row count is the last segment id plus one: a value, so bounded here)
    checkSize(name, outShape, mean ? 'float32' : data.dtype);
    const dt = torchDtype(data.dtype);
    let out = op('zeros', outShape, code(dt), backend.device);
    if (idx.length > 0) {
      const x = backend.tensorOf(data);
      const picked = x.indexSelect(0, longT(idx, backend.device));
      const segT = longT(seg, backend.device);
      out = op('indexAdd', out, 0, segT, picked);
      if (mean) {
        const counts = op(
          'indexAdd',
          op('zeros', [rows], code('float32'), backend.device),
          0,
          segT,
          op('ones', [seg.length], code('float32'), backend.device),
        );
        const c = op('clamp', counts, 1, null).reshape([rows, ...data.shape.slice(1).map(() => 1)]);
        out = op('div', out.to('float32'), c, null);
      }
    }
    return backend.output(out, data.dtype);
  });
}
export const sparseSegmentSumConfig = sparseSegment('SparseSegmentSum', false);
export const sparseSegmentMeanConfig = sparseSegment('SparseSegmentMean', true);

export const configs: KernelConfig[] = [
  unsortedSegmentSumConfig,
  sparseSegmentSumConfig,
  sparseSegmentMeanConfig,
  bincountConfig,
  denseBincountConfig,
];
