// `residual launch`: starts N ranks on this node with the environment torchrun gives its workers
// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, ROLE_RANK,
// ...). Rank 0 hosts the TCPStore (TORCHELASTIC_USE_AGENT_STORE=False). When any rank fails, the
// others are stopped (SIGTERM, then SIGKILL after a grace period) and the launcher exits non-zero with
// a message naming the rank.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  /** 0 picks a free port (one node only). */
  masterPort?: number;
  /** The command: a script run with this Node (same execArgv), or any program with noNode. */
  script: string;
  args?: string[];
  noNode?: boolean;
  /** Seconds between SIGTERM and SIGKILL when stopping the other ranks (default 5). */
  graceSeconds?: number;
  env?: NodeJS.ProcessEnv;
  /** Where the launcher's own messages go (default stderr). */
  log?: (line: string) => void;
}

export interface LaunchResult {
  code: number;
  /** The first rank that failed, if any. */
  failedRank?: number;
  message?: string;
}

/** A TCP port free on this machine now (bind port 0). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The environment torchrun sets for one worker. */
export function workerEnv(o: { rank: number; localRank: number; worldSize: number; localWorldSize: number; nodeRank: number; nnodes: number; masterAddr: string; masterPort: number }, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    MASTER_ADDR: o.masterAddr,
    MASTER_PORT: String(o.masterPort),
    RANK: String(o.rank),
    WORLD_SIZE: String(o.worldSize),
    LOCAL_RANK: String(o.localRank),
    LOCAL_WORLD_SIZE: String(o.localWorldSize),
    GROUP_RANK: String(o.nodeRank),
    GROUP_WORLD_SIZE: String(o.nnodes),
    ROLE_NAME: 'default',
    ROLE_RANK: String(o.rank),
    ROLE_WORLD_SIZE: String(o.worldSize),
    TORCHELASTIC_RESTART_COUNT: '0',
    TORCHELASTIC_MAX_RESTARTS: '0',
    TORCHELASTIC_RUN_ID: base.TORCHELASTIC_RUN_ID ?? 'none',
    TORCHELASTIC_USE_AGENT_STORE: 'False',
  };
  // As torchrun: one intra-op thread per rank unless told otherwise, so N ranks do not oversubscribe.
  if (o.localWorldSize > 1 && base.OMP_NUM_THREADS === undefined) env.OMP_NUM_THREADS = '1';
  return env;
}

