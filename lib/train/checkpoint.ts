// Checkpoint files: tensors in one safetensors file, and the rest in a JSON sidecar (checkpoint.json)
// that names that file and its checksum. This module is the file format (what a trainer puts in them
// is lib/train/state.ts). Writes are atomic and ordered so that a crash at any moment leaves the last
// good checkpoint loadable:
//   1. checkpoint-eNNNN-sMMMMMM.safetensors written to a temp name, fsynced, renamed;
//   2. checkpoint.json written to a temp name, fsynced, renamed (this is the commit point);
//   3. only then are older weight files removed.
// Reading checks the sidecar's envelope (format, a known version, integer epoch and step in range, a
// weights file name of this form inside the folder, the checksum) before anything else is read; every
// problem is a BadFileError naming the file and the key.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import { describeRange, inRange, type NumberRange } from '../core/range.js';
import { JsonFloat, parseStrictJson, type JsonValue } from '../io/json.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Tensor } from '../tensor/tensor.js';
import { isAtomicTemp, writeJsonAtomic } from '../core/fs.js';

export const CHECKPOINT_JSON = 'checkpoint.json';
/** The name of a checkpoint's weights file. */
export const CHECKPOINT_WEIGHTS = /^checkpoint-e\d+-s\d+\.safetensors$/;
/** The sidecar versions this reader knows. */
export const CHECKPOINT_VERSION = 1;
/** The largest checkpoint.json read (the history of a very long run is a few MB). */
export const MAX_CHECKPOINT_JSON_BYTES = 256 * 2 ** 20;

/** Is `name` a temporary file of an interrupted checkpoint write (the sidecar's or a weights file's)? */
export function isCheckpointTemp(name: string): boolean {
  const i = name.lastIndexOf('.tmp-');
  if (i < 0) return false;
  const base = name.slice(0, i);
  return (base === CHECKPOINT_JSON || CHECKPOINT_WEIGHTS.test(base)) && isAtomicTemp(name, base);
}

export interface CheckpointMeta {
  format: 'residual-checkpoint';
  version: 1;
  /** Epochs completed. */
  epoch: number;
  globalStep: number;
  weights: string;
  /** sha256 of the weights file, checked on load. */
  sha256: string;
  savedAt: string;
  [key: string]: unknown;
}

function sha256(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 22);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (!n) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

// The sidecar goes through the package's one atomic-write helper (temp file, fsync, rename, directory
// fsync). Re-exported here because it was part of this module's API.
export { writeJsonAtomic };

/** Test hook: throw at a named point of the save sequence to simulate a crash there. */
export type CrashPoint = 'after-weights' | 'after-json' | undefined;

export function saveCheckpoint(
  dir: string,
  tensors: Record<string, Tensor>,
  meta: { epoch: number; globalStep: number; [key: string]: unknown },
  opts: { crashAt?: CrashPoint } = {},
): CheckpointMeta {
  fs.mkdirSync(dir, { recursive: true });
  const weights = `checkpoint-e${String(meta.epoch).padStart(4, '0')}-s${String(meta.globalStep).padStart(7, '0')}.safetensors`;
  const wpath = path.join(dir, weights);
  saveSafetensors(tensors, wpath, { format: 'residual-checkpoint', epoch: String(meta.epoch) });
  if (opts.crashAt === 'after-weights') throw new Error('simulated crash after writing the weights');
  const full = {
    ...meta,
    format: 'residual-checkpoint',
    version: 1,
    weights,
    sha256: sha256(wpath),
    savedAt: new Date().toISOString(),
  } as CheckpointMeta;
  writeJsonAtomic(path.join(dir, CHECKPOINT_JSON), full);
  if (opts.crashAt === 'after-json') throw new Error('simulated crash after writing the sidecar');
  // Only now (the sidecar's rename is durable) are older weights and our own stale temp files removed.
  for (const f of fs.readdirSync(dir)) {
    if (f !== weights && CHECKPOINT_WEIGHTS.test(f)) fs.rmSync(path.join(dir, f), { force: true });
    if (isCheckpointTemp(f) && !f.includes(`.tmp-${process.pid}-`)) fs.rmSync(path.join(dir, f), { force: true });
  }
  return full;
}

