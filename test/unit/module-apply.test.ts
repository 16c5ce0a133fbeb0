// Module._apply (PyTorch's traversal: every parameter, gradient and buffer, converted in place) and the
// conversions built on it: to(device/dtype) and to({memoryFormat}).
import { describe, expect, it } from 'vitest';
import { DeviceError, DtypeError, Tensor, crossEntropy, manualSeed, nn, optim, randn, scope, tensor } from '../../lib/index.js';

const { Module, Conv2d, BatchNorm2d, Linear, Sequential, Flatten, AdaptiveAvgPool2d } = nn;

const flat = (t: Tensor): number[] => Array.from(t.toTypedArray() as Float32Array | Float64Array, Number);

class Net extends Module {
  readonly conv: InstanceType<typeof Conv2d>;
  readonly bn: InstanceType<typeof BatchNorm2d>;
  readonly head: InstanceType<typeof Sequential>;
  constructor() {
    super();
    this.conv = this.registerModule('conv', new Conv2d(3, 4, 3, { padding: 1, bias: false }));
    this.bn = this.registerModule('bn', new BatchNorm2d(4));
    this.head = this.registerModule('head', new Sequential(new AdaptiveAvgPool2d(1), new Flatten(), new Linear(4, 2)));
  }
  override forward(x: Tensor): Tensor {
    return scope(() => this.head.call(this.bn.call(this.conv.call(x)).relu()));
  }
}

describe('Module._apply', () => {
  it('visits children before parents, each module once, parameters then buffers, and gradients after their parameter', () => {
    const shared = new Linear(2, 2);
    const root = new Sequential(shared, new BatchNorm2d(1), shared);
    shared.weight.grad = tensor([
      [1, 2],
      [3, 4],
    ]);
    const names = new Map<Tensor, string>();
    for (const [n, t] of root.namedParameters()) names.set(t, n);
    for (const [n, t] of root.namedBuffers()) names.set(t, n);
    const seen: string[] = [];
    root._apply((t) => {
      seen.push(names.get(t) ?? `grad ${JSON.stringify(t.toArray())}`);
      return t;
    });
    expect(seen).toEqual([
      '0.weight',
      'grad [[1,2],[3,4]]',
      '0.bias',
      '1.weight',
      '1.bias',
      '1.running_mean',
      '1.running_var',
      '1.num_batches_tracked',
    ]);
  });

  it('replaces data in place: the tensor objects stay, the values are fn(t), and fn leaves tensors it returns as they are', () => {
    const m = new Net();
    const params = m.parameters();
    const before = params.map(flat);
    m.conv.weight.grad = m.conv.weight.mul(0).add(0.5);
    m._apply((t) => (t.dtype === 'float32' ? t.mul(2) : t));
    expect(m.parameters()).toEqual(params); // same objects
    m.parameters().forEach((p, i) => expect(flat(p)).toEqual(before[i].map((v) => Math.fround(v * 2))));
    expect(flat(m.conv.weight.grad!)).toEqual(new Array(4 * 3 * 3 * 3).fill(1));
    expect(m.bn.numBatchesTracked!.dtype).toBe('int64');
    expect(m.conv.weight.requiresGrad && m.conv.weight.isLeaf).toBe(true);
  });

  it('an optimizer made before the conversion keeps stepping the live parameters', () => {
    manualSeed(1);
    const m = new Linear(3, 2);
    const opt = new optim.SGD(m.parameters(), { lr: 0.1 });
    m.to('float64');
    const w0 = flat(m.weight);
    const x = randn([4, 3], { dtype: 'float64' });
    const loss = crossEntropy(m.call(x), tensor([0, 1, 1, 0], { dtype: 'int64' }));
    loss.backward();
    const g = flat(m.weight.grad!);
    opt.step();
    expect(m.weight.dtype).toBe('float64');
    flat(m.weight).forEach((v, i) => expect(v).toBeCloseTo(w0[i] - 0.1 * g[i], 12));
  });
});

describe('Module.to', () => {
  it("to({memoryFormat: 'channelsLast'}) lays the 4-D weights out as NHWC in place, with the same values and outputs", () => {
    manualSeed(2);
    const m = new Net();
    m.eval();
    const w = m.conv.weight;
    const values = flat(w);
    const x = randn([2, 3, 5, 5]);
    const want = flat(m.call(x));
    expect(w.stride()).toEqual([27, 9, 3, 1]);
    m.to({ memoryFormat: 'channelsLast' });
    expect(m.conv.weight).toBe(w);
    // [O, I, H, W] = [4, 3, 3, 3] in NHWC order: strides [H*W*I, 1, W*I, I]
    expect(w.stride()).toEqual([27, 1, 9, 3]);
    expect(w.isContiguous('channelsLast')).toBe(true);
    expect(flat(w)).toEqual(values);
    expect(m.head.parameters()[0].stride()).toEqual([4, 1]); // 2-D weights keep their layout
    const got = flat(m.call(x));
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
    m.to({ memoryFormat: 'contiguous' });
    expect(w.stride()).toEqual([27, 9, 3, 1]);
    expect(flat(w)).toEqual(values);
  });

  it('gradients follow their parameters', () => {
    const m = new Linear(2, 1);
    m.weight.grad = tensor([[0.25, -0.5]]);
    m.to({ dtype: 'float64', memoryFormat: 'channelsLast' });
    expect(m.weight.grad!.dtype).toBe('float64');
    expect(flat(m.weight.grad!)).toEqual([0.25, -0.5]);
  });

  it('refuses what it cannot do with the error class of the failure, changing nothing', () => {
    const m = new Net();
    const w = flat(m.conv.weight);
    expect(() => m.to('int64')).toThrow(DtypeError);
    expect(() => m.to({ device: 'tpu' as 'cpu' })).toThrow(DeviceError);
    expect(() => m.to({ memoryFormat: 'nhwc' as 'channelsLast' })).toThrow(TypeError);
    expect(m.conv.weight.dtype).toBe('float32');
    expect(flat(m.conv.weight)).toEqual(w);
  });
});
