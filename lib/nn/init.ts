// Weight initialisers, as torch.nn.init: same fans, same gains, same generator calls (so after
// manualSeed(s) they produce the same numbers as PyTorch). Each fills its tensor in place without
// recording gradients and returns it.
import { ShapeError } from '../core/errors.js';
import { noGrad } from '../autograd/index.js';
import type { Tensor } from '../tensor/tensor.js';

export type Nonlinearity =
  | 'linear'
  | 'conv1d'
  | 'conv2d'
  | 'conv3d'
  | 'conv_transpose1d'
  | 'conv_transpose2d'
  | 'conv_transpose3d'
  | 'sigmoid'
  | 'tanh'
  | 'relu'
  | 'leaky_relu'
  | 'selu';
export type FanMode = 'fanIn' | 'fanOut' | 'fan_in' | 'fan_out';

/** The recommended gain for a nonlinearity (torch.nn.init.calculate_gain). */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear':
    case 'conv1d':
    case 'conv2d':
    case 'conv3d':
    case 'conv_transpose1d':
    case 'conv_transpose2d':
    case 'conv_transpose3d':
    case 'sigmoid':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leaky_relu': {
      const slope = param ?? 0.01;
      if (typeof slope !== 'number' || !Number.isFinite(slope))
        throw new TypeError(`calculateGain: negative slope ${String(slope)} is not a number`);
      return Math.sqrt(2 / (1 + slope * slope));
    }
    case 'selu':
      return 3 / 4;
    default:
      throw new TypeError(`calculateGain: unsupported nonlinearity '${String(nonlinearity)}'`);
  }
}

/** fanIn = size(1) x receptive field, fanOut = size(0) x receptive field; needs at least 2 dims. */
export function calculateFanInAndFanOut(t: Tensor): { fanIn: number; fanOut: number } {
  const s = t.shape;
  if (s.length < 2)
    throw new ShapeError(`fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions (shape [${s.join(', ')}])`);
  let receptive = 1;
  for (let i = 2; i < s.length; i++) receptive *= s[i];
  return { fanIn: s[1] * receptive, fanOut: s[0] * receptive };
}

function fan(t: Tensor, mode: FanMode): number {
  const { fanIn, fanOut } = calculateFanInAndFanOut(t);
  if (mode === 'fanIn' || mode === 'fan_in') return fanIn;
  if (mode === 'fanOut' || mode === 'fan_out') return fanOut;
  throw new TypeError(`init: mode must be 'fanIn' or 'fanOut', got '${String(mode)}'`);
}

export function uniform_(t: Tensor, a = 0, b = 1): Tensor {
  return noGrad(() => t.uniform_(a, b));
}
export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  return noGrad(() => t.normal_(mean, std));
}
export function constant_(t: Tensor, value: number): Tensor {
  return noGrad(() => t.fill_(value));
}
export function zeros_(t: Tensor): Tensor {
  return noGrad(() => t.zero_());
}
export function ones_(t: Tensor): Tensor {
  return noGrad(() => t.fill_(1));
}

export interface KaimingOptions {
  /** Negative slope of the rectifier after this layer (only used with 'leaky_relu'). */
  a?: number;
  mode?: FanMode;
  nonlinearity?: Nonlinearity;
}

/** He et al. 2015 uniform: U(-b, b) with b = gain * sqrt(3 / fan). Defaults as PyTorch: a=0, fanIn, leaky_relu. */
export function kaimingUniform_(t: Tensor, o: KaimingOptions = {}): Tensor {
  const std = calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan(t, o.mode ?? 'fanIn'));
  const bound = Math.sqrt(3) * std;
  return noGrad(() => t.uniform_(-bound, bound));
}
/** He et al. 2015 normal: N(0, std^2) with std = gain / sqrt(fan). */
export function kaimingNormal_(t: Tensor, o: KaimingOptions = {}): Tensor {
  const std = calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan(t, o.mode ?? 'fanIn'));
  return noGrad(() => t.normal_(0, std));
}
/** Glorot & Bengio 2010 uniform: U(-a, a) with a = gain * sqrt(6 / (fanIn + fanOut)). */
export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = calculateFanInAndFanOut(t);
  const std = gain * Math.sqrt(2 / (fanIn + fanOut));
  const a = Math.sqrt(3) * std;
  return noGrad(() => t.uniform_(-a, a));
}
export function xavierNormal_(t: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = calculateFanInAndFanOut(t);
  const std = gain * Math.sqrt(2 / (fanIn + fanOut));
  return noGrad(() => t.normal_(0, std));
}
