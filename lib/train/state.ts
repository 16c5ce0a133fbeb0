// The training state <-> a checkpoint (the file format itself is lib/train/checkpoint.ts).
//
// The weights file holds every tensor, under these keys:
//   model.<name>        the model's state dict (PyTorch's key names)
//   optim.<id>.<name>   the optimizer's buffers per parameter (PyTorch's layout: parameters numbered
//                       in group order; momentum_buffer for SGD, exp_avg / exp_avg_sq for AdamW)
//   rng.cpu, rng.cuda   the random generators' states
// checkpoint.json holds, beside its envelope (format, version, epoch, globalStep, weights, sha256, savedAt):
//   config      the run's settings (lib/train/config.ts)
//   optimizer   { paramGroups: hyperparameters and parameter ids; scalars: per-parameter step counts }
//   scheduler   the learning-rate schedule's state
//   scaler      float16 loss scaling's state, or null
//   history     the logged steps and epochs (what the report draws)
//   device, worldSize
//   data        what the model was trained to see (RunDataInfo: the training set's normalisation
//               statistics, classes and channels), so `residual eval` reads only the test split
//               (checkpoints written before it was saved lack it; eval then recomputes it, saying so)
//
// Loading checks the whole sidecar, and the tensors against the live model, optimizer and schedule,
// before anything is restored, so a bad checkpoint changes nothing (in memory or on disk); every
// problem is a BadFileError naming the key.
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import type { Module } from '../nn/module.js';
import { AdamW, SGD, type GradScaler, type Optimizer } from '../optim/optimizer.js';
import type { LRScheduler, OptimizerLike, SchedulerState } from '../optim/schedule.js';
import { getRngState, setRngState } from '../tensor/memory.js';
import { scope } from '../tensor/scope.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import {
  CHECKPOINT_ENVELOPE_KEYS,
  CHECKPOINT_JSON,
  JsonChecker,
  checkCheckpointEnvelope,
  checkpointJsonPath,
  loadCheckpointTensors,
  readJsonFile,
  saveCheckpoint,
  type CheckpointMeta,
  type CrashPoint,
} from './checkpoint.js';
import { DEFAULT_CONFIG, settingsMessageOf, validateConfig, type SettingNamer, type TrainConfig } from './config.js';
import type { RunDataInfo } from './data.js';
import type { History } from './metrics.js';

/** Prefix of the model's tensors in the weights file. */
export const MODEL_PREFIX = 'model.';
const OPTIM_KEY = /^optim\.(\d+)\.([A-Za-z_]+)$/;
export const RNG_CPU = 'rng.cpu';
export const RNG_CUDA = 'rng.cuda';

/** The keys of a trainer's checkpoint.json. */
const RUN_KEYS = [
  ...CHECKPOINT_ENVELOPE_KEYS,
  'config',
  'optimizer',
  'scheduler',
  'scaler',
  'history',
  'device',
  'worldSize',
  'data',
] as const;
const RUN_REQUIRED = RUN_KEYS.filter((k) => k !== 'data');
/** The most ranks a run may have been trained with (the streaming loader's bound). */
const MAX_WORLD_SIZE = 1 << 20;

export interface RunCheckpointMeta extends CheckpointMeta {
  config: TrainConfig;
  optimizer: { paramGroups: Record<string, unknown>[]; scalars: Record<string, Record<string, number>> };
  scheduler: SchedulerState;
  scaler: { scale: number; goodSteps: number } | null;
  history: History;
  device: string;
  worldSize: number;
  data?: RunDataInfo;
}

// ---- checkpoint.json of a run ---------------------------------------------------------------------

/** Config keys inside checkpoint.json are named as there: config.batchSize. */
const IN_FILE: SettingNamer = {
  audience: 'lib',
  name: (k) => `config.${k}`,
  setting: (k, v) => `config.${k}: ${typeof v === 'string' ? `'${v}'` : String(v)}`,
};

