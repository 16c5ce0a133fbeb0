// Interoperability with PyTorch: one DDP job with a Python PyTorch rank
// (torch.nn.parallel.DistributedDataParallel, init_process_group('gloo') from torchrun's environment)
// and a residual rank, training the same network (with BatchNorm, so buffers are broadcast each forward
// too) in one Gloo group, in both orders (rank 0 hosts the store: libtorch's server for a Python rank 0,
// residual's own for a residual rank 0). Both must end with the same weights. Then Python ranks under
// `residual launch` (its agent store), and residual ranks under torchrun (torchrun's agent store).
//
// Python: RESIDUAL_TEST_PYTHON (a python with torch 2.13 + numpy; scripts/ci/setup-python-torch.sh makes
// one under .cache/python-torch), else .cache/python-torch, else python3 if it has torch. When
// RESIDUAL_TEST_PYTHON_DDP=1 (CI) the test must run: a missing Python torch is then a failure.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { manualSeed, randn } from '../../lib/index.js';
import { freePort, workerEnv } from '../../lib/cli/launch.js';
import { PER_RANK, type Named } from '../fixtures/ddp/common.js';
import { glooBuilt, glooSkipNote, root } from '../support/helpers.js';

const required = process.env.RESIDUAL_TEST_PYTHON_DDP === '1';

// Probed without blocking the worker's event loop (importing torch takes seconds on a loaded machine).
async function findPython(): Promise<string | null> {
  const candidates = [process.env.RESIDUAL_TEST_PYTHON, path.join(root, '.cache', 'python-torch', 'bin', 'python'), 'python3'].filter(
    Boolean,
  ) as string[];
  for (const py of candidates) {
    const ok = await new Promise<boolean>((resolve) => {
      execFile(
        py,
        ['-c', 'import torch, numpy, torch.distributed as d; assert d.is_gloo_available(); print(torch.__version__)'],
        { timeout: 120_000 },
        (err) => resolve(!err),
      );
    });
    if (ok) return py;
  }
  return null;
}
const python = await findPython();
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
});

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  const c = spawn(cmd, args, { env, stdio: ['ignore', 'inherit', 'pipe'] });
  live.add(c);
  let stderr = '';
  c.stderr!.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => {
    const kill = setTimeout(() => c.kill('SIGKILL'), 120_000);
    c.on('exit', (code) => {
      clearTimeout(kill);
      live.delete(c);
      resolve({ code, stderr });
    });
  });
}

function expectSame(a: { weights: Named; buffers: Named }, b: { weights: Named; buffers: Named }): void {
  expect(Object.keys(b.weights)).toEqual(Object.keys(a.weights));
  expect(Object.keys(b.buffers)).toEqual(Object.keys(a.buffers));
  for (const group of ['weights', 'buffers'] as const) {
    for (const k of Object.keys(a[group])) {
      const u = a[group][k],
        v = b[group][k];
      expect(v.length, k).toBe(u.length);
      for (let i = 0; i < u.length; i++) {
        if (!(Math.abs(u[i] - v[i]) <= 1e-5 + 1e-4 * Math.abs(u[i])))
          throw new Error(`${group} ${k}[${i}]: rank 0 ${u[i]}, rank 1 ${v[i]}`);
      }
    }
  }
}

