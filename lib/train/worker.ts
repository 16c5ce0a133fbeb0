// Training inside a worker_thread, with progress posted to the main thread. The addon is context-aware,
// so the worker loads its own instance; the main thread stays free (servers, UIs) while it trains.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { TrainConfig } from './config.js';
import { Trainer, type Progress } from './trainer.js';

export interface WorkerResult {
  testAcc: number;
  testLoss: number;
  report: { svg: string; png: string };
}

/** Runs `new Trainer(config).fit()` in a worker thread; `onProgress` receives every progress event. */
export function trainInWorker(
  config: Partial<TrainConfig> & { model: string },
  onProgress: (p: Progress) => void = () => {},
  opts: { resume?: boolean } = {},
): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { config, resume: !!opts.resume } });
    let done = false;
    w.on('message', (m: { kind: 'progress'; p: Progress } | { kind: 'result'; r: WorkerResult } | { kind: 'error'; message: string }) => {
      if (m.kind === 'progress') onProgress(m.p);
      else if (m.kind === 'result') {
        done = true;
        resolve(m.r);
      } else {
        done = true;
        reject(new Error(m.message));
      }
    });
    w.on('error', (e) => {
      done = true;
      reject(e);
    });
    w.on('exit', (code) => {
      if (!done) reject(new Error(`the training worker exited with code ${code} before finishing`));
    });
  });
}

if (!isMainThread && parentPort && (workerData as { config?: unknown })?.config) {
  const port = parentPort;
  const { config, resume } = workerData as { config: Partial<TrainConfig> & { model: string }; resume: boolean };
  (async () => {
    const t = new Trainer(config);
    try {
      const r = await t.fit((p) => port.postMessage({ kind: 'progress', p }), { resume });
      port.postMessage({ kind: 'result', r });
    } finally {
      t.dispose();
    }
  })().catch((e: Error) => port.postMessage({ kind: 'error', message: e.message }));
}
