// Parity with PyTorch: fixtures made by scripts/fixtures/make-resnet-fixtures.py from reference models written in
// Python (torchvision's structure and key names). Weights are not stored: Python torch and our libtorch
// share the CPU generator, so both sides regenerate them from a seed with the same recipe; checksums in
// the fixture confirm the regenerated weights before any output is compared.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tensor, createModel, crossEntropy, loadSafetensors, manualSeed, rand, scope, tensor, type nn } from '../../lib/index.js';
import { fixtures } from '../support/helpers.js';

type Module = nn.Module;

/** uniform_from_rand() of the fixture script: the same float32 values on every CPU (see there). */
function uniformFromRand(shape: number[], lo: number, hi: number): Tensor {
  return scope(() =>
    rand(shape)
      .to('float64')
      .mul(2)
      .sub(1)
      .mul((hi - lo) / 2)
      .add((hi + lo) / 2)
      .to('float32'),
  );
}

/** The recipe of fill_weights() in scripts/fixtures/make-resnet-fixtures.py, over state-dict keys in order. */
function recipeStateDict(keys: [string, number[]][], seed: number): Record<string, Tensor> {
  manualSeed(seed);
  const out: Record<string, Tensor> = {};
  for (const [key, shape] of keys) {
    const leaf = key.slice(key.lastIndexOf('.') + 1);
    let t: Tensor;
    if (leaf === 'num_batches_tracked') t = tensor(7, { dtype: 'int64' });
    else if (leaf === 'running_mean') t = uniformFromRand(shape, -0.2, 0.2);
    else if (leaf === 'running_var') t = uniformFromRand(shape, 0.75, 1.25);
    else if (shape.length === 4) {
      const a = Math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]));
      t = uniformFromRand(shape, -a, a);
    } else if (shape.length === 2) {
      const a = Math.sqrt(3.0 / shape[1]);
      t = uniformFromRand(shape, -a, a);
    } else if (leaf === 'weight') t = uniformFromRand(shape, 0.25, 0.75);
    else t = uniformFromRand(shape, -0.2, 0.2);
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
/**
 * Per-entry sums against the fixture's. `ulps` is how many float32 roundings each value may differ by:
 * 0 for the recipe's weights (identical on every CPU), 4 for the default initialisation, which draws
 * through libtorch's uniform_(a, b) kernel: its vectorised and scalar forms (ATEN_CPU_CAPABILITY avx2
 * against default) differ in the last bit, as Python torch does on the same CPUs. Per entry of n values
 * with sum of squares Q: |sum error| <= ulps u sum|x| <= ulps u sqrt(n Q), |sum-of-squares error| <=
 * 2 ulps u Q; plus float64 summation rounding (1e-12 relative). A wrong recipe, order or fan moves the
 * sums by O(1) relative.
 */
function expectSums(got: number[], want: Tensor, what: string, keys: [string, number[]][], ulps: number, sq?: Tensor): void {
  const w = Array.from(want.toTypedArray() as Float64Array);
  const q = sq ? Array.from(sq.toTypedArray() as Float64Array) : undefined;
  expect(got.length, `${what}: entries`).toBe(w.length);
  for (let i = 0; i < w.length; i++) {
    const n = keys[i][1].reduce((a, b) => a * b, 1);
    const spread = q ? ulps * U32 * Math.sqrt(n * q[i]) : 2 * ulps * U32 * Math.abs(w[i]);
    const tol = spread + 1e-12 * Math.max(1, Math.abs(w[i]));
    if (!(Math.abs(got[i] - w[i]) <= tol))
      throw new Error(`${what}: ${keys[i][0]} has ${got[i]}, PyTorch ${w[i]} (tolerance ${tol.toExponential(2)})`);
  }
}

const U32 = 2 ** -24; // float32 unit roundoff
const U64 = 2 ** -53;
// float64 against PyTorch's float64: the worst conditioning in these fixtures (train-mode gradients
// through batch norm over 8 values per channel) amplifies rounding by about 1e6 (float32's noise there
// is ~3e-2 = 5e5 u32), so float64's own noise stays below 1e6 * 1.1e-16 = 1e-10. 1e-8 leaves a factor
// of 100 and still sees any error larger than a part in 10^8: a wrong stride, index or missing term
// changes these outputs by O(1).
const TOL64 = 1e-8;
/**
 * float32 against the float64 reference: f32_noise is how far float32 arithmetic itself lands from the
 * float64 result (the fixture's largest norm-wise error over runs that differ only in rounding: thread
 * counts and a one-rounding perturbation of inputs and weights). Another CPU's kernels round differently
 * but with the same conditioning: measured spread across ISAs is within 2x, so 16x covers it. Floor:
 * 16 u for outputs that float32 reproduces exactly (the loaded statistics in eval mode).
 */
function f32Tolerance(noise: number | undefined): number {
  if (noise === undefined) throw new Error('fixture lacks f32_noise for an output');
  return Math.max(16 * noise, 16 * U32);
}

function norm(t: Tensor): number {
  return scope(() => t.to('float64').pow(2).sum().sqrt().item() as number);
}

/** Norm-wise relative comparison ||got - want|| <= tol ||want|| (elementwise is meaningless where
 * cancellation makes single elements ill-conditioned; the norm is not). */
