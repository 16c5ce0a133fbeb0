// Metrics JSON lines and the training report (SVG and PNG).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { History, MetricsWriter, historyFromMetrics, readMetrics } from '../../lib/train/metrics.js';
import { Resvg } from '@resvg/resvg-js';
import { renderReportPngBuffer, renderReportSvg, reportData, writeReport } from '../../lib/train/report.js';
import { pngSize } from '../../lib/viz/charts.js';

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
    epochs.push({
      epoch: e,
      trainLoss: 2 * Math.exp(-e) + 0.3,
      trainAcc: 0.6 + 0.1 * e,
      testLoss: 2 * Math.exp(-e) + 0.4,
      testAcc: 0.55 + 0.1 * e,
      seconds: 12.5,
    });
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
    expect(h.steps.map((s) => [s.step, s.loss])).toEqual([
      [1, 2.5],
      [2, 2.2],
    ]);
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
  /** The line paths of the SVG: the first point's values (Vega's aria-label) and every point's position. */
  function lines(svg: string): { label: string; series: string; first: number; points: number[][]; pieces: number }[] {
    const re =
      /<path aria-label="epoch: [\d.e-]+; ([^:]+): ([-\d.e]+); series: ([^"]+)" role="graphics-symbol" aria-roledescription="line mark" d="([^"]+)"/g;
    return [...svg.matchAll(re)].map(([, label, first, series, d]) => ({
      label,
      series,
      first: Number(first),
      points: d
        .split(/[ML]/)
        .filter(Boolean)
        .map((p) => p.split(',').map(Number)),
      pieces: (d.match(/M/g) ?? []).length,
    }));
  }

  test("the plotted numbers are the history's", () => {
    const h = history();
    const data = reportData(h);
    const of = (chart: string, series: string) => data.filter((p) => p.chart === chart && p.series === series);
    expect(of('loss', 'train, per step').map((p) => p.value)).toEqual(h.steps.map((s) => s.loss));
    expect(of('loss', 'test, epoch').map((p) => [p.epoch, p.value])).toEqual(h.epochs.map((e) => [e.epoch, e.testLoss]));
    expect(of('accuracy', 'train, epoch').map((p) => p.value)).toEqual(h.epochs.map((e) => 100 * e.trainAcc));
    // Steps of epoch e are spread over (e - 1, e].
    expect(
      of('loss', 'train, per step')
        .map((p) => p.epoch)
        .slice(0, 2),
    ).toEqual([1 / 50, 2 / 50]);
    expect(of('loss', 'train, per step')[149].epoch).toBe(3);
  });

  test('SVG: parses, both charts with their curves, axes, legend, summary and an escaped title', async () => {
    const h = history();
    const svg = await renderReportSvg(h);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(() => new Resvg(svg)).not.toThrow(); // well-formed XML that an SVG renderer reads
    expect(svg).toContain('font-family="DejaVu Sans, Verdana, Arial, sans-serif"');
    expect(svg).toContain('>ResNet-20 &lt;test&gt; &amp; report</text>');
    for (const t of ['>epoch<', '>loss<', '>accuracy (%)<', '>train, per step (smoothed)<', '>train, epoch<', '>test, epoch<'])
      expect(svg).toContain(t);
    expect(svg).toContain('>epoch 3  |  train loss 0.3996, acc 90.00%  |  test loss 0.4996, acc 85.00%  |  time 37.5s<');
    // Per chart: raw steps, smoothed steps, train epochs, test epochs; the first point's value is the history's.
    const ls = lines(svg);
    expect(ls.map((l) => `${l.label}: ${l.series}`)).toEqual([
      'loss: train, per step',
      'loss: train, per step (smoothed)',
      'loss: train, epoch',
      'loss: test, epoch',
      'accuracy (%): train, per step',
      'accuracy (%): train, per step (smoothed)',
      'accuracy (%): train, epoch',
      'accuracy (%): test, epoch',
    ]);
    expect(ls[0].points.length).toBe(150);
    expect(ls[0].first).toBeCloseTo(h.steps[0].loss, 8);
    expect(ls[3].first).toBeCloseTo(h.epochs[0].testLoss!, 8);
    expect(ls[7].first).toBeCloseTo(100 * h.epochs[0].testAcc!, 8);
    const [train, test] = [ls[2].points, ls[3].points];
    expect(train.length).toBe(3);
    for (let e = 0; e < 3; e++) {
      expect(test[e][0]).toBeCloseTo(train[e][0], 6);
      expect(test[e][1]).toBeLessThan(train[e][1]); // higher loss: higher on the page, smaller y
    }
    expect(train[0][1]).toBeLessThan(train[1][1]); // the loss falls: y grows left to right
    expect(train[1][0] - train[0][0]).toBeCloseTo(train[2][0] - train[1][0], 6); // epochs equally spaced
  });

  test('non-finite losses break the line instead of breaking the chart', async () => {
    const h = history();
    h.steps[60].loss = NaN;
    h.steps[61].loss = Infinity;
    expect(reportData(h).filter((p) => p.value === null).length).toBe(2);
    const svg = await renderReportSvg(h);
    expect(svg).not.toMatch(/NaN|Infinity/);
    const raw = lines(svg).find((l) => l.label === 'loss' && l.series === 'train, per step')!;
    expect(raw.pieces).toBe(2);
    expect(raw.points.length).toBe(148);
  });

  test("writeReport writes the SVG and a PNG of it: signature, size, the curves' colours", async () => {
    const out = await writeReport(path.join(tmp, 'rep'), history());
    expect(out).toEqual({ svg: path.join(tmp, 'rep', 'report.svg'), png: path.join(tmp, 'rep', 'report.png') });
    const svg = fs.readFileSync(out.svg, 'utf8');
    const [, w, hgt] = /^<svg [^>]*width="(\d+)" height="(\d+)"/.exec(svg)!;
    const bytes = fs.readFileSync(out.png);
    expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(pngSize(bytes)).toEqual({ width: Number(w), height: Number(hgt) });
    const png = PNG.sync.read(bytes);
    expect([png.width, png.height]).toEqual([Number(w), Number(hgt)]);
    const count = (rgb: [number, number, number], tol: number) => {
      let n = 0;
      for (let i = 0; i < png.data.length; i += 4) {
        if (Math.abs(png.data[i] - rgb[0]) <= tol && Math.abs(png.data[i + 1] - rgb[1]) <= tol && Math.abs(png.data[i + 2] - rgb[2]) <= tol)
          n++;
      }
      return n;
    };
    expect(count([0xe0, 0x66, 0x1b], 10)).toBeGreaterThan(200); // test curves, markers, legend
    expect(count([0x1f, 0x4e, 0x9c], 10)).toBeGreaterThan(200); // train epoch curves
    expect(count([0, 0, 0], 60)).toBeGreaterThan(1000); // text: the title and summary
    expect(count([255, 255, 255], 0)).toBeGreaterThan(png.width * png.height * 0.5); // mostly white
    expect(() => pngSize(Buffer.from('not a png at all, not at all'))).toThrow(/not a PNG/);
  });

  test('empty history and bad history', async () => {
    const buf = await renderReportPngBuffer({ steps: [], epochs: [] });
    expect(pngSize(buf).width).toBeGreaterThan(100);
    const svg = await renderReportSvg({ steps: [], epochs: [] });
    expect(svg).toContain('>loss: no data<');
    expect(svg).toContain('>no metrics recorded<');
    await expect(renderReportSvg({ steps: [{ step: 1, epoch: 1 } as never], epochs: [] })).rejects.toThrow(
      /steps\[0\] needs numeric 'epoch' and 'loss'/,
    );
    await expect(renderReportSvg({} as History)).rejects.toThrow(/history must be/);
  });
});
