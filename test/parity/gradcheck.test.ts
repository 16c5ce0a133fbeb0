// Finite-difference gradient checks in float64 for the NN ops: the analytic gradient of
// sum(op(x) * w) (w random, fixed) must match central differences.
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { expectClose } from '../support/helpers.js';

/** Checks d/d(inputs[k]) of sum(fn(...inputs) * proj) against central differences. */
function gradcheck(
  fn: (...xs: r.Tensor[]) => r.Tensor,
  inputs: r.Tensor[],
  { eps = 1e-6, atol = 1e-6, rtol = 1e-4, only }: { eps?: number; atol?: number; rtol?: number; only?: number[] } = {},
) {
  r.scope(() => {
    const xs = inputs.map((x) => x.detach().to('float64').requiresGrad_(true));
    const out0 = fn(...xs);
    const proj = r.randnLike(out0);
    const loss = out0.mul(proj).sum();
    const analytic = r.grad(loss, xs);
    for (let k = 0; k < xs.length; k++) {
      if (only && !only.includes(k)) continue;
      const base = xs[k].detach();
      const flat = base.flatten();
      const n = flat.numel();
      const numeric = new Float64Array(n);
      const f = (vals: Float64Array): number =>
        r.noGrad(() => {
          const args = xs.map((x, j) => (j === k ? r.tensor(vals, { shape: base.shape }) : x.detach()));
          return fn(...args)
            .mul(proj)
            .sum()
            .item() as number;
        });
      const v = flat.toTypedArray() as Float64Array;
      for (let i = 0; i < n; i++) {
        const p = Float64Array.from(v);
        const m = Float64Array.from(v);
        p[i] += eps;
        m[i] -= eps;
        numeric[i] = (f(p) - f(m)) / (2 * eps);
      }
      expectClose(analytic[k]!, r.tensor(numeric, { shape: base.shape }), { atol, rtol, what: `gradient of input ${k}` });
    }
  });
}

describe('finite-difference gradient checks (float64)', () => {
  r.manualSeed(7);
  it('conv2d with stride, padding, dilation and groups', () => {
    gradcheck(
      (x, w, b) => r.conv2d(x, w, b, { stride: 2, padding: 1, dilation: 1, groups: 2 }),
      [r.randn([1, 4, 5, 5]), r.randn([4, 2, 3, 3]), r.randn([4])],
    );
  });
  it('batchNorm in training mode (batch statistics)', () => {
    gradcheck(
      (x, w, b) => r.batchNorm(x, null, null, { weight: w, bias: b, training: true }),
      [r.randn([3, 2, 3, 3]), r.rand([2]).add(0.5), r.randn([2])],
    );
  });
  it('batchNorm in eval mode', () => {
    const rm = r.randn([2], { dtype: 'float64' });
    const rv = r.rand([2], { dtype: 'float64' }).add(0.5);
    gradcheck(
      (x, w, b) => r.batchNorm(x, rm, rv, { weight: w, bias: b, training: false }),
      [r.randn([2, 2, 3, 3]), r.rand([2]), r.randn([2])],
    );
  });
  it('relu, maxPool2d, avgPool2d, adaptiveAvgPool2d', () => {
    gradcheck((x) => r.relu(x), [r.randn([2, 3, 4])]);
    gradcheck((x) => r.maxPool2d(x, 2, { stride: 2 }), [r.randn([1, 2, 4, 4])]);
    gradcheck((x) => r.avgPool2d(x, 3, { stride: 2, padding: 1 }), [r.randn([1, 2, 5, 5])]);
    gradcheck((x) => r.adaptiveAvgPool2d(x, [2, 2]), [r.randn([1, 2, 5, 5])]);
  });
  it('linear, softmax, logSoftmax', () => {
    gradcheck((x, w, b) => r.linear(x, w, b), [r.randn([3, 4]), r.randn([2, 4]), r.randn([2])]);
    gradcheck((x) => r.softmax(x, 1), [r.randn([3, 4])]);
    gradcheck((x) => r.logSoftmax(x, 1), [r.randn([3, 4])]);
  });
  it('crossEntropy with label smoothing, mseLoss', () => {
    const target = r.tensor([1, 0, 3], { dtype: 'int64' });
    gradcheck((x) => r.crossEntropy(x, target, { labelSmoothing: 0.1 }), [r.randn([3, 4])]);
    gradcheck((x, y) => r.mseLoss(x, y), [r.randn([3, 4]), r.randn([3, 4])]);
  });
  it('the check itself fails on a wrong gradient', () => {
    // a function whose autograd gradient is deliberately wrong: detach part of it
    expect(() => gradcheck((x) => x.mul(x.detach()), [r.randn([4])])).toThrow(/gradient of input 0/);
  });
});
