// ONNX export without a runtime: the graph's names, initializers and shapes as written (read back with
// the same ONNX schema), BatchNorm folding, the options' checks, and the errors for what cannot be
// exported. test/parity/onnx*.test.ts runs the files in ONNX Runtime and the ONNX checker.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ShapeError, cifarResnet, createModel, manualSeed, nn, preactResnet, saveSafetensors, type Tensor } from '../../lib/index.js';
import { Module } from '../../lib/nn/module.js';
import { BasicBlock } from '../../lib/models/resnet/blocks.js';
import { exportOnnx, toOnnx, ONNX_OPSETS } from '../../lib/onnx/index.js';
import { decodeModel, onnx } from '../../lib/onnx/proto.js';
import { root } from '../support/helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-onnx-unit-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function graphOf(m: Module, o: Parameters<typeof toOnnx>[1]) {
  return decodeModel(toOnnx(m, o).bytes);
}
function floats(t: onnx.ITensorProto): Float32Array {
  const r = t.rawData!;
  return new Float32Array(r.buffer.slice(r.byteOffset, r.byteOffset + r.byteLength));
}
const dims = (v: onnx.IValueInfoProto) => v.type!.tensorType!.shape!.dim!.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));

describe('exportOnnx: the graph as written', () => {
  manualSeed(0);
  const model = cifarResnet(20, { inChannels: 1 }).eval();

  it('IR 8, the default opset, producer, input "input" [N, 1, 28, 28] and output "output" [N, 10]', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28] });
    expect(Number(m.irVersion)).toBe(8);
    expect(m.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', ONNX_OPSETS.default]]);
    expect(ONNX_OPSETS.default).toBe(17);
    expect(m.producerName).toBe('residual');
    expect(m.graph!.input.map((v) => [v.name, dims(v)])).toEqual([['input', ['N', 1, 28, 28]]]);
    expect(m.graph!.output.map((v) => [v.name, dims(v)])).toEqual([['output', ['N', 10]]]);
  });

  it('initializers are the state-dict tensors under their keys, bit for bit (num_batches_tracked is not used)', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28] });
    const sd = model.stateDict();
    const floatKeys = Object.keys(sd).filter((k) => !k.endsWith('num_batches_tracked'));
    const inits = m.graph!.initializer.filter((t) => t.dataType === onnx.TensorProto.DataType.FLOAT);
    expect(inits.map((t) => t.name).sort()).toEqual(floatKeys.sort());
    for (const t of inits) {
      const want = sd[t.name!];
      expect(t.dims!.map(Number), t.name!).toEqual(want.shape);
      expect(Buffer.from(floats(t).buffer).equals(Buffer.from((want.toTypedArray() as Float32Array).buffer)), t.name!).toBe(true);
    }
    for (const t of Object.values(sd)) t.dispose();
  });

  it('node names follow the module paths; ops inside a forward are named path/op; a module called twice gets _1, _2', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28] });
    const names = m.graph!.node.map((n) => n.name);
    for (const n of [
      'conv1',
      'bn1',
      'relu',
      'layer1.0.conv1',
      'layer1.0.bn1',
      'layer1.0.relu',
      'layer1.0.conv2',
      'layer1.0.bn2',
      'layer1.0/add',
      'layer1.0.relu_1',
      'layer2.0.downsample/slice',
      'layer2.0.downsample/pad',
      'avgpool',
      'flatten',
      'fc',
    ]) {
      expect(names, n).toContain(n);
    }
    expect(new Set(names).size).toBe(names.length);
    const node = (n: string) => m.graph!.node.find((x) => x.name === n)!;
    expect(node('layer1.0.conv1').opType).toBe('Conv');
    expect(node('layer1.0.conv1').input).toEqual(['relu', 'layer1.0.conv1.weight']);
    expect(node('layer1.0/add').input).toEqual(['layer1.0.bn2', 'relu']);
    expect(node('layer2.0/add').input).toEqual(['layer2.0.bn2', 'layer2.0.downsample/pad']);
    expect(node('fc').opType).toBe('Gemm');
    expect(node('fc').output).toEqual(['output']);
    // option A: x[:, :, ::2, ::2] then 8 zero channels before and after (16 -> 32)
    const init = (n: string) => m.graph!.initializer.find((t) => t.name === n)!;
    const i64 = (n: string) => [...new BigInt64Array(new Uint8Array(init(n).rawData!).buffer)].map(Number);
    expect(i64('layer2.0.downsample/slice.steps')).toEqual([2, 2]);
    expect(i64('layer2.0.downsample/slice.axes')).toEqual([2, 3]);
    expect(i64('layer2.0.downsample/pad.pads')).toEqual([0, 8, 0, 0, 0, 8, 0, 0]);
    const ops: Record<string, number> = {};
    for (const n of m.graph!.node) ops[n.opType!] = (ops[n.opType!] ?? 0) + 1;
    expect(ops).toEqual({
      Conv: 19,
      BatchNormalization: 19,
      Relu: 19,
      Add: 9,
      Slice: 2,
      Pad: 2,
      GlobalAveragePool: 1,
      Flatten: 1,
      Gemm: 1,
    });
  });

  it('dynamicBatch: false fixes N; opset is written as asked', () => {
    const m = graphOf(model, { inputShape: [4, 1, 28, 28], dynamicBatch: false, opset: 13 });
    expect(dims(m.graph!.input[0])).toEqual([4, 1, 28, 28]);
    expect(dims(m.graph!.output[0])).toEqual([4, 10]);
    expect(Number(m.opsetImport[0].version)).toBe(13);
    expect(dims(graphOf(model, { inputShape: [1, 28, 28], dynamicBatch: false }).graph!.input[0])).toEqual([1, 1, 28, 28]);
  });

  it('foldBatchNorm: every BatchNorm after a conv is gone, the convs carry <conv>.bias, the other keys are untouched', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28], foldBatchNorm: true });
    const ops = m.graph!.node.map((n) => n.opType);
    expect(ops).not.toContain('BatchNormalization');
    expect(ops.filter((o) => o === 'Conv')).toHaveLength(19);
    const names = m.graph!.initializer.map((t) => t.name);
    expect(names).toContain('layer1.0.conv1.bias');
    expect(names.some((n) => n!.includes('bn'))).toBe(false);
    expect(m.graph!.node.find((n) => n.name === 'layer1.0.conv1')!.input).toEqual(['relu', 'layer1.0.conv1.weight', 'layer1.0.conv1.bias']);
    // pre-activation: the BatchNorms that follow an addition (bn1 of each unit, the final bn) stay
    const pre = preactResnet(20, { block: 'basic' }).eval();
    const g = graphOf(pre, { inputShape: [3, 16, 16], foldBatchNorm: true });
    const bns = g.graph!.node.filter((n) => n.opType === 'BatchNormalization').map((n) => n.name);
    expect(bns).toEqual([...[1, 2, 3].flatMap((l) => [0, 1, 2].map((b) => `layer${l}.${b}.bn1`)), 'bn']);
    pre.dispose();
  });

  it('normalize: Sub and Div of [1, C, 1, 1] constants before the network', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28], normalize: { mean: [0.286], std: [0.353] } });
    expect(m.graph!.node.slice(0, 2).map((n) => [n.name, n.opType, n.input])).toEqual([
      ['normalize/sub', 'Sub', ['input', 'normalize.mean']],
      ['normalize/div', 'Div', ['normalize/sub', 'normalize.std']],
    ]);
    expect(m.graph!.node[2].input![0]).toBe('normalize/div');
    expect(floats(m.graph!.initializer.find((t) => t.name === 'normalize.std')!)[0]).toBeCloseTo(0.353, 6);
  });

  it('metadata and doc strings', () => {
    const m = graphOf(model, { inputShape: [1, 28, 28], metadata: { classes: '["a","b"]' }, docString: 'hello' });
    expect(m.metadataProps.map((p) => [p.key, p.value])).toEqual([['classes', '["a","b"]']]);
    expect(m.docString).toBe('hello');
  });

  it('the whole zoo exports (shapes checked at export), and the registry networks read back with every op type the exporter writes', async () => {
    const seen = new Set<string>();
    for (const [name, shape] of [
      ['resnet18', [3, 32, 32]],
      ['resnext50_32x4d', [3, 32, 32]],
      ['preact164', [3, 16, 16]],
      ['plain20', [3, 16, 16]],
    ] as const) {
      const m = createModel(name, { numClasses: 10 }).eval();
      const g = graphOf(m, { inputShape: [...shape] });
      for (const n of g.graph!.node) seen.add(n.opType!);
      expect(dims(g.graph!.output[0])).toEqual(['N', 10]);
      await new Promise((r) => setImmediate(r));
      if (name === 'resnext50_32x4d')
        expect(Number(g.graph!.node.find((n) => n.name === 'layer1.0.conv2')!.attribute!.find((a) => a.name === 'group')!.i)).toBe(32);
      m.dispose();
    }
    expect([...seen].sort()).toEqual(['Add', 'BatchNormalization', 'Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'MaxPool', 'Relu']);
  });
});

