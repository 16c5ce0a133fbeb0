// PyTorch checkpoints (torch.save, zip format) without Python. The archive holds `<root>/data.pkl`, a
// pickle of the saved object, and one entry `<root>/data/<key>` of raw little-endian bytes per tensor
// storage. The pickle is read by our restricted unpickler: the only globals it may name are the few
// torch / collections functions below, which we implement in TypeScript, so loading never executes
// code from the file (torch.load(weights_only=True) makes the same promise).
import fs from 'node:fs';
import { DTYPE_SIZE, type DType } from '../tensor/dtype.js';
import { scope } from '../tensor/scope.js';
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
  FloatStorage: 'float32', DoubleStorage: 'float64', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8',
  BoolStorage: 'bool', UntypedStorage: 'uint8',
};

const TORCH_DTYPES: Record<string, DType> = {
  float32: 'float32', float: 'float32', float64: 'float64', double: 'float64', float16: 'float16', half: 'float16',
  bfloat16: 'bfloat16', int64: 'int64', long: 'int64', int32: 'int32', int: 'int32', int16: 'int16', short: 'int16',
  int8: 'int8', uint8: 'uint8', bool: 'bool',
};

/** Everything needed while one archive is read. */
interface Ctx {
  file: string;
  zip: ZipReader;
  root: string;
  bigEndian: boolean;
  bytes: Map<string, Uint8Array>;
  storages: Map<string, TorchStorage>;
  orderedDicts: WeakSet<object>;
}

/**
 * Loads a torch.save'd checkpoint as a flat record of tensors (on the CPU, whatever device they were
 * saved from): nested dicts and lists are flattened into 'a.b.c' keys, non-tensor values (numbers,
 * strings, None) are left out. For the full structure use loadTorchPickle.
 */
export function loadTorchCheckpoint(file: string): Record<string, Tensor> {
  return scope(() => {
    const root = readArchive(file);
    if (!(root instanceof Map)) {
      throw new Error(`${file}: expected the checkpoint to hold a dict of tensors (a state dict), found ${root instanceof Tensor ? 'a single tensor' : describe(root)}; use loadTorchPickle to read it`);
    }
    const out: Record<string, Tensor> = {};
    const seen = new Set<Tensor>();
    flatten(root, '', out, seen, 0);
    return out;
  });
}

/**
 * Loads a torch.save'd object as plain JS values: dicts become Maps (OrderedDict too), tuples and lists
 * Arrays, sets Sets, tensors CPU Tensors (views of one storage share memory, as in PyTorch).
 */
export function loadTorchPickle(file: string): unknown {
  return scope(() => readArchive(file));
}

function flatten(v: unknown, prefix: string, out: Record<string, Tensor>, seen: Set<Tensor>, depth: number): void {
  if (depth > 100) throw new Error(`nesting deeper than 100 levels at '${prefix}'`);
  const key = (k: unknown): string => (prefix ? `${prefix}.${String(k)}` : String(k));
  if (v instanceof Tensor) {
    // The same tensor object reached twice (memoized in the pickle) gets its own handle per key, so
    // disposing one entry never invalidates another; both still share memory.
    if (seen.has(v)) {
      const alias = v.detach();
      if (v.requiresGrad) alias.requiresGrad_(true);
      out[prefix] = alias;
    } else {
      seen.add(v);
      out[prefix] = v;
    }
  } else if (v instanceof Map) {
    for (const [k, x] of v) flatten(x, key(k), out, seen, depth + 1);
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => flatten(x, key(i), out, seen, depth + 1));
  }
}

