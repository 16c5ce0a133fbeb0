// SummaryWriter: TensorBoard event files from Node, named like PyTorch's torch.utils.tensorboard
// SummaryWriter in camelCase. Each call appends one Event (protobufjs, ./proto.ts) framed as a TFRecord
// (./record.ts) with a single write, so a crash loses at most the record being written, and TensorBoard
// reads every record before a cut-off last one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkRange } from '../core/range.js';
import { Tensor } from '../tensor/tensor.js';
import { makeHistogram, MAX_HISTOGRAM_BINS } from './histogram.js';
import { encodeTensorImage, readPngImage, type DataFormats } from './image.js';
import { encodeEvent, SessionStatus, type SummaryValue, type TbEvent } from './proto.js';
import { frameRecord } from './record.js';

/** The event file format version TensorBoard expects first in each file ('brain.Event:2': SessionLog purges apply). */
export const FILE_VERSION = 'brain.Event:2';
/** The default number of histogram buckets (TensorBoard redraws histograms with about 30). */
export const DEFAULT_HISTOGRAM_BINS = 64;

/** Does a file name look like an event file to TensorBoard (it reads every file with 'tfevents' in its name)? */
export function isEventFileName(name: string): boolean {
  return name.includes('tfevents');
}

export interface SummaryWriterOptions {
  /**
   * The first step this writer writes again after a restart (PyTorch's purge_step): the file starts with a
   * SessionLog START at this step, and TensorBoard drops the events at and after it that earlier files of
   * the same folder hold. An integer >= 0.
   */
  purgeStep?: number;
  /** Appended to the event file's name. */
  filenameSuffix?: string;
}

/** Options every add* call takes. */
export interface AddOptions {
  /** The event's time in seconds since the epoch (default: now). */
  walltime?: number;
}

const STEP_RANGE = { integer: true, min: 0 };
let fileCounter = 0;

/**
 * Writes TensorBoard event files into `logDir` (created when missing): one new file per writer, named
 * `events.out.tfevents.<seconds>.<host>.<pid>.<n>` like TensorFlow's and PyTorch's, so `tensorboard
 * --logdir` shows `logDir` as one run. Values are appended as they are added (no queue); flush() makes
 * them durable (fsync).
 *
 *   const w = new SummaryWriter('runs/exp1');
 *   w.addScalar('loss/train', 0.42, step);
 *   w.addHistogram('weights/fc', fc.weight, step);
 *   w.close();
 */
export class SummaryWriter {
  readonly logDir: string;
  /** The event file this writer appends to. */
  readonly file: string;
  private fd: number | null;

  constructor(logDir: string, opts: SummaryWriterOptions = {}) {
    if (typeof logDir !== 'string' || logDir === '')
      throw new TypeError(`SummaryWriter: logDir must be a non-empty path string, got ${String(logDir)}`);
    if (opts.purgeStep !== undefined) checkRange('SummaryWriter purgeStep', opts.purgeStep, STEP_RANGE);
    const suffix = opts.filenameSuffix ?? '';
    if (typeof suffix !== 'string' || /[/\\\0]/.test(suffix))
      throw new TypeError(`SummaryWriter: filenameSuffix must be a string without path separators, got ${String(suffix)}`);
    this.logDir = logDir;
    fs.mkdirSync(logDir, { recursive: true });
    this.file = path.join(logDir, eventFileName(logDir, suffix));
    try {
      this.fd = fs.openSync(this.file, 'wx');
    } catch (e) {
      throw new Error(`SummaryWriter: cannot create the event file ${this.file}: ${(e as Error).message}`);
    }
    const now = Date.now() / 1000;
    this.writeEvent({ wall_time: now, step: 0, file_version: FILE_VERSION });
    if (opts.purgeStep !== undefined)
      this.writeEvent({ wall_time: now, step: opts.purgeStep, session_log: { status: SessionStatus.START } });
  }

  /** A number (or a one-element tensor) as a scalar: TensorBoard's scalars dashboard. NaN and infinities are written as they are. */
  addScalar(tag: string, value: number | Tensor, globalStep = 0, opts: AddOptions = {}): void {
    let v = value;
    if (v instanceof Tensor) {
      if (v.numel() !== 1) throw new RangeError(`addScalar('${tag}'): a scalar tensor must have one element, got shape [${v.shape}]`);
      v = Number(v.item());
    }
    if (typeof v !== 'number')
      throw new TypeError(`addScalar('${tag}'): the value must be a number or a one-element tensor, got ${typeof v}`);
    this.addValue({ tag: checkTag(tag, 'addScalar'), simple_value: v }, globalStep, opts, 'addScalar');
  }

