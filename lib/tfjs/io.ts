// `file://` model save and load handlers for TensorFlow.js, as tfjs-node has them:
//   await model.save('file:///path/to/dir')          -> dir/model.json + dir/weights.bin
//   await tf.loadLayersModel('file:///path/to/dir/model.json')
// model.json is tf's standard format (modelTopology, weightsManifest, training config, ...), so files
// written here load in tfjs-node or the browser and vice versa. Both files are written atomically
// (lib/core/fs.ts): weights.bin first, then model.json, so a crash never leaves a model.json whose
// weights are missing or partial.
//
// Loading treats model.json and the weights as untrusted input. Every failure is a BadFileError that names
// the file and what is wrong with it:
//   - a weights path must be relative and stay inside the model's folder, after following symlinks
//     (`../secret.bin`, `/etc/passwd` or a link out of the folder are refused, not read);
//   - only regular files are read (a device such as /dev/zero, a FIFO, a socket or a folder is refused:
//     each file is opened without blocking and checked with fstat before any read), each file at most
//     once, and the weights as exactly the bytes the manifest declares: the sizes are checked against
//     the manifest before a byte is read, and the file is read to exactly its size;
//   - the manifest is checked as tfjs will decode it (names, shapes, dtypes, quantization, string
//     lengths), so a model that loads here decodes, and no weight is larger than a tensor may be;
//   - everything is read asynchronously (libuv's thread pool): a slow or stuck file never blocks the
//     event loop.
import { constants as bufferConstants } from 'node:buffer';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { io } from '@tensorflow/tfjs-core';
import { BadFileError } from '../core/errors.js';
import { writeFileAtomic } from '../core/fs.js';
import { MAX_TENSOR_BYTES } from './kernels/util.js';

const SCHEME = 'file://';
const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

/** The largest model.json read: the longest string V8 makes (JSON.parse needs it as one string). */
const MAX_JSON_BYTES: number = bufferConstants.MAX_STRING_LENGTH;
/** The largest single weights file and the largest single weight: one tensor's limit (kernels/util.ts). */
const MAX_FILE_BYTES: number = MAX_TENSOR_BYTES;
/**
 * The most bytes of weights one model may load, all files together: half this machine's memory (tfjs
 * decodes a copy of them into tensors). A folder of files whose sizes pass (sparse files cost nothing
 * on disk) is refused from its sizes, before anything is read.
 */
function maxModelBytes(): number {
  return Math.floor(os.totalmem() / 2);
}

type ModelArtifacts = io.ModelArtifacts;
type WeightsManifestEntry = io.WeightsManifestEntry;

/** The path of a file:// URL (plain paths are accepted too). */
function pathOf(url: string): string {
  const p = url.startsWith(SCHEME) ? url.slice(SCHEME.length) : url;
  if (p.length === 0) throw new Error(`file:// handler: empty path in ${JSON.stringify(url)}`);
  return path.resolve(p);
}

function weightDataBytes(d: io.WeightData): Uint8Array {
  const buf = Array.isArray(d) ? io.CompositeArrayBuffer.join(d) : d;
  return new Uint8Array(buf);
}

