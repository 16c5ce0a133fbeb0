// A job that survives a lost rank: `residual train --nproc-per-node 2 --max-restarts 2`, with rank 0
// killed (kill -9) in the middle of an epoch after the first checkpoint. The launcher restarts the whole
// group, the ranks resume from the last checkpoint (checkpoints fall on epoch boundaries), and the run
// finishes with weights bit-identical to an uninterrupted run's; the run folder's restarts.jsonl says
// how many restarts happened and why. Linux (the ranks are found through /proc).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { glooBuilt, root } from '../support/helpers.js';

const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
const entry = path.join(root, 'test', 'fixtures', 'ddp', 'cli-entry.ts');
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
});

const EPOCHS = 3,
  STEPS = 6;
const trainArgs = (out: string): string[] => [
  'train',
  '--nproc-per-node',
  '2',
  '--master-port',
  '0',
  '--grace',
  '2',
  '--max-restarts',
  '2',
  '--data',
  'synthetic',
  '--model',
  'resnet20',
  '--batch-size',
  '8',
  '--limit-train-batches',
  String(STEPS),
  '--limit-test-batches',
  '1',
  '--epochs',
  String(EPOCHS),
  '--device',
  'cpu',
  '--workers',
  '1',
  '--schedule',
  'constant',
  '--log-every',
  '1',
  '--out',
  out,
];

/** The ranks the launcher `pid` started, by RANK. */
function ranksOf(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let kids: number[] = [];
  try {
    kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0);
  } catch {
    return out; // no children (yet)
  }
  for (const k of kids) {
    try {
      const env = fs.readFileSync(`/proc/${k}/environ`, 'utf8').split('\0');
      const r = env.find((e) => e.startsWith('RANK='));
      if (r) out.set(Number(r.slice(5)), k);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function records(file: string): Record<string, unknown>[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Runs `residual train ...`; `during` is polled every 100 ms while it runs. */
function run(args: string[], during?: (pid: number) => void): Promise<{ code: number | null; stderr: string; ms: number }> {
  const t0 = Date.now();
  const c = spawn(process.execPath, ['--import', register, entry, ...args], {
    env: { ...process.env, GLOO_SOCKET_IFNAME: 'lo', OMP_NUM_THREADS: '1', RESIDUAL_DIST_TIMEOUT: '60' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(c);
  let stderr = '';
  c.stderr!.on('data', (d) => (stderr += String(d)));
  const poll = during ? setInterval(() => during(c.pid!), 100) : null;
  return new Promise((resolve) => {
    const kill = setTimeout(() => c.kill('SIGKILL'), 400_000);
    c.on('exit', (code) => {
      clearTimeout(kill);
      if (poll) clearInterval(poll);
      live.delete(c);
      resolve({ code, stderr, ms: Date.now() - t0 });
    });
  });
}

describe.runIf(process.platform === 'linux' && glooBuilt)('a job that survives a lost rank', () => {
  it(`kill -9 of rank 0 mid-epoch: the group restarts, resumes from the epoch checkpoint, and ends with the uninterrupted run's weights`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-restart-'));
    try {
      const ref = path.join(dir, 'ref'),
        cut = path.join(dir, 'cut');
      const a = await run(trainArgs(ref));
      expect(a.code, a.stderr).toBe(0);

      // The same run, with rank 0 killed once the second epoch is under way (its first checkpoint is
      // written before the second epoch's first step, so the restart resumes from it).
      let killed: { pid: number; epoch: number; step: number } | null = null;
      const b = await run(trainArgs(cut), (launcher) => {
        if (killed) return;
        const steps = records(path.join(cut, 'metrics.jsonl')).filter((r) => r.type === 'step');
        const lastStep = steps[steps.length - 1];
        // at least two steps into the second epoch (or later), before the last step
        if (!lastStep || (lastStep.step as number) < STEPS + 2 || (lastStep.step as number) >= EPOCHS * STEPS - 1) return;
        const pid = ranksOf(launcher).get(0);
        if (!pid) return;
        process.kill(pid, 'SIGKILL');
        killed = { pid, epoch: lastStep.epoch as number, step: lastStep.step as number };
      });
      expect(killed, `rank 0 was never seen mid-epoch 2 or 3:\n${b.stderr}`).not.toBe(null);
      expect(b.code, b.stderr).toBe(0);
      // The launcher names the first rank it saw end: rank 0 (killed), or rank 1 if its error exit came first.
      expect(b.stderr).toMatch(
        new RegExp(
          `rank 0 \\(node 0, local rank 0, pid ${killed!.pid}\\) was killed by SIGKILL|rank 1 \\(node 0, local rank 1, pid \\d+\\) exited with code`,
        ),
      );
      expect(b.stderr).toMatch(/restarting the whole group \(restart 1 of 2; TORCHELASTIC_RESTART_COUNT=1\)/);

      // The run folder says what happened.
      const rs = records(path.join(cut, 'restarts.jsonl'));
      expect(rs).toHaveLength(2);
      expect(rs[0]).toMatchObject({ event: 'failure', node: 0, attempt: 0, action: 'restart', restarts: 1, maxRestarts: 2 });
      if (rs[0].rank === 0)
        expect(rs[0]).toMatchObject({ signal: 'SIGKILL', reason: expect.stringMatching(/rank 0 .* was killed by SIGKILL/) });
      else expect(rs[0]).toMatchObject({ rank: 1, reason: expect.stringMatching(/rank 1 .* exited with code/) });
      expect(rs[1]).toMatchObject({ event: 'finished', attempt: 1, restarts: 1 });
      // Each epoch once in metrics.jsonl (what ran after the checkpoint was dropped and run again).
      const epochs = records(path.join(cut, 'metrics.jsonl'))
        .filter((r) => r.type === 'epoch')
        .map((r) => r.epoch);
      expect(epochs).toEqual([1, 2, 3]);
      // Bit for bit the uninterrupted run's weights.
      const w0 = fs.readFileSync(path.join(ref, 'model.safetensors'));
      const w1 = fs.readFileSync(path.join(cut, 'model.safetensors'));
      expect(w1.length).toBe(w0.length);
      expect(w1.equals(w0), 'model.safetensors differs from the uninterrupted run').toBe(true);
      console.log(
        `restart test: uninterrupted ${(a.ms / 1000).toFixed(1)} s; killed rank 0 (pid ${killed!.pid}) at epoch ${killed!.epoch} step ${killed!.step}; restarted run ${(b.ms / 1000).toFixed(1)} s`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
