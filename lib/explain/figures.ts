// The figures of `residual explain` as Vega-Lite specs, the sentence under each (what it shows, and
// whether this run shows it, from the numbers), and the self-contained HTML page that holds them.
import path from 'node:path';
import { writeFileAtomic } from '../core/fs.js';
import { escapeXml, writeChart, type ChartSpec } from '../viz/charts.js';
import type { ExplainResult, Family, FigureName, TrainedNet } from './types.js';

/** The results the figures are drawn from (explain.json without findings, timing and file names). */
export type ExplainData = Omit<ExplainResult, 'findings' | 'seconds' | 'cpuSeconds' | 'files'>;

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const PANEL = { width: 380, height: 250 };
/** Pixel scale of the PNGs against the SVGs. */
const PNG_SCALE = 1.5;

const FAMILY_COLORS: Record<Family, string[]> = {
  plain: ['#f0a04b', '#e0603a', '#b8283f', '#6b0f1a'],
  residual: ['#8cc2e6', '#4292c6', '#1f5ea8', '#08306b'],
  preact: ['#41ab5d', '#1b7837', '#00441b'],
};

/** A colour per network: warm for plain, blue for residual, green for pre-activation; darker when deeper. */
function netColors(nets: { net: string; family: Family; depth: number }[]): { domain: string[]; range: string[] } {
  const unique = [...new Map(nets.map((n) => [n.net, n])).values()];
  const order: Family[] = ['plain', 'residual', 'preact'];
  unique.sort((a, b) => order.indexOf(a.family) - order.indexOf(b.family) || a.depth - b.depth);
  const range = unique.map((n) => {
    const depths = [...new Set(unique.filter((u) => u.family === n.family).map((u) => u.depth))].sort((a, b) => a - b);
    const shades = FAMILY_COLORS[n.family];
    const i = depths.indexOf(n.depth);
    if (depths.length === 1) return shades[1];
    // Distinct shades while there are enough, light (shallow) to dark (deep).
    const L = shades.length;
    return shades[
      depths.length < L ? 1 + Math.round((i * (L - 2)) / (depths.length - 1)) : Math.round((i * (L - 1)) / (depths.length - 1))
    ];
  });
  return { domain: unique.map((n) => n.net), range };
}

const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
const round = (v: number, d = 3) => (Math.abs(v) >= 1e5 ? v.toExponential(d - 1) : String(Number(v.toPrecision(d))));
/** Differences of training error below this (2 points) are within the noise of one measurement here. */
const NOISE = 0.02;

/** Mean training error over the last two measurement points (less noisy than one). */
function endTrainError(r: TrainedNet): number {
  const tail = r.curve.slice(-2);
  return tail.reduce((s, p) => s + p.trainError, 0) / tail.length;
}

function find(runs: TrainedNet[], family: Family, depth: number): TrainedNet {
  const r = runs.find((x) => x.family === family && x.depth === depth);
  if (!r) throw new Error(`explain: no run of ${family} depth ${depth}`);
  return r;
}

function curveRows(r: TrainedNet, extra: Record<string, unknown> = {}) {
  return r.curve.flatMap((p) => [
    { ...extra, net: r.net, curve: 'training error', iteration: p.iteration, error: 100 * p.trainError },
    { ...extra, net: r.net, curve: 'test error', iteration: p.iteration, error: 100 * p.testError },
  ]);
}

const DASH = {
  field: 'curve',
  type: 'nominal',
  title: null,
  scale: {
    domain: ['training error', 'test error'],
    range: [
      [5, 3],
      [1, 0],
    ],
  },
  legend: { symbolType: 'stroke', symbolStrokeColor: '#555555' },
};

function errorDomain(rows: { error: number }[]): [number, number] {
  return [0, Math.min(100, Math.max(1, ...rows.map((r) => r.error)) * 1.05)];
}

