// The `residual` command line: train, eval, models, summary, data get, doctor. Each command has one flag
// spec (lib/cli/flags.ts), used both to parse its arguments and to write its --help.
import fs from 'node:fs';
import path from 'node:path';
import { getFashionMnist } from '../data/fashion.js';
import { isStreamedData, openStreamedData } from '../data/stream.js';
import { createModel, getModelInfo, listModels } from '../models/registry.js';
import { summary } from '../models/summary.js';
import { manualSeed } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';
import { CONFIG_SPEC, DEFAULT_CONFIG, TOTAL_DEPENDENT_SCHEDULES, type ConfigKey, type TrainConfig } from '../train/config.js';
import { disposeDataset } from '../data/dataset.js';
import { channelStats, loadData, openRunTest, type RunDataInfo } from '../train/data.js';
import { finishDistributed, initDistributedFromEnv, isWriter } from '../train/distributed.js';
import { evaluate, runTestLoader } from '../train/evaluate.js';
import { MetricsWriter } from '../train/metrics.js';
import { createRunModel, resolveDevice } from '../train/recipe.js';
import { defaultRunFolder, planRun, readRunConfig } from '../train/run-folder.js';
import { loadRunWeights, readRunCheckpoint } from '../train/state.js';
import { Trainer, type Progress } from '../train/trainer.js';
import {
  UsageError,
  cliMessage,
  configFrom,
  flagOf,
  helpText,
  parseFlags,
  settingFlag,
  type CommandSpec,
  type FlagSpec,
  type FlagSpecs,
  type ParsedFlags,
} from './flags.js';
import { EXPLAIN_COMMAND, runExplainFlags } from './explain.js';
import { EXPORT_COMMAND, runExportFlags } from './export.js';

/** `residual train`'s help text of each setting that is a flag (the type, range and default come from lib/train/config.ts). */
const SETTING_HELP: Partial<Record<ConfigKey, string>> = {
  model: 'network name (see residual models)',
  data: 'dataset',
  dataPath:
    "dataset folder (needed for cifar10/100, folder and imagefolder; optional for fashion-mnist), or webdataset shards: 'shards/train-{0000..0127}.tar'",
  imageSize: 'imagefolder/webdataset: crop size (RandomResizedCrop to train; Resize + CenterCrop to evaluate)',
  onBadFile: 'imagefolder/webdataset: a corrupt or unreadable file stops the run, or is skipped and reported',
  epochs: 'epochs to train',
  batchSize: 'batch size',
  lr: 'peak learning rate',
  optimizer: 'sgd (momentum, Nesterov) or adamw',
  momentum: 'SGD momentum',
  nesterov: 'Nesterov momentum (SGD)',
  weightDecay: 'weight decay on conv/linear weights (not BN, not biases)',
  schedule: 'learning-rate schedule, stepped per batch',
  warmupEpochs: 'linear warm-up, less than --epochs (cosine, multistep, constant; onecycle has its own)',
  labelSmoothing: 'cross-entropy label smoothing',
  augment: 'random crop with padding + horizontal flip',
  randomErasing: 'random erasing probability (with --augment)',
  device: 'where to run',
  amp: 'mixed precision (autocast)',
  ampDtype: 'autocast dtype; float16 adds loss scaling',
  channelsLast:
    'channels-last memory format for weights and batches; default on for CPU training (faster with oneDNN), off on CUDA (--no-channels-last turns it off)',
  cpuMemoryCaching:
    "keep freed CPU memory mapped for reuse, so activations are not faulted in again every step (resident memory stays at the step's peak); default on for CPU training, off on CUDA (--no-cpu-memory-caching turns it off)",
  cudaGraphs:
    'capture the training step in a CUDA graph and replay it (CUDA only; not with float16 --amp-dtype, --clip-grad-norm or --nproc-per-node)',
  cudnnBenchmark: 'cuDNN benchmark mode: time the convolution algorithms once per shape, keep the fastest (CUDA)',
  seed: 'seed for initialisation, shuffling and augmentation',
  out: 'run folder (checkpoints, metrics.jsonl, TensorBoard event files, report.svg/png); default runs/<model>-<data>, then -2, -3, ... (never overwritten)',
  workers: 'data loader threads',
  logEvery: 'steps between progress lines',
  tensorboard:
    'TensorBoard event files in the run folder: metrics, weight and gradient-norm histograms, config, report (tensorboard --logdir runs)',
  clipGradNorm: "clip the gradients' total norm to this value; no clipping unless given",
  limitTrainBatches: 'stop each epoch after this many batches (quick runs)',
  limitTestBatches: 'evaluate on this many test batches only',
};

