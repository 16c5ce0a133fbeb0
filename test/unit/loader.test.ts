// The loader's choices (lib/addon/load.ts): which binary is picked, which is refused and why, and that a
// broken binary is caught in a child process instead of taking the test process down.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Candidate,
  type Libtorch,
  type ProbeResult,
  addonCandidates,
  cachedProbe,
  chooseAddon,
  parseTag,
  probeInChild,
  resolveRuntimeLibtorch,
  tagMatches,
  taggedName,
  unmetRequirements,
  variantsMatch,
} from '../../lib/addon/load.js';
import type { SystemProbe } from '../../lib/addon/system.js';
import { thisSystem } from '../../lib/addon/system.js';
import { root } from '../support/helpers.js';

const built = path.join(root, 'build', 'Release', 'residual.node');
const lt213: Libtorch = { dir: '/lt', lib: '/lt/lib', version: '2.13.0', variant: 'cpu', variantTag: 'cpu', source: 'cache' };
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-loader-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh package root with the given files (relative path -> contents). */
function pkgRoot(files: Record<string, string | Buffer>): string {
  const dir = fs.mkdtempSync(path.join(tmp, 'pkg-'));
  for (const [rel, body] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), body);
  }
  return dir;
}

/** A fake probe that says every binary loads and reports `info` (or the tag in its name). */
function fakeProbe(calls: string[], report?: (c: Candidate) => ProbeResult): (c: Candidate) => ProbeResult {
  return (c) => {
    calls.push(path.basename(c.path));
    if (report) return report(c);
    const t = parseTag(c.path) ?? { libtorch: '2.13.0', variant: 'cpu' };
    return { ok: true, info: { libtorch: t.libtorch, variant: t.variant.startsWith('cu') ? 'cuda' : 'cpu' } };
  };
}

const noPackages = () => null;
const pre = (tag: string) => `prebuilds/linux-x64/residual.napi.libtorch-${tag}.node`;

describe('tags', () => {
  it('parses and writes prebuilt file names', () => {
    expect(parseTag('residual.napi.libtorch-2.13.0.cpu.node')).toEqual({ libtorch: '2.13.0', variant: 'cpu' });
    expect(parseTag('/x/residual.napi.libtorch-2.14.1.cu130.node')).toEqual({ libtorch: '2.14.1', variant: 'cu130' });
    expect(parseTag('residual.node')).toBeNull();
    expect(parseTag('residual.napi.libtorch-2.13.cpu.node')).toBeNull();
    expect(taggedName({ libtorch: '2.13.0', variant: 'cpu' })).toBe('residual.napi.libtorch-2.13.0.cpu.node');
  });
  it('matches versions exactly and variants by family only when one is unspecific', () => {
    expect(variantsMatch('cpu', 'cpu')).toBe(true);
    expect(variantsMatch('cu130', 'cu130')).toBe(true);
    expect(variantsMatch('cuda', 'cu130')).toBe(true);
    expect(variantsMatch('cu128', 'cu130')).toBe(false);
    expect(variantsMatch('cpu', 'cuda')).toBe(false);
    expect(tagMatches({ libtorch: '2.13.0', variant: 'cpu' }, lt213)).toBe(true);
    expect(tagMatches({ libtorch: '2.13.1', variant: 'cpu' }, lt213)).toBe(false);
    expect(tagMatches({ libtorch: '2.13.0', variant: 'cu130' }, lt213)).toBe(false);
    expect(tagMatches({ libtorch: 'unknown', variant: 'cpu' }, lt213)).toBe(true);
  });
});

