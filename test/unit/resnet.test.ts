import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BasicBlock,
  Bottleneck,
  PreActBlock,
  PreActBottleneck,
  ShortcutA,
  Tensor,
  arange,
  cifarPlain,
  cifarResnet,
  createModel,
  crossEntropy,
  cuda,
  getModelInfo,
  listModels,
  manualSeed,
  memory,
  modelNames,
  nn,
  noGrad,
  preactResnet,
  projectionShortcut,
  randn,
  relu,
  resnet101,
  resnet152,
  resnet18,
  resnet20,
  resnet34,
  resnet50,
  resnext50_32x4d,
  scope,
  summary,
  summaryData,
  tensor,
  wideResnet50_2,
} from '../../lib/index.js';
import { cudaWanted, expectClose, fixtures } from '../support/helpers.js';

const keysJson: Record<string, { numClasses: number; params: number; keys: number; first: string[]; last: string[]; sha256: string }> =
  JSON.parse(fs.readFileSync(path.join(fixtures, 'resnet', 'keys.json'), 'utf8'));
const keyLine = (k: string, t: Tensor): string => `${k}:[${t.shape.join(', ')}]`;

describe('every factory: parameter counts and state-dict keys as the PyTorch references', () => {
  // counts stated in the issue (torchvision's, He et al.'s)
  const stated: Record<string, number> = {
    resnet18: 11_689_512,
    resnet34: 21_797_672,
    resnet50: 25_557_032,
    resnet101: 44_549_160,
    resnet152: 60_192_808,
    resnext50_32x4d: 25_028_904,
    wide_resnet50_2: 68_883_240,
    resnet20: 269_722,
    resnet110: 1_727_962,
    resnet1202: 19_421_274,
    preact164: 1_703_258,
    preact1001: 10_327_706,
  };
  it('the registry lists every model of the issue, and the fixture covers each', () => {
    const names = modelNames();
    for (const n of [
      'resnet18',
      'resnet34',
      'resnet50',
      'resnet101',
      'resnet152',
      'resnext50_32x4d',
      'wide_resnet50_2',
      'resnet20',
      'resnet32',
      'resnet44',
      'resnet56',
      'resnet110',
      'resnet1202',
      'plain20',
      'plain56',
      'plain110',
      'preact164',
      'preact1001',
      'preact_basic110',
    ]) {
      expect(names).toContain(n);
    }
    expect(Object.keys(keysJson).sort()).toEqual([...names].sort());
    expect(listModels().every((m) => m.description.length > 10)).toBe(true);
    expect(getModelInfo('resnet56').family).toBe('cifar');
    expect(() => createModel('resnet19')).toThrow(/unknown model 'resnet19'; known models: resnet18, resnet34/);
  });

  it.each(Object.keys(keysJson))('%s', (name) => {
    const want = keysJson[name];
    const model = createModel(name);
    try {
      expect(model.numParameters()).toBe(want.params);
      if (stated[name]) expect(model.numParameters()).toBe(stated[name]);
      const sd = model.stateDict();
      const lines = Object.entries(sd).map(([k, t]) => keyLine(k, t));
      expect(lines.length).toBe(want.keys);
      expect(lines.slice(0, 3)).toEqual(want.first);
      expect(lines.slice(-3)).toEqual(want.last);
      expect(crypto.createHash('sha256').update(lines.join('\n')).digest('hex')).toBe(want.sha256);
      for (const t of Object.values(sd)) t.dispose();
    } finally {
      model.dispose();
    }
  });

  it('direct factories agree with the registry', () => {
    const direct: [string, () => nn.Module][] = [
      ['resnet18', () => resnet18()],
      ['resnet34', () => resnet34()],
      ['resnet20', () => resnet20()],
      ['resnet56', () => cifarResnet(56)],
      ['plain32', () => cifarPlain(32)],
      ['preact164', () => preactResnet(164)],
      ['preact_basic56', () => preactResnet(56, { block: 'basic' })],
    ];
    for (const [name, make] of direct) {
      const m = make();
      expect(m.numParameters(), name).toBe(keysJson[name].params);
      m.dispose();
    }
    // the biggest ones only by count (their keys are checked through the registry above)
    expect(typeof resnet50 === 'function' && typeof resnet101 === 'function' && typeof resnet152 === 'function').toBe(true);
    expect(typeof resnext50_32x4d === 'function' && typeof wideResnet50_2 === 'function').toBe(true);
  });
});

