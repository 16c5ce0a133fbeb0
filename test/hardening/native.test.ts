// Hardening of the native and tensor layers: inputs that used to kill the process (SIGFPE,
// std::terminate, V8 fatal errors, the OpenMP runtime exiting), corrupt other tensors or mislead.
// Cases that could crash run in a child process, so a crash shows up as a signal or an exit code
// instead of taking the test runner down. Children load the built addon directly
// (RESIDUAL_ADDON, or build/Release/residual.node).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { native } from '../../lib/addon/binding.js';
import { nativeMemberNames } from '../../lib/addon/binding.generated.js';
import { DTYPE_CODE } from '../../lib/tensor/dtype.js';
import { root } from '../support/helpers.js';

const addon = process.env.RESIDUAL_ADDON ?? path.join(root, 'build', 'Release', 'residual.node');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-hardening-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let childN = 0;
/** Runs CommonJS `code` (with `n` = the addon) in a child Node; its last stdout line is JSON. */
function child(code: string, timeoutMs = 120_000): { status: number | null; signal: string | null; out: unknown; stderr: string } {
  const file = path.join(tmp, `child-${++childN}.cjs`);
  fs.writeFileSync(file, `const n = require(${JSON.stringify(addon)});\n${code}\n`);
  const res = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const lines = (res.stdout ?? '').trim().split('\n');
  let out: unknown = null;
  try {
    out = JSON.parse(lines[lines.length - 1]);
  } catch {
    out = res.stdout;
  }
  return { status: res.status, signal: res.signal, out, stderr: res.stderr ?? '' };
}

/** Child-side helper: runs f, reports {ok} or {error: class name, code, message}. */
const probe = `
function probe(f) {
  try { const v = f(); return { ok: typeof v === 'bigint' ? String(v) : v ?? null }; }
  catch (e) { return { error: e.constructor.name, code: e.code, message: e.message }; }
}
`;

function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

