// TensorBoard reads what a training run writes: TensorBoard's own reader (EventAccumulator and
// EventFileLoader, from the Python tensorboard package) loads the event files of a short run and of a run
// that was interrupted after its first checkpoint and resumed. Every scalar equals metrics.jsonl (as the
// float32 TensorBoard stores), the weight and gradient-norm histograms, the config text and report.png
// are there, and no step is written twice (also without TensorBoard's purge of orphaned data).
//
// Needs a Python with the tensorboard package: RESIDUAL_TEST_PYTHON (scripts/ci/setup-python-torch.sh
// makes one under .cache/python-torch), else .cache/python-torch, else python3 if it has tensorboard.
// When RESIDUAL_TEST_PYTHON_TENSORBOARD=1 (CI) the test must run: a missing tensorboard is then a failure.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { encodeEvent } from '../../lib/tensorboard/proto.js';
import { frameRecord } from '../../lib/tensorboard/record.js';
import { SummaryWriter, listEventFiles } from '../../lib/tensorboard/index.js';
import { Trainer, loadCheckpoint, readMetrics, type TrainConfig } from '../../lib/train/index.js';
import { layerWeights } from '../../lib/models/gradient-norms.js';
import { root } from '../support/helpers.js';

const required = process.env.RESIDUAL_TEST_PYTHON_TENSORBOARD === '1';

async function findPython(): Promise<string | null> {
  const candidates = [process.env.RESIDUAL_TEST_PYTHON, path.join(root, '.cache', 'python-torch', 'bin', 'python'), 'python3'].filter(
    Boolean,
  ) as string[];
  for (const py of candidates) {
    const ok = await new Promise<boolean>((resolve) =>
      execFile(py, ['-c', 'import tensorboard'], { timeout: 120_000 }, (err) => resolve(!err)),
    );
    if (ok) return py;
  }
  return null;
}
const python = await findPython();

interface Read {
  accumulator: {
    file_version: number;
    scalars: Record<string, [number, number][]>;
    histograms: Record<
      string,
      { step: number; num: number; min: number; max: number; sum: number; sum_squares: number; bucket_total: number; buckets: number }[]
    >;
    images: Record<string, { step: number; width: number; height: number; bytes: number }[]>;
    text: Record<string, [number, string][]>;
  };
  unpurged: Record<string, number[]>;
  files: { name: string; events: { step: number; kind: string; tags: string[] }[] }[];
}

