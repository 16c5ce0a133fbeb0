// The trainer: a step learns, checkpoints round-trip, --resume equals an uninterrupted run bit for bit
// (CPU), a crash while saving never destroys the last good checkpoint, training runs in a worker.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as r from '../lib/index.js';
import { Trainer, loadCheckpoint, readMetrics, saveCheckpoint, type TrainConfig } from '../lib/train/index.js';
import { root } from './helpers.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'residual-train-'));
const small = (out: string, extra: Partial<TrainConfig> = {}): Partial<TrainConfig> & { model: string } => ({
  model: 'resnet20',
  data: 'synthetic',
  syntheticTrain: 256,
  syntheticTest: 128,
  batchSize: 32,
  epochs: 2,
  lr: 0.05,
  logEvery: 1,
  workers: 2,
  device: 'cpu',
  out,
  ...extra,
});
const stepLosses = (dir: string) => readMetrics(path.join(dir, 'metrics.jsonl')).filter((m) => m.type === 'step').map((m) => [m.step, m.loss]);

describe('trainer', () => {
  it('trains: loss falls, accuracy rises well above chance, report and weights are written', async () => {
    const out = tmp();
    const t = new Trainer(small(out, { epochs: 3, syntheticTrain: 384, schedule: 'onecycle', lr: 0.1 }));
    const events: string[] = [];
    const res = await t.fit((p) => events.push(p.type));
    t.dispose();
    const m = readMetrics(path.join(out, 'metrics.jsonl'));
    const epochs = m.filter((x) => x.type === 'epoch') as { trainLoss: number; testAcc: number }[];
    expect(epochs.length).toBe(3);
    expect(epochs[2].trainLoss).toBeLessThan(epochs[0].trainLoss);
    expect(res.testAcc).toBeGreaterThan(0.5); // 10 classes: chance is 0.1
    expect(events[0]).toBe('start');
    expect(events.at(-1)).toBe('done');
    for (const f of ['report.svg', 'report.png', 'checkpoint.json', 'model.safetensors', 'config.json']) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    const weights = r.loadSafetensors(path.join(out, 'model.safetensors')).tensors;
    expect(Object.keys(weights)).toContain('layer3.2.bn2.running_var');
  });

  it('--resume continues exactly where it stopped: same losses, bit for bit', async () => {
    const a = tmp();
    const ta = new Trainer(small(a));
    await ta.fit();
    ta.dispose();

    const b = tmp();
    const tb1 = new Trainer(small(b));
    await tb1.fit(() => {}, { stopAfterEpochs: 1 });
    tb1.dispose();
    expect(loadCheckpoint(b).meta.epoch).toBe(1);
    const tb2 = new Trainer(small(b, { seed: 0 }));
    await tb2.fit(() => {}, { resume: true });
    tb2.dispose();

    const la = stepLosses(a);
    const lb = stepLosses(b);
    expect(la.length).toBe(16);
    expect(lb).toEqual(la);
    const wa = r.loadSafetensors(path.join(a, 'model.safetensors')).tensors;
    const wb = r.loadSafetensors(path.join(b, 'model.safetensors')).tensors;
    for (const k of Object.keys(wa)) expect(wa[k].equal(wb[k]), k).toBe(true);
  });

  it('refuses to overwrite a run without --resume, and --resume without a checkpoint', async () => {
    const out = tmp();
    const t = new Trainer(small(out, { epochs: 1, syntheticTrain: 64 }));
    await t.fit();
    await expect(t.fit()).rejects.toThrow(/already holds a checkpoint: pass --resume/);
    t.dispose();
    const t2 = new Trainer(small(tmp(), { epochs: 1, syntheticTrain: 64 }));
    await expect(t2.fit(() => {}, { resume: true })).rejects.toThrow(/--resume: no checkpoint/);
    t2.dispose();
  });

  it('a crash in the middle of a save leaves the last good checkpoint loadable', async () => {
    const out = tmp();
    const t = new Trainer(small(out, { epochs: 3 }));
    await t.fit(() => {}, { stopAfterEpochs: 1 });
    const good = loadCheckpoint(out);
    expect(good.meta.epoch).toBe(1);
    const goodW = good.tensors['model.fc.weight'].clone();
    t.crashAt = 'after-weights';
    await expect(t.fit(() => {}, { resume: true, stopAfterEpochs: 1 })).rejects.toThrow(/simulated crash after writing the weights/);
    const after = loadCheckpoint(out);
    expect(after.meta.epoch).toBe(1);
    expect(after.tensors['model.fc.weight'].equal(goodW)).toBe(true);
    t.dispose();
    // and training resumes from it
    const t2 = new Trainer(small(out, { epochs: 3 }));
    await t2.fit(() => {}, { resume: true });
    expect(loadCheckpoint(out).meta.epoch).toBe(3);
    t2.dispose();
  });

  it('a process killed (SIGKILL) while saving never leaves a corrupt checkpoint behind', async () => {
    const out = tmp();
    // The child (plain node, so it uses dist/) saves ever-changing 16 MB checkpoints until killed.
    const child = spawn(process.execPath, [path.join(root, 'test', 'fixtures', 'ckpt-child.mjs'), out], { stdio: ['ignore', 'pipe', 'inherit'] });
    let saved = 0;
    child.stdout.on('data', (d: Buffer) => (saved += d.toString().split('\n').filter(Boolean).length));
    while (saved < 2) await new Promise((res) => setTimeout(res, 50));
    await new Promise((res) => setTimeout(res, 137)); // land somewhere inside a later save
    await new Promise((res) => {
      child.on('exit', res);
      child.kill('SIGKILL');
    });
    const c = loadCheckpoint(out); // checksum-verified against the sidecar
    const v = c.tensors.w.toTypedArray() as Float32Array;
    expect(v.length).toBe(4 << 20);
    expect(v.every((x) => x === c.meta.epoch)).toBe(true);
    expect(c.meta.epoch).toBeGreaterThanOrEqual(saved - 1);
  });

  it('trains inside a worker thread, reporting progress to the main thread', async () => {
    const out = tmp();
    const dist = path.join(root, 'dist', 'train', 'worker.js');
    expect(fs.existsSync(dist), 'dist/ is built by npm install (node scripts/build.mjs --ts-only)').toBe(true);
    const { trainInWorker } = (await import(dist)) as typeof import('../lib/train/worker.js');
    const seen: string[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5); // the main thread stays responsive
    const res = await trainInWorker(small(out, { epochs: 1 }), (p) => seen.push(p.type));
    clearInterval(timer);
    expect(seen).toContain('step');
    expect(seen.at(-1)).toBe('done');
    expect(res.testAcc).toBeGreaterThan(0);
    expect(ticks).toBeGreaterThan(5);
  });
});

describe('checkpoint files', () => {
  it('round-trips tensors and metadata, and detects a corrupted weights file', () => {
    const dir = tmp();
    const w = r.randn([3, 4]);
    saveCheckpoint(dir, { w }, { epoch: 2, globalStep: 10, extra: { a: 1 } });
    const c = loadCheckpoint(dir);
    expect(c.meta.epoch).toBe(2);
    expect((c.meta as unknown as { extra: { a: number } }).extra.a).toBe(1);
    expect(c.tensors.w.equal(w)).toBe(true);
    const f = path.join(dir, c.meta.weights);
    const buf = fs.readFileSync(f);
    buf[buf.length - 1] ^= 0xff;
    fs.writeFileSync(f, buf);
    expect(() => loadCheckpoint(dir)).toThrow(/does not match the checksum/);
    expect(() => loadCheckpoint(tmp())).toThrow(/no checkpoint at/);
  });
});
