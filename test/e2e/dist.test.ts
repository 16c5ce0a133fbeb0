// Data-parallel training on c10d (Gloo on 127.0.0.1): collectives across 2 and 3 ranks; DDP gradients
// equal to one process's on the concatenated batch, and weights after several steps the same on every
// rank and equal to single-process training; SyncBatchNorm against BatchNorm on the full batch;
// replicas that disagree refused; a killed rank makes the others fail within the timeout; the sampler
// against PyTorch's DistributedSampler (fixture); the launcher and `residual train --nproc-per-node`.
// Every rank is a child process with torchrun's environment; each job is killed after a deadline.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { crossEntropy, dist, nn, optim, randn, tensor } from '../../lib/index.js';
import { freePort, parseLaunchArgs, workerEnv } from '../../lib/cli/launch.js';
import { PER_RANK, globalBatch, makeModel, named, namedBuffers, train, type Named } from '../fixtures/ddp/common.js';
import { cudaWanted, glooBuilt, glooSkipNote, root } from '../support/helpers.js';

const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
// Tests that start a Gloo process group need the addon built with gloo's headers.
const itGloo = glooBuilt ? it : it.skip;
const G = glooBuilt ? '' : ` (${glooSkipNote})`;
const child = path.join(root, 'test', 'fixtures', 'ddp', 'child.ts');
const JOB_DEADLINE_MS = 90_000;
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
});

interface Job {
  codes: (number | null)[];
  stderr: string[];
  results: Record<string, unknown>[];
  ms: number;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'residual-dist-'));
}

function baseEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1', DIST_TEST_TIMEOUT_MS: '60000' };
}

/** Starts `world` ranks of child.ts <scenario>; resolves when all have exited (or the deadline kills them). */
async function runJob(world: number, scenario: string, args: string[] = []): Promise<Job> {
  const out = tmpDir();
  const port = await freePort();
  const t0 = Date.now();
  const procs = Array.from({ length: world }, (_, rank) => {
    const env = workerEnv({ rank, localRank: rank, worldSize: world, localWorldSize: world, nodeRank: 0, nnodes: 1, masterAddr: '127.0.0.1', masterPort: port }, baseEnv());
    const c = spawn(process.execPath, ['--import', register, child, scenario, out, ...args], { env, stdio: ['ignore', 'inherit', 'pipe'] });
    live.add(c);
    return c;
  });
  const stderr = procs.map(() => '');
  const codes = await Promise.all(
    procs.map(
      (c, i) =>
        new Promise<number | null>((resolve) => {
          const kill = setTimeout(() => c.kill('SIGKILL'), JOB_DEADLINE_MS);
          c.stderr!.on('data', (d) => (stderr[i] += String(d)));
          c.on('exit', (code) => {
            clearTimeout(kill);
            live.delete(c);
            resolve(code);
          });
        }),
    ),
  );
  const results = Array.from({ length: world }, (_, r) => {
    const f = path.join(out, `rank${r}.json`);
    return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : null;
  });
  fs.rmSync(out, { recursive: true, force: true });
  return { codes, stderr, results, ms: Date.now() - t0 };
}

function expectAllOk(job: Job): void {
  job.codes.forEach((c, r) => expect(c, `rank ${r} exit code; stderr:\n${job.stderr[r]}`).toBe(0));
}

function expectNamedClose(a: Named, b: Named, what: string, atol = 1e-5, rtol = 1e-4): void {
  expect(Object.keys(a).sort(), what).toEqual(Object.keys(b).sort());
  for (const k of Object.keys(b)) {
    expect(a[k].length, `${what} ${k}`).toBe(b[k].length);
    for (let i = 0; i < b[k].length; i++) {
      const err = Math.abs(a[k][i] - b[k][i]);
      if (!(err <= atol + rtol * Math.abs(b[k][i]))) throw new Error(`${what} ${k}[${i}]: ${a[k][i]} vs ${b[k][i]}`);
    }
  }
}

/** Single-process training of rank 0's initial model on the whole global batch. */
function reference(world: number, bn: boolean): { grads0: Named; weights: Named; buffers: Named; initial: Named } {
  const model = makeModel(1, bn);
  const initial = named(model, 'data');
  const { x, y } = globalBatch(world);
  const grads0 = train(model, (t) => model.call(t), x, y);
  return { grads0, weights: named(model, 'data'), buffers: namedBuffers(model), initial };
}