/** The flag of a setting, from the config spec. */
const flagFor = (k: ConfigKey, extra: Partial<FlagSpec> = {}): FlagSpec => settingFlag(k, CONFIG_SPEC[k], SETTING_HELP[k] ?? k, extra);

/** `residual train`'s flags: every setting with a help text, then the flags of the command itself. */
const TRAIN_FLAGS: FlagSpecs = (() => {
  const out: FlagSpecs = {};
  for (const k of Object.keys(SETTING_HELP) as ConfigKey[]) {
    // The run folder's default is chosen by the command (runs/<model>-<data>, ...), not the library's.
    out[flagOf(k)] = flagFor(k, k === 'out' ? { default: undefined } : {});
    if (k === 'out')
      out.resume = {
        type: 'boolean',
        help: "continue the run in --out from its last checkpoint, with the run's own settings (a run stopped before its first checkpoint starts again)",
      };
    if (k === 'workers')
      out['nproc-per-node'] = {
        type: 'int',
        valueName: 'n',
        help: 'data-parallel: start N ranks on this machine (c10d Gloo/NCCL); --batch-size is then PER RANK (global batch = batch-size x ranks); with --nnodes M --node-rank R --master-addr A --master-port P across machines, and --max-restarts K to restart a failed group from the last checkpoint (see residual launch --help)',
      };
  }
  out.quick = {
    type: 'boolean',
    help: 'the README demo: resnet20, 1 epoch of Fashion-MNIST on the CPU, no augmentation (synthetic data if Fashion-MNIST cannot be had); other flags still apply',
  };
  out.json = { type: 'boolean', help: 'print progress as JSON lines' };
  return out;
})();

/** Flags of `train` that are not TrainConfig settings. */
const TRAIN_ONLY = ['quick', 'json', 'resume'];

