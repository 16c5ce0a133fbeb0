// Data-parallel training on c10d (Gloo on 127.0.0.1): collectives across 2 and 3 ranks; DDP gradients
// equal to one process's on the concatenated batch, and weights after several steps the same on every
// rank and equal to single-process training; SyncBatchNorm against BatchNorm on the full batch;
// replicas that disagree refused; a killed rank makes the others fail within the timeout; the sampler
// against PyTorch's DistributedSampler (fixture); the launcher and `residual train --nproc-per-node`.
// Every rank is a child process with torchrun's environment; each job is killed after a deadline.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DtypeError, ShapeError, crossEntropy, dist, nn, optim, randn, tensor } from '../../lib/index.js';
import { native as N } from '../../lib/addon/binding.js';
import { StoreClient } from '../../lib/distributed/store.js';
import { envTimeoutMs } from '../../lib/distributed/env.js';
import { checkLaunchOptions, freePort, parseLaunchArgs, workerEnv } from '../../lib/cli/launch.js';
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

/**
 * Starts `world` ranks of child.ts <scenario>; resolves when all have exited (or the deadline kills
 * them). `o.ranks`: only these ranks are started; `o.before(rank, port)`: awaited before rank `rank`
 * is started (rank 0 hosts the store on `port`).
 */
async function runJob(
  world: number,
  scenario: string,
  args: string[] = [],
  o: { ranks?: number[]; before?: (rank: number, port: number) => Promise<void>; env?: NodeJS.ProcessEnv } = {},
): Promise<Job> {
  const out = tmpDir();
  const port = await freePort();
  const t0 = Date.now();
  const ranks = o.ranks ?? Array.from({ length: world }, (_, r) => r);
  const procs: ChildProcess[] = [];
  for (const rank of ranks) {
    await o.before?.(rank, port);
    const env = workerEnv(
      { rank, localRank: rank, worldSize: world, localWorldSize: world, nodeRank: 0, nnodes: 1, masterAddr: '127.0.0.1', masterPort: port },
      { ...baseEnv(), ...o.env },
    );
    const c = spawn(process.execPath, ['--import', register, child, scenario, out, ...args], { env, stdio: ['ignore', 'inherit', 'pipe'] });
    live.add(c);
    procs.push(c);
  }
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
  const results = ranks.map((r) => {
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
    await expect(dist.initProcessGroup({ backend: 'gloo', rank: 0, worldSize: 1, masterPort: 0, timeoutMs: 5000 })).rejects.toThrow(
      /built without gloo's headers.*libgloo-dev/,
    );
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
    await expect(dist.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, masterPort: 0, timeoutMs: 5000 })).rejects.toThrow(
      /'nccl' needs the CUDA build/,
    );
    expect(dist.isInitialized()).toBe(false);
  });
});