/** Every number of a JSON value is finite (JSON's 1e999 parses as Infinity). */
function checkFinite(c: JsonChecker, v: unknown, at: string): void {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) c.fail(at, 'must be a finite number', v);
  } else if (Array.isArray(v)) v.forEach((x, i) => checkFinite(c, x, `${at}[${i}]`));
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) checkFinite(c, x, `${at}.${k}`);
}

function numberOrNull(c: JsonChecker, v: unknown, at: string): void {
  if (v !== null) c.number(v, at); // null: a NaN (a diverged loss) written by JSON.stringify
}

function checkHistory(c: JsonChecker, v: unknown, epoch: number, globalStep: number): void {
  const h = c.object(v, 'history');
  c.keys(h, 'history', ['steps', 'epochs', 'title'], ['steps', 'epochs']);
  if (h.title !== undefined) c.string(h.title, 'history.title');
  c.array(h.steps, 'history.steps').forEach((s, i) => {
    const at = `history.steps[${i}]`;
    const o = c.object(s, at);
    c.keys(o, at, ['step', 'epoch', 'loss', 'acc', 'lr'], ['step', 'epoch', 'loss']);
    c.integer(o.step, `${at}.step`, 0, globalStep);
    c.number(o.epoch, `${at}.epoch`, { min: 0, max: epoch + 1 });
    for (const k of ['loss', 'acc', 'lr']) if (o[k] !== undefined) numberOrNull(c, o[k], `${at}.${k}`);
  });
  c.array(h.epochs, 'history.epochs').forEach((e, i) => {
    const at = `history.epochs[${i}]`;
    const o = c.object(e, at);
    c.keys(o, at, ['epoch', 'trainLoss', 'trainAcc', 'testLoss', 'testAcc', 'seconds'], ['epoch', 'trainLoss', 'trainAcc', 'seconds']);
    c.integer(o.epoch, `${at}.epoch`, 1, epoch);
    for (const k of ['trainLoss', 'trainAcc', 'testLoss', 'testAcc', 'seconds'])
      if (o[k] !== undefined) numberOrNull(c, o[k], `${at}.${k}`);
  });
}

function checkDataInfo(c: JsonChecker, v: unknown): void {
  const d = c.object(v, 'data');
  c.keys(d, 'data', ['mean', 'std', 'classes', 'channels']);
  const channels = c.integer(d.channels, 'data.channels', 1, 64);
  for (const k of ['mean', 'std'] as const) {
    const a = c.array(d[k], `data.${k}`);
    if (a.length !== channels) c.fail(`data.${k}`, `must have one value per channel (${channels}), has ${a.length}`);
    a.forEach((x, i) => c.number(x, `data.${k}[${i}]`, k === 'std' ? { min: 0, minExclusive: true } : {}));
  }
  c.array(d.classes, 'data.classes', 65536).forEach((x, i) => c.string(x, `data.classes[${i}]`));
  if ((d.classes as unknown[]).length < 1) c.fail('data.classes', 'must name at least one class');
}

/**
 * Checks a parsed checkpoint.json of a training run, all of it: the envelope, the config (against the
 * config spec), the optimizer's and schedule's state, the scaler, the history, device, world size and
 * the saved data info. Throws BadFileError naming the key.
 */