  /**
   * The distribution of a tensor's (or an array's) values: TensorBoard's histograms and distributions
   * dashboards. `bins` equal-width buckets between the smallest and largest finite value (default 64,
   * at most 10000); NaN and infinities are left out, and a RangeError if no value is finite.
   */
  addHistogram(tag: string, values: Tensor | ArrayLike<number>, globalStep = 0, opts: AddOptions & { bins?: number } = {}): void {
    checkTag(tag, 'addHistogram');
    const bins = opts.bins ?? DEFAULT_HISTOGRAM_BINS;
    checkRange(`addHistogram('${tag}') bins`, bins, { integer: true, min: 1, max: MAX_HISTOGRAM_BINS });
    let arr: ArrayLike<number>;
    if (values instanceof Tensor) {
      if (values.dtype === 'int64' || values.dtype === 'bool') {
        const f = values.to('float64');
        try {
          arr = f.toTypedArray() as Float64Array;
        } finally {
          f.dispose();
        }
      } else arr = values.toTypedArray() as ArrayLike<number>;
    } else if (values && typeof values === 'object' && typeof (values as ArrayLike<number>).length === 'number') {
      arr = values;
      for (let i = 0; i < arr.length; i++)
        if (typeof arr[i] !== 'number') throw new TypeError(`addHistogram('${tag}'): value ${i} is not a number (${typeof arr[i]})`);
    } else throw new TypeError(`addHistogram('${tag}'): values must be a tensor or an array of numbers`);
    let histo;
    try {
      histo = makeHistogram(arr, bins);
    } catch (e) {
      throw new RangeError(`addHistogram('${tag}'): ${(e as Error).message}`);
    }
    this.addValue({ tag, histo }, globalStep, opts, 'addHistogram');
  }

  /**
   * An image: TensorBoard's images dashboard. A tensor laid out as `dataformats` ('CHW' by default, or
   * 'HWC', 'HW'; 1, 3 or 4 channels; uint8 0-255 or floating point 0-1), or the bytes of a PNG file.
   */
  addImage(tag: string, img: Tensor | Uint8Array, globalStep = 0, opts: AddOptions & { dataformats?: DataFormats } = {}): void {
    checkTag(tag, 'addImage');
    let enc;
    if (img instanceof Tensor) enc = encodeTensorImage(img, opts.dataformats);
    else if (img instanceof Uint8Array) enc = readPngImage(img, `addImage('${tag}')`);
    else throw new TypeError(`addImage('${tag}'): the image must be a tensor or the bytes of a PNG file (a Uint8Array or Buffer)`);
    this.addValue(
      { tag, image: { height: enc.height, width: enc.width, colorspace: enc.colorspace, encoded_image_string: enc.png } },
      globalStep,
      opts,
      'addImage',
    );
  }

  /** Text (rendered as Markdown): TensorBoard's text dashboard. */
  addText(tag: string, text: string, globalStep = 0, opts: AddOptions = {}): void {
    checkTag(tag, 'addText');
    if (typeof text !== 'string') throw new TypeError(`addText('${tag}'): the text must be a string, got ${typeof text}`);
    this.addValue(
      {
        tag,
        // The text plugin's metadata; its content is an empty TextPluginData (version 0).
        metadata: { plugin_data: { plugin_name: 'text', content: new Uint8Array(0) } },
        tensor: { dtype: 7 /* DT_STRING */, tensor_shape: { dim: [{ size: 1 }] }, string_val: [Buffer.from(text, 'utf8')] },
      },
      globalStep,
      opts,
      'addText',
    );
  }

  /** Makes everything written so far durable (fsync). Events are written as they are added; this does not change what a reader sees. */
  flush(): void {
    if (this.fd !== null) fs.fsyncSync(this.fd);
  }

  /** Flushes and closes the event file; the writer cannot be used afterwards. Closing twice is allowed. */
  close(): void {
    if (this.fd === null) return;
    try {
      fs.fsyncSync(this.fd);
    } finally {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  get closed(): boolean {
    return this.fd === null;
  }

  private addValue(value: SummaryValue, globalStep: number, opts: AddOptions, what: string): void {
    checkRange(`${what}('${value.tag}') globalStep`, globalStep, STEP_RANGE);
    const walltime = opts.walltime ?? Date.now() / 1000;
    checkRange(`${what}('${value.tag}') walltime`, walltime, {});
    this.writeEvent({ wall_time: walltime, step: globalStep, summary: { value: [value] } });
  }

  private writeEvent(ev: TbEvent): void {
    if (this.fd === null) throw new Error(`SummaryWriter(${this.logDir}): write after close`);
    fs.writeSync(this.fd, frameRecord(encodeEvent(ev)));
  }
}

function checkTag(tag: string, what: string): string {
  if (typeof tag !== 'string' || tag === '')
    throw new TypeError(`${what}: the tag must be a non-empty string, got ${typeof tag === 'string' ? "''" : String(tag)}`);
  return tag;
}

/**
 * A new event file's name. TensorBoard reads a folder's event files in name order, so the name must sort
 * after every event file already there (a restart's events come after the first run's): when the clock
 * second is not past the last file's, the seconds field is set one past it.
 */
function eventFileName(dir: string, suffix: string): string {
  let sec = Math.floor(Date.now() / 1000);
  const names = fs.readdirSync(dir).filter(isEventFileName).sort();
  const m = /^events\.out\.tfevents\.(\d+)\./.exec(names.at(-1) ?? '');
  if (m && m[1].length === String(sec).length && Number(m[1]) >= sec) sec = Number(m[1]) + 1;
  fileCounter++;
  return `events.out.tfevents.${sec}.${os.hostname()}.${process.pid}.${fileCounter}${suffix}`;
}
