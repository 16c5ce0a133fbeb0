#!/usr/bin/env node
// (Re)writes scripts/install/libtorch-manifest.json: every file residual fetches for libtorch, pinned by
// name, size and sha256, with the URL PyTorch (CPU) or PyPI (CUDA 13) serves it at. It is computed
// from local copies of the very files (a maintainer's tool: run it where the wheels lie, e.g. pip's
// find-links or a PyPI mirror), never from a network answer:
//   cpu    torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl, as download.pytorch.org/whl/cpu serves it
//   cu130  torch 2.14.1 from PyPI and the nvidia-* wheels its METADATA requires on Linux (through the
//          cuda-toolkit[...] extras), each at files.pythonhosted.org/packages/<blake2b-256 of the bytes>/NAME
// libtorch inside a wheel does not depend on the Python version (only libtorch_python.so does, and
// residual never unpacks it), so one cp311 wheel serves every user.
//
//   node scripts/install/make-libtorch-manifest.mjs [--dirs DIR1:DIR2...] [--check]
// --check: recompute and fail if the committed manifest differs (nothing written).
// Needs python3 only for blake2b-256 (Node's OpenSSL has no BLAKE2b with a 256-bit output).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yauzl from 'yauzl';
import { localWheelDirs, findLocalFile } from './local-wheels.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const manifestFile = path.join(root, 'scripts', 'install', 'libtorch-manifest.json');

const CPU_WHEEL = 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl';
const CUDA_TORCH = 'torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl';
// Python packages the torch wheel requires that libtorch itself never loads.
const PYTHON_ONLY = new Set(['cuda-bindings', 'triton', 'cuda-pathfinder']);

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function sha256(file) {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 22);
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function blake2b256(file) {
  const py =
    'import hashlib,sys\nh=hashlib.blake2b(digest_size=32)\nwith open(sys.argv[1],"rb") as f:\n  for b in iter(lambda: f.read(1<<22), b""): h.update(b)\nprint(h.hexdigest())';
  return execFileSync('python3', ['-c', py, file], { encoding: 'utf8' }).trim();
}

/** The glibc a manylinux tag needs: manylinux_2_28 -> 2.28, manylinux2014 -> 2.17, 2010 -> 2.12, 1 -> 2.5. */
export function glibcOfWheel(name) {
  let best = null;
  const consider = (v) => {
    if (!best || compareVersions(v, best) < 0) best = v; // a file with several tags runs where the lowest does
  };
  for (const m of name.matchAll(/manylinux_(\d+)_(\d+)_/g)) consider(`${m[1]}.${m[2]}`);
  for (const m of name.matchAll(/manylinux(2014|2010|1)_/g)) consider({ 2014: '2.17', 2010: '2.12', 1: '2.5' }[m[1]]);
  return best;
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

function readZipEntry(file, want) {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true }, (err, zip) => {
      if (err) return reject(err);
      zip.on('error', reject);
      zip.on('end', () => reject(new Error(`${path.basename(file)} has no entry matching ${want}`)));
      zip.on('entry', (e) => {
        if (!want.test(e.fileName)) return zip.readEntry();
        zip.openReadStream(e, (err2, s) => {
          if (err2) return reject(err2);
          const parts = [];
          s.on('data', (d) => parts.push(d));
          s.on('end', () => {
            zip.close();
            resolve(Buffer.concat(parts).toString('utf8'));
          });
          s.on('error', reject);
        });
      });
      zip.readEntry();
    });
  });
}

