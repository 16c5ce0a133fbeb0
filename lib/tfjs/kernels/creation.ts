// Creation kernels of the residual tfjs backend: Fill, Range, LinSpace, ZerosLike, OnesLike, OneHot.
// Semantics follow tfjs-backend-cpu (Range and LinSpace accumulate in float32 as its loops do).
import { util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig } from '@tensorflow/tfjs-core';
import { code, defineKernel, fromTyped, op, sc, torchDtype } from './util.js';

export const fillConfig = defineKernel('Fill', ({ attrs, backend }) => {
  const shape = attrs.shape as number[];
  const value = attrs.value as number | string;
  const dtype = (attrs.dtype as DataType | undefined) ?? util.inferDtype(value);
  if (dtype === 'string') {
    const s = util.encodeString(value as string);
    return backend.outputStrings(new Array(util.sizeFromShape(shape)).fill(s), shape);
  }
  return backend.output(op('full', shape, Number(value), code(torchDtype(dtype)), backend.device), dtype);
});

export const rangeConfig = defineKernel('Range', ({ attrs, backend }) => {
  const { start, stop, step, dtype } = attrs as unknown as { start: number; stop: number; step: number; dtype: 'float32' | 'int32' };
  // As the cpu backend's rangeImpl: empty when start == stop or the step points away from stop (a step
  // of 1 from a larger start counts down).
  let n = 0;
  let effStep = step;
  if (!(start === stop || (start < stop && step < 0) || (stop < start && step > 1))) {
    n = Math.abs(Math.ceil((stop - start) / step));
    if (stop < start && step === 1) effStep = -1;
  }
  const vals = dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
  if (n > 0) {
    vals[0] = start;
    for (let i = 1; i < n; i++) vals[i] = vals[i - 1] + effStep;
  }
  return backend.output(fromTyped(vals, [n], dtype, backend.device), dtype);
});

export const linSpaceConfig = defineKernel('LinSpace', ({ attrs, backend }) => {
  const { start, stop, num } = attrs as unknown as { start: number; stop: number; num: number };
  // As the cpu backend: each value is the previous one plus the step, in float32.
  const vals = new Float32Array(num);
  if (num > 0) {
    const step = (stop - start) / (num - 1);
    vals[0] = start;
    for (let i = 1; i < num; i++) vals[i] = vals[i - 1] + step;
  }
  return backend.output(fromTyped(vals, [num], 'float32', backend.device), 'float32');
});

export const zerosLikeConfig = defineKernel('ZerosLike', ({ inputs, backend }) => {
  const x = inputs.x;
  if (x.dtype === 'string') throw new Error('ZerosLike: string tensors are not supported');
  return backend.output(op('zerosLike', backend.tensorOf(x)), x.dtype);
});
export const onesLikeConfig = defineKernel('OnesLike', ({ inputs, backend }) => {
  const x = inputs.x;
  if (x.dtype === 'string') throw new Error('OnesLike: string tensors are not supported');
  const t = backend.tensorOf(x);
  if (x.dtype === 'complex64') return backend.output(op('stack', [op('onesLike', t.select(-1, 0)), op('zerosLike', t.select(-1, 1))], -1), x.dtype);
  return backend.output(op('onesLike', t), x.dtype);
});

export const oneHotConfig = defineKernel('OneHot', ({ inputs, attrs, backend }) => {
  const indices = inputs.indices;
  const depth = attrs.depth as number;
  const onValue = attrs.onValue as number;
  const offValue = attrs.offValue as number;
  const dtype = (attrs.dtype as DataType | undefined) ?? 'int32';
  const idx = backend.tensorOf(indices).to('int64').unsqueeze(-1);
  const range = op('arange', 0, depth, 1, code('int64'), backend.device);
  const hit = op('eq', idx, range);
  const f = op('where', hit, sc(onValue), sc(offValue));
  return backend.output(f.to('float32'), dtype);
});


export const configs: KernelConfig[] = [fillConfig, rangeConfig, linSpaceConfig, zerosLikeConfig, onesLikeConfig, oneHotConfig];
