// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data
// The CRC32C itself comes from the `crc-32` package (its crc32c module). The framing around it is a few
// lines of byte layout: the only npm TFRecord package (@roboflow/tfrecords) is unmaintained and brings
// crypto-js 3 and an old google-protobuf for tf.Example records, so it does not fit.
import crc32c from 'crc-32/crc32c.js';

const MASK_DELTA = 0xa282ead8;
/** Bytes of framing around each record's data: length (8), its CRC (4), the data's CRC (4). */
export const RECORD_OVERHEAD = 16;
/** The largest record residual reads back (a PNG of a large report is a few MiB; 1 GiB bounds a bad length). */
export const MAX_RECORD_BYTES = 1 << 30;

/** TFRecord's masked CRC32C: the CRC rotated right by 15 bits plus a constant (so CRCs of CRCs stay distinct). */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c.buf(data, 0) >>> 0;
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + MASK_DELTA) >>> 0;
}

/** One record, framed, as a single buffer (written with one write call). */
export function frameRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(data.length + RECORD_OVERHEAD);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

export interface ReadRecordsResult {
  /** The data of each complete, intact record, in order. */
  records: Buffer[];
  /** Bytes from the start that hold those records (a rewrite keeps exactly these). */
  validBytes: number;
  /** What stopped the read before the end, if anything: a cut-off last record (a crash while writing it) or a bad CRC or length. */
  stop?: { kind: 'torn' | 'corrupt'; offset: number; reason: string };
}

/**
 * Splits a TFRecord file's bytes into records. Reading stops at the first record that is cut off by the
 * end of the file ('torn': what a crash in the middle of a write leaves) or whose length or CRCs are
 * wrong ('corrupt'); the records before it are returned. Never throws on bad bytes.
 */
export function readRecords(buf: Uint8Array): ReadRecordsResult {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const records: Buffer[] = [];
  let off = 0;
  while (off < b.length) {
    if (b.length - off < 12)
      return {
        records,
        validBytes: off,
        stop: { kind: 'torn', offset: off, reason: `${b.length - off} bytes left, less than a record header` },
      };
    const len = b.readBigUInt64LE(off);
    if (b.readUInt32LE(off + 8) !== maskedCrc32c(b.subarray(off, off + 8)))
      return { records, validBytes: off, stop: { kind: 'corrupt', offset: off, reason: 'the length field fails its CRC' } };
    if (len > BigInt(MAX_RECORD_BYTES))
      return {
        records,
        validBytes: off,
        stop: { kind: 'corrupt', offset: off, reason: `record length ${len} is over the limit of ${MAX_RECORD_BYTES} bytes` },
      };
    const n = Number(len);
    if (b.length - off < RECORD_OVERHEAD + n)
      return {
        records,
        validBytes: off,
        stop: { kind: 'torn', offset: off, reason: `the record of ${n} bytes is cut off by the end of the file` },
      };
    const data = b.subarray(off + 12, off + 12 + n);
    if (b.readUInt32LE(off + 12 + n) !== maskedCrc32c(data))
      return { records, validBytes: off, stop: { kind: 'corrupt', offset: off, reason: 'the record data fails its CRC' } };
    records.push(data);
    off += RECORD_OVERHEAD + n;
  }
  return { records, validBytes: off };
}
