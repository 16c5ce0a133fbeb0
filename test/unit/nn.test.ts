import { describe, expect, it } from 'vitest';
import { Tensor, arange, crossEntropy, manualSeed, memory, nn, noGrad, ones, randn, scope, tensor, zeros } from '../../lib/index.js';

const {
  Module,
  Conv2d,
  BatchNorm2d,
  Linear,
  ReLU,
  Sequential,
  ModuleList,
  Identity,
  Flatten,
  Dropout,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,
  init,
} = nn;

const close = (a: number[], b: number[], tol = 1e-6): void => {
  expect(a.length).toBe(b.length);
  a.forEach((v, i) => expect(Math.abs(v - b[i]), `element ${i}: ${v} vs ${b[i]}`).toBeLessThan(tol));
};
const flat = (t: Tensor): number[] => Array.from(t.toTypedArray() as Float32Array, Number);

/** A small network with a nested container, to test names and traversal. */
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

describe('nn.Module', () => {
  it('registers parameters, buffers and children by name, in PyTorch order', () => {
    const m = new Net();
    expect(Object.keys(m.stateDict())).toEqual([
      'conv.weight',
      'bn.weight',
      'bn.bias',
      'bn.running_mean',
      'bn.running_var',
      'bn.num_batches_tracked',
      'head.2.weight',
      'head.2.bias',
    ]);
    expect([...m.namedParameters()].map(([n]) => n)).toEqual(['conv.weight', 'bn.weight', 'bn.bias', 'head.2.weight', 'head.2.bias']);
    expect([...m.namedBuffers()].map(([n]) => n)).toEqual(['bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked']);
    expect([...m.namedChildren()].map(([n]) => n)).toEqual(['conv', 'bn', 'head']);
    expect([...m.namedModules()].map(([n]) => n)).toEqual(['', 'conv', 'bn', 'head', 'head.0', 'head.1', 'head.2']);
    expect(m.modules().length).toBe(7);
    expect(m.children().length).toBe(3);
    expect(m.numParameters()).toBe(4 * 3 * 9 + 4 + 4 + 4 * 2 + 2);
    expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
    expect(m.buffers().some((b) => b.requiresGrad)).toBe(false);
    // each module knows its qualified name, which errors use
    expect((m.head.at(2) as InstanceType<typeof Linear>).label()).toBe('head.2 (Linear)');
    const nbt = m.stateDict()['bn.num_batches_tracked'];
    expect(nbt.dtype).toBe('int64');
    expect(nbt.shape).toEqual([]);
    expect(() => m.registerParameter('conv', zeros([1]))).toThrow(/'conv' is already used/);
    // re-registering a name replaces the child and the field that held it
    const oldHead = m.head;
    const newHead = m.registerModule('head', new Sequential(new Flatten(), new Linear(4 * 6 * 6, 3)));
    expect(m.head).toBe(newHead);
    expect(m.head).not.toBe(oldHead);
    expect(m.call(randn([1, 3, 6, 6])).shape).toEqual([1, 3]);
    expect((newHead.at(1) as InstanceType<typeof Linear>).label()).toBe('head.1 (Linear)');
    expect(() => m.registerModule('a.b', new ReLU())).toThrow(/invalid name 'a.b'/);
  });

  it('train()/eval(), apply(), requiresGrad_() and zeroGrad()', () => {
    const m = new Net();
    expect(m.modules().every((x) => x.training)).toBe(true);
    m.eval();
    expect(m.modules().some((x) => x.training)).toBe(false);
    m.train();
    expect(m.bn.training).toBe(true);
    const seen: string[] = [];
    m.apply((x) => seen.push(x.typeName));
    expect(seen).toEqual(['Conv2d', 'BatchNorm2d', 'AdaptiveAvgPool2d', 'Flatten', 'Linear', 'Sequential', 'Net']);

    const x = randn([2, 3, 6, 6]);
    const loss = m.call(x).sum();
    loss.backward();
    const g = m.conv.weight.grad!;
    expect(g.abs().sum().item()).toBeGreaterThan(0);
    m.zeroGrad(false);
    const g0 = m.conv.weight.grad!;
    expect(g0.abs().sum().item()).toBe(0);
    m.zeroGrad();
    expect(m.conv.weight.grad).toBeNull();

    m.requiresGrad_(false);
    expect(m.parameters().some((p) => p.requiresGrad)).toBe(false);
    expect(m.numParameters({ trainable: true })).toBe(0);
    m.requiresGrad_(true);
    expect(m.numParameters({ trainable: true })).toBe(m.numParameters());
  });

  it('to(dtype) casts floating tensors only and keeps parameters trainable', () => {
    const m = new Net();
    const before = m.conv.weight.sum().item() as number;
    m.to('float64');
    expect(m.conv.weight.dtype).toBe('float64');
    expect(m.bn.runningVar!.dtype).toBe('float64');
    expect(m.bn.numBatchesTracked!.dtype).toBe('int64');
    expect(m.conv.weight.requiresGrad).toBe(true);
    expect(m.conv.weight.isLeaf).toBe(true);
    expect(Math.abs((m.conv.weight.sum().item() as number) - before)).toBeLessThan(1e-5);
    expect(m.call(randn([1, 3, 4, 4], { dtype: 'float64' })).dtype).toBe('float64');
    expect(() => m.to('int64')).toThrow(/floating dtype/);
  });

  it('forward hooks and call()', () => {
    const lin = new Linear(3, 2);
    const seen: number[][] = [];
    const h = lin.registerForwardHook((_m, _x, y) => seen.push(y.shape));
    lin.call(ones([4, 3]));
    h.remove();
    lin.call(ones([4, 3]));
    expect(seen).toEqual([[4, 2]]);
    expect(() => new ModuleList([lin]).call(ones([1, 3]))).toThrow(/ModuleList has no forward/);
  });

  it('prints like PyTorch', () => {
    const s = new Net().toString();
    expect(s).toContain('(conv): Conv2d(3, 4, kernelSize=[3, 3], stride=[1, 1], padding=[1, 1], bias=false)');
    expect(s).toContain('(2): Linear(inFeatures=4, outFeatures=2)');
  });
});

