// safetensors, read and write, dtype-exact. Reading is streamed: the header is parsed and validated
// first, then each tensor's bytes are read at their offset straight into the buffer that backs the new
// tensor (no second copy), so a file larger than memory-for-two still loads. Writing streams one tensor
// at a time through writeFileAtomic (temporary file, fsync, rename), so a crash mid-save never destroys
// the previous file.
//
// The header is validated as the format's specification and the reference (Rust) reader do: an 8-byte
// little-endian length N (at most 100 MB, and within the file), then N bytes of UTF-8 JSON: one object,
// no duplicate keys, optional "__metadata__" (an object of strings), every other key a tensor
// {dtype, shape, data_offsets}. The data offsets, sorted, must tile [0, data length) exactly: no gaps,
// no overlaps, no trailing bytes. Results are null-prototype records, so a tensor may be named
// '__proto__' (or 'constructor') and is kept like any other.
import fs from 'node:fs';
import { BadFileError } from '../core/errors.js';
import { native as N } from '../addon/binding.js';
import { DTYPE_SIZE, dtypeCode, type DType } from '../tensor/dtype.js';
import { Tensor, wrapT } from '../tensor/tensor.js';
import { writeFileAtomic } from '../core/fs.js';
import { JsonFloat, parseStrictJson, type JsonValue } from './json.js';

const ST_TO_DTYPE: Readonly<Record<string, DType>> = Object.assign(Object.create(null), {
  F32: 'float32',
  F64: 'float64',
  F16: 'float16',
  BF16: 'bfloat16',
  I32: 'int32',
  I64: 'int64',
  U8: 'uint8',
  I8: 'int8',
  I16: 'int16',
  BOOL: 'bool',
});
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;

/** The largest header accepted (as the Rust safetensors crate). */
export const MAX_SAFETENSORS_HEADER = 100_000_000;

export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}
export interface SafetensorsHeader {
  /** Null-prototype record of the "__metadata__" strings. */
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsEntry>;
  dataStart: number;
  fileSize: number;
}

function bad(file: string, what: string): BadFileError {
  return new BadFileError(`${file}: not a valid safetensors file: ${what}`, { path: file });
}

const isCount = (v: JsonValue | undefined): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const show = (v: JsonValue | undefined): string => {
  if (v instanceof JsonFloat) return String(v.value);
  if (v instanceof Map) return 'an object';
  if (typeof v === 'bigint') return String(v);
  const s =
    JSON.stringify(v, (_k, x: unknown) =>
      typeof x === 'bigint' ? Number(x) : x instanceof JsonFloat ? x.value : x instanceof Map ? Object.fromEntries(x) : x,
    ) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 60)}...` : s;
};

/**
 * Validates a parsed header. `dataLength` is the number of bytes after the header. Exported for tests
 * and for tools that check a header without a file.
 */
export function validateSafetensorsHeader(
  json: JsonValue,
  dataLength: number,
  file: string,
): { metadata: Record<string, string>; tensors: Map<string, SafetensorsEntry> } {
  if (!(json instanceof Map)) throw bad(file, `the header is ${show(json)}, not a JSON object`);
  const metadata: Record<string, string> = Object.create(null);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, v] of json) {
    const what = `tensor ${JSON.stringify(name)}`;
    if (name === '__metadata__') {
      if (v === null) continue;
      if (!(v instanceof Map)) throw bad(file, `"__metadata__" is ${show(v)}, not an object of strings`);
      for (const [k, s] of v) {
        if (typeof s !== 'string') throw bad(file, `metadata ${JSON.stringify(k)} is ${show(s)}, not a string`);
        metadata[k] = s;
      }
      continue;
    }
    if (!(v instanceof Map)) throw bad(file, `${what} is ${show(v)}, not an object`);
    const st = v.get('dtype');
    if (typeof st !== 'string') throw bad(file, `${what} has no dtype string`);
    const dtype = ST_TO_DTYPE[st];
    if (!dtype) throw bad(file, `${what} has unsupported dtype ${JSON.stringify(st)} (supported: ${Object.keys(ST_TO_DTYPE).join(', ')})`);
    const shape = v.get('shape');
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw bad(file, `${what} has an invalid shape ${show(shape)} (expected a list of non-negative integers)`);
    }
    let numel = 1;
    for (const s of shape as number[]) numel *= s;
    const nbytes = numel * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(nbytes)) throw bad(file, `${what} has a shape [${shape.join(', ')}] too large to address`);
    const offs = v.get('data_offsets');
    if (!Array.isArray(offs) || offs.length !== 2 || !isCount(offs[0]) || !isCount(offs[1])) {
      throw bad(file, `${what} has invalid data_offsets ${show(offs)} (expected [begin, end], non-negative integers)`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) throw bad(file, `${what} has data_offsets [${begin}, ${end}] that end before they begin`);
    if (end - begin !== nbytes) {
      throw bad(file, `${what} spans ${end - begin} bytes, its shape [${shape.join(', ')}] ${dtype} needs ${nbytes}`);
    }
    tensors.set(name, { dtype, shape: shape as number[], begin, end });
  }
  // The byte ranges, sorted, must tile the data exactly.
  const sorted = [...tensors].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let at = 0;
  let prev = '';
  for (const [name, e] of sorted) {
    if (e.begin < at)
      throw bad(
        file,
        `tensor ${JSON.stringify(name)} (bytes ${e.begin}..${e.end}) overlaps tensor ${JSON.stringify(prev)} (ending at ${at})`,
      );
    if (e.begin > at)
      throw bad(file, `${e.begin - at} bytes of data before tensor ${JSON.stringify(name)} (bytes ${at}..${e.begin}) belong to no tensor`);
    at = e.end;
    prev = name;
  }
  if (at !== dataLength) {
    throw bad(
      file,
      at < dataLength
        ? `${dataLength - at} bytes after the last tensor's data belong to no tensor (data is ${dataLength} bytes, tensors end at ${at})`
        : `the tensors need ${at} bytes of data but the file has ${dataLength} after the header (truncated?)`,
    );
  }
  return { metadata, tensors };
}

