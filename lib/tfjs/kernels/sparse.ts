// Sparse-tensor kernels of the residual tfjs backend: SparseToDense, SparseReshape and
// SparseFillEmptyRows, with tf's checks and messages. The sparse segment reductions are in segment.ts.
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { scatter } from './gather.js';
import { checkSize, code, defineKernel, fromJs, fromTyped, ints, longT, op, opList, sc, torchDtype, type Tensor } from './util.js';

export const sparseToDenseConfig = defineKernel('SparseToDense', ({ inputs, attrs, backend }) => {
  const { sparseIndices, sparseValues, defaultValue } = inputs;
  const shape = attrs.outputShape as number[];
  if (sparseValues.dtype === 'complex64') throw new Error('SparseToDense: complex64 tensors are not supported');
  checkSize('SparseToDense', shape, sparseValues.dtype);
  const dv = backend.tensorOf(defaultValue);
  const dt = torchDtype(sparseValues.dtype);
  const base = op('full', shape, Number(dv.reshape([]).to(dt).item()), code(dt), backend.device);
  const { numUpdates, sliceSize } = backend_util.calculateShapes(sparseValues as never, sparseIndices as never, shape);
  let vals = sparseValues;
  if (util.sizeFromShape(sparseValues.shape) !== numUpdates * sliceSize) {
    // A scalar value for every index.
    const v = backend
      .tensorOf(sparseValues)
      .reshape([])
      .expand([numUpdates * sliceSize])
      .contiguous();
    vals = backend.output(v, sparseValues.dtype);
    try {
      return backend.output(
        scatter(backend, sparseIndices, { ...vals, shape: [numUpdates * sliceSize] }, shape, base, false),
        sparseValues.dtype,
      );
    } finally {
      backend.disposeData(vals.dataId, true);
    }
  }
  return backend.output(scatter(backend, sparseIndices, vals, shape, base, false), sparseValues.dtype);
});

// SparseReshape: tf's shape checks (its messages) on the small shape vectors in JS, then the indices
// re-expressed in the new shape by libtorch: linear index = indices . inStrides, new = (lin / outStrides) % outShape.
function stridesOf(shape: number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    st[d] = acc;
    acc *= shape[d];
  }
  return st;
}
export const sparseReshapeConfig = defineKernel('SparseReshape', ({ inputs, backend }) => {
  const { inputIndices, inputShape, newShape } = inputs;
  const inShape = Array.from(ints(backend, inputShape));
  const target = Array.from(ints(backend, newShape));
  const denseSize = inShape.reduce((a, b) => a * b, 1);
  const outShape: number[] = [];
  let product = 1;
  let unknown = -1;
  target.forEach((size, d) => {
    if (size === -1) {
      if (unknown !== -1) throw new Error(backend_util.getSparseReshapeMultipleNegativeOneOutputDimErrorMessage(unknown, d));
      unknown = d;
      outShape.push(1);
    } else {
      if (size < 0) throw new Error(backend_util.getSparseReshapeNegativeOutputDimErrorMessage(d, size));
      product *= size;
      outShape.push(size);
    }
  });
  if (unknown !== -1) {
    if (product <= 0) throw new Error(backend_util.getSparseReshapeEmptyTensorZeroOutputDimErrorMessage());
    const missing = Math.trunc(denseSize / product);
    if (missing * product !== denseSize) throw new Error(backend_util.getSparseReshapeInputOutputMultipleErrorMessage(inShape, outShape));
    outShape[unknown] = missing;
  }
  if (outShape.reduce((a, b) => a * b, 1) !== denseSize)
    throw new Error(backend_util.getSparseReshapeInputOutputMismatchErrorMessage(inShape, outShape));
  const nnz = inputIndices.shape[0];
  const dev = backend.device;
  let out: Tensor;
  if (nnz === 0 || outShape.length === 0) out = op('zeros', [nnz, outShape.length], code('int32'), dev);
  else {
    const idx = backend.tensorOf(inputIndices).to('int64').reshape([nnz, inShape.length]);
    const lin = inShape.length
      ? op('sum', op('mul', idx, longT(stridesOf(inShape), dev)), [1], true, undefined)
      : op('zeros', [nnz, 1], code('int64'), dev);
    out = op('fmod', op('div', lin, longT(stridesOf(outShape), dev), 'floor'), longT(outShape, dev));
  }
  return [backend.output(out, 'int32'), fromJs(backend, new Int32Array(outShape), [outShape.length], 'int32')];
});

// SparseFillEmptyRows: the rows are checked in JS (tf's messages); the entries and one default entry per
// empty row are then ordered by row with a stable sort (each row keeps its entries' order, as tf).
export const sparseFillEmptyRowsConfig = defineKernel('SparseFillEmptyRows', ({ inputs, backend }) => {
  const { indices, values, denseShape, defaultValue } = inputs;
  const n = indices.shape[0];
  const rank = indices.shape[1];
  const rows = ints(backend, denseShape)[0];
  const dev = backend.device;
  const idx = backend.tensorOf(indices).reshape([n, rank]);
  const rowVals = n > 0 ? Int32Array.from(idx.select(1, 0).to('int32').toTypedArray() as Int32Array) : new Int32Array(0);
  if (rows === 0 && n !== 0) throw new Error(backend_util.getSparseFillEmptyRowsIndicesDenseShapeMismatch(n));
  // The output has up to one entry per row besides the given ones (the row count is a value: bound it).
  checkSize('SparseFillEmptyRows', [n + Math.max(rows, 0), rank], indices.dtype, 'output indices');
  checkSize('SparseFillEmptyRows', [n + Math.max(rows, 0)], 'int64', 'row sort keys');
  const count = new Int32Array(Math.max(rows, 0));
  for (let i = 0; i < n; i++) {
    const r = rowVals[i];
    if (r < 0) throw new Error(backend_util.getSparseFillEmptyRowsNegativeIndexErrorMessage(i, r));
    if (r >= rows) throw new Error(backend_util.getSparseFillEmptyRowsOutOfRangeIndexErrorMessage(i, r, rows));
    count[r]++;
  }
  const emptyRows: number[] = [];
  count.forEach((c, r) => {
    if (c === 0) emptyRows.push(r);
  });
  const vals = backend.tensorOf(values).reshape([n]);
  const e = emptyRows.length;
  // The default entries: (row, 0, ..., 0) with the default value.
  const extraIdx = op('cat', [longT(emptyRows, dev).reshape([e, 1]), op('zeros', [e, rank - 1], code('int64'), dev)], 1).to(idx.dtype);
  const dv = backend.tensorOf(defaultValue).reshape([1]).to(vals.dtype).expand([e]);
  const allIdx = op('cat', [idx, extraIdx], 0);
  const allVals = op('cat', [vals, dv], 0);
  const keys = op('cat', [longT(rowVals, dev), longT(emptyRows, dev)], 0);
  const [, perm] = opList('sortStable', keys, 0, false);
  const m = n + e;
  const inv = op('indexPut', op('zeros', [m], code('int64'), dev), [perm], op('arange', 0, m, 1, code('int64'), dev), false);
  const emptyInd = op('eq', fromTyped(count, [count.length], 'int32', dev), sc(0));
  return [
    backend.output(allIdx.indexSelect(0, perm), indices.dtype),
    backend.output(allVals.indexSelect(0, perm), values.dtype),
    backend.output(emptyInd, 'bool'),
    backend.output(inv.narrow(0, 0, n), 'int32'),
  ];
});

export const configs: KernelConfig[] = [sparseToDenseConfig, sparseReshapeConfig, sparseFillEmptyRowsConfig];
