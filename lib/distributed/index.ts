// Data-parallel training on PyTorch's c10d (native/distributed/): the process group (TCPStore rendezvous,
// Gloo on CPU, NCCL on CUDA builds), collectives, DistributedDataParallel on c10d's Reducer,
// SyncBatchNorm and PyTorch's DistributedSampler order. The environment is torchrun's (MASTER_ADDR,
// MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, ...), set by `residual launch` or torchrun itself.
import { native as N, type NativeDdp } from '../addon/binding.js';
import { Tensor, hOf, wrapT } from '../tensor/tensor.js';
import { isGradEnabled } from '../autograd/index.js';
import { Module } from '../nn/module.js';
import { BatchNorm2d } from '../nn/layers.js';
import { checkRange, type NumberRange } from '../core/range.js';
import { PORT_RANGE, RANK_RANGE, TIMEOUT_MS_RANGE, WORLD_SIZE_RANGE, envInt, envTimeoutMs } from './env.js';
import type { NativeHandle } from '../addon/binding.js';

export type Backend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'avg' | 'product' | 'min' | 'max';

export interface InitOptions {
  backend?: Backend;
  /** Defaults: RANK, WORLD_SIZE, MASTER_ADDR (127.0.0.1), MASTER_PORT (29500) from the environment. */
  rank?: number;
  worldSize?: number;
  masterAddr?: string;
  masterPort?: number;
  /**
   * Every blocking step (rendezvous, each collective, DDP's all-reduce) fails after this long instead
   * of waiting forever: an integer in [1, 2147483647] (about 24.8 days, as Node's timers). Default:
   * RESIDUAL_DIST_TIMEOUT (seconds) or 30 minutes, as PyTorch.
   */
  timeoutMs?: number;
  /** Network interfaces for Gloo (default: GLOO_SOCKET_IFNAME, comma-separated). */
  ifnames?: string[];
}

export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

/** torchrun's variables, as this process sees them. */
export function distEnv(env: NodeJS.ProcessEnv = process.env): DistEnv {
  const worldSize = envInt(env, 'WORLD_SIZE', WORLD_SIZE_RANGE, 1);
  const rank = envInt(env, 'RANK', RANK_RANGE, 0);
  return {
    rank,
    worldSize,
    localRank: envInt(env, 'LOCAL_RANK', RANK_RANGE, rank),
    localWorldSize: envInt(env, 'LOCAL_WORLD_SIZE', WORLD_SIZE_RANGE, worldSize),
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: envInt(env, 'MASTER_PORT', PORT_RANGE, 29500),
  };
}

let info: { rank: number; worldSize: number; backend: Backend; timeoutMs: number } | null = null;

/**
 * Joins the default process group (every rank calls it). Rank 0 hosts the TCPStore unless torchrun's
 * agent does (TORCHELASTIC_USE_AGENT_STORE=True); the store waits for all workers. The keys follow
 * torch.distributed's layout, so Python ranks can be in the same group.
 */
export async function initProcessGroup(o: InitOptions = {}): Promise<void> {
  if (info) throw new Error('dist.initProcessGroup: already initialised (destroyProcessGroup() first)');
  const e = process.env;
  const what = 'dist.initProcessGroup';
  // Every number exactly, before anything is started: a fraction, NaN, Infinity or a value outside
  // the range is refused here, naming it (native code checks again).
  const worldSize = o.worldSize ?? envInt(e, 'WORLD_SIZE', WORLD_SIZE_RANGE, 1);
  checkRange(`${what}: worldSize`, worldSize, WORLD_SIZE_RANGE);
  const rank = o.rank ?? envInt(e, 'RANK', RANK_RANGE, 0);
  checkRange(`${what}: rank`, rank, { ...RANK_RANGE, max: worldSize - 1 });
  const masterPort = o.masterPort ?? envInt(e, 'MASTER_PORT', PORT_RANGE, 29500);
  checkRange(`${what}: masterPort`, masterPort, PORT_RANGE);
  const timeoutMs = o.timeoutMs ?? envTimeoutMs(e) ?? 30 * 60 * 1000;
  checkRange(`${what}: timeoutMs`, timeoutMs, TIMEOUT_MS_RANGE);
  const backend = o.backend ?? 'gloo';
  if (backend !== 'gloo' && backend !== 'nccl') throw new TypeError(`${what}: backend must be 'gloo' or 'nccl', got ${String(backend)}`);
  const ifnames = o.ifnames ?? (e.GLOO_SOCKET_IFNAME ? e.GLOO_SOCKET_IFNAME.split(',').filter(Boolean) : []);
  await N.distInit({
    backend,
    rank,
    worldSize,
    masterAddr: o.masterAddr ?? (e.MASTER_ADDR || '127.0.0.1'),
    masterPort,
    timeoutMs,
    hostStore: rank === 0,
    agentStore: (e.TORCHELASTIC_USE_AGENT_STORE ?? '') === 'True',
    ifnames: ifnames.join(','),
  });
  info = { rank, worldSize, backend, timeoutMs };
  queue = Promise.resolve();
}

