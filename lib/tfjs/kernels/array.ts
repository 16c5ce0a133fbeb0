// Shape and data-movement kernels of the residual tfjs backend: reshape, transpose, slicing, joins,
// gathers and scatters, padding, creation. Semantics follow tfjs-backend-cpu.
import { backend_util, slice_util, upcastType, util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../../addon/binding.js';
import { wrapT } from '../../tensor/tensor.js';
import { code, defineKernel, op, sc, torchDtype, type ResidualBackend, type Tensor } from './util.js';

function storageShape(i: TensorInfo, shape: readonly number[]): number[] {
  return i.dtype === 'complex64' ? [...shape, 2] : [...shape];
}
/** An int64 tensor from JS numbers (indices). */
function longT(values: ArrayLike<number>, shape: number[], device: string): Tensor {
  const buf = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) buf[i] = BigInt(values[i]);
  let t = wrapT(native.fromBuffer(buf, 0, shape, code('int64'), true));
  if (device !== 'cpu') t = t.to(device as 'cuda');
  return t;
}
function valueOf(b: ResidualBackend, i: TensorInfo): number[] {
  return Array.from(b.readSync(i.dataId) as ArrayLike<number>);
}

// Reshape, ExpandDims and Identity return their input's dataId with one more reference (as the cpu
// backend): no copy, and tfjs's per-kernel dataId accounting sees no new buffer. tensorOf() gives
// later kernels a view of the shape they ask for.
function share(backend: ResidualBackend, x: TensorInfo, shape: number[]): TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape, dtype: x.dtype };
}
const reshape = defineKernel('Reshape', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const size = util.sizeFromShape(x.shape);
  const shape = util.inferFromImplicitShape(attrs.shape as number[], size);
  const outSize = util.sizeFromShape(shape);
  util.assert(size === outSize, () => `The new shape (${shape}) has ${outSize} elements and the old shape (${x.shape}) has ${size} elements. The new shape and old shape must have the same number of elements.`);
  return share(backend, x, shape);
});

const identity = defineKernel('Identity', ({ inputs, backend }) => share(backend, inputs.x, inputs.x.shape));

const expandDims = defineKernel('ExpandDims', ({ inputs, attrs, backend }) => {
  const x = inputs.input;
  const rank = x.shape.length;
  let dim = attrs.dim as number;
  if (dim < 0) {
    util.assert(-(rank + 1) <= dim, () => `Axis must be in the interval [${-(rank + 1)}, ${rank}]`);
    dim = rank + dim + 1;
  }
  const shape = [...x.shape];
  shape.splice(dim, 0, 1);
  return share(backend, x, shape);
});

const transpose = defineKernel('Transpose', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const perm = attrs.perm as number[];
  const p = x.dtype === 'complex64' ? [...perm, perm.length] : perm;
  return backend.output(backend.tensorOf(x).permute(p).contiguous(), x.dtype);
});

/** A slice: begin/size per dimension (size -1: to the end). */
function sliceT(t: Tensor, begin: number[], size: number[]): Tensor {
  let y = t;
  for (let d = 0; d < begin.length; d++) if (begin[d] !== 0 || size[d] !== t.shape[d]) y = y.narrow(d, begin[d], size[d]);
  return y;
}
const slice = defineKernel('Slice', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const [begin, size] = slice_util.parseSliceParams(x as never, attrs.begin as number[], attrs.size as number[]);
  slice_util.assertParamsValid(x as never, begin, size);
  return backend.output(sliceT(backend.tensorOf(x), begin, size).contiguous(), x.dtype);
});

