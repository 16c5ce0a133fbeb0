// Finds or fetches libtorch. Used by the build (scripts/install/build.mjs), by the install step and by
// `residual doctor`. Resolution order, each choice printed:
//   1. LIBTORCH             a libtorch folder, or a torch package folder (site-packages/torch)
//   2. LIBTORCH_USE_PYTORCH=1  the torch package of python3 (as on the GPU machine)
//   3. a copy set up in the project (.libtorch/, git-ignored)
//   3b. the libtorch the install script set this package up with (build/libtorch.json), so that
//      `LIBTORCH=... npm install` keeps working when LIBTORCH is not set at run time
//   4. the user's cache (RESIDUAL_HOME, default ~/.cache/residual), shared by all projects
//   5. fetch the pinned wheel with pip (offline-safe: no retries), verify every file against the
//      wheel's RECORD checksums, unpack into the cache and only then publish it (atomic rename).
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PINNED = {
  cpu: { version: '2.13.0', spec: 'torch==2.13.0+cpu' },
  cu130: { version: '2.14.1', spec: 'torch==2.14.1' },
};

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function residualHome() {
  if (process.env.RESIDUAL_HOME) return path.resolve(process.env.RESIDUAL_HOME);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'residual');
}

/** A folder is usable libtorch when it has headers, libraries and the CMake package config. */
export function isLibtorch(dir) {
  return (
    !!dir &&
    fs.existsSync(path.join(dir, 'include', 'torch')) &&
    fs.existsSync(path.join(dir, 'lib')) &&
    fs.existsSync(path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'))
  );
}

/** Reads `torch/version.py` (wheels) or `build-version` (libtorch zips), e.g. "2.13.0+cpu" / "2.14.1+cu130". */
function readVersionFiles(dir) {
  const py = path.join(dir, 'version.py');
  if (fs.existsSync(py)) {
    const text = fs.readFileSync(py, 'utf8');
    const v = /^__version__\s*=\s*['"]([^'"]+)['"]/m.exec(text)?.[1];
    const cuda = /^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]/m.exec(text)?.[1] ?? null;
    if (v) return { full: v, cuda };
  }
  const bv = path.join(dir, 'build-version');
  if (fs.existsSync(bv)) {
    const full = fs.readFileSync(bv, 'utf8').trim();
    const cu = /\+cu(\d+)(\d)$/.exec(full);
    return { full, cuda: cu ? `${cu[1]}.${cu[2]}` : null };
  }
  return null;
}

/**
 * What a libtorch folder is. `version` is X.Y.Z (no local "+cpu" part); `variant` is cpu|cuda (what
 * the build needs); `variantTag` is cpu|cuXYZ (what prebuilt binaries are tagged with; "cuda" when
 * the CUDA version cannot be read); `cuda` is the CUDA version ("13.0") or null.
 */
export function describeLibtorch(dir) {
  const lib = path.join(dir, 'lib');
  const variant = fs.existsSync(path.join(lib, 'libtorch_cuda.so')) ? 'cuda' : 'cpu';
  let version = 'unknown';
  const files = readVersionFiles(dir);
  if (files) version = files.full.replace(/\+.*$/, '');
  else {
    // Headers only: TORCH_VERSION is built from MAJOR/MINOR/PATCH macros in recent releases.
    for (const rel of ['headeronly/version.h', 'csrc/api/include/torch/version.h']) {
      const vh = path.join(dir, 'include', 'torch', rel);
      if (!fs.existsSync(vh)) continue;
      const text = fs.readFileSync(vh, 'utf8');
      const lit = /TORCH_VERSION\s+"([^"]+)"/.exec(text);
      const part = (n) => /(\d+)/.exec(new RegExp(`TORCH_VERSION_${n}\\s+(\\d+)`).exec(text)?.[1] ?? '')?.[1];
      if (lit) version = lit[1];
      else if (part('MAJOR') && part('MINOR') && part('PATCH')) version = `${part('MAJOR')}.${part('MINOR')}.${part('PATCH')}`;
      if (version !== 'unknown') break;
    }
  }
  const cuda = variant === 'cuda' ? (files?.cuda ?? null) : null;
  const variantTag = variant === 'cpu' ? 'cpu' : cuda ? `cu${cuda.replace('.', '')}` : 'cuda';
  return { dir, lib, variant, variantTag, cuda, version, cmakePrefix: path.join(dir, 'share', 'cmake') };
}