describe('small inputs: numClasses and inChannels', () => {
  it.each(['resnet18', 'resnet50', 'resnext50_32x4d', 'resnet20', 'plain20', 'preact164', 'preact_basic20'])(
    '%s on 1x28x28 and 3x32x32',
    (name) => {
      const gray = createModel(name, { numClasses: 7, inChannels: 1 });
      const y = noGrad(() => gray.call(randn([2, 1, 28, 28])));
      expect(y.shape).toEqual([2, 7]);
      expect(y.isfinite().all().item()).toBe(true);
      const rgb = createModel(name, { numClasses: 5 });
      scope(() => {
        const x = randn([2, 3, 32, 32]).requiresGrad_(true);
        crossEntropy(rgb.call(x), tensor([1, 4], { dtype: 'int64' })).backward();
        expect((x.grad!.abs().sum().item() as number) > 0).toBe(true);
      });
      gray.dispose();
      rgb.dispose();
    },
  );

  it("the 'small' stem: 3x3 stride-1 conv1 and no max pooling, same keys", () => {
    const m = resnet18({ stem: 'small', numClasses: 10 });
    expect(m.conv1.weight.shape).toEqual([64, 3, 3, 3]);
    const d = summaryData(m, [3, 32, 32]);
    expect(d.rows.find((r) => r.name === 'layer4')!.outputShape).toEqual([1, 512, 4, 4]);
    expect(Object.keys(m.stateDict())).toEqual(Object.keys(resnet18({ numClasses: 10 }).stateDict()));
  });
});

