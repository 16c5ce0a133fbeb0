// ONNX export of the big registry networks, checked as test/parity/onnx.test.ts checks the small ones
// (residual's side in a child process on the built package, dist/: minutes of libtorch work each on a
// loaded machine):
// the seven torchvision ImageNet networks at 32x32 (resnet18 also at 64x64; 100 classes to keep the
// files small), and the 1000-layer CIFAR networks and WRN-28-10 at 8x8. onnxruntime-node at batch 1
// and 5; then onnx.checker (full_check) and onnxruntime-python over every file in one Python process.
// The files are 45-275 MB each; they are removed as soon as they are checked.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { getModelInfo } from '../../lib/index.js';
import { ParitySuite, findOnnxPython, pythonRequired, tolerance, type ParityRow } from '../support/onnx.js';

const python = await findOnnxPython();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-onnx-large-'));
const suite = new ParitySuite(dir);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const LARGE: [string, number[]][] = [
  ['resnet18', [3, 64, 64]],
  ['resnet34', [3, 32, 32]],
  ['resnet50', [3, 32, 32]],
  ['resnet101', [3, 32, 32]],
  ['resnet152', [3, 32, 32]],
  ['resnext50_32x4d', [3, 32, 32]],
  ['wide_resnet50_2', [3, 32, 32]],
  ['resnet1202', [3, 8, 8]],
  ['plain1202', [3, 8, 8]],
  ['preact1001', [3, 8, 8]],
  ['wrn28_10', [3, 8, 8]],
];

/**
 * Whether float32 logits of this network mean anything: residual's own float32 and float64 logits agree
 * to 1% of their scale. The deep plain networks amplify rounding exponentially (plain1202: float32 and
 * float64 differ by more than the logits themselves), so no two float32 implementations can agree there.
 */
function meaningful(row: ParityRow): boolean {
  return Number.isFinite(row.noise) && Number.isFinite(row.scale) && row.noise <= 0.01 * Math.max(1, row.scale);
}

describe('ONNX export of the big registry networks, run by onnxruntime-node', () => {
  for (const [name, shape] of LARGE) {
    it(`${name} at ${shape.join('x')}: the same logits at batch 1 and 5`, async () => {
      // residual's side (build, calibrate, export, logits) runs in a child process on dist/
      const row = await suite.checkInChild(name, shape, getModelInfo(name).family === 'imagenet' ? 100 : 10);
      if (meaningful(row)) {
        expect(
          row.node,
          `${name}: onnxruntime-node vs residual (logits up to ${row.scale.toFixed(2)}, float32 noise ${row.noise.toExponential(1)})`,
        ).toBeLessThanOrEqual(tolerance(row));
      } else {
        // Only plain1202 is this chaotic; anything else that is would be a finding, not noise.
        expect(name).toBe('plain1202');
      }
    }, 1_200_000);
  }
});

describe('the big ONNX files read by the ONNX project (Python: onnx.checker full_check, onnxruntime)', () => {
  it.runIf(python !== null || pythonRequired)(
    'onnx.checker accepts every file and onnxruntime-python gives the same logits at batch 1 and 5',
    async () => {
      if (!python)
        throw new Error(
          'RESIDUAL_TEST_PYTHON_ONNX=1 but no Python with numpy, onnx and onnxruntime was found: run scripts/ci/setup-python-torch.sh (or set RESIDUAL_TEST_PYTHON)',
        );
      const results = await suite.finishPython(python);
      expect(results.map((r) => path.basename(r.onnx, '.onnx'))).toEqual(LARGE.map(([n]) => n));
      for (const row of suite.rows) {
        if (!meaningful(row)) continue;
        expect(row.python, `${row.model}: onnxruntime-python vs residual`).toBeLessThanOrEqual(tolerance(row));
      }
      console.log(suite.table());
    },
    1_200_000,
  );
  it.runIf(python === null && !pythonRequired)(
    'skipped: no Python with onnx and onnxruntime (set RESIDUAL_TEST_PYTHON or run scripts/ci/setup-python-torch.sh)',
    () => {
      console.warn('onnx-large: no Python with numpy, onnx and onnxruntime; onnx.checker and onnxruntime-python did not run');
      suite.dropPython();
      console.log(suite.table());
    },
  );
});