function readWithTensorBoard(dir: string): Promise<Read> {
  return new Promise((resolve, reject) =>
    execFile(
      python!,
      [path.join(root, 'test', 'fixtures', 'tensorboard', 'read_events.py'), dir],
      { timeout: 120_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`read_events.py failed: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout) as Read),
    ),
  );
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tb-run-'));
const STEPS_PER_EPOCH = 4;
const small = (out: string): Partial<TrainConfig> & { model: string } => ({
  model: 'resnet20',
  data: 'synthetic',
  syntheticTrain: 128,
  syntheticTest: 64,
  batchSize: 32,
  epochs: 2,
  lr: 0.05,
  logEvery: 1,
  limitTestBatches: 1,
  workers: 2,
  device: 'cpu',
  out,
  tensorboard: true,
});

/** The scalars metrics.jsonl says TensorBoard must hold: tag -> [step, value] (values as float32). */
function expectedScalars(dir: string): Record<string, [number, number][]> {
  const want: Record<string, [number, number][]> = {};
  const put = (tag: string, step: number, v: unknown) => {
    if (typeof v === 'number') (want[tag] ??= []).push([step, Math.fround(v)]);
  };
  for (const m of readMetrics(path.join(dir, 'metrics.jsonl'))) {
    if (m.type === 'step') {
      const s = m.step as number;
      put('loss/train', s, m.loss);
      put('accuracy/train', s, m.acc);
      put('learning_rate', s, m.lr);
      put('images_per_sec', s, m.imagesPerSec);
    } else if (m.type === 'epoch') {
      const s = (m.epoch as number) * STEPS_PER_EPOCH;
      put('loss/train_epoch', s, m.trainLoss);
      put('accuracy/train_epoch', s, m.trainAcc);
      put('loss/test', s, m.testLoss);
      put('accuracy/test', s, m.testAcc);
      put('epoch_seconds', s, m.seconds);
    }
  }
  return want;
}

/** What a run's files must show after `epochs` epochs, read by TensorBoard. */
function checkRun(dir: string, r: Read, model: string[], epochs: number): void {
  const endSteps = Array.from({ length: epochs }, (_, i) => (i + 1) * STEPS_PER_EPOCH);
  const acc = r.accumulator;
  expect(acc.file_version).toBe(2);
  // Every scalar equals metrics.jsonl; the others are the per-layer gradient norms.
  const want = expectedScalars(dir);
  const normTags = model.map((n) => `gradient_norm/${n}`);
  expect(Object.keys(acc.scalars).sort()).toEqual([...Object.keys(want), ...normTags].sort());
  for (const [tag, points] of Object.entries(want)) expect(acc.scalars[tag], tag).toEqual(points);
  const logged = want['loss/train'].map(([s]) => s);
  expect(logged).toEqual(Array.from({ length: epochs * STEPS_PER_EPOCH }, (_, i) => i + 1));
  for (const t of normTags) {
    expect(
      acc.scalars[t].map(([s]) => s),
      t,
    ).toEqual(logged);
    for (const [, v] of acc.scalars[t]) expect(v > 0 && Number.isFinite(v), `${t} = ${v}`).toBe(true);
  }
  // The gradient-norm histogram at each logged step holds the same per-layer numbers.
  expect(acc.histograms.gradient_norm.map((h) => h.step)).toEqual(logged);
  acc.histograms.gradient_norm.forEach((h, i) => {
    const norms = normTags.map((t) => acc.scalars[t][i][1]);
    expect(h.num).toBe(model.length);
    expect(h.bucket_total).toBe(model.length);
    expect(Math.fround(h.min)).toBe(Math.min(...norms));
    expect(Math.fround(h.max)).toBe(Math.max(...norms));
  });
  // Weights: every parameter at step 0 and at the end of each epoch; the last equals the checkpoint's.
  const weights = Object.fromEntries(
    Object.entries(loadCheckpoint(dir).tensors).flatMap(([k, v]) => (k.startsWith('model.') ? [[k.slice(6), v]] : [])),
  );
  const params = Object.keys(weights).filter((k) => !/running_|num_batches/.test(k));
  expect(
    Object.keys(acc.histograms)
      .filter((t) => t.startsWith('weights/'))
      .sort(),
  ).toEqual(params.map((k) => `weights/${k}`).sort());
  for (const k of params) {
    const h = acc.histograms[`weights/${k}`];
    expect(
      h.map((x) => x.step),
      k,
    ).toEqual([0, ...endSteps]);
    const v = weights[k].toTypedArray() as Float32Array;
    const last = h.at(-1)!;
    expect(last.num).toBe(v.length);
    expect(last.bucket_total).toBe(v.length);
    expect(last.min).toBe(Math.min(...v));
    expect(last.max).toBe(Math.max(...v));
    const sum = v.reduce((a, b) => a + b, 0);
    expect(Math.abs(last.sum - sum)).toBeLessThanOrEqual(
      1e-9 *
        Math.max(
          1,
          v.reduce((a, b) => a + Math.abs(b), 0),
        ),
    );
  }
  // The config as text at step 0, report.png as an image at the last step.
  expect(acc.text.config[0][0]).toBe(0);
  expect(acc.text.config[0][1]).toMatch(/\| model \| resnet20 \|/);
  expect(acc.text.config[0][1]).toMatch(/\| lr \| 0\.05 \|/);
  const png = PNG.sync.read(fs.readFileSync(path.join(dir, 'report.png')));
  const report = acc.images.report.at(-1)!;
  expect(report).toEqual({
    step: epochs * STEPS_PER_EPOCH,
    width: png.width,
    height: png.height,
    bytes: fs.statSync(path.join(dir, 'report.png')).size,
  });
  // No step twice: without purging either, and in the files themselves.
  for (const [tag, steps] of Object.entries(r.unpurged)) expect(new Set(steps).size, tag).toBe(steps.length);
  const seen = new Set<string>();
  for (const f of r.files)
    for (const e of f.events)
      for (const t of e.tags) {
        const key = `${t}@${e.step}`;
        expect(seen.has(key), `${key} written twice (${f.name})`).toBe(false);
        seen.add(key);
      }
}

describe('TensorBoard reads the event files of a training run (needs Python with tensorboard)', () => {
  it.runIf(python !== null || required)(
    'a short run, then the same run interrupted and resumed: scalars equal metrics.jsonl, histograms, text and image present, no step twice',
    async () => {
      if (!python)
        throw new Error(
          'RESIDUAL_TEST_PYTHON_TENSORBOARD=1 but no Python with tensorboard was found: run scripts/ci/setup-python-torch.sh (or set RESIDUAL_TEST_PYTHON)',
        );
      // A short run: one epoch (the run stops there, with its checkpoint and report).
      const dir = tmp();
      const t1 = new Trainer(small(dir));
      const model = layerWeights(t1.model).map(([n]) => n);
      expect(model.length).toBe(20); // ResNet-20: 19 convolutions and the classifier
      await t1.fit(() => {}, { stopAfterEpochs: 1 });
      const short = await readWithTensorBoard(dir);
      checkRun(dir, short, model, 1);
      expect(short.files.length).toBe(1);

      // Continued, then killed while saving epoch 2's checkpoint, after epoch 2's events were written ...
      t1.crashAt = 'after-weights';
      await expect(t1.fit(() => {}, { resume: true })).rejects.toThrow(/simulated crash/);
      t1.dispose();
      // ... in the middle of writing a record.
      const files = listEventFiles(dir);
      expect(files.length).toBe(2);
      const torn = frameRecord(encodeEvent({ wall_time: 1, step: 99, summary: { value: [{ tag: 'loss/train', simple_value: 1 }] } }));
      fs.appendFileSync(files[1], torn.subarray(0, torn.length - 3));
      const crashed = await readWithTensorBoard(dir);
      expect(crashed.unpurged['loss/train']).toEqual([1, 2, 3, 4, 5, 6, 7, 8]); // epoch 2's steps are there; the cut-off record is not read
      expect(crashed.files[1].events.at(-1)!.step).not.toBe(99);
      // TensorBoard honours the restart marker by itself: in a copy of these files, a restart's file that
      // starts with SessionLog START at step 5 (PyTorch's purge_step) hides epoch 2's orphaned events
      // from its reader even without the truncation a resume also does.
      const copy = tmp();
      for (const f of files) fs.copyFileSync(f, path.join(copy, path.basename(f)));
      const w = new SummaryWriter(copy, { purgeStep: 5 });
      w.addScalar('loss/train', 0.5, 5);
      w.close();
      const purged = await readWithTensorBoard(copy);
      expect(purged.unpurged['loss/train']).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 5]);
      expect(purged.accumulator.scalars['loss/train'].map(([st]) => st)).toEqual([1, 2, 3, 4, 5]);

      // Resumed from epoch 1's checkpoint: epoch 2 runs again, and its events are in the files once.
      const t2 = new Trainer(small(dir));
      await t2.fit(() => {}, { resume: true });
      t2.dispose();
      const resumed = await readWithTensorBoard(dir);
      checkRun(dir, resumed, model, 2);
      expect(resumed.files.length).toBe(3);
      // Each restart's file opens with SessionLog START at the first step it writes again (PyTorch's purge_step).
      for (const f of resumed.files.slice(1))
        expect(f.events.slice(0, 2)).toEqual([
          { step: 0, kind: 'file_version', tags: [] },
          { step: 5, kind: 'session_log', tags: [] },
        ]);
      // The short run's numbers are still there, unchanged; the config of each start; the report of each stop.
      for (const tag of Object.keys(expectedScalars(dir)))
        expect(resumed.accumulator.scalars[tag].slice(0, short.accumulator.scalars[tag].length), tag).toEqual(
          short.accumulator.scalars[tag],
        );
      expect(resumed.accumulator.text.config.map(([s]) => s)).toEqual([0, 5]);
      expect(resumed.accumulator.images.report.map((i) => i.step)).toEqual([4, 8]);
    },
  );
});