/** Opens the archive and unpickles data.pkl; storages are read as the pickle asks for them. */
function readArchive(file: string): unknown {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  checkNotLegacy(file);
  const zip = new ZipReader(file);
  try {
    const pkl = zip.names().find((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (!pkl) {
      const what = zip.names().some((n) => n.endsWith('constants.pkl')) ? ' (it looks like a TorchScript archive, which is not supported)' : '';
      throw new Error(`${file}: not a PyTorch checkpoint: the zip archive has no <name>/data.pkl entry${what}`);
    }
    const root = pkl.slice(0, pkl.indexOf('/'));
    let bigEndian = false;
    if (zip.has(`${root}/byteorder`)) {
      const order = new TextDecoder().decode(zip.read(`${root}/byteorder`)).trim();
      if (order !== 'little' && order !== 'big') throw new Error(`${file}: unknown byte order '${order}' in ${root}/byteorder`);
      bigEndian = order === 'big';
    }
    const ctx: Ctx = { file, zip, root, bigEndian, bytes: new Map(), storages: new Map(), orderedDicts: new WeakSet() };
    return unpickle(zip.read(pkl), {
      file,
      findClass: (module, name) => findClass(ctx, module, name),
      persistentLoad: (pid) => persistentLoad(ctx, pid),
      build: (obj, state) => build(ctx, obj, state),
    });
  } finally {
    zip.close();
  }
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
    throw new Error(`${file}: this is the legacy (non-zip) torch.save format, which is not supported; re-save it with torch.save(obj, file) from PyTorch 1.6 or later`);
  }
}

function refuse(ctx: Ctx, qualname: string): Error {
  return new Error(`${ctx.file}: refusing to load: the checkpoint references '${qualname}', which is not a tensor or container (loading never executes code from the file)`);
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
        if (!(func instanceof PyCallable) || !Array.isArray(args)) throw new Error(`${ctx.file}: malformed _rebuild_from_type_v2 call`);
        return func.fn(args);
      });
    case 'torch.Tensor':
    case 'torch._tensor.Tensor':
    case 'torch.nn.parameter.Parameter':
      return new TensorClass(q);
    case 'torch.device':
      return new PyCallable(q, (a) => (a.length > 1 && a[1] !== null ? `${a[0]}:${a[1]}` : String(a[0])));
    case 'builtins.set':
    case '__builtin__.set':
    case 'builtins.frozenset':
    case '__builtin__.frozenset':
      return new PyCallable(q, (a) => new Set(a.length ? iterable(ctx, a[0]) : []));
    case '_codecs.encode':
      // Protocol 2 pickles Python 3 bytes as _codecs.encode(text, 'latin1').
      return new PyCallable(q, (a) => {
        if (typeof a[0] !== 'string' || (a[1] !== 'latin1' && a[1] !== 'latin-1')) throw refuse(ctx, `${q} with encoding ${describe(a[1])}`);
        return Uint8Array.from(a[0], (c) => c.charCodeAt(0));
      });
  }
  if (module === 'torch' || module === 'torch.storage') {
    if (name in STORAGE_TYPES) return new StorageType(name, STORAGE_TYPES[name]);
    if (module === 'torch' && name in TORCH_DTYPES) return new TorchDType(TORCH_DTYPES[name]);
  }
  throw refuse(ctx, q);
}

/** BUILD is only accepted on an OrderedDict, whose state (the module's `_metadata`) we do not need. */
function build(ctx: Ctx, obj: unknown, state: unknown): unknown {
  if (obj instanceof Map && ctx.orderedDicts.has(obj)) return obj;
  throw new Error(`${ctx.file}: unsupported pickle: BUILD (setting object state) on ${describe(obj)} with ${describe(state)}`);
}

function pairs(ctx: Ctx, v: unknown): [unknown, unknown][] {
  if (v instanceof Map) return [...v];
  return iterable(ctx, v).map((p) => {
    if (!Array.isArray(p) || p.length !== 2) throw new Error(`${ctx.file}: OrderedDict argument is not a list of pairs`);
    return [p[0], p[1]];
  });
}

function iterable(ctx: Ctx, v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (v instanceof Set) return [...v];
  throw new Error(`${ctx.file}: expected a list, got ${describe(v)}`);
}

function expectTensor(ctx: Ctx, v: unknown, where: string): Tensor {
  if (!(v instanceof Tensor)) throw new Error(`${ctx.file}: ${where} expects a tensor, got ${describe(v)}`);
  return v;
}