function fmtTime(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--:--';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** A progress bar on a terminal, plain lines otherwise. */
export function progressPrinter(stream: NodeJS.WriteStream = process.stdout, json = false): (p: Progress) => void {
  const tty = !!stream.isTTY && !json;
  let barActive = false;
  const line = (s: string) => {
    if (barActive) stream.write('\n');
    barActive = false;
    stream.write(s + '\n');
  };
  return (p) => {
    if (json) {
      stream.write(JSON.stringify(p) + '\n');
      return;
    }
    switch (p.type) {
      case 'start':
        line(`training ${p.model} (${p.params.toLocaleString('en-US')} parameters) on ${p.device}: ${p.dataName}`);
        line(
          `  ${p.trainSize} training / ${p.testSize} test images, ${p.stepsPerEpoch} steps per epoch, epochs ${p.startEpoch + 1}..${p.epochs}, run folder ${p.out}`,
        );
        if (p.worldSize && p.worldSize > 1)
          line(
            `  data-parallel: ${p.worldSize} ranks, batch ${p.batchSize} per rank (global batch ${p.batchSize! * p.worldSize}); rank 0 writes the run folder`,
          );
        if (p.tensorboard) line(`  TensorBoard: tensorboard --logdir ${path.dirname(p.out)}`);
        break;
      case 'step': {
        const stats = `loss ${p.loss.toFixed(4)} acc ${(p.acc * 100).toFixed(1)}% ${Math.round(p.imagesPerSec)} img/s lr ${p.lr.toPrecision(3)} ETA ${fmtTime(p.etaSeconds)}`;
        if (tty) {
          const w = 24;
          const f = Math.round((p.step / p.steps) * w);
          stream.write(
            `\r\x1b[2Kepoch ${p.epoch}/${p.epochs} [${'='.repeat(f)}${f < w ? '>' : ''}${' '.repeat(Math.max(0, w - f - 1))}] ${p.step}/${p.steps} ${stats}`,
          );
          barActive = true;
        } else {
          line(`epoch ${p.epoch}/${p.epochs} step ${p.step}/${p.steps} ${stats}`);
        }
        break;
      }
      case 'epoch':
        line(
          `epoch ${p.epoch}/${p.epochs}: train loss ${p.trainLoss.toFixed(4)} acc ${(p.trainAcc * 100).toFixed(2)}% | test loss ${p.testLoss.toFixed(4)} acc ${(p.testAcc * 100).toFixed(2)}% | ${p.seconds.toFixed(1)} s`,
        );
        break;
      case 'checkpoint':
        line(`  checkpoint: ${p.path}`);
        break;
      case 'notice':
        line(`note: ${p.message}`);
        break;
      case 'done':
        line(`test accuracy: ${(p.testAcc * 100).toFixed(2)}% (loss ${p.testLoss.toFixed(4)}) after ${fmtTime(p.seconds)}`);
        line(`report: ${p.report.png} (and ${path.basename(p.report.svg)}); metrics: ${path.join(p.out, 'metrics.jsonl')}`);
        break;
    }
  };
}

/** The config keys the user set explicitly on the command line. */
function flagKeys(flags: Record<string, unknown>): Set<string> {
  return new Set(Object.keys(configFrom(TRAIN_FLAGS, flags, TRAIN_ONLY)));
}

/** The settings a run in `dir` was started with: its checkpoint's (checked: lib/train/state.ts), else (no checkpoint yet) its config.json's. */
function savedRunConfig(dir: string): Partial<TrainConfig> | null {
  if (fs.existsSync(path.join(dir, 'checkpoint.json'))) return readRunCheckpoint(dir).meta.config;
  return readRunConfig(dir);
}

async function cmdTrain({ flags }: ParsedFlags): Promise<number> {
  const cfg = { model: DEFAULT_CONFIG.model, ...configFrom(TRAIN_FLAGS, flags, TRAIN_ONLY) } as Partial<TrainConfig> & { model: string };
  let data: ReturnType<typeof loadData> | undefined;
  if (flags.quick) {
    cfg.model = (flags.model as string) ?? 'resnet20';
    cfg.epochs = (flags.epochs as number) ?? 1;
    cfg.data = (flags.data as TrainConfig['data']) ?? 'fashion-mnist';
    cfg.device = (flags.device as TrainConfig['device']) ?? 'cpu';
    // One epoch is too short for augmentation to pay off (88.1% with it, 89.4% without, measured).
    cfg.augment = (flags.augment as boolean | undefined) ?? false;
    if (cfg.data === 'fashion-mnist') {
      try {
        data = loadData({ data: 'fashion-mnist', dataPath: cfg.dataPath, seed: cfg.seed ?? 0 });
      } catch (e) {
        let ok = false;
        if (!process.env.CI) {
          console.error(`Fashion-MNIST is not here (${(e as Error).message.split('\n')[0]}); trying to fetch it...`);
          try {
            await getFashionMnist({ quiet: false });
            data = loadData({ data: 'fashion-mnist', dataPath: cfg.dataPath, seed: cfg.seed ?? 0 });
            ok = true;
          } catch (e2) {
            console.error(`could not fetch it: ${(e2 as Error).message.split('\n')[0]}`);
          }
        }
        if (!ok) {
          console.error('*** Fashion-MNIST is not available: training on a SYNTHETIC dataset instead (clearly not a real benchmark) ***');
          cfg.data = 'synthetic';
          data = undefined;
        }
      }
    }
  }
  if (flags.resume) {
    // A resumed run continues with its own settings; flags given now may only change what does not
    // alter the run's meaning (e.g. --epochs to extend it, --workers, --log-every, --device).
    if (!cfg.out) throw new UsageError('residual train: --resume needs --out (the run folder to continue)');
    planRun({ out: cfg.out }, { resume: true }); // a folder with nothing to resume is refused before any data is read
    const saved = savedRunConfig(cfg.out) ?? {};
    const explicitKeys = flagKeys(flags);
    for (const key of ['model', 'data', 'batchSize', 'dataPath'] as const) {
      const given = (cfg as Record<string, unknown>)[key];
      if (explicitKeys.has(key) && saved[key] !== undefined && given !== saved[key])
        throw new UsageError(`residual train: --resume cannot change ${key} (the run used ${String(saved[key])}, got ${String(given)})`);
    }
    for (const [k, v] of Object.entries(saved)) if (!explicitKeys.has(k) && k !== 'out') (cfg as Record<string, unknown>)[k] = v;
    if (explicitKeys.has('epochs') && cfg.epochs !== saved.epochs && saved.schedule && TOTAL_DEPENDENT_SCHEDULES.includes(saved.schedule))
      throw new UsageError(
        `residual train: --resume cannot change --epochs of a ${saved.schedule} schedule (its shape depends on the total; the run was set for ${String(saved.epochs)})`,
      );
  }
  cfg.data ??= DEFAULT_CONFIG.data;
  cfg.out ??= defaultRunFolder(cfg.model, cfg.data); // never an earlier run's
  // A rank of a data-parallel job (residual train --nproc-per-node N, or torchrun): lib/train/distributed.ts.
  const ranked = await initDistributedFromEnv();
  try {
    const t = new Trainer(cfg, data);
    try {
      await t.fit(isWriter() ? progressPrinter(process.stdout, !!flags.json) : () => {}, { resume: !!flags.resume });
    } finally {
      t.dispose();
    }
  } finally {
    if (ranked) finishDistributed();
  }
  return 0;
}

const EVAL_FLAGS: FlagSpecs = {
  checkpoint: {
    type: 'string',
    required: true,
    valueName: 'path',
    help: 'a run folder, its checkpoint.json, or a .safetensors/.pt state dict (with --model)',
  },
  model: { type: 'string', valueName: 'name', help: "network name, for a bare state dict; a run folder's model is the run's" },
  data: flagFor('data', { help: "dataset; default: the run's, else fashion-mnist", default: undefined }),
  'data-path': flagFor('dataPath', { help: "dataset folder; default: the run's" }),
  device: flagFor('device'),
  'batch-size': flagFor('batchSize', { help: "batch size; default: the run's test batch size, else 256", default: undefined }),
  json: { type: 'boolean', help: 'print the result as JSON' },
};

async function cmdEval({ flags }: ParsedFlags): Promise<number> {
  const ck = flags.checkpoint as string;
  let modelName = flags.model as string | undefined;
  let config: Partial<TrainConfig> = {};
  let at: { epoch: number; step: number } | undefined;
  let runDir: string | undefined;
  let weights: Record<string, Tensor>;
  /** What the run's model was trained to see, saved with its checkpoint (lib/train/state.ts). */
  let saved: RunDataInfo | undefined;
  const { load } = await import('../io/index.js');
  if (!fs.existsSync(ck)) throw new UsageError(`residual eval: ${ck} does not exist`);
  const isRun = fs.statSync(ck).isDirectory() || ck.endsWith('.json');
  if (isRun) {
    const c = loadRunWeights(ck);
    config = c.meta.config;
    at = { epoch: c.meta.epoch, step: c.meta.globalStep };
    runDir = c.dir;
    saved = c.meta.data;
    weights = c.weights;
    if (modelName && config.model && getModelInfo(modelName).name !== config.model) {
      for (const w of Object.values(weights)) w.dispose();
      throw new UsageError(
        `residual eval: --model ${modelName} does not match the run's model ${config.model} (leave --model out for a run folder)`,
      );
    }
    modelName = config.model;
  } else {
    if (!modelName) throw new UsageError('residual eval: --model is needed with a bare weights file');
    weights = load(ck);
  }
  const dataName = (flags.data as TrainConfig['data']) ?? config.data ?? 'fashion-mnist';
  const device = resolveDevice((flags.device as TrainConfig['device']) ?? 'auto');
  // The model and the test loader are built as the trainer builds them, and evaluated by the same
  // routine, so a run folder's numbers here equal the run's last test numbers.
  const batch = flags['batch-size'] as number | undefined;
  const base = { ...DEFAULT_CONFIG, ...config, model: modelName! };
  const run: TrainConfig = {
    ...base,
    data: dataName,
    dataPath: (flags['data-path'] as string) ?? config.dataPath,
    evalBatchSize: batch ?? (isRun ? base.evalBatchSize : 256),
  };
  let open: {
    loader: ReturnType<typeof runTestLoader> | ReturnType<typeof openStreamedData>['test'];
    info: Parameters<typeof createRunModel>[1];
    free: () => void;
  };
  if (saved) {
    // The test split alone, normalised with the run's own statistics: the training set is not read.
    const t = openRunTest(run, saved, device);
    open = { loader: t.test, info: saved, free: () => t.dataset && disposeDataset(t.dataset) };
  } else if (isStreamedData(dataName)) {
    // Streamed data: the run's evaluation transform, read from the files.
    const streamed = openStreamedData(run, device);
    streamed.train.close();
    open = { loader: streamed.test, info: streamed, free: () => {} };
  } else {
    // A bare weights file, or a checkpoint written before the statistics were saved with the run.
    if (isRun)
      console.error(
        'note: this checkpoint was saved before residual kept the normalisation statistics with a run: reading the training set to compute them again',
      );
    const { train, test } = loadData(run);
    open = {
      loader: runTestLoader(test, channelStats(train.images), run, device),
      info: train,
      free: () => [train, test].forEach(disposeDataset),
    };
  }
  let res;
  try {
    const model = createRunModel(run, open.info, device);
    try {
      model.loadStateDict(weights);
      for (const w of Object.values(weights)) w.dispose();
      const r = await evaluate(model, open.loader, { device, amp: run.amp, ampDtype: run.ampDtype });
      res = { model: run.model, data: dataName, images: r.n, loss: r.loss, acc: r.acc, ...(at ?? {}) };
    } finally {
      model.dispose();
    }
  } finally {
    open.loader.close();
    open.free();
  }
  if (runDir) {
    const w = new MetricsWriter(path.join(runDir, 'metrics.jsonl'));
    w.eval({ loss: res.loss, acc: res.acc, images: res.images, ...(at ?? {}) });
    w.close();
  }
  if (flags.json) console.log(JSON.stringify(res));
  else
    console.log(
      `${res.model} on ${dataName} test set (${res.images} images): accuracy ${(res.acc * 100).toFixed(2)}%, loss ${res.loss.toFixed(4)}`,
    );
  return 0;
}

async function cmdModels({ flags }: ParsedFlags): Promise<number> {
  const rows = listModels().map((m) => {
    const model = m.create();
    const params = model.numParameters();
    model.dispose();
    return { name: m.name, family: m.family, params, description: m.description };
  });
  if (flags.json) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log(`${'model'.padEnd(18)} ${'family'.padEnd(9)} ${'parameters'.padStart(12)}  description`);
    for (const r of rows)
      console.log(`${r.name.padEnd(18)} ${r.family.padEnd(9)} ${r.params.toLocaleString('en-US').padStart(12)}  ${r.description}`);
  }
  return 0;
}