describe('choosing a binary (fake probe)', () => {
  it('picks a prebuilt whose tag matches, before a local build', () => {
    const r = pkgRoot({ [pre('2.13.0.cpu')]: 'x', 'build/Release/residual.node': 'x' });
    const cands = addonCandidates({ root: r, libtorch: lt213, platform: 'linux', arch: 'x64', env: {}, resolvePackage: noPackages });
    expect(cands.map((c) => c.how)).toEqual(['prebuilt (prebuilds/linux-x64)', 'local build (build/Release)']);
    const calls: string[] = [];
    const sel = chooseAddon({ candidates: cands, probe: fakeProbe(calls) });
    expect(sel.choice?.path).toBe(path.join(r, pre('2.13.0.cpu')));
    expect(sel.choice?.preload).toBe(true);
    expect(calls).toEqual(['residual.napi.libtorch-2.13.0.cpu.node']);
  });

  it('falls back to the local build when there is no prebuilt, and explains when nothing exists', () => {
    const r = pkgRoot({ 'build/Release/residual.node': 'x' });
    const calls: string[] = [];
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt213, env: {}, resolvePackage: noPackages }),
      probe: fakeProbe(calls),
    });
    expect(sel.choice?.how).toBe('local build (build/Release)');
    expect(sel.choice?.preload).toBe(false); // its RUNPATH finds libtorch

    const empty = pkgRoot({});
    const none = chooseAddon({
      candidates: addonCandidates({ root: empty, libtorch: lt213, env: {}, resolvePackage: noPackages }),
      probe: fakeProbe(calls),
    });
    expect(none.choice).toBeNull();
    expect(none.attempts.map((a) => a.outcome)).toEqual(['missing']);
    expect(none.attempts[0].detail).toBe('not found');
  });

  it('refuses a mismatched version or variant tag without loading it', () => {
    const r = pkgRoot({ [pre('2.14.1.cpu')]: 'x', [pre('2.13.0.cu130')]: 'x' });
    const calls: string[] = [];
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt213, env: {}, platform: 'linux', arch: 'x64', resolvePackage: noPackages }),
      probe: fakeProbe(calls),
    });
    expect(sel.choice).toBeNull();
    expect(calls).toEqual([]); // never loaded, not even in a child
    const refused = sel.attempts.filter((a) => a.outcome === 'mismatch').map((a) => a.detail);
    expect(refused).toHaveLength(2);
    expect(refused.some((d) => d.includes('built for libtorch 2.14.1 (cpu)') && d.includes('libtorch in use is 2.13.0 (cpu)'))).toBe(true);
    expect(refused.some((d) => d.includes('built for libtorch 2.13.0 (cu130)'))).toBe(true);
  });

  it('refuses a binary whose own build info contradicts its file name', () => {
    const r = pkgRoot({ [pre('2.13.0.cpu')]: 'x' });
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt213, env: {}, platform: 'linux', arch: 'x64', resolvePackage: noPackages }),
      probe: fakeProbe([], () => ({ ok: true, info: { libtorch: '2.12.0', variant: 'cpu' } })),
    });
    expect(sel.choice).toBeNull();
    expect(sel.attempts[0].detail).toContain('reports being built for libtorch 2.12.0 (cpu)');
  });

  it('skips a binary that fails to load and takes the next one', () => {
    const r = pkgRoot({ [pre('2.13.0.cpu')]: 'x', 'build/Release/residual.node': 'x' });
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt213, env: {}, platform: 'linux', arch: 'x64', resolvePackage: noPackages }),
      probe: (c) =>
        c.how.startsWith('prebuilt')
          ? { ok: false, error: 'invalid ELF header' }
          : { ok: true, info: { libtorch: '2.13.0', variant: 'cpu' } },
    });
    expect(sel.choice?.how).toBe('local build (build/Release)');
    expect(sel.attempts[0]).toMatchObject({ outcome: 'failed', detail: 'does not load (tried in a child process): invalid ELF header' });
  });

  it('orders RESIDUAL_ADDON, the wanted variant package, other variant packages, prebuilds, local build', () => {
    const r = pkgRoot({
      'nm/cpu/residual.napi.libtorch-2.13.0.cpu.node': 'x',
      'nm/cu130/residual.napi.libtorch-2.14.1.cu130.node': 'x',
      [pre('2.13.0.cpu')]: 'x',
      'mine.node': 'x',
    });
    const pkgs: Record<string, string> = {
      '@residual/linux-x64-cpu': path.join(r, 'nm/cpu'),
      '@residual/linux-x64-cu130': path.join(r, 'nm/cu130'),
    };
    const cu130: Libtorch = { ...lt213, version: '2.14.1', variant: 'cuda', variantTag: 'cu130', cuda: '13.0' };
    const cands = addonCandidates({
      root: r,
      libtorch: cu130,
      env: { RESIDUAL_ADDON: path.join(r, 'mine.node') },
      platform: 'linux',
      arch: 'x64',
      resolvePackage: (n) => pkgs[n] ?? null,
    });
    expect(cands.map((c) => c.how)).toEqual([
      'RESIDUAL_ADDON',
      'optional package @residual/linux-x64-cu130',
      'optional package @residual/linux-x64-cpu',
      'prebuilt (prebuilds/linux-x64)',
      'local build (build/Release)',
    ]);
    // On a CPU libtorch the cpu package comes first and the cu130 one is refused with a reason.
    const onCpu = addonCandidates({
      root: r,
      libtorch: lt213,
      env: {},
      platform: 'linux',
      arch: 'x64',
      resolvePackage: (n) => pkgs[n] ?? null,
    });
    const sel = chooseAddon({
      candidates: onCpu.filter((c) => !c.how.startsWith('optional package @residual/linux-x64-cpu')),
      probe: fakeProbe([]),
    });
    expect(sel.attempts[0]).toMatchObject({ outcome: 'mismatch' });
    expect(sel.attempts[0].detail).toContain('built for libtorch 2.14.1 (cu130)');
    expect(sel.choice?.how).toBe('prebuilt (prebuilds/linux-x64)');
  });

  it('makes a local build use an explicitly named libtorch (and refuses it when the tags differ)', () => {
    const r = pkgRoot({
      'build/Release/residual.node': 'x',
      'build/Release/residual.json': JSON.stringify({ libtorch: '2.13.0', variant: 'cpu', libtorchDir: '/gone', source: 'project' }),
    });
    const explicit: Libtorch = { ...lt213, version: '2.14.1', source: 'LIBTORCH' };
    const [c] = addonCandidates({ root: r, libtorch: explicit, env: {}, resolvePackage: noPackages });
    expect(c).toMatchObject({ preload: true, libtorch: explicit, tag: { libtorch: '2.13.0', variant: 'cpu' } });
    const sel = chooseAddon({ candidates: [c], probe: fakeProbe([]) });
    expect(sel.choice).toBeNull();
    expect(sel.attempts[0].detail).toContain('libtorch in use is 2.14.1 (cpu)');
  });
});

