// A minimal read-only zip reader: enough for torch.save archives (STORED entries, zip64 when large) and
// ordinary DEFLATE archives. Only the central directory is read up front; entry data is read on demand
// by name, so a checkpoint's tensors are read one storage at a time.
//
// Everything is validated against the file before use, so the work and memory an archive can demand
// is bounded by its size: the entry count by the directory's size (46 bytes at least per entry), every
// entry's data must lie inside the file, before the central directory, and not overlap the next entry;
// names are unique; a DEFLATE entry may not claim to inflate beyond deflate's own maximum ratio
// (1032:1) and is never inflated past its declared size; every entry's CRC-32 is checked.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { BadFileError } from '../core/errors.js';

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
const CENTRAL_SIZE = 46;
const LOCAL_SIZE = 30;
/** deflate cannot expand data by more than about 1032:1; a larger claim is corrupt (or a bomb). */
const MAX_DEFLATE_RATIO = 1032;

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the entry's local header in the file. */
  localHeaderOffset: number;
  flags: number;
  /** Where the next entry (or the central directory) starts: this entry's data must end by then. */
  limit: number;
}

export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  private fd: number;
  private readonly fileSize: number;

  /** Opens `file` and reads its central directory; call close() when done. */
  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'r');
    try {
      this.fileSize = fs.fstatSync(this.fd).size;
      this.readCentralDirectory();
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The uncompressed bytes of one entry, in a fresh (unshared, aligned) buffer. */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (!e) throw new BadFileError(`${this.file}: the zip archive has no entry '${name}'`, { path: this.file });
    if (e.flags & 1) throw new BadFileError(`${this.file}: zip entry '${name}' is encrypted`, { path: this.file });
    const local = this.readAt(e.localHeaderOffset, 30, `the local header of '${name}'`);
    const dv = view(local);
    if (dv.getUint32(0, true) !== SIG_LOCAL) throw this.corrupt(`the local header of '${name}' has a bad signature`);
    // The local header's name/extra lengths may differ from the central directory's (torch pads the
    // local extra field so tensor data is aligned), so the data offset comes from the local header.
    const dataStart = e.localHeaderOffset + LOCAL_SIZE + dv.getUint16(26, true) + dv.getUint16(28, true);
    if (dataStart + e.compressedSize > e.limit) {
      throw this.corrupt(
        `the data of '${name}' (bytes ${dataStart}..${dataStart + e.compressedSize}) overlaps what follows it at byte ${e.limit}`,
      );
    }
    let out: Uint8Array;
    if (e.method === 0) {
      if (e.compressedSize !== e.size)
        throw this.corrupt(`stored entry '${name}' has compressed size ${e.compressedSize} != size ${e.size}`);
      out = this.readAt(dataStart, e.size, `the data of '${name}'`);
    } else if (e.method === 8) {
      const packed = this.readAt(dataStart, e.compressedSize, `the data of '${name}'`);
      let raw: Buffer;
      try {
        // Never inflate past the declared size (+1 byte to notice a longer stream).
        raw = zlib.inflateRawSync(packed, { maxOutputLength: Math.max(1, e.size + 1) });
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE')
          throw this.corrupt(`entry '${name}' inflates to more than the ${e.size} bytes the directory says`);
        throw this.corrupt(`entry '${name}' does not inflate (${(err as Error).message})`);
      }
      if (raw.length !== e.size) throw this.corrupt(`entry '${name}' inflates to ${raw.length} bytes, the directory says ${e.size}`);
      // Copy into a buffer of our own: Node may hand back a view into a larger or shared allocation.
      out = new Uint8Array(raw.length);
      out.set(raw);
    } else {
      throw new BadFileError(
        `${this.file}: zip entry '${name}' uses compression method ${e.method} (only STORED and DEFLATE are supported)`,
        { path: this.file },
      );
    }
    if (zlib.crc32(out) >>> 0 !== e.crc32) throw this.corrupt(`entry '${name}' fails its CRC-32 check`);
    return out;
  }

  private corrupt(what: string): BadFileError {
    return new BadFileError(`${this.file}: corrupt zip archive: ${what}`, { path: this.file });
  }

  /** Reads exactly `length` bytes at `pos` into a fresh buffer, or explains that the file is too short. */
  private readAt(pos: number, length: number, what: string): Uint8Array {
    if (!(pos >= 0 && length >= 0 && pos + length <= this.fileSize)) {
      throw new BadFileError(
        `${this.file}: truncated or corrupt zip archive: ${what} (bytes ${pos}..${pos + length}) lies past the end of the file (${this.fileSize} bytes)`,
        { path: this.file },
      );
    }
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, buf, done, length - done, pos + done);
      if (n === 0) throw new BadFileError(`${this.file}: unexpected end of file while reading ${what}`, { path: this.file });
      done += n;
    }
    return buf;
  }

  private readCentralDirectory(): void {
    if (this.fileSize < EOCD_SIZE)
      throw new BadFileError(`${this.file}: not a zip archive (${this.fileSize} bytes is too short)`, { path: this.file });
    // The end-of-central-directory record sits at the very end, followed only by an optional comment,
    // so search backwards through the last 64 KiB + 22 bytes for its signature.
    const tailLen = Math.min(this.fileSize, EOCD_SIZE + MAX_COMMENT);
    const tailStart = this.fileSize - tailLen;
    const tail = this.readAt(tailStart, tailLen, 'the end of the archive');
    const tv = view(tail);
    let at = -1;
    for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tailLen) {
        at = i;
        break;
      }
    }
    if (at < 0)
      throw new BadFileError(`${this.file}: not a zip archive, or truncated: no end-of-central-directory record found`, {
        path: this.file,
      });
    const eocdPos = tailStart + at;
    let count: number = tv.getUint16(at + 10, true);
    let cdSize: number = tv.getUint32(at + 12, true);
    let cdOffset: number = tv.getUint32(at + 16, true);
    if (tv.getUint16(at + 4, true) !== 0 && tv.getUint16(at + 4, true) !== 0xffff)
      throw new BadFileError(`${this.file}: multi-disk zip archives are not supported`, { path: this.file });

    // zip64: a locator just before the EOCD points at the zip64 EOCD record, which holds 64-bit values.
    // torch.save writes one for large archives; when present its values win.
    const needs64 = count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff;
    const loc = eocdPos >= 20 ? view(this.readAt(eocdPos - 20, 20, 'the zip64 locator')) : null;
    if (loc && loc.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
      const z64Pos = u64(loc, 8, this.file);
      if (z64Pos + 56 > eocdPos - 20)
        throw this.corrupt(`the zip64 end-of-central-directory record (at byte ${z64Pos}) does not lie before its locator`);
      const z = view(this.readAt(z64Pos, 56, 'the zip64 end-of-central-directory record'));
      if (z.getUint32(0, true) !== SIG_ZIP64_EOCD) throw this.corrupt('the zip64 end-of-central-directory record has a bad signature');
      count = u64(z, 32, this.file);
      cdSize = u64(z, 40, this.file);
      cdOffset = u64(z, 48, this.file);
    } else if (needs64) {
      throw this.corrupt('the directory needs zip64 values but there is no zip64 locator');
    }
    if (cdOffset + cdSize > this.fileSize) {
      throw new BadFileError(
        `${this.file}: truncated or corrupt zip archive: the central directory (bytes ${cdOffset}..${cdOffset + cdSize}) lies past the end of the file (${this.fileSize} bytes)`,
        { path: this.file },
      );
    }
    if (count > Math.floor(cdSize / CENTRAL_SIZE)) {
      throw this.corrupt(
        `the directory claims ${count} entries, but its ${cdSize} bytes hold at most ${Math.floor(cdSize / CENTRAL_SIZE)}`,
      );
    }
    const cd = this.readAt(cdOffset, cdSize, 'the central directory');
    const dv = view(cd);
    const utf8 = new TextDecoder('utf-8');
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || dv.getUint32(p, true) !== SIG_CENTRAL)
        throw this.corrupt(`central directory entry ${i} of ${count} is missing or has a bad signature`);
      const flags = dv.getUint16(p + 8, true);
      const method = dv.getUint16(p + 10, true);
      const crc = dv.getUint32(p + 16, true);
      let compressedSize: number = dv.getUint32(p + 20, true);
      let size: number = dv.getUint32(p + 24, true);
      const nameLen = dv.getUint16(p + 28, true);
      const extraLen = dv.getUint16(p + 30, true);
      const commentLen = dv.getUint16(p + 32, true);
      let localHeaderOffset: number = dv.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen + commentLen > cdSize) throw this.corrupt(`central directory entry ${i} runs past the directory`);
      const name = utf8.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // The zip64 extra field (id 1) holds, in this order, only those of size / compressed size /
      // offset whose 32-bit fields are saturated.
      let x = p + 46 + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const id = dv.getUint16(x, true);
        const len = dv.getUint16(x + 2, true);
        if (id === 1) {
          let q = x + 4;
          const take = (): number => {
            if (q + 8 > x + 4 + len) throw this.corrupt(`the zip64 extra field of '${name}' is too short`);
            const v = u64(dv, q, this.file);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take();
          if (compressedSize === 0xffffffff) compressedSize = take();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
        }
        x += 4 + len;
      }
      if (this.entries.has(name)) throw this.corrupt(`the name '${name}' appears twice in the directory`);
      if (localHeaderOffset + LOCAL_SIZE + compressedSize > cdOffset) {
        throw this.corrupt(
          `entry '${name}' (${compressedSize} bytes at byte ${localHeaderOffset}) does not fit before the central directory at byte ${cdOffset}`,
        );
      }
      if (method === 0 && compressedSize !== size)
        throw this.corrupt(`stored entry '${name}' has compressed size ${compressedSize} != size ${size}`);
      if (method === 8 && size > compressedSize * MAX_DEFLATE_RATIO + 64) {
        throw this.corrupt(`entry '${name}' claims to inflate ${compressedSize} bytes to ${size}, beyond deflate's maximum ratio`);
      }
      this.entries.set(name, { name, method, compressedSize, size, crc32: crc, localHeaderOffset, flags, limit: cdOffset });
      p += 46 + nameLen + extraLen + commentLen;
    }
    // Entries may not share or overlap their local headers and data: each ends before the next begins.
    const byOffset = [...this.entries.values()].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
    for (let k = 0; k + 1 < byOffset.length; k++) {
      const a = byOffset[k];
      const b = byOffset[k + 1];
      if (a.localHeaderOffset + LOCAL_SIZE + a.compressedSize > b.localHeaderOffset) {
        throw this.corrupt(`entries '${a.name}' and '${b.name}' overlap (at bytes ${a.localHeaderOffset} and ${b.localHeaderOffset})`);
      }
      a.limit = b.localHeaderOffset;
    }
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(dv: DataView, at: number, file: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new BadFileError(`${file}: corrupt zip archive: 64-bit value ${v} is out of range`, { path: file });
  return Number(v);
}
