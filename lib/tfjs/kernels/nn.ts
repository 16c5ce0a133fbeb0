// The neural-network kernels of the `residual` tfjs backend: convolutions (2-D, 3-D, depthwise, fused)
// and their backprops, pools and their backprops, batch norm, activations, LRN, dilation, resizing and
// the space/batch/depth rearrangements.
//
// Layout: tf's activations are NHWC (NDHWC) and its filters HWIO (DHWIO); libtorch wants NCHW and OIHW.
// Both are permuted views, so an NHWC tensor reaches libtorch as a channels-last NCHW tensor (no copy)
// and libtorch's channels-last result, permuted back, is a contiguous NHWC tensor again.
//
// Padding: tfjs computes every geometry (backend_util.compute*Info: 'same', 'valid', numbers, explicit
// pads, dimRoundingMode), and the kernels reproduce that geometry exactly: libtorch takes the symmetric
// part of the padding; what is left (TF's odd 'same' row/column at the end, explicit asymmetric pads,
// rows a rounding mode leaves unused) is an explicit pad or crop of the input, undone on the gradient.
import { backend_util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../../addon/binding.js';
import { tensor, where } from '../../tensor/tensor.js';
import { cast, defineKernel, op, type KernelArgs, type ResidualBackend, Tensor } from './util.js';

type Attr = Record<string, unknown>;
type Conv2DInfo = backend_util.Conv2DInfo;
type Conv3DInfo = backend_util.Conv3DInfo;

// ---- geometry ----

/** One convolution/pool geometry over the spatial dims of an N C spatial... tensor. */
interface Geo {
  inSize: number[];
  k: number[];
  stride: number[];
  dil: number[];
  before: number[];
  after: number[];
  out: number[];
}
/**
 * How libtorch computes `g`: symmetric padding `sym` (at most `maxSym` when given: pools allow half the
 * kernel) plus an explicit pad (positive) or crop (negative) of the input, `pl` before and `pr` after.
 */
interface Plan {
  sym: number[];
  pl: number[];
  pr: number[];
  /** true when no explicit pad/crop is needed. */
  direct: boolean;
}
function plan(g: Geo, symLimit?: (i: number) => number): Plan {
  const sym: number[] = [];
  const pl: number[] = [];
  const pr: number[] = [];
  for (let i = 0; i < g.inSize.length; i++) {
    // The padding after the input that makes libtorch's floor output size exactly `out` (negative: the
    // last input rows are never read).
    const after = (g.out[i] - 1) * g.stride[i] + (g.k[i] - 1) * g.dil[i] + 1 - g.inSize[i] - g.before[i];
    let s = Math.max(0, Math.min(g.before[i], after));
    if (symLimit) s = Math.min(s, symLimit(i));
    sym.push(s);
    pl.push(g.before[i] - s);
    pr.push(after - s);
  }
  return { sym, pl, pr, direct: pl.every((v) => v === 0) && pr.every((v) => v === 0) };
}
/** Pads (positive) or crops (negative) the trailing spatial dims of an N C ... tensor. */
function padSpatial(x: Tensor, pl: number[], pr: number[], value = 0): Tensor {
  if (pl.every((v) => v === 0) && pr.every((v) => v === 0)) return x;
  const nd = pl.length;
  if (pl.every((v) => v <= 0) && pr.every((v) => v <= 0)) {
    // Pure crop: a view.
    let t = x;
    for (let i = 0; i < nd; i++) {
      const d = 2 + i;
      const size = x.shape[d];
      if (pl[i] !== 0 || pr[i] !== 0) t = t.narrow(d, -pl[i], size + pl[i] + pr[i]);
    }
    return t;
  }
  const p: number[] = [];
  for (let i = nd - 1; i >= 0; i--) p.push(pl[i], pr[i]);
  return op('pad', x, p, 'constant', value);
}
function spatialShape(x: Tensor | number[], p: Plan): number[] {
  const s = Array.isArray(x) ? x : x.shape;
  return s.map((v, d) => (d < 2 ? v : v + p.pl[d - 2] + p.pr[d - 2]));
}
function zerosOut(backend: ResidualBackend, shape: number[], dtype: DataType = 'float32'): TensorInfo {
  return backend.output(op('zeros', shape, code(dtype === 'int32' ? 'int32' : 'float32'), backend.device), dtype);
}
function code(d: 'float32' | 'int32' | 'int64' | 'bool'): number {
  return (native.dtypeCodes as Record<string, number>)[d];
}
function sizeOf(s: readonly number[]): number {
  return s.reduce((a, b) => a * b, 1);
}
/** The result as a tfjs output: contiguous (tfjs reads and reshapes it) and owned by a new dataId. */
function out(backend: ResidualBackend, t: Tensor, dtype?: DataType): TensorInfo {
  if (!t.isContiguous()) t = t.contiguous();
  return backend.output(t, dtype);
}

function geo2d(c: Conv2DInfo): Geo {
  return {
    inSize: [c.inHeight, c.inWidth],
    k: [c.filterHeight, c.filterWidth],
    stride: [c.strideHeight, c.strideWidth],
    dil: [c.dilationHeight, c.dilationWidth],
    before: [c.padInfo.top, c.padInfo.left],
    after: [c.padInfo.bottom, c.padInfo.right],
    out: [c.outHeight, c.outWidth],
  };
}
function geo3d(c: Conv3DInfo): Geo {
  return {
    inSize: [c.inDepth, c.inHeight, c.inWidth],
    k: [c.filterDepth, c.filterHeight, c.filterWidth],
    stride: [c.strideDepth, c.strideHeight, c.strideWidth],
    dil: [c.dilationDepth, c.dilationHeight, c.dilationWidth],
    before: [c.padInfo.front, c.padInfo.top, c.padInfo.left],
    after: [c.padInfo.back, c.padInfo.bottom, c.padInfo.right],
    out: [c.outDepth, c.outHeight, c.outWidth],
  };
}

// Layout helpers: channels-last tf tensors <-> libtorch's channels-first views.
function toNC(x: Tensor, channelsLast: boolean): Tensor {
  if (!channelsLast) return x;
  return x.ndim === 5 ? x.permute(0, 4, 1, 2, 3) : x.permute(0, 3, 1, 2);
}
function fromNC(x: Tensor, channelsLast: boolean): Tensor {
  if (!channelsLast) return x;
  return x.ndim === 5 ? x.permute(0, 2, 3, 4, 1) : x.permute(0, 2, 3, 1);
}
/** tf filter -> libtorch weight (views). HWIO -> OIHW; depthwise HW C M -> (C*M) 1 H W; DHWIO -> OIDHW. */
function weightOf(f: Tensor, kind: 'conv' | 'depthwise'): Tensor {
  if (f.ndim === 5) return f.permute(4, 3, 0, 1, 2);
  // A channels-last copy of the (small) weight: libtorch's convolutions run fastest when the weight's
  // memory format matches the channels-last input's (about 2x on the CPU, measured), and the copy of
  // the HWIO filter costs little next to the convolution.
  if (kind === 'conv') return f.permute(3, 2, 0, 1).contiguous('channelsLast');
  const [fh, fw, c, m] = f.shape;
  return f.reshape([fh, fw, 1, c * m]).permute(3, 2, 0, 1);
}
/** libtorch weight gradient -> tf filter shape. */
function filterOf(w: Tensor, kind: 'conv' | 'depthwise', filterShape: number[]): Tensor {
  if (w.ndim === 5) return w.permute(2, 3, 4, 1, 0).contiguous();
  const hwio = w.permute(2, 3, 1, 0).contiguous();
  return kind === 'conv' ? hwio : hwio.reshape(filterShape);
}
function weightShapeOf(filterShape: number[], kind: 'conv' | 'depthwise'): number[] {
  if (filterShape.length === 5) {
    const [fd, fh, fw, i, o] = filterShape;
    return [o, i, fd, fh, fw];
  }
  const [fh, fw, i, o] = filterShape;
  return kind === 'conv' ? [o, i, fh, fw] : [i * o, 1, fh, fw];
}

function requireFloat(t: Tensor, what: string): Tensor {
  if (t.dtype === 'float32') return t;
  if (t.dtype === 'int32' || t.dtype === 'bool') return t.to('float32');
  throw new Error(`${what}: unsupported dtype ${t.dtype}`);
}

// ---- convolutions ----

interface ConvCall {
  x: Tensor; // N C spatial (libtorch layout)
  w: Tensor; // libtorch weight
  g: Geo;
  groups: number;
  bias?: Tensor | null;
}
function convForward({ x, w, g, groups, bias }: ConvCall): Tensor {
  const p = plan(g);
  const xp = padSpatial(x, p.pl, p.pr);
  return op('convolution', xp, w, bias ?? null, g.stride, p.sym, g.dil, false, g.out.map(() => 0), groups);
}
function convBackwardInput(dy: Tensor, w: Tensor, inShape: number[], g: Geo, groups: number): Tensor {
  const p = plan(g);
  const gi = op('convolutionBackwardInput', dy, w, spatialShape(inShape, p), g.stride, p.sym, g.dil, groups);
  return padSpatial(gi, p.pl.map((v) => -v), p.pr.map((v) => -v));
}
function convBackwardWeight(x: Tensor, dy: Tensor, wShape: number[], g: Geo, groups: number): Tensor {
  const p = plan(g);
  let xp = padSpatial(x, p.pl, p.pr);
  // On the CPU, oneDNN's weight gradient is faster from channels-first data than from channels-last
  // views (measured ~1.5x for 3x3 convolutions, more than the two copies cost); CUDA takes the views.
  if (x.device === 'cpu') {
    xp = xp.contiguous();
    dy = dy.contiguous();
  }
  return op('convolutionBackwardWeight', dy, xp, wShape, g.stride, p.sym, g.dil, groups);
}

function conv2dInfo(xShape: number[], filterShape: number[], a: Attr, depthwise: boolean): Conv2DInfo {
  const dataFormat = backend_util.convertConv2DDataFormat(((a.dataFormat as string) ?? 'NHWC') as 'NHWC' | 'NCHW');
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    a.strides as [number, number],
    (a.dilations as [number, number]) ?? 1,
    a.pad as 'same',
    a.dimRoundingMode as 'floor' | undefined,
    depthwise,
    dataFormat,
  );
}
function outShape2d(c: Conv2DInfo): number[] {
  return c.dataFormat === 'channelsLast' ? [c.batchSize, c.outHeight, c.outWidth, c.outChannels] : [c.batchSize, c.outChannels, c.outHeight, c.outWidth];
}