// Collectives are issued one at a time, in the order they are called: each waits for the one before
// (the agreement step and the collective run on a worker thread, so two in flight could be issued in
// different orders on different ranks).
let queue: Promise<unknown> = Promise.resolve();
function serial<T>(job: () => Promise<T>): Promise<T> {
  const p = queue.then(job, job);
  queue = p.catch(() => undefined);
  return p;
}

export function isInitialized(): boolean {
  return info !== null;
}
function need(what: string): NonNullable<typeof info> {
  if (!info) throw new Error(`dist.${what}: no process group (call dist.initProcessGroup() first)`);
  return info;
}
/** This process's rank (0 when no group is initialised). */
export function getRank(): number {
  return info?.rank ?? 0;
}
/** The number of ranks (1 when no group is initialised). */
export function getWorldSize(): number {
  return info?.worldSize ?? 1;
}
export function getBackend(): Backend | null {
  return info?.backend ?? null;
}

/**
 * All-reduces the tensors in place across every rank. Resolves when done; the tensors must not be
 * used until then. 'avg' is a sum divided by the world size (Gloo has no native average), for
 * floating-point tensors only (an integer average is refused before anything is sent). The ranks first
 * check that they agree (the op, the number of tensors, each one's dtype and element count): when
 * they do not, every rank rejects with the same error (a DtypeError or ShapeError naming the ranks).
 */
export async function allReduce(tensors: Tensor | Tensor[], op: ReduceOp = 'sum'): Promise<void> {
  const g = need('allReduce');
  const list = Array.isArray(tensors) ? tensors : [tensors];
  if (!['sum', 'avg', 'product', 'min', 'max'].includes(op))
    throw new TypeError(`dist.allReduce: op must be 'sum', 'avg', 'product', 'min' or 'max', got ${String(op)}`);
  const hs = list.map(hOf);
  await serial(() => N.distAllReduce(hs, op));
  if (op === 'avg') for (const t of list) t.div_(g.worldSize);
}

/** Copies rank `src`'s tensors into every rank's tensors (in place); the ranks must agree on src, dtypes and sizes. */
export async function broadcast(tensors: Tensor | Tensor[], src = 0): Promise<void> {
  const g = need('broadcast');
  checkRange('dist.broadcast: src', src, { integer: true, min: 0, max: g.worldSize - 1 });
  const list = Array.isArray(tensors) ? tensors : [tensors];
  const hs = list.map(hOf);
  await serial(() => N.distBroadcast(hs, src));
}

/** Every rank's tensor, in rank order (new tensors the caller owns); every rank's tensor must have the same dtype and shape. */
export async function allGather(t: Tensor): Promise<Tensor[]> {
  need('allGather');
  const h = hOf(t);
  const hs: NativeHandle[] = await serial(() => N.distAllGather(h));
  return hs.map((x) => wrapT(x));
}

/** Waits until every rank has reached the barrier. */
export async function barrier(): Promise<void> {
  need('barrier');
  await serial(() => N.distBarrier());
}

/** Leaves the group: Gloo's threads stop and the store connection closes. */
export function destroyProcessGroup(): void {
  if (!info) return;
  N.distDestroy();
  info = null;
}

// ---- DistributedDataParallel ----------------------------------------------------------------------

export interface DDPOptions {
  /** Bucket size for the gradient all-reduce (PyTorch's default 25 MB). */
  bucketCapMB?: number;
  /** Broadcast rank 0's buffers (BatchNorm running stats) before each forward, as PyTorch (default true). */
  broadcastBuffers?: boolean;
  /** Allow parameters that get no gradient in an iteration (slower: the graph is searched). */
  findUnusedParameters?: boolean;
}

/** bucketCapMB: more than 0, at most 2^30 MB (a bucket's size in bytes must stay a safe integer). */
const BUCKET_MB_RANGE: NumberRange = { min: 0, minExclusive: true, max: 2 ** 30 };

/** The same class as `e` (DtypeError, ShapeError, ...) with a new message; `e` is the cause. */
function rewrap(e: Error, message: string): Error {
  const C = (e?.constructor ?? Error) as new (m: string, o?: { cause?: unknown }) => Error;
  try {
    return new C(message, { cause: e });
  } catch {
    return new Error(message, { cause: e });
  }
}

/**
 * Wraps a model for data-parallel training on c10d's Reducer, as torch's DDP: at construction the
 * replicas are checked for the same parameters and buffers (names, dtypes, shapes, devices,
 * requires-grad; on every rank, a replica that differs is refused with an error naming the tensor and
 * the ranks) and rank 0's parameters and buffers are broadcast; in backward, gradients are all-reduced in buckets while
 * backward is still running and averaged, so every rank's optimizer step is the same. The wrapper's
 * state dict has PyTorch's `module.` prefix; save `ddp.module` for plain keys.
 */
