// The Tensor class and the creation functions: properties, creation from JS data, conversion, in-place
// ops, random fills, autograd accessors, lifetime, and the error of each misuse. The numeric methods
// are checked against PyTorch in tensor-methods.test.ts; the values here are computed independently.
import { describe, expect, it } from 'vitest';
import {
  DisposedTensorError,
  DtypeError,
  ShapeError,
  Tensor,
  arange,
  cat,
  empty,
  eye,
  full,
  fullLike,
  linspace,
  manualSeed,
  memory,
  ones,
  onesLike,
  pad,
  rand,
  randint,
  randLike,
  randn,
  randnLike,
  randperm,
  stack,
  tensor,
  where,
  zeros,
  zerosLike,
} from '../../lib/index.js';

function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}
const num = (t: Tensor): number[] => Array.from(t.toTypedArray() as ArrayLike<number>, Number);

describe('Tensor properties', () => {
  const t = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);

  it('shape, size, ndim, dim, numel, dtype, device, nbytes', () => {
    expect(t.shape).toEqual([2, 3]);
    expect(t.size()).toEqual([2, 3]);
    expect(t.size(1)).toBe(3);
    expect(t.size(-2)).toBe(2);
    expect(t.ndim).toBe(2);
    expect(t.dim()).toBe(2);
    expect(t.numel()).toBe(6);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe('cpu');
    expect(t.isCuda).toBe(false);
    expect(t.nbytes).toBe(24);
    expect(tensor([1], { dtype: 'int64' }).nbytes).toBe(8);
    expect(errorOf(() => t.size(2))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => t.size(-3)).message).toMatch(/expected to be in range of \[-2, 1\], but got -3/);
  });

  it('stride and isContiguous, in both memory formats', () => {
    expect(t.stride()).toEqual([3, 1]);
    expect(t.isContiguous()).toBe(true);
    const tt = t.t();
    expect(tt.stride()).toEqual([1, 3]);
    expect(tt.isContiguous()).toBe(false);
    expect(tt.contiguous().stride()).toEqual([2, 1]);
    const x = arange(24).reshape(1, 2, 3, 4);
    const cl = x.contiguous('channelsLast');
    expect(cl.stride()).toEqual([24, 1, 8, 2]);
    expect(cl.isContiguous('channelsLast')).toBe(true);
    expect(cl.isContiguous()).toBe(false);
    expect(cl.toArray()).toEqual(x.toArray());
  });

  it('toString and the inspect form name shape, dtype, device and requiresGrad', () => {
    expect(tensor([1.5, 2]).toString()).toBe('Tensor([1.5,2], shape=[2], dtype=float32, device=cpu)');
    expect(ones([2]).requiresGrad_().toString()).toBe('Tensor([1,1], shape=[2], dtype=float32, device=cpu, requiresGrad=true)');
    expect(zeros([100]).toString()).toBe('Tensor([100 elements], shape=[100], dtype=float32, device=cpu)');
    const d = ones([1]);
    d.dispose();
    expect(d.toString()).toBe('Tensor(disposed)');
    expect((t as unknown as Record<symbol, () => string>)[Symbol.for('nodejs.util.inspect.custom')]()).toBe(t.toString());
  });
});

