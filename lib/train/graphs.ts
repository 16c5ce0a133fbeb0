// CUDA graphs for training: capture the whole training step (forward, loss, backward, optimizer step)
// once and replay it for every later batch, so a step costs one launch instead of hundreds. Small
// networks on a fast GPU are bound by kernel-launch overhead; a replay removes it.
//
// Two levels:
// - CudaGraph: the native graph (native/graphs.cpp, at::cuda::CUDAGraph): warmup(fn) runs fn on a side
//   stream, capture(fn) records the kernels fn launches (with a private memory pool), replay() launches
//   them again. Tensors used by the graph are fixed at capture: feed new data by copying into them.
// - GraphedTrainStep (captureTrainStep): a training step on static input buffers. Its first `warmup`
//   calls are ordinary eager steps on a side stream (cuDNN picks its algorithms, gradients and optimizer
//   state get allocated, all before capture); the next call captures the step and replays it; every
//   later call copies the batch into the static buffers, writes the current lr into the optimizer's
//   device tensor, and replays. Every call is one real training step, so a run with CUDA graphs trains
//   on the same batches, with the same updates, as the eager run (test/gpu/cuda.test.ts compares the losses).
//
// What is fixed at capture (a documented restriction, as in PyTorch):
// - the batch shape, dtype, device and memory format (a different one is a ShapeError; with dropLast
//   every training batch has the same shape);
// - every optimizer hyperparameter except the learning rate (momentum, weight decay, betas, ...): the lr
//   is read from a device tensor that each call updates (optimSyncLr), so any lr schedule works;
// - the parameters, gradients and optimizer state (loading state into the optimizer copies into its
//   existing buffers, so a load after capture still takes effect).
// Not capturable, so refused: float16 loss scaling (GradScaler reads the overflow flag on the host and
// skips steps; bfloat16 autocast needs no scaler and is captured), gradient clipping by norm (it reads
// the norm on the host), data-parallel (DDP's communication hooks), CPU devices, and the non-fused
// (foreach) optimizer path: the optimizer must use the fused CUDA kernels (the default on CUDA).
import { native, type NativeGraph, type NativeOptimizer as NativeOptim } from '../addon/binding.js';
import { noGrad } from '../autograd/index.js';
import { DeviceError, DisposedTensorError, ShapeError } from '../core/errors.js';
import type { Module } from '../nn/module.js';
import type { Optimizer } from '../optim/optimizer.js';
import { autocast, cuda } from '../tensor/memory.js';
import { scope, untrack } from '../tensor/scope.js';
import { Tensor, hOf, zerosLike, type Device } from '../tensor/tensor.js';
import { cudaGraphsReason } from './config.js';

/** The native optimizer behind an Optimizer (a private member of lib/optim's class). */
function nativeOptim(o: Optimizer): NativeOptim {
  const n = (o as unknown as { native?: NativeOptim }).native;
  if (!n) throw new TypeError('expected a residual Optimizer (SGD, Adam, AdamW)');
  return n;
}

/** The CUDA device index of a device string ('cuda' is 0), or a DeviceError for the CPU. */
function cudaIndex(device: Device | string, what: string): number {
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new DeviceError(`${what}: CUDA graphs need a CUDA device, got '${device}'`);
  return m[1] ? Number(m[1]) : 0;
}

/**
 * Whether cuDNN benchmark mode is on; with `enabled`, sets it and returns the previous setting.
 * Benchmark mode times the convolution algorithms once per new input shape and keeps the fastest: a
 * gain when shapes are fixed (training with dropLast), a cost when they keep changing. No effect on
 * the CPU build (the setting is still kept).
 */
export function cudnnBenchmark(enabled?: boolean): boolean {
  return native.cudnnBenchmark(enabled) as boolean;
}

/**
 * Turns the optimizer's fused CUDA kernels on or off (on by default; they apply when every parameter
 * of a group is a floating-point CUDA tensor). Returns the previous setting. CUDA graphs need them on.
 */