export function hasCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, CHECKPOINT_JSON));
}

// ---- reading, with every value checked ---------------------------------------------------------
// A few typed checks of plain JSON values, written here rather than taken from a schema library: the
// envelope has seven keys, and the rest of a run's sidecar is checked against the live trainer (its
// model, optimizer and schedule) and the config spec (lib/train/config.ts), which no schema expresses.

function shortJson(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'number' ? String(v) : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const NOTHING = Symbol('nothing');

/** Checks values of one JSON file; every failure is a BadFileError `<file>: <key path> must be ..., got ...`. */
export class JsonChecker {
  constructor(readonly file: string) {}

  fail(at: string, what: string, got: unknown = NOTHING): never {
    throw new BadFileError(`${this.file}: ${at} ${what}${got === NOTHING ? '' : `, got ${shortJson(got)}`}`, { path: this.file });
  }
  object(v: unknown, at: string): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(at, 'must be an object', v);
    return v as Record<string, unknown>;
  }
  array(v: unknown, at: string, maxLength = Infinity): unknown[] {
    if (!Array.isArray(v)) this.fail(at, 'must be an array', v);
    if ((v as unknown[]).length > maxLength) this.fail(at, `must have at most ${maxLength} elements, has ${(v as unknown[]).length}`);
    return v as unknown[];
  }
  string(v: unknown, at: string, pattern?: RegExp, what?: string): string {
    if (typeof v !== 'string') this.fail(at, 'must be a string', v);
    if (pattern && !pattern.test(v as string)) this.fail(at, `must be ${what ?? `like ${String(pattern)}`}`, v);
    return v as string;
  }
  number(v: unknown, at: string, range: NumberRange = {}): number {
    if (typeof v !== 'number' || !inRange(v, range)) this.fail(at, `must be ${describeRange(range)}`, v);
    return v as number;
  }
  /** A safe integer in [min, max] (max defaults to Number.MAX_SAFE_INTEGER). */
  integer(v: unknown, at: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    return this.number(v, at, { integer: true, min, max });
  }
  boolean(v: unknown, at: string): boolean {
    if (typeof v !== 'boolean') this.fail(at, 'must be true or false', v);
    return v as boolean;
  }
  /** An object with only the keys `allowed` and every key of `required`. */
  keys(o: Record<string, unknown>, at: string, allowed: readonly string[], required: readonly string[] = allowed): void {
    for (const k of Object.keys(o))
      if (!allowed.includes(k)) this.fail(`${at ? `${at}.` : ''}${k}`, 'is not a key of this format (unknown key)');
    for (const k of required) if (!Object.hasOwn(o, k)) this.fail(`${at ? `${at}.` : ''}${k}`, 'is missing');
  }
}

/**
 * Plain JS values from the strict JSON reader: objects as ordinary objects (own properties, so a key
 * such as '__proto__' is data), numbers written with a fraction or exponent as numbers, integers too
 * large for a double as numbers (then refused by the range checks, which want safe integers).
 */
function plain(v: JsonValue): unknown {
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof JsonFloat) return v.value;
  if (typeof v === 'bigint') return Number(v);
  return v;
}

/** Reads a JSON file whole: a regular file (not a link, FIFO or device) of at most `maxBytes`, strict JSON. */
export function readJsonFile(file: string, maxBytes = MAX_CHECKPOINT_JSON_BYTES): unknown {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isFile()) throw new BadFileError(`${file} is not a regular file (a link, folder or special file is not read)`, { path: file });
  if (st.size > maxBytes)
    throw new BadFileError(`${file} is ${st.size} bytes, over the limit of ${maxBytes} for this file`, { path: file });
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return plain(parseStrictJson(text));
  } catch (e) {
    throw new BadFileError(`${file} is not valid JSON (${(e as Error).message})`, { path: file, cause: e });
  }
}

