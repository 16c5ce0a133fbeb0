// Shape and data-movement kernels of the residual tfjs backend: reshape, transpose, slicing, joins and
// splits, tiling, reversal, selection, padding and the space/batch/depth rearrangements. Semantics follow
// tfjs-backend-cpu. Gathers and scatters are in gather.ts, creation kernels in creation.ts.
import { backend_util, slice_util, upcastType, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import {
  checkBroadcast,
  checkSize,
  code,
  defineKernel,
  fromTyped,
  longT,
  notStringOrComplex,
  numbersOf,
  op,
  out,
  sc,
  sizeOf,
  storageShape,
  torchDtype,
  type ResidualBackend,
  type Tensor,
} from './util.js';

// Reshape, ExpandDims and Identity return their input's dataId with one more reference (as the cpu
// backend): no copy, and tfjs's per-kernel dataId accounting sees no new buffer. tensorOf() gives
// later kernels a view of the shape they ask for.
function share(backend: ResidualBackend, x: TensorInfo, shape: number[]): TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape, dtype: x.dtype };
}
export const reshapeConfig = defineKernel('Reshape', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const size = util.sizeFromShape(x.shape);
  const shape = util.inferFromImplicitShape(attrs.shape as number[], size);
  const outSize = util.sizeFromShape(shape);
  util.assert(
    size === outSize,
    () =>
      `The new shape (${shape}) has ${outSize} elements and the old shape (${x.shape}) has ${size} elements. The new shape and old shape must have the same number of elements.`,
  );
  return share(backend, x, shape);
});

export const identityConfig = defineKernel('Identity', ({ inputs, backend }) => share(backend, inputs.x, inputs.x.shape));

export const expandDimsConfig = defineKernel('ExpandDims', ({ inputs, attrs, backend }) => {
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

export const transposeConfig = defineKernel('Transpose', ({ inputs, attrs, backend }) => {
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
export const sliceConfig = defineKernel('Slice', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const [begin, size] = slice_util.parseSliceParams(x as never, attrs.begin as number[], attrs.size as number[]);
  slice_util.assertParamsValid(x as never, begin, size);
  return backend.output(sliceT(backend.tensorOf(x), begin, size).contiguous(), x.dtype);
});

export const stridedSliceConfig = defineKernel('StridedSlice', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const a = attrs as unknown as {
    begin: number[];
    end: number[];
    strides: number[];
    beginMask: number;
    endMask: number;
    ellipsisMask: number;
    newAxisMask: number;
    shrinkAxisMask: number;
  };
  const info = slice_util.sliceInfo(
    x.shape,
    a.begin,
    a.end,
    a.strides,
    a.beginMask,
    a.endMask,
    a.ellipsisMask,
    a.newAxisMask,
    a.shrinkAxisMask,
  );
  const t = backend.tensorOf(x);
  let y: Tensor;
  if (info.isIdentity) y = t.clone();
  else {
    // Dimension d keeps begin[d] + i * strides[d] for i < its output size (negative strides walk back).
    const sizes = slice_util.computeOutShape(info.begin, info.end, info.strides);
    if (sizes.some((n) => n <= 0))
      return backend.output(op('zeros', storageShape(x, info.finalShape), code(torchDtype(x.dtype)), backend.device), x.dtype);
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
        y = y.indexSelect(d, longT(idx, backend.device));
      }
    }
  }
  return backend.output(y.reshape(storageShape(x, info.finalShape)).contiguous(), x.dtype);
});

function listOf(inputs: unknown): TensorInfo[] {
  return inputs as TensorInfo[];
}

export const concatConfig = defineKernel('Concat', ({ inputs, attrs, backend }) => {
  const list = listOf(inputs);
  const axis = util.parseAxisParam(attrs.axis as number, list[0].shape)[0];
  const shapes = list.map((t) => t.shape);
  backend_util.assertParamsConsistent(shapes, axis);
  const outShape = backend_util.computeOutShape(shapes, axis);
  const dtype = list.map((t) => t.dtype).reduce((x, y) => upcastType(x, y));
  checkSize('Concat', outShape, dtype);
  const parts = list.filter((t) => util.sizeFromShape(t.shape) > 0);
  if (parts.length === 0)
    return backend.output(op('zeros', storageShape({ dtype } as TensorInfo, outShape), code(torchDtype(dtype)), backend.device), dtype);
  const ts = parts.map((t) => {
    const v = backend.tensorOf(t);
    if (dtype === 'complex64' && t.dtype !== 'complex64') return op('stack', [v.to('float32'), op('zerosLike', v.to('float32'))], -1);
    return v.dtype === torchDtype(dtype) ? v : v.to(torchDtype(dtype));
  });
  return backend.output(op('cat', ts, axis), dtype);
});

