// Learning-rate schedules against PyTorch.
//
// The expected arrays come from PyTorch 2.13 (torch.optim.lr_scheduler, CPU build), produced by
// this snippet (row 0 is the lr right after construction, row k the lr after k step() calls):
//
//   import torch, json
//   from torch.optim import SGD, Adam
//   from torch.optim import lr_scheduler as S
//   def opt(lrs=(0.1,), mom=0.0, adam=False):
//       groups=[{'params':[torch.zeros(1, requires_grad=True)], 'lr':lr} for lr in lrs]
//       return Adam(groups, lr=lrs[0]) if adam else SGD(groups, lr=lrs[0], momentum=mom)
//   def run(o, s, n, extra=None):
//       out=[[g['lr'] for g in o.param_groups]]; ex=[]
//       for _ in range(n):
//           o.step(); s.step(); out.append([g['lr'] for g in o.param_groups])
//           if extra: ex.append(extra(o))
//       return out, ex
//   o=opt((0.1,0.01)); step=run(o, S.StepLR(o,3,0.5),10)[0]
//   o=opt((1.0,)); multistep=run(o, S.MultiStepLR(o,[2,5,5],0.1),8)[0]
//   o=opt((0.1,)); cosine=run(o, S.CosineAnnealingLR(o,10,0.001),25)[0]
//   o=opt((0.1,),mom=0.9); s=S.OneCycleLR(o,max_lr=0.1,total_steps=20)
//   m0=o.param_groups[0]['momentum']; onecycle,ex=run(o,s,19,lambda o:o.param_groups[0]['momentum']); onecycle_mom=[m0]+ex
//   o=opt((0.1,),adam=True); s=S.OneCycleLR(o,max_lr=[0.05],total_steps=12,pct_start=0.25,
//       anneal_strategy='linear',div_factor=10,final_div_factor=100)
//   b0=o.param_groups[0]['betas'][0]; onecycle_lin,ex=run(o,s,11,lambda o:o.param_groups[0]['betas'][0]); onecycle_lin_beta1=[b0]+ex
//   o=opt((0.1,)); warmup=run(o, S.LinearLR(o,start_factor=0.1,total_iters=5),8)[0]
//   o=opt((0.1,)); a=S.LinearLR(o,start_factor=0.1,total_iters=3); b=S.CosineAnnealingLR(o,7,0.0)
//   sequential=run(o,S.SequentialLR(o,[a,b],[3]),12)[0]
//   o=opt((0.1,)); a=S.LinearLR(o,start_factor=0.5,total_iters=4); b=S.ExponentialLR(o,0.9)
//   chained=run(o,S.ChainedScheduler([a,b]),8)[0]
//   o=opt((0.1,)); a=S.LinearLR(o,start_factor=0.2,total_iters=2); b=S.StepLR(o,2,0.5); c=S.MultiStepLR(o,[3],0.1)
//   seq3=run(o,S.SequentialLR(o,[a,b,c],[2,6]),10)[0]
//   o=opt((0.2,)); a=S.ConstantLR(o,factor=0.5,total_iters=3); b=S.CosineAnnealingLR(o,6,0.01)
//   chained_cos=run(o,S.ChainedScheduler([a,b]),9)[0]
//   # then print(json.dumps(...)) of each list
import { describe, expect, test } from 'vitest';
import {
  ChainedScheduler,
  ConstantLR,
  CosineAnnealingLR,
  ExponentialLR,
  LinearLR,
  LinearWarmup,
  LRScheduler,
  MultiStepLR,
  OneCycleLR,
  OptimizerLike,
  SequentialLR,
  StepLR,
} from '../../lib/optim/schedule.js';

