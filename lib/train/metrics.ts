// Training metrics as JSON lines (one record per line), and the history the report draws from them.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../core/fs.js';

/** One optimisation step. `epoch` is 1-based: the first epoch is epoch 1. */
export interface StepMetrics {
  step: number;
  epoch: number;
  loss: number;
  /** Batch accuracy in [0, 1]. */
  acc?: number;
  lr?: number;
  [key: string]: unknown;
}

/** One finished epoch (1-based); test values when the epoch ended with an evaluation. Accuracies in [0, 1]. */
export interface EpochMetrics {
  epoch: number;
  trainLoss: number;
  trainAcc: number;
  testLoss?: number;
  testAcc?: number;
  seconds: number;
  [key: string]: unknown;
}

/** An evaluation outside the epoch loop (e.g. `residual eval`). */
export interface EvalMetrics {
  loss: number;
  acc: number;
  epoch?: number;
  [key: string]: unknown;
}

export type MetricsRecord =
  | ({ type: 'step' } & StepMetrics)
  | ({ type: 'epoch' } & EpochMetrics)
  | ({ type: 'eval' } & EvalMetrics)
  | { type: string; [key: string]: unknown };

/** What the report draws. */
export interface History {
  steps: StepMetrics[];
  epochs: EpochMetrics[];
  title?: string;
}

/**
 * Appends one JSON object per line to a file (created with its folder when missing). Each record
 * is written with a single write call, so a crash loses at most the line being written, and
 * readMetrics skips such a cut-off last line.
 */
export class MetricsWriter {
  readonly file: string;
  private fd: number | null;

  constructor(file: string, opts: { truncate?: boolean } = {}) {
    this.file = file;
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    try {
      this.fd = fs.openSync(file, opts.truncate ? 'w' : 'a');
    } catch (e) {
      throw new Error(`cannot open metrics file ${file}: ${(e as Error).message}`);
    }
  }

  write(record: MetricsRecord): void {
    if (this.fd === null) throw new Error(`MetricsWriter(${this.file}): write after close`);
    if (!record || typeof record.type !== 'string') throw new TypeError(`MetricsWriter(${this.file}): a record needs a string 'type'`);
    fs.writeSync(this.fd, `${JSON.stringify(record, finite)}\n`);
  }

  step(m: StepMetrics): void {
    this.write({ type: 'step', ...m });
  }

  epoch(m: EpochMetrics): void {
    this.write({ type: 'epoch', ...m });
  }

  eval(m: EvalMetrics): void {
    this.write({ type: 'eval', ...m });
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** JSON has no NaN or Infinity: write them as strings so the value stays visible and the line parses. */
function finite(_key: string, v: unknown): unknown {
  return typeof v === 'number' && !Number.isFinite(v) ? String(v) : v;
}

function revive(_key: string, v: unknown): unknown {
  return v === 'NaN' ? NaN : v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v;
}

/** Read a metrics file. A malformed line is an error naming the file and line, except a cut-off last line. */
export function readMetrics(file: string): MetricsRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read metrics file ${file}: ${(e as Error).message}`);
  }
  const lines = text.split('\n');
  const out: MetricsRecord[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let rec: unknown;
    try {
      rec = JSON.parse(line, revive);
    } catch (e) {
      // The last line without its newline was being written when the process stopped.
      if (i === lines.length - 1) return;
      throw new Error(`${file}:${i + 1}: not a JSON line (${(e as Error).message})`);
    }
    if (!rec || typeof rec !== 'object' || typeof (rec as { type?: unknown }).type !== 'string') {
      throw new Error(`${file}:${i + 1}: expected an object with a string 'type'`);
    }
    out.push(rec as MetricsRecord);
  });
  return out;
}

/**
 * Rewrites a metrics file (atomically) keeping only the records up to a checkpoint: steps up to
 * `globalStep`, epochs up to `epoch`, evaluations of checkpoints up to `epoch`; records of other kinds
 * are kept. Called on resume, so that the steps and epochs run again after the checkpoint are written
 * once, not twice. A cut-off last line is dropped. Returns the number of records dropped; the file is
 * left alone when there is nothing to drop (or no file).
 */
export function truncateMetrics(file: string, upTo: { epoch: number; globalStep: number }): number {
  if (!fs.existsSync(file)) return 0;
  const records = readMetrics(file);
  const keep = records.filter((r) => {
    if (r.type === 'step') return typeof r.step !== 'number' || r.step <= upTo.globalStep;
    if (r.type === 'epoch' || r.type === 'eval') return typeof r.epoch !== 'number' || r.epoch <= upTo.epoch;
    return true;
  });
  const text = keep.map((r) => `${JSON.stringify(r, finite)}\n`).join('');
  if (keep.length === records.length && fs.readFileSync(file, 'utf8') === text) return 0;
  writeFileAtomic(file, text);
  return records.length - keep.length;
}

/**
 * The history for the report from metrics records. When a run was resumed, records of steps and
 * epochs that were written twice (before the interruption and again after it) keep the latest.
 */
export function historyFromMetrics(records: readonly MetricsRecord[], title?: string): History {
  const steps = new Map<number, StepMetrics>();
  const epochs = new Map<number, EpochMetrics>();
  for (const r of records) {
    if (r.type === 'step' && typeof r.step === 'number') steps.set(r.step, stripType(r) as StepMetrics);
    else if (r.type === 'epoch' && typeof r.epoch === 'number') epochs.set(r.epoch, stripType(r) as EpochMetrics);
  }
  return {
    steps: [...steps.values()].sort((a, b) => a.step - b.step),
    epochs: [...epochs.values()].sort((a, b) => a.epoch - b.epoch),
    title,
  };
}

function stripType(r: MetricsRecord): Record<string, unknown> {
  const { type: _t, ...rest } = r;
  return rest;
}
