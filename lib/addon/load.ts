// Finds, checks and loads the native addon binary.
//
// Candidates, in order (the first that passes every check wins):
//   1. RESIDUAL_ADDON          an explicit path to a .node file
//   2. @residual/<platform>-<arch>-<variant>   the optional package for the libtorch variant in use
//      (then the other variant packages, which are only reported as refused)
//   3. prebuilds/<platform>-<arch>/*.node       inside this package (prebuildify's layout)
//   4. build/Release/residual.node              a build from source (cmake-js)
//
// Each binary is tagged with the libtorch version and variant it was built against: in its file name
// (residual.napi.libtorch-2.13.0.cpu.node) or, for a local build, in build/Release/residual.json.
// A binary whose tag does not match the libtorch in use is refused with a message instead of being
// loaded (libtorch has no stable C++ ABI: a mismatch crashes or, worse, misbehaves).
//
// A candidate is first loaded in a child process (the probe): a broken or incompatible binary can
// segfault or abort inside dlopen, and that must not take the user's process down. A successful
// probe is cached in RESIDUAL_HOME/probe-cache.json keyed by the file's path, size and mtime and by
// the libtorch it runs with, so later starts skip the child process.
//
// libtorch is found without LD_LIBRARY_PATH: a local build has RUNPATH into the libtorch it was built
// against; a prebuilt binary comes from another machine, so the loader first loads libtorch's own
// libraries from the resolved libtorch folder with RTLD_GLOBAL (see preloadLibtorch), and the addon's
// DT_NEEDED entries (libc10.so, libtorch.so, ...) then resolve to those already-loaded libraries.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../core/fs.js';

const require = createRequire(import.meta.url);
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A libtorch folder as described by scripts/install/libtorch.mjs. */
export interface Libtorch {
  dir: string;
  lib: string;
  version: string; // X.Y.Z
  variant: string; // cpu | cuda
  variantTag: string; // cpu | cu130 | ... ("cuda" when the CUDA version is unknown)
  cuda?: string | null;
  source?: string; // LIBTORCH | LIBTORCH_USE_PYTORCH | project | cache | fetched | build
}

/** What a binary was built against. variant: cpu, cuda or cuXYZ. */
export interface Tag {
  libtorch: string;
  variant: string;
}

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
}

/** What the addon's buildInfo() says (the subset the loader checks, plus the rest). */
export interface BuildInfo {
  libtorch: string;
  variant: string;
  napiVersion?: number;
  cudaBuilt?: boolean;
  cudnnAvailable?: boolean;
  [k: string]: unknown;
}

export interface ProbeResult {
  ok: boolean;
  info?: BuildInfo;
  error?: string;
  cached?: boolean;
}

export type Probe = (c: Candidate) => ProbeResult;

export interface Attempt {
  candidate: Candidate;
  outcome: 'chosen' | 'missing' | 'mismatch' | 'failed';
  detail: string;
}

export interface Selection {
  choice: (Candidate & { info: BuildInfo }) | null;
  attempts: Attempt[];
}

/** The libtorch libraries a binary links against, in dependency order (those present are loaded). */
export const LIBTORCH_LIBS = ['libc10.so', 'libtorch_cpu.so', 'libtorch.so', 'libc10_cuda.so', 'libtorch_cuda.so'];

// glibc's RTLD_NODELETE (not in os.constants.dlopen). process.dlopen() on a library that is not an
// addon throws "Module did not self-register" and then dlclose()s it; without NODELETE a library
// such as libtorch.so is really unloaded again and the addon's DT_NEEDED lookup fails.
const RTLD_NODELETE = 0x1000;

export const KNOWN_VARIANTS = ['cpu', 'cu130'];

// ---------------------------------------------------------------------------------------------
// Pure logic (tested in test/unit/loader.test.ts)

