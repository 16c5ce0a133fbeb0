// The addon is context-aware: it loads in worker_threads, several at once, each with its own counters.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';

const script = `
const { parentPort, workerData } = require('node:worker_threads');
const n = require(${JSON.stringify(path.join(root, 'build', 'Release', 'residual.node'))});
const a = n.full([64, 64], workerData, 6, 'cpu');
let acc = a;
for (let i = 0; i < 50; i++) { const b = n.matmul(acc, a); if (acc !== a) n.dispose(acc); acc = n.div(b, [64 * workerData]); n.dispose(b); }
const v = n.item(n.sum(acc));
let err = '';
try { n.matmul(a, n.ones([3], 6, 'cpu')); } catch (e) { err = e.message; }
parentPort.postMessage({ v, tensors: n.memory().tensors, err });
`;

describe('worker threads', () => {
  it('loads in several workers at once, each computing independently', async () => {
    const run = (k: number) =>
      new Promise<{ v: number; tensors: number; err: string }>((resolve, reject) => {
        const w = new Worker(script, { eval: true, workerData: k });
        w.once('message', resolve);
        w.once('error', reject);
      });
    const res = await Promise.all([1, 2, 3, 4].map(run));
    res.forEach((r, i) => {
      const k = i + 1;
      // a = k everywhere; each step: acc @ a / (64k) keeps acc = k: the sum is 64*64*k
      expect(r.v).toBeCloseTo(64 * 64 * k, 0);
      expect(r.err).toMatch(/^matmul: /);
      expect(r.tensors).toBeLessThan(10);
    });
  });
});