/** Parses and validates the header of an open file. */
function readHeader(fd: number, file: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) throw bad(file, `${fileSize} bytes is too short for the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readExactly(fd, lenBuf, 0, file, 'the header length');
  const hlen = lenBuf.readBigUInt64LE(0);
  if (hlen > BigInt(MAX_SAFETENSORS_HEADER)) throw bad(file, `header length ${hlen} exceeds the limit of ${MAX_SAFETENSORS_HEADER} bytes`);
  if (8n + hlen > BigInt(fileSize)) throw bad(file, `header length ${hlen} exceeds the file (${fileSize} bytes; truncated?)`);
  const hbuf = Buffer.alloc(Number(hlen));
  readExactly(fd, hbuf, 8, file, 'the header');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(hbuf);
  } catch {
    throw bad(file, 'the header is not valid UTF-8');
  }
  let json: JsonValue;
  try {
    json = parseStrictJson(text);
  } catch (e) {
    throw bad(file, `the header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + Number(hlen);
  const { metadata, tensors } = validateSafetensorsHeader(json, fileSize - dataStart, file);
  return { metadata, tensors, dataStart, fileSize };
}

function readExactly(fd: number, into: Uint8Array, pos: number, file: string, what: string): void {
  let got = 0;
  while (got < into.length) {
    const r = fs.readSync(fd, into, got, Math.min(into.length - got, 1 << 30), pos + got);
    if (r <= 0) throw bad(file, `unexpected end of file in ${what} (the file changed while it was read?)`);
    got += r;
  }
}

/** Parses and validates the header (offsets, sizes, dtypes) without reading tensor data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = fs.openSync(file, 'r');
  try {
    return readHeader(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Loads every tensor (or only `names`) from a safetensors file onto the CPU. `tensors` and `metadata`
 * are null-prototype records.
 */
export function loadSafetensors(
  file: string,
  opts: { names?: string[] } = {},
): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const fd = fs.openSync(file, 'r');
  const out: Record<string, Tensor> = Object.create(null);
  const want = opts.names ? new Set(opts.names) : null;
  try {
    const hdr = readHeader(fd, file);
    for (const [name, e] of hdr.tensors) {
      if (want && !want.has(name)) continue;
      const n = e.end - e.begin;
      const buf = new ArrayBuffer(Math.max(n, 1));
      readExactly(fd, new Uint8Array(buf, 0, n), hdr.dataStart + e.begin, file, `the data of tensor ${JSON.stringify(name)}`);
      // zero-copy: the tensor adopts `buf`
      out[name] = wrapT(N.fromBuffer(buf, 0, e.shape, dtypeCode(e.dtype), false));
    }
    return { tensors: out, metadata: hdr.metadata };
  } catch (err) {
    for (const t of Object.values(out)) t.dispose();
    throw err;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes tensors (moved to CPU) to `file` atomically (writeFileAtomic: temp file, fsync, rename).
 * Any tensor name is allowed except '__metadata__', which the format reserves.
 */
export function saveSafetensors(tensors: Record<string, Tensor>, file: string, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length) {
    const meta: Record<string, string> = Object.create(null);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new TypeError(`safetensors metadata '${k}' must be a string`);
      meta[k] = v;
    }
    header.__metadata__ = meta;
  }
  let off = 0;
  for (const name of names) {
    if (name === '__metadata__')
      throw new RangeError(`save: a tensor cannot be named '__metadata__' (the safetensors format reserves it for metadata)`);
    const t = tensors[name];
    if (!(t instanceof Tensor)) throw new TypeError(`save: '${name}' is not a Tensor`);
    const dt = t.dtype;
    if (!DTYPE_TO_ST[dt]) throw new TypeError(`save: tensor '${name}' has dtype ${dt}, which safetensors files here do not store`);
    const nbytes = t.numel() * DTYPE_SIZE[dt];
    header[name] = { dtype: DTYPE_TO_ST[dt], shape: t.shape, data_offsets: [off, off + nbytes] };
    off += nbytes;
  }
  let hjson = Buffer.from(JSON.stringify(header), 'utf8');
  const padLen = (8 - (hjson.length % 8)) % 8; // keep the data 8-byte aligned
  if (padLen) hjson = Buffer.concat([hjson, Buffer.alloc(padLen, 0x20)]);
  writeFileAtomic(file, (fd) => {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hjson.length));
    writeAll(fd, len);
    writeAll(fd, hjson);
    for (const name of names) writeAll(fd, new Uint8Array(N.toBuffer(tensors[name]._h)));
  });
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}