const stridedSlice = defineKernel('StridedSlice', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const a = attrs as unknown as { begin: number[]; end: number[]; strides: number[]; beginMask: number; endMask: number; ellipsisMask: number; newAxisMask: number; shrinkAxisMask: number };
  const info = slice_util.sliceInfo(x.shape, a.begin, a.end, a.strides, a.beginMask, a.endMask, a.ellipsisMask, a.newAxisMask, a.shrinkAxisMask);
  const t = backend.tensorOf(x);
  let y: Tensor;
  if (info.isIdentity) y = t.clone();
  else {
    // Dimension d keeps begin[d] + i * strides[d] for i < its output size (negative strides walk back).
    const sizes = slice_util.computeOutShape(info.begin, info.end, info.strides);
    if (sizes.some((n) => n <= 0)) return backend.output(op('zeros', storageShape(x, info.finalShape), code(torchDtype(x.dtype)), backend.device), x.dtype);
    y = t;
    for (let d = 0; d < sizes.length; d++) {
      const n = sizes[d];
      const b = info.begin[d];
      const s = info.strides[d];
      if (s === 1) {
        if (b !== 0 || n !== y.shape[d]) y = y.narrow(d, b, n);
      } else if (s > 0) {
        y = op('slice', y, d, b, b + (n - 1) * s + 1, s);
      } else {
        const idx = Array.from({ length: n }, (_, i) => b + i * s);
        y = y.indexSelect(d, longT(idx, [n], backend.device));
      }
    }
  }
  return backend.output(y.reshape(storageShape(x, info.finalShape)).contiguous(), x.dtype);
});

function listOf(inputs: unknown): TensorInfo[] {
  return inputs as TensorInfo[];
}

const concat = defineKernel('Concat', ({ inputs, attrs, backend }) => {
  const list = listOf(inputs);
  const axis = util.parseAxisParam(attrs.axis as number, list[0].shape)[0];
  const shapes = list.map((t) => t.shape);
  backend_util.assertParamsConsistent(shapes, axis);
  const outShape = backend_util.computeOutShape(shapes, axis);
  const dtype = list.map((t) => t.dtype).reduce((x, y) => upcastType(x, y));
  const parts = list.filter((t) => util.sizeFromShape(t.shape) > 0);
  if (parts.length === 0) return backend.output(op('zeros', storageShape({ dtype } as TensorInfo, outShape), code(torchDtype(dtype)), backend.device), dtype);
  const ts = parts.map((t) => {
    const v = backend.tensorOf(t);
    if (dtype === 'complex64' && t.dtype !== 'complex64') return op('stack', [v.to('float32'), op('zerosLike', v.to('float32'))], -1);
    return v.dtype === torchDtype(dtype) ? v : v.to(torchDtype(dtype));
  });
  return backend.output(op('cat', ts, axis), dtype);
});

const pack = defineKernel('Pack', ({ inputs, attrs, backend }) => {
  const list = listOf(inputs);
  const rank = list[0].shape.length;
  let axis = attrs.axis as number;
  if (axis < 0) axis += rank + 1;
  const dtype = list[0].dtype;
  for (const t of list) {
    util.assertShapesMatch(list[0].shape, t.shape, 'All tensors passed to stack must have matching shapes');
    util.assert(dtype === t.dtype, () => 'All tensors passed to stack must have matching dtypes');
  }
  return backend.output(op('stack', list.map((t) => backend.tensorOf(t)), axis), dtype);
});

const unpack = defineKernel('Unpack', ({ inputs, attrs, backend }) => {
  const x = inputs.value;
  let axis = attrs.axis as number;
  if (axis < 0) axis += x.shape.length;
  const t = backend.tensorOf(x);
  const out: TensorInfo[] = [];
  for (let i = 0; i < x.shape[axis]; i++) out.push(backend.output(t.select(axis, i).contiguous(), x.dtype));
  return out;
});

const splitV = defineKernel('SplitV', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const axis = util.parseAxisParam(attrs.axis as number, x.shape)[0];
  const sizes = backend_util.prepareSplitSize(x as never, attrs.numOrSizeSplits as number | number[], axis);
  const t = backend.tensorOf(x);
  const out: TensorInfo[] = [];
  let start = 0;
  for (const s of sizes) {
    out.push(backend.output(t.narrow(axis, start, s).contiguous(), x.dtype));
    start += s;
  }
  return out;
});

const tile = defineKernel('Tile', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const reps = attrs.reps as number[];
  const r = x.dtype === 'complex64' ? [...reps, 1] : reps;
  return backend.output(backend.tensorOf(x).repeat(r), x.dtype);
});

const reverse = defineKernel('Reverse', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const dims = util.parseAxisParam(attrs.dims as number | number[], x.shape);
  const t = backend.tensorOf(x);
  if (dims.length === 0) return backend.output(t.clone(), x.dtype);
  return backend.output(t.flip(dims), x.dtype);
});