describe('residual blocks', () => {
  it('BasicBlock: out = relu(F(x) + shortcut(x)), stride and option B projection', () => {
    manualSeed(3);
    const b = new BasicBlock(8, 16, { stride: 2, downsample: projectionShortcut(8, 16, 2) });
    expect(Object.keys(b.stateDict())).toEqual([
      'conv1.weight',
      'bn1.weight',
      'bn1.bias',
      'bn1.running_mean',
      'bn1.running_var',
      'bn1.num_batches_tracked',
      'conv2.weight',
      'bn2.weight',
      'bn2.bias',
      'bn2.running_mean',
      'bn2.running_var',
      'bn2.num_batches_tracked',
      'downsample.0.weight',
      'downsample.1.weight',
      'downsample.1.bias',
      'downsample.1.running_mean',
      'downsample.1.running_var',
      'downsample.1.num_batches_tracked',
    ]);
    b.eval();
    const x = randn([2, 8, 8, 8]);
    const y = b.call(x);
    expect(y.shape).toEqual([2, 16, 4, 4]);
    const manual = relu(b.residual(x).add(b.downsample!.call(x)));
    expectClose(y, manual, { atol: 1e-6, what: 'block output' });
    expect(y.min().item()).toBeGreaterThanOrEqual(0);
  });

  it('Bottleneck: widths, groups, stride on the 3x3 (torchvision v1.5)', () => {
    const b = new Bottleneck(256, 128, { stride: 2, downsample: projectionShortcut(256, 512, 2), groups: 32, baseWidth: 4 });
    expect(b.conv1.weight.shape).toEqual([256, 256, 1, 1]); // width = 128 * 4/64 * 32
    expect(b.conv2.weight.shape).toEqual([256, 8, 3, 3]);
    expect(b.conv2.stride).toEqual([2, 2]);
    expect(b.conv1.stride).toEqual([1, 1]);
    expect(b.conv3.weight.shape).toEqual([512, 256, 1, 1]);
    expect(noGrad(() => b.call(randn([2, 256, 8, 8]))).shape).toEqual([2, 512, 4, 4]);
    expect(() => new BasicBlock(8, 8, { groups: 2 })).toThrow(/BasicBlock only supports groups=1/);
  });

  it('option A shortcut: parameter-free subsample and zero-padded channels', () => {
    const s = new ShortcutA(16, 32, 2);
    expect(s.numParameters()).toBe(0);
    expect(Object.keys(s.stateDict())).toEqual([]);
    const x = arange(2 * 16 * 6 * 6)
      .to('float32')
      .reshape(2, 16, 6, 6);
    const y = s.call(x);
    expect(y.shape).toEqual([2, 32, 3, 3]);
    expect(y.narrow(1, 0, 8).abs().sum().item()).toBe(0);
    expect(y.narrow(1, 24, 8).abs().sum().item()).toBe(0);
    expect(y.narrow(1, 8, 16).equal(x.slice(2, 0, null, 2).slice(3, 0, null, 2))).toBe(true);
    expect(y.select(0, 1).select(0, 8).toArray()).toEqual([
      [576, 578, 580],
      [588, 590, 592],
      [600, 602, 604],
    ]);
    // the CIFAR ResNet uses it where the shape changes (no downsample parameters anywhere)
    const r = resnet20();
    expect(r.layer2.at(0)).toBeInstanceOf(BasicBlock);
    expect((r.layer2.at(0) as BasicBlock).downsample).toBeInstanceOf(ShortcutA);
    expect((r.layer1.at(0) as BasicBlock).downsample).toBeNull();
    expect(Object.keys(r.stateDict()).some((k) => k.includes('downsample'))).toBe(false);
    // option B instead: 1x1 conv + BN where the shape changes
    const rb = cifarResnet(20, { shortcut: 'B' });
    expect(Object.keys(rb.stateDict())).toContain('layer2.0.downsample.0.weight');
    expect(rb.numParameters()).toBe(269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64));
  });

  it('plain networks have no shortcut', () => {
    const p = cifarPlain(20);
    p.eval();
    const blk = p.layer1.at(0);
    expect(blk.typeName).toBe('PlainBlock');
    const x = randn([1, 16, 8, 8]);
    // with the last BN zeroed, a plain block outputs zeros while a residual block passes relu(x) through
    noGrad(() => nn.init.zeros_((blk as unknown as { bn2: nn.BatchNorm2d }).bn2.weight!));
    expect(blk.call(x).abs().sum().item()).toBe(0);
  });

  it('pre-activation blocks: BN-ReLU-conv, no activation after the addition, projection from the pre-activation', () => {
    const b = new PreActBottleneck(64, 16);
    expect([...b.namedChildren()].map(([n]) => n)).toEqual(['bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3', 'relu']);
    b.eval();
    const x = randn([2, 64, 4, 4]);
    const y = b.call(x);
    // identity shortcut and no final ReLU: negative values survive
    expect(y.min().item()).toBeLessThan(0);
    expectClose(y, b.residual(relu(b.bn1.call(x))).add(x), { atol: 1e-6, what: 'preact output' });
    const p = new PreActBlock(16, 32, { stride: 2 });
    expect(Object.keys(p.stateDict()).filter((k) => k.startsWith('downsample'))).toEqual(['downsample.0.weight']);
    p.eval();
    const x2 = randn([2, 16, 8, 8]);
    const pre = relu(p.bn1.call(x2));
    expectClose(p.call(x2), p.residual(pre).add(p.downsample!.call(pre)), { atol: 1e-6, what: 'preact projection' });
  });

  it('zeroInitResidual zeroes the last BN of every block, so each block starts as its shortcut', () => {
    const r = resnet50({ zeroInitResidual: true, numClasses: 10 });
    const blocks = r.modules().filter((m): m is Bottleneck => m instanceof Bottleneck);
    expect(blocks.length).toBe(16);
    for (const b of blocks) {
      expect(b.bn3.weight!.abs().sum().item()).toBe(0);
      expect(b.bn2.weight!.sum().item()).toBe(b.bn2.numFeatures);
    }
    const plain = resnet50({ numClasses: 10 });
    expect((plain.layer1.at(0) as Bottleneck).bn3.weight!.sum().item()).toBe(256);

    const c = resnet20({ zeroInitResidual: true });
    c.eval();
    const blk = c.layer1.at(1) as BasicBlock;
    expect(blk.bn2.weight!.abs().sum().item()).toBe(0);
    const x = relu(randn([2, 16, 8, 8]));
    expectClose(
      noGrad(() => blk.call(x)),
      x,
      { atol: 0, rtol: 0, what: 'zero-init basic block = identity on relu inputs' },
    );

    const p = preactResnet(164, { zeroInitResidual: true });
    p.eval();
    const pb = p.layer2.at(3) as PreActBottleneck;
    expect(pb.bn3.weight!.abs().sum().item()).toBe(0);
    const x2 = randn([2, 128, 8, 8]);
    expectClose(
      noGrad(() => pb.call(x2)),
      x2,
      { atol: 0, rtol: 0, what: 'zero-init preact block = identity' },
    );
    const pbb = preactResnet(20, { block: 'basic', zeroInitResidual: true }).layer1.at(0) as PreActBlock;
    expect(pbb.bn2.weight!.abs().sum().item()).toBe(0);
  });
});

