// PyTorch checkpoints (torch.save, zip format) without Python. The archive holds `<root>/data.pkl`, a
// pickle of the saved object, and one entry `<root>/data/<key>` of raw little-endian bytes per tensor
// storage. The pickle is read by our restricted unpickler: the only globals it may name are the few
// torch / collections functions below, which we implement in TypeScript, so loading never executes
// code from the file (torch.load(weights_only=True) makes the same promise).
//
// The work and memory a file can demand are bounded. Unpickling is linear in the pickle's size.
// Flattening to 'a.b.c' keys walks each pickled container once, even when the pickle shares it
// (memo references) many times, and stops at limits on depth, containers and keys (TorchLoadLimits).
// Every tensor's size / stride / offset is checked against its storage before use. Contiguous views
// and expanded (stride-0) dims load as views of the storage, as in PyTorch, so they cost no memory;
// other layouts (transposes, overlapping strides) are copied, and the copies of one load may not
// exceed 4 x the file's size + 64 MiB. Every bad-file failure is a BadFileError naming the file.
import fs from 'node:fs';
import { BadFileError, OutOfMemoryError } from '../core/errors.js';
import { DTYPE_SIZE, type DType } from '../tensor/dtype.js';
import { scope } from '../tensor/scope.js';
import { ownedBufferTensor } from '../tensor/owned.js';
import { Tensor, arange, tensor } from '../tensor/tensor.js';
import { PyCallable, describe, unpickle } from './unpickle.js';
import { ZipReader } from './zip.js';

/** A torch dtype object found in a pickle (e.g. a dict value `torch.float16`). */
export class TorchDType {
  constructor(readonly dtype: DType) {}
}

/** A raw tensor storage (flat, 1-D) as named by a persistent id; tensors are views of it. */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly tensor: Tensor,
  ) {}
}

/** The legacy typed-storage classes, which torch still uses as the dtype tag of a storage. */
class StorageType {
  constructor(
    readonly name: string,
    readonly dtype: DType,
  ) {}
}

/** torch.Tensor / torch.nn.Parameter as a class argument (of _rebuild_from_type_v2); never callable. */
class TensorClass {
  constructor(readonly name: string) {}
}

const STORAGE_TYPES: Record<string, DType> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
  UntypedStorage: 'uint8',
};

