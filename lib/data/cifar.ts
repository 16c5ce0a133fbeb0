// CIFAR-10 / CIFAR-100 binary batches (the "binary version" from the CIFAR web page).
//
// CIFAR-10 record: 1 label byte, then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each a
// 32x32 image in row-major order). CIFAR-100 record: coarse label byte, fine label byte, then the
// same 3072 bytes. The pixel layout is already C, H, W, so records are copied as they are.
//
// Validated before use: every file is a whole number of records (at least one), and every label byte
// is in range (CIFAR-10: < 10; CIFAR-100: coarse < 20 and fine < 100, both checked whichever is used;
// and < the number of class names given). Bad files raise BadFileError naming the file and record.
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import { ImageDataset, makeImageDataset } from './dataset.js';

export type CifarVariant = 'cifar10' | 'cifar100';

export interface CifarOptions {
  variant?: CifarVariant;
  /** CIFAR-100 only: which label to use. Default 'fine' (100 classes). */
  labels?: 'fine' | 'coarse';
  /** Class names; default from the variant ('0'..'9' / '0'..'99' / '0'..'19'). */
  classes?: string[];
  name?: string;
}

const PIXELS = 3 * 32 * 32;

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/** Read and concatenate binary batch files into one [N, 3, 32, 32] dataset. */
export function readCifarBatches(files: readonly string[], opts: CifarOptions = {}): ImageDataset {
  const variant = opts.variant ?? 'cifar10';
  if (variant !== 'cifar10' && variant !== 'cifar100')
    throw new Error(`readCifarBatches: variant must be 'cifar10' or 'cifar100', got '${String(variant)}'`);
  if (files.length === 0) throw new Error('readCifarBatches: no batch files given');
  const labelBytes = variant === 'cifar10' ? 1 : 2;
  const record = labelBytes + PIXELS;
  const which = variant === 'cifar100' && opts.labels === 'coarse' ? 0 : labelBytes - 1;
  const nClasses = variant === 'cifar10' ? 10 : opts.labels === 'coarse' ? 20 : 100;
  const classes = opts.classes ?? (variant === 'cifar10' ? [...CIFAR10_CLASSES] : Array.from({ length: nClasses }, (_, i) => String(i)));

  const bufs = files.map((f) => {
    let b: Buffer;
    try {
      b = fs.readFileSync(f);
    } catch (e) {
      throw new Error(`cannot read CIFAR batch ${f}: ${(e as Error).message}`, { cause: e });
    }
    if (b.length === 0 || b.length % record !== 0) {
      throw new BadFileError(
        `${f}: size ${b.length} bytes is not a multiple of the ${variant} record size ${record} (${labelBytes} label byte${labelBytes > 1 ? 's' : ''} + ${PIXELS} pixels); wrong variant or truncated file?`,
        { path: f },
      );
    }
    return b;
  });
  // The label bytes a record may hold: CIFAR-10 one (10 classes), CIFAR-100 coarse (20) then fine (100).
  const ranges = variant === 'cifar10' ? [10] : [20, 100];
  const n = bufs.reduce((s, b) => s + b.length / record, 0);
  const pixels = new Uint8Array(n * PIXELS);
  const labels = new Uint8Array(n);
  let i = 0;
  bufs.forEach((b, fi) => {
    for (let off = 0; off < b.length; off += record, i++) {
      for (let k = 0; k < labelBytes; k++) {
        const v = b[off + k];
        if (v >= ranges[k]) {
          const kind = variant === 'cifar10' ? 'label' : k === 0 ? 'coarse label' : 'fine label';
          throw new BadFileError(
            `${files[fi]}: record ${off / record} has ${kind} ${v}, expected < ${ranges[k]} for ${variant}; wrong variant?`,
            { path: files[fi] },
          );
        }
      }
      const label = b[off + which];
      if (label >= classes.length) {
        throw new BadFileError(
          `${files[fi]}: record ${off / record} has label ${label}, expected < ${classes.length} for ${variant}; wrong variant?`,
          { path: files[fi] },
        );
      }
      labels[i] = label;
      pixels.set(b.subarray(off + labelBytes, off + record), i * PIXELS);
    }
  });
  return makeImageDataset(pixels, [n, 3, 32, 32], labels, classes, opts.name ?? variant);
}

