// The types the native binding's signatures are written in (lib/addon/binding.generated.ts imports
// them). The op table's argument readers map onto the first few (scripts/codegen/gen-native-types.mjs:
// T -> Handle, IL -> IntList, TOS -> Handle | Boxed, Dtype -> number, ...); the rest are the option
// objects and results of the hand-written functions, named in their ENTRY lines' signatures.

/**
 * A native tensor reference: the id of a slot in the addon's handle table (a number: the thread's
 * tag, a generation and an index), so creating a tensor allocates no V8 object besides the Tensor.
 * Branded, so a plain number (a dim, a size) is never taken for a tensor.
 */
export type Handle = number & { readonly __nativeTensor: unique symbol };
/** A device as the addon names it: 'cpu' or 'cuda:N' (it also accepts 'cuda', meaning 'cuda:0'). */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
/** An integer, or a list of integers (the IL reader: shapes, dims, strides). */
export type IntList = number | readonly number[];
/** A scalar operand of an op that takes a tensor or a number (the TOS reader), boxed as [value]. */
export type Boxed = readonly [number | boolean];
/** A data loader's batch: [inputs, labels]. */
export type NativeBatch = [x: Handle, y: Handle];

// Native objects (type-tagged externals), opaque on the JS side.
/** A data loader of either kind (loaderCreate: tensors in memory; streamCreate: folders and shards). */
export type NativeLoader = { readonly __nativeLoader: unique symbol };
export type NativeOptimizer = { readonly __nativeOptimizer: unique symbol };
export type NativeDdp = { readonly __nativeDdp: unique symbol };
export type NativeStore = { readonly __nativeStore: unique symbol };
export type NativeGraph = { readonly __nativeGraph: unique symbol };

/** configure(): once per environment, by lib/addon/binding.ts. */
export interface ConfigureOptions {
  errorClasses?: Partial<Record<'generic' | 'shape' | 'dtype' | 'device' | 'disposed' | 'oom' | 'badFile', new (message: string) => Error>>;
  maxArrayBufferBytes?: number;
}

export interface MemoryInfo {
  /** Live tensor references (JS Tensors not disposed nor collected). */
  tensors: number;
  /** Distinct storages behind them. */
  storages: number;
  /** Bytes of those storages per device: {cpu, 'cuda:0', ...}. */
  bytes: Record<string, number>;
}

export interface CudaMemoryStats {
  allocatedBytes: number;
  peakAllocatedBytes: number;
  reservedBytes: number;
  peakReservedBytes: number;
  allocations: number;
  numAllocRetries: number;
  deviceFreeBytes?: number;
  deviceTotalBytes?: number;
}

export interface CudaDeviceInfo {
  name: string;
  totalMemory: number;
  capability: string;
  multiProcessors: number;
}

export interface BuildInfo {
  libtorch: string;
  variant: 'cpu' | 'cuda';
  napiVersion: number;
  cudaBuilt: boolean;
  cudnnAvailable: boolean;
  cudnnVersion?: number;
  cudaRuntimeVersion?: number;
  mkldnn: boolean;
  config: string;
  threads: number;
  /** Built with gloo's headers: dist's 'gloo' backend is there (native/dist.cmake). */
  gloo: boolean;
}

/**
 * loaderCreate's options (native/loader/memory_loader.cpp), read by native/binding/options.h: booleans
 * are booleans, numbers finite, integers exact and in their stated ranges.
 */
export interface LoaderOptions {
  batchSize?: number;
  shuffle?: boolean;
  seed?: number;
  dropLast?: boolean;
  mean?: readonly number[];
  std?: readonly number[];
  randomCrop?: boolean;
  cropPadding?: number;
  hflip?: boolean;
  randomErasing?: number;
  device?: string;
  pinMemory?: boolean;
  channelsLast?: boolean;
  prefetch?: number;
  workers?: number;
}

/** Limits on what an image or tar member may demand (native/image/types.h). */
export interface ImageLimits {
  maxPixels?: number;
  maxFileBytes?: number;
}

/** streamCreate's options (native/loader/stream_loader.cpp). */
export interface StreamCreateOptions extends ImageLimits {
  kind: 'folder' | 'webdataset';
  files?: readonly string[];
  labels?: readonly number[] | Int32Array | Float64Array;
  shards?: readonly string[];
  shardCounts?: readonly number[] | Int32Array | Float64Array;
  batchSize?: number;
  transform?: 'train' | 'eval' | 'resize';
  size?: readonly number[];
  resize?: number;
  scale?: readonly number[];
  ratio?: readonly number[];
  hflip?: boolean;
  channels?: number;
  mean?: readonly number[];
  std?: readonly number[];
  shuffle?: boolean;
  seed?: number;
  dropLast?: boolean;
  rank?: number;
  worldSize?: number;
  workers?: number;
  prefetch?: number;
  onError?: 'stop' | 'skip';
  shuffleBuffer?: number;
  shuffleBufferBytes?: number;
  device?: string;
  pinMemory?: boolean;
  channelsLast?: boolean;
}

/** loaderSkipped(): samples skipped so far, and the recent ones not yet drained (a memory loader skips none). */
export interface LoaderSkipped {
  count: number;
  errors: { path: string; message: string }[];
}

/** loaderState(): whether an epoch's workers run, and the batches made ahead that the loader holds. */
export interface LoaderState {
  running: boolean;
  closed: boolean;
  held: number;
}

/** tarScan(): samples (keys with an image), the largest .cls label (-1: none), members read. */
export interface TarScan {
  samples: number;
  maxLabel: number;
  members: number;
}

/** distInit's options (native/distributed/process_group.cpp). */
export interface DistInitOptions {
  backend?: string;
  rank?: number;
  worldSize?: number;
  masterAddr?: string;
  masterPort?: number;
  timeoutMs?: number;
  hostStore?: boolean;
  agentStore?: boolean;
  /** Network interfaces, comma-separated. */
  ifnames?: string;
  groupName?: string;
  deviceIndex?: number;
}

export interface DistInfo {
  rank: number;
  worldSize: number;
  backend: string;
  timeoutMs: number;
  /** The port of the store this process hosts (rank 0), when it hosts one. */
  storePort?: number;
}

/** distStoreServe's options (native/distributed/store_ops.cpp): the job's store, served by residual launch on node 0. */
export interface StoreServeOptions {
  port?: number;
  timeoutMs?: number;
  maxConnections?: number;
}

/** A served store's counters (native/distributed/store.h StoreStats): connections closed by the server, by reason. */
export interface StoreStats {
  accepted: number;
  open: number;
  keys: number;
  storeBytes: number;
  bufferedBytes: number;
  droppedTimeout: number;
  droppedTooLarge: number;
  droppedProtocol: number;
  droppedFull: number;
  refused: number;
}

/** ddpCreate's options (native/distributed/ddp.cpp). */
export interface DdpOptions {
  bucketCapBytes?: number;
  firstBucketBytes?: number;
  findUnusedParameters?: boolean;
  /** The names of `states`, for the error that names a parameter that differs across ranks. */
  names?: readonly string[];
}

export interface CudaGraphInfo {
  state: string;
  replays: number;
  kept: number;
  device: number;
}

/** One parameter's optimizer state (optimGetState / optimSetState): the step and up to 3 buffers. */
export interface OptimParamState {
  step: number;
  buf1?: Handle;
  buf2?: Handle;
  buf3?: Handle;
}
