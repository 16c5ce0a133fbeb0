// The run folder: what a run writes there, how a default one is named, and what a new or resumed run
// may do with a folder that already holds files. Nothing the user saved is ever overwritten:
//
//   config.json          the run's settings, written when it starts (a run stopped before its first
//                        checkpoint is recognised by it)
//   metrics.jsonl        one JSON line per logged step, epoch and evaluation (lib/train/metrics.ts)
//   events.out.tfevents.*   TensorBoard event files, one per start and restart (lib/train/tensorboard.ts)
//   checkpoint.json      the last committed checkpoint, and the weights file it names
//   checkpoint-eNNNN-sMMMMMMM.safetensors   (lib/train/checkpoint.ts, lib/train/state.ts)
//   model.safetensors, report.svg, report.png   written when the run finishes
//
// A default folder is runs/<model>-<data>, then -2, -3, ... (never an existing one).
import fs from 'node:fs';
import path from 'node:path';
import { isEventRewriteTemp } from '../tensorboard/reader.js';
import { isEventFileName } from '../tensorboard/writer.js';
import { CHECKPOINT_WEIGHTS, hasCheckpoint, isCheckpointTemp } from './checkpoint.js';
import {
  forAudience,
  key,
  listOf,
  msg,
  runSettingsDiffer,
  setting,
  settingsError,
  validateConfig,
  DEFAULT_CONFIG,
  type TrainConfig,
} from './config.js';

export const RUN_CONFIG_FILE = 'config.json';
export const METRICS_FILE = 'metrics.jsonl';
/** Files a run writes only when it finishes (with a checkpoint beside them). */
export const FINISHED_FILES = ['model.safetensors', 'report.png', 'report.svg'];

/** The metrics file of a run folder. */
export function metricsFile(dir: string): string {
  return path.join(dir, METRICS_FILE);
}

/** A new run's default folder: runs/<model>-<data>, else the first of runs/<model>-<data>-2, -3, ... that does not exist. */
export function defaultRunFolder(model: string, data: string, root = 'runs'): string {
  const base = path.join(root, `${model}-${data}`);
  let out = base;
  for (let i = 2; fs.existsSync(out); i++) out = `${base}-${i}`;
  return out;
}

/** Does this parsed config.json look like one a residual run wrote? */
function looksLikeRunConfig(v: unknown): v is Partial<TrainConfig> {
  const c = v as Partial<TrainConfig> | null;
  return (
    !!c &&
    typeof c === 'object' &&
    !Array.isArray(c) &&
    typeof c.model === 'string' &&
    typeof c.data === 'string' &&
    typeof c.epochs === 'number' &&
    typeof c.batchSize === 'number'
  );
}

/**
 * A run folder's config.json: the settings of a run that stopped before its first checkpoint. `config`
 * is null when there is none, or it is not a valid run config (`problem` says why).
 */
export function readRunConfigFile(dir: string): { config: Partial<TrainConfig> | null; problem?: string } {
  const file = path.join(dir, RUN_CONFIG_FILE);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    return {
      config: null,
      problem: (e as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : `not readable JSON: ${(e as Error).message}`,
    };
  }
  if (!looksLikeRunConfig(v)) return { config: null, problem: 'not the settings of a residual run' };
  try {
    validateConfig({ ...DEFAULT_CONFIG, ...v });
  } catch (e) {
    return { config: null, problem: (e as Error).message };
  }
  return { config: v };
}

/** The settings of a run that stopped before its first checkpoint, from its config.json (null if none or not a valid run's). */
export function readRunConfig(dir: string): Partial<TrainConfig> | null {
  return readRunConfigFile(dir).config;
}

export interface RunFolderContents {
  /** A committed checkpoint (checkpoint.json). */
  checkpoint: boolean;
  /** A finished run's outputs. */
  finished: string[];
  /** residual's partial files of a run that stopped before its first checkpoint. */
  partial: string[];
  /** Files named like residual's that residual did not write (or that are not valid). */
  foreign: string[];
  /** Why config.json counts as foreign, when it does. */
  foreignWhy?: string;
  /** The partial run's settings (its config.json). */
  config: Partial<TrainConfig> | null;
}

/**
 * What a run folder holds: a committed checkpoint; a finished run's outputs; residual's partial files of a
 * run that stopped before its first checkpoint (config.json, metrics.jsonl, a weights file or temporary
 * file of an unfinished checkpoint save, TensorBoard event files); files named like residual's that
 * residual did not write.
 */
