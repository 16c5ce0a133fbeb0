// The residual tfjs backend: registration, the KernelBackend methods (write/read/readSync/move/
// disposeData/refCount/incRef/numDataIds/memory/time/dispose), read() off the main thread, no leaked
// native tensors, and kernels against the cpu backend (the semantic reference) on the same inputs.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memory as residualMemory, tensor as rTensor } from '../../lib/index.js';
import { native } from '../../lib/addon/binding.js';
import { hOf, wrapT } from '../../lib/tensor/tensor.js';
import { BACKEND_NAME, RESIDUAL_PRIORITY, ResidualBackend, kernelConfigs, setResidualDevice } from '../../lib/tfjs/index.js';

beforeAll(async () => {
  await tf.setBackend('residual');
});
afterAll(async () => {
  await tf.setBackend('residual');
});

/** Runs fn on a backend and returns its result's data, dtype and shape (tensors disposed). */
async function on(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<{ data: unknown[]; dtype: string; shape: number[] }[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(fn);
  const list = Array.isArray(out) ? out : [out];
  const res = [];
  for (const t of list) res.push({ data: Array.from((await t.data()) as ArrayLike<number>), dtype: t.dtype, shape: t.shape });
  tf.dispose(list);
  await tf.setBackend('residual');
  return res;
}

/** Float32 closeness: relative 1e-5 (a few float32 ulps of accumulated rounding), NaN == NaN. */
function expectClose(a: unknown[], b: unknown[], rtol = 1e-5, atol = 1e-6): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (Number.isNaN(y)) expect(x, `element ${i}`).toBeNaN();
    else if (!Number.isFinite(y)) expect(x, `element ${i}`).toBe(y);
    else expect(Math.abs(x - y), `element ${i}: ${x} vs ${y}`).toBeLessThanOrEqual(atol + rtol * Math.abs(y));
  }
}

async function sameAsCpu(fn: () => tf.Tensor | tf.Tensor[], rtol?: number): Promise<void> {
  const r = await on('residual', fn);
  const c = await on('cpu', fn);
  expect(r.length).toBe(c.length);
  for (let i = 0; i < r.length; i++) {
    expect(r[i].dtype).toBe(c[i].dtype);
    expect(r[i].shape).toEqual(c[i].shape);
    expectClose(r[i].data, c[i].data, rtol);
  }
}