describe('bad input names the layer and the shapes', () => {
  it('wrong channel count and 3-D input', () => {
    const m = resnet18();
    expect(() => m.call(randn([2, 1, 28, 28]))).toThrow('conv1 (Conv2d): expected input [N, 3, H, W], got [2, 1, 28, 28]');
    expect(() => m.call(randn([3, 64, 64]))).toThrow(
      /^conv1 \(Conv2d\): expected input \[N, 3, H, W\], got \[3, 64, 64\] \(a single image\? add the batch dimension/,
    );
    const g = resnet20({ inChannels: 1 });
    expect(() => g.call(randn([2, 3, 28, 28]))).toThrow('conv1 (Conv2d): expected input [N, 1, H, W], got [2, 3, 28, 28]');
    // a block used inside a network names its full path
    expect(() => g.layer2.call(randn([1, 32, 8, 8]))).toThrow('layer2.0.conv1 (Conv2d): expected input [N, 16, H, W], got [1, 32, 8, 8]');
  });

  it('a state dict for another depth or another head lists the keys and shapes, and loads nothing', () => {
    const r20 = resnet20();
    const r32 = resnet32Like();
    const before = r32.conv1.weight.clone();
    let msg = '';
    try {
      r32.loadStateDict(r20.stateDict());
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain('CifarResNet.loadStateDict: the state dict does not fit this model (nothing was loaded)');
    // (a missing num_batches_tracked is tolerated, as PyTorch does for dicts without version metadata)
    expect(msg).toContain('missing keys (60): layer1.3.conv1.weight [16, 16, 3, 3]');
    expect(r32.conv1.weight.equal(before)).toBe(true);
    expect(() => r20.loadStateDict(r32.stateDict())).toThrow(/unexpected keys \(72\): layer1\.3\.conv1\.weight \[16, 16, 3, 3\]/);
    expect(() => r20.loadStateDict(resnet20({ numClasses: 100 }).stateDict())).toThrow(
      /fc\.weight: model \[10, 64\], state dict \[100, 64\]; fc\.bias: model \[10\], state dict \[100\]/,
    );
    expect(() => resnet18().loadStateDict(resnet34().stateDict())).toThrow(
      /unexpected keys \(\d+\): layer1\.2\.conv1\.weight \[64, 64, 3, 3\]/,
    );
  });

  it('invalid depths and options', () => {
    expect(() => cifarResnet(21)).toThrow('cifarResnet: depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...), got 21');
    expect(() => cifarPlain(19)).toThrow(/cifarPlain: depth must be 6n\+2/);
    expect(() => preactResnet(165)).toThrow('preactResnet: with bottleneck units the depth must be 9n+2 (164, 1001, ...), got 165');
    expect(() => preactResnet(23, { block: 'basic' })).toThrow(/basic units the depth must be 6n\+2/);
    expect(() => resnet18({ numClasses: 0 })).toThrow(/numClasses must be a positive integer, got 0/);
    expect(() => resnet18({ inChannels: 2.5 })).toThrow(/inChannels must be a positive integer/);
  });
});

function resnet32Like(): ReturnType<typeof resnet20> {
  return cifarResnet(32);
}

describe('summary', () => {
  it('tabulates layers, output shapes and parameters, with PyTorch totals', () => {
    const m = resnet20();
    m.train();
    const text = summary(m, [3, 32, 32]);
    expect(text).toContain('CifarResNet summary, input [1, 3, 32, 32] -> output [1, 10]');
    expect(text).toMatch(/conv1 \(Conv2d\)\s+\[1, 16, 32, 32\]\s+432\n/);
    expect(text).toMatch(/layer2 \(Sequential\)\s+\[1, 32, 16, 16\]\s+51,072\n/);
    expect(text).toMatch(/ {4}layer3\.2\.bn2 \(BatchNorm2d\)\s+\[1, 64, 8, 8\]\s+128\n/);
    expect(text).toMatch(/layer2\.0\.downsample \(ShortcutA\)\s+\[1, 32, 16, 16\]\s+0\n/);
    expect(text).toMatch(/fc \(Linear\)\s+\[1, 10\]\s+650\n/);
    expect(text).toContain('Total params: 269,722');
    expect(text).toContain('Trainable params: 269,722');
    expect(m.training).toBe(true); // restored
    const short = summary(m, [2, 3, 32, 32], { maxDepth: 0 });
    const rows = short.split('\n').filter((l) => /^[\w.]+ \(\w+\) /.test(l) && !l.startsWith('Layer'));
    expect(rows.map((l) => l.split(' ')[0])).toEqual(['conv1', 'bn1', 'relu', 'layer1', 'layer2', 'layer3', 'avgpool', 'fc']);
    expect(short).toContain('input [2, 3, 32, 32]');
    m.layer1.requiresGrad_(false);
    expect(summary(m, [3, 32, 32])).toContain('Non-trainable params: 14,016');
    expect(() => summary(m, [1, 32, 32])).toThrow('conv1 (Conv2d): expected input [N, 3, H, W], got [1, 1, 32, 32]');
    expect(() => summary(m, [32, 32])).toThrow(/inputShape must be \[C, H, W\] or \[N, C, H, W\]/);
  });

  it('resnet50 totals match torchvision', () => {
    const d = summaryData(resnet50(), [3, 64, 64]);
    expect(d.totalParams).toBe(25_557_032);
    expect(d.outputShape).toEqual([1, 1000]);
    expect(d.rows.find((r) => r.name === 'layer1.0.downsample.0')!.outputShape).toEqual([1, 256, 16, 16]);
  });
});

describe('memory and devices', () => {
  it('a training step inside scope() returns to the tensor baseline', () => {
    const m = resnet20();
    const x = randn([4, 3, 32, 32]);
    const y = tensor([0, 1, 2, 3], { dtype: 'int64' });
    const step = (): number =>
      scope(() => {
        const loss = crossEntropy(m.call(x), y);
        loss.backward();
        return loss.item() as number;
      });
    step();
    m.zeroGrad();
    const base = memory().tensors;
    for (let i = 0; i < 3; i++) step();
    expect(memory().tensors).toBe(base);
    m.zeroGrad();
    expect(memory().tensors).toBe(base);
  });

  it('to(float64) runs the whole network in double precision', () => {
    manualSeed(5);
    const a = resnet20();
    manualSeed(5);
    const b = resnet20().to('float64');
    a.eval();
    b.eval();
    const x = randn([2, 3, 32, 32]);
    const ya = noGrad(() => a.call(x));
    const yb = noGrad(() => b.call(x.to('float64')));
    expect(yb.dtype).toBe('float64');
    expectClose(ya, yb, { atol: 1e-4, rtol: 1e-4, what: 'float32 vs float64 logits' });
  });

  it.skipIf(!cudaWanted)('on CUDA: same logits as on the CPU, bad device named', () => {
    expect(cuda.isAvailable()).toBe(true);
    manualSeed(7);
    const m = resnet18({ numClasses: 10 });
    m.eval();
    const x = randn([2, 3, 64, 64]);
    const cpu = noGrad(() => m.call(x));
    m.to('cuda');
    expect(m.conv1.weight.device).toMatch(/^cuda/);
    expect(() => m.call(x)).toThrow(/conv1 \(Conv2d\): input is on cpu but the layer's weights are on cuda/);
    const gpu = noGrad(() => m.call(x.to('cuda')));
    expectClose(gpu.to('cpu'), cpu, { atol: 1e-3, rtol: 1e-3, what: 'cuda vs cpu logits' });
    m.train();
    scope(() => {
      const loss = crossEntropy(m.call(x.to('cuda')), tensor([1, 2], { dtype: 'int64', device: 'cuda' }));
      loss.backward();
      expect(m.conv1.weight.grad!.device).toMatch(/^cuda/);
    });
  });
});