describe('dist: a job shared by a Python PyTorch rank and a residual rank', () => {
  // Both orders: a Python rank 0 hosts libtorch's store; a residual rank 0 hosts residual's own (which
  // the Python rank's libtorch client then talks to). A group with a Python rank makes no residual
  // agreement step before DDP (PyTorch's ranks do not take part in it), as the ranks find out at init.
  for (const pyRank of [0, 1]) {
    const nodeRank = 1 - pyRank;
    it.runIf((python !== null || required) && glooBuilt)(
      `Python DDP rank ${pyRank} + residual rank ${nodeRank} (Gloo): the same weights and buffers at the end${glooBuilt ? '' : ` (${glooSkipNote})`}`,
      async () => {
        if (!python)
          throw new Error(
            'RESIDUAL_TEST_PYTHON_DDP=1 but no Python with torch was found: run scripts/ci/setup-python-torch.sh (or set RESIDUAL_TEST_PYTHON)',
          );
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-interop-'));
        const world = 2,
          steps = 4;
        manualSeed(1234);
        const x = randn([world * PER_RANK, 3, 8, 8]);
        fs.writeFileSync(path.join(dir, 'batch.bin'), Buffer.from((x.toTypedArray() as Float32Array).buffer));
        x.dispose();
        const port = await freePort();
        const base = { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1', DIST_TEST_TIMEOUT_MS: '30000' };
        const env = (rank: number) =>
          workerEnv(
            {
              rank,
              localRank: rank,
              worldSize: world,
              localWorldSize: world,
              nodeRank: 0,
              nnodes: 1,
              masterAddr: '127.0.0.1',
              masterPort: port,
            },
            base,
          );
        const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
        const [py, node] = await Promise.all([
          run(python, [path.join(root, 'test', 'fixtures', 'ddp', 'py_rank.py'), dir, String(steps), String(PER_RANK)], env(pyRank)),
          run(
            process.execPath,
            ['--import', register, path.join(root, 'test', 'fixtures', 'ddp', 'child.ts'), 'interop', dir, String(steps)],
            env(nodeRank),
          ),
        ]);
        expect(py.code, `python rank ${pyRank}:\n${py.stderr}`).toBe(0);
        expect(node.code, `residual rank ${nodeRank}:\n${node.stderr}`).toBe(0);
        const a = JSON.parse(fs.readFileSync(path.join(dir, 'rank0.json'), 'utf8')) as { weights: Named; buffers: Named };
        const b = JSON.parse(fs.readFileSync(path.join(dir, 'rank1.json'), 'utf8')) as { weights: Named; buffers: Named };
        fs.rmSync(dir, { recursive: true, force: true });
        expectSame(a, b);
      },
    );
  }

  it.runIf(python !== null || required)("residual launch --no-node: two Python DDP ranks under residual's agent store", async () => {
    if (!python) throw new Error('RESIDUAL_TEST_PYTHON_DDP=1 but no Python with torch was found');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-launch-py-'));
    manualSeed(1234);
    const x = randn([2 * PER_RANK, 3, 8, 8]);
    fs.writeFileSync(path.join(dir, 'batch.bin'), Buffer.from((x.toTypedArray() as Float32Array).buffer));
    x.dispose();
    const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
    const r = await run(
      process.execPath,
      [
        '--import',
        register,
        path.join(root, 'test', 'fixtures', 'ddp', 'cli-entry.ts'),
        'launch',
        '--nproc-per-node',
        '2',
        '--master-port',
        '0',
        '--no-node',
        python,
        path.join(root, 'test', 'fixtures', 'ddp', 'py_rank.py'),
        dir,
        '4',
        String(PER_RANK),
      ],
      { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1' },
    );
    expect(r.code, r.stderr).toBe(0);
    const a = JSON.parse(fs.readFileSync(path.join(dir, 'rank0.json'), 'utf8')) as { weights: Named; buffers: Named };
    const b = JSON.parse(fs.readFileSync(path.join(dir, 'rank1.json'), 'utf8')) as { weights: Named; buffers: Named };
    fs.rmSync(dir, { recursive: true, force: true });
    expectSame(a, b);
  });

  it.runIf(python !== null || required)(
    'torchrun --no-python ... node child.ts: residual ranks under torchrun (its agent hosts the store)',
    async () => {
      if (!python) throw new Error('RESIDUAL_TEST_PYTHON_DDP=1 but no Python with torch was found');
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-torchrun-'));
      const port = await freePort();
      const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
      const r = await run(
        python,
        [
          '-m',
          'torch.distributed.run',
          '--no-python',
          '--nproc-per-node',
          '2',
          '--master-addr',
          '127.0.0.1',
          '--master-port',
          String(port),
          process.execPath,
          '--import',
          register,
          path.join(root, 'test', 'fixtures', 'ddp', 'child.ts'),
          'collectives',
          dir,
        ],
        { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1', DIST_TEST_TIMEOUT_MS: '30000' },
      );
      expect(r.code, r.stderr).toBe(0);
      for (const rank of [0, 1]) {
        const o = JSON.parse(fs.readFileSync(path.join(dir, `rank${rank}.json`), 'utf8'));
        expect(o).toMatchObject({
          rank,
          world: 2,
          sum: [3, 6],
          gathered: [
            [0, 0],
            [1, 10],
          ],
        });
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  );

  it.runIf(python === null && !required)(
    'skipped: no Python with torch (set RESIDUAL_TEST_PYTHON or run scripts/ci/setup-python-torch.sh)',
    () => {
      console.warn(
        'dist-interop: no Python with torch found; the Python<->Node DDP test did not run (RESIDUAL_TEST_PYTHON_DDP=1 makes this a failure)',
      );
    },
  );
});
