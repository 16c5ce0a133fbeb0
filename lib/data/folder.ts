// A folder of images per class: root/<class>/<image>.png|.jpg|.jpeg.
//
// Decoding is native (libjpeg-turbo and libpng, native/image/codec.cpp: the same decoder the streaming
// loaders use). It gives 8-bit RGBA, whatever the file's own colour type or bit depth (16-bit PNGs are
// scaled to 8 bits with rounding); alpha is dropped (not composited), and grayscale output uses the
// ITU-R 601-2 luma weights (0.299 R + 0.587 G + 0.114 B), as PIL's "L" conversion does.
// This reader holds the whole dataset in memory (small images); for large datasets use the streamed
// readers in stream.ts (--data imagefolder / webdataset).
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import { native as N } from '../addon/binding.js';
import { Tensor } from '../tensor/tensor.js';
import { ImageDataset, makeImageDataset } from './dataset.js';

export interface ImageFolderOptions {
  /** Output channels: 1 (grayscale) or 3 (RGB). Default 3. */
  channels?: 1 | 3;
  /**
   * Resize every image to [height, width] (bilinear, pixel centres aligned as in PyTorch's
   * interpolate(mode='bilinear', align_corners=False), no antialiasing). Without it, all images
   * must have the same size.
   */
  size?: [number, number];
  name?: string;
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);

/**
 * The most pixels an image file may declare (100 megapixels): checked from the header before
 * decoding, so a small file cannot make the decoder allocate gigabytes.
 */
export const MAX_IMAGE_PIXELS = 100_000_000;

export interface DecodedImage {
  width: number;
  height: number;
  /** RGBA, 4 bytes per pixel, row-major. */
  rgba: Uint8Array;
}

