// Reduction and scan kernels of the residual tfjs backend: Sum, Prod, Mean, Max, Min, All, Any, ArgMax,
// ArgMin, Cumsum, Cumprod. Semantics follow tfjs-backend-cpu: output dtypes (bool sums to int32), NaN
// handling of ArgMax/ArgMin.
import { upcastType, util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { code, defineKernel, notComplex, op, sc, type Tensor } from './util.js';

function f32(t: Tensor): Tensor {
  return t.dtype === 'float32' ? t : t.to('float32');
}

// ---- reductions ----

interface Reduced {
  x: Tensor;
  axes: number[];
}
function axesOf(xi: TensorInfo, axis: unknown): number[] {
  return util.parseAxisParam((axis ?? null) as number | number[], xi.shape);
}
/** Moves `axes` to the end and flattens them into one (for single-dimension libtorch reductions). */
function flattenAxes(x: Tensor, shape: number[], axes: number[]): Tensor {
  const keep = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const perm = [...keep, ...axes];
  const p = x.permute(perm);
  return p.reshape([...keep.map((i) => shape[i]), -1]);
}
function keepShape(shape: number[], axes: number[]): number[] {
  return shape.map((s, i) => (axes.includes(i) ? 1 : s));
}
function reduction(
  name: string,
  axisAttr: string,
  f: (r: Reduced, xi: TensorInfo) => Tensor,
  dtype: (xi: TensorInfo) => DataType,
): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }) => {
    const xi = inputs.x;
    const axes = axesOf(xi, attrs[axisAttr]);
    const keepDims = !!attrs.keepDims;
    const x = backend.tensorOf(xi);
    const outDtype = dtype(xi);
    if (axes.length === 0) return backend.output(x.clone(), outDtype);
    let y = f({ x, axes }, xi);
    const outShape = keepDims ? keepShape(xi.shape, axes) : xi.shape.filter((_, i) => !axes.includes(i));
    if (outDtype === 'complex64') outShape.push(2);
    y = y.reshape(outShape);
    return backend.output(y, outDtype);
  });
}
const intOrFloat = (xi: TensorInfo): DataType => (xi.dtype === 'complex64' ? 'complex64' : upcastType(xi.dtype, 'int32'));

export const sumConfig = reduction(
  'Sum',
  'axis',
  ({ x, axes }, xi) => {
    if (xi.dtype === 'complex64') return op('sum', x, axes, false, undefined);
    // int32 and bool sum to int32 (tf wraps modulo 2^32 as an int32 accumulation does): asking libtorch for
    // an int32 result reads the input as it is, where its default (int64) would first copy it to int64.
    return op('sum', x, axes, false, x.dtype === 'int32' || x.dtype === 'bool' ? code('int32') : undefined);
  },
  intOrFloat,
);
export const prodConfig = reduction(
  'Prod',
  'axis',
  ({ x, axes }, xi) => {
    notComplex('Prod', xi);
    const v = x.dtype === 'bool' ? x.to('int32') : x;
    return op('prod', flattenAxes(v, xi.shape, axes), -1, false);
  },
  intOrFloat,
);
export const meanConfig = reduction(
  'Mean',
  'axis',
  ({ x, axes }, xi) => {
    notComplex('Mean', xi);
    return op('mean', f32(x), axes, false, undefined);
  },
  () => 'float32',
);
export const maxConfig = reduction(
  'Max',
  'reductionIndices',
  ({ x, axes }, xi) => {
    notComplex('Max', xi);
    return op('amax', x.dtype === 'bool' ? x.to('uint8') : x, axes, false);
  },
  (xi) => xi.dtype,
);
export const minConfig = reduction(
  'Min',
  'axis',
  ({ x, axes }, xi) => {
    notComplex('Min', xi);
    return op('amin', x.dtype === 'bool' ? x.to('uint8') : x, axes, false);
  },
  (xi) => xi.dtype,
);
export const allConfig = reduction(
  'All',
  'axis',
  ({ x, axes }, xi) => op('allDim', flattenAxes(x, xi.shape, axes), -1, false),
  () => 'bool',
);
export const anyConfig = reduction(
  'Any',
  'axis',
  ({ x, axes }, xi) => op('anyDim', flattenAxes(x, xi.shape, axes), -1, false),
  () => 'bool',
);

function argReduce(name: string, nativeName: 'argmax' | 'argmin'): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }) => {
    const xi = inputs.x;
    notComplex(name, xi);
    const axes = axesOf(xi, attrs.axis);
    if (axes.length !== 1) throw new Error(`${name}: expected one axis, got [${axes}]`);
    let x = backend.tensorOf(xi);
    if (x.dtype === 'bool') x = x.to('uint8');
    if (x.dtype !== 'float32') return backend.output(op(nativeName, x, axes[0], false), 'int32');
    // As the cpu backend: NaNs never win (a strict comparison against the running best), except a NaN
    // in the first position, which no later value replaces.
    const fillV = nativeName === 'argmax' ? -Infinity : Infinity;
    const nan = op('isnan', x);
    const idx = op(nativeName, op('where', nan, sc(fillV), x), axes[0], false);
    const firstNaN = nan.select(axes[0], 0);
    return backend.output(op('where', firstNaN, sc(0), idx), 'int32');
  });
}
export const argMaxConfig = argReduce('ArgMax', 'argmax');
export const argMinConfig = argReduce('ArgMin', 'argmin');

// ---- cumulative ----

function cumulative(name: string, nativeName: 'cumsum' | 'cumprod', identity: number): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }) => {
    const xi = inputs.x;
    notComplex(name, xi);
    const rank = xi.shape.length;
    let axis = attrs.axis as number;
    if (axis < 0) axis += rank;
    const exclusive = !!attrs.exclusive;
    const reverse = !!attrs.reverse;
    let x = backend.tensorOf(xi);
    if (x.dtype === 'bool') x = x.to('int32');
    if (reverse) x = x.flip([axis]);
    let y = op(nativeName, x, axis);
    const n = xi.shape[axis];
    if (exclusive && n > 0) {
      const firstShape = [...y.shape];
      firstShape[axis] = 1;
      const first = op('full', firstShape, identity, code(y.dtype), backend.device);
      y = op('cat', [first, y.narrow(axis, 0, n - 1)], axis);
    }
    if (reverse) y = y.flip([axis]);
    return backend.output(y, xi.dtype === 'bool' ? 'int32' : xi.dtype);
  });
}
export const cumsumConfig = cumulative('Cumsum', 'cumsum', 0);
export const cumprodConfig = cumulative('Cumprod', 'cumprod', 1);

export const configs: KernelConfig[] = [
  sumConfig,
  prodConfig,
  meanConfig,
  maxConfig,
  minConfig,
  allConfig,
  anyConfig,
  argMaxConfig,
  argMinConfig,
  cumsumConfig,
  cumprodConfig,
];