export function inspectRunFolder(dir: string): RunFolderContents {
  const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  const read = names.includes(RUN_CONFIG_FILE) ? readRunConfigFile(dir) : { config: null };
  const config = read.config;
  const partial: string[] = [];
  const foreign: string[] = [];
  if (names.includes(RUN_CONFIG_FILE)) (config ? partial : foreign).push(RUN_CONFIG_FILE);
  // metrics.jsonl is a run's only when the run's config.json is beside it (the trainer writes that first).
  if (names.includes(METRICS_FILE)) (config ? partial : foreign).push(METRICS_FILE);
  for (const f of names) if (CHECKPOINT_WEIGHTS.test(f) || isCheckpointTemp(f)) partial.push(f);
  // TensorBoard event files (and a leftover of their rewrite on resume), like metrics.jsonl.
  for (const f of names) if (isEventFileName(f) || isEventRewriteTemp(f)) (config ? partial : foreign).push(f);
  return {
    checkpoint: hasCheckpoint(dir),
    finished: FINISHED_FILES.filter((f) => names.includes(f)),
    partial,
    foreign,
    foreignWhy: 'problem' in read ? read.problem : undefined,
    config,
  };
}

/** The error for resuming a folder where no run was started. */
function nothingToResume(dir: string): Error {
  return settingsError(
    Error,
    msg`${setting('resume', true)}: no checkpoint in ${dir} (no run was started there): to start a new run there, ${forAudience('call fit() without resume', 'run the same command without --resume')}`,
  );
}

/** What a run does with its folder: continue its checkpoint, or start from the beginning (`notice` says why, when there were files). */
export type RunPlan = { resume: true } | { resume: false; notice?: string };

/**
 * Decides what the run `cfg` may do with its folder, reading only: continue the checkpoint there
 * (`resume` asked), start from the beginning (an empty folder, or the partial files of the same run
 * stopped before its first checkpoint), or refuse, saying what to do (nothing is ever overwritten).
 * With `resume`, only cfg.out is read.
 */
export function planRun(cfg: Pick<TrainConfig, 'out'> & Partial<TrainConfig>, opts: { resume?: boolean } = {}): RunPlan {
  const dir = cfg.out;
  const folder = inspectRunFolder(dir);
  const anotherOut = msg`choose another ${key('out')}`;
  if (folder.checkpoint) {
    if (!opts.resume)
      throw settingsError(
        Error,
        msg`${dir} already holds a checkpoint: ${forAudience('call fit() with', 'pass')} ${setting('resume', true)} to continue it, or ${anotherOut.parts} (nothing was overwritten)`,
      );
    return { resume: true };
  }
  if (folder.finished.length) {
    // A finished run's outputs without its checkpoint: not ours to replace.
    const n = folder.finished.length;
    throw settingsError(
      Error,
      msg`${dir} already holds ${folder.finished.join(', ')} from another run: ${anotherOut.parts}, or delete ${folder.finished.map((f) => path.join(dir, f)).join(' and ')} if you no longer need ${n > 1 ? 'them' : 'it'} (nothing was overwritten)`,
    );
  }
  if (folder.foreign.length) {
    const n = folder.foreign.length;
    throw settingsError(
      Error,
      msg`${dir} holds ${folder.foreign.join(', ')}, which ${n > 1 ? 'are' : 'is'} not the partial output of a residual run${folder.foreignWhy ? ` (${RUN_CONFIG_FILE}: ${folder.foreignWhy})` : ''}: ${anotherOut.parts}, or move ${n > 1 ? 'them' : 'it'} away (nothing was overwritten)`,
    );
  }
  if (folder.partial.length) {
    // A run that stopped before its first checkpoint: its files hold nothing a new start would lose.
    const differs = folder.config ? runSettingsDiffer(folder.config, cfg) : [];
    if (differs.length && !opts.resume) {
      const files = folder.partial.map((f) => path.join(dir, f));
      throw settingsError(
        Error,
        msg`${dir} holds the partial files of a different run that stopped before its first checkpoint (its ${listOf(differs.map((k) => key(k)))} differ): to start this run there, delete them first (rm ${files.join(' ')}), or ${anotherOut.parts} (nothing was overwritten)`,
      );
    }
    return {
      resume: false,
      notice: `${dir} holds a run that stopped before its first checkpoint (${folder.partial.join(', ')}): ${opts.resume ? 'there is nothing to resume, so it starts from the beginning' : 'starting it again from the beginning'}`,
    };
  }
  if (opts.resume) throw nothingToResume(dir);
  return { resume: false };
}
