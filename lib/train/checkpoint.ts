// Training checkpoints: every tensor (model, optimizer state, RNG states) in one safetensors file, and
// the rest (epoch, config, schedule, history) in a JSON sidecar that names that file. Writes are atomic
// and ordered so that a crash at any moment leaves the last good checkpoint loadable:
//   1. checkpoint-eNNNN-sMMMMMM.safetensors written to a temp name, fsynced, renamed;
//   2. checkpoint.json written to a temp name, fsynced, renamed (this is the commit point);
//   3. only then are older weight files removed.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Tensor } from '../tensor/tensor.js';
import { isAtomicTemp, writeJsonAtomic } from '../core/fs.js';

export const CHECKPOINT_JSON = 'checkpoint.json';
/** The name of a checkpoint's weights file. */
export const CHECKPOINT_WEIGHTS = /^checkpoint-e\d+-s\d+\.safetensors$/;

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
  const full = { ...meta, format: 'residual-checkpoint', version: 1, weights, sha256: sha256(wpath), savedAt: new Date().toISOString() } as CheckpointMeta;
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

/** Loads the last committed checkpoint of `dir` (a folder, or the path of its checkpoint.json). */
export function loadCheckpoint(target: string): { meta: CheckpointMeta; tensors: Record<string, Tensor>; dir: string } {
  const jsonPath = target.endsWith('.json') ? target : path.join(target, CHECKPOINT_JSON);
  const dir = path.dirname(jsonPath);
  if (!fs.existsSync(jsonPath)) throw new Error(`no checkpoint at ${target}: ${jsonPath} does not exist`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  } catch (e) {
    throw new Error(`${jsonPath} is not valid JSON (${(e as Error).message})`);
  }
  if (meta.format !== 'residual-checkpoint') throw new Error(`${jsonPath} is not a residual checkpoint (format ${String(meta.format)})`);
  const wpath = path.join(dir, meta.weights);
  if (!fs.existsSync(wpath)) throw new Error(`${jsonPath} names ${meta.weights}, which is missing`);
  const digest = sha256(wpath);
  if (digest !== meta.sha256) throw new Error(`${wpath} does not match the checksum recorded in ${jsonPath} (corrupt or replaced)`);
  return { meta, tensors: loadSafetensors(wpath).tensors, dir };
}
