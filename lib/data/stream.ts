// Streaming datasets: images read, decoded (libjpeg-turbo, libpng) and transformed on the loader's
// native threads (native/loader/stream_loader.cpp over the image library in native/image/), never
// held in memory whole. Two layouts:
//
//   - an ImageNet-layout folder: root/<class>/<image>.jpg|.jpeg|.png, classes are the sorted folder names;
//   - WebDataset tar shards: samples grouped by basename (0001.jpg + 0001.cls, the class index as text),
//     named by a brace pattern ('shards/train-{0000..0127}.tar'), a list, or a folder of .tar files.
//
// Shuffling: a seeded permutation of the files (folder), or the shards then a bounded shuffle buffer
// per thread (webdataset); deterministic for a (seed, epoch, workers). Distributed: rank r of
// worldSize takes every worldSize-th sample of the permutation, padded like PyTorch's
// DistributedSampler (folder), or every worldSize-th shard (webdataset); each loader thread then gets
// its own share (whole batches for a folder, whole shards for webdataset) and batches come out
// round-robin over the threads, as PyTorch's DataLoader does.
//
// Transforms follow torchvision: 'train' is RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip
// + Normalize; 'eval' is Resize(resize) + CenterCrop(size) + Normalize; 'resize' resizes to size.
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import { native as N } from '../addon/binding.js';
import type { Device } from '../tensor/tensor.js';
import { NativeBatchLoader } from './batches.js';
import { listImageFolder } from './folder.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export interface StreamOptions {
  batchSize: number;
  /** 'train': RandomResizedCrop + flip; 'eval': Resize + CenterCrop; 'resize': resize to `size`. Default 'train'. */
  transform?: 'train' | 'eval' | 'resize';
  /** Output [height, width] or one side; default 224. */
  size?: number | [number, number];
  /** Shorter side before the centre crop ('eval'); default size * 256 / 224. */
  resize?: number;
  /** RandomResizedCrop's area fraction range; default [0.08, 1]. */
  scale?: [number, number];
  /** RandomResizedCrop's aspect ratio range; default [3/4, 4/3]. */
  ratio?: [number, number];
  /** Random horizontal flip ('train'); default true. */
  hflip?: boolean;
  /** Output channels, 1 or 3 (default 3). */
  channels?: 1 | 3;
  mean?: number[];
  std?: number[];
  shuffle?: boolean;
  seed?: number;
  dropLast?: boolean;
  /** This process's rank and the number of processes (data-parallel): each reads its own share. */
  rank?: number;
  worldSize?: number;
  /** Loader threads (default 2) and batches produced ahead (default 2 per thread), ready or in the making: the loader holds at most this many batches. */
  workers?: number;
  prefetch?: number;
  /** A corrupt or unreadable file stops the run ('stop', default) or is skipped and counted ('skip'). */
  onError?: 'stop' | 'skip';
  /** Refuse images with more pixels than this (default 2^26); files or tar members larger than maxFileBytes (default 256 MiB). */
  maxPixels?: number;
  maxFileBytes?: number;
  /** WebDataset shuffle buffer: samples per thread (default 1000) and encoded bytes in all (default 256 MiB). */
  shuffleBuffer?: number;
  shuffleBufferBytes?: number;
  device?: Device;
  pinMemory?: boolean;
  channelsLast?: boolean;
}

export interface FolderSource {
  kind: 'folder';
  root: string;
  files: string[];
  labels: Int32Array;
  classes: string[];
}

export interface WebDatasetSource {
  kind: 'webdataset';
  shards: string[];
  /** Samples per shard (from a header scan). */
  counts: number[];
  classes: string[];
}

export type StreamSource = FolderSource | WebDatasetSource;

/** An ImageNet-layout folder: its files and labels (the listing only; nothing is decoded). */
export function imageFolderSource(root: string, classes0?: readonly string[]): FolderSource {
  const { classes, files } = listImageFolder(root, classes0);
  return { kind: 'folder', root, files: files.map((f) => f.file), labels: Int32Array.from(files, (f) => f.label), classes };
}

/** Most shard names a pattern may expand to (the product over its brace groups, counted before any is made). */
export const MAX_SHARD_NAMES = 1_000_000;

/**
 * Shard paths from a pattern: brace ranges ('train-{0000..0127}.tar', zero padding kept), brace lists
 * ('{a,b}'), a folder (its .tar files, sorted) or one file. Several groups expand to every
 * combination, in order; their number is bounded (MAX_SHARD_NAMES) before any name is made.
 */