export function checkRunCheckpoint(v: unknown, file: string): RunCheckpointMeta {
  const meta = checkCheckpointEnvelope(v, file);
  const c = new JsonChecker(file);
  const o = meta as Record<string, unknown>;
  c.keys(o, '', RUN_KEYS, RUN_REQUIRED);
  const cfgIn = c.object(o.config, 'config');
  const config = { ...DEFAULT_CONFIG, ...cfgIn } as TrainConfig;
  try {
    validateConfig(config);
  } catch (e) {
    const m = settingsMessageOf(e);
    throw new BadFileError(`${file}: ${m ? m.render(IN_FILE) : `config: ${(e as Error).message}`}`, { path: file, cause: e });
  }
  if (meta.epoch > config.epochs)
    c.fail('epoch', `must be at most config.epochs (${config.epochs}): a run saves a checkpoint after each of its epochs`, meta.epoch);

  const opt = c.object(o.optimizer, 'optimizer');
  c.keys(opt, 'optimizer', ['paramGroups', 'scalars']);
  c.array(opt.paramGroups, 'optimizer.paramGroups', 64).forEach((g, i) => {
    const at = `optimizer.paramGroups[${i}]`;
    const go = c.object(g, at);
    c.array(go.params, `${at}.params`).forEach((id, j) => c.integer(id, `${at}.params[${j}]`));
    checkFinite(c, go, at);
  });
  for (const [id, s] of Object.entries(c.object(opt.scalars, 'optimizer.scalars'))) {
    const at = `optimizer.scalars.${id}`;
    if (!/^(0|[1-9]\d{0,8})$/.test(id)) c.fail(at, 'must be keyed by a parameter id (an integer)');
    const so = c.object(s, at);
    c.keys(so, at, ['step'], []);
    if (so.step !== undefined) c.integer(so.step, `${at}.step`);
  }

  const sch = c.object(o.scheduler, 'scheduler');
  c.string(sch.type, 'scheduler.type', /^[A-Za-z]{1,64}$/, 'the name of a schedule class');
  checkFinite(c, sch, 'scheduler');
  // The trainer steps its schedule once per training step (the schedule's first step is its construction).
  c.integer(sch.lastEpoch, 'scheduler.lastEpoch');
  if (sch.lastEpoch !== meta.globalStep)
    c.fail(
      'scheduler.lastEpoch',
      `must equal globalStep (${meta.globalStep}): the schedule is stepped once per training step`,
      sch.lastEpoch,
    );

  if (o.scaler !== null) {
    const s = c.object(o.scaler, 'scaler');
    c.keys(s, 'scaler', ['scale', 'goodSteps']);
    c.number(s.scale, 'scaler.scale', { min: 0, minExclusive: true });
    c.integer(s.goodSteps, 'scaler.goodSteps');
  }
  checkHistory(c, o.history, meta.epoch, meta.globalStep);
  c.string(o.device, 'device', /^(cpu|cuda(:\d{1,4})?)$/, 'cpu, cuda or cuda:N');
  c.integer(o.worldSize, 'worldSize', 1, MAX_WORLD_SIZE);
  if (o.data !== undefined) checkDataInfo(c, o.data);
  return meta as RunCheckpointMeta;
}

/** Reads and checks a run's checkpoint.json (see checkRunCheckpoint), without the weights. */
export function readRunCheckpoint(target: string): { meta: RunCheckpointMeta; file: string; dir: string } {
  const file = checkpointJsonPath(target);
  if (!fs.existsSync(file)) throw new Error(`no checkpoint at ${target}: ${file} does not exist`);
  return { meta: checkRunCheckpoint(readJsonFile(file), file), file, dir: path.dirname(file) };
}

/** The model's tensors (keys without the 'model.' prefix) from a checkpoint's tensors; the others are disposed. */
export function modelWeights(tensors: Record<string, Tensor>): Record<string, Tensor> {
  const out: Record<string, Tensor> = Object.create(null);
  for (const [k, v] of Object.entries(tensors)) {
    if (k.startsWith(MODEL_PREFIX)) out[k.slice(MODEL_PREFIX.length)] = v;
    else v.dispose();
  }
  return out;
}

/** A run's checked checkpoint and its model weights (for evaluation): `residual eval` of a run folder. */
export function loadRunWeights(target: string): { meta: RunCheckpointMeta; weights: Record<string, Tensor>; dir: string } {
  const { meta, file, dir } = readRunCheckpoint(target);
  return { meta, weights: modelWeights(loadCheckpointTensors(meta, file)), dir };
}

// ---- saving and restoring the live state ------------------------------------------------------------