/** Parses "residual.napi.libtorch-2.13.0.cpu.node" into {libtorch: '2.13.0', variant: 'cpu'}. */
export function parseTag(file: string): Tag | null {
  const m = /\.libtorch-(\d+\.\d+\.\d+)\.(cpu|cuda|cu\d+)(?:\.[^.]+)*\.node$/.exec(path.basename(file));
  return m ? { libtorch: m[1], variant: m[2] } : null;
}

/** The file name a prebuilt binary gets (see scripts/release/prebuild.mjs). */
export function taggedName(tag: Tag): string {
  return `residual.napi.libtorch-${tag.libtorch}.${tag.variant}.node`;
}

/** cpu matches cpu; cuXYZ matches cuXYZ; plain "cuda" (version unknown) matches any cuXYZ. */
export function variantsMatch(a: string, b: string): boolean {
  if (a === b) return true;
  const cudaLike = (v: string) => v === 'cuda' || /^cu\d+$/.test(v);
  return (a === 'cuda' && cudaLike(b)) || (b === 'cuda' && cudaLike(a));
}

function versionOnly(v: string): string {
  return String(v).replace(/\+.*$/, '');
}

/** Does a binary built against `tag` fit the libtorch `lt`? ('unknown' versions are left to the probe.) */
export function tagMatches(tag: Tag, lt: { version: string; variantTag: string }): boolean {
  const va = versionOnly(tag.libtorch);
  const vb = versionOnly(lt.version);
  return (va === 'unknown' || vb === 'unknown' || va === vb) && variantsMatch(tag.variant, lt.variantTag);
}

function describeTag(t: { libtorch?: string; version?: string; variant?: string; variantTag?: string }): string {
  return `${versionOnly(t.libtorch ?? t.version ?? '?')} (${t.variantTag ?? t.variant})`;
}

/**
 * Picks the first candidate that exists, is tagged for the libtorch it will run with, loads in a
 * child process (`probe`) and reports (buildInfo) the libtorch it expects. Never throws; every
 * rejected candidate is explained in `attempts`.
 */
export function chooseAddon({ candidates, probe }: { candidates: Candidate[]; probe: Probe }): Selection {
  const attempts: Attempt[] = [];
  for (const c of candidates) {
    if (!fs.existsSync(c.path)) {
      attempts.push({ candidate: c, outcome: 'missing', detail: 'not found' });
      continue;
    }
    if (c.tag && c.libtorch && !tagMatches(c.tag, c.libtorch)) {
      attempts.push({
        candidate: c,
        outcome: 'mismatch',
        detail: `refused: built for libtorch ${describeTag(c.tag)}, but the libtorch in use is ${describeTag(c.libtorch)} (${c.libtorch.dir})`,
      });
      continue;
    }
    const r = probe(c);
    if (!r.ok || !r.info) {
      attempts.push({ candidate: c, outcome: 'failed', detail: `does not load (tried in a child process): ${r.error ?? 'no build info'}` });
      continue;
    }
    const built = { libtorch: r.info.libtorch, variant: c.tag && variantsMatch(c.tag.variant, r.info.variant) ? c.tag.variant : r.info.variant };
    if (c.libtorch && !tagMatches(built, c.libtorch)) {
      attempts.push({
        candidate: c,
        outcome: 'mismatch',
        detail: `refused: it reports being built for libtorch ${describeTag(built)}, but the libtorch in use is ${describeTag(c.libtorch)} (${c.libtorch.dir})`,
      });
      continue;
    }
    attempts.push({ candidate: c, outcome: 'chosen', detail: r.cached ? 'loads (cached probe)' : 'loads (probed in a child process)' });
    return { choice: { ...c, info: r.info }, attempts };
  }
  return { choice: null, attempts };
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

function readJson(file: string): any {
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

export function variantPackageName(variant: string, platform: string = process.platform, arch: string = process.arch): string {
  return `@residual/${platform}-${arch}-${variant}`;
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
    const files = matchingFirst(nodeFiles(dir), lt);
    if (!files.length) out.push({ path: path.join(dir, taggedName({ libtorch: lt?.version ?? 'X.Y.Z', variant: v })), how: `optional package ${name}`, tag: null, libtorch: lt, preload: !!lt });
    for (const f of files) out.push({ path: f, how: `optional package ${name}`, tag: parseTag(f), libtorch: lt, preload: !!lt });
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
    out.push({ path: local, how: 'local build (build/Release)', tag, libtorch: sameDir ? lt : describeDir(builtWith, 'build'), preload: false });
  } else {
    out.push({ path: local, how: 'local build (build/Release)', tag, libtorch: null, preload: false });
  }
  return out;
}

function safeRealpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

// ---------------------------------------------------------------------------------------------
// libtorch resolution (scripts/install/libtorch.mjs is the one implementation, shared with the build)

type LibtorchModule = {
  findLibtorch(o?: { quiet?: boolean }): Libtorch | null;
  describeLibtorch(dir: string): Libtorch;
  residualHome(): string;
};

let ltModule: LibtorchModule | null = null;
function libtorchModule(): LibtorchModule | null {
  if (ltModule) return ltModule;
  const file = path.join(packageRoot, 'scripts', 'install', 'libtorch.mjs');
  try {
    // require(esm): synchronous, available without flags from Node 20.19 / 22.12.
    ltModule = require(file) as LibtorchModule;
  } catch {
    ltModule = null;
  }
  return ltModule;
}

function describeDir(dir: string, source: string): Libtorch | null {
  const m = libtorchModule();
  return m ? { ...m.describeLibtorch(dir), source } : null;
}

export function residualHome(): string {
  const m = libtorchModule();
  if (m) return m.residualHome();
  if (process.env.RESIDUAL_HOME) return path.resolve(process.env.RESIDUAL_HOME);
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'residual');
}

