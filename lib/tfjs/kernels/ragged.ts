// Ragged-tensor kernels of the residual tfjs backend: RaggedRange, RaggedGather, RaggedTensorToTensor.
// The row-partition bookkeeping runs in JS on the (small) split vectors with tf's checks and messages;
// the dense values move in libtorch.
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import {
  checkCount,
  checkJsArray,
  checkSize,
  code,
  defineKernel,
  fromJs,
  fromTyped,
  ints,
  longT,
  op,
  sharedArray,
  torchDtype,
} from './util.js';

// RaggedRange: row sizes from the (small) starts/limits/deltas vectors in JS with tf's checks, then the
// values computed in JS straight into the output (sharedArray): value k of row r is start[r] + k * delta[r]
// (in doubles, rounded once to the output dtype).
const INT32_MAX = 2147483647;
export const raggedRangeConfig = defineKernel('RaggedRange', ({ inputs, backend }) => {
  const { starts, limits, deltas } = inputs;
  for (const [name, t] of [
    ['starts', starts],
    ['limits', limits],
    ['deltas', deltas],
  ] as const) {
    if (t.shape.length > 1) throw new Error(`${name} must be a scalar or vector`);
  }
  const sizes = [starts, limits, deltas].filter((t) => t.shape.length === 1).map((t) => t.shape[0]);
  if (sizes.some((n) => n !== sizes[0])) throw new Error('starts, limits, and deltas must have the same shape');
  const rows = sizes.length ? sizes[0] : 1;
  const read = (t: TensorInfo): number[] => Array.from(backend.readSync(t.dataId) as ArrayLike<number>);
  const [st, li, de] = [read(starts), read(limits), read(deltas)];
  const at = (v: number[], r: number): number => (v.length === 1 && rows !== 1 ? v[0] : (v[r] ?? v[0]));
  const counts = new Float64Array(rows);
  let total = 0;
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
    counts[r] = n;
    total += n;
  }
  // The values' count is the sum of the rows' (each at most INT32_MAX): bounded before anything is made.
  const dtype = starts.dtype === 'int32' ? 'int32' : 'float32';
  checkCount('RaggedRange', total, dtype, 'rtDenseValues');
  const splits = new Int32Array(rows + 1);
  const values = sharedArray(dtype, total);
  let k = 0;
  for (let r = 0; r < rows; r++) {
    const a = at(st, r);
    const d = at(de, r);
    for (let j = 0; j < counts[r]; j++) values[k++] = a + j * d;
    splits[r + 1] = k;
  }
  return [fromJs(backend, splits, [rows + 1], 'int32'), backend.output(fromTyped(values, [total], dtype, backend.device), starts.dtype)];
});

// RaggedGather: the row-splits bookkeeping in JS on the (small) split vectors, with tf's checks and
// messages, in two passes: the first counts the output (the same rows may be gathered many times: the
// counts are bounded before anything is made), the second fills it; the dense values are gathered by
// libtorch (one index_select of the selected value rows).
export const raggedGatherConfig = defineKernel('RaggedGather', ({ inputs, backend }) => {
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
  // Output sizes: uniform splits for the leading dimensions of indices, then per gathered index the
  // rows it spans at each nesting level (scalar indices: the outermost splits are dropped).
  const lead = indices.shape.length - 1;
  const levels = Math.max(0, lead + splits.length);
  const lengths = new Array<number>(levels).fill(1);
  let nrows = 1;
  for (let d = 0; d < lead; d++) {
    nrows *= indices.shape[d];
    lengths[d] += nrows;
  }
  let rowCount = 0;
  for (const v of idx) {
    let start = v;
    let limit = v + 1;
    splits.forEach((sp, dim) => {
      if (dim + lead >= 0) lengths[dim + lead] += limit - start;
      start = sp[start];
      limit = sp[limit];
    });
    rowCount += limit - start;
  }
  lengths.forEach((n, d) => checkCount('RaggedGather', n, 'int32', `outputNestedSplits[${d}]`));
  checkSize('RaggedGather', [rowCount, ...values.shape.slice(1)], values.dtype, 'outputDenseValues');
  checkCount('RaggedGather', rowCount, 'int64', 'row index');
  const out = lengths.map((n) => new Int32Array(n));
  const fill = new Array<number>(levels).fill(1);
  nrows = 1;
  for (let d = 0; d < lead; d++) {
    nrows *= indices.shape[d];
    for (let i = 1; i <= nrows; i++) out[d][fill[d]++] = i * indices.shape[d + 1];
  }
  const rows = new Int32Array(rowCount);
  let nr = 0;
  for (const v of idx) {
    let start = v;
    let limit = v + 1;
    splits.forEach((sp, dim) => {
      if (dim + lead >= 0) {
        const o = out[dim + lead];
        const delta = o[fill[dim + lead] - 1] - sp[start];
        for (let j = start; j < limit; j++) o[fill[dim + lead]++] = sp[j + 1] + delta;
      }
      start = sp[start];
      limit = sp[limit];
    });
    for (let r = start; r < limit; r++) rows[nr++] = r;
  }
  const dev = backend.device;
  const splitOuts = out.map((o) => fromJs(backend, o, [o.length], 'int32'));
  const vt = backend.tensorOf(values);
  const dense = rowCount
    ? vt.indexSelect(0, fromTyped(rows, [rowCount], 'int32', dev).to('int64'))
    : op('zeros', [0, ...values.shape.slice(1)], code(torchDtype(values.dtype)), dev);
  return [...splitOuts, backend.output(dense, values.dtype)];
});

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
export const raggedTensorToTensorConfig = defineKernel('RaggedTensorToTensor', ({ inputs, attrs, backend }) => {
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
  // The output's size comes from the shape input and the partitions' values: bounded before it is made.
  checkSize('RaggedTensorToTensor', outShape, values.dtype);
  const dev = backend.device;
  const dt = torchDtype(values.dtype);
  const elemShape = outShape.slice(raggedRank + 1);
  const cells = outShape.slice(0, raggedRank + 1).reduce((a, b) => a * b, 1);
  if (mult[0] * size[0] <= 0 || cells === 0) return backend.output(op('zeros', outShape, code(dt), dev), values.dtype);
  // Destinations: level by level, each value row's flat cell index (or -1).
  let dest: number[] = [];
  checkJsArray('RaggedTensorToTensor', firstDim, 'row destinations');
  for (let i = 0; i < firstDim; i++) dest.push(i < size[0] ? i * mult[0] : -1);
  for (let d = 0; d < raggedRank; d++) {
    const part = partAt(d);
    const m = mult[d + 1];
    const width = size[d + 1];
    const next: number[] = [];
    if (typeAt(d) === RPT.ROW_SPLITS) {
      if (part.length - 1 > dest.length)
        throw new Error(`Row partition size is greater than output size: ${part.length - 1} > ${dest.length}`);
      let total = 0;
      for (let r = 0; r + 1 < part.length; r++) total += Math.max(0, part[r + 1] - part[r]);
      checkJsArray('RaggedTensorToTensor', total, `row destinations of level ${d + 1}`);
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
            throw new Error(
              i === 0
                ? `Got currentValueRowId=${row}, which is not less than ${dest.length}`
                : `Got nextValueRowId=${row} which is not less than ${dest.length}`,
            );
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
  const fill = dv
    .reshape([...Array(Math.max(0, elemShape.length - defaultValue.shape.length)).fill(1), ...defaultValue.shape])
    .expand(elemShape)
    .reshape([1, elemSize]);
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

export const configs: KernelConfig[] = [raggedRangeConfig, raggedGatherConfig, raggedTensorToTensorConfig];
