// The TensorFlow.js backend `residual`: every tfjs dataId maps to one native residual Tensor (plus the
// tfjs dtype, shape and reference count). Kernels (lib/tfjs/kernels) borrow inputs with tensorOf() and
// register what they create with output().
//
// Storage per tfjs dtype:
//   float32 / int32 / bool -> a libtorch tensor of that dtype (bool is read back as a Uint8Array);
//   complex64              -> a float32 tensor with a trailing dimension of 2 (real, imaginary): tf's own
//                             interleaved layout, and the layout of torch.view_as_real;
//   string                 -> JS-side storage (the encoded bytes, as tfjs passes them); only kernels that
//                             move strings without computing on them accept it.
import { backend_util, engine, KernelBackend, kernel_impls, util } from '@tensorflow/tfjs-core';
import type { BackendTimingInfo, BackendValues, DataId, DataType, Rank, Tensor as TfTensor, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../addon/binding.js';
import { untrack } from '../tensor/scope.js';
import { Tensor, hOf, wrapT } from '../tensor/tensor.js';
import { dtypeCode, type DType } from '../tensor/dtype.js';

export const BACKEND_NAME = 'residual';

interface Entry {
  /** The native tensor (null for strings). */
  t: Tensor | null;
  dtype: DataType;
  shape: number[];
  refCount: number;
  /** string tensors: the encoded bytes, as tfjs passes them. */
  strings?: Uint8Array[];
}

let chosenDevice: string | undefined;

function defaultDevice(): string {
  const env = typeof process !== 'undefined' ? process.env.RESIDUAL_TFJS_DEVICE : undefined;
  if (env) return checkDevice(env, 'RESIDUAL_TFJS_DEVICE');
  return native.cudaIsAvailable() ? 'cuda' : 'cpu';
}
function checkDevice(d: string, what: string): string {
  if (d === 'cpu' || d === 'cuda' || /^cuda:\d+$/.test(d)) {
    if (d !== 'cpu' && !native.cudaIsAvailable())
      throw new Error(`${what}: '${d}' asked for, but CUDA is not available in this build/machine`);
    return d;
  }
  throw new TypeError(`${what}: expected 'cpu', 'cuda' or 'cuda:N', got ${JSON.stringify(d)}`);
}

/**
 * The device new `residual` backends put their tensors on: 'cpu', 'cuda' or 'cuda:N'. The default is
 * CUDA when available, else the CPU; the environment variable RESIDUAL_TFJS_DEVICE overrides it. A
 * backend keeps the device it was created with: call this before the backend is first used (or before
 * `tf.removeBackend('residual')` + re-registration).
 */
export function setResidualDevice(device: 'cpu' | 'cuda' | `cuda:${number}`): void {
  chosenDevice = checkDevice(device, 'setResidualDevice');
}
/** The device setResidualDevice / the default picks for the next backend. */
export function getResidualDevice(): string {
  return chosenDevice ?? defaultDevice();
}

// Tensors that belong to the backend must not be adopted by a user's residual scope() that happens to be
// active while tfjs runs: they are owned by their dataId and freed by disposeData() (untrack()).

const TORCH_DTYPE: Record<string, DType> = { float32: 'float32', int32: 'int32', bool: 'bool', complex64: 'float32' };

let nextId = 0;

export class ResidualBackend extends KernelBackend {
  /** The device of this backend's tensors: 'cpu' or 'cuda[:n]'. */
  readonly device: string;
  private readonly data = new Map<DataId, Entry>();
  private readonly owned = new WeakSet<Tensor>();
  private complexCount = 0;
  /** Outputs registered by the kernel that is running (so its scope keeps them), or null. */
  private pending: { ids: DataId[]; tensors: Tensor[] } | null = null;
  /** The running kernel's string table (string elements handed to it as int32 ids), or null. */
  private strTable: Uint8Array[] | null = null;
  private disposed = false;
  private readonly onCuda: boolean;

  constructor(device: string = getResidualDevice()) {
    super();
    this.device = checkDevice(device, 'ResidualBackend');
    this.onCuda = this.device !== 'cpu';
  }

  // ---- helpers for kernels ----

  /**
   * The backing residual tensor of a tfjs tensor (borrowed: never dispose it). dataIds are shared
   * between tensors of different shapes (Reshape/ExpandDims/Identity return their input's dataId, as
   * the cpu backend does): given a TensorInfo, the result has its shape (a view when it differs).
   * String tensors come as int32 tensors of element ids into this kernel's string table (so kernels
   * that only move data move strings too; output(t, 'string') maps the ids back).
   */
  tensorOf(info: TensorInfo | DataId): Tensor {
    const e = this.entryOf(info);
    const shape = isTensorInfo(info) ? info.shape : e.shape;
    if (e.t === null) return this.stringIds(e, shape);
    if (shape !== e.shape && !sameShape(shape, e.shape)) return e.t.reshape(e.dtype === 'complex64' ? [...shape, 2] : [...shape]);
    return e.t;
  }
  private stringIds(e: Entry, shape: number[]): Tensor {
    if (this.strTable === null) throw new Error('residual backend: string tensors can only be read inside a kernel');
    const vals = e.strings ?? [];
    const offset = this.strTable.length;
    for (const v of vals) this.strTable.push(v); // (no spread: string tensors may be large)
    const ids = new Int32Array(vals.length);
    for (let i = 0; i < ids.length; i++) ids[i] = offset + i;
    let t = wrapT(native.fromBuffer(ids, 0, [...shape], dtypeCode('int32'), true));
    if (this.device !== 'cpu') t = t.to(this.device as 'cuda');
    return t;
  }
  /** The dtype/shape record of a dataId (moving it from another backend if needed). */
  entryOf(info: TensorInfo | DataId): Entry {
    const id = isTensorInfo(info) ? info.dataId : info;
    const e = this.data.get(id) ?? this.moveHere(id);
    // A dataId the engine does not know (a disposed tensor) is an error here rather than a TypeError inside tfjs.
    if (e === undefined) throw new Error('residual backend: unknown dataId (disposed tensor?)');
    return e;
  }
  /** Moves data that lives on another backend here (tfjs calls move()); undefined for a dataId the engine does not know. */
  private moveHere(id: DataId): Entry | undefined {
    const eng = engine() as unknown as { state?: { tensorInfo?: { has(k: DataId): boolean } } };
    if (eng.state?.tensorInfo?.has(id)) engine().moveData(this, id);
    return this.data.get(id);
  }

  /**
   * Registers a new dataId owning `t` (a tensor the kernel created). The dtype is the given tfjs dtype
   * or derived from t's (float32, int32, bool; other torch dtypes are converted: int64 -> int32,
   * float64/float16 -> float32); for complex64, t is float32 [...shape, 2].
   */
  output(t: Tensor, dtype?: DataType): TensorInfo {
    let dt: DataType;
    if (dtype === undefined) {
      const td = t.dtype;
      dt =
        td === 'bool'
          ? 'bool'
          : td === 'int32' || td === 'int64' || td === 'int16' || td === 'int8' || td === 'uint8'
            ? 'int32'
            : 'float32';
    } else dt = dtype;
    if (dt === 'string') {
      if (this.strTable === null) throw new Error('output(): string outputs are made inside kernels');
      const ids = t.to('int32').toTypedArray() as Int32Array;
      const table = this.strTable;
      return this.outputStrings(
        Array.from(ids, (i) => table[i]),
        t.shape,
      );
    }
    const want = TORCH_DTYPE[dt];
    if (want === undefined) throw new Error(`output(): unsupported dtype ${dt}`);
    if (t.dtype !== want) t = t.to(want);
    else if (this.owned.has(t)) t = wrapT(native.detach(hOf(t))); // a second reference, never the same Tensor twice
    if (this.onCuda) {
      const d = t.device;
      if (d !== this.device && !(this.device === 'cuda' && d === 'cuda:0')) t = t.to(this.device as 'cpu');
    }
    let shape = t.shape;
    if (dt === 'complex64') {
      if (shape.length === 0 || shape[shape.length - 1] !== 2)
        throw new Error(`output(): a complex64 result must be float32 [..., 2], got [${shape}]`);
      shape = shape.slice(0, -1);
    }
    return this.register(t, dt, shape);
  }

  /** Registers a string tensor (encoded bytes). */
  outputStrings(values: Uint8Array[], shape: number[]): TensorInfo {
    const dataId = { id: nextId++ };
    this.data.set(dataId, { t: null, dtype: 'string', shape, refCount: 1, strings: values });
    if (this.pending) this.pending.ids.push(dataId);
    return { dataId, shape, dtype: 'string' };
  }

  private register(t: Tensor, dtype: DataType, shape: number[]): TensorInfo {
    const dataId = { id: nextId++ };
    this.owned.add(t);
    this.data.set(dataId, { t, dtype, shape, refCount: 1 });
    if (dtype === 'complex64') this.complexCount++;
    if (this.pending) {
      this.pending.ids.push(dataId);
      this.pending.tensors.push(t);
    } else untrack(t);
    return { dataId, shape, dtype };
  }

  /**
   * Runs a kernel body: every residual tensor created inside is freed when it returns, except those
   * registered with output(). On failure the outputs registered so far are dropped too.
   */
  runKernel<T>(fn: () => T, scope: <R>(f: () => R, keep?: readonly unknown[]) => R): T {
    const outer = this.pending;
    const mine = { ids: [] as DataId[], tensors: [] as Tensor[] };
    this.pending = mine;
    const outerTable = this.strTable;
    if (outerTable === null) this.strTable = [];
    try {
      const r = scope(fn, mine.tensors);
      for (const t of mine.tensors) untrack(t);
      return r;
    } catch (e) {
      for (const id of mine.ids) this.dropEntry(id);
      throw e;
    } finally {
      this.pending = outer;
      this.strTable = outerTable;
      if (outer) {
        outer.ids.push(...mine.ids);
        outer.tensors.push(...mine.tensors);
      }
    }
  }

  // ---- KernelBackend ----

  override write(values: BackendValues, shape: number[], dtype: DataType): DataId {
    const dataId = { id: nextId++ };
    this.data.set(dataId, this.makeEntry(values, shape, dtype, 1));
    if (dtype === 'complex64') this.complexCount++;
    return dataId;
  }

  override move(dataId: DataId, values: BackendValues, shape: number[], dtype: DataType, refCount: number): void {
    const old = this.data.get(dataId);
    if (old) this.dropEntry(dataId);
    this.data.set(dataId, this.makeEntry(values, shape, dtype, refCount));
    if (dtype === 'complex64') this.complexCount++;
  }

  private makeEntry(values: BackendValues, shape: number[], dtype: DataType, refCount: number): Entry {
    if (dtype === 'string') {
      const strings = (values ?? []) as Uint8Array[];
      return {
        t: null,
        dtype,
        shape: [...shape],
        refCount,
        strings: strings.map((s) => (typeof s === 'string' ? util.encodeString(s) : s)),
      };
    }
    const size = util.sizeFromShape(shape);
    let ta: Float32Array | Int32Array | Uint8Array;
    const n = dtype === 'complex64' ? size * 2 : size;
    if (values === null || values === undefined) {
      ta = dtype === 'int32' ? new Int32Array(n) : dtype === 'bool' ? new Uint8Array(n) : new Float32Array(n);
    } else if (dtype === 'float32' || dtype === 'complex64') {
      ta = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
    } else if (dtype === 'int32') {
      ta = values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
    } else if (dtype === 'bool') {
      ta = values instanceof Uint8Array ? values : Uint8Array.from(values as ArrayLike<number>, (v) => (v ? 1 : 0));
    } else throw new Error(`residual backend: unsupported dtype ${String(dtype)}`);
    if (ta.length !== n) throw new Error(`residual backend: ${ta.length} values for shape [${shape}] (${n} needed)`);
    const tshape = dtype === 'complex64' ? [...shape, 2] : [...shape];
    // Copied: tfjs may hand over arrays it (or the caller) keeps using.
    let t = wrapT(native.fromBuffer(ta, 0, tshape, dtypeCode(TORCH_DTYPE[dtype]), true));
    if (this.device !== 'cpu') {
      const u = t.to(this.device as 'cuda');
      t.dispose();
      t = u;
    }
    untrack(t);
    this.owned.add(t);
    return { t, dtype, shape: [...shape], refCount };
  }

  override readSync(dataId: DataId): BackendValues {
    const e = this.entryOf(dataId);
    if (e.dtype === 'string') return e.strings ?? [];
    const buf = native.toBuffer(hOf(e.t!)) as ArrayBuffer;
    return typed(e.dtype, buf);
  }

  override async read(dataId: DataId): Promise<BackendValues> {
    const e = this.entryOf(dataId);
    if (e.dtype === 'string') return e.strings ?? [];
    // The copy is made on a libuv worker thread; the promise keeps its own reference to the tensor.
    const buf = (await native.toBufferAsync(hOf(e.t!))) as ArrayBuffer;
    return typed(e.dtype, buf);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const e = this.data.get(dataId);
    if (e === undefined) return true;
    e.refCount--;
    if (!force && e.refCount > 0) return false;
    this.dropEntry(dataId);
    return true;
  }

  private dropEntry(dataId: DataId): void {
    const e = this.data.get(dataId);
    if (e === undefined) return;
    this.data.delete(dataId);
    if (e.dtype === 'complex64') this.complexCount--;
    if (e.t) {
      this.owned.delete(e.t);
      e.t.dispose();
    }
  }

  override refCount(dataId: DataId): number {
    return this.data.get(dataId)?.refCount ?? 0;
  }
  override incRef(dataId: DataId): void {
    // As the cpu backend (its data storage moves on access): Reshape/ExpandDims/Identity share their
    // input's dataId, which may still live on another backend; the reference must be counted here.
    const e = this.data.get(dataId) ?? this.moveHere(dataId);
    if (e) e.refCount++;
  }
  decRef(dataId: DataId): void {
    const e = this.data.get(dataId);
    if (e) e.refCount--;
  }

  // tfjs counts a complex64 tensor as three data buckets (the tensor and its real and imaginary parts,
  // as the cpu backend stores them); its per-kernel leak check expects that count.
  override numDataIds(): number {
    return this.data.size + 2 * this.complexCount;
  }

  /**
   * tfjs's engine adds numTensors/numDataBuffers/numBytes itself; this adds the native side's numbers:
   * bytes held on this backend's device by all residual tensors, and the live native tensor count.
   */
  override memory(): { unreliable: boolean; reasons: string[]; numBytesInResidual: number; numResidualTensors: number } {
    const m = native.memory() as { tensors: number; bytes: Record<string, number> };
    const bytes = m.bytes[this.device === 'cuda' ? 'cuda:0' : this.device] ?? 0;
    return { unreliable: false, reasons: [], numBytesInResidual: bytes, numResidualTensors: m.tensors };
  }

  override async time(f: () => void): Promise<BackendTimingInfo> {
    const start = util.now();
    f();
    if (this.device !== 'cpu') native.cudaSynchronize();
    return { kernelMs: util.now() - start };
  }

  override floatPrecision(): 16 | 32 {
    return 32;
  }

  /** The coordinates of the true entries of `condition` (tf.whereAsync). */
  where(condition: TensorInfo): TfTensor {
    const vals = this.readSync(condition.dataId) as Uint8Array;
    return kernel_impls.whereImpl(condition.shape, vals) as TfTensor<Rank.R2>;
  }

  override dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const e of this.data.values()) if (e.t) e.t.dispose();
    this.data.clear();
    this.complexCount = 0;
  }

  /** @internal the number of dataIds (without complex weighting), for tests. */
  get size(): number {
    return this.data.size;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isTensorInfo(x: TensorInfo | DataId): x is TensorInfo {
  return typeof x === 'object' && x !== null && 'dataId' in x && 'shape' in x;
}

function typed(dtype: DataType, buf: ArrayBuffer): BackendValues {
  switch (dtype) {
    case 'int32':
      return new Int32Array(buf);
    case 'bool':
      return new Uint8Array(buf);
    default:
      return new Float32Array(buf);
  }
}

// backend_util is re-exported for kernels that want tf's shape helpers from one place.
export { backend_util };