/**
 * The libtorch this process should run with: LIBTORCH, LIBTORCH_USE_PYTORCH=1, the project copy,
 * or the cache (see scripts/install/libtorch.mjs). Never fetches. Throws when an environment variable
 * names something unusable (that is the user's explicit wish, so it must not be ignored).
 */
export function resolveRuntimeLibtorch(): Libtorch | null {
  const m = libtorchModule();
  if (m) return m.findLibtorch({ quiet: true });
  // Old Node without require(esm): ask a child process (slower, same answer).
  const code = `import(${JSON.stringify(path.join(packageRoot, 'scripts', 'install', 'libtorch.mjs'))}).then((m) => process.stdout.write(JSON.stringify(m.findLibtorch({ quiet: true }))), (e) => { console.error(e.message); process.exit(1); })`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error((r.stderr || 'libtorch resolution failed').trim());
  return JSON.parse(r.stdout);
}

// ---------------------------------------------------------------------------------------------
// Loading: preload, probe in a child process, probe cache

export interface PreloadResult {
  loaded: string[];
  error?: string;
}

/** Loads libtorch's libraries from `libDir` globally so that the addon's DT_NEEDED entries resolve to them. */
export function preloadLibtorch(libDir: string): PreloadResult {
  const { RTLD_NOW, RTLD_GLOBAL } = os.constants.dlopen as Record<string, number>;
  const loaded: string[] = [];
  for (const name of LIBTORCH_LIBS) {
    const file = path.join(libDir, name);
    if (!fs.existsSync(file)) continue;
    try {
      process.dlopen({ exports: {} } as NodeJS.Module, file, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    } catch (e) {
      // Expected: a plain library is not an addon. Anything else (a missing dependency such as
      // libcudnn) is the real reason the addon cannot load, so report it.
      const msg = (e as Error).message;
      if (!/did not self-register/.test(msg)) return { loaded, error: `${name}: ${msg}` };
    }
    loaded.push(name);
  }
  return { loaded };
}

// The probe child: the same preloading as preloadLibtorch, then require + buildInfo(). It prints one
// line of JSON after a marker; crashes and timeouts are read from the exit status instead.
const PROBE_CHILD = `
const fs = require('fs'), os = require('os'), path = require('path');
const a = JSON.parse(process.env.RESIDUAL_PROBE);
const out = (o) => process.stdout.write('\\n@@residual-probe@@' + JSON.stringify(o) + '\\n');
try {
  if (a.lib) {
    const f = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | ${RTLD_NODELETE};
    for (const n of a.libs) {
      const p = path.join(a.lib, n);
      if (!fs.existsSync(p)) continue;
      try { process.dlopen({ exports: {} }, p, f); } catch (e) {
        if (!/did not self-register/.test(e.message)) { out({ ok: false, error: 'preloading ' + n + ' from ' + a.lib + ': ' + e.message }); process.exit(0); }
      }
    }
  }
  const m = require(a.file);
  if (typeof m.buildInfo !== 'function') { out({ ok: false, error: 'it is not the residual addon (no buildInfo export)' }); process.exit(0); }
  const info = m.buildInfo();
  delete info.config;
  out({ ok: true, info });
} catch (e) {
  out({ ok: false, error: String(e && e.message || e).split('\\n')[0] });
}
`;

export function probeTimeoutMs(): number {
  const s = Number(process.env.RESIDUAL_PROBE_TIMEOUT);
  return (Number.isFinite(s) && s > 0 ? s : 120) * 1000;
}

/** Loads a candidate in a child Node process; never throws and never affects this process. */
export function probeInChild(c: Candidate, timeoutMs = probeTimeoutMs()): ProbeResult {
  const args = { file: c.path, lib: c.preload && c.libtorch ? c.libtorch.lib : null, libs: LIBTORCH_LIBS };
  const r = spawnSync(process.execPath, ['-e', PROBE_CHILD], {
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, RESIDUAL_PROBE: JSON.stringify(args) },
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 24,
  });
  const line = (r.stdout || '').split('\n').find((l) => l.startsWith('@@residual-probe@@'));
  if (line) {
    try {
      return JSON.parse(line.slice('@@residual-probe@@'.length));
    } catch {
      /* fall through */
    }
  }
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
    return { ok: false, error: `loading did not finish within ${timeoutMs / 1000} s (set RESIDUAL_PROBE_TIMEOUT=seconds on slow disks)` };
  }
  if (r.signal) return { ok: false, error: `the child process was killed by ${r.signal} while loading it (a broken or incompatible binary)` };
  const tail = (r.stderr || r.error?.message || '').trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
  return { ok: false, error: `the child process exited with status ${r.status}${tail ? `: ${tail}` : ''}` };
}

