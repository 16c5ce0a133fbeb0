// Optimizers. The step runs natively in one call over all parameters (native/optim.cpp, libtorch's
// _foreach_ kernels); this class only keeps the hyperparameters (which schedules change) and the
// state-dict format, which follows PyTorch's (state keyed by parameter index, param_groups).
import { native as N, type NativeOptimizer as NativeOptim, type OptimParamState } from '../addon/binding.js';
import { Tensor, hOf } from '../tensor/tensor.js';

export interface ParamGroup {
  params: Tensor[];
  lr: number;
  /** The lr the group started with (schedules scale from it). */
  initialLr?: number;
  [key: string]: unknown;
}
export type ParamsArg = Tensor[] | (Partial<ParamGroup> & { params: Tensor[] })[] | Iterable<Tensor>;

export interface OptimizerStateDict {
  state: Record<number, Record<string, Tensor | number>>;
  paramGroups: Record<string, unknown>[];
}

const BUF_KEYS = ['buf1', 'buf2', 'buf3'] as const;
const STATE_NAMES: Record<string, [string, string, string]> = {
  sgd: ['momentum_buffer', '', ''],
  adam: ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'],
  adamw: ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'],
};

export abstract class Optimizer {
  readonly paramGroups: ParamGroup[];
  private readonly native: NativeOptim;

  protected constructor(
    private readonly kind: 'sgd' | 'adam' | 'adamw',
    params: ParamsArg,
    defaults: Record<string, unknown>,
  ) {
    const list = Array.isArray(params) ? params : [...(params as Iterable<Tensor>)];
    if (list.length === 0) throw new TypeError(`${this.constructor.name}: got an empty parameter list`);
    const groups: (Partial<ParamGroup> & { params: Tensor[] })[] =
      list[0] instanceof Tensor ? [{ params: list as Tensor[] }] : (list as (Partial<ParamGroup> & { params: Tensor[] })[]);
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, i) => {
      if (!Array.isArray(g.params)) throw new TypeError(`${this.constructor.name}: param group ${i} has no params array`);
      for (const p of g.params) {
        if (!(p instanceof Tensor)) throw new TypeError(`${this.constructor.name}: param group ${i} holds a non-Tensor`);
        if (seen.has(p)) throw new TypeError(`${this.constructor.name}: a parameter appears in more than one group`);
        seen.add(p);
      }
      const merged = { ...defaults, ...g, params: g.params } as ParamGroup;
      if (!(typeof merged.lr === 'number' && merged.lr >= 0))
        throw new RangeError(`${this.constructor.name}: invalid lr ${String(merged.lr)}`);
      merged.initialLr ??= merged.lr;
      return merged;
    });
    this.validate();
    this.native = N.optimCreate(
      kind,
      this.paramGroups.map((g) => g.params.map((p) => hOf(p))),
    );
  }

  protected abstract hyper(g: ParamGroup): Record<string, number | boolean>;
  protected validate(): void {}

  /** One optimizer step over every parameter that has a gradient, in one native call. */
  step(): void {
    N.optimStep(
      this.native,
      this.paramGroups.map((g) => this.hyper(g)),
    );
  }

  /** Clears gradients (sets them to none by default, as PyTorch). */
  zeroGrad(setToNone = true): void {
    N.optimZeroGrad(this.native, setToNone);
  }

  /**
   * State in PyTorch's layout (state keyed by parameter index, param groups listing indices), with
   * camelCase hyperparameter names and `step` as a number. The tensors are new references to the live
   * buffers (as in PyTorch): the caller may dispose them; writing into them changes the optimizer.
   */
  stateDict(): OptimizerStateDict {
    const names = STATE_NAMES[this.kind];
    const raw = N.optimGetState(this.native);
    const state: Record<number, Record<string, Tensor | number>> = {};
    let index = 0;
    const paramGroups = this.paramGroups.map((g, gi) => {
      const ids: number[] = [];
      raw[gi].forEach((e) => {
        const s: Record<string, Tensor | number> = {};
        const bufs = [e.buf1, e.buf2, e.buf3];
        bufs.forEach((b, k) => {
          if (b) s[names[k]] = new Tensor(b);
        });
        if (this.kind !== 'sgd' && e.step > 0) s.step = e.step;
        if (Object.keys(s).length) state[index] = s;
        ids.push(index++);
      });
      const { params: _p, ...rest } = g;
      return { ...rest, params: ids };
    });
    return { state, paramGroups };
  }

  /** Restores hyperparameters and state; validates everything before changing anything. */
  loadStateDict(sd: OptimizerStateDict): void {
    if (!sd || !Array.isArray(sd.paramGroups) || typeof sd.state !== 'object')
      throw new TypeError('loadStateDict: expected {state, paramGroups}');
    if (sd.paramGroups.length !== this.paramGroups.length)
      throw new Error(`loadStateDict: the state has ${sd.paramGroups.length} param groups, this optimizer has ${this.paramGroups.length}`);
    const names = STATE_NAMES[this.kind];
    const nativeState = this.paramGroups.map((g, gi) => {
      const ids = sd.paramGroups[gi].params as number[];
      if (!Array.isArray(ids) || ids.length !== g.params.length)
        throw new Error(
          `loadStateDict: param group ${gi} has ${Array.isArray(ids) ? ids.length : '?'} params in the state, ${g.params.length} here`,
        );
      return ids.map((id) => {
        const s = sd.state[id] ?? {};
        const e: OptimParamState = { step: typeof s.step === 'number' ? s.step : s.step instanceof Tensor ? Number(s.step.item()) : 0 };
        names.forEach((n, k) => {
          if (n && s[n] instanceof Tensor) e[BUF_KEYS[k]] = hOf(s[n] as Tensor);
        });
        return e;
      });
    });
    N.optimSetState(this.native, nativeState);
    this.paramGroups.forEach((g, gi) => {
      const { params: _p, ...rest } = sd.paramGroups[gi] as Record<string, unknown>;
      Object.assign(g, rest);
    });
  }
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  maximize?: boolean;
}
export class SGD extends Optimizer {
  constructor(params: ParamsArg, o: SGDOptions) {
    super('sgd', params, { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...o });
  }
  protected override validate(): void {
    for (const g of this.paramGroups) {
      if ((g.momentum as number) < 0) throw new RangeError(`SGD: invalid momentum ${String(g.momentum)}`);
      if ((g.weightDecay as number) < 0) throw new RangeError(`SGD: invalid weightDecay ${String(g.weightDecay)}`);
      if (g.nesterov && (!((g.momentum as number) > 0) || g.dampening !== 0))
        throw new RangeError('SGD: nesterov needs momentum > 0 and dampening 0');
    }
  }
  protected hyper(g: ParamGroup): Record<string, number | boolean> {
    return {
      lr: g.lr,
      momentum: g.momentum as number,
      dampening: g.dampening as number,
      weightDecay: g.weightDecay as number,
      nesterov: !!g.nesterov,
      maximize: !!g.maximize,
    };
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  maximize?: boolean;
}
function adamHyper(g: ParamGroup): Record<string, number | boolean> {
  const [b1, b2] = g.betas as [number, number];
  return {
    lr: g.lr,
    beta1: b1,
    beta2: b2,
    eps: g.eps as number,
    weightDecay: g.weightDecay as number,
    amsgrad: !!g.amsgrad,
    maximize: !!g.maximize,
  };
}
function adamValidate(name: string, groups: ParamGroup[]): void {
  for (const g of groups) {
    const b = g.betas as number[];
    if (!Array.isArray(b) || b.length !== 2 || !(b[0] >= 0 && b[0] < 1 && b[1] >= 0 && b[1] < 1))
      throw new RangeError(`${name}: invalid betas ${JSON.stringify(b)}`);
    if (!((g.eps as number) >= 0)) throw new RangeError(`${name}: invalid eps ${String(g.eps)}`);
  }
}
export class Adam extends Optimizer {
  constructor(params: ParamsArg, o: AdamOptions = {}) {
    super('adam', params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, amsgrad: false, maximize: false, ...o });
  }
  protected override validate(): void {
    adamValidate('Adam', this.paramGroups);
  }
  protected hyper(g: ParamGroup): Record<string, number | boolean> {
    return adamHyper(g);
  }
}
/** Adam with decoupled weight decay (Loshchilov & Hutter); weightDecay defaults to 0.01 as PyTorch. */
export class AdamW extends Optimizer {
  constructor(params: ParamsArg, o: AdamOptions = {}) {
    super('adamw', params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, amsgrad: false, maximize: false, ...o });
  }
  protected override validate(): void {
    adamValidate('AdamW', this.paramGroups);
  }
  protected hyper(g: ParamGroup): Record<string, number | boolean> {
    return adamHyper(g);
  }
}