describe('dist: built with or without gloo', () => {
  it("the 'gloo' backend is in this build (required in CI, which installs libgloo-dev); without it, a clear error naming what to install", async () => {
    if (glooBuilt) return;
    expect(process.env.CI, "CI builds with gloo's headers (apt-get install libgloo-dev): the dist tests must run there").not.toBe('true');
    await expect(dist.initProcessGroup({ backend: 'gloo', rank: 0, worldSize: 1, masterPort: 0, timeoutMs: 5000 })).rejects.toThrow(/built without gloo's headers.*libgloo-dev/);
    expect(dist.isInitialized()).toBe(false);
  });
});

describe('dist: process group and collectives (Gloo, 127.0.0.1)', () => {
  for (const world of [2, 3]) {
    itGloo(`${world} ranks: allReduce (sum, max, avg, several tensors), broadcast, allGather, barrier` + G, async () => {
      const job = await runJob(world, 'collectives');
      expectAllOk(job);
      const tri = (world * (world + 1)) / 2;
      for (const [r, res] of job.results.entries()) {
        expect(res, `rank ${r}`).toMatchObject({
          rank: r,
          world,
          sum: [tri, 2 * tri],
          max: [world - 1, 0],
          avg: [world - 1],
          several: [[world, 2 * world, 3 * world], [((world - 1) * world) / 2]],
          bcast: [world - 1, world - 1, world - 1],
          gathered: Array.from({ length: world }, (_, k) => [k, 10 * k]),
        });
      }
    });
  }

  it('no process group: a clear error, rank 0 of 1', async () => {
    expect(dist.isInitialized()).toBe(false);
    expect(dist.getRank()).toBe(0);
    expect(dist.getWorldSize()).toBe(1);
    await expect(dist.allReduce([])).rejects.toThrow(/initProcessGroup/);
    expect(() => new dist.DistributedDataParallel(makeModel(1, false))).toThrow(/initProcessGroup/);
  });

  it.runIf(!cudaWanted)("backend 'nccl' in the CPU build: a clear error, at once", async () => {
    await expect(dist.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, masterPort: 0, timeoutMs: 5000 })).rejects.toThrow(/'nccl' needs the CUDA build/);
    expect(dist.isInitialized()).toBe(false);
  });
});

describe('dist: DistributedDataParallel on c10d Reducer', () => {
  for (const world of [2, 3]) {
    itGloo(`${world} ranks: rank 0's weights broadcast; gradients = one process on the concatenated batch; weights equal after ${4} steps` + G, async () => {
      const job = await runJob(world, 'ddp', ['plain', '0.0005']); // a tiny bucket cap: several buckets after the rebuild
      expectAllOk(job);
      const ref = reference(world, false);
      for (const [r, res] of job.results.entries()) {
        const o = res as { initial: Named; grads0: Named; weights: Named };
        expectNamedClose(o.initial, ref.initial, `rank ${r} initial weights`, 0, 0);
        expectNamedClose(o.grads0, ref.grads0, `rank ${r} first-step gradients`);
        expectNamedClose(o.weights, ref.weights, `rank ${r} weights after training`);
        // identical (bit for bit) across ranks
        expect(o.weights, `rank ${r} vs rank 0`).toEqual((job.results[0] as { weights: Named }).weights);
      }
    });
  }

  itGloo('SyncBatchNorm: 2 ranks train as BatchNorm on the full batch (gradients, weights, running stats)' + G, async () => {
    const job = await runJob(2, 'ddp', ['syncbn']);
    expectAllOk(job);
    const ref = reference(2, true);
    for (const [r, res] of job.results.entries()) {
      const o = res as { grads0: Named; weights: Named; buffers: Named };
      expectNamedClose(o.grads0, ref.grads0, `rank ${r} first-step gradients`);
      expectNamedClose(o.weights, ref.weights, `rank ${r} weights`);
      expectNamedClose(o.buffers, ref.buffers, `rank ${r} buffers`);
    }
  });

  itGloo('replicas that disagree are refused with a clear error' + G, async () => {
    const job = await runJob(2, 'mismatch');
    const errs = job.results.map((r) => (r as { error: string | null } | null)?.error ?? null);
    expect(errs.some((e) => e !== null), JSON.stringify(job.results)).toBe(true);
    expect(errs[1]).toMatch(/^\[rank 1\] DistributedDataParallel: .*params\[0\] in this process with sizes \[7, 3, 3, 3\] appears not to match sizes of the same param in process 0/);
    if (errs[0]) expect(errs[0]).toMatch(/^\[rank 0\] DistributedDataParallel: another rank failed while the replicas were being checked/);
    expect(job.codes.every((c) => c !== 0), `exit codes ${job.codes}`).toBe(true);
  });

  it('convertSyncBatchNorm keeps the BatchNorm tensors (an optimizer made before still holds them)', () => {
    const m = makeModel(1, true);
    const before = m.parameters();
    const conv = dist.convertSyncBatchNorm(m);
    expect(conv.modules().some((x) => x instanceof dist.SyncBatchNorm)).toBe(true);
    expect(conv.modules().some((x) => x instanceof nn.BatchNorm2d && !(x instanceof dist.SyncBatchNorm))).toBe(false);
    const after = conv.parameters();
    expect(after.length).toBe(before.length);
    after.forEach((p, i) => expect(p).toBe(before[i]));
  });
});