export class DistributedDataParallel<M extends Module = Module> extends Module {
  readonly module: M;
  readonly options: Required<DDPOptions>;
  private nativeDdp: NativeDdp | null = null;
  private requireForwardParamSync = true;

  constructor(module: M, o: DDPOptions = {}) {
    super();
    need('DistributedDataParallel');
    this.module = this.registerModule('module', module);
    this.options = {
      bucketCapMB: o.bucketCapMB ?? 25,
      broadcastBuffers: o.broadcastBuffers ?? true,
      findUnusedParameters: o.findUnusedParameters ?? false,
    };
    const cap = this.options.bucketCapMB;
    checkRange('DistributedDataParallel: bucketCapMB', cap, BUCKET_MB_RANGE);
    const namedParams = [...module.namedParameters()];
    const namedBufs = [...module.namedBuffers()];
    const params = namedParams.map(([, p]) => p).filter((p) => p.requiresGrad);
    const buffers = namedBufs.map(([, b]) => b);
    const mb = 1024 * 1024;
    try {
      const named = [...namedParams, ...(this.options.broadcastBuffers ? namedBufs : [])];
      this.nativeDdp = N.ddpCreate(
        params.map(hOf),
        named.map(([, t]) => hOf(t)),
        buffers.map(hOf),
        {
          bucketCapBytes: Math.max(1, Math.floor(cap * mb)),
          // PyTorch: a 1 MB first bucket only with the default cap
          firstBucketBytes: o.bucketCapMB === undefined ? mb : Math.max(1, Math.floor(cap * mb)),
          findUnusedParameters: this.options.findUnusedParameters,
          names: named.map(([k]) => k),
        },
      );
    } catch (e) {
      const msg = (e as Error).message;
      // c10d checks each replica against rank 0's on the other ranks: rank 0 only sees them leave.
      if (/Connection (closed|reset) by peer|Timed out|timeout/i.test(msg)) {
        throw new Error(
          `[rank ${getRank()}] DistributedDataParallel: another rank failed while the replicas were being checked against rank 0's and ` +
            `synchronised (a replica whose parameters differ from rank 0's is refused there: see that rank's error). ${msg}`,
          { cause: e },
        );
      }
      throw rewrap(e as Error, `[rank ${getRank()}] DistributedDataParallel: ${msg.replace(/^ddpCreate: /, '')}`);
    }
  }

  private handle(): NativeDdp {
    if (!this.nativeDdp) throw new Error('DistributedDataParallel: used after destroy()');
    return this.nativeDdp;
  }

  override forward(x: Tensor): Tensor {
    const h = this.handle();
    const grad = isGradEnabled();
    const syncBuffers = this.options.broadcastBuffers && this.requireForwardParamSync && this.module.buffers().length > 0;
    N.ddpPreForward(h, grad, syncBuffers);
    const out = this.module.call(x);
    if (grad) {
      this.requireForwardParamSync = true;
      N.ddpPostForward(h, [hOf(out)]);
    } else {
      this.requireForwardParamSync = false;
    }
    return out;
  }

  /** Removes the Reducer's hooks (the wrapped module stays usable on its own). */
  destroy(): void {
    if (!this.nativeDdp) return;
    N.ddpDestroy(this.nativeDdp);
    this.nativeDdp = null;
  }
}

// ---- SyncBatchNorm ------------------------------------------------------------------------------

/**
 * BatchNorm whose batch statistics (and their gradients) are all-reduced over the process group in
 * training, so normalisation sees the global batch. Outside a group, or in eval mode, it is
 * BatchNorm2d. Works on any number of spatial dimensions the input has (N, C, ...).
 */
export class SyncBatchNorm extends BatchNorm2d {
  override forward(x: Tensor): Tensor {
    if (!this.training || !isInitialized() || getWorldSize() === 1) return super.forward(x);
    if (x.shape.length < 2 || x.shape[1] !== this.numFeatures) {
      throw new Error(`${this.label()}: expected input [N, ${this.numFeatures}, ...], got [${x.shape.join(', ')}]`);
    }
    let factor = 0;
    if (this.trackRunningStats) {
      const n = this.numBatchesTracked!.add_(1);
      factor = this.momentum ?? 1 / Number(n.item());
    }
    const w = this.weight,
      b = this.bias,
      rm = this.runningMean,
      rv = this.runningVar;
    return wrapT(
      N.distSyncBatchNorm(hOf(x), w ? hOf(w) : null, b ? hOf(b) : null, rm ? hOf(rm) : null, rv ? hOf(rv) : null, factor, this.eps),
    );
  }
}

