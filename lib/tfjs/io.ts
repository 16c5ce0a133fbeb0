// `file://` model save and load handlers for TensorFlow.js, as tfjs-node has them:
//   await model.save('file:///path/to/dir')          -> dir/model.json + dir/weights.bin
//   await tf.loadLayersModel('file:///path/to/dir/model.json')
// model.json is tf's standard format (modelTopology, weightsManifest, training config, ...), so files
// written here load in tfjs-node or the browser and vice versa. Both files are written atomically
// (lib/core/fs.ts): weights.bin first, then model.json, so a crash never leaves a model.json whose
// weights are missing or partial. Loading checks everything before use and names the file at fault.
import fs from 'node:fs';
import path from 'node:path';
import { io } from '@tensorflow/tfjs-core';
import { writeFileAtomic } from '../core/fs.js';

const SCHEME = 'file://';
const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

type ModelArtifacts = io.ModelArtifacts;
type WeightsManifestEntry = io.WeightsManifestEntry;

/** The path of a file:// URL (plain paths are accepted too). */
function pathOf(url: string): string {
  const p = url.startsWith(SCHEME) ? url.slice(SCHEME.length) : url;
  if (p.length === 0) throw new Error(`file:// handler: empty path in ${JSON.stringify(url)}`);
  return path.resolve(p);
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

/** Bytes of one manifest weight, or null when it has no fixed size (strings). */
function weightBytes(w: WeightsManifestEntry): number | null {
  if (w.dtype === 'string') return null;
  const n = w.shape.reduce((a, b) => a * b, 1);
  const q = w.quantization?.dtype;
  const per = q ? DTYPE_BYTES[q] : DTYPE_BYTES[w.dtype];
  if (per === undefined) throw new Error(`unknown weight dtype ${q ?? w.dtype} for weight ${w.name}`);
  return n * per;
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
    if (artifacts.modelTopology instanceof ArrayBuffer) throw new Error('file:// save: binary model topologies (ArrayBuffer) are not supported; save a layers or graph model JSON topology');
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(this.dir);
    } catch {
      st = undefined;
    }
    if (st && !st.isDirectory()) throw new Error(`file:// save: ${this.dir} exists and is not a directory (save takes a directory: it writes ${MODEL_JSON} and ${WEIGHTS_BIN} into it)`);
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

function readFileOrThrow(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`file:// load: ${what} ${file} does not exist`);
    if (err.code === 'EISDIR') throw new Error(`file:// load: ${what} ${file} is a directory (give the path of ${MODEL_JSON})`);
    throw new Error(`file:// load: cannot read ${what} ${file}: ${err.message}`);
  }
}

/** Loads model.json and the weight files its manifest names (relative to model.json's directory). */
export class FileLoadHandler implements io.IOHandler {
  readonly modelPath: string;
  constructor(url: string) {
    let p = pathOf(url);
    // A directory stands for its model.json (the layout save() writes).
    try {
      if (fs.statSync(p).isDirectory()) p = path.join(p, MODEL_JSON);
    } catch {
      /* missing: reported by load() */
    }
    this.modelPath = p;
  }
  async load(): Promise<ModelArtifacts> {
    const file = this.modelPath;
    const text = readFileOrThrow(file, 'model file').toString('utf8');
    let json: io.ModelJSON;
    try {
      json = JSON.parse(text) as io.ModelJSON;
    } catch (e) {
      throw new Error(`file:// load: ${file} is not valid JSON: ${(e as Error).message}`);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error(`file:// load: ${file} does not hold a model JSON object`);
    if (json.modelTopology === undefined || json.modelTopology === null) throw new Error(`file:// load: ${file} has no modelTopology`);
    const manifest = json.weightsManifest;
    if (manifest !== undefined && !Array.isArray(manifest)) throw new Error(`file:// load: ${file}: weightsManifest must be an array`);
    const dir = path.dirname(file);
    return io.getModelArtifactsForJSON(json, async (m) => {
      const specs: WeightsManifestEntry[] = [];
      const parts: Uint8Array[] = [];
      for (const [gi, group] of m.entries()) {
        if (!group || !Array.isArray(group.paths) || !Array.isArray(group.weights))
          throw new Error(`file:// load: ${file}: weightsManifest[${gi}] needs 'paths' and 'weights' arrays`);
        const groupParts: Buffer[] = [];
        for (const rel of group.paths) {
          if (typeof rel !== 'string' || rel.length === 0) throw new Error(`file:// load: ${file}: weightsManifest[${gi}] has a bad path ${JSON.stringify(rel)}`);
          groupParts.push(readFileOrThrow(path.resolve(dir, rel), 'weights file'));
        }
        // The group's weights are the concatenation of its files; check their sizes against the
        // manifest before tfjs decodes anything.
        let want = 0;
        let fixed = true;
        for (const w of group.weights) {
          if (!w || typeof w.name !== 'string' || !Array.isArray(w.shape) || !w.shape.every((d) => Number.isInteger(d) && d >= 0))
            throw new Error(`file:// load: ${file}: weightsManifest[${gi}] has a malformed weight entry ${JSON.stringify(w)}`);
          const b = weightBytes(w);
          if (b === null) fixed = false;
          else want += b;
        }
        const have = groupParts.reduce((a, p) => a + p.byteLength, 0);
        const names = group.paths.map((p) => path.resolve(dir, p)).join(', ');
        if (fixed ? have !== want : have < want)
          throw new Error(`file:// load: weights file ${names} holds ${have} bytes but the manifest in ${file} describes ${want} bytes of weights${fixed ? '' : ' (plus strings)'}`);
        specs.push(...group.weights);
        for (const p of groupParts) parts.push(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
      }
      const total = parts.reduce((a, p) => a + p.byteLength, 0);
      const all = new Uint8Array(total);
      let off = 0;
      for (const p of parts) {
        all.set(p, off);
        off += p.byteLength;
      }
      return [specs, all.buffer];
    });
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
