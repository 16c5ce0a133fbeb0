// The training state saved with a run (lib/train/state.ts): the normalisation statistics, so that
// `residual eval` reads only the test split (and older checkpoints without them still evaluate, saying
// so); and checkpoint.json checked whole before anything is restored or changed on disk.
// The data is made here: a tiny Fashion-MNIST-named IDX folder (RESIDUAL_DATA) and the synthetic set.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { BadFileError } from '../../lib/core/errors.js';
import { FASHION_MNIST_CLASSES } from '../../lib/data/fashion.js';
import { Trainer, readMetrics, type TrainConfig } from '../../lib/train/index.js';
import { idxBytes } from '../support/format-builders.js';

let tmp = '';
let out: string[] = [];
let err: string[] = [];
const savedEnv = process.env.RESIDUAL_DATA;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-run-state-'));
});
afterAll(() => {
  if (savedEnv === undefined) delete process.env.RESIDUAL_DATA;
  else process.env.RESIDUAL_DATA = savedEnv;
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  out = [];
  err = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
});
afterEach(() => vi.restoreAllMocks());

/** n 28x28 images, seeded pixels; labels i % 10. */
function images(n: number, seed: number): { pixels: Uint8Array; labels: Uint8Array } {
  let s = seed >>> 0;
  const pixels = Uint8Array.from({ length: n * 784 }, (_, i) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s >>> 24) & (i % 3 === 0 ? 0x7f : 0xff);
  });
  return { pixels, labels: Uint8Array.from({ length: n }, (_, i) => i % 10) };
}

describe('normalisation statistics saved with the run', () => {
  it('eval of a run folder reads only the test split; a checkpoint without the statistics recomputes them, saying so', async () => {
    const fm = path.join(tmp, 'fashion');
    fs.mkdirSync(fm);
    const train = images(64, 1);
    const test = images(32, 2);
    const write = (name: string, b: Uint8Array) => fs.writeFileSync(path.join(fm, name), b);
    const trainImages = idxBytes(0x08, [64, 28, 28], train.pixels);
    write('train-images-idx3-ubyte', trainImages);
    write('train-labels-idx1-ubyte', idxBytes(0x08, [64], train.labels));
    write('t10k-images-idx3-ubyte', idxBytes(0x08, [32, 28, 28], test.pixels));
    write('t10k-labels-idx1-ubyte', idxBytes(0x08, [32], test.labels));
    process.env.RESIDUAL_DATA = fm;

    const run = path.join(tmp, 'fm-run');
    expect(
      await main([
        'train',
        '--data',
        'fashion-mnist',
        '--epochs',
        '1',
        '--batch-size',
        '16',
        '--device',
        'cpu',
        '--workers',
        '1',
        '--out',
        run,
      ]),
    ).toBe(0);
    const meta = JSON.parse(fs.readFileSync(path.join(run, 'checkpoint.json'), 'utf8'));
    // The training set's statistics, against a float64 computation here (channelStats computes in float32).
    const n = train.pixels.length;
    const mean = train.pixels.reduce((a, v) => a + v / 255, 0) / n;
    const std = Math.sqrt(train.pixels.reduce((a, v) => a + (v / 255 - mean) ** 2, 0) / (n - 1));
    expect(meta.data.channels).toBe(1);
    expect(meta.data.classes).toEqual(FASHION_MNIST_CLASSES);
    expect(Math.abs(meta.data.mean[0] - mean)).toBeLessThan(1e-6);
    expect(Math.abs(meta.data.std[0] - std)).toBeLessThan(1e-6);
    const last = readMetrics(path.join(run, 'metrics.jsonl'))
      .filter((m) => m.type === 'epoch')
      .at(-1)!;

    // The training images are now unreadable: eval does not need them.
    write('train-images-idx3-ubyte', Buffer.from('not an IDX file'));
    expect(await main(['eval', '--checkpoint', run, '--device', 'cpu', '--json']), err.join('\n')).toBe(0);
    const res = JSON.parse(out.at(-1)!);
    expect(res).toMatchObject({ data: 'fashion-mnist', images: 32, loss: last.testLoss, acc: last.testAcc, epoch: 1 });
    expect(err.join('\n')).not.toMatch(/note:/);

    // A checkpoint from before the statistics were saved: eval reads the training set again, and says so.
    const old = { ...meta };
    delete old.data;
    fs.writeFileSync(path.join(run, 'checkpoint.json'), JSON.stringify(old));
    err = [];
    expect(await main(['eval', '--checkpoint', run, '--device', 'cpu', '--json'])).toBe(1);
    expect(err.join('\n')).toMatch(
      /note: this checkpoint was saved before residual kept the normalisation statistics with a run: reading the training set/,
    );
    expect(err.join('\n')).toMatch(/train-images-idx3-ubyte/);
    write('train-images-idx3-ubyte', trainImages);
    out = [];
    expect(await main(['eval', '--checkpoint', run, '--device', 'cpu', '--json'])).toBe(0);
    expect(JSON.parse(out.at(-1)!)).toMatchObject({ images: 32, loss: last.testLoss, acc: last.testAcc });
  });
});

