// `residual explain`: the gradient-norm and residual-magnitude measurements against hand computations,
// and the command on a tiny configuration of its --quick preset: every file written and well formed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { runExplain } from '../../lib/cli/explain.js';
import { figureSpecs, gradientNorms, layerWeights, residualMagnitudes, type ExplainResult } from '../../lib/explain/index.js';
import { cifarPlain, cifarResnet, type BasicBlock } from '../../lib/models/index.js';
import { Linear, ReLU, Sequential } from '../../lib/nn/layers.js';
import { manualSeed, noGrad, randn, scope, tensor } from '../../lib/index.js';
import { pngSize } from '../../lib/viz/charts.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-explain-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('gradientNorms', () => {
  it('matches a hand computation on a two-layer network', () => {
    // z = W2 relu(W1 x) + b2, loss = cross-entropy(z, class 0), one example.
    const model = new Sequential(new Linear(2, 2, { bias: false }), new ReLU(), new Linear(2, 2));
    const W1 = [
      [0.5, -1],
      [1, 0.25],
    ];
    const W2 = [
      [1, -1],
      [0.5, 2],
    ];
    const b2 = [0.1, -0.2];
    const x = [1, 2];
    model.loadStateDict({ '0.weight': tensor(W1), '2.weight': tensor(W2), '2.bias': tensor(b2) });

    // By hand: pre = W1 x = [-1.5, 1.5], h = relu(pre) = [0, 1.5], z = W2 h + b2 = [-1.4, 2.8].
    const pre = W1.map((r) => r[0] * x[0] + r[1] * x[1]);
    const h = pre.map((v) => Math.max(0, v));
    const z = W2.map((r, i) => r[0] * h[0] + r[1] * h[1] + b2[i]);
    const e = z.map(Math.exp);
    const p = e.map((v) => v / (e[0] + e[1]));
    const dz = [p[0] - 1, p[1]]; // softmax minus one-hot
    const dW2 = dz.map((d) => h.map((hv) => d * hv));
    const dh = [0, 1].map((j) => W2[0][j] * dz[0] + W2[1][j] * dz[1]);
    const dpre = dh.map((d, j) => (pre[j] > 0 ? d : 0));
    const dW1 = dpre.map((d) => x.map((xv) => d * xv));
    const frob = (m: number[][]) => Math.sqrt(m.flat().reduce((s, v) => s + v * v, 0));

    const norms = gradientNorms(model, { x: tensor([x]), y: tensor([0], { dtype: 'int64' }) });
    expect(norms.map((n) => [n.layer, n.name])).toEqual([
      [1, '0.weight'],
      [2, '2.weight'],
    ]); // biases are not layers
    expect(norms[0].norm).toBeCloseTo(frob(dW1), 5);
    expect(norms[1].norm).toBeCloseTo(frob(dW2), 5);
    expect(frob(dW1)).toBeGreaterThan(0);
    // Gradients are cleared afterwards: the next optimizer step is not affected.
    for (const w of model.parameters()) expect(w.grad).toBeNull();
  });

  it('one entry per layer along the main path: ResNet-20 and plain-20 have 20, ResNet-1202-style projections are left out', () => {
    expect(layerWeights(cifarResnet(20)).length).toBe(20);
    expect(layerWeights(cifarPlain(20)).length).toBe(20);
    const b = cifarResnet(20, { shortcut: 'B' });
    expect([...b.namedParameters()].some(([n]) => n.includes('downsample'))).toBe(true);
    expect(
      layerWeights(b)
        .map(([n]) => n)
        .filter((n) => n.includes('downsample')),
    ).toEqual([]);
    expect(layerWeights(b).length).toBe(20);
  });
});

