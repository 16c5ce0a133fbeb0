// DataLoader: batching, seeded shuffling, augmentation (random crop with padding, horizontal flip) and
// normalisation run in native worker threads (native/data.cpp) with prefetch, so a training loop that
// awaits next() does not wait on data while compute is slower. Pinned memory and a non-blocking copy
// when the target device is CUDA. Deterministic for a given (seed, epoch), whatever the thread count.
import { native as N, type NativeLoader } from '../addon/binding.js';
import { Tensor, type Device, hOf } from '../tensor/tensor.js';


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

export interface Batch {
  /** float32 [B, C, H, W] */
  x: Tensor;
  /** int64 [B] */
  y: Tensor;
}

export interface LabelledImages {
  images: Tensor;
  labels: Tensor;
}

export class DataLoader implements AsyncIterable<Batch> {
  private readonly native: NativeLoader;
  /** The epoch the next iteration uses; it advances after each full pass. */
  epoch = 0;
  private busy = false;
  private closed = false;

  constructor(dataset: LabelledImages, readonly options: DataLoaderOptions) {
    const o = options;
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${o.batchSize}`);
    this.native = N.loaderCreate(hOf(dataset.images), hOf(dataset.labels), {
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
    });
  }

  /** Batches per epoch. */
  get length(): number {
    const sm = this.options.sampler;
    if (sm) return this.options.dropLast ? Math.floor(sm.numSamples / this.options.batchSize) : Math.ceil(sm.numSamples / this.options.batchSize);
    return N.loaderLength(this.native);
  }

  setEpoch(epoch: number): void {
    this.epoch = epoch;
  }

  private begin(): void {
    if (this.closed) throw new Error('DataLoader: used after close()');
    if (this.busy) throw new Error('DataLoader: an iteration is already running (one at a time)');
    this.busy = true;
    const sm = this.options.sampler;
    if (sm) {
      sm.setEpoch(this.epoch);
      N.loaderStart(this.native, this.epoch, sm.indices());
    } else {
      N.loaderStart(this.native, this.epoch);
    }
  }

  /** Async iteration over one epoch; batches are produced in the background. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    this.begin();
    try {
      for (;;) {
        const b = await N.loaderNext(this.native);
        if (!b) break;
        yield { x: new Tensor(b[0]), y: new Tensor(b[1]) };
      }
      this.epoch++;
    } finally {
      this.busy = false;
    }
  }

  /** Synchronous iteration (blocks the thread while a batch is not ready). */
  *iterSync(): Generator<Batch> {
    this.begin();
    try {
      for (;;) {
        const b = N.loaderNextSync(this.native);
        if (!b) break;
        yield { x: new Tensor(b[0]), y: new Tensor(b[1]) };
      }
      this.epoch++;
    } finally {
      this.busy = false;
    }
  }

  /** Stops the worker threads. */
  close(): void {
    if (this.closed) return;
    N.loaderClose(this.native);
    this.closed = true;
  }
}
