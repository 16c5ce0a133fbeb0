// Training: the settings, the run's data and recipe, the run folder, checkpoints and the training state
// they hold, the trainer loop, evaluation, metrics, the report, and training in a worker thread.
export * from './config.js';
export * from './data.js';
export * from './recipe.js';
export * from './run-folder.js';
export * from './state.js';
export * from './trainer.js';
export * from './checkpoint.js';
export * from './evaluate.js';
export * from './metrics.js';
export * from './report.js';
export { trainInWorker } from './worker.js';
export * from './graphs.js';
