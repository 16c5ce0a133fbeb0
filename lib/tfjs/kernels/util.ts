// Shared pieces of the residual tfjs kernels: defineKernel (scoped kernel bodies), calls into the native
// op table, outputs, tensors from JS values, dtype checks, layout (NHWC <-> NCHW views), TF padding.
import type { DataType, KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { native, type Boxed, type Handle, type NativeBinding } from '../../addon/binding.js';
import { dtypeCode, type DType } from '../../tensor/dtype.js';
import { scope } from '../../tensor/scope.js';
import { Tensor, hOf, wrapT } from '../../tensor/tensor.js';
import { BACKEND_NAME, type ResidualBackend } from '../backend.js';

export type { ResidualBackend };
export { Tensor };

export interface KernelArgs {
  /** The kernel's named inputs (tfjs passes a list for list kernels such as Concat: cast). */
  inputs: Record<string, TensorInfo>;
  attrs: NamedAttrMap;
  backend: ResidualBackend;
}
export type KernelBody = (args: KernelArgs) => TensorInfo | TensorInfo[];

/**
 * A kernel of the `residual` backend. `fn` runs inside a residual scope: every residual tensor it
 * creates is freed when it returns, except the ones it registers with backend.output().
 */
export function defineKernel(kernelName: string, fn: KernelBody): KernelConfig {
  return {
    kernelName,
    backendName: BACKEND_NAME,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const b = backend as ResidualBackend;
      return b.runKernel(() => fn({ inputs: inputs as Record<string, TensorInfo>, attrs: attrs ?? {}, backend: b }), scope);
    },
  };
}

// ---- native calls ----

// The funnel's argument types are the binding's (lib/addon/binding.generated.ts, generated from the op
// table), with residual Tensors where the op takes native tensor handles: a wrong argument (order,
// type, count) is a compile error, as it is for Tensor's own calls.
type JsArg<P> = P extends Handle
  ? Tensor
  : P extends readonly Handle[]
    ? readonly Tensor[]
    : P extends readonly (Handle | null)[]
      ? readonly (Tensor | null)[]
      : P;
type JsArgs<A extends readonly unknown[]> = { [K in keyof A]: JsArg<A[K]> };
/** The names of the native functions that return R. */
type OpReturning<R> = { [K in keyof NativeBinding]: NativeBinding[K] extends (...a: never[]) => R ? K : never }[keyof NativeBinding];
/** The arguments op(name, ...) / opList(name, ...) take for the native function `name`. */
export type OpArgs<K extends keyof NativeBinding> = NativeBinding[K] extends (...a: infer A) => unknown ? JsArgs<A> : never;

function conv(a: unknown): unknown {
  if (a instanceof Tensor) return hOf(a);
  if (Array.isArray(a) && a.some((x) => x instanceof Tensor)) return a.map((t) => (t instanceof Tensor ? hOf(t) : t));
  return a === null ? undefined : a;
}

/** Calls a native op that returns one tensor; Tensor arguments become handles. */
export function op<K extends OpReturning<Handle>>(name: K, ...args: OpArgs<K>): Tensor {
  const f = native[name] as unknown as (...a: unknown[]) => Handle;
  return wrapT(f(...args.map(conv)));
}
/** Calls a native op that returns a list (or tuple) of tensors. */
export function opList<K extends OpReturning<readonly Handle[]>>(name: K, ...args: OpArgs<K>): Tensor[] {
  const f = native[name] as unknown as (...a: unknown[]) => readonly Handle[];
  return f(...args.map(conv)).map((h) => wrapT(h));
}
/** A scalar operand for ops that take a tensor or a number (TOS arguments): boxed as [value]. */
export function sc(v: number | boolean): Boxed {
  return [v];
}

// ---- outputs and tensors from JS values ----

/** The result as a tfjs output: contiguous (tfjs reads and reshapes it) and owned by a new dataId. */
export function out(backend: ResidualBackend, t: Tensor, dtype?: DataType): TensorInfo {
  if (!t.isContiguous()) t = t.contiguous();
  return backend.output(t, dtype);
}
/** A zero-filled float32 (or int32) output: the result of a kernel on empty inputs. */
export function zerosOut(backend: ResidualBackend, shape: number[], dtype: DataType = 'float32'): TensorInfo {
  return backend.output(op('zeros', shape, code(dtype === 'int32' ? 'int32' : 'float32'), backend.device), dtype);
}
/** A tensor on the backend's device from a JS typed array (copied). */
export function fromTyped(vals: Int32Array | Float32Array | Float64Array | Uint8Array, shape: number[], d: DType, device: string): Tensor {
  const t = wrapT(native.fromBuffer(vals, 0, shape, code(d), true));
  return device === 'cpu' ? t : t.to(device as 'cuda');
}
/** A new int32/float32 output from a JS typed array. */
export function fromJs(backend: ResidualBackend, vals: Int32Array | Float32Array, shape: number[], dtype: 'int32' | 'float32'): TensorInfo {
  return backend.output(fromTyped(vals, shape, dtype, backend.device), dtype);
}
/** An int64 tensor from JS numbers (indices); `shape` defaults to a vector. */
export function longT(values: ArrayLike<number>, device: string, shape: number[] = [values.length]): Tensor {
  const buf = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) buf[i] = BigInt(values[i]);
  const t = wrapT(native.fromBuffer(buf, 0, shape, code('int64'), true));
  return device === 'cpu' ? t : t.to(device as 'cuda');
}
/** The values of a (small) int32 input, read in JS. */
export function ints(backend: ResidualBackend, i: TensorInfo): Int32Array {
  return Int32Array.from(backend.readSync(i.dataId) as ArrayLike<number>);
}
/** The values of a (small) numeric input as JS numbers. */
export function numbersOf(backend: ResidualBackend, i: TensorInfo): number[] {
  return Array.from(backend.readSync(i.dataId) as ArrayLike<number>);
}
/** The storage shape of a tfjs shape (complex64 adds a trailing dimension of 2). */
export function storageShape(i: { dtype: DataType }, shape: readonly number[]): number[] {
  return i.dtype === 'complex64' ? [...shape, 2] : [...shape];
}

