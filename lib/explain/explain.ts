// `residual explain`: the experiments that show why residual learning works, run on this machine.
//
//   degradation      plain and residual CIFAR-style networks of two depths, same recipe, same data:
//                    training and test error against iterations (He et al. 2015, figure 1 and 6)
//   gradient flow    the gradient norm of every layer's weights, at initialisation (plain and residual
//                    networks up to 110 layers, the pre-activation ResNet-1001) and during training
//   identity maps    original (post-activation) against pre-activation blocks at one depth (He et al. 2016)
//   residual size    |F(x)| / |x| in each block, at initialisation and after training
//
// The networks train through the Trainer's own step (forward, loss, backward, one native optimizer step),
// on the data the `train` command uses. The results go to one folder: explain.html (every figure with
// a sentence under it), each figure as SVG and PNG, and explain.json with every number plotted.
import path from 'node:path';
import { disposeDataset, type ImageDataset } from '../data/dataset.js';
import { findFashionMnist } from '../data/fashion.js';
import { DataLoader } from '../data/loader.js';
import { createModel, getModelInfo } from '../models/registry.js';
import { manualSeed } from '../tensor/memory.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { checkSetting, type DataName, type TrainConfig } from '../train/config.js';
import { channelStats, loadData } from '../train/data.js';
import { resolveDevice } from '../train/recipe.js';
import { Trainer } from '../train/trainer.js';
import { writeFileAtomic } from '../core/fs.js';
import { currentGradientNorms, gradientNorms, residualMagnitudes, type BlockMagnitude, type LayerGradNorm } from './measure.js';
import { writeFigures } from './figures.js';
import type { CurvePoint, ExplainPreset, ExplainResult, ExplainSettings, Family, FigureName, InitGradients, TrainedNet } from './types.js';

/** The datasets explain trains on (of the training config's, lib/train/config.ts). */
export const EXPLAIN_DATA = ['fashion-mnist', 'synthetic'] as const satisfies readonly DataName[];
export type ExplainData = (typeof EXPLAIN_DATA)[number];
export type { CurvePoint, ExplainPreset, ExplainResult, ExplainSettings, Family, FigureName, InitGradients, TrainedNet } from './types.js';

/** The presets: `quick` takes minutes on 2 CPU cores, `full` is for a GPU. Options override single settings. */
export const EXPLAIN_PRESETS: Record<ExplainPreset, ExplainSettings> = {
  quick: {
    depths: [20, 32],
    identityDepth: 20,
    gradientDepths: [20, 56, 110],
    preact1001: true,
    iterations: 150,
    batchSize: 64,
    evalEvery: 15,
    testImages: 500,
    probeBatch: 8,
    lr: 0.1,
    weightDecay: 1e-4,
    momentum: 0.9,
    syntheticTrain: 12800,
    syntheticTest: 2000,
  },
  full: {
    depths: [20, 56],
    identityDepth: 110,
    gradientDepths: [20, 56, 110],
    preact1001: true,
    iterations: 16000,
    batchSize: 128,
    evalEvery: 400,
    testImages: 10000,
    probeBatch: 32,
    lr: 0.1,
    weightDecay: 1e-4,
    momentum: 0.9,
    syntheticTrain: 60000,
    syntheticTest: 10000,
  },
};

export interface ExplainOptions extends Partial<ExplainSettings> {
  preset?: ExplainPreset;
  /** Output folder (created). */
  out: string;
  /** Fashion-MNIST (default; synthetic data where it cannot be had) or the synthetic set. */
  data?: ExplainData;
  /** Folder holding Fashion-MNIST. */
  dataPath?: string;
  device?: TrainConfig['device'];
  seed?: number;
  /** Loader threads. */
  workers?: number;
  /** Called with one line per stage. */
  onProgress?: (message: string) => void;
}

/** The registry name and figure label of a network. */
export function netName(family: Family, depth: number): { model: string; net: string } {
  if (family === 'plain') return { model: `plain${depth}`, net: `plain-${depth}` };
  if (family === 'residual') return { model: `resnet${depth}`, net: `ResNet-${depth}` };
  return depth === 1001 || depth === 164
    ? { model: `preact${depth}`, net: `pre-act ResNet-${depth}` }
    : { model: `preact_basic${depth}`, net: `pre-act ResNet-${depth}` };
}