async function cmdSummary({ flags }: ParsedFlags): Promise<number> {
  const name = flags.model as string;
  const info = getModelInfo(name);
  let shape = [1, 3, info.inputSize, info.inputSize];
  if (flags.input) {
    shape = String(flags.input)
      .split(/[,x ]+/)
      .map(Number);
    if (shape.length !== 4 || shape.some((v) => !Number.isInteger(v) || v <= 0))
      throw new UsageError(`residual summary: --input must be N,C,H,W (positive integers), got '${String(flags.input)}'`);
  }
  manualSeed(0);
  const model = createModel(name, { numClasses: flags['num-classes'] as number | undefined, inChannels: shape[1] });
  console.log(summary(model, shape));
  model.dispose();
  return 0;
}

async function cmdData({ flags, positionals }: ParsedFlags): Promise<number> {
  if (positionals[0] === 'pack') {
    if (positionals.length > 1)
      throw new UsageError(
        `residual data: expected 'residual data pack --data-path DIR --out DIR', got '${['residual', 'data', ...positionals].join(' ')}'`,
      );
    const { cmdPack } = await import('./pack.js');
    return cmdPack(flags);
  }
  if (positionals[0] !== 'get' || positionals[1] !== 'fashion-mnist')
    throw new UsageError(
      `residual data: expected 'residual data get fashion-mnist' or 'residual data pack', got '${['residual', 'data', ...positionals].join(' ')}'`,
    );
  const r = await getFashionMnist({ quiet: false, method: (flags.method as 'auto' | 'apt' | 'download') ?? 'auto' });
  console.log(`Fashion-MNIST ready in ${r.dir} (${r.how}); checksums verified`);
  return 0;
}

