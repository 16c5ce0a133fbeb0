// Helpers of the ONNX export tests: a Python with onnx + onnxruntime, BatchNorm statistics that mean
// something, onnxruntime-node sessions, and the comparison of logits.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Tensor, nn, noGrad, rand, randn } from '../../lib/index.js';
import type { Module } from '../../lib/nn/module.js';
import { root } from './helpers.js';

/** RESIDUAL_TEST_PYTHON_ONNX=1 (CI): the onnx.checker and onnxruntime-python checks must run. */
export const pythonRequired = process.env.RESIDUAL_TEST_PYTHON_ONNX === '1';

/** A python with numpy, onnx and onnxruntime: RESIDUAL_TEST_PYTHON, .cache/python-torch, python3. Probed without blocking the event loop. */
export async function findOnnxPython(): Promise<string | null> {
  const candidates = [process.env.RESIDUAL_TEST_PYTHON, path.join(root, '.cache', 'python-torch', 'bin', 'python'), 'python3'].filter(
    Boolean,
  ) as string[];
  for (const py of candidates) {
    const ok = await new Promise<boolean>((resolve) => {
      execFile(py, ['-c', 'import numpy, onnx, onnxruntime'], { timeout: 120_000 }, (err) => resolve(!err));
    });
    if (ok) return py;
  }
  return null;
}

export interface PyRun {
  input: string;
  shape: number[];
  output: string;
}
export interface PyResult {
  onnx: string;
  ir_version: number;
  opset: number;
  onnx_version: string;
  ort_version: string;
  outputs: number[][];
}

/** Runs test/support/onnx_check.py over the manifest: checker(full_check) + onnxruntime for each model. */
export function runOnnxCheck(python: string, dir: string, items: { onnx: string; runs: PyRun[] }[]): Promise<PyResult[]> {
  return runHelper<PyResult>(python, path.join(root, 'test', 'support', 'onnx_check.py'), dir, items);
}

/** Runs test/support/ort_node_run.mjs (onnxruntime-node, in a process of its own) over the manifest. */
export function runOrtNodeFiles(
  dir: string,
  items: { onnx: string; runs: PyRun[] }[],
): Promise<{ onnx: string; outputs: number[][]; version: string }[]> {
  return runHelper(process.execPath, path.join(root, 'test', 'support', 'ort_node_run.mjs'), dir, items);
}

