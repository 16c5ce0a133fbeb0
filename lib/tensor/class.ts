// The Tensor class: one native reference per Tensor, dropped by dispose() (or by the GC backstop of
// handles.ts); every method maps onto one native op (native/ops.cpp's table, typed by
// lib/addon/binding.generated.ts). Also the internal bridge between Tensors and native handles
// (wrapT, hOf, ...), which the rest of lib/ uses and the package does not export.
import { ShapeError } from '../core/errors.js';
import { native, type NativeHandle } from '../addon/binding.js';
import type { Device } from '../addon/native-types.js';
import { DTYPE_SIZE, dtypeCode, dtypeName, type DType, type TypedArray, typedArrayFor } from './dtype.js';
import { adopt, setHandleOwner } from './handles.js';
import { currentScope, setTrackedCheck } from './scope.js';

export type { Device } from '../addon/native-types.js';
export type Shape = readonly number[];
export type NestedArray = number | boolean | readonly NestedArray[];
export type Scalar = number | boolean;
/** How a 4-D tensor's elements are laid out: NCHW ('contiguous') or NHWC ('channelsLast'), as PyTorch's memory formats. */
export type MemoryFormat = 'contiguous' | 'channelsLast';
export type TensorLike = Tensor | Scalar;

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

const N = native;
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

// Tensors are branded: the native reference lives in a private field, so only real Tensor instances
// are accepted where a Tensor is expected (hOf below). An object with a numeric `_h`, or a Tensor
// posted to a worker_thread (structured clone copies no private fields: it arrives as a plain empty
// object), is refused with a TypeError on use instead of addressing some other tensor. (Natively, ids
// also carry their thread's tag, so a raw id from another thread is refused as well.)
let handleOf: (t: Tensor) => NativeHandle;
let isTensor: (v: unknown) => v is Tensor;

export class Tensor {
  /** The native reference; stays set after dispose so native reports use-after-dispose. */
  #h: NativeHandle;
  #disposed = false;

