#!/usr/bin/env node
// Lays out a libtorch mirror in DIR from the wheel files this machine has (pip's find-links and file://
// indexes, /opt/wheels; see local-wheels.mjs), each checked against the manifest's size and sha256.
// Serve DIR with any static HTTP server and point RESIDUAL_LIBTORCH_MIRROR at it: each pinned file lies
// at its URL's path (e.g. DIR/whl/cpu/torch-2.13.0+cpu-...whl, DIR/packages/ab/cd/.../nvidia_...whl).
//   npm run libtorch:mirror -- DIR [--variant cpu|cu130|all] [--from WHEEL_DIR]... [--manifest FILE]
// Node built-ins only: it runs in a fresh clone before npm install. Files are hard-linked when DIR is on
// the same file system as the wheels, copied otherwise.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLocalFile, localWheelDirs } from './local-wheels.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

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

/** DIR-relative path of a pinned file: its URL path, decoded, as a static server maps it. */
export function mirrorRelPath(url) {
  const p = decodeURIComponent(new URL(url).pathname).replace(/^\/+/, '');
  if (p.split('/').some((s) => s === '..' || s === '.' || s === '')) throw new Error(`unsafe path in ${url}`);
  return p;
}

export function layOutMirror(
  dir,
  { variants = ['cpu'], from = [], manifestFile = path.join(here, 'libtorch-manifest.json'), log = console.error } = {},
) {
  const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  const dirs = localWheelDirs(from);
  const wanted = variants.includes('all') ? Object.keys(manifest.variants) : variants;
  let total = 0;
  for (const v of wanted) {
    const pv = manifest.variants[v];
    if (!pv) throw new Error(`variant ${v} is not in ${manifestFile} (it has: ${Object.keys(manifest.variants).join(', ')})`);
    for (const f of pv.files) {
      const dest = path.join(dir, mirrorRelPath(f.url));
      if (fs.existsSync(dest) && fs.statSync(dest).size === f.size && sha256(dest) === f.sha256) {
        log(`[residual] ${f.name}: already in the mirror`);
        total += f.size;
        continue;
      }
      const src = findLocalFile(f.name, dirs);
      if (!src) throw new Error(`${f.name} is not on this machine (looked in ${dirs.join(', ') || 'no folder'}; add one with --from DIR)`);
      const size = fs.statSync(src).size;
      const digest = sha256(src);
      if (size !== f.size || digest !== f.sha256)
        throw new Error(`${src} is not the pinned file: ${size} bytes, sha256 ${digest}; pinned ${f.size} bytes, sha256 ${f.sha256}`);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.rmSync(dest, { force: true });
      try {
        fs.linkSync(src, dest);
      } catch {
        fs.copyFileSync(src, dest);
      }
      total += f.size;
      log(`[residual] ${path.relative(dir, dest)} <- ${src} (sha256 verified)`);
    }
  }
  return { dir, variants: wanted, bytes: total };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (n) => args.flatMap((a, i) => (a === n ? [args[i + 1]] : []));
  const dir = args.find((a, i) => !a.startsWith('--') && !['--variant', '--from', '--manifest'].includes(args[i - 1]));
  if (!dir || args.includes('--help')) {
    console.error('usage: npm run libtorch:mirror -- DIR [--variant cpu|cu130|all] [--from WHEEL_DIR]... [--manifest FILE]');
    process.exit(dir ? 0 : 2);
  }
  try {
    const r = layOutMirror(path.resolve(dir), {
      variants: opt('--variant').length ? opt('--variant') : ['cpu'],
      from: opt('--from'),
      ...(opt('--manifest')[0] ? { manifestFile: path.resolve(opt('--manifest')[0]) } : {}),
    });
    console.error(
      `[residual] mirror ready in ${r.dir} (${r.variants.join(', ')}: ${(r.bytes / 1e6).toFixed(1)} MB). Serve it over HTTP and set RESIDUAL_LIBTORCH_MIRROR=http://HOST:PORT`,
    );
  } catch (e) {
    console.error(`[residual] ${e.message}`);
    process.exit(1);
  }
}
