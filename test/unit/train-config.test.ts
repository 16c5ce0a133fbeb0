// lib/train/config.ts: one list of settings; validation whose messages name config keys, and the same
// messages rendered with the CLI's flags; the run folder's naming policy (lib/train/run-folder.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../lib/cli/main.js';
import { cliMessage, flagOf, settingsNamer } from '../../lib/cli/flags.js';
import {
  CONFIG_KEYS,
  CONFIG_RANGES,
  CONFIG_SPEC,
  DATA_NAMES,
  DEFAULT_CONFIG,
  SCHEDULES,
  Trainer,
  defaultRunFolder,
  resolveConfig,
  settingsMessageOf,
  validateConfig,
  type TrainConfig,
} from '../../lib/train/index.js';

const cfg = (extra: Partial<TrainConfig>): TrainConfig => ({ ...DEFAULT_CONFIG, data: 'synthetic', ...extra }) as TrainConfig;
/** The error validateConfig throws for `extra`, as the library shows it and as `residual train` shows it. */
function both(extra: Record<string, unknown>): { lib: string; cli: string; error: Error } {
  try {
    validateConfig(cfg(extra as Partial<TrainConfig>));
  } catch (e) {
    return { lib: (e as Error).message, cli: cliMessage(e, COMMANDS.train.flags), error: e as Error };
  }
  throw new Error(`no error for ${JSON.stringify(extra)}`);
}

