// Smoke test of the benchmark harness (scripts/bench/bench.mjs): in --quick mode on tiny workloads it must
// write well-formed JSON and a markdown section between its markers. No timing is asserted: speed is
// only ever compared in the benchmark's own output, against PyTorch in the same run.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';

const run = promisify(execFile);
const script = path.join(root, 'scripts', 'bench', 'bench.mjs');
// With RESIDUAL_TEST_PYTHON (a Python with torch) the PyTorch side runs too; otherwise residual only.
const python = process.env.RESIDUAL_TEST_PYTHON;
const pyArgs = python ? ['--python', python] : ['--no-python'];

const positive = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0;

describe('bench harness (--quick)', () => {
  it('writes well-formed JSON and a markdown section it regenerates in place', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-test-'));
    try {
      const json = path.join(dir, 'out.json');
      const md = path.join(dir, 'B.md');
      fs.writeFileSync(md, '# Benchmarks\n\n## Other section\n\ntext\n');
      const args = [script, '--quick', '--only', 'ops,resnet20', '--threads', '1', '--json', json, '--write-md', md, ...pyArgs];
      const { stdout } = await run(process.execPath, args, { cwd: root, maxBuffer: 1 << 24 });
      expect(stdout).toMatch(/Ratios residual \/ PyTorch/);
      const out = JSON.parse(fs.readFileSync(json, 'utf8'));
      expect(typeof out.machine.cpu).toBe('string');
      expect(out.machine.physicalCores).toBeGreaterThanOrEqual(1);
      expect(out.versions.libtorch).toMatch(/^\d+\.\d+/);
      expect(out.device).toBe('cpu');
      expect(out.threads).toBe(1);
      const ops = out.workloads.ops.rows;
      expect(ops.map((r: { op: string }) => r.op)).toEqual(['add (1 element)', 'mul (1 element)']);
      for (const r of ops) {
        expect(positive(r.residualNs.median) && r.residualNs.min <= r.residualNs.median && r.residualNs.median <= r.residualNs.max).toBe(
          true,
        );
        if (python) expect(positive(r.pytorchNs.median) && positive(r.ratio)).toBe(true);
        else expect(r.pytorchNs).toBeNull();
      }
      const steps = out.workloads.resnet20.rows;
      expect(steps.map((r: { label: string }) => r.label)).toEqual([
        'resnet20, batch 4, 32x32, fp32',
        'resnet20, batch 4, 32x32, fp32, channels-last',
        'resnet20, batch 4, 32x32, fp32, residual with CPU memory caching',
        'resnet20, batch 4, 32x32: residual with its CPU training defaults (channels-last, CPU memory caching) / PyTorch eager default (contiguous)',
      ]);
      for (const r of steps) {
        expect(r.residualTrialsMs).toHaveLength(1);
        expect(positive(r.residualMs.median) && positive(r.residualImagesPerSec)).toBe(true);
        if (python) expect(positive(r.pytorchMs.median)).toBe(true);
      }
      expect(out.workloads.resnet50).toBeUndefined();

      // The markdown section sits between this machine's markers; a second run replaces it.
      const once = fs.readFileSync(md, 'utf8');
      const begins = (s: string) => s.match(/<!-- bench\.mjs begin [a-z0-9-]+ -->/g) ?? [];
      expect(begins(once)).toHaveLength(1);
      expect(once).toContain('## Other section\n\ntext\n');
      expect(once).toContain('| add (1 element) |');
      await run(process.execPath, [script, '--quick', '--only', 'ops', '--threads', '1', '--write-md', md, ...pyArgs], {
        cwd: root,
        maxBuffer: 1 << 24,
      });
      const twice = fs.readFileSync(md, 'utf8');
      expect(begins(twice)).toHaveLength(1);
      expect(twice).not.toContain('ResNet-20 training step');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an unknown workload, naming it', async () => {
    await expect(run(process.execPath, [script, '--quick', '--only', 'resnet9000', '--no-python'], { cwd: root })).rejects.toThrow(
      /--only: unknown workload 'resnet9000'/,
    );
  });
});