/** tfjs's fused activations (fused_util.applyActivation). */
function activate(y: Tensor, activation: string | undefined, prelu: Tensor | null, leakyAlpha: number | undefined): Tensor {
  switch (activation ?? 'linear') {
    case 'linear':
      return y;
    case 'relu':
      return y.relu();
    case 'relu6':
      return y.clamp(0, 6);
    case 'elu':
      return op('elu', y, 1);
    case 'selu':
      return op('selu', y);
    case 'leakyrelu':
      return op('leakyRelu', y, leakyAlpha ?? 0.2);
    case 'prelu':
      if (!prelu) throw new Error('fused prelu activation needs preluActivationWeights');
      return preluOf(y, prelu);
    case 'sigmoid':
      return y.sigmoid();
    default:
      throw new Error(`Activation ${activation} has not been implemented for the residual backend`);
  }
}
function preluOf(x: Tensor, alpha: Tensor): Tensor {
  return where(x.lt(0), x.mul(alpha), x);
}

/**
 * A 1x1 NHWC convolution without padding (ResNet's bottleneck and MobileNet's pointwise convolutions)
 * is a matrix product of the [N*H*W, C] pixels by the [C, O] filter: BLAS on the tensors as they are,
 * where libtorch's convolution would first reorder the (large) weight into its own layout on every call
 * (measured 10x slower for 1024->2048 channels at 2x2).
 */
function isPointwise(c: Conv2DInfo, depthwise: boolean): boolean {
  const p = c.padInfo;
  return !depthwise && c.dataFormat === 'channelsLast' && c.filterHeight === 1 && c.filterWidth === 1 && p.top === 0 && p.bottom === 0 && p.left === 0 && p.right === 0;
}
/** x subsampled by the strides (the pixels a 1x1 convolution reads), checked against the output size. */
function strided(x: Tensor, c: Conv2DInfo): Tensor | null {
  let t = x;
  if (c.strideHeight > 1) t = t.slice(1, 0, null, c.strideHeight);
  if (c.strideWidth > 1) t = t.slice(2, 0, null, c.strideWidth);
  return t.shape[1] === c.outHeight && t.shape[2] === c.outWidth ? t : null;
}

