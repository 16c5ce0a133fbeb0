// The example page (examples/onnx-web) in a real browser: headless Chromium (Debian's `chromium`, driven
// by playwright-core) loads a network exported by residual with onnxruntime-web (WebAssembly) and
// classifies a few images; its predictions equal residual's, its logits agree within float32 rounding.
// The page is served from 127.0.0.1; the browser starts with a fresh profile and no background traffic.
// Without /usr/bin/chromium the test is skipped and says why, unless RESIDUAL_TEST_CHROMIUM=1 (CI), where
// a missing browser is a failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cifarResnet, data, manualSeed, noGrad, tensor } from '../../lib/index.js';
import { exportOnnx } from '../../lib/onnx/index.js';
import { root } from '../support/helpers.js';
import { calibrate, maxDiff, tolerance } from '../support/onnx.js';

const CHROMIUM = process.env.RESIDUAL_CHROMIUM ?? '/usr/bin/chromium';
const required = process.env.RESIDUAL_TEST_CHROMIUM === '1';
const haveChromium = fs.existsSync(CHROMIUM);
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-onnx-web-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('examples/onnx-web in headless Chromium', () => {
  it.runIf(haveChromium || required)('onnxruntime-web in the page gives residual predictions for 12 images', async () => {
    if (!haveChromium) throw new Error(`RESIDUAL_TEST_CHROMIUM=1 but ${CHROMIUM} does not exist (apt-get install chromium)`);
    // A ResNet-20 for 1x28x28 images with meaningful BatchNorm statistics, and 12 synthetic images
    // (the test needs no dataset); the export carries the normalisation, so the page sends pixels / 255.
    manualSeed(5);
    const model = cifarResnet(20, { inChannels: 1 });
    calibrate(model, [1, 28, 28]);
    const ds = data.syntheticImageDataset({ n: 12, channels: 1, size: 28, classes: 10, seed: 9 });
    const pixels = ds.images.toTypedArray() as Uint8Array;
    const labels = Array.from(ds.labels.toTypedArray() as BigInt64Array, Number);
    const mean = [0.3],
      std = [0.35];
    exportOnnx(model, path.join(dir, 'model.onnx'), { inputShape: [1, 28, 28], normalize: { mean, std } });
    const ys = noGrad(() => {
      const x = tensor(
        Float32Array.from(pixels, (p) => p / 255),
        { shape: [12, 1, 28, 28] },
      );
      const xin = x.sub(mean[0]).div(std[0]);
      const y = model.call(xin);
      x.dispose();
      xin.dispose();
      return y;
    });
    const want = ys.toTypedArray() as Float32Array;
    ys.dispose();
    model.dispose();
    const wantPred = Array.from({ length: 12 }, (_, i) => {
      const l = Array.from(want.subarray(i * 10, i * 10 + 10));
      return l.indexOf(Math.max(...l));
    });
    const images = labels.map((label, i) => ({ pixels: Array.from(pixels.subarray(i * 784, (i + 1) * 784)), label }));
    fs.writeFileSync(
      path.join(dir, 'samples.json'),
      JSON.stringify({ classes: ds.classes, shape: [1, 28, 28], images, residual: { predictions: wantPred } }),
    );
    ds.images.dispose();
    ds.labels.dispose();

    const { serve } = (await import(path.join(root, 'examples', 'onnx-web', 'serve.mjs'))) as {
      serve: (o: { port: number; data: string }) => Promise<{ url: string; close(): Promise<void> }>;
    };
    const { chromium } = await import('playwright-core');
    const server = await serve({ port: 0, data: dir });
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1000, height: 520 },
    });
    try {
      const page = await context.newPage();
      const console_: string[] = [];
      page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
      await page.goto(server.url);
      await page.waitForFunction(() => document.body.dataset.done, undefined, { timeout: 120_000 });
      const results = (await page.evaluate(() => (window as unknown as { results: unknown }).results)) as {
        predictions: number[];
        logits: number[][];
        version: string;
        error?: string;
      };
      const statusText = await page.textContent('#status');
      expect(results.error, `page error; console:\n${console_.join('\n')}`).toBeUndefined();
      const got = results.logits.flat();
      const d = maxDiff(got, want);
      console.log(
        `onnx-web: ${statusText}\n  predictions ${JSON.stringify(results.predictions)} (residual ${JSON.stringify(wantPred)}), max |logit diff| ${d.diff.toExponential(2)} (logits up to ${d.scale.toFixed(2)})`,
      );
      expect(results.predictions).toEqual(wantPred);
      expect(d.diff).toBeLessThanOrEqual(tolerance({ scale: d.scale, noise: 0 }));
      if (process.env.RESIDUAL_ONNX_WEB_SCREENSHOT)
        await page.screenshot({ path: process.env.RESIDUAL_ONNX_WEB_SCREENSHOT, fullPage: true });
    } finally {
      await context.close();
      await server.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
  });

  it('the example server answers a malformed or hostile path with 400/403/404 and keeps serving', async () => {
    const { serve } = (await import(path.join(root, 'examples', 'onnx-web', 'serve.mjs'))) as {
      serve: (o: { port: number; data: string }) => Promise<{ url: string; close(): Promise<void> }>;
    };
    const server = await serve({ port: 0, data: dir });
    try {
      const status = async (p: string) => (await fetch(server.url + p.replace(/^\//, ''))).status;
      expect(await status('/%E0%A4%A')).toBe(400); // not UTF-8: decodeURIComponent throws
      expect(await status('/a%00b')).toBe(400); // a NUL byte: fs.stat throws
      expect(await status('/data/..%2f..%2fpackage.json')).toBe(403);
      expect(await status('/nothing.html')).toBe(404);
      expect(await status('/')).toBe(200);
    } finally {
      await server.close();
    }
  });

  it.runIf(!haveChromium && !required)(
    `skipped: no Chromium at ${CHROMIUM} (apt-get install chromium; RESIDUAL_TEST_CHROMIUM=1 makes this a failure)`,
    () => {
      console.warn(`onnx-web: ${CHROMIUM} not found; the browser test of examples/onnx-web did not run`);
    },
  );
});