describe('creation', () => {
  it('tensor(): numbers, booleans, nested arrays, typed arrays, ArrayBuffers; dtype and shape options', () => {
    expect(tensor(2.5).shape).toEqual([]);
    expect(tensor(2.5).item()).toBe(2.5);
    expect(tensor(true).dtype).toBe('bool');
    expect(tensor([[true, false]]).toArray()).toEqual([[true, false]]);
    expect(tensor([1.25, -3], { dtype: 'float64' }).toArray()).toEqual([1.25, -3]);
    expect(tensor([1.9, -1.9], { dtype: 'int64' }).toArray()).toEqual([1, -1]); // truncates toward zero, as PyTorch
    expect(tensor(new Int32Array([1, 2, 3, 4]), { shape: [2, 2] }).toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(tensor(new Int32Array([1, 2])).dtype).toBe('int32');
    expect(tensor(new Float64Array([0.1])).dtype).toBe('float64');
    expect(tensor(new BigInt64Array([2n ** 40n])).itemBigInt()).toBe(2n ** 40n);
    expect(tensor(new Uint8Array([0, 255]).buffer).toArray()).toEqual([0, 255]);
    expect(tensor(new Uint16Array([0x3c00]), { dtype: 'float16' }).item()).toBe(1);
    expect(tensor([], { shape: [0, 3] }).shape).toEqual([0, 3]);
    expect(tensor([1, 2, 3], { requiresGrad: true }).requiresGrad).toBe(true);
  });

  it('tensor() copies typed arrays; {share: true} over a SharedArrayBuffer shares the memory', () => {
    const a = new Float32Array([1, 2]);
    const c = tensor(a);
    a[0] = 9;
    expect(c.toArray()).toEqual([1, 2]);
    const s = new Float32Array(new SharedArrayBuffer(8));
    const shared = tensor(s, { share: true });
    s[1] = 7;
    expect(shared.toArray()).toEqual([0, 7]);
  });

  it('tensor() with {shape}: plain and nested arrays are laid out in it and checked like typed arrays', () => {
    expect(tensor([1, 2, 3, 4], { shape: [2, 2] }).toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(
      tensor(
        [
          [1, 2],
          [3, 4],
        ],
        { shape: [4] },
      ).toArray(),
    ).toEqual([1, 2, 3, 4]);
    expect(tensor(5, { shape: [1, 1] }).toArray()).toEqual([[5]]);
    const e = errorOf(() => tensor([1, 2, 3], { shape: [2, 2] }));
    expect(e).toBeInstanceOf(ShapeError);
    expect(e.message).toBe('tensor: shape [2,2] has 4 elements but the data has 3 (a nested array of shape [3]): they must be equal');
    expect(errorOf(() => tensor(new Float32Array(3), { shape: [2, 2] }))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor(5, { shape: [2] }))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor(new Float32Array(4), { shape: [-2, -2] }))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor([1, 2, 3, 4], { shape: [2.5, 1.6] }))).toBeInstanceOf(TypeError);
  });

  it('tensor() refuses ragged nested arrays with a ShapeError naming the element, and non-numbers with a TypeError', () => {
    expect(errorOf(() => tensor([[1, 2], [3]])).message).toBe('tensor: ragged nested array: element at data[1] has length 1, expected 2');
    expect(errorOf(() => tensor([[1], 2] as never))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor([1, [2]] as never)).message).toBe(
      'tensor: ragged nested array: element at data[1] is an array, expected a number (as at data[0])',
    );
    expect(errorOf(() => tensor([[[1]], [[2, 3]]]))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor(['a'] as never))).toBeInstanceOf(TypeError);
    expect(errorOf(() => tensor([null] as never)).message).toBe('tensor: element at data[0] is null, expected a number or a boolean');
    expect(errorOf(() => tensor('x' as never))).toBeInstanceOf(TypeError);
    expect(errorOf(() => tensor(new Uint16Array(2)))).toBeInstanceOf(TypeError); // float16 or bfloat16? pass {dtype}
    expect(errorOf(() => tensor(new Uint8Array(3).buffer, { dtype: 'int32' }))).toBeInstanceOf(ShapeError); // 3 bytes are not whole int32s
    expect(errorOf(() => tensor(new Float32Array(2), { share: true }))).toBeInstanceOf(TypeError);
  });

  it('zeros, ones, empty, full, eye, arange, linspace', () => {
    expect(zeros([2, 2]).toArray()).toEqual([
      [0, 0],
      [0, 0],
    ]);
    expect(zeros(3, { dtype: 'int64' }).dtype).toBe('int64');
    expect(ones([3]).toArray()).toEqual([1, 1, 1]);
    expect(empty([2, 5]).shape).toEqual([2, 5]);
    expect(full([2], 7).toArray()).toEqual([7, 7]);
    expect(full([1], true).dtype).toBe('bool');
    expect(eye(3).toArray()).toEqual([
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
    ]);
    expect(arange(4).toArray()).toEqual([0, 1, 2, 3]);
    expect(arange(4).dtype).toBe('int64'); // integer arguments give int64, as PyTorch
    expect(arange(1, 2, 0.25).toArray()).toEqual([1, 1.25, 1.5, 1.75]);
    expect(arange(5, 0, -2).toArray()).toEqual([5, 3, 1]);
    expect(linspace(0, 1, 5).toArray()).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(ones([2], { requiresGrad: true }).requiresGrad).toBe(true);
    expect(errorOf(() => zeros([-1]))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => zeros([1.5]))).toBeInstanceOf(TypeError);
    expect(errorOf(() => zeros([2], { dtype: 'float128' as never }))).toBeInstanceOf(DtypeError);
  });

  it('*Like forms keep the shape and take options', () => {
    const t = tensor([[1, 2, 3]], { dtype: 'float64' });
    expect(zerosLike(t).toArray()).toEqual([[0, 0, 0]]);
    expect(zerosLike(t).dtype).toBe('float64');
    expect(onesLike(t, { dtype: 'int32' }).dtype).toBe('int32');
    expect(fullLike(t, 2.5).toArray()).toEqual([[2.5, 2.5, 2.5]]);
    expect(randLike(t).shape).toEqual([1, 3]);
    expect(randnLike(t).dtype).toBe('float64');
  });

  it('random creation: ranges, dtypes, and the same numbers after the same seed', () => {
    manualSeed(7);
    const a = rand([1000]);
    const ri = randint(3, 6, [500]);
    const rp = randperm(10);
    const rn = randn([2000], { dtype: 'float64' });
    const va = num(a);
    expect(va.every((v) => v >= 0 && v < 1)).toBe(true);
    expect(Math.abs(va.reduce((s, v) => s + v, 0) / va.length - 0.5)).toBeLessThan(0.05); // U(0,1): mean 1/2, sd of the mean 0.009
    expect(ri.dtype).toBe('int64');
    expect(new Set(num(ri))).toEqual(new Set([3, 4, 5]));
    expect(num(rp).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const vn = num(rn);
    const mean = vn.reduce((s, v) => s + v, 0) / vn.length;
    const sd = Math.sqrt(vn.reduce((s, v) => s + (v - mean) ** 2, 0) / vn.length);
    expect(Math.abs(mean)).toBeLessThan(0.12); // N(0,1): sd of the mean 0.022
    expect(Math.abs(sd - 1)).toBeLessThan(0.1);
    manualSeed(7);
    expect(num(rand([1000]))).toEqual(va);
    expect(num(randint(3, 6, [500]))).toEqual(num(ri));
  });

  it('cat, stack, where, pad', () => {
    const a = tensor([[1, 2]]);
    const b = tensor([[3, 4]]);
    expect(cat([a, b]).toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(cat([a, b], 1).toArray()).toEqual([[1, 2, 3, 4]]);
    expect(stack([a, b]).shape).toEqual([2, 1, 2]);
    expect(stack([a, b], 2).toArray()).toEqual([
      [
        [1, 3],
        [2, 4],
      ],
    ]);
    expect(where(tensor([true, false, true]), tensor([1, 2, 3]), 0).toArray()).toEqual([1, 0, 3]);
    expect(where(tensor([true, false]), -1, tensor([5, 6])).toArray()).toEqual([-1, 6]);
    expect(pad(tensor([[1, 2]]), [1, 2]).toArray()).toEqual([[0, 1, 2, 0, 0]]);
    expect(pad(tensor([[1, 2]]), [1, 0], 'constant', 9).toArray()).toEqual([[9, 1, 2]]);
    expect(pad(tensor([[[1, 2, 3]]]), [2, 1], 'reflect').toArray()).toEqual([[[3, 2, 1, 2, 3, 2]]]);
    expect(pad(tensor([[[1, 2]]]), [1, 1], 'replicate').toArray()).toEqual([[[1, 1, 2, 2]]]);
    expect(errorOf(() => cat([a, tensor([[1, 2, 3]])]))).toBeInstanceOf(ShapeError);
  });
});