// ---- dtypes ----

/** The libtorch dtype a tfjs dtype is stored as. */
export function torchDtype(d: DataType): DType {
  switch (d) {
    case 'float32':
    case 'complex64':
      return 'float32';
    case 'int32':
    case 'string': // string elements travel as int32 ids (backend.tensorOf)
      return 'int32';
    case 'bool':
      return 'bool';
    default:
      throw new Error(`the residual backend does not compute on ${d} tensors`);
  }
}
/** Refuses complex64 inputs of kernel `name`. */
export function notComplex(name: string, ...xs: TensorInfo[]): void {
  if (xs.some((x) => x.dtype === 'complex64')) throw new Error(`${name}: complex64 tensors are not supported by this kernel`);
}
/** Refuses complex64 and string inputs of kernel `name`. */
export function notStringOrComplex(name: string, ...xs: TensorInfo[]): void {
  for (const x of xs) if (x.dtype === 'complex64' || x.dtype === 'string') throw new Error(`${name}: ${x.dtype} tensors are not supported`);
}
/** t as float32 (int32 and bool converted); other dtypes are refused, naming `what`. */
export function requireFloat(t: Tensor, what: string): Tensor {
  if (t.dtype === 'float32') return t;
  if (t.dtype === 'int32' || t.dtype === 'bool') return t.to('float32');
  throw new Error(`${what}: unsupported dtype ${t.dtype}`);
}
/** Code of a libtorch dtype for native calls. */
export function code(d: DType): number {
  return dtypeCode(d) as number;
}
/** A tensor converted to the storage dtype of a tfjs dtype (the same tensor when it already is). */
export function cast(t: Tensor, d: DataType | DType): Tensor {
  const want = d === 'complex64' ? 'float32' : (d as DType);
  return t.dtype === want ? t : t.to(want);
}
/** A new tensor with the given tfjs dtype's storage (a copy when it already is: safe to output). */
export function scalarT(v: number | boolean, d: DataType | DType, device: string): Tensor {
  return wrapT(native.scalarTensor(v, code(d === 'complex64' ? 'float32' : (d as DType)), device));
}

// ---- layout ----

/** NHWC (tf) -> NCHW (libtorch) as a permuted view, no copy. */
export function toNCHW(t: Tensor): Tensor {
  return t.permute(0, 3, 1, 2);
}
/** NCHW -> NHWC as a permuted view, no copy. */
export function fromNCHW(t: Tensor): Tensor {
  return t.permute(0, 2, 3, 1);
}
/** NDHWC -> NCDHW view. */
export function toNCDHW(t: Tensor): Tensor {
  return t.permute(0, 4, 1, 2, 3);
}
/** NCDHW -> NDHWC view. */
export function fromNCDHW(t: Tensor): Tensor {
  return t.permute(0, 2, 3, 4, 1);
}

// ---- TF padding ----

/** Padding before/after one spatial dimension. */
export interface Pad1 {
  before: number;
  after: number;
}
/**
 * TF's padding for one spatial dimension: 'valid' (none), 'same' (total = max((ceil(in/stride) - 1) *
 * stride + (k - 1) * dilation + 1 - in, 0), the odd one extra at the end), or explicit [before, after].
 */
export function tfPad(padding: 'same' | 'valid' | readonly [number, number], inSize: number, k: number, stride: number, dilation = 1): Pad1 {
  if (padding === 'valid') return { before: 0, after: 0 };
  if (padding === 'same') {
    const effK = (k - 1) * dilation + 1;
    const out = Math.ceil(inSize / stride);
    const total = Math.max((out - 1) * stride + effK - inSize, 0);
    const before = Math.floor(total / 2);
    return { before, after: total - before };
  }
  return { before: padding[0], after: padding[1] };
}
/** True when every dimension pads the same amount on both sides (libtorch's symmetric padding will do). */
export function isSymmetric(p: readonly Pad1[]): boolean {
  return p.every((x) => x.before === x.after);
}

/** tfjs's shape size. */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}
/** Normalizes (possibly negative) axes against a rank. */
export function normAxes(axis: number | readonly number[] | undefined | null, rank: number): number[] {
  if (axis === undefined || axis === null) return Array.from({ length: rank }, (_, i) => i);
  const a = typeof axis === 'number' ? [axis] : [...axis];
  return a.map((x) => (x < 0 ? x + rank : x));
}
