// Tensor creation: from JS data (numbers, nested arrays, typed arrays, ArrayBuffers), filled (zeros,
// ones, full, arange, linspace, eye), random (rand, randn, randint, randperm) and *Like forms.
import { ShapeError } from '../core/errors.js';
import { native as N } from '../addon/binding.js';
import { DTYPE_SIZE, dtypeCode, dtypeOfTypedArray, type DType, type TypedArray } from './dtype.js';
import { hOf, wrapT, type NestedArray, type Scalar, type Shape, type Tensor, type TensorOptions } from './class.js';

function applyOpts(t: Tensor, o?: TensorOptions): Tensor {
  if (o?.requiresGrad) t.requiresGrad_(true);
  return t;
}

/**
 * A tensor from a number, (nested) arrays of numbers/booleans, or a typed array. Typed arrays are
 * copied unless {share: true}: then the tensor uses their memory without a copy (writes to either are
 * shared, like torch.from_numpy). Sharing needs a SharedArrayBuffer (a growable one is copied): an
 * ordinary ArrayBuffer can be transferred or detached by any code holding it, which would free the
 * memory under the tensor, so {share: true} on one is a TypeError.
 * Plain numbers default to float32.
 */
export function tensor(
  data: NestedArray | TypedArray | ArrayBuffer,
  opts: TensorOptions & { shape?: Shape; share?: boolean } = {},
): Tensor {
  let t: Tensor;
  if (ArrayBuffer.isView(data) || data instanceof ArrayBuffer) {
    const ta = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as TypedArray);
    let srcType: DType;
    if (ta instanceof Uint16Array) {
      if (opts.dtype !== 'float16' && opts.dtype !== 'bfloat16')
        throw new TypeError('tensor: a Uint16Array holds raw float16/bfloat16 bits: pass {dtype: "float16"} or "bfloat16"');
      srcType = opts.dtype;
    } else srcType = data instanceof ArrayBuffer ? (opts.dtype ?? 'uint8') : dtypeOfTypedArray(ta);
    if ((ta.buffer as ArrayBuffer & { detached?: boolean }).detached === true)
      throw new TypeError("tensor: the data's ArrayBuffer is detached (transferred or detached): it holds no data");
    const count = ta.byteLength / DTYPE_SIZE[srcType];
    if (!Number.isInteger(count))
      throw new ShapeError(
        `tensor: ${ta.byteLength} bytes are not a whole number of ${srcType} elements (${DTYPE_SIZE[srcType]} bytes each)`,
      );
    const shape = opts.shape ? checkedShape(opts.shape) : [count];
    if (opts.shape) {
      const want = numelOf(shape);
      if (want !== count)
        throw new ShapeError(
          `tensor: shape [${shape}] has ${want} elements but the data has ${count}: they must be equal (the data holds ${ta.byteLength} bytes, shape needs ${want * DTYPE_SIZE[srcType]})`,
        );
    }
    const shared = typeof SharedArrayBuffer !== 'undefined' && ta.buffer instanceof SharedArrayBuffer;
    if (opts.share && !shared)
      throw new TypeError(
        'tensor: {share: true} needs data in a SharedArrayBuffer (an ArrayBuffer can be transferred or detached, freeing the memory under the tensor): allocate it as new Float32Array(new SharedArrayBuffer(n * 4)), or leave out share to copy',
      );
    const growable = !!(ta.buffer as SharedArrayBuffer & { growable?: boolean }).growable;
    t = wrapT(N.fromBuffer(ta, 0, shape, DTYPE_CODE_OF(srcType), !opts.share || growable));
    if ((opts.dtype && opts.dtype !== srcType) || (opts.device && opts.device !== 'cpu')) {
      const u = t.to({ dtype: opts.dtype, device: opts.device });
      t.dispose();
      t = u;
    }
    return applyOpts(t, opts);
  }
  if (typeof data === 'number' || typeof data === 'boolean') {
    const dt = opts.dtype ?? (typeof data === 'boolean' ? 'bool' : 'float32');
    if (opts.shape) {
      // One element: the shape must hold exactly one ([], [1], [1, 1], ...).
      const shape = checkedShape(opts.shape);
      if (numelOf(shape) !== 1)
        throw new ShapeError(`tensor: shape [${shape}] has ${numelOf(shape)} elements but the data is one number: they must be equal`);
      return applyOpts(wrapT(N.full(shape, data, dtypeCode(dt), opts.device)), opts);
    }
    return applyOpts(wrapT(N.scalarTensor(data, dtypeCode(dt), opts.device)), opts);
  }
  if (!Array.isArray(data)) throw new TypeError(`tensor: data must be a number, an array or a typed array, got ${typeof data}`);
  const shape: number[] = [];
  let probe: NestedArray = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    if (probe.length === 0) break;
    probe = probe[0];
  }
  const isBool = typeof probe === 'boolean';
  const dt: DType = opts.dtype ?? (isBool ? 'bool' : 'float32');
  const count = shape.reduce((a, b) => a * b, 1);
  const buf = new Float64Array(count);
  let pos = 0;
  const fill = (arr: NestedArray, d: number, path: string): void => {
    if (d === shape.length) {
      if (typeof arr === 'number') buf[pos++] = arr;
      else if (typeof arr === 'boolean') buf[pos++] = arr ? 1 : 0;
      else if (Array.isArray(arr))
        throw new ShapeError(
          `tensor: ragged nested array: element at ${path} is an array, expected a number (as at ${firstLeafPath(shape.length)})`,
        );
      else throw new TypeError(`tensor: element at ${path} is ${arr === null ? 'null' : typeof arr}, expected a number or a boolean`);
      return;
    }
    if (!Array.isArray(arr))
      throw new ShapeError(`tensor: ragged nested array: element at ${path} is not an array (expected length ${shape[d]})`);
    if (arr.length !== shape[d])
      throw new ShapeError(`tensor: ragged nested array: element at ${path} has length ${arr.length}, expected ${shape[d]}`);
    for (let i = 0; i < arr.length; i++) fill(arr[i], d + 1, `${path}[${i}]`);
  };
  fill(data, 0, 'data');
  // {shape}: the nested array's elements, in order, laid out in that shape (as for typed arrays);
  // the element counts must be equal.
  let outShape = shape;
  if (opts.shape) {
    outShape = checkedShape(opts.shape);
    const want = numelOf(outShape);
    if (want !== count)
      throw new ShapeError(
        `tensor: shape [${outShape}] has ${want} elements but the data has ${count} (a nested array of shape [${shape}]): they must be equal`,
      );
  }
  const f = wrapT(N.fromBuffer(buf, 0, outShape, DTYPE_CODE_OF('float64'), false));
  if (dt === 'float64' && (!opts.device || opts.device === 'cpu')) return applyOpts(f, opts);
  t = f.to({ dtype: dt, device: opts.device });
  f.dispose();
  return applyOpts(t, opts);
}