/**
 * An NHWC convolution with few output pixels for its output channels (N*Ho*Wo < O: deep layers of small
 * images) as im2col + one matrix product by the HWIO filter read in place ([kh*kw*C, O]): the gathered
 * patches are smaller than the weight, which libtorch's convolution would reorder on every call.
 */
function im2colConv(x: Tensor, f: Tensor, c: Conv2DInfo): Tensor {
  return im2col(x, c).matmul(f.reshape([-1, c.outChannels])).reshape([c.batchSize, c.outHeight, c.outWidth, c.outChannels]);
}
function fewPixels(c: Conv2DInfo, depthwise: boolean): boolean {
  return !depthwise && c.dataFormat === 'channelsLast' && c.batchSize * c.outHeight * c.outWidth < c.outChannels;
}
/** The [N*Ho*Wo, kh*kw*C] patches of an NHWC tensor (HWIO order within a patch). */
function im2col(x: Tensor, c: Conv2DInfo): Tensor {
  const g = geo2d(c);
  const p = plan(g, () => 0);
  const xp = fromNC(padSpatial(toNC(x, true), p.pl, p.pr), true); // [N, Hp, Wp, C]
  const ekh = (c.filterHeight - 1) * c.dilationHeight + 1;
  const ekw = (c.filterWidth - 1) * c.dilationWidth + 1;
  let win = op('unfold', xp, 1, ekh, c.strideHeight);
  win = op('unfold', win, 2, ekw, c.strideWidth); // [N, Ho, Wo, C, ekh, ekw]
  if (c.dilationHeight > 1) win = win.slice(4, 0, null, c.dilationHeight);
  if (c.dilationWidth > 1) win = win.slice(5, 0, null, c.dilationWidth);
  return win.permute(0, 1, 2, 4, 5, 3).reshape([-1, c.filterHeight * c.filterWidth * c.inChannels]);
}
/** The transpose of im2col: patch gradients [N*Ho*Wo, kh*kw*C] summed back into an NHWC input gradient. */
function col2im(dcols: Tensor, c: Conv2DInfo, device: string): Tensor {
  const g = geo2d(c);
  const p = plan(g, () => 0);
  const [N, Ho, Wo, C] = [c.batchSize, c.outHeight, c.outWidth, c.inChannels];
  const Hp = c.inHeight + p.pl[0] + p.pr[0];
  const Wp = c.inWidth + p.pl[1] + p.pr[1];
  const d = dcols.reshape([N, Ho, Wo, c.filterHeight, c.filterWidth, C]);
  const gp = op('zeros', [N, Hp, Wp, C], code('float32'), device);
  for (let i = 0; i < c.filterHeight; i++) {
    for (let j = 0; j < c.filterWidth; j++) {
      const r0 = i * c.dilationHeight;
      const c0 = j * c.dilationWidth;
      const view = gp.slice(1, r0, r0 + (Ho - 1) * c.strideHeight + 1, c.strideHeight).slice(2, c0, c0 + (Wo - 1) * c.strideWidth + 1, c.strideWidth);
      view.add_(d.select(3, i).select(3, j));
    }
  }
  return fromNC(padSpatial(toNC(gp, true), p.pl.map((v) => -v), p.pr.map((v) => -v)), true);
}

interface Conv2DArgs {
  backend: ResidualBackend;
  x: TensorInfo;
  filter: TensorInfo;
  a: Attr;
  depthwise: boolean;
  bias?: TensorInfo;
  prelu?: TensorInfo;
}
function conv2d({ backend, x, filter, a, depthwise, bias, prelu }: Conv2DArgs): TensorInfo {
  const c = conv2dInfo(x.shape, filter.shape, a, depthwise);
  const shape = outShape2d(c);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(shape) === 0 || sizeOf(x.shape) === 0) return zerosOut(backend, shape);
  const xt = requireFloat(backend.tensorOf(x), 'conv2d');
  const ft = requireFloat(backend.tensorOf(filter), 'conv2d');
  const b: Tensor | null = bias ? requireFloat(backend.tensorOf(bias), 'conv2d bias') : null;
  // A bias with one value per output channel goes into the convolution; any other broadcastable one is
  // added to the result.
  const fuseBias = b !== null && b.ndim === 1 && b.shape[0] === c.outChannels;
  const xs = isPointwise(c, depthwise) ? strided(xt, c) : null;
  if (xs) {
    let y = xs.reshape([-1, c.inChannels]).matmul(ft.reshape([c.inChannels, c.outChannels])).reshape(shape);
    if (b) y = y.add(b);
    y = activate(y, a.activation as string | undefined, prelu ? backend.tensorOf(prelu) : null, a.leakyreluAlpha as number | undefined);
    return out(backend, y, 'float32');
  }
  if (fewPixels(c, depthwise)) {
    let y = im2colConv(xt, ft, c);
    if (b) y = y.add(b);
    y = activate(y, a.activation as string | undefined, prelu ? backend.tensorOf(prelu) : null, a.leakyreluAlpha as number | undefined);
    return out(backend, y, 'float32');
  }
  const y0 = convForward({ x: toNC(xt, cl), w: weightOf(ft, depthwise ? 'depthwise' : 'conv'), g: geo2d(c), groups: depthwise ? c.inChannels : 1, bias: fuseBias ? b : null });
  let y = fromNC(y0, cl);
  // In NCHW, a 1-D per-channel bias or PReLU weight broadcasts over [C, 1, 1] (as tfjs's backends do).
  const perChannel = (t: Tensor) => (!cl && t.ndim === 1 && t.shape[0] !== 1 ? t.reshape([t.shape[0], 1, 1]) : t);
  if (b && !fuseBias) y = y.add(perChannel(b));
  y = activate(y, a.activation as string | undefined, prelu ? perChannel(backend.tensorOf(prelu)) : null, a.leakyreluAlpha as number | undefined);
  return out(backend, y, 'float32');
}

