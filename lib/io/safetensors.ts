// safetensors, read and write, dtype-exact. Reading is streamed: the header is parsed first, then each
// tensor's bytes are read at their offset straight into the buffer that backs the new tensor (no
// second copy), so a file larger than memory-for-two still loads. Writing streams one tensor at a
// time into a temporary file that is fsynced and renamed over the target, so a crash mid-save never
// destroys the previous file.
import fs from 'node:fs';
import path from 'node:path';
import { native as N } from '../native.js';
import { DTYPE_SIZE, dtypeCode, type DType } from '../tensor/dtype.js';
import { Tensor, wrapT } from '../tensor/tensor.js';

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'float32', F64: 'float64', F16: 'float16', BF16: 'bfloat16', I32: 'int32', I64: 'int64', U8: 'uint8', I8: 'int8', I16: 'int16', BOOL: 'bool',
};
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;

export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}
export interface SafetensorsHeader {
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsEntry>;
  dataStart: number;
  fileSize: number;
}

function bad(file: string, what: string): Error {
  return new Error(`${file}: not a valid safetensors file: ${what}`);
}

/** Parses and validates the header (offsets, sizes, dtypes) without reading tensor data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = fs.openSync(file, 'r');
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) throw bad(file, `${fileSize} bytes is too short for the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const hlen = Number(lenBuf.readBigUInt64LE(0));
    if (hlen > 100 * 1024 * 1024 || 8 + hlen > fileSize) throw bad(file, `header length ${hlen} exceeds the file (${fileSize} bytes)`);
    const hbuf = Buffer.alloc(hlen);
    fs.readSync(fd, hbuf, 0, hlen, 8);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(hbuf.toString('utf8'));
    } catch (e) {
      throw bad(file, `header is not JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + hlen;
    const tensors = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, v] of Object.entries(json)) {
      if (name === '__metadata__') {
        metadata = (v ?? {}) as Record<string, string>;
        continue;
      }
      const e = v as { dtype?: string; shape?: number[]; data_offsets?: number[] };
      const dtype = ST_TO_DTYPE[e?.dtype ?? ''];
      if (!dtype) throw bad(file, `tensor '${name}' has unsupported dtype ${JSON.stringify(e?.dtype)}`);
      if (!Array.isArray(e.shape) || e.shape.some((s) => !Number.isInteger(s) || s < 0)) throw bad(file, `tensor '${name}' has an invalid shape`);
      if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) throw bad(file, `tensor '${name}' has no data_offsets`);
      const [begin, end] = e.data_offsets;
      const numel = e.shape.reduce((a, b) => a * b, 1);
      if (end - begin !== numel * DTYPE_SIZE[dtype]) throw bad(file, `tensor '${name}' spans ${end - begin} bytes, its shape [${e.shape}] ${dtype} needs ${numel * DTYPE_SIZE[dtype]}`);
      if (begin < 0 || dataStart + end > fileSize) throw bad(file, `tensor '${name}' extends past the end of the file (truncated?)`);
      tensors.set(name, { dtype, shape: e.shape, begin, end });
    }
    return { metadata, tensors, dataStart, fileSize };
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads every tensor (or only `names`) from a safetensors file onto the CPU. */
export function loadSafetensors(file: string, opts: { names?: string[] } = {}): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const hdr = readSafetensorsHeader(file);
  const fd = fs.openSync(file, 'r');
  const out: Record<string, Tensor> = {};
  try {
    for (const [name, e] of hdr.tensors) {
      if (opts.names && !opts.names.includes(name)) continue;
      const n = e.end - e.begin;
      const buf = new ArrayBuffer(Math.max(n, 1));
      const view = new Uint8Array(buf, 0, n);
      let got = 0;
      while (got < n) {
        const r = fs.readSync(fd, view, got, Math.min(n - got, 1 << 30), hdr.dataStart + e.begin + got);
        if (r <= 0) throw bad(file, `unexpected end of data in tensor '${name}'`);
        got += r;
      }
      // zero-copy: the tensor adopts `buf`
      out[name] = wrapT(N.fromBuffer(buf, 0, e.shape, dtypeCode(e.dtype), false));
    }
  } catch (err) {
    for (const t of Object.values(out)) t.dispose();
    throw err;
  } finally {
    fs.closeSync(fd);
  }
  return { tensors: out, metadata: hdr.metadata };
}

/** Writes tensors (moved to CPU) to `file` atomically: temp file, fsync, rename. */
export function saveSafetensors(tensors: Record<string, Tensor>, file: string, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new TypeError(`safetensors metadata '${k}' must be a string`);
    header.__metadata__ = metadata;
  }
  let off = 0;
  for (const name of names) {
    const t = tensors[name];
    if (!(t instanceof Tensor)) throw new TypeError(`save: '${name}' is not a Tensor`);
    const dt = t.dtype;
    const nbytes = t.numel() * DTYPE_SIZE[dt];
    header[name] = { dtype: DTYPE_TO_ST[dt], shape: t.shape, data_offsets: [off, off + nbytes] };
    off += nbytes;
  }
  let hjson = Buffer.from(JSON.stringify(header), 'utf8');
  const padLen = (8 - (hjson.length % 8)) % 8; // keep the data 8-byte aligned
  if (padLen) hjson = Buffer.concat([hjson, Buffer.alloc(padLen, 0x20)]);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hjson.length));
    fs.writeSync(fd, len);
    fs.writeSync(fd, hjson);
    for (const name of names) {
      const bytes = new Uint8Array(N.toBuffer(tensors[name]._h));
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
    try {
      const dfd = fs.openSync(path.dirname(path.resolve(file)), 'r');
      fs.fsyncSync(dfd);
      fs.closeSync(dfd);
    } catch {
      /* directory fsync is best effort */
    }
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
