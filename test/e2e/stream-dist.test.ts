// Data-parallel training on streamed data (lib/train/distributed.ts): 2 ranks (Gloo on 127.0.0.1), each a
// child process with torchrun's environment, train on a tiny image folder and on WebDataset shards made
// here. Every image is its own class, so a batch's labels say which images it holds. Each rank must train
// on exactly its share as the streaming loader defines it (compared with loaders made here for each rank),
// the shares of an epoch must be disjoint and (for the folder) cover the training set, both ranks must run
// the same number of steps (shards of unequal size; a rank that skips an unreadable image) and end with the
// same weights, and rank 0 writes the run folder.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, workerEnv } from '../../lib/cli/launch.js';
import { packImageFolder } from '../../lib/data/shards.js';
import {
  IMAGENET_MEAN,
  IMAGENET_STD,
  StreamingDataLoader,
  imageFolderSource,
  webDatasetSource,
  type StreamSource,
} from '../../lib/data/stream.js';
import type { TrainConfig } from '../../lib/train/index.js';
import { root } from '../support/helpers.js';

const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
const child = path.join(root, 'test', 'fixtures', 'ddp', 'stream-child.ts');
const JOB_DEADLINE_MS = 240_000;
const N = 12;
let tmp = '';
const live = new Set<ChildProcess>();