/** Does an environment marker hold on Linux x86-64 (the extra clause aside)? Only the forms the pinned wheels use. */
function onLinuxX64(marker) {
  const m = marker.replace(/\s*(and\s+)?extra\s*==\s*['"][^'"]+['"]/, '').trim();
  if (!/sys_platform|platform_system|platform_machine/.test(m)) return true;
  return (
    /platform_system\s*==\s*['"]Linux['"]/.test(m) ||
    /sys_platform\s*==\s*['"]linux['"]\s+and\s+platform_machine\s*==\s*['"]x86_64['"]/.test(m)
  );
}

/** Requires-Dist lines that apply on Linux x86-64 without extras (or with the given extras). */
function requirements(metadata, extras = []) {
  const out = [];
  for (const m of metadata.matchAll(/^Requires-Dist: ([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*([^;\n]*)(?:;\s*(.*))?$/gm)) {
    const [, name, ex, spec, marker = ''] = m;
    const extra = /extra == ['"]([^'"]+)['"]/.exec(marker)?.[1];
    if (extra ? !extras.includes(extra) : false) continue;
    if (!onLinuxX64(marker)) continue;
    out.push({
      name: name.toLowerCase().replace(/[_.]+/g, '-'),
      extras: ex
        ? ex
            .slice(1, -1)
            .split(',')
            .map((s) => s.trim())
        : [],
      spec: spec.trim(),
    });
  }
  return out;
}

/** The local wheel file of a requirement (name==X.*, ==X, or a range: the one version present). */
function wheelFor(req, dirs) {
  const prefix = req.name.replace(/-/g, '_') + '-';
  const pin = /^==\s*([\w.]+?)(\.\*)?$/.exec(req.spec);
  const found = [];
  for (const d of dirs) {
    let names;
    try {
      names = fs.readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      if (!n.startsWith(prefix) || !n.endsWith('.whl') || !/x86_64|-any\.whl$/.test(n)) continue;
      const version = n.slice(prefix.length).split('-')[0];
      // PEP 440: 13.0.3 == 13.0.3.0 (zeros padded); X.* matches X and X.anything
      const norm = (v) => v.replace(/(\.0)+$/, '');
      if (pin && !(pin[2] ? version === pin[1] || version.startsWith(pin[1] + '.') : norm(version) === norm(pin[1]))) continue;
      found.push(path.join(d, n));
    }
  }
  const uniq = [...new Map(found.map((f) => [path.basename(f), f])).values()];
  if (uniq.length !== 1)
    throw new Error(
      `${req.name}${req.spec}: ${uniq.length ? `several local wheels (${uniq.map((f) => path.basename(f)).join(', ')})` : 'no local wheel found'} in ${dirs.join(', ')}`,
    );
  return uniq[0];
}

/** sha256 from a PEP 503 simple index beside the files (…/simple/<name>/index.html), if there is one. */
function indexSha256(file) {
  const name = path.basename(file);
  const project = name.split('-')[0].toLowerCase().replace(/_/g, '-');
  for (const simple of [path.join(path.dirname(file), '..', 'simple', project, 'index.html')]) {
    try {
      const html = fs.readFileSync(simple, 'utf8');
      const m = new RegExp(`${name.replace(/[.+]/g, '\\$&')}#sha256=([0-9a-f]{64})`).exec(html);
      if (m) return m[1];
    } catch {
      /* none */
    }
  }
  return null;
}

function entry(file, url, role) {
  const name = path.basename(file);
  const digest = sha256(file);
  const fromIndex = indexSha256(file);
  if (fromIndex && fromIndex !== digest) throw new Error(`${name}: sha256 ${digest} differs from its index's ${fromIndex}`);
  const size = fs.statSync(file).size;
  console.error(`  ${name}: ${size} bytes, sha256 ${digest}${fromIndex ? ' (= index)' : ''}`);
  return { name, role, size, sha256: digest, glibc: glibcOfWheel(name), url: url ?? pypiUrl(file) };
}

function pypiUrl(file) {
  const d = blake2b256(file);
  return `https://files.pythonhosted.org/packages/${d.slice(0, 2)}/${d.slice(2, 4)}/${d.slice(4)}/${path.basename(file)}`;
}

async function main() {
  const dirs = arg('--dirs') ? arg('--dirs').split(':') : localWheelDirs();
  console.error(`[residual] local wheels from: ${dirs.join(', ')}`);
  const variants = {};

  const cpu = findLocalFile(CPU_WHEEL, dirs);
  if (!cpu) throw new Error(`${CPU_WHEEL} not found in ${dirs.join(', ')}`);
  variants.cpu = {
    torch: '2.13.0',
    cuda: null,
    platform: 'linux-x64',
    files: [entry(cpu, `https://download.pytorch.org/whl/cpu/${encodeURIComponent(CPU_WHEEL)}`, 'torch')],
  };

  const cuTorch = findLocalFile(CUDA_TORCH, dirs);
  if (!cuTorch) throw new Error(`${CUDA_TORCH} not found in ${dirs.join(', ')}`);
  const files = [entry(cuTorch, null, 'torch')];
  const meta = await readZipEntry(cuTorch, /^torch-[^/]+\.dist-info\/METADATA$/);
  const seen = new Set();
  const queue = requirements(meta).filter((r) => /^(nvidia-|cuda-)/.test(r.name) && !PYTHON_ONLY.has(r.name));
  while (queue.length) {
    const r = queue.shift();
    const key = `${r.name}[${r.extras.join(',')}]`;
    if (seen.has(key)) continue;
    seen.add(key);
    const file = wheelFor(r, dirs);
    if (r.name === 'cuda-toolkit') {
      // A metapackage: its extras name the library wheels; it has no files libtorch needs.
      const tk = await readZipEntry(file, /\.dist-info\/METADATA$/);
      for (const dep of requirements(tk, r.extras)) if (/^nvidia-/.test(dep.name) && !seen.has(`${dep.name}[]`)) queue.push(dep);
      continue;
    }
    if (!files.some((f) => f.name === path.basename(file))) files.push(entry(file, null, 'cuda-library'));
  }
  variants.cu130 = { torch: '2.14.1', cuda: '13.0', platform: 'linux-x64', files };

  const manifest = {
    comment:
      'Written by scripts/install/make-libtorch-manifest.mjs: every file residual fetches for libtorch, pinned by size and sha256. RESIDUAL_LIBTORCH_MIRROR=URL replaces the scheme and host of each url (and adds its path in front).',
    format: 1,
    variants,
  };
  const text = JSON.stringify(manifest, null, 2) + '\n';
  if (process.argv.includes('--check')) {
    const old = fs.existsSync(manifestFile) ? fs.readFileSync(manifestFile, 'utf8') : '';
    if (old !== text) {
      console.error(`[residual] ${path.relative(root, manifestFile)} is not what the local wheels give: rerun without --check`);
      process.exit(1);
    }
    console.error('[residual] the manifest matches the local wheels');
    return;
  }
  fs.writeFileSync(manifestFile, text);
  console.error(
    `[residual] wrote ${path.relative(root, manifestFile)}: cpu ${variants.cpu.files.length} file(s), cu130 ${files.length} file(s)`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`[residual] ${e.message}`);
    process.exit(1);
  });
}
