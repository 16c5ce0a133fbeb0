// `residual doctor`: what residual runs on, and for each problem found, how to fix it.
// Also runnable on its own: node dist/cli/doctor.js [--json]
//
// It imports only the loader (not lib/index.js, which loads the addon at import time and would
// throw before anything could be explained), and bin/residual.js runs it without loading anything
// else: it works with no libtorch and no addon, and names the command that sets them up.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type Libtorch,
  addonAttempts,
  addonChoice,
  buildFromSourceCommand,
  formatAttempts,
  loadAddon,
  packageRoot,
  residualHome,
  resolveRuntimeLibtorch,
  setupCommand,
} from '../addon/load.js';
import { cacheDirFor, cachedLibtorch } from '../addon/libtorch.js';
import { glibcVersion } from '../addon/system.js';

export interface Problem {
  severity: 'error' | 'warning';
  problem: string;
  fix: string;
}

export interface DoctorReport {
  ok: boolean;
  text: string;
  problems: Problem[];
  facts: Record<string, unknown>;
}

/** The command that (re)does the install step from where the user is (works without install scripts). */
const SETUP = setupCommand();

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** 13000 -> "13.0" (cudaRuntimeGetVersion encoding). */
export function formatCudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** cuDNN 9 encodes major*10000 + minor*100 + patch; cuDNN 8 major*1000 + minor*100 + patch. */
export function formatCudnnVersion(v: number): string {
  const [major, rest] = v >= 90000 ? [Math.floor(v / 10000), v % 10000] : [Math.floor(v / 1000), v % 1000];
  return `${major}.${Math.floor(rest / 100)}.${rest % 100}`;
}

/** The folder libtorch_cpu.so was actually mapped from in this process (Linux). */
function loadedLibtorchDir(): string | null {
  try {
    const line = fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .find((l) => l.endsWith('/libtorch_cpu.so'));
    return line ? path.dirname(line.slice(line.indexOf('/'))) : null;
  } catch {
    return null;
  }
}

function nvidiaSmi(): { gpus: { name: string; driver: string; memory: string }[]; error?: string } | null {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], {
    encoding: 'utf8',
    timeout: 15000,
  });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
  if (r.status !== 0) return { gpus: [], error: (r.stdout + r.stderr).trim().split('\n')[0] || `exit status ${r.status}` };
  const gpus = r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, driver, memory] = l.split(',').map((s) => s.trim());
      return { name, driver, memory };
    });
  return { gpus };
}

function packageVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

