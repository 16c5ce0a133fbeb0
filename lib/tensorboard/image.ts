// Images for TensorBoard's image dashboard: a tensor encoded as PNG (pngjs), or the bytes of a PNG file
// (e.g. a run's report.png), checked and measured.
import { PNG } from 'pngjs';
import { BadFileError, DtypeError, ShapeError } from '../core/errors.js';
import type { Tensor } from '../tensor/tensor.js';

/** Summary.Image.colorspace by channel count (1 grayscale, 2 grayscale + alpha, 3 RGB, 4 RGBA). */
const PNG_COLOR_TYPE: Record<number, 0 | 2 | 4 | 6> = { 1: 0, 2: 4, 3: 2, 4: 6 };
/** The largest image accepted, in pixels (bounds the memory a PNG's header can ask for). */
export const MAX_IMAGE_PIXELS = 64 * 1024 * 1024;

export type DataFormats = 'CHW' | 'HWC' | 'HW';

export interface EncodedImage {
  height: number;
  width: number;
  /** Channels: 1 grayscale, 2 grayscale + alpha, 3 RGB, 4 RGBA. */
  colorspace: number;
  png: Uint8Array;
}

function checkSize(height: number, width: number, what: string): void {
  if (height < 1 || width < 1 || height * width > MAX_IMAGE_PIXELS)
    throw new RangeError(`${what}: ${width}x${height} pixels is outside 1 to ${MAX_IMAGE_PIXELS} pixels`);
}

/**
 * A tensor as a PNG. Layout by `dataformats` (PyTorch's add_image names): 'CHW' (default), 'HWC' or 'HW',
 * with 1, 3 or 4 channels. uint8 values are used as they are; floating-point values are taken as [0, 1],
 * scaled by 255, rounded and clipped to [0, 255] (NaN becomes 0).
 */
export function encodeTensorImage(img: Tensor, dataformats: DataFormats = 'CHW'): EncodedImage {
  if (!['CHW', 'HWC', 'HW'].includes(dataformats))
    throw new RangeError(`dataformats must be 'CHW', 'HWC' or 'HW', got ${String(dataformats)}`);
  const shape = img.shape;
  if (shape.length !== dataformats.length)
    throw new ShapeError(`an image with dataformats '${dataformats}' must have ${dataformats.length} dimensions, got shape [${shape}]`);
  const [c, h, w] =
    dataformats === 'HW'
      ? [1, shape[0], shape[1]]
      : dataformats === 'CHW'
        ? [shape[0], shape[1], shape[2]]
        : [shape[2], shape[0], shape[1]];
  if (![1, 3, 4].includes(c))
    throw new ShapeError(`an image must have 1, 3 or 4 channels, got ${c} (shape [${shape}], dataformats '${dataformats}')`);
  checkSize(h, w, 'image');
  const dt = img.dtype;
  const isFloat = dt === 'float32' || dt === 'float64' || dt === 'float16' || dt === 'bfloat16';
  if (dt !== 'uint8' && !isFloat) throw new DtypeError(`an image must be uint8 (0-255) or floating point (0-1), got ${dt}`);
  const src = img.toTypedArray() as ArrayLike<number>;
  // Interleave to height x width x channels, the PNG's layout.
  const px = Buffer.alloc(h * w * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < c; k++) {
        const v = src[dataformats === 'CHW' ? (k * h + y) * w + x : (y * w + x) * c + k];
        px[(y * w + x) * c + k] = isFloat ? (Number.isNaN(v) ? 0 : Math.min(255, Math.max(0, Math.round(v * 255)))) : v;
      }
    }
  }
  const colorType = PNG_COLOR_TYPE[c];
  const png = new PNG({ width: w, height: h, colorType, inputColorType: colorType, inputHasAlpha: c === 4 || c === 2, bitDepth: 8 });
  png.data = px;
  return {
    height: h,
    width: w,
    colorspace: c,
    png: PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: c === 4 || c === 2 }),
  };
}

/** The bytes of a PNG file, checked (its header first, then a full decode) and measured. `what` names it in errors. */
export function readPngImage(bytes: Uint8Array, what = 'image'): EncodedImage {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (b.length < 33 || !b.subarray(0, 8).equals(sig) || b.toString('latin1', 12, 16) !== 'IHDR')
    throw new BadFileError(`${what} is not a PNG file (no PNG signature and IHDR header)`);
  const width = b.readUInt32BE(16),
    height = b.readUInt32BE(20);
  checkSize(height, width, what);
  const colorType = b[25];
  const colorspace = ({ 0: 1, 2: 3, 3: 3, 4: 2, 6: 4 } as Record<number, number>)[colorType];
  if (colorspace === undefined) throw new BadFileError(`${what}: PNG color type ${colorType} is not a valid one`);
  try {
    PNG.sync.read(b);
  } catch (e) {
    throw new BadFileError(`${what} is not a readable PNG file: ${(e as Error).message}`, { cause: e });
  }
  return { height, width, colorspace: colorType === 3 ? 3 : colorspace, png: new Uint8Array(b) };
}