function statKey(p: string | null | undefined): string {
  if (!p) return '-';
  try {
    const s = fs.statSync(p);
    return `${s.size}:${Math.round(s.mtimeMs)}`;
  } catch {
    return 'missing';
  }
}

function probeCacheFile(): string {
  return path.join(residualHome(), 'probe-cache.json');
}

function cacheKey(c: Candidate): string {
  const lib = c.libtorch?.lib ?? null;
  return JSON.stringify([
    safeRealpath(c.path),
    statKey(c.path),
    c.preload ? lib : null,
    statKey(lib && path.join(lib, 'libtorch_cpu.so')),
    process.versions.node,
  ]);
}

/** probeInChild, remembering successes (keyed so that a changed binary or libtorch is probed again). */
export function cachedProbe(c: Candidate): ProbeResult {
  const file = probeCacheFile();
  const key = cacheKey(c);
  const cache = readJson(file) ?? {};
  const hit = cache.entries?.[key];
  if (hit?.info) return { ok: true, info: hit.info, cached: true };
  const r = probeInChild(c);
  if (r.ok) {
    const entries: Record<string, { info: BuildInfo; at: number }> = { ...(cache.entries ?? {}), [key]: { info: r.info!, at: Date.now() } };
    // Keep it small: the 32 most recent entries.
    const kept = Object.fromEntries(Object.entries(entries).sort((a, b) => b[1].at - a[1].at).slice(0, 32));
    try {
      // A cache: cheap to lose, so not fsynced (durable: false), but never seen half-written.
      writeFileAtomic(file, JSON.stringify({ version: 1, entries: kept }) + '\n', { durable: false });
    } catch {
      // A read-only home only costs a child process per start.
    }
  }
  return r;
}