export async function launch(o: LaunchOptions): Promise<LaunchResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const nproc = o.nprocPerNode, nnodes = o.nnodes ?? 1, nodeRank = o.nodeRank ?? 0;
  if (!Number.isInteger(nproc) || nproc < 1) throw new RangeError(`launch: --nproc-per-node must be a positive integer, got ${nproc}`);
  if (!Number.isInteger(nnodes) || nnodes < 1) throw new RangeError(`launch: --nnodes must be a positive integer, got ${nnodes}`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new RangeError(`launch: --node-rank must be in [0, ${nnodes}), got ${nodeRank}`);
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  let masterPort = o.masterPort ?? 29500;
  if (masterPort === 0) {
    if (nnodes > 1) throw new RangeError('launch: --master-port 0 (a free port) works on one node only; give every node the same port');
    masterPort = await freePort(masterAddr);
  }
  const worldSize = nproc * nnodes;
  const graceMs = (o.graceSeconds ?? 5) * 1000;
  const children: { rank: number; child: ChildProcess; done: boolean }[] = [];
  let failure: LaunchResult | undefined;
  let stopping = false;

  const stopAll = (why: string): void => {
    if (stopping) return;
    stopping = true;
    for (const c of children) if (!c.done) c.child.kill('SIGTERM');
    const t = setTimeout(() => {
      for (const c of children) if (!c.done) c.child.kill('SIGKILL');
    }, graceMs);
    t.unref();
    void why;
  };

  const onSignal = (sig: NodeJS.Signals): void => {
    if (!failure) failure = { code: 128 + (sig === 'SIGINT' ? 2 : 15), message: `launch: got ${sig}, stopping every rank` };
    log(`residual launch: got ${sig}, stopping every rank`);
    stopAll(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const script = o.noNode ? o.script : path.resolve(o.script);
  const results = await new Promise<void>((resolveAll) => {
    let left = nproc;
    for (let local = 0; local < nproc; local++) {
      const rank = nodeRank * nproc + local;
      const env = workerEnv({ rank, localRank: local, worldSize, localWorldSize: nproc, nodeRank, nnodes, masterAddr, masterPort }, o.env ?? process.env);
      const cmd = o.noNode ? script : process.execPath;
      const argv = o.noNode ? o.args ?? [] : [...process.execArgv, script, ...(o.args ?? [])];
      const child = spawn(cmd, argv, { env, stdio: 'inherit' });
      const rec = { rank, child, done: false };
      children.push(rec);
      const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error): void => {
        if (rec.done) return;
        rec.done = true;
        const bad = err || code !== 0;
        if (bad && !failure) {
          const what = err ? `could not start (${err.message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
          const message = `residual launch: rank ${rank} (local rank ${local}, pid ${child.pid ?? '?'}) ${what}; stopping the other ranks`;
          failure = { code: 1, failedRank: rank, message };
          log(message);
          stopAll(message);
        }
        if (--left === 0) resolveAll();
      };
      child.on('error', (e) => finish(null, null, e));
      child.on('exit', (code, signal) => finish(code, signal));
    }
  });
  void results;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return failure ?? { code: 0 };
}

const HELP = `Usage: residual launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] script.js [args...]

Starts N ranks of a data-parallel job on this node, with the environment torchrun sets (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, ...). The script calls
dist.initProcessGroup(). Several machines: run the same command on each with --nnodes M, its own
--node-rank and the address and port of node 0. If a rank fails, every other rank is stopped and the
launcher exits with a message naming the failed rank.

Options:
  --nproc-per-node <n>   ranks on this node (required)
  --nnodes <n>           machines in the job (default 1)
  --node-rank <n>        this machine's index (default 0)
  --master-addr <host>   address of node 0, where rank 0 hosts the store (default 127.0.0.1)
  --master-port <port>   its port (default 29500; 0 picks a free one on a single node)
  --no-node              run the command as a program instead of a Node script
  --grace <seconds>      wait between SIGTERM and SIGKILL when stopping ranks (default 5)`;

/** Parses `residual launch` arguments: the launcher's flags come before the script. */
export function parseLaunchArgs(argv: string[]): LaunchOptions | 'help' {
  const o: Partial<LaunchOptions> = {};
  let i = 0;
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === '' || !Number.isInteger(n) || n < 0) throw new RangeError(`residual launch: --${name} must be a non-negative integer, got '${v ?? ''}'`);
    return n;
  };
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) break;
    if (a === '--') {
      i++;
      break;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const val = (): string | undefined => inline ?? argv[++i];
    switch (name) {
      case 'help':
        return 'help';
      case 'nproc-per-node':
      case 'nproc_per_node':
        o.nprocPerNode = num(name, val());
        break;
      case 'nnodes':
        o.nnodes = num(name, val());
        break;
      case 'node-rank':
      case 'node_rank':
        o.nodeRank = num(name, val());
        break;
      case 'master-addr':
      case 'master_addr':
        o.masterAddr = val();
        break;
      case 'master-port':
      case 'master_port':
        o.masterPort = num(name, val());
        break;
      case 'grace':
        o.graceSeconds = Number(val());
        break;
      case 'no-node':
      case 'no-python':
        o.noNode = true;
        break;
      default:
        throw new RangeError(`residual launch: unknown flag --${name} (see residual launch --help)`);
    }
  }
  if (o.nprocPerNode === undefined) throw new RangeError('residual launch: --nproc-per-node is required');
  if (i >= argv.length) throw new RangeError('residual launch: no script given');
  o.script = argv[i];
  o.args = argv.slice(i + 1);
  return o as LaunchOptions;
}

export async function launchMain(argv: string[]): Promise<number> {
  let o: LaunchOptions | 'help';
  try {
    o = parseLaunchArgs(argv);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  if (o === 'help') {
    console.log(HELP);
    return 0;
  }
  const r = await launch(o);
  return r.code;
}

/** Cores per rank hint for messages. */
export function coresPerRank(n: number): number {
  return Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / n));
}

const LAUNCH_FLAGS = new Set(['nproc-per-node', 'nproc_per_node', 'nnodes', 'node-rank', 'node_rank', 'master-addr', 'master_addr', 'master-port', 'master_port', 'grace']);

/**
 * `residual train --nproc-per-node N [--nnodes ...] <train flags>`: the launcher's flags are taken out
 * and N ranks of `residual train <train flags>` are started with this same CLI entry point.
 */
export async function launchTrain(argv: string[]): Promise<number> {
  const launcherArgs: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.startsWith('--') ? a.slice(2).split('=')[0] : '';
    if (LAUNCH_FLAGS.has(name)) {
      launcherArgs.push(a);
      if (!a.includes('=')) launcherArgs.push(argv[++i]);
    } else {
      rest.push(a);
    }
  }
  // Every rank must use the same run folder: the default one (runs/<model>-<data>, then -2, -3, ...) is
  // chosen here, once, instead of by each rank (a later rank would see rank 0's folder and pick -2).
  const given = (name: string): string | undefined => {
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === `--${name}`) return rest[i + 1];
      if (rest[i].startsWith(`--${name}=`)) return rest[i].slice(name.length + 3);
    }
    return undefined;
  };
  if (given('out') === undefined && !rest.includes('--resume') && !rest.includes('--help')) {
    const { DEFAULT_CONFIG } = await import('../train/config.js');
    const { defaultRunFolder } = await import('../train/run-folder.js');
    rest.push('--out', defaultRunFolder(given('model') ?? DEFAULT_CONFIG.model, given('data') ?? DEFAULT_CONFIG.data));
  }
  const entry = process.argv[1];
  if (!entry) {
    console.error('residual train: cannot find the CLI entry point to start the ranks with');
    return 1;
  }
  let o: LaunchOptions | 'help';
  try {
    o = parseLaunchArgs([...launcherArgs, entry, 'train', ...rest]);
  } catch (e) {
    console.error((e as Error).message.replace('residual launch', 'residual train'));
    return 2;
  }
  if (o === 'help') return 0;
  return (await launch(o)).code;
}
