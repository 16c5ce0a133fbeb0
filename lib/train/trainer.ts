// The trainer: one training step per call (forward, loss, backward, optimizer step, schedule), evaluation,
// epochs with metrics, checkpoints and resume, and the final report. Everything heavy is native: the data
// pipeline (threads), the ops, and the optimizer step (one call for all parameters). The loop awaits the
// data loader between steps, so the event loop keeps running while a model trains.
import fs from 'node:fs';
import path from 'node:path';
import { noGrad } from '../autograd/index.js';
import { loadCifar10, loadCifar100 } from '../data/cifar.js';
import { disposeDataset, syntheticImageDataset, type ImageDataset } from '../data/dataset.js';
import { loadFashionMnist } from '../data/fashion.js';
import { loadImageFolder } from '../data/folder.js';
import { DataLoader } from '../data/loader.js';
import { isStreamedData, openStreamedData, reportSkipped, type StreamingDataLoader } from '../data/stream.js';
import { createModel, getModelInfo } from '../models/registry.js';
import { crossEntropy } from '../nn/functional.js';
import type { Module } from '../nn/module.js';
import { AdamW, GradScaler, SGD, clipGradNorm, type Optimizer, type ParamGroup } from '../optim/optimizer.js';
import { CosineAnnealingLR, LinearWarmup, MultiStepLR, OneCycleLR, SequentialLR, ConstantLR, type LRScheduler } from '../optim/schedule.js';
import { autocast, cuda, getRngState, manualSeed, setCpuMemoryCaching, setRngState } from '../tensor/memory.js';
import { scope } from '../tensor/scope.js';
import { Tensor, hOf, zeros, type Device } from '../tensor/tensor.js';
import { native } from '../addon/binding.js';
import { CHECKPOINT_WEIGHTS, hasCheckpoint, isCheckpointTemp, loadCheckpoint, saveCheckpoint, type CrashPoint } from './checkpoint.js';
import { writeJsonAtomic } from '../core/fs.js';
import { MetricsWriter, truncateMetrics, type History } from './metrics.js';
import { writeReport } from './report.js';
import { evaluate, runTestLoader, type EvaluateResult } from './evaluate.js';
import { saveSafetensors } from '../io/safetensors.js';
import { checkRange, type NumberRange } from '../core/range.js';
import { GraphedTrainStep, cudaGraphsIncompatibility, cudnnBenchmark } from './graphs.js';
import { DeviceError } from '../core/errors.js';
import { checkResumeWorldSize, isWriter, refuseStreamedDistributed, setupDistributed, type DistributedTraining } from './distributed.js';

/** 'imagefolder' and 'webdataset' are streamed (lib/data/stream.ts); the others are loaded into memory. */
export type DataName = 'fashion-mnist' | 'cifar10' | 'cifar100' | 'synthetic' | 'folder' | 'imagefolder' | 'webdataset';

export interface TrainConfig {
  model: string;
  data: DataName;
  /** Dataset folder (fashion-mnist: optional; cifar10/100 and folder: required). */
  dataPath?: string;
  epochs: number;
  batchSize: number;
  /** Peak learning rate (the 1cycle maximum, or the base lr of the other schedules). */
  lr: number;
  optimizer: 'sgd' | 'adamw';
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  schedule: 'onecycle' | 'cosine' | 'multistep' | 'constant';
  warmupEpochs: number;
  labelSmoothing: number;
  augment: boolean;
  /** Random erasing probability (with augment). */
  randomErasing: number;
  device: 'auto' | Device;
  amp: boolean;
  ampDtype: 'bfloat16' | 'float16';
  /**
   * Channels-last memory format for conv weights and batches. Unset: on for CPU training (oneDNN's
   * channels-last kernels; a ResNet-20 step measured 12-15% faster on an AVX2 CPU, in PyTorch too),
   * off on CUDA. The Trainer writes the resolved value into its config (config.json).
   */
  channelsLast?: boolean;
  /**
   * Keep freed CPU memory mapped for reuse while fit() runs (setCpuMemoryCaching): activations are
   * not faulted in again every step. Unset: on for CPU training, off on CUDA. Resident memory stays at
   * the step's peak during the run; fit() restores the previous setting when it ends.
   */
  cpuMemoryCaching?: boolean;
  seed: number;
  out: string;
  workers: number;
  /** Steps between progress/metric reports. */
  logEvery: number;
  clipGradNorm?: number;
  /** Stop each epoch after this many batches (quick runs and tests). */
  limitTrainBatches?: number;
  limitTestBatches?: number;
  /** Synthetic dataset sizes. */
  syntheticTrain?: number;
  syntheticTest?: number;
  evalBatchSize?: number;
  /** Streamed datasets: crop size (default 224) and what a corrupt or unreadable file does. */
  imageSize?: number;
  onBadFile?: 'stop' | 'skip';
  /**
   * Capture the training step in a CUDA graph and replay it for every batch (lib/train/graphs.ts):
   * CUDA only; not with float16 loss scaling, --clip-grad-norm or data-parallel training. Default off.
   */
  cudaGraphs?: boolean;
  /** cuDNN benchmark mode on CUDA (training shapes are fixed, so it pays); default on. */
  cudnnBenchmark?: boolean;
}

