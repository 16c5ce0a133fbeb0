// The in-memory image dataset every reader returns, and a synthetic one for when no real data can be had.
import { ownedBufferTensor } from '../tensor/owned.js';
import { Tensor, tensor } from '../tensor/tensor.js';
import { mulberry32 } from '../core/random.js';

/** Images and labels held as CPU tensors. */
export interface ImageDataset {
  /** uint8 [N, C, H, W], pixel values 0..255. */
  images: Tensor;
  /** int64 [N], class indices into `classes`. */
  labels: Tensor;
  /** Class names; labels[i] names classes[labels[i]]. */
  classes: string[];
  /** Where the data came from ('fashion-mnist', 'cifar10', a folder path, 'synthetic', ...). */
  name: string;
}

/**
 * Wrap pixel bytes (N*C*H*W, in NCHW order) and integer labels as an ImageDataset.
 * The pixel buffer is used without a copy; labels are converted to int64.
 */
export function makeImageDataset(
  pixels: Uint8Array,
  shape: readonly [number, number, number, number],
  labels: ArrayLike<number>,
  classes: string[],
  name: string,
): ImageDataset {
  const [n, c, h, w] = shape;
  if (pixels.length !== n * c * h * w) {
    throw new Error(`${name}: ${pixels.length} pixel bytes do not fill shape [${shape.join(', ')}] (${n * c * h * w} bytes)`);
  }
  if (labels.length !== n) throw new Error(`${name}: ${n} images but ${labels.length} labels`);
  const lab = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const v = labels[i];
    if (!Number.isInteger(v) || v < 0 || (classes.length > 0 && v >= classes.length)) {
      throw new Error(`${name}: label ${i} is ${v}, expected an integer in [0, ${classes.length})`);
    }
    lab[i] = BigInt(v);
  }
  return {
    images: tensor(pixels, { shape: [n, c, h, w], dtype: 'uint8' }),
    labels: ownedBufferTensor(lab, 'int64', [n]),
    classes,
    name,
  };
}

/** Free a dataset's tensors. */
export function disposeDataset(ds: ImageDataset): void {
  ds.images.dispose();
  ds.labels.dispose();
}

export interface SyntheticOptions {
  /** Number of images. Default 1000. */
  n?: number;
  /** 1 or 3. Default 1. */
  channels?: number;
  /** Side of the square images. Default 28. */
  size?: number;
  /** Number of classes, 2..10. Default 10. */
  classes?: number;
  /** Default 0. */
  seed?: number;
}

const SYNTHETIC_CLASS_NAMES = [
  'horizontal stripes',
  'vertical stripes',
  'diagonal stripes',
  'anti-diagonal stripes',
  'checkerboard',
  'centre square',
  'ring',
  'cross',
  'top half',
  'left half',
];

/**
 * A learnable, clearly labelled stand-in dataset (name 'synthetic'), for when Fashion-MNIST is not
 * installed and cannot be fetched. Each class is a distinct geometric pattern (stripes in four
 * orientations, checkerboard, square, ring, cross, half-planes); every image gets a random
 * brightness, a random shift of up to 2 pixels, and uniform pixel noise, so a small network has
 * to generalise a little but can reach high accuracy. Labels are balanced (image i has class
 * i mod classes before shuffling) and everything is deterministic given `seed`.
 */
export function syntheticImageDataset(opts: SyntheticOptions = {}): ImageDataset {
  const { n = 1000, channels = 1, size = 28, classes = 10, seed = 0 } = opts;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`syntheticImageDataset: n must be a positive integer, got ${n}`);
  if (channels !== 1 && channels !== 3) throw new RangeError(`syntheticImageDataset: channels must be 1 or 3, got ${channels}`);
  if (!Number.isInteger(size) || size < 8) throw new RangeError(`syntheticImageDataset: size must be an integer >= 8, got ${size}`);
  if (!Number.isInteger(classes) || classes < 2 || classes > SYNTHETIC_CLASS_NAMES.length) {
    throw new RangeError(`syntheticImageDataset: classes must be an integer in [2, ${SYNTHETIC_CLASS_NAMES.length}], got ${classes}`);
  }
  const rand = mulberry32(seed);
  const plane = size * size;
  const pixels = new Uint8Array(n * channels * plane);
  const labels = new Array<number>(n);
  // Balanced labels in a seeded random order.
  for (let i = 0; i < n; i++) labels[i] = i % classes;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [labels[i], labels[j]] = [labels[j], labels[i]];
  }
  const period = Math.max(4, Math.round(size / 7));
  const mid = (size - 1) / 2;
  for (let i = 0; i < n; i++) {
    const k = labels[i];
    const dy = Math.floor(rand() * 5) - 2;
    const dx = Math.floor(rand() * 5) - 2;
    const bright = 150 + rand() * 105;
    // Colour images get a class-independent random tint, so colour alone says nothing about the class.
    const tint = [0.6 + 0.4 * rand(), 0.6 + 0.4 * rand(), 0.6 + 0.4 * rand()];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const on = pattern(k, y - dy, x - dx, size, period, mid);
        for (let c = 0; c < channels; c++) {
          const base = on ? bright * (channels === 3 ? tint[c] : 1) : 20;
          const v = base + (rand() - 0.5) * 60;
          pixels[i * channels * plane + c * plane + y * size + x] = Math.max(0, Math.min(255, Math.round(v)));
        }
      }
    }
  }
  return makeImageDataset(pixels, [n, channels, size, size], labels, SYNTHETIC_CLASS_NAMES.slice(0, classes), 'synthetic');
}

function pattern(k: number, y: number, x: number, size: number, period: number, mid: number): boolean {
  const half = Math.floor(period / 2);
  const mod = (v: number) => ((v % period) + period) % period;
  const r = Math.hypot(y - mid, x - mid);
  switch (k) {
    case 0:
      return mod(y) < half;
    case 1:
      return mod(x) < half;
    case 2:
      return mod(x + y) < half;
    case 3:
      return mod(x - y) < half;
    case 4:
      return (Math.floor(y / period) + Math.floor(x / period)) % 2 === 0;
    case 5:
      return Math.abs(y - mid) < size / 4 && Math.abs(x - mid) < size / 4;
    case 6:
      return r > size / 5 && r < size / 3;
    case 7:
      return Math.abs(y - mid) < size / 10 || Math.abs(x - mid) < size / 10;
    case 8:
      return y < mid;
    default:
      return x < mid;
  }
}