describe('dist: failures', () => {
  itGloo('a killed rank makes every other rank fail with an error within the timeout' + G, async () => {
    const job = await runJob(3, 'crash');
    expect(job.codes[2]).toBe(null); // SIGKILLed
    for (const r of [0, 1]) {
      expect(job.codes[r], `rank ${r}: ${job.stderr[r]}`).toBe(5);
      const o = job.results[r] as { error: string; ms: number };
      expect(o.error).toMatch(/\[rank \d\] allReduce: /);
      expect(o.ms).toBeLessThan(25_000);
    }
  });
});

describe('dist: rendezvous', () => {
  itGloo('a rank that never comes: the others fail after the timeout (3 s here)' + G, async () => {
    const out = tmpDir();
    const port = await freePort();
    const env = workerEnv({ rank: 0, localRank: 0, worldSize: 2, localWorldSize: 2, nodeRank: 0, nnodes: 1, masterAddr: '127.0.0.1', masterPort: port }, baseEnv());
    const c = spawn(process.execPath, ['--import', register, child, 'absent', out], { env, stdio: 'ignore' });
    live.add(c);
    const code = await new Promise<number | null>((resolve) => c.on('exit', resolve));
    live.delete(c);
    expect(code).toBe(6);
    const o = JSON.parse(fs.readFileSync(path.join(out, 'rank0.json'), 'utf8')) as { error: string; ms: number };
    expect(o.error).toMatch(/initProcessGroup: .*(time|Timed out|wait)/i);
    expect(o.ms).toBeGreaterThanOrEqual(2500);
    expect(o.ms).toBeLessThan(20_000);
    fs.rmSync(out, { recursive: true, force: true });
  });
});

describe('dist: DistributedSampler', () => {
  const fx = JSON.parse(fs.readFileSync(path.join(root, 'test', 'fixtures', 'ddp', 'sampler.json'), 'utf8')) as {
    cases: { n: number; world: number; rank: number; seed: number; epoch: number; shuffle: boolean; dropLast: boolean; indices: number[] }[];
  };
  it(`same indices as PyTorch's DistributedSampler (${fx.cases.length} cases: padding and drop-last, shuffled and not)`, () => {
    for (const c of fx.cases) {
      const s = new dist.DistributedSampler(c.n, { numReplicas: c.world, rank: c.rank, seed: c.seed, shuffle: c.shuffle, dropLast: c.dropLast });
      s.setEpoch(c.epoch);
      expect(s.indices(), JSON.stringify({ ...c, indices: undefined })).toEqual(c.indices);
      expect(s.numSamples).toBe(c.indices.length);
    }
  });
  it('bad arguments', () => {
    expect(() => new dist.DistributedSampler(10, { numReplicas: 2, rank: 2 })).toThrow(/invalid rank 2/);
    expect(() => new dist.DistributedSampler(-1)).toThrow(RangeError);
  });
});