function runHelper<T>(
  program: string,
  script: string,
  dir: string,
  items: { onnx: string; runs: PyRun[] }[],
  args?: string[],
): Promise<T[]> {
  const manifest = path.join(dir, `manifest-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(manifest, JSON.stringify(items));
  return new Promise((resolve, reject) => {
    const c = spawn(program, [script, ...(args ?? [manifest])], { stdio: ['ignore', 'pipe', 'pipe'], cwd: root });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += String(d)));
    c.stderr.on('data', (d) => (err += String(d)));
    const kill = setTimeout(() => c.kill('SIGKILL'), 1_200_000);
    c.on('exit', (code) => {
      clearTimeout(kill);
      fs.rmSync(manifest, { force: true });
      if (code !== 0) reject(new Error(`${path.basename(script)} exited with ${code}:\n${err.slice(-4000)}`));
      else
        resolve(
          out
            .trim()
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as T),
        );
    });
  });
}

/**
 * Gives every BatchNorm non-trivial affine parameters and running statistics that fit the activations:
 * random scale/shift, then one training-mode forward with a cumulative average (momentum null), so the
 * running mean/var are the batch's own. A freshly built network (mean 0, var 1) would leave BatchNorm
 * almost the identity and hide a wrong export of it; random statistics would blow up a deep network.
 */
export function calibrate(model: Module, shape: number[], seedBatch = 6): void {
  noGrad(() => {
    for (const m of model.modules()) {
      if (!(m instanceof nn.BatchNorm2d)) continue;
      const c = m.numFeatures;
      if (m.affine) {
        const w = rand([c]).add(0.5); // U(0.5, 1.5)
        const b = rand([c]).sub(0.5); // U(-0.5, 0.5)
        m.weight!.copy_(w);
        m.bias!.copy_(b);
        w.dispose();
        b.dispose();
      }
      (m as unknown as { momentum: number | null }).momentum = null;
    }
    model.train();
    const x = randn([seedBatch, ...shape]);
    model.call(x).dispose();
    x.dispose();
    model.eval();
  });
}

export function writeF32(file: string, t: Tensor): void {
  fs.writeFileSync(file, Buffer.from((t.toTypedArray() as Float32Array).buffer));
}
export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

/** One event-loop turn (vitest's worker RPC gives up on a loop blocked for 60 s). */
export function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** max |a - b| and the largest |b| (the logits' scale). */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): { diff: number; scale: number } {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) diff = d; // NaN sticks
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return { diff, scale };
}

/**
 * float32 agreement of two implementations of the same network: 1e-4 of the logits' scale (at least
 * 1e-4), plus four times the network's own float32 rounding noise on this input (residual's float32
 * logits against its float64 ones). That noise is ~1e-6 for the residual networks, but the deep plain
 * networks amplify rounding exponentially (the numerical face of the degradation problem): there two
 * correct float32 implementations differ as much as either differs from float64.
 */
export function tolerance(row: { scale: number; noise: number }): number {
  return 1e-4 * Math.max(1, row.scale) + 4 * row.noise;
}

type Ort = typeof import('onnxruntime-node');
let ortModule: Ort | null = null;
export async function ort(): Promise<Ort> {
  ortModule ??= await import('onnxruntime-node');
  return ortModule;
}

/** Runs an ONNX file in onnxruntime-node on each input; returns the outputs' data and dims. */
export async function runOrtNode(file: string, inputs: Tensor[]): Promise<{ data: Float32Array; dims: number[] }[]> {
  const o = await ort();
  const session = await o.InferenceSession.create(file, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
  try {
    const out = [];
    for (const x of inputs) {
      const feeds = { [session.inputNames[0]]: new o.Tensor('float32', x.toTypedArray() as Float32Array, x.shape) };
      const r = await session.run(feeds);
      const y = r[session.outputNames[0]];
      out.push({ data: y.data as Float32Array, dims: [...y.dims] });
    }
    return out;
  } finally {
    await session.release();
  }
}

export interface ParityRow {
  model: string;
  input: string;
  opset: number;
  fold: boolean;
  bytes: number;
  /** max |logit difference| against residual, batch sizes 1 and 5 together. */
  node: number;
  python?: number;
  scale: number;
  /** max |residual float32 - residual float64|: the network's own float32 noise on these inputs. */
  noise: number;
}

/**
 * Exports networks, compares onnxruntime-node's logits with residual's at batch sizes 1 and 5 at once,
 * and keeps the inputs and residual's outputs for the Python pass (checker + onnxruntime-python), which
 * `finishPython` runs over every file of the suite in one process.
 */
export class ParitySuite {
  readonly rows: ParityRow[] = [];
  private readonly items: { onnx: string; runs: PyRun[]; expected: Float32Array[]; row: ParityRow }[] = [];
  constructor(readonly dir: string) {}

  async check(
    name: string,
    model: Module,
    inputShape: number[],
    exportFn: (file: string) => { bytes: number; opset: number },
    o: { fold?: boolean; batches?: number[]; toInput?: (x: Tensor) => Tensor } = {},
  ): Promise<ParityRow> {
    const file = path.join(this.dir, `${name}.onnx`);
    const info = exportFn(file);
    await turn();
    const batches = o.batches ?? [1, 5];
    const xs = batches.map((n) => randn([n, ...inputShape]));
    // residual's logits (o.toInput: what the network sees, e.g. the normalised image), one batch per
    // event-loop turn (a big network on a loaded machine takes seconds per forward)
    const forward = (x: Tensor): Tensor =>
      noGrad(() => {
        const xin = o.toInput ? o.toInput(x) : x;
        const y = model.call(xin);
        if (xin !== x) xin.dispose();
        return y;
      });
    const ys: Tensor[] = [];
    for (const x of xs) {
      ys.push(forward(x));
      await turn();
    }
    // Every batch again in float64: the network's own float32 noise (the model goes back to float32
    // after, bit for bit). A chaotic network's noise differs from image to image, so all of them.
    let noise = 0;
    if (model.parameters()[0]?.dtype === 'float32') {
      model.double();
      try {
        xs.forEach((x, i) => {
          const x64 = x.to('float64');
          const y64 = forward(x64);
          const d = maxDiff(ys[i].toTypedArray() as Float32Array, y64.toTypedArray() as Float64Array).diff;
          if (!(d <= noise)) noise = d;
          x64.dispose();
          y64.dispose();
        });
      } finally {
        model.float();
      }
      await turn();
    }
    const row: ParityRow = {
      model: name,
      input: inputShape.join('x'),
      opset: info.opset,
      fold: !!o.fold,
      bytes: info.bytes,
      node: 0,
      scale: 0,
      noise,
    };
    const runs: PyRun[] = [];
    const expected: Float32Array[] = [];
    xs.forEach((x, i) => {
      const base = path.join(this.dir, `${name}.b${x.shape[0]}`);
      writeF32(`${base}.x.bin`, x);
      runs.push({ input: `${base}.x.bin`, shape: x.shape, output: `${base}.py.bin` });
      expected.push(ys[i].toTypedArray() as Float32Array);
    });
    const nodeRuns = runs.map((r) => ({ ...r, output: r.output.replace(/\.py\.bin$/, '.node.bin') }));
    const [got] = await runOrtNodeFiles(this.dir, [{ onnx: file, runs: nodeRuns }]);
    got.outputs.forEach((dims, i) => {
      if (dims.join() !== ys[i].shape.join()) throw new Error(`${name}: onnxruntime-node output [${dims}] vs residual [${ys[i].shape}]`);
      const d = maxDiff(readF32(nodeRuns[i].output), expected[i]);
      row.node = Math.max(row.node, d.diff);
      row.scale = Math.max(row.scale, d.scale);
    });
    for (const t of [...xs, ...ys]) t.dispose();
    this.items.push({ onnx: file, runs, expected, row });
    this.rows.push(row);
    return row;
  }

  /**
   * check() for a registry network built, calibrated, exported and run by residual in a child process
   * (test/support/onnx_parity_child.mjs, on dist/): for networks whose forward takes minutes on a loaded
   * machine. The onnxruntime-node side is the same.
   */
  async checkInChild(name: string, inputShape: number[], numClasses: number, seed = 2): Promise<ParityRow> {
    const [r] = await runHelper<{
      file: string;
      info: { bytes: number; opset: number };
      runs: { input: string; shape: number[]; expected: string }[];
      noise: number | null;
    }>(
      process.execPath,
      path.join(root, 'test', 'support', 'onnx_parity_child.mjs'),
      this.dir,
      [],
      [JSON.stringify({ name, shape: inputShape, numClasses, seed, dir: this.dir })],
    );
    const row: ParityRow = {
      model: name,
      input: inputShape.join('x'),
      opset: r.info.opset,
      fold: false,
      bytes: r.info.bytes,
      node: 0,
      scale: 0,
      noise: r.noise ?? Number.NaN,
    };
    const runs: PyRun[] = r.runs.map((x) => ({ input: x.input, shape: x.shape, output: x.input.replace(/\.x\.bin$/, '.py.bin') }));
    const expected = r.runs.map((x) => Float32Array.from(readF32(x.expected)));
    const nodeRuns = runs.map((x) => ({ ...x, output: x.output.replace(/\.py\.bin$/, '.node.bin') }));
    const [got] = await runOrtNodeFiles(this.dir, [{ onnx: r.file, runs: nodeRuns }]);
    got.outputs.forEach((dims, i) => {
      if (dims.join() !== [r.runs[i].shape[0], expected[i].length / r.runs[i].shape[0]].join())
        throw new Error(`${name}: onnxruntime-node output [${dims}]`);
      const d = maxDiff(readF32(nodeRuns[i].output), expected[i]);
      row.node = Math.max(row.node, d.diff);
      row.scale = Math.max(row.scale, d.scale);
    });
    this.items.push({ onnx: r.file, runs, expected, row });
    this.rows.push(row);
    return row;
  }

  /** The Python pass over every file so far; fills row.python. Removes the files after. */
  async finishPython(python: string): Promise<PyResult[]> {
    const items = this.items.splice(0);
    const results = await runOnnxCheck(
      python,
      this.dir,
      items.map(({ onnx, runs }) => ({ onnx, runs })),
    );
    if (results.length !== items.length) throw new Error(`onnx_check.py answered for ${results.length} of ${items.length} files`);
    items.forEach((it, k) => {
      it.row.python = 0;
      it.runs.forEach((r, i) => {
        const d = maxDiff(readF32(r.output), it.expected[i]);
        it.row.python = Math.max(it.row.python!, d.diff);
      });
    });
    this.cleanup(items.map((i) => i.onnx));
    return results;
  }

  /** Without Python: just remove the files. */
  dropPython(): void {
    this.cleanup(this.items.splice(0).map((i) => i.onnx));
  }

  private cleanup(files: string[]): void {
    for (const f of files) {
      const base = path.basename(f, '.onnx');
      for (const g of fs.readdirSync(this.dir))
        if (g === `${base}.onnx` || g.startsWith(`${base}.b`)) fs.rmSync(path.join(this.dir, g), { force: true });
    }
  }

  /** A markdown table of the rows (and, with RESIDUAL_ONNX_TABLE=file, the rows as JSON lines appended there). */
  table(): string {
    const fmt = (v: number | undefined) => (v === undefined ? 'n/a' : v.toExponential(1));
    const lines = [
      '| model | input | opset | BatchNorm | file size | max abs logit diff, onnxruntime-python | max abs logit diff, onnxruntime-node | max abs logit | residual float32 vs float64 |',
      '|---|---|---|---|---:|---:|---:|---:|---:|',
    ];
    for (const r of this.rows) {
      lines.push(
        `| ${r.model} | ${r.input} | ${r.opset} | ${r.fold ? 'folded' : 'BatchNormalization'} | ${(r.bytes / 1e6).toFixed(2)} MB | ${fmt(r.python)} | ${fmt(r.node)} | ${r.scale.toPrecision(3)} | ${fmt(r.noise)} |`,
      );
    }
    if (process.env.RESIDUAL_ONNX_TABLE)
      fs.appendFileSync(process.env.RESIDUAL_ONNX_TABLE, this.rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return lines.join('\n');
  }
}
