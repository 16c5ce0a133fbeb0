// Memory counters, devices, RNG and threads.
import { native as N } from '../native.js';
import { Tensor, wrapT, type Device } from './tensor.js';

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

/** Seeds the CPU and every CUDA generator. */
export function manualSeed(seed: number): void {
  N.manualSeed(seed);
}
/** The generator state of a device, as a uint8 tensor (for checkpoints). */
export function getRngState(device: Device = 'cpu'): Tensor {
  return wrapT(N.getRngState(device));
}
export function setRngState(state: Tensor, device: Device = 'cpu'): void {
  N.setRngState(device, state._h);
}
export function setNumThreads(n: number): void {
  N.setNumThreads(n);
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
export function setAutocast(deviceType: 'cuda' | 'cpu', enabled: boolean, dtype?: 'float16' | 'bfloat16'): { enabled: boolean; dtype: 'float16' | 'bfloat16' | 'float32' } {
  const [prev, code] = N.setAutocast(deviceType, enabled, dtype === undefined ? undefined : dtype === 'float16' ? 5 : 15) as [boolean, number];
  return { enabled: prev, dtype: code === 5 ? 'float16' : code === 15 ? 'bfloat16' : 'float32' };
}
/** Runs fn (synchronous) under autocast, like `with torch.autocast(device_type, dtype)`; nests. */
export function autocast<T>(deviceType: 'cuda' | 'cpu', dtype: 'float16' | 'bfloat16', fn: () => T): T {
  const prev = setAutocast(deviceType, true, dtype);
  try {
    return fn();
  } finally {
    N.setAutocast(deviceType, prev.enabled, prev.dtype === 'float16' ? 5 : prev.dtype === 'bfloat16' ? 15 : 6);
  }
}
