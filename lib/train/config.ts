// The training configuration, written once: every setting's name, type, default and allowed values
// (CONFIG_SPEC), the dataset and schedule names, and the validation of a whole config. The Trainer
// validates its config here, a checkpoint's saved config is checked against the same list, the CLI
// builds `residual train`'s flags from it (lib/cli/main.ts adds the help text, lib/cli/flags.ts maps
// keys to flags), and explain builds its runs with it.
//
// Messages name config keys (`batchSize must be an integer in [1, 65536], got 0`), never CLI flags. An
// error about settings carries its message as a SettingsMessage, whose parts refer to settings by key;
// the CLI renders the same message with its flag names (`--batch-size must be ...`).
import { describeRange, inRange, type NumberRange } from '../core/range.js';
import { getModelInfo } from '../models/registry.js';
import type { Device } from '../tensor/tensor.js';

// ---- names -------------------------------------------------------------------------------------

/**
 * The datasets `data` may name. Streamed ones (lib/data/stream.ts) are read image by image by the
 * loaders; the others are loaded into memory (lib/train/data.ts). `path` says whether `dataPath` is
 * needed, and what it must hold.
 */
export const DATASETS = {
  'fashion-mnist': { streamed: false, path: 'optional', holds: 'the Fashion-MNIST IDX files' },
  cifar10: { streamed: false, path: 'required', holds: 'the cifar-10-batches-bin folder' },
  cifar100: { streamed: false, path: 'required', holds: 'the cifar-100-binary folder' },
  synthetic: { streamed: false, path: 'unused', holds: '' },
  folder: { streamed: false, path: 'required', holds: 'train/ and test/ (or val/) subfolders of class folders' },
  imagefolder: { streamed: true, path: 'required', holds: 'DIR/train and DIR/val (or DIR/test) class folders' },
  webdataset: { streamed: true, path: 'required', holds: "the training shards, e.g. 'shards/train-{0000..0127}.tar'" },
} as const satisfies Record<string, { streamed: boolean; path: 'optional' | 'required' | 'unused'; holds: string }>;

export type DataName = keyof typeof DATASETS;
export const DATA_NAMES = Object.keys(DATASETS) as DataName[];

/** Is `name` a dataset that is streamed from its files (imagefolder, webdataset)? */
export function isStreamedDataName(name: string): boolean {
  return Object.hasOwn(DATASETS, name) && DATASETS[name as DataName].streamed;
}

/** Learning-rate schedules, stepped per batch (lib/train/recipe.ts builds them). */
export const SCHEDULES = ['onecycle', 'cosine', 'multistep', 'constant'] as const;
export type ScheduleName = (typeof SCHEDULES)[number];
/** Schedules a linear warm-up can precede (1cycle warms up by itself). */
export const WARMUP_SCHEDULES: readonly ScheduleName[] = SCHEDULES.filter((s) => s !== 'onecycle');
/** Schedules whose shape depends on the total number of epochs (a resumed run cannot change it). */
export const TOTAL_DEPENDENT_SCHEDULES: readonly ScheduleName[] = ['onecycle', 'cosine'];

export const OPTIMIZERS = ['sgd', 'adamw'] as const;
export const AMP_DTYPES = ['bfloat16', 'float16'] as const;
export const ON_BAD_FILE = ['stop', 'skip'] as const;
/** auto, cpu, cuda or cuda:N. */
export const DEVICE_PATTERN = /^(auto|cpu|cuda(:\d+)?)$/;

// ---- the config --------------------------------------------------------------------------------

