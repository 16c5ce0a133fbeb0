// The nn kernels of the residual tfjs backend (lib/tfjs/kernels/{conv,pool,norm,activation,image,array}.ts)
// against @tensorflow/tfjs-backend-cpu (tf's semantic reference) on the same seeded random inputs:
// convolutions (2-D, 3-D, depthwise, fused; 'same' with TF's extra row at the end, 'valid', explicit and
// numeric pads with dimRoundingMode, NCHW, dilations) and their gradients through tf.grads
// (Conv2DBackpropInput/Filter, the depthwise and 3-D backprops), pools and their gradients, batch norm,
// activations, LRN, dilation2d, resizing, crop and resize, and the space/batch/depth rearrangements. No
// kernel may leak a tfjs tensor.
//
// Tolerance: an element that sums K float32 products differs between two summation orders by at most
// 2·γ_K·Σ|terms| (γ_K = K·u/(1 − K·u), u = 2^-24), and Σ|terms| ≤ K·max|element scale|; with K the
// largest number of terms any output element accumulates along the computation (given per case), the
// bound used is |residual − cpu| ≤ 4·K²·u·max(1, max|cpu|). Rearrangements and max-based ops are exact.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-layers'; // registers tfjs-core's gradients (tf.grads)
import { describe, expect, it } from 'vitest';
import '../../lib/tfjs/index.js';

let seed = 0;
const rn = (shape: number[], sd = 1): tf.Tensor => tf.randomNormal(shape, 0, sd, 'float32', ++seed);
const ru = (shape: number[], lo: number, hi: number): tf.Tensor => tf.randomUniform(shape, lo, hi, 'float32', ++seed);
const sq = (t: tf.Tensor): tf.Scalar => tf.sum(tf.square(t));
const U = 2 ** -24;

