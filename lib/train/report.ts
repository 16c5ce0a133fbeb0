// The training report: loss and accuracy curves against epochs, as SVG and PNG.
//
// The charts are a Vega-Lite spec (reportSpec) drawn by lib/viz/charts.ts: Vega renders the SVG and
// resvg rasterises that SVG to the PNG with the same font files, so both images show the same thing.
import path from 'node:path';
import { writeFileAtomic } from '../core/fs.js';
import { renderChartSvg, renderPng, type ChartSpec } from '../viz/charts.js';
import type { EpochMetrics, History, StepMetrics } from './metrics.js';

export type { History } from './metrics.js';

/** Series names and colours, in legend order. The raw per-step line is left out of the legend. */
export const REPORT_SERIES = [
  { label: 'train, per step', color: '#b9d4ea' },
  { label: 'train, per step (smoothed)', color: '#4a90c8' },
  { label: 'train, epoch', color: '#1f4e9c' },
  { label: 'test, epoch', color: '#e0661b' },
] as const;

/** One plotted point: `value` is null where the metric was NaN or infinite (the line breaks there). */
export interface ReportPoint {
  chart: 'loss' | 'accuracy';
  series: (typeof REPORT_SERIES)[number]['label'];
  /** Position in epochs from the start of training. */
  epoch: number;
  /** Loss, or accuracy in percent. */
  value: number | null;
}

// ---------------------------------------------------------------------------------------------
// Formatting

function formatNumber(v: number | undefined, digits = 4): string {
  if (v === undefined || v === null) return '-';
  if (!Number.isFinite(v)) return String(v);
  return Number(v.toPrecision(digits)).toString();
}