describe('conversion', () => {
  it('item, itemBigInt, toTypedArray, toArray', () => {
    expect(tensor([3.5]).item()).toBe(3.5);
    expect(tensor(true).item()).toBe(true);
    expect(tensor([7], { dtype: 'int64' }).itemBigInt()).toBe(7n);
    expect(tensor([1.5, 2]).toTypedArray()).toEqual(new Float32Array([1.5, 2]));
    expect(tensor([1, 2], { dtype: 'int64' }).toTypedArray()).toEqual(new BigInt64Array([1n, 2n]));
    expect(tensor([1.5], { dtype: 'float16' }).toTypedArray()).toEqual(new Float32Array([1.5]));
    expect(tensor([[true], [false]]).toArray()).toEqual([[true], [false]]);
    expect(tensor(4).toArray()).toBe(4);
    expect(errorOf(() => ones([2]).item())).toBeInstanceOf(ShapeError);
    expect(errorOf(() => tensor([0.5]).itemBigInt())).toBeInstanceOf(DtypeError);
    const big = tensor(new BigInt64Array([2n ** 60n]));
    expect(errorOf(() => big.item())).toBeInstanceOf(RangeError);
    expect(errorOf(() => big.toArray())).toBeInstanceOf(RangeError);
  });

  it('to (dtype, device, options), cpu, float, double, long, contiguous, clone, detach, pinMemory on the CPU build', () => {
    const t = tensor([1.7, -2.2]);
    expect(t.to('float64').dtype).toBe('float64');
    expect(t.to({ dtype: 'int32' }).toArray()).toEqual([1, -2]);
    expect(t.to('cpu').device).toBe('cpu');
    expect(t.cpu().toArray()).toEqual(t.toArray());
    expect(t.double().dtype).toBe('float64');
    expect(t.long().toArray()).toEqual([1, -2]);
    expect(tensor([1], { dtype: 'int64' }).float().dtype).toBe('float32');
    const same = t.to({ dtype: 'float32' });
    same.fill_(0); // to() without a change returns the same storage, as PyTorch
    expect(t.toArray()).toEqual([0, 0]);
    const u = tensor([1, 2]);
    const copy = u.to({ dtype: 'float32', copy: true });
    copy.fill_(5);
    expect(u.toArray()).toEqual([1, 2]);
    const c = u.clone();
    c.fill_(3);
    expect(u.toArray()).toEqual([1, 2]);
    const d = u.requiresGrad_().detach();
    expect(d.requiresGrad).toBe(false);
    d.fill_(4); // detach shares storage
    expect(u.toArray()).toEqual([4, 4]);
    expect(errorOf(() => t.to({ device: 'cuda:7' }))).toBeInstanceOf(Error);
  });
});