  static {
    handleOf = (t) => t.#h;
    isTensor = (v): v is Tensor => typeof v === 'object' && v !== null && #h in v;
    setHandleOwner({ handle: (t) => (t as Tensor).#h, disposed: (t) => (t as Tensor).#disposed });
  }

  /** @internal use the creation functions (tensor, zeros, ...) instead. */
  constructor(h: NativeHandle) {
    this.#h = h;
    adopt(this);
    const s = currentScope();
    if (s) s.add(this);
  }

  /** @internal the native reference (read-only). */
  get _h(): NativeHandle {
    return this.#h;
  }

  // ---- lifetime ----
  /** Drops this reference now; memory is freed when nothing else (views, autograd) holds it. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    N.dispose(this.#h);
  }
  get disposed(): boolean {
    return this.#disposed || !N.isAlive(this.#h);
  }

  // ---- properties ----
  get shape(): number[] {
    return N.shape(this.#h);
  }
  size(dim?: number): number | number[] {
    const s = this.shape;
    if (dim === undefined) return s;
    const d = dim < 0 ? dim + s.length : dim;
    if (!Number.isInteger(d) || d < 0 || d >= s.length)
      throw new ShapeError(`size: Dimension out of range (expected to be in range of [${-s.length}, ${s.length - 1}], but got ${dim})`);
    return s[d];
  }
  get ndim(): number {
    return N.dim(this.#h);
  }
  dim(): number {
    return N.dim(this.#h);
  }
  get dtype(): DType {
    return dtypeName(N.dtype(this.#h));
  }
  get device(): Device {
    return N.device(this.#h);
  }
  get isCuda(): boolean {
    return this.device.startsWith('cuda');
  }
  numel(): number {
    return N.numel(this.#h);
  }
  stride(): number[] {
    return N.strides(this.#h);
  }
  isContiguous(memoryFormat: MemoryFormat = 'contiguous'): boolean {
    return N.isContiguous(this.#h, memoryFormat === 'channelsLast');
  }
  /** Bytes of this tensor's elements (numel x element size). */
  get nbytes(): number {
    return this.numel() * DTYPE_SIZE[this.dtype];
  }

  // ---- conversion ----
  /**
   * The value of a one-element tensor. Decision for 64-bit integers: a value outside
   * +-Number.MAX_SAFE_INTEGER (2^53 - 1) is a RangeError, never a silently rounded number; use
   * itemBigInt() for such values.
   */
  item(): number | boolean {
    return N.item(this.#h);
  }
  /** The value of a one-element integer (or bool) tensor as an exact bigint. */
  itemBigInt(): bigint {
    return N.itemBigInt(this.#h);
  }
  /** A copy of the elements as a typed array (float16/bfloat16 come back as Float32Array). */
  toTypedArray(): TypedArray {
    let dt = this.dtype;
    if (dt === 'float16' || dt === 'bfloat16') {
      const f = this.to('float32');
      try {
        return f.toTypedArray();
      } finally {
        f.dispose();
      }
    }
    return typedArrayFor(dt, N.toBuffer(this.#h));
  }
  /**
   * Nested JS arrays (numbers, or booleans for bool tensors); a 0-d tensor gives its number. int64
   * values outside +-Number.MAX_SAFE_INTEGER are a RangeError (as item()); toTypedArray() gives them
   * exactly, in a BigInt64Array.
   */
  toArray(): NestedArray {
    const flat = this.toTypedArray();
    const isBool = this.dtype === 'bool';
    const conv = (x: number | bigint): number | boolean => {
      if (isBool) return x !== 0;
      if (typeof x === 'bigint' && (x > MAX_SAFE_BIG || x < -MAX_SAFE_BIG))
        throw new RangeError(
          `toArray: the int64 value ${x} is outside Number.MAX_SAFE_INTEGER (2^53 - 1) and cannot be a number exactly: use toTypedArray() (a BigInt64Array)`,
        );
      return Number(x);
    };
    const shape = this.shape;
    if (shape.length === 0) return conv(flat[0]);
    let pos = 0;
    const build = (d: number): NestedArray[] => {
      const n = shape[d];
      const out: NestedArray[] = new Array(n);
      if (d === shape.length - 1) {
        for (let i = 0; i < n; i++) out[i] = conv(flat[pos++]);
      } else {
        for (let i = 0; i < n; i++) out[i] = build(d + 1);
      }
      return out;
    };
    return build(0);
  }
  toString(): string {
    if (this.disposed) return 'Tensor(disposed)';
    const n = this.numel();
    const body = n <= 64 ? JSON.stringify(this.toArray()) : `[${n} elements]`;
    return `Tensor(${body}, shape=[${this.shape}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad=true' : ''})`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** to(device), to(dtype), or to({device, dtype, nonBlocking, copy}). */
  to(target: Device | DType | { device?: Device; dtype?: DType; nonBlocking?: boolean; copy?: boolean }): Tensor {
    let o: { device?: Device; dtype?: DType; nonBlocking?: boolean; copy?: boolean };
    if (typeof target === 'string') o = isDeviceString(target) ? { device: target as Device } : { dtype: target as DType };
    else o = target;
    return wrapT(N.to(this.#h, dtypeCode(o.dtype), o.device, !!o.nonBlocking, !!o.copy));
  }
  cpu(): Tensor {
    return this.to('cpu');
  }
  cuda(index = 0): Tensor {
    return this.to(`cuda:${index}`);
  }
  float(): Tensor {
    return this.to('float32');
  }
  double(): Tensor {
    return this.to('float64');
  }
  long(): Tensor {
    return this.to('int64');
  }
  contiguous(memoryFormat: MemoryFormat = 'contiguous'): Tensor {
    return memoryFormat === 'channelsLast' ? wrapT(N.toMemoryFormat(this.#h, true)) : wrapT(N.contiguous(this.#h));
  }
  pinMemory(): Tensor {
    return wrapT(N.pinMemory(this.#h));
  }
  clone(): Tensor {
    return wrapT(N.clone(this.#h));
  }
  detach(): Tensor {
    return wrapT(N.detach(this.#h));
  }
  detach_(): this {
    N.detach_(this.#h);
    return this;
  }

  // ---- autograd ----
  get requiresGrad(): boolean {
    return N.requiresGrad(this.#h);
  }
  set requiresGrad(v: boolean) {
    N.setRequiresGrad(this.#h, !!v);
  }
  requiresGrad_(v = true): this {
    N.setRequiresGrad(this.#h, !!v);
    return this;
  }
  get isLeaf(): boolean {
    return N.isLeaf(this.#h);
  }
  /** Name of the autograd node that produced this tensor, or null for leaves. */
  get gradFn(): string | null {
    return N.gradFn(this.#h);
  }
  /** The accumulated gradient (a new reference each read), or null. */
  get grad(): Tensor | null {
    const g = N.grad(this.#h);
    return g ? new Tensor(g) : null;
  }
  set grad(g: Tensor | null) {
    N.setGrad(this.#h, g ? hOf(g) : null);
  }
  retainGrad(): this {
    N.retainGrad(this.#h);
    return this;
  }
  backward(gradient?: Tensor, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    N.backward(this.#h, hOpt(gradient), opts.retainGraph ?? opts.createGraph ?? false, opts.createGraph ?? false);
  }

  // ---- views and shape ----
  reshape(...shape: (number | number[])[]): Tensor {
    return wrapT(N.reshape(this.#h, flatShape(shape)));
  }
  view(...shape: (number | number[])[]): Tensor {
    return wrapT(N.view(this.#h, flatShape(shape)));
  }
  permute(...dims: (number | number[])[]): Tensor {
    return wrapT(N.permute(this.#h, flatShape(dims)));
  }
  transpose(dim0: number, dim1: number): Tensor {
    return wrapT(N.transpose(this.#h, dim0, dim1));
  }
  /** 2-D transpose. */
  t(): Tensor {
    return this.transpose(0, 1);
  }
  flatten(startDim = 0, endDim = -1): Tensor {
    return wrapT(N.flatten(this.#h, startDim, endDim));
  }
  squeeze(dim?: number | number[]): Tensor {
    return wrapT(N.squeeze(this.#h, dim));
  }
  unsqueeze(dim: number): Tensor {
    return wrapT(N.unsqueeze(this.#h, dim));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return wrapT(N.narrow(this.#h, dim, start, length));
  }
  select(dim: number, index: number): Tensor {
    return wrapT(N.select(this.#h, dim, index));
  }
  /** slice(dim, start, end, step), as Python's t[..., start:end:step, ...] on one dim. */
  slice(dim: number, start?: number | null, end?: number | null, step = 1): Tensor {
    return wrapT(N.slice(this.#h, dim, start ?? undefined, end ?? undefined, step));
  }
  /**
   * Indexing like Python's t[i, a:b, idx]: each entry is a number (select), null (all), a
   * [start, end, step?] array (slice) or an int64 Tensor (index_select on that dim).
   */
  index(...idx: (number | null | [number | null, (number | null)?, number?] | Tensor)[]): Tensor {
    let cur: Tensor = this;
    let dim = 0;
    const temps: Tensor[] = [];
    try {
      for (const e of idx) {
        let next: Tensor;
        if (typeof e === 'number') next = cur.select(dim, e);
        else if (e === null) {
          dim++;
          continue;
        } else if (e instanceof Tensor) {
          next = e.dtype === 'bool' ? wrapT(N.indexTensors(hOf(cur), [...new Array(dim).fill(null), hOf(e)])) : cur.indexSelect(dim, e);
          dim++;
        } else if (Array.isArray(e)) {
          next = cur.slice(dim, e[0], e[1], e[2] ?? 1);
          dim++;
        } else throw new TypeError(`index: entry ${String(e)} is not a number, null, [start, end, step] or a Tensor`);
        if (cur !== this) temps.push(cur);
        cur = next;
      }
    } finally {
      for (const t of temps) t.dispose();
    }
    return cur === this ? this.view(this.shape) : cur;
  }
  indexSelect(dim: number, index: Tensor): Tensor {
    return wrapT(N.indexSelect(this.#h, dim, hOf(index)));
  }
  gather(dim: number, index: Tensor): Tensor {
    return wrapT(N.gather(this.#h, dim, hOf(index)));
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return wrapT(N.maskedFill(this.#h, hOf(mask), value));
  }
  expand(...shape: (number | number[])[]): Tensor {
    return wrapT(N.expand(this.#h, flatShape(shape)));
  }
  repeat(...reps: (number | number[])[]): Tensor {
    return wrapT(N.repeat(this.#h, flatShape(reps)));
  }
  flip(dims: number | number[]): Tensor {
    return wrapT(N.flip(this.#h, dims));
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return wrapList(N.chunk(this.#h, chunks, dim));
  }
  split(splitSize: number | number[], dim = 0): Tensor[] {
    return wrapList(typeof splitSize === 'number' ? N.split(this.#h, splitSize, dim) : N.splitWithSizes(this.#h, splitSize, dim));
  }

  // ---- elementwise math ----
  add(other: TensorLike, alpha = 1): Tensor {
    return wrapT(N.add(this.#h, h(other), alpha));
  }
  sub(other: TensorLike, alpha = 1): Tensor {
    return wrapT(N.sub(this.#h, h(other), alpha));
  }
  mul(other: TensorLike): Tensor {
    return wrapT(N.mul(this.#h, h(other)));
  }
  div(other: TensorLike, roundingMode?: 'trunc' | 'floor'): Tensor {
    return wrapT(N.div(this.#h, h(other), roundingMode));
  }
  pow(exponent: TensorLike): Tensor {
    return wrapT(N.pow(this.#h, h(exponent)));
  }
  neg(): Tensor {
    return wrapT(N.neg(this.#h));
  }
  sqrt(): Tensor {
    return wrapT(N.sqrt(this.#h));
  }
  rsqrt(): Tensor {
    return wrapT(N.rsqrt(this.#h));
  }
  exp(): Tensor {
    return wrapT(N.exp(this.#h));
  }
  log(): Tensor {
    return wrapT(N.log(this.#h));
  }
  abs(): Tensor {
    return wrapT(N.abs(this.#h));
  }
  sign(): Tensor {
    return wrapT(N.sign(this.#h));
  }
  floor(): Tensor {
    return wrapT(N.floor(this.#h));
  }
  ceil(): Tensor {
    return wrapT(N.ceil(this.#h));
  }
  round(): Tensor {
    return wrapT(N.round(this.#h));
  }
  sigmoid(): Tensor {
    return wrapT(N.sigmoid(this.#h));
  }
  tanh(): Tensor {
    return wrapT(N.tanh(this.#h));
  }
  reciprocal(): Tensor {
    return wrapT(N.reciprocal(this.#h));
  }
  relu(): Tensor {
    return wrapT(N.relu(this.#h));
  }
  clamp(min?: number | null, max?: number | null): Tensor {
    if ((min ?? null) === null && (max ?? null) === null) throw new TypeError('clamp: at least one of min and max must be given');
    return wrapT(N.clamp(this.#h, min ?? undefined, max ?? undefined));
  }
  maximum(other: Tensor): Tensor {
    return wrapT(N.maximum(this.#h, hOf(other)));
  }
  minimum(other: Tensor): Tensor {
    return wrapT(N.minimum(this.#h, hOf(other)));
  }
  lerp(end: Tensor, weight: number): Tensor {
    return wrapT(N.lerp(this.#h, hOf(end), weight));
  }

  // in place (return this)
  add_(other: TensorLike, alpha = 1): this {
    N.add_(this.#h, h(other), alpha);
    return this;
  }
  sub_(other: TensorLike, alpha = 1): this {
    N.sub_(this.#h, h(other), alpha);
    return this;
  }
  mul_(other: TensorLike): this {
    N.mul_(this.#h, h(other));
    return this;
  }
  div_(other: TensorLike, roundingMode?: 'trunc' | 'floor'): this {
    N.div_(this.#h, h(other), roundingMode);
    return this;
  }
  pow_(exponent: TensorLike): this {
    N.pow_(this.#h, h(exponent));
    return this;
  }
  neg_(): this {
    N.neg_(this.#h);
    return this;
  }
  sqrt_(): this {
    N.sqrt_(this.#h);
    return this;
  }
  exp_(): this {
    N.exp_(this.#h);
    return this;
  }
  log_(): this {
    N.log_(this.#h);
    return this;
  }
  abs_(): this {
    N.abs_(this.#h);
    return this;
  }
  clamp_(min?: number | null, max?: number | null): this {
    N.clamp_(this.#h, min ?? undefined, max ?? undefined);
    return this;
  }
  relu_(): this {
    N.relu_(this.#h);
    return this;
  }
  zero_(): this {
    N.zero_(this.#h);
    return this;
  }
  fill_(value: Scalar): this {
    N.fill_(this.#h, value);
    return this;
  }
  copy_(src: Tensor, nonBlocking = false): this {
    N.copy_(this.#h, hOf(src), nonBlocking);
    return this;
  }
  uniform_(from = 0, to = 1): this {
    N.uniform_(this.#h, from, to);
    return this;
  }
  normal_(mean = 0, std = 1): this {
    N.normal_(this.#h, mean, std);
    return this;
  }
  bernoulli_(p = 0.5): this {
    N.bernoulli_(this.#h, p);
    return this;
  }

  // ---- reductions ----
  sum(dim?: number | number[] | null, keepdim = false, dtype?: DType): Tensor {
    return wrapT(N.sum(this.#h, dim ?? undefined, keepdim, dtypeCode(dtype)));
  }
  mean(dim?: number | number[] | null, keepdim = false, dtype?: DType): Tensor {
    return wrapT(N.mean(this.#h, dim ?? undefined, keepdim, dtypeCode(dtype)));
  }
  prod(dim?: number, keepdim = false): Tensor {
    return wrapT(N.prod(this.#h, dim, keepdim));
  }
  /** max() over all elements, or max(dim) -> {values, indices}. */
  max(): Tensor;
  max(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  max(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return wrapT(N.maxAll(this.#h));
    const [values, indices] = wrapList(N.maxDim(this.#h, dim, keepdim));
    return { values, indices };
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  min(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return wrapT(N.minAll(this.#h));
    const [values, indices] = wrapList(N.minDim(this.#h, dim, keepdim));
    return { values, indices };
  }
  amax(dim: number | number[], keepdim = false): Tensor {
    return wrapT(N.amax(this.#h, dim, keepdim));
  }
  amin(dim: number | number[], keepdim = false): Tensor {
    return wrapT(N.amin(this.#h, dim, keepdim));
  }
  argmax(dim?: number, keepdim = false): Tensor {
    return wrapT(N.argmax(this.#h, dim, keepdim));
  }
  argmin(dim?: number, keepdim = false): Tensor {
    return wrapT(N.argmin(this.#h, dim, keepdim));
  }
  /** Variance; `correction` 1 (default) is the unbiased estimator, 0 the population one. */
  var(dim?: number | number[] | null, opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return wrapT(N.var(this.#h, dim ?? undefined, opts.correction ?? 1, opts.keepdim ?? false));
  }
  std(dim?: number | number[] | null, opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return wrapT(N.std(this.#h, dim ?? undefined, opts.correction ?? 1, opts.keepdim ?? false));
  }
  norm(p = 2, dim?: number | number[], keepdim = false): Tensor {
    return wrapT(N.norm(this.#h, p, dim, keepdim));
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor {
    return wrapT(N.logsumexp(this.#h, dim, keepdim));
  }
  all(): Tensor {
    return wrapT(N.all(this.#h));
  }
  any(): Tensor {
    return wrapT(N.any(this.#h));
  }
  topk(k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
    const [values, indices] = wrapList(N.topk(this.#h, k, dim, largest, sorted));
    return { values, indices };
  }
  sort(dim = -1, descending = false): { values: Tensor; indices: Tensor } {
    const [values, indices] = wrapList(N.sort(this.#h, dim, descending));
    return { values, indices };
  }
  cumsum(dim: number): Tensor {
    return wrapT(N.cumsum(this.#h, dim));
  }

  // ---- comparisons ----
  eq(other: TensorLike): Tensor {
    return wrapT(N.eq(this.#h, h(other)));
  }
  ne(other: TensorLike): Tensor {
    return wrapT(N.ne(this.#h, h(other)));
  }
  lt(other: TensorLike): Tensor {
    return wrapT(N.lt(this.#h, h(other)));
  }
  le(other: TensorLike): Tensor {
    return wrapT(N.le(this.#h, h(other)));
  }
  gt(other: TensorLike): Tensor {
    return wrapT(N.gt(this.#h, h(other)));
  }
  ge(other: TensorLike): Tensor {
    return wrapT(N.ge(this.#h, h(other)));
  }
  logicalNot(): Tensor {
    return wrapT(N.logicalNot(this.#h));
  }
  isnan(): Tensor {
    return wrapT(N.isnan(this.#h));
  }
  isfinite(): Tensor {
    return wrapT(N.isfinite(this.#h));
  }
  /** Same shape and elements. */
  equal(other: Tensor): boolean {
    return N.equal(this.#h, hOf(other));
  }
  allclose(other: Tensor, rtol = 1e-5, atol = 1e-8, equalNan = false): boolean {
    return N.allclose(this.#h, hOf(other), rtol, atol, equalNan);
  }

  // ---- linear algebra ----
  matmul(other: Tensor): Tensor {
    return wrapT(N.matmul(this.#h, hOf(other)));
  }
  mm(other: Tensor): Tensor {
    return wrapT(N.mm(this.#h, hOf(other)));
  }
  bmm(other: Tensor): Tensor {
    return wrapT(N.bmm(this.#h, hOf(other)));
  }

  // ---- nn shortcuts ----
  softmax(dim: number): Tensor {
    return wrapT(N.softmax(this.#h, dim));
  }
  logSoftmax(dim: number): Tensor {
    return wrapT(N.logSoftmax(this.#h, dim));
  }
}

setTrackedCheck((v: unknown): v is Tensor => v instanceof Tensor);

// ---- helpers ----

/** @internal */
export function wrapT(handle: NativeHandle): Tensor {
  return new Tensor(handle);
}
/** @internal */
export function wrapList(handles: NativeHandle[]): Tensor[] {
  return handles.map((x) => new Tensor(x));
}
/** @internal native argument for a tensor-or-scalar operand: scalars go boxed, as [value]. */
export function h(x: TensorLike): NativeHandle | [Scalar] {
  return typeof x === 'number' || typeof x === 'boolean' ? [x] : hOf(x);
}
/**
 * @internal The native reference of a Tensor; anything that is not a real Tensor instance (a plain
 * object with `_h`, a Tensor that went through postMessage/structuredClone) is a TypeError.
 */
export function hOf(t: Tensor): NativeHandle {
  if (isTensor(t)) return handleOf(t);
  throw notATensor(t);
}
/** @internal hOf, or undefined for null/undefined (optional tensor arguments). */
export function hOpt(t: Tensor | null | undefined): NativeHandle | undefined {
  return t === null || t === undefined ? undefined : hOf(t);
}
function notATensor(v: unknown): TypeError {
  const what = v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'a plain object' : typeof v;
  return new TypeError(
    `expected a Tensor, got ${what}. A Tensor belongs to the thread that made it: one sent with postMessage arrives as a plain object and cannot be used; send its data (toTypedArray() and shape) instead`,
  );
}
/** @internal */
export function isDeviceString(s: string): boolean {
  return s === 'cpu' || s === 'cuda' || /^cuda:\d+$/.test(s);
}
function flatShape(a: (number | number[] | readonly number[])[]): number[] {
  if (a.length === 1 && Array.isArray(a[0])) return [...(a[0] as number[])];
  return a as number[];
}
