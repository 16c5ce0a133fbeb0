// Window geometry shared by the convolution, pool and dilation kernels (conv.ts, pool.ts).
//
// Layout: tf's activations are NHWC (NDHWC) and its filters HWIO (DHWIO); libtorch wants NCHW and OIHW.
// Both are permuted views, so an NHWC tensor reaches libtorch as a channels-last NCHW tensor (no copy)
// and libtorch's channels-last result, permuted back, is a contiguous NHWC tensor again.
//
// Padding: tfjs computes every geometry (backend_util.compute*Info: 'same', 'valid', numbers, explicit
// pads, dimRoundingMode), and the kernels reproduce that geometry exactly: libtorch takes the symmetric
// part of the padding; what is left (TF's odd 'same' row/column at the end, explicit asymmetric pads,
// rows a rounding mode leaves unused) is an explicit pad or crop of the input, undone on the gradient.
import type { backend_util } from '@tensorflow/tfjs-core';
import { checkSize, op, type Tensor } from './util.js';

export type Conv2DInfo = backend_util.Conv2DInfo;
export type Conv3DInfo = backend_util.Conv3DInfo;
export type Attr = Record<string, unknown>;

/** One convolution/pool geometry over the spatial dims of an N C spatial... tensor. */
export interface Geo {
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
export interface Plan {
  sym: number[];
  pl: number[];
  pr: number[];
  /** true when no explicit pad/crop is needed. */
  direct: boolean;
}
export function plan(g: Geo, symLimit?: (i: number) => number): Plan {
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
export function padSpatial(x: Tensor, pl: number[], pr: number[], value = 0): Tensor {
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
/** The shape of an N C spatial... tensor (or shape) after the plan's explicit pad/crop. */
export function spatialShape(x: Tensor | number[], p: Plan): number[] {
  const s = Array.isArray(x) ? x : x.shape;
  return s.map((v, d) => (d < 2 ? v : v + p.pl[d - 2] + p.pr[d - 2]));
}

export function geo2d(c: Conv2DInfo): Geo {
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
export function geo3d(c: Conv3DInfo): Geo {
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
export function outShape2d(c: Conv2DInfo): number[] {
  return c.dataFormat === 'channelsLast'
    ? [c.batchSize, c.outHeight, c.outWidth, c.outChannels]
    : [c.batchSize, c.outChannels, c.outHeight, c.outWidth];
}
export function outShape3d(c: Conv3DInfo): number[] {
  return [c.batchSize, c.outDepth, c.outHeight, c.outWidth, c.outChannels];
}

// Layout helpers: channels-last tf tensors <-> libtorch's channels-first views.
export function toNC(x: Tensor, channelsLast: boolean): Tensor {
  if (!channelsLast) return x;
  return x.ndim === 5 ? x.permute(0, 4, 1, 2, 3) : x.permute(0, 3, 1, 2);
}
export function fromNC(x: Tensor, channelsLast: boolean): Tensor {
  if (!channelsLast) return x;
  return x.ndim === 5 ? x.permute(0, 2, 3, 4, 1) : x.permute(0, 2, 3, 1);
}

/**
 * Bounds the input padded to a window geometry (which libtorch or an explicit pad materializes): a pad
 * is an attribute (numbers or explicit pads), and with a large stride a small output can come from a
 * huge padded input. The output itself is checked by each kernel (checkSize).
 */
export function checkPadded(kernel: string, c: Conv2DInfo | Conv3DInfo): void {
  const g = 'inDepth' in c ? geo3d(c as Conv3DInfo) : geo2d(c as Conv2DInfo);
  checkSize(
    kernel,
    [c.batchSize, c.inChannels, ...g.inSize.map((v, i) => v + Math.max(0, g.before[i]) + Math.max(0, g.after[i]))],
    'float32',
    'padded input',
  );
}