/** The objects a training state lives in. */
export interface LiveTraining {
  model: Module;
  optimizer: Optimizer;
  scheduler: LRScheduler;
  scaler: GradScaler | null;
  device: Device;
}

/** What a checkpoint records beside the live objects' state. */
export interface RunRecord {
  epoch: number;
  globalStep: number;
  config: TrainConfig;
  history: History;
  worldSize: number;
  data: RunDataInfo;
}

/** Saves the training state into `dir` (see the file comment); returns the path of its checkpoint.json. */
export function saveTrainingState(dir: string, live: LiveTraining, run: RunRecord, opts: { crashAt?: CrashPoint } = {}): string {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(live.model.stateDict())) tensors[`${MODEL_PREFIX}${k}`] = v;
  const sd = live.optimizer.stateDict();
  for (const [id, s] of Object.entries(sd.state))
    for (const [k, v] of Object.entries(s)) if (v instanceof Tensor) tensors[`optim.${id}.${k}`] = v;
  tensors[RNG_CPU] = getRngState('cpu');
  if (live.device.startsWith('cuda')) tensors[RNG_CUDA] = getRngState(live.device);
  try {
    const scalars: Record<string, Record<string, number>> = {};
    for (const [id, s] of Object.entries(sd.state))
      for (const [k, v] of Object.entries(s)) if (typeof v === 'number') (scalars[id] ??= {})[k] = v;
    saveCheckpoint(
      dir,
      tensors,
      {
        epoch: run.epoch,
        globalStep: run.globalStep,
        config: run.config,
        optimizer: { paramGroups: sd.paramGroups, scalars },
        scheduler: live.scheduler.stateDict(),
        scaler: live.scaler?.stateDict() ?? null,
        history: run.history,
        device: live.device,
        worldSize: run.worldSize,
        data: run.data,
      },
      { crashAt: opts.crashAt },
    );
  } finally {
    for (const v of Object.values(tensors)) v.dispose();
  }
  return path.join(dir, CHECKPOINT_JSON);
}

