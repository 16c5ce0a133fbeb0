// Creation kernels of the residual tfjs backend: Fill, Range, LinSpace, ZerosLike, OnesLike, OneHot.
// Semantics follow tfjs-backend-cpu (Range and LinSpace accumulate in float32 as its loops do). The
// output size of Fill, Range, LinSpace and OneHot comes from their attributes: it is checked (checkSize)
// before anything is allocated, and nothing larger than the output is allocated on the way.
import { util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig } from '@tensorflow/tfjs-core';
import { checkCount, checkSize, checkStrings, code, defineKernel, fromTyped, op, scalarT, sharedArray, torchDtype } from './util.js';

export const fillConfig = defineKernel('Fill', ({ attrs, backend }) => {
  const shape = attrs.shape as number[];
  const value = attrs.value as number | string;
  const dtype = (attrs.dtype as DataType | undefined) ?? util.inferDtype(value);
  const n = checkSize('Fill', shape, dtype);
  if (dtype === 'string') {
    const s = util.encodeString(String(value));
    checkStrings('Fill', n, n * s.length, 'output', shape);
    return backend.outputStrings(new Array(n).fill(s), shape);
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
  checkCount('Range', n, dtype);
  const vals = sharedArray(dtype === 'int32' ? 'int32' : 'float32', n);
  if (n > 0) {
    vals[0] = start;
    for (let i = 1; i < n; i++) vals[i] = vals[i - 1] + effStep;
  }
  return backend.output(fromTyped(vals, [n], dtype, backend.device), dtype);
});

export const linSpaceConfig = defineKernel('LinSpace', ({ attrs, backend }) => {
  const { start, stop, num } = attrs as unknown as { start: number; stop: number; num: number };
  // As the cpu backend: each value is the previous one plus the step, in float32.
  checkCount('LinSpace', num, 'float32');
  const vals = sharedArray('float32', num);
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
  if (x.dtype === 'complex64')
    return backend.output(op('stack', [op('onesLike', t.select(-1, 0)), op('zerosLike', t.select(-1, 1))], -1), x.dtype);
  return backend.output(op('onesLike', t), x.dtype);
});

// OneHot, as the cpu backend: the output filled with the off value, then the on value at each valid index
// (0 <= index < depth; other rows stay off), built in place in the output's own memory (sharedArray): no
// intermediate besides the output and a copy of the indices. The values are stored as the float32
// computation before stored them: rounded to float32, then converted to the output dtype.
export const oneHotConfig = defineKernel('OneHot', ({ inputs, attrs, backend }) => {
  const indices = inputs.indices;
  const depth = attrs.depth as number;
  const dtype = (attrs.dtype as DataType | undefined) ?? 'int32';
  const shape = [...indices.shape, depth];
  const size = checkSize('OneHot', shape, dtype);
  const dt = torchDtype(dtype);
  if (dt !== 'float32' && dt !== 'int32' && dt !== 'bool') throw new TypeError(`OneHot: unsupported dtype ${dtype}`);
  const stored = (v: unknown): number => Number(scalarT(Number(v), 'float32', 'cpu').to(dt).item());
  const on = stored(attrs.onValue);
  const off = stored(attrs.offValue);
  const res = sharedArray(dt, size);
  if (off !== 0) res.fill(off);
  if (size > 0) {
    const idx = backend.readSync(indices.dataId) as ArrayLike<number>;
    for (let i = 0; i < idx.length; i++) {
      const v = Math.trunc(idx[i]);
      if (v >= 0 && v < depth) res[i * depth + v] = on;
    }
  }
  return backend.output(fromTyped(res, shape, dt, backend.device), dtype);
});

export const configs: KernelConfig[] = [fillConfig, rangeConfig, linSpaceConfig, zerosLikeConfig, onesLikeConfig, oneHotConfig];