const PT = {
  step: [
    [0.1, 0.01],
    [0.1, 0.01],
    [0.1, 0.01],
    [0.05, 0.005],
    [0.05, 0.005],
    [0.05, 0.005],
    [0.025, 0.0025],
    [0.025, 0.0025],
    [0.025, 0.0025],
    [0.0125, 0.00125],
    [0.0125, 0.00125],
  ],
  multistep: [
    [1.0],
    [1.0],
    [0.1],
    [0.1],
    [0.1],
    [0.0010000000000000002],
    [0.0010000000000000002],
    [0.0010000000000000002],
    [0.0010000000000000002],
  ],
  cosine: [
    [0.1],
    [0.09757729755661011],
    [0.0905463412215599],
    [0.07959536998847742],
    [0.0657963412215599],
    [0.0505],
    [0.03520365877844011],
    [0.02140463001152259],
    [0.010453658778440109],
    [0.0034227024433899004],
    [0.001],
    [0.0034227024433899004],
    [0.01045365877844014],
    [0.02140463001152267],
    [0.035203658778440255],
    [0.05050000000000022],
    [0.06579634122156018],
    [0.07959536998847777],
    [0.09054634122156031],
    [0.09757729755661054],
    [0.10000000000000045],
    [0.09757729755661054],
    [0.09054634122156033],
    [0.07959536998847778],
    [0.0657963412215602],
    [0.050500000000000225],
  ],
  onecycle: [
    [0.0040000000000000036],
    [0.013167184270002533],
    [0.037167184270002526],
    [0.06683281572999747],
    [0.09083281572999748],
    [0.1],
    [0.09874640062350874],
    [0.09504846320134738],
    [0.089091617757105],
    [0.0811745653949763],
    [0.07169430017913009],
    [0.06112620219362893],
    [0.0500002],
    [0.03887419780637107],
    [0.028306099820869922],
    [0.0188258346050237],
    [0.010908782242895003],
    [0.004951936798652629],
    [0.0012539993764912555],
    [4e-7],
  ],
  onecycleMom: [
    0.95, 0.9404508497187474, 0.9154508497187474, 0.8845491502812526, 0.8595491502812526, 0.85, 0.8512536043909088, 0.854951556604879,
    0.8609084258765984, 0.8688255099070633, 0.878305813044122, 0.8888739533021842, 0.8999999999999999, 0.9111260466978157,
    0.9216941869558779, 0.9311744900929366, 0.9390915741234015, 0.945048443395121, 0.9487463956090911, 0.95,
  ],
  onecycleLin: [
    [0.005],
    [0.027500000000000004],
    [0.05],
    [0.04445],
    [0.038900000000000004],
    [0.033350000000000005],
    [0.027800000000000002],
    [0.022250000000000002],
    [0.016700000000000007],
    [0.01115],
    [0.005600000000000001],
    [5.000000000000143e-5],
  ],
  onecycleLinBeta1: [
    0.95, 0.8999999999999999, 0.85, 0.861111111111111, 0.8722222222222222, 0.8833333333333333, 0.8944444444444444, 0.9055555555555556,
    0.9166666666666666, 0.9277777777777777, 0.9388888888888889, 0.95,
  ],
  warmup: [[0.010000000000000002], [0.028000000000000004], [0.046000000000000006], [0.064], [0.082], [0.1], [0.1], [0.1], [0.1]],
  sequential: [
    [0.010000000000000002],
    [0.04],
    [0.07],
    [0.1],
    [0.09504844339512096],
    [0.08117449009293669],
    [0.061126046697815725],
    [0.03887395330218429],
    [0.018825509907063328],
    [0.004951556604879048],
    [0.0],
    [0.004951556604879043],
    [0.018825509907063314],
  ],
  chained: [
    [0.05],
    [0.05625],
    [0.060750000000000005],
    [0.06378750000000001],
    [0.06561],
    [0.059049000000000004],
    [0.05314410000000001],
    [0.04782969000000001],
    [0.04304672100000001],
  ],
  seq3: [
    [0.020000000000000004],
    [0.06000000000000001],
    [0.1],
    [0.1],
    [0.05],
    [0.05],
    [0.1],
    [0.1],
    [0.1],
    [0.010000000000000002],
    [0.010000000000000002],
  ],
  chainedCos: [
    [0.1],
    [0.09397114317029975],
    [0.07750000000000001],
    [0.10666666666666667],
    [0.05833333333333336],
    [0.022950877634170926],
    [0.01],
    [0.022727586640478324],
    [0.05750000000000001],
    [0.10500000000000008],
  ],
};

/** A stand-in optimizer: only param groups matter to a schedule. */
function sgd(lrs: number[], momentum?: number): OptimizerLike {
  return { paramGroups: lrs.map((lr) => (momentum === undefined ? { lr } : { lr, momentum })) };
}
function adam(lr: number): OptimizerLike {
  return { paramGroups: [{ lr, betas: [0.9, 0.999] }] };
}

/** Lrs after construction, then after each of n steps; `extra` records something else per step. */
function run(opt: OptimizerLike, s: LRScheduler, n: number, extra?: () => number): { lrs: number[][]; ex: number[] } {
  const lrs = [opt.paramGroups.map((g) => g.lr)];
  const ex = extra ? [extra()] : [];
  for (let i = 0; i < n; i++) {
    s.step();
    lrs.push(opt.paramGroups.map((g) => g.lr));
    if (extra) ex.push(extra());
  }
  return { lrs, ex };
}

