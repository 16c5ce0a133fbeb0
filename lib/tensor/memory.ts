// Memory counters, devices, RNG and threads.
import { DeviceError, DtypeError } from '../core/errors.js';
import { native as N } from '../addon/binding.js';
import { DTYPE_CODE } from './dtype.js';
import { Tensor, wrapT, type Device, hOf } from './tensor.js';

export interface MemoryInfo {
  /** Live tensor references (JS Tensors not disposed nor collected). */
  tensors: number;
  /** Distinct storages behind them. */
  storages: number;
  /** Bytes of those storages per device: {cpu, 'cuda:0', ...}. */
  bytes: Record<string, number>;
}
export function memory(): MemoryInfo {
  return N.memory();
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

export const cuda = {
  isAvailable(): boolean {
    return N.cudaIsAvailable();
  },
  deviceCount(): number {
    return N.cudaDeviceCount();
  },
  synchronize(device?: number): void {
    N.cudaSynchronize(device);
  },
  /** Returns cached, unused blocks of the CUDA caching allocator to the driver. */
  emptyCache(): void {
    N.cudaEmptyCache();
  },
  /** The caching allocator's statistics for a device ({} without CUDA). */
  memoryStats(device = 0): Partial<CudaMemoryStats> {
    return N.cudaMemoryStats(device);
  },
  devices(): { name: string; totalMemory: number; capability: string; multiProcessors: number }[] {
    return N.cudaDeviceInfo();
  },
};

/**
 * Seeds this thread's CPU generator (the main thread and each worker_thread have their own, so
 * concurrent trainings in workers do not disturb each other's random streams) and every CUDA
 * generator (shared by the process).
 */
export function manualSeed(seed: number): void {
  N.manualSeed(seed);
}
/** The generator state of a device (for 'cpu': this thread's generator), as a uint8 tensor (for checkpoints). */
export function getRngState(device: Device = 'cpu'): Tensor {
  return wrapT(N.getRngState(device));
}
export function setRngState(state: Tensor, device: Device = 'cpu'): void {
  N.setRngState(device, hOf(state));
}
/**
 * Intra-op threads of libtorch (shared by every thread of the process). Between 1 and
 * maxNumThreads() (4x the hardware threads, at least 64, at most 1024): beyond some thousands the
 * OpenMP runtime cannot start its threads and exits the process, so larger values are a RangeError.
 */
export function setNumThreads(n: number): void {
  N.setNumThreads(n);
}
/**
 * CPU memory caching: keeps memory freed by CPU tensors mapped in the process for reuse, instead of
 * handing it back to the kernel and faulting it in (page faults plus zeroing) when the next training
 * step allocates the same activations again. It tunes the C allocator (glibc malloc) process-wide:
 * the heap is no longer trimmed, and blocks up to 32 MiB come from the heap rather than fresh mmaps.
 * What it changes: resident memory (RSS) stays at the peak of the work done so far instead of
 * shrinking between steps; it does not grow with more steps of the same work. What it does not:
 * tensors, dispose(), scopes and memory()'s counters behave the same. Off by default in the library;
 * the trainer and `residual train` turn it on for CPU runs (`--no-cpu-memory-caching` to keep it off).
 * Turning it off returns the free memory to the system. A no-op where the C library is not glibc.
 * Returns the previous setting.
 */
export function setCpuMemoryCaching(enabled: boolean): boolean {
  return N.setCpuMemoryCaching(enabled);
}
/** Whether CPU memory caching is on (see setCpuMemoryCaching). */
export function getCpuMemoryCaching(): boolean {
  return N.getCpuMemoryCaching();
}
/** The largest value setNumThreads accepts. */
export function maxNumThreads(): number {
  return N.maxNumThreads();
}
export function getNumThreads(): number {
  return N.getNumThreads();
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
}
export function buildInfo(): BuildInfo {
  return N.buildInfo();
}

/** Turns autocast (mixed precision) on or off for a device type; returns the previous state. */
export function setAutocast(
  deviceType: 'cuda' | 'cpu',
  enabled: boolean,
  dtype?: 'float16' | 'bfloat16',
): { enabled: boolean; dtype: 'float16' | 'bfloat16' | 'float32' } {
  if (deviceType !== 'cuda' && deviceType !== 'cpu')
    throw new DeviceError(`setAutocast: deviceType must be 'cpu' or 'cuda', got ${JSON.stringify(deviceType)}`);
  if (dtype !== undefined && dtype !== 'float16' && dtype !== 'bfloat16')
    throw new DtypeError(`setAutocast: dtype must be 'float16' or 'bfloat16', got ${JSON.stringify(dtype)}`);
  const [prev, code] = N.setAutocast(deviceType, enabled, dtype === undefined ? undefined : DTYPE_CODE[dtype]) as [boolean, number];
  return { enabled: prev, dtype: code === DTYPE_CODE.float16 ? 'float16' : code === DTYPE_CODE.bfloat16 ? 'bfloat16' : 'float32' };
}
/** Runs fn (synchronous) under autocast, like `with torch.autocast(device_type, dtype)`; nests. */
export function autocast<T>(deviceType: 'cuda' | 'cpu', dtype: 'float16' | 'bfloat16', fn: () => T): T {
  const prev = setAutocast(deviceType, true, dtype);
  try {
    return fn();
  } finally {
    N.setAutocast(deviceType, prev.enabled, DTYPE_CODE[prev.dtype]);
  }
}