const gatherV2 = defineKernel('GatherV2', ({ inputs, attrs, backend }) => {
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
  const s = longT(strides.slice(0, k), [k], device);
  return op('sum', op('mul', idx.to('int64').reshape([-1, k]), s), [1], false, undefined);
}

const gatherNd = defineKernel('GatherNd', ({ inputs, backend }) => {
  const { params, indices } = inputs;
  const sliceRank = indices.shape[indices.shape.length - 1];
  const [resultShape, numSlices, sliceSize, strides] = backend_util.prepareAndValidate(params as never, indices as never);
  const dt = torchDtype(params.dtype);
  if (numSlices === 0) return backend.output(op('zeros', storageShape(params, resultShape), code(dt), backend.device), params.dtype);
  const extra = params.dtype === 'complex64' ? [2] : [];
  const rows = util.sizeFromShape(params.shape) / sliceSize;
  const flat = flatIndices(backend.tensorOf(indices), strides, sliceRank, backend.device);
  const bad = op('logicalOr', op('lt', flat, sc(0)), op('ge', flat, sc(rows)));
  if (op('any', bad).item()) {
    const i = op('argmax', bad.to('uint8'), 0, false).item() as number;
    const idxVals = valueOf(backend, indices).slice(i * sliceRank, (i + 1) * sliceRank);
    throw new Error(`Invalid index: [${idxVals}] does not index into [${params.shape}]`);
  }
  const p = backend.tensorOf(params).reshape([rows, sliceSize, ...extra]);
  return backend.output(p.indexSelect(0, flat).reshape(storageShape(params, resultShape)), params.dtype);
});

function scatter(backend: ResidualBackend, indices: TensorInfo, updates: TensorInfo, shape: number[], base: Tensor, accumulate: boolean): Tensor {
  const { sliceRank, numUpdates, sliceSize, strides, outputSize } = backend_util.calculateShapes(updates as never, indices as never, shape);
  const rows = outputSize / sliceSize;
  if (numUpdates === 0) return base.reshape(shape);
  const flat = sliceRank === 0 ? op('zeros', [numUpdates], code('int64'), backend.device) : flatIndices(backend.tensorOf(indices), strides, sliceRank, backend.device);
  const bad = op('logicalOr', op('lt', flat, sc(0)), op('ge', flat, sc(rows)));
  if (op('any', bad).item()) {
    const i = op('argmax', bad.to('uint8'), 0, false).item() as number;
    const idxVals = valueOf(backend, indices).slice(i * sliceRank, (i + 1) * sliceRank);
    throw new Error(`Invalid indices: ${idxVals} does not index into ${shape}`);
  }
  const u = backend.tensorOf(updates);
  const ub = (u.dtype === base.dtype ? u : u.to(base.dtype)).reshape([numUpdates, sliceSize]);
  const b2 = base.reshape([rows, sliceSize]);
  return op('indexPut', b2, [flat], ub, accumulate).reshape(shape);
}

const scatterNd = defineKernel('ScatterNd', ({ inputs, attrs, backend }) => {
  const { indices, updates } = inputs;
  const shape = attrs.shape as number[];
  notStringOrComplex('ScatterNd', updates);
  const base = op('zeros', shape, code(torchDtype(updates.dtype)), backend.device);
  return backend.output(scatter(backend, indices, updates, shape, base, true), updates.dtype);
});

const tensorScatterUpdate = defineKernel('TensorScatterUpdate', ({ inputs, backend }) => {
  const { tensor, indices, updates } = inputs;
  if (tensor.dtype === 'complex64') throw new Error('TensorScatterUpdate: complex64 tensors are not supported');
  const base = backend.tensorOf(tensor);
  return backend.output(scatter(backend, indices, updates, tensor.shape, base, false), tensor.dtype);
});

const sparseToDense = defineKernel('SparseToDense', ({ inputs, attrs, backend }) => {
  const { sparseIndices, sparseValues, defaultValue } = inputs;
  const shape = attrs.outputShape as number[];
  if (sparseValues.dtype === 'complex64') throw new Error('SparseToDense: complex64 tensors are not supported');
  const dv = backend.tensorOf(defaultValue);
  const dt = torchDtype(sparseValues.dtype);
  const base = op('full', shape, Number(dv.reshape([]).to(dt).item()), code(dt), backend.device);
  const { numUpdates, sliceSize } = backend_util.calculateShapes(sparseValues as never, sparseIndices as never, shape);
  let vals = sparseValues;
  if (util.sizeFromShape(sparseValues.shape) !== numUpdates * sliceSize) {
    // A scalar value for every index.
    const v = backend.tensorOf(sparseValues).reshape([]).expand([numUpdates * sliceSize]).contiguous();
    vals = backend.output(v, sparseValues.dtype);
    try {
      return backend.output(scatter(backend, sparseIndices, { ...vals, shape: [numUpdates * sliceSize] }, shape, base, false), sparseValues.dtype);
    } finally {
      backend.disposeData(vals.dataId, true);
    }
  }
  return backend.output(scatter(backend, sparseIndices, vals, shape, base, false), sparseValues.dtype);
});

function notStringOrComplex(name: string, ...xs: TensorInfo[]): void {
  for (const x of xs) if (x.dtype === 'string' || x.dtype === 'complex64') throw new Error(`${name}: ${x.dtype} tensors are not supported`);
}

const select = defineKernel('Select', ({ inputs, backend }) => {
  const { condition, t, e } = inputs;
  if (t.dtype === 'complex64' || e.dtype === 'complex64') throw new Error('Select: complex64 tensors are not supported');
  const dtype = upcastType(t.dtype, e.dtype);
  let c = backend.tensorOf(condition);
  if (c.dtype !== 'bool') c = op('ne', c, sc(0));
  if (condition.shape.length === 1 && t.shape.length > 1) c = c.reshape([condition.shape[0], ...t.shape.slice(1).map(() => 1)]);
  const dt = torchDtype(dtype);
  const tv = backend.tensorOf(t);
  const ev = backend.tensorOf(e);
  const out = op('where', c, tv.dtype === dt ? tv : tv.to(dt), ev.dtype === dt ? ev : ev.to(dt));
  return backend.output(out.expand(t.shape).contiguous(), dtype);
});

const oneHot = defineKernel('OneHot', ({ inputs, attrs, backend }) => {
  const indices = inputs.indices;
  const depth = attrs.depth as number;
  const onValue = attrs.onValue as number;
  const offValue = attrs.offValue as number;
  const dtype = (attrs.dtype as DataType | undefined) ?? 'int32';
  const idx = backend.tensorOf(indices).to('int64').unsqueeze(-1);
  const range = op('arange', 0, depth, 1, code('int64'), backend.device);
  const hit = op('eq', idx, range);
  const f = op('where', hit, sc(onValue), sc(offValue));
  return backend.output(f.to('float32'), dtype);
});

const padV2 = defineKernel('PadV2', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('PadV2', x);
  const paddings = attrs.paddings as [number, number][];
  const value = (attrs.constantValue as number | undefined) ?? 0;
  const flat: number[] = [];
  for (let d = paddings.length - 1; d >= 0; d--) flat.push(paddings[d][0], paddings[d][1]);
  let t = backend.tensorOf(x);
  if (t.dtype === 'bool') t = t.to('uint8');
  return backend.output(op('pad', t, flat, 'constant', value), x.dtype);
});