describe('in-place ops', () => {
  it('each changes the tensor itself and returns it, with the out-of-place result', () => {
    const cases: [string, (t: Tensor) => Tensor, number[]][] = [
      ['add_', (t) => t.add_(tensor([1, 1, 1, 1]), 2), [3, 0, 5, -1]],
      ['sub_', (t) => t.sub_(1), [0, -3, 2, -4]],
      ['mul_', (t) => t.mul_(tensor([2, 2, 2, 2])), [2, -4, 6, -6]],
      ['div_', (t) => t.div_(2), [0.5, -1, 1.5, -1.5]],
      ['pow_', (t) => t.pow_(2), [1, 4, 9, 9]],
      ['neg_', (t) => t.neg_(), [-1, 2, -3, 3]],
      ['abs_', (t) => t.abs_(), [1, 2, 3, 3]],
      ['clamp_', (t) => t.clamp_(-1, 2), [1, -1, 2, -1]],
      ['relu_', (t) => t.relu_(), [1, 0, 3, 0]],
      ['zero_', (t) => t.zero_(), [0, 0, 0, 0]],
      ['fill_', (t) => t.fill_(0.5), [0.5, 0.5, 0.5, 0.5]],
      ['copy_', (t) => t.copy_(tensor([4, 3, 2, 1])), [4, 3, 2, 1]],
    ];
    for (const [name, f, want] of cases) {
      const t = tensor([1, -2, 3, -3], { dtype: 'float64' });
      const out = f(t);
      expect(out, name).toBe(t);
      expect(num(t), name).toEqual(want);
    }
    const p = tensor([4, 9, 1], { dtype: 'float64' });
    expect(num(p.sqrt_())).toEqual([2, 3, 1]);
    num(p.log_()).forEach((v, k) => expect(v).toBeCloseTo([Math.log(2), Math.log(3), 0][k], 14));
    expect(num(p.exp_()).map((v) => Math.round(v * 1e12) / 1e12)).toEqual([2, 3, 1]);
    const i = tensor([7, -7], { dtype: 'int64' });
    i.div_(2, 'floor');
    expect(num(i)).toEqual([3, -4]);
  });

  it('random fills: uniform_ within [from, to), normal_ with its mean and std, bernoulli_ with its p; reproducible by seed', () => {
    manualSeed(3);
    const u = empty([4000], { dtype: 'float64' }).uniform_(-2, 3);
    const vu = num(u);
    expect(vu.every((v) => v >= -2 && v < 3)).toBe(true);
    expect(Math.abs(vu.reduce((s, v) => s + v, 0) / vu.length - 0.5)).toBeLessThan(0.1); // sd of the mean 0.023
    const n = empty([4000], { dtype: 'float64' }).normal_(10, 2);
    const vn = num(n);
    const mean = vn.reduce((s, v) => s + v, 0) / vn.length;
    expect(Math.abs(mean - 10)).toBeLessThan(0.2); // sd of the mean 0.032
    const b = empty([4000], { dtype: 'float64' }).bernoulli_(0.25);
    const vb = num(b);
    expect(vb.every((v) => v === 0 || v === 1)).toBe(true);
    expect(Math.abs(vb.reduce((s, v) => s + v, 0) / vb.length - 0.25)).toBeLessThan(0.04); // sd 0.007
    manualSeed(3);
    expect(num(empty([4000], { dtype: 'float64' }).uniform_(-2, 3))).toEqual(vu);
  });
});