interface Out {
  shape: number[];
  dtype: string;
  data: number[];
}
async function run(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<{ outs: Out[]; leaked: number }> {
  await tf.setBackend(backend);
  seed = 0;
  const before = tf.memory().numTensors;
  const r = tf.tidy(fn);
  const list = Array.isArray(r) ? r : [r];
  const outs: Out[] = [];
  for (const t of list) outs.push({ shape: t.shape, dtype: t.dtype, data: Array.from((await t.data()) as Float32Array) });
  tf.dispose(list);
  return { outs, leaked: tf.memory().numTensors - before };
}

/** Runs fn on residual and cpu; K = 0 means exact. */
async function sameAsCpu(fn: () => tf.Tensor | tf.Tensor[], K: number): Promise<void> {
  const r = await run('residual', fn);
  const c = await run('cpu', fn);
  expect(r.leaked, 'tfjs tensors leaked on residual').toBe(0);
  expect(r.outs.length).toBe(c.outs.length);
  r.outs.forEach((o, i) => {
    const ref = c.outs[i];
    expect(o.shape, `output ${i} shape`).toEqual(ref.shape);
    expect(o.dtype, `output ${i} dtype`).toBe(ref.dtype);
    let scale = 1;
    for (const v of ref.data) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
    const tol = 4 * K * K * U * scale;
    for (let k = 0; k < ref.data.length; k++) {
      const a = o.data[k];
      const b = ref.data[k];
      if (!Number.isFinite(b)) expect(a, `output ${i} element ${k}`).toBe(b);
      else if (Math.abs(a - b) > tol) expect.fail(`output ${i} element ${k}: ${a} vs cpu ${b} (tolerance ${tol})`);
    }
  });
}

describe('residual tfjs nn kernels match tfjs-backend-cpu', () => {
  const conv = (fn: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor, xs: number[], ws: number[]) => () => {
    const x = rn(xs) as tf.Tensor4D;
    const w = rn(ws) as tf.Tensor4D;
    return [fn(x, w), ...tf.grads((a: tf.Tensor, b: tf.Tensor) => sq(fn(a as tf.Tensor4D, b as tf.Tensor4D)))([x, w])];
  };
  it("conv2d 'same' stride 2 (TF's extra padding at the end) and its gradients", () =>
    sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 2, 'same'), [2, 7, 8, 3], [3, 3, 3, 4]),
      27 * 16,
    ));
  it("conv2d 'valid' stride 2 with unused trailing rows, and dilations", async () => {
    await sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 2, 'valid'), [2, 8, 9, 3], [3, 3, 3, 4]),
      27 * 16,
    );
    // (tfjs-core has no gradient for dilated conv2d: forward only.)
    await sameAsCpu(() => tf.conv2d(rn([2, 9, 8, 3]) as tf.Tensor4D, rn([3, 2, 3, 4]) as tf.Tensor4D, 1, 'same', 'NHWC', [2, 2]), 18);
  });
  it('conv2d explicit asymmetric padding, numeric padding with ceil rounding, NCHW', async () => {
    await sameAsCpu(
      conv(
        (x, w) =>
          tf.conv2d(x, w, 2, [
            [0, 0],
            [2, 0],
            [1, 3],
            [0, 0],
          ]),
        [1, 6, 6, 2],
        [3, 3, 2, 2],
      ),
      18 * 16,
    );
    await sameAsCpu(() => tf.conv2d(rn([1, 7, 7, 2]) as tf.Tensor4D, rn([3, 3, 2, 2]) as tf.Tensor4D, 2, 1, 'NHWC', 1, 'ceil'), 18);
    await sameAsCpu(() => tf.conv2d(rn([1, 2, 7, 7]) as tf.Tensor4D, rn([3, 3, 2, 2]) as tf.Tensor4D, 1, 'same', 'NCHW'), 18);
  });
  it('conv2d on few pixels for many channels (im2col path), 1x1 convolutions (matrix product path) and their gradients', async () => {
    await sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 1, 'same'), [1, 3, 4, 8], [3, 3, 8, 16]),
      72 * 16,
    );
    await sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 2, 'same'), [2, 5, 4, 8], [3, 2, 8, 32]),
      48 * 16,
    );
    await sameAsCpu(() => tf.conv2d(rn([1, 7, 7, 8]) as tf.Tensor4D, rn([3, 3, 8, 64]) as tf.Tensor4D, 1, 'same', 'NHWC', [2, 2]), 72);
    await sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 1, 'valid'), [2, 5, 4, 8], [1, 1, 8, 6]),
      8 * 40,
    );
    await sameAsCpu(
      conv((x, w) => tf.conv2d(x, w, 2, 'same'), [2, 5, 4, 8], [1, 1, 8, 6]),
      8 * 40,
    );
  });
  it('depthwise conv2d (channel multiplier 2) and its gradients', () =>
    sameAsCpu(
      conv((x, w) => tf.depthwiseConv2d(x, w, 2, 'same'), [2, 7, 8, 3], [3, 3, 3, 2]),
      9 * 16,
    ));
  it('fused conv2d / depthwise / matMul with bias and each activation', async () => {
    for (const activation of ['linear', 'relu', 'relu6', 'elu', 'leakyrelu', 'prelu', 'sigmoid'] as const) {
      await sameAsCpu(() => {
        const prelu = activation === 'prelu' ? rn([4], 0.3) : undefined;
        return [
          tf.fused.conv2d({
            x: rn([2, 7, 8, 3]) as tf.Tensor4D,
            filter: rn([3, 3, 3, 4]) as tf.Tensor4D,
            strides: 1,
            pad: 'same',
            bias: rn([4]),
            activation,
            preluActivationWeights: prelu,
            leakyreluAlpha: 0.3,
          }),
          tf.fused.depthwiseConv2d({
            x: rn([2, 7, 8, 4]) as tf.Tensor4D,
            filter: rn([3, 3, 4, 1]) as tf.Tensor4D,
            strides: 2,
            pad: 'same',
            bias: rn([4]),
            activation,
            preluActivationWeights: prelu,
            leakyreluAlpha: 0.3,
          }),
          tf.fused.matMul({
            a: rn([3, 5]) as tf.Tensor2D,
            b: rn([4, 5]) as tf.Tensor2D,
            transposeB: true,
            bias: rn([4]),
            activation,
            preluActivationWeights: prelu,
            leakyreluAlpha: 0.3,
          }),
        ];
      }, 28);
    }
  });
  it('batchMatMul with transposes and broadcast batch dims', () =>
    sameAsCpu(() => [tf.matMul(rn([2, 3, 5]), rn([1, 5, 4])), tf.matMul(rn([2, 5, 3]), rn([2, 4, 5]), true, true)], 5));
  it('conv3d and its gradients', () =>
    sameAsCpu(() => {
      const x = rn([1, 5, 6, 7, 2]) as tf.Tensor5D;
      const w = rn([2, 3, 3, 2, 3]) as tf.Tensor5D;
      const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, 2, 'same');
      return [f(x, w), ...tf.grads((a: tf.Tensor, b: tf.Tensor) => sq(f(a, b)))([x, w])];
    }, 36 * 24));
  it('max/avg pools 2-D and 3-D (same, valid) and their gradients', () =>
    sameAsCpu(() => {
      const x = rn([2, 7, 8, 3]) as tf.Tensor4D;
      const v = rn([1, 5, 6, 7, 2]) as tf.Tensor5D;
      const out: tf.Tensor[] = [];
      for (const [k, s, p] of [
        [3, 2, 'same'],
        [3, 1, 'same'],
        [2, 2, 'valid'],
      ] as const) {
        out.push(tf.maxPool(x, k, s, p), tf.avgPool(x, k, s, p));
        out.push(
          tf.grad((a: tf.Tensor) => sq(tf.maxPool(a as tf.Tensor4D, k, s, p)))(x),
          tf.grad((a: tf.Tensor) => sq(tf.avgPool(a as tf.Tensor4D, k, s, p)))(x),
        );
      }
      out.push(tf.maxPool3d(v, 3, 2, 'same'), tf.avgPool3d(v, 3, 2, 'same'));
      out.push(
        tf.grad((a: tf.Tensor) => sq(tf.maxPool3d(a as tf.Tensor5D, 3, 2, 'same')))(v),
        tf.grad((a: tf.Tensor) => sq(tf.avgPool3d(a as tf.Tensor5D, 3, 2, 'same')))(v),
      );
      return out;
    }, 27 * 8));
  it('batchNorm, activations and their gradients, softmax, LRN', () =>
    sameAsCpu(() => {
      const x = rn([2, 3, 4, 5]);
      const a = rn([60], 3);
      return [
        tf.batchNorm(x, rn([5]), ru([5], 0.5, 2), rn([5]), rn([5]), 0.001),
        tf.batchNorm(x, rn([5]), ru([5], 0.5, 2)),
        tf.relu(a),
        tf.relu6(tf.mul(a, 3)),
        tf.elu(a),
        tf.selu(a),
        tf.softplus(a),
        tf.leakyRelu(a, 0.3),
        tf.prelu(a, tf.scalar(0.2)),
        tf.softmax(tf.reshape(a, [6, 10])),
        tf.grad((t: tf.Tensor) => sq(tf.elu(t)))(a),
        tf.grad((t: tf.Tensor) => sq(tf.relu6(t)))(a),
        tf.relu(tf.tensor1d([-2, 0, 3], 'int32')),
        tf.localResponseNormalization(x as tf.Tensor4D, 2, 1, 0.5, 0.75),
        tf.grad((t: tf.Tensor) => sq(tf.localResponseNormalization(t as tf.Tensor4D, 2, 1, 0.5, 0.75)))(x),
      ];
    }, 10));
  it('dilation2d and its gradients', () =>
    sameAsCpu(() => {
      const x = rn([2, 7, 8, 3]) as tf.Tensor4D;
      const f = rn([2, 3, 3]) as tf.Tensor3D;
      const g = (a: tf.Tensor, b: tf.Tensor) => tf.dilation2d(a as tf.Tensor4D, b as tf.Tensor3D, 2, 'valid', [1, 2]);
      return [tf.dilation2d(x, f, 1, 'same'), ...tf.grads((a: tf.Tensor, b: tf.Tensor) => sq(g(a, b)))([x, f])];
    }, 24));
  it('resizeBilinear / resizeNearestNeighbor (alignCorners, halfPixelCenters) and their gradients', () =>
    sameAsCpu(() => {
      const x = rn([2, 5, 7, 3]) as tf.Tensor4D;
      const out: tf.Tensor[] = [];
      for (const [ac, hp] of [
        [false, false],
        [true, false],
        [false, true],
      ]) {
        out.push(tf.image.resizeBilinear(x, [9, 4], ac, hp), tf.image.resizeNearestNeighbor(x, [9, 4], ac, hp));
      }
      // The cpu backend's gradients are right only for square images (bilinear: it swaps height and
      // width in the result's shape) and batch 1 (nearest: it steps dy with the image's batch stride).
      const s = rn([1, 5, 5, 2]) as tf.Tensor4D;
      for (const ac of [false, true]) {
        out.push(tf.grad((a: tf.Tensor) => sq(tf.image.resizeBilinear(a as tf.Tensor4D, [9, 9], ac)))(s));
        out.push(tf.grad((a: tf.Tensor) => sq(tf.image.resizeNearestNeighbor(a as tf.Tensor4D, [9, 7], ac)))(s));
      }
      return out;
    }, 16));
  it('cropAndResize (bilinear and nearest, boxes past the image, extrapolation), flipLeftRight', () =>
    sameAsCpu(() => {
      const img = rn([2, 5, 7, 3]) as tf.Tensor4D;
      const boxes = tf.tensor2d([
        [0, 0, 1, 1],
        [0.2, -0.1, 0.9, 1.2],
        [0.5, 0.5, 0.5, 0.5],
      ]);
      const ind = tf.tensor1d([0, 1, 1], 'int32');
      return [
        tf.image.cropAndResize(img, boxes, ind, [4, 3]),
        tf.image.cropAndResize(img, boxes, ind, [4, 3], 'nearest', 7),
        tf.image.flipLeftRight(img),
      ];
    }, 4));
  it('depthToSpace, spaceToBatchND, batchToSpaceND (exact)', () =>
    sameAsCpu(() => {
      const x = rn([2, 4, 6, 3]);
      const y = tf.spaceToBatchND(
        x,
        [2, 3],
        [
          [0, 2],
          [1, 2],
        ],
      );
      return [
        tf.depthToSpace(rn([2, 3, 4, 8]) as tf.Tensor4D, 2),
        y,
        tf.batchToSpaceND(
          y,
          [2, 3],
          [
            [0, 2],
            [1, 2],
          ],
        ),
      ];
    }, 0));
  it('bad attributes are JS errors, not crashes', async () => {
    await tf.setBackend('residual');
    expect(() => tf.conv2d(tf.zeros([1, 4, 4, 2]) as tf.Tensor4D, tf.zeros([3, 3, 3, 2]) as tf.Tensor4D, 1, 'same')).toThrow();
    const b = tf.backend();
    expect(() =>
      tf
        .engine()
        .runKernel(
          'Conv2DBackpropInput',
          { dy: tf.zeros([1, 1, 1, 2]), filter: tf.zeros([3, 3, 2, 2]) },
          { inputShape: [1, 4, 4, 2], strides: 1, pad: 'valid', dataFormat: 'NHWC' },
        ),
    ).toThrow(/gradient/);
    expect(tf.backend()).toBe(b);
  });
});