export function expandShards(spec: string): string[] {
  if (isDirectory(spec)) return tarsIn(spec);
  // the pattern as literal text between brace groups, each group as its list of alternatives
  const texts: string[] = [];
  const groups: (() => string[])[] = [];
  let count = 1;
  let last = 0;
  for (const m of spec.matchAll(/\{([^{}]*)\}/g)) {
    texts.push(spec.slice(last, m.index));
    last = m.index + m[0].length;
    const range = /^(\d+)\.\.(\d+)$/.exec(m[1]);
    let n: number;
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (!(b >= a) || !Number.isSafeInteger(b)) throw new RangeError(`shard pattern ${spec}: bad range {${m[1]}}`);
      n = b - a + 1;
      const width = range[1].length === range[2].length ? range[1].length : 0;
      groups.push(() => Array.from({ length: n }, (_, i) => String(a + i).padStart(width, '0')));
    } else {
      const parts = m[1].split(',');
      n = parts.length;
      groups.push(() => parts);
    }
    count *= n;
    if (count > MAX_SHARD_NAMES)
      throw new RangeError(
        `shard pattern ${spec} names more than ${MAX_SHARD_NAMES.toLocaleString('en')} shards (the product of its brace groups): name fewer, or use a folder of shards`,
      );
  }
  texts.push(spec.slice(last));
  if (!groups.length) return [spec];
  let names = [texts[0]];
  groups.forEach((g, k) => {
    const alts = g();
    names = names.flatMap((head) => alts.map((alt) => head + alt + texts[k + 1]));
  });
  // a name that is a folder stands for its shards (names ending in .tar are taken as shards unchecked)
  return names.flatMap((n) => (!n.endsWith('.tar') && isDirectory(n) ? tarsIn(n) : [n]));
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
  } catch {
    return false; // not a folder we can read (e.g. a path through a file)
  }
}

function tarsIn(dir: string): string[] {
  const out = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.tar'))
    .sort()
    .map((f) => path.join(dir, f));
  if (!out.length) throw new Error(`${dir}: no .tar shards in this folder`);
  return out;
}

/** Most classes a streamed dataset may have (labels 0..65535; the native tar scan's bound, as idx's). */
export const MAX_STREAM_CLASSES = 65536;

/** WebDataset shards: the list, each one's sample count (a scan of the tar headers), and the classes. */
export function webDatasetSource(spec: string | string[], opts: { maxFileBytes?: number } = {}): WebDatasetSource {
  const shards = Array.isArray(spec) ? spec : expandShards(spec);
  const missing = shards.filter((s) => !fs.existsSync(s));
  if (missing.length) throw new Error(`webdataset: ${missing.length} shard(s) missing, e.g. ${missing[0]}`);
  let maxLabel = -1;
  let maxShard = shards[0];
  const counts = shards.map((s) => {
    const r = N.tarScan(s, opts.maxFileBytes ? { maxFileBytes: opts.maxFileBytes } : undefined) as { samples: number; maxLabel: number };
    if (!(Number.isInteger(r.maxLabel) && r.maxLabel < MAX_STREAM_CLASSES))
      throw new BadFileError(`${s}: class label ${r.maxLabel} is over the limit of ${MAX_STREAM_CLASSES - 1}`, { path: s });
    if (r.maxLabel > maxLabel) [maxLabel, maxShard] = [r.maxLabel, s];
    return r.samples;
  });
  // `residual data pack` writes the class names beside the shards.
  let classes: string[] | null = null;
  const named = path.join(path.dirname(shards[0]), 'classes.json');
  if (fs.existsSync(named)) {
    try {
      const c = JSON.parse(fs.readFileSync(named, 'utf8')) as unknown;
      if (Array.isArray(c) && c.every((x) => typeof x === 'string')) classes = c as string[];
    } catch {
      /* ignore a broken file: classes are numbered instead */
    }
    if (classes && maxLabel >= classes.length)
      throw new BadFileError(`${maxShard}: class label ${maxLabel} is not an index into ${named} (${classes.length} classes)`, {
        path: maxShard,
      });
  }
  classes ??= Array.from({ length: maxLabel + 1 }, (_, i) => String(i));
  return { kind: 'webdataset', shards, counts, classes };
}

/**
 * The test shards for a training pattern: 'train' replaced by 'val' (or 'test') in the pattern, when
 * every shard it names exists; else every .tar beside it whose name starts like the pattern's
 * (e.g. val-000000.tar for 'train-{000000..000127}.tar').
 */
