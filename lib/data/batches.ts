// The one batch iteration of the native loaders (DataLoader over tensors in memory, lib/data/loader.ts;
// StreamingDataLoader over image folders and WebDataset shards, lib/data/stream.ts). Both are a native
// loader (native/loader/) read the same way: an epoch is started natively, batches come in order,
// asynchronously (the wait runs on a libuv thread, so the event loop keeps running) or synchronously,
// and a full pass advances the epoch. Leaving an epoch early (`break`, an error thrown in the loop
// body, return()) stops the native workers and frees the batches they made ahead; the next iteration
// starts cleanly.
import { native as N, type NativeLoader } from '../addon/binding.js';
import { Tensor } from '../tensor/tensor.js';

export interface Batch {
  /** float32 [B, C, H, W] */
  x: Tensor;
  /** int64 [B] */
  y: Tensor;
}

export abstract class NativeBatchLoader implements AsyncIterable<Batch> {
  /** The epoch the next iteration uses; it advances after each full pass. */
  epoch = 0;
  private busy = false;
  private closed = false;

  protected constructor(
    protected readonly native: NativeLoader,
    private readonly className: string,
  ) {}

  /** Batches per epoch. */
  get length(): number {
    return N.loaderLength(this.native, this.epoch);
  }

  setEpoch(epoch: number): void {
    this.epoch = epoch;
  }

  /** Starts this.epoch natively (DataLoader passes its sampler's indices). */
  protected startEpoch(): void {
    N.loaderStart(this.native, this.epoch);
  }

  private begin(): void {
    if (this.closed) throw new Error(`${this.className}: used after close()`);
    if (this.busy) throw new Error(`${this.className}: an iteration is already running (one at a time)`);
    this.startEpoch();
    this.busy = true;
  }

  private end(complete: boolean): void {
    this.busy = false;
    if (complete) this.epoch++;
    else if (!this.closed) N.loaderStop(this.native); // left early: stop the workers, free the batches made ahead
  }

  /** Async iteration over one epoch; batches are made in the background. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    this.begin();
    let complete = false;
    try {
      for (;;) {
        const b = await N.loaderNext(this.native);
        if (!b) break;
        yield { x: new Tensor(b[0]), y: new Tensor(b[1]) };
      }
      complete = true;
    } finally {
      this.end(complete);
    }
  }

  /** Synchronous iteration (blocks the thread while a batch is not ready). */
  *iterSync(): Generator<Batch> {
    this.begin();
    let complete = false;
    try {
      for (;;) {
        const b = N.loaderNextSync(this.native);
        if (!b) break;
        yield { x: new Tensor(b[0]), y: new Tensor(b[1]) };
      }
      complete = true;
    } finally {
      this.end(complete);
    }
  }

  /** Stops the worker threads and frees the batches made ahead; the loader cannot be used after. */
  close(): void {
    if (this.closed) return;
    N.loaderClose(this.native);
    this.closed = true;
  }
}
