// The training report: loss and accuracy curves as SVG and PNG.
//
// Both images come from one list of drawing primitives (lines, polylines, rectangles, circles,
// text), so they show the same thing. The SVG is drawn by the viewer; the PNG is rasterised here
// (anti-aliased strokes, a built-in 5x7 bitmap font: upper-case letters, digits and common
// punctuation, so PNG text is shown in capitals) and encoded with pngjs.
import fs from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import type { EpochMetrics, History, StepMetrics } from './metrics.js';
import { writeFileAtomic } from '../io/atomic.js';

export type { History } from './metrics.js';

// ---------------------------------------------------------------------------------------------
// Drawing primitives

type Pt = [number, number];
interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}
type Prim =
  | { kind: 'line'; x1: number; y1: number; x2: number; y2: number; color: string; width: number }
  | { kind: 'poly'; pts: Pt[]; color: string; width: number; clip?: Rect }
  | { kind: 'rect'; x: number; y: number; w: number; h: number; fill: string }
  | { kind: 'circle'; cx: number; cy: number; r: number; fill: string; clip?: Rect }
  | {
      kind: 'text';
      x: number;
      y: number;
      text: string;
      size: number;
      color: string;
      anchor: 'start' | 'middle' | 'end';
      /** 'middle': y is the vertical centre of the text; 'baseline': y is its baseline. */
      valign?: 'baseline' | 'middle';
      /** Rotated 90 degrees counter-clockwise (reads bottom to top). */
      vertical?: boolean;
      bold?: boolean;
    };

const WIDTH = 1100;
const HEIGHT = 540;

const COLORS = {
  text: '#222222',
  muted: '#666666',
  axis: '#444444',
  grid: '#e3e3e3',
  stepRaw: '#b9d4ea',
  stepSmooth: '#4a90c8',
  train: '#1f4e9c',
  test: '#e0661b',
};

/** Bitmap font scale for a font size: text is 7 * scale pixels tall in the PNG. */
function fontScale(size: number): number {
  return size >= 20 ? 3 : 2;
}

/** Width of text as laid out (the bitmap font's, which is wider than the SVG's sans-serif). */
function textWidth(text: string, size: number): number {
  return text.length === 0 ? 0 : text.length * 6 * fontScale(size) - fontScale(size);
}

// ---------------------------------------------------------------------------------------------
// Scales and ticks

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) as number;
  const out: number[] = [];
  // Multiples of step, cleaned of float noise (0.6000000000000001 -> 0.6).
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(k === 0 ? 0 : Number((k * step).toPrecision(12)));
  return out;
}

function formatTick(v: number, ticks: number[]): string {
  // As many decimals as the tick spacing needs (0.25 -> 2, 0.5 -> 1, 20 -> 0).
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  let d = 0;
  while (d < 6 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6 * 10 ** d) d++;
  return v.toFixed(d);
}

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

// ---------------------------------------------------------------------------------------------
// Series

interface Series {
  label: string;
  color: string;
  width: number;
  pts: Pt[];
  markers?: boolean;
  /** Shown in the legend (the raw per-step line is explained by its smoothed twin). */
  legend?: boolean;
}

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