describe('hardening: crashes become errors (child processes)', () => {
  it('integer division overflow (MIN / -1) is a RangeError, division by zero an Error: no SIGFPE', () => {
    const res = child(`${probe}
const L = 4, I = 3, S = 2, C = 1;
const out = {
  int64Trunc: probe(() => n.div(n.full([1], -(2 ** 63), L, 'cpu'), [-1], 'trunc')),
  int64Floor: probe(() => n.div(n.full([1], -(2 ** 63), L, 'cpu'), [-1], 'floor')),
  int32Tensor: probe(() => n.div(n.full([3], -(2 ** 31), I, 'cpu'), n.full([3], -1, I, 'cpu'), 'trunc')),
  int32Broadcast: probe(() => n.div(n.full([2, 3], -(2 ** 31), I, 'cpu'), n.full([3], -1, I, 'cpu'), 'floor')),
  int16: probe(() => n.div(n.full([1], -(2 ** 15), S, 'cpu'), [-1], 'floor')),
  int8InPlace: probe(() => n.div_(n.full([1], -128, C, 'cpu'), [-1], 'trunc')),
  int32InPlace: probe(() => n.div_(n.full([2], -(2 ** 31), I, 'cpu'), n.full([2], -1, I, 'cpu'), 'floor')),
  byZero: probe(() => n.div(n.full([2], 5, L, 'cpu'), n.full([2], 0, L, 'cpu'), 'trunc')),
  byZeroFloor: probe(() => n.div(n.full([2], 5, I, 'cpu'), [0], 'floor')),
  fine: probe(() => n.item(n.div(n.full([1], -(2 ** 31) + 1, I, 'cpu'), [-1], 'trunc'))),
  trueDivision: probe(() => n.item(n.div(n.full([1], -(2 ** 31), I, 'cpu'), [-1]))),
};
console.log(JSON.stringify(out));`);
    expect(res.signal, res.stderr).toBeNull();
    expect(res.status, res.stderr).toBe(0);
    const o = res.out as Record<string, { error?: string; message?: string; ok?: unknown }>;
    for (const k of ['int64Trunc', 'int64Floor', 'int32Tensor', 'int32Broadcast', 'int16', 'int8InPlace', 'int32InPlace']) {
      expect(o[k].error, k).toBe('RangeError');
      expect(o[k].message, k).toMatch(/^div_?: integer overflow: \w+ division of -\d+ by -1/);
    }
    for (const k of ['byZero', 'byZeroFloor']) {
      expect(o[k].error, k).toBeDefined();
      expect(o[k].message, k).toMatch(/^div: ZeroDivisionError/);
    }
    expect(o.fine.ok).toBe(2 ** 31 - 1);
    expect(o.trueDivision.ok).toBe(2 ** 31);
  });

  it('a worker_thread terminated while it loads the library does not abort the process', () => {
    const res = child(
      `
const { Worker } = require('node:worker_threads');
const src = 'const n = require(' + JSON.stringify(${JSON.stringify(addon)}) + '); n.ones([2], 6, "cpu");';
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
(async () => {
  let terminated = 0;
  for (const delay of [0, 1, 2, 5, 10, 20, 30, 50, 75, 100, 130, 160, 200, 250, 300]) {
    // several at once, terminated at staggered times around the delay
    const ws = [0, 1, 2].map(() => new Worker(src, { eval: true }));
    for (const w of ws) w.on('error', () => {});
    for (let i = 0; i < ws.length; i++) {
      await sleep(i === 0 ? delay : 1);
      await ws[i].terminate();
      terminated++;
    }
  }
  console.log(JSON.stringify({ terminated }));
})();`,
      240_000,
    );
    expect(res.signal, res.stderr).toBeNull();
    expect(res.stderr).not.toMatch(/terminate called|Napi::Error|FATAL/);
    expect(res.status, res.stderr).toBe(0);
    expect(res.out).toEqual({ terminated: 45 });
  });

  it('toBuffer of a tensor larger than the largest ArrayBuffer is an OutOfMemoryError, not a V8 fatal error', () => {
    // A 1-element tensor expanded to 2^32 + 1 elements: the size is refused before anything is copied.
    const res = child(`${probe}
const big = n.expand(n.zeros([1], 0, 'cpu'), [2 ** 32 + 1]);
console.log(JSON.stringify({ big: probe(() => n.toBuffer(big).byteLength), small: probe(() => n.toBuffer(n.ones([3], 6, 'cpu')).byteLength) }));`);
    expect(res.signal, res.stderr).toBeNull();
    expect(res.status, res.stderr).toBe(0);
    const o = res.out as Record<string, { error?: string; code?: string; message?: string; ok?: unknown }>;
    expect(o.big.code).toBe('ERR_RESIDUAL_OOM');
    expect(o.big.message).toMatch(/^toBuffer: the tensor's 4294967297 bytes .* exceed the largest ArrayBuffer/);
    expect(o.small.ok).toBe(12);
  });

  it('toBuffer when the copy cannot be allocated is an OutOfMemoryError, not a V8 fatal error', () => {
    // Under an address-space limit just above what the child uses, the 1 GiB copy cannot be allocated.
    const code = `
const fs = require('node:fs');
const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
const t = n.empty([1024 * 1024 * 1024], 0, 'cpu');
n.toBuffer(n.ones([4], 6, 'cpu'));
let res = { vm: vm() };
if (process.argv[2]) {
  try { res.bytes = n.toBuffer(t).byteLength; } catch (e) { res.code = e.code; res.message = e.message; }
}
console.log(JSON.stringify(res));`;
    const file = path.join(tmp, 'vm-child.cjs');
    fs.writeFileSync(file, `const n = require(${JSON.stringify(addon)});\n${code}\n`);
    const env = { ...process.env, OMP_NUM_THREADS: '1' };
    const first = spawnSync(process.execPath, [file], { encoding: 'utf8', env, timeout: 120_000 });
    expect(first.status, first.stderr).toBe(0);
    const vmKb = (JSON.parse(first.stdout.trim().split('\n').pop() as string) as { vm: number }).vm;
    const limitKb = vmKb + 400 * 1024;
    const res = spawnSync('bash', ['-c', `ulimit -v ${limitKb} && exec "$0" "$1" limited`, process.execPath, file], {
      encoding: 'utf8',
      env,
      timeout: 120_000,
    });
    expect(res.signal, res.stderr).toBeNull();
    expect(res.stderr).not.toMatch(/FATAL|Fatal|allocation failed/);
    expect(res.status, res.stderr).toBe(0);
    const o = JSON.parse(res.stdout.trim().split('\n').pop() as string) as { code?: string; message?: string };
    expect(o.code, o.message).toBe('ERR_RESIDUAL_OOM');
    expect(o.message).toMatch(/^toBuffer: .*1073741824 bytes/);
  });

  it('setNumThreads out of range is a RangeError naming the bound: the OpenMP runtime never exits the process', () => {
    const res = child(`${probe}
const before = n.getNumThreads();
console.log(JSON.stringify({
  huge: probe(() => n.setNumThreads(100000)), zero: probe(() => n.setNumThreads(0)), neg: probe(() => n.setNumThreads(-3)),
  nan: probe(() => n.setNumThreads(NaN)), max: n.maxNumThreads(), same: n.getNumThreads() === before,
}));`);
    expect(res.signal, res.stderr).toBeNull();
    expect(res.status, res.stderr).toBe(0);
    const o = res.out as Record<string, { error?: string; message?: string }> & { max: number; same: boolean };
    expect(o.max).toBeGreaterThanOrEqual(64);
    expect(o.max).toBeLessThanOrEqual(1024);
    for (const k of ['huge', 'zero', 'neg', 'nan']) expect(o[k].error, k).toBe('RangeError');
    expect(o.huge.message).toBe(`setNumThreads: argument 'threads' must be between 1 and ${o.max}, got 100000`);
    expect(o.same).toBe(true);
  });

  it('huge allocations and overflowing sizes are clean errors', () => {
    const res = child(`${probe}
console.log(JSON.stringify({
  huge: probe(() => n.zeros([1e15], 6, 'cpu')),
  overflow: probe(() => n.zeros([2 ** 40, 2 ** 40, 2 ** 40], 6, 'cpu')),
  expandHuge: probe(() => n.contiguous(n.expand(n.zeros([1], 6, 'cpu'), [1e15]))),
}));`);
    expect(res.signal, res.stderr).toBeNull();
    expect(res.status, res.stderr).toBe(0);
    const o = res.out as Record<string, { error?: string; code?: string; message?: string }>;
    expect(o.huge.code).toBe('ERR_RESIDUAL_OOM');
    expect(o.expandHuge.code).toBe('ERR_RESIDUAL_OOM');
    expect(o.overflow.code).toBe('ERR_RESIDUAL_SHAPE');
    expect(o.overflow.message).toMatch(/overflow/);
  });
});

describe('hardening: arguments and values', () => {
  it('every integer argument is checked: NaN, Infinity, fractions and values beyond 2^53 name the argument', () => {
    const x = r.ones([4]);
    const cases: [() => unknown, new (...a: never[]) => Error, RegExp][] = [
      [() => r.zeros([NaN]), RangeError, /^zeros: argument 'shape' element 0 must be a finite integer, got NaN$/],
      [() => r.zeros([2, Infinity]), RangeError, /^zeros: argument 'shape' element 1 must be a finite integer, got Infinity$/],
      [() => r.zeros([-Infinity]), RangeError, /got -Infinity/],
      [() => r.zeros([2 ** 53]), RangeError, /element 0 must be a safe integer \(\|x\| <= 2\^53 - 1\), got 9007199254740992/],
      [() => r.zeros([1.5]), TypeError, /element 0 must be an integer, got 1.5/],
      [() => x.narrow(0, NaN, 1), RangeError, /^narrow: argument 'start' must be a finite integer, got NaN$/],
      [() => x.narrow(0, 0.5, 1), TypeError, /^narrow: argument 'start' must be an integer, got 0.5$/],
      [() => x.select(0, 2 ** 60), RangeError, /^select: argument 'index' must be a safe integer/],
      [() => x.transpose(0, Infinity), RangeError, /argument 'dim1' must be a finite integer/],
      [() => r.randint(0, 2 ** 64, [2]), RangeError, /argument 'high' must be a safe integer/],
      [() => x.reshape([-1, NaN]), RangeError, /argument 'shape' element 1 must be a finite integer/],
    ];
    for (const [f, cls, msg] of cases) {
      const e = errorOf(f);
      expect(e, msg.source).toBeInstanceOf(cls);
      expect(e.message).toMatch(msg);
    }
    // integer options of the data loader too
    const images = r.zeros([4, 1, 2, 2], { dtype: 'uint8' });
    const labels = r.zeros([4], { dtype: 'int64' });
    for (const [opts, cls, msg] of [
      [{ batchSize: NaN }, RangeError, /^loaderCreate: option 'batchSize' must be a finite integer, got NaN$/],
      [{ batchSize: 2.5 }, TypeError, /option 'batchSize' must be an integer, got 2.5/],
      [{ seed: -1 }, RangeError, /option 'seed' must be at least 0, got -1/],
      [{ seed: 2 ** 64 }, RangeError, /option 'seed' must be a safe integer/],
      [{ workers: Infinity }, RangeError, /option 'workers' must be a finite integer/],
    ] as const) {
      const e = errorOf(() => native.loaderCreate(images._h, labels._h, opts));
      expect(e, msg.source).toBeInstanceOf(cls);
      expect(e.message).toMatch(msg);
    }
    // dims and indices out of range are errors (libtorch's), of the shape kind
    expect(errorOf(() => x.select(3, 0))).toBeInstanceOf(r.ShapeError);
    expect(errorOf(() => x.select(0, 10))).toBeInstanceOf(r.ShapeError);
    expect(errorOf(() => x.sum(5))).toBeInstanceOf(r.ShapeError);
    expect(errorOf(() => x.reshape([-2]))).toBeInstanceOf(Error);
    // huge allocations: an OutOfMemoryError (beyond any address space, so it fails on every machine)
    const oom = errorOf(() => r.zeros([1e15]));
    expect(oom).toBeInstanceOf(r.OutOfMemoryError);
    expect(oom.message).toMatch(/^zeros: .*4000000000000000 bytes/);
  });

  it('tensor(): the element count must equal the shape exactly; a detached buffer is refused', () => {
    const e = errorOf(() => r.tensor(new Float32Array(4), { shape: [2] }));
    expect(e).toBeInstanceOf(r.ShapeError);
    expect(e.message).toBe(
      'tensor: shape [2] has 2 elements but the data has 4: they must be equal (the data holds 16 bytes, shape needs 8)',
    );
    expect(errorOf(() => r.tensor(new Float32Array(4), { shape: [5] }))).toBeInstanceOf(r.ShapeError);
    expect(errorOf(() => r.tensor(new ArrayBuffer(6), { dtype: 'int32' }))).toBeInstanceOf(r.ShapeError);
    expect(r.tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] }).toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(r.tensor(new Float32Array(0), { shape: [0, 3] }).shape).toEqual([0, 3]);
    // detached (transferred) buffers
    const buf = new ArrayBuffer(16);
    structuredClone(buf, { transfer: [buf] });
    const d = errorOf(() => r.tensor(new Float32Array(buf)));
    expect(d).toBeInstanceOf(TypeError);
    expect(d.message).toMatch(/detached/);
    const ab = new ArrayBuffer(8);
    const view = new Uint8Array(ab);
    structuredClone(ab, { transfer: [ab] });
    expect(errorOf(() => native.fromBuffer(view, 0, [0], DTYPE_CODE.uint8, true)).message).toMatch(
      /^fromBuffer: argument 'data' is a detached ArrayBuffer/,
    );
  });

  it('integers to negative integer powers are refused, as in PyTorch (scalar and tensor exponents)', () => {
    const i = r.tensor([2, 3], { dtype: 'int64' });
    for (const f of [
      () => i.pow(-1),
      () => i.pow(r.tensor([1, -2], { dtype: 'int64' })),
      () => i.clone().pow_(-3),
      () => r.tensor([2], { dtype: 'int32' }).pow(r.tensor([-1], { dtype: 'int32' })),
    ]) {
      const e = errorOf(f);
      expect(e).toBeInstanceOf(r.DtypeError);
      expect(e.message).toMatch(/^pow_?: Integers to negative integer powers are not allowed\.$/);
    }
    expect(i.pow(2).toArray()).toEqual([4, 9]);
    expect(i.pow(r.tensor([0, 3], { dtype: 'int64' })).toArray()).toEqual([1, 27]);
    expect(i.pow(-1.0 - 0.5).dtype).toBe('float32'); // a float exponent promotes: allowed
    expect(r.tensor([2], { dtype: 'float32' }).pow(-1).item()).toBe(0.5);
  });

  it('item() of an int64 beyond 2^53 is a RangeError; itemBigInt() and toTypedArray() are exact', () => {
    const big = r.full([1], 2 ** 62, { dtype: 'int64' });
    const e = errorOf(() => big.item());
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/^item: the value 4611686018427387904 is outside Number.MAX_SAFE_INTEGER/);
    expect(big.itemBigInt()).toBe(2n ** 62n);
    expect(r.full([1], -(2 ** 63), { dtype: 'int64' }).itemBigInt()).toBe(-(2n ** 63n));
    expect((big.toTypedArray() as BigInt64Array)[0]).toBe(2n ** 62n);
    expect(errorOf(() => big.toArray())).toBeInstanceOf(RangeError);
    const safe = r.full([2], Number.MAX_SAFE_INTEGER, { dtype: 'int64' });
    expect(safe.toArray()).toEqual([Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER]);
    expect(safe.sum().itemBigInt()).toBe(2n * BigInt(Number.MAX_SAFE_INTEGER));
    expect(errorOf(() => safe.sum().item())).toBeInstanceOf(RangeError);
    expect(r.tensor([7], { dtype: 'int32' }).itemBigInt()).toBe(7n);
    expect(errorOf(() => r.ones([1]).itemBigInt())).toBeInstanceOf(r.DtypeError);
  });

  it('setAutocast refuses unknown device types with a DeviceError (and leaves autocast off)', () => {
    const e = errorOf(() => r.setAutocast('tpu' as never, true));
    expect(e).toBeInstanceOf(r.DeviceError);
    const n = errorOf(() => native.setAutocast('tpu', true));
    expect(n).toBeInstanceOf(r.DeviceError);
    expect(n.message).toBe("setAutocast: argument 'deviceType' must be 'cpu' or 'cuda', got 'tpu'");
    expect(r.setAutocast('cpu', false).enabled).toBe(false);
  });

  it('toTypedArray of a tensor beyond the largest ArrayBuffer is an OutOfMemoryError naming the size; save() too', () => {
    const big = r.zeros([1], { dtype: 'uint8' }).expand([2 ** 32 + 8]);
    const e = errorOf(() => big.toTypedArray());
    expect(e).toBeInstanceOf(r.OutOfMemoryError);
    expect(e.message).toMatch(/4294967304 bytes/);
    const file = path.join(tmp, 'big.safetensors');
    expect(errorOf(() => r.saveSafetensors({ big }, file))).toBeInstanceOf(r.OutOfMemoryError);
    // a copy, never a view of the tensor's memory
    const t = r.ones([3]);
    const a = t.toTypedArray() as Float32Array;
    a[0] = 5;
    expect(t.toArray()).toEqual([1, 1, 1]);
  });
});

