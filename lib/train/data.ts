// The data of a run: the datasets `data` names (in memory, or streamed from their files), the
// normalisation statistics of the training set, and the loaders the Trainer reads. What a model needs
// to see the data as it did in training (RunDataInfo: mean, std, classes, channels) is saved with the
// run's checkpoints (lib/train/state.ts), so `residual eval` opens the test split alone.
import fs from 'node:fs';
import path from 'node:path';
import { loadCifar10, loadCifar100, loadCifarTest } from '../data/cifar.js';
import { syntheticImageDataset, type ImageDataset } from '../data/dataset.js';
import { loadFashionMnist, loadFashionMnistTest } from '../data/fashion.js';
import { loadImageFolder } from '../data/folder.js';
import { DataLoader, type Sampler } from '../data/loader.js';
import { IMAGENET_MEAN, IMAGENET_STD, openStreamedData, openStreamedTest, type StreamingDataLoader } from '../data/stream.js';
import { scope } from '../tensor/scope.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { DATASETS, isStreamedDataName, key, msg, setting, settingsError, type TrainConfig } from './config.js';
import { runTestLoader } from './evaluate.js';

/** What the model of a run was trained to see: the normalisation and the classes, and the input channels. */
export interface RunDataInfo {
  /** Per-channel mean and std of the training images scaled to [0, 1] (ImageNet's for streamed data). */
  mean: number[];
  std: number[];
  /** The training set's class names (the model has max(classes, 2) outputs). */
  classes: string[];
  channels: number;
}

type DataSettings = Pick<TrainConfig, 'data' | 'dataPath' | 'seed' | 'syntheticTrain' | 'syntheticTest'>;

function needsPath(cfg: DataSettings): string {
  if (!cfg.dataPath)
    throw settingsError(
      RangeError,
      msg`${setting('data', cfg.data)} needs ${key('dataPath')} (${DATASETS[cfg.data]?.holds ?? 'the dataset'})`,
    );
  return cfg.dataPath;
}

function refuseStreamed(cfg: DataSettings): void {
  if (!Object.hasOwn(DATASETS, cfg.data))
    throw settingsError(RangeError, msg`unknown dataset ${setting('data', cfg.data)} (${Object.keys(DATASETS).join(', ')})`);
  if (isStreamedDataName(cfg.data))
    throw settingsError(
      RangeError,
      msg`${setting('data', cfg.data)} is streamed: it is read by the Trainer's loaders, not loaded into memory`,
    );
}

function folderTestDir(dataPath: string): string {
  const testDir = ['test', 'val'].map((d) => path.join(dataPath, d)).find((d) => fs.existsSync(d));
  if (!testDir) throw new Error(`${dataPath} has no test/ or val/ folder`);
  return testDir;
}

const SYNTHETIC = { channels: 1, size: 28, classes: 10 };

/** Loads an in-memory dataset's training and test splits. */
export function loadData(cfg: DataSettings): { train: ImageDataset; test: ImageDataset; description: string } {
  refuseStreamed(cfg);
  switch (cfg.data) {
    case 'fashion-mnist': {
      const f = loadFashionMnist({ path: cfg.dataPath });
      return { train: f.train, test: f.test, description: `Fashion-MNIST from ${f.dir} (${f.source})` };
    }
    case 'cifar10':
    case 'cifar100': {
      const dir = needsPath(cfg);
      const c = cfg.data === 'cifar10' ? loadCifar10(dir) : loadCifar100(dir);
      return { train: c.train, test: c.test, description: `${cfg.data} from ${c.dir}` };
    }
    case 'synthetic': {
      const train = syntheticImageDataset({ n: cfg.syntheticTrain ?? 6000, ...SYNTHETIC, seed: cfg.seed + 1 });
      const test = syntheticImageDataset({ n: cfg.syntheticTest ?? 1000, ...SYNTHETIC, seed: cfg.seed + 2 });
      return { train, test, description: 'SYNTHETIC data (generated patterns, not a real dataset)' };
    }
    default: {
      const dir = needsPath(cfg);
      const testDir = folderTestDir(dir);
      return { train: loadImageFolder(path.join(dir, 'train')), test: loadImageFolder(testDir), description: `image folder ${dir}` };
    }
  }
}