function expectSeq(actual: number[][] | number[], expected: number[][] | number[]): void {
  const a = actual.flat();
  const e = expected.flat();
  expect(a.length).toBe(e.length);
  for (let i = 0; i < e.length; i++) {
    // Same formulas as PyTorch in the same order: differences are last-bit rounding at most.
    if (Math.abs(a[i] - e[i]) > 1e-14 + 1e-12 * Math.abs(e[i])) {
      throw new Error(`element ${i}: got ${a[i]}, PyTorch gives ${e[i]}\n got: ${JSON.stringify(a)}`);
    }
  }
}

describe('schedules match PyTorch 2.13', () => {
  test('StepLR, two param groups', () => {
    const o = sgd([0.1, 0.01]);
    const s = new StepLR(o, 3, 0.5);
    expectSeq(run(o, s, 10).lrs, PT.step);
    expect(s.getLr()).toEqual([0.0125, 0.00125]);
    expect(o.paramGroups.map((g) => g.initialLr)).toEqual([0.1, 0.01]);
  });

  test('MultiStepLR with a repeated milestone', () => {
    const o = sgd([1.0]);
    expectSeq(run(o, new MultiStepLR(o, [2, 5, 5], 0.1), 8).lrs, PT.multistep);
  });

  test('CosineAnnealingLR past tMax', () => {
    const o = sgd([0.1]);
    expectSeq(run(o, new CosineAnnealingLR(o, 10, 0.001), 25).lrs, PT.cosine);
  });

  test('OneCycleLR cos, with SGD momentum cycled', () => {
    const o = sgd([0.1], 0.9);
    const { lrs, ex } = run(o, new OneCycleLR(o, 0.1, 20), 19, () => o.paramGroups[0].momentum as number);
    expectSeq(lrs, PT.onecycle);
    expectSeq(ex, PT.onecycleMom);
  });

  test('OneCycleLR linear, custom factors, Adam beta1 cycled', () => {
    const o = adam(0.1);
    const s = new OneCycleLR(o, [0.05], 12, { pctStart: 0.25, annealStrategy: 'linear', divFactor: 10, finalDivFactor: 100 });
    const { lrs, ex } = run(o, s, 11, () => (o.paramGroups[0].betas as number[])[0]);
    expectSeq(lrs, PT.onecycleLin);
    expectSeq(ex, PT.onecycleLinBeta1);
    expect((o.paramGroups[0].betas as number[])[1]).toBe(0.999);
    // PyTorch allows step index == totalSteps and refuses the one after.
    s.step();
    expect(() => s.step()).toThrow(/tried to step 13 times.*totalSteps = 12/);
  });

  test('LinearWarmup = LinearLR(startFactor, 1, warmupSteps)', () => {
    const o = sgd([0.1]);
    expectSeq(run(o, new LinearWarmup(o, 5, 0.1), 8).lrs, PT.warmup);
    const o2 = sgd([0.1]);
    expectSeq(run(o2, new LinearLR(o2, 0.1, 1, 5), 8).lrs, PT.warmup);
  });

  test('SequentialLR: warm-up then cosine', () => {
    const o = sgd([0.1]);
    const s = new SequentialLR(o, [new LinearWarmup(o, 3, 0.1), new CosineAnnealingLR(o, 7, 0)], [3]);
    expectSeq(run(o, s, 12).lrs, PT.sequential);
  });

  test('SequentialLR with three schedules', () => {
    const o = sgd([0.1]);
    const s = new SequentialLR(o, [new LinearLR(o, 0.2, 1, 2), new StepLR(o, 2, 0.5), new MultiStepLR(o, [3], 0.1)], [2, 6]);
    expectSeq(run(o, s, 10).lrs, PT.seq3);
  });

  test('ChainedScheduler: LinearLR x ExponentialLR', () => {
    const o = sgd([0.1]);
    const s = new ChainedScheduler([new LinearLR(o, 0.5, 1, 4), new ExponentialLR(o, 0.9)]);
    expectSeq(run(o, s, 8).lrs, PT.chained);
  });

  test('ChainedScheduler: ConstantLR x CosineAnnealingLR', () => {
    const o = sgd([0.2]);
    const s = new ChainedScheduler([new ConstantLR(o, 0.5, 3), new CosineAnnealingLR(o, 6, 0.01)]);
    expectSeq(run(o, s, 9).lrs, PT.chainedCos);
  });
});

