// Shared test helpers.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { Tensor, cuda } from '../../lib/index.js';
import { native } from '../../lib/addon/binding.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixtures = path.join(root, 'test', 'fixtures');

/**
 * The addon has dist's 'gloo' backend (built where gloo's headers were found: apt-get install
 * libgloo-dev). Tests that start a Gloo process group skip without it, saying so; CI installs the
 * headers, and there (CI=true) they must run.
 */
export const glooBuilt = (native.buildInfo() as { gloo?: boolean }).gloo !== false;
export const glooSkipNote = "skipped: this addon was built without gloo's headers (apt-get install libgloo-dev, then rebuild)";

/** CUDA tests run when CUDA is available or RESIDUAL_TEST_CUDA=1 (then they must not skip). */
export const cudaWanted = process.env.RESIDUAL_TEST_CUDA === '1' || cuda.isAvailable();

/** Max |a - b| and a check against atol + rtol * |b|. */
export function expectClose(a: Tensor, b: Tensor, { atol = 1e-5, rtol = 1e-4, what = 'tensor' } = {}): void {
  expect(a.shape, `${what} shape`).toEqual(b.shape);
  const x = a.to('float64').toTypedArray() as Float64Array;
  const y = b.to('float64').toTypedArray() as Float64Array;
  let worst = 0;
  let at = -1;
  for (let i = 0; i < x.length; i++) {
    const err = Math.abs(x[i] - y[i]) - (atol + rtol * Math.abs(y[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  if (at >= 0) throw new Error(`${what}: element ${at} is ${x[at]}, expected ${y[at]} (atol ${atol}, rtol ${rtol})`);
}

export function exists(p: string): boolean {
  return fs.existsSync(p);
}