/** Loads an in-memory dataset's test split alone (the same images loadData gives as `test`). */
export function loadTestData(cfg: DataSettings): { test: ImageDataset; description: string } {
  refuseStreamed(cfg);
  switch (cfg.data) {
    case 'fashion-mnist': {
      const f = loadFashionMnistTest({ path: cfg.dataPath });
      return { test: f.test, description: `Fashion-MNIST from ${f.dir} (${f.source})` };
    }
    case 'cifar10':
    case 'cifar100': {
      const c = loadCifarTest(needsPath(cfg), cfg.data);
      return { test: c.test, description: `${cfg.data} from ${c.dir}` };
    }
    case 'synthetic':
      return {
        test: syntheticImageDataset({ n: cfg.syntheticTest ?? 1000, ...SYNTHETIC, seed: cfg.seed + 2 }),
        description: 'SYNTHETIC data (generated patterns, not a real dataset)',
      };
    default:
      return { test: loadImageFolder(folderTestDir(needsPath(cfg))), description: `image folder ${cfg.dataPath}` };
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

/** The data of a run: its loaders, sizes and description, and what its model must be built for. */
export interface RunData {
  train: DataLoader | StreamingDataLoader;
  test: DataLoader | StreamingDataLoader;
  trainSize: number;
  testSize: number;
  description: string;
  info: RunDataInfo;
  /** The in-memory datasets (null for streamed data). */
  datasets: { train: ImageDataset; test: ImageDataset } | null;
}

/**
 * Opens a run's data on `device`: the datasets given, or those `cfg.data` names. `share`: this rank's
 * part of each epoch when data-parallel (a DistributedSampler for in-memory data; the streaming loader
 * partitions by rank itself).
 */
export function openRunData(
  cfg: TrainConfig,
  device: Device,
  opts: {
    datasets?: { train: ImageDataset; test: ImageDataset; description?: string };
    share?: { rank: number; worldSize: number; sampler: (size: number) => Sampler } | null;
  } = {},
): RunData {
  if (!opts.datasets && isStreamedDataName(cfg.data)) {
    const s = openStreamedData({ ...cfg, rank: opts.share?.rank, worldSize: opts.share?.worldSize }, device);
    return {
      train: s.train,
      test: s.test,
      trainSize: s.train.size,
      testSize: s.test.size,
      description: s.description,
      info: { mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD], classes: s.classes, channels: s.channels },
      datasets: null,
    };
  }
  const d = opts.datasets ?? loadData(cfg);
  const stats = channelStats(d.train.images);
  const size = d.train.images.shape[2];
  const train = new DataLoader(d.train, {
    mean: stats.mean,
    std: stats.std,
    device,
    channelsLast: cfg.channelsLast,
    workers: cfg.workers,
    prefetch: 3,
    batchSize: cfg.batchSize,
    shuffle: true,
    seed: cfg.seed,
    dropLast: true,
    randomCrop: cfg.augment ? { padding: size >= 32 ? 4 : 2 } : false,
    hflip: cfg.augment,
    randomErasing: cfg.augment ? cfg.randomErasing : 0,
    sampler: opts.share?.sampler(d.train.images.shape[0]),
  });
  return {
    train,
    test: runTestLoader(d.test, stats, cfg, device),
    trainSize: d.train.images.shape[0],
    testSize: d.test.images.shape[0],
    description: d.description ?? d.train.name,
    info: { ...stats, classes: d.train.classes, channels: d.train.images.shape[1] },
    datasets: { train: d.train, test: d.test },
  };
}

/**
 * The test loader of a run whose RunDataInfo was saved with it: the test split alone, normalised with
 * the training set's saved statistics, batched as the trainer batched it. `residual eval` uses this.
 */
export function openRunTest(
  cfg: TrainConfig,
  info: RunDataInfo,
  device: Device,
): { test: DataLoader | StreamingDataLoader; description: string; dataset: ImageDataset | null } {
  if (isStreamedDataName(cfg.data)) {
    const s = openStreamedTest(cfg, info.classes, device);
    return { test: s.test, description: s.description, dataset: null };
  }
  const d = loadTestData(cfg);
  return { test: runTestLoader(d.test, info, cfg, device), description: d.description, dataset: d.test };
}