describe("a prebuilt package's system floor (glibc, libstdc++)", () => {
  // A system as old as Debian 11: glibc 2.31, GCC 10's libstdc++ (GLIBCXX_3.4.28).
  const old: SystemProbe = {
    platform: 'linux',
    hasGlibc: (v) => ['2.28', '2.29', '2.30', '2.31'].includes(v) || Number(v.split('.')[1]) <= 31,
    hasGlibcxx: (v) => Number(v.split('.')[2]) <= 28,
    glibcVersion: () => '2.31',
    glibcxxVersion: () => '3.4.28',
  };
  const musl: SystemProbe = {
    platform: 'linux',
    hasGlibc: () => null,
    hasGlibcxx: () => null,
    glibcVersion: () => null,
    glibcxxVersion: () => null,
  };
  const floor = { glibc: '2.33', glibcxx: '3.4.30' };

  it('refuses the binary before loading it, saying what the system lacks', () => {
    const r = pkgRoot({
      'nm/cpu/residual.napi.libtorch-2.13.0.cpu.node': 'x',
      'nm/cpu/package.json': JSON.stringify({
        name: '@residual/linux-x64-cpu',
        residual: { libtorch: '2.13.0', variant: 'cpu', ...floor },
      }),
      'build/Release/residual.node': 'x',
    });
    const cands = addonCandidates({
      root: r,
      libtorch: lt213,
      env: {},
      platform: 'linux',
      arch: 'x64',
      resolvePackage: (n) => (n === '@residual/linux-x64-cpu' ? path.join(r, 'nm/cpu') : null),
    });
    expect(cands[0].requires).toEqual(floor);
    const calls: string[] = [];
    const sel = chooseAddon({ candidates: cands, probe: fakeProbe(calls), system: old });
    expect(sel.attempts[0]).toMatchObject({ outcome: 'unsupported' });
    expect(sel.attempts[0].detail).toBe(
      "refused: this prebuilt binary needs glibc 2.33 or newer (this system has glibc 2.31) and libstdc++ with GLIBCXX_3.4.30 (GCC 12's or newer; this system's has GLIBCXX_3.4.28)",
    );
    expect(calls).toEqual(['residual.node']); // the prebuilt one was never loaded; the local build was
    expect(sel.choice?.how).toBe('local build (build/Release)');
  });

  it('accepts it where the floor is met, and cannot be told on musl without saying so', () => {
    const now: SystemProbe = { ...old, hasGlibc: () => true, hasGlibcxx: () => true };
    expect(unmetRequirements(floor, now)).toBeNull();
    expect(unmetRequirements(null, old)).toBeNull();
    expect(unmetRequirements(floor, musl)).toMatch(/not glibc: musl, e\.g\. Alpine, is not supported by prebuilt binaries/);
    // This machine runs the binaries it builds.
    expect(unmetRequirements({ glibc: '2.17', glibcxx: '3.4.19' }, thisSystem)).toBeNull();
    expect(unmetRequirements({ glibc: '2.99' }, thisSystem)).toMatch(/needs glibc 2\.99 or newer \(this system has glibc \d+\.\d+\)/);
  });
});