function formatPercent(v: number | undefined): string {
  return v === undefined || v === null ? '-' : `${(100 * v).toFixed(2)}%`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '-';
  if (s < 120) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m ${Math.round(s - 60 * m)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

/** The line under the title: the last epoch's numbers and the time taken. */
export function reportSummary(h: History): string {
  const last = h.epochs[h.epochs.length - 1];
  const parts: string[] = [];
  if (last) {
    parts.push(`epoch ${last.epoch}`);
    parts.push(`train loss ${formatNumber(last.trainLoss)}, acc ${formatPercent(last.trainAcc)}`);
    if (last.testLoss !== undefined || last.testAcc !== undefined)
      parts.push(`test loss ${formatNumber(last.testLoss)}, acc ${formatPercent(last.testAcc)}`);
    const total = h.epochs.reduce((s, e) => s + (Number.isFinite(e.seconds) ? e.seconds : 0), 0);
    parts.push(`time ${formatSeconds(total)}`);
  } else if (h.steps.length) {
    const s = h.steps[h.steps.length - 1];
    parts.push(`step ${s.step}`, `loss ${formatNumber(s.loss)}`);
  } else parts.push('no metrics recorded');
  return parts.join('  |  ');
}

// ---------------------------------------------------------------------------------------------
// Data

type Pt = [number, number];

/**
 * x position of each step record, in epochs: the steps of epoch e are spread evenly over
 * (e - 1, e], so they line up with the epoch records drawn at x = e.
 */
function stepX(steps: StepMetrics[]): number[] {
  const perEpoch = new Map<number, number>();
  for (const s of steps) perEpoch.set(s.epoch, (perEpoch.get(s.epoch) ?? 0) + 1);
  const seen = new Map<number, number>();
  return steps.map((s) => {
    const k = (seen.get(s.epoch) ?? 0) + 1;
    seen.set(s.epoch, k);
    return s.epoch - 1 + k / (perEpoch.get(s.epoch) as number);
  });
}

/** Centred moving average over a window of about 2% of the points (at least 1), skipping non-finite values. */
function smooth(pts: Pt[]): Pt[] {
  const half = Math.max(0, Math.round(pts.length / 100));
  if (half === 0) return pts;
  return pts.map(([x], i) => {
    let s = 0;
    let n = 0;
    for (let j = Math.max(0, i - half); j <= Math.min(pts.length - 1, i + half); j++) {
      if (Number.isFinite(pts[j][1])) {
        s += pts[j][1];
        n++;
      }
    }
    return [x, n ? s / n : NaN];
  });
}

/** Keep at most `max` points (evenly spaced), so thousands of steps make a light file. */
function thin(pts: Pt[], max = 1500): Pt[] {
  if (pts.length <= max) return pts;
  const out: Pt[] = [];
  for (let i = 0; i < max; i++) out.push(pts[Math.round((i * (pts.length - 1)) / (max - 1))]);
  return out;
}

/** Every point the report plots, chart by chart and series by series. */
export function reportData(h: History): ReportPoint[] {
  checkHistory(h);
  const out: ReportPoint[] = [];
  const xs = stepX(h.steps);
  for (const chart of ['loss', 'accuracy'] as const) {
    const scale = chart === 'accuracy' ? 100 : 1;
    const push = (series: ReportPoint['series'], pts: Pt[]) => {
      for (const [x, y] of pts) out.push({ chart, series, epoch: x, value: Number.isFinite(y) ? y : null });
    };
    const stepPts: Pt[] = [];
    h.steps.forEach((s, i) => {
      const v = chart === 'loss' ? s.loss : s.acc;
      if (typeof v === 'number') stepPts.push([xs[i], v * scale]);
    });
    push('train, per step', thin(stepPts));
    push('train, per step (smoothed)', thin(smooth(stepPts)));
    const ep = (f: (e: EpochMetrics) => number | undefined): Pt[] =>
      h.epochs.filter((e) => typeof f(e) === 'number').map((e) => [e.epoch, (f(e) as number) * scale]);
    push(
      'train, epoch',
      ep((e) => (chart === 'loss' ? e.trainLoss : e.trainAcc)),
    );
    push(
      'test, epoch',
      ep((e) => (chart === 'loss' ? e.testLoss : e.testAcc)),
    );
  }
  return out;
}

function checkHistory(h: History): void {
  if (!h || !Array.isArray(h.steps) || !Array.isArray(h.epochs)) {
    throw new TypeError('report: history must be { steps: [...], epochs: [...], title? }');
  }
  h.steps.forEach((s, i) => {
    if (typeof s.epoch !== 'number' || typeof s.loss !== 'number')
      throw new TypeError(`report: steps[${i}] needs numeric 'epoch' and 'loss'`);
  });
  h.epochs.forEach((e, i) => {
    if (typeof e.epoch !== 'number' || typeof e.trainLoss !== 'number')
      throw new TypeError(`report: epochs[${i}] needs numeric 'epoch' and 'trainLoss'`);
  });
}

// ---------------------------------------------------------------------------------------------
// Spec

/**
 * The y range from the smoothed and epoch series (the raw per-step line is noisy and is clipped to
 * it): loss from 0, accuracy in percent up to at most 100.
 */
function yDomain(points: ReportPoint[], chart: ReportPoint['chart']): [number, number] {
  const ranged = points.filter((p) => p.series !== 'train, per step' && p.value !== null);
  const ys = (ranged.length ? ranged : points.filter((p) => p.value !== null)).map((p) => p.value as number);
  if (chart === 'accuracy') {
    const lo = Math.max(0, Math.floor((Math.min(...ys) - 2) / 10) * 10);
    const hi = Math.max(...ys) >= 95 ? 100 : Math.min(100, Math.max(...ys) + 2);
    return [Math.min(lo, hi - 5), hi];
  }
  const hi = Math.max(...ys) * 1.05;
  return [Math.min(0, ...ys), hi > 0 ? hi : 1];
}

function panel(points: ReportPoint[], chart: ReportPoint['chart']): Record<string, unknown> {
  const yTitle = chart === 'loss' ? 'loss' : 'accuracy (%)';
  const mine = points.filter((p) => p.chart === chart);
  const size = { width: 420, height: 280 };
  if (!mine.some((p) => p.value !== null)) {
    return {
      ...size,
      data: { values: [{ text: `${yTitle}: no data` }] },
      mark: { type: 'text', fontSize: 13, color: '#666666' },
      encoding: { text: { field: 'text' } },
    };
  }
  const labels = REPORT_SERIES.map((s) => s.label);
  const shown = [...new Set(mine.filter((p) => p.series !== 'train, per step').map((p) => p.series))];
  const color = {
    field: 'series',
    type: 'nominal',
    scale: { domain: labels, range: REPORT_SERIES.map((s) => s.color) },
    legend: { values: shown, title: null, orient: 'bottom', direction: 'horizontal', symbolType: 'stroke' },
  };
  // A little room right of the last point, so its marker is not cut by the plot's edge.
  const xMax = Math.max(1e-9, ...mine.map((p) => p.epoch));
  const x = {
    field: 'epoch',
    type: 'quantitative',
    title: 'epoch',
    scale: { domain: [Math.min(0, ...mine.map((p) => p.epoch)), xMax * 1.02], nice: false },
  };
  const y = { field: 'value', type: 'quantitative', title: yTitle, scale: { domain: yDomain(mine, chart), nice: true } };
  const line = (series: string[], mark: Record<string, unknown>) => ({
    transform: [{ filter: { field: 'series', oneOf: series } }],
    mark: { type: 'line', clip: true, ...mark },
    encoding: { x, y, color, detail: { field: 'series' } },
  });
  return {
    ...size,
    data: { values: mine },
    layer: [
      line(['train, per step'], { strokeWidth: 1 }),
      line(['train, per step (smoothed)'], { strokeWidth: 1.6 }),
      line(['train, epoch', 'test, epoch'], { strokeWidth: 2.2, point: { size: 40, filled: true } }),
    ],
  };
}

/** The report as a Vega-Lite spec: a title with the summary line, then the loss and accuracy charts. */
export function reportSpec(history: History): ChartSpec {
  const points = reportData(history);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: history.title ?? 'Training report', subtitle: reportSummary(history), anchor: 'middle', fontSize: 20 },
    hconcat: [panel(points, 'loss'), panel(points, 'accuracy')],
    spacing: 60,
  };
}

// ---------------------------------------------------------------------------------------------
// Output

/** The report as an SVG document (two charts: loss and accuracy against epochs). */
export async function renderReportSvg(history: History): Promise<string> {
  return renderChartSvg(reportSpec(history));
}

/** The report as PNG bytes: the SVG rasterised by resvg with the same fonts. */
export async function renderReportPngBuffer(history: History): Promise<Buffer> {
  return renderPng(await renderReportSvg(history));
}

/** Write the report as a PNG file. */
export async function renderReportPng(history: History, file: string): Promise<string> {
  write(file, await renderReportPngBuffer(history));
  return file;
}

function write(file: string, data: string | Buffer): void {
  try {
    writeFileAtomic(file, data);
  } catch (e) {
    throw new Error(`cannot write report ${file}: ${(e as Error).message}`);
  }
}

/** Write report.svg and report.png into dir (the PNG drawn from that same SVG); returns their paths. */
export async function writeReport(dir: string, history: History): Promise<{ svg: string; png: string }> {
  const svg = path.join(dir, 'report.svg');
  const png = path.join(dir, 'report.png');
  const text = await renderReportSvg(history);
  const image = await renderPng(text);
  write(svg, text);
  write(png, image);
  return { svg, png };
}