/** Saves model artifacts into `dir` as model.json + weights.bin (tfjs-node's layout). */
export class FileSaveHandler implements io.IOHandler {
  readonly dir: string;
  constructor(url: string) {
    this.dir = pathOf(url);
  }
  async save(artifacts: ModelArtifacts): Promise<io.SaveResult> {
    if (artifacts.modelTopology instanceof ArrayBuffer)
      throw new Error('file:// save: binary model topologies (ArrayBuffer) are not supported; save a layers or graph model JSON topology');
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(this.dir);
    } catch {
      st = undefined;
    }
    if (st && !st.isDirectory())
      throw new Error(
        `file:// save: ${this.dir} exists and is not a directory (save takes a directory: it writes ${MODEL_JSON} and ${WEIGHTS_BIN} into it)`,
      );
    const weightsPath = path.join(this.dir, WEIGHTS_BIN);
    const modelPath = path.join(this.dir, MODEL_JSON);
    const weights = artifacts.weightData === undefined ? new Uint8Array(0) : weightDataBytes(artifacts.weightData);
    const modelJSON: Record<string, unknown> = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
    };
    if (artifacts.trainingConfig !== undefined) modelJSON.trainingConfig = artifacts.trainingConfig;
    if (artifacts.signature !== undefined) modelJSON.signature = artifacts.signature;
    if (artifacts.userDefinedMetadata !== undefined) modelJSON.userDefinedMetadata = artifacts.userDefinedMetadata;
    if (artifacts.modelInitializer !== undefined) modelJSON.modelInitializer = artifacts.modelInitializer;
    if (artifacts.initializerSignature !== undefined) modelJSON.initializerSignature = artifacts.initializerSignature;
    const json = JSON.stringify(modelJSON);
    // Weights first: model.json (the file a loader opens) only ever names complete weights.
    writeFileAtomic(weightsPath, weights);
    writeFileAtomic(modelPath, json);
    return {
      modelArtifactsInfo: {
        dateSaved: new Date(),
        modelTopologyType: 'JSON',
        modelTopologyBytes: Buffer.byteLength(json, 'utf8'),
        weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? []), 'utf8'),
        weightDataBytes: weights.byteLength,
      },
    };
  }
}

// ---- reading files: regular files only, asynchronously, exactly the expected bytes ----

function bad(message: string, file: string, cause?: unknown): BadFileError {
  return new BadFileError(`file:// load: ${message}`, { path: file, cause });
}

/** What a non-regular file is, for messages. */
function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

// Opening without blocking: a FIFO with no writer would otherwise hold the open (and a libuv thread)
// forever. O_NOCTTY: a terminal device never becomes the controlling terminal. (0 where undefined.)
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0) | (fs.constants.O_NOCTTY ?? 0);

/** An opened regular file: its handle and size (checked with fstat on the open descriptor). */
interface Opened {
  file: string;
  fh: fsp.FileHandle;
  size: number;
  dev: number;
  ino: number;
}

/** Opens `file` for reading if it is a regular file; `what` names it in errors ('model file', 'weights file'). */
async function openRegular(file: string, what: string, extraFlags = 0): Promise<Opened> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, OPEN_FLAGS | extraFlags);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw bad(`${what} ${file} does not exist`, file, e);
    if (err.code === 'ELOOP') throw bad(`${what} ${file} is a symbolic link loop, or a link where none may be`, file, e);
    if (err.code === 'ENXIO') throw bad(`${what} ${file} is not a regular file (a device or socket with nothing behind it)`, file, e);
    throw bad(`cannot open ${what} ${file}: ${err.message}`, file, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      const hint = st.isDirectory() && what === 'model file' ? ` (give the path of ${MODEL_JSON})` : '';
      throw bad(`${what} ${file} is ${kindOf(st)}${hint}: only regular files are read`, file);
    }
    return { file, fh, size: st.size, dev: st.dev, ino: st.ino };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

/** Reads exactly `o.size` bytes from an opened regular file (a file that changes size meanwhile is refused). */
async function readExactly(o: Opened, what: string): Promise<Uint8Array> {
  const buf = new Uint8Array(o.size);
  let off = 0;
  try {
    while (off < o.size) {
      const { bytesRead } = await o.fh.read(buf, off, o.size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
  } catch (e) {
    throw bad(`cannot read ${what} ${o.file}: ${(e as Error).message}`, o.file, e);
  }
  if (off !== o.size) throw bad(`${what} ${o.file} changed while it was read (${o.size} bytes when opened, ${off} read)`, o.file);
  return buf;
}

// ---- weights paths: relative, inside the model's folder ----

function isInside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/**
 * The real path of weights path `rel` of model `file` (folder `dir`, real path `realDir`): refused unless
 * it is relative and it (and, after following symlinks, its target) lies inside the model's folder.
 */
async function resolveWeightsPath(file: string, dir: string, realDir: string, rel: string, where: string): Promise<string> {
  if (rel.includes('\0')) throw bad(`${file}: ${where} ${JSON.stringify(rel)} holds a NUL character`, file);
  if (path.isAbsolute(rel) || path.win32.isAbsolute(rel))
    throw bad(
      `${file}: ${where} ${JSON.stringify(rel)} is an absolute path: weights paths are relative to the model's folder ${dir}`,
      file,
    );
  const p = path.resolve(dir, rel);
  if (!isInside(dir, p))
    throw bad(`${file}: ${where} ${JSON.stringify(rel)} resolves to ${p}, which is not inside the model's folder ${dir}: refused`, file);
  let real: string;
  try {
    real = await fsp.realpath(p);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw bad(`weights file ${p} does not exist (${where} of ${file})`, p, e);
    throw bad(`cannot resolve weights file ${p} (${where} of ${file}): ${err.message}`, p, e);
  }
  if (!isInside(realDir, real))
    throw bad(
      `${file}: ${where} ${JSON.stringify(rel)} is a symbolic link to ${real}, outside the model's folder ${realDir}: refused (copy the file into the folder)`,
      p,
    );
  return real;
}

// ---- the manifest, checked as tfjs decodes it ----

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8 };
const QUANT_BYTES: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };

