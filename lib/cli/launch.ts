// `residual launch`: starts N ranks on this node with the environment torchrun gives its workers
// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, ROLE_RANK,
// TORCHELASTIC_RESTART_COUNT, ...), and acts as the node's agent, as torchrun's elastic agent does:
//
// - The agent on node 0 hosts the job's store (residual's store server: native/distributed/store.cpp) for the whole
//   job, and the ranks use it (TORCHELASTIC_USE_AGENT_STORE=True), so the store outlives any rank.
// - Before each attempt the agents meet in the store (residual_agent/<attempt>/joined/<node>); node 0 then
//   clears what the last attempt's ranks left there and says go; every agent starts its ranks with
//   TORCHELASTIC_RESTART_COUNT=<attempt>.
// - When a rank fails, its agent says so in the store (residual_agent/<attempt>/failed) and stops its
//   other ranks (SIGTERM, then SIGKILL after a grace period); every other agent sees it and stops its
//   ranks too. With restarts left (--max-restarts), every agent starts the next attempt; otherwise each
//   exits non-zero with a message naming the rank.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { checkRange, describeRange, inRange, type NumberRange } from '../core/range.js';
import { StoreClient } from '../distributed/store.js';
import type { NativeStore } from '../addon/native-types.js';

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
  /** The arguments of each attempt (0 first), when they change on a restart (default: `args`). */
  argsFor?: (attempt: number) => string[];
  noNode?: boolean;
  /** Seconds between SIGTERM and SIGKILL when stopping the other ranks (default 5). */
  graceSeconds?: number;
  /** How many times the whole group is restarted after a failure (default 0), as torchrun's --max-restarts. */
  maxRestarts?: number;
  /** Seconds the agents wait for each other at each attempt, and for node 0's store (default 900). */
  rdzvTimeoutSeconds?: number;
  /** A JSON-lines file that gets one record per failure (and one when the job ends after restarts). */
  restartLog?: string;
  env?: NodeJS.ProcessEnv;
  /** Where the launcher's own messages go (default stderr). */
  log?: (line: string) => void;
}

export interface LaunchResult {
  code: number;
  /** The first rank that failed (in the last attempt), if any. */
  failedRank?: number;
  message?: string;
  /** How many times the group was restarted. */
  restarts: number;
}

// Every number of the launcher, with the range its help states.
export const LAUNCH_RANGES = {
  nprocPerNode: { integer: true, min: 1, max: 2147483647 },
  nnodes: { integer: true, min: 1, max: 2147483647 },
  nodeRank: { integer: true, min: 0, max: 2147483646 },
  masterPort: { integer: true, min: 0, max: 65535 },
  graceSeconds: { min: 0, max: 2147483 },
  maxRestarts: { integer: true, min: 0, max: 2147483647 },
  rdzvTimeoutSeconds: { min: 0.001, max: 2147483 },
} satisfies Record<string, NumberRange>;

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

export interface WorkerEnvOptions {
  rank: number;
  localRank: number;
  worldSize: number;
  localWorldSize: number;
  nodeRank: number;
  nnodes: number;
  masterAddr: string;
  masterPort: number;
  restartCount?: number;
  maxRestarts?: number;
  /** The store is the agent's (the launcher's), not rank 0's (default false: rank 0 hosts it). */
  agentStore?: boolean;
}

/** The environment torchrun sets for one worker. */
export function workerEnv(o: WorkerEnvOptions, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
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
    TORCHELASTIC_RESTART_COUNT: String(o.restartCount ?? 0),
    TORCHELASTIC_MAX_RESTARTS: String(o.maxRestarts ?? 0),
    TORCHELASTIC_RUN_ID: base.TORCHELASTIC_RUN_ID ?? 'none',
    TORCHELASTIC_USE_AGENT_STORE: o.agentStore ? 'True' : 'False',
    TORCH_NCCL_ASYNC_ERROR_HANDLING: base.TORCH_NCCL_ASYNC_ERROR_HANDLING ?? '1',
  };
  // As torchrun: one intra-op thread per rank unless told otherwise, so N ranks do not oversubscribe.
  if (o.localWorldSize > 1 && base.OMP_NUM_THREADS === undefined) env.OMP_NUM_THREADS = '1';
  return env;
}

