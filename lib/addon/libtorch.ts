// The one libtorch resolver, shared by the install step (scripts/install/*.mjs import the compiled
// dist/addon/libtorch.js), `residual setup`, the build and the runtime loader. Resolution order, each
// choice printed where it is made (quiet at run time):
//   1. LIBTORCH=/path            a libtorch folder, or a torch package folder (site-packages/torch)
//   2. LIBTORCH_USE_PYTORCH=1    the torch package of python3
//   3. .libtorch/torch           a copy set up in the project (git-ignored)
//   4. build/libtorch.json       the libtorch the install step chose, so that `LIBTORCH=... npm install`
//                                keeps working when LIBTORCH is not set at run time
//   5. the cache                 RESIDUAL_HOME (default ~/.cache/residual)/libtorch/<version>-<variant>,
//                                shared by all projects, filled by lib/addon/fetch.ts
// Nothing here fetches: lib/addon/fetch.ts does (and is loaded only by the install step and setup).
//
// Cache layout (each part published by one rename, so it is there whole or not at all):
//   libtorch/2.13.0-cpu/site/torch/{lib,version.py}   what runs (VERIFIED beside site/)
//   libtorch/2.13.0-cpu/site/nvidia/<lib>/lib          CUDA variants: what libtorch_cuda loads
//   libtorch/2.13.0-cpu/dev/torch/{include,share}      only when a source build needed it, with
//                                                      lib -> ../../site/torch/lib (dev/VERIFIED)
// A cache made by earlier versions (site/torch with include/ and share/ inside) is read as is.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeJsonAtomic } from '../core/fs.js';
import { loadManifest, packageRoot, pinnedVariant } from './manifest.js';

export { packageRoot };

/** A libtorch folder. */
export interface Libtorch {
  /** The folder holding lib/ (and, for a full libtorch, include/ and share/). */
  dir: string;
  lib: string;
  /** X.Y.Z (no local "+cpu" part). */
  version: string;
  /** cpu | cuda: what the build needs. */
  variant: string;
  /** cpu | cu130 | ...: what prebuilt binaries are tagged with ("cuda" when the CUDA version is unknown). */
  variantTag: string;
  cuda?: string | null;
  /** LIBTORCH | LIBTORCH_USE_PYTORCH | project | install | cache | fetched | build */
  source?: string;
  /** The folder with include/ and share/cmake/Torch (what a source build needs), or null when only what runs is there. */
  devDir?: string | null;
  /** devDir/share/cmake, or null. */
  cmakePrefix?: string | null;
}

export function residualHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RESIDUAL_HOME) return path.resolve(env.RESIDUAL_HOME);
  const base = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'residual');
}

/** A folder is a libtorch that can run when its lib/ holds libtorch_cpu.so. */
export function isRuntimeLibtorch(dir: string | null | undefined): boolean {
  return !!dir && fs.existsSync(path.join(dir, 'lib', 'libtorch_cpu.so'));
}

/** A folder has what a source build needs: headers and the CMake package config. */
export function hasDevFiles(dir: string | null | undefined): boolean {
  return (
    !!dir &&
    fs.existsSync(path.join(dir, 'include', 'torch')) &&
    fs.existsSync(path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'))
  );
}

/** A full libtorch: what runs and what a build needs. */
export function isLibtorch(dir: string | null | undefined): boolean {
  return isRuntimeLibtorch(dir) && hasDevFiles(dir);
}

/** Reads `torch/version.py` (wheels) or `build-version` (libtorch zips), e.g. "2.13.0+cpu" / "2.14.1+cu130". */
function readVersionFiles(dir: string): { full: string; cuda: string | null } | null {
  try {
    const text = fs.readFileSync(path.join(dir, 'version.py'), 'utf8');
    const v = /^__version__\s*=\s*['"]([^'"]+)['"]/m.exec(text)?.[1];
    const cuda = /^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m.exec(text)?.[1] ?? null;
    if (v) return { full: v, cuda };
  } catch {
    /* not a wheel's torch folder */
  }
  try {
    const full = fs.readFileSync(path.join(dir, 'build-version'), 'utf8').trim();
    const cu = /\+cu(\d+)(\d)$/.exec(full);
    return { full, cuda: cu ? `${cu[1]}.${cu[2]}` : null };
  } catch {
    return null;
  }
}

function versionFromHeaders(dir: string): string | null {
  for (const rel of ['headeronly/version.h', 'csrc/api/include/torch/version.h']) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, 'include', 'torch', rel), 'utf8');
    } catch {
      continue;
    }
    const lit = /TORCH_VERSION\s+"([^"]+)"/.exec(text);
    if (lit) return lit[1];
    const part = (n: string) => new RegExp(`TORCH_VERSION_${n}\\s+(\\d+)`).exec(text)?.[1];
    if (part('MAJOR') && part('MINOR') && part('PATCH')) return `${part('MAJOR')}.${part('MINOR')}.${part('PATCH')}`;
  }
  return null;
}