export const packConfig = defineKernel('Pack', ({ inputs, attrs, backend }) => {
  const list = listOf(inputs);
  const rank = list[0].shape.length;
  let axis = attrs.axis as number;
  if (axis < 0) axis += rank + 1;
  const dtype = list[0].dtype;
  for (const t of list) {
    util.assertShapesMatch(list[0].shape, t.shape, 'All tensors passed to stack must have matching shapes');
    util.assert(dtype === t.dtype, () => 'All tensors passed to stack must have matching dtypes');
  }
  checkSize('Pack', [list.length, ...list[0].shape], dtype);
  return backend.output(
    op(
      'stack',
      list.map((t) => backend.tensorOf(t)),
      axis,
    ),
    dtype,
  );
});

export const unpackConfig = defineKernel('Unpack', ({ inputs, attrs, backend }) => {
  const x = inputs.value;
  let axis = attrs.axis as number;
  if (axis < 0) axis += x.shape.length;
  const t = backend.tensorOf(x);
  const out: TensorInfo[] = [];
  for (let i = 0; i < x.shape[axis]; i++) out.push(backend.output(t.select(axis, i).contiguous(), x.dtype));
  return out;
});

export const splitVConfig = defineKernel('SplitV', ({ inputs, attrs, backend }) => {
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

export const tileConfig = defineKernel('Tile', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const reps = attrs.reps as number[];
  // (libtorch's repeat: reps longer than the rank tile new leading dimensions)
  const xs = [...new Array<number>(Math.max(0, reps.length - x.shape.length)).fill(1), ...x.shape];
  checkSize(
    'Tile',
    xs.map((s, i) => s * reps[i]),
    x.dtype,
  );
  const r = x.dtype === 'complex64' ? [...reps, 1] : reps;
  return backend.output(backend.tensorOf(x).repeat(r), x.dtype);
});

export const reverseConfig = defineKernel('Reverse', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const dims = util.parseAxisParam(attrs.dims as number | number[], x.shape);
  const t = backend.tensorOf(x);
  if (dims.length === 0) return backend.output(t.clone(), x.dtype);
  return backend.output(t.flip(dims), x.dtype);
});

export const selectConfig = defineKernel('Select', ({ inputs, backend }) => {
  const { condition, t, e } = inputs;
  if (t.dtype === 'complex64' || e.dtype === 'complex64') throw new Error('Select: complex64 tensors are not supported');
  const dtype = upcastType(t.dtype, e.dtype);
  // (tf: t and e have one shape, the condition that shape or its first dimension; bounded as broadcast)
  checkBroadcast(
    'Select',
    dtype,
    t.shape,
    e.shape,
    condition.shape.length === 1 && t.shape.length > 1 ? [condition.shape[0], ...t.shape.slice(1).map(() => 1)] : condition.shape,
  );
  let c = backend.tensorOf(condition);
  if (c.dtype !== 'bool') c = op('ne', c, sc(0));
  if (condition.shape.length === 1 && t.shape.length > 1) c = c.reshape([condition.shape[0], ...t.shape.slice(1).map(() => 1)]);
  const dt = torchDtype(dtype);
  const tv = backend.tensorOf(t);
  const ev = backend.tensorOf(e);
  const out = op('where', c, tv.dtype === dt ? tv : tv.to(dt), ev.dtype === dt ? ev : ev.to(dt));
  return backend.output(out.expand(t.shape).contiguous(), dtype);
});

export const padV2Config = defineKernel('PadV2', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('PadV2', x);
  const paddings = attrs.paddings as [number, number][];
  const value = (attrs.constantValue as number | undefined) ?? 0;
  // (libtorch's pad: the paddings apply to the last dimensions)
  const lead = x.shape.length - paddings.length;
  if (lead >= 0)
    checkSize(
      'PadV2',
      x.shape.map((s, d) => (d < lead ? s : s + paddings[d - lead][0] + paddings[d - lead][1])),
      x.dtype,
    );
  const flat: number[] = [];
  for (let d = paddings.length - 1; d >= 0; d--) flat.push(paddings[d][0], paddings[d][1]);
  let t = backend.tensorOf(x);
  if (t.dtype === 'bool') t = t.to('uint8');
  return backend.output(op('pad', t, flat, 'constant', value), x.dtype);
});

export const mirrorPadConfig = defineKernel('MirrorPad', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('MirrorPad', x);
  const paddings = attrs.paddings as [number, number][];
  const offset = attrs.mode === 'reflect' ? 0 : 1;
  // tf's rule: each side pads at most the dimension's size (symmetric) or one less (reflect).
  for (let d = 0; d < paddings.length; d++) {
    const n = x.shape[d];
    const [before, after] = paddings[d] ?? [];
    for (const v of [before, after]) {
      if (!Number.isSafeInteger(v) || v < 0 || v > n - 1 + offset)
        throw new RangeError(
          `MirrorPad: paddings[${d}] = [${paddings[d]}] must be integers in [0, ${n - 1 + offset}] for dimension ${d} of size ${n} in ${attrs.mode} mode`,
        );
    }
  }
  checkSize(
    'MirrorPad',
    x.shape.map((s, d) => s + (paddings[d] ? paddings[d][0] + paddings[d][1] : 0)),
    x.dtype,
  );
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
    t = t.indexSelect(d, longT(idx, backend.device));
  }
  return backend.output(t === backend.tensorOf(x) ? t.clone() : t, x.dtype);
});