function conv2dBackpropInput(backend: ResidualBackend, dy: TensorInfo, filter: TensorInfo, a: Attr, depthwise: boolean): TensorInfo {
  const inputShape = a.inputShape as number[];
  const c = conv2dInfo(inputShape, filter.shape, a, depthwise);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, inputShape);
  let dyt = requireFloat(backend.tensorOf(dy), 'conv2dBackpropInput');
  // tfjs's backends read a dy larger than the convolution's output through its top-left corner (the
  // cpu backend's loops run over the output size); a smaller one is refused natively.
  const [ho, wo] = [c.outHeight, c.outWidth];
  const [hd, wd] = cl ? [dy.shape[1], dy.shape[2]] : [dy.shape[2], dy.shape[3]];
  if (hd > ho) dyt = dyt.narrow(cl ? 1 : 2, 0, ho);
  if (wd > wo) dyt = dyt.narrow(cl ? 2 : 3, 0, wo);
  if (isPointwise(c, depthwise) && c.strideHeight === 1 && c.strideWidth === 1) {
    const ft = requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput').reshape([c.inChannels, c.outChannels]);
    return out(backend, dyt.reshape([-1, c.outChannels]).matmul(ft.t()).reshape(inputShape), 'float32');
  }
  if (fewPixels(c, depthwise)) {
    const ft = requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput').reshape([-1, c.outChannels]);
    return out(backend, col2im(dyt.reshape([-1, c.outChannels]).matmul(ft.t()), c, backend.device), 'float32');
  }
  const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput'), depthwise ? 'depthwise' : 'conv');
  const ncShape = cl ? [inputShape[0], inputShape[3], inputShape[1], inputShape[2]] : inputShape;
  const gi = convBackwardInput(toNC(dyt, cl), w, ncShape, geo2d(c), depthwise ? c.inChannels : 1);
  return out(backend, fromNC(gi, cl), 'float32');
}

function conv2dBackpropFilter(backend: ResidualBackend, x: TensorInfo, dy: TensorInfo, a: Attr, depthwise: boolean): TensorInfo {
  const filterShape = a.filterShape as number[];
  const c = conv2dInfo(x.shape, filterShape, a, depthwise);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(x.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, filterShape);
  const xt = requireFloat(backend.tensorOf(x), 'conv2dBackpropFilter');
  const dyt = requireFloat(backend.tensorOf(dy), 'conv2dBackpropFilter');
  const xs = isPointwise(c, depthwise) && dy.shape[1] === c.outHeight && dy.shape[2] === c.outWidth ? strided(xt, c) : null;
  if (xs) return out(backend, xs.reshape([-1, c.inChannels]).t().matmul(dyt.reshape([-1, c.outChannels])).reshape(filterShape), 'float32');
  if (fewPixels(c, depthwise) && dy.shape[1] === c.outHeight && dy.shape[2] === c.outWidth)
    return out(backend, im2col(xt, c).t().matmul(dyt.reshape([-1, c.outChannels])).reshape(filterShape), 'float32');
  const kind = depthwise ? 'depthwise' : 'conv';
  const gw = convBackwardWeight(toNC(xt, cl), toNC(dyt, cl), weightShapeOf(filterShape, kind), geo2d(c), depthwise ? c.inChannels : 1);
  return out(backend, filterOf(gw, kind, filterShape), 'float32');
}

function conv3dInfo(xShape: number[], filterShape: number[], a: Attr): Conv3DInfo {
  return backend_util.computeConv3DInfo(
    xShape as [number, number, number, number, number],
    filterShape as [number, number, number, number, number],
    a.strides as [number, number, number],
    (a.dilations as [number, number, number]) ?? 1,
    a.pad as 'same',
  );
}
function outShape3d(c: Conv3DInfo): number[] {
  return [c.batchSize, c.outDepth, c.outHeight, c.outWidth, c.outChannels];
}