/** ('storage', storage_type, key, location, numel) -> the storage as a flat CPU tensor of its dtype. */
function persistentLoad(ctx: Ctx, pid: unknown): TorchStorage {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
    throw new Error(`${ctx.file}: unsupported persistent id ${describe(pid)} (expected ('storage', type, key, location, numel))`);
  }
  const [, type, key, , numel] = pid;
  let dtype: DType;
  if (type instanceof StorageType || type instanceof TorchDType) dtype = type.dtype;
  else throw new Error(`${ctx.file}: storage '${String(key)}' has an unsupported type ${describe(type)}`);
  if (typeof key !== 'string' || !Number.isSafeInteger(numel) || (numel as number) < 0) {
    throw new Error(`${ctx.file}: malformed storage id ${describe(pid)}`);
  }
  const cacheKey = `${key}/${dtype}`;
  const cached = ctx.storages.get(cacheKey);
  if (cached) return cached;

  const entry = `${ctx.root}/data/${key}`;
  let raw = ctx.bytes.get(key);
  if (!raw) {
    if (!ctx.zip.has(entry)) throw new Error(`${ctx.file}: the pickle refers to storage '${key}' but the archive has no entry ${entry}`);
    raw = ctx.zip.read(entry);
    ctx.bytes.set(key, raw);
  }
  const esize = DTYPE_SIZE[dtype];
  const need = (numel as number) * esize;
  if (raw.byteLength < need) {
    throw new Error(`${ctx.file}: storage ${entry} has ${raw.byteLength} bytes, but ${numel} ${dtype} elements need ${need} (truncated?)`);
  }
  let buf = raw.byteLength === need && raw.byteOffset === 0 ? raw.buffer : raw.slice(0, need).buffer;
  if (ctx.bigEndian && esize > 1) buf = swapBytes(new Uint8Array(buf), esize).buffer;
  // The tensor is created over `buf` without a copy; views of this storage share it.
  const t = tensor(buf as ArrayBuffer, { dtype, shape: [numel as number], share: true });
  const s = new TorchStorage(key, dtype, t);
  ctx.storages.set(cacheKey, s);
  return s;
}

function swapBytes(b: Uint8Array, esize: number): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i += esize) for (let j = 0; j < esize; j++) out[i + j] = b[i + esize - 1 - j];
  return out;
}

/** A tensor of `size`/`stride` starting at `offset` elements into `storage` (torch's as_strided). */
function rebuildTensor(ctx: Ctx, storage: unknown, offset: unknown, size: unknown, stride: unknown, requiresGrad: boolean): Tensor {
  if (!(storage instanceof TorchStorage)) throw new Error(`${ctx.file}: a tensor is rebuilt from ${describe(storage)} instead of a storage`);
  const ints = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0 || !ints(size) || !ints(stride) || size.length !== stride.length) {
    throw new Error(`${ctx.file}: tensor on storage '${storage.key}' has an invalid offset/size/stride (${describe(offset)}, ${describe(size)}, ${describe(stride)})`);
  }
  const off = offset as number;
  const numel = size.reduce((a, b) => a * b, 1);
  const flat = storage.tensor;
  const storageLen = flat.shape[0];
  let t: Tensor;
  if (numel === 0) {
    t = flat.narrow(0, 0, 0).reshape(size);
  } else {
    let last = off;
    for (let d = 0; d < size.length; d++) last += (size[d] - 1) * stride[d];
    if (last >= storageLen) {
      throw new Error(`${ctx.file}: a tensor of size [${size}] stride [${stride}] offset ${off} reaches element ${last} of storage '${storage.key}', which has ${storageLen}`);
    }
    if (isContiguous(size, stride)) {
      t = flat.narrow(0, off, numel).reshape(size); // a view: shares the storage's memory
    } else {
      // Other strides (transposed, expanded): gather the elements through an index tensor
      // offset + sum_d arange(size[d]) * stride[d], broadcast over the dims. This copies.
      t = scope(() => {
        let idx: Tensor = tensor(BigInt64Array.of(BigInt(off)), { shape: size.map(() => 1) });
        for (let d = 0; d < size.length; d++) {
          const shape = size.map((_, e) => (e === d ? size[d] : 1));
          idx = idx.add(arange(size[d], undefined, 1, { dtype: 'int64' }).mul(stride[d]).reshape(shape));
        }
        return flat.indexSelect(0, idx.flatten()).reshape(size);
      });
    }
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
