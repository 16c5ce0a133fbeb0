// Our native ops against PyTorch's own outputs and gradients (fixtures from scripts/fixtures/make-core-fixtures.py).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { expectClose, fixtures } from '../support/helpers.js';

function fx(name: string): { t: Record<string, r.Tensor>; meta: Record<string, unknown> } {
  const { tensors, metadata } = r.loadSafetensors(path.join(fixtures, 'core', `${name}.safetensors`));
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) meta[k] = JSON.parse(v);
  return { t: tensors, meta };
}
const leaf = (t: r.Tensor): r.Tensor => t.detach().requiresGrad_(true);
const tol = { atol: 1e-4, rtol: 1e-4 };

describe('conv2d matches PyTorch (forward and backward)', () => {
  for (const name of ['conv_basic', 'conv_stride2', 'conv_groups', 'conv_dilation', 'conv_1x1_s2', 'conv_same']) {
    it(name, () => {
      const { t, meta } = fx(name);
      const x = leaf(t.x),
        w = leaf(t.w),
        b = leaf(t.b);
      const y = r.conv2d(x, w, b, {
        stride: meta.stride as number,
        padding: meta.padding as number | 'same',
        dilation: meta.dilation as number,
        groups: meta.groups as number,
      });
      expectClose(y, t.y, { ...tol, what: `${name} output` });
      y.backward(t.gy);
      expectClose(x.grad!, t.gx, { ...tol, what: `${name} grad input` });
      expectClose(w.grad!, t.gw, { ...tol, what: `${name} grad weight` });
      expectClose(b.grad!, t.gb, { ...tol, what: `${name} grad bias` });
    });
  }
});

describe('batchNorm matches PyTorch', () => {
  for (const mode of ['train', 'eval']) {
    it(`${mode} mode: output, gradients and running statistics`, () => {
      const { t, meta } = fx(`bn_${mode}`);
      const x = leaf(t.x),
        w = leaf(t.w),
        b = leaf(t.b);
      const rm = t.rm0.clone(),
        rv = t.rv0.clone();
      const y = r.batchNorm(x, rm, rv, {
        weight: w,
        bias: b,
        training: mode === 'train',
        momentum: meta.momentum as number,
        eps: meta.eps as number,
      });
      expectClose(y, t.y, { ...tol, what: 'output' });
      expectClose(rm, t.rm1, { ...tol, what: 'running mean' });
      expectClose(rv, t.rv1, { ...tol, what: 'running var' });
      if (mode === 'train') expect(rm.equal(t.rm0)).toBe(false);
      y.backward(t.gy);
      expectClose(x.grad!, t.gx, { ...tol, what: 'grad input' });
      expectClose(w.grad!, t.gw, { ...tol, what: 'grad weight' });
      expectClose(b.grad!, t.gb, { ...tol, what: 'grad bias' });
    });
  }
});

describe('pooling and linear match PyTorch', () => {
  it('maxPool2d', () => {
    const { t } = fx('maxpool');
    const x = leaf(t.x);
    const y = r.maxPool2d(x, 3, { stride: 2, padding: 1 });
    expectClose(y, t.y, tol);
    y.backward(t.gy);
    expectClose(x.grad!, t.gx, tol);
  });
  it('avgPool2d', () => {
    const { t } = fx('avgpool');
    const x = leaf(t.x);
    const y = r.avgPool2d(x, 2, { stride: 2 });
    expectClose(y, t.y, tol);
    y.backward(t.gy);
    expectClose(x.grad!, t.gx, tol);
  });
  it('adaptiveAvgPool2d', () => {
    const { t } = fx('adaptiveavgpool');
    const x = leaf(t.x);
    const y = r.adaptiveAvgPool2d(x, [1, 1]);
    expectClose(y, t.y, tol);
    y.backward(t.gy);
    expectClose(x.grad!, t.gx, tol);
  });
  it('linear', () => {
    const { t } = fx('linear');
    const x = leaf(t.x),
      w = leaf(t.w),
      b = leaf(t.b);
    const y = r.linear(x, w, b);
    expectClose(y, t.y, tol);
    y.backward(t.gy);
    expectClose(x.grad!, t.gx, tol);
    expectClose(w.grad!, t.gw, tol);
    expectClose(b.grad!, t.gb, tol);
  });
});

describe('losses match PyTorch', () => {
  it('crossEntropy with label smoothing and every reduction', () => {
    const { t } = fx('cross_entropy');
    for (const ls of [0, 1]) {
      for (const red of ['mean', 'sum', 'none'] as const) {
        const logits = leaf(t.logits);
        const loss = r.crossEntropy(logits, t.target, { labelSmoothing: ls / 10, reduction: red });
        expectClose(loss, t[`loss_${red}_${ls}`], { ...tol, what: `loss ${red} ls=${ls / 10}` });
        loss.sum().backward();
        expectClose(logits.grad!, t[`grad_${red}_${ls}`], { ...tol, what: `grad ${red} ls=${ls / 10}` });
      }
    }
  });
  it('mseLoss', () => {
    const { t } = fx('mse');
    expectClose(r.mseLoss(t.p, t.y), t.loss, tol);
  });
  it('nllLoss of logSoftmax equals crossEntropy', () => {
    const { t } = fx('cross_entropy');
    const a = r.nllLoss(r.logSoftmax(t.logits, 1), t.target);
    expectClose(a, t.loss_mean_0, tol);
  });
});