// ---- pools ----

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
function isIdentityPool(c: { filterHeight: number; filterWidth: number; filterDepth?: number; inShape: number[]; outShape: number[] }): boolean {
  return c.filterHeight === 1 && c.filterWidth === 1 && (c.filterDepth ?? 1) === 1 && c.inShape.every((v, i) => v === c.outShape[i]);
}
function poolForward(kind: PoolKind, x: Tensor, g: Geo, device: string): Tensor {
  const p = poolPlan(g);
  const three = g.k.length === 3;
  if (kind === 'max') {
    const pool = (t: Tensor) => op(three ? 'maxPool3d' : 'maxPool2d', padSpatial(t, p.pl, p.pr, -Infinity), g.k, g.stride, p.sym, g.dil, false);
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
function poolDtype(t: Tensor, what: string): Tensor {
  return requireFloat(t, what);
}
function pool2d(kind: PoolKind, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const x = inputs.x;
  const c = poolInfo2d(x.shape, attrs);
  const shape = outShape2d(c);
  if (sizeOf(shape) === 0) return zerosOut(backend, shape, x.dtype);
  const xt = backend.tensorOf(x);
  if (isIdentityPool(c)) return out(backend, xt.clone(), x.dtype === 'int32' ? 'int32' : 'float32');
  const y = fromNC(poolForward(kind, toNC(poolDtype(xt, kind + 'Pool'), true), geo2d(c), backend.device), true);
  return out(backend, x.dtype === 'int32' ? y.to('int32') : y, x.dtype === 'int32' ? 'int32' : 'float32');
}
function pool3d(kind: PoolKind, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const x = inputs.x;
  const c = poolInfo3d(x.shape, attrs);
  const shape = outShape3d(c);
  if (sizeOf(shape) === 0) return zerosOut(backend, shape, x.dtype);
  const xt = backend.tensorOf(x);
  if (isIdentityPool(c)) return out(backend, xt.clone(), x.dtype === 'int32' ? 'int32' : 'float32');
  const y = fromNC(poolForward(kind, toNC(poolDtype(xt, kind + 'Pool3d'), true), geo3d(c), backend.device), true);
  return out(backend, x.dtype === 'int32' ? y.to('int32') : y, x.dtype === 'int32' ? 'int32' : 'float32');
}
function poolGrad(kind: PoolKind, three: boolean, { inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { dy, input } = inputs;
  const g = three ? geo3d(poolInfo3d(input.shape, attrs)) : geo2d(poolInfo2d(input.shape, attrs));
  if (sizeOf(input.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, input.shape);
  const xt = toNC(poolDtype(backend.tensorOf(input), 'poolGrad'), true);
  const dyt = toNC(requireFloat(backend.tensorOf(dy), 'poolGrad'), true);
  return out(backend, fromNC(poolBackward(kind, dyt, xt, g, backend.device), true), 'float32');
}

// ---- batch norm, activations ----

/** A per-channel (or any trailing-dims) parameter of FusedBatchNorm, shaped to broadcast as tf's cpu cycles it. */
function bnParam(t: Tensor, xShape: number[]): Tensor {
  const n = t.numel();
  if (n === 1) return t.reshape([]);
  for (let k = 0; k < xShape.length; k++) if (sizeOf(xShape.slice(k)) === n) return t.reshape(xShape.slice(k));
  return t;
}
function fusedBatchNorm({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { x, mean, variance, offset, scale } = inputs;
  const eps = (attrs.varianceEpsilon as number) ?? 0.001;
  const xt = requireFloat(backend.tensorOf(x), 'batchNorm');
  const m = bnParam(requireFloat(backend.tensorOf(mean), 'batchNorm'), x.shape);
  const v = bnParam(requireFloat(backend.tensorOf(variance), 'batchNorm'), x.shape);
  // y = (x - mean) * scale / sqrt(var + eps) + offset = x * a + (offset - mean * a), one pass over x.
  let a = v.add(eps).rsqrt();
  if (scale) a = a.mul(bnParam(requireFloat(backend.tensorOf(scale), 'batchNorm'), x.shape));
  let b = m.mul(a).neg();
  if (offset) b = b.add(bnParam(requireFloat(backend.tensorOf(offset), 'batchNorm'), x.shape));
  return out(backend, op('addcmul', b, xt, a, 1), 'float32');
}

function unary(name: string, fn: (x: Tensor, a: Attr) => Tensor, keepInt = false): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }) => {
    const x = inputs.x;
    const xt = backend.tensorOf(x);
    if (keepInt && x.dtype === 'int32') return out(backend, fn(xt, attrs), 'int32');
    return out(backend, fn(requireFloat(xt, name), attrs), 'float32');
  });
}

// ---- LRN ----

/** Sum over the channel window [c - r, c + r] of an NHWC tensor. */
function channelWindowSum(t: Tensor, r: number): Tensor {
  const shape = t.shape;
  const C = shape[shape.length - 1];
  const flat = t.reshape([-1, 1, 1, C]);
  return op('avgPool2d', flat, [1, 2 * r + 1], [1, 1], [0, r], false, true, 1).reshape(shape);
}

// ---- dilation2d ----

interface DilationCtx {
  xp: Tensor; // padded NHWC
  vals: Tensor; // [N, Ho, Wo, C, fh*fw]
  info: Conv2DInfo;
  plan: Plan;
}
function dilationWindows(backend: ResidualBackend, x: TensorInfo, filter: TensorInfo, a: Attr): DilationCtx {
  const info = backend_util.computeDilation2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number],
    a.strides as [number, number],
    a.pad as 'same',
    'NHWC',
    a.dilations as [number, number],
  );
  const g = geo2d(info);
  const p = plan(g, () => 0);
  const xt = requireFloat(backend.tensorOf(x), 'dilation2d');
  const xp = fromNC(padSpatial(toNC(xt, true), p.pl, p.pr, -Infinity), true);
  const [fh, fw, C] = filter.shape;
  const ekh = (fh - 1) * info.dilationHeight + 1;
  const ekw = (fw - 1) * info.dilationWidth + 1;
  // [N, Ho, Wo, C, ekh, ekw] windows (views), then every dilation-th tap.
  let win = op('unfold', xp, 1, ekh, info.strideHeight);
  win = op('unfold', win, 2, ekw, info.strideWidth);
  win = win.slice(4, 0, null, info.dilationHeight).slice(5, 0, null, info.dilationWidth);
  const f = requireFloat(backend.tensorOf(filter), 'dilation2d').permute(2, 0, 1); // [C, fh, fw]
  const vals = win.add(f).reshape([x.shape[0], info.outHeight, info.outWidth, C, fh * fw]);
  return { xp, vals, info, plan: p };
}

// ---- resizing ----

interface Axis {
  lo: Tensor;
  hi: Tensor;
  frac: Tensor;
}
/** tf's bilinear source rows for one axis (exactly tfjs-backend-cpu's arithmetic, in doubles). */
function bilinearAxis(inSize: number, outSize: number, alignCorners: boolean, halfPixel: boolean, device: string, fracShape: number[]): Axis {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const frac = new Float32Array(outSize);
  for (let r = 0; r < outSize; r++) {
    const src = halfPixel ? ratio * (r + 0.5) - 0.5 : ratio * r;
    const f = Math.max(0, Math.floor(src));
    lo[r] = f;
    hi[r] = Math.min(inSize - 1, Math.ceil(src));
    frac[r] = src - f;
  }
  return {
    lo: tensor(lo, { device: device as 'cpu' }).to('int64'),
    hi: tensor(hi, { device: device as 'cpu' }).to('int64'),
    frac: tensor(frac, { shape: fracShape, device: device as 'cpu' }),
  };
}
function nearestAxis(inSize: number, outSize: number, alignCorners: boolean, halfPixel: boolean, device: string): Tensor {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const idx = new Int32Array(outSize);
  for (let r = 0; r < outSize; r++) {
    const src = halfPixel ? ratio * (r + 0.5) : ratio * r;
    let n = Math.min(inSize - 1, alignCorners ? Math.round(src) : Math.floor(src));
    if (halfPixel) n = Math.max(0, n);
    idx[r] = n;
  }
  return tensor(idx, { device: device as 'cpu' }).to('int64');
}
function lerpT(a: Tensor, b: Tensor, w: Tensor): Tensor {
  return a.add(b.sub(a).mul(w));
}

// ---- the kernels ----