// The rest loads real files in child processes.
describe('probing in a child process', () => {
  const lt = fs.existsSync(built) ? resolveRuntimeLibtorch() : null;
  const real = lt ? it : it.skip;

  real('loads the real addon as a tagged prebuilt, with libtorch preloaded', () => {
    const r = pkgRoot({ [pre(`${lt!.version}.${lt!.variantTag}`)]: fs.readFileSync(built) });
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt, env: {}, resolvePackage: noPackages }),
      probe: probeInChild,
    });
    expect(sel.choice?.how).toBe(`prebuilt (prebuilds/${process.platform}-${process.arch})`);
    expect(sel.choice?.info.libtorch).toBe(lt!.version);
    expect(sel.choice?.info.napiVersion).toBe(8);
  });

  real('survives a truncated binary, random bytes and a non-addon library, then picks the good one', () => {
    const good = fs.readFileSync(built);
    const tag = `${lt!.version}.${lt!.variantTag}`;
    const r = pkgRoot({
      [`prebuilds/linux-x64/residual.1truncated.libtorch-${tag}.node`]: good.subarray(0, 4096),
      [`prebuilds/linux-x64/residual.2random.libtorch-${tag}.node`]: Buffer.from(
        Array.from({ length: 20000 }, (_, i) => (i * 7919 + 13) & 255),
      ),
      [`prebuilds/linux-x64/residual.3notaddon.libtorch-${tag}.node`]: fs.readFileSync(path.join(lt!.lib, 'libc10.so')),
      [`prebuilds/linux-x64/residual.4good.libtorch-${tag}.node`]: good,
    });
    const sel = chooseAddon({
      candidates: addonCandidates({ root: r, libtorch: lt, env: {}, platform: 'linux', arch: 'x64', resolvePackage: noPackages }),
      probe: probeInChild,
    });
    expect(sel.attempts.map((a) => a.outcome)).toEqual(['failed', 'failed', 'failed', 'chosen']);
    // A truncated ELF typically kills the loading process (SIGBUS reading past the end of the mapping).
    expect(sel.attempts[0].detail).toMatch(/killed by SIG|too short|ELF/i);
    expect(sel.attempts[1].detail).toMatch(/invalid ELF header/);
    // A second copy of libc10 next to the preloaded one aborts in its static initializers.
    expect(sel.attempts[2].detail).toMatch(/killed by SIGABRT|did not self-register/);
    expect(sel.choice?.path).toContain('residual.4good');
  });

  it('reports a binary that crashes while loading, and one that hangs', () => {
    const cc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;
    const dir = fs.mkdtempSync(path.join(tmp, 'crash-'));
    if (cc) {
      // A shared library whose constructor aborts, as a badly mismatched binary can.
      fs.writeFileSync(
        path.join(dir, 'abort.c'),
        '#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n',
      );
      const r = spawnSync('cc', ['-shared', '-fPIC', '-o', path.join(dir, 'abort.node'), path.join(dir, 'abort.c')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const res = probeInChild({ path: path.join(dir, 'abort.node'), how: 'test', tag: null, libtorch: null, preload: false });
      expect(res.ok).toBe(false);
      expect(res.error).toContain('killed by SIGABRT');
    }
    fs.writeFileSync(path.join(dir, 'slow.node'), 'x');
    const res = probeInChild({ path: path.join(dir, 'slow.node'), how: 'test', tag: null, libtorch: null, preload: false }, 1);
    expect(res.ok).toBe(false);
    expect(res.error).toMatch(/did not finish within 0.001 s/);
  });

  real('caches a successful probe per file, size and mtime', () => {
    const home = fs.mkdtempSync(path.join(tmp, 'home-'));
    const old = process.env.RESIDUAL_HOME;
    process.env.RESIDUAL_HOME = home;
    try {
      const file = path.join(home, 'copy.node');
      fs.copyFileSync(built, file);
      const c: Candidate = { path: file, how: 'test', tag: null, libtorch: lt, preload: true };
      expect(cachedProbe(c)).toMatchObject({ ok: true });
      expect(cachedProbe(c)).toMatchObject({ ok: true, cached: true });
      expect(Object.keys(JSON.parse(fs.readFileSync(path.join(home, 'probe-cache.json'), 'utf8')).entries)).toHaveLength(1);
      fs.utimesSync(file, new Date(), new Date(Date.now() + 5000)); // a rebuilt binary is probed again
      expect(cachedProbe(c).cached).toBeUndefined();
      // Failures are not cached: a fixed binary is picked up at once.
      const bad = path.join(home, 'bad.node');
      fs.writeFileSync(bad, 'not a binary');
      expect(cachedProbe({ ...c, path: bad }).ok).toBe(false);
      expect(cachedProbe({ ...c, path: bad }).cached).toBeUndefined();
    } finally {
      if (old === undefined) delete process.env.RESIDUAL_HOME;
      else process.env.RESIDUAL_HOME = old;
    }
  });
});