export interface TrainConfig {
  model: string;
  data: DataName;
  /** Dataset folder (fashion-mnist: optional; cifar10/100, folder and the streamed ones: required). */
  dataPath?: string;
  epochs: number;
  /** Per rank when data-parallel (the global batch is batchSize x ranks). */
  batchSize: number;
  /** Peak learning rate (the 1cycle maximum, or the base lr of the other schedules). */
  lr: number;
  optimizer: (typeof OPTIMIZERS)[number];
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  schedule: ScheduleName;
  warmupEpochs: number;
  labelSmoothing: number;
  augment: boolean;
  /** Random erasing probability (with augment). */
  randomErasing: number;
  device: 'auto' | Device;
  amp: boolean;
  ampDtype: (typeof AMP_DTYPES)[number];
  /**
   * Channels-last memory format for conv weights and batches. Unset: on for CPU training (oneDNN's
   * channels-last kernels; a ResNet-20 step measured 12-15% faster on an AVX2 CPU, in PyTorch too),
   * off on CUDA. The Trainer writes the resolved value into its config (config.json).
   */
  channelsLast?: boolean;
  /**
   * Keep freed CPU memory mapped for reuse while fit() runs (setCpuMemoryCaching): activations are
   * not faulted in again every step. Unset: on for CPU training, off on CUDA. Resident memory stays at
   * the step's peak during the run; fit() restores the previous setting when it ends.
   */
  cpuMemoryCaching?: boolean;
  seed: number;
  /** The run folder (lib/train/run-folder.ts). */
  out: string;
  workers: number;
  /** Steps between progress/metric reports. */
  logEvery: number;
  /**
   * TensorBoard event files in the run folder (lib/train/tensorboard.ts): the metrics as scalars, weight and
   * per-layer gradient-norm histograms, the config as text and the report as an image. Default on.
   */
  tensorboard: boolean;
  clipGradNorm?: number;
  /** Stop each epoch after this many batches (quick runs and tests). */
  limitTrainBatches?: number;
  limitTestBatches?: number;
  /** Synthetic dataset sizes. */
  syntheticTrain?: number;
  syntheticTest?: number;
  evalBatchSize?: number;
  /** Streamed datasets: crop size (default 224) and what a corrupt or unreadable file does. */
  imageSize?: number;
  onBadFile?: (typeof ON_BAD_FILE)[number];
  /**
   * Capture the training step in a CUDA graph and replay it for every batch (lib/train/graphs.ts):
   * CUDA only; not with float16 loss scaling, clipGradNorm or data-parallel training. Default off.
   */
  cudaGraphs?: boolean;
  /** cuDNN benchmark mode on CUDA (training shapes are fixed, so it pays); default on. */
  cudnnBenchmark?: boolean;
}

/**
 * One setting: its type and allowed values; `default` is the value a config gets when the setting is
 * not given (DEFAULT_CONFIG); an optional setting has none, and `unset` says what leaving it out means
 * where that is a plain value (shown in --help).
 */
export type Setting =
  | { type: 'int' | 'number'; range: NumberRange; default?: number; unset?: number }
  | { type: 'boolean'; default?: boolean; unset?: boolean }
  | { type: 'choice'; choices: readonly string[]; default?: string; unset?: string }
  | { type: 'string'; pattern?: RegExp; valueName?: string; default?: string };

/** Every setting of a TrainConfig, in the order --help lists them. */
export const CONFIG_SPEC = {
  model: { type: 'string', valueName: 'name', default: 'resnet20' },
  data: { type: 'choice', choices: DATA_NAMES, default: 'fashion-mnist' },
  dataPath: { type: 'string', valueName: 'dir' },
  imageSize: { type: 'int', range: { integer: true, min: 1, max: 8192 }, unset: 224 },
  onBadFile: { type: 'choice', choices: ON_BAD_FILE, unset: 'stop' },
  epochs: { type: 'int', range: { integer: true, min: 1 }, default: 1 },
  batchSize: { type: 'int', range: { integer: true, min: 1, max: 65536 }, default: 128 },
  lr: { type: 'number', range: { min: 0, minExclusive: true }, default: 0.1 },
  optimizer: { type: 'choice', choices: OPTIMIZERS, default: 'sgd' },
  momentum: { type: 'number', range: { min: 0, max: 1, maxExclusive: true }, default: 0.9 },
  nesterov: { type: 'boolean', default: true },
  weightDecay: { type: 'number', range: { min: 0 }, default: 5e-4 },
  schedule: { type: 'choice', choices: SCHEDULES, default: 'onecycle' },
  warmupEpochs: { type: 'number', range: { min: 0 }, default: 0 },
  labelSmoothing: { type: 'number', range: { min: 0, max: 1, maxExclusive: true }, default: 0 },
  augment: { type: 'boolean', default: true },
  randomErasing: { type: 'number', range: { min: 0, max: 1 }, default: 0 },
  device: { type: 'string', pattern: DEVICE_PATTERN, valueName: 'auto|cpu|cuda|cuda:N', default: 'auto' },
  amp: { type: 'boolean', default: false },
  ampDtype: { type: 'choice', choices: AMP_DTYPES, default: 'bfloat16' },
  channelsLast: { type: 'boolean' },
  cpuMemoryCaching: { type: 'boolean' },
  cudaGraphs: { type: 'boolean', unset: false },
  cudnnBenchmark: { type: 'boolean', unset: true },
  seed: { type: 'int', range: { integer: true, min: 0 }, default: 0 },
  out: { type: 'string', valueName: 'dir', default: 'runs/default' },
  // The native loader runs 1 to 16 threads (there is no synchronous mode).
  workers: { type: 'int', range: { integer: true, min: 1, max: 16 }, default: 2 },
  logEvery: { type: 'int', range: { integer: true, min: 1 }, default: 20 },
  tensorboard: { type: 'boolean', default: true },
  clipGradNorm: { type: 'number', range: { min: 0, minExclusive: true } },
  limitTrainBatches: { type: 'int', range: { integer: true, min: 1 } },
  limitTestBatches: { type: 'int', range: { integer: true, min: 1 } },
  syntheticTrain: { type: 'int', range: { integer: true, min: 1 }, unset: 6000 },
  syntheticTest: { type: 'int', range: { integer: true, min: 1 }, unset: 1000 },
  evalBatchSize: { type: 'int', range: { integer: true, min: 1, max: 65536 } },
} as const satisfies Record<keyof TrainConfig, Setting>;