describe('hardening: error classes', () => {
  it('native errors are created as residual error classes, with their messages unchanged', () => {
    const a = r.ones([2, 3]);
    const cases: [() => unknown, new (...a: never[]) => Error, string, RegExp][] = [
      [() => a.matmul(a), r.ShapeError, 'ERR_RESIDUAL_SHAPE', /^matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 2x3\)$/],
      [() => a.reshape(4), r.ShapeError, 'ERR_RESIDUAL_SHAPE', /shape '\[4\]' is invalid for input of size 6/],
      [() => a.add(r.ones([4])), r.ShapeError, 'ERR_RESIDUAL_SHAPE', /must match the size of tensor b/],
      [() => a.select(5, 0), r.ShapeError, 'ERR_RESIDUAL_SHAPE', /Dimension out of range/],
      [
        () => r.ones([2], { dtype: 'int64' }).add_(r.ones([2]).mul(0.5)),
        r.DtypeError,
        'ERR_RESIDUAL_DTYPE',
        /result type Float can't be cast to the desired output type Long/,
      ],
      [() => r.ones([2, 2]).mm(r.ones([2, 2], { dtype: 'float64' })), r.DtypeError, 'ERR_RESIDUAL_DTYPE', /dtype/],
      [() => r.zeros([2], { device: 'tpu' as never }), r.DeviceError, 'ERR_RESIDUAL_DEVICE', /unknown device 'tpu'/],
      [() => r.zeros([2], { dtype: 'float8' as never }), r.DtypeError, 'ERR_RESIDUAL_DTYPE', /unknown dtype 'float8'/],
      [() => r.tensor([[1, 2], [3]]), r.ShapeError, 'ERR_RESIDUAL_SHAPE', /ragged nested array/],
    ];
    for (const [f, cls, code, msg] of cases) {
      const e = errorOf(f);
      expect(e, msg.source).toBeInstanceOf(cls);
      expect((e as r.ResidualError).code).toBe(code);
      expect(e.message).toMatch(msg);
      expect(e.message).not.toMatch(/Exception raised from|frame #/);
    }
    const t = r.ones([3]);
    t.dispose();
    const d = errorOf(() => t.add(1));
    expect(d).toBeInstanceOf(r.DisposedTensorError);
    expect(d.message).toBe("add: argument 'input' is a disposed Tensor (used after dispose())");
    expect(errorOf(() => r.cat([r.ones([1]), t]))).toBeInstanceOf(r.DisposedTensorError);
    // argument type errors stay TypeErrors; errors of no particular kind are ResidualErrors
    expect(errorOf(() => native.add(r.ones([1])._h, 'x', 1))).toBeInstanceOf(TypeError);
    const x = r.ones([2]).requiresGrad_(true);
    const y = x.mul(x).sum();
    y.backward();
    const g = errorOf(() => y.backward());
    expect(g).toBeInstanceOf(r.ResidualError);
    expect(g.message).toMatch(/Trying to backward through the graph a second time/);
  });

  it('the addon without the TS layer (a raw require) throws Errors carrying the code', async () => {
    const out = await inWorker<{ code: string; name: string; message: string }>(`
const n = require(${JSON.stringify(addon)});
try { n.matmul(n.ones([2, 3], 6, 'cpu'), n.ones([2, 3], 6, 'cpu')); } catch (e) { parentPort.postMessage({ code: e.code, name: e.constructor.name, message: e.message }); }`);
    expect(out).toEqual({
      code: 'ERR_RESIDUAL_SHAPE',
      name: 'Error',
      message: 'matmul: mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)',
    });
  });
});