function writable(dir: string): boolean {
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export async function doctor(): Promise<DoctorReport> {
  const lines: string[] = [];
  const problems: Problem[] = [];
  const facts: Record<string, unknown> = {};
  const row = (k: string, v: string) => lines.push(`  ${k.padEnd(14)}${v.split('\n').join(`\n  ${' '.repeat(14)}`)}`);
  const problem = (severity: Problem['severity'], p: string, fix: string) => problems.push({ severity, problem: p, fix });

  lines.push('residual doctor');
  row('residual', `${packageVersion()} at ${packageRoot}`);

  // Node.js
  const [major, minor] = process.versions.node.split('.').map(Number);
  const glibc = glibcVersion();
  row(
    'Node.js',
    `${process.version} (Node-API ${process.versions.napi}), ${process.platform}-${process.arch}${glibc ? `, glibc ${glibc}` : ''}`,
  );
  Object.assign(facts, {
    node: process.version,
    napi: Number(process.versions.napi),
    platform: `${process.platform}-${process.arch}`,
    glibc,
  });
  const supported = (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23;
  if (!supported)
    problem(
      'warning',
      `Node.js ${process.version} is older than residual supports (^20.19 || >=22.12)`,
      'use Node.js 20.19+, 22.12+ or 23+',
    );
  if (Number(process.versions.napi) < 8)
    problem('error', `Node-API ${process.versions.napi} is older than the addon needs (8)`, 'use Node.js 20.19 or newer');
  if (process.platform !== 'linux')
    problem(
      'error',
      `${process.platform} is not supported yet: libtorch is fetched and preloaded as Linux shared libraries`,
      'use Linux (or WSL2)',
    );

  // libtorch
  let lt: Libtorch | null = null;
  try {
    lt = resolveRuntimeLibtorch();
  } catch (e) {
    row('libtorch', `ERROR ${(e as Error).message}`);
    problem(
      'error',
      (e as Error).message,
      'point LIBTORCH at a libtorch folder (include/, lib/, share/cmake/Torch) or a torch package folder, make python3 import torch for LIBTORCH_USE_PYTORCH=1, or unset them',
    );
  }
  if (lt) {
    const from: Record<string, string> = {
      LIBTORCH: 'LIBTORCH',
      LIBTORCH_USE_PYTORCH: "python3's torch (LIBTORCH_USE_PYTORCH=1)",
      project: 'the project copy (.libtorch/)',
      install: 'the install (build/libtorch.json)',
      cache: `the cache (${residualHome()})`,
    };
    row(
      'libtorch',
      `${lt.version} (${lt.variantTag}${lt.cuda ? `, CUDA ${lt.cuda}` : ''}) from ${from[lt.source ?? ''] ?? lt.source}\n${lt.dir}`,
    );
    facts.libtorch = { version: lt.version, variant: lt.variantTag, cuda: lt.cuda ?? null, dir: lt.dir, source: lt.source };
  } else if (!problems.length) {
    row('libtorch', 'none found (LIBTORCH, LIBTORCH_USE_PYTORCH, the project copy, the cache)');
    problem(
      'error',
      'no libtorch found (the install step did not run, or did not finish)',
      `${SETUP} (fetches the pinned libtorch into ${residualHome()}${process.env.RESIDUAL_LIBTORCH_MIRROR ? ` from ${process.env.RESIDUAL_LIBTORCH_MIRROR}` : ''}), or set LIBTORCH=/path/to/libtorch, or LIBTORCH_USE_PYTORCH=1`,
    );
  }

  // The addon
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let addon: Record<string, any> | null = null;
  const libtorchFailed = problems.length > 0;
  try {
    addon = loadAddon();
  } catch (e) {
    row('addon', 'ERROR: no usable binary');
    const tried = addonAttempts();
    if (tried.length) row('', `tried:\n  ${formatAttempts(tried)}`);
    const unsupported = tried.filter((a) => a.outcome === 'unsupported');
    if (unsupported.length)
      problem(
        'error',
        `the prebuilt binary cannot run on this system: ${unsupported[0].detail.replace(/^refused: this prebuilt binary /, 'it ')}`,
        `build from source instead: ${buildFromSourceCommand()} (needs cmake and a C++17 compiler)`,
      );
    else if (!libtorchFailed && lt)
      problem(
        'error',
        (e as Error).message.split('\n')[0].replace(/^residual: /, ''),
        `${SETUP} (picks the prebuilt binary or builds one), or build from source: ${buildFromSourceCommand()}`,
      );
  }
  const choice = addonChoice();
  if (addon && choice) {
    const info = choice.info;
    row(
      'addon',
      `${choice.path}\nchosen: ${choice.how} (${choice.attempts.at(-1)?.detail ?? ''})\nbuilt for libtorch ${info.libtorch} (${choice.tag?.variant ?? info.variant}), Node-API ${info.napiVersion}`,
    );
    const others = choice.attempts.slice(0, -1).filter((a) => a.outcome !== 'missing');
    if (others.length) row('', `passed over:\n  ${formatAttempts(others)}`);
    facts.addon = {
      path: choice.path,
      how: choice.how,
      libtorch: info.libtorch,
      variant: choice.tag?.variant ?? info.variant,
      napiVersion: info.napiVersion,
      gloo: info.gloo ?? null,
    };
    if (info.gloo === false) {
      row('dist', "no 'gloo' backend (built without gloo's headers): CPU data-parallel training is off");
      problem(
        'warning',
        "this build of the addon has no 'gloo' backend (gloo's headers were not found when it was built), so dist.initProcessGroup() and --nproc-per-node fail on the CPU",
        `apt-get install libgloo-dev (or set GLOO_INCLUDE_DIR), then ${buildFromSourceCommand()}`,
      );
    } else if (info.gloo === true) row('dist', "c10d with the 'gloo' backend" + (info.cudaBuilt ? ' (and nccl where built)' : ''));
    const loadedFrom = loadedLibtorchDir();
    if (loadedFrom) {
      row('loaded from', `${loadedFrom}${choice.preload ? ' (preloaded: no LD_LIBRARY_PATH needed)' : " (the build's RUNPATH)"}`);
      facts.libtorchLoadedFrom = loadedFrom;
    }
    if (process.env.LD_LIBRARY_PATH && /torch/.test(process.env.LD_LIBRARY_PATH)) {
      problem(
        'warning',
        `LD_LIBRARY_PATH contains a torch folder (${process.env.LD_LIBRARY_PATH}); it is not needed and can mix two libtorch versions`,
        'unset LD_LIBRARY_PATH (residual finds libtorch itself)',
      );
    }
  }

  // CUDA, cuDNN, GPUs
  const smi = nvidiaSmi();
  if (addon) {
    const info = addon.buildInfo();
    const available = !!addon.cudaIsAvailable();
    facts.cuda = { built: !!info.cudaBuilt, available, cudnn: !!info.cudnnAvailable };
    if (!info.cudaBuilt || info.variant === 'cpu') {
      row('CUDA', 'not in this build (CPU libtorch)');
    } else {
      const rt =
        typeof info.cudaRuntimeVersion === 'number' ? `runtime ${formatCudaVersion(info.cudaRuntimeVersion)}` : 'runtime version unknown';
      row('CUDA', `${available ? 'available' : 'NOT available'}, ${rt}, ${addon.cudaDeviceCount()} device(s)`);
      const cudnn = typeof info.cudnnVersion === 'number' && info.cudnnVersion > 0 ? formatCudnnVersion(info.cudnnVersion) : null;
      row('cuDNN', info.cudnnAvailable ? `available${cudnn ? `, ${cudnn}` : ''}` : 'NOT available');
      Object.assign(facts.cuda as object, { runtime: info.cudaRuntimeVersion ?? null, cudnnVersion: cudnn });
      if (!available) {
        problem(
          'error',
          `the addon is built for CUDA but no GPU is usable${smi?.error ? ` (nvidia-smi: ${smi.error})` : smi ? '' : ' (no nvidia-smi: no NVIDIA driver?)'}`,
          `install an NVIDIA driver recent enough for CUDA ${lt?.cuda ?? '13'} (nvidia-smi must list the GPU), or use the CPU build: RESIDUAL_VARIANT=cpu ${SETUP}`,
        );
      } else if (!info.cudnnAvailable) {
        problem(
          'warning',
          'cuDNN is not available: convolutions run on slower kernels',
          `reinstall libtorch with its nvidia-cudnn wheel: remove ${lt ? path.dirname(path.dirname(lt.dir)) : 'the libtorch cache'} and run ${SETUP}`,
        );
      }
      if (available) {
        const devs = addon.cudaDeviceInfo() as { name: string; totalMemory: number; capability: string; multiProcessors: number }[];
        devs.forEach((d, i) =>
          row(
            i === 0 ? 'GPUs' : '',
            `cuda:${i} ${d.name}, ${gib(d.totalMemory)}, compute capability ${d.capability}, ${d.multiProcessors} SMs`,
          ),
        );
        facts.gpus = devs;
      }
    }
  }
  if (smi) {
    if (smi.error) row('nvidia-smi', `error: ${smi.error}`);
    else row('nvidia-smi', smi.gpus.map((g) => `${g.name}, ${g.memory}, driver ${g.driver}`).join('\n') || 'no GPU listed');
    facts.nvidiaSmi = smi;
    const cpuOnly = addon && !addon.buildInfo().cudaBuilt;
    if (cpuOnly && smi.gpus.length) {
      problem(
        'warning',
        `this machine has ${smi.gpus.length} NVIDIA GPU(s) but residual runs on the CPU build`,
        `RESIDUAL_VARIANT=cu130 ${SETUP} (fetches CUDA libtorch, several GB, into ${residualHome()}), or LIBTORCH_USE_PYTORCH=1 with a CUDA build of torch installed in python3`,
      );
    }
  }

  // Cache and environment
  const home = residualHome();
  const canWrite = writable(home);
  const cached: string[] = [];
  for (const v of ['cpu', 'cu130']) {
    let c: Libtorch | null = null;
    try {
      c = cachedLibtorch(v);
    } catch {
      /* unknown variant */
    }
    if (c) cached.push(`${path.basename(cacheDirFor(v))} (${c.devDir ? 'runtime and build files' : 'runtime only'})`);
  }
  row('cache', `${home}${canWrite ? '' : ' (NOT writable)'}; libtorch: ${cached.join(', ') || 'none'}`);
  facts.cache = { home, writable: canWrite, libtorch: cached };
  if (!canWrite)
    problem(
      'warning',
      `${home} is not writable: libtorch cannot be fetched there and each start probes the addon again`,
      'set RESIDUAL_HOME to a writable folder',
    );
  const envNames = [
    'LIBTORCH',
    'LIBTORCH_USE_PYTORCH',
    'RESIDUAL_VARIANT',
    'RESIDUAL_HOME',
    'RESIDUAL_LIBTORCH_MIRROR',
    'RESIDUAL_LIBTORCH_FETCH',
    'RESIDUAL_ADDON',
    'RESIDUAL_PROBE_TIMEOUT',
    'LD_LIBRARY_PATH',
  ];
  const set = envNames.filter((n) => process.env[n]).map((n) => `${n}=${process.env[n]}`);
  row('environment', set.join('\n') || `(none of ${envNames.slice(0, -1).join(', ')} set)`);

  const errors = problems.filter((p) => p.severity === 'error');
  lines.push('');
  if (!problems.length) lines.push('No problems found.');
  for (const p of problems) lines.push(`${p.severity === 'error' ? 'PROBLEM' : 'warning'}: ${p.problem}\n  fix: ${p.fix}`);
  return { ok: errors.length === 0, text: lines.join('\n'), problems, facts };
}

/** `residual doctor [--json]` (bin/residual.js calls it without loading anything else). */
export async function runDoctor(argv: string[]): Promise<number> {
  const report = await doctor();
  if (argv.includes('--json')) console.log(JSON.stringify({ ok: report.ok, problems: report.problems, facts: report.facts }, null, 2));
  else console.log(report.text);
  return report.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exit(await runDoctor(process.argv.slice(2)));
}
