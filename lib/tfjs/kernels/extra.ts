// Kernels the cpu backend registers beyond tfjs-node's 155, where libtorch has the operation:
// SparseSegmentSum/SparseSegmentMean (index_add), MaxPoolWithArgmax (max_pool2d_with_indices).
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../../addon/binding.js';
import { wrapT } from '../../tensor/tensor.js';
import { code, defineKernel, fromNCHW, op, opList, sc, toNCHW, torchDtype, type ResidualBackend, type Tensor } from './util.js';

function ints(backend: ResidualBackend, i: TensorInfo): Int32Array {
  return Int32Array.from(backend.readSync(i.dataId) as ArrayLike<number>);
}
function longT(values: ArrayLike<number>, device: string): Tensor {
  const buf = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) buf[i] = BigInt(values[i]);
  const t = wrapT(native.fromBuffer(buf, 0, [values.length], code('int64'), true));
  return device === 'cpu' ? t : t.to(device as 'cuda');
}

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
      if (indices[i] < 0 || indices[i] >= inputRows) throw new Error(backend_util.getSparseSegmentReductionIndicesOutOfRangeErrorMessage(i, indices[i], inputRows));
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
    const dt = torchDtype(data.dtype);
    let out = op('zeros', outShape, code(dt), backend.device);
    if (idx.length > 0) {
      const x = backend.tensorOf(data);
      const picked = x.indexSelect(0, longT(idx, backend.device));
      const segT = longT(seg, backend.device);
      out = op('indexAdd', out, 0, segT, picked);
      if (mean) {
        const counts = op('indexAdd', op('zeros', [rows], code('float32'), backend.device), 0, segT, op('ones', [seg.length], code('float32'), backend.device));
        const c = op('clamp', counts, 1, null).reshape([rows, ...data.shape.slice(1).map(() => 1)]);
        out = op('div', out.to('float32'), c, null);
      }
    }
    return backend.output(out, data.dtype);
  });
}

const maxPoolWithArgmax = defineKernel('MaxPoolWithArgmax', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const { filterSize, strides, pad, includeBatchInIndex } = attrs as unknown as { filterSize: number | [number, number]; strides: number | [number, number]; pad: 'same' | 'valid' | number; includeBatchInIndex: boolean };
  const info = backend_util.computePool2DInfo(x.shape as [number, number, number, number], filterSize, strides, [1, 1], pad);
  const [b, h, w, c] = x.shape;
  const { top, bottom, left, right } = info.padInfo;
  // NaNs never win a window (as the cpu backend's strict comparison).
  const xf = backend.tensorOf(x).to('float32');
  let t = toNCHW(op('where', op('isnan', xf), sc(-Infinity), xf));
  if (top || bottom || left || right) t = op('pad', t, [left, right, top, bottom], 'constant', -Infinity);
  const wp = w + left + right;
  const [vals, idx] = opList('maxPool2dWithIndices', t, [info.filterHeight, info.filterWidth], [info.strideHeight, info.strideWidth], [0, 0], [1, 1], false);
  // libtorch's index is y * Wp + x in the padded plane; tf's is ((b * H + y) * W + x) * C + c.
  const yp = op('div', idx, sc(wp), 'floor');
  const xp = op('sub', idx, op('mul', yp, sc(wp)), 1);
  const y = op('sub', yp, sc(top), 1);
  const xx = op('sub', xp, sc(left), 1);
  const cIdx = op('arange', 0, c, 1, code('int64'), backend.device).reshape([1, c, 1, 1]);
  let flat = op('add', op('mul', op('add', op('mul', y, sc(w)), xx, 1), sc(c)), cIdx, 1);
  if (includeBatchInIndex) {
    const bIdx = op('arange', 0, b, 1, code('int64'), backend.device).reshape([b, 1, 1, 1]);
    flat = op('add', flat, op('mul', bIdx, sc(h * w * c)), 1);
  }
  return [backend.output(fromNCHW(vals).contiguous(), x.dtype), backend.output(fromNCHW(flat).contiguous(), 'int32')];
});