/** Clips the gradients' total norm in place (one native call); returns the norm before clipping. */
export function clipGradNorm(params: Tensor[], maxNorm: number, normType = 2, errorIfNonfinite = false): number {
  return N.clipGradNorm(
    params.map((p) => hOf(p)),
    maxNorm,
    normType,
    errorIfNonfinite,
  );
}

/**
 * Loss scaling for float16 training (as torch.amp.GradScaler): scale the loss, then step() unscales
 * the gradients, skips the step when any is inf/nan, and adapts the scale.
 */
export class GradScaler {
  scale: number;
  private goodSteps = 0;
  constructor(
    private readonly o: {
      initScale?: number;
      growthFactor?: number;
      backoffFactor?: number;
      growthInterval?: number;
      enabled?: boolean;
    } = {},
  ) {
    this.scale = o.initScale ?? 65536;
  }
  get enabled(): boolean {
    return this.o.enabled ?? true;
  }
  scaleLoss(loss: Tensor): Tensor {
    return this.enabled ? loss.mul(this.scale) : loss;
  }
  /** Unscales, steps unless gradients overflowed, updates the scale. Returns whether it stepped. */
  step(optimizer: Optimizer): boolean {
    if (!this.enabled) {
      optimizer.step();
      return true;
    }
    const params = optimizer.paramGroups.flatMap((g) => g.params);
    const overflow: boolean = N.unscaleGrads(
      params.map((p) => hOf(p)),
      1 / this.scale,
    );
    if (overflow) {
      this.scale *= this.o.backoffFactor ?? 0.5;
      this.goodSteps = 0;
      return false;
    }
    optimizer.step();
    if (++this.goodSteps >= (this.o.growthInterval ?? 2000)) {
      this.scale *= this.o.growthFactor ?? 2;
      this.goodSteps = 0;
    }
    return true;
  }
  stateDict(): { scale: number; goodSteps: number } {
    return { scale: this.scale, goodSteps: this.goodSteps };
  }
  loadStateDict(s: { scale: number; goodSteps: number }): void {
    this.scale = s.scale;
    this.goodSteps = s.goodSteps;
  }
}