/**
 * Checks one manifest entry the way io.decodeWeights reads it, and returns its byte count (null for a
 * string weight, whose size is in its data).
 */
function checkEntry(file: string, where: string, w: unknown): number | null {
  const fail = (what: string): never => {
    throw bad(`${file}: ${where} ${what}`, file);
  };
  if (w === null || typeof w !== 'object' || Array.isArray(w))
    return fail(`must be an object with name, shape and dtype, got ${JSON.stringify(w)?.slice(0, 200)}`);
  const e = w as Record<string, unknown>;
  if (typeof e.name !== 'string') fail(`has no string 'name'`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
    fail(
      `('${e.name}') has ${e.shape === undefined ? 'no shape' : `a bad shape ${JSON.stringify(e.shape)?.slice(0, 200)}`}: an array of non-negative integers is needed`,
    );
  const shape = e.shape as number[];
  const n = shape.some((d) => d === 0) ? 0 : shape.reduce((a, b) => a * b, 1);
  const dtype = e.dtype;
  if (typeof dtype !== 'string' || (dtype !== 'string' && DTYPE_BYTES[dtype] === undefined))
    fail(`('${e.name}') has an unknown dtype ${JSON.stringify(dtype)}: float32, int32, bool, complex64 or string`);
  let per: number;
  if ('quantization' in e) {
    const q = e.quantization as Record<string, unknown> | null;
    if (q === null || typeof q !== 'object' || Array.isArray(q)) return fail(`('${e.name}') has a bad quantization ${JSON.stringify(q)}`);
    const qd = q.dtype as string;
    if (typeof qd !== 'string' || QUANT_BYTES[qd] === undefined)
      fail(`('${e.name}') has an unknown quantization dtype ${JSON.stringify(qd)}: uint8, uint16 or float16`);
    if (qd === 'float16' ? dtype !== 'float32' : dtype !== 'float32' && dtype !== 'int32')
      fail(`('${e.name}') is ${dtype}, which ${qd} quantization does not support`);
    if (
      qd !== 'float16' &&
      !(typeof q.min === 'number' && Number.isFinite(q.min) && typeof q.scale === 'number' && Number.isFinite(q.scale))
    )
      fail(`('${e.name}') is ${qd}-quantized without finite numbers min and scale`);
    per = QUANT_BYTES[qd];
  } else if (dtype === 'string') {
    if (n * 4 > MAX_FILE_BYTES) fail(`('${e.name}') declares ${n} strings, more than a weights file can hold`);
    return null;
  } else per = DTYPE_BYTES[dtype as string];
  const bytes = n * per;
  // Each weight becomes one tensor (decoded from one ArrayBuffer): at most the largest ArrayBuffer.
  if (bytes > MAX_FILE_BYTES)
    fail(
      `('${e.name}') declares ${shape.join('x')} ${dtype} values, ${bytes} bytes: more than one weight may hold (${MAX_FILE_BYTES} bytes, a tensor's limit: RESIDUAL_TFJS_MAX_TENSOR_BYTES)`,
    );
  return bytes;
}

/** A byte reader over a group's files, as one concatenated buffer. */
function uint32At(parts: Uint8Array[], offset: number): number | null {
  const b = new Uint8Array(4);
  let k = 0;
  let o = offset;
  for (const p of parts) {
    if (o >= p.length) {
      o -= p.length;
      continue;
    }
    while (k < 4 && o < p.length) b[k++] = p[o++];
    o = 0;
    if (k === 4) break;
  }
  return k === 4 ? new DataView(b.buffer).getUint32(0, true) : null;
}

/** Walks a group's weights over its data (string weights by their length prefixes); returns the bytes used. */
function walkGroup(file: string, gi: number, weights: unknown[], sizes: (number | null)[], parts: Uint8Array[], total: number): number {
  let off = 0;
  for (let wi = 0; wi < weights.length; wi++) {
    const s = sizes[wi];
    if (s !== null) {
      off += s;
      continue;
    }
    const w = weights[wi] as { name: string; shape: number[] };
    const n = w.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < n; i++) {
      const len = uint32At(parts, off);
      if (len === null || off + 4 + len > total)
        throw bad(
          `${file}: weightsManifest[${gi}].weights[${wi}] ('${w.name}'): string ${i} of ${n} runs past the end of the group's ${total} bytes of weights`,
          file,
        );
      off += 4 + len;
    }
  }
  return off;
}