// tf.image.transform: projective transforms with tf's fill modes and nearest/bilinear interpolation,
// computed as whole-tensor libtorch ops (coordinates in float64, as the cpu backend's JS numbers).
function truncT(v: Tensor): Tensor {
  return op('where', op('lt', v, sc(0)), op('ceil', v), op('floor', v));
}
function mapCoord(c: Tensor, len: number, mode: string): Tensor {
  if (mode === 'nearest') return op('clamp', c, 0, len - 1);
  if (mode !== 'reflect' && mode !== 'wrap') return c;
  if (len <= 1) return op('where', op('logicalOr', op('lt', c, sc(0)), op('gt', c, sc(len - 1))), sc(0), c);
  let neg: Tensor;
  let pos: Tensor;
  if (mode === 'reflect') {
    const sz2 = 2 * len;
    const n1 = op('where', op('lt', c, sc(sz2)), op('add', op('mul', truncT(op('div', op('neg', c), sc(sz2), null)), sc(sz2)), c, 1), c);
    neg = op('where', op('lt', n1, sc(-len)), op('add', n1, sc(sz2), 1), op('sub', op('neg', n1), sc(1), 1));
    const p1 = op('sub', c, op('mul', truncT(op('div', c, sc(sz2), null)), sc(sz2)), 1);
    pos = op('where', op('ge', p1, sc(len)), op('sub', op('neg', p1), sc(1 - sz2), 1), p1);
  } else {
    const sz = len - 1;
    neg = op('add', c, op('mul', op('add', truncT(op('div', op('neg', c), sc(sz), null)), sc(1), 1), sc(len)), 1);
    pos = op('sub', c, op('mul', truncT(op('div', c, sc(sz), null)), sc(len)), 1);
  }
  const mapped = op('where', op('lt', c, sc(0)), neg, op('where', op('gt', c, sc(len - 1)), pos, c));
  return op('clamp', mapped, 0, len - 1);
}
const transform = defineKernel('Transform', ({ inputs, attrs, backend }) => {
  const { image, transforms } = inputs;
  const { interpolation, fillMode, fillValue, outputShape } = attrs as unknown as { interpolation: string; fillMode: string; fillValue: number; outputShape?: [number, number] };
  if (interpolation !== 'nearest' && interpolation !== 'bilinear') throw new Error(`Error in Transform: Expect 'nearest' or 'bilinear', but got ${interpolation}`);
  const [batch, h, w, ch] = image.shape;
  const [oh, ow] = outputShape ?? [h, w];
  const dev = backend.device;
  const tr = backend.tensorOf(transforms).to('float64').reshape([-1, 8]);
  const col = (i: number): Tensor => tr.select(1, i).reshape([-1, 1, 1]);
  const xs = op('arange', 0, ow, 1, code('float64'), dev).reshape([1, 1, ow]);
  const ys = op('arange', 0, oh, 1, code('float64'), dev).reshape([1, oh, 1]);
  const lin = (a: number, b: number, c: number): Tensor => op('add', op('add', op('mul', col(a), xs), op('mul', col(b), ys), 1), col(c), 1);
  const proj = op('add', op('add', op('mul', col(6), xs), op('mul', col(7), ys), 1), sc(1), 1);
  const inX = mapCoord(op('div', lin(0, 1, 2), proj, null), w, fillMode);
  const inY = mapCoord(op('div', lin(3, 4, 5), proj, null), h, fillMode);
  const img = backend.tensorOf(image).to('float64').reshape([batch, h * w, ch]);
  const nb = Math.max(batch, tr.shape[0]);
  const read = (yy: Tensor, xx: Tensor): Tensor => {
    const ok = op('logicalAnd', op('logicalAnd', op('ge', yy, sc(0)), op('lt', yy, sc(h))), op('logicalAnd', op('ge', xx, sc(0)), op('lt', xx, sc(w))));
    const safe = (v: Tensor, hi: number): Tensor => op('clamp', op('where', op('isnan', v), sc(0), v), 0, hi);
    const flat = op('add', op('mul', safe(yy, h - 1), sc(w)), safe(xx, w - 1), 1).to('int64');
    const idx = flat.expand([nb, oh, ow]).reshape([nb, oh * ow, 1]).expand([nb, oh * ow, ch]);
    const v = img.expand([nb, h * w, ch]).gather(1, idx).reshape([nb, oh, ow, ch]);
    return op('where', ok.expand([nb, oh, ow]).unsqueeze(-1), v, sc(fillValue));
  };
  let out: Tensor;
  if (interpolation === 'nearest') {
    // Math.round: halves up
    out = read(op('floor', op('add', inY, sc(0.5), 1)), op('floor', op('add', inX, sc(0.5), 1)));
  } else {
    const y0 = op('floor', inY);
    const x0 = op('floor', inX);
    const y1 = op('add', y0, sc(1), 1);
    const x1 = op('add', x0, sc(1), 1);
    const e = (t: Tensor): Tensor => t.expand([nb, oh, ow]).unsqueeze(-1);
    const top = op('add', op('mul', e(op('sub', x1, inX, 1)), read(y0, x0)), op('mul', e(op('sub', inX, x0, 1)), read(y0, x1)), 1);
    const bot = op('add', op('mul', e(op('sub', x1, inX, 1)), read(y1, x0)), op('mul', e(op('sub', inX, x0, 1)), read(y1, x1)), 1);
    out = op('add', op('mul', e(op('sub', y1, inY, 1)), top), op('mul', e(op('sub', inY, y0, 1)), bot), 1);
  }
  // A zero projection leaves the fill value (as the cpu backend).
  out = op('where', op('eq', proj, sc(0)).expand([nb, oh, ow]).unsqueeze(-1), sc(fillValue), out);
  return backend.output(out.to('float32'), image.dtype);
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
const sparseReshape = defineKernel('SparseReshape', ({ inputs, backend }) => {
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
  if (outShape.reduce((a, b) => a * b, 1) !== denseSize) throw new Error(backend_util.getSparseReshapeInputOutputMismatchErrorMessage(inShape, outShape));
  const nnz = inputIndices.shape[0];
  const dev = backend.device;
  let out: Tensor;
  if (nnz === 0 || outShape.length === 0) out = op('zeros', [nnz, outShape.length], code('int32'), dev);
  else {
    const idx = backend.tensorOf(inputIndices).to('int64').reshape([nnz, inShape.length]);
    const lin = inShape.length ? op('sum', op('mul', idx, longT(stridesOf(inShape), dev)), [1], true, undefined) : op('zeros', [nnz, 1], code('int64'), dev);
    out = op('fmod', op('div', lin, longT(stridesOf(outShape), dev), 'floor'), longT(outShape, dev));
  }
  const shapeT = wrapT(native.fromBuffer(new Int32Array(outShape), 0, [outShape.length], code('int32'), true));
  return [backend.output(out, 'int32'), backend.output(dev === 'cpu' ? shapeT : shapeT.to(dev as 'cuda'), 'int32')];
});

// SparseFillEmptyRows: the rows are checked in JS (tf's messages); the entries and one default entry per
// empty row are then ordered by row with a stable sort (each row keeps its entries' order, as tf).
const sparseFillEmptyRows = defineKernel('SparseFillEmptyRows', ({ inputs, backend }) => {
  const { indices, values, denseShape, defaultValue } = inputs;
  const n = indices.shape[0];
  const rank = indices.shape[1];
  const rows = ints(backend, denseShape)[0];
  const dev = backend.device;
  const idx = backend.tensorOf(indices).reshape([n, rank]);
  const rowVals = n > 0 ? Int32Array.from(idx.select(1, 0).to('int32').toTypedArray() as Int32Array) : new Int32Array(0);
  if (rows === 0 && n !== 0) throw new Error(backend_util.getSparseFillEmptyRowsIndicesDenseShapeMismatch(n));
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
  const emptyInd = op('eq', wrapT(native.fromBuffer(count, 0, [count.length], code('int32'), true)).to(dev as 'cpu'), sc(0));
  return [
    backend.output(allIdx.indexSelect(0, perm), indices.dtype),
    backend.output(allVals.indexSelect(0, perm), values.dtype),
    backend.output(emptyInd, 'bool'),
    backend.output(inv.narrow(0, 0, n), 'int32'),
  ];
});

// RaggedRange: row sizes from the (small) starts/limits/deltas vectors in JS with tf's checks, then every
// value computed at once: value k of row r is start[r] + (k - splits[r]) * delta[r] (float64, rounded once).
const INT32_MAX = 2147483647;
const raggedRange = defineKernel('RaggedRange', ({ inputs, backend }) => {
  const { starts, limits, deltas } = inputs;
  for (const [name, t] of [['starts', starts], ['limits', limits], ['deltas', deltas]] as const) {
    if (t.shape.length > 1) throw new Error(`${name} must be a scalar or vector`);
  }
  const sizes = [starts, limits, deltas].filter((t) => t.shape.length === 1).map((t) => t.shape[0]);
  if (sizes.some((n) => n !== sizes[0])) throw new Error('starts, limits, and deltas must have the same shape');
  const rows = sizes.length ? sizes[0] : 1;
  const read = (t: TensorInfo): number[] => Array.from(backend.readSync(t.dataId) as ArrayLike<number>);
  const [st, li, de] = [read(starts), read(limits), read(deltas)];
  const at = (v: number[], r: number): number => (v.length === 1 && rows !== 1 ? v[0] : v[r] ?? v[0]);
  const splits = new Int32Array(rows + 1);
  for (let r = 0; r < rows; r++) {
    const a = at(st, r);
    const b = at(li, r);
    const d = at(de, r);
    if (d === 0) throw new Error('Requires delta != 0');
    let n = 0;
    if (!((d > 0 && b < a) || (d < 0 && b > a))) {
      n = Math.ceil(Math.abs((b - a) / d));
      if (n > INT32_MAX) throw new Error(`Requires ((limit - start) / delta) <= ${INT32_MAX}`);
    }
    splits[r + 1] = splits[r] + n;
  }
  const dev = backend.device;
  const total = splits[rows];
  const splitsT = wrapT(native.fromBuffer(splits, 0, [rows + 1], code('int32'), true));
  const f64 = (v: number[]): Tensor => {
    const t = wrapT(native.fromBuffer(new Float64Array(Array.from({ length: rows }, (_, r) => at(v, r))), 0, [rows], code('float64'), true));
    return dev === 'cpu' ? t : t.to(dev as 'cuda');
  };
  let values: Tensor;
  if (total === 0) values = op('zeros', [0], code('float64'), dev);
  else {
    const k = op('arange', 0, total, 1, code('int64'), dev);
    const sp = (dev === 'cpu' ? splitsT : splitsT.to(dev as 'cuda')).to('int64');
    const row = op('searchsorted', sp.narrow(0, 1, rows).contiguous(), k, false, true);
    const offset = op('sub', k, sp.indexSelect(0, row), 1).to('float64');
    values = op('add', f64(st).indexSelect(0, row), op('mul', offset, f64(de).indexSelect(0, row)), 1);
  }
  return [backend.output(dev === 'cpu' ? splitsT : splitsT.to(dev as 'cuda'), 'int32'), backend.output(values, starts.dtype)];
});

// RaggedGather: the row-splits bookkeeping in JS on the (small) split vectors, with tf's checks and
// messages; the dense values are gathered by libtorch (one index_select of the selected value rows).
const raggedGather = defineKernel('RaggedGather', ({ inputs, backend }) => {
  const splitsIn = (inputs as unknown as { paramsNestedSplits: TensorInfo[] }).paramsNestedSplits;
  const { paramsDenseValues: values, indices } = inputs;
  if (splitsIn.length === 0) throw new Error('paramsNestedSplits must be non empty');
  if (splitsIn[0].shape.length === 0) throw new Error('Split tensors must not be scalars');
  const numParams = splitsIn[0].shape[0] - 1;
  const idx = ints(backend, indices);
  const strides = indices.shape.length ? indices.shape.map((_, d) => indices.shape.slice(d + 1).reduce((a, b) => a * b, 1)) : [];
  idx.forEach((v, i) => {
    if (v < 0 || v >= numParams) {
      const loc = strides.map((st, d) => Math.floor(i / st) % indices.shape[d]);
      throw new Error(`indices[${loc.join(',')}] = ${v} is not in [0, ${numParams})`);
    }
  });
  if (values.shape.length === 0) throw new Error('params.rank must be nonzero');
  const splits = splitsIn.map((t) => ints(backend, t));
  const numValues = values.shape[0];
  splits.forEach((sp, dim) => {
    const last = dim === splits.length - 1 ? numValues : splits[dim + 1].length;
    if (sp.length === 0) throw new Error('Ragged splits may not be empty');
    if (sp[0] < 0) throw new Error('Ragged splits must be non-negative');
    if (sp[sp.length - 1] > last) throw new Error('Ragged splits must not point past values');
    for (let i = 1; i < sp.length; i++) if (sp[i - 1] > sp[i]) throw new Error('Ragged splits must be sorted in ascending order');
  });
  // Uniform splits for the leading dimensions of indices, then the gathered rows' nested splits.
  const lead = indices.shape.length - 1;
  const out: number[][] = Array.from({ length: Math.max(0, lead + splits.length) }, () => [0]);
  let nrows = 1;
  for (let d = 0; d < lead; d++) {
    nrows *= indices.shape[d];
    for (let i = 1; i <= nrows; i++) out[d].push(i * indices.shape[d + 1]);
  }
  const rows: number[] = [];
  for (const v of idx) {
    let start = v;
    let limit = v + 1;
    splits.forEach((sp, dim) => {
      // (scalar indices: the outermost splits are dropped)
      if (dim + lead >= 0) {
        const o = out[dim + lead];
        const delta = o[o.length - 1] - sp[start];
        for (let j = start; j < limit; j++) o.push(sp[j + 1] + delta);
      }
      start = sp[start];
      limit = sp[limit];
    });
    for (let r = start; r < limit; r++) rows.push(r);
  }
  const dev = backend.device;
  const splitOuts = out.map((o) => fromInts(backend, Int32Array.from(o)));
  const vt = backend.tensorOf(values);
  const dense = rows.length ? vt.indexSelect(0, longT(rows, dev)) : op('zeros', [0, ...values.shape.slice(1)], code(torchDtype(values.dtype)), dev);
  return [...splitOuts, backend.output(dense, values.dtype)];
});
function fromInts(backend: ResidualBackend, v: Int32Array): TensorInfo {
  const t = wrapT(native.fromBuffer(v, 0, [v.length], code('int32'), true));
  return backend.output(backend.device === 'cpu' ? t : t.to(backend.device as 'cuda'), 'int32');
}

// RaggedTensorToTensor: the destination of every value row (or -1: cut off) from the row partitions,
// in JS on the partition vectors with tf's checks and messages; then one libtorch scatter of the values
// into the default-filled dense tensor.
const RPT = backend_util.RowPartitionType;
function widthOf(type: number, part: Int32Array): number {
  if (type === RPT.ROW_SPLITS) {
    let w = 0;
    for (let i = 0; i + 1 < part.length; i++) w = Math.max(w, part[i + 1] - part[i]);
    return w;
  }
  if (type === RPT.VALUE_ROWIDS) {
    // the longest run of equal row ids
    let w = 0;
    let runStart = 0;
    for (let i = 1; i <= part.length; i++) {
      if (i === part.length || part[i] !== part[runStart]) {
        w = Math.max(w, i - runStart);
        runStart = i;
      }
    }
    return w;
  }
  throw new Error(`Cannot handle partition type ${RPT[type]}`);
}
function dims(shape: ArrayLike<number>, partial: boolean): number[] {
  return Array.from(shape, (d) => {
    if (d < 0) {
      if (!partial) throw new Error(`Dimension ${d} must be >= 0`);
      if (d < -1) throw new Error(`Dimension ${d} must be >= -1`);
      return -1;
    }
    return d;
  });
}
const raggedTensorToTensor = defineKernel('RaggedTensorToTensor', ({ inputs, attrs, backend }) => {
  const { shape, values, defaultValue } = inputs;
  const partsIn = (inputs as unknown as { rowPartitionTensors: TensorInfo[] }).rowPartitionTensors;
  const types = backend_util.getRowPartitionTypesHelper(attrs.rowPartitionTypes as string[]);
  const raggedRank = backend_util.getRaggedRank(types);
  const parts = partsIn.map((t) => ints(backend, t));
  const skipFirst = types[0] === RPT.FIRST_DIM_SIZE ? 1 : 0;
  const typeAt = (d: number): number => types[d + skipFirst];
  const partAt = (d: number): Int32Array => parts[d + skipFirst];
  if (parts[0].length <= 0) throw new Error('Invalid first partition input. Tensor requires at least one element.');
  if (types.length === 0) throw new Error('No row_partition_types given.');
  let firstDim: number;
  if (types[0] === RPT.FIRST_DIM_SIZE) firstDim = parts[0][0];
  else if (types[0] === RPT.VALUE_ROWIDS) throw new Error('Cannot handle VALUE_ROWIDS in first dimension.');
  else if (types[0] === RPT.ROW_SPLITS) firstDim = partsIn[0].shape[0] - 1;
  else throw new Error(`Cannot handle type ${RPT[types[0]]}`);
  // The output size: the requested shape, unknown dimensions from the partitions.
  backend_util.validateDefaultValueShape(defaultValue.shape, values.shape);
  const shapeVals = ints(backend, shape);
  let req: number[];
  if (shape.shape.length === 0) {
    if (shapeVals[0] !== -1) throw new Error('The only valid scalar shape tensor is the fully unknown shape specified as -1.');
    req = [];
  } else req = dims(shapeVals, true);
  const size = backend_util.combineRaggedTensorToTensorShapes(raggedRank, req, values.shape);
  if (size[0] < 0) size[0] = firstDim;
  for (let i = 1; i <= raggedRank; i++) if (size[i] < 0) size[i] = widthOf(typeAt(i - 1), partAt(i - 1));
  const mult = new Array<number>(raggedRank + 1);
  mult[raggedRank] = 1;
  for (let i = raggedRank - 1; i >= 0; i--) mult[i] = mult[i + 1] * size[i + 1];
  const outShape = dims(size, false);
  const dev = backend.device;
  const dt = torchDtype(values.dtype);
  const elemShape = outShape.slice(raggedRank + 1);
  const cells = outShape.slice(0, raggedRank + 1).reduce((a, b) => a * b, 1);
  if (mult[0] * size[0] <= 0 || cells === 0) return backend.output(op('zeros', outShape, code(dt), dev), values.dtype);
  // Destinations: level by level, each value row's flat cell index (or -1).
  let dest: number[] = [];
  for (let i = 0; i < firstDim; i++) dest.push(i < size[0] ? i * mult[0] : -1);
  for (let d = 0; d < raggedRank; d++) {
    const part = partAt(d);
    const m = mult[d + 1];
    const width = size[d + 1];
    const next: number[] = [];
    if (typeAt(d) === RPT.ROW_SPLITS) {
      if (part.length - 1 > dest.length) throw new Error(`Row partition size is greater than output size: ${part.length - 1} > ${dest.length}`);
      for (let r = 0; r + 1 < part.length; r++) {
        const len = part[r + 1] - part[r];
        const kept = dest[r] === -1 ? 0 : Math.min(width, len);
        for (let j = 0; j < len; j++) next.push(j < kept ? dest[r] + j * m : -1);
      }
      if (part.length > 0 && next.length !== part[part.length - 1]) throw new Error('Invalid row split size.');
    } else if (typeAt(d) === RPT.VALUE_ROWIDS) {
      let col = 0;
      for (let i = 0; i < part.length; i++) {
        const row = part[i];
        if (i === 0 || row !== part[i - 1]) {
          if (row >= dest.length) {
            throw new Error(i === 0 ? `Got currentValueRowId=${row}, which is not less than ${dest.length}` : `Got nextValueRowId=${row} which is not less than ${dest.length}`);
          }
          col = 0;
        } else col++;
        const base = dest[row];
        next.push(base >= 0 && col < width ? base + col * m : -1);
      }
    } else throw new Error(`Unsupported partition type: ${RPT[typeAt(d)]}`);
    dest = next;
  }
  // The dense result: the default value (broadcast to an element) everywhere, then the values.
  const elemSize = elemShape.reduce((a, b) => a * b, 1);
  const dv = backend.tensorOf(defaultValue).to(dt);
  const fill = dv.reshape([...Array(Math.max(0, elemShape.length - defaultValue.shape.length)).fill(1), ...defaultValue.shape]).expand(elemShape).reshape([1, elemSize]);
  let out = fill.expand([cells, elemSize]).contiguous();
  const rowsKept: number[] = [];
  const cellsKept: number[] = [];
  const nRows = Math.min(dest.length, values.shape[0] ?? 0);
  for (let i = 0; i < nRows; i++) {
    if (dest[i] >= 0) {
      rowsKept.push(i);
      cellsKept.push(dest[i]);
    }
  }
  if (rowsKept.length) {
    const v = backend.tensorOf(values).to(dt).reshape([values.shape[0], elemSize]).indexSelect(0, longT(rowsKept, dev));
    out = op('indexPut', out, [longT(cellsKept, dev)], v, false);
  }
  return backend.output(out.reshape(outShape), values.dtype);
});

// RotateWithOffset: each output pixel reads the input at its position rotated about the center (rounded
// half up, as Math.round), else the fill value (a number, or per-channel values with channel 3 opaque).
const rotateWithOffset = defineKernel('RotateWithOffset', ({ inputs, attrs, backend }) => {
  const image = inputs.image;
  const { radians, fillValue, center } = attrs as unknown as { radians: number; fillValue: number | number[]; center: number | [number, number] };
  const [batch, h, w, ch] = image.shape;
  const [cx, cy] = backend_util.getImageCenter(center, h, w);
  const dev = backend.device;
  const sin = Math.sin(radians);
  const cos = Math.cos(radians);
  const xs = op('sub', op('arange', 0, w, 1, code('float64'), dev).reshape([1, w]), sc(cx), 1);
  const ys = op('sub', op('arange', 0, h, 1, code('float64'), dev).reshape([h, 1]), sc(cy), 1);
  const round = (t: Tensor, c: number): Tensor => op('floor', op('add', t, sc(c + 0.5), 1));
  const srcX = round(op('sub', op('mul', xs, sc(cos)), op('mul', ys, sc(sin)), 1), cx);
  const srcY = round(op('add', op('mul', xs, sc(sin)), op('mul', ys, sc(cos)), 1), cy);
  const ok = op('logicalAnd', op('logicalAnd', op('ge', srcX, sc(0)), op('lt', srcX, sc(w))), op('logicalAnd', op('ge', srcY, sc(0)), op('lt', srcY, sc(h))));
  const flat = op('add', op('mul', op('clamp', srcY, 0, h - 1), sc(w)), op('clamp', srcX, 0, w - 1), 1).to('int64').reshape([h * w]);
  const img = backend.tensorOf(image).to('float32').reshape([batch, h * w, ch]);
  const moved = img.indexSelect(1, flat).reshape([batch, h, w, ch]);
  const fills = typeof fillValue === 'number' ? new Array<number>(ch).fill(fillValue) : Array.from({ length: ch }, (_, c) => (c === 3 ? 255 : fillValue[c]));
  const fillT = wrapT(native.fromBuffer(new Float32Array(fills), 0, [ch], code('float32'), true));
  const out = op('where', ok.reshape([1, h, w, 1]), moved, dev === 'cpu' ? fillT : fillT.to(dev as 'cuda'));
  return backend.output(out, image.dtype);
});

export const configs: KernelConfig[] = [
  rotateWithOffset,
  raggedTensorToTensor,
  raggedGather,
  raggedRange,
  sparseSegment('SparseSegmentSum', false), sparseSegment('SparseSegmentMean', true), maxPoolWithArgmax, transform, sparseReshape, sparseFillEmptyRows,
];