export const configs: KernelConfig[] = [
  defineKernel('Conv2D', ({ inputs, attrs, backend }) => conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: false })),
  defineKernel('DepthwiseConv2dNative', ({ inputs, attrs, backend }) => conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: true })),
  defineKernel('FusedConv2D', ({ inputs, attrs, backend }) =>
    conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: false, bias: inputs.bias, prelu: inputs.preluActivationWeights }),
  ),
  defineKernel('FusedDepthwiseConv2D', ({ inputs, attrs, backend }) =>
    conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: true, bias: inputs.bias, prelu: inputs.preluActivationWeights }),
  ),
  defineKernel('Conv2DBackpropInput', ({ inputs, attrs, backend }) => conv2dBackpropInput(backend, inputs.dy, inputs.filter, attrs, false)),
  defineKernel('DepthwiseConv2dNativeBackpropInput', ({ inputs, attrs, backend }) => conv2dBackpropInput(backend, inputs.dy, inputs.filter, attrs, true)),
  defineKernel('Conv2DBackpropFilter', ({ inputs, attrs, backend }) => conv2dBackpropFilter(backend, inputs.x, inputs.dy, attrs, false)),
  defineKernel('DepthwiseConv2dNativeBackpropFilter', ({ inputs, attrs, backend }) => conv2dBackpropFilter(backend, inputs.x, inputs.dy, attrs, true)),

  defineKernel('Conv3D', ({ inputs, attrs, backend }) => {
    const { x, filter } = inputs;
    const c = conv3dInfo(x.shape, filter.shape, attrs);
    const shape = outShape3d(c);
    if (sizeOf(shape) === 0 || sizeOf(x.shape) === 0) return zerosOut(backend, shape);
    const xt = requireFloat(backend.tensorOf(x), 'conv3d');
    const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv3d'), 'conv');
    return out(backend, fromNC(convForward({ x: toNC(xt, true), w, g: geo3d(c), groups: 1 }), true), 'float32');
  }),
  defineKernel('Conv3DBackpropInputV2', ({ inputs, attrs, backend }) => {
    const { dy, filter } = inputs;
    const inputShape = attrs.inputShape as number[];
    const c = conv3dInfo(inputShape, filter.shape, attrs);
    if (sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, inputShape);
    const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv3dBackpropInput'), 'conv');
    const [n, d, h, wd, ch] = inputShape;
    const gi = convBackwardInput(toNC(requireFloat(backend.tensorOf(dy), 'conv3dBackpropInput'), true), w, [n, ch, d, h, wd], geo3d(c), 1);
    return out(backend, fromNC(gi, true), 'float32');
  }),
  defineKernel('Conv3DBackpropFilterV2', ({ inputs, attrs, backend }) => {
    const { x, dy } = inputs;
    const filterShape = attrs.filterShape as number[];
    const c = conv3dInfo(x.shape, filterShape, attrs);
    if (sizeOf(x.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, filterShape);
    const xt = toNC(requireFloat(backend.tensorOf(x), 'conv3dBackpropFilter'), true);
    const dyt = toNC(requireFloat(backend.tensorOf(dy), 'conv3dBackpropFilter'), true);
    const gw = convBackwardWeight(xt, dyt, weightShapeOf(filterShape, 'conv'), geo3d(c), 1);
    return out(backend, filterOf(gw, 'conv', filterShape), 'float32');
  }),

  defineKernel('MaxPool', (args) => pool2d('max', args)),
  defineKernel('AvgPool', (args) => pool2d('avg', args)),
  defineKernel('MaxPool3D', (args) => pool3d('max', args)),
  defineKernel('AvgPool3D', (args) => pool3d('avg', args)),
  defineKernel('MaxPoolGrad', (args) => poolGrad('max', false, args)),
  defineKernel('AvgPoolGrad', (args) => poolGrad('avg', false, args)),
  defineKernel('MaxPool3DGrad', (args) => poolGrad('max', true, args)),
  defineKernel('AvgPool3DGrad', (args) => poolGrad('avg', true, args)),

  defineKernel('BatchMatMul', ({ inputs, attrs, backend }) => matMul(backend, inputs.a, inputs.b, attrs)),
  defineKernel('_FusedMatMul', ({ inputs, attrs, backend }) => matMul(backend, inputs.a, inputs.b, attrs, inputs.bias, inputs.preluActivationWeights)),

  defineKernel('FusedBatchNorm', fusedBatchNorm),

  unary('Relu', (x) => x.relu(), true),
  unary('Relu6', (x) => x.clamp(0, 6), true),
  unary('Elu', (x) => op('elu', x, 1)),
  unary('Selu', (x) => op('selu', x)),
  unary('Softplus', (x) => op('softplus', x, 1, 20)),
  unary('LeakyRelu', (x, a) => op('leakyRelu', x, (a.alpha as number) ?? 0.2)),
  defineKernel('EluGrad', ({ inputs, backend }) => {
    const dy = requireFloat(backend.tensorOf(inputs.dy), 'eluGrad');
    const y = requireFloat(backend.tensorOf(inputs.y), 'eluGrad');
    return out(backend, op('eluBackwardFromResult', dy, y, 1), 'float32');
  }),
  defineKernel('Prelu', ({ inputs, backend }) => {
    const x = backend.tensorOf(inputs.x);
    const alpha = backend.tensorOf(inputs.alpha);
    const dt = inputs.x.dtype === 'int32' && inputs.alpha.dtype === 'int32' ? 'int32' : 'float32';
    return out(backend, cast(preluOf(x, alpha), dt), dt);
  }),
  defineKernel('Softmax', ({ inputs, attrs, backend }) => {
    const x = requireFloat(backend.tensorOf(inputs.logits), 'softmax');
    const dim = attrs.dim as number;
    return out(backend, x.softmax(dim === undefined ? -1 : dim), 'float32');
  }),

  defineKernel('LRN', ({ inputs, attrs, backend }) => {
    const x = requireFloat(backend.tensorOf(inputs.x), 'LRN');
    const { depthRadius, bias, alpha, beta } = attrs as { depthRadius: number; bias: number; alpha: number; beta: number };
    const norm = channelWindowSum(x.mul(x), depthRadius).mul(alpha).add(bias);
    return out(backend, x.mul(norm.pow(-beta)), 'float32');
  }),
  defineKernel('LRNGrad', ({ inputs, attrs, backend }) => {
    const x = requireFloat(backend.tensorOf(inputs.x), 'LRNGrad');
    const y = requireFloat(backend.tensorOf(inputs.y), 'LRNGrad');
    const dy = requireFloat(backend.tensorOf(inputs.dy), 'LRNGrad');
    const { depthRadius, bias, alpha, beta } = attrs as { depthRadius: number; bias: number; alpha: number; beta: number };
    // dx_k = dy_k * norm_k^-beta - 2 alpha beta x_k * sum over windows o holding k of dy_o y_o / norm_o.
    const norm = channelWindowSum(x.mul(x), depthRadius).mul(alpha).add(bias);
    const s = channelWindowSum(dy.mul(y).div(norm), depthRadius);
    return out(backend, dy.mul(norm.pow(-beta)).sub(x.mul(s).mul(2 * alpha * beta)), 'float32');
  }),

  defineKernel('Dilation2D', ({ inputs, attrs, backend }) => {
    const { x, filter } = inputs;
    const ctx = dilationWindows(backend, x, filter, attrs);
    return out(backend, ctx.vals.amax([-1], false), 'float32');
  }),
  defineKernel('Dilation2DBackpropFilter', ({ inputs, attrs, backend }) => {
    const { x, filter, dy } = inputs;
    const ctx = dilationWindows(backend, x, filter, attrs);
    const [fh, fw, C] = filter.shape;
    const K = fh * fw;
    const hot = op('oneHot', ctx.vals.argmax(-1, false), K); // [N, Ho, Wo, C, K]
    const dyt = requireFloat(backend.tensorOf(dy), 'dilation2dBackpropFilter');
    const g = hot.mul(dyt.unsqueeze(-1)).sum([0, 1, 2]); // [C, K]
    return out(backend, g.reshape([C, fh, fw]).permute(1, 2, 0), 'float32');
  }),
  defineKernel('Dilation2DBackpropInput', ({ inputs, attrs, backend }) => {
    const { x, filter, dy } = inputs;
    const ctx = dilationWindows(backend, x, filter, attrs);
    const { info } = ctx;
    const [, fw] = filter.shape;
    const [N, Hp, Wp, C] = ctx.xp.shape;
    const am = ctx.vals.argmax(-1, false); // [N, Ho, Wo, C]
    const i = am.div(fw, 'floor');
    const j = am.sub(i.mul(fw));
    const rows = op('arange', 0, info.outHeight, 1, code('int64'), backend.device).mul(info.strideHeight).reshape([1, -1, 1, 1]);
    const cols = op('arange', 0, info.outWidth, 1, code('int64'), backend.device).mul(info.strideWidth).reshape([1, 1, -1, 1]);
    const r = rows.add(i.mul(info.dilationHeight));
    const cc = cols.add(j.mul(info.dilationWidth));
    const flat = r.mul(Wp).add(cc).reshape([N, -1, C]);
    const dyt = requireFloat(backend.tensorOf(dy), 'dilation2dBackpropInput').reshape([N, -1, C]);
    const gp = op('scatterAdd', op('zeros', [N, Hp * Wp, C], code('float32'), backend.device), 1, flat, dyt).reshape([N, Hp, Wp, C]);
    const g = fromNC(padSpatial(toNC(gp, true), ctx.plan.pl.map((v) => -v), ctx.plan.pr.map((v) => -v)), true);
    return out(backend, g, 'float32');
  }),

  defineKernel('ResizeBilinear', ({ inputs, attrs, backend }) => {
    const images = inputs.images;
    const [newH, newW] = attrs.size as [number, number];
    const [N, H, W, C] = images.shape;
    if (N * newH * newW * C === 0) return zerosOut(backend, [N, newH, newW, C]);
    const x = requireFloat(backend.tensorOf(images), 'resizeBilinear');
    const ac = !!attrs.alignCorners;
    const hp = !!attrs.halfPixelCenters;
    const rows = bilinearAxis(H, newH, ac, hp, backend.device, [1, newH, 1, 1]);
    const cols = bilinearAxis(W, newW, ac, hp, backend.device, [1, 1, newW, 1]);
    const top = x.indexSelect(1, rows.lo);
    const bot = x.indexSelect(1, rows.hi);
    const t = lerpT(top.indexSelect(2, cols.lo), top.indexSelect(2, cols.hi), cols.frac);
    const b = lerpT(bot.indexSelect(2, cols.lo), bot.indexSelect(2, cols.hi), cols.frac);
    return out(backend, lerpT(t, b, rows.frac), 'float32');
  }),
  defineKernel('ResizeBilinearGrad', ({ inputs, attrs, backend }) => {
    const { images, dy } = inputs;
    const [N, H, W, C] = images.shape;
    const [, newH, newW] = dy.shape;
    if (N * H * W * C === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, images.shape);
    const ac = !!attrs.alignCorners;
    // tf's ResizeBilinearGrad (and tfjs's) is the transpose of the legacy (not half-pixel) mapping.
    const rows = bilinearAxis(H, newH, ac, false, backend.device, [1, newH, 1, 1]);
    const cols = bilinearAxis(W, newW, ac, false, backend.device, [1, 1, newW, 1]);
    const g = requireFloat(backend.tensorOf(dy), 'resizeBilinearGrad');
    const zA = op('zeros', [N, newH, W, C], code('float32'), backend.device);
    const gc = g.mul(cols.frac);
    let A = op('indexAdd', zA, 2, cols.lo, g.sub(gc));
    A = op('indexAdd', A, 2, cols.hi, gc);
    const ar = A.mul(rows.frac);
    const zX = op('zeros', [N, H, W, C], code('float32'), backend.device);
    let dx = op('indexAdd', zX, 1, rows.lo, A.sub(ar));
    dx = op('indexAdd', dx, 1, rows.hi, ar);
    return out(backend, dx, 'float32');
  }),
  defineKernel('ResizeNearestNeighbor', ({ inputs, attrs, backend }) => {
    const images = inputs.images;
    const [newH, newW] = attrs.size as [number, number];
    const [N, H, W, C] = images.shape;
    if (N * newH * newW * C === 0) return zerosOut(backend, [N, newH, newW, C], images.dtype);
    const ac = !!attrs.alignCorners;
    const hp = !!attrs.halfPixelCenters;
    const x = backend.tensorOf(images);
    const y = x.indexSelect(1, nearestAxis(H, newH, ac, hp, backend.device)).indexSelect(2, nearestAxis(W, newW, ac, hp, backend.device));
    return out(backend, y, images.dtype);
  }),
  defineKernel('ResizeNearestNeighborGrad', ({ inputs, attrs, backend }) => {
    const { images, dy } = inputs;
    const [N, H, W, C] = images.shape;
    const [, newH, newW] = dy.shape;
    if (N * H * W * C === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, images.shape);
    const ac = !!attrs.alignCorners;
    const g = requireFloat(backend.tensorOf(dy), 'resizeNearestNeighborGrad');
    const A = op('indexAdd', op('zeros', [N, newH, W, C], code('float32'), backend.device), 2, nearestAxis(W, newW, ac, false, backend.device), g);
    const dx = op('indexAdd', op('zeros', [N, H, W, C], code('float32'), backend.device), 1, nearestAxis(H, newH, ac, false, backend.device), A);
    return out(backend, dx, 'float32');
  }),
  defineKernel('CropAndResize', ({ inputs, attrs, backend }) => cropAndResize(backend, inputs.image, inputs.boxes, inputs.boxInd, attrs)),
  defineKernel('FlipLeftRight', ({ inputs, backend }) => {
    const t = backend.tensorOf(inputs.image);
    return out(backend, t.flip([2]), inputs.image.dtype);
  }),
  defineKernel('DepthToSpace', ({ inputs, attrs, backend }) => {
    const x = backend.tensorOf(inputs.x);
    const b = attrs.blockSize as number;
    const nchw = attrs.dataFormat === 'NCHW';
    let y: Tensor;
    if (!nchw) {
      const [N, H, W, C] = x.shape;
      y = x.reshape([N, H, W, b, b, C / (b * b)]).permute(0, 1, 3, 2, 4, 5).reshape([N, H * b, W * b, C / (b * b)]);
    } else {
      const [N, C, H, W] = x.shape;
      y = x.reshape([N, b, b, C / (b * b), H, W]).permute(0, 3, 4, 1, 5, 2).reshape([N, C / (b * b), H * b, W * b]);
    }
    return out(backend, y, inputs.x.dtype);
  }),
  defineKernel('SpaceToBatchND', ({ inputs, attrs, backend }) => {
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
  }),
  defineKernel('BatchToSpaceND', ({ inputs, attrs, backend }) => {
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
  }),
];