export type ConfigKey = keyof TrainConfig;
export const CONFIG_KEYS = Object.keys(CONFIG_SPEC) as ConfigKey[];

/** The settings every config has: DEFAULT_CONFIG fills in those not given. */
export const DEFAULT_CONFIG: TrainConfig = Object.freeze(
  Object.fromEntries(
    Object.entries(CONFIG_SPEC as Record<string, Setting>).flatMap(([k, s]) => (s.default === undefined ? [] : [[k, s.default]])),
  ),
) as unknown as TrainConfig;

/** The allowed range of every numeric setting (from CONFIG_SPEC). */
export const CONFIG_RANGES = Object.fromEntries(
  Object.entries(CONFIG_SPEC as Record<string, Setting>).flatMap(([k, s]) =>
    s.type === 'int' || s.type === 'number' ? [[k, s.range]] : [],
  ),
) as { [K in ConfigKey as (typeof CONFIG_SPEC)[K] extends { range: NumberRange } ? K : never]: NumberRange };

// ---- messages about settings ---------------------------------------------------------------------

/** A setting named in a message, with or without a value. */
export interface SettingRef {
  readonly key: string;
  readonly value?: unknown;
  readonly withValue: boolean;
}
/** Text that differs between library callers and CLI users (e.g. 'call fit() without resume' / 'run the same command without --resume'). */
export interface AudienceText {
  readonly lib: string;
  readonly cli: string;
}
export type MessagePart = string | SettingRef | AudienceText | readonly MessagePart[];

/** How settings are named: as config keys (the library), or as the CLI's flags (lib/cli/flags.ts). */
export interface SettingNamer {
  readonly audience: 'lib' | 'cli';
  name(key: string): string;
  /** A setting with its value: `data: 'cifar10'` / `--data cifar10`. */
  setting(key: string, value: unknown): string;
}

function formatValue(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : String(v);
}

export const KEY_NAMER: SettingNamer = {
  audience: 'lib',
  name: (key) => key,
  setting: (key, value) => `${key}: ${formatValue(value)}`,
};

/** A setting by name: rendered `batchSize` for the library, `--batch-size` by the CLI. */
export function key(k: string): SettingRef {
  return { key: k, withValue: false };
}
/** A setting with a value: `schedule: 'onecycle'` for the library, `--schedule onecycle` by the CLI. */
export function setting(k: string, value: unknown): SettingRef {
  return { key: k, value, withValue: true };
}
/** Words for each audience. */
export function forAudience(lib: string, cli: string): AudienceText {
  return { lib, cli };
}
/** Several parts joined by ', '. */
export function listOf(parts: readonly MessagePart[]): MessagePart[] {
  return parts.flatMap((p, i) => (i ? [', ', p] : [p]));
}