describe('training config', () => {
  it('one list: the defaults, the ranges and the CLI flags all come from CONFIG_SPEC', () => {
    expect(Object.keys(DEFAULT_CONFIG).every((k) => k in CONFIG_SPEC)).toBe(true);
    expect(DEFAULT_CONFIG).toMatchObject({
      model: 'resnet20',
      data: 'fashion-mnist',
      epochs: 1,
      batchSize: 128,
      lr: 0.1,
      schedule: 'onecycle',
      workers: 2,
    });
    expect(CONFIG_RANGES.batchSize).toEqual({ integer: true, min: 1, max: 65536 });
    expect(CONFIG_SPEC.data.choices).toEqual(DATA_NAMES);
    expect(CONFIG_SPEC.schedule.choices).toEqual(SCHEDULES);
    // every train flag that is a setting has the setting's type, range, choices and default
    const flags = COMMANDS.train.flags;
    for (const k of CONFIG_KEYS) {
      const f = flags[flagOf(k)];
      if (!f) continue; // syntheticTrain, syntheticTest, evalBatchSize: library only
      expect(f.key ?? flagOf(k), k).toBe(k);
      const s = CONFIG_SPEC[k] as { type: string; range?: unknown; choices?: unknown; default?: unknown };
      if (s.range) expect(f.range, k).toEqual(s.range);
      if (s.choices) expect(f.choices, k).toEqual(s.choices);
      if (s.default !== undefined && k !== 'out') expect(f.default, k).toBe(s.default);
    }
    expect(flags['data'].choices).toEqual(DATA_NAMES);
    expect(COMMANDS.eval.flags['data'].choices).toEqual(DATA_NAMES);
  });

  it('messages name config keys for the library, and flags when the CLI shows them', () => {
    let m = both({ batchSize: 0 });
    expect(m.error).toBeInstanceOf(RangeError);
    expect(m.lib).toBe('batchSize must be an integer in [1, 65536], got 0');
    expect(m.cli).toBe('--batch-size must be an integer in [1, 65536], got 0');
    m = both({ data: 'cifar10' });
    expect(m.lib).toBe("data: 'cifar10' needs dataPath (the cifar-10-batches-bin folder)");
    expect(m.cli).toBe('--data cifar10 needs --data-path (the cifar-10-batches-bin folder)');
    m = both({ warmupEpochs: 1, epochs: 2 });
    expect(m.lib).toBe('warmupEpochs applies to schedule cosine, multistep or constant; onecycle warms up by itself (got warmupEpochs: 1)');
    expect(m.cli).toBe(
      '--warmup-epochs applies to --schedule cosine, multistep or constant; onecycle warms up by itself (got --warmup-epochs 1)',
    );
    m = both({ amp: true, ampDtype: 'float16', clipGradNorm: 1 });
    expect(m.lib).toBe("clipGradNorm with float16 loss scaling is not supported; use ampDtype: 'bfloat16'");
    expect(m.cli).toBe('--clip-grad-norm with float16 loss scaling is not supported; use --amp-dtype bfloat16');
    m = both({ nesterov: 'yes' });
    expect(m.error).toBeInstanceOf(TypeError);
    expect(m.lib).toBe('nesterov must be true or false, got yes');
    m = both({ schedule: 'step' });
    expect(m.lib).toBe('schedule must be one of onecycle, cosine, multistep, constant, got step');
    expect(m.cli).toBe('--schedule must be one of onecycle, cosine, multistep, constant, got step');
    m = both({ device: 'gpu' });
    expect(m.lib).toBe('device must be one of auto, cpu, cuda, cuda:N, got gpu');
    m = both({ lr: Infinity });
    expect(m.lib).toBe('lr must be a number > 0, got Infinity');
    m = both({ epochs: undefined });
    expect(m.lib).toBe('epochs must be an integer >= 1, got undefined');
    // settings the CLI has no flag for keep their key
    m = both({ syntheticTrain: 0 });
    expect(m.cli).toBe('syntheticTrain must be an integer >= 1, got 0');
  });

  it('an unknown key is refused, with the nearest setting', () => {
    expect(() => validateConfig(cfg({ batchsize: 3 } as never))).toThrow(/unknown setting 'batchsize' \(did you mean batchSize\?\)/);
    expect(() => new Trainer({ model: 'resnet20', data: 'synthetic', learningRate: 0.1 } as never)).toThrow(
      /unknown setting 'learningRate'/,
    );
  });

  it('the Trainer validates before it reads any data: a missing dataPath names the keys', () => {
    expect(() => new Trainer({ model: 'resnet20', data: 'folder' })).toThrow(
      "data: 'folder' needs dataPath (train/ and test/ (or val/) subfolders of class folders)",
    );
    expect(() => new Trainer({ model: 'resnet20', data: 'webdataset' })).toThrow(/^data: 'webdataset' needs dataPath/);
    expect(() => resolveConfig({ model: 'resnet19' })).toThrow(/unknown model 'resnet19'/);
  });

  it('a settings message renders with any command flags; other errors keep their text', () => {
    const e = (() => {
      try {
        validateConfig(cfg({ workers: 17 }));
      } catch (x) {
        return x;
      }
    })();
    expect(settingsMessageOf(e)).toBeDefined();
    expect(settingsMessageOf(new Error('x'))).toBeUndefined();
    expect(cliMessage(e, COMMANDS.explain.flags)).toBe('--workers must be an integer in [1, 16], got 17');
    expect(cliMessage(new Error('plain'), COMMANDS.train.flags)).toBe('plain');
    const n = settingsNamer(COMMANDS.train.flags);
    expect([n.name('dataPath'), n.setting('augment', false), n.setting('amp', true), n.setting('resume', true)]).toEqual([
      '--data-path',
      '--no-augment',
      '--amp',
      '--resume',
    ]);
  });
});

describe('run folder', () => {
  it('a default folder is runs/<model>-<data>, then -2, -3, ...: never an existing one', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-runs-'));
    expect(defaultRunFolder('resnet20', 'synthetic', root)).toBe(path.join(root, 'resnet20-synthetic'));
    fs.mkdirSync(path.join(root, 'resnet20-synthetic'));
    fs.mkdirSync(path.join(root, 'resnet20-synthetic-2'));
    expect(defaultRunFolder('resnet20', 'synthetic', root)).toBe(path.join(root, 'resnet20-synthetic-3'));
    fs.rmSync(root, { recursive: true, force: true });
  });
});