const mirrorPad = defineKernel('MirrorPad', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('MirrorPad', x);
  const paddings = attrs.paddings as [number, number][];
  const offset = attrs.mode === 'reflect' ? 0 : 1;
  let t = backend.tensorOf(x);
  for (let d = 0; d < paddings.length; d++) {
    const [before, after] = paddings[d];
    if (before === 0 && after === 0) continue;
    const n = x.shape[d];
    const idx: number[] = [];
    for (let i = 0; i < before + n + after; i++) {
      let c = i;
      if (c < before) c = before * 2 - c - offset;
      else if (c >= before + n) c = (before + n - 1) * 2 - c + offset;
      idx.push(c - before);
    }
    t = t.indexSelect(d, longT(idx, [idx.length], backend.device));
  }
  return backend.output(t === backend.tensorOf(x) ? t.clone() : t, x.dtype);
});

const fill = defineKernel('Fill', ({ attrs, backend }) => {
  const shape = attrs.shape as number[];
  const value = attrs.value as number | string;
  const dtype = (attrs.dtype as DataType | undefined) ?? util.inferDtype(value);
  if (dtype === 'string') {
    const s = util.encodeString(value as string);
    return backend.outputStrings(new Array(util.sizeFromShape(shape)).fill(s), shape);
  }
  return backend.output(op('full', shape, Number(value), code(torchDtype(dtype)), backend.device), dtype);
});