/** An 8x8 RGB PNG whose colour depends on k. */
function png(k: number): Buffer {
  const p = new PNG({ width: 8, height: 8 });
  for (let i = 0; i < 64; i++) p.data.set([(k * 20 + i) & 255, (k * 50) & 255, (255 - k * 20) & 255, 255], 4 * i);
  return PNG.sync.write(p);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-stream-dist-'));
  for (const split of ['train', 'val'])
    for (let k = 0; k < N; k++) {
      const d = path.join(tmp, 'folder', split, `c${String(k).padStart(2, '0')}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'a.png'), png(k + (split === 'val' ? 100 : 0)));
    }
  // Shards of 5, 5 and 2 samples: the two ranks' shares differ in size.
  const shards = path.join(tmp, 'shards');
  const train = packImageFolder(path.join(tmp, 'folder', 'train'), shards, { shardSize: 5, prefix: 'train', seed: 1 });
  packImageFolder(path.join(tmp, 'folder', 'val'), shards, { shardSize: N, prefix: 'val', classes: train.classes });
  // A folder with one unreadable image.
  fs.cpSync(path.join(tmp, 'folder'), path.join(tmp, 'broken'), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'broken', 'train', 'c05', 'a.png'), 'not a PNG');
});
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface RankResult {
  rank: number;
  seen: number[][];
  steps: number;
  stepsPerEpoch: number;
  trainSize: number;
  weights: string;
}

/** Runs 2 ranks of stream-child.ts with `cfg`; resolves with their results (and fails naming a rank that failed). */
async function runJob(cfg: Partial<TrainConfig>): Promise<RankResult[]> {
  const out = fs.mkdtempSync(path.join(tmp, 'job-'));
  const cfgFile = path.join(out, 'config.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const port = await freePort();
  const codes = await Promise.all(
    [0, 1].map((rank) => {
      const env = workerEnv(
        { rank, localRank: rank, worldSize: 2, localWorldSize: 2, nodeRank: 0, nnodes: 1, masterAddr: '127.0.0.1', masterPort: port },
        { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1', DIST_TEST_TIMEOUT_MS: '60000' },
      );
      const c = spawn(process.execPath, ['--import', register, child, cfgFile, out], { env, stdio: ['ignore', 'inherit', 'pipe'] });
      live.add(c);
      let stderr = '';
      c.stderr!.on('data', (d) => (stderr += String(d)));
      return new Promise<[number | null, string]>((resolve) => {
        const kill = setTimeout(() => c.kill('SIGKILL'), JOB_DEADLINE_MS);
        c.on('exit', (code) => {
          clearTimeout(kill);
          live.delete(c);
          resolve([code, stderr]);
        });
      });
    }),
  );
  codes.forEach(([code, stderr], r) => expect(code, `rank ${r} exit code; stderr:\n${stderr}`).toBe(0));
  return [0, 1].map((r) => JSON.parse(fs.readFileSync(path.join(out, `rank${r}.json`), 'utf8')) as RankResult);
}

/** What rank `rank` of 2 is expected to read in `epoch`: its own loader with the trainer's training options, read here. */
function expectedShare(source: StreamSource, cfg: Partial<TrainConfig>, rank: number, epoch: number): number[][] {
  const l = new StreamingDataLoader(source, {
    batchSize: cfg.batchSize!,
    transform: 'eval',
    hflip: false,
    shuffle: true,
    seed: cfg.seed ?? 0,
    dropLast: true,
    size: cfg.imageSize,
    mean: IMAGENET_MEAN,
    std: IMAGENET_STD,
    workers: cfg.workers,
    onError: cfg.onBadFile ?? 'stop',
    rank,
    worldSize: 2,
  });
  const batches: number[][] = [];
  try {
    l.setEpoch(epoch);
    for (const { x, y } of l.iterSync()) {
      batches.push(Array.from(y.toTypedArray() as BigInt64Array, Number));
      x.dispose();
      y.dispose();
    }
  } finally {
    l.close();
  }
  return batches;
}

const base = (dataPath: string, extra: Partial<TrainConfig> = {}): Partial<TrainConfig> => ({
  model: 'resnet20',
  imageSize: 8,
  batchSize: 2,
  epochs: 2,
  augment: false,
  lr: 0.05,
  schedule: 'constant',
  workers: 1,
  device: 'cpu',
  logEvery: 1,
  limitTestBatches: 1,
  seed: 3,
  dataPath,
  out: path.join(tmp, `run-${path.basename(dataPath)}-${Math.random().toString(36).slice(2)}`),
  ...extra,
});

describe('data-parallel training on streamed data (2 ranks)', () => {
  it('an image folder: each rank trains on its DistributedSampler-style share of every epoch; the shares cover the set', async () => {
    const cfg = base(path.join(tmp, 'folder'), { data: 'imagefolder' });
    const [r0, r1] = await runJob(cfg);
    const source = imageFolderSource(path.join(tmp, 'folder', 'train'));
    for (const r of [r0, r1]) {
      expect(r.trainSize).toBe(N);
      expect(r.stepsPerEpoch).toBe(3); // 6 images per rank, batches of 2
      expect(r.steps).toBe(6);
      for (let e = 0; e < 2; e++) expect(r.seen[e], `rank ${r.rank} epoch ${e + 1}`).toEqual(expectedShare(source, cfg, r.rank, e).flat());
    }
    for (let e = 0; e < 2; e++)
      expect([...r0.seen[e], ...r1.seen[e]].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(r0.seen[0]).not.toEqual(r0.seen[1]); // a new permutation each epoch
    expect(r1.weights).toBe(r0.weights);
    const meta = JSON.parse(fs.readFileSync(path.join(cfg.out!, 'checkpoint.json'), 'utf8'));
    expect(meta).toMatchObject({ epoch: 2, globalStep: 6, worldSize: 2 });
  }, 600_000);

  it('WebDataset shards of unequal size: each rank reads its own shards; both run as many steps as the smaller share has batches', async () => {
    const spec = path.join(tmp, 'shards', 'train-{000000..000002}.tar');
    const cfg = base(spec, { data: 'webdataset' });
    const [r0, r1] = await runJob(cfg);
    const source = webDatasetSource(spec);
    expect(source.counts).toEqual([5, 5, 2]);
    for (let e = 0; e < 2; e++) {
      const want = [0, 1].map((rank) => expectedShare(source, cfg, rank, e));
      const steps = Math.min(want[0].length, want[1].length);
      expect(steps, 'the shares differ in size').toBeLessThan(Math.max(want[0].length, want[1].length));
      expect(r0.seen[e], `rank 0 epoch ${e + 1}`).toEqual(want[0].slice(0, steps).flat());
      expect(r1.seen[e], `rank 1 epoch ${e + 1}`).toEqual(want[1].slice(0, steps).flat());
      expect(r0.seen[e].filter((k) => r1.seen[e].includes(k))).toEqual([]); // no image read by both
    }
    expect(r0.steps).toBe(r1.steps);
    expect(r1.weights).toBe(r0.weights);
  }, 600_000);

  it("onBadFile 'skip': a rank that skipped an unreadable image has a batch fewer; the ranks stop together", async () => {
    const cfg = base(path.join(tmp, 'broken'), { data: 'imagefolder', batchSize: 1, onBadFile: 'skip' });
    const [r0, r1] = await runJob(cfg);
    expect(r0.stepsPerEpoch).toBe(6);
    for (let e = 0; e < 2; e++) {
      // the image of class 5 is in one rank's share; that rank has 5 batches, the other 6: both train 5
      expect(r0.seen[e].length, `epoch ${e + 1}`).toBe(5);
      expect(r1.seen[e].length, `epoch ${e + 1}`).toBe(5);
      expect([...r0.seen[e], ...r1.seen[e]]).not.toContain(5);
    }
    expect(r1.weights).toBe(r0.weights);
  }, 600_000);
});
