// Data-parallel training on PyTorch's c10d (native/dist.cpp): the process group (TCPStore rendezvous,
// Gloo on CPU, NCCL on CUDA builds), collectives, DistributedDataParallel on c10d's Reducer,
// SyncBatchNorm and PyTorch's DistributedSampler order. The environment is torchrun's (MASTER_ADDR,
// MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, ...), set by `residual launch` or torchrun itself.
import { native as N, type NativeDdp } from '../addon/binding.js';
import { Tensor, hOf, wrapT } from '../tensor/tensor.js';
import { isGradEnabled } from '../autograd/index.js';
import { Module } from '../nn/module.js';
import { BatchNorm2d } from '../nn/layers.js';
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
   * of waiting forever. Default: RESIDUAL_DIST_TIMEOUT (seconds) or 30 minutes, as PyTorch.
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

function envInt(env: NodeJS.ProcessEnv, name: string, dflt?: number): number {
  const v = env[name];
  if (v === undefined || v === '') {
    if (dflt === undefined) throw new Error(`dist: ${name} is not set (start the job with \`residual launch\` or torchrun, or pass it in the options)`);
    return dflt;
  }
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`dist: ${name} must be a non-negative integer, got '${v}'`);
  return n;
}

/** torchrun's variables, as this process sees them. */
export function distEnv(env: NodeJS.ProcessEnv = process.env): DistEnv {
  const worldSize = envInt(env, 'WORLD_SIZE', 1);
  const rank = envInt(env, 'RANK', 0);
  return {
    rank,
    worldSize,
    localRank: envInt(env, 'LOCAL_RANK', rank),
    localWorldSize: envInt(env, 'LOCAL_WORLD_SIZE', worldSize),
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: envInt(env, 'MASTER_PORT', 29500),
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
  const rank = o.rank ?? envInt(e, 'RANK', 0);
  const worldSize = o.worldSize ?? envInt(e, 'WORLD_SIZE', 1);
  const envTimeout = e.RESIDUAL_DIST_TIMEOUT ? Number(e.RESIDUAL_DIST_TIMEOUT) * 1000 : undefined;
  const timeoutMs = o.timeoutMs ?? envTimeout ?? 30 * 60 * 1000;
  if (!(timeoutMs >= 1)) throw new RangeError(`dist.initProcessGroup: timeoutMs must be positive, got ${timeoutMs}`);
  const backend = o.backend ?? 'gloo';
  const ifnames = o.ifnames ?? (e.GLOO_SOCKET_IFNAME ? e.GLOO_SOCKET_IFNAME.split(',').filter(Boolean) : []);
  await N.distInit({
    backend,
    rank,
    worldSize,
    masterAddr: o.masterAddr ?? (e.MASTER_ADDR || '127.0.0.1'),
    masterPort: o.masterPort ?? envInt(e, 'MASTER_PORT', 29500),
    timeoutMs,
    hostStore: rank === 0,
    agentStore: (e.TORCHELASTIC_USE_AGENT_STORE ?? '') === 'True',
    ifnames: ifnames.join(','),
  });
  info = { rank, worldSize, backend, timeoutMs };
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
 * used until then. 'avg' is a sum divided by the world size (Gloo has no native average).
 */
export async function allReduce(tensors: Tensor | Tensor[], op: ReduceOp = 'sum'): Promise<void> {
  const g = need('allReduce');
  const list = Array.isArray(tensors) ? tensors : [tensors];
  await N.distAllReduce(list.map(hOf), op === 'avg' ? 'sum' : op);
  if (op === 'avg') for (const t of list) t.div_(g.worldSize);
}

/** Copies rank `src`'s tensor into every rank's tensor (in place). */
export async function broadcast(tensors: Tensor | Tensor[], src = 0): Promise<void> {
  need('broadcast');
  const list = Array.isArray(tensors) ? tensors : [tensors];
  await N.distBroadcast(list.map(hOf), src);
}

/** Every rank's tensor, in rank order (new tensors the caller owns). */
export async function allGather(t: Tensor): Promise<Tensor[]> {
  need('allGather');
  const hs: NativeHandle[] = await N.distAllGather(hOf(t));
  return hs.map((h) => wrapT(h));
}

/** Waits until every rank has reached the barrier. */
export async function barrier(): Promise<void> {
  need('barrier');
  await N.distBarrier();
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


/**
 * Wraps a model for data-parallel training on c10d's Reducer, as torch's DDP: at construction the
 * replicas are checked for the same parameter shapes (disagreeing ones are refused) and rank 0's
 * parameters and buffers are broadcast; in backward, gradients are all-reduced in buckets while
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
    this.options = { bucketCapMB: o.bucketCapMB ?? 25, broadcastBuffers: o.broadcastBuffers ?? true, findUnusedParameters: o.findUnusedParameters ?? false };
    const cap = this.options.bucketCapMB;
    if (!(cap > 0)) throw new RangeError(`DistributedDataParallel: bucketCapMB must be positive, got ${cap}`);
    const params = module.parameters().filter((p) => p.requiresGrad);
    const buffers = module.buffers();
    const mb = 1024 * 1024;
    try {
      const states = [...module.parameters(), ...(this.options.broadcastBuffers ? buffers : [])];
      this.nativeDdp = N.ddpCreate(params.map(hOf), states.map(hOf), buffers.map(hOf), {
        bucketCapBytes: Math.floor(cap * mb),
        // PyTorch: a 1 MB first bucket only with the default cap
        firstBucketBytes: o.bucketCapMB === undefined ? mb : Math.floor(cap * mb),
        findUnusedParameters: this.options.findUnusedParameters,
      });
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
      throw new Error(`[rank ${getRank()}] DistributedDataParallel: ${msg.replace(/^ddpCreate: /, '')}`, { cause: e });
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
    const w = this.weight, b = this.bias, rm = this.runningMean, rv = this.runningVar;
    return wrapT(N.distSyncBatchNorm(hOf(x), w ? hOf(w) : null, b ? hOf(b) : null, rm ? hOf(rm) : null, rv ? hOf(rv) : null, factor, this.eps));
  }
}

/**
 * Replaces every BatchNorm2d in the model by a SyncBatchNorm that takes over the same parameter and
 * buffer tensors (so optimizers built earlier keep working), and returns the model (a BatchNorm2d
 * given as the model itself comes back converted).
 */
export function convertSyncBatchNorm<M extends Module>(model: M): M {
  const convert = (bn: BatchNorm2d): SyncBatchNorm => {
    const s = new SyncBatchNorm(bn.numFeatures, { eps: bn.eps, momentum: bn.momentum, affine: bn.affine, trackRunningStats: bn.trackRunningStats });
    const sp = s as unknown as { _parameters: Map<string, Tensor | null>; _buffers: Map<string, Tensor | null> };
    const bp = bn as unknown as { _parameters: Map<string, Tensor | null>; _buffers: Map<string, Tensor | null> };
    for (const [k, t] of sp._parameters) t?.dispose(), sp._parameters.set(k, bp._parameters.get(k) ?? null);
    for (const [k, t] of sp._buffers) t?.dispose(), sp._buffers.set(k, bp._buffers.get(k) ?? null);
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
  constructor(readonly size: number, o: DistributedSamplerOptions = {}) {
    this.numReplicas = o.numReplicas ?? getWorldSize();
    this.rank = o.rank ?? getRank();
    this.shuffle = o.shuffle ?? true;
    this.seed = o.seed ?? 0;
    this.dropLast = o.dropLast ?? false;
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`DistributedSampler: size must be a non-negative integer, got ${size}`);
    if (!Number.isInteger(this.numReplicas) || this.numReplicas < 1) throw new RangeError(`DistributedSampler: numReplicas must be >= 1, got ${this.numReplicas}`);
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.numReplicas) {
      throw new RangeError(`DistributedSampler: invalid rank ${this.rank}, rank should be in the interval [0, ${this.numReplicas - 1}]`);
    }
  }
  /** Items per rank per epoch. */
  get numSamples(): number {
    const n = this.size, w = this.numReplicas;
    return Math.max(0, this.dropLast && n % w !== 0 ? Math.ceil((n - w) / w) : Math.ceil(n / w));
  }
  get totalSize(): number {
    return this.numSamples * this.numReplicas;
  }
  setEpoch(epoch: number): void {
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