function buildSeries(h: History, which: 'loss' | 'acc'): Series[] {
  const scale = which === 'acc' ? 100 : 1;
  const xs = stepX(h.steps);
  const stepPts: Pt[] = [];
  h.steps.forEach((s, i) => {
    const v = which === 'loss' ? s.loss : s.acc;
    if (typeof v === 'number') stepPts.push([xs[i], v * scale]);
  });
  const ep = (f: (e: EpochMetrics) => number | undefined): Pt[] =>
    h.epochs.filter((e) => typeof f(e) === 'number').map((e) => [e.epoch, (f(e) as number) * scale]);
  const out: Series[] = [];
  if (stepPts.length) {
    out.push({ label: 'train, per step', color: COLORS.stepRaw, width: 1, pts: thin(stepPts), legend: false });
    out.push({ label: 'train, per step (smoothed)', color: COLORS.stepSmooth, width: 1.6, pts: thin(smooth(stepPts)), legend: true });
  }
  const train = ep((e) => (which === 'loss' ? e.trainLoss : e.trainAcc));
  const test = ep((e) => (which === 'loss' ? e.testLoss : e.testAcc));
  if (train.length) out.push({ label: 'train, epoch', color: COLORS.train, width: 2.2, pts: train, markers: true, legend: true });
  if (test.length) out.push({ label: 'test, epoch', color: COLORS.test, width: 2.2, pts: test, markers: true, legend: true });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Layout

function chart(prims: Prim[], area: Rect, title: string, yLabel: string, series: Series[], yRange: 'loss' | 'percent'): void {
  const { x: left, y: top, w, h } = area;
  const bottom = top + h;
  const right = left + w;
  prims.push({ kind: 'text', x: left, y: top - 14, text: title, size: 16, color: COLORS.text, anchor: 'start', bold: true });

  const finite = (s: Series) => s.pts.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const all = series.flatMap(finite);
  if (all.length === 0) {
    prims.push({ kind: 'rect', x: left, y: top, w, h, fill: '#f7f7f7' });
    prims.push({ kind: 'text', x: left + w / 2, y: top + h / 2, text: 'no data', size: 13, color: COLORS.muted, anchor: 'middle', valign: 'middle' });
    return;
  }
  // x from 0 (the start of training) to the last epoch (or the last step position).
  const xMax = Math.max(...all.map((p) => p[0]), 1e-9);
  const xMin = Math.min(0, ...all.map((p) => p[0]));
  // y: the raw per-step line is noisy, so the range comes from the other series when there are
  // any, and the raw line is clipped to the plot.
  const ranged = series.filter((s) => s.legend !== false).flatMap(finite);
  const ys = (ranged.length ? ranged : all).map((p) => p[1]);
  let yLo: number;
  let yHi: number;
  if (yRange === 'percent') {
    yLo = Math.max(0, Math.floor((Math.min(...ys) - 2) / 10) * 10);
    yHi = Math.min(100, Math.max(...ys) + 2);
    if (yHi - yLo < 5) yLo = Math.max(0, yHi - 5);
    if (Math.max(...ys) >= 95) yHi = 100;
  } else {
    yLo = Math.min(0, ...ys);
    yHi = Math.max(...ys) * 1.05;
    if (!(yHi > yLo)) yHi = yLo + 1;
  }
  const xt = niceTicks(xMin, xMax, Math.min(10, Math.max(2, Math.ceil(xMax - xMin))));
  const yt = niceTicks(yLo, yHi, 5);
  if (yRange === 'percent' && yt.length > 1) {
    // End the accuracy axis on a labelled tick (at most 100%).
    const st = yt[1] - yt[0];
    const topTick = Math.min(100, Math.ceil(yHi / st - 1e-9) * st);
    if (topTick > yt[yt.length - 1] + 1e-9) yt.push(topTick);
    yHi = topTick;
  }
  yLo = Math.min(yLo, yt[0]);
  yHi = Math.max(yHi, yt[yt.length - 1]);
  // A little room right of the last point, so its marker is not cut by the plot's edge.
  const xHi = Math.max(xMax, xt[xt.length - 1]) + 0.02 * (xMax - xMin);
  const X = (v: number) => left + ((v - xMin) / (xHi - xMin)) * w;
  const Y = (v: number) => bottom - ((v - yLo) / (yHi - yLo)) * h;

  // Grid, axes, ticks and their labels.
  for (const v of yt) {
    prims.push({ kind: 'rect', x: left, y: Math.round(Y(v)), w, h: 1, fill: COLORS.grid });
    prims.push({ kind: 'rect', x: left - 5, y: Math.round(Y(v)), w: 5, h: 1, fill: COLORS.axis });
    prims.push({ kind: 'text', x: left - 9, y: Y(v), text: formatTick(v, yt), size: 12, color: COLORS.text, anchor: 'end', valign: 'middle' });
  }
  for (const v of xt) {
    prims.push({ kind: 'rect', x: Math.round(X(v)), y: top, w: 1, h, fill: COLORS.grid });
    prims.push({ kind: 'rect', x: Math.round(X(v)), y: bottom, w: 1, h: 5, fill: COLORS.axis });
    prims.push({ kind: 'text', x: X(v), y: bottom + 24, text: formatTick(v, xt), size: 12, color: COLORS.text, anchor: 'middle' });
  }
  prims.push({ kind: 'rect', x: left, y: bottom, w: w + 1, h: 1, fill: COLORS.axis });
  prims.push({ kind: 'rect', x: left, y: top, w: 1, h: h + 1, fill: COLORS.axis });
  prims.push({ kind: 'text', x: left + w / 2, y: bottom + 48, text: 'epoch', size: 13, color: COLORS.text, anchor: 'middle' });
  prims.push({ kind: 'text', x: left - 58, y: top + h / 2, text: yLabel, size: 13, color: COLORS.text, anchor: 'middle', vertical: true });

  // Curves: non-finite values (a diverged loss) break the line.
  const clip = { x: left, y: top, w: w + 1, h: h + 1 };
  for (const s of series) {
    let run: Pt[] = [];
    const flush = () => {
      if (run.length > 1) prims.push({ kind: 'poly', pts: run, color: s.color, width: s.width, clip });
      run = [];
    };
    for (const [x, y] of s.pts) {
      if (Number.isFinite(x) && Number.isFinite(y)) run.push([X(x), Y(y)]);
      else flush();
    }
    flush();
    if (s.markers) {
      for (const [x, y] of finite(s)) prims.push({ kind: 'circle', cx: X(x), cy: Y(y), r: 3.5, fill: s.color, clip });
    }
  }

  // Legend under the chart, wrapping onto a second row when needed.
  let lx = left;
  let ly = bottom + 74;
  for (const s of series.filter((t) => t.legend !== false)) {
    const need = 30 + textWidth(s.label, 12) + 22;
    if (lx + need > right && lx > left) {
      lx = left;
      ly += 22;
    }
    prims.push({ kind: 'line', x1: lx, y1: ly, x2: lx + 24, y2: ly, color: s.color, width: s.width + 0.6 });
    if (s.markers) prims.push({ kind: 'circle', cx: lx + 12, cy: ly, r: 3.5, fill: s.color });
    prims.push({ kind: 'text', x: lx + 30, y: ly, text: s.label, size: 12, color: COLORS.text, anchor: 'start', valign: 'middle' });
    lx += need;
  }
}

function summary(h: History): string {
  const last = h.epochs[h.epochs.length - 1];
  const parts: string[] = [];
  if (last) {
    parts.push(`epoch ${last.epoch}`);
    parts.push(`train loss ${formatNumber(last.trainLoss)}, acc ${formatPercent(last.trainAcc)}`);
    if (last.testLoss !== undefined || last.testAcc !== undefined) parts.push(`test loss ${formatNumber(last.testLoss)}, acc ${formatPercent(last.testAcc)}`);
    const total = h.epochs.reduce((s, e) => s + (Number.isFinite(e.seconds) ? e.seconds : 0), 0);
    parts.push(`time ${formatSeconds(total)}`);
  } else if (h.steps.length) {
    const s = h.steps[h.steps.length - 1];
    parts.push(`step ${s.step}`, `loss ${formatNumber(s.loss)}`);
  } else parts.push('no metrics recorded');
  return parts.join('  |  ');
}

function layout(history: History): Prim[] {
  checkHistory(history);
  const prims: Prim[] = [{ kind: 'rect', x: 0, y: 0, w: WIDTH, h: HEIGHT, fill: '#ffffff' }];
  prims.push({ kind: 'text', x: WIDTH / 2, y: 38, text: history.title ?? 'Training report', size: 22, color: COLORS.text, anchor: 'middle', bold: true });
  prims.push({ kind: 'text', x: WIDTH / 2, y: 68, text: summary(history), size: 13, color: COLORS.muted, anchor: 'middle' });
  const top = 122;
  const ph = 290;
  chart(prims, { x: 90, y: top, w: 440, h: ph }, 'Loss', 'loss', buildSeries(history, 'loss'), 'loss');
  chart(prims, { x: 630, y: top, w: 440, h: ph }, 'Accuracy', 'accuracy (%)', buildSeries(history, 'acc'), 'percent');
  return prims;
}

function checkHistory(h: History): void {
  if (!h || !Array.isArray(h.steps) || !Array.isArray(h.epochs)) {
    throw new TypeError('report: history must be { steps: [...], epochs: [...], title? }');
  }
  h.steps.forEach((s, i) => {
    if (typeof s.epoch !== 'number' || typeof s.loss !== 'number') throw new TypeError(`report: steps[${i}] needs numeric 'epoch' and 'loss'`);
  });
  h.epochs.forEach((e, i) => {
    if (typeof e.epoch !== 'number' || typeof e.trainLoss !== 'number') throw new TypeError(`report: epochs[${i}] needs numeric 'epoch' and 'trainLoss'`);
  });
}

// ---------------------------------------------------------------------------------------------
// SVG

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const r2 = (v: number) => Math.round(v * 100) / 100;

/** The report as an SVG document (two charts: loss and accuracy against epochs). */
export function renderReportSvg(history: History): string {
  const prims = layout(history);
  const clips = new Map<Rect, string>();
  const out: string[] = [];
  const clipAttr = (c?: Rect) => {
    if (!c) return '';
    if (!clips.has(c)) clips.set(c, `plot${clips.size}`);
    return ` clip-path="url(#${clips.get(c)})"`;
  };
  for (const p of prims) {
    switch (p.kind) {
      case 'rect':
        out.push(`<rect x="${r2(p.x)}" y="${r2(p.y)}" width="${r2(p.w)}" height="${r2(p.h)}" fill="${p.fill}"/>`);
        break;
      case 'line':
        out.push(`<line x1="${r2(p.x1)}" y1="${r2(p.y1)}" x2="${r2(p.x2)}" y2="${r2(p.y2)}" stroke="${p.color}" stroke-width="${p.width}"/>`);
        break;
      case 'poly':
        out.push(
          `<polyline class="curve" points="${p.pts.map(([x, y]) => `${r2(x)},${r2(y)}`).join(' ')}" fill="none" stroke="${p.color}" stroke-width="${p.width}" stroke-linejoin="round" stroke-linecap="round"${clipAttr(p.clip)}/>`,
        );
        break;
      case 'circle':
        out.push(`<circle cx="${r2(p.cx)}" cy="${r2(p.cy)}" r="${p.r}" fill="${p.fill}" stroke="#ffffff" stroke-width="1"${clipAttr(p.clip)}/>`);
        break;
      case 'text': {
        const anchor = p.anchor === 'start' ? '' : ` text-anchor="${p.anchor}"`;
        const base = p.valign === 'middle' ? ' dominant-baseline="central"' : '';
        const rot = p.vertical ? ` transform="rotate(-90 ${r2(p.x)} ${r2(p.y)})"` : '';
        const weight = p.bold ? ' font-weight="bold"' : '';
        out.push(`<text x="${r2(p.x)}" y="${r2(p.y)}" font-size="${p.size}" fill="${p.color}"${anchor}${base}${rot}${weight}>${esc(p.text)}</text>`);
        break;
      }
    }
  }
  const defs = [...clips].map(([c, id]) => `<clipPath id="${id}"><rect x="${r2(c.x)}" y="${r2(c.y)}" width="${r2(c.w)}" height="${r2(c.h)}"/></clipPath>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<title>${esc(history.title ?? 'Training report')}</title>`,
    defs.length ? `<defs>${defs.join('')}</defs>` : '',
    ...out,
    '</svg>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// PNG rasteriser

// 5x7 glyphs, written for this file: each string is a row, '#' is ink. Lower-case letters are
// drawn with the upper-case glyphs; anything else unknown as '?'.
const GLYPHS: Record<string, string> = {
  '0': '.###.|#...#|#..##|#.#.#|##..#|#...#|.###.',
  '1': '..#..|.##..|..#..|..#..|..#..|..#..|.###.',
  '2': '.###.|#...#|....#|...#.|..#..|.#...|#####',
  '3': '#####|...#.|..#..|...#.|....#|#...#|.###.',
  '4': '...#.|..##.|.#.#.|#..#.|#####|...#.|...#.',
  '5': '#####|#....|####.|....#|....#|#...#|.###.',
  '6': '..##.|.#...|#....|####.|#...#|#...#|.###.',
  '7': '#####|....#|...#.|..#..|.#...|.#...|.#...',
  '8': '.###.|#...#|#...#|.###.|#...#|#...#|.###.',
  '9': '.###.|#...#|#...#|.####|....#|...#.|.##..',
  A: '.###.|#...#|#...#|#####|#...#|#...#|#...#',
  B: '####.|#...#|#...#|####.|#...#|#...#|####.',
  C: '.###.|#...#|#....|#....|#....|#...#|.###.',
  D: '###..|#..#.|#...#|#...#|#...#|#..#.|###..',
  E: '#####|#....|#....|####.|#....|#....|#####',
  F: '#####|#....|#....|####.|#....|#....|#....',
  G: '.###.|#...#|#....|#.###|#...#|#...#|.####',
  H: '#...#|#...#|#...#|#####|#...#|#...#|#...#',
  I: '.###.|..#..|..#..|..#..|..#..|..#..|.###.',
  J: '..###|...#.|...#.|...#.|...#.|#..#.|.##..',
  K: '#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#',
  L: '#....|#....|#....|#....|#....|#....|#####',
  M: '#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#',
  N: '#...#|#...#|##..#|#.#.#|#..##|#...#|#...#',
  O: '.###.|#...#|#...#|#...#|#...#|#...#|.###.',
  P: '####.|#...#|#...#|####.|#....|#....|#....',
  Q: '.###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#',
  R: '####.|#...#|#...#|####.|#.#..|#..#.|#...#',
  S: '.####|#....|#....|.###.|....#|....#|####.',
  T: '#####|..#..|..#..|..#..|..#..|..#..|..#..',
  U: '#...#|#...#|#...#|#...#|#...#|#...#|.###.',
  V: '#...#|#...#|#...#|#...#|#...#|.#.#.|..#..',
  W: '#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.',
  X: '#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#',
  Y: '#...#|#...#|.#.#.|..#..|..#..|..#..|..#..',
  Z: '#####|....#|...#.|..#..|.#...|#....|#####',
  ' ': '.....|.....|.....|.....|.....|.....|.....',
  '.': '.....|.....|.....|.....|.....|.##..|.##..',
  ',': '.....|.....|.....|.....|.##..|..#..|.#...',
  ':': '.....|.##..|.##..|.....|.##..|.##..|.....',
  ';': '.....|.##..|.##..|.....|.##..|..#..|.#...',
  '%': '##...|##..#|...#.|..#..|.#...|#..##|...##',
  '-': '.....|.....|.....|#####|.....|.....|.....',
  '+': '.....|..#..|..#..|#####|..#..|..#..|.....',
  '/': '.....|....#|...#.|..#..|.#...|#....|.....',
  '(': '...#.|..#..|.#...|.#...|.#...|..#..|...#.',
  ')': '.#...|..#..|...#.|...#.|...#.|..#..|.#...',
  '[': '.###.|.#...|.#...|.#...|.#...|.#...|.###.',
  ']': '.###.|...#.|...#.|...#.|...#.|...#.|.###.',
  '=': '.....|.....|#####|.....|#####|.....|.....',
  _: '.....|.....|.....|.....|.....|.....|#####',
  '|': '..#..|..#..|..#..|..#..|..#..|..#..|..#..',
  '!': '..#..|..#..|..#..|..#..|..#..|.....|..#..',
  '?': '.###.|#...#|....#|...#.|..#..|.....|..#..',
  "'": '..#..|..#..|.#...|.....|.....|.....|.....',
  '<': '...#.|..#..|.#...|#....|.#...|..#..|...#.',
  '>': '.#...|..#..|...#.|....#|...#.|..#..|.#...',
  '*': '.....|..#..|#.#.#|.###.|#.#.#|..#..|.....',
  '#': '.#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.',
  '&': '.##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#',
};
const GLYPH_BITS: Record<string, boolean[][]> = Object.fromEntries(
  Object.entries(GLYPHS).map(([c, g]) => [c, g.split('|').map((row) => [...row].map((ch) => ch === '#'))]),
);

function parseColor(hex: string): [number, number, number] {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

class Raster {
  readonly data: Buffer;
  constructor(readonly width: number, readonly height: number) {
    this.data = Buffer.alloc(width * height * 4, 255);
  }

  /** Blend a colour into pixel (x, y) with coverage a in [0, 1]. */
  blend(x: number, y: number, rgb: [number, number, number], a: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height || a <= 0) return;
    const i = (y * this.width + x) * 4;
    const k = Math.min(1, a);
    for (let c = 0; c < 3; c++) this.data[i + c] = Math.round(this.data[i + c] * (1 - k) + rgb[c] * k);
    this.data[i + 3] = 255;
  }

  fillRect(x: number, y: number, w: number, h: number, color: string): void {
    const rgb = parseColor(color);
    for (let yy = Math.round(y); yy < Math.round(y + h); yy++) for (let xx = Math.round(x); xx < Math.round(x + w); xx++) this.blend(xx, yy, rgb, 1);
  }

  /**
   * Anti-aliased stroke of connected segments: coverage per pixel is the largest over the
   * segments (so joints are not drawn twice), then blended once.
   */
  stroke(pts: Pt[], width: number, color: string, clip?: Rect): void {
    const rgb = parseColor(color);
    const r = width / 2;
    const cx0 = Math.max(0, Math.floor(clip ? clip.x : 0));
    const cy0 = Math.max(0, Math.floor(clip ? clip.y : 0));
    const cx1 = Math.min(this.width, Math.ceil(clip ? clip.x + clip.w : this.width));
    const cy1 = Math.min(this.height, Math.ceil(clip ? clip.y + clip.h : this.height));
    const cov = new Map<number, number>();
    for (let i = 0; i + 1 < pts.length; i++) {
      const [ax, ay] = pts[i];
      const [bx, by] = pts[i + 1];
      const x0 = Math.max(cx0, Math.floor(Math.min(ax, bx) - r - 1));
      const x1 = Math.min(cx1 - 1, Math.ceil(Math.max(ax, bx) + r + 1));
      const y0 = Math.max(cy0, Math.floor(Math.min(ay, by) - r - 1));
      const y1 = Math.min(cy1 - 1, Math.ceil(Math.max(ay, by) + r + 1));
      const dx = bx - ax;
      const dy = by - ay;
      const len2 = dx * dx + dy * dy;
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          // Distance from the pixel centre to the segment.
          const px = x + 0.5 - ax;
          const py = y + 0.5 - ay;
          const t = len2 > 0 ? Math.max(0, Math.min(1, (px * dx + py * dy) / len2)) : 0;
          const d = Math.hypot(px - t * dx, py - t * dy);
          const c = Math.min(1, r + 0.5 - d);
          if (c > 0) {
            const key = y * this.width + x;
            if (c > (cov.get(key) ?? 0)) cov.set(key, c);
          }
        }
      }
    }
    for (const [key, c] of cov) this.blend(key % this.width, Math.floor(key / this.width), rgb, c);
  }

  disk(cx: number, cy: number, r: number, color: string, clip?: Rect): void {
    const rgb = parseColor(color);
    for (let y = Math.floor(cy - r - 1); y <= Math.ceil(cy + r + 1); y++) {
      for (let x = Math.floor(cx - r - 1); x <= Math.ceil(cx + r + 1); x++) {
        if (clip && (x < clip.x || y < clip.y || x >= clip.x + clip.w || y >= clip.y + clip.h)) continue;
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        this.blend(x, y, rgb, Math.min(1, r + 0.5 - d));
      }
    }
  }

  text(p: Extract<Prim, { kind: 'text' }>): void {
    const s = fontScale(p.size);
    const rgb = parseColor(p.color);
    const chars = [...p.text.toUpperCase()];
    const len = textWidth(p.text, p.size);
    const tall = 7 * s;
    // Along the text direction: where it starts; across it: where the glyph's top row is.
    const along0 = p.anchor === 'start' ? 0 : p.anchor === 'middle' ? -len / 2 : -len;
    const across0 = p.valign === 'middle' ? -tall / 2 : -tall;
    chars.forEach((ch, k) => {
      const g = GLYPH_BITS[ch] ?? GLYPH_BITS['?'];
      for (let gy = 0; gy < 7; gy++) {
        for (let gx = 0; gx < 5; gx++) {
          if (!g[gy][gx]) continue;
          const u = Math.round(along0 + k * 6 * s + gx * s); // along the text
          const v = Math.round(across0 + gy * s); // down the glyph
          for (let a = 0; a < s; a++) {
            for (let b = 0; b < s; b++) {
              // Bold: one extra pixel column per stroke.
              for (let e = 0; e <= (p.bold ? 1 : 0); e++) {
                const uu = u + a + e;
                const vv = v + b;
                if (p.vertical) this.blend(Math.round(p.x + vv), Math.round(p.y - uu), rgb, 1);
                else this.blend(Math.round(p.x + uu), Math.round(p.y + vv), rgb, 1);
              }
            }
          }
        }
      }
    });
  }
}

function rasterize(prims: Prim[]): Raster {
  const r = new Raster(WIDTH, HEIGHT);
  for (const p of prims) {
    switch (p.kind) {
      case 'rect':
        r.fillRect(p.x, p.y, p.w, p.h, p.fill);
        break;
      case 'line':
        r.stroke([[p.x1, p.y1], [p.x2, p.y2]], p.width, p.color);
        break;
      case 'poly':
        r.stroke(p.pts, p.width, p.color, p.clip);
        break;
      case 'circle':
        r.disk(p.cx, p.cy, p.r + 1, '#ffffff', p.clip);
        r.disk(p.cx, p.cy, p.r, p.fill, p.clip);
        break;
      case 'text':
        r.text(p);
        break;
    }
  }
  return r;
}

/** The report as PNG bytes (the same charts as the SVG). */
export function renderReportPngBuffer(history: History): Buffer {
  const r = rasterize(layout(history));
  const png = new PNG({ width: r.width, height: r.height });
  r.data.copy(png.data);
  return PNG.sync.write(png);
}

/** Write the report as a PNG file. */
export function renderReportPng(history: History, file: string): string {
  writeAtomic(file, renderReportPngBuffer(history));
  return file;
}

/** Write through a temporary file and rename, so a reader never sees half an image. */
function writeAtomic(file: string, data: string | Buffer): void {
  try {
    writeFileAtomic(file, data);
  } catch (e) {
    throw new Error(`cannot write report ${file}: ${(e as Error).message}`);
  }
}

/** Write report.svg and report.png into dir; returns their paths. */
export function writeReport(dir: string, history: History): { svg: string; png: string } {
  const svg = path.join(dir, 'report.svg');
  const png = path.join(dir, 'report.png');
  writeAtomic(svg, renderReportSvg(history));
  renderReportPng(history, png);
  return { svg, png };
}