export const DEFAULT_CONFIG: TrainConfig = {
  model: 'resnet20',
  data: 'fashion-mnist',
  epochs: 1,
  batchSize: 128,
  lr: 0.1,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: true,
  weightDecay: 5e-4,
  schedule: 'onecycle',
  warmupEpochs: 0,
  labelSmoothing: 0,
  augment: true,
  randomErasing: 0,
  device: 'auto',
  amp: false,
  ampDtype: 'bfloat16',
  seed: 0,
  out: 'runs/default',
  workers: 2,
  logEvery: 20,
};

export type Progress =
  | { type: 'start'; device: string; model: string; params: number; trainSize: number; testSize: number; stepsPerEpoch: number; epochs: number; startEpoch: number; dataName: string; out: string; worldSize?: number; batchSize?: number }
  | { type: 'step'; epoch: number; epochs: number; step: number; steps: number; globalStep: number; loss: number; acc: number; lr: number; imagesPerSec: number; etaSeconds: number }
  | { type: 'epoch'; epoch: number; epochs: number; trainLoss: number; trainAcc: number; testLoss: number; testAcc: number; seconds: number }
  | { type: 'checkpoint'; epoch: number; path: string }
  /** Something the user should know about the run folder (e.g. a restart from the beginning). */
  | { type: 'notice'; message: string }
  | { type: 'done'; testAcc: number; testLoss: number; seconds: number; report: { svg: string; png: string }; out: string };

export function resolveDevice(d: TrainConfig['device']): Device {
  if (d === 'auto') return cuda.isAvailable() ? 'cuda' : 'cpu';
  if (d.startsWith('cuda') && !cuda.isAvailable()) throw new Error(`--device ${d}: CUDA is not available here (use --device cpu or auto)`);
  return d;
}

export function loadData(cfg: Pick<TrainConfig, 'data' | 'dataPath' | 'seed' | 'syntheticTrain' | 'syntheticTest'>): { train: ImageDataset; test: ImageDataset; description: string } {
  switch (cfg.data) {
    case 'fashion-mnist': {
      const f = loadFashionMnist({ path: cfg.dataPath });
      return { train: f.train, test: f.test, description: `Fashion-MNIST from ${f.dir} (${f.source})` };
    }
    case 'cifar10':
    case 'cifar100': {
      if (!cfg.dataPath) throw new Error(`--data ${cfg.data} needs --data-path (the cifar-*-batches-bin folder)`);
      const c = cfg.data === 'cifar10' ? loadCifar10(cfg.dataPath) : loadCifar100(cfg.dataPath);
      return { train: c.train, test: c.test, description: `${cfg.data} from ${c.dir}` };
    }
    case 'synthetic': {
      const train = syntheticImageDataset({ n: cfg.syntheticTrain ?? 6000, channels: 1, size: 28, classes: 10, seed: cfg.seed + 1 });
      const test = syntheticImageDataset({ n: cfg.syntheticTest ?? 1000, channels: 1, size: 28, classes: 10, seed: cfg.seed + 2 });
      return { train, test, description: 'SYNTHETIC data (generated patterns, not a real dataset)' };
    }
    case 'folder': {
      if (!cfg.dataPath) throw new Error('--data folder needs --data-path with train/ and test/ (or val/) subfolders of class folders');
      const testDir = ['test', 'val'].map((d) => path.join(cfg.dataPath!, d)).find((d) => fs.existsSync(d));
      if (!testDir) throw new Error(`${cfg.dataPath} has no test/ or val/ folder`);
      return { train: loadImageFolder(path.join(cfg.dataPath, 'train')), test: loadImageFolder(testDir), description: `image folder ${cfg.dataPath}` };
    }
    case 'imagefolder':
    case 'webdataset':
      throw new Error(`--data ${cfg.data} is streamed: it is read by the Trainer's loaders, not loaded into memory`);
    default:
      throw new Error(`unknown dataset '${String(cfg.data)}' (fashion-mnist, cifar10, cifar100, synthetic, folder, imagefolder, webdataset)`);
  }
}

/** Per-channel mean and std of uint8 images scaled to [0, 1]. */
export function channelStats(images: Tensor): { mean: number[]; std: number[] } {
  return scope(() => {
    const c = images.shape[1];
    const n = Math.min(images.shape[0], 10000); // a sample is plenty
    const x = images.narrow(0, 0, n).to('float32').div(255).transpose(0, 1).reshape([c, -1]);
    return { mean: x.mean(1).toArray() as number[], std: x.std(1).toArray() as number[] };
  });
}

