// Elementwise math kernels of the residual tfjs backend: binary arithmetic, comparisons and logical ops
// (broadcasting; complex64 where tf has it; string comparisons), unary functions, Cast and AddN.
// Semantics follow tfjs-backend-cpu (the reference): output dtypes, int32 flooring division, NaN
// handling. Reductions and scans are in reduce.ts.
import { backend_util, upcastType, util } from '@tensorflow/tfjs-core';
import type { DataType, KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../../addon/binding.js';
import { wrapT } from '../../tensor/tensor.js';
import { joinComplex, parts } from './complex.js';
import {
  checkBroadcast,
  checkSize,
  code,
  defineKernel,
  notComplex,
  op,
  sc,
  type KernelArgs,
  type ResidualBackend,
  type Tensor,
} from './util.js';

// ---- helpers ----

function input(b: ResidualBackend, i: TensorInfo): Tensor {
  return b.tensorOf(i);
}
function isComplex(...xs: TensorInfo[]): boolean {
  return xs.some((x) => x.dtype === 'complex64');
}
function f32(t: Tensor): Tensor {
  return t.dtype === 'float32' ? t : t.to('float32');
}
function f64(t: Tensor): Tensor {
  return t.dtype === 'float64' ? t : t.to('float64');
}

// ---- binary ----

type Binary = (a: Tensor, b: Tensor, ai: TensorInfo, bi: TensorInfo) => Tensor;
function binary(name: string, f: Binary, opts: { dtype?: DataType; complex?: Binary } = {}): KernelConfig {
  return defineKernel(name, ({ inputs, backend }: KernelArgs) => {
    const ai = inputs.a;
    const bi = inputs.b;
    // Broadcasting can make the output far larger than both inputs ([n, 1] with [1, n]): bounded first.
    const strings = ai.dtype === 'string' || bi.dtype === 'string';
    const outDtype = isComplex(ai, bi) ? 'complex64' : strings ? 'bool' : (opts.dtype ?? upcastType(ai.dtype, bi.dtype));
    checkSize(name, backend_util.assertAndGetBroadcastShape(ai.shape, bi.shape), outDtype);
    if (isComplex(ai, bi)) {
      if (!opts.complex) throw new Error(`${name}: complex64 tensors are not supported by this kernel`);
      const a = complexOf(backend, ai);
      const b = complexOf(backend, bi);
      return backend.output(opts.complex(a, b, ai, bi), 'complex64');
    }
    const dtype = opts.dtype ?? upcastType(ai.dtype, bi.dtype);
    if (ai.dtype === 'string' || bi.dtype === 'string') {
      const cmp = STRING_COMPARE[name];
      if (!cmp || ai.dtype !== bi.dtype) throw new Error(`${name}: string tensors are not supported by this kernel`);
      return backend.output(compareStrings(backend, ai, bi, cmp), 'bool');
    }
    return backend.output(f(input(backend, ai), input(backend, bi), ai, bi), dtype);
  });
}
// String comparisons (the cpu backend compares the decoded JS strings), broadcast through the element
// ids backend.tensorOf() gives string tensors.
const STRING_COMPARE: Record<string, (a: string, b: string) => boolean> = {
  Equal: (a, b) => a === b,
  NotEqual: (a, b) => a !== b,
  Less: (a, b) => a < b,
  LessEqual: (a, b) => a <= b,
  Greater: (a, b) => a > b,
  GreaterEqual: (a, b) => a >= b,
};
function compareStrings(backend: ResidualBackend, ai: TensorInfo, bi: TensorInfo, cmp: (a: string, b: string) => boolean): Tensor {
  const av = (backend.readSync(ai.dataId) as Uint8Array[]).map((v) => util.decodeString(v));
  const bv = (backend.readSync(bi.dataId) as Uint8Array[]).map((v) => util.decodeString(v));
  const ia = op('arange', 0, av.length, 1, code('int32'), 'cpu').reshape(ai.shape);
  const ib = op('arange', 0, bv.length, 1, code('int32'), 'cpu').reshape(bi.shape);
  const sum = op('add', ia, op('mul', ib, sc(0)), 1); // the broadcast shape
  const ea = ia.expand(sum.shape).contiguous().toTypedArray() as Int32Array;
  const eb = ib.expand(sum.shape).contiguous().toTypedArray() as Int32Array;
  const out = new Uint8Array(ea.length);
  for (let i = 0; i < out.length; i++) out[i] = cmp(av[ea[i]], bv[eb[i]]) ? 1 : 0;
  const r = wrapT(native.fromBuffer(out, 0, sum.shape, code('bool'), true));
  return backend.device === 'cpu' ? r : r.to(backend.device as 'cuda');
}

/** A complex64 view of an operand (real operands get a zero imaginary part). */
function complexOf(b: ResidualBackend, i: TensorInfo): Tensor {
  const t = b.tensorOf(i);
  if (i.dtype === 'complex64') return t;
  const re = f32(t);
  return joinComplex(re, op('zerosLike', re));
}

const add: Binary = (a, b) => (a.dtype === 'bool' && b.dtype === 'bool' ? op('add', a.to('int32'), b.to('int32'), 1) : op('add', a, b, 1));
const sub: Binary = (a, b) => (a.dtype === 'bool' || b.dtype === 'bool' ? op('sub', a.to('int32'), b.to('int32'), 1) : op('sub', a, b, 1));
const mul: Binary = (a, b) => (a.dtype === 'bool' && b.dtype === 'bool' ? op('mul', a.to('int32'), b.to('int32')) : op('mul', a, b));
const complexMul: Binary = (a, b) => {
  const [ar, ai] = parts(a);
  const [br, bi] = parts(b);
  return joinComplex(op('sub', op('mul', ar, br), op('mul', ai, bi), 1), op('add', op('mul', ar, bi), op('mul', ai, br), 1));
};
const isInt = (t: Tensor): boolean => t.dtype === 'int32' || t.dtype === 'bool';

/** tf's FloorDiv: floor(a / b); for int32, division by zero gives 0 (as the cpu backend's Int32Array). */
const floorDiv: Binary = (a, b) => {
  if (isInt(a) && isInt(b)) {
    const ai = a.to('int32');
    const bi = b.to('int32');
    const zero = op('eq', bi, sc(0));
    const safe = op('where', zero, sc(1), bi);
    // int32 floor division in float64 (exact for every int32 pair; never traps on MIN / -1).
    const q = op('floor', op('div', f64(ai), f64(safe), null)).to('int32');
    return op('where', zero, sc(0), q);
  }
  return op('floor', op('div', f32(a), f32(b), null));
};
/** The cpu backend's mod: the remainder with the sign of the divisor. */
const mod: Binary = (a, b) => {
  if (isInt(a) && isInt(b)) {
    const ai = f64(a);
    const bi = f64(b);
    const r = modFloat(ai, bi);
    return op('where', op('eq', bi, sc(0)), sc(0), op('where', op('isnan', r), sc(0), r)).to('int32');
  }
  return modFloat(f32(a), f32(b));
};
function modFloat(a: Tensor, b: Tensor): Tensor {
  const r = op('fmod', a, b);
  const same = op(
    'logicalOr',
    op('logicalAnd', op('lt', a, sc(0)), op('lt', b, sc(0))),
    op('logicalAnd', op('ge', a, sc(0)), op('ge', b, sc(0))),
  );
  return op('where', same, r, op('fmod', op('add', r, b, 1), b));
}
const pow: Binary = (a, b) => {
  if (isInt(a) && isInt(b)) return op('pow', f64(a), f64(b));
  return op('pow', f32(a), f32(b));
};
const realDiv: Binary = (a, b) => op('div', f32(a), f32(b), null);
const squaredDifference: Binary = (a, b) => {
  const d = isInt(a) && isInt(b) ? op('sub', a.to('int32'), b.to('int32'), 1) : op('sub', f32(a), f32(b), 1);
  return op('mul', d, d);
};
const maximum: Binary = (a, b) => (a.dtype === 'bool' && b.dtype === 'bool' ? op('logicalOr', a, b) : op('maximum', a, b));
const minimum: Binary = (a, b) => (a.dtype === 'bool' && b.dtype === 'bool' ? op('logicalAnd', a, b) : op('minimum', a, b));

const binaries: KernelConfig[] = [
  binary('Add', add, { complex: (a, b) => op('add', a, b, 1) }),
  binary('Sub', sub, { complex: (a, b) => op('sub', a, b, 1) }),
  binary('Multiply', mul, { complex: complexMul }),
  binary('RealDiv', realDiv),
  binary('FloorDiv', floorDiv),
  binary('Mod', mod),
  binary('Pow', pow),
  binary('Maximum', maximum),
  binary('Minimum', minimum),
  binary('SquaredDifference', squaredDifference),
  binary('Atan2', (a, b) => op('atan2', f32(a), f32(b))),
  binary('Equal', (a, b) => op('eq', a, b), { dtype: 'bool' }),
  binary('NotEqual', (a, b) => op('ne', a, b), { dtype: 'bool' }),
  binary('Less', (a, b) => op('lt', a, b), { dtype: 'bool' }),
  binary('LessEqual', (a, b) => op('le', a, b), { dtype: 'bool' }),
  binary('Greater', (a, b) => op('gt', a, b), { dtype: 'bool' }),
  binary('GreaterEqual', (a, b) => op('ge', a, b), { dtype: 'bool' }),
  binary('LogicalAnd', (a, b) => op('logicalAnd', a, b), { dtype: 'bool' }),
  binary('LogicalOr', (a, b) => op('logicalOr', a, b), { dtype: 'bool' }),
  binary('BitwiseAnd', (a, b) => op('bitwiseAnd', a, b)),
];

// ---- unary ----

type Unary = (x: Tensor, attrs: Record<string, unknown>) => Tensor;
/**
 * A unary kernel. `dtype`: the output dtype (default: the input's, as the cpu backend); `float`: the
 * computation runs on float32 (ints are converted first).
 */
function unary(name: string, f: Unary, opts: { dtype?: DataType; float?: boolean } = {}): KernelConfig {
  return defineKernel(name, ({ inputs, attrs, backend }: KernelArgs) => {
    const xi = inputs.x;
    notComplex(name, xi);
    let x = input(backend, xi);
    if (opts.float !== false && x.dtype !== 'float32') x = x.to('float32');
    return backend.output(f(x, attrs as Record<string, unknown>), opts.dtype ?? xi.dtype);
  });
}
const F = (name: string, f: Unary, dtype?: DataType): KernelConfig => unary(name, f, { dtype });
const K = (name: string, f: Unary, dtype?: DataType): KernelConfig => unary(name, f, { dtype, float: false });

const unaries: KernelConfig[] = [
  F('Acos', (x) => op('acos', x)),
  F('Acosh', (x) => op('acosh', x)),
  F('Asin', (x) => op('asin', x)),
  F('Asinh', (x) => op('asinh', x)),
  F('Atan', (x) => op('atan', x)),
  F('Atanh', (x) => op('atanh', x)),
  K('Ceil', (x) => (x.dtype === 'float32' ? op('ceil', x) : x.to('int32'))), // integers are already whole
  F('Cos', (x) => op('cos', x)),
  F('Cosh', (x) => op('cosh', x)),
  F('Erf', (x) => op('erf', x)),
  F('Exp', (x) => op('exp', x), 'float32'),
  F('Expm1', (x) => op('expm1', x)),
  K('Floor', (x) => (x.dtype === 'float32' ? op('floor', x) : x.to('int32'))), // integers are already whole
  F('IsFinite', (x) => op('isfinite', x), 'bool'),
  F('IsInf', (x) => op('isinf', x), 'bool'),
  F('IsNan', (x) => op('isnan', x), 'bool'),
  F('Log', (x) => op('log', x)),
  F('Log1p', (x) => op('log1p', x)),
  K('LogicalNot', (x) => op('logicalNot', x), 'bool'),
  K('Neg', (x) => (x.dtype === 'bool' ? op('neg', x.to('int32')) : op('neg', x))),
  F('Reciprocal', (x) => op('reciprocal', x)),
  K('Round', (x) => (x.dtype === 'float32' ? op('round', x) : x.to('int32'))), // integers are already whole
  F('Rsqrt', (x) => op('rsqrt', x)),
  F('Sigmoid', (x) => op('sigmoid', x)),
  // cpu: -1 / 0 / 1, and 0 for NaN
  K('Sign', (x) =>
    x.dtype === 'bool' ? x.to('int32') : op('where', op('gt', x, sc(0)), sc(1), op('where', op('lt', x, sc(0)), sc(-1), sc(0))).to(x.dtype),
  ),
  F('Sin', (x) => op('sin', x)),
  F('Sinh', (x) => op('sinh', x)),
  F('Sqrt', (x) => op('sqrt', x)),
  K('Square', (x) => (x.dtype === 'bool' ? x.clone() : op('mul', x, x))),
  F('Step', (x, a) => {
    const alpha = (a.alpha as number | undefined) ?? 0;
    return op('where', op('isnan', x), x, op('where', op('gt', x, sc(0)), sc(1), sc(alpha)).to('float32'));
  }),
  F('Tan', (x) => op('tan', x)),
  F('Tanh', (x) => op('tanh', x)),
  K('Abs', (x) => (x.dtype === 'bool' ? x.clone() : op('abs', x))),
  K('ClipByValue', (x, a) => {
    const lo = a.clipValueMin as number;
    const hi = a.clipValueMax as number;
    const y = x.dtype === 'float32' ? x : x.to('float32');
    return op('clamp', y, lo, hi);
  }),
];

// ---- casts ----

export const castConfig = defineKernel('Cast', ({ inputs, attrs, backend }) => {
  const xi = inputs.x;
  const to = attrs.dtype as DataType;
  const x = backend.tensorOf(xi);
  if (to === xi.dtype) return backend.output(x.clone(), to);
  if (xi.dtype === 'complex64') {
    // The real part, cast (as the cpu backend).
    const re = x.select(-1, 0);
    if (to === 'bool') return backend.output(op('ne', re, sc(0)), 'bool');
    return backend.output(to === 'int32' ? re.to('int32') : re.contiguous(), to === 'int32' ? 'int32' : 'float32');
  }
  if (to === 'complex64') {
    const re = f32(x);
    return backend.output(joinComplex(re, op('zerosLike', re)), 'complex64');
  }
  if (to === 'bool') return backend.output(op('ne', x, sc(0)), 'bool');
  if (to === 'int32') return backend.output(x.to('int32'), 'int32');
  if (to === 'float32') return backend.output(x.to('float32'), 'float32');
  throw new Error(`Cast: unsupported dtype ${to}`);
});

// ---- AddN ----

export const addNConfig = defineKernel('AddN', ({ inputs, backend }) => {
  const list = inputs as unknown as TensorInfo[];
  const dtype = list.map((t) => t.dtype).reduce((a, b) => upcastType(a, b));
  checkBroadcast('AddN', dtype, ...list.map((t) => t.shape));
  let acc = backend.tensorOf(list[0]);
  if (acc.dtype === 'bool') acc = acc.to('int32');
  acc = acc.clone();
  for (let i = 1; i < list.length; i++) {
    let t = backend.tensorOf(list[i]);
    if (t.dtype === 'bool') t = t.to('int32');
    acc = op('add', acc, t, 1);
  }
  return backend.output(acc, dtype);
});

export const configs: KernelConfig[] = [...binaries, ...unaries, castConfig, addNConfig];
