// Training: the trainer, checkpoints, metrics, report, and training in a worker thread.
export * from './trainer.js';
export * from './checkpoint.js';
export * from './evaluate.js';
export * from './metrics.js';
export * from './report.js';
export { trainInWorker } from './worker.js';
export * from './graphs.js';
