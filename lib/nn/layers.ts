// Layers, as torch.nn: same constructor arguments (camelCase options), same parameter names and
// shapes, same default initialisation (so manualSeed(s) gives PyTorch's initial weights).
//
// Every forward checks its input's rank, channel count, dtype and device before calling the native op
// and names the layer in the error ("layer1.0.conv1 (Conv2d): expected input [N, 64, H, W], got
// [2, 32, 8, 8]"); errors from the native op are re-thrown with the layer's name too.
import { DeviceError, DtypeError, ShapeError, wrapError } from '../core/errors.js';
import { scope } from '../tensor/scope.js';
import { Tensor, empty, ones, tensor, zeros } from '../tensor/tensor.js';
import * as F from './functional.js';
import { calculateFanInAndFanOut, kaimingUniform_, ones_, uniform_, zeros_ } from './init.js';
import { Module, fmtShape } from './module.js';

export type Pair = number | readonly [number, number];

function pair(v: Pair, what: string, owner: string): [number, number] {
  const p: number[] = typeof v === 'number' ? [v, v] : Array.isArray(v) && v.length === 2 ? [v[0], v[1]] : [];
  if (p.length !== 2 || !p.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new TypeError(`${owner}: ${what} must be a non-negative integer or a pair of them, got ${JSON.stringify(v)}`);
  }
  return [p[0], p[1]];
}
function positiveInt(v: number, what: string, owner: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new TypeError(`${owner}: ${what} must be a positive integer, got ${String(v)}`);
  return v;
}

/** PyTorch's default for Conv2d and Linear: kaiming uniform with a = sqrt(5), bias U(+-1/sqrt(fanIn)). */
function defaultInit(weight: Tensor, bias: Tensor | null): void {
  kaimingUniform_(weight, { a: Math.sqrt(5) });
  if (bias) {
    const { fanIn } = calculateFanInAndFanOut(weight);
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform_(bias, -bound, bound);
  }
}