function log(quiet, msg) {
  if (!quiet) console.error(`[residual] ${msg}`);
}

/** Which variant this machine wants: RESIDUAL_VARIANT, else cu130 when an NVIDIA driver is present. */
export function wantedVariant() {
  const v = process.env.RESIDUAL_VARIANT;
  if (v) {
    if (!PINNED[v]) throw new Error(`RESIDUAL_VARIANT=${v} is not known; use one of: ${Object.keys(PINNED).join(', ')}`);
    return v;
  }
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 5000 });
  return smi.status === 0 && /GPU \d/.test(smi.stdout) ? 'cu130' : 'cpu';
}

export function cacheDirFor(variant) {
  return path.join(residualHome(), 'libtorch', `${PINNED[variant].version}-${variant}`);
}

/**
 * Where scripts/install/install.mjs records the libtorch it resolved (inside this package, not shipped).
 */
export function installRecordPath() {
  return path.join(root, 'build', 'libtorch.json');
}

export async function recordInstall(lt) {
  // Written with the package's one atomic-write helper. It lives in dist/ (compiled TypeScript), which
  // this module must not import statically: install.mjs imports this file before it compiles dist/ in a
  // fresh checkout. install.mjs calls recordInstall only after it has checked that dist/core/fs.js
  // exists (the npm package ships dist/; a checkout compiles it in step 1).
  const { writeJsonAtomic } = await import('../../dist/core/fs.js');
  const rec = { dir: lt.dir, source: lt.source, version: lt.version, variantTag: lt.variantTag, at: new Date().toISOString() };
  writeJsonAtomic(installRecordPath(), rec);
}

/** The recorded libtorch, unless it is gone or RESIDUAL_VARIANT now asks for the other kind. */
function recordedLibtorch(quiet) {
  let rec;
  try {
    rec = JSON.parse(fs.readFileSync(installRecordPath(), 'utf8'));
  } catch {
    return null;
  }
  if (!rec?.dir || !isLibtorch(rec.dir)) return null;
  const d = describeLibtorch(rec.dir);
  const v = process.env.RESIDUAL_VARIANT;
  if (v && (v === 'cpu') !== (d.variant === 'cpu')) return null;
  log(quiet, `libtorch set up at install (${rec.source}): ${rec.dir}`);
  return { ...d, source: 'install' };
}

/**
 * Resolve libtorch without fetching. Returns {dir, source, ...} or null. `useRecord: false` skips
 * the install record (the install script itself resolves afresh).
 */