function expectParity(got: Tensor, want: Tensor, tol: number, what: string): void {
  expect(got.shape, `${what} shape`).toEqual(want.shape);
  const err = scope(() => norm(got.to('float64').sub(want)));
  const ref = norm(want);
  if (!(err <= tol * ref))
    throw new Error(`${what}: norm-wise relative error ${(err / ref).toExponential(2)} exceeds ${tol.toExponential(2)}`);
}

const FIXTURES = ['resnet18', 'resnet50', 'resnext50_32x4d', 'resnet20', 'plain20', 'preact164', 'preact_basic20'];

describe.each(FIXTURES)('parity with PyTorch: %s', (name) => {
  // Split into three tests so that no single synchronous stretch runs for long (vitest's worker RPC).
  let fx: Record<string, Tensor>;
  let metadata: Record<string, string>;
  let keys: [string, number[]][];
  let weights: Record<string, Tensor>;

  it('keys, default initialisation and the regenerated weights', () => {
    ({ tensors: fx, metadata } = loadSafetensors(path.join(fixtures, 'resnet', `${name}.safetensors`)));
    expect(metadata.model).toBe(name);
    expect(metadata.recipe).toBe('2');
    expect(metadata.reference).toBe('float64');
    const keyLines: string[] = JSON.parse(metadata.keys);
    keys = keyLines.map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i), JSON.parse(l.slice(i + 1))];
    });

    // 1. same state-dict keys and shapes, in the same order
    manualSeed(Number(metadata.init_seed));
    const model = createModel(name, { numClasses: Number(metadata.num_classes) });
    const sd = model.stateDict();
    expect(Object.entries(sd).map(([k, t]) => `${k}:${JSON.stringify(t.shape).replace(/,/g, ', ')}`)).toEqual(keyLines);

    // 2. the default initialisation draws the same numbers as the PyTorch reference after the same seed
    const init = sums(model);
    expectSums(init.s, fx.init_sum, 'default init (sum)', keys, 4, fx.init_sqsum);
    expectSums(init.q, fx.init_sqsum, 'default init (sum of squares)', keys, 4);

    // 3. regenerate the fixture's weights and load them through loadStateDict
    weights = recipeStateDict(keys, Number(metadata.weight_seed));
    expect(model.loadStateDict(weights)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    const w = sums(model);
    expectSums(w.s, fx.weight_sum, 'regenerated weights (sum)', keys, 0);
    expectSums(w.q, fx.weight_sqsum, 'regenerated weights (sum of squares)', keys, 0);
  });

  // float64 arithmetic leaves no room for a wrong stride or a missing term to hide in rounding noise;
  // float32 is what training runs, compared within its own noise.
  it.each(['float64', 'float32'] as const)('eval and train passes in %s, forward and backward', async (dtype) => {
    expect(weights, 'the first test loads the fixture').toBeDefined();
    const bnNames: string[] = JSON.parse(metadata.bn_names);
    const noise: Record<string, number> = JSON.parse(metadata.f32_noise);
    const m = createModel(name, { numClasses: Number(metadata.num_classes) });
    expect(m.loadStateDict(weights)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    m.to(dtype);
    const params = Object.fromEntries(m.namedParameters());
    const buffers = Object.fromEntries(m.namedBuffers());
    for (const mode of ['eval', 'train'] as const) {
      await new Promise((res) => setImmediate(res)); // one pass at a time between yields (vitest's worker RPC)
      m.zeroGrad();
      m.train(mode === 'train');
      scope(() => {
        const x = fx.input.to(dtype).clone().requiresGrad_(true); // a fresh leaf: its grad is this pass's alone
        const logits = m.call(x);
        const loss = crossEntropy(logits, fx.target);
        loss.backward();
        const check = (what: string, got: Tensor): void => {
          const key = `${mode}.${what}`;
          expectParity(got, fx[key], dtype === 'float64' ? TOL64 : f32Tolerance(noise[key]), `${name} ${dtype} ${key}`);
        };
        check('logits', logits);
        check('input_grad', x.grad!);
        check('conv1_weight_grad', params['conv1.weight'].grad!);
        for (const b of bnNames) {
          // eval keeps the loaded statistics; train updates them with momentum 0.1 and counts the batch
          check(`${b}.running_mean`, buffers[`${b}.running_mean`]);
          check(`${b}.running_var`, buffers[`${b}.running_var`]);
          expect(buffers[`${b}.num_batches_tracked`].item()).toBe(fx[`${mode}.${b}.num_batches_tracked`].item());
        }
        expect(buffers[`${bnNames[0]}.num_batches_tracked`].item()).toBe(mode === 'train' ? 8 : 7);
        // The loss from the logits: d loss / d logits sums to at most 2 in absolute value (softmax minus
        // one-hot, averaged over the batch), so |loss error| <= 2 max|logits error| <= 2 ||logits error||,
        // plus the rounding of the loss itself.
        const want = fx[`${mode}.loss`].item() as number;
        const refLogits = fx[`${mode}.logits`];
        const tolLogits = dtype === 'float64' ? TOL64 : f32Tolerance(noise[`${mode}.logits`]);
        const bound = 2 * tolLogits * norm(refLogits) + 16 * (dtype === 'float64' ? U64 : U32) * Math.abs(want);
        const got = loss.item() as number;
        if (!(Math.abs(got - want) <= bound))
          throw new Error(`${name} ${dtype} ${mode}.loss is ${got}, reference ${want} (bound ${bound})`);
      });
    }
  });
});
