// The trainer and CLI on streamed datasets: an ImageNet-layout JPEG folder and the WebDataset shards
// `residual data pack` makes from it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import jpeg from 'jpeg-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Trainer, type Progress } from '../../lib/train/index.js';
import { root } from '../support/helpers.js';

let tmp = '';

/** Two visually distinct classes (horizontal vs vertical stripes), 48x40 JPEGs. */
function makeSplit(dir: string, n: number, seed: number): void {
  for (let k = 0; k < n; k++) {
    const cls = k % 2;
    const d = path.join(dir, cls ? 'vertical' : 'horizontal');
    fs.mkdirSync(d, { recursive: true });
    const w = 48;
    const h = 40;
    const rgba = Buffer.alloc(w * h * 4);
    const period = 4 + ((k + seed) % 5);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const on = Math.floor((cls ? x : y) / period) % 2 === 0;
        const o = 4 * (y * w + x);
        rgba[o] = rgba[o + 1] = rgba[o + 2] = on ? 220 : 30;
        rgba[o + 3] = 255;
      }
    fs.writeFileSync(path.join(d, `${k}.jpg`), jpeg.encode({ data: rgba, width: w, height: h }, 90).data);
  }
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-stream-train-'));
  makeSplit(path.join(tmp, 'folder', 'train'), 96, 0);
  makeSplit(path.join(tmp, 'folder', 'val'), 32, 1);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('training on streamed data', () => {
  it('--data imagefolder: learns the two classes through the streaming path', async () => {
    const t = new Trainer({
      model: 'resnet20',
      data: 'imagefolder',
      dataPath: path.join(tmp, 'folder'),
      imageSize: 32,
      epochs: 3,
      batchSize: 8,
      lr: 0.05,
      device: 'cpu',
      out: path.join(tmp, 'run-folder'),
      workers: 2,
      logEvery: 100,
    });
    const events: Progress[] = [];
    try {
      expect(t.trainSize).toBe(96);
      expect(t.testSize).toBe(32);
      expect(t.stepsPerEpoch).toBe(12); // enough steps for BatchNorm's running statistics to settle
      const res = await t.fit((p) => events.push(p));
      expect(events[0]).toMatchObject({ type: 'start', trainSize: 96, testSize: 32 });
      expect(res.testAcc).toBeGreaterThan(0.8);
    } finally {
      t.dispose();
    }
  });

  it('residual data pack, then residual train --data webdataset', () => {
    const shards = path.join(tmp, 'shards');
    const cli = path.join(root, 'bin', 'residual.js');
    const pack = spawnSync(
      process.execPath,
      [cli, 'data', 'pack', '--data-path', path.join(tmp, 'folder'), '--out', shards, '--shard-size', '32'],
      { encoding: 'utf8' },
    );
    expect(pack.status, pack.stderr).toBe(0);
    expect(pack.stdout).toMatch(/96 images of 2 classes in 3 shard\(s\): .*train-\{000000\.\.000002\}\.tar/);
    expect(JSON.parse(fs.readFileSync(path.join(shards, 'classes.json'), 'utf8'))).toEqual(['horizontal', 'vertical']);
    const train = spawnSync(
      process.execPath,
      [
        cli,
        'train',
        '--model',
        'resnet20',
        '--data',
        'webdataset',
        '--data-path',
        path.join(shards, 'train-{000000..000002}.tar'),
        '--image-size',
        '32',
        '--epochs',
        '1',
        '--batch-size',
        '16',
        '--device',
        'cpu',
        '--out',
        path.join(tmp, 'run-wds'),
        '--json',
      ],
      { encoding: 'utf8' },
    );
    expect(train.status, train.stderr).toBe(0);
    const lines = train.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Progress);
    expect(lines[0]).toMatchObject({ type: 'start', trainSize: 96, testSize: 32 });
    expect(lines.at(-1)!.type).toBe('done');
    const ev = spawnSync(process.execPath, [cli, 'eval', '--checkpoint', path.join(tmp, 'run-wds'), '--device', 'cpu', '--json'], {
      encoding: 'utf8',
    });
    expect(ev.status, ev.stderr).toBe(0);
    expect(JSON.parse(ev.stdout.trim())).toMatchObject({ data: 'webdataset', images: 32 });
    const bad = spawnSync(process.execPath, [cli, 'data', 'pack', '--out', shards], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--data-path and --out are required/);
  });
});
