// The Trainer: the training loop. One training step per call (forward, loss, backward, optimizer step,
// schedule), evaluation, epochs with metrics and checkpoints, resume, and the final report. Everything
// heavy is native: the data pipeline (threads), the ops, and the optimizer step (one call for all
// parameters). The loop awaits the data loader between steps, so the event loop keeps running while a
// model trains.
//
// What the loop runs on is built elsewhere, each concern in its module: the settings (config.ts), the
// data and its normalisation (data.ts), the network, optimizer and schedule (recipe.ts), what may be
// done with the run folder (run-folder.ts), the checkpoint layout (state.ts), data-parallel training
// (distributed.ts), CUDA graphs (graphs.ts) and TensorBoard's event files (tensorboard.ts).
import path from 'node:path';
import { noGrad } from '../autograd/index.js';
import { DeviceError } from '../core/errors.js';
import { writeJsonAtomic } from '../core/fs.js';
import { disposeDataset, type ImageDataset } from '../data/dataset.js';
import type { Batch, DataLoader } from '../data/loader.js';
import { reportSkipped, StreamingDataLoader } from '../data/stream.js';
import { saveSafetensors } from '../io/safetensors.js';
import { crossEntropy } from '../nn/functional.js';
import type { Module } from '../nn/module.js';
import { GradScaler, clipGradNorm, type Optimizer } from '../optim/optimizer.js';
import type { LRScheduler, OptimizerLike } from '../optim/schedule.js';
import { autocast, manualSeed, setCpuMemoryCaching } from '../tensor/memory.js';
import { scope } from '../tensor/scope.js';
import { zeros, type Device, type Tensor } from '../tensor/tensor.js';
import { hasCheckpoint, type CrashPoint } from './checkpoint.js';
import { cudaGraphsReason, key, msg, resolveConfig, setting, settingsError, type TrainConfig } from './config.js';
import { openRunData, type RunDataInfo } from './data.js';
import {
  allRanks,
  checkResumeWorldSize,
  commonStreamedLength,
  distributedShare,
  isWriter,
  setupDistributed,
  type DistributedTraining,
} from './distributed.js';
import { evaluate, type EvaluateResult } from './evaluate.js';
import { GraphedTrainStep, cudnnBenchmark } from './graphs.js';
import { MetricsWriter, truncateMetrics, type History } from './metrics.js';
import { createOptimizer, createRunModel, createScheduler, resolveDevice } from './recipe.js';
import { writeReport } from './report.js';
import { RUN_CONFIG_FILE, metricsFile, planRun } from './run-folder.js';
import { loadTrainingState, saveTrainingState } from './state.js';
import { RunEvents, prepareEventFiles } from './tensorboard.js';