describe('residual launch', () => {
  it('parses torchrun-style flags', () => {
    expect(parseLaunchArgs(['--nproc-per-node', '2', '--nnodes=2', '--node-rank', '1', '--master-addr', '10.0.0.1', '--master-port', '1234', 's.js', '--x', 'y'])).toMatchObject({
      nprocPerNode: 2, nnodes: 2, nodeRank: 1, masterAddr: '10.0.0.1', masterPort: 1234, script: 's.js', args: ['--x', 'y'],
    });
    expect(() => parseLaunchArgs(['s.js'])).toThrow(/--nproc-per-node is required/);
    expect(() => parseLaunchArgs(['--nproc-per-node', '2'])).toThrow(/no script/);
    expect(() => parseLaunchArgs(['--bogus', '2', 's.js'])).toThrow(/unknown flag --bogus/);
  });

  it("sets torchrun's environment", () => {
    const e = workerEnv({ rank: 3, localRank: 1, worldSize: 4, localWorldSize: 2, nodeRank: 1, nnodes: 2, masterAddr: 'h', masterPort: 7 }, {});
    expect(e).toMatchObject({ RANK: '3', LOCAL_RANK: '1', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2', GROUP_RANK: '1', MASTER_ADDR: 'h', MASTER_PORT: '7', TORCHELASTIC_USE_AGENT_STORE: 'False', OMP_NUM_THREADS: '1' });
  });

  function runCli(args: string[]): Promise<{ code: number | null; stderr: string; ms: number }> {
    const t0 = Date.now();
    const entry = path.join(root, 'test', 'fixtures', 'ddp', 'cli-entry.ts');
    const c = spawn(process.execPath, ['--import', register, entry, ...args], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(c);
    let stderr = '';
    c.stdout!.on('data', () => {});
    c.stderr!.on('data', (d) => (stderr += String(d)));
    return new Promise((resolve) => {
      const kill = setTimeout(() => c.kill('SIGKILL'), JOB_DEADLINE_MS);
      c.on('exit', (code) => {
        clearTimeout(kill);
        live.delete(c);
        resolve({ code, stderr, ms: Date.now() - t0 });
      });
    });
  }

  itGloo('launch: 2 ranks run a script to the end (exit 0)' + G, async () => {
    const out = tmpDir();
    const r = await runCli(['launch', '--nproc-per-node', '2', '--master-port', '0', child, 'collectives', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['rank0.json', 'rank1.json']);
    fs.rmSync(out, { recursive: true, force: true });
  });

  itGloo('train --nproc-per-node 2: rank 0 writes the run folder; --resume continues; a different world size is refused' + G, async () => {
    const out = path.join(tmpDir(), 'run');
    const common = ['--data', 'synthetic', '--model', 'resnet20', '--batch-size', '16', '--limit-train-batches', '2', '--limit-test-batches', '1', '--device', 'cpu', '--workers', '1', '--schedule', 'constant', '--out', out];
    const r = await runCli(['train', '--nproc-per-node', '2', '--master-port', '0', '--epochs', '1', ...common]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['checkpoint.json', 'metrics.jsonl', 'report.svg', 'model.safetensors', 'config.json']) expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    const meta = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint.json'), 'utf8'));
    expect(meta.meta?.worldSize ?? meta.worldSize).toBe(2);
    const r2 = await runCli(['train', '--nproc-per-node', '2', '--master-port', '0', '--epochs', '2', '--resume', ...common]);
    expect(r2.code, r2.stderr).toBe(0);
    const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.testAcc !== undefined).map((l) => l.epoch)).toEqual([1, 2]);
    const r3 = await runCli(['train', '--nproc-per-node', '3', '--master-port', '0', '--epochs', '3', '--resume', ...common]);
    expect(r3.code).not.toBe(0);
    expect(r3.stderr).toMatch(/the run was trained with 2 ranks and is now started with 3: refused/);
    fs.rmSync(path.dirname(out), { recursive: true, force: true });
  });

  itGloo('launch: a failed rank brings the job down with a message naming it' + G, async () => {
    const out = tmpDir();
    const r = await runCli(['launch', '--nproc-per-node', '3', '--master-port', '0', '--grace', '2', child, 'crash', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/residual launch: rank 2 \(local rank 2, pid \d+\) was killed by SIGKILL; stopping the other ranks/);
    expect(r.ms).toBeLessThan(60_000);
    fs.rmSync(out, { recursive: true, force: true });
  });
});

describe('Module.to() keeps the parameter objects (optimizers and DDP made earlier still hold them)', () => {
  it('to(float64) then an optimizer step made before the move updates the model', () => {
    const m = makeModel(3, true);
    const params = m.parameters();
    const buffers = m.buffers();
    const opt = new optim.SGD(m.parameters(), { lr: 0.5 });
    m.to('float64');
    m.parameters().forEach((p, i) => {
      expect(p).toBe(params[i]);
      expect(p.dtype).toBe('float64');
      expect(p.requiresGrad).toBe(true);
    });
    m.buffers().forEach((b, i) => expect(b).toBe(buffers[i]));
    expect(m.buffers().map((b) => b.dtype)).toContain('int64'); // num_batches_tracked keeps its dtype
    const before = named(m, 'data');
    const loss = crossEntropy(m.call(randn([4, 3, 8, 8], { dtype: 'float64' })), tensor([0, 1, 2, 3], { dtype: 'int64' }));
    opt.zeroGrad();
    loss.backward();
    opt.step();
    const after = named(m, 'data');
    expect(Object.keys(after).some((k) => after[k].some((v, i) => v !== before[k][i]))).toBe(true);
  });
});
