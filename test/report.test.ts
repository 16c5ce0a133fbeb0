// Metrics JSON lines and the training report (SVG and PNG).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { History, MetricsWriter, historyFromMetrics, readMetrics } from '../lib/train/metrics.js';
import { niceTicks, renderReportPngBuffer, renderReportSvg, writeReport } from '../lib/train/report.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-report-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** 3 epochs of 50 steps with a decaying loss; test values per epoch. */
function history(): History {
  const steps = [];
  const epochs = [];
  let step = 0;
  for (let e = 1; e <= 3; e++) {
    for (let k = 0; k < 50; k++) {
      step++;
      const loss = 2 * Math.exp(-step / 40) + 0.3 + 0.1 * Math.sin(step);
      steps.push({ step, epoch: e, loss, acc: 1 - loss / 2.5, lr: 0.1 });
    }
    epochs.push({ epoch: e, trainLoss: 2 * Math.exp(-e) + 0.3, trainAcc: 0.6 + 0.1 * e, testLoss: 2 * Math.exp(-e) + 0.4, testAcc: 0.55 + 0.1 * e, seconds: 12.5 });
  }
  return { steps, epochs, title: 'ResNet-20 <test> & report' };
}

describe('metrics', () => {
  test('JSON lines round trip, NaN kept, resumed runs keep the latest record', () => {
    const file = path.join(tmp, 'run', 'metrics.jsonl');
    const w = new MetricsWriter(file);
    w.step({ step: 1, epoch: 1, loss: 2.5, acc: 0.1, lr: 0.1 });
    w.step({ step: 2, epoch: 1, loss: NaN });
    w.epoch({ epoch: 1, trainLoss: 2.4, trainAcc: 0.12, testLoss: 2.3, testAcc: 0.15, seconds: 3 });
    w.close();
    expect(() => w.step({ step: 3, epoch: 1, loss: 1 })).toThrow(/write after close/);
    // A resumed run appends: step 2 again, with its new value.
    const w2 = new MetricsWriter(file);
    w2.step({ step: 2, epoch: 1, loss: 2.2 });
    w2.eval({ loss: 0.5, acc: 0.9 });
    w2.close();

    const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    expect(lines.length).toBe(5);
    expect(JSON.parse(lines[0])).toEqual({ type: 'step', step: 1, epoch: 1, loss: 2.5, acc: 0.1, lr: 0.1 });
    const recs = readMetrics(file);
    expect(recs.map((r) => r.type)).toEqual(['step', 'step', 'epoch', 'step', 'eval']);
    expect(Number.isNaN(recs[1].loss)).toBe(true);
    const h = historyFromMetrics(recs, 'x');
    expect(h.steps.map((s) => [s.step, s.loss])).toEqual([[1, 2.5], [2, 2.2]]);
    expect(h.epochs).toEqual([{ epoch: 1, trainLoss: 2.4, trainAcc: 0.12, testLoss: 2.3, testAcc: 0.15, seconds: 3 }]);
    expect(h.title).toBe('x');
  });

  test('a cut-off last line is skipped; a bad line elsewhere is an error with its line number', () => {
    const file = path.join(tmp, 'cut.jsonl');
    fs.writeFileSync(file, '{"type":"step","step":1,"epoch":1,"loss":1}\n{"type":"step","st');
    expect(readMetrics(file).length).toBe(1);
    fs.writeFileSync(file, '{"type":"step","step":1,"epoch":1,"loss":1}\nnot json\n{"type":"eval","loss":1,"acc":1}\n');
    expect(() => readMetrics(file)).toThrow(new RegExp(`${file.replace(/[.]/g, '\\.')}:2: not a JSON line`));
    fs.writeFileSync(file, '[1,2]\n');
    expect(() => readMetrics(file)).toThrow(/:1: expected an object with a string 'type'/);
    expect(() => readMetrics(path.join(tmp, 'missing.jsonl'))).toThrow(/cannot read metrics file .*missing\.jsonl/);
  });
});