describe('exportOnnx: what it refuses, by name', () => {
  class Swish extends Module {
    override forward(x: Tensor): Tensor {
      return x.mul(x.sigmoid());
    }
  }
  const small = () =>
    new nn.Sequential(
      new nn.Conv2d(3, 4, 3, { padding: 1 }),
      new nn.ReLU(),
      new nn.AdaptiveAvgPool2d(1),
      new nn.Flatten(),
      new nn.Linear(4, 2),
    );

  it('an unknown module type: its path and type, and what is known', () => {
    const m = small();
    m.registerModule('1', new Swish());
    expect(() => toOnnx(m, { inputShape: [3, 8, 8] })).toThrow(
      /exportOnnx: 1 \(Swish\) cannot be exported to ONNX: the exporter does not know this module type \(known: Conv2d, BatchNorm2d, ReLU/,
    );
    const net = cifarResnet(20);
    (net.layer2 as nn.Sequential).registerModule('1', new Swish());
    expect(() => toOnnx(net, { inputShape: [3, 16, 16] })).toThrow(/layer2\.1 \(Swish\) cannot be exported/);
  });

  it('a subclass of a known block (its forward may differ), and a forward replaced on the instance', () => {
    class MyBlock extends BasicBlock {}
    const net = cifarResnet(20);
    (net.layer1 as nn.Sequential).registerModule('0', new MyBlock(16, 16));
    expect(() => toOnnx(net, { inputShape: [3, 16, 16] })).toThrow(
      /layer1\.0 \(MyBlock\) cannot be exported to ONNX: it is a subclass of BasicBlock/,
    );
    const net2 = cifarResnet(20);
    const relu = (net2.layer3 as nn.Sequential).at(2) as BasicBlock;
    relu.relu.forward = (x: Tensor) => x.clamp(0, 6);
    expect(() => toOnnx(net2, { inputShape: [3, 16, 16] })).toThrow(
      /layer3\.2\.relu \(ReLU\) cannot be exported to ONNX: its forward\(\) was replaced/,
    );
  });

  it('layers whose eval-mode forward has no exact ONNX form here', () => {
    const cases: [Module, number[], RegExp][] = [
      [new nn.Sequential(new nn.BatchNorm2d(3, { trackRunningStats: false })), [3, 4, 4], /0 \(BatchNorm2d\).*batch statistics/],
      [new nn.Sequential(new nn.AdaptiveAvgPool2d(3)), [3, 8, 8], /0 \(AdaptiveAvgPool2d\).*does not divide the input 8x8/],
      [new nn.Sequential(new nn.Linear(8, 2)), [3, 4, 8], /0 \(Linear\).*only a 2-D input/],
      [new nn.Sequential(new nn.AvgPool2d(2, { divisorOverride: 3 })), [3, 4, 4], /divisorOverride/],
      [new nn.Sequential(new nn.MaxPool2d(2, { ceilMode: true })), [3, 5, 5], /ceilMode adds a partial window/],
      [new nn.Sequential(new nn.Flatten(0)), [3, 4, 4], /only Flatten\(1, -1\)/],
      [new nn.ModuleList([new nn.ReLU()]), [3, 4, 4], /the model \(ModuleList\) cannot be exported/],
    ];
    for (const [m, shape, re] of cases) expect(() => toOnnx(m, { inputShape: shape })).toThrow(re);
    // ceilMode that adds no window is exported (as floor mode)
    expect(() => toOnnx(new nn.Sequential(new nn.MaxPool2d(2, { ceilMode: true })), { inputShape: [3, 4, 4] })).not.toThrow();
  });

  it('shape problems are ShapeErrors naming the layer', () => {
    expect(() => toOnnx(cifarResnet(20), { inputShape: [1, 16, 16] })).toThrow(ShapeError);
    expect(() => toOnnx(cifarResnet(20), { inputShape: [1, 16, 16] })).toThrow(
      /conv1 \(Conv2d\): expected input \[N, 3, H, W\], got \[N, 1, 16, 16\]/,
    );
    expect(() => toOnnx(small(), { inputShape: [3, 1, 1] })).not.toThrow();
    expect(() => toOnnx(new nn.Sequential(new nn.Conv2d(3, 4, 5)), { inputShape: [3, 2, 2] })).toThrow(
      /0 \(Conv2d\): the input \[N, 3, 2, 2\] is too small/,
    );
  });

  it('options are checked: inputShape, opset range, booleans, normalize per channel, names', () => {
    const m = small();
    expect(() => toOnnx(m, {} as never)).toThrow(/inputShape must be \[C, H, W\] or \[N, C, H, W\]/);
    expect(() => toOnnx(m, { inputShape: [3, 8] })).toThrow(TypeError);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8.5] })).toThrow(TypeError);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], opset: 12 })).toThrow(/opset must be an integer in \[13, 18\], got 12/);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], opset: 19 })).toThrow(RangeError);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], dynamicBatch: 'yes' as never })).toThrow(/dynamicBatch must be a boolean/);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], normalize: { mean: [0.5], std: [0.2] } })).toThrow(
      /normalize needs 3 finite means and 3 positive stds/,
    );
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], normalize: { mean: [0, 0, 0], std: [1, 0, 1] } })).toThrow(/positive stds/);
    expect(() => toOnnx(m, { inputShape: [3, 8, 8], inputName: 'x', outputName: 'x' })).toThrow(/must differ/);
    expect(() => toOnnx({} as never, { inputShape: [3, 8, 8] })).toThrow(/expected a Module/);
  });

  it('a failed export leaves no file, and an earlier file untouched', () => {
    const f = path.join(tmp, 'keep.onnx');
    fs.writeFileSync(f, 'earlier');
    const m = small();
    m.registerModule('1', new Swish());
    expect(() => exportOnnx(m, f, { inputShape: [3, 8, 8] })).toThrow(/Swish/);
    expect(fs.readFileSync(f, 'utf8')).toBe('earlier');
    expect(fs.readdirSync(tmp)).toEqual(['keep.onnx']);
    const info = exportOnnx(small(), f, { inputShape: [3, 8, 8] });
    expect(fs.statSync(f).size).toBe(info.bytes);
  });
});