const TORCH_DTYPES: Record<string, DType> = {
  float32: 'float32',
  float: 'float32',
  float64: 'float64',
  double: 'float64',
  float16: 'float16',
  half: 'float16',
  bfloat16: 'bfloat16',
  int64: 'int64',
  long: 'int64',
  int32: 'int32',
  int: 'int32',
  int16: 'int16',
  short: 'int16',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

/** Everything needed while one archive is read. */
interface Ctx {
  file: string;
  /** Bytes that copies of non-contiguous tensors may still take in this load. */
  copyBudget: number;
  copyLimit: number;
  zip: ZipReader;
  root: string;
  bigEndian: boolean;
  bytes: Map<string, Uint8Array>;
  storages: Map<string, TorchStorage>;
  orderedDicts: WeakSet<object>;
}

/** Bounds on flattening a checkpoint (loadTorchCheckpoint). */
export interface TorchLoadLimits {
  /** Containers nested deeper than this are refused (default 100). */
  maxDepth?: number;
  /** At most this many keys in the flat record (default 100,000; ResNet-152 has about 1,000). */
  maxKeys?: number;
  /** At most this many containers and values walked (default 10,000,000). */
  maxObjects?: number;
}

const DEFAULT_LIMITS: Required<TorchLoadLimits> = { maxDepth: 100, maxKeys: 100_000, maxObjects: 10_000_000 };

/**
 * Loads a torch.save'd checkpoint as a flat record (null-prototype) of tensors (on the CPU, whatever
 * device they were saved from): nested dicts, lists and tuples are flattened into 'a.b.c' keys,
 * non-tensor values (numbers, strings, None) are left out. Two paths that give the same key (e.g.
 * 'a.b' and {'a': {'b'}}) are refused, as are reference cycles. A container the pickle shares between
 * several places appears under each of them (walked once; its tensors share memory). For the full
 * structure use loadTorchPickle.
 */
export function loadTorchCheckpoint(file: string, limits: TorchLoadLimits = {}): Record<string, Tensor> {
  return scope(() => {
    const root = readArchive(file);
    if (!(root instanceof Map)) {
      throw new BadFileError(
        `${file}: expected the checkpoint to hold a dict of tensors (a state dict), found ${root instanceof Tensor ? 'a single tensor' : describe(root)}; use loadTorchPickle to read it`,
        { path: file },
      );
    }
    return flattenCheckpoint(root, file, { ...DEFAULT_LIMITS, ...limits });
  });
}

/**
 * Loads a torch.save'd object as plain JS values: dicts become Maps (OrderedDict too), tuples and lists
 * Arrays, sets Sets, tensors CPU Tensors (views of one storage share memory, as in PyTorch).
 */
export function loadTorchPickle(file: string): unknown {
  return scope(() => {
    const v = readArchive(file);
    // scope() keeps what it finds in the result, to a bounded depth: keep every tensor built here.
    return [v, collectTensors(v)];
  }).at(0);
}

/** Every Tensor reachable from `v` (each container visited once; cycles allowed). */
function collectTensors(v: unknown): Tensor[] {
  const out: Tensor[] = [];
  const seen = new Set<object>();
  const todo: unknown[] = [v];
  while (todo.length) {
    const x = todo.pop();
    if (x instanceof Tensor) out.push(x);
    else if ((Array.isArray(x) || x instanceof Map || x instanceof Set) && !seen.has(x)) {
      seen.add(x);
      for (const y of x instanceof Map ? x.values() : x) todo.push(y);
    }
  }
  return out;
}

/**
 * The flat record of a checkpoint. Each container is walked once: the keys found under a container
 * are remembered (as a range of `entries` and the prefix they were found under), and when the
 * pickle shares the container again they are re-emitted under the new prefix without walking it
 * again. Keys count against maxKeys as they are emitted, so a "billion laughs" pickle (a list of two
 * references to a list of two references to ...) stops at the key limit after bounded work.
 *
 * Decision: PyTorch state dicts are trees (their containers are OrderedDict / dict / list / tuple, their
 * leaves tensors), but torch.load accepts any sharing, and a checkpoint such as {'model': sd,
 * 'ema': sd} is legitimate; so a shared container is accepted and its keys appear under each path.
 * A cycle is refused (it has no flat form).
 */
function flattenCheckpoint(root: Map<unknown, unknown>, file: string, limits: Required<TorchLoadLimits>): Record<string, Tensor> {
  const entries: [string, Tensor][] = [];
  const done = new Map<object, { from: number; to: number; headLen: number }>();
  const onPath = new Set<object>();
  let objects = 0;
  const fail = (what: string): never => {
    throw new BadFileError(`${file}: ${what}`, { path: file });
  };
  const emit = (key: string, t: Tensor): void => {
    if (entries.length >= limits.maxKeys)
      fail(`the checkpoint has more than ${limits.maxKeys} tensor keys (limit maxKeys; reached at '${key.slice(0, 200)}')`);
    entries.push([key, t]);
  };
  const keyPart = (k: unknown, where: string): string => {
    if (typeof k === 'string') return k;
    if (typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean' || k === null) return String(k);
    return fail(`a dict key at '${where}' is ${describe(k)}; only strings and numbers can become flat keys (use loadTorchPickle)`);
  };
  const walk = (v: unknown, prefix: string, depth: number): void => {
    if (++objects > limits.maxObjects) fail(`the checkpoint has more than ${limits.maxObjects} objects (limit maxObjects)`);
    if (v instanceof Tensor) {
      emit(prefix, v);
      return;
    }
    if (!(v instanceof Map) && !Array.isArray(v)) return; // numbers, strings, None, sets, ...: not part of the flat record
    if (depth > limits.maxDepth)
      fail(`containers nested deeper than ${limits.maxDepth} levels (limit maxDepth) at '${prefix.slice(0, 200)}'`);
    if (onPath.has(v)) fail(`the checkpoint contains a reference cycle (a container inside itself) at '${prefix.slice(0, 200)}'`);
    const head = prefix ? `${prefix}.` : '';
    const seen = done.get(v);
    if (seen) {
      for (let i = seen.from; i < seen.to; i++) emit(head + entries[i][0].slice(seen.headLen), entries[i][1]);
      return;
    }
    onPath.add(v);
    const from = entries.length;
    if (v instanceof Map) for (const [k, x] of v) walk(x, head + keyPart(k, prefix), depth + 1);
    else for (let i = 0; i < v.length; i++) walk(v[i], head + String(i), depth + 1);
    onPath.delete(v);
    done.set(v, { from, to: entries.length, headLen: head.length });
  };
  walk(root, '', 0);

  const out: Record<string, Tensor> = Object.create(null);
  const used = new Set<Tensor>();
  for (const [key, t] of entries) {
    if (key in out) fail(`two entries have the same key '${key.slice(0, 200)}' (e.g. 'a.b' and {'a': {'b': ...}}); refusing to drop one`);
    // The same tensor reached twice (shared in the pickle) gets its own handle per key, so disposing
    // one entry never invalidates another; both still share memory.
    if (used.has(t)) {
      const alias = t.detach();
      if (t.requiresGrad) alias.requiresGrad_(true);
      out[key] = alias;
    } else {
      used.add(t);
      out[key] = t;
    }
  }
  return out;
}

/** Opens the archive and unpickles data.pkl; storages are read as the pickle asks for them. */
function readArchive(file: string): unknown {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  checkNotLegacy(file);
  const zip = new ZipReader(file);
  try {
    return readPickle(file, zip);
  } catch (e) {
    // Failures in our own checks are BadFileErrors already; anything else raised while reading a
    // malformed file (a RangeError from a view, a shape error from a rebuilt tensor) becomes one too,
    // keeping the original as `cause`. Out-of-memory stays what it is.
    if (e instanceof BadFileError || e instanceof OutOfMemoryError) throw e;
    throw new BadFileError(`${file}: invalid checkpoint: ${(e as Error)?.message ?? String(e)}`, { cause: e, path: file });
  } finally {
    zip.close();
  }
}

function readPickle(file: string, zip: ZipReader): unknown {
  const pkl = zip.names().find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl) {
    const what = zip.names().some((n) => n.endsWith('constants.pkl'))
      ? ' (it looks like a TorchScript archive, which is not supported)'
      : '';
    throw new BadFileError(`${file}: not a PyTorch checkpoint: the zip archive has no <name>/data.pkl entry${what}`, { path: file });
  }
  const root = pkl.slice(0, pkl.indexOf('/'));
  let bigEndian = false;
  if (zip.has(`${root}/byteorder`)) {
    const order = new TextDecoder().decode(zip.read(`${root}/byteorder`)).trim();
    if (order !== 'little' && order !== 'big')
      throw new BadFileError(`${file}: unknown byte order '${order.slice(0, 40)}' in ${root}/byteorder`, { path: file });
    bigEndian = order === 'big';
  }
  const copyLimit = 4 * fs.statSync(file).size + 64 * 2 ** 20;
  const ctx: Ctx = {
    file,
    copyBudget: copyLimit,
    copyLimit,
    zip,
    root,
    bigEndian,
    bytes: new Map(),
    storages: new Map(),
    orderedDicts: new WeakSet(),
  };
  return unpickle(zip.read(pkl), {
    file,
    findClass: (module, name) => findClass(ctx, module, name),
    persistentLoad: (pid) => persistentLoad(ctx, pid),
    build: (obj, state) => build(ctx, obj, state),
  });
}

/** The first bytes of a legacy torch.save file: PROTO 2, then LONG1 of 10 bytes (torch's magic number). */
export function isLegacyTorchHead(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a;
}

/** Files from torch.save(..., _use_new_zipfile_serialization=False) are a bare pickle, not a zip. */
function checkNotLegacy(file: string): void {
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(4);
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (isLegacyTorchHead(head)) {
    throw new BadFileError(
      `${file}: this is the legacy (non-zip) torch.save format, which is not supported; re-save it with torch.save(obj, file) from PyTorch 1.6 or later`,
      { path: file },
    );
  }
}

function bad(ctx: Ctx, what: string): BadFileError {
  return new BadFileError(`${ctx.file}: ${what}`, { path: ctx.file });
}

function refuse(ctx: Ctx, qualname: string): Error {
  return new BadFileError(
    `${ctx.file}: refusing to load: the checkpoint references '${qualname}', which is not a tensor or container (loading never executes code from the file)`,
    { path: ctx.file },
  );
}

/** The whitelist: every global a checkpoint may name, mapped to our own implementation. */
function findClass(ctx: Ctx, module: string, name: string): unknown {
  const q = `${module}.${name}`;
  switch (q) {
    case 'collections.OrderedDict':
      return new PyCallable(q, (args) => {
        const m = new Map<unknown, unknown>(args.length ? pairs(ctx, args[0]) : []);
        ctx.orderedDicts.add(m);
        return m;
      });
    case 'torch._utils._rebuild_tensor_v2':
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      return new PyCallable(q, (a) => rebuildTensor(ctx, a[0], a[1], a[2], a[3], a[4] === true));
    case 'torch._utils._rebuild_tensor':
      return new PyCallable(q, (a) => rebuildTensor(ctx, a[0], a[1], a[2], a[3], false));
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      // (data, requires_grad, backward_hooks[, state]): a Parameter is its data tensor here.
      return new PyCallable(q, (a) => {
        const t = expectTensor(ctx, a[0], q);
        if (a[1] === true) t.requiresGrad_(true);
        return t;
      });
    case 'torch._tensor._rebuild_from_type_v2':
      // (func, type, args, state): how tensors with a __dict__ or of a subclass are saved.
      return new PyCallable(q, (a) => {
        const [func, cls, args] = a;
        if (!(cls instanceof TensorClass)) throw refuse(ctx, `tensor subclass ${describe(cls)}`);
        if (!(func instanceof PyCallable) || !Array.isArray(args)) throw bad(ctx, 'malformed _rebuild_from_type_v2 call');
        return func.fn(args);
      });
    case 'torch.Tensor':
    case 'torch._tensor.Tensor':
    case 'torch.nn.parameter.Parameter':
      return new TensorClass(q);
    case 'torch.device':
      return new PyCallable(q, (a) => {
        const ok = (x: unknown): boolean => typeof x === 'string' || typeof x === 'number';
        if (!ok(a[0]) || (a.length > 1 && a[1] !== null && !ok(a[1])))
          throw bad(ctx, `malformed torch.device(${a.map(describe).join(', ')})`);
        return a.length > 1 && a[1] !== null ? `${a[0]}:${a[1]}` : String(a[0]);
      });
    case 'builtins.set':
    case '__builtin__.set':
    case 'builtins.frozenset':
    case '__builtin__.frozenset':
      return new PyCallable(q, (a) => new Set(a.length ? iterable(ctx, a[0]) : []));
    case '_codecs.encode':
      // Protocol 2 pickles Python 3 bytes as _codecs.encode(text, 'latin1').
      return new PyCallable(q, (a) => {
        if (typeof a[0] !== 'string' || (a[1] !== 'latin1' && a[1] !== 'latin-1'))
          throw refuse(ctx, `${q} with encoding ${describe(a[1])}`);
        return Uint8Array.from(a[0], (c) => c.charCodeAt(0));
      });
  }
  if (module === 'torch' || module === 'torch.storage') {
    // own keys only: `in` would let 'constructor', 'toString', '__proto__'... through
    if (Object.hasOwn(STORAGE_TYPES, name)) return new StorageType(name, STORAGE_TYPES[name]);
    if (module === 'torch' && Object.hasOwn(TORCH_DTYPES, name)) return new TorchDType(TORCH_DTYPES[name]);
  }
  throw refuse(ctx, q);
}

/** BUILD is only accepted on an OrderedDict, whose state (the module's `_metadata`) we do not need. */
function build(ctx: Ctx, obj: unknown, state: unknown): unknown {
  if (obj instanceof Map && ctx.orderedDicts.has(obj)) return obj;
  throw bad(ctx, `unsupported pickle: BUILD (setting object state) on ${describe(obj)} with ${describe(state)}`);
}

function pairs(ctx: Ctx, v: unknown): [unknown, unknown][] {
  if (v instanceof Map) return [...v];
  return iterable(ctx, v).map((p) => {
    if (!Array.isArray(p) || p.length !== 2) throw bad(ctx, 'OrderedDict argument is not a list of pairs');
    return [p[0], p[1]];
  });
}

function iterable(ctx: Ctx, v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof Set) return [...v];
  throw bad(ctx, `expected a list, got ${describe(v)}`);
}