describe('stateDict / loadStateDict', () => {
  it('round-trips between two models, values independent of the returned references', () => {
    manualSeed(1);
    const a = new Net();
    manualSeed(2);
    const b = new Net();
    expect(a.conv.weight.equal(b.conv.weight)).toBe(false);
    const sd = a.stateDict();
    const res = b.loadStateDict(sd);
    expect(res).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(a.conv.weight.equal(b.conv.weight)).toBe(true);
    expect(b.conv.weight.requiresGrad).toBe(true);
    // disposing the returned references leaves the model intact
    for (const t of Object.values(sd)) t.dispose();
    expect(a.conv.weight.disposed).toBe(false);
    expect(a.conv.weight.shape).toEqual([4, 3, 3, 3]);
  });

  it('fails on missing, unexpected and mis-shaped keys, naming them, and changes nothing', () => {
    const m = new Net();
    const snapshot = m.stateDict();
    const sd = m.stateDict();
    delete sd['bn.running_var'];
    sd['extra.weight'] = zeros([3]);
    sd['head.2.weight'] = zeros([5, 4]);
    sd['conv.weight'] = ones([4, 3, 3, 3]); // valid, but must not be copied since the load fails
    let msg = '';
    try {
      m.loadStateDict(sd);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain('missing keys (1): bn.running_var [4]');
    expect(msg).toContain('unexpected keys (1): extra.weight [3]');
    expect(msg).toContain('head.2.weight: model [2, 4], state dict [5, 4]');
    expect(msg).toContain('nothing was loaded');
    expect(m.conv.weight.equal(snapshot['conv.weight'])).toBe(true);
    expect(m.conv.weight.sum().item()).not.toBe(108);

    // non-strict: missing/unexpected are reported, shape mismatches still throw
    const sd2 = m.stateDict();
    delete sd2['bn.running_var'];
    sd2['extra.weight'] = zeros([3]);
    sd2['conv.weight'] = ones([4, 3, 3, 3]);
    const r = m.loadStateDict(sd2, { strict: false });
    expect(r).toEqual({ missingKeys: ['bn.running_var'], unexpectedKeys: ['extra.weight'] });
    expect(m.conv.weight.sum().item()).toBe(108);
    sd2['head.2.weight'] = zeros([5, 4]);
    expect(() => m.loadStateDict(sd2, { strict: false })).toThrow(/head\.2\.weight: model \[2, 4\], state dict \[5, 4\]/);
  });

  it('rejects integer tensors for float parameters and non-tensors, tolerates a missing num_batches_tracked', () => {
    const m = new Net();
    const sd: Record<string, unknown> = m.stateDict();
    sd['bn.weight'] = tensor([1, 2, 3, 4], { dtype: 'int64' });
    sd['bn.bias'] = [0, 0, 0, 0];
    expect(() => m.loadStateDict(sd)).toThrow(/bn\.weight: model float32, state dict int64[\s\S]*bn\.bias: expected a Tensor/);
    const ok = m.stateDict();
    delete ok['bn.num_batches_tracked'];
    ok['bn.weight'] = ok['bn.weight'].to('float64').mul(2); // floating dtypes convert, as PyTorch
    expect(m.loadStateDict(ok).missingKeys).toEqual([]);
    expect(m.bn.weight!.sum().item()).toBe(8);
    const prefixed = Object.fromEntries(Object.entries(m.stateDict()).map(([k, v]) => [`module.${k}`, v]));
    expect(() => m.loadStateDict(prefixed)).toThrow(/'module\.' prefix/);
  });
});

describe('layers', () => {
  it('default initialisation equals PyTorch after the same seed', () => {
    // numbers from torch 2.13: torch.manual_seed(0); nn.Conv2d(3, 4, 3); nn.Linear(5, 3)
    manualSeed(0);
    const c = new Conv2d(3, 4, 3);
    close(flat(c.weight).slice(0, 4), [-0.0014408392598852515, 0.10323861986398697, -0.15839511156082153, -0.14163152873516083]);
    expect(c.weight.to('float64').sum().item()).toBeCloseTo(-0.7475195649312809, 6);
    close(flat(c.bias!), [-0.01060392428189516, 0.028895428404211998, -0.07881414145231247, 0.1141955703496933]);
    const l = new Linear(5, 3);
    close(flat(l.weight).slice(0, 4), [-0.27214697003364563, 0.40578824281692505, 0.306475430727005, -0.37712758779525757]);
    close(flat(l.bias!), [-0.21784371137619019, -0.15645024180412292, -0.3665459454059601]);
    const bn = new BatchNorm2d(3);
    expect(bn.weight!.toArray()).toEqual([1, 1, 1]);
    expect(bn.bias!.toArray()).toEqual([0, 0, 0]);
    expect(bn.runningVar!.toArray()).toEqual([1, 1, 1]);
    expect(new Conv2d(4, 8, 3, { groups: 2 }).weight.shape).toEqual([8, 2, 3, 3]);
    expect(() => new Conv2d(3, 8, 3, { groups: 2 })).toThrow(/divisible by groups/);
  });

  it('BatchNorm2d: momentum 0.1 and cumulative (null) running stats, num_batches_tracked', () => {
    // numbers from torch 2.13 for the same two batches
    const x1 = arange(16).to('float32').reshape(2, 2, 2, 2);
    const x2 = x1.mul(2).add(1);
    const cum = new BatchNorm2d(2, { momentum: null });
    cum.call(x1);
    cum.call(x2);
    close(flat(cum.runningMean!), [8.75, 14.75], 1e-5);
    close(flat(cum.runningVar!), [49.28571319580078, 49.28571319580078], 1e-4);
    expect(cum.numBatchesTracked!.item()).toBe(2);
    const mom = new BatchNorm2d(2);
    mom.call(x1);
    mom.call(x2);
    close(flat(mom.runningMean!), [1.6950000524520874, 2.8550000190734863], 1e-5);
    close(flat(mom.runningVar!), [10.469999313354492, 10.469999313354492], 1e-4);
    // eval mode uses (and keeps) the running statistics
    mom.eval();
    const y = mom.call(x1);
    expect(mom.numBatchesTracked!.item()).toBe(2);
    const expected = (0 - 1.6950000524520874) / Math.sqrt(10.469999313354492 + 1e-5);
    expect(y.flatten().select(0, 0).item()).toBeCloseTo(expected, 5);
    // without running stats: batch statistics always, no buffers in the state dict
    const free = new BatchNorm2d(2, { trackRunningStats: false, affine: false });
    expect(Object.keys(free.stateDict())).toEqual([]);
    free.eval();
    expect(Math.abs(free.call(x1).mean().item() as number)).toBeLessThan(1e-6);
  });

  it('pooling, dropout, flatten and identity', () => {
    const x = arange(32).to('float32').reshape(1, 2, 4, 4);
    expect(new MaxPool2d(2).call(x).toArray()).toEqual([
      [
        [
          [5, 7],
          [13, 15],
        ],
        [
          [21, 23],
          [29, 31],
        ],
      ],
    ]);
    expect(new AvgPool2d(2).call(x).flatten().toArray()).toEqual([2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5]);
    expect(new AdaptiveAvgPool2d([1, 1]).call(x).flatten().toArray()).toEqual([7.5, 23.5]);
    expect(new Flatten().call(x).shape).toEqual([1, 32]);
    const id = new Identity().call(x);
    expect(id).not.toBe(x);
    expect(id.equal(x)).toBe(true);
    const d = new Dropout(0.5);
    // 10^4 draws with p = 0.5: the kept fraction has standard deviation 0.005, so +-0.05 is 10 sigma
    // (a correct dropout misses it with probability below 1e-20, whatever the seed or CPU)
    const big = ones([10000]);
    const kept = (d.call(big).ne(0).sum().item() as number) / 10000;
    expect(kept).toBeGreaterThan(0.45);
    expect(kept).toBeLessThan(0.55);
    d.eval();
    expect(d.call(big).equal(big)).toBe(true);
    expect(() => new Dropout(2)).toThrow(/\[0, 1\]/);
  });

  it('bad inputs name the layer and the shapes', () => {
    const m = new Net();
    expect(() => m.call(randn([2, 1, 8, 8]))).toThrow('conv (Conv2d): expected input [N, 3, H, W], got [2, 1, 8, 8]');
    expect(() => m.call(randn([3, 8, 8]))).toThrow(/conv \(Conv2d\): expected input \[N, 3, H, W\], got \[3, 8, 8\] \(a single image\?/);
    expect(() => m.call(randn([1, 3, 8, 8], { dtype: 'float64' }))).toThrow(
      /conv \(Conv2d\): input is float64 but the layer's weights are float32/,
    );
    expect(() => new BatchNorm2d(4).call(randn([2, 3, 4, 4]))).toThrow('BatchNorm2d: expected input [N, 4, H, W], got [2, 3, 4, 4]');
    expect(() => m.head.call(randn([2, 5, 1, 1]))).toThrow('head.2 (Linear): expected input [..., 4], got [2, 5]');
    // native errors are re-thrown with the layer's name
    expect(() => new MaxPool2d(3).call(randn([1, 1, 2, 2]))).toThrow(/^MaxPool2d: /);
    expect(() => new Conv2d(3, 4, 3).call('x' as unknown as Tensor)).toThrow(/Conv2d: expected a Tensor input/);
  });
});

describe('nn.init', () => {
  it('computes PyTorch fans and gains', () => {
    expect(init.calculateFanInAndFanOut(zeros([8, 4, 3, 3]))).toEqual({ fanIn: 36, fanOut: 72 });
    expect(() => init.calculateFanInAndFanOut(zeros([3]))).toThrow(/fewer than 2 dimensions/);
    expect(init.calculateGain('relu')).toBeCloseTo(Math.SQRT2, 12);
    expect(init.calculateGain('leaky_relu')).toBeCloseTo(1.4141428569978354, 12);
    expect(init.calculateGain('leaky_relu', 0.2)).toBeCloseTo(1.3867504905630728, 12);
    expect(init.calculateGain('tanh')).toBeCloseTo(5 / 3, 12);
    expect(init.calculateGain('selu')).toBe(0.75);
    expect(init.calculateGain('conv2d')).toBe(1);
  });

  it('draws the same numbers as torch.nn.init after the same seed', () => {
    // torch.manual_seed(1), then in sequence on fresh tensors (torch 2.13)
    manualSeed(1);
    const kn = init.kaimingNormal_(zeros([8, 4, 3, 3]), { mode: 'fanOut', nonlinearity: 'relu' });
    close(flat(kn).slice(0, 3), [-0.25426599383354187, -0.12503863871097565, -0.10899682343006134]);
    expect(kn.to('float64').pow(2).sum().item()).toBeCloseTo(8.852663896124518, 5);
    close(
      flat(init.kaimingUniform_(zeros([6, 5]), { a: 0.2 })).slice(0, 3),
      [-0.20349133014678955, 0.21682710945606232, 0.03973483294248581],
    );
    close(flat(init.xavierUniform_(zeros([6, 5]), 2)).slice(0, 3), [0.8513184785842896, 0.5454114079475403, -0.2923843264579773]);
    close(
      flat(init.xavierNormal_(zeros([6, 5]), init.calculateGain('tanh'))).slice(0, 3),
      [0.20867645740509033, -0.29418107867240906, -0.06821373105049133],
    );
  });

  it('fills parameters in place even when they require grad, with the right spread', () => {
    const w = zeros([256, 128, 3, 3], { requiresGrad: true });
    init.kaimingNormal_(w, { mode: 'fanIn', nonlinearity: 'relu' });
    const std = w.std().item() as number;
    expect(Math.abs(std - Math.sqrt(2 / (128 * 9)))).toBeLessThan(0.002);
    init.constant_(w, 0.5);
    expect(w.mean().item()).toBe(0.5);
    init.ones_(w);
    init.zeros_(w);
    expect(w.abs().sum().item()).toBe(0);
    init.uniform_(w, -2, -1);
    expect(w.max().item()).toBeLessThanOrEqual(-1);
    init.normal_(w, 3, 0.1);
    expect(Math.abs((w.mean().item() as number) - 3)).toBeLessThan(0.01);
    expect(w.requiresGrad).toBe(true);
    expect(w.isLeaf).toBe(true);
  });
});

describe('memory', () => {
  it('a forward and backward inside scope() leaves no tensor behind', () => {
    const m = new Net();
    const x = randn([2, 3, 8, 8]);
    const target = tensor([0, 1], { dtype: 'int64' });
    const step = (): number =>
      scope(() => {
        const loss = crossEntropy(m.call(x), target);
        loss.backward();
        return loss.item() as number;
      });
    step(); // warm up anything cached lazily
    m.zeroGrad();
    const base = memory().tensors;
    const l = step();
    expect(Number.isFinite(l)).toBe(true);
    expect(memory().tensors).toBe(base);
    noGrad(() =>
      scope(() => {
        m.call(x);
      }),
    );
    expect(memory().tensors).toBe(base);
  });
});