describe('autograd accessors', () => {
  it('requiresGrad (get, set, requiresGrad_), isLeaf, gradFn, grad (get, set), retainGrad, backward', () => {
    const x = tensor([1, 2, 3], { dtype: 'float64' });
    expect(x.requiresGrad).toBe(false);
    x.requiresGrad = true;
    expect(x.requiresGrad).toBe(true);
    expect(x.requiresGrad_(false).requiresGrad).toBe(false);
    x.requiresGrad_();
    expect(x.isLeaf).toBe(true);
    expect(x.gradFn).toBeNull();
    const y = x.mul(x).retainGrad(); // y = x^2
    expect(y.isLeaf).toBe(false);
    expect(y.gradFn).toBe('MulBackward0');
    const z = y.sum();
    z.backward();
    expect(num(x.grad!)).toEqual([2, 4, 6]); // d/dx sum(x^2) = 2x
    expect(num(y.grad!)).toEqual([1, 1, 1]);
    x.grad = tensor([0, 0, 1], { dtype: 'float64' });
    expect(num(x.grad!)).toEqual([0, 0, 1]);
    x.grad = null;
    expect(x.grad).toBeNull();
    // a gradient for a non-scalar output; retainGraph keeps the graph for a second backward
    const w = x.mul(3);
    w.backward(tensor([1, 0, 2], { dtype: 'float64' }), { retainGraph: true });
    w.backward(tensor([1, 0, 2], { dtype: 'float64' }));
    expect(num(x.grad!)).toEqual([6, 0, 12]);
    expect(errorOf(() => x.mul(2).backward())).toBeInstanceOf(Error); // no gradient for a non-scalar output
    expect(errorOf(() => tensor([1]).backward())).toBeInstanceOf(TypeError); // nothing requires grad
    expect(errorOf(() => (x.grad = tensor([1, 2])))).toBeInstanceOf(TypeError); // shape differs
  });

  it('detach_ cuts the tensor out of the graph in place', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = x.mul(2);
    expect(y.detach_()).toBe(y);
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
  });
});

describe('lifetime', () => {
  it('dispose frees the reference; use after dispose is a DisposedTensorError; dispose twice is a no-op', () => {
    const before = memory().tensors;
    const t = ones([4]);
    expect(memory().tensors).toBe(before + 1);
    expect(t.disposed).toBe(false);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(memory().tensors).toBe(before);
    expect(errorOf(() => t.add(1))).toBeInstanceOf(DisposedTensorError);
    expect(errorOf(() => t.shape)).toBeInstanceOf(DisposedTensorError);
  });

  it('a view keeps the storage alive after its base is disposed', () => {
    const base = arange(6).reshape(2, 3);
    const row = base.select(0, 1);
    base.dispose();
    expect(row.toArray()).toEqual([3, 4, 5]);
  });

  it('only real Tensors are accepted: a look-alike object is a TypeError', () => {
    const fake = { _h: ones([1])._h } as unknown as Tensor;
    expect(errorOf(() => ones([1]).add(fake))).toBeInstanceOf(TypeError);
    expect(errorOf(() => cat([fake]))).toBeInstanceOf(TypeError);
  });
});

describe('misuse of the methods', () => {
  const t = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  it.each([
    ['reshape to a wrong size', () => t.reshape(4), ShapeError],
    ['view of a non-contiguous tensor', () => t.t().view(6), ShapeError],
    ['transpose out of range', () => t.transpose(0, 2), ShapeError],
    ['matmul of mismatched inner sizes', () => t.matmul(t), ShapeError],
    ['add of unbroadcastable shapes', () => t.add(ones([4])), ShapeError],
    ['narrow beyond the end', () => t.narrow(1, 2, 5), ShapeError],
    ['gather with an index of another rank', () => t.gather(1, tensor([0], { dtype: 'int64' })), ShapeError],
    ['indexSelect with a float index', () => t.indexSelect(0, tensor([0])), DtypeError],
    ['an integer dim that is a fraction', () => t.sum(0.5), TypeError],
    ['clamp without bounds', () => t.clamp(), TypeError],
    ['index with an object', () => t.index({} as never), TypeError],
    ['integer to a negative integer power', () => tensor([2], { dtype: 'int64' }).pow(-1), DtypeError],
    ['integer MIN / -1', () => tensor([-(2 ** 31)], { dtype: 'int32' }).div(-1, 'trunc'), RangeError],
  ] as const)('%s', (_name, f, cls) => {
    expect(errorOf(f)).toBeInstanceOf(cls);
  });
});