describe('report', () => {
  test('niceTicks', () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0, 3, 3)).toEqual([0, 1, 2, 3]);
    // Spacing from 1, 2, 2.5, 5 x 10^k: at most about `count` intervals.
    expect(niceTicks(40, 93, 5)).toEqual([40, 60, 80]);
    expect(niceTicks(0.013, 0.1, 4)).toEqual([0.025, 0.05, 0.075, 0.1]);
    expect(niceTicks(-3, 3, 6)).toEqual([-3, -2, -1, 0, 1, 2, 3]);
  });

  test('SVG has both charts, the curves, axes, legend and an escaped title', () => {
    const h = history();
    const svg = renderReportSvg(h);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="540"')).toBe(true);
    expect(svg).toContain('<title>ResNet-20 &lt;test&gt; &amp; report</title>');
    for (const t of ['>Loss<', '>Accuracy<', '>epoch<', '>loss<', '>accuracy (%)<', '>train, per step (smoothed)<', '>train, epoch<', '>test, epoch<']) {
      expect(svg).toContain(t);
    }
    expect(svg).toContain('epoch 3  |  train loss 0.3996, acc 90.00%  |  test loss 0.4996, acc 85.00%  |  time 37.5s');
    // Per chart: raw steps, smoothed steps, train epochs, test epochs.
    const curves = [...svg.matchAll(/<polyline class="curve" points="([^"]+)" fill="none" stroke="(#[0-9a-f]{6})"/g)];
    expect(curves.length).toBe(8);
    const pointsOf = (i: number) => curves[i][1].split(' ').map((p) => p.split(',').map(Number));
    expect(pointsOf(0).length).toBe(150);
    expect(pointsOf(2).length).toBe(3);
    expect(pointsOf(3).length).toBe(3);
    // The test loss curve lies below (larger y) nothing: it is above the train curve in value, so
    // smaller in SVG y at every epoch; and the loss decreases, so y grows left to right.
    const train = pointsOf(2);
    const testLoss = pointsOf(3);
    for (let e = 0; e < 3; e++) {
      expect(testLoss[e][0]).toBeCloseTo(train[e][0], 6);
      expect(testLoss[e][1]).toBeLessThan(train[e][1]);
    }
    expect(train[0][1]).toBeLessThan(train[1][1]);
    // Epoch points sit at x = 1, 2, 3 on one axis: equally spaced.
    expect(train[1][0] - train[0][0]).toBeCloseTo(train[2][0] - train[1][0], 6);
    // 6 markers per chart.
    expect((svg.match(/<circle /g) ?? []).length).toBe(12 + 4);
  });

  test('non-finite losses break the line instead of breaking the chart', () => {
    const h = history();
    h.steps[60].loss = NaN;
    h.steps[61].loss = Infinity;
    const svg = renderReportSvg(h);
    expect(svg).not.toMatch(/NaN|Infinity/);
    // The raw loss line is now two pieces.
    const raw = [...svg.matchAll(/<polyline class="curve" points="([^"]+)" fill="none" stroke="#b9d4ea"/g)];
    expect(raw.length).toBe(3);
  });

  test('writeReport writes a readable PNG and the SVG', () => {
    const out = writeReport(path.join(tmp, 'rep'), history());
    expect(out).toEqual({ svg: path.join(tmp, 'rep', 'report.svg'), png: path.join(tmp, 'rep', 'report.png') });
    expect(fs.readFileSync(out.svg, 'utf8')).toContain('</svg>');
    const png = PNG.sync.read(fs.readFileSync(out.png));
    expect([png.width, png.height]).toEqual([1100, 540]);
    // Not blank: count pixels of the curve colours and of dark (text, axes) ink.
    const count = (rgb: [number, number, number], tol: number) => {
      let n = 0;
      for (let i = 0; i < png.data.length; i += 4) {
        if (Math.abs(png.data[i] - rgb[0]) <= tol && Math.abs(png.data[i + 1] - rgb[1]) <= tol && Math.abs(png.data[i + 2] - rgb[2]) <= tol) n++;
      }
      return n;
    };
    expect(count([0xe0, 0x66, 0x1b], 10)).toBeGreaterThan(200); // test curves, markers, legend
    expect(count([0x1f, 0x4e, 0x9c], 10)).toBeGreaterThan(200); // train epoch curves
    expect(count([0x22, 0x22, 0x22], 10)).toBeGreaterThan(2000); // text
    expect(count([255, 255, 255], 0)).toBeGreaterThan(1100 * 540 * 0.5); // mostly white
    // Left chart area: the loss curve starts high at the left (x near 90) and ends low at the right.
    const inkRows = (x: number) => {
      const rows: number[] = [];
      for (let y = 122; y < 412; y++) {
        const i = (y * 1100 + x) * 4;
        if (png.data[i + 2] > png.data[i] + 40) rows.push(y); // blue-ish
      }
      return rows;
    };
    const leftRows = inkRows(95);
    const rightRows = inkRows(500);
    expect(leftRows.length).toBeGreaterThan(0);
    expect(rightRows.length).toBeGreaterThan(0);
    expect(Math.min(...leftRows)).toBeLessThan(Math.min(...rightRows));
  });

  test('empty history and bad history', () => {
    const buf = renderReportPngBuffer({ steps: [], epochs: [] });
    expect(PNG.sync.read(buf).width).toBe(1100);
    expect(renderReportSvg({ steps: [], epochs: [] })).toContain('>no data<');
    expect(() => renderReportSvg({ steps: [{ step: 1, epoch: 1 } as never], epochs: [] })).toThrow(/steps\[0\] needs numeric 'epoch' and 'loss'/);
    expect(() => renderReportSvg({} as History)).toThrow(/history must be/);
  });
});