export function findLibtorch({ quiet = false, useRecord = true } = {}) {
  if (process.env.LIBTORCH) {
    const dir = path.resolve(process.env.LIBTORCH);
    for (const cand of [dir, path.join(dir, 'torch')]) {
      if (isLibtorch(cand)) {
        log(quiet, `libtorch from LIBTORCH: ${cand}`);
        return { ...describeLibtorch(cand), source: 'LIBTORCH' };
      }
    }
    throw new Error(`LIBTORCH=${process.env.LIBTORCH} is not a libtorch folder (expected include/torch, lib and share/cmake/Torch inside)`);
  }
  if (process.env.LIBTORCH_USE_PYTORCH === '1') {
    // find_spec locates the package without importing torch (importing it takes seconds; this is
    // also what the loader runs at every start).
    const r = spawnSync('python3', ['-c', "import importlib.util as u, os; s = u.find_spec('torch'); print(os.path.dirname(s.origin) if s and s.origin else '')"], { encoding: 'utf8', timeout: 120000 });
    const dir = (r.stdout || '').trim();
    if (r.status !== 0 || !isLibtorch(dir)) {
      throw new Error(`LIBTORCH_USE_PYTORCH=1 but python3 has no usable torch package (${(r.stderr || '').trim().split('\n').pop() || dir})`);
    }
    log(quiet, `libtorch from python3's torch (LIBTORCH_USE_PYTORCH=1): ${dir}`);
    return { ...describeLibtorch(dir), source: 'LIBTORCH_USE_PYTORCH' };
  }
  const local = path.join(root, '.libtorch', 'torch');
  if (isLibtorch(local)) {
    log(quiet, `libtorch from the project copy: ${local}`);
    return { ...describeLibtorch(local), source: 'project' };
  }
  const recorded = useRecord ? recordedLibtorch(quiet) : null;
  if (recorded) return recorded;
  let variant;
  try {
    variant = wantedVariant();
  } catch (e) {
    throw e;
  }
  const cached = path.join(cacheDirFor(variant), 'site', 'torch');
  if (isLibtorch(cached) && fs.existsSync(path.join(cacheDirFor(variant), 'VERIFIED'))) {
    log(quiet, `libtorch from the cache (${variant}): ${cached}`);
    return { ...describeLibtorch(cached), source: 'cache' };
  }
  return null;
}

function sha256File(file) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 22);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('base64url');
}

function progress(label, done, total) {
  if (!process.stderr.isTTY) return;
  const w = 30;
  const f = total ? Math.round((done / total) * w) : 0;
  process.stderr.write(`\r[residual] ${label} [${'#'.repeat(f)}${'.'.repeat(w - f)}] ${done}/${total}`);
  if (done === total) process.stderr.write('\n');
}

/**
 * Unpack a wheel's torch/{include,lib,share} (or everything for nvidia wheels) into `site`, then check
 * each unpacked file against the wheel's RECORD sha256. Uses python3's zipfile (always present where
 * pip is) so no unzip binary is needed.
 */