/** Loads model.json and the weight files its manifest names (inside model.json's folder). */
export class FileLoadHandler implements io.IOHandler {
  /** The path given: model.json, or the folder holding it. */
  readonly modelPath: string;
  constructor(url: string) {
    this.modelPath = pathOf(url);
  }

  async load(): Promise<ModelArtifacts> {
    let file = this.modelPath;
    // A directory stands for its model.json (the layout save() writes).
    const st = await fsp.stat(file).catch(() => null);
    if (st?.isDirectory()) file = path.join(file, MODEL_JSON);
    const json = await this.readModelJson(file);
    if (json.modelTopology === undefined || json.modelTopology === null) throw bad(`${file} has no modelTopology`, file);
    const manifest = json.weightsManifest;
    if (manifest !== undefined && manifest !== null && !Array.isArray(manifest))
      throw bad(`${file}: weightsManifest must be an array`, file);
    return io.getModelArtifactsForJSON(json, (m) => this.loadWeights(file, m as unknown[]));
  }

  private async readModelJson(file: string): Promise<io.ModelJSON> {
    const o = await openRegular(file, 'model file');
    let text: string;
    try {
      if (o.size > MAX_JSON_BYTES)
        throw bad(`model file ${file} holds ${o.size} bytes, more than a JSON file may (${MAX_JSON_BYTES})`, file);
      text = Buffer.from((await readExactly(o, 'model file')).buffer).toString('utf8');
    } finally {
      await o.fh.close().catch(() => undefined);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw bad(`${file} is not valid JSON: ${(e as Error).message}`, file, e);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad(`${file} does not hold a model JSON object`, file);
    return json as io.ModelJSON;
  }

  private async loadWeights(file: string, manifest: unknown[]): Promise<[WeightsManifestEntry[], io.WeightData]> {
    const dir = path.dirname(file);
    let realDir: string;
    try {
      realDir = await fsp.realpath(dir);
    } catch (e) {
      throw bad(`cannot resolve the model's folder ${dir}: ${(e as Error).message}`, file, e);
    }
    // First every check that needs no data: the manifest, the paths, and the file sizes against it.
    const groups: { weights: unknown[]; sizes: (number | null)[]; files: Opened[] }[] = [];
    const seen = new Map<string, string>();
    const opened: Opened[] = [];
    try {
      for (const [gi, group] of manifest.entries()) {
        const g = group as { paths?: unknown; weights?: unknown } | null;
        if (!g || typeof g !== 'object' || !Array.isArray(g.paths) || !Array.isArray(g.weights))
          throw bad(`${file}: weightsManifest[${gi}] needs 'paths' and 'weights' arrays`, file);
        const sizes = g.weights.map((w, wi) => checkEntry(file, `weightsManifest[${gi}].weights[${wi}]`, w));
        const files: Opened[] = [];
        for (const [pi, rel] of g.paths.entries()) {
          const where = `weightsManifest[${gi}].paths[${pi}]`;
          if (typeof rel !== 'string' || rel.length === 0)
            throw bad(`${file}: ${where} is not a path: ${JSON.stringify(rel)?.slice(0, 200)}`, file);
          const real = await resolveWeightsPath(file, dir, realDir, rel, where);
          // O_NOFOLLOW: the path was resolved just above; a link swapped in since is refused.
          const o = await openRegular(real, 'weights file', fs.constants.O_NOFOLLOW ?? 0);
          opened.push(o);
          const key = `${o.dev}:${o.ino}`;
          const prev = seen.get(key);
          if (prev !== undefined)
            throw bad(`${file}: ${where} names ${real}, which the manifest already names (${prev}): each weights file is read once`, file);
          seen.set(key, where);
          if (o.size > MAX_FILE_BYTES)
            throw bad(`weights file ${real} holds ${o.size} bytes, more than one weights file may (${MAX_FILE_BYTES})`, real);
          files.push(o);
        }
        const have = files.reduce((a, f) => a + f.size, 0);
        const fixed = sizes.reduce<number>((a, s) => a + (s ?? 0), 0);
        const strings = sizes.filter((s) => s === null).length;
        const names = files.map((f) => f.file).join(', ') || '(no files)';
        // The group's weights are the concatenation of its files: with no string weight, exactly the
        // declared bytes; with strings, at least the fixed part and each string's 4-byte length.
        if (strings === 0 ? have !== fixed : have < fixed)
          throw bad(
            `weights file ${names} holds ${have} bytes but the manifest in ${file} describes ${fixed} bytes of weights${strings ? ' (plus strings)' : ''} for weightsManifest[${gi}]`,
            files[0]?.file ?? file,
          );
        groups.push({ weights: g.weights, sizes, files });
      }
      const total = opened.reduce((a, o) => a + o.size, 0);
      const max = maxModelBytes();
      if (total > max)
        throw bad(
          `the weights files of ${file} hold ${total} bytes in all, more than a model may load on this machine (${max} bytes: half its memory)`,
          file,
        );
      // Then the data, asynchronously, each file to exactly its checked size.
      const specs: WeightsManifestEntry[] = [];
      const buffers: ArrayBuffer[] = [];
      for (const [gi, g] of groups.entries()) {
        const parts: Uint8Array[] = [];
        for (const o of g.files) parts.push(await readExactly(o, 'weights file'));
        const total = parts.reduce((a, p) => a + p.length, 0);
        if (g.sizes.some((s) => s === null)) {
          const used = walkGroup(file, gi, g.weights, g.sizes, parts, total);
          if (used !== total)
            throw bad(
              `weights file ${g.files.map((f) => f.file).join(', ')} holds ${total} bytes but the manifest in ${file} describes ${used} bytes of weights for weightsManifest[${gi}]`,
              g.files[0]?.file ?? file,
            );
        }
        specs.push(...(g.weights as WeightsManifestEntry[]));
        for (const p of parts) buffers.push(p.buffer as ArrayBuffer);
      }
      // (one file, as save() writes: one ArrayBuffer; several: tfjs's list of buffers, not a concatenated copy)
      return [specs, buffers.length === 1 ? buffers[0] : buffers];
    } finally {
      await Promise.all(opened.map((o) => o.fh.close().catch(() => undefined)));
    }
  }
}

/** tf.io.fileSystem-like factory: a handler that saves to a directory / loads a model.json. */
export function fileSystem(url: string): io.IOHandler {
  const save = new FileSaveHandler(url);
  const load = new FileLoadHandler(url);
  return { save: (a) => save.save(a), load: () => load.load() };
}

function router(url: string | string[]): io.IOHandler {
  // tf's routers answer null for URLs they do not handle (IORouter's type says IOHandler).
  if (typeof url !== 'string' || !url.startsWith(SCHEME)) return null as unknown as io.IOHandler;
  return fileSystem(url);
}

let registered = false;
/** Registers the file:// save and load routers (once; lib/tfjs/index.ts calls it on import). */
export function registerFileHandlers(): void {
  if (registered) return;
  registered = true;
  // tfjs-node registers the same scheme; two routers would make tf.io refuse the URL as ambiguous.
  if (io.getSaveHandlers('file://probe').length === 0) io.registerSaveRouter(router);
  if (io.getLoadHandlers('file://probe/model.json').length === 0) io.registerLoadRouter(router);
}