/** What a libtorch folder is (see Libtorch). `devDir` defaults to `dir` when it has the build files. */
export function describeLibtorch(dir: string, devDir: string | null = hasDevFiles(dir) ? dir : null): Libtorch {
  const lib = path.join(dir, 'lib');
  const variant = fs.existsSync(path.join(lib, 'libtorch_cuda.so')) ? 'cuda' : 'cpu';
  const files = readVersionFiles(dir);
  const version = files ? files.full.replace(/\+.*$/, '') : ((devDir && versionFromHeaders(devDir)) ?? 'unknown');
  const cuda = variant === 'cuda' ? (files?.cuda ?? null) : null;
  const variantTag = variant === 'cpu' ? 'cpu' : cuda ? `cu${cuda.replace('.', '')}` : 'cuda';
  return { dir, lib, variant, variantTag, cuda, version, devDir, cmakePrefix: devDir ? path.join(devDir, 'share', 'cmake') : null };
}

function log(quiet: boolean, msg: string): void {
  if (!quiet) console.error(`[residual] ${msg}`);
}

/** Which variant this machine wants: RESIDUAL_VARIANT, else cu130 when an NVIDIA driver sees a GPU, else cpu. */
export function wantedVariant(env: NodeJS.ProcessEnv = process.env): string {
  const v = env.RESIDUAL_VARIANT;
  const known = Object.keys(loadManifest(env).manifest.variants);
  if (v) {
    if (!known.includes(v)) throw new Error(`RESIDUAL_VARIANT=${v} is not known; use one of: ${known.join(', ')}`);
    return v;
  }
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 5000 });
  return smi.status === 0 && /GPU \d/.test(smi.stdout) && known.includes('cu130') ? 'cu130' : 'cpu';
}

/** RESIDUAL_HOME/libtorch/<pinned version>-<variant> */
export function cacheDirFor(variant: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(residualHome(env), 'libtorch', `${pinnedVariant(variant, env).torch}-${variant}`);
}

/** The cached libtorch of a variant (only complete, verified parts), or null. */
export function cachedLibtorch(variant: string, env: NodeJS.ProcessEnv = process.env): Libtorch | null {
  const base = cacheDirFor(variant, env);
  const torch = path.join(base, 'site', 'torch');
  if (!fs.existsSync(path.join(base, 'VERIFIED')) || !isRuntimeLibtorch(torch)) return null;
  const devTorch = path.join(base, 'dev', 'torch');
  const devDir = hasDevFiles(torch) ? torch : fs.existsSync(path.join(base, 'dev', 'VERIFIED')) && hasDevFiles(devTorch) ? devTorch : null;
  return { ...describeLibtorch(torch, devDir), source: 'cache' };
}

/** Where the install step records the libtorch it chose (inside the package; not shipped). */
export function installRecordPath(root: string = packageRoot): string {
  return path.join(root, 'build', 'libtorch.json');
}

