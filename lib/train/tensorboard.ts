// A training run's TensorBoard event files, in its run folder beside metrics.jsonl (lib/tensorboard's
// SummaryWriter), so `tensorboard --logdir runs` shows every run:
//   scalars     the numbers metrics.jsonl holds (STEP_SCALARS at each logged step, EPOCH_SCALARS at each
//               epoch's last step), and gradient_norm/<weight> per layer at each logged step;
//   histograms  weights/<parameter> at the start and after each epoch, and gradient_norm: the per-layer
//               gradient norms of each logged step (the numbers `residual explain` plots, taken by
//               lib/models/gradient-norms.ts from the step's own backward pass);
//   text        config: the run's settings;   image   report: report.png.
// Consistent across --resume: the events after the checkpoint are dropped from the files (as metrics.jsonl
// drops its records), and the resumed run's new file starts with a SessionLog START at the first step it
// writes again (PyTorch's purge_step), so TensorBoard shows each step once.
import fs from 'node:fs';
import { currentGradientNorms } from '../models/gradient-norms.js';
import type { Module } from '../nn/module.js';
import { SummaryWriter } from '../tensorboard/writer.js';
import { removeEventFiles, truncateEventFiles } from '../tensorboard/reader.js';
import type { EpochMetrics } from './metrics.js';

/** One logged step, as metrics.jsonl's step record has it. */
export interface LoggedStep {
  step: number;
  loss: number;
  acc: number;
  lr: number;
  imagesPerSec: number;
}

/** Scalar tags by metrics.jsonl field: a step record's, at its step. */
export const STEP_SCALARS = { loss: 'loss/train', acc: 'accuracy/train', lr: 'learning_rate', imagesPerSec: 'images_per_sec' } as const;
/** Scalar tags by metrics.jsonl field: an epoch record's, at the epoch's last step. */
export const EPOCH_SCALARS = {
  trainLoss: 'loss/train_epoch',
  trainAcc: 'accuracy/train_epoch',
  testLoss: 'loss/test',
  testAcc: 'accuracy/test',
  seconds: 'epoch_seconds',
} as const;

/**
 * Makes a run folder's event files agree with the run about to start, whether or not it writes events:
 * a run resumed from the checkpoint at `resumeStep` drops the events after that step; a run started from
 * the beginning (`resumeStep` null) removes the earlier attempt's files (as metrics.jsonl is emptied).
 * Returns what the user should be told.
 */
export function prepareEventFiles(out: string, resumeStep: number | null): string[] {
  if (resumeStep === null) {
    removeEventFiles(out);
    return [];
  }
  const { dropped, skipped } = truncateEventFiles(out, resumeStep);
  const notices = skipped.map((f) => `${f} has a damaged record: it is left as it is (TensorBoard reads it up to that record)`);
  if (dropped) notices.unshift(`dropped ${dropped} TensorBoard events written after that checkpoint (they are written again)`);
  return notices;
}

/** The TensorBoard side of a run: one new event file per (re)start. Call prepareEventFiles first. */
export class RunEvents {
  private readonly w: SummaryWriter;

  /** `resumeStep`: the checkpoint's global step when resuming (the file then starts with SessionLog START at the next step), null from the beginning. */
  constructor(out: string, resumeStep: number | null) {
    this.w = new SummaryWriter(out, resumeStep === null ? {} : { purgeStep: resumeStep + 1 });
  }

  /** The event file being written. */
  get file(): string {
    return this.w.file;
  }

  /** The run's settings as a Markdown table (TensorBoard's text dashboard). */
  config(cfg: object, step: number): void {
    const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\n/g, ' ');
    const rows = Object.entries(cfg)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `| ${esc(k)} | ${esc(typeof v === 'string' ? v : JSON.stringify(v))} |`);
    this.w.addText('config', ['| setting | value |', '| --- | --- |', ...rows].join('\n'), step);
  }

  /**
   * A logged step: its scalars, and the gradient norm of every layer's weights as left by the step's
   * backward pass (after clipping and loss unscaling, i.e. the gradients the optimizer used).
   */
  step(m: LoggedStep, model: Module): void {
    for (const [k, tag] of Object.entries(STEP_SCALARS)) this.w.addScalar(tag, m[k as keyof typeof STEP_SCALARS], m.step);
    const norms = currentGradientNorms(model);
    for (const n of norms) this.w.addScalar(`gradient_norm/${n.name}`, n.norm, m.step);
    const finite = norms.map((n) => n.norm).filter(Number.isFinite);
    if (finite.length) this.w.addHistogram('gradient_norm', finite, m.step);
  }

  /** An epoch's scalars, at its last step. */
  epoch(m: EpochMetrics, step: number): void {
    for (const [k, tag] of Object.entries(EPOCH_SCALARS)) {
      const v = m[k];
      if (typeof v === 'number') this.w.addScalar(tag, v, step);
    }
  }

  /** A histogram of every parameter's values (a parameter with no finite value has none). */
  weights(model: Module, step: number): void {
    for (const [name, p] of model.namedParameters()) {
      try {
        this.w.addHistogram(`weights/${name}`, p, step);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e; // all NaN or infinite: nothing to draw
      }
    }
  }

  /** The report (report.png) as an image. */
  report(png: string, step: number): void {
    this.w.addImage('report', fs.readFileSync(png), step);
  }

  /** Makes what was written durable (before a checkpoint that counts on it). */
  flush(): void {
    this.w.flush();
  }

  close(): void {
    this.w.close();
  }
}