describe('residual export (CLI)', () => {
  // asynchronous: each run loads libtorch (seconds on a loaded machine), and the worker's event loop must turn
  const cli = (args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, [path.join(root, 'bin', 'residual.js'), ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
      });
    });

  it('--help; a bare state dict needs --model, --input and --no-normalize; an existing file is kept without --force', async () => {
    expect((await cli(['export', '--help'])).out).toMatch(/residual export --checkpoint runs\/NAME --format onnx/);
    manualSeed(0);
    const m = cifarResnet(20, { inChannels: 1 });
    const w = path.join(tmp, 'w.safetensors');
    const sd = m.stateDict();
    saveSafetensors(sd, w); // a plain state dict, as residual train's model.safetensors
    expect((await cli(['export', '--checkpoint', w])).out).toMatch(/--model is needed/);
    expect((await cli(['export', '--checkpoint', w, '--model', 'resnet20'])).out).toMatch(/--input C,H,W is needed/);
    expect((await cli(['export', '--checkpoint', w, '--model', 'resnet20', '--input', '1,28,28'])).out).toMatch(/add --no-normalize/);
    const ok = await cli(['export', '--checkpoint', w, '--model', 'resnet20', '--input', '1,28,28', '--no-normalize', '--json']);
    expect(ok.code, ok.out).toBe(0);
    const res = JSON.parse(ok.out) as { file: string; inputShape: unknown[]; outputShape: unknown[] };
    expect(res.file).toBe(path.join(tmp, 'w.onnx'));
    expect(res.inputShape).toEqual(['N', 1, 28, 28]);
    expect(res.outputShape).toEqual(['N', 10]);
    const again = await cli(['export', '--checkpoint', w, '--model', 'resnet20', '--input', '1,28,28', '--no-normalize']);
    expect(again.code).toBe(2);
    expect(again.out).toMatch(/w\.onnx exists; --force replaces it/);
    expect(
      (await cli(['export', '--checkpoint', w, '--model', 'resnet20', '--input', '3,28,28', '--no-normalize', '--force'])).out,
    ).toMatch(/--input has 3 channels but the network takes 1/);
    expect(
      (await cli(['export', '--checkpoint', w, '--model', 'resnet20', '--input', '1,28,28', '--no-normalize', '--opset', '12', '--force']))
        .out,
    ).toMatch(/--opset/);
    for (const t of Object.values(sd)) t.dispose();
    m.dispose();
  });

  it('a run folder: the normalisation and classes saved with the run go into the graph and its metadata', async () => {
    const run = path.join(tmp, 'run');
    const t = await cli([
      'train',
      '--data',
      'synthetic',
      '--epochs',
      '1',
      '--limit-train-batches',
      '1',
      '--limit-test-batches',
      '1',
      '--batch-size',
      '16',
      '--out',
      run,
    ]);
    expect(t.code, t.out).toBe(0);
    const saved = (
      JSON.parse(fs.readFileSync(path.join(run, 'checkpoint.json'), 'utf8')) as {
        data: { mean: number[]; std: number[]; classes: string[] };
      }
    ).data;
    const r = await cli(['export', '--checkpoint', run, '--format', 'onnx', '--json']);
    expect(r.code, r.out).toBe(0);
    const res = JSON.parse(r.out) as {
      file: string;
      normalize: { mean: number[]; std: number[] };
      classes: string[];
      inputShape: unknown[];
    };
    expect(res.file).toBe(path.join(run, 'model.onnx'));
    expect(res.normalize).toEqual({ mean: saved.mean, std: saved.std });
    expect(res.classes).toEqual(saved.classes);
    expect(res.inputShape).toEqual(['N', 1, 28, 28]);
    const m = decodeModel(fs.readFileSync(res.file));
    const meta = Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value]));
    expect(meta.model).toBe('resnet20');
    expect(JSON.parse(meta.classes!)).toEqual(saved.classes);
    expect(floats(m.graph!.initializer.find((x) => x.name === 'normalize.mean')!)[0]).toBeCloseTo(saved.mean[0], 6);
    expect(m.graph!.node[0].name).toBe('normalize/sub');
  });
});
