// Finds, checks and loads the native addon binary. The pieces:
//   tags.ts        what a binary was built against, and whether it fits the libtorch in use
//   candidates.ts  where binaries may be, in order (RESIDUAL_ADDON, optional packages, prebuilds/, build/)
//   system.ts      whether this system meets a prebuilt binary's glibc/libstdc++ floor
//   probe.ts       preloading libtorch, the child-process trial load and its cache
//   libtorch.ts    which libtorch to run with (fetch.ts fills the cache; never loaded from here)
// This file chooses among the candidates and loads the winner, or explains why none fits and names
// the command that fixes it.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { type Candidate, addonCandidates } from './candidates.js';
import { type Libtorch, findLibtorch, packageRoot, residualHome } from './libtorch.js';
import { type BuildInfo, type Probe, cachedProbe, forgetProbe, preloadLibtorch } from './probe.js';
import { type SystemProbe, thisSystem, unmetRequirements } from './system.js';
import { describeTag, tagMatches, variantsMatch } from './tags.js';

export * from './tags.js';
export * from './candidates.js';
export * from './probe.js';
export { type Libtorch, packageRoot, residualHome } from './libtorch.js';
export { unmetRequirements, type SystemRequirements } from './system.js';

const require = createRequire(import.meta.url);

export interface Attempt {
  candidate: Candidate;
  outcome: 'chosen' | 'missing' | 'mismatch' | 'unsupported' | 'failed';
  detail: string;
}

export interface Selection {
  choice: (Candidate & { info: BuildInfo }) | null;
  attempts: Attempt[];
}

/** What to add to a dlopen error that names a missing glibc/libstdc++ symbol version. */
function versionHint(error: string): string {
  const m = /version `(GLIBC(?:XX)?)_([\d.]+)' not found/.exec(error);
  if (!m) return '';
  return ` (this system's ${m[1] === 'GLIBC' ? 'glibc' : 'libstdc++'} is older than the binary needs: ${m[1]}_${m[2]})`;
}

/**
 * Picks the first candidate that exists, is tagged for the libtorch it will run with, whose system
 * requirements this machine meets, loads in a child process (`probe`) and reports (buildInfo) the
 * libtorch it expects. Never throws; every rejected candidate is explained in `attempts`.
 */
export function chooseAddon({
  candidates,
  probe,
  system = thisSystem,
}: {
  candidates: Candidate[];
  probe: Probe;
  system?: SystemProbe;
}): Selection {
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
    if (!c.libtorch && !c.how.startsWith('local build') && c.how !== 'RESIDUAL_ADDON') {
      // A prebuilt binary loads libtorch from the resolved folder: there is none yet.
      attempts.push({ candidate: c, outcome: 'failed', detail: 'not tried: a prebuilt binary needs libtorch, and none was found' });
      continue;
    }
    const unmet = unmetRequirements(c.requires, system);
    if (unmet) {
      attempts.push({ candidate: c, outcome: 'unsupported', detail: `refused: this prebuilt binary ${unmet}` });
      continue;
    }
    const r = probe(c);
    if (!r.ok || !r.info) {
      const err = r.error ?? 'no build info';
      attempts.push({ candidate: c, outcome: 'failed', detail: `does not load (tried in a child process): ${err}${versionHint(err)}` });
      continue;
    }
    const built = {
      libtorch: r.info.libtorch,
      variant: c.tag && variantsMatch(c.tag.variant, r.info.variant) ? c.tag.variant : r.info.variant,
    };
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

/**
 * The libtorch this process should run with (lib/addon/libtorch.ts; never fetches). Throws when an
 * environment variable names something unusable (that is the user's explicit wish).
 */
export function resolveRuntimeLibtorch(): Libtorch | null {
  return findLibtorch({ quiet: true });
}

export interface AddonChoice {
  path: string;
  how: string;
  tag: Candidate['tag'];
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

export function isCheckout(root = packageRoot): boolean {
  return fs.existsSync(path.join(root, 'lib')) && fs.existsSync(path.join(root, 'tsconfig.json'));
}

/**
 * The command that does what the install step does (resolve or fetch libtorch, pick or build the
 * addon), as it works from where the user stands: `npx residual setup` for an installed package
 * (also where npm or pnpm skipped install scripts), the script itself in a git checkout.
 */
export function setupCommand(root = packageRoot): string {
  if (isCheckout(root)) return `cd ${root} && node bin/residual.js setup`;
  return 'npx residual setup';
}

/** The command that builds the addon from source for this checkout or installed package. */
export function buildFromSourceCommand(root = packageRoot): string {
  return isCheckout(root) ? `cd ${root} && node scripts/install/build.mjs --native-only` : `${setupCommand(root)} --build-from-source`;
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
  const setup = setupCommand();
  const tried = lastAttempts.filter((a) => a.outcome !== 'missing');
  const ltLine = lt
    ? `libtorch in use: ${lt.version} (${lt.variantTag}) from ${lt.source}: ${lt.dir}`
    : `libtorch: none found (not set up yet: install scripts did not run, or ${residualHome()} was cleared)`;
  throw new Error(
    `residual: no usable native addon.\n  ${ltLine}\n` +
      (tried.length ? `  Tried:\n  ${formatAttempts(tried)}\n` : `  No binary is installed or built yet.\n`) +
      `Set it up (fetches libtorch, picks the prebuilt binary or builds one) with:\n  ${setup}\n` +
      `then check with: ${isCheckout() ? `cd ${packageRoot} && node bin/residual.js doctor` : 'npx residual doctor'}\n` +
      `Environment: LIBTORCH, LIBTORCH_USE_PYTORCH=1, RESIDUAL_VARIANT=cpu|cu130, RESIDUAL_HOME, RESIDUAL_LIBTORCH_MIRROR, RESIDUAL_ADDON (see README).`,
  );
}