describe('checkpoint.json is checked whole before anything changes', () => {
  const cfg = (out: string): Partial<TrainConfig> & { model: string } => ({
    model: 'resnet20',
    data: 'synthetic',
    syntheticTrain: 64,
    syntheticTest: 32,
    batchSize: 16,
    epochs: 2,
    lr: 0.05,
    logEvery: 1,
    workers: 1,
    limitTestBatches: 1,
    device: 'cpu',
    schedule: 'constant',
    out,
  });
  let base = '';
  let dir = '';
  /** One Trainer for every refused case: a refused checkpoint changes nothing in it either. */
  let trainer: Trainer;
  beforeAll(async () => {
    base = path.join(tmp, 'base-run');
    const t = new Trainer(cfg(base));
    await t.fit();
    t.dispose();
    dir = path.join(tmp, 'case');
    trainer = new Trainer(cfg(dir));
  });
  afterAll(() => trainer?.dispose());

  /** Every file of a folder, by name: its sha256 (comparing multi-MB Buffers with toEqual takes minutes). */
  const snapshot = (dir: string) =>
    Object.fromEntries(
      fs
        .readdirSync(dir)
        .sort()
        .map((f) => [
          f,
          crypto
            .createHash('sha256')
            .update(fs.readFileSync(path.join(dir, f)))
            .digest('hex'),
        ]),
    );
  /** The case folder made a copy of the base run whose checkpoint.json is `edit`ed (its parsed object, or its text). */
  function mutant(edit: (m: Record<string, any>) => void, text?: (s: string) => string): string {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(base, dir, { recursive: true });
    const f = path.join(dir, 'checkpoint.json');
    const m = JSON.parse(fs.readFileSync(f, 'utf8'));
    edit(m);
    let s = JSON.stringify(m);
    if (text) s = text(s);
    fs.writeFileSync(f, s);
    return dir;
  }
  async function refused(dir: string, message: RegExp): Promise<void> {
    const before = snapshot(dir);
    const e = await trainer
      .fit(() => {}, { resume: true })
      .then(
        () => null,
        (x: unknown) => x,
      );
    expect(e, 'refused').toBeInstanceOf(BadFileError);
    expect((e as Error).message).toMatch(message);
    expect(trainer.epoch, 'nothing was restored').toBe(0);
    expect(snapshot(dir), 'nothing in the run folder changed').toEqual(before);
  }

  const NUMBER = (v: string) => (s: string) => s.replace(/"epoch":2,"globalStep":8/, `"epoch":${v},"globalStep":8`);
  it.each<[string, (m: Record<string, any>) => void, ((s: string) => string) | undefined, RegExp]>([
    ['epoch -5', (m) => (m.epoch = -5), undefined, /checkpoint\.json: epoch must be an integer in \[0, 9007199254740991\], got -5$/],
    ['epoch 1e308', () => {}, NUMBER('1e308'), /checkpoint\.json: epoch must be an integer in \[0, 9007199254740991\], got 1e\+308$/],
    [
      'epoch 1e999 (Infinity)',
      () => {},
      NUMBER('1e999'),
      /checkpoint\.json: epoch must be an integer in \[0, 9007199254740991\], got Infinity$/,
    ],
    ['epoch 0.5', (m) => (m.epoch = 0.5), undefined, /checkpoint\.json: epoch must be an integer in \[0, 9007199254740991\], got 0\.5$/],
    [
      'epoch 1 (the weights are epoch 2)',
      (m) => (m.epoch = 1),
      undefined,
      /checkpoint\.json: weights must be the weights file of epoch 1, step 8/,
    ],
    [
      'globalStep 2**60',
      () => {},
      (s) => s.replace('"globalStep":8', '"globalStep":1152921504606846976'),
      /checkpoint\.json: globalStep must be an integer in \[0, 9007199254740991\], got 1152921504606847000$/,
    ],
    [
      'version 2',
      (m) => (m.version = 2),
      undefined,
      /checkpoint\.json: version must be 1 \(the version this residual reads; a newer residual wrote this file\?\), got 2$/,
    ],
    ['worldSize "2"', (m) => (m.worldSize = '2'), undefined, /checkpoint\.json: worldSize must be an integer in \[1, 1048576\], got "2"$/],
    [
      'weights ../other/...',
      (m) => (m.weights = `../other/${m.weights}`),
      undefined,
      /checkpoint\.json: weights must be a file name like .* in the checkpoint's folder, got "\.\.\/other\/checkpoint-e0002/,
    ],
    [
      'weights absolute',
      (m) => (m.weights = path.join(base, m.weights)),
      undefined,
      /checkpoint\.json: weights must be a file name like .*, got "\//,
    ],
    [
      'config.batchSize 0',
      (m) => (m.config.batchSize = 0),
      undefined,
      /checkpoint\.json: config\.batchSize must be an integer in \[1, 65536\], got 0$/,
    ],
    [
      'config.schedule unknown',
      (m) => (m.config.schedule = 'step'),
      undefined,
      /checkpoint\.json: config\.schedule must be one of onecycle, cosine, multistep, constant, got step$/,
    ],
    ['epoch beyond config.epochs', (m) => (m.config.epochs = 1), undefined, /checkpoint\.json: epoch must be at most config\.epochs \(1\)/],
    ['an unknown key', (m) => (m.extra = 1), undefined, /checkpoint\.json: extra is not a key of this format \(unknown key\)$/],
    ['a key twice', () => {}, (s) => s.replace('{', '{"epoch":1,'), /checkpoint\.json is not valid JSON \(duplicate key "epoch"/],
    ['not JSON', () => {}, (s) => s.slice(0, 100), /checkpoint\.json is not valid JSON/],
    [
      'scheduler.lastEpoch',
      (m) => (m.scheduler.lastEpoch = 3),
      undefined,
      /checkpoint\.json: scheduler\.lastEpoch must equal globalStep \(8\)/,
    ],
    [
      'scheduler of another kind',
      (m) => (m.scheduler.type = 'CosineAnnealingLR'),
      undefined,
      /checkpoint\.json: scheduler does not fit this run's schedule/,
    ],
    ['history.steps', (m) => (m.history.steps = 'x'), undefined, /checkpoint\.json: history\.steps must be an array, got "x"$/],
    [
      'history step beyond globalStep',
      (m) => (m.history.steps[0].step = 9),
      undefined,
      /checkpoint\.json: history\.steps\[0\]\.step must be an integer in \[0, 8\], got 9$/,
    ],
    ['data.std', (m) => (m.data.std = [-1]), undefined, /checkpoint\.json: data\.std\[0\] must be a number > 0, got -1$/],
    [
      'data.mean per channel',
      (m) => (m.data.mean = [0, 0, 0]),
      undefined,
      /checkpoint\.json: data\.mean must have one value per channel \(1\), has 3$/,
    ],
    [
      'optimizer lr a string',
      (m) => (m.optimizer.paramGroups[0].lr = '0.1'),
      undefined,
      /checkpoint\.json: optimizer\.paramGroups\[0\]\.lr must be a number, got "0\.1"$/,
    ],
    [
      'optimizer param ids twice',
      (m) => (m.optimizer.paramGroups[1].params[0] = 0),
      undefined,
      /checkpoint\.json: optimizer\.paramGroups\[1\]\.params\[0\] names a parameter id twice, got 0$/,
    ],
    [
      'optimizer groups',
      (m) => m.optimizer.paramGroups.pop(),
      undefined,
      /checkpoint\.json: optimizer\.paramGroups must have 2 groups \(this optimizer's\), has 1$/,
    ],
    ['sha256', (m) => (m.sha256 = 'x'), undefined, /checkpoint\.json: sha256 must be 64 lowercase hex digits, got "x"$/],
    ['checksum', (m) => (m.sha256 = '0'.repeat(64)), undefined, /does not match the checksum recorded in/],
  ])('%s: refused with a BadFileError naming the key; the run folder is untouched', async (_name, edit, text, message) => {
    await refused(mutant(edit, text), message);
  });

  it('epoch 0.5 used to drop the finished epochs from metrics.jsonl before failing: now they stay', async () => {
    mutant((m) => (m.epoch = 0.5));
    const epochs = () =>
      readMetrics(path.join(dir, 'metrics.jsonl'))
        .filter((r) => r.type === 'epoch')
        .map((r) => r.epoch);
    expect(epochs()).toEqual([1, 2]);
    await refused(dir, /epoch must be an integer/);
    expect(epochs()).toEqual([1, 2]);
    // and through the CLI, which reads the run's settings from the same file first
    err = [];
    expect(await main(['train', '--resume', '--out', dir])).toBe(1);
    expect(err.join('\n')).toMatch(/^residual train: .*checkpoint\.json: epoch must be an integer in \[0, 9007199254740991\], got 0\.5$/);
    expect(epochs()).toEqual([1, 2]);
  });

  it('a saved config naming another network: the weights do not fit, and nothing changes (CLI)', async () => {
    mutant((m) => (m.config.model = 'resnet32'));
    const before = snapshot(dir);
    expect(await main(['train', '--resume', '--out', dir, '--epochs', '3'])).toBe(1);
    expect(err.join('\n')).toMatch(/the model's model\.layer1\.3\.conv1\.weight, .* and \d+ more are missing/);
    expect(err.join('\n')).toMatch(/the checkpoint does not fit this run's model and optimizer/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('the unchanged checkpoint resumes', async () => {
    mutant(() => {});
    const t = new Trainer({ ...cfg(dir), epochs: 3 });
    await t.fit(() => {}, { resume: true });
    t.dispose();
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')).epoch).toBe(3);
  });
});