describe('dist: DistributedDataParallel on c10d Reducer', () => {
  for (const world of [2, 3]) {
    itGloo(
      `${world} ranks: rank 0's weights broadcast; gradients = one process on the concatenated batch; weights equal after ${4} steps` + G,
      async () => {
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
      },
    );
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

  // Each replica difference, on rank 1: every rank gets the same error, naming the tensor and the ranks.
  const replicaCases: [string, RegExp, string][] = [
    ['width', /the replicas differ: '0\.weight' is float32 \[7, 3, 3, 3\] on rank 1 but float32 \[6, 3, 3, 3\] on rank 0/, 'ShapeError'],
    ['dtype', /the replicas differ: '0\.weight' is float64 \[6, 3, 3, 3\] on rank 1 but float32 \[6, 3, 3, 3\] on rank 0/, 'DtypeError'],
    ['layers', /the ranks disagree on the number of parameters and buffers: rank 0 has 6, rank 1 has 8/, 'ShapeError'],
    [
      'frozen',
      /the replicas differ: '0\.weight' is float32 \[6, 3, 3, 3\] \(no grad\) on rank 1 but float32 \[6, 3, 3, 3\] \(requires grad\) on rank 0/,
      'ResidualError',
    ],
  ];
  for (const [how, msg, cls] of replicaCases) {
    itGloo(`replicas that differ (${how}) are refused on every rank with the same clear error` + G, async () => {
      const job = await runJob(2, 'mismatch', [how]);
      for (const r of [0, 1]) {
        const o = job.results[r] as { error: string | null; name: string } | null;
        expect(o, `rank ${r}: ${job.stderr[r]}`).not.toBe(null);
        expect(o!.error).toMatch(new RegExp(`^\\[rank ${r}\\] DistributedDataParallel: `));
        expect(o!.error).toMatch(msg);
        expect(o!.name).toBe(cls);
        expect(job.codes[r], `rank ${r} exit code`).toBe(4);
      }
    });
  }
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
    const env = workerEnv(
      { rank: 0, localRank: 0, worldSize: 2, localWorldSize: 2, nodeRank: 0, nnodes: 1, masterAddr: '127.0.0.1', masterPort: port },
      baseEnv(),
    );
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

// Hostile or broken peers of the rendezvous store (rank 0's, or the launcher's): each payload below
// is sent on its own connection. c10d's wire format: a query-type byte, then fields; VALIDATE (0) with
// a magic number comes first; SET (1) is a key and a value, each a uint64 length and its bytes.
const HELLO = Buffer.from([0x00, 0xce, 0xf7, 0x85, 0x3c]);
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const HOSTILE: Record<string, Buffer> = {
  'one byte': Buffer.from([0x01]),
  'VALIDATE without its magic number': Buffer.from([0x00]),
  'a partial header': Buffer.concat([HELLO, Buffer.from([0x01, 0x05, 0x00])]),
  'SET announcing a 1 TiB value': Buffer.concat([
    HELLO,
    Buffer.from([0x01]),
    u64(1n),
    Buffer.from('k'),
    u64(1n << 40n),
    Buffer.alloc(4096, 7),
  ]),
  'SET announcing 4 MiB, sending 1 KiB': Buffer.concat([
    HELLO,
    Buffer.from([0x01]),
    u64(1n),
    Buffer.from('k'),
    u64(4n << 20n),
    Buffer.alloc(1024, 7),
  ]),
  'nothing at all': Buffer.alloc(0),
};

/** Opens one connection per hostile payload once `port` listens (retrying up to 60 s), and sends it. */
async function hostilePeers(port: number): Promise<net.Socket[]> {
  const end = Date.now() + 60_000;
  const connect = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  const socks: net.Socket[] = [];
  for (const payload of Object.values(HOSTILE)) {
    for (;;) {
      try {
        const s = await connect();
        s.on('error', () => {});
        if (payload.length) s.write(payload);
        socks.push(s);
        break;
      } catch (e) {
        if (Date.now() > end) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  return socks;
}
/** Resolves true when the server closes `s` within `ms`. */
function closedWithin(s: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed || s.readableEnded) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.on('data', () => {});
    s.once('close', () => (clearTimeout(t), resolve(true)));
    s.once('end', () => (clearTimeout(t), resolve(true)));
  });
}

describe('dist: the rendezvous store under hostile peers', () => {
  itGloo(
    'one byte, a partial header, a SET announcing 1 TiB or 4 MiB that never come, a silent peer: the job runs, rank 0 closes them' + G,
    async () => {
      let socks: net.Socket[] = [];
      const job = await runJob(2, 'collectives', [], {
        before: async (rank, port) => {
          if (rank === 1) socks = await hostilePeers(port);
        },
      });
      for (const s of socks) s.destroy();
      expectAllOk(job);
      expect(job.results[1]).toMatchObject({ rank: 1, sum: [3, 6] });
      // rank 0's own store: the refused ones were closed at once (the slow ones later, at their deadline)
      const st = (job.results[0] as { store: Record<string, number> }).store;
      expect(st.droppedTooLarge, JSON.stringify(st)).toBeGreaterThanOrEqual(1);
      expect(st.droppedProtocol, JSON.stringify(st)).toBeGreaterThanOrEqual(1);
      expect(st.bufferedBytes).toBeLessThanOrEqual(64 * 1024);
    },
  );

  itGloo('with hostile peers and a rank that never comes, rank 0 still fails at its timeout (3 s), without growing' + G, async () => {
    let pending: Promise<net.Socket[]> = Promise.resolve([]);
    const job = await runJob(2, 'absent', ['3000'], {
      ranks: [0],
      before: async (_rank, port) => {
        pending = hostilePeers(port);
      },
    });
    for (const s of await pending.catch(() => [])) s.destroy();
    expect(job.codes[0], job.stderr[0]).toBe(6);
    const o = job.results[0] as { error: string; ms: number; rssGrowth: number };
    expect(o.error).toMatch(
      /^\[rank 0\] initProcessGroup: timed out after 3000ms waiting for the other ranks to join the store on port \d+ \(1 of 2 ranks joined\)/,
    );
    expect(o.ms).toBeGreaterThanOrEqual(2500);
    expect(o.ms).toBeLessThan(60_000);
    expect(o.rssGrowth).toBeLessThan(256 * 1024 * 1024); // a 1 TiB announcement allocates nothing
  });

  it("served alone (the launcher's store): a good client is served while every hostile peer is closed at its deadline", async () => {
    const srv = N.distStoreServe({ port: 0, timeoutMs: 1500 });
    const port = N.distStorePort(srv) as number;
    const socks = await hostilePeers(port);
    const c = new StoreClient('127.0.0.1', port, 20_000);
    try {
      await c.connect();
      await c.set('a', 'xy');
      expect((await c.get('a')).toString()).toBe('xy');
      expect((await c.get('missing')).length).toBe(0);
      expect(await c.add('n', 2)).toBe(2);
      expect(await c.add('n', -5)).toBe(-3);
      expect(await c.check(['a', 'n'])).toBe(true);
      expect(await c.check(['a', 'zz'])).toBe(false);
      const closed = await Promise.all(socks.map((s) => closedWithin(s, 60_000)));
      expect(closed, Object.keys(HOSTILE).join(', ')).toEqual(socks.map(() => true));
      const st = N.distStoreStats(srv) as Record<string, number>;
      expect(st).toMatchObject({ open: 1, droppedTimeout: 4, droppedTooLarge: 1, droppedProtocol: 1, bufferedBytes: 0 });
      // the good client still works after all that
      expect(await c.add('n', 3)).toBe(0);
      N.distStoreReset(srv, 'n');
      expect(await c.check(['n'])).toBe(true);
      expect(await c.check(['a'])).toBe(false);
    } finally {
      c.close();
      for (const s of socks) s.destroy();
      N.distStoreClose(srv);
    }
  });
});

describe('dist: collectives whose ranks disagree', () => {
  itGloo('every rank gets the same clear error (no abort), and the group stays usable' + G, async () => {
    const job = await runJob(2, 'disagree');
    expectAllOk(job);
    type E = { name: string; message: string } | null;
    for (const [r, res] of job.results.entries()) {
      const o = res as { errs: Record<string, E>; ints: number[]; reshaped: number[]; after: number[] };
      const e = (k: string): { name: string; message: string } => {
        expect(o.errs[k], `rank ${r} ${k}`).not.toBe(null);
        expect(o.errs[k]!.message, `rank ${r} ${k}`).toMatch(new RegExp(`^\\[rank ${r}\\] (allReduce|allGather|broadcast|barrier): `));
        return o.errs[k]!;
      };
      expect(e('count')).toMatchObject({
        name: 'ShapeError',
        message: expect.stringMatching(/tensor 0 is float32 \[5\] \(5 elements\) on rank 1 but float32 \[4\] \(4 elements\) on rank 0/),
      });
      expect(e('dtype')).toMatchObject({
        name: 'DtypeError',
        message: expect.stringMatching(/tensor 0 is float64 \[2\] \(2 elements\) on rank 1 but float32 \[2\] \(2 elements\) on rank 0/),
      });
      expect(e('gather')).toMatchObject({
        name: 'ShapeError',
        message: expect.stringMatching(/tensor 0 is float32 \[3\] on rank 1 but float32 \[2\] on rank 0/),
      });
      expect(e('gatherShape')).toMatchObject({
        name: 'ShapeError',
        message: expect.stringMatching(/tensor 0 is float32 \[2, 2\] on rank 1 but float32 \[4\] on rank 0/),
      });
      expect(e('broadcast')).toMatchObject({ name: 'ShapeError' });
      expect(e('tensors')).toMatchObject({
        name: 'ShapeError',
        message: expect.stringMatching(/number of tensors: rank 0 has 1, rank 1 has 2/),
      });
      expect(e('op').message).toMatch(/the ranks disagree on op: rank 0 passed 'sum', rank 1 passed 'max'/);
      expect(e('call').message).toMatch(/the ranks called different collectives: rank \d called \w+, rank \d called \w+/);
      expect(e('avgInt')).toMatchObject({ name: 'DtypeError', message: expect.stringMatching(/op 'avg' needs floating-point tensors/) });
      expect(o.ints, 'an integer avg is refused before anything is summed').toEqual([3, 4]);
      expect(e('avgMixed')).toMatchObject({
        name: 'DtypeError',
        message: expect.stringMatching(r === 1 ? /on this rank, op 'avg' needs/ : /rank 1 refused it: op 'avg' needs/),
      });
      expect(o.errs.reshaped, 'the same element count in another shape is fine for allReduce').toBe(null);
      expect(o.reshaped).toEqual([2, 4, 6, 8]);
      expect(o.after).toEqual([3]);
    }
  });
});

describe('dist: every number checked exactly', () => {
  const bad: [string, Record<string, unknown>, RegExp, ErrorConstructor][] = [
    ['rank 0.5', { rank: 0.5, worldSize: 2 }, /rank must be an integer in \[0, 1\], got 0\.5/, RangeError],
    ['rank = worldSize', { rank: 2, worldSize: 2 }, /rank must be an integer in \[0, 1\], got 2/, RangeError],
    ['worldSize 2^31', { rank: 0, worldSize: 2 ** 31 }, /worldSize must be an integer in \[1, 2147483647\], got 2147483648/, RangeError],
    [
      'worldSize 2^53',
      { rank: 0, worldSize: 2 ** 53 },
      /worldSize must be an integer in \[1, 2147483647\], got 9007199254740992/,
      RangeError,
    ],
    ['masterPort 65535.9', { masterPort: 65535.9 }, /masterPort must be an integer in \[0, 65535\], got 65535\.9/, RangeError],
    ['masterPort 2^32', { masterPort: 2 ** 32 }, /masterPort must be an integer in \[0, 65535\], got 4294967296/, RangeError],
    ['timeoutMs Infinity', { timeoutMs: Infinity }, /timeoutMs must be an integer in \[1, 2147483647\], got Infinity/, RangeError],
    ['timeoutMs 1e20', { timeoutMs: 1e20 }, /timeoutMs must be an integer in \[1, 2147483647\], got 100000000000000000000/, RangeError],
    ['timeoutMs 1e300', { timeoutMs: 1e300 }, /timeoutMs must be an integer in \[1, 2147483647\], got 1e\+300/, RangeError],
    ['timeoutMs 0.5', { timeoutMs: 0.5 }, /timeoutMs must be an integer/, RangeError],
    ['timeoutMs NaN', { timeoutMs: NaN }, /timeoutMs must be an integer/, RangeError],
  ];
  for (const [what, o, msg, cls] of bad) {
    it(`initProcessGroup(${what}): refused at once`, async () => {
      const t0 = Date.now();
      const err = await dist.initProcessGroup({ masterPort: 0, timeoutMs: 5000, ...o }).catch((e) => e);
      expect(err).toBeInstanceOf(cls);
      expect((err as Error).message).toMatch(msg);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(dist.isInitialized()).toBe(false);
    });
  }

  it('the native layer checks the same numbers exactly (no truncation, no overflow)', async () => {
    const init = (o: Record<string, unknown>) => Promise.resolve().then(() => N.distInit({ masterPort: 0, timeoutMs: 5000, ...o }));
    await expect(init({ rank: 0.5, worldSize: 2 })).rejects.toThrow(/option 'rank' must be an integer, got 0\.5/);
    await expect(init({ rank: 0, worldSize: 2 ** 31 })).rejects.toThrow(
      /option 'worldSize' must be an integer in \[1, 2147483647\], got 2147483648/,
    );
    await expect(init({ masterPort: 65535.9 })).rejects.toThrow(/option 'masterPort' must be an integer, got 65535\.9/);
    await expect(init({ masterPort: 70000 })).rejects.toThrow(/option 'masterPort' must be an integer in \[0, 65535\], got 70000/);
    for (const t of [Infinity, 1e20, 1e300]) await expect(init({ timeoutMs: t })).rejects.toThrow(/option 'timeoutMs' must be/);
    await expect(init({ timeoutMs: 2 ** 31 })).rejects.toThrow(
      /option 'timeoutMs' must be an integer in \[1, 2147483647\], got 2147483648/,
    );
    await expect(init({ hostStore: 1 })).rejects.toThrow(/option 'hostStore' must be a boolean/);
  });

  it('environment variables: out of range or not integers are refused, naming the variable', async () => {
    const { distEnv } = dist;
    expect(() => distEnv({ WORLD_SIZE: '4294967296' })).toThrow(/WORLD_SIZE must be an integer in \[1, 2147483647\], got '4294967296'/);
    expect(() => distEnv({ RANK: '0.5' })).toThrow(/RANK must be an integer/);
    expect(() => distEnv({ MASTER_PORT: '70000' })).toThrow(/MASTER_PORT must be an integer in \[0, 65535\], got '70000'/);
    expect(() => distEnv({ MASTER_PORT: '0x10' })).toThrow(/MASTER_PORT/);
    expect(envTimeoutMs({ RESIDUAL_DIST_TIMEOUT: '1.5' })).toBe(1500);
    expect(() => envTimeoutMs({ RESIDUAL_DIST_TIMEOUT: '1e20' })).toThrow(/RESIDUAL_DIST_TIMEOUT must be seconds/);
    expect(() => envTimeoutMs({ RESIDUAL_DIST_TIMEOUT: 'Infinity' })).toThrow(/RESIDUAL_DIST_TIMEOUT/);
  });

  it('residual launch: --master-port 70000 and every other out-of-range number are refused, as its help states', () => {
    const p =
      (...a: string[]) =>
      () =>
        parseLaunchArgs([...a, 's.js']);
    expect(p('--nproc-per-node', '2', '--master-port', '70000')).toThrow(/--master-port must be an integer in \[0, 65535\], got '70000'/);
    expect(p('--nproc-per-node', '2', '--master-port', '65535.9')).toThrow(
      /--master-port must be an integer in \[0, 65535\], got '65535\.9'/,
    );
    expect(p('--nproc-per-node', '2', '--master-port', '1e3')).toThrow(/--master-port/);
    expect(p('--nproc-per-node', '4294967296')).toThrow(/--nproc-per-node must be an integer in \[1, 2147483647\]/);
    expect(p('--nproc-per-node', '2', '--nnodes', '2', '--node-rank', '2')).toThrow(/--node-rank must be an integer in \[0, 1\]/);
    expect(p('--nproc-per-node', '2', '--max-restarts', '-1')).toThrow(/--max-restarts must be an integer in \[0, 2147483647\]/);
    expect(p('--nproc-per-node', '2', '--grace', 'NaN')).toThrow(/--grace must be a number in \[0, 2147483\]/);
    expect(p('--nproc-per-node', '2', '--rdzv-timeout', 'Infinity')).toThrow(/--rdzv-timeout/);
    expect(parseLaunchArgs(['--nproc-per-node', '2', '--master-port', '65535', '--max-restarts', '3', 's.js'])).toMatchObject({
      masterPort: 65535,
      maxRestarts: 3,
    });
  });

  it('a world size beyond int32 across nodes is refused before anything starts', () => {
    // checked without launching: a launcher that did not check would start 65536 processes here
    expect(() => checkLaunchOptions({ nprocPerNode: 2 ** 16, nnodes: 2 ** 16, script: 's.js' })).toThrow(
      /world size \(--nproc-per-node 65536 x --nnodes 65536 = 4294967296\) must be at most 2147483647/,
    );
    expect(() => checkLaunchOptions({ nprocPerNode: 2, nnodes: 2, masterPort: 0, script: 's.js' })).toThrow(
      /--master-port 0 \(a free port\) works on one node only/,
    );
    expect(() => checkLaunchOptions({ nprocPerNode: 2, graceSeconds: Infinity, script: 's.js' })).toThrow(
      /--grace must be a number in \[0, 2147483\]/,
    );
  });

  itGloo("allReduce(int32, 'avg') in a group: refused before anything is summed, tensor unchanged" + G, async () => {
    await dist.initProcessGroup({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: 0, timeoutMs: 20_000, ifnames: ['lo'] });
    try {
      const t = tensor([3, 4], { dtype: 'int32' });
      const err = await dist.allReduce(t, 'avg').catch((e) => e);
      expect(err).toBeInstanceOf(DtypeError);
      expect((err as Error).message).toMatch(/op 'avg' needs floating-point tensors/);
      expect(Array.from(t.toTypedArray() as Int32Array)).toEqual([3, 4]);
      const f = tensor([3, 4]);
      await dist.allReduce(f, 'avg');
      expect(Array.from(f.toTypedArray() as Float32Array)).toEqual([3, 4]);
      await expect(dist.broadcast(f, 1)).rejects.toThrow(/src must be an integer in \[0, 0\], got 1/);
      await expect(dist.broadcast(f, 0.5)).rejects.toThrow(RangeError);
      expect(() => new dist.DistributedDataParallel(new nn.Linear(2, 2), { bucketCapMB: Infinity })).toThrow(
        /bucketCapMB must be a number in \(0, 1073741824\], got Infinity/,
      );
    } finally {
      dist.destroyProcessGroup();
    }
  });
});

describe('dist: DistributedSampler', () => {
  const fx = JSON.parse(fs.readFileSync(path.join(root, 'test', 'fixtures', 'ddp', 'sampler.json'), 'utf8')) as {
    cases: {
      n: number;
      world: number;
      rank: number;
      seed: number;
      epoch: number;
      shuffle: boolean;
      dropLast: boolean;
      indices: number[];
    }[];
  };
  it(`same indices as PyTorch's DistributedSampler (${fx.cases.length} cases: padding and drop-last, shuffled and not)`, () => {
    for (const c of fx.cases) {
      const s = new dist.DistributedSampler(c.n, {
        numReplicas: c.world,
        rank: c.rank,
        seed: c.seed,
        shuffle: c.shuffle,
        dropLast: c.dropLast,
      });
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
    expect(
      parseLaunchArgs([
        '--nproc-per-node',
        '2',
        '--nnodes=2',
        '--node-rank',
        '1',
        '--master-addr',
        '10.0.0.1',
        '--master-port',
        '1234',
        's.js',
        '--x',
        'y',
      ]),
    ).toMatchObject({
      nprocPerNode: 2,
      nnodes: 2,
      nodeRank: 1,
      masterAddr: '10.0.0.1',
      masterPort: 1234,
      script: 's.js',
      args: ['--x', 'y'],
    });
    expect(() => parseLaunchArgs(['s.js'])).toThrow(/--nproc-per-node is required/);
    expect(() => parseLaunchArgs(['--nproc-per-node', '2'])).toThrow(/no script/);
    expect(() => parseLaunchArgs(['--bogus', '2', 's.js'])).toThrow(/unknown flag --bogus/);
  });

  it("sets torchrun's environment", () => {
    const e = workerEnv(
      { rank: 3, localRank: 1, worldSize: 4, localWorldSize: 2, nodeRank: 1, nnodes: 2, masterAddr: 'h', masterPort: 7 },
      {},
    );
    expect(e).toMatchObject({
      RANK: '3',
      LOCAL_RANK: '1',
      WORLD_SIZE: '4',
      LOCAL_WORLD_SIZE: '2',
      GROUP_RANK: '1',
      MASTER_ADDR: 'h',
      MASTER_PORT: '7',
      TORCHELASTIC_USE_AGENT_STORE: 'False',
      OMP_NUM_THREADS: '1',
    });
    const r = workerEnv(
      {
        rank: 0,
        localRank: 0,
        worldSize: 2,
        localWorldSize: 2,
        nodeRank: 0,
        nnodes: 1,
        masterAddr: 'h',
        masterPort: 7,
        restartCount: 2,
        maxRestarts: 3,
        agentStore: true,
      },
      {},
    );
    expect(r).toMatchObject({
      TORCHELASTIC_RESTART_COUNT: '2',
      TORCHELASTIC_MAX_RESTARTS: '3',
      TORCHELASTIC_USE_AGENT_STORE: 'True',
      TORCHELASTIC_RUN_ID: 'none',
      TORCH_NCCL_ASYNC_ERROR_HANDLING: '1',
      ROLE_NAME: 'default',
      GROUP_WORLD_SIZE: '1',
    });
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
    const common = [
      '--data',
      'synthetic',
      '--model',
      'resnet20',
      '--batch-size',
      '16',
      '--limit-train-batches',
      '2',
      '--limit-test-batches',
      '1',
      '--device',
      'cpu',
      '--workers',
      '1',
      '--schedule',
      'constant',
      '--out',
      out,
    ];
    const r = await runCli(['train', '--nproc-per-node', '2', '--master-port', '0', '--epochs', '1', ...common]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['checkpoint.json', 'metrics.jsonl', 'report.svg', 'model.safetensors', 'config.json'])
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    const meta = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint.json'), 'utf8'));
    expect(meta.meta?.worldSize ?? meta.worldSize).toBe(2);
    const r2 = await runCli(['train', '--nproc-per-node', '2', '--master-port', '0', '--epochs', '2', '--resume', ...common]);
    expect(r2.code, r2.stderr).toBe(0);
    const lines = fs
      .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
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
    expect(r.stderr).toMatch(/residual launch: rank 2 \(node 0, local rank 2, pid \d+\) was killed by SIGKILL; stopping the other ranks/);
    expect(r.stderr).toMatch(/residual launch: rank 2 .* was killed by SIGKILL; stopped every rank/);
    expect(r.ms).toBeLessThan(60_000);
    fs.rmSync(out, { recursive: true, force: true });
  });

  itGloo(
    'launch --max-restarts 2: a rank SIGKILLed in the first attempt; the whole group restarts (TORCHELASTIC_RESTART_COUNT=1) and finishes' +
      G,
    async () => {
      const out = tmpDir();
      const r = await runCli([
        'launch',
        '--nproc-per-node',
        '2',
        '--master-port',
        '0',
        '--grace',
        '2',
        '--max-restarts',
        '2',
        child,
        'flaky',
        out,
        '1',
      ]);
      expect(r.code, r.stderr).toBe(0);
      // rank 1 was killed; rank 0 fails right after it, and the launcher may see either exit first
      expect(r.stderr).toMatch(
        /rank [01] \(node 0, local rank [01], pid \d+\) (was killed by SIGKILL|exited with code 1); stopping the other ranks/,
      );
      expect(r.stderr).toMatch(/restarting the whole group \(restart 1 of 2; TORCHELASTIC_RESTART_COUNT=1\)/);
      // attempt 0 never finished; attempt 1 did, on both ranks, with torchrun's variables for a restart
      expect(fs.readdirSync(out).sort()).toEqual(['rank0-attempt1.json', 'rank1-attempt1.json']);
      for (const rank of [0, 1]) {
        const o = JSON.parse(fs.readFileSync(path.join(out, `rank${rank}-attempt1.json`), 'utf8'));
        expect(o).toMatchObject({
          rank,
          attempt: 1,
          max: [2],
          env: { restartCount: '1', maxRestarts: '2', agentStore: 'True', runId: 'none', nccl: '1' },
        });
      }
      fs.rmSync(out, { recursive: true, force: true });
    },
  );

  itGloo('launch --max-restarts 1 with a rank that fails every time: gives up after one restart, naming the rank' + G, async () => {
    const out = tmpDir();
    const r = await runCli([
      'launch',
      '--nproc-per-node',
      '2',
      '--master-port',
      '0',
      '--grace',
      '2',
      '--max-restarts',
      '1',
      child,
      'flaky',
      out,
      '99',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/restarting the whole group \(restart 1 of 1/);
    expect(r.stderr).toMatch(
      /residual launch: rank [01] \(node 0, local rank [01], pid \d+\) (was killed by SIGKILL|exited with code 1); no restarts left \(--max-restarts 1 used\), stopping/,
    );
    expect(fs.readdirSync(out)).toEqual([]);
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
