// Loading a candidate safely: libtorch's libraries preloaded from the resolved folder (a prebuilt
// binary comes from another machine and has no path to them), and a first load in a child process
// (the probe): a broken or incompatible binary can segfault or abort inside dlopen, and that must not
// take the user's process down. A successful probe is cached in RESIDUAL_HOME/probe-cache.json, keyed
// by the file's path, size and mtime and by the libtorch it runs with, so later starts skip the child.
//
// libtorch is found without LD_LIBRARY_PATH: a local build has RUNPATH into the libtorch it was built
// against; for a prebuilt binary the loader first loads libtorch's own libraries with RTLD_GLOBAL, and
// the addon's DT_NEEDED entries (libc10.so, libtorch.so, ...) then resolve to those loaded libraries.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../core/fs.js';
import type { Candidate } from './candidates.js';
import { readJson, safeRealpath } from './candidates.js';
import { residualHome } from './libtorch.js';

/** What the addon's buildInfo() says (the subset the loader checks, plus the rest). */
export interface BuildInfo {
  libtorch: string;
  variant: string;
  napiVersion?: number;
  cudaBuilt?: boolean;
  cudnnAvailable?: boolean;
  /** Built with gloo's headers: the 'gloo' backend of dist works. */
  gloo?: boolean;
  [k: string]: unknown;
}

export interface ProbeResult {
  ok: boolean;
  info?: BuildInfo;
  error?: string;
  cached?: boolean;
}

export type Probe = (c: Candidate) => ProbeResult;

/** The libtorch libraries a binary links against, in dependency order (those present are loaded). */
export const LIBTORCH_LIBS = ['libc10.so', 'libtorch_cpu.so', 'libtorch.so', 'libc10_cuda.so', 'libtorch_cuda.so'];

// glibc's RTLD_NODELETE (not in os.constants.dlopen). process.dlopen() on a library that is not an
// addon throws "Module did not self-register" and then dlclose()s it; without NODELETE a library
// such as libtorch.so is really unloaded again and the addon's DT_NEEDED lookup fails.
const RTLD_NODELETE = 0x1000;

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
  if (r.signal)
    return { ok: false, error: `the child process was killed by ${r.signal} while loading it (a broken or incompatible binary)` };
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
    const kept = Object.fromEntries(
      Object.entries(entries)
        .sort((a, b) => b[1].at - a[1].at)
        .slice(0, 32),
    );
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
