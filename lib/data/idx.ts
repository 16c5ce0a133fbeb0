// IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//
// Layout: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
// dimension, then the data in row-major order, big-endian.
import fs from 'node:fs';
import zlib from 'node:zlib';
import type { DType, TypedArray } from '../tensor/dtype.js';
import { ImageDataset, makeImageDataset } from './dataset.js';

export interface IdxArray {
  dtype: DType;
  shape: number[];
  /** Row-major elements in native byte order. */
  data: TypedArray;
}

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
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      return zlib.gunzipSync(buf);
    } catch (e) {
      throw new Error(`${file}: corrupt or truncated gzip data (${(e as Error).message})`);
    }
  }
  return buf;
}

/** Parse IDX bytes; `name` is used in error messages. */
export function parseIdx(buf: Uint8Array, name = 'IDX data'): IdxArray {
  if (buf.length < 4) throw new Error(`${name}: not an IDX file: ${buf.length} bytes, expected at least a 4-byte header`);
  if (buf[0] !== 0 || buf[1] !== 0) {
    const hex = Array.from(buf.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new Error(`${name}: not an IDX file: bad magic ${hex}, expected 00 00 <type> <ndims>`);
  }
  const type = IDX_TYPES[buf[2]];
  if (!type) {
    throw new Error(`${name}: unknown IDX type code 0x${buf[2].toString(16).padStart(2, '0')}, expected one of 08 (ubyte), 09, 0b, 0c, 0d, 0e`);
  }
  const ndims = buf[3];
  const headerBytes = 4 + 4 * ndims;
  if (buf.length < headerBytes) {
    throw new Error(`${name}: truncated header: ${ndims} dimensions need ${headerBytes} bytes, found ${buf.length}`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const shape: number[] = [];
  for (let d = 0; d < ndims; d++) shape.push(view.getUint32(4 + 4 * d, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const need = count * type.size;
  const have = buf.length - headerBytes;
  if (have < need) {
    throw new Error(`${name}: truncated: expected ${need} bytes of data for shape [${shape.join(', ')}] (${type.name}), found ${have}`);
  }
  if (have > need) {
    throw new Error(`${name}: ${have - need} unexpected bytes after the data for shape [${shape.join(', ')}] (${type.name}); the header does not match the file`);
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
  return parseIdx(readMaybeGzip(file), file);
}

/**
 * Load an image IDX file ([N, H, W] unsigned bytes) and its label file ([N]) as an ImageDataset
 * of shape [N, 1, H, W]. Class names default to '0', '1', ... up to the largest label.
 */
export function loadIdxImages(imagesFile: string, labelsFile: string, opts: { classes?: string[]; name?: string } = {}): ImageDataset {
  const img = readIdx(imagesFile);
  if (img.dtype !== 'uint8' || img.shape.length !== 3) {
    throw new Error(`${imagesFile}: expected images as unsigned bytes of shape [N, H, W], found ${img.dtype} [${img.shape.join(', ')}]`);
  }
  const lab = readIdx(labelsFile);
  if (lab.shape.length !== 1 || (lab.dtype !== 'uint8' && lab.dtype !== 'int8' && lab.dtype !== 'int16' && lab.dtype !== 'int32')) {
    throw new Error(`${labelsFile}: expected labels as integers of shape [N], found ${lab.dtype} [${lab.shape.join(', ')}]`);
  }
  const [n, h, w] = img.shape;
  if (lab.shape[0] !== n) {
    throw new Error(`${labelsFile} has ${lab.shape[0]} labels but ${imagesFile} has ${n} images`);
  }
  let maxLabel = -1;
  for (let i = 0; i < n; i++) {
    const v = lab.data[i] as number;
    if (v < 0) throw new Error(`${labelsFile}: label ${i} is negative (${v})`);
    if (v > maxLabel) maxLabel = v;
  }
  const classes = opts.classes ?? Array.from({ length: maxLabel + 1 }, (_, i) => String(i));
  if (maxLabel >= classes.length) {
    throw new Error(`${labelsFile}: label ${maxLabel} is out of range for ${classes.length} classes`);
  }
  return makeImageDataset(img.data as Uint8Array, [n, 1, h, w], lab.data as ArrayLike<number>, classes, opts.name ?? imagesFile);
}
