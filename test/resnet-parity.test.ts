// Parity with PyTorch: fixtures made by scripts/make-resnet-fixtures.py from reference models written in
// Python (torchvision's structure and key names). Weights are not stored: Python torch and our libtorch
// share the CPU generator, so both sides regenerate them from a seed with the same recipe; checksums in
// the fixture confirm the regenerated weights before any output is compared.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tensor, createModel, crossEntropy, loadSafetensors, manualSeed, rand, randn, scope, tensor, type nn } from '../lib/index.js';
import { expectClose, fixtures } from './helpers.js';

type Module = nn.Module;

/** The recipe of fill_weights() in scripts/make-resnet-fixtures.py, over state-dict keys in order. */
function recipeStateDict(keys: [string, number[]][], seed: number): Record<string, Tensor> {
  manualSeed(seed);
  const out: Record<string, Tensor> = {};
  for (const [key, shape] of keys) {
    const leaf = key.slice(key.lastIndexOf('.') + 1);
    let t: Tensor;
    if (leaf === 'num_batches_tracked') t = tensor(7, { dtype: 'int64' });
    else if (leaf === 'running_mean') t = randn(shape).mul(0.1);
    else if (leaf === 'running_var') t = rand(shape).mul(0.5).add(0.75);
    else if (shape.length === 4) t = randn(shape).mul(Math.sqrt(2.0 / (shape[1] * shape[2] * shape[3])));
    else if (shape.length === 2) t = randn(shape).mul(Math.sqrt(1.0 / shape[1]));
    else if (leaf === 'weight') t = rand(shape).mul(0.5).add(0.25);
    else t = randn(shape).mul(0.1);
    out[key] = t;
  }
  return out;
}

/** Per-entry float64 sum and sum of squares, as sums() in the fixture script. */
function sums(m: Module): { s: number[]; q: number[] } {
  return scope(() => {
    const sd = m.stateDict();
    const s: number[] = [];
    const q: number[] = [];
    for (const t of Object.values(sd)) {
      const d = t.to('float64');
      s.push(d.sum().item() as number);
      q.push(d.pow(2).sum().item() as number);
    }
    return { s, q };
  });
}
function expectSums(got: number[], want: Tensor, what: string, keys: string[]): void {
  const w = Array.from(want.toTypedArray() as Float64Array);
  expect(got.length, `${what}: entries`).toBe(w.length);
  for (let i = 0; i < w.length; i++) {
    const tol = 1e-9 * Math.max(1, Math.abs(w[i]));
    if (!(Math.abs(got[i] - w[i]) <= tol)) throw new Error(`${what}: ${keys[i]} has ${got[i]}, PyTorch ${w[i]}`);
  }
}

function maxAbs(t: Tensor): number {
  return t.abs().max().item() as number;
}

const FIXTURES = ['resnet18', 'resnet50', 'resnext50_32x4d', 'resnet20', 'plain20', 'preact164', 'preact_basic20'];

describe.each(FIXTURES)('parity with PyTorch: %s', (name) => {
  it('keys, default initialisation, weights, eval and train passes (forward and backward)', () => {
    const { tensors: fx, metadata } = loadSafetensors(path.join(fixtures, 'resnet', `${name}.safetensors`));
    expect(metadata.model).toBe(name);
    expect(metadata.recipe).toBe('1');
    const keyLines: string[] = JSON.parse(metadata.keys);
    const keys: [string, number[]][] = keyLines.map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i), JSON.parse(l.slice(i + 1))];
    });
    const names = keys.map(([k]) => k);

    // 1. same state-dict keys and shapes, in the same order
    manualSeed(Number(metadata.init_seed));
    const model = createModel(name, { numClasses: Number(metadata.num_classes) });
    const sd = model.stateDict();
    expect(Object.entries(sd).map(([k, t]) => `${k}:${JSON.stringify(t.shape).replace(/,/g, ', ')}`)).toEqual(keyLines);

    // 2. the default initialisation draws the same numbers as the PyTorch reference after the same seed
    const init = sums(model);
    expectSums(init.s, fx.init_sum, 'default init (sum)', names);
    expectSums(init.q, fx.init_sqsum, 'default init (sum of squares)', names);

    // 3. regenerate the fixture's weights and load them through loadStateDict
    const weights = recipeStateDict(keys, Number(metadata.weight_seed));
    expect(model.loadStateDict(weights)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    const w = sums(model);
    expectSums(w.s, fx.weight_sum, 'regenerated weights (sum)', names);
    expectSums(w.q, fx.weight_sqsum, 'regenerated weights (sum of squares)', names);

    const bnNames: string[] = JSON.parse(metadata.bn_names);
    const params = Object.fromEntries(model.namedParameters());
    const buffers = Object.fromEntries(model.namedBuffers());
    for (const mode of ['eval', 'train'] as const) {
      model.zeroGrad();
      model.train(mode === 'train');
      scope(() => {
        const x = fx.input.clone().requiresGrad_(true);
        const logits = model.call(x);
        const loss = crossEntropy(logits, fx.target);
        loss.backward();
        const want = (k: string): Tensor => fx[`${mode}.${k}`];
        // float32 through up to 50 layers: compare relative to each tensor's scale
        expectClose(logits, want('logits'), { atol: 1e-5 * Math.max(1, maxAbs(want('logits'))), rtol: 1e-4, what: `${name} ${mode} logits` });
        expectClose(loss.reshape([1]), want('loss'), { atol: 1e-6, rtol: 1e-5, what: `${name} ${mode} loss` });
        const gx = x.grad!;
        expectClose(gx, want('input_grad'), { atol: 1e-4 * maxAbs(want('input_grad')), rtol: 1e-3, what: `${name} ${mode} input grad` });
        const gw = params['conv1.weight'].grad!;
        expectClose(gw, want('conv1_weight_grad'), { atol: 1e-4 * maxAbs(want('conv1_weight_grad')), rtol: 1e-3, what: `${name} ${mode} conv1.weight grad` });
        for (const b of bnNames) {
          // eval keeps the loaded statistics; train updates them with momentum 0.1 and counts the batch
          expectClose(buffers[`${b}.running_mean`], want(`${b}.running_mean`), { atol: 1e-6, rtol: 1e-5, what: `${name} ${mode} ${b}.running_mean` });
          expectClose(buffers[`${b}.running_var`], want(`${b}.running_var`), { atol: 1e-6, rtol: 1e-5, what: `${name} ${mode} ${b}.running_var` });
          expect(buffers[`${b}.num_batches_tracked`].item()).toBe(want(`${b}.num_batches_tracked`).item());
        }
        expect(buffers[`${bnNames[0]}.num_batches_tracked`].item()).toBe(mode === 'train' ? 8 : 7);
      });
    }
  });
});