function expectTensor(ctx: Ctx, v: unknown, where: string): Tensor {
  if (!(v instanceof Tensor)) throw bad(ctx, `${where} expects a tensor, got ${describe(v)}`);
  return v;
}

/** ('storage', storage_type, key, location, numel) -> the storage as a flat CPU tensor of its dtype. */
function persistentLoad(ctx: Ctx, pid: unknown): TorchStorage {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
    throw bad(ctx, `unsupported persistent id ${describe(pid)} (expected ('storage', type, key, location, numel))`);
  }
  const [, type, key, , numel] = pid;
  let dtype: DType;
  if (type instanceof StorageType || type instanceof TorchDType) dtype = type.dtype;
  else throw bad(ctx, `storage ${describe(key)} has an unsupported type ${describe(type)}`);
  if (typeof key !== 'string' || !Number.isSafeInteger(numel) || (numel as number) < 0) {
    throw bad(ctx, `malformed storage id (key ${describe(key)}, numel ${describe(numel)})`);
  }
  const cacheKey = `${key}/${dtype}`;
  const cached = ctx.storages.get(cacheKey);
  if (cached) return cached;

  const entry = `${ctx.root}/data/${key}`;
  let raw = ctx.bytes.get(key);
  if (!raw) {
    if (!ctx.zip.has(entry)) throw bad(ctx, `the pickle refers to storage '${key}' but the archive has no entry ${entry}`);
    raw = ctx.zip.read(entry);
    ctx.bytes.set(key, raw);
  }
  const esize = DTYPE_SIZE[dtype];
  const need = (numel as number) * esize;
  if (raw.byteLength < need) {
    throw bad(ctx, `storage ${entry} has ${raw.byteLength} bytes, but ${numel} ${dtype} elements need ${need} (truncated?)`);
  }
  let buf = raw.byteLength === need && raw.byteOffset === 0 ? raw.buffer : raw.slice(0, need).buffer;
  if (ctx.bigEndian && esize > 1) buf = swapBytes(new Uint8Array(buf), esize).buffer;
  // The tensor is created over `buf` without a copy; views of this storage share it.
  const t = ownedBufferTensor(buf as ArrayBuffer, dtype, [numel as number]);
  const s = new TorchStorage(key, dtype, t);
  ctx.storages.set(cacheKey, s);
  return s;
}

