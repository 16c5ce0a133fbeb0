// Every place a binary may be, in the order they are tried (the first that passes every check wins):
//   1. RESIDUAL_ADDON          an explicit path to a .node file
//   2. @residual/<platform>-<arch>-<variant>   the optional package for the libtorch variant in use
//      (then the other variant packages, which are only reported as refused)
//   3. prebuilds/<platform>-<arch>/*.node       inside this package (prebuildify's layout)
//   4. build/Release/residual.node              a build from source (cmake-js)
// A prebuilt package may declare the system it needs in its package.json ("residual": {"glibc":
// "2.33", "glibcxx": "3.4.30"}); the loader checks that before trying the binary (lib/addon/system.ts).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { type Libtorch, describeLibtorch, packageRoot } from './libtorch.js';
import type { SystemRequirements } from './system.js';
import { type Tag, KNOWN_VARIANTS, parseTag, tagMatches, taggedName, variantPackageName } from './tags.js';

export interface Candidate {
  path: string;
  /** How it was found, for messages and `residual doctor`. */
  how: string;
  /** What it was built against, when known before loading it. */
  tag: Tag | null;
  /** The libtorch it will run with (null: whatever its RUNPATH finds). */
  libtorch: Libtorch | null;
  /** Load libtorch's libraries from libtorch.lib before the addon (prebuilt binaries). */
  preload: boolean;
  /** What the system must provide (declared by a prebuilt package). */
  requires?: SystemRequirements | null;
}

export interface CandidateOptions {
  root?: string;
  /** The resolved libtorch (null when none was found). */
  libtorch: Libtorch | null;
  platform?: string;
  arch?: string;
  env?: NodeJS.ProcessEnv;
  /** Folder of an installed package, or null. */
  resolvePackage?: (name: string) => string | null;
}

export function readJson(file: string): any {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

function nodeFiles(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.node'))
      .sort()
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/** Matching binaries first, so a folder with several builds picks the right one. */
function matchingFirst(files: string[], lt: Libtorch | null): string[] {
  if (!lt) return files;
  const score = (f: string) => {
    const t = parseTag(f);
    return t && tagMatches(t, lt) ? 0 : 1;
  };
  return [...files].sort((a, b) => score(a) - score(b));
}

function defaultResolvePackage(root: string): (name: string) => string | null {
  const req = createRequire(path.join(root, 'package.json'));
  return (name) => {
    try {
      return path.dirname(req.resolve(`${name}/package.json`));
    } catch {
      return null;
    }
  };
}

/** The system requirements a prebuilt package declares ("residual": {"glibc", "glibcxx"}), or null. */
export function packageRequirements(dir: string): SystemRequirements | null {
  const r = readJson(path.join(dir, 'package.json'))?.residual;
  if (!r || typeof r !== 'object') return null;
  const out: SystemRequirements = {};
  if (typeof r.glibc === 'string' && /^\d+\.\d+$/.test(r.glibc)) out.glibc = r.glibc;
  if (typeof r.glibcxx === 'string' && /^\d+\.\d+\.\d+$/.test(r.glibcxx)) out.glibcxx = r.glibcxx;
  return out.glibc || out.glibcxx ? out : null;
}

export function safeRealpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** Every place a binary may be, in the order they are tried (see the top of this file). */
export function addonCandidates(opts: CandidateOptions): Candidate[] {
  const root = opts.root ?? packageRoot;
  const env = opts.env ?? process.env;
  const platform = opts.platform ?? process.platform;
  const arch = opts.arch ?? process.arch;
  const lt = opts.libtorch;
  const resolvePackage = opts.resolvePackage ?? defaultResolvePackage(root);
  const out: Candidate[] = [];

  if (env.RESIDUAL_ADDON) {
    const p = path.resolve(env.RESIDUAL_ADDON);
    const side = readJson(p.replace(/\.node$/, '.json'));
    const tag = parseTag(p) ?? (side?.libtorch ? { libtorch: side.libtorch, variant: side.variant } : null);
    out.push({ path: p, how: 'RESIDUAL_ADDON', tag, libtorch: lt, preload: !!lt });
  }

  // The wanted variant's package first; others are listed so that doctor can say why they were refused.
  const variants = [...new Set([...(lt ? [lt.variantTag] : []), ...KNOWN_VARIANTS])];
  for (const v of variants) {
    const name = variantPackageName(v, platform, arch);
    const dir = resolvePackage(name);
    if (!dir) continue;
    const requires = packageRequirements(dir);
    const files = matchingFirst(nodeFiles(dir), lt);
    if (!files.length)
      out.push({
        path: path.join(dir, taggedName({ libtorch: lt?.version ?? 'X.Y.Z', variant: v })),
        how: `optional package ${name}`,
        tag: null,
        libtorch: lt,
        preload: !!lt,
        requires,
      });
    for (const f of files) out.push({ path: f, how: `optional package ${name}`, tag: parseTag(f), libtorch: lt, preload: !!lt, requires });
  }

  const prebuilt = path.join(root, 'prebuilds', `${platform}-${arch}`);
  for (const f of matchingFirst(nodeFiles(prebuilt), lt)) {
    out.push({ path: f, how: `prebuilt (prebuilds/${platform}-${arch})`, tag: parseTag(f), libtorch: lt, preload: !!lt });
  }

  // A local build runs with the libtorch it was built against (its RUNPATH), unless the user named
  // a libtorch explicitly: then that one is preloaded and the tags must agree.
  const local = path.join(root, 'build', 'Release', 'residual.node');
  const side = readJson(path.join(root, 'build', 'Release', 'residual.json'));
  const tag: Tag | null = side?.libtorch ? { libtorch: side.libtorch, variant: side.variant } : null;
  const explicit = lt && (lt.source === 'LIBTORCH' || lt.source === 'LIBTORCH_USE_PYTORCH');
  const builtWith = side?.libtorchDir && fs.existsSync(side.libtorchDir) ? side.libtorchDir : null;
  const sameDir = lt && builtWith && safeRealpath(lt.dir) === safeRealpath(builtWith);
  if (explicit && !sameDir) {
    out.push({ path: local, how: 'local build (build/Release)', tag, libtorch: lt, preload: true });
  } else if (builtWith) {
    out.push({
      path: local,
      how: 'local build (build/Release)',
      tag,
      libtorch: sameDir ? lt : { ...describeLibtorch(builtWith), source: 'build' },
      preload: false,
    });
  } else {
    out.push({ path: local, how: 'local build (build/Release)', tag, libtorch: null, preload: false });
  }
  return out;
}