export function setFusedOptimizer(optimizer: Optimizer, enabled: boolean): boolean {
  return native.optimSetFused(nativeOptim(optimizer), enabled) as boolean;
}

/** Writes each group's current lr into the optimizer's device tensors (read by a captured step). */
export function syncOptimizerLr(optimizer: Optimizer): void {
  native.optimSyncLr(
    nativeOptim(optimizer),
    optimizer.paramGroups.map((g) => g.lr),
  );
}

/** Whether the calling thread is capturing a CUDA graph now. */
export function isCapturing(): boolean {
  return native.cudaIsCapturing() as boolean;
}

export type CudaGraphState = 'not captured yet' | 'capturing' | 'captured' | 'disposed';

/**
 * One CUDA graph. warmup(fn) runs fn on the graph's side stream; capture(fn) records what fn launches
 * (fn runs once, but its kernels do not execute: call replay() to run them); replay() runs them.
 * Throws a DeviceError on the CPU build or without a CUDA device.
 */
export class CudaGraph {
  private readonly g: NativeGraph;
  private disposed = false;
  readonly device: Device;

  constructor(device: Device | string = 'cuda') {
    const index = cudaIndex(device, 'CudaGraph');
    this.g = native.cudaGraphCreate(index) as NativeGraph;
    this.device = `cuda:${index}` as Device;
  }

  get state(): CudaGraphState {
    if (this.disposed) return 'disposed';
    return (native.cudaGraphInfo(this.g) as { state: CudaGraphState }).state;
  }

  get replays(): number {
    return (native.cudaGraphInfo(this.g) as { replays: number }).replays;
  }

  private live(what: string): void {
    if (this.disposed) throw new DisposedTensorError(`CudaGraph.${what}: the CUDA graph was disposed`);
  }

  /** Runs fn on the side stream (warm-up before capture); returns fn's result. */
  warmup<T>(fn: () => T): T {
    this.live('warmup');
    native.cudaGraphWarmupBegin(this.g);
    try {
      return fn();
    } finally {
      native.cudaGraphWarmupEnd(this.g);
    }
  }

  /**
   * Records the kernels fn launches. fn must not read values back to the host (item(), toArray()): a
   * synchronizing call fails the capture. If fn throws, the capture is abandoned and the graph disposed.
   */
  capture<T>(fn: () => T): T {
    this.live('capture');
    native.cudaGraphCaptureBegin(this.g);
    let out: T;
    try {
      out = fn();
    } catch (e) {
      try {
        native.cudaGraphCaptureEnd(this.g, true);
      } catch {
        // the capture error itself is the one to report
      }
      this.disposed = true;
      throw e;
    }
    try {
      native.cudaGraphCaptureEnd(this.g, false);
    } catch (e) {
      this.disposed = true; // the native graph discarded the failed capture
      throw e;
    }
    return out;
  }

  /** The graph holds these tensors (and their current gradients) until it is disposed. */
  keep(tensors: Tensor[]): void {
    this.live('keep');
    native.cudaGraphKeep(
      this.g,
      tensors.map((t) => hOf(t)),
    );
  }

  /** Launches the captured kernels on the current stream (asynchronous, as any CUDA op). */
  replay(): void {
    if (this.disposed) throw new DisposedTensorError('CudaGraph.replay: the CUDA graph was disposed');
    native.cudaGraphReplay(this.g);
  }

  /** Frees the graph and its memory pool. Idempotent. (Refused while capturing: the graph stays live.) */
  dispose(): void {
    if (this.disposed) return;
    native.cudaGraphDispose(this.g);
    this.disposed = true;
  }
}

export interface TrainStepOptions {
  model: Module;
  optimizer: Optimizer;
  /** The loss of a batch: forward and loss (logits for the accuracy count). Runs under autocast when amp. */
  forward: (x: Tensor, y: Tensor) => { logits: Tensor; loss: Tensor };
  /** Eager warm-up steps (on the side stream) before capture; default 3 (at least 1). */
  warmup?: number;
  amp?: boolean;
  ampDtype?: 'bfloat16' | 'float16';
  /** Refuse a float16 GradScaler (see the file comment): pass the trainer's scaler, if any. */
  scaler?: unknown;
  /** Gradient clipping is not capturable: pass the trainer's setting to have it refused. */
  clipGradNorm?: number;
}

