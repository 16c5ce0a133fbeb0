// Neural-network ops, named as torch.nn.functional in camelCase. Each is one native op.
import { native as N } from '../addon/binding.js';
import { dtypeCode, type DType } from '../tensor/dtype.js';
import { Tensor, wrapT, hOf, hOpt } from '../tensor/tensor.js';

export type Pair = number | readonly [number, number];
const pair = (v: Pair, name: string): number[] => {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2) return [v[0], v[1]];
  throw new TypeError(`${name} must be a number or a pair of numbers, got ${JSON.stringify(v)}`);
};
// A symmetric pair goes to the native side as one number for convolutions and max/avg pools (libtorch
// expands their one-element size lists): reading a JS array element by element costs more than a tiny
// op's kernel. (Adaptive pools need both numbers.)
const sym = (v: Pair, name: string): number | number[] => {
  const p = pair(v, name);
  return p[0] === p[1] ? p[0] : p;
};

export type Reduction = 'mean' | 'sum' | 'none';
const REDUCTION: Record<Reduction, number> = { none: 0, mean: 1, sum: 2 };
function reduction(r: Reduction | undefined): number {
  const v = REDUCTION[r ?? 'mean'];
  if (v === undefined) throw new TypeError(`reduction must be 'mean', 'sum' or 'none', got '${String(r)}'`);
  return v;
}

export interface Conv2dOptions {
  stride?: Pair;
  /** A number, a pair, or 'same' / 'valid'. */
  padding?: Pair | 'same' | 'valid';
  dilation?: Pair;
  groups?: number;
}

export function conv2d(input: Tensor, weight: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Tensor {
  const stride = sym(o.stride ?? 1, 'stride');
  const dilation = sym(o.dilation ?? 1, 'dilation');
  const groups = o.groups ?? 1;
  if (typeof o.padding === 'string') {
    return wrapT(N.conv2dPadMode(hOf(input), hOf(weight), hOpt(bias), stride, o.padding, dilation, groups));
  }
  return wrapT(N.conv2d(hOf(input), hOf(weight), hOpt(bias), stride, sym(o.padding ?? 0, 'padding'), dilation, groups));
}

export interface BatchNormOptions {
  weight?: Tensor | null;
  bias?: Tensor | null;
  training?: boolean;
  momentum?: number;
  eps?: number;
}

/**
 * Batch normalisation. In training mode the batch statistics normalise and the running statistics
 * (if given) are updated in place with `momentum`; in eval mode the running statistics normalise.
 */
export function batchNorm(input: Tensor, runningMean: Tensor | null, runningVar: Tensor | null, o: BatchNormOptions = {}): Tensor {
  const training = o.training ?? false;
  if (!training && (!runningMean || !runningVar)) throw new TypeError('batchNorm: eval mode needs runningMean and runningVar');
  return wrapT(
    N.batchNorm(hOf(input), hOpt(o.weight), hOpt(o.bias), hOpt(runningMean), hOpt(runningVar), training, o.momentum ?? 0.1, o.eps ?? 1e-5),
  );
}

export function relu(input: Tensor, inplace = false): Tensor {
  if (inplace) return input.relu_();
  return wrapT(N.relu(hOf(input)));
}
export function leakyRelu(input: Tensor, negativeSlope = 0.01): Tensor {
  return wrapT(N.leakyRelu(hOf(input), negativeSlope));
}
export function gelu(input: Tensor): Tensor {
  return wrapT(N.gelu(hOf(input)));
}
export function silu(input: Tensor): Tensor {
  return wrapT(N.silu(hOf(input)));
}
export function sigmoid(input: Tensor): Tensor {
  return input.sigmoid();
}

export interface PoolOptions {
  stride?: Pair | null;
  padding?: Pair;
  ceilMode?: boolean;
}
export function maxPool2d(input: Tensor, kernelSize: Pair, o: PoolOptions & { dilation?: Pair } = {}): Tensor {
  const k = sym(kernelSize, 'kernelSize');
  return wrapT(
    N.maxPool2d(
      hOf(input),
      k,
      o.stride == null ? k : sym(o.stride, 'stride'),
      sym(o.padding ?? 0, 'padding'),
      sym(o.dilation ?? 1, 'dilation'),
      o.ceilMode ?? false,
    ),
  );
}
export function avgPool2d(
  input: Tensor,
  kernelSize: Pair,
  o: PoolOptions & { countIncludePad?: boolean; divisorOverride?: number } = {},
): Tensor {
  const k = sym(kernelSize, 'kernelSize');
  return wrapT(
    N.avgPool2d(
      hOf(input),
      k,
      o.stride == null ? k : sym(o.stride, 'stride'),
      sym(o.padding ?? 0, 'padding'),
      o.ceilMode ?? false,
      o.countIncludePad ?? true,
      o.divisorOverride,
    ),
  );
}
export function adaptiveAvgPool2d(input: Tensor, outputSize: Pair): Tensor {
  return wrapT(N.adaptiveAvgPool2d(hOf(input), pair(outputSize, 'outputSize')));
}
export function adaptiveMaxPool2d(input: Tensor, outputSize: Pair): Tensor {
  return wrapT(N.adaptiveMaxPool2d(hOf(input), pair(outputSize, 'outputSize')));
}
export function linear(input: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return wrapT(N.linear(hOf(input), hOf(weight), hOpt(bias)));
}
export function dropout(input: Tensor, p = 0.5, training = true): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout: p must be in [0, 1], got ${p}`);
  return wrapT(N.dropout(hOf(input), p, training));
}
export function softmax(input: Tensor, dim: number, dtype?: DType): Tensor {
  return wrapT(N.softmax(hOf(input), dim, dtypeCode(dtype)));
}
export function logSoftmax(input: Tensor, dim: number, dtype?: DType): Tensor {
  return wrapT(N.logSoftmax(hOf(input), dim, dtypeCode(dtype)));
}

export interface LossOptions {
  weight?: Tensor | null;
  reduction?: Reduction;
  ignoreIndex?: number;
}
/** Cross entropy over logits, with class-index (int64) or probability targets and label smoothing. */
export function crossEntropy(input: Tensor, target: Tensor, o: LossOptions & { labelSmoothing?: number } = {}): Tensor {
  const ls = o.labelSmoothing ?? 0;
  if (!(ls >= 0 && ls <= 1)) throw new RangeError(`crossEntropy: labelSmoothing must be in [0, 1], got ${ls}`);
  return wrapT(N.crossEntropy(hOf(input), hOf(target), hOpt(o.weight), reduction(o.reduction), o.ignoreIndex ?? -100, ls));
}
export function nllLoss(input: Tensor, target: Tensor, o: LossOptions = {}): Tensor {
  return wrapT(N.nllLoss(hOf(input), hOf(target), hOpt(o.weight), reduction(o.reduction), o.ignoreIndex ?? -100));
}
export function mseLoss(input: Tensor, target: Tensor, o: { reduction?: Reduction } = {}): Tensor {
  return wrapT(N.mseLoss(hOf(input), hOf(target), reduction(o.reduction)));
}
export function oneHot(input: Tensor, numClasses = -1): Tensor {
  return wrapT(N.oneHot(hOf(input), numClasses));
}
export { pad } from '../tensor/tensor.js';