/**
 * Replaces every BatchNorm2d in the model by a SyncBatchNorm that takes over the same parameter and
 * buffer tensors (so optimizers built earlier keep working), and returns the model (a BatchNorm2d
 * given as the model itself comes back converted).
 */
export function convertSyncBatchNorm<M extends Module>(model: M): M {
  const convert = (bn: BatchNorm2d): SyncBatchNorm => {
    const s = new SyncBatchNorm(bn.numFeatures, {
      eps: bn.eps,
      momentum: bn.momentum,
      affine: bn.affine,
      trackRunningStats: bn.trackRunningStats,
    });
    const sp = s as unknown as { _parameters: Map<string, Tensor | null>; _buffers: Map<string, Tensor | null> };
    const bp = bn as unknown as { _parameters: Map<string, Tensor | null>; _buffers: Map<string, Tensor | null> };
    for (const [k, t] of sp._parameters) (t?.dispose(), sp._parameters.set(k, bp._parameters.get(k) ?? null));
    for (const [k, t] of sp._buffers) (t?.dispose(), sp._buffers.set(k, bp._buffers.get(k) ?? null));
    s.training = bn.training;
    return s;
  };
  if (model instanceof BatchNorm2d && !(model instanceof SyncBatchNorm)) return convert(model) as unknown as M;
  const visit = (m: Module): void => {
    const kids = (m as unknown as { _modules: Map<string, Module> })._modules;
    for (const [name, child] of [...kids]) {
      if (child instanceof BatchNorm2d && !(child instanceof SyncBatchNorm)) m.registerModule(name, convert(child));
      else visit(child);
    }
  };
  visit(model);
  return model;
}

// ---- DistributedSampler -------------------------------------------------------------------------

export interface DistributedSamplerOptions {
  numReplicas?: number;
  rank?: number;
  shuffle?: boolean;
  seed?: number;
  dropLast?: boolean;
}

/**
 * This rank's share of a dataset of `size` items, in exactly PyTorch's DistributedSampler order for
 * the same seed, epoch, rank and world size: a permutation from torch's randperm seeded with
 * seed + epoch, padded by repeating its start to a multiple of the world size (or, with dropLast,
 * cut to one), then every numReplicas-th item from `rank`.
 */
export class DistributedSampler {
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  epoch = 0;
  constructor(
    readonly size: number,
    o: DistributedSamplerOptions = {},
  ) {
    this.numReplicas = o.numReplicas ?? getWorldSize();
    this.rank = o.rank ?? getRank();
    this.shuffle = o.shuffle ?? true;
    this.seed = o.seed ?? 0;
    this.dropLast = o.dropLast ?? false;
    if (!Number.isSafeInteger(size) || size < 0)
      throw new RangeError(`DistributedSampler: size must be a non-negative integer, got ${size}`);
    checkRange('DistributedSampler: seed', this.seed, { integer: true });
    if (!Number.isInteger(this.numReplicas) || this.numReplicas < 1)
      throw new RangeError(`DistributedSampler: numReplicas must be >= 1, got ${this.numReplicas}`);
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.numReplicas) {
      throw new RangeError(`DistributedSampler: invalid rank ${this.rank}, rank should be in the interval [0, ${this.numReplicas - 1}]`);
    }
  }
  /** Items per rank per epoch. */
  get numSamples(): number {
    const n = this.size,
      w = this.numReplicas;
    return Math.max(0, this.dropLast && n % w !== 0 ? Math.ceil((n - w) / w) : Math.ceil(n / w));
  }
  get totalSize(): number {
    return this.numSamples * this.numReplicas;
  }
  setEpoch(epoch: number): void {
    checkRange('DistributedSampler.setEpoch: epoch', epoch, { integer: true, min: 0 });
    this.epoch = epoch;
  }
  /** This rank's indices for the current epoch. */
  indices(): number[] {
    let all: number[];
    if (this.shuffle) {
      const t = wrapT(N.distSamplerPerm(this.size, this.seed + this.epoch));
      try {
        all = Array.from(t.toTypedArray() as BigInt64Array, Number);
      } finally {
        t.dispose();
      }
    } else {
      all = Array.from({ length: this.size }, (_, i) => i);
    }
    const total = this.totalSize;
    if (!this.dropLast) {
      const pad = total - all.length;
      if (pad > 0) {
        if (pad <= all.length) all = all.concat(all.slice(0, pad));
        else {
          const reps = Math.ceil(pad / all.length);
          let extra: number[] = [];
          for (let r = 0; r < reps; r++) extra = extra.concat(all);
          all = all.concat(extra.slice(0, pad));
        }
      }
    } else {
      all = all.slice(0, total);
    }
    const out: number[] = [];
    for (let i = this.rank; i < total; i += this.numReplicas) out.push(all[i]);
    return out;
  }
}