async function cmdDoctor({ flags }: ParsedFlags): Promise<number> {
  const mod = (await import('./doctor.js')) as { doctor: () => Promise<{ ok: boolean; text: string; report?: unknown }> };
  const r = await mod.doctor();
  console.log(flags.json ? JSON.stringify(r.report ?? r, null, 2) : r.text);
  return r.ok ? 0 : 1;
}

type Command = CommandSpec & { run: (parsed: ParsedFlags) => Promise<number> };

const JSON_FLAG: FlagSpec = { type: 'boolean', help: 'print as JSON' };

/** Every command: its one flag spec parses its arguments and writes its --help. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  train: {
    name: 'train',
    about: 'Train a ResNet; checkpoints, metrics.jsonl and a report (SVG/PNG) go to the run folder (--out).',
    usage:
      'residual train [--model resnet20] [--data fashion-mnist] [--epochs N] [--batch-size B] [--lr X] [--device auto|cpu|cuda] [--amp] [--[no-]channels-last] [--out runs/NAME] [--resume]',
    flags: TRAIN_FLAGS,
    notes: [
      'Examples:',
      '  residual train --quick                                   # the README demo (about 2 minutes on a laptop CPU)',
      '  residual train --data synthetic --epochs 1 --limit-train-batches 5 --out runs/try',
      '  residual train --resume --out runs/try                   # continue runs/try after an interruption',
    ],
    run: cmdTrain,
  },
  eval: {
    name: 'eval',
    about: "Evaluate a run's checkpoint (or a weights file) on the test set; a run folder's result is added to its metrics.jsonl.",
    usage: 'residual eval --checkpoint runs/NAME [--json]',
    flags: EVAL_FLAGS,
    run: cmdEval,
  },
  models: {
    name: 'models',
    about: 'List every network with its parameter count.',
    usage: 'residual models [--json]',
    flags: { json: JSON_FLAG },
    run: cmdModels,
  },
  summary: {
    name: 'summary',
    about: 'Layers, output shapes and parameter counts of a network.',
    usage: 'residual summary --model resnet50 [--input 1,3,224,224]',
    flags: {
      model: { type: 'string', required: true, valueName: 'name', help: 'network name (see residual models)' },
      input: {
        type: 'string',
        valueName: 'N,C,H,W',
        help: "input shape (default 1,3,S,S with the network's input size S: 224 for ImageNet networks, 32 for CIFAR ones)",
      },
      'num-classes': { type: 'int', key: 'numClasses', range: { min: 1 }, help: "classifier size; default: the network's" },
    },
    run: cmdSummary,
  },
  data: {
    name: 'data',
    about:
      'Fetch a dataset (the Debian package where apt works, else the published files; checksums verified), or pack an image folder into WebDataset shards.',
    usage:
      'residual data get fashion-mnist [--method auto|apt|download]\n       residual data pack --data-path DIR --out SHARDS_DIR [--shard-size 1000] [--seed 0] [--[no-]shuffle]',
    positionals: { max: 2, names: 'get fashion-mnist | pack' },
    flags: {
      method: {
        type: 'string',
        choices: ['auto', 'apt', 'download'],
        help: 'get: the Debian package (apt), the published files (download), or whichever works (auto)',
        default: 'auto',
      },
      'data-path': {
        type: 'string',
        valueName: 'dir',
        help: 'pack: an image folder (DIR/<class>/*.jpg|png), or one with train/ and val/ (or test/) folders of classes',
      },
      out: { type: 'string', valueName: 'dir', help: 'pack: where the shards (train-000000.tar, ...) and classes.json go' },
      'shard-size': { type: 'int', range: { integer: true, min: 1 }, help: 'pack: samples per shard', default: 1000 },
      seed: { type: 'int', range: { integer: true, min: 0 }, help: 'pack: seed of the sample order', default: 0 },
      shuffle: { type: 'boolean', help: 'pack: shuffle the samples across shards', default: true },
    },
    notes: ["Then: residual train --data webdataset --data-path 'SHARDS_DIR/train-{000000..NNNNNN}.tar' (the pattern is printed)"],
    run: cmdData,
  },
  launch: {
    name: 'launch',
    about: "Start N ranks of a data-parallel job with torchrun's environment (also: residual train --nproc-per-node N).",
    usage:
      'residual launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] [--max-restarts K] script.js [args]',
    // main() hands `launch` to lib/cli/launch.ts before this table: its arguments after the script are
    // the script's own. The spec serves the command list and `residual help launch`.
    flags: {
      'nproc-per-node': { type: 'int', required: true, range: { min: 1 }, help: 'ranks on this machine' },
      nnodes: { type: 'int', range: { min: 1 }, help: 'machines in the job', default: 1 },
      'node-rank': { type: 'int', range: { min: 0 }, help: "this machine's index", default: 0 },
      'master-addr': {
        type: 'string',
        valueName: 'host',
        help: "address of node 0, whose launcher hosts the job's store",
        default: '127.0.0.1',
      },
      'master-port': { type: 'int', range: { min: 0, max: 65535 }, help: 'its port (0: a free one, one machine only)', default: 29500 },
      'max-restarts': {
        type: 'int',
        range: { min: 0, max: 2147483647 },
        help: 'restart the whole group up to K times after a failure, as torchrun (residual train resumes from the last checkpoint)',
        default: 0,
      },
      'rdzv-timeout': {
        type: 'number',
        range: { min: 0.001, max: 2147483 },
        help: 'seconds the nodes wait for each other at each (re)start',
        default: 900,
      },
      'no-node': { type: 'boolean', help: 'run the command as a program instead of a Node script' },
      grace: {
        type: 'number',
        range: { min: 0, max: 2147483 },
        help: 'seconds between SIGTERM and SIGKILL when stopping the ranks',
        default: 5,
      },
    },
    positionals: { max: Number.MAX_SAFE_INTEGER, names: 'script.js [args]' },
    run: async () => 2,
  },
  setup: {
    name: 'setup',
    about:
      'Do what the install step does: fetch libtorch, pick the prebuilt binary or build one (for pnpm, npm --ignore-scripts, or after changing LIBTORCH/RESIDUAL_VARIANT).',
    usage: 'residual setup [--build-from-source]',
    flags: {
      'build-from-source': {
        type: 'boolean',
        key: 'buildFromSource',
        help: 'skip prebuilt binaries and compile (needs cmake and a C++17 compiler)',
      },
    },
    notes: ['bin/residual.js runs it before loading the native library, so it works where that is missing.'],
    run: async ({ flags }) => {
      const m = (await import(new URL('../../scripts/install/install.mjs', import.meta.url).href)) as {
        main: (argv: string[], o: { via: string }) => Promise<number>;
      };
      return m.main(flags.buildFromSource ? ['--build-from-source'] : [], { via: 'setup' });
    },
  },
  doctor: {
    name: 'doctor',
    about: 'Check the installation: Node, the addon binary, libtorch, CUDA/cuDNN, GPUs; each problem with its fix.',
    usage: 'residual doctor [--json]',
    flags: { json: JSON_FLAG },
    run: cmdDoctor,
  },
  explain: { ...EXPLAIN_COMMAND, run: runExplainFlags },
  export: { ...EXPORT_COMMAND, run: runExportFlags },
};

function mainHelp(): string {
  return [
    'residual: ResNet training for Node.js on libtorch',
    '',
    'Usage: residual <command> [options]',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(8)} ${c.about}`),
    '',
    "Run 'residual <command> --help' for a command's options; 'residual --version' for the version.",
    'Start with: residual train --quick',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd) {
    console.log(mainHelp());
    return 1;
  }
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    const topic = cmd === 'help' ? rest[0] : undefined;
    if (topic && COMMANDS[topic]) console.log(helpText(COMMANDS[topic]));
    else console.log(mainHelp());
    return 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    console.log(pkg.version);
    return 0;
  }
  // Data-parallel launching (lib/cli/launch.ts): `launch`, and `train --nproc-per-node N`.
  const wantsHelp = rest.includes('--help') || rest.includes('-h');
  if (cmd === 'launch' || (cmd === 'train' && !wantsHelp && rest.some((a) => /^--nproc[-_]per[-_]node(=|$)/.test(a)))) {
    const { launchMain, launchTrain } = await import('./launch.js');
    return cmd === 'launch' ? launchMain(rest) : launchTrain(rest);
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(
      `residual: unknown command '${cmd}'${cmd.startsWith('-') ? ' (the command comes first, e.g. residual train --help)' : ''}\n\n${mainHelp()}`,
    );
    return 2;
  }
  try {
    const parsed = parseFlags(c, rest);
    if (parsed.help) {
      console.log(helpText(c));
      return 0;
    }
    return await c.run(parsed);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    console.error(`residual ${cmd}: ${cliMessage(e, c.flags)}`);
    if (process.env.RESIDUAL_DEBUG) console.error((e as Error).stack);
    return 1;
  }
}
