// Packs an ImageNet-layout folder into WebDataset tar shards: each sample is <key>.<jpg|png> (the
// file's bytes, unchanged) + <key>.cls (the class index as text), keys numbered in a seeded random
// order so that every shard mixes the classes. One file at a time is in memory; each shard is
// written to a temporary name, fsynced and renamed, so a crash never leaves a half shard under its
// final name. classes.json (the class names, by index) goes beside the shards. A folder that already
// holds shards of the same prefix is refused (old shards would be read with the new set).
import fs from 'node:fs';
import path from 'node:path';
import { mulberry32 } from '../core/random.js';
import { listImageFolder } from './folder.js';
import { writeFileAtomic } from '../core/fs.js';

export interface PackOptions {
  /** Samples per shard; default 1000. */
  shardSize?: number;
  /** Shard name prefix: <prefix>-000000.tar; default 'train'. */
  prefix?: string;
  /** Shuffle the samples before packing (default true) with this seed (default 0). */
  shuffle?: boolean;
  seed?: number;
  onShard?: (file: string, samples: number) => void;
  /**
   * The class list (e.g. the training split's): labels are indices into it by class name, and
   * classes.json is not written. Default: this folder's sorted class folders, written to classes.json.
   */
  classes?: readonly string[];
}

export interface PackResult {
  shards: string[];
  samples: number;
  classes: string[];
  /** The brace pattern naming every shard, for --data-path. */
  pattern: string;
}

function octal(buf: Buffer, off: number, len: number, v: number): void {
  const s = v.toString(8).padStart(len - 1, '0');
  if (s.length > len - 1) throw new Error(`tar: value ${v} does not fit a ${len}-byte field`);
  buf.write(s, off, 'ascii');
  buf[off + len - 1] = 0;
}

/** A ustar header for a regular file. */
export function tarHeader(name: string, size: number, mtime = 0): Buffer {
  const h = Buffer.alloc(512);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: member name too long: ${name}`);
  h.write(name, 0, 'utf8');
  octal(h, 100, 8, 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, mtime);
  h.fill(0x20, 148, 156);
  h[156] = 0x30; // '0': regular file
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

/** Writes one tar file (atomically) from (name, bytes) pairs produced lazily; returns the member count. */
export function writeTar(file: string, members: Iterable<{ name: string; data: Uint8Array }>, opts: { durable?: boolean } = {}): number {
  let n = 0;
  writeFileAtomic(
    file,
    (fd) => {
      for (const m of members) {
        fs.writeSync(fd, tarHeader(m.name, m.data.length));
        fs.writeSync(fd, m.data);
        const pad = (512 - (m.data.length % 512)) % 512;
        if (pad) fs.writeSync(fd, Buffer.alloc(pad));
        n++;
      }
      fs.writeSync(fd, Buffer.alloc(1024)); // end of archive
    },
    opts,
  );
  return n;
}

/** Packs root/<class>/<image> into outDir/<prefix>-NNNNNN.tar shards. */
export function packImageFolder(root: string, outDir: string, opts: PackOptions = {}): PackResult {
  const shardSize = opts.shardSize ?? 1000;
  if (!Number.isInteger(shardSize) || shardSize < 1)
    throw new RangeError(`packImageFolder: shardSize must be a positive integer, got ${shardSize}`);
  const prefix = opts.prefix ?? 'train';
  const { classes, files } = listImageFolder(root, opts.classes);
  const order = files.map((_, i) => i);
  if (opts.shuffle ?? true) {
    const rand = mulberry32(opts.seed ?? 0);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
  }
  // Shards of this prefix already there would be read with the new set (a folder or pattern names them
  // all), so a second pack into the same folder is refused, before anything is written.
  const existing = fs.existsSync(outDir) ? fs.readdirSync(outDir).filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.tar')) : [];
  if (existing.length)
    throw new Error(
      `packImageFolder: ${outDir} already holds ${existing.length} '${prefix}' shard(s) (${existing.sort()[0]}, ...): ` +
        'pack into an empty folder, or remove the old shards first (they would be read with the new ones)',
    );
  fs.mkdirSync(outDir, { recursive: true });
  const nShards = Math.ceil(order.length / shardSize);
  const digits = Math.max(6, String(nShards - 1).length);
  const shards: string[] = [];
  for (let s = 0; s < nShards; s++) {
    const file = path.join(outDir, `${prefix}-${String(s).padStart(digits, '0')}.tar`);
    const slice = order.slice(s * shardSize, (s + 1) * shardSize);
    function* members(): Generator<{ name: string; data: Uint8Array }> {
      for (const k of slice) {
        const f = files[k];
        const key = String(k).padStart(9, '0');
        let ext = path.extname(f.file).slice(1).toLowerCase();
        if (ext === 'jpeg') ext = 'jpg';
        yield { name: `${key}.${ext}`, data: fs.readFileSync(f.file) };
        yield { name: `${key}.cls`, data: Buffer.from(String(f.label)) };
      }
    }
    writeTar(file, members());
    shards.push(file);
    opts.onShard?.(file, slice.length);
  }
  if (!opts.classes) writeFileAtomic(path.join(outDir, 'classes.json'), JSON.stringify(classes) + '\n');
  const last = String(nShards - 1).padStart(digits, '0');
  const first = '0'.padStart(digits, '0');
  const pattern = path.join(outDir, nShards > 1 ? `${prefix}-{${first}..${last}}.tar` : `${prefix}-${first}.tar`);
  return { shards, samples: order.length, classes, pattern };
}