function errorPanel(title: string, rows: Record<string, unknown>[], color: object, yDomain: [number, number], dashed = true) {
  return {
    ...PANEL,
    title,
    data: { values: rows },
    mark: { type: 'line', strokeWidth: 2, clip: true },
    encoding: {
      x: { field: 'iteration', type: 'quantitative', title: 'iteration' },
      y: { field: 'error', type: 'quantitative', title: 'error (%)', scale: { domain: yDomain, nice: true } },
      color,
      ...(dashed ? { strokeDash: DASH } : {}),
      detail: { field: 'net' },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The four figures

function degradation(p: ExplainData): { spec: ChartSpec; finding: string } {
  const [d0, d1] = p.settings.depths;
  const nets = [find(p.runs, 'plain', d0), find(p.runs, 'plain', d1), find(p.runs, 'residual', d0), find(p.runs, 'residual', d1)];
  const rows = nets.flatMap((r) => curveRows(r, { depth: `${r.depth} layers` }));
  const color = {
    field: 'depth',
    type: 'nominal',
    title: 'depth',
    scale: { domain: [`${d0} layers`, `${d1} layers`], range: ['#2b6cb0', '#d1495b'] },
    legend: { symbolType: 'stroke' },
  };
  const y = errorDomain(rows);
  const spec = {
    $schema: SCHEMA,
    title: {
      text: 'Degradation: training and test error of plain and residual networks at two depths',
      subtitle: `training error (dashed) and test error (solid); ${p.data.split(/ from | \(/)[0]}, batch ${p.settings.batchSize}`,
    },
    hconcat: [
      errorPanel(
        'plain networks',
        rows.filter((r) => r.net.startsWith('plain')),
        color,
        y,
      ),
      errorPanel(
        'residual networks (ResNet)',
        rows.filter((r) => r.net.startsWith('ResNet')),
        color,
        y,
      ),
    ],
    resolve: { scale: { y: 'shared' } },
  };
  const [p0, p1, r0, r1] = nets.map(endTrainError);
  const iters = nets[0].curve[nets[0].curve.length - 1].iteration;
  const plainNumbers = `(${pct(p1)} at ${d1} layers against ${pct(p0)} at ${d0})`;
  const plainSays =
    p1 - p0 > NOISE
      ? `the deeper plain network has the higher training error ${plainNumbers}: degradation`
      : p1 > p0
        ? `the deeper plain network has a slightly higher training error ${plainNumbers}, a gap within the noise of these measurements, so this run only hints at degradation`
        : `the deeper plain network does not have the higher training error ${plainNumbers}, so this run does not show degradation`;
  const resSays =
    r1 <= r0
      ? `the deeper ResNet trains at least as well (${pct(r1)} against ${pct(r0)})`
      : `the deeper ResNet is not yet better (${pct(r1)} against ${pct(r0)})`;
  const gap =
    r1 < p1
      ? `, and at ${d1} layers the residual network beats the plain one (${pct(r1)} against ${pct(p1)})`
      : `; at ${d1} layers the residual network does not beat the plain one (${pct(r1)} against ${pct(p1)})`;
  const finding =
    `Training and test error against iterations for plain and residual networks of ${d0} and ${d1} layers, trained with the same recipe on the same batches. ` +
    `He et al. (2015) find that the deeper plain network has the higher training error (the degradation problem) while the deeper ResNet has the lower one. ` +
    `In this run, after ${iters} iterations (training error averaged over the last two measurements), ${plainSays}; ${resSays}${gap}.`;
  return { spec, finding };
}

function gradientFlow(p: ExplainData): { spec: ChartSpec; finding: string } {
  const initRows = p.initGradients.flatMap((g) =>
    g.norms.filter((n) => n.norm > 0).map((n) => ({ net: g.net, family: g.family, layer: n.layer, norm: n.norm })),
  );
  // During training: the measurement nearest a quarter of the way, before the learning rate drops.
  const trainRuns = p.runs;
  const target = p.settings.iterations / 4;
  const snap = (r: TrainedNet) =>
    r.gradients.reduce((best, g) => (Math.abs(g.iteration - target) < Math.abs(best.iteration - target) ? g : best));
  const trainIter = trainRuns.length ? snap(trainRuns[0]).iteration : 0;
  const trainRows = trainRuns.flatMap((r) =>
    snap(r)
      .norms.map((norm, i) => ({ net: r.net, family: r.family, layer: i + 1, norm }))
      .filter((x) => x.norm > 0),
  );
  const all = [...p.initGradients, ...trainRuns];
  const color = { field: 'net', type: 'nominal', title: 'network', scale: netColors(all), legend: { symbolType: 'stroke', columns: 1 } };
  // Over many decades label the powers of ten only (1e+7, 1e+6, ..., 1000, 100, 10, 1, 0.1).
  const decades =
    "abs(log(datum.value) / LN10 - round(log(datum.value) / LN10)) > 1e-6 ? '' : datum.value >= 1e5 || datum.value < 1e-3 ? format(datum.value, '.0e') : format(datum.value, '~g')";
  const span = (rows: { norm: number }[]) => Math.max(...rows.map((r) => r.norm)) / Math.min(...rows.map((r) => r.norm));
  const panel = (title: string, rows: { norm: number }[]) => ({
    ...PANEL,
    title,
    data: { values: rows },
    mark: { type: 'line', strokeWidth: 1.8, clip: true },
    encoding: {
      x: { field: 'layer', type: 'quantitative', title: 'layer (input to output)' },
      y: {
        field: 'norm',
        type: 'quantitative',
        title: 'gradient norm of the weights',
        scale: { type: 'log' },
        axis: span(rows) > 1e3 ? { labelExpr: decades } : {},
      },
      color,
      strokeDash: {
        field: 'family',
        type: 'nominal',
        title: null,
        scale: {
          domain: ['plain', 'residual', 'preact'],
          range: [
            [5, 3],
            [1, 0],
            [1, 0],
          ],
        },
        legend: null,
      },
      detail: { field: 'net' },
    },
  });
  const upTo110 = initRows.filter((r) => r.family !== 'preact' || !p.initGradients.some((g) => g.net === r.net && g.depth > 110));
  const deep = initRows.filter((r) => !upTo110.includes(r));
  const top = [panel('at initialisation', upTo110)];
  if (deep.length) top.push(panel('pre-activation ResNet-1001 at initialisation', deep));
  const rows: object[] = [{ hconcat: top, resolve: { scale: { x: 'independent', y: 'independent' } } }];
  if (trainRows.length) rows.push(panel(`during training: the training batch of iteration ${trainIter}`, trainRows));
  const spec = {
    $schema: SCHEMA,
    title: {
      text: 'Gradient flow: the gradient norm of every layer\u2019s weights',
      subtitle: `log scale; plain networks dashed, residual solid; at initialisation on one batch of ${p.settings.probeBatch} training images`,
    },
    vconcat: rows,
    resolve: { scale: { x: 'independent', y: 'independent' } },
  };
  // The spread of each network's norms: largest over smallest across its layers.
  const spread = (norms: number[]) => {
    const pos = norms.filter((n) => n > 0);
    return Math.max(...pos) / Math.min(...pos);
  };
  const deepest = Math.max(...p.initGradients.filter((g) => g.family !== 'preact').map((g) => g.depth), 0);
  const describe = (family: Family, depth: number) => {
    const g = p.initGradients.find((x) => x.family === family && x.depth === depth);
    if (!g) return '';
    const n = g.norms.map((x) => x.norm);
    return `${g.net}: first layer ${round(n[0])}, last ${round(n[n.length - 1])}, largest/smallest ${round(spread(n))}`;
  };
  const parts = [describe('plain', deepest), describe('residual', deepest), describe('preact', 1001)].filter(Boolean);
  const finding =
    `The gradient norm of each layer's weights against the layer's position, at initialisation and during training. ` +
    `What to look for: through the shortcuts the gradient reaches early layers without passing through every layer on the way, so a residual network's layers should get gradients of similar size, even through the 1001 layers of the pre-activation ResNet (He et al. 2016), while a deep plain network's gradients may shrink or grow from layer to layer. ` +
    `In this run, at initialisation: ${parts.join('; ')}.` +
    (p.settings.preact1001
      ? ` The 1001-layer network is measured at initialisation only (training it does not fit the ${p.preset} preset).`
      : '');
  return { spec, finding };
}

function identityMappings(p: ExplainData): { spec: ChartSpec; finding: string } {
  const d = p.settings.identityDepth;
  const post = find(p.runs, 'residual', d);
  const pre = find(p.runs, 'preact', d);
  const rows = [...curveRows(post), ...curveRows(pre)];
  const color = {
    field: 'net',
    type: 'nominal',
    title: 'block',
    scale: { domain: [post.net, pre.net], range: ['#2b6cb0', '#1b7837'] },
    legend: { symbolType: 'stroke', labelExpr: `datum.label == '${post.net}' ? 'original (post-activation)' : 'pre-activation'` },
  };
  const y = errorDomain(rows);
  const panel = (curve: string) =>
    errorPanel(
      curve,
      rows.filter((r) => r.curve === curve),
      color,
      y,
      false,
    );
  const spec = {
    $schema: SCHEMA,
    title: {
      text: `Identity mappings: original against pre-activation blocks, ${d} layers`,
      subtitle: 'original: conv-BN-ReLU, ReLU after the addition; pre-activation: BN-ReLU-conv, nothing after the addition',
    },
    hconcat: [panel('training error'), panel('test error')],
    resolve: { scale: { y: 'shared' } },
  };
  const tp = endTrainError(post);
  const tq = endTrainError(pre);
  const last = (r: TrainedNet) => r.curve[r.curve.length - 1].testError;
  const finding =
    `Training error (left) and test error (right) of the original ResNet-${d} and the pre-activation ResNet-${d}, same recipe. ` +
    `He et al. (2016) find that pre-activation, which leaves the shortcut path a pure identity, trains more easily and generalises better, most clearly at 1001 layers. ` +
    `In this run the pre-activation network ends at ${pct(tq)} training error and ${pct(last(pre))} test error, the original at ${pct(tp)} and ${pct(last(post))}` +
    (Math.abs(tq - tp) <= NOISE
      ? ': no clear difference at this depth and length of training.'
      : tq < tp
        ? ': pre-activation trains faster here.'
        : ': the original block trains faster here.');
  return { spec, finding };
}

function residualMagnitude(p: ExplainData): { spec: ChartSpec; finding: string } {
  const runs = p.runs.filter((r) => r.magnitudesTrained.length > 0);
  const rows = runs.flatMap((r) => [
    ...r.magnitudesInit.map((m) => ({ net: r.net, when: 'at initialisation', block: m.block, ratio: m.ratio })),
    ...r.magnitudesTrained.map((m) => ({ net: r.net, when: 'after training', block: m.block, ratio: m.ratio })),
  ]);
  const color = { field: 'net', type: 'nominal', title: 'network', scale: netColors(runs), legend: { symbolType: 'stroke' } };
  const spec = {
    $schema: SCHEMA,
    title: {
      text: 'Residual magnitude: |F(x)| / |x| in each block',
      subtitle: 'small ratios: the block stays close to the identity; dashed: at initialisation, solid: after training',
    },
    ...PANEL,
    width: 560,
    data: { values: rows },
    mark: { type: 'line', point: { size: 30, filled: true }, strokeWidth: 1.8 },
    encoding: {
      x: { field: 'block', type: 'quantitative', title: 'residual block (input to output)', axis: { tickMinStep: 1 } },
      y: { field: 'ratio', type: 'quantitative', title: '|F(x)| / |x|' },
      color,
      strokeDash: {
        field: 'when',
        type: 'nominal',
        title: null,
        scale: {
          domain: ['at initialisation', 'after training'],
          range: [
            [5, 3],
            [1, 0],
          ],
        },
        legend: { symbolType: 'stroke', symbolStrokeWidth: 2, encode: { symbols: { update: { stroke: { value: '#555555' } } } } },
      },
      detail: { field: 'when' },
    },
  };
  const median = (v: number[]) => {
    const s = [...v].sort((a, b) => a - b);
    return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
  };
  const parts = runs.map((r) => {
    const t = r.magnitudesTrained.map((m) => m.ratio);
    return `${r.net}: median ${round(median(t), 2)} after training (${round(median(r.magnitudesInit.map((m) => m.ratio)), 2)} at initialisation), smallest ${round(Math.min(...t), 2)}, largest ${round(Math.max(...t), 2)}`;
  });
  const finding =
    `For each residual block, the norm of its branch F(x) over the norm of its shortcut x, on one batch of training images (after training in evaluation mode; at initialisation with the batch's own BatchNorm statistics). ` +
    `He et al. (2015, figure 7) find that residual functions are generally small, and smaller in deeper networks: each block changes its input a little. ` +
    `In this run: ${parts.join('; ')}.`;
  return { spec, finding };
}

// ---------------------------------------------------------------------------------------------
// Output

const FIGURES: { name: FigureName; heading: string; make: (p: ExplainData) => { spec: ChartSpec; finding: string } }[] = [
  { name: 'degradation', heading: 'Degradation', make: degradation },
  { name: 'gradient-flow', heading: 'Gradient flow', make: gradientFlow },
  { name: 'identity-mappings', heading: 'Identity mappings', make: identityMappings },
  { name: 'residual-magnitude', heading: 'Residual magnitude', make: residualMagnitude },
];

/** The four figures' specs (their data is every plotted number) and the sentence under each. */
export function figureSpecs(p: ExplainData): { name: FigureName; heading: string; spec: ChartSpec; finding: string }[] {
  return FIGURES.map((f) => ({ name: f.name, heading: f.heading, ...f.make(p) }));
}

/** Draws the four figures into `out` (SVG and PNG each) and writes explain.html around them. */
export async function writeFigures(
  out: string,
  p: ExplainData,
): Promise<{ findings: Record<FigureName, string>; figures: Record<FigureName, { svg: string; png: string }>; html: string }> {
  const findings = {} as Record<FigureName, string>;
  const figures = {} as Record<FigureName, { svg: string; png: string }>;
  const sections: string[] = [];
  for (const f of figureSpecs(p)) {
    const { spec, finding } = f;
    const chart = await writeChart(path.join(out, f.name), spec, PNG_SCALE);
    findings[f.name] = finding;
    figures[f.name] = { svg: chart.svg, png: chart.png };
    const uri = `data:image/svg+xml;base64,${Buffer.from(chart.svgText).toString('base64')}`;
    sections.push(
      `<section id="${f.name}">\n<h2>${escapeXml(f.heading)}</h2>\n<img src="${uri}" alt="${escapeXml(f.heading)} figure">\n<p>${escapeXml(finding)}</p>\n</section>`,
    );
  }
  const html = path.join(out, 'explain.html');
  writeFileAtomic(html, page(p, sections));
  return { findings, figures, html };
}

function page(p: ExplainData, sections: string[]): string {
  const s = p.settings;
  const trained = p.runs.map((r) => `${r.net} (${(r.parameters / 1000).toFixed(0)}k parameters, ${r.seconds.toFixed(0)} s)`).join(', ');
  const setup =
    `Preset <b>${p.preset}</b> on ${escapeXml(p.device)}; data: ${escapeXml(p.data)}. Every network trains for ${s.iterations} iterations at batch ${s.batchSize} ` +
    `(SGD, momentum ${s.momentum}, weight decay ${s.weightDecay}, learning rate ${s.lr} divided by 10 at 50% and 75% of the iterations, no augmentation, seed ${p.seed}); ` +
    `training error is measured on the training batches of the last ${s.evalEvery} iterations, test error on ${s.testImages} test images. Trained: ${escapeXml(trained)}.`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Why residual learning works: residual explain</title>
<style>
body { font-family: 'DejaVu Sans', Verdana, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
section { margin: 2.5em 0; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
p { max-width: 75em; }
.setup { color: #555; }
</style>
</head>
<body>
<h1>Why residual learning works</h1>
<p>A residual block learns F(x) and outputs F(x) + x. These experiments, run on this machine by <code>residual explain</code>, show what that changes: the degradation of deep plain networks, how gradients flow, original against pre-activation blocks, and how far trained blocks stay from the identity.</p>
<p class="setup">${setup}</p>
${sections.join('\n')}
<p class="setup">The numbers behind every figure are in explain.json; each figure is also saved as SVG and PNG next to this page.</p>
</body>
</html>
`;
}