/** Throws a TypeError naming the module when x is not a Tensor. */
function checkTensor(m: Module, x: unknown): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${m.label()}: expected a Tensor input, got ${x === null ? 'null' : typeof x}`);
}
/**
 * The input must have the weight's dtype and device (no silent casts, as PyTorch). The exception is
 * mixed precision: float16/bfloat16 activations with float32 weights, as autocast produces.
 */
function checkLike(m: Module, x: Tensor, w: Tensor): void {
  const xd = x.dtype;
  const wd = w.dtype;
  const mixed = (xd === 'bfloat16' || xd === 'float16') && wd === 'float32';
  if (xd !== wd && !mixed)
    throw new DtypeError(
      `${m.label()}: input is ${xd} but the layer's weights are ${wd}; cast the input (x.to('${wd}')) or the model (model.to('${xd}'))`,
    );
  const xv = x.device;
  const wv = w.device;
  if (xv !== wv) throw new DeviceError(`${m.label()}: input is on ${xv} but the layer's weights are on ${wv}; move one of them with .to()`);
}
/** Runs a native call, re-throwing its error (same class: ShapeError stays ShapeError) with the module's name in front. */
function named<T>(m: Module, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw wrapError(e, `${m.label()}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
function singleImageHint(shape: number[]): string {
  return shape.length === 3 ? ' (a single image? add the batch dimension with x.unsqueeze(0))' : '';
}

// ---------------------------------------------------------------- convolution and linear

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair | 'same' | 'valid';
  dilation?: Pair;
  groups?: number;
  /** Learnable bias (default true). */
  bias?: boolean;
}

/** 2-D convolution over [N, C, H, W]; weight [outChannels, inChannels / groups, kh, kw]. */
export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number] | 'same' | 'valid';
  readonly dilation: [number, number];
  readonly groups: number;

  constructor(inChannels: number, outChannels: number, kernelSize: Pair, o: Conv2dOptions = {}) {
    super();
    const who = 'Conv2d';
    this.inChannels = positiveInt(inChannels, 'inChannels', who);
    this.outChannels = positiveInt(outChannels, 'outChannels', who);
    this.kernelSize = pair(kernelSize, 'kernelSize', who);
    this.stride = pair(o.stride ?? 1, 'stride', who);
    this.padding = typeof o.padding === 'string' ? o.padding : pair(o.padding ?? 0, 'padding', who);
    this.dilation = pair(o.dilation ?? 1, 'dilation', who);
    this.groups = positiveInt(o.groups ?? 1, 'groups', who);
    if (inChannels % this.groups || outChannels % this.groups) {
      throw new RangeError(
        `Conv2d: inChannels (${inChannels}) and outChannels (${outChannels}) must be divisible by groups (${this.groups})`,
      );
    }
    this.registerParameter('weight', empty([outChannels, inChannels / this.groups, ...this.kernelSize]));
    this.registerParameter('bias', (o.bias ?? true) ? empty([outChannels]) : null);
    this.resetParameters();
  }
  get weight(): Tensor {
    return this.param('weight')!;
  }
  get bias(): Tensor | null {
    return this.param('bias');
  }
  /** PyTorch's default initialisation (see defaultInit). */
  resetParameters(): void {
    defaultInit(this.weight, this.bias);
  }
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    const s = x.shape;
    if (s.length !== 4 || s[1] !== this.inChannels) {
      throw new ShapeError(`${this.label()}: expected input [N, ${this.inChannels}, H, W], got ${fmtShape(s)}${singleImageHint(s)}`);
    }
    const w = this.weight;
    checkLike(this, x, w);
    return named(this, () =>
      F.conv2d(x, w, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups }),
    );
  }
  override extraRepr(): string {
    let s = `${this.inChannels}, ${this.outChannels}, kernelSize=${fmtShape(this.kernelSize)}, stride=${fmtShape(this.stride)}`;
    if (this.padding === 'same' || this.padding === 'valid') s += `, padding='${this.padding}'`;
    else if (this.padding[0] || this.padding[1]) s += `, padding=${fmtShape(this.padding)}`;
    if (this.dilation[0] !== 1 || this.dilation[1] !== 1) s += `, dilation=${fmtShape(this.dilation)}`;
    if (this.groups !== 1) s += `, groups=${this.groups}`;
    if (!this.bias) s += ', bias=false';
    return s;
  }
}

/** y = x W^T + b over the last dimension; weight [outFeatures, inFeatures]. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(inFeatures: number, outFeatures: number, o: { bias?: boolean } = {}) {
    super();
    this.inFeatures = positiveInt(inFeatures, 'inFeatures', 'Linear');
    this.outFeatures = positiveInt(outFeatures, 'outFeatures', 'Linear');
    this.registerParameter('weight', empty([outFeatures, inFeatures]));
    this.registerParameter('bias', (o.bias ?? true) ? empty([outFeatures]) : null);
    this.resetParameters();
  }
  get weight(): Tensor {
    return this.param('weight')!;
  }
  get bias(): Tensor | null {
    return this.param('bias');
  }
  resetParameters(): void {
    defaultInit(this.weight, this.bias);
  }
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    const s = x.shape;
    if (s.length < 1 || s[s.length - 1] !== this.inFeatures) {
      throw new ShapeError(`${this.label()}: expected input [..., ${this.inFeatures}], got ${fmtShape(s)}`);
    }
    const w = this.weight;
    checkLike(this, x, w);
    return named(this, () => F.linear(x, w, this.bias));
  }
  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}${this.bias ? '' : ', bias=false'}`;
  }
}

// ---------------------------------------------------------------- normalisation

export interface BatchNormOptions {
  eps?: number;
  /** Weight of the new batch in the running statistics; null gives the cumulative average (PyTorch's momentum=None). */
  momentum?: number | null;
  /** Learnable scale and shift (default true). */
  affine?: boolean;
  /** Keep running statistics (default true); without them batch statistics are used in eval mode too. */
  trackRunningStats?: boolean;
}

/**
 * Batch normalisation over the channels of [N, C, H, W]. Training mode normalises with the batch
 * statistics, updates running_mean/running_var in place and counts batches in num_batches_tracked;
 * eval mode normalises with the running statistics.
 */
