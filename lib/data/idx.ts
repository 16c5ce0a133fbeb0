// IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//
// Layout: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
// dimension, then the data in row-major order, big-endian.
//
// Validated before use: the magic, the type code, the dimensions (their product must be addressable
// and the data must be exactly as long as they say, no more and no less) and, for label files, every
// label (a non-negative integer below the number of classes, at most MAX_IDX_CLASSES when the classes
// come from the labels themselves). Every bad-file failure is a BadFileError naming the file.
import buffer from 'node:buffer';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { BadFileError } from '../core/errors.js';
import type { DType, TypedArray } from '../tensor/dtype.js';
import { ImageDataset, makeImageDataset } from './dataset.js';

export interface IdxArray {
  dtype: DType;
  shape: number[];
  /** Row-major elements in native byte order. */
  data: TypedArray;
}

/** The most classes a label file may imply (labels 0 .. MAX_IDX_CLASSES-1) when no class names are given. */
export const MAX_IDX_CLASSES = 65536;

const IDX_TYPES: Record<number, { dtype: DType; size: number; name: string }> = {
  0x08: { dtype: 'uint8', size: 1, name: 'unsigned byte' },
  0x09: { dtype: 'int8', size: 1, name: 'signed byte' },
  0x0b: { dtype: 'int16', size: 2, name: 'short' },
  0x0c: { dtype: 'int32', size: 4, name: 'int' },
  0x0d: { dtype: 'float32', size: 4, name: 'float' },
  0x0e: { dtype: 'float64', size: 8, name: 'double' },
};

/** Read a file, gunzipping it when it starts with the gzip magic bytes 1f 8b (whatever its name). */
export function readMaybeGzip(file: string): Buffer {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      // deflate cannot expand by more than 1032:1, so a longer output is not valid gzip data: stop there.
      return zlib.gunzipSync(buf, { maxOutputLength: Math.min(buffer.constants.MAX_LENGTH, buf.length * 1032 + (1 << 20)) });
    } catch (e) {
      throw new BadFileError(`${file}: corrupt or truncated gzip data (${(e as Error).message})`, { cause: e, path: file });
    }
  }
  return buf;
}

/** Parse IDX bytes; `name` is used in error messages (and as the BadFileError's path when `isPath`). */
export function parseIdx(buf: Uint8Array, name = 'IDX data', isPath = false): IdxArray {
  const bad = (message: string): BadFileError => new BadFileError(message, isPath ? { path: name } : {});
  if (buf.length < 4) throw bad(`${name}: not an IDX file: ${buf.length} bytes, expected at least a 4-byte header`);
  if (buf[0] !== 0 || buf[1] !== 0) {
    const hex = Array.from(buf.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw bad(`${name}: not an IDX file: bad magic ${hex}, expected 00 00 <type> <ndims>`);
  }
  const type = IDX_TYPES[buf[2]];
  if (!type) {
    throw bad(`${name}: unknown IDX type code 0x${buf[2].toString(16).padStart(2, '0')}, expected one of 08 (ubyte), 09, 0b, 0c, 0d, 0e`);
  }
  const ndims = buf[3];
  const headerBytes = 4 + 4 * ndims;
  if (buf.length < headerBytes) {
    throw bad(`${name}: truncated header: ${ndims} dimensions need ${headerBytes} bytes, found ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const shape: number[] = [];
  for (let d = 0; d < ndims; d++) shape.push(view.getUint32(4 + 4 * d, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const need = count * type.size;
  const have = buf.length - headerBytes;
  if (!Number.isSafeInteger(need)) throw bad(`${name}: shape [${shape.join(', ')}] is too large for any file`);
  if (have < need) {
    throw bad(`${name}: truncated: expected ${need} bytes of data for shape [${shape.join(', ')}] (${type.name}), found ${have}`);
  }
  if (have > need) {
    throw bad(
      `${name}: ${have - need} unexpected bytes after the data for shape [${shape.join(', ')}] (${type.name}); the header does not match the file`,
    );
  }
  let data: TypedArray;
  if (type.size === 1) {
    const bytes = buf.subarray(headerBytes, headerBytes + need);
    data = type.dtype === 'uint8' ? bytes : new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  } else {
    // Multi-byte values are big-endian on disk: read them one by one into native order.
    const at = headerBytes;
    switch (type.dtype) {
      case 'int16': {
        const a = new Int16Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getInt16(at + 2 * i, false);
        data = a;
        break;
      }
      case 'int32': {
        const a = new Int32Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getInt32(at + 4 * i, false);
        data = a;
        break;
      }
      case 'float32': {
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getFloat32(at + 4 * i, false);
        data = a;
        break;
      }
      default: {
        const a = new Float64Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getFloat64(at + 8 * i, false);
        data = a;
      }
    }
  }
  return { dtype: type.dtype, shape, data };
}

/** Read an IDX file, raw or gzip (detected from the content, not the name). */
export function readIdx(file: string): IdxArray {
  return parseIdx(readMaybeGzip(file), file, true);
}

/**
 * Load an image IDX file ([N, H, W] unsigned bytes) and its label file ([N]) as an ImageDataset
 * of shape [N, 1, H, W]. Class names default to '0', '1', ... up to the largest label.
 */
export function loadIdxImages(imagesFile: string, labelsFile: string, opts: { classes?: string[]; name?: string } = {}): ImageDataset {
  const img = readIdx(imagesFile);
  if (img.dtype !== 'uint8' || img.shape.length !== 3) {
    throw new BadFileError(
      `${imagesFile}: expected images as unsigned bytes of shape [N, H, W], found ${img.dtype} [${img.shape.join(', ')}]`,
      { path: imagesFile },
    );
  }
  const lab = readIdx(labelsFile);
  if (lab.shape.length !== 1 || (lab.dtype !== 'uint8' && lab.dtype !== 'int8' && lab.dtype !== 'int16' && lab.dtype !== 'int32')) {
    throw new BadFileError(`${labelsFile}: expected labels as integers of shape [N], found ${lab.dtype} [${lab.shape.join(', ')}]`, {
      path: labelsFile,
    });
  }
  const [n, h, w] = img.shape;
  if (lab.shape[0] !== n) {
    throw new BadFileError(`${labelsFile} has ${lab.shape[0]} labels but ${imagesFile} has ${n} images`, { path: labelsFile });
  }
  // Labels are checked before anything is sized by them: the class count comes from the largest.
  const limit = opts.classes ? opts.classes.length : MAX_IDX_CLASSES;
  let maxLabel = -1;
  for (let i = 0; i < n; i++) {
    const v = lab.data[i] as number;
    if (v < 0) throw new BadFileError(`${labelsFile}: label ${i} is negative (${v})`, { path: labelsFile });
    if (v >= limit) {
      throw new BadFileError(
        opts.classes
          ? `${labelsFile}: label ${i} is ${v}, out of range for ${limit} classes`
          : `${labelsFile}: label ${i} is ${v}; labels must be below ${MAX_IDX_CLASSES} (at most ${MAX_IDX_CLASSES} classes)`,
        { path: labelsFile },
      );
    }
    if (v > maxLabel) maxLabel = v;
  }
  const classes = opts.classes ?? Array.from({ length: maxLabel + 1 }, (_, i) => String(i));
  return makeImageDataset(img.data as Uint8Array, [n, 1, h, w], lab.data as ArrayLike<number>, classes, opts.name ?? imagesFile);
}