/** Converts 4-D parameters (conv weights) to channels-last memory format in place. */
function toChannelsLast(model: Module): void {
  noGrad(() => {
    for (const m of model.modules()) {
      const table = (m as unknown as { _parameters: Map<string, Tensor | null> })._parameters;
      for (const t of table.values()) {
        if (!t || t.ndim !== 4) continue;
        // in place: the parameter object stays (optimizers and DDP hold it)
        const c = t.contiguous('channelsLast');
        native.tensorSetData(hOf(t), hOf(c));
        c.dispose();
      }
    }
  });
}

/**
 * The network of a run, as the trainer builds it: sized for the data's classes and channels, on the
 * device, channels-last when set. `residual eval` builds it the same way before loading the weights.
 */
export function createRunModel(cfg: Pick<TrainConfig, 'model' | 'channelsLast'>, train: ImageDataset | { classes: string[]; channels: number }, device: Device): Module {
  const inChannels = 'images' in train ? train.images.shape[1] : train.channels; // in memory, or streamed
  const model = createModel(getModelInfo(cfg.model).name, { numClasses: Math.max(train.classes.length, 2), inChannels });
  if (device !== 'cpu') model.to(device);
  if (cfg.channelsLast) toChannelsLast(model);
  return model;
}

/** Files a run writes only when it finishes (with a checkpoint beside them). */
const FINISHED_FILES = ['model.safetensors', 'report.png', 'report.svg'];

/** Does this parsed config.json look like one a residual run wrote? */
function isRunConfig(v: unknown): v is Partial<TrainConfig> {
  const c = v as Partial<TrainConfig> | null;
  return !!c && typeof c === 'object' && typeof c.model === 'string' && typeof c.data === 'string' && typeof c.epochs === 'number' && typeof c.batchSize === 'number';
}