function settingsFor(o: ExplainOptions): ExplainSettings {
  const preset = o.preset ?? 'quick';
  const base = EXPLAIN_PRESETS[preset];
  if (!base) throw new RangeError(`explain: unknown preset '${String(preset)}' (quick, full)`);
  const s: ExplainSettings = { ...base };
  for (const k of Object.keys(base) as (keyof ExplainSettings)[])
    if (o[k] !== undefined) (s as unknown as Record<string, unknown>)[k] = o[k];
  const posInt = (v: number, name: string) => {
    if (!(Number.isInteger(v) && v > 0)) throw new RangeError(`explain: ${name} must be a positive integer, got ${v}`);
  };
  for (const k of ['iterations', 'evalEvery', 'testImages', 'probeBatch'] as const) posInt(s[k], k);
  // The settings the Trainer takes are checked as the training config checks them.
  for (const k of ['batchSize', 'lr', 'momentum', 'weightDecay', 'syntheticTrain', 'syntheticTest'] as const) {
    try {
      checkSetting(k, s[k]);
    } catch (e) {
      throw new RangeError(`explain: ${(e as Error).message}`);
    }
  }
  // Every network must exist in the registry (the depths it offers).
  for (const d of s.depths) for (const f of ['plain', 'residual'] as const) getModelInfo(netName(f, d).model);
  for (const d of s.gradientDepths) for (const f of ['plain', 'residual'] as const) getModelInfo(netName(f, d).model);
  getModelInfo(netName('residual', s.identityDepth).model);
  getModelInfo(netName('preact', s.identityDepth).model);
  if (s.depths[0] >= s.depths[1]) throw new RangeError(`explain: depths must be [shallow, deep], got [${s.depths.join(', ')}]`);
  return s;
}

/** Runs every experiment and writes explain.html, explain.json and the figures into `out`. */
export async function explain(o: ExplainOptions): Promise<ExplainResult> {
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  const preset = o.preset ?? 'quick';
  const s = settingsFor(o);
  const seed = o.seed ?? 0;
  const say = o.onProgress ?? (() => {});
  const device = resolveDevice(o.device ?? 'auto');
  let dataName = o.data ?? 'fashion-mnist';
  if (dataName === 'fashion-mnist' && !o.dataPath && !findFashionMnist()) {
    say('*** Fashion-MNIST is not here (residual data get fashion-mnist fetches it): using the SYNTHETIC set instead ***');
    dataName = 'synthetic';
  }
  const data = loadData({ data: dataName, dataPath: o.dataPath, seed, syntheticTrain: s.syntheticTrain, syntheticTest: s.syntheticTest });
  say(`data: ${data.description}; device ${device}`);
  const runs: TrainedNet[] = [];
  let initGradients: InitGradients[] = [];
  try {
    const probe = probeBatch(data.train, s.probeBatch, seed, device);
    try {
      initGradients = measureInitGradients(s, probe, data.train, device, seed, say);
      const toTrain: [Family, number][] = [
        ['plain', s.depths[0]],
        ['residual', s.depths[0]],
        ['plain', s.depths[1]],
        ['residual', s.depths[1]],
        ['residual', s.identityDepth],
        ['preact', s.identityDepth],
      ];
      const seen = new Set<string>();
      for (const [family, depth] of toTrain) {
        const { model } = netName(family, depth);
        if (seen.has(model)) continue;
        seen.add(model);
        runs.push(await trainNet(family, depth, s, { data, probe, device, seed, workers: o.workers ?? 2, say }));
      }
    } finally {
      probe.x.dispose();
      probe.y.dispose();
    }
  } finally {
    disposeDataset(data.train);
    disposeDataset(data.test);
  }
  const partial = { preset, settings: s, seed, device, data: data.description, runs, initGradients };
  say('drawing the figures');
  const { findings, figures, html } = await writeFigures(o.out, partial);
  const json = path.join(o.out, 'explain.json');
  const cpu = process.cpuUsage(cpu0);
  const result: ExplainResult = {
    ...partial,
    findings,
    seconds: (Date.now() - t0) / 1000,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    files: { html, json, figures },
  };
  writeFileAtomic(json, JSON.stringify(result, finiteOrString, 1) + '\n');
  return result;
}

function finiteOrString(_key: string, v: unknown): unknown {
  return typeof v === 'number' && !Number.isFinite(v) ? String(v) : v;
}

/** One fixed, normalised training batch (the same images for every network). */
function probeBatch(train: ImageDataset, size: number, seed: number, device: Device): { x: Tensor; y: Tensor } {
  const stats = channelStats(train.images);
  const loader = new DataLoader(train, {
    batchSize: size,
    shuffle: true,
    seed: seed + 7,
    dropLast: true,
    mean: stats.mean,
    std: stats.std,
    device,
    workers: 1,
  });
  try {
    for (const first of loader.iterSync()) return first;
    throw new Error(`explain: the training set has fewer than ${size} images`);
  } finally {
    loader.close();
  }
}

