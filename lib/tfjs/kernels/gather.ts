// Gather and scatter kernels of the residual tfjs backend: GatherV2, GatherNd, ScatterNd,
// TensorScatterUpdate (and the scatter SparseToDense uses, sparse.ts). Indices are checked before use,
// with tf's messages.
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import {
  checkSize,
  code,
  defineKernel,
  longT,
  notStringOrComplex,
  numbersOf,
  op,
  sc,
  storageShape,
  torchDtype,
  type ResidualBackend,
  type Tensor,
} from './util.js';

export const gatherV2Config = defineKernel('GatherV2', ({ inputs, attrs, backend }) => {
  const { x, indices } = inputs;
  const axis = util.parseAxisParam(attrs.axis as number, x.shape)[0];
  const batchDims = (attrs.batchDims as number | undefined) ?? 0;
  const idx = backend.tensorOf(indices);
  const axisDim = x.shape[axis];
  if (idx.numel() > 0) {
    const lo = op('amin', idx, [...Array(indices.shape.length).keys()], false).item() as number;
    const hi = op('amax', idx, [...Array(indices.shape.length).keys()], false).item() as number;
    for (const v of [lo, hi]) util.assert(v <= axisDim - 1 && v >= 0, () => `GatherV2: the index value ${v} is not in [0, ${axisDim - 1}]`);
  }
  const info = backend_util.segment_util.collectGatherOpShapeInfo(x as never, indices as never, axis, batchDims);
  checkSize('GatherV2', info.outputShape, x.dtype);
  const n = util.sizeFromShape(indices.shape) / info.batchSize;
  const extra = x.dtype === 'complex64' ? [2] : [];
  const xt = backend.tensorOf(x).reshape([info.batchSize, info.outerSize, info.dimSize, info.sliceSize, ...extra]);
  let ix = idx.to('int64').reshape([info.batchSize, 1, n, 1, ...extra.map(() => 1)]);
  ix = ix.expand([info.batchSize, info.outerSize, n, info.sliceSize, ...extra]);
  const out = xt.gather(2, ix);
  return backend.output(out.reshape(storageShape(x, info.outputShape)), x.dtype);
});

/** Flat row indices of tf's N-d indices ([..., K]) into a tensor whose first K dims are flattened. */
function flatIndices(idx: Tensor, strides: number[], sliceRank: number, device: string): Tensor {
  const k = sliceRank;
  const s = longT(strides.slice(0, k), device);
  return op('sum', op('mul', idx.to('int64').reshape([-1, k]), s), [1], false, undefined);
}

export const gatherNdConfig = defineKernel('GatherNd', ({ inputs, backend }) => {
  const { params, indices } = inputs;
  const sliceRank = indices.shape[indices.shape.length - 1];
  const [resultShape, numSlices, sliceSize, strides] = backend_util.prepareAndValidate(params as never, indices as never);
  checkSize('GatherNd', resultShape, params.dtype);
  const dt = torchDtype(params.dtype);
  if (numSlices === 0) return backend.output(op('zeros', storageShape(params, resultShape), code(dt), backend.device), params.dtype);
  const extra = params.dtype === 'complex64' ? [2] : [];
  const rows = util.sizeFromShape(params.shape) / sliceSize;
  const flat = flatIndices(backend.tensorOf(indices), strides, sliceRank, backend.device);
  const bad = op('logicalOr', op('lt', flat, sc(0)), op('ge', flat, sc(rows)));
  if (op('any', bad).item()) {
    const i = op('argmax', bad.to('uint8'), 0, false).item() as number;
    const idxVals = numbersOf(backend, indices).slice(i * sliceRank, (i + 1) * sliceRank);
    throw new Error(`Invalid index: [${idxVals}] does not index into [${params.shape}]`);
  }
  const p = backend.tensorOf(params).reshape([rows, sliceSize, ...extra]);
  return backend.output(p.indexSelect(0, flat).reshape(storageShape(params, resultShape)), params.dtype);
});

/** Scatters `updates` at tf's N-d `indices` into `base` (reshaped to `shape`), adding when `accumulate`. */
export function scatter(
  backend: ResidualBackend,
  indices: TensorInfo,
  updates: TensorInfo,
  shape: number[],
  base: Tensor,
  accumulate: boolean,
): Tensor {
  const { sliceRank, numUpdates, sliceSize, strides, outputSize } = backend_util.calculateShapes(updates as never, indices as never, shape);
  const rows = outputSize / sliceSize;
  if (numUpdates === 0) return base.reshape(shape);
  const flat =
    sliceRank === 0
      ? op('zeros', [numUpdates], code('int64'), backend.device)
      : flatIndices(backend.tensorOf(indices), strides, sliceRank, backend.device);
  const bad = op('logicalOr', op('lt', flat, sc(0)), op('ge', flat, sc(rows)));
  if (op('any', bad).item()) {
    const i = op('argmax', bad.to('uint8'), 0, false).item() as number;
    const idxVals = numbersOf(backend, indices).slice(i * sliceRank, (i + 1) * sliceRank);
    throw new Error(`Invalid indices: ${idxVals} does not index into ${shape}`);
  }
  const u = backend.tensorOf(updates);
  const ub = (u.dtype === base.dtype ? u : u.to(base.dtype)).reshape([numUpdates, sliceSize]);
  const b2 = base.reshape([rows, sliceSize]);
  return op('indexPut', b2, [flat], ub, accumulate).reshape(shape);
}

export const scatterNdConfig = defineKernel('ScatterNd', ({ inputs, attrs, backend }) => {
  const { indices, updates } = inputs;
  const shape = attrs.shape as number[];
  notStringOrComplex('ScatterNd', updates);
  checkSize('ScatterNd', shape, updates.dtype);
  const base = op('zeros', shape, code(torchDtype(updates.dtype)), backend.device);
  return backend.output(scatter(backend, indices, updates, shape, base, true), updates.dtype);
});

export const tensorScatterUpdateConfig = defineKernel('TensorScatterUpdate', ({ inputs, backend }) => {
  const { tensor, indices, updates } = inputs;
  if (tensor.dtype === 'complex64') throw new Error('TensorScatterUpdate: complex64 tensors are not supported');
  const base = backend.tensorOf(tensor);
  return backend.output(scatter(backend, indices, updates, tensor.shape, base, false), tensor.dtype);
});

export const configs: KernelConfig[] = [gatherV2Config, gatherNdConfig, scatterNdConfig, tensorScatterUpdateConfig];