export function findTestShards(trainSpec: string): string[] | null {
  const i = trainSpec.lastIndexOf('train');
  if (i < 0) return null;
  for (const w of ['val', 'test']) {
    const spec = trainSpec.slice(0, i) + w + trainSpec.slice(i + 5);
    try {
      const list = expandShards(spec);
      if (list.every((f) => fs.existsSync(f))) return list;
    } catch {
      /* try the prefix */
    }
    const dir = path.dirname(spec);
    const prefix = path.basename(spec).split('{')[0];
    if (!prefix || !fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
    const found = fs
      .readdirSync(dir)
      .filter((f) => f.startsWith(prefix) && f.endsWith('.tar'))
      .sort()
      .map((f) => path.join(dir, f));
    if (found.length) return found;
  }
  return null;
}

/** A DataLoader over a streamed source; same iteration interface as DataLoader (lib/data/batches.ts). */
export class StreamingDataLoader extends NativeBatchLoader {
  readonly size: number;

  constructor(
    readonly source: StreamSource,
    readonly options: StreamOptions,
  ) {
    const o = options;
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1)
      throw new RangeError(`StreamingDataLoader: batchSize must be a positive integer, got ${o.batchSize}`);
    const size = o.size ?? 224;
    super(
      N.streamCreate({
        kind: source.kind,
        files: source.kind === 'folder' ? source.files : undefined,
        labels: source.kind === 'folder' ? source.labels : undefined,
        shards: source.kind === 'webdataset' ? source.shards : undefined,
        shardCounts: source.kind === 'webdataset' ? source.counts : undefined,
        batchSize: o.batchSize,
        transform: o.transform ?? 'train',
        size: Array.isArray(size) ? size : [size, size],
        resize: o.resize,
        scale: o.scale,
        ratio: o.ratio,
        hflip: o.hflip ?? true,
        channels: o.channels ?? 3,
        mean: o.mean,
        std: o.std,
        shuffle: !!o.shuffle,
        seed: o.seed ?? 0,
        dropLast: !!o.dropLast,
        rank: o.rank ?? 0,
        worldSize: o.worldSize ?? 1,
        workers: o.workers ?? 2,
        prefetch: o.prefetch ?? 2 * (o.workers ?? 2),
        onError: o.onError ?? 'stop',
        maxPixels: o.maxPixels,
        maxFileBytes: o.maxFileBytes,
        shuffleBuffer: o.shuffleBuffer,
        shuffleBufferBytes: o.shuffleBufferBytes,
        device: o.device ?? 'cpu',
        pinMemory: o.pinMemory,
        channelsLast: !!o.channelsLast,
      }),
      'StreamingDataLoader',
    );
    this.size = source.kind === 'folder' ? source.files.length : source.counts.reduce((a, b) => a + b, 0);
  }

  /** Batches per epoch (for shards an upper bound: skipped samples can make it fewer). */
  override get length(): number {
    return super.length;
  }

  /** Samples skipped so far (onError: 'skip'), and the ones not reported before (at most 100). */
  skipped(): { count: number; errors: { path: string; message: string }[] } {
    return N.loaderSkipped(this.native);
  }
}

export interface StreamedData {
  train: StreamingDataLoader;
  test: StreamingDataLoader;
  classes: string[];
  channels: number;
  description: string;
}

/** The settings of a run that openStreamedData and openStreamedTest read. */
export interface StreamedRunSettings {
  data: string;
  dataPath?: string;
  seed: number;
  batchSize: number;
  evalBatchSize?: number;
  workers: number;
  augment: boolean;
  channelsLast?: boolean;
  imageSize?: number;
  onBadFile?: 'stop' | 'skip';
  /** Data-parallel: this rank's share of the training set (the test set is read whole by every rank). */
  rank?: number;
  worldSize?: number;
}

/**
 * The trainer's streamed datasets: `--data imagefolder --data-path DIR` (DIR/train and DIR/val or
 * DIR/test) or `--data webdataset --data-path 'shards/train-{0000..0127}.tar'` (the test shards are
 * the same pattern with 'train' replaced by 'val' or 'test'). ImageNet's transforms and normalisation.
 */