export type Progress =
  | {
      type: 'start';
      device: string;
      model: string;
      params: number;
      trainSize: number;
      testSize: number;
      stepsPerEpoch: number;
      epochs: number;
      startEpoch: number;
      dataName: string;
      out: string;
      worldSize?: number;
      batchSize?: number;
      tensorboard?: string;
    }
  | {
      type: 'step';
      epoch: number;
      epochs: number;
      step: number;
      steps: number;
      globalStep: number;
      loss: number;
      acc: number;
      lr: number;
      imagesPerSec: number;
      etaSeconds: number;
    }
  | {
      type: 'epoch';
      epoch: number;
      epochs: number;
      trainLoss: number;
      trainAcc: number;
      testLoss: number;
      testAcc: number;
      seconds: number;
    }
  | { type: 'checkpoint'; epoch: number; path: string }
  /** Something the user should know about the run folder (e.g. a restart from the beginning). */
  | { type: 'notice'; message: string }
  | { type: 'done'; testAcc: number; testLoss: number; seconds: number; report: { svg: string; png: string }; out: string };

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
  /** What the model is trained to see (normalisation, classes, channels): saved with every checkpoint. */
  readonly dataInfo: RunDataInfo;
  readonly stepsPerEpoch: number;
  /** Epochs completed. */
  epoch = 0;
  globalStep = 0;
  history: History;
  private metrics: MetricsWriter | null = null;
  /** The run's TensorBoard event file while fit() runs (cfg.tensorboard, the writing rank). */
  private events: RunEvents | null = null;
  /** Test hook: simulate a crash inside the checkpoint save. */
  crashAt: CrashPoint;
  /** Data-parallel state when this process is one rank of several (lib/train/distributed.ts). */
  readonly distributed: DistributedTraining | null;
  /** The captured training step when cfg.cudaGraphs (created at the first step). */
  private graphed: GraphedTrainStep | null = null;

  constructor(config: Partial<TrainConfig> & { model: string }, data?: { train: ImageDataset; test: ImageDataset; description?: string }) {
    const cfg = resolveConfig(config);
    this.cfg = cfg;
    this.device = resolveDevice(cfg.device);
    // CPU training defaults (measured in scripts/bench/bench.mjs: the "CPU training defaults" row).
    cfg.channelsLast ??= this.device === 'cpu';
    cfg.cpuMemoryCaching ??= this.device === 'cpu';
    if (cfg.cudaGraphs && !this.device.startsWith('cuda'))
      throw settingsError(
        DeviceError,
        msg`${key('cudaGraphs')}: ${cudaGraphsReason({ device: this.device })!.parts}: use ${setting('device', 'cuda')} on a machine with a GPU, or train without ${key('cudaGraphs')}`,
      );
    if (this.device.startsWith('cuda')) cudnnBenchmark(cfg.cudnnBenchmark ?? true);
    manualSeed(cfg.seed);
    // One rank of several: this rank's share of each epoch, and DDP (rank 0's weights broadcast).
    const share = distributedShare(cfg.seed);
    const d = openRunData(cfg, this.device, { datasets: data, share });
    this.train = d.datasets?.train ?? null;
    this.test = d.datasets?.test ?? null;
    this.trainLoader = d.train;
    this.testLoader = d.test;
    this.trainSize = d.trainSize;
    this.testSize = d.testSize;
    this.dataDescription = d.description;
    this.dataInfo = d.info;
    let model: Module | null = null;
    try {
      this.model = model = createRunModel(cfg, d.info, this.device);
      this.distributed = setupDistributed(this.model, share);
      const why = cfg.cudaGraphs && this.distributed ? cudaGraphsReason({ distributed: true }) : null;
      if (why) throw settingsError(RangeError, msg`${key('cudaGraphs')}: ${why.parts}`);
      this.stepsPerEpoch = Math.min(this.loaderSteps(0), cfg.limitTrainBatches ?? Infinity);
      if (this.stepsPerEpoch < 1)
        throw new Error(`the training set (${this.trainSize} images) is smaller than one batch of ${cfg.batchSize}`);
      this.optimizer = createOptimizer(this.model, cfg);
      this.scheduler = this.makeScheduler(this.optimizer);
    } catch (e) {
      // Nothing made here outlives a constructor that throws (datasets the caller gave stay the caller's).
      model?.dispose();
      d.train.close();
      d.test.close();
      if (!data && d.datasets) for (const ds of [d.datasets.train, d.datasets.test]) disposeDataset(ds);
      throw e;
    }
    this.scaler = cfg.amp && cfg.ampDtype === 'float16' ? new GradScaler() : null;
    this.history = { steps: [], epochs: [], title: `${cfg.model} on ${this.train?.name ?? cfg.dataPath ?? cfg.data}` };
  }

  /** This run's schedule over `optimizer`'s param groups (the live optimizer, or a copy for a dry run). */
  private makeScheduler(optimizer: OptimizerLike): LRScheduler {
    return createScheduler(optimizer, this.cfg, this.stepsPerEpoch);
  }

  /** Batches the training loader gives in `epoch` (data-parallel streamed data: as many as every rank has). */
  private loaderSteps(epoch: number): number {
    const l = this.trainLoader;
    if (this.distributed && l instanceof StreamingDataLoader) return commonStreamedLength(l, this.distributed.worldSize, epoch);
    return l.length;
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

  /** Saves everything a resume needs (lib/train/state.ts); returns the path of checkpoint.json. */
  saveCheckpoint(): string {
    return saveTrainingState(
      this.cfg.out,
      this,
      {
        epoch: this.epoch,
        globalStep: this.globalStep,
        config: this.cfg,
        history: this.history,
        worldSize: this.distributed?.worldSize ?? 1,
        data: this.dataInfo,
      },
      { crashAt: this.crashAt },
    );
  }

  /**
   * Restores model, optimizer, schedule, RNG, epoch and history from the checkpoint in cfg.out. The
   * whole checkpoint is checked first (a BadFileError naming the key; nothing is restored then).
   */
  resume(): void {
    const s = loadTrainingState(
      this.cfg.out,
      this,
      (o) => this.makeScheduler(o),
      (meta) => checkResumeWorldSize(meta.worldSize),
    );
    this.epoch = s.epoch;
    this.globalStep = s.globalStep;
    this.history = s.history;
  }

  /** Runs the remaining epochs: train, evaluate, checkpoint, metrics; then writes the report. */
  async fit(
    onProgress: (p: Progress) => void = () => {},
    opts: { resume?: boolean; stopAfterEpochs?: number } = {},
  ): Promise<{ testAcc: number; testLoss: number; report: { svg: string; png: string } }> {
    const cfg = this.cfg;
    // Data-parallel: only rank 0 checks and writes the run folder (config, metrics, checkpoints, report);
    // the other ranks resume from the same checkpoint when there is one.
    const writer = isWriter();
    if (!writer) {
      if (opts.resume && hasCheckpoint(cfg.out)) this.resume();
    } else {
      // What may be done with the folder is decided before anything in it changes (run-folder.ts).
      const plan = planRun(cfg, opts);
      if (plan.resume) {
        this.resume(); // checks the whole checkpoint first
        // Steps and epochs after the checkpoint were lost with the process and run again now: drop their
        // records, so metrics.jsonl holds each step and epoch once.
        const dropped = truncateMetrics(metricsFile(cfg.out), { epoch: this.epoch, globalStep: this.globalStep });
        if (dropped)
          onProgress({
            type: 'notice',
            message: `resuming after epoch ${this.epoch}: dropped ${dropped} metrics records written after that checkpoint (they are run again)`,
          });
      } else {
        if (this.globalStep > 0)
          throw new Error(`this Trainer has already trained: create a new Trainer to start the run in ${cfg.out} from the beginning`);
        if (plan.notice) onProgress({ type: 'notice', message: plan.notice });
      }
      // The event files agree with the checkpoint (or are gone, from the beginning) even when this run writes none.
      const resumeStep = plan.resume ? this.globalStep : null;
      for (const message of prepareEventFiles(cfg.out, resumeStep)) onProgress({ type: 'notice', message });
      writeJsonAtomic(path.join(cfg.out, RUN_CONFIG_FILE), cfg);
      this.metrics = new MetricsWriter(metricsFile(cfg.out), { truncate: !plan.resume });
      if (cfg.tensorboard) {
        this.events = new RunEvents(cfg.out, resumeStep);
        this.events.config(cfg, resumeStep === null ? 0 : resumeStep + 1);
        if (resumeStep === null) this.events.weights(this.model, 0);
      }
    }
    const t0 = Date.now();
    onProgress({
      type: 'start',
      device: this.device,
      model: cfg.model,
      params: this.model.numParameters(),
      trainSize: this.trainSize,
      testSize: this.testSize,
      stepsPerEpoch: this.stepsPerEpoch,
      epochs: cfg.epochs,
      startEpoch: this.epoch,
      dataName: this.dataDescription,
      out: cfg.out,
      worldSize: this.distributed?.worldSize ?? 1,
      batchSize: cfg.batchSize,
      tensorboard: this.events?.file,
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
        const lossSum = zeros([], { device: this.device, dtype: 'float64' });
        const correctSum = zeros([], { device: this.device, dtype: 'int64' });
        let seen = 0;
        let step = 0;
        let windowStart = Date.now();
        let windowImages = 0;
        let windowLoss = zeros([], { device: this.device, dtype: 'float64' });
        let windowCorrect = zeros([], { device: this.device, dtype: 'int64' });
        for await (const { x, y } of this.epochBatches(this.epoch)) {
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
            this.events?.step({ step: this.globalStep, loss: wl, acc: wa, lr: this.lr, imagesPerSec: ips }, this.model);
            this.history.steps.push({ step: this.globalStep, epoch: ep - 1 + step / this.stepsPerEpoch, loss: wl, acc: wa, lr: this.lr });
            onProgress({
              type: 'step',
              epoch: ep,
              epochs: cfg.epochs,
              step,
              steps: this.stepsPerEpoch,
              globalStep: this.globalStep,
              loss: wl,
              acc: wa,
              lr: this.lr,
              imagesPerSec: ips,
              etaSeconds: (stepsLeft * cfg.batchSize) / ips,
            });
            windowLoss.zero_();
            windowCorrect.zero_();
            windowImages = 0;
            windowStart = now;
          }
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
        if (this.events) {
          this.events.epoch(em, this.globalStep);
          this.events.weights(this.model, this.globalStep);
          this.events.flush(); // the checkpoint below counts on what was written up to it
        }
        onProgress({ type: 'epoch', epochs: cfg.epochs, ...em });
        if (writer) onProgress({ type: 'checkpoint', epoch: ep, path: this.saveCheckpoint() });
        ran++;
      }
      if (Number.isNaN(last.acc)) {
        const ev = await this.evaluate();
        last = { loss: ev.loss, acc: ev.acc };
      }
      const report = writer
        ? await writeReport(cfg.out, this.history)
        : { svg: path.join(cfg.out, 'report.svg'), png: path.join(cfg.out, 'report.png') };
      // (a resumed run that had nothing left to train wrote its report at this step before)
      if (ran > 0) this.events?.report(report.png, this.globalStep);
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
      this.events?.close();
      this.events = null;
      if (cachingBefore === false) setCpuMemoryCaching(false);
    }
  }

  /**
   * The training batches of `epoch`: at most stepsPerEpoch. Data-parallel on streamed data, every rank
   * takes as many as the smallest share has, and where a rank may skip unreadable files the ranks agree
   * before each step that each has a batch (a rank that ran out would leave the others waiting).
   */
  private async *epochBatches(epoch: number): AsyncGenerator<Batch> {
    const streamed = this.distributed && this.trainLoader instanceof StreamingDataLoader;
    const steps = streamed ? Math.min(this.stepsPerEpoch, this.loaderSteps(epoch)) : this.stepsPerEpoch;
    const agree = streamed && this.cfg.onBadFile === 'skip';
    this.trainLoader.setEpoch(epoch);
    const it = this.trainLoader[Symbol.asyncIterator]();
    try {
      for (let step = 0; step < steps; step++) {
        const next = await it.next();
        if (agree && !(await allRanks(!next.done, this.device))) {
          if (!next.done) for (const t of [next.value.x, next.value.y]) t.dispose();
          return;
        }
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await it.return?.(undefined);
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