function swapBytes(b: Uint8Array, esize: number): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i += esize) for (let j = 0; j < esize; j++) out[i + j] = b[i + esize - 1 - j];
  return out;
}

/** The most dims a rebuilt tensor may have (libtorch allows 64 in practice; no real tensor has more). */
const MAX_DIMS = 64;

/**
 * A tensor of `size`/`stride` starting at `offset` elements into `storage` (torch's as_strided).
 *
 * Validation: sizes, strides and the offset are non-negative integers, the element count is a safe
 * integer, and the last element addressed, offset + sum((size-1)*stride), lies inside the storage.
 *
 * Decision on memory: torch.save writes views as they are (shared storage, any strides). Dims of
 * stride 0 (expanded tensors, e.g. x.expand(1000, 3)) are loaded as expanded views, as PyTorch does,
 * so a few stored elements never turn into gigabytes. What remains is a view when contiguous;
 * otherwise (a transpose, or overlapping strides) it is gathered into a copy, and the copies of one
 * load may not exceed 4 x the file's size + 64 MiB (a non-overlapping layout never needs more than its
 * storage, so only overlapping strides can reach that limit).
 */
function rebuildTensor(ctx: Ctx, storage: unknown, offset: unknown, size: unknown, stride: unknown, requiresGrad: boolean): Tensor {
  if (!(storage instanceof TorchStorage)) throw bad(ctx, `a tensor is rebuilt from ${describe(storage)} instead of a storage`);
  const ints = (v: unknown): v is number[] => Array.isArray(v) && v.length <= MAX_DIMS && v.every((x) => Number.isSafeInteger(x) && x >= 0);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0 || !ints(size) || !ints(stride) || size.length !== stride.length) {
    throw bad(
      ctx,
      `tensor on storage '${storage.key}' has an invalid offset/size/stride (${describe(offset)}, ${describe(size)}, ${describe(stride)}); sizes and strides must be lists of at most ${MAX_DIMS} non-negative integers`,
    );
  }
  const off = offset as number;
  // The element count of the non-empty dims must be addressable (libtorch computes it in int64).
  let span = 1;
  for (const s of size) if (s > 0) span *= s;
  if (!Number.isSafeInteger(span)) throw bad(ctx, `a tensor of size [${size}] has too many elements`);
  const numel = size.includes(0) ? 0 : span;
  const flat = storage.tensor;
  const storageLen = flat.shape[0];
  let t: Tensor;
  if (numel === 0) {
    t = flat.narrow(0, 0, 0).reshape(size);
  } else {
    let last = off;
    for (let d = 0; d < size.length; d++) last += (size[d] - 1) * stride[d];
    if (!(last < storageLen)) {
      throw bad(
        ctx,
        `a tensor of size [${size}] stride [${stride}] offset ${off} reaches element ${last} of storage '${storage.key}', which has ${storageLen}`,
      );
    }
    // Expanded dims (stride 0, size > 1) become size 1 here and are expanded back as a view below.
    const expanded = size.some((s, d) => s > 1 && stride[d] === 0);
    const baseSize = size.map((s, d) => (stride[d] === 0 ? 1 : s));
    const baseNumel = baseSize.reduce((a, b) => a * b, 1);
    let base: Tensor;
    if (isContiguous(baseSize, stride)) {
      base = flat.narrow(0, off, baseNumel).reshape(baseSize); // a view: shares the storage's memory
    } else {
      // Other strides (transposed, overlapping): gather the elements through an index tensor
      // offset + sum_d arange(size[d]) * stride[d], broadcast over the dims. This copies.
      const cost = baseNumel * (8 + DTYPE_SIZE[storage.dtype]);
      if (cost > ctx.copyBudget) {
        throw bad(
          ctx,
          `a tensor of size [${size}] stride [${stride}] would need ${cost} bytes to copy, beyond the limit for this file (4 x its size + 64 MiB = ${ctx.copyLimit} bytes for all copies of non-contiguous tensors)`,
        );
      }
      ctx.copyBudget -= cost;
      base = scope(() => {
        let idx: Tensor = tensor(BigInt64Array.of(BigInt(off)), { shape: baseSize.map(() => 1) });
        for (let d = 0; d < baseSize.length; d++) {
          if (baseSize[d] === 1) continue;
          const shape = baseSize.map((_, e) => (e === d ? baseSize[d] : 1));
          idx = idx.add(arange(baseSize[d], undefined, 1, { dtype: 'int64' }).mul(stride[d]).reshape(shape));
        }
        return flat.indexSelect(0, idx.flatten()).reshape(baseSize);
      });
    }
    t = expanded ? base.expand(size) : base;
  }
  if (requiresGrad) t.requiresGrad_(true);
  return t;
}

function isContiguous(size: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expected) return false;
    expected *= size[d];
  }
  return true;
}