/** A message whose settings are named by whoever shows it. */
export class SettingsMessage {
  constructor(readonly parts: readonly MessagePart[]) {}
  render(namer: SettingNamer = KEY_NAMER): string {
    const one = (p: MessagePart): string => {
      if (typeof p === 'string') return p;
      if (Array.isArray(p)) return p.map(one).join('');
      if ('lib' in (p as AudienceText)) return (p as AudienceText)[namer.audience];
      const r = p as SettingRef;
      return r.withValue ? namer.setting(r.key, r.value) : namer.name(r.key);
    };
    return this.parts.map(one).join('');
  }
}

/** A tagged template for a SettingsMessage: msg`${key('lr')} must be > 0, got ${v}`. Plain values are written as text. */
export function msg(strings: TemplateStringsArray, ...values: unknown[]): SettingsMessage {
  const parts: MessagePart[] = [];
  strings.forEach((s, i) => {
    if (s) parts.push(s);
    if (i < values.length) {
      const v = values[i];
      const isPart = Array.isArray(v) || (typeof v === 'object' && v !== null && ('withValue' in v || 'lib' in v));
      parts.push(isPart ? (v as MessagePart) : String(v));
    }
  });
  return new SettingsMessage(parts);
}

const MESSAGE = Symbol('residual.settingsMessage');

/** An error of class `Ctor` whose message is `m` rendered with config keys; the CLI re-renders it (settingsMessageOf). */
export function settingsError<E extends Error>(Ctor: new (message: string) => E, m: SettingsMessage): E {
  const e = new Ctor(m.render(KEY_NAMER));
  Object.defineProperty(e, MESSAGE, { value: m });
  return e;
}

/** The SettingsMessage an error was made from (settingsError), if any. */
export function settingsMessageOf(e: unknown): SettingsMessage | undefined {
  return typeof e === 'object' && e !== null ? ((e as Record<symbol, unknown>)[MESSAGE] as SettingsMessage | undefined) : undefined;
}

// ---- validation ----------------------------------------------------------------------------------

function describeSetting(s: Setting): string {
  switch (s.type) {
    case 'int':
    case 'number':
      return describeRange(s.type === 'int' ? { ...s.range, integer: true } : s.range);
    case 'boolean':
      return 'true or false';
    case 'choice':
      return s.choices.length === 2 ? `${s.choices[0]} or ${s.choices[1]}` : `one of ${s.choices.join(', ')}`;
    case 'string':
      return s.pattern ? `one of ${(s.valueName ?? String(s.pattern)).split('|').join(', ')}` : 'a string';
  }
}

function shown(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null) return JSON.stringify(v) ?? String(v);
  return String(v);
}

/** Checks one setting's value (undefined: not set); throws a TypeError or RangeError naming the key. */
export function checkSetting(k: ConfigKey, v: unknown): void {
  const s = CONFIG_SPEC[k] as Setting;
  if (v === undefined) {
    if (s.default !== undefined) throw settingsError(TypeError, msg`${key(k)} must be ${describeSetting(s)}, got undefined`);
    return;
  }
  const bad = (Ctor: new (m: string) => Error) => settingsError(Ctor, msg`${key(k)} must be ${describeSetting(s)}, got ${shown(v)}`);
  switch (s.type) {
    case 'int':
    case 'number':
      if (typeof v !== 'number') throw bad(TypeError);
      if (!inRange(v, s.type === 'int' ? { ...s.range, integer: true } : s.range)) throw bad(RangeError);
      return;
    case 'boolean':
      if (typeof v !== 'boolean') throw bad(TypeError);
      return;
    case 'choice':
      if (typeof v !== 'string') throw bad(TypeError);
      if (!s.choices.includes(v)) throw bad(RangeError);
      return;
    case 'string':
      if (typeof v !== 'string') throw bad(TypeError);
      if (s.pattern && !s.pattern.test(v)) throw bad(RangeError);
      return;
  }
}

/** Edits (insert, delete, replace) between two names: for 'did you mean'. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/**
 * Validates a whole config: every setting's type and range (CONFIG_SPEC), no unknown keys, the
 * settings that only make sense together, and the model name. Throws TypeError or RangeError (the
 * model registry's Error for an unknown model) whose message names config keys.
 */
