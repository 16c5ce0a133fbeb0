// The release's pieces that decide what users get (scripts/release/): the ELF reading behind a platform
// package's glibc/GLIBCXX floor (checked against binutils' readelf on real files), the RUNPATH rewrite,
// the floor as the loader reads it, and residual's published manifest (optionalDependencies pinned to
// the exact version, only the published variants). The whole flow, through a real registry, is
// scripts/release/registry-test.sh (CI).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRequirements } from '../../lib/addon/candidates.js';
import { thisSystem, unmetRequirements } from '../../lib/addon/system.js';
// @ts-expect-error: a plain .mjs module (no type declarations)
import * as elf from '../../scripts/release/elf.mjs';
// @ts-expect-error: a plain .mjs module (no type declarations)
import { parseArgs, publishedManifest } from '../../scripts/release/release.mjs';
import { root } from '../support/helpers.js';

const built = path.join(root, 'build', 'Release', 'residual.node');
const hasReadelf = spawnSync('readelf', ['--version']).status === 0;
const hasStrip = spawnSync('strip', ['--version']).status === 0;
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-release-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** readelf -V's "Version needs" as {file: [names]}, in file order. */
function readelfNeeds(file: string): Record<string, string[]> {
  const r = spawnSync('readelf', ['-V', '--wide', file], { encoding: 'utf8', maxBuffer: 1 << 28 });
  expect(r.status).toBe(0);
  const text = r.stdout.slice(r.stdout.indexOf('.gnu.version_r'));
  const out: Record<string, string[]> = {};
  let cur: string[] | null = null;
  for (const line of text.split('\n')) {
    const f = /File: (\S+)\s+Cnt:/.exec(line);
    if (f) out[f[1]] = cur = [];
    const n = /Name: (\S+)\s+Flags:/.exec(line);
    if (n && cur) cur.push(n[1]);
  }
  return out;
}

function readelfRunpath(file: string): string | null {
  const r = spawnSync('readelf', ['-d', file], { encoding: 'utf8' });
  return /\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]/.exec(r.stdout)?.[1] ?? null;
}

describe('ELF reading (scripts/release/elf.mjs) agrees with readelf', () => {
  const files = () =>
    [process.execPath, built, fs.realpathSync('/proc/self/exe')]
      .concat(['/usr/lib/x86_64-linux-gnu/libpng16.so.16', '/usr/lib/x86_64-linux-gnu/libjpeg.so.62'].filter((f) => fs.existsSync(f)))
      .filter((f, i, a) => fs.existsSync(f) && a.indexOf(f) === i);

  it.skipIf(!hasReadelf)('version needs of node, the addon and the image libraries, name for name', () => {
    for (const f of files()) {
      const ours = elf.versionNeeds(fs.readFileSync(f));
      expect(ours, f).toEqual(readelfNeeds(f));
      expect(Object.keys(ours).length, f).toBeGreaterThan(0);
    }
  });

  it('the floor is the highest GLIBC_/GLIBCXX_ version, compared number by number', () => {
    const needs = {
      'libc.so.6': ['GLIBC_2.2.5', 'GLIBC_2.4', 'GLIBC_2.33', 'GLIBC_2.3.4'],
      'libm.so.6': ['GLIBC_2.29'],
      'libstdc++.so.6': ['GLIBCXX_3.4', 'GLIBCXX_3.4.9', 'GLIBCXX_3.4.30', 'CXXABI_1.3.13', 'GLIBCXX_3.4.21'],
      'libgcc_s.so.1': ['GCC_3.0', 'GCC_12.0.0'],
    };
    expect(elf.systemFloor(needs)).toEqual({ glibc: '2.33', glibcxx: '3.4.30' });
    expect(elf.systemFloor({ 'libc.so.6': ['GLIBC_2.17'] }, { 'libc.so.6': ['GLIBC_2.28'] }, {})).toEqual({ glibc: '2.28' });
    expect(elf.systemFloor({ 'libz.so.1': ['ZLIB_1.2.9'] })).toEqual({});
  });

  it.skipIf(!fs.existsSync(built))("the addon's floor is what the loader reads, and this machine (which built it) meets it", () => {
    const floor = elf.systemFloor(elf.versionNeeds(fs.readFileSync(built)));
    expect(floor.glibc).toMatch(/^2\.\d+$/);
    expect(floor.glibcxx).toMatch(/^3\.4\.\d+$/);
    const dir = fs.mkdtempSync(path.join(tmp, 'pkg-'));
    fs.writeFileSync(
      path.join(dir, 'package.json'),
      JSON.stringify({ name: '@residual/linux-x64-cpu', residual: { libtorch: '2.13.0', variant: 'cpu', napiVersion: 8, ...floor } }),
    );
    expect(packageRequirements(dir)).toEqual(floor);
    expect(unmetRequirements(packageRequirements(dir), thisSystem)).toBeNull();
  });

  it.skipIf(!fs.existsSync(built) || !hasReadelf)(
    'RUNPATH is rewritten in place to $ORIGIN: same size, readelf reads it, nothing else moves',
    () => {
      const buf = fs.readFileSync(built);
      const before = elf.dynamicInfo(buf);
      expect(before.runpath).toBe(readelfRunpath(built));
      const copy = Buffer.from(buf);
      expect(elf.rewriteRunpath(copy, '$ORIGIN')).toBe(before.runpath);
      const out = path.join(tmp, 'rewritten.node');
      fs.writeFileSync(out, copy);
      expect(copy.length).toBe(buf.length);
      expect(readelfRunpath(out)).toBe('$ORIGIN');
      expect(elf.dynamicInfo(copy)).toEqual({ needed: before.needed, runpath: '$ORIGIN' });
      expect(elf.versionNeeds(copy)).toEqual(elf.versionNeeds(buf));
      // Only the RUNPATH bytes changed.
      let changed = 0;
      for (let i = 0; i < buf.length; i++) if (buf[i] !== copy[i]) changed++;
      expect(changed).toBeGreaterThan(0);
      expect(changed).toBeLessThanOrEqual(before.runpath!.length);
      expect(() => elf.rewriteRunpath(Buffer.from(buf), 'x'.repeat(before.runpath!.length + 1))).toThrow(/longer than the original/);
    },
  );

  it.skipIf(!fs.existsSync(built) || !hasStrip)('strip --strip-unneeded removes the symbol table and keeps the version needs', () => {
    const out = path.join(tmp, 'stripped.node');
    fs.copyFileSync(built, out);
    expect(elf.hasSymtab(fs.readFileSync(out))).toBe(true);
    expect(spawnSync('strip', ['--strip-unneeded', out]).status).toBe(0);
    const s = fs.readFileSync(out);
    expect(elf.hasSymtab(s)).toBe(false);
    expect(s.length).toBeLessThan(fs.statSync(built).size);
    expect(elf.versionNeeds(s)).toEqual(elf.versionNeeds(fs.readFileSync(built)));
  });

  it('refuses what is not a 64-bit little-endian ELF file', () => {
    expect(() => elf.versionNeeds(Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80)))).toThrow(/not an ELF file/);
    const big = Buffer.alloc(64);
    big.writeUInt32BE(0x7f454c46, 0);
    big[4] = 1;
    big[5] = 1;
    expect(() => elf.versionNeeds(big)).toThrow(/only 64-bit little-endian/);
    const trunc = Buffer.alloc(4096);
    const fd = fs.openSync(process.execPath, 'r');
    fs.readSync(fd, trunc, 0, trunc.length, 0);
    fs.closeSync(fd);
    expect(() => elf.versionNeeds(trunc)).toThrow(/beyond the end of the file/);
  });
});

