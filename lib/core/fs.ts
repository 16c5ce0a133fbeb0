// The one way residual writes a file that a reader (or a later run) trusts: into a temporary file beside
// it, fsynced, then renamed over the target, then the directory fsynced. A crash at any point leaves
// either the old file or the new one, never half of one. Used for checkpoints, safetensors, reports,
// downloaded datasets, the probe cache and the libtorch install record. publishDir does the same for a
// whole directory (the libtorch cache).
import fs from 'node:fs';
import path from 'node:path';

let counter = 0;

/** The temporary name used for `file` by this process (unique per call). */
function tempName(file: string): string {
  counter = (counter + 1) % 1e9;
  return `${file}.tmp-${process.pid}-${counter}`;
}

/** Is `name` one of writeFileAtomic's temporary files (of any process) for a file named `base`? */
export function isAtomicTemp(name: string, base: string): boolean {
  if (!name.startsWith(`${base}.tmp-`)) return false;
  return /^\d+-\d+$/.test(name.slice(base.length + 5));
}

/** fsync a directory so a rename inside it is durable before anything that depends on it. */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* not supported on this platform or file system: best effort */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export interface AtomicWriteOptions {
  /** fsync the file and its directory (default true). Off only for files that are cheap to lose. */
  durable?: boolean;
  /** File mode of the new file. */
  mode?: number;
}

/**
 * Writes `file` atomically. `data` is the whole content, or a function that writes it to the open file
 * descriptor (for large files written in pieces). Parent directories are created. On any failure the
 * temporary file is removed and the error is rethrown; the previous `file`, if any, is untouched.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array | ((fd: number) => void), opts: AtomicWriteOptions = {}): void {
  const durable = opts.durable ?? true;
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = tempName(file);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode);
    if (typeof data === 'function') data(fd);
    else fs.writeFileSync(fd, data);
    if (durable) fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  if (durable) fsyncDir(dir);
}

/** writeFileAtomic of `value` as pretty JSON with a final newline. */
export function writeJsonAtomic(file: string, value: unknown, opts: AtomicWriteOptions = {}): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', opts);
}

/**
 * Publishes the complete directory `staged` as `dest` with one rename, so a reader sees the whole
 * directory or none of it (the libtorch cache). An existing `dest` is first moved aside and removed
 * after (the caller holds a lock that keeps other writers out). Both must be on one file system.
 */
export function publishDir(staged: string, dest: string): void {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fsyncDir(staged);
  let aside: string | null = null;
  if (fs.existsSync(dest)) {
    aside = `${dest}.old-${process.pid}-${Date.now()}`;
    fs.renameSync(dest, aside);
  }
  fs.renameSync(staged, dest);
  fsyncDir(path.dirname(dest));
  if (aside) fs.rmSync(aside, { recursive: true, force: true });
}