export function openStreamedData(cfg: StreamedRunSettings, device: Device): StreamedData {
  let train: StreamSource;
  let description: string;
  if (cfg.data === 'imagefolder') {
    if (!cfg.dataPath) throw new Error('--data imagefolder needs --data-path DIR with DIR/train and DIR/val (or DIR/test) class folders');
    streamedTestDir(cfg.dataPath);
    train = imageFolderSource(path.join(cfg.dataPath, 'train'));
    description = `image folder ${cfg.dataPath} (streamed)`;
  } else if (cfg.data === 'webdataset') {
    if (!cfg.dataPath)
      throw new Error("--data webdataset needs --data-path with the training shards, e.g. 'shards/train-{0000..0127}.tar'");
    train = webDatasetSource(cfg.dataPath);
    description = `webdataset ${cfg.dataPath} (${train.shards.length} shards)`;
  } else {
    throw new Error(`not a streamed dataset: ${cfg.data}`);
  }
  const test = streamedTestSource(cfg, train.classes);
  const trainLoader = new StreamingDataLoader(train, {
    ...streamCommon(cfg, device),
    rank: cfg.rank,
    worldSize: cfg.worldSize,
    batchSize: cfg.batchSize,
    transform: cfg.augment ? 'train' : 'eval',
    hflip: cfg.augment,
    shuffle: true,
    seed: cfg.seed,
    dropLast: true,
  });
  return { train: trainLoader, test: streamedTestLoader(cfg, test, device), classes: train.classes, channels: 3, description };
}

/**
 * The test loader of a streamed run alone, its labels indexing `classes` (the training set's, saved
 * with the run): `residual eval` reads neither the training folder nor the training shards.
 */
export function openStreamedTest(
  cfg: StreamedRunSettings,
  classes: readonly string[],
  device: Device,
): { test: StreamingDataLoader; description: string } {
  if (!cfg.dataPath) throw new Error(`--data ${cfg.data} needs --data-path`);
  if (cfg.data !== 'imagefolder' && cfg.data !== 'webdataset') throw new Error(`not a streamed dataset: ${cfg.data}`);
  const test = streamedTestSource(cfg, classes);
  return {
    test: streamedTestLoader(cfg, test, device),
    description: `${cfg.data === 'imagefolder' ? 'image folder' : 'webdataset'} ${cfg.dataPath} (streamed test split)`,
  };
}

function streamedTestDir(dataPath: string): string {
  const testDir = ['val', 'test'].map((d) => path.join(dataPath, d)).find((d) => fs.existsSync(d));
  if (!testDir) throw new Error(`${dataPath} has no val/ or test/ folder`);
  return testDir;
}

/** The test split of a streamed dataset; its labels index the training classes. */
function streamedTestSource(cfg: StreamedRunSettings, classes: readonly string[]): StreamSource {
  if (cfg.data === 'imagefolder') {
    // the class indices are the training split's; the test split's folders are matched by name
    return imageFolderSource(streamedTestDir(cfg.dataPath!), classes);
  }
  const testShards = findTestShards(cfg.dataPath!);
  if (!testShards)
    throw new Error(
      `--data-path ${cfg.dataPath}: no test shards found (the same pattern, or the same name prefix, with 'train' replaced by 'val' or 'test')`,
    );
  const test = webDatasetSource(testShards);
  if (test.classes.length > classes.length)
    throw new BadFileError(
      `${testShards[0]}: the test shards have ${test.classes.length} classes, the training shards ${classes.length} (labels must index the training classes)`,
      { path: testShards[0] },
    );
  return test;
}

function streamCommon(cfg: StreamedRunSettings, device: Device): Partial<StreamOptions> {
  return {
    size: cfg.imageSize ?? 224,
    mean: IMAGENET_MEAN,
    std: IMAGENET_STD,
    device,
    channelsLast: !!cfg.channelsLast,
    workers: cfg.workers,
    onError: cfg.onBadFile ?? 'stop',
  };
}

function streamedTestLoader(cfg: StreamedRunSettings, test: StreamSource, device: Device): StreamingDataLoader {
  return new StreamingDataLoader(test, {
    ...streamCommon(cfg, device),
    batchSize: cfg.evalBatchSize ?? Math.max(cfg.batchSize, 256),
    transform: 'eval',
  });
}

/** Is this --data name a streamed dataset? */
export function isStreamedData(name: string): name is 'imagefolder' | 'webdataset' {
  return name === 'imagefolder' || name === 'webdataset';
}

/** Prints files skipped since the last call (onError: 'skip') to stderr, one line each; returns the total. */
export function reportSkipped(loader: unknown, write: (line: string) => void = (l) => process.stderr.write(l + '\n')): number {
  if (!(loader instanceof StreamingDataLoader)) return 0;
  const s = loader.skipped();
  for (const e of s.errors) write(`skipped ${e.path}: ${e.message}`);
  if (s.errors.length) write(`(${s.count} file(s) skipped so far)`);
  return s.count;
}
