// A failure gets the same error class whether the JavaScript layer catches it first or libtorch does:
// the layers' own input checks (shape, dtype, device) throw what the native op would have thrown for
// the same input, and errors from the native op keep their class when a layer adds its name.
import { describe, expect, it } from 'vitest';
import { DeviceError, DtypeError, ShapeError, Tensor, cifarResnet, conv2d, linear, nn, ones, randn } from '../../lib/index.js';

const { Conv2d, Linear, BatchNorm2d, MaxPool2d, init } = nn;

function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

describe('error classes: the JS checks agree with libtorch', () => {
  it('a wrong channel count: ShapeError from the Conv2d layer and from the native conv2d', () => {
    const conv = new Conv2d(3, 4, 3);
    const x = ones([1, 2, 8, 8]);
    expect(errorOf(() => conv.forward(x))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => conv2d(x, conv.weight))).toBeInstanceOf(ShapeError);
  });

  it('a wrong feature count: ShapeError from Linear and from the native linear', () => {
    const lin = new Linear(4, 3);
    const x = ones([2, 5]);
    expect(errorOf(() => lin.call(x))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => linear(x, lin.weight))).toBeInstanceOf(ShapeError);
  });

  it('a wrong rank or channel count: ShapeError from BatchNorm2d, the pools and the residual blocks', () => {
    expect(errorOf(() => new BatchNorm2d(4).call(ones([2, 3, 4, 4])))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => new MaxPool2d(2).call(ones([4, 4])))).toBeInstanceOf(ShapeError);
    const m = cifarResnet(20);
    expect(errorOf(() => m.layer2.call(randn([1, 32, 8, 8])))).toBeInstanceOf(ShapeError);
  });

  it('an input of another dtype: DtypeError from the layer and from the native op', () => {
    const conv = new Conv2d(3, 4, 3);
    const x = ones([1, 3, 8, 8], { dtype: 'float64' });
    const layer = errorOf(() => conv.call(x));
    expect(layer).toBeInstanceOf(DtypeError);
    expect(layer.message).toMatch(/input is float64 but the layer's weights are float32/);
    expect(errorOf(() => conv2d(x, conv.weight))).toBeInstanceOf(DtypeError);
  });

  it("a native error inside a layer keeps its class and gains the layer's name", () => {
    const conv = new Conv2d(3, 4, 3);
    const e = errorOf(() => conv.call(ones([1, 3, 2, 2]))); // kernel larger than the input
    expect(e).toBeInstanceOf(ShapeError);
    expect(e.message).toMatch(/^Conv2d: conv2d: Calculated padded input size per channel: \(2 x 2\)\. Kernel size: \(3 x 3\)/);
    expect((e as Error & { cause?: unknown }).cause).toBeInstanceOf(ShapeError);
  });

  it('fan-in of a tensor with fewer than 2 dimensions is a ShapeError (PyTorch: fan in and fan out cannot be computed)', () => {
    expect(errorOf(() => init.kaimingUniform_(ones([3])))).toBeInstanceOf(ShapeError);
  });

  it('module.to() with a dtype or a device that cannot be: DtypeError, DeviceError', () => {
    const m = new Linear(2, 2);
    expect(errorOf(() => m.to('int32'))).toBeInstanceOf(DtypeError);
    expect(errorOf(() => m.to({ device: 'gpu' as 'cpu' }))).toBeInstanceOf(DeviceError);
    expect(errorOf(() => ones([1]).to('gpu' as 'cpu'))).toBeInstanceOf(DtypeError); // not a device name: read as a dtype
    expect(errorOf(() => ones([1]).to({ device: 'gpu' as 'cpu' }))).toBeInstanceOf(DeviceError);
  });

  it('Tensor.size(dim) out of range is a ShapeError, as the native dimension checks', () => {
    const t = ones([2, 3]);
    expect(errorOf(() => t.size(2))).toBeInstanceOf(ShapeError);
    expect(errorOf(() => t.transpose(0, 2))).toBeInstanceOf(ShapeError);
    expect(t instanceof Tensor).toBe(true);
  });
});
