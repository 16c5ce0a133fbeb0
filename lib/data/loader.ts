// DataLoader: batching, seeded shuffling, augmentation (random crop with padding, horizontal flip) and
// normalisation run in native worker threads (native/loader/memory_loader.cpp) with prefetch, so a
// training loop that awaits next() does not wait on data while compute is slower. Pinned memory and a
// non-blocking copy when the target device is CUDA. Deterministic for a given (seed, epoch), whatever
// the thread count. Iteration (and leaving an epoch early) is lib/data/batches.ts's, shared with
// StreamingDataLoader.
import { native as N } from '../addon/binding.js';
import { type Device, hOf, type Tensor } from '../tensor/tensor.js';
import { NativeBatchLoader } from './batches.js';

export type { Batch } from './batches.js';

export interface DataLoaderOptions {
  batchSize: number;
  shuffle?: boolean;
  seed?: number;
  dropLast?: boolean;
  /** Per-channel mean and std, applied after scaling pixels to [0, 1]. */
  mean?: number[];
  std?: number[];
  /** Random crop of the original size from the image zero-padded by `padding` on each side. */
  randomCrop?: { padding: number } | false;
  /** Random horizontal flip with probability 0.5. */
  hflip?: boolean;
  /** Random erasing (Zhong et al. 2017) with this probability: a rectangle set to the mean. */
  randomErasing?: number;
  device?: Device;
  pinMemory?: boolean;
  channelsLast?: boolean;
  /** Batches produced ahead (default 2). */
  prefetch?: number;
  /** Native worker threads (default 1; 2 is plenty on small images). */
  workers?: number;
  /**
   * Chooses the items of each epoch and their order (e.g. dist.DistributedSampler: this rank's share);
   * `shuffle` is then not used. Told the epoch before each pass.
   */
  sampler?: Sampler;
}

/** The items of one epoch, in order (indices into the dataset). */
export interface Sampler {
  setEpoch(epoch: number): void;
  indices(): number[];
  /** Items per epoch. */
  readonly numSamples: number;
}

export interface LabelledImages {
  images: Tensor;
  labels: Tensor;
}

export class DataLoader extends NativeBatchLoader {
  constructor(
    dataset: LabelledImages,
    readonly options: DataLoaderOptions,
  ) {
    const o = options;
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1)
      throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${o.batchSize}`);
    super(
      N.loaderCreate(hOf(dataset.images), hOf(dataset.labels), {
        batchSize: o.batchSize,
        shuffle: !!o.shuffle,
        seed: o.seed ?? 0,
        dropLast: !!o.dropLast,
        mean: o.mean,
        std: o.std,
        randomCrop: !!o.randomCrop,
        cropPadding: o.randomCrop ? o.randomCrop.padding : 0,
        hflip: !!o.hflip,
        randomErasing: o.randomErasing ?? 0,
        device: o.device ?? 'cpu',
        pinMemory: o.pinMemory,
        channelsLast: !!o.channelsLast,
        prefetch: o.prefetch ?? 2,
        workers: o.workers ?? 1,
      }),
      'DataLoader',
    );
  }

  /** Batches per epoch. */
  override get length(): number {
    const sm = this.options.sampler;
    if (sm)
      return this.options.dropLast ? Math.floor(sm.numSamples / this.options.batchSize) : Math.ceil(sm.numSamples / this.options.batchSize);
    return super.length;
  }

  /** The sampler (when given) chooses this epoch's items and their order. */
  protected override startEpoch(): void {
    const sm = this.options.sampler;
    if (!sm) return super.startEpoch();
    sm.setEpoch(this.epoch);
    N.loaderStart(this.native, this.epoch, sm.indices());
  }
}
