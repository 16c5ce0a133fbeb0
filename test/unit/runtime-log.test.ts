// What libtorch prints on its own: a convolution that considers NNPACK where NNPACK cannot run (some CPUs
// and virtual machines) made libtorch log "Could not initialize NNPACK! Reason: Unsupported hardware." once
// per call. The addon asks once, quietly, at load (native/runtime.cpp); the results are libtorch's.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';

describe('libtorch log lines', () => {
  it('convolutions that consider NNPACK print nothing, and give the per-sample results', () => {
    const lib = path.join(root, 'dist', 'index.js');
    // float64 at batch 16: the case libtorch hands to NNPACK when it is available (oneDNN takes float32)
    const code = `
      const r = require(${JSON.stringify(lib)});
      r.manualSeed(1);
      const x = r.randn([16, 3, 9, 9], { dtype: 'float64' }), w = r.randn([4, 3, 3, 3], { dtype: 'float64' });
      const y = r.nn.functional.conv2d(x, w);
      let worst = 0;
      for (let i = 0; i < 16; i++) {
        const one = r.nn.functional.conv2d(x.narrow(0, i, 1), w);
        worst = Math.max(worst, one.sub(y.narrow(0, i, 1)).abs().max().item());
      }
      console.log(JSON.stringify({ shape: y.shape, worst }));`;
    const res = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).not.toMatch(/NNPACK/);
    const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as { shape: number[]; worst: number };
    expect(out.shape).toEqual([16, 4, 7, 7]);
    expect(out.worst).toBeLessThan(1e-12);
  });
});