function check(name: string, v: number, r: NumberRange): void {
  checkRange(`launch: --${name}`, v, r);
}

const AGENT = 'residual_agent/';

/** A failure of an attempt: which rank, and what happened to it. */
interface Failure {
  rank?: number;
  node: number;
  message: string;
  exitCode?: number | null;
  signal?: string | null;
  /** Seen in the store: another node's rank failed. */
  remote?: boolean;
}

function appendRecord(file: string | undefined, rec: Record<string, unknown>, log: (l: string) => void): void {
  if (!file) return;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.appendFileSync(file, JSON.stringify({ time: new Date().toISOString(), ...rec }) + '\n');
  } catch (e) {
    log(`residual launch: could not write ${file}: ${(e as Error).message}`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it is true or `ms` pass; errors of `cond` (a store not reachable yet) are retried. */
async function until(cond: () => Promise<boolean>, ms: number, every = 200): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await cond()) return true;
    } catch {
      // retried
    }
    if (Date.now() >= end) return false;
    await sleep(Math.min(every, Math.max(1, end - Date.now())));
  }
}

/** The launcher's numbers, each checked exactly against its range (what launch() starts from). */
export function checkLaunchOptions(o: LaunchOptions): {
  nproc: number;
  nnodes: number;
  nodeRank: number;
  worldSize: number;
  maxRestarts: number;
  graceSeconds: number;
  rdzvSeconds: number;
  masterPort: number;
} {
  const nproc = o.nprocPerNode,
    nnodes = o.nnodes ?? 1,
    nodeRank = o.nodeRank ?? 0;
  check('nproc-per-node', nproc, LAUNCH_RANGES.nprocPerNode);
  check('nnodes', nnodes, LAUNCH_RANGES.nnodes);
  check('node-rank', nodeRank, { ...LAUNCH_RANGES.nodeRank, max: nnodes - 1 });
  const worldSize = nproc * nnodes;
  if (!inRange(worldSize, { integer: true, max: 2147483647 }))
    throw new RangeError(
      `launch: the world size (--nproc-per-node ${nproc} x --nnodes ${nnodes} = ${worldSize}) must be at most 2147483647`,
    );
  const maxRestarts = o.maxRestarts ?? 0;
  check('max-restarts', maxRestarts, LAUNCH_RANGES.maxRestarts);
  const graceSeconds = o.graceSeconds ?? 5;
  check('grace', graceSeconds, LAUNCH_RANGES.graceSeconds);
  const rdzvSeconds = o.rdzvTimeoutSeconds ?? 900;
  check('rdzv-timeout', rdzvSeconds, LAUNCH_RANGES.rdzvTimeoutSeconds);
  const masterPort = o.masterPort ?? 29500;
  check('master-port', masterPort, LAUNCH_RANGES.masterPort);
  if (masterPort === 0 && nnodes > 1)
    throw new RangeError('launch: --master-port 0 (a free port) works on one node only; give every node the same port');
  return { nproc, nnodes, nodeRank, worldSize, maxRestarts, graceSeconds, rdzvSeconds, masterPort };
}

