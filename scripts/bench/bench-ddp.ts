// Data-parallel benchmark on the CPU (a script, not a test): ResNet-20 training step time at world
// size 1 and 2 with the same global batch, the scaling efficiency, and the time DDP's communication adds
// to each step as a function of the bucket size. Results go to BENCHMARKS.md by hand.
//   node --import ./test/fixtures/ddp/register.mjs scripts/bench/bench-ddp.ts [--steps 20] [--global 64]
// Each rank runs with one intra-op thread (as torchrun sets OMP_NUM_THREADS=1).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cifarResnet, crossEntropy, dist, manualSeed, optim, randn, scope, setNumThreads, tensor, type Tensor } from '../../lib/index.js';
import { launch } from '../../lib/cli/launch.js';

const self = fileURLToPath(import.meta.url);
const arg = (name: string, d: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const steps = arg('steps', 20);
const globalBatch = arg('global', 64);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function rankMain(): Promise<void> {
  setNumThreads(1);
  const world = Number(process.env.WORLD_SIZE ?? 1);
  const bucket = arg('bucket', 25);
  const out = process.argv[process.argv.indexOf('--out') + 1];
  if (world > 1) await dist.initProcessGroup({ timeoutMs: 120_000 });
  const rank = dist.getRank();
  manualSeed(0);
  const model = cifarResnet(20, { numClasses: 10, inChannels: 3 });
  const per = globalBatch / world;
  manualSeed(1 + rank);
  const x = randn([per, 3, 32, 32]);
  const y = tensor(
    Array.from({ length: per }, (_, i) => i % 10),
    { dtype: 'int64' },
  );
  const opt = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
  const timeSteps = (call: (t: Tensor) => Tensor): number[] => {
    const ts: number[] = [];
    for (let s = 0; s < steps + 3; s++) {
      const t0 = performance.now();
      scope(() => {
        const loss = crossEntropy(call(x), y);
        opt.zeroGrad();
        loss.backward();
        opt.step();
      });
      if (s >= 3) ts.push(performance.now() - t0);
    }
    return ts;
  };
  // compute only: the same per-rank step without DDP (every rank does it at the same time), in rounds
  // interleaved with the DDP steps, so load from other processes on the machine hits both alike.
  const ddp = world > 1 ? new dist.DistributedDataParallel(model, { bucketCapMB: bucket }) : null;
  const localTimes: number[] = [],
    ddpTimes: number[] = [];
  for (let round = 0; round < 3; round++) {
    localTimes.push(...timeSteps((t) => model.call(t)));
    if (ddp) ddpTimes.push(...timeSteps((t) => ddp.call(t)));
  }
  const local = median(localTimes);
  const ddpMs = ddp ? median(ddpTimes) : local;
  // the best step: what the machine does when nothing else competes for its cores
  const localBest = Math.min(...localTimes);
  const ddpBest = ddp ? Math.min(...ddpTimes) : localBest;
  if (ddp) {
    ddp.destroy();
    await dist.barrier();
  }
  if (rank === 0)
    fs.writeFileSync(out, JSON.stringify({ world, bucket, per, localMs: local, stepMs: ddpMs, localBest, stepBest: ddpBest }));
  if (world > 1) dist.destroyProcessGroup();
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ddp-'));
  const configs = [
    { world: 1, bucket: 25 },
    { world: 2, bucket: 25 },
    { world: 2, bucket: 1 },
    { world: 2, bucket: 0.25 },
    { world: 2, bucket: 0.05 },
  ];
  const rows: { world: number; bucket: number; per: number; localMs: number; stepMs: number; localBest: number; stepBest: number }[] = [];
  for (const [i, c] of configs.entries()) {
    const out = path.join(dir, `r${i}.json`);
    const r = await launch({
      nprocPerNode: c.world,
      masterPort: 0,
      script: self,
      args: ['--rank-main', '--bucket', String(c.bucket), '--steps', String(steps), '--global', String(globalBatch), '--out', out],
      env: { ...process.env, GLOO_SOCKET_IFNAME: process.env.GLOO_SOCKET_IFNAME ?? 'lo' },
    });
    if (r.code !== 0) throw new Error(`config ${JSON.stringify(c)} failed`);
    rows.push(JSON.parse(fs.readFileSync(out, 'utf8')));
  }
  const base = rows[0].stepMs;
  const baseBest = rows[0].stepBest;
  console.log(
    `ResNet-20, 32x32x3 synthetic images, global batch ${globalBatch}, 3 x ${steps} steps, ${os.cpus().length} CPU cores (${os.cpus()[0]?.model ?? '?'}), 1 thread per rank, load average ${os.loadavg()[0].toFixed(1)}`,
  );
  console.log('Each cell: median step (best step).');
  console.log(
    '| ranks | batch per rank | bucket cap MB | step ms | images/s | scaling efficiency | compute-only step ms | communication ms (share) |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  const f = (m: number, b: number): string => `${m.toFixed(0)} (${b.toFixed(0)})`;
  for (const r of rows) {
    const comm = r.stepMs - r.localMs,
      commBest = r.stepBest - r.localBest;
    const eff = (b: number, t: number) => `${((b / (r.world * t)) * 100).toFixed(0)}%`;
    console.log(
      `| ${r.world} | ${r.per} | ${r.world === 1 ? '-' : r.bucket} | ${f(r.stepMs, r.stepBest)} | ${((globalBatch * 1000) / r.stepMs).toFixed(0)} (${((globalBatch * 1000) / r.stepBest).toFixed(0)}) | ` +
        `${r.world === 1 ? '-' : `${eff(base, r.stepMs)} (${eff(baseBest, r.stepBest)})`} | ${f(r.localMs, r.localBest)} | ` +
        `${r.world === 1 ? '-' : `${comm.toFixed(0)} (${commBest.toFixed(0)}), ${((commBest / r.stepBest) * 100).toFixed(0)}% of the best step`} |`,
    );
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

if (process.argv.includes('--rank-main')) await rankMain();
else await main();
