// The pinned libtorch files (scripts/install/libtorch-manifest.json, written by
// scripts/install/make-libtorch-manifest.mjs from the files themselves): for each variant, every wheel
// residual fetches, with its size, sha256 and URL. RESIDUAL_LIBTORCH_MIRROR=URL serves the same paths
// from another host. RESIDUAL_LIBTORCH_MANIFEST=file replaces the manifest (tests, or pinning a build
// of your own); its use is printed.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const manifestPath = path.join(packageRoot, 'scripts', 'install', 'libtorch-manifest.json');

export interface PinnedFile {
  name: string;
  /** torch: the wheel holding libtorch; cuda-library: an nvidia-* wheel libtorch_cuda loads from. */
  role: 'torch' | 'cuda-library';
  size: number;
  /** hex */
  sha256: string;
  /** The glibc its manylinux tag needs ("2.28"). */
  glibc?: string | null;
  url: string;
}

export interface PinnedVariant {
  torch: string;
  cuda: string | null;
  platform: string;
  files: PinnedFile[];
}

export interface Manifest {
  format: number;
  variants: Record<string, PinnedVariant>;
}

const cache = new Map<string, Manifest>();

/** The manifest in force (RESIDUAL_LIBTORCH_MANIFEST or the committed one), validated. */
export function loadManifest(env: NodeJS.ProcessEnv = process.env): { manifest: Manifest; file: string; overridden: boolean } {
  const file = env.RESIDUAL_LIBTORCH_MANIFEST ? path.resolve(env.RESIDUAL_LIBTORCH_MANIFEST) : manifestPath;
  let m = cache.get(file);
  if (!m) {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`cannot read the libtorch manifest ${file}: ${(e as Error).message}`);
    }
    m = validateManifest(raw, file);
    cache.set(file, m);
  }
  return { manifest: m, file, overridden: file !== manifestPath };
}

function validateManifest(raw: unknown, file: string): Manifest {
  const bad = (what: string) => new Error(`the libtorch manifest ${file} is invalid: ${what}`);
  const m = raw as Manifest;
  if (!m || typeof m !== 'object' || m.format !== 1 || !m.variants || typeof m.variants !== 'object')
    throw bad('expected {"format": 1, "variants": {...}}');
  for (const [v, pv] of Object.entries(m.variants)) {
    if (!/^(cpu|cu\d+)$/.test(v)) throw bad(`variant "${v}" (cpu or cuXYZ)`);
    if (typeof pv.torch !== 'string' || !/^\d+\.\d+\.\d+$/.test(pv.torch)) throw bad(`${v}.torch must be X.Y.Z`);
    if (!Array.isArray(pv.files) || !pv.files.length) throw bad(`${v}.files is empty`);
    if (pv.files.filter((f) => f.role === 'torch').length !== 1) throw bad(`${v} needs exactly one file with role "torch"`);
    for (const f of pv.files) {
      if (typeof f.name !== 'string' || !/^[\w.+-]+\.whl$/.test(f.name))
        throw bad(`${v}: file name ${JSON.stringify(f.name)} (a .whl without slashes)`);
      if (!Number.isSafeInteger(f.size) || f.size <= 0) throw bad(`${f.name}: size must be a positive integer`);
      if (typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256)) throw bad(`${f.name}: sha256 must be 64 hex digits`);
      let u: URL;
      try {
        u = new URL(f.url);
      } catch {
        throw bad(`${f.name}: url ${JSON.stringify(f.url)}`);
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw bad(`${f.name}: url must be http(s)`);
    }
  }
  return m;
}

/** The pinned files of a variant, or an error naming what exists and what to set. */
export function pinnedVariant(
  variant: string,
  env: NodeJS.ProcessEnv = process.env,
): PinnedVariant & { manifestFile: string; overridden: boolean } {
  const { manifest, file, overridden } = loadManifest(env);
  const pv = manifest.variants[variant];
  if (!pv)
    throw new Error(
      `no pinned libtorch for variant "${variant}" (pinned: ${Object.keys(manifest.variants).join(', ')}); set RESIDUAL_VARIANT to one of them, or LIBTORCH=/path/to/libtorch`,
    );
  return { ...pv, manifestFile: file, overridden };
}

/**
 * The URL a pinned file is fetched from: its own, or on RESIDUAL_LIBTORCH_MIRROR, whose scheme, host
 * and port replace the pinned ones and whose path (if any) goes in front of the pinned path.
 */
export function fileUrl(f: PinnedFile, mirror: string | undefined = process.env.RESIDUAL_LIBTORCH_MIRROR): string {
  if (!mirror) return f.url;
  let m: URL;
  try {
    m = new URL(mirror);
  } catch {
    throw new Error(`RESIDUAL_LIBTORCH_MIRROR=${mirror} is not a URL (expected e.g. http://mirror.example:8080 or https://host/path)`);
  }
  if (m.protocol !== 'http:' && m.protocol !== 'https:')
    throw new Error(`RESIDUAL_LIBTORCH_MIRROR=${mirror}: only http and https are supported`);
  const pinned = new URL(f.url);
  const prefix = m.pathname.replace(/\/+$/, '');
  return `${m.protocol}//${m.host}${prefix}${pinned.pathname}`;
}

/** Where a pinned file lies in a mirror folder: its URL path, decoded (what a static server maps it to). */
export function mirrorRelPath(f: PinnedFile): string {
  const p = decodeURIComponent(new URL(f.url).pathname).replace(/^\/+/, '');
  if (p.split('/').some((s) => s === '..' || s === '')) throw new Error(`unsafe path in ${f.url}`);
  return p;
}
