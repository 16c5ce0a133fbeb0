// Random sampling kernels of the residual tfjs backend: Multinomial.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { mulberry32 } from '../../core/random.js';
import { checkSize, defineKernel, fromJs, op, sharedArray } from './util.js';

// Samples on the CPU in JS from a PRNG seeded with tf's seed attr (tfjs passes a random one when the
// caller gives none), so the same seed gives the same samples, as tf promises.
export const multinomialConfig = defineKernel('Multinomial', ({ inputs, attrs, backend }) => {
  const logitsInfo = inputs.logits;
  const numSamples = attrs.numSamples as number;
  const [batch, n] = logitsInfo.shape.length === 1 ? [1, logitsInfo.shape[0]] : [logitsInfo.shape[0], logitsInfo.shape[1]];
  // numSamples is an attribute: the output is bounded before the logits are even read.
  checkSize('Multinomial', [batch, numSamples], 'int32');
  const logits = backend.tensorOf(logitsInfo).to('float32');
  const probs = (attrs.normalized ? logits : op('softmax', logits, -1, undefined)).to('float64');
  const p = probs.toTypedArray() as Float64Array;
  const rand = seededRandom(Number(attrs.seed ?? 0));
  const out = sharedArray('int32', batch * numSamples);
  const cdf = new Float64Array(n);
  for (let b = 0; b < batch; b++) {
    let acc = 0;
    for (let i = 0; i < n; i++) cdf[i] = acc += p[b * n + i];
    for (let s = 0; s < numSamples; s++) {
      const r = rand() * acc;
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cdf[mid] > r) hi = mid;
        else lo = mid + 1;
      }
      out[b * numSamples + s] = lo;
    }
  }
  return fromJs(backend, out, [batch, numSamples], 'int32');
});
/** A deterministic PRNG for a tf seed: the seed hashed to 32 bits, then mulberry32 (lib/data). */
function seededRandom(seed: number): () => number {
  let h = 0x9e3779b9 ^ Math.floor(seed * 1e6);
  const s = String(seed);
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x85ebca6b);
  return mulberry32(h >>> 0 || 1);
}

export const configs: KernelConfig[] = [multinomialConfig];