export async function launch(o: LaunchOptions): Promise<LaunchResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const { nproc, nnodes, nodeRank, worldSize, maxRestarts, graceSeconds, rdzvSeconds } = checkLaunchOptions(o);
  let { masterPort } = checkLaunchOptions(o);
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  const graceMs = Math.round(graceSeconds * 1000);
  const rdzvMs = Math.max(1, Math.round(rdzvSeconds * 1000));

  // Node 0's agent hosts the job's store for the whole job (the native addon's store server).
  const { native: N } = await import('../addon/binding.js');
  let server: NativeStore | null = null;
  if (nodeRank === 0) {
    try {
      server = N.distStoreServe({
        port: masterPort,
        timeoutMs: Math.min(rdzvMs, 2147483647),
        maxConnections: Math.min(1 << 20, 1024 + 4 * worldSize),
      });
    } catch (e) {
      return { code: 1, restarts: 0, message: `residual launch: ${(e as Error).message.replace(/^distStoreServe: /, '')}` };
    }
    masterPort = N.distStorePort(server);
  }
  const client = new StoreClient(nodeRank === 0 ? '127.0.0.1' : masterAddr, masterPort, Math.min(rdzvMs, 10_000));
  const closeAll = (): void => {
    client.close();
    if (server) N.distStoreClose(server);
  };

  let interrupted: string | null = null;
  let children: { rank: number; local: number; child: ChildProcess; done: boolean }[] = [];
  let wake = null as (() => void) | null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = sig;
    log(`residual launch: got ${sig}, stopping every rank`);
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const script = o.noNode ? o.script : path.resolve(o.script);
  let restarts = 0;
  let result: LaunchResult | undefined;
  try {
    try {
      await client.connect(rdzvMs);
    } catch (e) {
      return {
        code: 1,
        restarts,
        message: `residual launch: node ${nodeRank}: ${(e as Error).message} (is node 0's launcher running, with the same --master-addr and --master-port?)`,
      };
    }
    for (let attempt = 0; ; attempt++) {
      const pre = `${AGENT}${attempt}/`;
      // ---- the agents meet ----
      // Each node says so under its own key (a SET can be repeated safely, unlike an ADD whose reply
      // was lost), retried until node 0's store answers.
      const nodeKeys = (what: string): string[] => Array.from({ length: nnodes }, (_, n) => `${pre}${what}/${n}`);
      let joinedSaid = false;
      const sayJoined = async (): Promise<void> => {
        if (joinedSaid) return;
        await client.set(`${pre}joined/${nodeRank}`, '1');
        joinedSaid = true;
      };
      if (nodeRank === 0) {
        const ok = await until(async () => {
          await sayJoined();
          return interrupted !== null || (await client.check(nodeKeys('joined')));
        }, rdzvMs);
        if (interrupted) break;
        if (!ok) {
          const missing: number[] = [];
          for (const [n, k] of nodeKeys('joined').entries()) if (!(await client.check([k]).catch(() => false))) missing.push(n);
          result = {
            code: 1,
            restarts,
            message: `residual launch: node${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not join attempt ${attempt} within ${rdzvSeconds} s (a node's launcher is not running, or cannot reach ${masterAddr}:${masterPort})`,
          };
          break;
        }
        // What the last attempt's ranks left in the store is theirs: the next ranks start clean.
        N.distStoreReset(server!, AGENT);
        await client.set(pre + 'go', '1');
      } else {
        const ok = await until(async () => {
          await sayJoined();
          return interrupted !== null || (await client.check([pre + 'go']));
        }, rdzvMs);
        if (interrupted) break;
        if (!ok) {
          result = {
            code: 1,
            restarts,
            message: `residual launch: node ${nodeRank}: node 0 did not start attempt ${attempt} within ${rdzvSeconds} s (is node 0's launcher running?)`,
          };
          break;
        }
      }

      // ---- this attempt's ranks ----
      const args = o.argsFor ? o.argsFor(attempt) : (o.args ?? []);
      let failure = undefined as Failure | undefined;
      let left = nproc;
      children = [];
      const settled = new Promise<void>((resolve) => (wake = resolve));
      for (let local = 0; local < nproc; local++) {
        const rank = nodeRank * nproc + local;
        const env = workerEnv(
          {
            rank,
            localRank: local,
            worldSize,
            localWorldSize: nproc,
            nodeRank,
            nnodes,
            masterAddr,
            masterPort,
            restartCount: attempt,
            maxRestarts,
            agentStore: true,
          },
          o.env ?? process.env,
        );
        const cmd = o.noNode ? script : process.execPath;
        const argv = o.noNode ? args : [...process.execArgv, script, ...args];
        const child = spawn(cmd, argv, { env, stdio: 'inherit' });
        const rec = { rank, local, child, done: false };
        children.push(rec);
        const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error): void => {
          if (rec.done) return;
          rec.done = true;
          if ((err || code !== 0) && !failure) {
            const what = err ? `could not start (${err.message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
            failure = {
              rank,
              node: nodeRank,
              exitCode: code,
              signal,
              message: `rank ${rank} (node ${nodeRank}, local rank ${local}, pid ${child.pid ?? '?'}) ${what}`,
            };
            wake?.();
          }
          if (--left === 0) wake?.();
        };
        child.on('error', (e) => finish(null, null, e));
        child.on('exit', (code, signal) => finish(code, signal));
      }
      // Another node's failure, seen in the store.
      let watching = true;
      const watch = (async () => {
        while (watching && !failure && left > 0) {
          await sleep(500);
          if (!watching || failure || left === 0) break;
          try {
            if (await client.check([pre + 'failed'])) {
              const why = (await client.get(pre + 'failed')).toString('utf8');
              if (!failure) {
                failure = { node: -1, remote: true, message: why ? `another node reported: ${why}` : 'another node reported a failure' };
                wake?.();
              }
            }
          } catch {
            // the store is not reachable now: this node's ranks find out through their own timeouts
          }
        }
      })();
      await settled;
      watching = false;
      const stopReason = interrupted ? `got ${interrupted}` : failure ? failure.message : null;
      if (stopReason) {
        if (failure && !failure.remote) {
          log(`residual launch: ${failure.message}; stopping the other ranks`);
          await client.set(pre + 'failed', failure.message).catch(() => undefined);
        } else if (interrupted) {
          await client.set(pre + 'failed', `node ${nodeRank}'s launcher ${stopReason}`).catch(() => undefined);
          await client.set(`${AGENT}stopped`, `node ${nodeRank}'s launcher ${stopReason}`).catch(() => undefined);
        } else if (failure?.remote) {
          log(`residual launch: node ${nodeRank}: ${failure.message}; stopping this node's ranks`);
        }
        await stopChildren(children, graceMs);
      }
      await watch;
      if (interrupted) {
        result = {
          code: 128 + (interrupted === 'SIGINT' ? 2 : 15),
          restarts,
          message: `residual launch: got ${interrupted}, stopped every rank`,
        };
        break;
      }
      if (!failure) {
        // This node's ranks are done. Node 0 keeps the store up until every node's are (or one fails).
        await until(async () => (await client.set(`${pre}done/${nodeRank}`, '1'), true), nodeRank === 0 ? 1000 : rdzvMs);
        if (nodeRank === 0 && nnodes > 1) {
          let allDone = false,
            failedElsewhere = false;
          await until(
            async () => {
              failedElsewhere = await client.check([pre + 'failed']);
              allDone = await client.check(nodeKeys('done'));
              return failedElsewhere || allDone;
            },
            rdzvMs,
            500,
          );
          if (failedElsewhere) {
            const why = (await client.get(pre + 'failed').catch(() => Buffer.alloc(0))).toString('utf8');
            failure = { node: -1, remote: true, message: `another node reported: ${why}` };
          } else if (!allDone) {
            log(`residual launch: this node's ranks finished, but not every node said so within ${rdzvSeconds} s`);
          }
        }
        if (!failure) {
          if (restarts > 0) appendRecord(o.restartLog, { event: 'finished', node: nodeRank, attempt, restarts }, log);
          result = { code: 0, restarts };
          break;
        }
      }
      // ---- a failure: restart, or give up ----
      const f = failure!;
      // A launcher stopped by a signal stops the job on every node: no restart.
      const stoppedBy = (await client.check([`${AGENT}stopped`]).catch(() => false))
        ? (await client.get(`${AGENT}stopped`).catch(() => Buffer.alloc(0))).toString('utf8')
        : '';
      const last = restarts >= maxRestarts || stoppedBy !== '';
      appendRecord(
        o.restartLog,
        {
          event: 'failure',
          node: nodeRank,
          attempt,
          reason: f.message,
          rank: f.rank ?? null,
          exitCode: f.exitCode ?? null,
          signal: f.signal ?? null,
          remote: !!f.remote,
          action: last ? 'stop' : 'restart',
          restarts: last ? restarts : restarts + 1,
          maxRestarts,
        },
        log,
      );
      if (last) {
        const msg = stoppedBy
          ? `residual launch: ${f.message}; not restarting: ${stoppedBy}`
          : maxRestarts > 0
            ? `residual launch: ${f.message}; no restarts left (--max-restarts ${maxRestarts} used), stopping`
            : `residual launch: ${f.message}; stopped every rank`;
        result = { code: 1, failedRank: f.rank, restarts, message: msg };
        break;
      }
      restarts++;
      log(`residual launch: restarting the whole group (restart ${restarts} of ${maxRestarts}; TORCHELASTIC_RESTART_COUNT=${attempt + 1})`);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    closeAll();
  }
  result ??= {
    code: 128 + (interrupted === 'SIGINT' ? 2 : 15),
    restarts,
    message: `residual launch: got ${interrupted}, stopped every rank`,
  };
  if (result.message && result.code !== 0) log(result.message);
  return result;
}