function unpackWheel(wheel, site, { onlyTorchParts }) {
  const py = `
import sys, zipfile, os
whl, dest, only = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
keep = ('torch/include/', 'torch/lib/', 'torch/share/', 'torch/version.py')
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if (not only or n.startswith(keep) or n.endswith('.dist-info/RECORD'))]
    for n in names:
        z.extract(n, dest)
    print('\\n'.join(names))
`;
  const out = execFileSync('python3', ['-c', py, wheel, site, onlyTorchParts ? '1' : '0'], {
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  const names = out.trim().split('\n').filter(Boolean);
  const recordName = names.find((n) => n.endsWith('.dist-info/RECORD'));
  if (!recordName) throw new Error(`${path.basename(wheel)} has no RECORD: cannot verify it`);
  const record = new Map();
  for (const line of fs.readFileSync(path.join(site, recordName), 'utf8').split('\n')) {
    const [file, hash] = line.split(',');
    if (file && hash && hash.startsWith('sha256=')) record.set(file, hash.slice(7));
  }
  const files = names.filter((n) => !n.endsWith('/') && n !== recordName);
  let i = 0;
  for (const n of files) {
    const want = record.get(n);
    if (!want) throw new Error(`${n} in ${path.basename(wheel)} is not listed in its RECORD`);
    const got = sha256File(path.join(site, n));
    if (got !== want) throw new Error(`checksum mismatch for ${n} in ${path.basename(wheel)}: the download is corrupt`);
    progress(`verifying ${path.basename(wheel)}`, ++i, files.length);
  }
  return files.length;
}

/** Fetch the pinned libtorch for `variant` into the cache, atomically. */
export function fetchLibtorch(variant, { quiet = false } = {}) {
  const pin = PINNED[variant];
  const dest = cacheDirFor(variant);
  const tmp = `${dest}.partial-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, 'wheels'), { recursive: true });
  log(quiet, `fetching ${pin.spec} with pip into ${dest} (no retries: offline fails fast)`);
  try {
    const specs = [pin.spec];
    const pip = (args, { deps = false } = {}) =>
      spawnSync('python3', ['-m', 'pip', 'download', ...(deps ? [] : ['--no-deps']), '--only-binary=:all:', '--retries', '0', '--timeout', '5', '--progress-bar', 'off', '-d', path.join(tmp, 'wheels'), ...args], {
        encoding: 'utf8',
        timeout: 15 * 60 * 1000,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    let r = pip(specs);
    if (r.status !== 0) {
      const why = (r.stderr || r.error?.message || '').trim().split('\n').slice(-2).join(' ');
      throw new Error(
        `could not download ${pin.spec} with pip (${why}).\n` +
          `  Set LIBTORCH=/path/to/libtorch (a libtorch folder or a torch package folder),\n` +
          `  or LIBTORCH_USE_PYTORCH=1 to use python3's torch, or install torch so pip can find it offline.`,
      );
    }
    const site = path.join(tmp, 'site');
    fs.mkdirSync(site, { recursive: true });
    const wheels = fs.readdirSync(path.join(tmp, 'wheels')).filter((f) => f.endsWith('.whl'));
    const torchWheel = wheels.find((f) => f.startsWith('torch-'));
    if (!torchWheel) throw new Error('pip reported success but no torch wheel was saved');
    if (variant !== 'cpu') {
      // CUDA libtorch loads cuDNN, cuBLAS & co. from sibling nvidia/ packages (RPATH $ORIGIN/../../nvidia).
      const meta = execFileSync('python3', ['-c', `import zipfile,sys\nz=zipfile.ZipFile(sys.argv[1])\nprint(next(z.read(n).decode() for n in z.namelist() if n.endswith('METADATA')))`, path.join(tmp, 'wheels', torchWheel)], { encoding: 'utf8', maxBuffer: 1 << 24 });
      const deps = [...meta.matchAll(/^Requires-Dist: (nvidia-[\w-]+|cuda-[\w-]+)(\[[\w,-]+\])?\s*(?:\(?([=<>!~][^;)]*)\)?)?\s*(;.*)?$/gm)]
        .filter((m) => !m[4] || !/extra ==/.test(m[4]))
        .filter((m) => m[1] !== 'cuda-bindings') // a Python package: libtorch does not need it
        .map((m) => `${m[1]}${m[2] || ''}${(m[3] || '').replace(/\s/g, '')}`);
      if (deps.length) {
        // with dependencies: the cuda-toolkit[...] extras are what pull the nvidia-* library wheels
        r = pip(deps, { deps: true });
        if (r.status !== 0) throw new Error(`could not download the CUDA libraries libtorch needs (${deps.join(' ')})`);
      }
    }
    for (const w of fs.readdirSync(path.join(tmp, 'wheels')).filter((f) => f.endsWith('.whl'))) {
      const n = unpackWheel(path.join(tmp, 'wheels', w), site, { onlyTorchParts: w.startsWith('torch-') });
      log(quiet, `unpacked and verified ${w} (${n} files, sha256 against RECORD)`);
    }
    fs.rmSync(path.join(tmp, 'wheels'), { recursive: true, force: true });
    if (!isLibtorch(path.join(site, 'torch'))) throw new Error('the unpacked wheel is not a usable libtorch');
    fs.writeFileSync(path.join(tmp, 'VERIFIED'), JSON.stringify({ spec: pin.spec, variant, at: new Date().toISOString() }) + '\n');
    fs.rmSync(dest, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.renameSync(tmp, dest); // published only when complete and verified
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const dir = path.join(dest, 'site', 'torch');
  log(quiet, `libtorch ready: ${dir}`);
  return { ...describeLibtorch(dir), source: 'fetched' };
}

export function resolveLibtorch({ quiet = false, fetch = true } = {}) {
  const found = findLibtorch({ quiet });
  if (found) return found;
  if (!fetch) return null;
  return fetchLibtorch(wantedVariant(), { quiet });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const r = resolveLibtorch();
    console.log(JSON.stringify(r, null, 2));
  } catch (e) {
    console.error(`[residual] ${e.message}`);
    process.exit(1);
  }
}