/** JSON kinds: 'number', 'string', 'boolean', 'null', 'array', 'object'. */
function jsonKind(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/**
 * `v` has the structure of `like` (a state this run would write): the same keys, and values of the same
 * kinds, recursively; array elements like `like`'s element at the same index, or its last (lengths are
 * the loader's to check).
 */
function sameJsonShape(c: JsonChecker, v: unknown, like: unknown, at: string): void {
  const kind = jsonKind(like);
  if (jsonKind(v) !== kind)
    c.fail(at, `must be ${kind === 'array' || kind === 'object' ? `an ${kind}` : `a ${kind}`} (as this run's schedule has it)`, v);
  if (kind === 'array') {
    const l = like as unknown[];
    if (l.length) (v as unknown[]).forEach((x, i) => sameJsonShape(c, x, l[Math.min(i, l.length - 1)], `${at}[${i}]`));
  } else if (kind === 'object') {
    const o = v as Record<string, unknown>;
    const lo = like as Record<string, unknown>;
    c.keys(o, at, Object.keys(lo));
    for (const k of Object.keys(lo)) sameJsonShape(c, o[k], lo[k], `${at}.${k}`);
  }
}

/** The per-parameter buffers each optimizer keeps (PyTorch's names). */
function optimizerBuffers(o: Optimizer): readonly string[] {
  if (o instanceof SGD) return ['momentum_buffer'];
  if (o instanceof AdamW) return ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'];
  return ['momentum_buffer', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Checks that a checkpoint's tensors and optimizer/schedule state fit the live objects (nothing is
 * changed): every model key with its shape and dtype, the optimizer's groups and buffers, the RNG
 * states, no other tensors, and the schedule (loaded into a copy first).
 */
function checkFits(
  meta: RunCheckpointMeta,
  tensors: Record<string, Tensor>,
  live: LiveTraining,
  makeScheduler: (o: OptimizerLike) => LRScheduler,
  c: JsonChecker,
): void {
  const weights = path.join(path.dirname(c.file), meta.weights);
  const bad = (what: string): never => {
    throw new BadFileError(`${weights}: ${what} (the checkpoint does not fit this run's model and optimizer)`, { path: weights });
  };
  // The model.
  const own = scope(() => {
    const sd = live.model.stateDict();
    const shapes = new Map(Object.entries(sd).map(([k, t]) => [k, { shape: t.shape, dtype: t.dtype }]));
    for (const t of Object.values(sd)) t.dispose();
    return shapes;
  });
  // The model's tensors and the generators' states first (a checkpoint of another network says so).
  const seen = new Set<string>();
  for (const [k, t] of Object.entries(tensors)) {
    if (k.startsWith(MODEL_PREFIX)) {
      const name = k.slice(MODEL_PREFIX.length);
      const want = own.get(name);
      if (!want) bad(`${k} is not a tensor of this model`);
      else if (!sameShape(t.shape, want.shape) || t.dtype !== want.dtype)
        bad(`${k} is ${t.dtype} [${t.shape.join(', ')}], the model's is ${want.dtype} [${want.shape.join(', ')}]`);
      seen.add(name);
    } else if (k === RNG_CPU || (k === RNG_CUDA && live.device.startsWith('cuda'))) {
      const ref = getRngState(k === RNG_CPU ? 'cpu' : live.device);
      const ok = t.dtype === ref.dtype && sameShape(t.shape, ref.shape);
      const want = `${ref.dtype} [${ref.shape.join(', ')}]`;
      ref.dispose();
      if (!ok) bad(`${k} is ${t.dtype} [${t.shape.join(', ')}], a generator state is ${want}`);
    } else if (k !== RNG_CUDA && !OPTIM_KEY.test(k)) {
      // (rng.cuda of a CUDA run resumed on the CPU is not restored)
      bad(`${k} is not a tensor of a training state (model.*, optim.<id>.<buffer>, rng.cpu, rng.cuda)`);
    }
  }
  const missing = [...own.keys()].filter((k) => !seen.has(k));
  if (missing.length)
    bad(
      `the model's ${missing
        .slice(0, 5)
        .map((k) => MODEL_PREFIX + k)
        .join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''} ${missing.length > 1 ? 'are' : 'is'} missing`,
    );
  if (!tensors[RNG_CPU]) bad(`${RNG_CPU} is missing`);
  // The optimizer: saved groups against the live ones, parameter ids to parameters, then its buffers.
  const groups = meta.optimizer.paramGroups;
  const liveGroups = live.optimizer.paramGroups;
  if (groups.length !== liveGroups.length)
    c.fail('optimizer.paramGroups', `must have ${liveGroups.length} groups (this optimizer's), has ${groups.length}`);
  const byId = new Map<number, Tensor>();
  groups.forEach((g, gi) => {
    const at = `optimizer.paramGroups[${gi}]`;
    const lg = liveGroups[gi] as Record<string, unknown> & { params: Tensor[] };
    const ids = g.params as number[];
    if (ids.length !== lg.params.length)
      c.fail(`${at}.params`, `must list ${lg.params.length} parameters (this group's), lists ${ids.length}`);
    ids.forEach((id, j) => {
      if (byId.has(id)) c.fail(`${at}.params[${j}]`, 'names a parameter id twice', id);
      byId.set(id, lg.params[j]);
    });
    for (const [k, v] of Object.entries(g)) {
      if (k === 'params') continue;
      if (!Object.hasOwn(lg, k)) c.fail(`${at}.${k}`, 'is not a hyperparameter of this optimizer (unknown key)');
      const want = lg[k];
      const kind = (x: unknown) => (Array.isArray(x) ? `array of ${x.length}` : x === null ? 'null' : typeof x);
      if (kind(v) !== kind(want))
        c.fail(`${at}.${k}`, `must be ${Array.isArray(want) ? `an array of ${want.length} numbers` : `a ${kind(want)}`}`, v);
    }
  });
  for (const id of Object.keys(meta.optimizer.scalars))
    if (!byId.has(Number(id))) c.fail(`optimizer.scalars.${id}`, 'names no parameter of optimizer.paramGroups');
  const buffers = optimizerBuffers(live.optimizer);
  for (const [k, t] of Object.entries(tensors)) {
    const m = OPTIM_KEY.exec(k);
    if (!m) continue;
    const p = byId.get(Number(m[1]));
    if (!p) bad(`${k} names parameter ${m[1]}, which optimizer.paramGroups does not list`);
    else if (!buffers.includes(m[2])) bad(`${k}: ${m[2]} is not a buffer of this optimizer (${buffers.join(', ')})`);
    else if (!sameShape(t.shape, p.shape) || t.dtype !== p.dtype)
      bad(`${k} is ${t.dtype} [${t.shape.join(', ')}], its parameter is ${p.dtype} [${p.shape.join(', ')}]`);
  }
  // The schedule: the same keys and kinds of values as this run's schedule has, then loaded into a
  // schedule made the same way over copies of the param groups.
  const dry = makeScheduler({ paramGroups: liveGroups.map((g) => ({ ...g, params: [] })) as unknown as OptimizerLike['paramGroups'] });
  sameJsonShape(c, meta.scheduler, dry.stateDict(), 'scheduler');
  try {
    dry.loadStateDict(structuredClone(meta.scheduler));
  } catch (e) {
    c.fail('scheduler', `does not fit this run's schedule (${(e as Error).message})`);
  }
}

/**
 * Restores the training state saved in `dir` into the live objects, after checking all of it (the
 * sidecar, then the tensors and the optimizer/schedule state against the live objects): a checkpoint
 * that does not pass changes nothing. `makeScheduler` builds this run's schedule over given param
 * groups (to load the saved schedule into a copy first); `accept` may refuse a valid checkpoint that
 * this run cannot continue (e.g. another world size). Returns what the loop continues from.
 */
export function loadTrainingState(
  dir: string,
  live: LiveTraining,
  makeScheduler: (o: OptimizerLike) => LRScheduler,
  accept: (meta: RunCheckpointMeta) => void = () => {},
): { meta: RunCheckpointMeta; epoch: number; globalStep: number; history: History } {
  const { meta, file } = readRunCheckpoint(dir);
  accept(meta);
  const tensors = loadCheckpointTensors(meta, file);
  try {
    checkFits(meta, tensors, live, makeScheduler, new JsonChecker(file));
    // Everything fits: restore, in the order that makes a resumed run equal an uninterrupted one.
    const model: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(tensors)) if (k.startsWith(MODEL_PREFIX)) model[k.slice(MODEL_PREFIX.length)] = v;
    live.model.loadStateDict(model);
    const state: Record<number, Record<string, Tensor | number>> = {};
    for (const [k, v] of Object.entries(tensors)) {
      const m = OPTIM_KEY.exec(k);
      if (m) (state[+m[1]] ??= {})[m[2]] = v.to(live.device);
    }
    for (const [id, s] of Object.entries(meta.optimizer.scalars)) Object.assign((state[+id] ??= {}), s);
    try {
      live.optimizer.loadStateDict({ state, paramGroups: meta.optimizer.paramGroups });
    } finally {
      for (const s of Object.values(state)) for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
    }
    live.scheduler.loadStateDict(meta.scheduler);
    if (live.scaler && meta.scaler) live.scaler.loadStateDict(meta.scaler);
    setRngState(tensors[RNG_CPU], 'cpu');
    if (tensors[RNG_CUDA] && live.device.startsWith('cuda')) setRngState(tensors[RNG_CUDA], live.device);
    return { meta, epoch: meta.epoch, globalStep: meta.globalStep, history: meta.history };
  } finally {
    for (const v of Object.values(tensors)) v.dispose();
  }
}
