// Spectral kernels of the residual tfjs backend: FFT and IFFT over the innermost dimension of a
// complex64 tensor (libtorch's FFT on tf's interleaved [..., 2] storage).
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { defineKernel, op } from './util.js';

function fft(name: string, inverse: boolean): KernelConfig {
  return defineKernel(name, ({ inputs, backend }) => {
    const x = inputs.input;
    if (x.dtype !== 'complex64') throw new Error(`${name}: expected a complex64 input, got ${x.dtype}`);
    return backend.output(op('fftInterleaved', backend.tensorOf(x), inverse), 'complex64');
  });
}
export const fftConfig = fft('FFT', false);
export const ifftConfig = fft('IFFT', true);

export const configs: KernelConfig[] = [fftConfig, ifftConfig];
