// Across machines, not only loopback: two network namespaces joined by a veth pair (10.77.0.1/24 and
// 10.77.0.2/24, addresses of our own), one node of a 2-node job in each, started through
// `residual launch --nnodes 2 --node-rank R --master-addr 10.77.0.1` with GLOO_SOCKET_IFNAME set to the
// namespace's veth end.
// - A DDP job's weights equal the single-process run's (and are bit-identical across the two nodes).
// - The link is cut under a running job (`ip link set ... down`): every rank fails within its timeout
//   with a clear error, and both launchers exit non-zero naming the failure.
// - The same with --max-restarts 1, the link coming back after the failure: both nodes restart the
//   group together and finish.
// The test makes and removes its own namespaces (also when it fails). It needs root, `ip` and network
// namespace support, and says which is missing when it skips; RESIDUAL_TEST_NETNS=1 (CI) makes a skip
// a failure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { globalBatch, makeModel, named, train, type Named } from '../fixtures/ddp/common.js';
import { glooBuilt, glooSkipNote, root } from '../support/helpers.js';

const required = process.env.RESIDUAL_TEST_NETNS === '1';
const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
const entry = path.join(root, 'test', 'fixtures', 'ddp', 'cli-entry.ts');
const child = path.join(root, 'test', 'fixtures', 'ddp', 'child.ts');
const tag = `rsd${process.pid % 100000}`;
const NS = [`${tag}a`, `${tag}b`];
const DEV = [`v${tag}a`, `v${tag}b`]; // at most 15 characters
const ADDR = ['10.77.0.1', '10.77.0.2'];
const PORT = 29517;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why this machine cannot run the test, or null when it can. */
function whyNot(): string | null {
  if (process.platform !== 'linux') return `network namespaces are Linux's (this is ${process.platform})`;
  if (!glooBuilt) return glooSkipNote.replace(/^skipped: /, '');
  if (process.getuid?.() !== 0) return 'not root (creating network namespaces needs root)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'no `ip` command (iproute2) on this machine';
  }
  const probe = `${tag}p`;
  try {
    ip('netns', 'add', probe);
  } catch (e) {
    return `no network namespace support here (\`ip netns add\` failed: ${String((e as { stderr?: string }).stderr ?? (e as Error).message).trim()})`;
  }
  try {
    ip('netns', 'del', probe);
  } catch {
    // gone anyway
  }
  return null;
}
const skipReason = whyNot();

function removeNamespaces(): void {
  for (const ns of NS) {
    try {
      ip('netns', 'del', ns);
    } catch {
      // not there
    }
  }
}
function makeNamespaces(): void {
  removeNamespaces();
  ip('netns', 'add', NS[0]);
  ip('netns', 'add', NS[1]);
  ip('link', 'add', DEV[0], 'netns', NS[0], 'type', 'veth', 'peer', 'name', DEV[1], 'netns', NS[1]);
  for (const i of [0, 1]) {
    ip('-n', NS[i], 'addr', 'add', `${ADDR[i]}/24`, 'dev', DEV[i]);
    ip('-n', NS[i], 'link', 'set', DEV[i], 'up');
    ip('-n', NS[i], 'link', 'set', 'lo', 'up');
  }
}

const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
  if (!skipReason) removeNamespaces();
});

interface Node {
  proc: ChildProcess;
  stderr: string;
  exited: Promise<{ code: number | null; at: number }>;
}
/** `residual launch` for node `i` inside its namespace. */
function startNode(i: number, launchArgs: string[], script: string[], env: NodeJS.ProcessEnv = {}): Node {
  const args = [
    'netns',
    'exec',
    NS[i],
    process.execPath,
    '--import',
    register,
    entry,
    'launch',
    '--nproc-per-node',
    '1',
    '--nnodes',
    '2',
    '--node-rank',
    String(i),
    '--master-addr',
    ADDR[0],
    '--master-port',
    String(PORT),
    '--grace',
    '2',
    ...launchArgs,
    child,
    ...script,
  ];
  const proc = spawn('ip', args, {
    env: { ...process.env, GLOO_SOCKET_IFNAME: DEV[i], OMP_NUM_THREADS: '1', ...env },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  live.add(proc);
  const n: Node = { proc, stderr: '', exited: Promise.resolve({ code: null, at: 0 }) };
  proc.stderr!.on('data', (d) => (n.stderr += String(d)));
  n.exited = new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), 300_000);
    proc.on('exit', (code) => {
      clearTimeout(kill);
      live.delete(proc);
      resolve({ code, at: Date.now() });
    });
  });
  return n;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const progress = (dir: string, r: number): string | null => {
  try {
    return fs.readFileSync(path.join(dir, `rank${r}.progress`), 'utf8');
  } catch {
    return null;
  }
};

function expectClose(a: Named, b: Named, what: string): void {
  expect(Object.keys(a).sort(), what).toEqual(Object.keys(b).sort());
  for (const k of Object.keys(b)) {
    for (let i = 0; i < b[k].length; i++) {
      if (!(Math.abs(a[k][i] - b[k][i]) <= 1e-5 + 1e-4 * Math.abs(b[k][i])))
        throw new Error(`${what} ${k}[${i}]: ${a[k][i]} vs ${b[k][i]}`);
    }
  }
}

