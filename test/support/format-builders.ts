// Builders for small files in every format residual reads (used by the file-format, property and
// fuzz tests): pickles of torch-style structures, STORED zip archives (torch.save layout), safetensors,
// IDX and CIFAR. Written from the formats' descriptions; no file here comes from a reader under test.
import zlib from 'node:zlib';

/** A tensor to pickle as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...). */
export interface PTensor {
  $tensor: {
    storage: string;
    dtype?: 'FloatStorage' | 'LongStorage' | 'ByteStorage' | 'HalfStorage';
    numel: number;
    offset?: number;
    size: number[];
    stride?: number[];
  };
}
/** A Python tuple. */
export interface PTuple {
  $tuple: PValue[];
}
export type PValue =
  null | boolean | number | bigint | string | Uint8Array | PValue[] | Map<PValue, PValue> | Set<number> | PTensor | PTuple;

const enc = new TextEncoder();

/**
 * Pickles `v` with protocol 2 opcodes. Objects reached twice (the same JS Array / Map / tensor object)
 * are memoised (BINPUT / BINGET), as pickle shares them, so shared structures stay small.
 */
export function pickle(v: PValue): Uint8Array {
  const out: number[] = [0x80, 2];
  const memo = new Map<object, number>();
  const u32 = (n: number): number[] => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];
  const put = (o: object): void => {
    const id = memo.size;
    memo.set(o, id);
    out.push(0x72, ...u32(id)); // LONG_BINPUT
  };
  const str = (s: string): void => {
    const b = enc.encode(s);
    out.push(0x58, ...u32(b.length));
    for (const x of b) out.push(x);
  };
  const global = (m: string, n: string): void => {
    out.push(0x63);
    for (const x of enc.encode(`${m}\n${n}\n`)) out.push(x);
  };
  const int = (n: number | bigint): void => {
    if (typeof n === 'number' && Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31) {
      out.push(0x4a, ...u32(n >>> 0));
      return;
    }
    let b = BigInt(n);
    const bytes: number[] = [];
    // little-endian two's complement, minimal length
    for (;;) {
      const byte = Number(b & 255n);
      bytes.push(byte);
      b >>= 8n;
      if ((b === 0n && !(byte & 0x80)) || (b === -1n && byte & 0x80)) break;
    }
    out.push(0x8a, bytes.length, ...bytes); // LONG1
  };
  const w = (x: PValue): void => {
    if (x !== null && typeof x === 'object' && memo.has(x)) {
      out.push(0x6a, ...u32(memo.get(x)!)); // LONG_BINGET
      return;
    }
    if (x === null) out.push(0x4e);
    else if (x === true) out.push(0x88);
    else if (x === false) out.push(0x89);
    else if (typeof x === 'number' && !Number.isInteger(x)) {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(x);
      out.push(0x47, ...b);
    } else if (typeof x === 'number' || typeof x === 'bigint') int(x);
    else if (typeof x === 'string') str(x);
    else if (x instanceof Uint8Array) {
      out.push(0x42, ...u32(x.length), ...x);
    } else if (Array.isArray(x)) {
      out.push(0x5d); // EMPTY_LIST
      put(x);
      if (x.length) {
        out.push(0x28);
        for (const y of x) w(y);
        out.push(0x65); // APPENDS
      }
    } else if (x instanceof Map) {
      out.push(0x7d); // EMPTY_DICT
      put(x);
      if (x.size) {
        out.push(0x28);
        for (const [k, y] of x) {
          w(k);
          w(y);
        }
        out.push(0x75); // SETITEMS
      }
    } else if (x instanceof Set) {
      global('builtins', 'set');
      out.push(0x5d, 0x28);
      for (const y of x) w(y);
      out.push(0x65, 0x85, 0x52); // APPENDS TUPLE1 REDUCE
    } else if ('$tuple' in x) {
      out.push(0x28);
      for (const y of x.$tuple) w(y);
      out.push(0x74);
    } else {
      const t = x.$tensor;
      global('torch._utils', '_rebuild_tensor_v2');
      out.push(0x28); // MARK (argument tuple)
      out.push(0x28); // persistent id tuple
      str('storage');
      global('torch', t.dtype ?? 'FloatStorage');
      str(t.storage);
      str('cpu');
      int(t.numel);
      out.push(0x74, 0x51); // TUPLE BINPERSID
      int(t.offset ?? 0);
      w({ $tuple: t.size });
      w({ $tuple: t.stride ?? contiguousStride(t.size) });
      out.push(0x89, 0x7d, 0x74, 0x52); // False {} TUPLE REDUCE
      put(x);
    }
  };
  w(v);
  out.push(0x2e);
  return Uint8Array.from(out);
}

export function contiguousStride(size: number[]): number[] {
  const s = new Array<number>(size.length);
  let acc = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= size[d];
  }
  return s;
}

/** A zip archive of STORED (or, with `deflate`, DEFLATE) entries, as torch.save writes (no zip64). */
export function zipBytes(entries: [string, Uint8Array][], opts: { deflate?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [n, data] of entries) {
    const nb = Buffer.from(n);
    const crc = zlib.crc32(data) >>> 0;
    const packed = opts.deflate ? zlib.deflateRawSync(data) : Buffer.from(data);
    const method = opts.deflate ? 8 : 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nb.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(method, 10);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(packed.length, 20);
    c.writeUInt32LE(data.length, 24);
    c.writeUInt16LE(nb.length, 28);
    c.writeUInt32LE(offset, 42);
    central.push(c, nb);
    parts.push(local, nb, packed);
    offset += 30 + nb.length + packed.length;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, cd, eocd]);
}

/** A torch.save-style archive: `<root>/data.pkl` plus `<root>/data/<key>` per storage. */
export function torchArchive(value: PValue, storages: Record<string, Uint8Array>, root = 'archive'): Buffer {
  return zipBytes([
    [`${root}/data.pkl`, pickle(value)],
    ...Object.entries(storages).map(([k, b]): [string, Uint8Array] => [`${root}/data/${k}`, b]),
  ]);
}

export function f32(...v: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(v).buffer);
}

/** A safetensors file from a header object (as JSON text, or a value to stringify) and the data bytes. */
export function safetensorsBytes(header: string | object, data: Uint8Array = new Uint8Array(0)): Buffer {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

/** IDX bytes: 00 00 <type> <ndims>, big-endian dims, then the payload as given. */
export function idxBytes(type: number, shape: number[], payload: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * shape.length);
  head[2] = type;
  head[3] = shape.length;
  shape.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, payload]);
}

/** CIFAR binary records: label bytes then 3072 pixels, pixel p of record i = (i * 7 + p) & 255. */
export function cifarBytes(labels: number[][]): Buffer {
  const rec = labels[0].length + 3072;
  const b = Buffer.alloc(labels.length * rec);
  labels.forEach((ls, i) => {
    ls.forEach((l, k) => (b[i * rec + k] = l));
    for (let p = 0; p < 3072; p++) b[i * rec + ls.length + p] = (i * 7 + p) & 255;
  });
  return b;
}