/** SIGTERM to every live rank, SIGKILL after `graceMs`; resolves when all have exited. */
async function stopChildren(children: { child: ChildProcess; done: boolean }[], graceMs: number): Promise<void> {
  const live = children.filter((c) => !c.done);
  if (!live.length) return;
  const exited = live.map(
    (c) =>
      new Promise<void>((r) =>
        c.done || c.child.exitCode !== null || c.child.signalCode !== null ? r() : c.child.once('exit', () => r()),
      ),
  );
  for (const c of live) c.child.kill('SIGTERM');
  const t = setTimeout(() => {
    for (const c of live) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  }, graceMs);
  await Promise.all(exited);
  clearTimeout(t);
}

const HELP = `Usage: residual launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] [--max-restarts K] script.js [args...]

Starts N ranks of a data-parallel job on this node, with the environment torchrun sets (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, TORCHELASTIC_RESTART_COUNT,
...). The script calls dist.initProcessGroup(). Several machines: run the same command on each with
--nnodes M, its own --node-rank and the address and port of node 0, whose launcher hosts the job's
store. If a rank fails, every rank of every node is stopped; with --max-restarts K the whole group is
then started again (up to K times), as torchrun's elastic agent does; otherwise the launcher exits
with a message naming the failed rank.

Options:
  --nproc-per-node <n>   ranks on this node (required), an integer in [1, 2147483647]
  --nnodes <n>           machines in the job (default 1)
  --node-rank <n>        this machine's index, in [0, nnodes - 1] (default 0)
  --master-addr <host>   address of node 0, whose launcher hosts the store (default 127.0.0.1)
  --master-port <port>   its port, an integer in [0, 65535] (default 29500; 0 picks a free one on a single node)
  --max-restarts <n>     restart the whole group up to n times after a failure (default 0)
  --rdzv-timeout <s>     seconds the nodes wait for each other at each (re)start (default 900)
  --no-node              run the command as a program instead of a Node script
  --grace <seconds>      wait between SIGTERM and SIGKILL when stopping ranks (default 5)`;