describe("residual's published manifest (scripts/release/release.mjs)", () => {
  const pkg = {
    name: 'residual',
    version: '1.2.3',
    dependencies: { pngjs: '^7.0.0' },
    scripts: { install: 'node scripts/install/install.mjs' },
  };

  it('pins exactly the published platform packages to the exact version, sorted, and changes nothing else', () => {
    const m = publishedManifest(pkg, ['@residual/linux-x64-cu130', '@residual/linux-x64-cpu']);
    expect(m.optionalDependencies).toEqual({ '@residual/linux-x64-cpu': '1.2.3', '@residual/linux-x64-cu130': '1.2.3' });
    expect(Object.keys(m.optionalDependencies)).toEqual(['@residual/linux-x64-cpu', '@residual/linux-x64-cu130']);
    const { optionalDependencies, ...rest } = m;
    expect(rest).toEqual(pkg);
    expect(pkg).not.toHaveProperty('optionalDependencies');
  });

  it('lists only what is published: a variant that is not is absent, and the repository list is replaced', () => {
    const withOld = { ...pkg, optionalDependencies: { '@residual/linux-x64-cu130': '1.2.3', '@residual/linux-x64-cpu': '^1.0.0' } };
    expect(publishedManifest(withOld, ['@residual/linux-x64-cpu']).optionalDependencies).toEqual({ '@residual/linux-x64-cpu': '1.2.3' });
    expect(publishedManifest(withOld, [])).not.toHaveProperty('optionalDependencies');
  });

  it('needs an explicit http(s) registry', () => {
    expect(() => parseArgs([])).toThrow(/--registry URL is required/);
    expect(() => parseArgs(['--registry'])).toThrow(/--registry needs a value/);
    expect(() => parseArgs(['--registry', 'ftp://x'])).toThrow(/http or https/);
    expect(() => parseArgs(['--registry', 'not a url'])).toThrow(/is not a URL/);
    expect(() => parseArgs(['--registry', 'http://127.0.0.1:4873', '--frobnicate'])).toThrow(/unknown argument --frobnicate/);
    const o = parseArgs(['--registry', 'http://127.0.0.1:4873', '--dry-run', '--variants', 'cpu']);
    expect(o).toMatchObject({ registry: 'http://127.0.0.1:4873/', dryRun: true, variants: ['cpu'] });
  });
});