/** The envelope keys every checkpoint.json has. */
export const CHECKPOINT_ENVELOPE_KEYS = ['format', 'version', 'epoch', 'globalStep', 'weights', 'sha256', 'savedAt'] as const;

/**
 * Checks a parsed checkpoint.json's envelope: format, a known version, epoch and globalStep integers in
 * range, a weights file name of the form saveCheckpoint writes (so inside the folder: no path
 * separators, no '..') naming this epoch and step, a sha256, savedAt. Other keys are the writer's
 * (lib/train/state.ts checks a trainer's). Throws BadFileError naming the key.
 */
export function checkCheckpointEnvelope(v: unknown, file: string): CheckpointMeta {
  const c = new JsonChecker(file);
  const o = c.object(v, 'the checkpoint');
  if (o.format !== 'residual-checkpoint') c.fail('format', "must be 'residual-checkpoint' (not a residual checkpoint)", o.format);
  c.keys(o, '', Object.keys(o), CHECKPOINT_ENVELOPE_KEYS);
  if (o.version !== CHECKPOINT_VERSION)
    c.fail('version', `must be ${CHECKPOINT_VERSION} (the version this residual reads; a newer residual wrote this file?)`, o.version);
  const epoch = c.integer(o.epoch, 'epoch');
  const step = c.integer(o.globalStep, 'globalStep');
  const w = c.string(
    o.weights,
    'weights',
    CHECKPOINT_WEIGHTS,
    "a file name like 'checkpoint-e0001-s0000100.safetensors' in the checkpoint's folder",
  );
  const m = /^checkpoint-e(\d+)-s(\d+)\./.exec(w)!;
  if (Number(m[1]) !== epoch || Number(m[2]) !== step)
    c.fail('weights', `must be the weights file of epoch ${epoch}, step ${step} (the file's own epoch and globalStep)`, w);
  c.string(o.sha256, 'sha256', /^[0-9a-f]{64}$/, '64 lowercase hex digits');
  c.string(o.savedAt, 'savedAt');
  return o as CheckpointMeta;
}

/** The path of a checkpoint's sidecar: `target` is its folder, or the path of its checkpoint.json. */
export function checkpointJsonPath(target: string): string {
  return target.endsWith('.json') ? target : path.join(target, CHECKPOINT_JSON);
}

/** Reads and checks a checkpoint.json (the envelope; see checkCheckpointEnvelope) without reading the weights. */
export function readCheckpointMeta(target: string): { meta: CheckpointMeta; file: string; dir: string } {
  const file = checkpointJsonPath(target);
  if (!fs.existsSync(file)) throw new Error(`no checkpoint at ${target}: ${file} does not exist`);
  return { meta: checkCheckpointEnvelope(readJsonFile(file), file), file, dir: path.dirname(file) };
}

/** Checks a checkpoint's weights file against its sidecar (a regular file in the folder, the recorded sha256) and reads it. */
export function loadCheckpointTensors(meta: CheckpointMeta, file: string): Record<string, Tensor> {
  const wpath = path.join(path.dirname(file), meta.weights);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(wpath);
  } catch {
    throw new BadFileError(`${file} names ${meta.weights}, which is missing`, { path: file });
  }
  if (!st.isFile()) throw new BadFileError(`${file} names ${meta.weights}, which is not a regular file`, { path: file });
  const digest = sha256(wpath);
  if (digest !== meta.sha256)
    throw new BadFileError(`${wpath} does not match the checksum recorded in ${file} (corrupt or replaced)`, { path: wpath });
  return loadSafetensors(wpath).tensors;
}

/** Loads the last committed checkpoint of `target` (a folder, or the path of its checkpoint.json), checked. */
export function loadCheckpoint(target: string): { meta: CheckpointMeta; tensors: Record<string, Tensor>; dir: string } {
  const { meta, file, dir } = readCheckpointMeta(target);
  return { meta, tensors: loadCheckpointTensors(meta, file), dir };
}
