// tfjs-core's own backend test suite on `residual` and on tfjs-backend-cpu (scripts/ci/tfjs-core-tests.mjs,
// one child process per backend): every test that passes on cpu passes on residual, apart from the
// entries of scripts/ci/tfjs-core-exclude.mjs (each with its reason).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { exclude } from '../../scripts/ci/tfjs-core-exclude.mjs';

const root = path.resolve(__dirname, '..', '..');

describe("tfjs-core's backend test suite", () => {
  it('passes on residual wherever it passes on the cpu backend, outside the exclude list', async () => {
    // The suite runs the compiled backend (dist/tfjs): refuse to test an older build than the sources.
    for (const f of fs.readdirSync(path.join(root, 'lib', 'tfjs'), { recursive: true }) as string[]) {
      if (!f.endsWith('.ts')) continue;
      const src = path.join(root, 'lib', 'tfjs', f);
      const out = path.join(root, 'dist', 'tfjs', f.replace(/\.ts$/, '.js'));
      expect(fs.existsSync(out), `${out} is missing: build with node scripts/install/build.mjs --ts-only`).toBe(true);
      expect(
        fs.statSync(out).mtimeMs,
        `dist/tfjs/${f.replace(/\.ts$/, '.js')} is older than lib/tfjs/${f}: build with node scripts/install/build.mjs --ts-only`,
      ).toBeGreaterThanOrEqual(fs.statSync(src).mtimeMs);
    }
    const json = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-suite-')), 'result.json');
    // Asynchronously: a synchronous spawn would block this worker's event loop for the whole suite, and
    // vitest's worker RPC gives up after 60 s of that (the suite takes 20-60 s on 2 cores).
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const c = spawn(process.execPath, [path.join(root, 'scripts', 'ci', 'tfjs-core-tests.mjs'), '--json', json], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const kill = setTimeout(() => c.kill('SIGKILL'), 280_000);
      c.on('error', reject);
      c.on('close', (status) => {
        clearTimeout(kill);
        resolve({ status, stdout, stderr });
      });
    });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out.slice(-4000)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const last = lines[lines.length - 1];
    const m = /^(\d+) passed, (\d+) failed$/.exec(last);
    expect(m, `last line: ${last}`).not.toBeNull();
    const res = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(Number(m![1])).toBe(res.residual.passed);
    expect(Number(m![2])).toBe(res.residual.failed.length);
    // Both children ran the same suite (a few thousand specs), residual minus what the list excludes.
    expect(res.cpu.passed).toBeGreaterThan(3000);
    // (The suite defines a few specs for the cpu backend alone: switching between two cpu backends.)
    for (const n of res.notRun) expect(n).toMatch(/cpu/);
    expect(res.residual.passed + res.residual.failed.length + res.residual.skipped + res.notRun.length).toBe(
      res.cpu.passed + res.cpu.failed + res.cpu.skipped,
    );
    // The target: nothing that passes on cpu fails on residual outside the list.
    expect(res.regressions.map((f: { name: string; message: string }) => `${f.name}: ${f.message}`)).toEqual([]);
    expect(res.residual.passed).toBe(res.cpu.passed - res.excludedCpuPassing - res.notRun.length);
    // Every entry has a reason and still matches a test.
    for (const e of exclude) expect(e.reason.length, e.test).toBeGreaterThan(20);
    expect(res.unusedExcludes).toEqual([]);
  });
});
