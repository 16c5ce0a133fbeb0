// Learning-rate schedules, computed the way torch.optim.lr_scheduler computes them (PyTorch 2.x).
//
// A schedule works on any optimizer-like object with `paramGroups: { lr, initialLr? }[]`. Like
// PyTorch, constructing a schedule records `initialLr` in every group (when not already set) and
// performs an initial step (so the group lr is the schedule's value at step 0), and each `step()`
// then advances one epoch or one iteration, as the caller chooses.
//
// The per-step update is PyTorch's *chainable* form: most schedules multiply the group's current
// lr by a factor instead of recomputing it from the base lr. That is what makes ChainedScheduler
// (several schedules acting on the same lr) and SequentialLR give PyTorch's numbers. The closed
// forms are used where PyTorch uses them (when SequentialLR switches to the next schedule).

export interface ParamGroupLike {
  lr: number;
  initialLr?: number;
  /** SGD-style momentum; OneCycleLR cycles it when present. */
  momentum?: number;
  /** Adam-style betas; OneCycleLR cycles betas[0] when present. */
  betas?: readonly number[];
}

export interface OptimizerLike {
  paramGroups: ParamGroupLike[];
}

/** Plain-JSON state of a schedule (what stateDict returns and loadStateDict takes). */
export type SchedulerState = { type: string; [key: string]: unknown };

function checkOptimizer(optimizer: OptimizerLike, who: string): void {
  if (!optimizer || !Array.isArray(optimizer.paramGroups) || optimizer.paramGroups.length === 0) {
    throw new TypeError(`${who}: expected an optimizer with a non-empty paramGroups array`);
  }
  optimizer.paramGroups.forEach((g, i) => {
    if (typeof g.lr !== 'number' || !Number.isFinite(g.lr)) {
      throw new TypeError(`${who}: paramGroups[${i}].lr must be a finite number, got ${String(g.lr)}`);
    }
  });
}