export const broadcastArgsConfig = defineKernel('BroadcastArgs', ({ inputs, backend }) => {
  const { s0, s1 } = inputs;
  const a = numbersOf(backend, s0);
  const b = numbersOf(backend, s1);
  const shape = backend_util.assertAndGetBroadcastShape(a, b);
  return backend.output(fromTyped(new Int32Array(shape), [shape.length], 'int32', backend.device), 'int32');
});

// ---- space, batch and depth rearrangements ----

export const depthToSpaceConfig = defineKernel('DepthToSpace', ({ inputs, attrs, backend }) => {
  const x = backend.tensorOf(inputs.x);
  const b = attrs.blockSize as number;
  const nchw = attrs.dataFormat === 'NCHW';
  let y: Tensor;
  if (!nchw) {
    const [N, H, W, C] = x.shape;
    y = x
      .reshape([N, H, W, b, b, C / (b * b)])
      .permute(0, 1, 3, 2, 4, 5)
      .reshape([N, H * b, W * b, C / (b * b)]);
  } else {
    const [N, C, H, W] = x.shape;
    y = x
      .reshape([N, b, b, C / (b * b), H, W])
      .permute(0, 3, 4, 1, 5, 2)
      .reshape([N, C / (b * b), H * b, W * b]);
  }
  return out(backend, y, inputs.x.dtype);
});
export const spaceToBatchNDConfig = defineKernel('SpaceToBatchND', ({ inputs, attrs, backend }) => {
  const x = backend.tensorOf(inputs.x);
  const block = attrs.blockShape as number[];
  const paddings = attrs.paddings as [number, number][];
  const m = block.length;
  const shape = inputs.x.shape;
  // Pad the m spatial dims (1..m).
  const p: number[] = [];
  for (let d = shape.length - 1; d >= 1; d--) {
    if (d <= m) p.push(paddings[d - 1][0], paddings[d - 1][1]);
    else p.push(0, 0);
  }
  checkSize(
    'SpaceToBatchND',
    shape.map((s, d) => (d >= 1 && d <= m ? s + paddings[d - 1][0] + paddings[d - 1][1] : s)),
    inputs.x.dtype,
  );
  const xp = p.some((v) => v !== 0) ? op('pad', x, p, 'constant', 0) : x;
  const ps = xp.shape;
  const B = ps[0];
  const rest = ps.slice(1 + m);
  const split: number[] = [B];
  for (let i = 0; i < m; i++) split.push(ps[1 + i] / block[i], block[i]);
  const perm: number[] = [];
  for (let i = 0; i < m; i++) perm.push(2 + 2 * i);
  perm.push(0);
  for (let i = 0; i < m; i++) perm.push(1 + 2 * i);
  for (let i = 0; i < rest.length; i++) perm.push(1 + 2 * m + i);
  const y = xp
    .reshape([...split, ...rest])
    .permute(perm)
    .reshape([B * sizeOf(block), ...block.map((bs, i) => ps[1 + i] / bs), ...rest]);
  return out(backend, y, inputs.x.dtype);
});
export const batchToSpaceNDConfig = defineKernel('BatchToSpaceND', ({ inputs, attrs, backend }) => {
  const x = backend.tensorOf(inputs.x);
  const block = attrs.blockShape as number[];
  const crops = attrs.crops as [number, number][];
  const m = block.length;
  const shape = inputs.x.shape;
  const prodB = sizeOf(block);
  const B = shape[0] / prodB;
  const spatial = shape.slice(1, 1 + m);
  const rest = shape.slice(1 + m);
  // [b1..bm, B, s1..sm, rest] -> [B, s1, b1, ..., sm, bm, rest]
  const perm: number[] = [m];
  for (let i = 0; i < m; i++) perm.push(m + 1 + i, i);
  for (let i = 0; i < rest.length; i++) perm.push(2 * m + 1 + i);
  let y = x
    .reshape([...block, B, ...spatial, ...rest])
    .permute(perm)
    .reshape([B, ...spatial.map((s, i) => s * block[i]), ...rest]);
  for (let i = 0; i < m; i++) {
    const [c0, c1] = crops[i];
    if (c0 !== 0 || c1 !== 0) y = y.narrow(1 + i, c0, spatial[i] * block[i] - c0 - c1);
  }
  return out(backend, y, inputs.x.dtype);
});

export const configs: KernelConfig[] = [
  reshapeConfig,
  identityConfig,
  expandDimsConfig,
  transposeConfig,
  sliceConfig,
  stridedSliceConfig,
  concatConfig,
  packConfig,
  unpackConfig,
  splitVConfig,
  tileConfig,
  reverseConfig,
  selectConfig,
  padV2Config,
  mirrorPadConfig,
  broadcastArgsConfig,
  depthToSpaceConfig,
  spaceToBatchNDConfig,
  batchToSpaceNDConfig,
];
