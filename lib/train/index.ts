// Training: the settings, the run's data and recipe, the run folder, checkpoints and the training state
// they hold, the trainer loop, evaluation, metrics, the report, and training in a worker thread.
export {
  AMP_DTYPES,
  CONFIG_KEYS,
  CONFIG_RANGES,
  CONFIG_SPEC,
  DATASETS,
  DATA_NAMES,
  DEFAULT_CONFIG,
  ON_BAD_FILE,
  OPTIMIZERS,
  SCHEDULES,
  SettingsMessage,
  checkSetting,
  resolveConfig,
  settingsMessageOf,
  validateConfig,
  type ConfigKey,
  type DataName,
  type ScheduleName,
  type Setting,
  type SettingNamer,
  type TrainConfig,
} from './config.js';
export * from './data.js';
export * from './recipe.js';
export * from './run-folder.js';
export {
  MODEL_PREFIX,
  RNG_CPU,
  RNG_CUDA,
  checkRunCheckpoint,
  loadRunWeights,
  loadTrainingState,
  modelWeights,
  readRunCheckpoint,
  saveTrainingState,
  type LiveTraining,
  type RunCheckpointMeta,
  type RunRecord,
} from './state.js';
export * from './trainer.js';
export {
  CHECKPOINT_JSON,
  CHECKPOINT_VERSION,
  CHECKPOINT_WEIGHTS,
  checkCheckpointEnvelope,
  hasCheckpoint,
  isCheckpointTemp,
  loadCheckpoint,
  readCheckpointMeta,
  saveCheckpoint,
  writeJsonAtomic,
  type CheckpointMeta,
  type CrashPoint,
} from './checkpoint.js';
export * from './evaluate.js';
export * from './metrics.js';
export * from './report.js';
export { trainInWorker } from './worker.js';
export * from './graphs.js';