export function recordInstall(lt: Libtorch, root: string = packageRoot): void {
  const rec = {
    dir: lt.dir,
    devDir: lt.devDir ?? null,
    source: lt.source,
    version: lt.version,
    variantTag: lt.variantTag,
    at: new Date().toISOString(),
  };
  writeJsonAtomic(installRecordPath(root), rec);
}

/** The recorded libtorch, unless it is gone or RESIDUAL_VARIANT now asks for the other kind. */
function recordedLibtorch(quiet: boolean, root: string, env: NodeJS.ProcessEnv): Libtorch | null {
  let rec: { dir?: string; devDir?: string | null; source?: string };
  try {
    rec = JSON.parse(fs.readFileSync(installRecordPath(root), 'utf8'));
  } catch {
    return null;
  }
  if (!rec?.dir || !isRuntimeLibtorch(rec.dir)) return null;
  const devDir = rec.devDir && hasDevFiles(rec.devDir) ? rec.devDir : hasDevFiles(rec.dir) ? rec.dir : null;
  const d = describeLibtorch(rec.dir, devDir);
  const v = env.RESIDUAL_VARIANT;
  if (v && (v === 'cpu') !== (d.variant === 'cpu')) return null;
  log(quiet, `libtorch set up at install (${rec.source}): ${rec.dir}`);
  return { ...d, source: 'install' };
}

export interface FindOptions {
  quiet?: boolean;
  /** Read build/libtorch.json (the install step itself resolves afresh: false). */
  useRecord?: boolean;
  root?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * Resolve libtorch without fetching: {dir, source, ...} or null. Throws when an environment variable
 * names something unusable (the user's explicit wish must not be ignored silently).
 */
export function findLibtorch({
  quiet = false,
  useRecord = true,
  root = packageRoot,
  env = process.env,
}: FindOptions = {}): Libtorch | null {
  if (env.LIBTORCH) {
    const dir = path.resolve(env.LIBTORCH);
    for (const cand of [dir, path.join(dir, 'torch')]) {
      if (isRuntimeLibtorch(cand)) {
        log(quiet, `libtorch from LIBTORCH: ${cand}`);
        return { ...describeLibtorch(cand), source: 'LIBTORCH' };
      }
    }
    throw new Error(
      `LIBTORCH=${env.LIBTORCH} is not a libtorch folder (expected lib/libtorch_cpu.so inside, and include/ and share/cmake/Torch for a source build)`,
    );
  }
  if (env.LIBTORCH_USE_PYTORCH === '1') {
    // find_spec locates the package without importing torch (an import takes seconds).
    const r = spawnSync(
      'python3',
      ['-c', "import importlib.util as u, os; s = u.find_spec('torch'); print(os.path.dirname(s.origin) if s and s.origin else '')"],
      {
        encoding: 'utf8',
        timeout: 120_000,
      },
    );
    const dir = (r.stdout || '').trim();
    if (r.status !== 0 || !isRuntimeLibtorch(dir)) {
      const why =
        (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
          ? 'there is no python3 on PATH'
          : (r.stderr || '').trim().split('\n').pop() || (dir ? `${dir} has no lib/libtorch_cpu.so` : 'no torch package');
      throw new Error(`LIBTORCH_USE_PYTORCH=1 but python3 has no usable torch package (${why}); unset it to use residual's own libtorch`);
    }
    log(quiet, `libtorch from python3's torch (LIBTORCH_USE_PYTORCH=1): ${dir}`);
    return { ...describeLibtorch(dir), source: 'LIBTORCH_USE_PYTORCH' };
  }
  const local = path.join(root, '.libtorch', 'torch');
  if (isRuntimeLibtorch(local)) {
    log(quiet, `libtorch from the project copy: ${local}`);
    return { ...describeLibtorch(local), source: 'project' };
  }
  const recorded = useRecord ? recordedLibtorch(quiet, root, env) : null;
  if (recorded) return recorded;
  const variant = wantedVariant(env);
  const cached = cachedLibtorch(variant, env);
  if (cached) log(quiet, `libtorch from the cache (${variant}): ${cached.dir}`);
  return cached;
}