export class BatchNorm2d extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly affine: boolean;
  readonly trackRunningStats: boolean;
  constructor(numFeatures: number, o: BatchNormOptions = {}) {
    super();
    this.numFeatures = positiveInt(numFeatures, 'numFeatures', 'BatchNorm2d');
    this.eps = o.eps ?? 1e-5;
    this.momentum = o.momentum === undefined ? 0.1 : o.momentum;
    this.affine = o.affine ?? true;
    this.trackRunningStats = o.trackRunningStats ?? true;
    this.registerParameter('weight', this.affine ? ones([numFeatures]) : null);
    this.registerParameter('bias', this.affine ? zeros([numFeatures]) : null);
    const track = this.trackRunningStats;
    this.registerBuffer('running_mean', track ? zeros([numFeatures]) : null);
    this.registerBuffer('running_var', track ? ones([numFeatures]) : null);
    this.registerBuffer('num_batches_tracked', track ? tensor(0, { dtype: 'int64' }) : null);
  }
  get weight(): Tensor | null {
    return this.param('weight');
  }
  get bias(): Tensor | null {
    return this.param('bias');
  }
  get runningMean(): Tensor | null {
    return this.buffer('running_mean');
  }
  get runningVar(): Tensor | null {
    return this.buffer('running_var');
  }
  get numBatchesTracked(): Tensor | null {
    return this.buffer('num_batches_tracked');
  }
  /** Running mean 0, variance 1, no batches seen. */
  resetRunningStats(): void {
    if (!this.trackRunningStats) return;
    zeros_(this.runningMean!);
    ones_(this.runningVar!);
    this.numBatchesTracked!.zero_();
  }
  resetParameters(): void {
    this.resetRunningStats();
    if (this.affine) {
      ones_(this.weight!);
      zeros_(this.bias!);
    }
  }
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    const s = x.shape;
    if (s.length !== 4 || s[1] !== this.numFeatures) {
      throw new ShapeError(`${this.label()}: expected input [N, ${this.numFeatures}, H, W], got ${fmtShape(s)}${singleImageHint(s)}`);
    }
    const ref = this.weight ?? this.runningMean;
    if (ref) checkLike(this, x, ref);
    let factor = 0;
    if (this.training && this.trackRunningStats) {
      const n = this.numBatchesTracked!.add_(1);
      factor = this.momentum ?? 1 / Number(n.item());
    }
    const useBatchStats = this.training || !this.trackRunningStats;
    return named(this, () =>
      F.batchNorm(x, this.runningMean, this.runningVar, {
        weight: this.weight,
        bias: this.bias,
        training: useBatchStats,
        momentum: factor,
        eps: this.eps,
      }),
    );
  }
  override extraRepr(): string {
    return `${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum}, affine=${this.affine}, trackRunningStats=${this.trackRunningStats}`;
  }
}

// ---------------------------------------------------------------- activations, pooling, shape

export class ReLU extends Module {
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    return F.relu(x);
  }
}

function checkImage(m: Module, x: Tensor): void {
  checkTensor(m, x);
  const s = x.shape;
  if (s.length !== 4 && s.length !== 3) throw new ShapeError(`${m.label()}: expected input [N, C, H, W] or [C, H, W], got ${fmtShape(s)}`);
}

export class MaxPool2d extends Module {
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly ceilMode: boolean;
  constructor(kernelSize: Pair, o: { stride?: Pair | null; padding?: Pair; dilation?: Pair; ceilMode?: boolean } = {}) {
    super();
    this.kernelSize = pair(kernelSize, 'kernelSize', 'MaxPool2d');
    this.stride = o.stride == null ? this.kernelSize : pair(o.stride, 'stride', 'MaxPool2d');
    this.padding = pair(o.padding ?? 0, 'padding', 'MaxPool2d');
    this.dilation = pair(o.dilation ?? 1, 'dilation', 'MaxPool2d');
    this.ceilMode = o.ceilMode ?? false;
  }
  override forward(x: Tensor): Tensor {
    checkImage(this, x);
    return named(this, () =>
      F.maxPool2d(x, this.kernelSize, { stride: this.stride, padding: this.padding, dilation: this.dilation, ceilMode: this.ceilMode }),
    );
  }
  override extraRepr(): string {
    return `kernelSize=${fmtShape(this.kernelSize)}, stride=${fmtShape(this.stride)}, padding=${fmtShape(this.padding)}`;
  }
}