export function validateConfig(cfg: TrainConfig): void {
  if (typeof cfg !== 'object' || cfg === null) throw new TypeError(`a training config must be an object, got ${String(cfg)}`);
  for (const k of Object.keys(cfg)) {
    if (Object.hasOwn(CONFIG_SPEC, k)) continue;
    const near = CONFIG_KEYS.map((c) => ({ c, d: distance(k.toLowerCase(), c.toLowerCase()) })).sort((a, b) => a.d - b.d)[0];
    throw new TypeError(
      `unknown setting '${k}'${near && near.d <= 2 ? ` (did you mean ${near.c}?)` : ''}; the settings are ${CONFIG_KEYS.join(', ')}`,
    );
  }
  for (const k of CONFIG_KEYS) checkSetting(k, cfg[k]);
  const ds = DATASETS[cfg.data];
  if (ds.path === 'required' && !cfg.dataPath)
    throw settingsError(RangeError, msg`${setting('data', cfg.data)} needs ${key('dataPath')} (${ds.holds})`);
  if (cfg.warmupEpochs > 0 && !WARMUP_SCHEDULES.includes(cfg.schedule))
    throw settingsError(
      RangeError,
      msg`${key('warmupEpochs')} applies to ${key('schedule')} ${WARMUP_SCHEDULES.join(', ').replace(/, (?=[^,]*$)/, ' or ')}; ${cfg.schedule} warms up by itself (got ${setting('warmupEpochs', cfg.warmupEpochs)})`,
    );
  if (cfg.warmupEpochs >= cfg.epochs)
    throw settingsError(
      RangeError,
      msg`${key('warmupEpochs')} must be less than ${key('epochs')} (${cfg.epochs}), got ${cfg.warmupEpochs}`,
    );
  if (cfg.cudaGraphs) {
    const why = cudaGraphsReason({ amp: cfg.amp, ampDtype: cfg.ampDtype, clipGradNorm: cfg.clipGradNorm });
    if (why) throw settingsError(RangeError, msg`${key('cudaGraphs')}: ${why.parts}`);
  }
  if (cfg.clipGradNorm !== undefined && cfg.amp && cfg.ampDtype === 'float16')
    throw settingsError(
      RangeError,
      msg`${key('clipGradNorm')} with float16 loss scaling is not supported; use ${setting('ampDtype', 'bfloat16')}`,
    );
  getModelInfo(cfg.model);
}

/**
 * Why settings cannot run under CUDA graphs (null when they can): the device, float16 loss scaling,
 * gradient clipping, data-parallel training (lib/train/graphs.ts explains each).
 */
export function cudaGraphsReason(o: {
  device?: string;
  amp?: boolean;
  ampDtype?: string;
  clipGradNorm?: number;
  distributed?: boolean;
}): SettingsMessage | null {
  if (o.device !== undefined && !/^cuda(:\d+)?$/.test(o.device)) return msg`CUDA graphs need a CUDA device (the run is on ${o.device})`;
  if (o.amp && o.ampDtype === 'float16')
    return msg`CUDA graphs cannot capture float16 loss scaling (GradScaler reads overflow flags on the host and skips steps); use ${setting('ampDtype', 'bfloat16')}, which needs no scaler`;
  if (o.clipGradNorm !== undefined) return msg`CUDA graphs cannot capture ${key('clipGradNorm')} (the total norm is read on the host)`;
  if (o.distributed)
    return msg`CUDA graphs are not supported with data-parallel training (${forAudience('several ranks', '--nproc-per-node')}) yet`;
  return null;
}

/** The settings of a run: the defaults, then `config` over them, validated. */
export function resolveConfig(config: Partial<TrainConfig> & { model: string }): TrainConfig {
  const cfg: TrainConfig = { ...DEFAULT_CONFIG, ...config };
  validateConfig(cfg);
  return cfg;
}

/** The settings (config keys) in which two runs differ; where a run writes, how it logs and where it runs do not count. */
export function runSettingsDiffer(a: Partial<TrainConfig>, b: Partial<TrainConfig>): ConfigKey[] {
  const ignore = new Set<string>([
    'out',
    'workers',
    'logEvery',
    'tensorboard',
    'device',
    'cudaGraphs',
    'cudnnBenchmark',
    'cpuMemoryCaching',
  ]);
  const keys = new Set([...Object.keys(a), ...Object.keys(b)].filter((k) => !ignore.has(k)));
  return [...keys].filter(
    (k) => JSON.stringify((a as Record<string, unknown>)[k]) !== JSON.stringify((b as Record<string, unknown>)[k]),
  ) as ConfigKey[];
}
