// Complex-number kernels of the residual tfjs backend: Complex, Real, Imag, ComplexAbs. A complex64
// tensor is stored as float32 [..., 2] (real, imaginary): tf's interleaved layout (see backend.ts).
// Complex arithmetic is in math.ts, the FFTs in spectral.ts.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { defineKernel, op, type Tensor } from './util.js';

/** The real/imaginary parts of a complex64 storage tensor ([..., 2]). */
export function parts(t: Tensor): [Tensor, Tensor] {
  return [t.select(-1, 0), t.select(-1, 1)];
}
/** The complex64 storage tensor of real and imaginary parts. */
export function joinComplex(re: Tensor, im: Tensor): Tensor {
  return op('stack', [re, im], -1);
}

export const complexConfig = defineKernel('Complex', ({ inputs, backend }) => {
  const re = backend.tensorOf(inputs.real).to('float32');
  const im = backend.tensorOf(inputs.imag).to('float32');
  return backend.output(joinComplex(re, im), 'complex64');
});
export const realConfig = defineKernel('Real', ({ inputs, backend }) => {
  const x = inputs.input;
  const t = backend.tensorOf(x);
  return backend.output(x.dtype === 'complex64' ? t.select(-1, 0).contiguous() : t.to('float32').clone(), 'float32');
});
export const imagConfig = defineKernel('Imag', ({ inputs, backend }) => {
  const x = inputs.input;
  const t = backend.tensorOf(x);
  return backend.output(x.dtype === 'complex64' ? t.select(-1, 1).contiguous() : op('zerosLike', t.to('float32')), 'float32');
});
export const complexAbsConfig = defineKernel('ComplexAbs', ({ inputs, backend }) => {
  const t = backend.tensorOf(inputs.x).to('float64');
  const [re, im] = parts(t);
  // hypot in float64 (no overflow of the squares), rounded once to float32
  return backend.output(op('sqrt', op('add', op('mul', re, re), op('mul', im, im), 1)).to('float32'), 'float32');
});

export const configs: KernelConfig[] = [complexConfig, realConfig, imagConfig, complexAbsConfig];