const range = defineKernel('Range', ({ attrs, backend }) => {
  const { start, stop, step, dtype } = attrs as unknown as { start: number; stop: number; step: number; dtype: 'float32' | 'int32' };
  // As the cpu backend's rangeImpl: empty when start == stop or the step points away from stop (a step
  // of 1 from a larger start counts down).
  let n = 0;
  let effStep = step;
  if (!(start === stop || (start < stop && step < 0) || (stop < start && step > 1))) {
    n = Math.abs(Math.ceil((stop - start) / step));
    if (stop < start && step === 1) effStep = -1;
  }
  const vals = dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
  if (n > 0) {
    vals[0] = start;
    for (let i = 1; i < n; i++) vals[i] = vals[i - 1] + effStep;
  }
  let t = wrapT(native.fromBuffer(vals, 0, [n], code(dtype), true));
  if (backend.device !== 'cpu') t = t.to(backend.device as 'cuda');
  return backend.output(t, dtype);
});

const linSpace = defineKernel('LinSpace', ({ attrs, backend }) => {
  const { start, stop, num } = attrs as unknown as { start: number; stop: number; num: number };
  // As the cpu backend: each value is the previous one plus the step, in float32.
  const vals = new Float32Array(num);
  if (num > 0) {
    const step = (stop - start) / (num - 1);
    vals[0] = start;
    for (let i = 1; i < num; i++) vals[i] = vals[i - 1] + step;
  }
  let t = wrapT(native.fromBuffer(vals, 0, [num], code('float32'), true));
  if (backend.device !== 'cpu') t = t.to(backend.device as 'cuda');
  return backend.output(t, 'float32');
});

const zerosLike = defineKernel('ZerosLike', ({ inputs, backend }) => {
  const x = inputs.x;
  if (x.dtype === 'string') throw new Error('ZerosLike: string tensors are not supported');
  return backend.output(op('zerosLike', backend.tensorOf(x)), x.dtype);
});
const onesLike = defineKernel('OnesLike', ({ inputs, backend }) => {
  const x = inputs.x;
  if (x.dtype === 'string') throw new Error('OnesLike: string tensors are not supported');
  const t = backend.tensorOf(x);
  if (x.dtype === 'complex64') return backend.output(op('stack', [op('onesLike', t.select(-1, 0)), op('zerosLike', t.select(-1, 1))], -1), x.dtype);
  return backend.output(op('onesLike', t), x.dtype);
});

const broadcastArgs = defineKernel('BroadcastArgs', ({ inputs, backend }) => {
  const { s0, s1 } = inputs;
  const a = valueOf(backend, s0);
  const b = valueOf(backend, s1);
  const shape = backend_util.assertAndGetBroadcastShape(a, b);
  let t = wrapT(native.fromBuffer(new Int32Array(shape), 0, [shape.length], code('int32'), true));
  if (backend.device !== 'cpu') t = t.to(backend.device as 'cuda');
  return backend.output(t, 'int32');
});

const diag = defineKernel('Diag', ({ inputs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('Diag', x);
  const n = util.sizeFromShape(x.shape);
  const d = op('diag', backend.tensorOf(x).reshape([n]), 0);
  return backend.output(d.reshape([...x.shape, ...x.shape]), x.dtype);
});

export const configs: KernelConfig[] = [
  reshape, identity, expandDims, transpose, slice, stridedSlice, concat, pack, unpack, splitV, tile, reverse,
  gatherV2, gatherNd, scatterNd, tensorScatterUpdate, sparseToDense, select, oneHot, padV2, mirrorPad, fill,
  range, linSpace, zerosLike, onesLike, broadcastArgs, diag,
];
