// Every error class: libtorch messages surface as JS Errors (no C++ stack), bad JS arguments name the
// argument, use after dispose is a clear error, and nothing crashes the process.
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { native } from '../../lib/addon/binding.js';

describe('errors', () => {
  it('libtorch errors carry libtorch messages without a C++ stack', () => {
    const a = r.ones([2, 3]);
    let msg = '';
    try {
      a.matmul(a);
    } catch (e) {
      expect(e).toBeInstanceOf(Error);
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 2x3\)/);
    expect(msg).not.toMatch(/Exception raised from|frame #|\.cpp:\d+/);
  });

  it('shape errors from nn ops', () => {
    expect(() => r.conv2d(r.ones([1, 3, 8, 8]), r.ones([4, 2, 3, 3]))).toThrow(/conv2d: .*expected input\[1, 3, 8, 8\] to have 2 channels/);
    expect(() => r.crossEntropy(r.ones([4, 3]), r.tensor([0, 1], { dtype: 'int64' }))).toThrow(
      /crossEntropy: Expected input batch_size \(4\) to match target batch_size \(2\)/,
    );
  });

  it('wrong argument types name the argument', () => {
    expect(() => native.add(r.ones([1])._h, 'x', 1)).toThrow(TypeError);
    expect(() => native.add(r.ones([1])._h, 'x', 1)).toThrow("add: argument 'other' must be a Tensor or a number, got string");
    expect(() => native.add(r.ones([1])._h, 12345, 1)).toThrow("add: argument 'other' must be a Tensor or a number, got number");
    expect(() => native.add(r.ones([1])._h, ['x'], 1)).toThrow(
      "add: argument 'other' must be a Tensor or a boxed scalar [number], got array",
    );
    expect(() => native.conv2d({}, r.ones([1, 1, 1, 1])._h, null, [1, 1], [0, 0], [1, 1], 1)).toThrow(
      "conv2d: argument 'input' must be a Tensor, got object",
    );
    expect(() => native.reshape(r.ones([4])._h, [2, 'a'])).toThrow("reshape: argument 'shape' must hold integers, element 1 is string");
    expect(() => native.narrow(r.ones([4])._h, 0, 1.5, 1)).toThrow("narrow: argument 'start' must be an integer");
    expect(() => r.zeros([2], { dtype: 'float8' as never })).toThrow(/unknown dtype 'float8'/);
    expect(() => r.zeros([2], { device: 'tpu' as never })).toThrow(/unknown device 'tpu'/);
    expect(() => r.tensor([[1, 2], [3]])).toThrow(/ragged nested array: element at data\[1\] has length 1, expected 2/);
    expect(() => r.tensor(new Float32Array(4), { shape: [5] })).toThrow(/holds 16 bytes, shape needs 20/);
  });

  it('dtype and device mismatches are errors', () => {
    expect(() => r.ones([2]).add_(r.ones([2], { dtype: 'float64' }).mul(1e300).mul(1e300))).not.toThrow();
    expect(() => r.ones([2], { dtype: 'int64' }).add_(r.ones([2]).mul(0.5))).toThrow(
      /add_: result type Float can't be cast to the desired output type Long/,
    );
    if (!r.cuda.isAvailable()) expect(() => r.ones([2], { device: 'cuda' })).toThrow(/zeros|ones/);
  });

  it('use after dispose is a clear error, never a crash', () => {
    const t = r.ones([3]);
    t.dispose();
    expect(() => t.add(1)).toThrow("add: argument 'input' is a disposed Tensor (used after dispose())");
    expect(() => t.shape).toThrow(/disposed Tensor/);
    expect(() => r.cat([r.ones([1]), t])).toThrow(/element 1 is a disposed Tensor/);
    expect(t.disposed).toBe(true);
    t.dispose(); // double dispose is harmless
  });

  it('autograd misuse', () => {
    expect(() => r.ones([2]).sum().backward()).toThrow(/does not require grad/);
    const x = r.ones([2]).requiresGrad_(true);
    expect(() => x.mul(2).backward()).toThrow(/needs a scalar output/);
    const y = x.mul(x).sum();
    y.backward();
    expect(() => y.backward()).toThrow(/Trying to backward through the graph a second time/);
    expect(() => x.add_(1)).toThrow(/a leaf Variable that requires grad is being used in an in-place operation/);
  });

  it('item() on many elements and out-of-range indices', () => {
    expect(() => r.ones([2]).item()).toThrow(/item\(\) needs a tensor with one element, this one has 2/);
    expect(() => r.ones([2]).select(0, 5)).toThrow(/select: select\(\): index 5 out of range/);
    expect(() => r.ones([2, 2]).reshape(3)).toThrow(/shape '\[3\]' is invalid for input of size 4/);
  });
});
