// Normalisation kernels of the residual tfjs backend: FusedBatchNorm and the local response
// normalisation (LRN) with its gradient.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { checkBroadcast, defineKernel, op, out, requireFloat, sizeOf, type Tensor } from './util.js';

// ---- batch norm ----

/** A per-channel (or any trailing-dims) parameter of FusedBatchNorm, shaped to broadcast as tf's cpu cycles it. */
function bnParam(t: Tensor, xShape: number[]): Tensor {
  const n = t.numel();
  if (n === 1) return t.reshape([]);
  for (let k = 0; k < xShape.length; k++) if (sizeOf(xShape.slice(k)) === n) return t.reshape(xShape.slice(k));
  return t;
}
export const fusedBatchNormConfig = defineKernel('FusedBatchNorm', ({ inputs, attrs, backend }) => {
  const { x, mean, variance, offset, scale } = inputs;
  const eps = (attrs.varianceEpsilon as number) ?? 0.001;
  const xt = requireFloat(backend.tensorOf(x), 'batchNorm');
  const m = bnParam(requireFloat(backend.tensorOf(mean), 'batchNorm'), x.shape);
  const v = bnParam(requireFloat(backend.tensorOf(variance), 'batchNorm'), x.shape);
  // The parameters broadcast against x (tf: per channel, or x's trailing shape): bounded as broadcast.
  const params = [mean, variance, offset, scale].filter((p) => p !== undefined);
  checkBroadcast('FusedBatchNorm', 'float32', x.shape, ...params.map((p) => bnParam(backend.tensorOf(p), x.shape).shape));
  // y = (x - mean) * scale / sqrt(var + eps) + offset = x * a + (offset - mean * a), one pass over x.
  let a = v.add(eps).rsqrt();
  if (scale) a = a.mul(bnParam(requireFloat(backend.tensorOf(scale), 'batchNorm'), x.shape));
  let b = m.mul(a).neg();
  if (offset) b = b.add(bnParam(requireFloat(backend.tensorOf(offset), 'batchNorm'), x.shape));
  return out(backend, op('addcmul', b, xt, a, 1), 'float32');
});

// ---- LRN ----

/** Sum over the channel window [c - r, c + r] of an NHWC tensor. */
function channelWindowSum(t: Tensor, r: number): Tensor {
  const shape = t.shape;
  const C = shape[shape.length - 1];
  const flat = t.reshape([-1, 1, 1, C]);
  return op('avgPool2d', flat, [1, 2 * r + 1], [1, 1], [0, r], false, true, 1).reshape(shape);
}
export const lrnConfig = defineKernel('LRN', ({ inputs, attrs, backend }) => {
  const x = requireFloat(backend.tensorOf(inputs.x), 'LRN');
  const { depthRadius, bias, alpha, beta } = attrs as { depthRadius: number; bias: number; alpha: number; beta: number };
  const norm = channelWindowSum(x.mul(x), depthRadius).mul(alpha).add(bias);
  return out(backend, x.mul(norm.pow(-beta)), 'float32');
});
export const lrnGradConfig = defineKernel('LRNGrad', ({ inputs, attrs, backend }) => {
  const x = requireFloat(backend.tensorOf(inputs.x), 'LRNGrad');
  const y = requireFloat(backend.tensorOf(inputs.y), 'LRNGrad');
  const dy = requireFloat(backend.tensorOf(inputs.dy), 'LRNGrad');
  checkBroadcast('LRNGrad', 'float32', inputs.x.shape, inputs.y.shape, inputs.dy.shape);
  const { depthRadius, bias, alpha, beta } = attrs as { depthRadius: number; bias: number; alpha: number; beta: number };
  // dx_k = dy_k * norm_k^-beta - 2 alpha beta x_k * sum over windows o holding k of dy_o y_o / norm_o.
  const norm = channelWindowSum(x.mul(x), depthRadius).mul(alpha).add(bias);
  const s = channelWindowSum(dy.mul(y).div(norm), depthRadius);
  return out(backend, dy.mul(norm.pow(-beta)).sub(x.mul(s).mul(2 * alpha * beta)), 'float32');
});

export const configs: KernelConfig[] = [fusedBatchNormConfig, lrnConfig, lrnGradConfig];