/** A `shape` option checked as the native readers check shapes: integers (TypeError), none negative (ShapeError). */
function checkedShape(shape: Shape): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`tensor: shape must be an array of integers, got ${typeof shape}`);
  return shape.map((v, i) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v))
      throw new TypeError(`tensor: shape element ${i} must be an integer, got ${String(v)}`);
    if (v < 0) throw new ShapeError(`tensor: shape [${shape}] has a negative size`);
    return v;
  });
}
function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}
function firstLeafPath(depth: number): string {
  return `data${'[0]'.repeat(depth)}`;
}

function DTYPE_CODE_OF(d: DType): number {
  return dtypeCode(d) as number;
}

type ShapeArg = number | readonly number[];
function shapeOf(s: ShapeArg): number[] {
  return typeof s === 'number' ? [s] : [...s];
}

export function zeros(shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.zeros(shapeOf(shape), dtypeCode(opts.dtype), opts.device)), opts);
}
export function ones(shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.ones(shapeOf(shape), dtypeCode(opts.dtype), opts.device)), opts);
}
export function empty(shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.empty(shapeOf(shape), dtypeCode(opts.dtype), opts.device)), opts);
}
export function full(shape: ShapeArg, value: Scalar, opts: TensorOptions = {}): Tensor {
  return applyOpts(
    wrapT(N.full(shapeOf(shape), value, dtypeCode(opts.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32')), opts.device)),
    opts,
  );
}
/** arange(end) or arange(start, end, step); integer arguments give int64 like PyTorch. */
export function arange(start: number, end?: number, step = 1, opts: TensorOptions = {}): Tensor {
  if (end === undefined) {
    end = start;
    start = 0;
  }
  return applyOpts(wrapT(N.arange(start, end, step, dtypeCode(opts.dtype), opts.device)), opts);
}
export function linspace(start: number, end: number, steps: number, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.linspace(start, end, steps, dtypeCode(opts.dtype), opts.device)), opts);
}
export function rand(shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.rand(shapeOf(shape), dtypeCode(opts.dtype), opts.device)), opts);
}
export function randn(shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.randn(shapeOf(shape), dtypeCode(opts.dtype), opts.device)), opts);
}
/** Integers uniformly in [low, high). */
export function randint(low: number, high: number, shape: ShapeArg, opts: TensorOptions = {}): Tensor {
  return wrapT(N.randint(low, high, shapeOf(shape), dtypeCode(opts.dtype), opts.device));
}
export function randperm(n: number, opts: TensorOptions = {}): Tensor {
  return wrapT(N.randperm(n, dtypeCode(opts.dtype), opts.device));
}
export function eye(n: number, opts: TensorOptions = {}): Tensor {
  return applyOpts(wrapT(N.eye(n, dtypeCode(opts.dtype), opts.device)), opts);
}
export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  const z = wrapT(N.zerosLike(hOf(t)));
  return retype(z, opts);
}
export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return retype(wrapT(N.onesLike(hOf(t))), opts);
}
export function fullLike(t: Tensor, value: Scalar, opts: TensorOptions = {}): Tensor {
  return retype(wrapT(N.fullLike(hOf(t), value)), opts);
}
export function randLike(t: Tensor): Tensor {
  return wrapT(N.randLike(hOf(t)));
}
export function randnLike(t: Tensor): Tensor {
  return wrapT(N.randnLike(hOf(t)));
}
function retype(t: Tensor, opts: TensorOptions): Tensor {
  if (opts.dtype || opts.device) {
    const u = t.to({ dtype: opts.dtype, device: opts.device });
    t.dispose();
    t = u;
  }
  return applyOpts(t, opts);
}