function measureInitGradients(
  s: ExplainSettings,
  probe: { x: Tensor; y: Tensor },
  train: ImageDataset,
  device: Device,
  seed: number,
  say: (m: string) => void,
): InitGradients[] {
  const nets: [Family, number][] = [];
  for (const d of s.gradientDepths) nets.push(['plain', d], ['residual', d]);
  if (s.preact1001) nets.push(['preact', 1001]);
  const out: InitGradients[] = [];
  for (const [family, depth] of nets) {
    const { model, net } = netName(family, depth);
    const t = Date.now();
    manualSeed(seed);
    const m = createModel(model, { numClasses: Math.max(train.classes.length, 2), inChannels: train.images.shape[1] });
    try {
      if (device !== 'cpu') m.to(device);
      out.push({ net, model, family, depth, norms: gradientNorms(m, probe) });
    } finally {
      m.dispose();
    }
    say(`gradient norms at initialisation: ${net} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  }
  return out;
}

interface TrainContext {
  data: { train: ImageDataset; test: ImageDataset; description: string };
  probe: { x: Tensor; y: Tensor };
  device: Device;
  seed: number;
  workers: number;
  say: (m: string) => void;
}

/** Trains one network with the shared recipe, measuring every `evalEvery` iterations. */
async function trainNet(family: Family, depth: number, s: ExplainSettings, c: TrainContext): Promise<TrainedNet> {
  const { model, net } = netName(family, depth);
  const t0 = Date.now();
  const trainN = c.data.train.images.shape[0];
  const perEpoch = Math.min(Math.floor(trainN / s.batchSize), s.iterations);
  if (perEpoch < 1) throw new Error(`explain: the training set (${trainN} images) is smaller than one batch of ${s.batchSize}`);
  const evalBatch = Math.min(s.testImages, 500);
  const trainer = new Trainer(
    {
      model,
      data: 'synthetic',
      epochs: Math.ceil(s.iterations / perEpoch),
      limitTrainBatches: perEpoch,
      batchSize: s.batchSize,
      lr: s.lr,
      optimizer: 'sgd',
      momentum: s.momentum,
      nesterov: false,
      weightDecay: s.weightDecay,
      schedule: 'multistep',
      augment: false,
      device: c.device,
      seed: c.seed,
      workers: c.workers,
      evalBatchSize: evalBatch,
      limitTestBatches: Math.ceil(s.testImages / evalBatch),
      out: '',
    },
    c.data,
  );
  const magnitudesInit = residualMagnitudes(trainer.model, c.probe.x, { batchStats: true });
  const curve: CurvePoint[] = [];
  const gradients: TrainedNet['gradients'] = [];
  let it = 0;
  let wrong = 0;
  let lossSum = 0;
  let seen = 0;
  try {
    for (let epoch = 0; it < s.iterations; epoch++) {
      trainer.trainLoader.setEpoch(epoch);
      let step = 0;
      for await (const { x, y } of trainer.trainLoader) {
        const { loss, correct } = trainer.trainStep(x, y);
        const n = y.shape[0];
        wrong += n - (correct.item() as number);
        lossSum += (loss.item() as number) * n;
        seen += n;
        for (const t of [loss, correct, x, y]) t.dispose();
        it++;
        step++;
        if (it % s.evalEvery === 0 || it === s.iterations) {
          gradients.push({ iteration: it, norms: currentGradientNorms(trainer.model).map((g) => g.norm) });
          const ev = await trainer.evaluate();
          curve.push({ iteration: it, trainError: wrong / seen, trainLoss: lossSum / seen, testError: 1 - ev.acc, testLoss: ev.loss });
          wrong = lossSum = seen = 0;
        }
        if (it >= s.iterations || step >= perEpoch) break;
      }
    }
    const magnitudesTrained = residualMagnitudes(trainer.model, c.probe.x);
    const last = curve[curve.length - 1];
    const seconds = (Date.now() - t0) / 1000;
    c.say(
      `trained ${net}: ${it} iterations, training error ${pct(last.trainError)}, test error ${pct(last.testError)} (${seconds.toFixed(0)} s)`,
    );
    return {
      net,
      model,
      family,
      depth,
      parameters: trainer.model.numParameters(),
      curve,
      gradients,
      magnitudesInit,
      magnitudesTrained,
      seconds,
    };
  } finally {
    trainer.trainLoader.close();
    trainer.testLoader.close();
    trainer.model.dispose();
  }
}

function pct(v: number): string {
  return `${(100 * v).toFixed(1)}%`;
}
