// Shared pieces of the residual tfjs kernels: defineKernel (scoped kernel bodies), calls into the native
// op table, outputs, tensors from JS values, dtype checks, layout (NHWC <-> NCHW views), TF padding.
import { constants as bufferConstants } from 'node:buffer';
import v8 from 'node:v8';
import { backend_util } from '@tensorflow/tfjs-core';
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

// ---- output sizes ----
//
// A kernel whose output size comes from an argument (an attribute such as OneHot's depth or Fill's shape,
// or the values of an input such as RaggedTensorToTensor's partitions) computes that size and checks it
// here before it allocates anything, and so do kernels whose output or largest intermediate can grow past
// their inputs (broadcasting, outer products, padding, repeated gathers). One limit for every kernel:
//   - a numeric tensor holds at most MAX_TENSOR_BYTES bytes: 4 GiB by default (the largest ArrayBuffer
//     on Node 20, buffer.constants.MAX_LENGTH: tfjs reads every tensor back into one; Node 22 allows
//     larger ones, so 4 GiB is also a cap there), or RESIDUAL_TFJS_MAX_TENSOR_BYTES (an integer, at
//     most this Node's largest ArrayBuffer) read when the backend is imported;
//   - a string tensor lives in the JS heap as one Uint8Array per element: each element counts its bytes
//     plus STRING_ELEMENT_OVERHEAD (what V8 spends on a small Uint8Array), and a string tensor may take
//     at most a quarter of V8's heap limit (node --max-old-space-size), nor more than MAX_TENSOR_BYTES;
//     so may a JS array of numbers a kernel builds (8 bytes an element).
// A size past the limit is a RangeError that names the kernel, the shape and the bytes.

/** The default of MAX_TENSOR_BYTES: 4 GiB, or this Node's largest ArrayBuffer if smaller. */
const DEFAULT_TENSOR_BYTES = Math.min(bufferConstants.MAX_LENGTH, 2 ** 32);
function tensorByteLimit(): number {
  const v = typeof process !== 'undefined' ? process.env.RESIDUAL_TFJS_MAX_TENSOR_BYTES : undefined;
  if (v === undefined || v === '') return DEFAULT_TENSOR_BYTES;
  const n = Number(v);
  if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > bufferConstants.MAX_LENGTH)
    throw new RangeError(
      `RESIDUAL_TFJS_MAX_TENSOR_BYTES must be a whole number of bytes in [1, ${bufferConstants.MAX_LENGTH}] (this Node's largest ArrayBuffer), got ${JSON.stringify(v)}`,
    );
  return n;
}
/** The most bytes one numeric tensor of the residual tfjs backend holds (see above). */
export const MAX_TENSOR_BYTES: number = tensorByteLimit();
/** The JS heap bytes a string element costs beyond its own bytes (a Uint8Array and its buffer). */
export const STRING_ELEMENT_OVERHEAD = 256;
/** The most JS heap bytes one string tensor (or JS array a kernel builds) may take. */
export function maxHeapBytes(): number {
  return Math.min(MAX_TENSOR_BYTES, Math.floor(v8.getHeapStatistics().heap_size_limit / 4));
}

/** Bytes per element of the dtypes kernels allocate (tfjs dtypes and the libtorch ones used inside). */
const ELEMENT_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, float64: 8, int64: 8, uint8: 1 };

/** A byte count for messages: exact, with a binary unit when large. */
function fmtBytes(b: number): string {
  if (b < 1024) return `${b} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = b;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isSafeInteger(b) ? b : b.toExponential(3)} bytes (${v.toFixed(1)} ${units[u]})`;
}

/**
 * The element count of `shape` (a tensor of `dtype` that `kernel` is about to allocate: its output, or
 * the intermediate named by `what`), after checking that every dimension is a non-negative integer and
 * that the tensor fits the limit above. Throws a RangeError naming the kernel, the shape and the size.
 */
export function checkSize(
  kernel: string,
  shape: readonly number[],
  dtype: DataType | 'float64' | 'int64' | 'uint8',
  what = 'output',
): number {
  if (!Array.isArray(shape))
    throw new TypeError(
      `${kernel}: the ${what} shape must be an array of sizes, got ${typeof shape === 'object' ? JSON.stringify(shape) : String(shape)}`,
    );
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
      throw new RangeError(
        `${kernel}: the ${what} shape [${shape.map(String)}] has a dimension ${String(d)} that is not a non-negative integer`,
      );
  }
  if (shape.some((d) => d === 0)) return 0;
  let n = 1;
  for (const d of shape) n *= d;
  if (dtype === 'string') {
    checkStrings(kernel, n, 0, what, shape);
    return n;
  }
  const per = ELEMENT_BYTES[dtype];
  if (per === undefined) throw new TypeError(`${kernel}: unsupported dtype ${String(dtype)}`);
  const bytes = n * per;
  if (bytes > MAX_TENSOR_BYTES)
    throw new RangeError(
      `${kernel}: the ${what} [${shape}] (${dtype}) would hold ${n} elements, ${fmtBytes(bytes)}: more than one tensor of the residual ` +
        `backend may hold (${fmtBytes(MAX_TENSOR_BYTES)}; RESIDUAL_TFJS_MAX_TENSOR_BYTES sets the limit, up to the largest ArrayBuffer, which tfjs reads every tensor back into)`,
    );
  return n;
}
/**
 * checkSize of the shape `shapes` broadcast together (a kernel that broadcasts its inputs: [n, 1] with
 * [1, n] is n * n). Shapes that do not broadcast are tf's error (backend_util.assertAndGetBroadcastShape).
 */