export class AvgPool2d extends Module {
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly ceilMode: boolean;
  readonly countIncludePad: boolean;
  readonly divisorOverride: number | undefined;
  constructor(
    kernelSize: Pair,
    o: { stride?: Pair | null; padding?: Pair; ceilMode?: boolean; countIncludePad?: boolean; divisorOverride?: number } = {},
  ) {
    super();
    this.kernelSize = pair(kernelSize, 'kernelSize', 'AvgPool2d');
    this.stride = o.stride == null ? this.kernelSize : pair(o.stride, 'stride', 'AvgPool2d');
    this.padding = pair(o.padding ?? 0, 'padding', 'AvgPool2d');
    this.ceilMode = o.ceilMode ?? false;
    this.countIncludePad = o.countIncludePad ?? true;
    this.divisorOverride = o.divisorOverride;
  }
  override forward(x: Tensor): Tensor {
    checkImage(this, x);
    return named(this, () =>
      F.avgPool2d(x, this.kernelSize, {
        stride: this.stride,
        padding: this.padding,
        ceilMode: this.ceilMode,
        countIncludePad: this.countIncludePad,
        divisorOverride: this.divisorOverride,
      }),
    );
  }
  override extraRepr(): string {
    return `kernelSize=${fmtShape(this.kernelSize)}, stride=${fmtShape(this.stride)}, padding=${fmtShape(this.padding)}`;
  }
}

/** Averages each channel down to outputSize (e.g. [1, 1]: global average pooling) whatever the input size. */
export class AdaptiveAvgPool2d extends Module {
  readonly outputSize: [number, number];
  constructor(outputSize: Pair) {
    super();
    this.outputSize = pair(outputSize, 'outputSize', 'AdaptiveAvgPool2d');
  }
  override forward(x: Tensor): Tensor {
    checkImage(this, x);
    return named(this, () => F.adaptiveAvgPool2d(x, this.outputSize));
  }
  override extraRepr(): string {
    return `outputSize=${fmtShape(this.outputSize)}`;
  }
}

/** Zeroes elements with probability p in training mode (scaling the rest by 1/(1-p)); identity in eval. */
export class Dropout extends Module {
  readonly p: number;
  constructor(p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new RangeError(`Dropout: p must be in [0, 1], got ${p}`);
    this.p = p;
  }
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    return F.dropout(x, this.p, this.training);
  }
  override extraRepr(): string {
    return `p=${this.p}`;
  }
}

export class Flatten extends Module {
  constructor(
    readonly startDim = 1,
    readonly endDim = -1,
  ) {
    super();
  }
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    return named(this, () => x.flatten(this.startDim, this.endDim));
  }
  override extraRepr(): string {
    return `startDim=${this.startDim}, endDim=${this.endDim}`;
  }
}

/** Returns its input (as a new reference, so the caller owns what it gets back). */
export class Identity extends Module {
  override forward(x: Tensor): Tensor {
    checkTensor(this, x);
    return x.view(x.shape);
  }
}

// ---------------------------------------------------------------- containers

/** A list of registered modules (named '0', '1', ...); it has no forward of its own. */
export class ModuleList extends Module {
  constructor(modules: Iterable<Module> = []) {
    super();
    for (const m of modules) this.append(m);
  }
  append(m: Module): this {
    this.registerModule(String(this._modules.size), m);
    return this;
  }
  extend(modules: Iterable<Module>): this {
    for (const m of modules) this.append(m);
    return this;
  }
  get length(): number {
    return this._modules.size;
  }
  at(i: number): Module {
    const all = [...this._modules.values()];
    const m = all[i < 0 ? i + all.length : i];
    if (!m) throw new RangeError(`${this.label()}: index ${i} is out of range for ${all.length} modules`);
    return m;
  }
  [Symbol.iterator](): IterableIterator<Module> {
    return this._modules.values();
  }
  override forward(_x: Tensor): Tensor {
    throw new Error(`${this.label()}: a ModuleList has no forward; iterate over it and call each module`);
  }
}

/** Runs its children in order; children are named '0', '1', ... or by the keys of a record. */
export class Sequential extends ModuleList {
  constructor(...modules: Module[] | [Record<string, Module>]) {
    super();
    if (modules.length === 1 && !(modules[0] instanceof Module)) {
      for (const [n, m] of Object.entries(modules[0] as Record<string, Module>)) this.registerModule(n, m);
    } else {
      (modules as Module[]).forEach((m) => this.append(m));
    }
  }
  override forward(x: Tensor): Tensor {
    // The scope frees each intermediate output once the next layer has consumed it.
    return scope(() => {
      let out = x;
      for (const m of this._modules.values()) out = m.call(out);
      return out === x ? x.view(x.shape) : out;
    });
  }
}
