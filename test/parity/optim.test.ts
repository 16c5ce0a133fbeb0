// Optimizers against PyTorch step for step (fixtures from scripts/fixtures/make-core-fixtures.py).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { Adam, AdamW, GradScaler, SGD, clipGradNorm, type Optimizer } from '../../lib/optim/index.js';
import { expectClose, fixtures } from '../support/helpers.js';

function fx(name: string) {
  const { tensors, metadata } = r.loadSafetensors(path.join(fixtures, 'core', `optim_${name}.safetensors`));
  return { t: tensors, kw: JSON.parse(metadata.kw) as Record<string, unknown> };
}

const make: Record<string, (p: r.Tensor[], kw: Record<string, unknown>) => Optimizer> = {
  sgd_plain: (p, kw) => new SGD(p, { lr: kw.lr as number }),
  sgd_momentum_wd: (p, kw) =>
    new SGD(p, {
      lr: kw.lr as number,
      momentum: kw.momentum as number,
      weightDecay: kw.weight_decay as number,
      dampening: kw.dampening as number,
    }),
  sgd_nesterov: (p, kw) =>
    new SGD(p, { lr: kw.lr as number, momentum: kw.momentum as number, nesterov: true, weightDecay: kw.weight_decay as number }),
  adam: (p, kw) =>
    new Adam(p, {
      lr: kw.lr as number,
      betas: kw.betas as [number, number],
      eps: kw.eps as number,
      weightDecay: kw.weight_decay as number,
    }),
  adam_amsgrad: (p, kw) => new Adam(p, { lr: kw.lr as number, amsgrad: true }),
  adamw: (p, kw) => new AdamW(p, { lr: kw.lr as number, betas: kw.betas as [number, number], weightDecay: kw.weight_decay as number }),
};

describe('optimizers match PyTorch step for step', () => {
  for (const name of Object.keys(make)) {
    it(name, () => {
      const { t, kw } = fx(name);
      const p1 = t.p1_0.clone().requiresGrad_(true);
      const p2 = t.p2_0.clone().requiresGrad_(true);
      const opt = make[name]([p1, p2], kw);
      for (let s = 1; s <= 3; s++) {
        p1.grad = t[`g1_${s}`].clone();
        p2.grad = t[`g2_${s}`].clone();
        opt.step();
        expectClose(p1, t[`p1_${s}`], { atol: 1e-6, rtol: 1e-5, what: `${name} p1 after step ${s}` });
        expectClose(p2, t[`p2_${s}`], { atol: 1e-6, rtol: 1e-5, what: `${name} p2 after step ${s}` });
      }
      // the parameters moved
      expect(p1.equal(t.p1_0)).toBe(false);
    });
  }

  it('stateDict round trip continues identically', () => {
    const { t, kw } = fx('adamw');
    const run = (split: boolean) => {
      const p1 = t.p1_0.clone().requiresGrad_(true);
      const p2 = t.p2_0.clone().requiresGrad_(true);
      let opt = make.adamw([p1, p2], kw);
      for (let s = 1; s <= 3; s++) {
        if (split && s === 2) {
          const sd = opt.stateDict();
          opt = make.adamw([p1, p2], { ...kw, lr: 999 });
          opt.loadStateDict(sd);
          expect(opt.paramGroups[0].lr).toBe(kw.lr);
        }
        p1.grad = t[`g1_${s}`].clone();
        p2.grad = t[`g2_${s}`].clone();
        opt.step();
      }
      return p1;
    };
    expect(run(true).equal(run(false))).toBe(true);
  });

  it('param groups: no weight decay on one group', () => {
    const a = r.ones([3]).requiresGrad_(true);
    const b = r.ones([3]).requiresGrad_(true);
    const opt = new SGD(
      [
        { params: [a], weightDecay: 0.5 },
        { params: [b], weightDecay: 0 },
      ],
      { lr: 0.1 },
    );
    a.grad = r.zeros([3]);
    b.grad = r.zeros([3]);
    opt.step();
    expect(a.toArray()).toEqual([0.95, 0.95, 0.95].map((v) => Math.fround(v)));
    expect(b.toArray()).toEqual([1, 1, 1]);
  });

  it('zeroGrad clears gradients; bad hyperparameters are refused', () => {
    const a = r.ones([2]).requiresGrad_(true);
    const opt = new SGD([a], { lr: 0.1 });
    a.grad = r.ones([2]);
    opt.zeroGrad();
    expect(a.grad).toBeNull();
    expect(() => new SGD([a], { lr: -1 })).toThrow(/invalid lr/);
    expect(() => new Adam([a], { betas: [1.5, 0.9] })).toThrow(/betas/);
    expect(() => new SGD([], { lr: 1 })).toThrow(/empty/);
  });

  it('clipGradNorm scales gradients to the max norm and returns the original norm', () => {
    const a = r.zeros([2]).requiresGrad_(true);
    const b = r.zeros([1]).requiresGrad_(true);
    a.grad = r.tensor([3, 0]);
    b.grad = r.tensor([4]);
    const n = clipGradNorm([a, b], 1);
    expect(n).toBeCloseTo(5, 5);
    const ga = a.grad!.toArray() as number[];
    expect(ga[0]).toBeCloseTo(0.6, 4);
    expect((b.grad!.toArray() as number[])[0]).toBeCloseTo(0.8, 4);
  });

  it('GradScaler: unscales before the step, skips it on inf/nan and backs off, grows after good steps', () => {
    const p = r.ones([2]).requiresGrad_(true);
    const opt = new SGD([p], { lr: 0.5 });
    const scaler = new GradScaler({ initScale: 8, growthInterval: 2 });
    const scaled = scaler.scaleLoss(p.sum());
    expect(scaled.item()).toBe(16);
    scaled.backward(); // grads are 8 = scale * 1
    expect(scaler.step(opt)).toBe(true); // unscaled to 1: p = 1 - 0.5 * 1
    expect(p.toArray()).toEqual([0.5, 0.5]);
    p.grad = r.tensor([Infinity, 1]);
    expect(scaler.step(opt)).toBe(false);
    expect(p.toArray()).toEqual([0.5, 0.5]); // skipped
    expect(scaler.scale).toBe(4);
    for (let i = 0; i < 2; i++) {
      p.grad = r.tensor([4, 4]);
      expect(scaler.step(opt)).toBe(true);
    }
    expect(scaler.scale).toBe(8); // grew after growthInterval good steps
    expect(p.toArray()).toEqual([-0.5, -0.5]);
  });
});