export function forgetProbe(c: Candidate): void {
  const file = probeCacheFile();
  const cache = readJson(file);
  if (!cache?.entries?.[cacheKey(c)]) return;
  delete cache.entries[cacheKey(c)];
  try {
    fs.writeFileSync(file, JSON.stringify(cache) + '\n');
  } catch {
    /* ignore */
  }
}

// ---------------------------------------------------------------------------------------------
// The entry points

export interface AddonChoice {
  path: string;
  how: string;
  tag: Tag | null;
  libtorch: Libtorch | null;
  preload: boolean;
  info: BuildInfo;
  attempts: Attempt[];
}

let chosen: AddonChoice | null = null;
let lastAttempts: Attempt[] = [];

/** The binary loadAddon() loaded and how it was chosen (null before loading). */
export function addonChoice(): AddonChoice | null {
  return chosen;
}

/** Every candidate considered by the last loadAddon() and what happened to it. */
export function addonAttempts(): Attempt[] {
  return lastAttempts;
}

export function formatAttempts(attempts: Attempt[]): string {
  return attempts.map((a) => `${a.candidate.how}: ${a.candidate.path}\n      ${a.detail}`).join('\n  ');
}

/** The command that builds the addon from source for this checkout or installed package. */
export function buildFromSourceCommand(root = packageRoot): string {
  const checkout = fs.existsSync(path.join(root, 'lib')) && fs.existsSync(path.join(root, 'tsconfig.json'));
  return checkout ? `cd ${root} && node scripts/install/build.mjs --native-only` : `cd ${root} && node scripts/install/install.mjs --build-from-source`;
}

export function loadAddon(): Record<string, (...args: unknown[]) => unknown> {
  let lt: Libtorch | null;
  try {
    lt = resolveRuntimeLibtorch();
  } catch (e) {
    throw new Error(`residual: ${(e as Error).message}`);
  }
  let remaining = addonCandidates({ libtorch: lt });
  const attempts: Attempt[] = [];
  while (remaining.length) {
    const sel = chooseAddon({ candidates: remaining, probe: cachedProbe });
    attempts.push(...sel.attempts);
    lastAttempts = attempts;
    if (!sel.choice) break;
    const c = sel.choice;
    try {
      if (c.preload && c.libtorch) {
        const pre = preloadLibtorch(c.libtorch.lib);
        if (pre.error) throw new Error(`preloading libtorch from ${c.libtorch.lib}: ${pre.error}`);
      }
      const binding = require(c.path);
      chosen = { path: c.path, how: c.how, tag: c.tag, libtorch: c.libtorch, preload: c.preload, info: c.info, attempts };
      return binding;
    } catch (e) {
      // Only reachable through a stale probe cache entry: forget it and go on with the next candidates.
      forgetProbe(c);
      attempts[attempts.length - 1] = { candidate: c, outcome: 'failed', detail: `does not load: ${(e as Error).message.split('\n')[0]}` };
      remaining = remaining.slice(sel.attempts.length);
    }
  }
  const ltLine = lt
    ? `libtorch in use: ${lt.version} (${lt.variantTag}) from ${lt.source}: ${lt.dir}`
    : `libtorch: none found. Fetch it with: node ${path.join(packageRoot, 'scripts', 'install', 'install.mjs')} (npm runs it at install unless scripts are disabled), or set LIBTORCH=/path/to/libtorch or LIBTORCH_USE_PYTORCH=1`;
  throw new Error(
    `residual: no usable native addon.\n  ${ltLine}\n  Tried:\n  ${formatAttempts(lastAttempts)}\n` +
      `Build it from source (needs cmake, a C++17 compiler and libtorch) with:\n  ${buildFromSourceCommand()}\n` +
      `Environment: LIBTORCH, LIBTORCH_USE_PYTORCH=1, RESIDUAL_VARIANT=cpu|cu130, RESIDUAL_HOME, RESIDUAL_ADDON (see README).`,
  );
}
