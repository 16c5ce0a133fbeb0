// The `residual` CLI: help for every command, clear errors and non-zero exits for bad flags, and the
// commands that do work (models, summary, train --quick on synthetic data, eval).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../lib/cli/main.js';
import { root } from './helpers.js';

let out: string[] = [];
let err: string[] = [];
beforeEach(() => {
  out = [];
  err = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
});
afterEach(() => vi.restoreAllMocks());

describe('residual CLI', () => {
  it('--help for the program and for every command', async () => {
    expect(await main(['--help'])).toBe(0);
    expect(out.join('\n')).toMatch(/Commands:\n {2}train/);
    for (const cmd of ['train', 'eval', 'models', 'summary', 'data', 'doctor']) {
      out = [];
      expect(await main([cmd, '--help'])).toBe(0);
      expect(out.join('\n'), cmd).toMatch(new RegExp(`^Usage: residual ${cmd}`));
    }
    expect(out.length).toBeGreaterThan(0);
  });

  it('bad commands and flags: a clear message and a non-zero exit', async () => {
    expect(await main(['fly'])).toBe(2);
    expect(err.join('\n')).toMatch(/unknown command 'fly'/);
    const cases: [string[], RegExp][] = [
      [['train', '--epochs', 'x'], /--epochs must be an integer, got 'x'/],
      [['train', '--bogus'], /unknown flag --bogus/],
      [['train', '--lr'], /--lr needs a value/],
      [['train', '--optimizer', 'rmsprop'], /--optimizer must be one of sgd, adamw, got 'rmsprop'/],
      [['train', '--amp=maybe'], /--amp takes no value or true\/false/],
      [['summary'], /--model is required/],
      [['summary', '--model', 'resnet20', '--input', '1,3,32'], /--input must be N,C,H,W/],
      [['eval'], /--checkpoint is required/],
      [['data', 'get', 'imagenet'], /expected 'residual data get fashion-mnist'/],
    ];
    for (const [argv, re] of cases) {
      err = [];
      expect(await main(argv), argv.join(' ')).toBe(2);
      expect(err.join('\n'), argv.join(' ')).toMatch(re);
    }
    err = [];
    expect(await main(['train', '--model', 'resnet19', '--data', 'synthetic'])).toBe(1);
    expect(err.join('\n')).toMatch(/unknown model 'resnet19'; known models: resnet18/);
    err = [];
    expect(await main(['train', '--data', 'synthetic', '--epochs', '0'])).toBe(1);
    expect(err.join('\n')).toMatch(/--epochs must be a positive integer, got 0/);
  });

  it('models lists every network with its parameter count', async () => {
    expect(await main(['models', '--json'])).toBe(0);
    const rows = JSON.parse(out.join('\n')) as { name: string; params: number }[];
    const byName = Object.fromEntries(rows.map((r) => [r.name, r.params]));
    expect(byName.resnet18).toBe(11_689_512);
    expect(byName.resnet50).toBe(25_557_032);
    expect(byName.resnet20).toBe(269_722);
    expect(byName.preact164).toBe(1_703_258);
  });

  it('summary prints layers, shapes and totals', async () => {
    expect(await main(['summary', '--model', 'resnet20', '--input', '2,1,28,28'])).toBe(0);
    const text = out.join('\n');
    expect(text).toMatch(/fc \(Linear\)\s+\[2, 10\]\s+650/);
    expect(text).toMatch(/Total params: 269,434/); // 1 input channel: 432 - 144 fewer than 3 channels
  });

  it('train on synthetic data writes a run folder; eval reads it back; --resume refuses a finished run twice', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-'));
    const argv = ['train', '--data', 'synthetic', '--epochs', '1', '--batch-size', '32', '--limit-train-batches', '4', '--limit-test-batches', '2', '--device', 'cpu', '--out', dir];
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    expect(await main(argv)).toBe(0);
    expect(fs.existsSync(path.join(dir, 'report.png'))).toBe(true);
    expect(await main(argv)).toBe(1);
    expect(err.join('\n')).toMatch(/already holds a checkpoint/);
    out = [];
    expect(await main(['eval', '--checkpoint', dir, '--json'])).toBe(0);
    const res = JSON.parse(out.at(-1)!);
    expect(res.model).toBe('resnet20');
    expect(res.acc).toBeGreaterThanOrEqual(0);
    expect(res.images).toBeGreaterThan(0);
  });

  it('the bin script exits non-zero on bad flags (compiled CLI)', () => {
    const bin = path.join(root, 'bin', 'residual.js');
    if (!fs.existsSync(path.join(root, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: npm install builds it');
    const r = spawnSync(process.execPath, [bin, 'train', '--batch-size', '-'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--batch-size must be an integer, got '-'/);
  });

  it("--resume continues with the run's own settings; changing its model or batch size is refused", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-resume-'));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const first = ['train', '--data', 'synthetic', '--epochs', '1', '--batch-size', '32', '--limit-train-batches', '3', '--limit-test-batches', '1', '--device', 'cpu', '--lr', '0.05', '--schedule', 'constant', '--out', dir];
    expect(await main(first)).toBe(0);
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-resume-'));
    expect(await main([...first.slice(0, -3), 'onecycle', '--out', other])).toBe(0);
    err = [];
    expect(await main(['train', '--resume', '--out', other, '--epochs', '2'])).toBe(2);
    expect(err.join('\n')).toMatch(/cannot change --epochs of a onecycle schedule/);
    err = [];
    expect(await main(['train', '--resume', '--out', dir, '--batch-size', '64'])).toBe(2);
    expect(err.join('\n')).toMatch(/--resume cannot change batchSize \(the run used 32, got 64\)/);
    expect(await main(['train', '--resume', '--out', dir, '--epochs', '2'])).toBe(0);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8'));
    expect(meta.epoch).toBe(2);
    expect(meta.config.batchSize).toBe(32);
    expect(meta.config.lr).toBe(0.05);
    expect(meta.config.data).toBe('synthetic');
  });

  it("refuses an --out folder holding another run's files", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-out-'));
    fs.writeFileSync(path.join(dir, 'model.safetensors'), 'precious');
    expect(await main(['train', '--data', 'synthetic', '--limit-train-batches', '1', '--out', dir])).toBe(1);
    expect(err.join('\n')).toMatch(/already holds model.safetensors from another run/);
    expect(fs.readFileSync(path.join(dir, 'model.safetensors'), 'utf8')).toBe('precious');
  });
});