function checkInt(v: number, name: string, who: string, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${who}: ${name} must be an integer >= ${min}, got ${v}`);
}

function checkNumber(v: number, name: string, who: string): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`${who}: ${name} must be a finite number, got ${String(v)}`);
}

/** Index of the first element of a sorted array that is > x (Python's bisect_right). */
function bisectRight(sorted: readonly number[], x: number): number {
  let i = 0;
  while (i < sorted.length && sorted[i] <= x) i++;
  return i;
}

/** Base class: state (lastEpoch, step count, base lrs) and the step mechanics shared by all schedules. */
export abstract class LRScheduler {
  readonly optimizer: OptimizerLike;
  /** Index of the last step taken (0 right after construction). */
  lastEpoch = -1;
  baseLrs: number[] = [];
  /** @internal number of step() calls, including the initial one (PyTorch's _step_count). */
  stepCount = 0;
  /** @internal true during the initial step made by the constructor. */
  isInitial = false;
  protected lastLr: number[] = [];

  constructor(optimizer: OptimizerLike) {
    checkOptimizer(optimizer, this.constructor.name);
    this.optimizer = optimizer;
  }

  /** Subclasses call this at the end of their constructor, once their own fields are set. */
  protected start(): void {
    for (const g of this.optimizer.paramGroups) if (g.initialLr === undefined) g.initialLr = g.lr;
    this.baseLrs = this.optimizer.paramGroups.map((g) => g.initialLr as number);
    this.lastEpoch = -1;
    this.initialStep();
  }

  /** @internal PyTorch's _initial_step: reset the count and take step 0. */
  initialStep(): void {
    this.stepCount = 0;
    this.isInitial = true;
    try {
      this.step();
    } finally {
      this.isInitial = false;
    }
  }

  /** Advance one step (an epoch or an iteration) and write the new lr into every param group. */
  step(): void {
    this.stepCount++;
    this.updateLr();
  }

  /**
   * @internal Compute and apply the lr for the next step, or, when `epoch` is given, jump to
   * that step using the closed form (what SequentialLR does when it switches schedule).
   */
  updateLr(epoch?: number): void {
    let values: number[];
    if (epoch === undefined) {
      this.lastEpoch++;
      values = this.computeLr();
    } else {
      this.lastEpoch = epoch;
      values = this.closedFormLr() ?? this.computeLr();
    }
    this.optimizer.paramGroups.forEach((g, i) => {
      g.lr = values[i];
    });
    this.lastLr = this.currentLrs();
  }

  /** The learning rates set by the last step, one per param group (PyTorch's get_last_lr()). */
  getLr(): number[] {
    return [...this.lastLr];
  }

  /** Alias of getLr(), under PyTorch's name. */
  getLastLr(): number[] {
    return this.getLr();
  }

  protected currentLrs(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  /** The chainable update: the lr for step `lastEpoch` given the groups' current lrs. */
  protected abstract computeLr(): number[];

  /** The lr at step `lastEpoch` from the base lrs alone, where the schedule has one. */
  protected closedFormLr(): number[] | null {
    return null;
  }

  /** The schedule's own settings, saved and restored with its state. */
  protected abstract settings(): Record<string, unknown>;
  protected abstract applySettings(s: Record<string, unknown>): void;

  stateDict(): SchedulerState {
    return {
      type: this.constructor.name,
      lastEpoch: this.lastEpoch,
      stepCount: this.stepCount,
      baseLrs: [...this.baseLrs],
      lastLr: [...this.lastLr],
      ...structuredClone(this.settings()),
    };
  }

  /**
   * Restore a state from stateDict(). Also writes the restored lrs (and initialLr) into the
   * optimizer's groups, so a resumed run continues with the right lr even when the optimizer's
   * own state did not carry it.
   */
  loadStateDict(state: SchedulerState): void {
    const who = `${this.constructor.name}.loadStateDict`;
    if (!state || typeof state !== 'object') throw new TypeError(`${who}: expected a state object, got ${String(state)}`);
    if (state.type !== this.constructor.name) {
      throw new Error(`${who}: the state is for a ${String(state.type)}, not a ${this.constructor.name}`);
    }
    const n = this.optimizer.paramGroups.length;
    for (const key of ['baseLrs', 'lastLr'] as const) {
      const v = state[key];
      if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number')) {
        throw new Error(`${who}: '${key}' must be an array of ${n} numbers (one per param group), got ${JSON.stringify(v)}`);
      }
    }
    if (typeof state.lastEpoch !== 'number' || typeof state.stepCount !== 'number') {
      throw new Error(`${who}: 'lastEpoch' and 'stepCount' must be numbers`);
    }
    this.lastEpoch = state.lastEpoch;
    this.stepCount = state.stepCount;
    this.baseLrs = [...(state.baseLrs as number[])];
    this.lastLr = [...(state.lastLr as number[])];
    this.applySettings(structuredClone(state));
    this.optimizer.paramGroups.forEach((g, i) => {
      g.initialLr = this.baseLrs[i];
      g.lr = this.lastLr[i];
    });
  }
}

/** lr = base * gamma^floor(step / stepSize). */
export class StepLR extends LRScheduler {
  stepSize: number;
  gamma: number;

  constructor(optimizer: OptimizerLike, stepSize: number, gamma = 0.1) {
    super(optimizer);
    checkInt(stepSize, 'stepSize', 'StepLR', 1);
    checkNumber(gamma, 'gamma', 'StepLR');
    this.stepSize = stepSize;
    this.gamma = gamma;
    this.start();
  }

  protected computeLr(): number[] {
    if (this.lastEpoch === 0 || this.lastEpoch % this.stepSize !== 0) return this.currentLrs();
    return this.currentLrs().map((lr) => lr * this.gamma);
  }

  protected override closedFormLr(): number[] {
    return this.baseLrs.map((b) => b * this.gamma ** Math.floor(this.lastEpoch / this.stepSize));
  }

  protected settings() {
    return { stepSize: this.stepSize, gamma: this.gamma };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.stepSize = s.stepSize as number;
    this.gamma = s.gamma as number;
  }
}

/** lr = base * gamma^(number of milestones <= step). A milestone listed twice decays twice. */
export class MultiStepLR extends LRScheduler {
  milestones: number[];
  gamma: number;

  constructor(optimizer: OptimizerLike, milestones: readonly number[], gamma = 0.1) {
    super(optimizer);
    if (!Array.isArray(milestones)) throw new TypeError('MultiStepLR: milestones must be an array of step indices');
    milestones.forEach((m, i) => checkInt(m, `milestones[${i}]`, 'MultiStepLR', 0));
    checkNumber(gamma, 'gamma', 'MultiStepLR');
    this.milestones = [...milestones].sort((a, b) => a - b);
    this.gamma = gamma;
    this.start();
  }

  protected computeLr(): number[] {
    const hits = this.milestones.filter((m) => m === this.lastEpoch).length;
    if (hits === 0) return this.currentLrs();
    return this.currentLrs().map((lr) => lr * this.gamma ** hits);
  }

  protected override closedFormLr(): number[] {
    return this.baseLrs.map((b) => b * this.gamma ** bisectRight(this.milestones, this.lastEpoch));
  }

  protected settings() {
    return { milestones: this.milestones, gamma: this.gamma };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.milestones = s.milestones as number[];
    this.gamma = s.gamma as number;
  }
}

/** lr = base * gamma^step. */
export class ExponentialLR extends LRScheduler {
  gamma: number;

  constructor(optimizer: OptimizerLike, gamma: number) {
    super(optimizer);
    checkNumber(gamma, 'gamma', 'ExponentialLR');
    this.gamma = gamma;
    this.start();
  }

  protected computeLr(): number[] {
    if (this.lastEpoch === 0) return this.currentLrs();
    return this.currentLrs().map((lr) => lr * this.gamma);
  }

  protected override closedFormLr(): number[] {
    return this.baseLrs.map((b) => b * this.gamma ** this.lastEpoch);
  }

  protected settings() {
    return { gamma: this.gamma };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.gamma = s.gamma as number;
  }
}

/** lr = base * factor for the first totalIters steps, then base. */
export class ConstantLR extends LRScheduler {
  factor: number;
  totalIters: number;

  constructor(optimizer: OptimizerLike, factor = 1 / 3, totalIters = 5) {
    super(optimizer);
    if (!(factor > 0 && factor <= 1)) throw new RangeError(`ConstantLR: factor must be in (0, 1], got ${factor}`);
    checkInt(totalIters, 'totalIters', 'ConstantLR', 0);
    this.factor = factor;
    this.totalIters = totalIters;
    this.start();
  }

  protected computeLr(): number[] {
    if (this.lastEpoch === 0) return this.currentLrs().map((lr) => lr * this.factor);
    if (this.lastEpoch !== this.totalIters) return this.currentLrs();
    return this.currentLrs().map((lr) => lr * (1 / this.factor));
  }

  protected override closedFormLr(): number[] {
    return this.baseLrs.map((b) => b * (this.factor + (this.lastEpoch >= this.totalIters ? 1 - this.factor : 0)));
  }

  protected settings() {
    return { factor: this.factor, totalIters: this.totalIters };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.factor = s.factor as number;
    this.totalIters = s.totalIters as number;
  }
}

/** The factor on the base lr goes linearly from startFactor (step 0) to endFactor (step totalIters). */
export class LinearLR extends LRScheduler {
  startFactor: number;
  endFactor: number;
  totalIters: number;

  constructor(optimizer: OptimizerLike, startFactor = 1 / 3, endFactor = 1, totalIters = 5) {
    super(optimizer);
    const who = new.target.name;
    if (!(startFactor > 0 && startFactor <= 1)) throw new RangeError(`${who}: start factor must be in (0, 1], got ${startFactor}`);
    if (!(endFactor >= 0 && endFactor <= 1)) throw new RangeError(`${who}: end factor must be in [0, 1], got ${endFactor}`);
    checkInt(totalIters, 'totalIters', who, 0);
    this.startFactor = startFactor;
    this.endFactor = endFactor;
    this.totalIters = totalIters;
    this.start();
  }

  protected computeLr(): number[] {
    if (this.lastEpoch === 0) return this.currentLrs().map((lr) => lr * this.startFactor);
    if (this.isInitial || this.lastEpoch > this.totalIters) return this.currentLrs();
    const d = this.endFactor - this.startFactor;
    const ratio = 1 + d / (this.totalIters * this.startFactor + (this.lastEpoch - 1) * d);
    return this.currentLrs().map((lr) => lr * ratio);
  }

  protected override closedFormLr(): number[] {
    const d = this.endFactor - this.startFactor;
    return this.baseLrs.map((b) => b * (this.startFactor + (d * Math.min(this.totalIters, this.lastEpoch)) / this.totalIters));
  }

  protected settings() {
    return { startFactor: this.startFactor, endFactor: this.endFactor, totalIters: this.totalIters };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.startFactor = s.startFactor as number;
    this.endFactor = s.endFactor as number;
    this.totalIters = s.totalIters as number;
  }
}

/**
 * Linear warm-up: lr = base * startFactor at step 0, rising linearly to base at step warmupSteps,
 * then base. The same as PyTorch's LinearLR(startFactor, 1.0, warmupSteps); compose it with
 * SequentialLR or ChainedScheduler to warm up into another schedule.
 */
export class LinearWarmup extends LinearLR {
  constructor(optimizer: OptimizerLike, warmupSteps: number, startFactor = 0.1) {
    super(optimizer, startFactor, 1, warmupSteps);
  }
}

/**
 * Cosine annealing from the base lr down to etaMin over tMax steps (then back up, periodically,
 * like PyTorch's CosineAnnealingLR without restarts).
 */
export class CosineAnnealingLR extends LRScheduler {
  tMax: number;
  etaMin: number;

  constructor(optimizer: OptimizerLike, tMax: number, etaMin = 0) {
    super(optimizer);
    checkInt(tMax, 'tMax', 'CosineAnnealingLR', 1);
    checkNumber(etaMin, 'etaMin', 'CosineAnnealingLR');
    this.tMax = tMax;
    this.etaMin = etaMin;
    this.start();
  }

  protected computeLr(): number[] {
    const { lastEpoch: t, tMax, etaMin } = this;
    if (this.isInitial) return this.currentLrs();
    if (this.stepCount === 1 && t > 0) {
      return this.baseLrs.map((b) => etaMin + ((b - etaMin) * (1 + Math.cos((t * Math.PI) / tMax))) / 2);
    }
    if ((t - 1 - tMax) % (2 * tMax) === 0) {
      return this.currentLrs().map((lr, i) => lr + ((this.baseLrs[i] - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2);
    }
    const ratio = (1 + Math.cos((Math.PI * t) / tMax)) / (1 + Math.cos((Math.PI * (t - 1)) / tMax));
    return this.currentLrs().map((lr) => ratio * (lr - etaMin) + etaMin);
  }

  protected override closedFormLr(): number[] {
    const { lastEpoch: t, tMax, etaMin } = this;
    return this.baseLrs.map((b) => etaMin + ((b - etaMin) * (1 + Math.cos((Math.PI * t) / tMax))) / 2);
  }

  protected settings() {
    return { tMax: this.tMax, etaMin: this.etaMin };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.tMax = s.tMax as number;
    this.etaMin = s.etaMin as number;
  }
}

export interface OneCycleOptions {
  /** Fraction of the steps spent increasing the lr. Default 0.3. */
  pctStart?: number;
  /** Starting lr = maxLr / divFactor. Default 25. */
  divFactor?: number;
  /** Final lr = starting lr / finalDivFactor. Default 1e4. */
  finalDivFactor?: number;
  annealStrategy?: 'cos' | 'linear';
  /**
   * Cycle momentum (SGD `momentum`, or Adam `betas[0]`) inversely to the lr, between
   * maxMomentum and baseMomentum. Default: on when the param groups have momentum or betas.
   */
  cycleMomentum?: boolean;
  baseMomentum?: number;
  maxMomentum?: number;
  /** Three phases (up, down to the starting lr, then annihilate) instead of two. */
  threePhase?: boolean;
}

interface Phase {
  endStep: number;
  startLr: 'initial' | 'max' | 'min';
  endLr: 'initial' | 'max' | 'min';
  startMom: 'max' | 'base';
  endMom: 'max' | 'base';
}

/**
 * The 1cycle policy (Smith & Topin): lr rises from maxLr/divFactor to maxLr over pctStart of
 * totalSteps, then anneals to maxLr/divFactor/finalDivFactor. Step it once per batch; stepping
 * past totalSteps is an error (as in PyTorch). Sets every group's initialLr to maxLr/divFactor.
 */
export class OneCycleLR extends LRScheduler {
  totalSteps: number;
  maxLrs: number[];
  minLrs: number[] = [];
  pctStart: number;
  annealStrategy: 'cos' | 'linear';
  cycleMomentum: boolean;
  baseMomentum: number;
  maxMomentum: number;
  phases: Phase[];

  constructor(optimizer: OptimizerLike, maxLr: number | readonly number[], totalSteps: number, opts: OneCycleOptions = {}) {
    super(optimizer);
    const who = 'OneCycleLR';
    checkInt(totalSteps, 'totalSteps', who, 1);
    const groups = optimizer.paramGroups;
    const maxLrs = typeof maxLr === 'number' ? groups.map(() => maxLr) : [...maxLr];
    if (maxLrs.length !== groups.length) {
      throw new RangeError(`${who}: expected ${groups.length} values for maxLr (one per param group), got ${maxLrs.length}`);
    }
    maxLrs.forEach((v, i) => checkNumber(v, `maxLr[${i}]`, who));
    const { pctStart = 0.3, divFactor = 25, finalDivFactor = 1e4, annealStrategy = 'cos', threePhase = false } = opts;
    if (!(pctStart >= 0 && pctStart <= 1)) throw new RangeError(`${who}: pctStart must be in [0, 1], got ${pctStart}`);
    if (annealStrategy !== 'cos' && annealStrategy !== 'linear') {
      throw new RangeError(`${who}: annealStrategy must be 'cos' or 'linear', got '${String(annealStrategy)}'`);
    }
    checkNumber(divFactor, 'divFactor', who);
    checkNumber(finalDivFactor, 'finalDivFactor', who);
    this.totalSteps = totalSteps;
    this.pctStart = pctStart;
    this.annealStrategy = annealStrategy;
    this.maxLrs = maxLrs;
    this.phases = threePhase
      ? [
          { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMom: 'max', endMom: 'base' },
          { endStep: 2 * pctStart * totalSteps - 2, startLr: 'max', endLr: 'initial', startMom: 'base', endMom: 'max' },
          { endStep: totalSteps - 1, startLr: 'initial', endLr: 'min', startMom: 'max', endMom: 'max' },
        ]
      : [
          { endStep: pctStart * totalSteps - 1, startLr: 'initial', endLr: 'max', startMom: 'max', endMom: 'base' },
          { endStep: totalSteps - 1, startLr: 'max', endLr: 'min', startMom: 'base', endMom: 'max' },
        ];
    // Unlike the other schedules, 1cycle defines the starting lr itself.
    groups.forEach((g, i) => {
      g.initialLr = maxLrs[i] / divFactor;
      this.minLrs.push(g.initialLr / finalDivFactor);
    });
    const hasMomentum = groups.every((g) => typeof g.momentum === 'number' || Array.isArray(g.betas));
    if (opts.cycleMomentum && !hasMomentum) {
      throw new Error(`${who}: cycleMomentum needs param groups with 'momentum' (SGD) or 'betas' (Adam)`);
    }
    this.cycleMomentum = opts.cycleMomentum ?? hasMomentum;
    this.baseMomentum = opts.baseMomentum ?? 0.85;
    this.maxMomentum = opts.maxMomentum ?? 0.95;
    if (this.cycleMomentum) for (const g of groups) this.setMomentum(g, this.maxMomentum);
    this.start();
  }

  private setMomentum(g: ParamGroupLike, m: number): void {
    if (Array.isArray(g.betas)) g.betas = [m, ...g.betas.slice(1)];
    else g.momentum = m;
  }

  private anneal(start: number, end: number, pct: number): number {
    if (this.annealStrategy === 'cos') return end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
    return (end - start) * pct + start;
  }

  protected computeLr(): number[] {
    const t = this.lastEpoch;
    if (t > this.totalSteps) {
      throw new RangeError(`OneCycleLR: tried to step ${t} times; the schedule was made for totalSteps = ${this.totalSteps}`);
    }
    return this.optimizer.paramGroups.map((g, i) => {
      const lrOf = { initial: this.baseLrs[i], max: this.maxLrs[i], min: this.minLrs[i] };
      const momOf = { max: this.maxMomentum, base: this.baseMomentum };
      let startStep = 0;
      for (let p = 0; p < this.phases.length; p++) {
        const ph = this.phases[p];
        if (t <= ph.endStep || p === this.phases.length - 1) {
          const pct = (t - startStep) / (ph.endStep - startStep);
          if (this.cycleMomentum) this.setMomentum(g, this.anneal(momOf[ph.startMom], momOf[ph.endMom], pct));
          return this.anneal(lrOf[ph.startLr], lrOf[ph.endLr], pct);
        }
        startStep = ph.endStep;
      }
      throw new Error('unreachable');
    });
  }

  protected settings() {
    return {
      totalSteps: this.totalSteps,
      maxLrs: this.maxLrs,
      minLrs: this.minLrs,
      pctStart: this.pctStart,
      annealStrategy: this.annealStrategy,
      cycleMomentum: this.cycleMomentum,
      baseMomentum: this.baseMomentum,
      maxMomentum: this.maxMomentum,
      phases: this.phases,
    };
  }

  protected applySettings(s: Record<string, unknown>): void {
    this.totalSteps = s.totalSteps as number;
    this.maxLrs = s.maxLrs as number[];
    this.minLrs = s.minLrs as number[];
    this.pctStart = s.pctStart as number;
    this.annealStrategy = s.annealStrategy as 'cos' | 'linear';
    this.cycleMomentum = s.cycleMomentum as boolean;
    this.baseMomentum = s.baseMomentum as number;
    this.maxMomentum = s.maxMomentum as number;
    this.phases = s.phases as Phase[];
  }
}

function checkSameOptimizer(optimizer: OptimizerLike, schedulers: readonly LRScheduler[], who: string): void {
  if (!Array.isArray(schedulers) || schedulers.length === 0) throw new TypeError(`${who}: expected a non-empty array of schedulers`);
  schedulers.forEach((s, i) => {
    if (!(s instanceof LRScheduler)) throw new TypeError(`${who}: schedulers[${i}] is not a learning-rate schedule`);
    if (s.optimizer !== optimizer) throw new Error(`${who}: schedulers[${i}] (${s.constructor.name}) belongs to a different optimizer`);
  });
}

/**
 * Runs schedules one after another: schedulers[0] until milestones[0], then schedulers[1]
 * (restarted from its own step 0, from the base lr) until milestones[1], and so on.
 * Example: warm-up for 5 epochs, then cosine:
 *   new SequentialLR(opt, [new LinearWarmup(opt, 5), new CosineAnnealingLR(opt, 95)], [5])
 */
export class SequentialLR extends LRScheduler {
  readonly schedulers: LRScheduler[];
  milestones: number[];

  constructor(optimizer: OptimizerLike, schedulers: readonly LRScheduler[], milestones: readonly number[]) {
    super(optimizer);
    checkSameOptimizer(optimizer, schedulers, 'SequentialLR');
    if (!Array.isArray(milestones) || milestones.length !== schedulers.length - 1) {
      throw new RangeError(
        `SequentialLR: expected ${schedulers.length - 1} milestones for ${schedulers.length} schedulers, got ${Array.isArray(milestones) ? milestones.length : String(milestones)}`,
      );
    }
    milestones.forEach((m, i) => {
      checkInt(m, `milestones[${i}]`, 'SequentialLR', 0);
      if (i > 0 && m < milestones[i - 1])
        throw new RangeError(`SequentialLR: milestones must be increasing, got [${milestones.join(', ')}]`);
    });
    this.schedulers = [...schedulers];
    this.milestones = [...milestones];
    this.lastEpoch = 0;
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr ?? g.lr);
    // Each scheduler took its own step 0 when it was made: undo that, restore the base lr, and
    // take step 0 of the scheduler that runs first.
    optimizer.paramGroups.forEach((g, i) => {
      g.lr = this.baseLrs[i];
    });
    SequentialLR.undo(this);
    const s = this.schedulers[bisectRight(this.milestones, 0)];
    s.initialStep();
    this.lastLr = s.getLr();
  }

  private static undo(s: LRScheduler): void {
    if (s instanceof SequentialLR || s instanceof ChainedScheduler) for (const c of s.schedulers) SequentialLR.undo(c);
    else s.lastEpoch -= 1;
  }

  override step(): void {
    this.lastEpoch++;
    const idx = bisectRight(this.milestones, this.lastEpoch);
    const s = this.schedulers[idx];
    if (idx > 0 && this.milestones[idx - 1] === this.lastEpoch) s.updateLr(0);
    else s.step();
    this.lastLr = s.getLr();
  }

  protected computeLr(): number[] {
    throw new Error('SequentialLR computes no lr itself');
  }

  protected settings() {
    return { milestones: this.milestones, schedulers: this.schedulers.map((s) => s.stateDict()) };
  }

  protected applySettings(s: Record<string, unknown>): void {
    loadChildren(this.schedulers, s.schedulers, 'SequentialLR');
    this.milestones = s.milestones as number[];
  }
}

/** Steps several chainable schedules together on every step(); their effects multiply. */
export class ChainedScheduler extends LRScheduler {
  readonly schedulers: LRScheduler[];

  constructor(schedulers: readonly LRScheduler[], optimizer?: OptimizerLike) {
    const opt = optimizer ?? schedulers?.[0]?.optimizer;
    if (!opt) throw new TypeError('ChainedScheduler: expected a non-empty array of schedulers (or an optimizer)');
    super(opt);
    checkSameOptimizer(opt, schedulers, 'ChainedScheduler');
    this.schedulers = [...schedulers];
    this.baseLrs = opt.paramGroups.map((g) => g.initialLr ?? g.lr);
    this.lastEpoch = 0;
    this.lastLr = this.currentLrs();
  }

  override step(): void {
    this.lastEpoch++;
    for (const s of this.schedulers) s.step();
    this.lastLr = this.currentLrs();
  }

  protected computeLr(): number[] {
    throw new Error('ChainedScheduler computes no lr itself');
  }

  protected settings() {
    return { schedulers: this.schedulers.map((s) => s.stateDict()) };
  }

  protected applySettings(s: Record<string, unknown>): void {
    loadChildren(this.schedulers, s.schedulers, 'ChainedScheduler');
  }
}

function loadChildren(children: LRScheduler[], states: unknown, who: string): void {
  if (!Array.isArray(states) || states.length !== children.length) {
    throw new Error(
      `${who}.loadStateDict: expected states for ${children.length} schedulers, got ${Array.isArray(states) ? states.length : String(states)}`,
    );
  }
  children.forEach((c, i) => c.loadStateDict(states[i] as SchedulerState));
}
