// Pool kernels of the residual tfjs backend: max and average pools in 2-D and 3-D with their
// gradients, and MaxPoolWithArgmax. The window geometry is spatial.ts's.
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { where } from '../../tensor/tensor.js';
import {
  checkPadded,
  fromNC,
  geo2d,
  geo3d,
  outShape2d,
  outShape3d,
  padSpatial,
  plan,
  toNC,
  type Attr,
  type Conv2DInfo,
  type Conv3DInfo,
  type Geo,
  type Plan,
} from './spatial.js';
import {
  checkSize,
  code,
  defineKernel,
  fromNCHW,
  op,
  opList,
  out,
  requireFloat,
  sc,
  sizeOf,
  toNCHW,
  zerosOut,
  type KernelArgs,
  type Tensor,
} from './util.js';

type PoolKind = 'max' | 'avg';
function poolInfo2d(xShape: number[], a: Attr): Conv2DInfo {
  return backend_util.computePool2DInfo(
    xShape as [number, number, number, number],
    a.filterSize as [number, number],
    a.strides as [number, number],
    1,
    a.pad as 'same',
    a.dimRoundingMode as 'floor' | undefined,
  );
}
function poolInfo3d(xShape: number[], a: Attr): Conv3DInfo {
  return backend_util.computePool3DInfo(
    xShape as [number, number, number, number, number],
    a.filterSize as [number, number, number],
    a.strides as [number, number, number],
    1,
    a.pad as 'same',
    a.dimRoundingMode as 'floor' | undefined,
    ((a.dataFormat as string) ?? 'NDHWC') as 'NDHWC',
  );
}
// libtorch's pools take at most half the kernel as (symmetric) padding.
function poolPlan(g: Geo): Plan {
  return plan(g, (i) => Math.floor(g.k[i] / 2));
}
/** TF's average divides by the number of input elements in the window (padding not counted). */
function poolCounts(g: Geo, p: Plan, device: string): Tensor {
  const ones = op('ones', [1, 1, ...g.inSize], code('float32'), device);
  const op3 = g.k.length === 3 ? 'avgPool3d' : 'avgPool2d';
  // A window entirely in the padding has no element: tf's cpu backend gives 0 there (0 / max(count, 1)).
  return op(op3, padSpatial(ones, p.pl, p.pr), g.k, g.stride, p.sym, false, true, 1).clamp(1, null);
}
/**
 * tf's max pools skip NaN (a NaN never compares greater); libtorch's propagate it: NaN -> -inf first.
 * On the CPU only when there is a NaN (the check is cheaper than the copy); on other devices always
 * (reading the check back would wait for the device).
 */
function ignoreNaN(x: Tensor): Tensor {
  if (x.dtype !== 'float32') return x;
  if (x.device === 'cpu' && !(x.isnan().any().item() as boolean)) return x;
  return where(x.isnan(), -Infinity, x);
}
/** tfjs's pools return their input unchanged for a 1x1 filter whose output has the input's shape. */
function isIdentityPool(c: {
  filterHeight: number;
  filterWidth: number;
  filterDepth?: number;
  inShape: number[];
  outShape: number[];
}): boolean {
  return c.filterHeight === 1 && c.filterWidth === 1 && (c.filterDepth ?? 1) === 1 && c.inShape.every((v, i) => v === c.outShape[i]);
}
function poolForward(kind: PoolKind, x: Tensor, g: Geo, device: string): Tensor {
  const p = poolPlan(g);
  const three = g.k.length === 3;
  if (kind === 'max') {
    const pool = (t: Tensor) =>
      op(three ? 'maxPool3d' : 'maxPool2d', padSpatial(t, p.pl, p.pr, -Infinity), g.k, g.stride, p.sym, g.dil, false);
    // libtorch propagates a NaN to its window's maximum, so a NaN-free result means a NaN-free input
    // (checking the smaller result is cheaper); otherwise pool again with the NaNs skipped.
    if (x.device !== 'cpu') return pool(ignoreNaN(x));
    const y = pool(x);
    return x.dtype === 'float32' && (y.isnan().any().item() as boolean) ? pool(ignoreNaN(x)) : y;
  }
  const name = three ? 'avgPool3d' : 'avgPool2d';
  if (p.direct) return op(name, x, g.k, g.stride, p.sym, false, false, null);
  const sum = op(name, padSpatial(x, p.pl, p.pr), g.k, g.stride, p.sym, false, true, 1);
  return sum.div(poolCounts(g, p, device));
}
function poolBackward(kind: PoolKind, dy: Tensor, x: Tensor, g: Geo, device: string): Tensor {
  const p = poolPlan(g);
  const neg = (v: number[]) => v.map((e) => -e);
  if (kind === 'max') {
    const xp = padSpatial(ignoreNaN(x), p.pl, p.pr, -Infinity);
    const gi = op('maxPoolBackward', dy, xp, g.k, g.stride, p.sym, g.dil, false);
    return padSpatial(gi, neg(p.pl), neg(p.pr));
  }
  // tfjs's AvgPoolGrad (tfjs-core's gradient of AvgPool, as its cpu and webgl backends and its test
  // suite define it) divides every window by the full filter size, padding included.
  void device;
  const xp = padSpatial(x, p.pl, p.pr);
  const gi = op('avgPoolBackward', dy, xp, g.k, g.stride, p.sym, false, true, sizeOf(g.k));
  return padSpatial(gi, neg(p.pl), neg(p.pr));
}