/** The settings of a run that stopped before its first checkpoint, from its config.json (null if none or not a run's). */
export function readRunConfig(dir: string): Partial<TrainConfig> | null {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as unknown;
    return isRunConfig(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * What a run folder holds: a committed checkpoint; a finished run's outputs; residual's partial files of a
 * run that stopped before its first checkpoint (config.json, metrics.jsonl, a weights file or temporary
 * file of an unfinished checkpoint save); files named like residual's that residual did not write.
 */
export function inspectRunFolder(dir: string): { checkpoint: boolean; finished: string[]; partial: string[]; foreign: string[]; config: Partial<TrainConfig> | null } {
  const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  const config = names.includes('config.json') ? readRunConfig(dir) : null;
  const partial: string[] = [];
  const foreign: string[] = [];
  if (names.includes('config.json')) (config ? partial : foreign).push('config.json');
  // metrics.jsonl is a run's only when the run's config.json is beside it (the trainer writes that first).
  if (names.includes('metrics.jsonl')) (config ? partial : foreign).push('metrics.jsonl');
  for (const f of names) if (CHECKPOINT_WEIGHTS.test(f) || isCheckpointTemp(f)) partial.push(f);
  return { checkpoint: hasCheckpoint(dir), finished: FINISHED_FILES.filter((f) => names.includes(f)), partial, foreign, config };
}

/** The settings (config keys) in which two runs differ; where a run writes and how fast it logs do not count. */
function runSettingsDiffer(a: Partial<TrainConfig>, b: Partial<TrainConfig>): string[] {
  const ignore = new Set(['out', 'workers', 'logEvery', 'device', 'cudaGraphs', 'cudnnBenchmark', 'cpuMemoryCaching']);
  const keys = new Set([...Object.keys(a), ...Object.keys(b)].filter((k) => !ignore.has(k)));
  return [...keys].filter((k) => JSON.stringify((a as Record<string, unknown>)[k]) !== JSON.stringify((b as Record<string, unknown>)[k])).map(flagName);
}

/** Parameter groups: weight decay on conv/linear weights only, never on BN parameters or biases. */
function paramGroups(model: Module, weightDecay: number): (Partial<ParamGroup> & { params: Tensor[] })[] {
  const decay: Tensor[] = [];
  const noDecay: Tensor[] = [];
  for (const p of model.parameters()) (p.ndim <= 1 ? noDecay : decay).push(p);
  return [
    { params: decay, weightDecay },
    { params: noDecay, weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}

export class Trainer {
  readonly cfg: TrainConfig;
  readonly device: Device;
  readonly model: Module;
  readonly optimizer: Optimizer;
  readonly scheduler: LRScheduler;
  readonly scaler: GradScaler | null;
  /** In-memory datasets; null for streamed ones (imagefolder, webdataset). */
  readonly train: ImageDataset | null;
  readonly test: ImageDataset | null;
  readonly trainLoader: DataLoader | StreamingDataLoader;
  readonly testLoader: DataLoader | StreamingDataLoader;
  readonly trainSize: number;
  readonly testSize: number;
  readonly dataDescription: string;
  readonly stepsPerEpoch: number;
  /** Epochs completed. */
  epoch = 0;
  globalStep = 0;
  history: History;
  private metrics: MetricsWriter | null = null;
  /** Test hook: simulate a crash inside the checkpoint save. */
  crashAt: CrashPoint;
  /** Data-parallel state when this process is one rank of several (lib/train/distributed.ts). */
  readonly distributed: DistributedTraining | null;
  /** The captured training step when cfg.cudaGraphs (created at the first step). */
  private graphed: GraphedTrainStep | null = null;

  constructor(config: Partial<TrainConfig> & { model: string }, data?: { train: ImageDataset; test: ImageDataset; description?: string }) {
    const cfg: TrainConfig = { ...DEFAULT_CONFIG, ...config };
    this.cfg = cfg;
    validateConfig(cfg);
    this.device = resolveDevice(cfg.device);
    // CPU training defaults (measured in scripts/bench/bench.mjs: the "CPU training defaults" row).
    cfg.channelsLast ??= this.device === 'cpu';
    cfg.cpuMemoryCaching ??= this.device === 'cpu';
    if (cfg.cudaGraphs && !this.device.startsWith('cuda'))
      throw new DeviceError(`--cuda-graphs: ${cudaGraphsIncompatibility({ device: this.device })}: use --device cuda on a machine with a GPU, or train without --cuda-graphs`);
    if (this.device.startsWith('cuda')) cudnnBenchmark(cfg.cudnnBenchmark ?? true);
    manualSeed(cfg.seed);
    const streamed = !data && isStreamedData(cfg.data) ? openStreamedData(cfg, this.device) : null;
    if (streamed) {
      this.train = this.test = null;
      this.dataDescription = streamed.description;
      this.model = createRunModel(cfg, streamed, this.device);
      this.trainLoader = streamed.train;
      this.testLoader = streamed.test;
      this.trainSize = streamed.train.size;
      this.testSize = streamed.test.size;
      this.distributed = refuseStreamedDistributed();
    } else {
      const d = data ?? loadData(cfg);
      this.train = d.train;
      this.test = d.test;
      this.trainSize = d.train.images.shape[0];
      this.testSize = d.test.images.shape[0];
      this.dataDescription = d.description ?? d.train.name;
      this.model = createRunModel(cfg, d.train, this.device);

      // One rank of several: DDP (rank 0's weights broadcast) and this rank's share of each epoch.
      this.distributed = setupDistributed(this.model, this.trainSize, cfg.seed);

      const stats = channelStats(d.train.images);
      const common = { mean: stats.mean, std: stats.std, device: this.device, channelsLast: cfg.channelsLast, workers: cfg.workers, prefetch: 3 };
      const size = d.train.images.shape[2];
      this.trainLoader = new DataLoader(d.train, {
        ...common,
        batchSize: cfg.batchSize,
        shuffle: true,
        seed: cfg.seed,
        dropLast: true,
        randomCrop: cfg.augment ? { padding: size >= 32 ? 4 : 2 } : false,
        hflip: cfg.augment,
        randomErasing: cfg.augment ? cfg.randomErasing : 0,
        sampler: this.distributed?.sampler,
      });
      this.testLoader = runTestLoader(d.test, stats, cfg, this.device);
    }
    if (cfg.cudaGraphs && this.distributed) throw new RangeError(`--cuda-graphs: ${cudaGraphsIncompatibility({ distributed: true })}`);
    this.stepsPerEpoch = Math.min(this.trainLoader.length, cfg.limitTrainBatches ?? Infinity);
    if (this.stepsPerEpoch < 1) throw new Error(`the training set (${this.trainSize} images) is smaller than one batch of ${cfg.batchSize}`);

    const groups = paramGroups(this.model, cfg.weightDecay);
    this.optimizer =
      cfg.optimizer === 'sgd'
        ? new SGD(groups, { lr: cfg.lr, momentum: cfg.momentum, nesterov: cfg.nesterov && cfg.momentum > 0 })
        : new AdamW(groups, { lr: cfg.lr });
    this.scheduler = this.makeScheduler();
    this.scaler = cfg.amp && cfg.ampDtype === 'float16' ? new GradScaler() : null;
    this.history = { steps: [], epochs: [], title: `${cfg.model} on ${this.train?.name ?? cfg.dataPath ?? cfg.data}` };
  }

  private makeScheduler(): LRScheduler {
    const cfg = this.cfg;
    const total = this.stepsPerEpoch * cfg.epochs;
    const warm = Math.min(total - 1, Math.round(cfg.warmupEpochs * this.stepsPerEpoch));
    if (cfg.schedule === 'onecycle') return new OneCycleLR(this.optimizer, cfg.lr, total, { cycleMomentum: false });
    let main: LRScheduler;
    if (cfg.schedule === 'cosine') main = new CosineAnnealingLR(this.optimizer, Math.max(1, total - warm));
    else if (cfg.schedule === 'multistep')
      main = new MultiStepLR(this.optimizer, [Math.round(total * 0.5) - warm, Math.round(total * 0.75) - warm].filter((m) => m > 0), 0.1);
    else main = new ConstantLR(this.optimizer, 1, 1);
    if (warm <= 0) return main;
    const warmup = new LinearWarmup(this.optimizer, warm, 0.1);
    return new SequentialLR(this.optimizer, [warmup, main], [warm]);
  }

  get lr(): number {
    return this.optimizer.paramGroups[0].lr;
  }

  /**
   * One training step on a batch: forward (under autocast when amp), loss, backward, optimizer step,
   * schedule step. Returns the batch loss and the number of correct predictions as 0-d tensors on the
   * device (reading them forces a device sync; the trainer reads them every logEvery steps).
   */
  trainStep(x: Tensor, y: Tensor): { loss: Tensor; correct: Tensor } {
    if (this.cfg.cudaGraphs) return this.graphedStep(x, y);
    return scope(() => {
      const cfg = this.cfg;
      this.model.train();
      const forward = () => {
        const logits = (this.distributed?.ddp ?? this.model).call(x);
        const loss = crossEntropy(logits, y, { labelSmoothing: cfg.labelSmoothing });
        return { logits, loss };
      };
      const devType = this.device.startsWith('cuda') ? 'cuda' : 'cpu';
      const { logits, loss } = cfg.amp ? autocast(devType, cfg.ampDtype, forward) : forward();
      this.optimizer.zeroGrad();
      if (this.scaler) {
        // (validateConfig refuses clipGradNorm here: the norm would be taken of scaled gradients)
        this.scaler.scaleLoss(loss).backward();
        this.scaler.step(this.optimizer);
      } else {
        loss.backward();
        if (cfg.clipGradNorm) clipGradNorm(this.model.parameters(), cfg.clipGradNorm);
        this.optimizer.step();
      }
      this.scheduler.step();
      this.globalStep++;
      const correct = noGrad(() => logits.argmax(1).eq(y).sum());
      return { loss: loss.detach().to('float32'), correct };
    });
  }

  /**
   * trainStep under CUDA graphs: the first steps run eagerly on a side stream (warm-up), the next one is
   * captured, and every later one copies the batch into the static buffers and replays (graphs.ts).
   */
  private graphedStep(x: Tensor, y: Tensor): { loss: Tensor; correct: Tensor } {
    const cfg = this.cfg;
    this.graphed ??= new GraphedTrainStep({
      model: this.model,
      optimizer: this.optimizer,
      forward: (bx, by) => {
        const logits = this.model.call(bx);
        return { logits, loss: crossEntropy(logits, by, { labelSmoothing: cfg.labelSmoothing }) };
      },
      amp: cfg.amp,
      ampDtype: cfg.ampDtype,
      scaler: this.scaler ?? undefined,
      clipGradNorm: cfg.clipGradNorm,
    });
    const out = this.graphed.step(x, y);
    this.scheduler.step();
    this.globalStep++;
    return out;
  }

  /** Loss and accuracy over a loader (default: the test set), with the one evaluation routine (evaluate.ts). */
  evaluate(loader: DataLoader | StreamingDataLoader = this.testLoader, limit = this.cfg.limitTestBatches): Promise<EvaluateResult> {
    return evaluate(this.model, loader, { device: this.device, amp: this.cfg.amp, ampDtype: this.cfg.ampDtype, limit });
  }

  /** Everything a resume needs, as tensors + JSON. */
  saveCheckpoint(): string {
    const tensors: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(this.model.stateDict())) tensors[`model.${k}`] = v;
    const sd = this.optimizer.stateDict();
    for (const [id, s] of Object.entries(sd.state)) for (const [k, v] of Object.entries(s)) if (v instanceof Tensor) tensors[`optim.${id}.${k}`] = v;
    tensors['rng.cpu'] = getRngState('cpu');
    if (this.device.startsWith('cuda')) tensors['rng.cuda'] = getRngState(this.device);
    try {
      const scalars: Record<string, Record<string, number>> = {};
      for (const [id, s] of Object.entries(sd.state)) for (const [k, v] of Object.entries(s)) if (typeof v === 'number') (scalars[id] ??= {})[k] = v;
      saveCheckpoint(
        this.cfg.out,
        tensors,
        {
          epoch: this.epoch,
          globalStep: this.globalStep,
          config: this.cfg,
          optimizer: { paramGroups: sd.paramGroups, scalars },
          scheduler: this.scheduler.stateDict(),
          scaler: this.scaler?.stateDict() ?? null,
          history: this.history,
          device: this.device,
          worldSize: this.distributed?.worldSize ?? 1,
        },
        { crashAt: this.crashAt },
      );
    } finally {
      for (const v of Object.values(tensors)) v.dispose();
    }
    return path.join(this.cfg.out, 'checkpoint.json');
  }

  /** Restores model, optimizer, schedule, RNG, epoch and history from the checkpoint in cfg.out. */
  resume(): void {
    const { meta, tensors } = loadCheckpoint(this.cfg.out);
    try {
      checkResumeWorldSize((meta as { worldSize?: number }).worldSize);
      const model: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(tensors)) if (k.startsWith('model.')) model[k.slice(6)] = v;
      this.model.loadStateDict(model);
      const om = meta.optimizer as { paramGroups: Record<string, unknown>[]; scalars: Record<string, Record<string, number>> };
      const state: Record<number, Record<string, Tensor | number>> = {};
      for (const [k, v] of Object.entries(tensors)) {
        const m = /^optim\.(\d+)\.(.+)$/.exec(k);
        if (m) (state[+m[1]] ??= {})[m[2]] = v.to(this.device);
      }
      for (const [id, s] of Object.entries(om.scalars ?? {})) Object.assign((state[+id] ??= {}), s);
      this.optimizer.loadStateDict({ state, paramGroups: om.paramGroups });
      this.scheduler.loadStateDict(meta.scheduler as never);
      if (this.scaler && meta.scaler) this.scaler.loadStateDict(meta.scaler as never);
      setRngState(tensors['rng.cpu'], 'cpu');
      if (tensors['rng.cuda'] && this.device.startsWith('cuda')) setRngState(tensors['rng.cuda'], this.device);
      this.epoch = meta.epoch;
      this.globalStep = meta.globalStep;
      this.history = meta.history as History;
      for (const s of Object.values(state)) for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
    } finally {
      for (const v of Object.values(tensors)) v.dispose();
    }
  }

  /** Runs the remaining epochs: train, evaluate, checkpoint, metrics; then writes the report. */
  async fit(onProgress: (p: Progress) => void = () => {}, opts: { resume?: boolean; stopAfterEpochs?: number } = {}): Promise<{ testAcc: number; testLoss: number; report: { svg: string; png: string } }> {
    const cfg = this.cfg;
    // Data-parallel: only rank 0 checks and writes the run folder (config, metrics, checkpoints, report);
    // the other ranks resume from the same checkpoint when there is one.
    const writer = isWriter();
    if (!writer) {
      if (opts.resume && hasCheckpoint(cfg.out)) this.resume();
    } else {
      fs.mkdirSync(cfg.out, { recursive: true });
      const metricsFile = path.join(cfg.out, 'metrics.jsonl');
      const folder = inspectRunFolder(cfg.out);
      let fromScratch = true;
      if (folder.checkpoint) {
        if (!opts.resume) throw new Error(`${cfg.out} already holds a checkpoint: pass --resume to continue it, or choose another --out (nothing was overwritten)`);
        this.resume();
        fromScratch = false;
        // Steps and epochs after the checkpoint were lost with the process and run again now: drop their
        // records, so metrics.jsonl holds each step and epoch once.
        const dropped = truncateMetrics(metricsFile, { epoch: this.epoch, globalStep: this.globalStep });
        if (dropped) onProgress({ type: 'notice', message: `resuming after epoch ${this.epoch}: dropped ${dropped} metrics records written after that checkpoint (they are run again)` });
      } else if (folder.finished.length) {
        // A finished run's outputs without its checkpoint: not ours to replace.
        throw new Error(
          `${cfg.out} already holds ${folder.finished.join(', ')} from another run: choose another --out, or delete ${folder.finished.map((f) => path.join(cfg.out, f)).join(' and ')} if you no longer need ${folder.finished.length > 1 ? 'them' : 'it'} (nothing was overwritten)`,
        );
      } else if (folder.foreign.length) {
        throw new Error(
          `${cfg.out} holds ${folder.foreign.join(', ')}, which ${folder.foreign.length > 1 ? 'are' : 'is'} not the partial output of a residual run: choose another --out, or move ${folder.foreign.length > 1 ? 'them' : 'it'} away (nothing was overwritten)`,
        );
      } else if (folder.partial.length) {
        // A run that stopped before its first checkpoint: its files hold nothing a new start would lose.
        const differs = folder.config ? runSettingsDiffer(folder.config, cfg) : [];
        if (differs.length && !opts.resume) {
          const files = folder.partial.map((f) => path.join(cfg.out, f));
          throw new Error(
            `${cfg.out} holds the partial files of a different run that stopped before its first checkpoint (its ${differs.join(', ')} differ): ` +
              `to start this run there, delete them first (rm ${files.join(' ')}), or choose another --out (nothing was overwritten)`,
          );
        }
        if (this.globalStep > 0) throw new Error(`this Trainer has already trained: create a new Trainer to start the run in ${cfg.out} from the beginning`);
        onProgress({
          type: 'notice',
          message: `${cfg.out} holds a run that stopped before its first checkpoint (${folder.partial.join(', ')}): ${opts.resume ? 'there is nothing to resume, so it starts from the beginning' : 'starting it again from the beginning'}`,
        });
      } else if (opts.resume) {
        throw new Error(`--resume: no checkpoint in ${cfg.out} (no run was started there): to start a new run there, run the same command without --resume`);
      }
      writeJsonAtomic(path.join(cfg.out, 'config.json'), cfg);
      this.metrics = new MetricsWriter(metricsFile, { truncate: fromScratch });
    }
    const t0 = Date.now();
    onProgress({
      type: 'start', device: this.device, model: cfg.model, params: this.model.numParameters(), trainSize: this.trainSize,
      testSize: this.testSize, stepsPerEpoch: this.stepsPerEpoch, epochs: cfg.epochs, startEpoch: this.epoch, dataName: this.dataDescription, out: cfg.out,
      worldSize: this.distributed?.worldSize ?? 1, batchSize: cfg.batchSize,
    });
    let last = { loss: NaN, acc: NaN };
    let ran = 0;
    // CPU memory caching for the run (process-wide; the previous setting comes back at the end).
    const cachingBefore = cfg.cpuMemoryCaching ? setCpuMemoryCaching(true) : null;
    try {
      while (this.epoch < cfg.epochs) {
        if (opts.stopAfterEpochs !== undefined && ran >= opts.stopAfterEpochs) break;
        const ep = this.epoch + 1;
        const te = Date.now();
        this.trainLoader.setEpoch(this.epoch);
        const lossSum = zeros([], { device: this.device, dtype: 'float64' });
        const correctSum = zeros([], { device: this.device, dtype: 'int64' });
        let seen = 0;
        let step = 0;
        let windowStart = Date.now();
        let windowImages = 0;
        let windowLoss = zeros([], { device: this.device, dtype: 'float64' });
        let windowCorrect = zeros([], { device: this.device, dtype: 'int64' });
        for await (const { x, y } of this.trainLoader) {
          const { loss, correct } = this.trainStep(x, y);
          const bs = y.shape[0];
          lossSum.add_(loss.to('float64'), bs);
          correctSum.add_(correct);
          windowLoss.add_(loss.to('float64'), bs);
          windowCorrect.add_(correct);
          loss.dispose();
          correct.dispose();
          x.dispose();
          y.dispose();
          seen += bs;
          windowImages += bs;
          step++;
          if (step % cfg.logEvery === 0 || step === this.stepsPerEpoch) {
            const wl = (windowLoss.item() as number) / windowImages;
            const wa = (windowCorrect.item() as number) / windowImages;
            const now = Date.now();
            const ips = (windowImages * 1000) / Math.max(1, now - windowStart);
            const stepsLeft = this.stepsPerEpoch - step + (cfg.epochs - ep) * this.stepsPerEpoch;
            this.metrics?.step({ step: this.globalStep, epoch: ep, loss: wl, acc: wa, lr: this.lr, imagesPerSec: ips });
            this.history.steps.push({ step: this.globalStep, epoch: ep - 1 + step / this.stepsPerEpoch, loss: wl, acc: wa, lr: this.lr });
            onProgress({ type: 'step', epoch: ep, epochs: cfg.epochs, step, steps: this.stepsPerEpoch, globalStep: this.globalStep, loss: wl, acc: wa, lr: this.lr, imagesPerSec: ips, etaSeconds: (stepsLeft * cfg.batchSize) / ips });
            windowLoss.zero_();
            windowCorrect.zero_();
            windowImages = 0;
            windowStart = now;
          }
          if (step >= this.stepsPerEpoch) break;
        }
        reportSkipped(this.trainLoader);
        const trainLoss = (lossSum.item() as number) / seen;
        const trainAcc = (correctSum.item() as number) / seen;
        for (const t of [lossSum, correctSum, windowLoss, windowCorrect]) t.dispose();
        const ev = await this.evaluate();
        last = { loss: ev.loss, acc: ev.acc };
        this.epoch = ep;
        const seconds = (Date.now() - te) / 1000;
        const em = { epoch: ep, trainLoss, trainAcc, testLoss: ev.loss, testAcc: ev.acc, seconds };
        this.history.epochs.push(em);
        this.metrics?.epoch(em);
        onProgress({ type: 'epoch', epochs: cfg.epochs, ...em });
        if (writer) onProgress({ type: 'checkpoint', epoch: ep, path: this.saveCheckpoint() });
        ran++;
      }
      if (Number.isNaN(last.acc)) {
        const ev = await this.evaluate();
        last = { loss: ev.loss, acc: ev.acc };
      }
      const report = writer ? await writeReport(cfg.out, this.history) : { svg: path.join(cfg.out, 'report.svg'), png: path.join(cfg.out, 'report.png') };
      if (writer && this.epoch >= cfg.epochs) {
        const weights = scope(() => this.model.stateDict());
        try {
          saveSafetensors(weights, path.join(cfg.out, 'model.safetensors'), { model: cfg.model, format: 'pytorch-state-dict' });
        } finally {
          for (const w of Object.values(weights)) w.dispose();
        }
      }
      onProgress({ type: 'done', testAcc: last.acc, testLoss: last.loss, seconds: (Date.now() - t0) / 1000, report, out: cfg.out });
      return { testAcc: last.acc, testLoss: last.loss, report };
    } finally {
      this.metrics?.close();
      this.metrics = null;
      if (cachingBefore === false) setCpuMemoryCaching(false);
    }
  }

  /** Frees the model, loaders and datasets. */
  dispose(): void {
    this.graphed?.dispose();
    this.graphed = null;
    this.trainLoader.close();
    this.testLoader.close();
    this.model.dispose();
    if (this.train) disposeDataset(this.train);
    if (this.test) disposeDataset(this.test);
  }
}

/**
 * The allowed range of every numeric setting: validateConfig checks them, and the CLI's flag spec uses
 * the same objects for parsing and --help.
 */
export const CONFIG_RANGES = {
  epochs: { integer: true, min: 1 },
  batchSize: { integer: true, min: 1 },
  lr: { min: 0, minExclusive: true },
  momentum: { min: 0, max: 1, maxExclusive: true },
  weightDecay: { min: 0 },
  warmupEpochs: { min: 0 },
  labelSmoothing: { min: 0, max: 1, maxExclusive: true },
  randomErasing: { min: 0, max: 1 },
  seed: { integer: true, min: 0 },
  // The native loader runs 1 to 16 threads (there is no synchronous mode).
  workers: { integer: true, min: 1, max: 16 },
  logEvery: { integer: true, min: 1 },
  clipGradNorm: { min: 0, minExclusive: true },
  limitTrainBatches: { integer: true, min: 1 },
  limitTestBatches: { integer: true, min: 1 },
  syntheticTrain: { integer: true, min: 1 },
  syntheticTest: { integer: true, min: 1 },
  evalBatchSize: { integer: true, min: 1 },
  imageSize: { integer: true, min: 1, max: 8192 },
} satisfies Partial<Record<keyof TrainConfig, NumberRange>>;

/** The CLI flag of a config key (batchSize -> --batch-size), for messages. */
export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function validateConfig(cfg: TrainConfig): void {
  for (const [key, range] of Object.entries(CONFIG_RANGES) as [keyof TrainConfig, NumberRange][]) {
    const v = cfg[key];
    if (v === undefined && !(key in DEFAULT_CONFIG)) continue; // optional and not set
    checkRange(flagName(key), v as number, range);
  }
  if (!['sgd', 'adamw'].includes(cfg.optimizer)) throw new RangeError(`--optimizer must be sgd or adamw, got ${cfg.optimizer}`);
  if (!['onecycle', 'cosine', 'multistep', 'constant'].includes(cfg.schedule)) throw new RangeError(`--schedule must be onecycle, cosine, multistep or constant, got ${cfg.schedule}`);
  if (cfg.onBadFile !== undefined && !['stop', 'skip'].includes(cfg.onBadFile)) throw new RangeError(`--on-bad-file must be stop or skip, got ${String(cfg.onBadFile)}`);
  if (!['bfloat16', 'float16'].includes(cfg.ampDtype)) throw new RangeError(`--amp-dtype must be bfloat16 or float16, got ${cfg.ampDtype}`);
  if (cfg.warmupEpochs > 0 && cfg.schedule === 'onecycle')
    throw new RangeError(`--warmup-epochs applies to --schedule cosine, multistep or constant; onecycle warms up by itself (got --warmup-epochs ${cfg.warmupEpochs})`);
  if (cfg.warmupEpochs >= cfg.epochs) throw new RangeError(`--warmup-epochs must be less than --epochs (${cfg.epochs}), got ${cfg.warmupEpochs}`);
  if (cfg.cudaGraphs !== undefined && typeof cfg.cudaGraphs !== 'boolean') throw new TypeError(`--cuda-graphs must be true or false, got ${String(cfg.cudaGraphs)}`);
  if (cfg.cudnnBenchmark !== undefined && typeof cfg.cudnnBenchmark !== 'boolean') throw new TypeError(`--cudnn-benchmark must be true or false, got ${String(cfg.cudnnBenchmark)}`);
  if (cfg.channelsLast !== undefined && typeof cfg.channelsLast !== 'boolean') throw new TypeError(`--channels-last must be true or false, got ${String(cfg.channelsLast)}`);
  if (cfg.cpuMemoryCaching !== undefined && typeof cfg.cpuMemoryCaching !== 'boolean') throw new TypeError(`--cpu-memory-caching must be true or false, got ${String(cfg.cpuMemoryCaching)}`);
  if (cfg.cudaGraphs) {
    const why = cudaGraphsIncompatibility({ amp: cfg.amp, ampDtype: cfg.ampDtype, clipGradNorm: cfg.clipGradNorm });
    if (why) throw new RangeError(`--cuda-graphs: ${why}`);
  }
  if (cfg.clipGradNorm !== undefined && cfg.amp && cfg.ampDtype === 'float16')
    throw new RangeError('--clip-grad-norm with float16 loss scaling is not supported; use --amp-dtype bfloat16');
  getModelInfo(cfg.model);
}