function inWorker<T>(code: string, workerData?: unknown, transfer?: never[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = new Worker(`const { parentPort, workerData } = require('node:worker_threads');\n${code}`, {
      eval: true,
      workerData,
      transferList: transfer,
    });
    w.once('message', (m) => {
      resolve(m as T);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

describe('hardening: tensors belong to their thread', () => {
  // Decision: a Tensor posted to a worker is not refused by postMessage (structured clone copies no
  // private fields, so it arrives as a plain empty object); using it is refused with a TypeError that
  // says why. A raw native id sent across is refused natively (ids carry their thread's tag).
  it('only real Tensor instances are accepted: forged or cloned objects are TypeErrors', () => {
    const t = r.tensor([1, -2, 3]);
    const cloned = structuredClone(t) as unknown as r.Tensor;
    expect(Object.keys(cloned)).toEqual([]);
    for (const fake of [cloned, { _h: t._h } as unknown as r.Tensor, Object.create(r.Tensor.prototype) as r.Tensor]) {
      for (const f of [
        () => r.relu(fake),
        () => t.add(fake),
        () => t.mul_(fake),
        () => r.cat([t, fake]),
        () => r.conv2d(fake, t),
        () => t.matmul(fake),
      ]) {
        const e = errorOf(f);
        expect(e).toBeInstanceOf(TypeError);
        expect(e.message).toMatch(/expected a Tensor, got .*postMessage/);
      }
    }
    expect(() => r.Tensor.prototype.dispose.call(cloned)).toThrow(TypeError);
    expect(t.disposed).toBe(false);
    expect(t.toArray()).toEqual([1, -2, 3]);
    expect(t.add(1).toArray()).toEqual([2, -1, 4]); // scalars still work
  });

  it("a native id from another thread is refused there, and never reaches that thread's tensors", async () => {
    const mine = r.tensor([1, 2, 3]);
    const out = await inWorker<Record<string, string | number[]>>(
      `
const n = require(${JSON.stringify(addon)});
const own = n.full([3], -5, 6, 'cpu');   // a tensor of the worker: the id may collide in index/generation
const res = {};
for (const [k, f] of Object.entries({ relu: () => n.relu(workerData), dispose: () => n.dispose(workerData), cat: () => n.cat([own, workerData], 0), forged: () => n.relu(2 ** 52 + 7) })) {
  try { f(); res[k] = 'accepted'; } catch (e) { res[k] = e.constructor.name + ': ' + e.message; }
}
res.own = Array.from(new Float32Array(n.toBuffer(own)));
parentPort.postMessage(res);`,
      mine._h,
    );
    expect(out.relu).toMatch(/^TypeError: relu: argument 'input' is not a Tensor of this thread/);
    expect(out.dispose).toMatch(/^TypeError: dispose: argument 'tensor' is not a Tensor of this thread/);
    expect(out.cat).toMatch(/^TypeError: cat: argument 'tensors' element 1 is not a Tensor of this thread/);
    expect(out.forged).toMatch(/^TypeError: relu: /);
    expect(out.own).toEqual([-5, -5, -5]);
    expect(mine.toArray()).toEqual([1, 2, 3]);
    // and locally, ids of no tensor are refused (made-up numbers)
    expect(errorOf(() => native.relu(mine._h + 2 ** 42))).toBeInstanceOf(TypeError);
  });
});

describe('hardening: one random generator per thread', () => {
  const drawScript = `
const n = require(${JSON.stringify(addon)});
function draws(seed, k) {
  n.manualSeed(seed);
  const out = [];
  for (let i = 0; i < k; i++) {
    const t = n.rand([64], 6, 'cpu'); out.push(...new Float32Array(n.toBuffer(t))); n.dispose(t);
    const p = n.randperm(16, undefined, 'cpu'); out.push(...Array.from(new BigInt64Array(n.toBuffer(p)), Number)); n.dispose(p);
  }
  return out;
}`;

  it("a worker's draws after manualSeed(s) equal the main thread's, even while others draw concurrently", async () => {
    const K = 300;
    const expected = (() => {
      r.manualSeed(1234);
      const out: number[] = [];
      for (let i = 0; i < K; i++) {
        out.push(...(r.rand([64]).toTypedArray() as Float32Array));
        out.push(...Array.from(r.randperm(16).toTypedArray() as BigInt64Array, Number));
      }
      return out;
    })();
    // Two workers draw the same seeded sequence at the same time, while the main thread draws too.
    const started = [1, 2].map(() => inWorker<number[]>(`${drawScript}\nparentPort.postMessage(draws(1234, ${K}));`));
    r.manualSeed(99);
    const mainDuring: number[] = [];
    for (let i = 0; i < 200; i++) mainDuring.push(...(r.rand([64]).toTypedArray() as Float32Array));
    const results = await Promise.all(started);
    for (const res of results) expect(res).toEqual(expected);
    // the main thread's own stream was not disturbed by the workers' seeding and drawing
    r.manualSeed(99);
    const mainAlone: number[] = [];
    for (let i = 0; i < 200; i++) mainAlone.push(...(r.rand([64]).toTypedArray() as Float32Array));
    expect(mainDuring).toEqual(mainAlone);
  });

  it('manualSeed in a worker does not reseed the main thread; every random op draws from the thread generator', async () => {
    const ops = () => {
      const parts: number[] = [];
      const take = (t: r.Tensor) => parts.push(...Array.from(t.toTypedArray() as ArrayLike<number | bigint>, Number));
      take(r.rand([5]));
      take(r.randn([5]));
      take(r.randint(0, 100, [5]));
      take(r.randperm(8));
      take(r.randLike(r.zeros([5])));
      take(r.randnLike(r.zeros([5])));
      take(r.zeros([5]).uniform_(-1, 1));
      take(r.zeros([5]).normal_(3, 2));
      take(r.zeros([50]).bernoulli_(0.5));
      take(r.dropout(r.ones([50]), 0.5, true));
      take(new r.nn.Linear(3, 2).weight);
      return parts;
    };
    r.manualSeed(5);
    const alone = ops();
    // A worker seeds (its own generator and libtorch's shared default one) and draws in between: an op
    // that drew from a shared generator would now give other values.
    r.manualSeed(5);
    await inWorker(`const n = require(${JSON.stringify(addon)}); n.manualSeed(777); n.rand([1000], 6, 'cpu'); parentPort.postMessage(1);`);
    expect(ops()).toEqual(alone);
    // getRngState / setRngState are the thread's generator
    r.manualSeed(3);
    const st = r.getRngState();
    const a1 = r.randn([8]).toArray();
    await inWorker(`const n = require(${JSON.stringify(addon)}); n.manualSeed(2); n.randn([100], 6, 'cpu'); parentPort.postMessage(1);`);
    r.setRngState(st);
    expect(r.randn([8]).toArray()).toEqual(a1);
  });
});

describe('hardening: the native binding is declared from its sources', () => {
  it('lib/addon/binding.generated.ts is up to date with native/*.cpp', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const gen = (await import('../../scripts/codegen/gen-native-types.mjs')) as { generate: () => string; outFile: string };
    expect(fs.readFileSync(gen.outFile, 'utf8')).toBe(gen.generate());
  });

  it('every function the addon exports is declared, and every declared member exists', () => {
    const declared = new Set<string>(nativeMemberNames);
    const exported = new Set(Object.keys(native));
    expect(declared.size).toBeGreaterThan(250);
    for (const name of exported)
      expect(declared.has(name), `the addon exports ${name}, which binding.generated.ts does not declare`).toBe(true);
    for (const name of declared)
      expect(exported.has(name), `binding.generated.ts declares ${name}, which the addon does not export`).toBe(true);
    for (const name of declared)
      if (name !== 'dtypeCodes') expect(typeof (native as unknown as Record<string, unknown>)[name], name).toBe('function');
  });

  it('the declaration has real signatures: a wrong argument to a native function or to the tfjs op() funnel is a compile error', async () => {
    // Compiles a small file against lib/ with the TypeScript compiler API (the same check `tsc` makes).
    const file = path.join(tmp, 'binding-probe.mts');
    const lib = (p: string): string => JSON.stringify(path.join(root, 'lib', p));
    const src = [
      `import { native } from ${lib('addon/binding.js')};`,
      `import { op } from ${lib('tfjs/kernels/util.js')};`,
      `import { zeros } from ${lib('tensor/tensor.js')};`,
      'const h = native.zeros([2], 6);',
      'native.to(h, 6, "cpu", undefined, false, true);', // one argument too many (shifts nonBlocking into copy)
      'native.transpose(h, 0);', // one too few
      'native.add(h, 1, 1);', // a scalar operand must be boxed: [1]
      'native.sum(h, [0], "yes");', // keepdim is a boolean
      'const n: number = native.maxDim(h, 0, false);', // two tensors come back
      'op("narrow", zeros([3]), 0, 1);', // length is missing
      'op("add", zeros([3]), zeros([3]), 1);', // fine
    ].join('\n');
    fs.writeFileSync(file, src);
    // tsc in a child process (asynchronously: a whole-program check takes seconds), on the project's settings.
    const cfg = path.join(tmp, 'tsconfig.probe.json');
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        extends: path.join(root, 'tsconfig.json'),
        compilerOptions: { noEmit: true, rootDir: '/', typeRoots: [path.join(root, 'node_modules', '@types')] },
        include: [file],
      }),
    );
    const res = await new Promise<{ out: string; code: number | null }>((resolve) => {
      const p = spawn(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', cfg, '--pretty', 'false'], {
        cwd: root,
      });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', (code) => resolve({ out, code }));
    });
    const errs = [...res.out.matchAll(/binding-probe\.mts\((\d+),\d+\): error (TS\d+: .*)/g)].map((m) => [Number(m[1]), m[2]] as const);
    expect(
      res.out.split('\n').filter((l) => l.includes('error') && !l.includes('binding-probe.mts')),
      res.out,
    ).toEqual([]);
    expect(
      errs.map(([l]) => l),
      res.out,
    ).toEqual([5, 6, 7, 8, 9, 10]);
    expect(errs[0][1]).toMatch(/Expected 1-5 arguments, but got 6/);
    expect(errs[1][1]).toMatch(/Expected 3 arguments, but got 2/);
    expect(errs[2][1]).toMatch(/'number' is not assignable to parameter of type 'Handle \| Boxed'/);
    expect(errs[3][1]).toMatch(/'string' is not assignable to parameter of type 'boolean'/);
    expect(errs[4][1]).toMatch(/'\[Handle, Handle\]' is not assignable to type 'number'/);
    expect(errs[5][1]).toMatch(/Expected 5 arguments, but got 4/);
  }, 120_000);

  it('the generator checks each ENTRY signature against the reads of its function body', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const gen = (await import('../../scripts/codegen/gen-native-types.mjs')) as { generate: (dir: string) => string };
    const dir = fs.mkdtempSync(path.join(tmp, 'native-'));
    const body =
      'DEFN(f) {\n  at::Tensor t = a.T(0, "tensor");\n  bool c = a.has(1) && a.B(1, "channelsLast");\n  return a.env().Undefined();\n}\n';
    const attempt = (entry: string): string => {
      fs.writeFileSync(path.join(dir, 'x.cpp'), `${body}static const FnEntry k[] = {\n    ${entry}\n};\n`);
      try {
        return gen.generate(dir);
      } catch (e) {
        return `error: ${(e as Error).message}`;
      }
    };
    expect(attempt('ENTRY(f),  // (tensor: Handle, channelsLast?: boolean | null) => void')).toContain(
      'readonly f: (tensor: Handle, channelsLast?: boolean | null) => void;',
    );
    expect(attempt('ENTRY(f),')).toMatch(/error: native\/x.cpp:\d+: ENTRY\(f\) has no signature comment/);
    expect(attempt('ENTRY(f),  // (t: Handle, channelsLast?: boolean) => void')).toMatch(
      /the body reads it as 'tensor', the signature names it 't'/,
    );
    expect(attempt('ENTRY(f),  // (tensor: number, channelsLast?: boolean) => void')).toMatch(
      /reads it with a.T \(Handle\), the signature says number/,
    );
    expect(attempt('ENTRY(f),  // (tensor: Handle, channelsLast: boolean) => void')).toMatch(
      /'channelsLast' may be left out .*mark it optional/,
    );
    expect(attempt('ENTRY(f),  // (tensor?: Handle, channelsLast?: boolean) => void')).toMatch(/'tensor' is required/);
    expect(attempt('ENTRY(f),  // (tensor: Handle) => void')).toMatch(
      /the body reads a.B\(1, "channelsLast"\), the signature has 1 parameters/,
    );
    // The op table: signatures from the readers; a gap in the argument indices is refused.
    fs.writeFileSync(
      path.join(dir, 'x.cpp'),
      '#define RESIDUAL_OPS(X, V, X2, XL, XB) \\\n  X(narrow, a.T(0, "input").narrow(a.I(1, "dim"), a.OI(2, "start"), a.I(3, "length"))) \\\n  X2(bad, f(a.T(0, "input"), a.I(2, "dim")))\n\n',
    );
    expect(() => gen.generate(dir)).toThrow(/\(bad\): argument 1 is never read/);
    fs.writeFileSync(
      path.join(dir, 'x.cpp'),
      '#define RESIDUAL_OPS(X, V, X2, XL, XB) \\\n  X2(mm2, f(a.T(0, "input"), a.OT(1, "other"))) \\\n  X(narrow, a.T(0, "input").narrow(a.I(1, "dim"), a.OI(2, "start"), a.I(3, "length")))\n\n',
    );
    const out = gen.generate(dir);
    expect(out).toContain('readonly mm2: (input: Handle, other?: Handle | null) => [Handle, Handle];');
    expect(out).toContain('readonly narrow: (input: Handle, dim: number, start: number | null | undefined, length: number) => Handle;');
  });

  it('dtype codes come from the addon', () => {
    expect(DTYPE_CODE).toEqual(native.dtypeCodes);
    expect(r.zeros([1], { dtype: 'bfloat16' }).dtype).toBe('bfloat16');
  });
});