/** Decode a PNG or JPEG file (chosen by its content: PNG and JPEG signatures) to RGBA, natively. */
export function decodeImage(file: string): DecodedImage {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read image ${file}: ${(e as Error).message}`, { cause: e });
  }
  const isPng = buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47 && buf.readUInt32BE(4) === 0x0d0a1a0a;
  let t: Tensor;
  try {
    if (isPng) {
      // IHDR is the first chunk: width and height are the big-endian uint32s at bytes 16 and 20.
      if (buf.length < 24 || buf.toString('latin1', 12, 16) !== 'IHDR') throw new Error('no IHDR chunk where the PNG header must be');
      const w = buf.readUInt32BE(16);
      const h = buf.readUInt32BE(20);
      if (w === 0 || h === 0 || w * h > MAX_IMAGE_PIXELS)
        throw new Error(`the image declares ${w}x${h} pixels (at most ${MAX_IMAGE_PIXELS} and at least 1 are allowed)`);
    }
    // libjpeg-turbo checks the JPEG's declared size against maxPixels before decoding any pixel
    t = new Tensor(N.imageDecode(buf, 4, { maxPixels: MAX_IMAGE_PIXELS }));
  } catch (e) {
    const msg = (e as Error).message.replace(/^imageDecode: /, '');
    throw new BadFileError(`${file}: ${isPng && !msg.startsWith('cannot decode') ? `cannot decode PNG image: ${msg}` : msg}`, {
      cause: e,
      path: file,
    });
  }
  try {
    const [height, width] = t.shape;
    return { width, height, rgba: t.toTypedArray() as Uint8Array };
  } finally {
    t.dispose();
  }
}

/** Bilinear resize of RGBA pixels, sampling at pixel centres (align_corners=False). */
export function resizeBilinear(src: DecodedImage, height: number, width: number): DecodedImage {
  if (src.width === width && src.height === height) return src;
  const out = new Uint8Array(width * height * 4);
  const sy = src.height / height;
  const sx = src.width / width;
  for (let y = 0; y < height; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(Math.floor(fy), src.height - 1);
    const y1 = Math.min(y0 + 1, src.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.max(0, (x + 0.5) * sx - 0.5);
      const x0 = Math.min(Math.floor(fx), src.width - 1);
      const x1 = Math.min(x0 + 1, src.width - 1);
      const wx = fx - x0;
      for (let c = 0; c < 4; c++) {
        const p = (yy: number, xx: number) => src.rgba[(yy * src.width + xx) * 4 + c];
        const top = p(y0, x0) * (1 - wx) + p(y0, x1) * wx;
        const bot = p(y1, x0) * (1 - wx) + p(y1, x1) * wx;
        out[(y * width + x) * 4 + c] = Math.round(top * (1 - wy) + bot * wy);
      }
    }
  }
  return { width, height, rgba: out };
}

function isRegular(dir: string, e: fs.Dirent): boolean {
  if (e.isFile()) return true;
  if (!e.isSymbolicLink()) return false;
  try {
    return fs.statSync(path.join(dir, e.name)).isFile();
  } catch {
    return false;
  }
}

/**
 * List classes (sorted sub-folder names) and their image files (sorted) under root. With `known`
 * (e.g. the training split's classes), labels are indices into it, matched by folder NAME, and the
 * classes returned are `known`; a class of `known` without a folder here is fine, a folder not in
 * `known` is an error.
 */
export function listImageFolder(root: string, known?: readonly string[]): { classes: string[]; files: { file: string; label: number }[] } {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch (e) {
    throw new Error(`image folder ${root}: ${(e as Error).message}`);
  }
  const classes = entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
  if (classes.length === 0) throw new Error(`image folder ${root}: no class sub-folders found (expected ${root}/<class>/<image>.png|jpg)`);
  const files: { file: string; label: number }[] = [];
  let index = (_cls: string, i: number): number => i;
  if (known) {
    const at = new Map(known.map((c, i) => [c, i]));
    const unknown = classes.filter((c) => !at.has(c));
    if (unknown.length)
      throw new Error(
        `image folder ${root}: class folder(s) ${unknown.map((c) => `'${c}'`).join(', ')} not among the ${known.length} training classes (class indices must agree across splits)`,
      );
    index = (cls) => at.get(cls)!;
  }
  classes.forEach((cls, i) => {
    const label = index(cls, i);
    const dir = path.join(root, cls);
    // Other files (e.g. notes, .DS_Store) are skipped; only the image extensions are read.
    // regular files only: a FIFO named x.jpg would block the reader
    const images = fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => !e.name.startsWith('.') && IMAGE_EXT.has(path.extname(e.name).toLowerCase()) && isRegular(dir, e))
      .map((e) => e.name)
      .sort();
    if (images.length === 0) throw new Error(`image folder ${root}: class '${cls}' has no .png, .jpg or .jpeg files`);
    for (const f of images) files.push({ file: path.join(dir, f), label });
  });
  return { classes: known ? [...known] : classes, files };
}

/** Load root/<class>/<image> into an [N, C, H, W] uint8 dataset; classes are the sorted folder names. */
export function loadImageFolder(root: string, opts: ImageFolderOptions = {}): ImageDataset {
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new Error(`loadImageFolder: channels must be 1 or 3, got ${String(channels)}`);
  if (opts.size) {
    const [h, w] = opts.size;
    if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0)) {
      throw new Error(`loadImageFolder: size must be [height, width] positive integers, got [${opts.size.join(', ')}]`);
    }
  }
  const { classes, files } = listImageFolder(root);
  let h = opts.size?.[0] ?? 0;
  let w = opts.size?.[1] ?? 0;
  let pixels: Uint8Array | null = null;
  const plane = () => h * w;
  const labels = files.map((f) => f.label);
  let firstFile = '';
  files.forEach(({ file }, i) => {
    let img = decodeImage(file);
    if (!pixels) {
      // The first image fixes the size when none is given.
      if (!opts.size) {
        h = img.height;
        w = img.width;
        firstFile = file;
      }
      pixels = new Uint8Array(files.length * channels * h * w);
    }
    if (opts.size) img = resizeBilinear(img, h, w);
    else if (img.width !== w || img.height !== h) {
      throw new BadFileError(
        `${file}: image is ${img.width}x${img.height} but ${firstFile} is ${w}x${h}; pass size: [height, width] to resize all images`,
        { path: file },
      );
    }
    const base = i * channels * plane();
    const px = img.rgba;
    const n = plane();
    for (let p = 0; p < n; p++) {
      const r = px[4 * p];
      const g = px[4 * p + 1];
      const b = px[4 * p + 2];
      if (channels === 1) pixels[base + p] = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
      else {
        pixels[base + p] = r;
        pixels[base + n + p] = g;
        pixels[base + 2 * n + p] = b;
      }
    }
  });
  return makeImageDataset(pixels as unknown as Uint8Array, [files.length, channels, h, w], labels, classes, opts.name ?? root);
}