describe('schedule state', () => {
  // Stop after k steps, save as JSON, rebuild everything fresh, load, continue: the lrs must be
  // exactly those of an uninterrupted run.
  function resumeMatches(make: (o: OptimizerLike) => LRScheduler, makeOpt: () => OptimizerLike, k: number, n: number): void {
    const o1 = makeOpt();
    const full = run(o1, make(o1), n).lrs;
    const o2 = makeOpt();
    const s2 = make(o2);
    const first = run(o2, s2, k).lrs;
    const saved = JSON.parse(JSON.stringify(s2.stateDict()));
    const o3 = makeOpt();
    const s3 = make(o3);
    s3.loadStateDict(saved);
    const rest = run(o3, s3, n - k).lrs;
    expect([...first, ...rest.slice(1)]).toEqual(full);
  }

  test('resume is exact for every schedule kind', () => {
    resumeMatches(
      (o) => new StepLR(o, 3, 0.5),
      () => sgd([0.1, 0.2]),
      4,
      10,
    );
    resumeMatches(
      (o) => new CosineAnnealingLR(o, 10, 0.001),
      () => sgd([0.1]),
      7,
      20,
    );
    resumeMatches(
      (o) => new OneCycleLR(o, 0.1, 20),
      () => sgd([0.1], 0.9),
      6,
      19,
    );
    resumeMatches(
      (o) => new SequentialLR(o, [new LinearWarmup(o, 3), new CosineAnnealingLR(o, 7)], [3]),
      () => sgd([0.1]),
      2,
      12,
    );
    resumeMatches(
      (o) => new SequentialLR(o, [new LinearWarmup(o, 3), new CosineAnnealingLR(o, 7)], [3]),
      () => sgd([0.1]),
      5,
      12,
    );
    resumeMatches(
      (o) => new ChainedScheduler([new LinearLR(o, 0.5, 1, 4), new ExponentialLR(o, 0.9)]),
      () => sgd([0.1]),
      3,
      8,
    );
  });

  test('stateDict is plain JSON naming the schedule', () => {
    const o = sgd([0.1]);
    const s = new MultiStepLR(o, [2, 4], 0.5);
    s.step();
    s.step();
    const st = s.stateDict();
    expect(JSON.parse(JSON.stringify(st))).toEqual(st);
    expect(st).toMatchObject({ type: 'MultiStepLR', lastEpoch: 2, milestones: [2, 4], gamma: 0.5, lastLr: [0.05], baseLrs: [0.1] });
    expect(() => new StepLR(sgd([0.1]), 2).loadStateDict(st)).toThrow(/state is for a MultiStepLR, not a StepLR/);
    expect(() => new MultiStepLR(sgd([0.1, 0.1]), [1]).loadStateDict(st)).toThrow(/'baseLrs' must be an array of 2 numbers/);
  });
});

describe('schedule argument errors', () => {
  test('bad arguments are named', () => {
    expect(() => new StepLR({ paramGroups: [] }, 2)).toThrow(/non-empty paramGroups/);
    expect(() => new StepLR(sgd([0.1]), 0)).toThrow(/stepSize must be an integer >= 1, got 0/);
    expect(() => new CosineAnnealingLR(sgd([0.1]), 2.5)).toThrow(/tMax must be an integer/);
    expect(() => new LinearWarmup(sgd([0.1]), 5, 0)).toThrow(/LinearWarmup: start factor must be in \(0, 1\], got 0/);
    expect(() => new OneCycleLR(sgd([0.1, 0.1]), [0.1], 10)).toThrow(/expected 2 values for maxLr/);
    expect(() => new OneCycleLR(sgd([0.1]), 0.1, 10, { cycleMomentum: true })).toThrow(/needs param groups with 'momentum'/);
    const o = sgd([0.1]);
    expect(() => new SequentialLR(o, [new StepLR(o, 2), new StepLR(o, 3)], [])).toThrow(/expected 1 milestones for 2 schedulers, got 0/);
    expect(() => new SequentialLR(o, [new StepLR(o, 2), new StepLR(sgd([0.1]), 3)], [2])).toThrow(
      /schedulers\[1\] \(StepLR\) belongs to a different optimizer/,
    );
  });

  test('OneCycleLR without momentum fields leaves them alone', () => {
    const o = sgd([0.1]);
    new OneCycleLR(o, 0.1, 10);
    expect(o.paramGroups[0].momentum).toBeUndefined();
    expect(o.paramGroups[0].lr).toBeCloseTo(0.004, 15);
  });
});