describe.runIf(skipReason === null)('dist: a 2-node job across two network namespaces (veth, 10.77.0.1 and 10.77.0.2)', () => {
  it("DDP through residual launch --nnodes 2: the weights equal the single-process run's", async () => {
    makeNamespaces();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-netns-'));
    try {
      const t0 = Date.now();
      const nodes = [0, 1].map((i) => startNode(i, [], ['ddp', dir, 'plain', '0.0005'], { DIST_TEST_TIMEOUT_MS: '60000' }));
      const ends = await Promise.all(nodes.map((n) => n.exited));
      ends.forEach((e, i) => expect(e.code, `node ${i}:\n${nodes[i].stderr}`).toBe(0));
      const res = [0, 1].map(
        (r) => JSON.parse(fs.readFileSync(path.join(dir, `rank${r}.json`), 'utf8')) as { weights: Named; initial: Named },
      );
      // single process, rank 0's initial model, the whole global batch
      const model = makeModel(1, false);
      const initial = named(model, 'data');
      const { x, y } = globalBatch(2);
      train(model, (t) => model.call(t), x, y);
      const weights = named(model, 'data');
      for (const r of [0, 1]) {
        expectClose(res[r].initial, initial, `rank ${r} initial weights`);
        expectClose(res[r].weights, weights, `rank ${r} weights`);
      }
      expect(res[1].weights).toEqual(res[0].weights);
      console.log(
        `netns DDP job: ${((Date.now() - t0) / 1000).toFixed(1)} s for 2 nodes (2 ranks), ${Object.keys(weights).length} parameters equal to the single-process run's`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      removeNamespaces();
    }
  }, 400_000);

  it('the link cut under a running job: every rank fails within its timeout (5 s) with a clear error, and both launchers stop', async () => {
    makeNamespaces();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-netns-'));
    try {
      const nodes = [0, 1].map((i) => startNode(i, ['--rdzv-timeout', '120'], ['netjob', dir, '100000'], { DIST_TEST_TIMEOUT_MS: '5000' }));
      await waitFor(() => [0, 1].every((r) => progress(dir, r)?.startsWith('0 ')), 240_000, 'both ranks to run');
      const cut = Date.now();
      ip('-n', NS[1], 'link', 'set', DEV[1], 'down');
      const ends = await Promise.all(nodes.map((n) => n.exited));
      const res = [0, 1].map((r) => JSON.parse(fs.readFileSync(path.join(dir, `rank${r}.json`), 'utf8')) as { error: string; at: number });
      for (const r of [0, 1]) {
        expect(ends[r].code, `node ${r}:\n${nodes[r].stderr}`).toBe(1);
        expect(res[r].error).toMatch(new RegExp(`^\\[rank ${r}\\] allReduce: .*(Timed out|timed out|timeout|Connection|closed|reset)`));
        expect(nodes[r].stderr).toMatch(/residual launch: .*(exited with code 5|another node reported)/);
        expect(nodes[r].stderr).toMatch(/stopped every rank|stopping/);
        // within the timeout plus a generous allowance for a loaded machine; the exact times are reported
        expect(res[r].at - cut).toBeLessThan(120_000);
      }
      console.log(
        `netns link cut: rank errors ${res.map((o) => `${((o.at - cut) / 1000).toFixed(1)} s`).join(', ')} after the cut (timeout 5 s); ` +
          `launchers exited ${ends.map((e) => `${((e.at - cut) / 1000).toFixed(1)} s`).join(', ')} after it; errors: ${res.map((o) => JSON.stringify(o.error.slice(0, 160))).join(' | ')}`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      removeNamespaces();
    }
  }, 400_000);

  it('the link cut, then back, with --max-restarts 1: both nodes restart the group together and finish', async () => {
    makeNamespaces();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-netns-'));
    try {
      const nodes = [0, 1].map((i) =>
        startNode(i, ['--max-restarts', '1', '--rdzv-timeout', '180'], ['netjob', dir, '100000'], { DIST_TEST_TIMEOUT_MS: '5000' }),
      );
      await waitFor(() => [0, 1].every((r) => progress(dir, r)?.startsWith('0 ')), 240_000, 'both ranks to run');
      const cut = Date.now();
      ip('-n', NS[1], 'link', 'set', DEV[1], 'down');
      // Both ranks fail (their timeout), both launchers decide to restart; node 1 cannot reach node 0's
      // store until the link is back.
      await waitFor(
        () => nodes.every((n) => /restarting the whole group \(restart 1 of 1/.test(n.stderr)),
        240_000,
        'both launchers to restart',
      );
      const restartAt = Date.now();
      ip('-n', NS[1], 'link', 'set', DEV[1], 'up');
      const ends = await Promise.all(nodes.map((n) => n.exited));
      for (const r of [0, 1]) {
        expect(ends[r].code, `node ${r}:\n${nodes[r].stderr}`).toBe(0);
        const o = JSON.parse(fs.readFileSync(path.join(dir, `rank${r}.json`), 'utf8')) as {
          attempt: number;
          error: string | null;
          max: number[];
        };
        expect(o).toMatchObject({ attempt: 1, error: null, max: [2] });
      }
      console.log(
        `netns cut and restart: both launchers restarting ${((restartAt - cut) / 1000).toFixed(1)} s after the cut; link back then; ` +
          `finished ${ends.map((e) => `${((e.at - restartAt) / 1000).toFixed(1)} s`).join(', ')} later`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      removeNamespaces();
    }
  }, 600_000);
});

describe.runIf(skipReason !== null)('dist: the two-namespace test', () => {
  it(`skipped: ${skipReason ?? ''}`, () => {
    if (required) throw new Error(`RESIDUAL_TEST_NETNS=1 but the two-namespace test cannot run here: ${skipReason}`);
    console.warn(`dist-netns: skipped: ${skipReason}`);
  });
});