describe('residual tfjs backend', () => {
  it('registers as `residual` above tfjs-node (priority 3) and is the default', () => {
    expect(BACKEND_NAME).toBe('residual');
    expect(RESIDUAL_PRIORITY).toBeGreaterThan(3);
    expect(tf.findBackend('residual')).toBeInstanceOf(ResidualBackend);
    expect(tf.getBackend()).toBe('residual');
  });

  it('writes and reads float32, int32, bool (Uint8Array) and complex64 data', async () => {
    const f = tf.tensor([1.5, -2, 3], [3]);
    const i = tf.tensor([1, -2, 2147483647], [3], 'int32');
    const b = tf.tensor([true, false, true]);
    const c = tf.complex([1, 2], [3, 4]);
    expect(await f.data()).toEqual(new Float32Array([1.5, -2, 3]));
    expect(i.dataSync()).toEqual(new Int32Array([1, -2, 2147483647]));
    expect(b.dataSync()).toBeInstanceOf(Uint8Array);
    expect(Array.from(b.dataSync())).toEqual([1, 0, 1]);
    expect(Array.from(await c.data())).toEqual([1, 3, 2, 4]);
    tf.dispose([f, i, b, c]);
  });

  it('read() resolves off the main thread: not within the macrotask that asked (a synchronous copy would)', async () => {
    const big = tf.fill([4, 1024, 1024], 3);
    let resolved = false;
    const p = big.data().then((d) => {
      resolved = true;
      return d;
    });
    // A read made on the JS thread resolves within a few microtask turns of this macrotask; the
    // native worker's completion can only arrive in a later turn of the event loop.
    for (let i = 0; i < 200; i++) await null;
    expect(resolved, 'read() resolved before the event loop turned').toBe(false);
    const d = await p;
    expect(d.length).toBe(4 * 1024 * 1024);
    expect(d[0]).toBe(3);
    expect(d[d.length - 1]).toBe(3);
    big.dispose();
  });

  it('read() of a tensor disposed while the copy is pending resolves with its data (the worker holds the tensor)', async () => {
    const native0 = residualMemory().tensors;
    const reads: Promise<ArrayLike<number>>[] = [];
    for (let k = 0; k < 8; k++) {
      const t = tf.fill([256, 1024], k + 0.5);
      reads.push(t.data() as Promise<ArrayLike<number>>);
      t.dispose(); // the dataId and its native tensor go now, before the worker has copied
    }
    const got = await Promise.all(reads);
    got.forEach((d, k) => {
      expect(d.length).toBe(256 * 1024);
      expect(d[0]).toBe(k + 0.5);
      expect(d[d.length - 1]).toBe(k + 0.5);
    });
    expect(residualMemory().tensors).toBe(native0);
  });

  it('binary ops broadcast and match the cpu backend (int32 floor division, mod sign, NaN)', async () => {
    await sameAsCpu(() => [
      tf.add(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor1d([10, 20])),
      tf.floorDiv(tf.tensor1d([7, -7, 7, -7, 0, 5], 'int32'), tf.tensor1d([2, 2, -2, -2, 3, 0], 'int32')),
      tf.mod(tf.tensor1d([5, -5, 5, -5, 5.5]), tf.tensor1d([3, 3, -3, -3, 2])),
      tf.maximum(tf.tensor1d([1, NaN, 3]), tf.tensor1d([2, 2, NaN])),
      tf.pow(tf.tensor1d([2, 3, -2], 'int32'), tf.tensor1d([3, 2, 3], 'int32')),
      tf.squaredDifference(tf.tensor1d([1, 2]), tf.tensor1d([4, 0])),
      tf.div(tf.tensor1d([1, -1, 0]), tf.tensor1d([0, 3, 0])),
      tf.greater(tf.tensor1d([1, 2, NaN]), tf.scalar(1.5)),
    ]);
  });

  it('reductions return int32 for int32/bool input', async () => {
    await sameAsCpu(() => {
      const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32');
      return [
        tf.sum(x),
        tf.sum(x, 1),
        tf.prod(x, [0, 1]),
        tf.max(x, 0, true),
        tf.mean(x),
        tf.argMax(x, 1),
        tf.sum(tf.tensor1d([true, true, false], 'bool')),
        tf.cumsum(x, 1, true, true),
      ];
    });
  });

  it('disposes: numDataIds and the native tensor count return to their start', async () => {
    const b = tf.backend() as ResidualBackend;
    const ids0 = b.numDataIds();
    const native0 = residualMemory().tensors;
    for (let k = 0; k < 3; k++) {
      tf.tidy(() => {
        const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
        tf.sum(tf.exp(tf.mul(tf.add(x, 1), tf.cast(tf.greater(x, 2), 'float32'))), 0);
        tf.cumprod(tf.floorDiv(tf.cast(x, 'int32'), tf.scalar(2, 'int32')), 1);
      });
    }
    expect(b.numDataIds()).toBe(ids0);
    expect(residualMemory().tensors).toBe(native0);
  });

  it('a failing kernel throws a JS Error and leaks nothing', () => {
    const b = tf.backend() as ResidualBackend;
    const ids0 = b.numDataIds();
    const native0 = residualMemory().tensors;
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    expect(() => tf.engine().runKernel('ArgMax', { x }, { axis: [0, 1] })).toThrow(/one axis/);
    x.dispose();
    expect(b.numDataIds()).toBe(ids0);
    expect(residualMemory().tensors).toBe(native0);
  });

  it('memory(), time() and a fresh backend after removal', async () => {
    const m = tf.memory() as tf.MemoryInfo & { numBytesInResidual: number };
    expect(m.unreliable).toBe(false);
    expect(typeof m.numBytesInResidual).toBe('number');
    const t = await tf.time(() => tf.dispose(tf.add(tf.ones([64]), 1)));
    expect(t.kernelMs).toBeGreaterThanOrEqual(0);
    const first = tf.findBackend('residual');
    tf.removeBackend('residual');
    tf.registerBackend('residual', () => new ResidualBackend(), RESIDUAL_PRIORITY);
    await tf.setBackend('residual');
    expect(tf.findBackend('residual')).not.toBe(first);
    const x = tf.tensor1d([1, 2, 3]);
    expect(Array.from(await tf.sum(x).data())).toEqual([6]);
    x.dispose();
  });
  it('moves data written on the cpu backend when a residual kernel uses it', async () => {
    await tf.setBackend('cpu');
    const x = tf.tensor1d([1, 2, 3]);
    await tf.setBackend('residual');
    const y = tf.mul(x, 2);
    expect(Array.from(await y.data())).toEqual([2, 4, 6]);
    expect(Array.from(await x.data())).toEqual([1, 2, 3]);
    tf.dispose([x, y]);
  });

  it('Reshape/ExpandDims/Identity of data on the cpu backend share a moved dataId: disposing the input keeps the outputs', async () => {
    await tf.setBackend('cpu');
    const x = tf.tensor1d([1, 2, 3, 4]);
    const n0 = tf.memory().numDataBuffers;
    await tf.setBackend('residual');
    const y = tf.reshape(x, [2, 2]);
    const z = tf.expandDims(x, 0);
    const w = tf.engine().runKernel('Identity', { x }) as tf.Tensor;
    x.dispose(); // the shared dataId has three more references
    expect(Array.from(await y.data())).toEqual([1, 2, 3, 4]);
    expect(y.shape).toEqual([2, 2]);
    y.dispose();
    expect(Array.from(await z.data())).toEqual([1, 2, 3, 4]);
    z.dispose();
    expect(Array.from(w.dataSync())).toEqual([1, 2, 3, 4]);
    w.dispose();
    expect(tf.memory().numDataBuffers).toBe(n0 - 1);
  });

  it('Variable.assign on residual of a value made on cpu keeps the value after the source is disposed', async () => {
    await tf.setBackend('cpu');
    const v = tf.variable(tf.zeros([3]));
    const nv = tf.tensor1d([1, 2, 3]);
    await tf.setBackend('residual');
    v.assign(nv); // tfjs counts the new reference with the current backend's incRef
    nv.dispose();
    expect(Array.from(await v.data())).toEqual([1, 2, 3]);
    const s = tf.add(v, 1);
    expect(Array.from(await s.data())).toEqual([2, 3, 4]);
    tf.dispose([s, v]);
  });

  it('string tensors move through reshape, concat, tile, slice, stack and compare', async () => {
    const s = tf.tensor2d(['a', 'bb', 'c', 'dd'], [2, 2]);
    expect(tf.reshape(s, [4]).arraySync()).toEqual(['a', 'bb', 'c', 'dd']);
    expect(tf.concat([s, s], 1).arraySync()).toEqual([
      ['a', 'bb', 'a', 'bb'],
      ['c', 'dd', 'c', 'dd'],
    ]);
    expect(tf.tile(s, [1, 2]).arraySync()).toEqual([
      ['a', 'bb', 'a', 'bb'],
      ['c', 'dd', 'c', 'dd'],
    ]);
    expect(tf.slice(s, [0, 1], [2, 1]).arraySync()).toEqual([['bb'], ['dd']]);
    expect(tf.stack([tf.scalar('x'), tf.scalar('y')]).arraySync()).toEqual(['x', 'y']);
    expect(Array.from(tf.equal(s, tf.scalar('c')).dataSync())).toEqual([0, 0, 1, 0]);
    tf.dispose(s);
  });

  it('complex64: FFT/IFFT round trip, real/imag/abs as the cpu backend', async () => {
    await sameAsCpu(() => {
      const c = tf.complex([1, 2, 3, 4], [0, -1, 2, 0.5]);
      const f = tf.spectral.fft(c);
      return [tf.real(f), tf.imag(f), tf.real(tf.spectral.ifft(f)), tf.abs(c), tf.real(tf.mul(c, c))];
    }, 1e-5);
  });

  it('array kernels match the cpu backend', async () => {
    await sameAsCpu(() => {
      const x = tf.tensor3d(
        Array.from({ length: 24 }, (_, i) => i - 7),
        [2, 3, 4],
      );
      const xi = tf.cast(x, 'int32');
      return [
        tf.transpose(x, [2, 0, 1]),
        tf.stridedSlice(x, [0, 2, 3], [2, 0, 0], [1, -1, -2]),
        tf.gather(x, tf.tensor1d([2, 0], 'int32'), 1),
        tf.gatherND(x, tf.tensor2d([1, 2, 0, 1], [2, 2], 'int32')),
        tf.scatterND(tf.tensor2d([0, 1, 0, 1], [2, 2], 'int32'), tf.tensor1d([5, 6]), [2, 2]),
        tf.mirrorPad(
          tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]),
          [
            [1, 1],
            [2, 2],
          ],
          'symmetric',
        ),
        tf.mirrorPad(
          tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]),
          [
            [1, 1],
            [2, 2],
          ],
          'reflect',
        ),
        tf.pad(
          xi,
          [
            [0, 1],
            [1, 0],
            [0, 0],
          ],
          7,
        ),
        tf.tile(xi, [1, 2, 1]),
        tf.reverse(x, [0, 2]),
        tf.oneHot(tf.tensor1d([0, 2, 5, -1], 'int32'), 3),
        tf.where(tf.tensor1d([true, false], 'bool'), tf.ones([2, 2]), tf.zeros([2, 2])),
        tf.range(5, 0, -1.5),
        tf.linspace(0, 1, 7),
        tf.cumprod(tf.tensor1d([1, 2, 3, 4]), 0, true, false),
        tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3, 4]), tf.tensor1d([1, 0, 1, -1], 'int32'), 2),
        tf.topk(tf.tensor1d([3, 1, 3, 2, 3]), 3).indices,
        tf.unique(tf.tensor1d([3, 1, 3, 2, 1])).indices,
        tf.einsum('ij,jk->ik', tf.ones([2, 3]), tf.ones([3, 2])),
        tf.bincount(tf.tensor1d([0, 1, 1, 4], 'int32'), tf.tensor1d([0.5, 1, 2, 3]), 3),
        tf.sum(tf.sparseToDense(tf.tensor1d([1, 3], 'int32'), tf.tensor1d([5, 6]), [5], tf.scalar(-1))),
      ];
    });
  });

  it('no dataId nor native tensor outlives a batch of kernels', () => {
    const b = tf.backend() as ResidualBackend;
    const ids0 = b.numDataIds();
    const native0 = residualMemory().tensors;
    tf.tidy(() => {
      const x = tf.tensor2d([1, -2, 3, 4, 5, -6], [2, 3]);
      const c = tf.complex(x, x);
      const s = tf.tensor1d(['p', 'q']);
      const ops = [
        tf.abs(x),
        tf.sigmoid(x),
        tf.erf(x),
        tf.step(x),
        tf.clipByValue(x, -1, 1),
        tf.isNaN(x),
        tf.mod(x, 3),
        tf.argMax(x, 1),
        tf.all(tf.cast(x, 'bool')),
        tf.any(tf.cast(x, 'bool'), 1),
        tf.min(x, 0),
        tf.mean(x, 1),
        tf.reshape(x, [3, 2]),
        tf.expandDims(x, 1),
        tf.clone(x),
        tf.split(x, 3, 1)[1],
        tf.unstack(x)[0],
        tf.real(c),
        tf.imag(c),
        tf.abs(c),
        tf.spectral.fft(c),
        tf.reshape(c, [6]),
        tf.concat([c, c]),
        tf.reshape(s, [2, 1]),
        tf.concat([s, s]),
        tf.addN([x, x, x]),
        tf.onesLike(c),
        tf.zerosLike(x),
        tf.multinomial(tf.tensor2d([[0.1, 0.9]]), 4, 7),
        tf.image.nonMaxSuppression(tf.tensor2d([0, 0, 1, 1, 0, 0, 1, 1], [2, 4]), tf.tensor1d([0.9, 0.8]), 2),
        tf.string.stringSplit(tf.tensor1d(['a b', 'c']), ' ').values,
        tf.string.stringToHashBucketFast(s, 5),
        tf.raggedRange(tf.tensor1d([0, 2]), tf.tensor1d([3, 5]), tf.tensor1d([1, 1])).rtDenseValues,
        tf.sparse.sparseReshape(tf.tensor2d([0, 1], [1, 2], 'int32'), tf.tensor1d([2, 2], 'int32'), tf.tensor1d([4], 'int32'))
          .outputIndices,
        tf.image.transform(tf.ones([1, 3, 3, 1]), tf.tensor2d([[1, 0, 0.5, 0, 1, 0, 0, 0]])),
        tf.stridedSlice(x, [0, 2], [2, 0], [1, -1]),
      ];
      return ops.length;
    });
    expect(b.numDataIds()).toBe(ids0);
    expect(residualMemory().tensors).toBe(native0);
  });

  it('invalid attributes and libtorch failures are JS errors with the message', () => {
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    expect(() => tf.engine().runKernel('Transpose', { x }, { perm: [0, 0] })).toThrow(/duplicate dims|repeated dim/i);
    expect(() => tf.engine().runKernel('Tile', { x }, { reps: [-1, 1] })).toThrow(Error);
    expect(() => tf.gather(x, tf.tensor1d([5], 'int32'))).toThrow(/not in \[0, 1\]/);
    x.dispose();
  });

  it("the indexPut op (ops.cpp, tfjs math) without any index tensor names its 'indices' argument (not libtorch's internal assert)", () => {
    const t = rTensor([1, 2, 3, 4]);
    const v = rTensor([5, 6, 7, 8]);
    for (const idx of [[], [undefined]]) {
      expect(() => native.indexPut(hOf(t), idx, hOf(v), false)).toThrow(TypeError);
      expect(() => native.indexPut(hOf(t), idx, hOf(v), false)).toThrow(
        /indexPut: argument 'indices' must hold at least one index tensor \(got \d entr(y|ies), none a tensor\)/,
      );
    }
    const i = rTensor([3, 0], { dtype: 'int64' });
    const w = rTensor([9, 7]);
    const y = wrapT(native.indexPut(hOf(t), [hOf(i)], hOf(w), false) as never);
    expect(y.toArray()).toEqual([7, 2, 3, 9]);
    [t, v, i, w, y].forEach((z) => z.dispose());
  });

  it('setResidualDevice refuses what is not a device', () => {
    expect(() => setResidualDevice('tpu' as never)).toThrow(TypeError);
  });

  it('dispose() of a backend frees its native tensors', () => {
    const native0 = residualMemory().tensors;
    const b = new ResidualBackend('cpu');
    b.write(new Float32Array([1, 2, 3]), [3], 'float32');
    b.write(new Int32Array([1]), [], 'int32');
    expect(residualMemory().tensors).toBe(native0 + 2);
    expect(b.numDataIds()).toBe(2);
    b.dispose();
    expect(residualMemory().tensors).toBe(native0);
  });
  it('unary and binary kernels agree with the cpu backend on special values (NaN, +-Infinity, +-0, huge)', async () => {
    const F = [0, -0, 1, -1, 2.5, -2.5, 0.5, -0.5, 3, 1e30, -1e30, NaN, Infinity, -Infinity, 7, -7.25];
    const F2 = [...F].reverse();
    const I = [0, 1, -1, 2, -2, 7, -7, 3, 5, -5, 4, 6, -3, 9, 12, -12];
    const I2 = [3, -3, 2, 0, -2, 1, 4, -1, 0, 7, -4, 5, 2, -9, 5, -5];
    type Un = (x: tf.Tensor) => tf.Tensor;
    type Bin = (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;
    const unF: Un[] = [
      tf.abs,
      tf.acos,
      tf.acosh,
      tf.asin,
      tf.asinh,
      tf.atan,
      tf.atanh,
      tf.ceil,
      tf.cos,
      tf.cosh,
      tf.erf,
      tf.exp,
      tf.expm1,
      tf.floor,
      tf.isFinite,
      tf.isInf,
      tf.isNaN,
      tf.log,
      tf.log1p,
      tf.neg,
      tf.reciprocal,
      tf.round,
      tf.rsqrt,
      tf.sigmoid,
      tf.sign,
      tf.sin,
      tf.sinh,
      tf.sqrt,
      tf.square,
      tf.step,
      tf.tan,
      tf.tanh,
    ];
    const unI: Un[] = [tf.abs, tf.neg, tf.square, tf.sign];
    // floorDiv and pow are left out on floats: see the next test.
    const binF: Bin[] = [
      tf.add,
      tf.sub,
      tf.mul,
      tf.div,
      tf.mod,
      tf.maximum,
      tf.minimum,
      tf.squaredDifference,
      tf.atan2,
      tf.equal,
      tf.notEqual,
      tf.less,
      tf.lessEqual,
      tf.greater,
      tf.greaterEqual,
    ];
    const binI: Bin[] = [
      tf.add,
      tf.sub,
      tf.mul,
      tf.floorDiv,
      tf.mod,
      tf.maximum,
      tf.minimum,
      tf.squaredDifference,
      tf.equal,
      tf.less,
      tf.div,
    ];
    await sameAsCpu(
      () => [
        ...unF.map((f) => f(tf.tensor1d(F))),
        ...unI.map((f) => f(tf.tensor1d(I, 'int32'))),
        ...binF.map((f) => f(tf.tensor1d(F), tf.tensor1d(F2))),
        ...binI.map((f) => f(tf.tensor1d(I, 'int32'), tf.tensor1d(I2, 'int32'))),
      ],
      1e-4,
    );
  });

  it("follows TF (not the cpu backend's JS quirks) for float floorDiv and pow", () => {
    // TF's FloorDiv keeps float dtypes (tfjs-backend-cpu returns int32); x / 0 floors to +-Infinity.
    const q = tf.floorDiv(tf.tensor1d([7, -7, 7.5]), tf.tensor1d([2, 2, 0]));
    expect(q.dtype).toBe('float32');
    expect(Array.from(q.dataSync())).toEqual([3, -4, Infinity]);
    // C's pow: 1^x == 1 for any x, also NaN and Infinity (JS's Math.pow gives NaN).
    expect(Array.from(tf.pow(tf.tensor1d([1, 1, -1]), tf.tensor1d([NaN, Infinity, -Infinity])).dataSync())).toEqual([1, 1, 1]);
    tf.dispose(q);
  });
  it('kernels only the cpu backend registers match it: rotateWithOffset, transform, maxPoolWithArgmax, sparse and ragged', async () => {
    await sameAsCpu(() => {
      const img = tf.tensor4d(
        Array.from({ length: 2 * 5 * 4 * 3 }, (_, i) => (i * 7) % 17),
        [2, 5, 4, 3],
      );
      const am = tf.maxPoolWithArgmax(img, 2, 1, 'same', true);
      const sr = tf.sparse.sparseReshape(
        tf.tensor2d([0, 1, 1, 2, 2, 0], [3, 2], 'int32'),
        tf.tensor1d([3, 4], 'int32'),
        tf.tensor1d([2, -1], 'int32'),
      );
      const fe = tf.sparse.sparseFillEmptyRows(
        tf.tensor2d([0, 0, 2, 1, 2, 0], [3, 2], 'int32'),
        tf.tensor1d([1, 2, 3]),
        tf.tensor1d([4, 3], 'int32'),
        tf.scalar(-1),
      );
      const rr = tf.raggedRange(tf.tensor1d([0, 5, 8]), tf.tensor1d([3, 5, 12]), tf.tensor1d([1, 1, 2]));
      return [
        tf.image.rotateWithOffset(img, 0.7, 9, [1, 2]),
        tf.image.rotateWithOffset(img, -2.1, [1, 2, 3]),
        tf.image.transform(tf.slice(img, [0], [1]), tf.tensor2d([[1.1, 0.2, -1, 0.1, 0.9, 0.5, 0.01, 0.02]]), 'bilinear', 'reflect'),
        tf.image.transform(tf.slice(img, [0], [1]), tf.tensor2d([[0.8, -0.3, 1, 0.2, 1.2, -0.5, 0, 0]]), 'nearest', 'wrap'),
        am.result,
        am.indexes,
        sr.outputIndices,
        sr.outputShape,
        fe.outputIndices,
        fe.outputValues,
        fe.emptyRowIndicator,
        fe.reverseIndexMap,
        rr.rtNestedSplits,
        rr.rtDenseValues,
        tf.sparse.sparseSegmentMean(
          tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2]),
          tf.tensor1d([0, 2, 1], 'int32'),
          tf.tensor1d([0, 0, 2], 'int32'),
        ),
      ];
    });
  });
  it('every kernel fed malformed inputs or attributes throws a JS Error or returns, and leaks nothing', () => {
    const b = tf.backend() as ResidualBackend;
    const ids0 = b.numDataIds();
    const native0 = residualMemory().tensors;
    const t = (v: number[], s: number[], d?: tf.DataType): tf.Tensor => tf.tensor(v, s, d);
    const inputSets: (() => Record<string, tf.Tensor>)[] = [
      () => ({}),
      () => ({ x: t([1, 2, 3, 4], [2, 2]) }),
      () => ({ x: t([1, 2, 3, 4], [2, 2], 'int32'), a: t([1], [1]), b: t([0], [1]) }),
      () => ({
        x: t([1, 2, 3, 4], [4]),
        indices: t([5, -1], [2], 'int32'),
        input: t([1], [1]),
        value: t([2], [1]),
        a: t([1, 2], [2]),
        b: t([1, 2, 3], [3]),
      }),
      () => ({
        x: t([NaN, Infinity, -1, 0], [1, 2, 2, 1]),
        image: t([1, 2, 3, 4], [1, 2, 2, 1]),
        boxes: t([0, 0, 1, 1], [1, 4]),
        scores: t([1], [1]),
      }),
    ];
    const attrSets: Record<string, unknown>[] = [
      {},
      { axis: 7, shape: [-3], perm: [5], begin: [9], size: [9], reps: [-2], depth: -1, dtype: 'complex64', k: 9, numSegments: -1 },
      {
        axis: [0, 0],
        shape: [1, 2, 3],
        dims: [9],
        paddings: [[-5, 2]],
        numOrSizeSplits: 7,
        strides: [0],
        filterSize: 0,
        pad: 'bogus',
        equation: 'ij->',
      },
    ];
    let calls = 0;
    for (const k of kernelConfigs) {
      for (const mk of inputSets) {
        for (const attrs of attrSets) {
          const inputs = mk();
          calls++;
          try {
            const out = k.kernelFunc({ inputs, attrs: attrs as tf.NamedAttrMap, backend: b });
            for (const o of Array.isArray(out) ? out : [out]) b.disposeData(o.dataId);
          } catch (e) {
            expect(e, k.kernelName).toBeInstanceOf(Error);
          }
          tf.dispose(Object.values(inputs));
        }
      }
    }
    expect(calls).toBeGreaterThan(2000);
    expect(b.numDataIds()).toBe(ids0);
    expect(residualMemory().tensors).toBe(native0);
  });
});
