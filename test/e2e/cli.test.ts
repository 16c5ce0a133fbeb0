// The `residual` CLI: help for every command, clear errors and non-zero exits for bad flags, and the
// commands that do work (models, summary, train --quick on synthetic data, eval).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { COMMANDS, main } from '../../lib/cli/main.js';
import { Trainer, loadCheckpoint, readMetrics } from '../../lib/train/index.js';
import { root } from '../support/helpers.js';

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
      [['train', '--epochs', 'x'], /--epochs must be an integer >= 1, got 'x'/],
      [['train', '--bogus'], /unknown flag --bogus; see residual train --help/],
      [['train', '--batch-szie', '3'], /unknown flag --batch-szie \(did you mean --batch-size\?\)/],
      [['train', '-x'], /unknown flag -x/],
      [['train', 'resnet20'], /unexpected argument 'resnet20'/],
      [['train', '--lr'], /--lr needs a value/],
      [['train', '--lr', '--epochs', '2'], /--lr needs a value/],
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
  });

  it('every numeric flag has a range: out-of-range, negative, non-finite values are usage errors naming flag, value and range', async () => {
    const cases: [string, string, string][] = [
      ['epochs', '0', 'an integer >= 1'],
      ['epochs', '1.5', 'an integer >= 1'],
      ['batch-size', '-4', 'an integer in [1, 65536]'],
      ['batch-size', '65537', 'an integer in [1, 65536]'],
      ['lr', '0', 'a number > 0'],
      ['lr', 'Infinity', 'a number > 0'],
      ['lr', 'NaN', 'a number > 0'],
      ['momentum', '1', 'a number in [0, 1)'],
      ['weight-decay', '-1e-4', 'a number >= 0'],
      ['warmup-epochs', '-2', 'a number >= 0'],
      ['label-smoothing', '1', 'a number in [0, 1)'],
      ['random-erasing', '1.5', 'a number in [0, 1]'],
      ['seed', '-1', 'an integer >= 0'],
      ['workers', '0', 'an integer in [1, 16]'],
      ['log-every', '0', 'an integer >= 1'],
      ['clip-grad-norm', '-1', 'a number > 0'],
      ['clip-grad-norm', '0', 'a number > 0'],
      ['limit-train-batches', '0', 'an integer >= 1'],
      ['limit-test-batches', '-3', 'an integer >= 1'],
    ];
    for (const [flag, value, range] of cases) {
      for (const argv of [
        ['train', `--${flag}`, value],
        ['train', `--${flag}=${value}`],
      ]) {
        err = [];
        expect(await main(argv), argv.join(' ')).toBe(2);
        expect(err.join('\n'), argv.join(' ')).toContain(`--${flag} must be ${range}, got '${value}'; see residual train --help`);
      }
    }
    // Every numeric flag of every command is in the table above or has a range of its own.
    for (const c of Object.values(COMMANDS))
      for (const [name, s] of Object.entries(c.flags)) if (s.type === 'number') expect(s.range, `${c.name} --${name}`).toBeDefined();
    err = [];
    expect(await main(['eval', '--checkpoint', 'x', '--batch-size', '0'])).toBe(2);
    expect(err.join('\n')).toContain("--batch-size must be an integer in [1, 65536], got '0'");
    err = [];
    expect(await main(['train', '--device', 'gpu'])).toBe(2);
    expect(err.join('\n')).toContain("--device must be one of auto, cpu, cuda, cuda:N, got 'gpu'");
    // settings that only make sense together
    err = [];
    expect(await main(['train', '--data', 'synthetic', '--warmup-epochs', '1'])).toBe(1);
    expect(err.join('\n')).toMatch(/--warmup-epochs applies to --schedule cosine, multistep or constant/);
  });

  it('--help is generated from the flag spec: every flag with its range and default', async () => {
    for (const c of Object.values(COMMANDS)) {
      out = [];
      expect(await main([c.name, '--help'])).toBe(0);
      const text = out.join('\n');
      for (const name of Object.keys(c.flags)) expect(text, `${c.name} --${name}`).toMatch(new RegExp(`--(\\[no-\\])?${name}\\b`));
    }
    out = [];
    await main(['train', '--help']);
    const text = out.join('\n');
    expect(text).toMatch(/--epochs <n> +epochs to train \(an integer >= 1; default 1\)/);
    expect(text).toMatch(/--clip-grad-norm <x> .*\(a number > 0\)/);
    expect(text).toMatch(/--momentum <x> .*\(a number in \[0, 1\); default 0\.9\)/);
    expect(text).toMatch(/--\[no-\]augment .*\(default on\)/);
    out = [];
    expect(await main(['help', 'eval'])).toBe(0);
    expect(out.join('\n')).toMatch(/^Usage: residual eval/);
  });

  it('flag forms: --flag=value, --no-<boolean>, --boolean=false, negative values read as values', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-forms-'));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const argv = [
      'train',
      '--data=synthetic',
      '--epochs=1',
      '--batch-size',
      '32',
      '--limit-train-batches=1',
      '--limit-test-batches',
      '1',
      '--device',
      'cpu',
      '--no-nesterov',
      '--augment=false',
      '--channels-last=0',
      '--no-tensorboard',
      `--out=${dir}`,
    ];
    expect(await main(argv)).toBe(0);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      data: 'synthetic',
      epochs: 1,
      batchSize: 32,
      limitTrainBatches: 1,
      limitTestBatches: 1,
      nesterov: false,
      augment: false,
      channelsLast: false,
      tensorboard: false,
    });
    expect(fs.readdirSync(dir).filter((f) => f.includes('tfevents'))).toEqual([]); // --no-tensorboard: no event files
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
    const argv = [
      'train',
      '--data',
      'synthetic',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--limit-train-batches',
      '4',
      '--limit-test-batches',
      '2',
      '--device',
      'cpu',
      '--out',
      dir,
    ];
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    expect(await main(argv)).toBe(0);
    expect(fs.existsSync(path.join(dir, 'report.png'))).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('events.out.tfevents.')).length).toBe(1); // TensorBoard: on by default
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
    expect(r.stderr).toMatch(/--batch-size must be an integer in \[1, 65536\], got '-'/);
  });

  it("--resume continues with the run's own settings; changing its model or batch size is refused", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-resume-'));
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const first = [
      'train',
      '--data',
      'synthetic',
      '--epochs',
      '1',
      '--batch-size',
      '32',
      '--limit-train-batches',
      '3',
      '--limit-test-batches',
      '1',
      '--device',
      'cpu',
      '--lr',
      '0.05',
      '--schedule',
      'constant',
      '--out',
      dir,
    ];
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

describe('residual CLI: runs and their folders', () => {
  it("eval on a run folder gives the run's own last test numbers (one evaluation routine, the run's precision)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-eval-'));
    // bfloat16 autocast: the trainer evaluates under it, so eval must too to give the same numbers.
    // (A small run made through the API: bfloat16 convolutions are slow on CPUs without native bf16.)
    const t = new Trainer({
      model: 'resnet20',
      data: 'synthetic',
      syntheticTrain: 64,
      syntheticTest: 48,
      batchSize: 32,
      evalBatchSize: 16,
      epochs: 1,
      device: 'cpu',
      amp: true,
      out: dir,
    });
    await t.fit();
    t.dispose();
    const last = readMetrics(path.join(dir, 'metrics.jsonl'))
      .filter((m) => m.type === 'epoch')
      .at(-1)!;
    out = [];
    expect(await main(['eval', '--checkpoint', dir, '--json'])).toBe(0);
    const res = JSON.parse(out.at(-1)!);
    expect(res.images).toBe(48);
    expect(res.loss).toBe(last.testLoss);
    expect(res.acc).toBe(last.testAcc);
    expect(res.epoch).toBe(1);
    const rec = readMetrics(path.join(dir, 'metrics.jsonl')).at(-1)!;
    expect(rec).toMatchObject({ type: 'eval', loss: res.loss, acc: res.acc, epoch: 1, step: 2 });
  });

  it('--resume on a run killed before its first checkpoint starts it from the beginning, saying so', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-partial-'));
    const t = new Trainer({
      model: 'resnet20',
      data: 'synthetic',
      batchSize: 32,
      limitTrainBatches: 2,
      limitTestBatches: 1,
      epochs: 1,
      device: 'cpu',
      lr: 0.05,
      schedule: 'constant',
      out: dir,
    });
    t.crashAt = 'after-weights';
    await expect(t.fit()).rejects.toThrow(/simulated crash/);
    t.dispose();
    const writes: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((s) => {
      writes.push(String(s));
      return true;
    });
    expect(await main(['train', '--resume', '--out', dir])).toBe(0);
    expect(writes.join('')).toMatch(
      /note: .* stopped before its first checkpoint .*: there is nothing to resume, so it starts from the beginning/,
    );
    const meta = loadCheckpoint(dir).meta as unknown as {
      epoch: number;
      config: { lr: number; schedule: string; limitTrainBatches: number };
    };
    expect(meta.epoch).toBe(1);
    expect(meta.config).toMatchObject({ lr: 0.05, schedule: 'constant', limitTrainBatches: 2 }); // the run's own settings
    expect(
      readMetrics(path.join(dir, 'metrics.jsonl'))
        .filter((m) => m.type === 'step')
        .map((m) => m.step),
    ).toEqual([2]); // logged at the epoch's last step, once
    // and an empty folder: nothing to resume, and the message says what to do
    err = [];
    expect(await main(['train', '--resume', '--out', fs.mkdtempSync(path.join(os.tmpdir(), 'residual-cli-empty-'))])).toBe(1);
    expect(err.join('\n')).toMatch(/no checkpoint in .*: to start a new run there, run the same command without --resume/);
  });
});