function readNames(file: string): string[] | undefined {
  if (!fs.existsSync(file)) return undefined;
  return fs
    .readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** `dir` itself, or `dir/<sub>` when the files are one level down (the archive's own folder). */
function resolveDir(dir: string, sub: string, probe: string): string {
  if (fs.existsSync(path.join(dir, probe))) return dir;
  if (fs.existsSync(path.join(dir, sub, probe))) return path.join(dir, sub);
  throw new Error(`${dir}: no ${probe} here or in ${path.join(dir, sub)} (expected the extracted binary version of the dataset)`);
}

/**
 * Load CIFAR-10 from the 'cifar-10-batches-bin' layout: data_batch_1..5.bin, test_batch.bin and
 * batches.meta.txt (class names, used when present). `dir` may be that folder or its parent.
 */
export function loadCifar10(dir: string): { train: ImageDataset; test: ImageDataset; dir: string } {
  const { dir: d, classes } = cifar10Layout(dir);
  const trainFiles = [1, 2, 3, 4, 5].map((k) => path.join(d, `data_batch_${k}.bin`));
  const missing = trainFiles.filter((f) => !fs.existsSync(f));
  if (missing.length) throw new Error(`CIFAR-10 in ${d}: missing ${missing.map((f) => path.basename(f)).join(', ')}`);
  return {
    train: readCifarBatches(trainFiles, { variant: 'cifar10', classes, name: 'cifar10' }),
    test: readCifarBatches([path.join(d, 'test_batch.bin')], { variant: 'cifar10', classes, name: 'cifar10' }),
    dir: d,
  };
}

function cifar10Layout(dir: string): { dir: string; classes: string[] } {
  const d = resolveDir(dir, 'cifar-10-batches-bin', 'test_batch.bin');
  const names = readNames(path.join(d, 'batches.meta.txt'));
  if (names && names.length !== 10)
    throw new BadFileError(`${path.join(d, 'batches.meta.txt')}: expected 10 class names, found ${names.length}`, {
      path: path.join(d, 'batches.meta.txt'),
    });
  return { dir: d, classes: names ?? [...CIFAR10_CLASSES] };
}

function cifar100Layout(dir: string, labels?: 'fine' | 'coarse'): { dir: string; options: CifarOptions } {
  const d = resolveDir(dir, 'cifar-100-binary', 'test.bin');
  const coarse = labels === 'coarse';
  const namesFile = path.join(d, coarse ? 'coarse_label_names.txt' : 'fine_label_names.txt');
  const names = readNames(namesFile);
  const expected = coarse ? 20 : 100;
  if (names && names.length !== expected)
    throw new BadFileError(`${namesFile}: expected ${expected} class names, found ${names.length}`, { path: namesFile });
  return { dir: d, options: { variant: 'cifar100', labels, classes: names, name: 'cifar100' } };
}

/** The test batch alone (CIFAR-10's test_batch.bin, CIFAR-100's test.bin), from the same layouts as loadCifar10/100. */
export function loadCifarTest(
  dir: string,
  variant: CifarVariant,
  opts: { labels?: 'fine' | 'coarse' } = {},
): { test: ImageDataset; dir: string } {
  if (variant === 'cifar10') {
    const { dir: d, classes } = cifar10Layout(dir);
    return { test: readCifarBatches([path.join(d, 'test_batch.bin')], { variant, classes, name: 'cifar10' }), dir: d };
  }
  const { dir: d, options } = cifar100Layout(dir, opts.labels);
  return { test: readCifarBatches([path.join(d, 'test.bin')], options), dir: d };
}

/**
 * Load CIFAR-100 from the 'cifar-100-binary' layout: train.bin, test.bin and
 * fine_label_names.txt / coarse_label_names.txt when present. `dir` may be that folder or its parent.
 */
export function loadCifar100(
  dir: string,
  opts: { labels?: 'fine' | 'coarse' } = {},
): { train: ImageDataset; test: ImageDataset; dir: string } {
  const { dir: d, options: o } = cifar100Layout(dir, opts.labels);
  return { train: readCifarBatches([path.join(d, 'train.bin')], o), test: readCifarBatches([path.join(d, 'test.bin')], o), dir: d };
}