/** Why options cannot run under CUDA graphs (null when they can), naming config keys (the rules: lib/train/config.ts). */
export function cudaGraphsIncompatibility(o: {
  device?: string;
  amp?: boolean;
  ampDtype?: string;
  clipGradNorm?: number;
  distributed?: boolean;
}): string | null {
  return cudaGraphsReason(o)?.render() ?? null;
}

// Tensors kept from call to call (static buffers, captured outputs) belong to their owner, not to a
// scope() the caller happens to run (a training loop's), which would dispose them when it closes: untrack().

function sameLayout(a: Tensor, b: Tensor): boolean {
  return (
    a.shape.length === b.shape.length &&
    a.shape.every((d, i) => d === b.shape[i]) &&
    a.dtype === b.dtype &&
    a.isContiguous('channelsLast') === b.isContiguous('channelsLast')
  );
}

/**
 * The static input buffers of a captured step: fill(x, y) copies a batch into them (allocated at the
 * first fill with its shape, dtype and memory format) after checking that the batch is on the buffers'
 * device and has their layout. Works on any device (the checks are tested on the CPU).
 */
export class StaticBatch {
  x: Tensor | null = null;
  y: Tensor | null = null;
  private disposed = false;
  constructor(readonly device: Device) {}

  fill(x: Tensor, y: Tensor): { x: Tensor; y: Tensor } {
    if (this.disposed) throw new DisposedTensorError('StaticBatch.fill: the static buffers were disposed (the captured step was disposed)');
    if (!(x instanceof Tensor) || !(y instanceof Tensor)) throw new TypeError('StaticBatch.fill: x and y must be Tensors');
    const norm = (d: string) => (d === 'cuda' ? 'cuda:0' : d);
    for (const [name, t] of [
      ['x', x],
      ['y', y],
    ] as const)
      if (norm(t.device) !== norm(this.device))
        throw new DeviceError(
          `StaticBatch.fill: ${name} is on ${t.device}, the static buffers on ${this.device} (copy the batch to the GPU first; the data loader does with device: 'cuda')`,
        );
    if (!this.x || !this.y) {
      // the buffers take the first batch's shape, dtype and memory format (zeros_like preserves it)
      this.x = zerosLike(x);
      this.y = zerosLike(y);
      untrack(this.x, this.y);
    }
    for (const [name, t, s] of [
      ['x', x, this.x],
      ['y', y, this.y],
    ] as const) {
      if (!sameLayout(t, s))
        throw new ShapeError(
          `StaticBatch.fill: ${name} is [${t.shape.join(', ')}] ${t.dtype}${layoutNote(t)}, the static buffer [${s.shape.join(', ')}] ${s.dtype}${layoutNote(s)}: a CUDA graph replays fixed shapes (drop the last partial batch: dropLast)`,
        );
    }
    this.x.copy_(x);
    this.y.copy_(y);
    return { x: this.x, y: this.y };
  }

  dispose(): void {
    this.disposed = true;
    this.x?.dispose();
    this.y?.dispose();
    this.x = this.y = null;
  }
}

function layoutNote(t: Tensor): string {
  return t.ndim === 4 && t.isContiguous('channelsLast') && !t.isContiguous() ? ' (channels-last)' : '';
}

/**
 * A training step (forward, loss, backward, optimizer step) captured in a CUDA graph on static input
 * buffers; see the file comment. step(x, y) returns the batch's loss (float32) and its number of correct
 * predictions, as new 0-d tensors on the device that the caller owns.
 */
export class GraphedTrainStep {
  readonly graph: CudaGraph;
  readonly warmupSteps: number;
  private readonly o: TrainStepOptions;
  private readonly batch: StaticBatch;
  private out: { loss: Tensor; correct: Tensor } | null = null;
  private calls = 0;
  private disposed = false;