function matMul(backend: ResidualBackend, a: TensorInfo, b: TensorInfo, attrs: Attr, bias?: TensorInfo, prelu?: TensorInfo): TensorInfo {
  if (a.shape.length < 2 || b.shape.length < 2) throw new Error(`batchMatMul: both inputs need rank >= 2, got shapes [${a.shape}] and [${b.shape}]`);
  let at = backend.tensorOf(a);
  let bt = backend.tensorOf(b);
  const intMul = a.dtype === 'int32' && b.dtype === 'int32' && !bias;
  if (!intMul) {
    at = requireFloat(at, 'matMul');
    bt = requireFloat(bt, 'matMul');
  }
  if (attrs.transposeA) at = at.transpose(-2, -1);
  if (attrs.transposeB) bt = bt.transpose(-2, -1);
  let y = at.matmul(bt);
  if (bias) y = y.add(requireFloat(backend.tensorOf(bias), 'matMul bias'));
  y = activate(y, attrs.activation as string | undefined, prelu ? backend.tensorOf(prelu) : null, attrs.leakyreluAlpha as number | undefined);
  return out(backend, y, intMul ? 'int32' : 'float32');
}

function cropAndResize(backend: ResidualBackend, image: TensorInfo, boxes: TensorInfo, boxInd: TensorInfo, attrs: Attr): TensorInfo {
  const [batch, ih, iw, C] = image.shape;
  const nb = boxes.shape[0];
  const [ch, cw] = attrs.cropSize as [number, number];
  const method = (attrs.method as string) ?? 'bilinear';
  const extrap = (attrs.extrapolationValue as number) ?? 0;
  if (nb * ch * cw * C === 0) return zerosOut(backend, [nb, ch, cw, C]);
  const bv = backend.readSync(boxes.dataId) as Float32Array;
  const bi = backend.readSync(boxInd.dataId) as Int32Array;
  const bilinear = method === 'bilinear';
  // Per box: source rows/cols (floor/ceil or nearest), lerp weights, validity (inside the image and a
  // valid box index); out-of-range boxes give 0, out-of-image points the extrapolation value.
  const top = new Int32Array(nb * ch);
  const bot = new Int32Array(nb * ch);
  const yl = new Float32Array(nb * ch);
  const yok = new Uint8Array(nb * ch);
  const left = new Int32Array(nb * cw);
  const right = new Int32Array(nb * cw);
  const xl = new Float32Array(nb * cw);
  const xok = new Uint8Array(nb * cw);
  const bidx = new Int32Array(nb);
  const bok = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const [y1, x1, y2, x2] = [bv[4 * b], bv[4 * b + 1], bv[4 * b + 2], bv[4 * b + 3]];
    const ind = bi[b];
    const valid = ind >= 0 && ind < batch;
    bidx[b] = valid ? ind : 0;
    bok[b] = valid ? 1 : 0;
    const hs = ch > 1 ? ((y2 - y1) * (ih - 1)) / (ch - 1) : 0;
    const ws = cw > 1 ? ((x2 - x1) * (iw - 1)) / (cw - 1) : 0;
    for (let y = 0; y < ch; y++) {
      const yi = ch > 1 ? y1 * (ih - 1) + y * hs : 0.5 * (y1 + y2) * (ih - 1);
      const k = b * ch + y;
      if (yi < 0 || yi > ih - 1 || !Number.isFinite(yi)) continue;
      yok[k] = 1;
      if (bilinear) {
        top[k] = Math.floor(yi);
        bot[k] = Math.ceil(yi);
        yl[k] = yi - Math.floor(yi);
      } else top[k] = bot[k] = Math.round(yi);
    }
    for (let x = 0; x < cw; x++) {
      const xi = cw > 1 ? x1 * (iw - 1) + x * ws : 0.5 * (x1 + x2) * (iw - 1);
      const k = b * cw + x;
      if (xi < 0 || xi > iw - 1 || !Number.isFinite(xi)) continue;
      xok[k] = 1;
      if (bilinear) {
        left[k] = Math.floor(xi);
        right[k] = Math.ceil(xi);
        xl[k] = xi - Math.floor(xi);
      } else left[k] = right[k] = Math.round(xi);
    }
  }
  const dev = backend.device as 'cpu';
  const i64 = (a: Int32Array, shape: number[]) => tensor(a, { shape, device: dev }).to('int64');
  const img = requireFloat(backend.tensorOf(image), 'cropAndResize');
  const B = i64(bidx, [nb, 1, 1]);
  const T = i64(top, [nb, ch, 1]);
  const Bo = i64(bot, [nb, ch, 1]);
  const L = i64(left, [nb, 1, cw]);
  const R = i64(right, [nb, 1, cw]);
  const g = (r: Tensor, c: Tensor) => op('indexTensors', img, [B, r, c]); // [nb, ch, cw, C]
  let y: Tensor;
  if (bilinear) {
    const XL = tensor(xl, { shape: [nb, 1, cw, 1], device: dev });
    const YL = tensor(yl, { shape: [nb, ch, 1, 1], device: dev });
    const t = lerpT(g(T, L), g(T, R), XL);
    const b = lerpT(g(Bo, L), g(Bo, R), XL);
    y = lerpT(t, b, YL);
  } else y = g(T, L);
  const ok = op('logicalAnd', tensor(yok, { shape: [nb, ch, 1, 1], device: dev }).to('bool'), tensor(xok, { shape: [nb, 1, cw, 1], device: dev }).to('bool'));
  y = where(ok, y, extrap);
  y = y.mul(tensor(bok, { shape: [nb, 1, 1, 1], device: dev }));
  return out(backend, y, 'float32');
}