describe('residualMagnitudes', () => {
  it('|F(x)| / |x| per block, checked against the block computed by hand', () => {
    manualSeed(1);
    const model = cifarResnet(20, { inChannels: 1 });
    const x = randn([4, 1, 28, 28]);
    const m = residualMagnitudes(model, x);
    expect(m.map((b) => b.name)).toEqual([
      'layer1.0',
      'layer1.1',
      'layer1.2',
      'layer2.0',
      'layer2.1',
      'layer2.2',
      'layer3.0',
      'layer3.1',
      'layer3.2',
    ]);
    expect(m.map((b) => b.block)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // The first block by hand, in evaluation mode: its input is relu(bn1(conv1(x))).
    model.eval();
    const [f, s] = noGrad(() =>
      scope(() => {
        const x1 = model.relu.call(model.bn1.call(model.conv1.call(x)));
        const block = model.layer1.at(0) as BasicBlock;
        return [block.residual(x1).norm().item() as number, block.shortcut(x1).norm().item() as number];
      }),
    );
    expect(m[0].residualNorm).toBeCloseTo(f, 4);
    expect(m[0].shortcutNorm).toBeCloseTo(s, 4);
    expect(m[0].ratio).toBeCloseTo(f / s, 5);
  });

  it('zero-initialised residual branches give 0; a plain network has no blocks', () => {
    const x = randn([2, 3, 32, 32]);
    const zero = residualMagnitudes(cifarResnet(20, { zeroInitResidual: true }), x, { batchStats: true });
    expect(zero.length).toBe(9);
    for (const b of zero) {
      expect(b.ratio).toBe(0);
      expect(b.shortcutNorm).toBeGreaterThan(0);
    }
    expect(residualMagnitudes(cifarPlain(20), x)).toEqual([]);
  });
});

describe('residual explain', () => {
  let out: string[] = [];
  let err: string[] = [];
  beforeEach(() => {
    out = [];
    err = [];
    vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  });
  afterEach(() => vi.restoreAllMocks());

  it('--help and usage errors', async () => {
    expect(await runExplain(['--help'])).toBe(0);
    expect(out.join('\n')).toMatch(/^Usage: residual explain/);
    expect(await runExplain(['--quick', '--full'])).toBe(2);
    expect(err.join('\n')).toMatch(/one of --quick and --full/);
    expect(await runExplain(['--depth', '20,56'])).toBe(2);
    expect(err.join('\n')).toMatch(/unknown flag --depth \(did you mean --depths\?\)/);
    expect(await runExplain(['--data', 'cifar10'])).toBe(2);
  });

  it('--quick on a tiny configuration writes the page, the figures and the numbers', async () => {
    const dir = path.join(tmp, 'quick');
    const args = [
      '--quick',
      '--data',
      'synthetic',
      '--device',
      'cpu',
      '--iterations',
      '2',
      '--batch-size',
      '8',
      '--eval-every',
      '1',
      '--test-images',
      '16',
    ];
    expect(await runExplain([...args, '--gradient-depths', '20', '--skip-1001', '--out', dir]), err.join('\n')).toBe(0);
    expect(out.join('\n')).toContain(`Open ${path.join(dir, 'explain.html')}`);

    const r = JSON.parse(fs.readFileSync(path.join(dir, 'explain.json'), 'utf8')) as ExplainResult;
    expect(r.preset).toBe('quick');
    expect(r.settings.iterations).toBe(2);
    expect(r.runs.map((x) => x.net)).toEqual(['plain-20', 'ResNet-20', 'plain-32', 'ResNet-32', 'pre-act ResNet-20']);
    expect(r.initGradients.map((g) => [g.net, g.norms.length])).toEqual([
      ['plain-20', 20],
      ['ResNet-20', 20],
    ]);
    for (const run of r.runs) {
      expect(run.curve.map((p) => p.iteration)).toEqual([1, 2]);
      for (const p of run.curve) for (const v of [p.trainError, p.testError]) expect(v >= 0 && v <= 1).toBe(true);
      expect(run.gradients.map((g) => g.norms.length)).toEqual([run.depth, run.depth]);
      expect(run.magnitudesTrained.length).toBe(run.family === 'plain' ? 0 : (run.depth - 2) / 2);
    }

    const html = fs.readFileSync(path.join(dir, 'explain.html'), 'utf8');
    for (const name of ['degradation', 'gradient-flow', 'identity-mappings', 'residual-magnitude'] as const) {
      // SVG: parses (resvg reads it as XML), declares its size, and names DejaVu Sans for its text.
      const svg = fs.readFileSync(path.join(dir, `${name}.svg`), 'utf8');
      expect(() => new Resvg(svg)).not.toThrow();
      const size = /^<svg [^>]*width="(\d+)" height="(\d+)"/.exec(svg);
      expect(size, name).not.toBeNull();
      expect(svg).toContain('font-family="DejaVu Sans, Verdana, Arial, sans-serif"');
      expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
      // PNG: the signature, and 1.5 times the SVG's size in its IHDR.
      const png = fs.readFileSync(path.join(dir, `${name}.png`));
      expect(pngSize(png)).toEqual({ width: Math.round(1.5 * Number(size![1])), height: Math.round(1.5 * Number(size![2])) });
      // The page embeds the figure and the sentence under it.
      expect(html).toContain(`<section id="${name}">`);
      expect(html).toContain(Buffer.from(svg).toString('base64'));
      expect(html).toContain(r.findings[name].replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;'));
    }

    // The plotted numbers are the JSON's: the degradation figure's data, and its lines in the SVG.
    const spec = figureSpecs(r).find((f) => f.name === 'degradation')!.spec as {
      hconcat: { data: { values: { net: string; curve: string; iteration: number; error: number }[] } }[];
    };
    const plotted = spec.hconcat.flatMap((p) => p.data.values);
    for (const run of r.runs.filter((x) => x.depth !== 20 || x.family !== 'preact')) {
      if (run.family === 'preact') continue;
      for (const p of run.curve) {
        const at = (curve: string) => plotted.find((v) => v.net === run.net && v.curve === curve && v.iteration === p.iteration)!.error;
        expect(at('training error')).toBeCloseTo(100 * p.trainError, 10);
        expect(at('test error')).toBeCloseTo(100 * p.testError, 10);
      }
    }
    const svg = fs.readFileSync(path.join(dir, 'degradation.svg'), 'utf8');
    const lines = [
      ...svg.matchAll(
        /<path aria-label="iteration: (\d+); error \(%\): ([\d.]+); depth: [^;]+; curve: ([a-z ]+); net: ([^"]+)" role="graphics-symbol" aria-roledescription="line mark" d="([^"]+)"/g,
      ),
    ];
    expect(lines.length).toBe(8); // 4 networks x (training, test)
    for (const [, iteration, error, curve, net, d] of lines) {
      const run = r.runs.find((x) => x.net === net)!;
      const first = run.curve[0];
      expect(Number(iteration)).toBe(first.iteration);
      expect(Number(error)).toBeCloseTo(100 * (curve === 'training error' ? first.trainError : first.testError), 2);
      expect((d.match(/L/g) ?? []).length + 1).toBe(run.curve.length);
    }
  }, 600_000);
});