function pool2d(kind: PoolKind, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const x = inputs.x;
  const c = poolInfo2d(x.shape, attrs);
  const shape = outShape2d(c);
  const name = kind === 'max' ? 'MaxPool' : 'AvgPool';
  checkSize(name, shape, x.dtype);
  checkPadded(name, c);
  if (sizeOf(shape) === 0) return zerosOut(backend, shape, x.dtype);
  const xt = backend.tensorOf(x);
  if (isIdentityPool(c)) return out(backend, xt.clone(), x.dtype === 'int32' ? 'int32' : 'float32');
  const y = fromNC(poolForward(kind, toNC(requireFloat(xt, kind + 'Pool'), true), geo2d(c), backend.device), true);
  return out(backend, x.dtype === 'int32' ? y.to('int32') : y, x.dtype === 'int32' ? 'int32' : 'float32');
}
export const maxPoolConfig = defineKernel('MaxPool', (args) => pool2d('max', args));
export const avgPoolConfig = defineKernel('AvgPool', (args) => pool2d('avg', args));

function pool3d(kind: PoolKind, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const x = inputs.x;
  const c = poolInfo3d(x.shape, attrs);
  const shape = outShape3d(c);
  const name = kind === 'max' ? 'MaxPool3D' : 'AvgPool3D';
  checkSize(name, shape, x.dtype);
  checkPadded(name, c);
  if (sizeOf(shape) === 0) return zerosOut(backend, shape, x.dtype);
  const xt = backend.tensorOf(x);
  if (isIdentityPool(c)) return out(backend, xt.clone(), x.dtype === 'int32' ? 'int32' : 'float32');
  const y = fromNC(poolForward(kind, toNC(requireFloat(xt, kind + 'Pool3d'), true), geo3d(c), backend.device), true);
  return out(backend, x.dtype === 'int32' ? y.to('int32') : y, x.dtype === 'int32' ? 'int32' : 'float32');
}
export const maxPool3DConfig = defineKernel('MaxPool3D', (args) => pool3d('max', args));
export const avgPool3DConfig = defineKernel('AvgPool3D', (args) => pool3d('avg', args));

function poolGrad(kind: PoolKind, three: boolean, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { dy, input } = inputs;
  const c = three ? poolInfo3d(input.shape, attrs) : poolInfo2d(input.shape, attrs);
  checkPadded(`${kind === 'max' ? 'MaxPool' : 'AvgPool'}${three ? '3D' : ''}Grad`, c);
  const g = three ? geo3d(c as Conv3DInfo) : geo2d(c as Conv2DInfo);
  if (sizeOf(input.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, input.shape);
  const xt = toNC(requireFloat(backend.tensorOf(input), 'poolGrad'), true);
  const dyt = toNC(requireFloat(backend.tensorOf(dy), 'poolGrad'), true);
  return out(backend, fromNC(poolBackward(kind, dyt, xt, g, backend.device), true), 'float32');
}
export const maxPoolGradConfig = defineKernel('MaxPoolGrad', (args) => poolGrad('max', false, args));
export const avgPoolGradConfig = defineKernel('AvgPoolGrad', (args) => poolGrad('avg', false, args));
export const maxPool3DGradConfig = defineKernel('MaxPool3DGrad', (args) => poolGrad('max', true, args));
export const avgPool3DGradConfig = defineKernel('AvgPool3DGrad', (args) => poolGrad('avg', true, args));

// MaxPoolWithArgmax: libtorch's max_pool2d_with_indices on the padded NCHW view; its indices (into the
// padded plane) are re-expressed as tf's flat NHWC indices.
export const maxPoolWithArgmaxConfig = defineKernel('MaxPoolWithArgmax', ({ inputs, attrs, backend }) => {
  const x = inputs.x;
  const { filterSize, strides, pad, includeBatchInIndex } = attrs as unknown as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'same' | 'valid' | number;
    includeBatchInIndex: boolean;
  };
  const info = backend_util.computePool2DInfo(x.shape as [number, number, number, number], filterSize, strides, [1, 1], pad);
  checkSize('MaxPoolWithArgmax', outShape2d(info), 'float32');
  checkSize('MaxPoolWithArgmax', outShape2d(info), 'int64', 'libtorch indices');
  checkPadded('MaxPoolWithArgmax', info);
  const [b, h, w, c] = x.shape;
  const { top, bottom, left, right } = info.padInfo;
  // NaNs never win a window (as the cpu backend's strict comparison).
  const xf = backend.tensorOf(x).to('float32');
  let t = toNCHW(op('where', op('isnan', xf), sc(-Infinity), xf));
  if (top || bottom || left || right) t = op('pad', t, [left, right, top, bottom], 'constant', -Infinity);
  const wp = w + left + right;
  const [vals, idx] = opList(
    'maxPool2dWithIndices',
    t,
    [info.filterHeight, info.filterWidth],
    [info.strideHeight, info.strideWidth],
    [0, 0],
    [1, 1],
    false,
  );
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

export const configs: KernelConfig[] = [
  maxPoolConfig,
  avgPoolConfig,
  maxPool3DConfig,
  avgPool3DConfig,
  maxPoolGradConfig,
  avgPoolGradConfig,
  maxPool3DGradConfig,
  avgPool3DGradConfig,
  maxPoolWithArgmaxConfig,
];