/** Parses `residual launch` arguments: the launcher's flags come before the script. */
export function parseLaunchArgs(argv: string[]): LaunchOptions | 'help' {
  const o: Partial<LaunchOptions> = {};
  let i = 0;
  const num = (name: string, v: string | undefined, r: NumberRange): number => {
    // Decimal digits only for integers (no '0x10', '1e3', ' '): the value is what was written.
    const n = v === undefined || v.trim() === '' ? NaN : r.integer && !/^\s*\d+\s*$/.test(v) ? NaN : Number(v);
    if (!inRange(n, r)) throw new RangeError(`residual launch: --${name} must be ${describeRange(r)}, got '${v ?? ''}'`);
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
        o.nprocPerNode = num(name, val(), LAUNCH_RANGES.nprocPerNode);
        break;
      case 'nnodes':
        o.nnodes = num(name, val(), LAUNCH_RANGES.nnodes);
        break;
      case 'node-rank':
      case 'node_rank':
        o.nodeRank = num(name, val(), LAUNCH_RANGES.nodeRank);
        break;
      case 'master-addr':
      case 'master_addr': {
        const v = val();
        if (!v) throw new RangeError('residual launch: --master-addr needs a host');
        o.masterAddr = v;
        break;
      }
      case 'master-port':
      case 'master_port':
        o.masterPort = num(name, val(), LAUNCH_RANGES.masterPort);
        break;
      case 'max-restarts':
      case 'max_restarts':
        o.maxRestarts = num(name, val(), LAUNCH_RANGES.maxRestarts);
        break;
      case 'rdzv-timeout':
      case 'rdzv_timeout':
        o.rdzvTimeoutSeconds = num(name, val(), LAUNCH_RANGES.rdzvTimeoutSeconds);
        break;
      case 'grace':
        o.graceSeconds = num(name, val(), LAUNCH_RANGES.graceSeconds);
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
  if (o.nodeRank !== undefined && o.nodeRank >= (o.nnodes ?? 1))
    throw new RangeError(
      `residual launch: --node-rank must be an integer in [0, ${(o.nnodes ?? 1) - 1}] (--nnodes ${o.nnodes ?? 1}), got ${o.nodeRank}`,
    );
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
  try {
    return (await launch(o)).code;
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
}

/** Cores per rank hint for messages. */
export function coresPerRank(n: number): number {
  return Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / n));
}