  constructor(o: TrainStepOptions) {
    const why = cudaGraphsIncompatibility({ amp: o.amp, ampDtype: o.ampDtype, clipGradNorm: o.clipGradNorm });
    if (why) throw new RangeError(`captureTrainStep: ${why}`);
    if (o.scaler)
      throw new RangeError(
        'captureTrainStep: a GradScaler (float16 loss scaling) cannot be captured; use bfloat16 autocast, which needs no scaler',
      );
    const w = o.warmup ?? 3;
    if (!Number.isInteger(w) || w < 1 || w > 1000)
      throw new RangeError(`captureTrainStep: warmup must be an integer from 1 to 1000, got ${String(o.warmup)}`);
    const params = o.optimizer.paramGroups.flatMap((g) => g.params);
    if (params.length === 0) throw new TypeError('captureTrainStep: the optimizer has no parameters');
    const dev = params[0].device;
    for (const p of params)
      if (p.device !== dev)
        throw new DeviceError(
          `captureTrainStep: the parameters are on ${dev} and ${p.device}; CUDA graphs need them all on one CUDA device`,
        );
    if (!cuda.isAvailable()) throw new DeviceError('captureTrainStep: CUDA graphs need a CUDA build/device: CUDA is not available here');
    cudaIndex(dev, 'captureTrainStep: the parameters');
    this.o = o;
    this.warmupSteps = w;
    this.graph = new CudaGraph(dev);
    this.batch = new StaticBatch(this.graph.device);
  }

  /** 'warm-up', 'captured' or 'disposed'. */
  get phase(): 'warm-up' | 'captured' | 'disposed' {
    return this.disposed ? 'disposed' : this.out ? 'captured' : 'warm-up';
  }

  private body(): { loss: Tensor; correct: Tensor } {
    const { model, optimizer, forward, amp, ampDtype } = this.o;
    const x = this.batch.x!;
    const y = this.batch.y!;
    return scope(() => {
      model.train();
      // gradients are zeroed in place (never set to none): the captured backward accumulates into the
      // same tensors every replay
      optimizer.zeroGrad(false);
      const { logits, loss } = amp ? autocast('cuda', ampDtype ?? 'bfloat16', () => forward(x, y)) : forward(x, y);
      loss.backward();
      optimizer.step();
      const correct = noGrad(() => logits.argmax(1).eq(y).sum());
      return { loss: loss.detach().to('float32'), correct };
    });
  }

  /** One training step on (x, y); see the class comment. */
  step(x: Tensor, y: Tensor): { loss: Tensor; correct: Tensor } {
    if (this.disposed) throw new DisposedTensorError('GraphedTrainStep.step: the captured training step was disposed');
    const s = this.batch.fill(x, y);
    const { optimizer } = this.o;
    if (this.calls < this.warmupSteps) {
      this.calls++;
      return this.graph.warmup(() => this.body());
    }
    syncOptimizerLr(optimizer);
    if (!this.out) {
      try {
        this.out = this.graph.capture(() => this.body());
        untrack(this.out.loss, this.out.correct);
      } catch (e) {
        // the graph is disposed by capture(); this step cannot be used any more
        this.dispose();
        throw new Error(
          `captureTrainStep: capturing the training step in a CUDA graph failed (the step must not read values on the host, e.g. item(), nor allocate optimizer state): ${(e as Error).message}`,
          { cause: e },
        );
      }
      const params = optimizer.paramGroups.flatMap((g) => g.params);
      this.graph.keep([s.x, s.y, this.out.loss, this.out.correct, ...params]);
    }
    this.graph.replay();
    this.calls++;
    return { loss: this.out.loss.clone(), correct: this.out.correct.clone() };
  }

  /** Frees the graph, its pool and the static buffers. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.graph.dispose();
    this.batch.dispose();
    for (const t of [this.out?.loss, this.out?.correct]) t?.dispose();
    this.out = null;
  }
}

/** A training step captured in a CUDA graph (see GraphedTrainStep). */
export function captureTrainStep(o: TrainStepOptions): GraphedTrainStep {
  return new GraphedTrainStep(o);
}