export function checkBroadcast(
  kernel: string,
  dtype: DataType | 'float64' | 'int64' | 'uint8',
  ...shapes: (readonly number[])[]
): number[] {
  let shape = [...shapes[0]];
  for (const s of shapes.slice(1)) shape = backend_util.assertAndGetBroadcastShape(shape, [...s]);
  checkSize(kernel, shape, dtype);
  return shape;
}
/** checkSize for a tensor whose size is a product of factors (some possibly huge): the shape is the factors. */
export function checkCount(kernel: string, count: number, dtype: DataType | 'float64' | 'int64' | 'uint8', what = 'output'): number {
  return checkSize(kernel, [count], dtype, what);
}
/**
 * Checks a string tensor of `count` elements holding `dataBytes` bytes of string data in all against the
 * string limit (its JS heap footprint estimated as dataBytes + count * STRING_ELEMENT_OVERHEAD).
 */
export function checkStrings(kernel: string, count: number, dataBytes: number, what = 'output', shape?: readonly number[]): void {
  const foot = dataBytes + count * STRING_ELEMENT_OVERHEAD;
  const max = maxHeapBytes();
  if (foot > max)
    throw new RangeError(
      `${kernel}: the ${what} ${shape ? `[${shape}] ` : ''}string tensor would hold ${count} strings taking about ${fmtBytes(foot)} of the JS heap: ` +
        `more than a string tensor of the residual backend may take (${fmtBytes(max)}, a quarter of V8's heap limit; see node --max-old-space-size)`,
    );
}
/** Checks a JS array of `count` numbers (8 bytes each in the JS heap) that `kernel` is about to build. */
export function checkJsArray(kernel: string, count: number, what: string): void {
  const max = maxHeapBytes();
  if (!(count * 8 <= max))
    throw new RangeError(
      `${kernel}: the ${what} would hold ${count} numbers, ${fmtBytes(count * 8)} of the JS heap: more than a kernel of the residual backend may take (${fmtBytes(max)}, a quarter of V8's heap limit)`,
    );
}
/** Counts the strings a kernel builds one by one, refusing (before the next one is made) past the string limit. */
export class StringBudget {
  private count = 0;
  private bytes = 0;
  private readonly max = maxHeapBytes();
  constructor(
    private readonly kernel: string,
    private readonly what = 'output',
  ) {}
  /** Accounts for `k` more strings of `n` bytes in all (call it before making them). */
  add(n: number, k = 1): void {
    this.count += k;
    this.bytes += n;
    if (this.bytes + this.count * STRING_ELEMENT_OVERHEAD > this.max) checkStrings(this.kernel, this.count, this.bytes, this.what);
  }
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
/** The typed arrays kernels build values in. */
export type JsArray = Int32Array | Float32Array | Float64Array | Uint8Array;
/**
 * A zero-filled typed array of `n` elements of `d` over a SharedArrayBuffer, for an output computed in
 * JS: fromTyped() wraps it without a copy (a SharedArrayBuffer is never detached; the tensor keeps it
 * alive), so the output's values exist once. Check the size first (checkSize).
 */
export function sharedArray(d: 'int32' | 'float32' | 'float64' | 'bool', n: number): JsArray {
  switch (d) {
    case 'int32':
      return new Int32Array(new SharedArrayBuffer(4 * n));
    case 'float32':
      return new Float32Array(new SharedArrayBuffer(4 * n));
    case 'float64':
      return new Float64Array(new SharedArrayBuffer(8 * n));
    default:
      return new Uint8Array(new SharedArrayBuffer(n));
  }
}
/** A tensor on the backend's device from a JS typed array: copied, or shared when sharedArray() made it. */
export function fromTyped(vals: JsArray, shape: number[], d: DType, device: string): Tensor {
  const shared = typeof SharedArrayBuffer !== 'undefined' && vals.buffer instanceof SharedArrayBuffer;
  const t = wrapT(native.fromBuffer(vals, 0, shape, code(d), !shared));
  return device === 'cpu' ? t : t.to(device as 'cuda');
}
/** A new int32/float32 output from a JS typed array. */
export function fromJs(backend: ResidualBackend, vals: JsArray, shape: number[], dtype: 'int32' | 'float32' | 'bool'): TensorInfo {
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
export function tfPad(
  padding: 'same' | 'valid' | readonly [number, number],
  inSize: number,
  k: number,
  stride: number,
  dilation = 1,
): Pad1 {
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
