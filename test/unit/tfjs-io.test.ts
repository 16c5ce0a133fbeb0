// The residual backend's file:// model loader (lib/tfjs/io.ts) on untrusted model folders. Each class
// below was accepted before: weights paths out of the model's folder ('../secret.bin', absolute paths,
// symlinks) were read, so any readable file became weights; special files were read (a weights path
// naming /dev/zero was read without bound, a FIFO blocked the event loop forever); sizes were compared
// only after the files were read whole, and reads were synchronous. Now every one is a BadFileError
// naming the file, refused before any byte is read; what loads is exactly what the manifest declares and
// decodes with tf.io.decodeWeights.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadFileError } from '../../lib/core/errors.js';
import { FileLoadHandler, FileSaveHandler } from '../../lib/tfjs/io.js';
import '../../lib/tfjs/index.js';
import { fixtures } from '../support/helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tfjs-io-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('residual');
});

let n = 0;
/** A fresh model folder with model.json (`manifest`) and the given files; returns model.json's path. */
function model(manifest: unknown, files: Record<string, Uint8Array | string> = {}, extra: Record<string, unknown> = {}): string {
  const dir = path.join(tmp, `m${n++}`, 'model');
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), data);
  }
  const file = path.join(dir, 'model.json');
  fs.writeFileSync(file, JSON.stringify({ modelTopology: { note: 'not built here' }, weightsManifest: manifest, ...extra }));
  return file;
}
const load = (file: string) => new FileLoadHandler(file).load();
/** Expects a BadFileError whose message matches `re`. */
async function refused(p: Promise<unknown>, re: RegExp): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a refusal matching ${re}`).toBeInstanceOf(BadFileError);
  expect((err as Error).message).toMatch(re);
}
const f32 = (...v: number[]) => new Uint8Array(new Float32Array(v).buffer);
const W = (name: string, shape: number[], dtype = 'float32', extra: Record<string, unknown> = {}) => ({ name, shape, dtype, ...extra });

/** A file outside every model folder, of the size the manifests below expect (8 bytes), with a marker. */
const secret = path.join(tmp, 'secret.bin');
fs.writeFileSync(secret, Buffer.from('5ec4e75ec4e7c0de', 'hex'));

describe('file:// load: what a model folder may name', () => {
  it('loads sharded groups of every dtype tfjs decodes (float32, int32, bool, complex64, strings, uint8/uint16/float16 quantization) exactly', async () => {
    const a = tf.tensor2d([1.5, -2, 3, 4.25, 5, 6], [2, 3]);
    const b = tf.tensor1d([7, -8, 2 ** 30], 'int32');
    const s = tf.tensor1d(['', 'héllo', 'x'.repeat(300)], 'string');
    const c = tf.tensor1d([true, false, true], 'bool');
    const z = tf.complex([1, 2], [3, -4]);
    const g1 = await tf.io.encodeWeights({ a, b });
    const g2 = await tf.io.encodeWeights({ s, c, z });
    const d1 = new Uint8Array(g1.data as ArrayBuffer);
    // Group 1 in two shards cut in the middle of a weight; group 2 in one file; group 3 quantized.
    const q8 = Uint8Array.from([0, 10, 255]);
    const q16 = new Uint8Array(new Uint16Array([0, 1000]).buffer);
    const h16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000]).buffer); // float16 1, -2
    const file = model(
      [
        { paths: ['group1-shard1of2.bin', 'sub/group1-shard2of2.bin'], weights: g1.specs },
        { paths: ['./group2.bin'], weights: g2.specs },
        {
          paths: ['q.bin'],
          weights: [
            W('q8', [3], 'float32', { quantization: { dtype: 'uint8', min: -1, scale: 0.5 } }),
            W('q16', [2], 'int32', { quantization: { dtype: 'uint16', min: 2, scale: 3 } }),
            W('h16', [2], 'float32', { quantization: { dtype: 'float16' } }),
          ],
        },
      ],
      {
        'group1-shard1of2.bin': d1.subarray(0, 10),
        'sub/group1-shard2of2.bin': d1.subarray(10),
        'group2.bin': new Uint8Array(g2.data as ArrayBuffer),
        'q.bin': Uint8Array.from([...q8, ...q16, ...h16]),
      },
    );
    const art = await load(file);
    expect(art.modelTopology).toEqual({ note: 'not built here' });
    const w = tf.io.decodeWeights(art.weightData!, art.weightSpecs!);
    expect(Array.from(await w.a.data())).toEqual([1.5, -2, 3, 4.25, 5, 6]);
    expect(Array.from(await w.b.data())).toEqual([7, -8, 2 ** 30]);
    expect((await w.s.data()).map((v) => (typeof v === 'string' ? v : new TextDecoder().decode(v as unknown as Uint8Array)))).toEqual([
      '',
      'héllo',
      'x'.repeat(300),
    ]);
    expect(Array.from(await w.c.data())).toEqual([1, 0, 1]);
    expect(Array.from(await tf.real(w.z).data())).toEqual([1, 2]);
    expect(Array.from(await tf.imag(w.z).data())).toEqual([3, -4]);
    expect(Array.from(await w.q8.data())).toEqual([-1, 4, 126.5]);
    expect(Array.from(await w.q16.data())).toEqual([2, 3002]);
    expect(Array.from(await w.h16.data())).toEqual([1, -2]);
    tf.dispose([a, b, s, c, z, ...Object.values(w)]);
  });

  it("refuses weights paths out of the model's folder: '..', absolute, /dev/zero, and symlinks out (file, folder, device)", async () => {
    const spec = [W('w', [2])];
    const cases: [string, RegExp][] = [
      ['../secret.bin', /"\.\.\/secret\.bin" resolves to .*secret\.bin, which is not inside the model's folder/],
      ['sub/../../secret.bin', /resolves to .*secret\.bin, which is not inside/],
      [secret, /is an absolute path: weights paths are relative to the model's folder/],
      ['/dev/zero', /"\/dev\/zero" is an absolute path/],
      ['.', /which is not inside the model's folder/],
      ['link.bin', /"link\.bin" is a symbolic link to .*secret\.bin, outside the model's folder/],
      ['linkdir/secret.bin', /is a symbolic link to .*secret\.bin, outside the model's folder/],
      ['zero.bin', /"zero\.bin" is a symbolic link to \/dev\/zero, outside the model's folder/],
      ['w\u0000.bin', /holds a NUL character/],
    ];
    for (const [p, re] of cases) {
      const file = model([{ paths: [p], weights: spec }]);
      const dir = path.dirname(file);
      fs.symlinkSync(secret, path.join(dir, 'link.bin'));
      fs.symlinkSync(tmp, path.join(dir, 'linkdir'));
      fs.symlinkSync('/dev/zero', path.join(dir, 'zero.bin'));
      await refused(load(file), re);
    }
    // A symlink that stays inside the folder is followed.
    const file = model([{ paths: ['alias.bin'], weights: spec }], { 'data/w.bin': f32(1, 2) });
    fs.symlinkSync('data/w.bin', path.join(path.dirname(file), 'alias.bin'));
    const w = tf.io.decodeWeights((await load(file)).weightData!, spec as tf.io.WeightsManifestEntry[]);
    expect(Array.from(await w.w.data())).toEqual([1, 2]);
    w.w.dispose();
  });

  it('reads regular files only: a folder, a socket, a character device (as root) and a FIFO are refused, never read', async () => {
    const spec = [W('w', [2])];
    const dirCase = model([{ paths: ['d'], weights: spec }], { 'd/x': 'x' });
    await refused(load(dirCase), /weights file .*\/d is a directory: only regular files are read/);
    const sockCase = model([{ paths: ['s.sock'], weights: spec }]);
    const server = net.createServer();
    await new Promise<void>((res) => server.listen(path.join(path.dirname(sockCase), 's.sock'), res));
    try {
      await refused(load(sockCase), /s\.sock is (a socket|not a regular file)/);
    } finally {
      server.close();
    }
    // model.json itself: a folder stands for its model.json; a folder without one is refused.
    await refused(load(path.join(tmp, 'nothing-here.json')), /model file .*nothing-here\.json does not exist/);
    if (process.getuid?.() === 0) {
      const devCase = model([{ paths: ['zero'], weights: spec }]);
      execFileSync('mknod', [path.join(path.dirname(devCase), 'zero'), 'c', '1', '5']);
      await refused(load(devCase), /weights file .*\/zero is a character device: only regular files are read/);
    } else console.log('skipped the character-device case: mknod needs root (CI runs as root)');
  });

  it('a FIFO as weights or as model.json is refused at once and never blocks the event loop (child process, hang detector)', async () => {
    if (process.platform === 'win32') return;
    const spec = [W('w', [2])];
    const wf = model([{ paths: ['fifo.bin'], weights: spec }]);
    execFileSync('mkfifo', [path.join(path.dirname(wf), 'fifo.bin')]);
    const mdir = path.join(tmp, 'fifo-model');
    fs.mkdirSync(mdir);
    execFileSync('mkfifo', [path.join(mdir, 'model.json')]);
    const res = await child([
      { model: wf, how: 'handler' },
      { model: path.join(mdir, 'model.json'), how: 'handler' },
    ]);
    expect(res.map((r) => r.r)).toEqual(['error:BadFileError', 'error:BadFileError']);
    expect(res[0].m).toMatch(/weights file .*fifo\.bin is a FIFO \(named pipe\): only regular files are read/);
    expect(res[1].m).toMatch(/model file .*model\.json is a FIFO \(named pipe\): only regular files are read/);
  });

  it('reads exactly the bytes the manifest declares: short, long, sparse 1 TB, oversized and too many files are refused before any read', async () => {
    const spec = [W('w', [2])];
    await refused(
      load(model([{ paths: ['w.bin'], weights: spec }], { 'w.bin': f32(1, 2).subarray(0, 7) })),
      /w\.bin holds 7 bytes but the manifest .* describes 8 bytes/,
    );
    await refused(
      load(model([{ paths: ['w.bin'], weights: spec }], { 'w.bin': Uint8Array.from([...f32(1, 2), 0]) })),
      /w\.bin holds 9 bytes but the manifest .* describes 8 bytes/,
    );
    // A sparse 1 TB file: refused from its size (reading it would take hours).
    const big = model([{ paths: ['big.bin'], weights: spec }]);
    fs.closeSync(fs.openSync(path.join(path.dirname(big), 'big.bin'), 'w'));
    fs.truncateSync(path.join(path.dirname(big), 'big.bin'), 2 ** 40);
    await refused(load(big), /big\.bin holds 1099511627776 bytes/);
    // A weight larger than a tensor may be, and shapes that are not sizes.
    await refused(
      load(model([{ paths: [], weights: [W('w', [2 ** 20, 2 ** 20])] }])),
      /\('w'\) declares 1048576x1048576 float32 values, 4398046511104 bytes: more than one weight may hold/,
    );
    for (const shape of [[-1], [1.5], [2 ** 60], 'x', [null]])
      await refused(
        load(model([{ paths: [], weights: [W('w', shape as number[])] }])),
        /weightsManifest\[0\]\.weights\[0\] \('w'\) has a bad shape/,
      );
    // Files that each pass but together hold more than this machine can load (sparse: nothing on disk).
    const per = 2 ** 30; // float32 values per file: 4 GiB, one tensor's limit
    const count = Math.floor(os.totalmem() / 2 / (4 * per)) + 1;
    const many = model(Array.from({ length: count }, (_, k) => ({ paths: [`s${k}.bin`], weights: [W(`w${k}`, [per])] })));
    for (let k = 0; k < count; k++) {
      const f = path.join(path.dirname(many), `s${k}.bin`);
      fs.closeSync(fs.openSync(f, 'w'));
      fs.truncateSync(f, 4 * per);
    }
    await refused(load(many), new RegExp(`hold ${count * 4 * per} bytes in all, more than a model may load on this machine`));
    // The same file named twice (directly, or through a hard link) is read once at most: refused.
    const twice = model([{ paths: ['w.bin', './w.bin'], weights: [W('w', [4])] }], { 'w.bin': f32(1, 2) });
    await refused(load(twice), /paths\[1\] names .*w\.bin, which the manifest already names \(weightsManifest\[0\]\.paths\[0\]\)/);
    const hard = model([{ paths: ['w.bin', 'h.bin'], weights: [W('w', [4])] }], { 'w.bin': f32(1, 2) });
    fs.linkSync(path.join(path.dirname(hard), 'w.bin'), path.join(path.dirname(hard), 'h.bin'));
    await refused(load(hard), /which the manifest already names/);
  });

  it('string weights: each length prefix is walked; data past the end or left over is refused', async () => {
    const spec = [W('s', [2], 'string')];
    const enc = (...strs: string[]) => {
      const parts: number[] = [];
      for (const s of strs) {
        const b = new TextEncoder().encode(s);
        parts.push(...new Uint8Array(new Uint32Array([b.length]).buffer), ...b);
      }
      return Uint8Array.from(parts);
    };
    const ok = await load(model([{ paths: ['s.bin'], weights: spec }], { 's.bin': enc('ab', 'c') }));
    expect(new Uint8Array(ok.weightData as ArrayBuffer).length).toBe(11);
    await refused(
      load(model([{ paths: ['s.bin'], weights: spec }], { 's.bin': enc('ab', 'c').subarray(0, 10) })),
      /string 1 of 2 runs past the end of the group's 10 bytes/,
    );
    await refused(
      load(model([{ paths: ['s.bin'], weights: spec }], { 's.bin': Uint8Array.from([...enc('ab', 'c'), 1]) })),
      /holds 12 bytes but the manifest .* describes 11 bytes/,
    );
    const huge = Uint8Array.from([...new Uint8Array(new Uint32Array([0xffffffff]).buffer), 1, 2]);
    await refused(
      load(model([{ paths: ['s.bin'], weights: [W('s', [1], 'string')] }], { 's.bin': huge })),
      /string 0 of 1 runs past the end/,
    );
  });

  it('manifest entries are checked as tfjs decodes them (name, dtype, quantization)', async () => {
    const bad: [unknown, RegExp][] = [
      [{ shape: [1], dtype: 'float32' }, /has no string 'name'/],
      [W('w', [1], 'float64'), /unknown dtype "float64"/],
      [W('w', [1], 'float32', { quantization: null }), /bad quantization null/],
      [W('w', [1], 'float32', { quantization: { dtype: 'int8' } }), /unknown quantization dtype "int8"/],
      [W('w', [1], 'float32', { quantization: { dtype: 'uint8', min: 0 } }), /uint8-quantized without finite numbers min and scale/],
      [W('w', [1], 'int32', { quantization: { dtype: 'float16' } }), /is int32, which float16 quantization does not support/],
      [null, /must be an object/],
    ];
    for (const [entry, re] of bad) await refused(load(model([{ paths: ['w.bin'], weights: [entry] }], { 'w.bin': f32(1) })), re);
    await refused(load(model({ paths: [] })), /weightsManifest must be an array/);
    await refused(load(model([{ paths: 'w.bin', weights: [] }])), /weightsManifest\[0\] needs 'paths' and 'weights' arrays/);
    await refused(load(model([{ paths: [7], weights: [] }])), /weightsManifest\[0\]\.paths\[0\] is not a path: 7/);
    const file = model([], {}, { modelTopology: null });
    await refused(load(file), /has no modelTopology/);
    fs.writeFileSync(file, '[1, 2]');
    await refused(load(file), /does not hold a model JSON object/);
  });

  it('reads asynchronously: the event loop turns while a load is in progress', async () => {
    // Before, every read was synchronous inside load(): its promise settled before any timer or I/O
    // callback could run. Now the files are opened, checked and read on libuv's thread pool.
    const file = model([{ paths: ['w.bin'], weights: [W('w', [1024])] }], { 'w.bin': new Uint8Array(4096) });
    const order: string[] = [];
    const p = load(file).then(() => order.push('loaded'));
    setImmediate(() => order.push('event loop turned'));
    await p;
    expect(order[0]).toBe('event loop turned');
  });

  it('saves atomically: model.json names complete weights, a second save replaces both, no temporary file is left', async () => {
    const dir = path.join(tmp, 'saved');
    const specs: tf.io.WeightsManifestEntry[] = [{ name: 'w', shape: [2], dtype: 'float32' }];
    const h = new FileSaveHandler(`file://${dir}`);
    await h.save({ modelTopology: { v: 1 }, weightSpecs: specs, weightData: f32(1, 2).buffer as ArrayBuffer });
    await h.save({ modelTopology: { v: 2 }, weightSpecs: specs, weightData: f32(3, 4).buffer as ArrayBuffer });
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const art = await load(dir);
    expect(art.modelTopology).toEqual({ v: 2 });
    expect(Array.from(new Float32Array(art.weightData as ArrayBuffer))).toEqual([3, 4]);
  });
});

interface ChildResult {
  i: number;
  r: string;
  m?: string;
}
/** Runs load cases in test/fixtures/tfjs-io-child.mjs: a blocked event loop there is a timeout here. */
function child(cases: unknown[]): Promise<ChildResult[]> {
  const file = path.join(tmp, `cases-${n++}.json`);
  fs.writeFileSync(file, JSON.stringify(cases));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(fixtures, 'tfjs-io-child.mjs'), file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err = (err + d).slice(-3000)));
    // A hang detector (a FIFO read without O_NONBLOCK never returns), not a performance bound.
    const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const lines = out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      if (code !== 0)
        reject(new Error(`child ended with ${code ?? signal}${signal === 'SIGKILL' ? ' (a hang)' : ''}: ${err.slice(-1000)}`));
      else resolve(lines.filter((l) => l.r !== undefined));
    });
  });
}