const LAUNCH_FLAGS = new Set([
  'nproc-per-node',
  'nproc_per_node',
  'nnodes',
  'node-rank',
  'node_rank',
  'master-addr',
  'master_addr',
  'master-port',
  'master_port',
  'grace',
  'max-restarts',
  'max_restarts',
  'rdzv-timeout',
  'rdzv_timeout',
]);

/**
 * `residual train --nproc-per-node N [--nnodes ...] [--max-restarts K] <train flags>`: the launcher's
 * flags are taken out and N ranks of `residual train <train flags>` are started with this same CLI
 * entry point. After a failure with restarts left, the group starts again with --resume (when the run
 * has begun: it continues from its last checkpoint, or from the start when it has none yet), and
 * restarts.jsonl in the run folder gets a record of each failure: which rank, how, and what followed.
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
  let out = given('out');
  if (out === undefined && !rest.includes('--resume') && !rest.includes('--help')) {
    const { DEFAULT_CONFIG } = await import('../train/config.js');
    const { defaultRunFolder } = await import('../train/run-folder.js');
    out = defaultRunFolder(given('model') ?? DEFAULT_CONFIG.model, given('data') ?? DEFAULT_CONFIG.data);
    rest.push('--out', out);
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
  const first = o.args ?? [];
  if (out !== undefined) {
    const runDir = out;
    o.restartLog = path.join(runDir, 'restarts.jsonl');
    // A restart continues the run: --resume once rank 0 has begun it (its config.json is there).
    o.argsFor = (attempt) =>
      attempt > 0 && !first.includes('--resume') && fs.existsSync(path.join(runDir, 'config.json')) ? [...first, '--resume'] : first;
  }
  try {
    return (await launch(o)).code;
  } catch (e) {
    console.error((e as Error).message.replace('launch:', 'residual train:'));
    return 2;
  }
}
