// Activation kernels of the residual tfjs backend (Relu, Relu6, Elu, Selu, Softplus, LeakyRelu, EluGrad,
// Prelu, Softmax) and tfjs's fused activations, which the fused convolutions and matrix products apply
// (conv.ts, linalg.ts). Sigmoid, Step and the other plain functions are in math.ts.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { where } from '../../tensor/tensor.js';
import { cast, checkBroadcast, defineKernel, op, out, requireFloat, type Tensor } from './util.js';

type Attr = Record<string, unknown>;

/** tfjs's fused activations (fused_util.applyActivation). */
export function activate(y: Tensor, activation: string | undefined, prelu: Tensor | null, leakyAlpha: number | undefined): Tensor {
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
export function preluOf(x: Tensor, alpha: Tensor): Tensor {
  return where(x.lt(0), x.mul(alpha), x);
}

/** An activation kernel of input `x`: float32 (ints converted), or int32 kept when `keepInt`. */
function activation(name: string, fn: (x: Tensor, a: Attr) => Tensor, keepInt = false): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }) => {
    const x = inputs.x;
    const xt = backend.tensorOf(x);
    if (keepInt && x.dtype === 'int32') return out(backend, fn(xt, attrs), 'int32');
    return out(backend, fn(requireFloat(xt, name), attrs), 'float32');
  });
}

export const reluConfig = activation('Relu', (x) => x.relu(), true);
export const relu6Config = activation('Relu6', (x) => x.clamp(0, 6), true);
export const eluConfig = activation('Elu', (x) => op('elu', x, 1));
export const seluConfig = activation('Selu', (x) => op('selu', x));
export const softplusConfig = activation('Softplus', (x) => op('softplus', x, 1, 20));
export const leakyReluConfig = activation('LeakyRelu', (x, a) => op('leakyRelu', x, (a.alpha as number) ?? 0.2));

export const eluGradConfig = defineKernel('EluGrad', ({ inputs, backend }) => {
  checkBroadcast('EluGrad', 'float32', inputs.dy.shape, inputs.y.shape);
  const dy = requireFloat(backend.tensorOf(inputs.dy), 'eluGrad');
  const y = requireFloat(backend.tensorOf(inputs.y), 'eluGrad');
  return out(backend, op('eluBackwardFromResult', dy, y, 1), 'float32');
});

export const preluConfig = defineKernel('Prelu', ({ inputs, backend }) => {
  checkBroadcast('Prelu', 'float32', inputs.x.shape, inputs.alpha.shape);
  const x = backend.tensorOf(inputs.x);
  const alpha = backend.tensorOf(inputs.alpha);
  const dt = inputs.x.dtype === 'int32' && inputs.alpha.dtype === 'int32' ? 'int32' : 'float32';
  return out(backend, cast(preluOf(x, alpha), dt), dt);
});

export const softmaxConfig = defineKernel('Softmax', ({ inputs, attrs, backend }) => {
  const x = requireFloat(backend.tensorOf(inputs.logits), 'softmax');
  const dim = attrs.dim as number;
  return out(backend, x.softmax(dim === undefined ? -1 : dim), 'float32');
});

export const configs: KernelConfig[] = [
  reluConfig,
  relu6Config,
  eluConfig,
  seluConfig,
  softplusConfig,
  leakyReluConfig,
  eluGradConfig,
  preluConfig,
  softmaxConfig,
];
