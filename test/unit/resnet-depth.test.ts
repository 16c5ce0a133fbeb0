// Depth: the 1001-layer pre-activation ResNet (He et al. 2016) trains end to end on the CPU: a forward
// and backward pass on a tiny batch completes, the gradient reaches the first layer finite and
// non-zero, and no tensor is left behind. The batch is 2x3x16x16 (the final stage still sees 4x4 per
// image, 32 values per channel for batch norm), and the test yields between forward and backward: no
// synchronous stretch may approach vitest's 60 s worker-RPC timeout, even under scalar kernels in CI's
// second run.
import { describe, expect, it } from 'vitest';
import { crossEntropy, manualSeed, memory, preactResnet, randn, scope, tensor } from '../../lib/index.js';

describe('depth', () => {
  it('preactResnet(1001): forward and backward on 2x3x16x16, first-layer gradient finite and non-zero', async () => {
    manualSeed(0);
    const model = preactResnet(1001);
    expect(model.numParameters()).toBe(10_327_706);
    expect(model.layer1.length + model.layer2.length + model.layer3.length).toBe(333); // 3 x 111 bottleneck units
    model.train();
    const base = memory().tensors;
    const t0 = performance.now();
    const l = scope(() => crossEntropy(model.call(randn([2, 3, 16, 16])), tensor([3, 8], { dtype: 'int64' })));
    await new Promise((res) => setImmediate(res));
    l.backward();
    const loss = l.item() as number;
    l.dispose();
    const seconds = (performance.now() - t0) / 1000;
    expect(Number.isFinite(loss)).toBe(true);
    expect(loss).toBeGreaterThan(0);
    const { shape, finite, norm } = scope(() => {
      const g = model.conv1.weight.grad!;
      return { shape: g.shape, finite: g.isfinite().all().item(), norm: g.norm().item() as number };
    });
    expect(shape).toEqual([16, 3, 3, 3]);
    expect(finite).toBe(true);
    expect(norm).toBeGreaterThan(0);
    // every parameter received a gradient through the 1001 layers
    // (each .grad read is a new reference: read them inside a scope)
    expect(scope(() => model.parameters().every((p) => p.grad !== null))).toBe(true);
    expect(memory().tensors).toBe(base);
    console.log(
      `preactResnet(1001) forward+backward on 2x3x16x16: ${seconds.toFixed(1)} s, loss ${loss.toFixed(4)}, |grad conv1| ${norm.toExponential(3)}`,
    );
  });
});
