// Fetches the pinned libtorch (lib/addon/manifest.ts) into the shared cache, with Node alone: no
// Python, no pip, no unzip binary.
//   1. Each pinned wheel is streamed to RESIDUAL_HOME/downloads/<name>.part, hashed (sha256) as it
//      arrives; a progress bar on a terminal, plain lines otherwise. A connection that stalls longer
//      than RESIDUAL_FETCH_TIMEOUT seconds (default 60) is dropped; network errors, 5xx and truncated
//      bodies are retried RESIDUAL_FETCH_RETRIES times (default 3), continuing where they stopped (HTTP
//      Range). A 404, a wrong size or a wrong sha256 fails at once and the bytes are deleted.
//   2. Only the files residual needs are unpacked (a wheel is a zip; yauzl reads it): torch/lib's
//      libraries and version.py for what runs, torch/include and torch/share for a source build,
//      nvidia/*/lib for CUDA. libtorch_python.so, test libraries and Python files are skipped. Every
//      unpacked file is checked against the wheel's RECORD (sha256), on top of the wheel's own sha256.
//   3. The unpacked tree is published by one rename (lib/core/fs.ts publishDir): the cache has the
//      whole part or none of it, so an interrupted fetch never leaves a half cache. A lock per
//      variant (proper-lockfile, beside the cache folder) keeps two installs from clashing: the second
//      waits, then finds the cache ready.
// Explicit alternatives, each printed when used: LIBTORCH, LIBTORCH_USE_PYTORCH=1 (lib/addon/libtorch.ts),
// and RESIDUAL_LIBTORCH_FETCH=pip (pip downloads the same pinned files, through pip's own index and
// proxy settings; residual still checks each file's sha256 against the manifest).
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import lockfile from 'proper-lockfile';
import yauzl from 'yauzl';
import { publishDir, writeJsonAtomic } from '../core/fs.js';
import { type Libtorch, cacheDirFor, cachedLibtorch, findLibtorch, residualHome, wantedVariant } from './libtorch.js';
import { type PinnedFile, type PinnedVariant, fileUrl, pinnedVariant } from './manifest.js';
import { compareVersions, glibcVersion } from './system.js';

const MB = 1e6;

function say(quiet: boolean, msg: string): void {
  if (!quiet) console.error(`[residual] ${msg}`);
}

function mb(n: number): string {
  return `${(n / MB).toFixed(1)} MB`;
}

function envNumber(env: NodeJS.ProcessEnv, name: string, dflt: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min) throw new RangeError(`${name}=${raw} must be a number >= ${min}`);
  return v;
}

/** A download or unpack failure: the message names the URL and what to set. */
export class FetchError extends Error {
  constructor(
    message: string,
    readonly retryable = false,
    /** Keep the partial download for the next try (an interruption, not bad bytes). */
    readonly keepPartial = false,
  ) {
    super(message);
    this.name = 'FetchError';
  }
}

// ---------------------------------------------------------------------------------------------
// Progress: a bar on a terminal, a few plain lines in a log. Written here (a dozen lines) rather than
// taken from a progress-bar package, which every user of the install step would download.

class Progress {
  private last = 0;
  private lastPct = -1;
  private readonly start = Date.now();
  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly quiet: boolean,
    private readonly tty = !!process.stderr.isTTY,
  ) {}
  update(done: number): void {
    if (this.quiet) return;
    const now = Date.now();
    const pct = this.total ? Math.floor((done / this.total) * 100) : 0;
    const secs = Math.max((now - this.start) / 1000, 1e-3);
    const rate = done / secs;
    if (this.tty) {
      if (now - this.last < 100 && done < this.total) return;
      this.last = now;
      const w = 24;
      const f = Math.min(w, Math.round((pct / 100) * w));
      const eta = rate > 0 && done < this.total ? ` ETA ${Math.ceil((this.total - done) / rate)} s` : '';
      process.stderr.write(
        `\r[residual] ${this.label} [${'#'.repeat(f)}${'.'.repeat(w - f)}] ${String(pct).padStart(3)}% ${mb(done)} / ${mb(this.total)} ${(rate / MB).toFixed(1)} MB/s${eta}\x1b[K`,
      );
    } else {
      const step = Math.floor(pct / 25) * 25;
      if (step > this.lastPct && step < 100) {
        this.lastPct = step;
        if (step > 0)
          process.stderr.write(`[residual] ${this.label}: ${step}% (${mb(done)} of ${mb(this.total)}, ${(rate / MB).toFixed(1)} MB/s)\n`);
      }
    }
  }
  end(): void {
    if (!this.quiet && this.tty) process.stderr.write('\n');
  }
}

// ---------------------------------------------------------------------------------------------
// Download

export interface DownloadOptions {
  size: number;
  sha256: string;
  /** Seconds without a byte before the connection is dropped. */
  timeoutS: number;
  retries: number;
  quiet: boolean;
  label: string;
}

async function hashFile(file: string, upTo: number): Promise<crypto.Hash> {
  const h = crypto.createHash('sha256');
  if (upTo > 0) {
    const s = fs.createReadStream(file, { start: 0, end: upTo - 1 });
    for await (const chunk of s) h.update(chunk as Buffer);
  }
  return h;
}

function describeNetError(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err.cause;
  if (/bad port/.test(cause?.message ?? err.message ?? ''))
    return "its port is one that Node's fetch refuses (the WHATWG list of blocked ports, e.g. 6000 or 10080): serve the mirror on another port";
  if (cause?.code) return `${cause.code}${cause.message && !cause.message.includes(cause.code) ? ` (${cause.message})` : ''}`;
  return cause?.message ?? err.message;
}

/**
 * One attempt: continues `part` from its current length (HTTP Range) and returns when the file is
 * complete. Throws FetchError (retryable or not).
 */
async function downloadOnce(url: string, part: string, o: DownloadOptions, progress: Progress): Promise<void> {
  let have = fs.existsSync(part) ? fs.statSync(part).size : 0;
  if (have > o.size) {
    fs.rmSync(part, { force: true });
    have = 0;
  }
  if (have === o.size) return; // complete from an earlier run: verified by the caller
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(
      () =>
        ac.abort(
          new FetchError(
            `no data from ${url} for ${o.timeoutS} s (a stalled connection; RESIDUAL_FETCH_TIMEOUT=seconds allows longer)`,
            true,
            true,
          ),
        ),
      o.timeoutS * 1000,
    );
  };
  arm();
  let res: Response;
  try {
    res = await fetch(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {}, signal: ac.signal, redirect: 'follow' });
  } catch (e) {
    clearTimeout(timer);
    if (ac.signal.aborted && ac.signal.reason instanceof FetchError) throw ac.signal.reason;
    throw new FetchError(`cannot reach ${url}: ${describeNetError(e)}`, true, true);
  }
  try {
    if (res.status === 416 && have > 0) {
      fs.rmSync(part, { force: true }); // the server disagrees about what we have: start over
      throw new FetchError(`${url} refused to continue the partial download (HTTP 416); starting over`, true);
    }
    if (res.status === 404 || res.status === 410 || res.status === 403 || res.status === 401) {
      throw new FetchError(
        `HTTP ${res.status} ${res.statusText || ''} for ${url}: the server does not have this file${process.env.RESIDUAL_LIBTORCH_MIRROR ? ' (is the mirror complete? lay one out with: npm run libtorch:mirror -- DIR)' : ''}`.replace(
          / +:/,
          ':',
        ),
      );
    }
    if (res.status >= 500 || res.status === 429 || res.status === 408)
      throw new FetchError(`HTTP ${res.status} ${res.statusText || ''} from ${url} (a server error)`.replace(/ +\(/, ' ('), true, true);
    if (res.status !== 200 && res.status !== 206) throw new FetchError(`unexpected HTTP ${res.status} ${res.statusText || ''} from ${url}`);
    let offset = 0;
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have)
        throw new FetchError(`${url} answered a different range than asked (${res.headers.get('content-range')}); starting over`, true);
      offset = have;
    }
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (Number.isFinite(declared) && offset + declared !== o.size) {
      throw new FetchError(
        `${url} has ${offset + declared} bytes, but the pinned file has ${o.size}: not the pinned file (a wrong mirror?)`,
      );
    }
    if (!res.body) throw new FetchError(`empty answer from ${url}`, true, true);
    const out = fs.createWriteStream(part, { flags: offset > 0 ? 'a' : 'w' });
    const closed = once(out, 'close');
    let got = offset;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        arm();
        got += chunk.length;
        if (got > o.size) throw new FetchError(`${url} sent more than the pinned ${o.size} bytes: not the pinned file`);
        if (!out.write(chunk)) await once(out, 'drain');
        progress.update(got);
      }
    } catch (e) {
      if (e instanceof FetchError) throw e;
      if (ac.signal.aborted && ac.signal.reason instanceof FetchError) throw ac.signal.reason;
      throw new FetchError(`the download from ${url} broke off after ${mb(got)} of ${mb(o.size)}: ${describeNetError(e)}`, true, true);
    } finally {
      out.end();
      await closed;
    }
    if (got < o.size)
      throw new FetchError(`the download from ${url} ended after ${mb(got)} of ${mb(o.size)} (the connection closed early)`, true, true);
  } finally {
    clearTimeout(timer);
    // Drop the connection if we stopped reading early.
    if (!ac.signal.aborted) ac.abort();
  }
}

/**
 * Downloads `url` into `part` until it has the pinned size and sha256 (retrying and continuing as
 * above). On success `part` holds the verified bytes.
 */
export async function downloadVerified(url: string, part: string, o: DownloadOptions): Promise<void> {
  fs.mkdirSync(path.dirname(part), { recursive: true });
  const started = fs.existsSync(part) ? fs.statSync(part).size : 0;
  if (started > 0 && started < o.size) say(o.quiet, `${o.label}: continuing an earlier download at ${mb(started)} of ${mb(o.size)}`);
  const t0 = Date.now();
  let restartedClean = false;
  for (let attempt = 0; ; attempt++) {
    const progress = new Progress(o.label, o.size, o.quiet);
    try {
      await downloadOnce(url, part, o, progress);
      progress.end();
      const h = await hashFile(part, o.size);
      const got = h.digest('hex');
      if (got !== o.sha256) {
        fs.rmSync(part, { force: true });
        if (started > 0 && !restartedClean) {
          // The bytes kept from an earlier run may be what is wrong: once more from zero.
          restartedClean = true;
          say(o.quiet, `${o.label}: checksum mismatch after continuing an earlier download; downloading it again from the start`);
          continue;
        }
        throw new FetchError(
          `checksum mismatch for ${path.basename(part, '.part')} from ${url}: sha256 ${got}, pinned ${o.sha256}. The server sent other bytes than the pinned file (a broken mirror or proxy?); nothing was kept`,
        );
      }
      const secs = (Date.now() - t0) / 1000;
      say(
        o.quiet,
        `${o.label}: ${mb(o.size)} in ${secs.toFixed(1)} s${secs > 0.05 ? ` (${(o.size / MB / secs).toFixed(1)} MB/s)` : ''}, sha256 verified`,
      );
      return;
    } catch (e) {
      progress.end();
      const fe = e instanceof FetchError ? e : new FetchError(String((e as Error).message ?? e));
      if (fe.retryable && attempt < o.retries) {
        const wait = Math.min(1000 * 2 ** attempt, 8000);
        say(o.quiet, `${fe.message}; retrying in ${wait / 1000} s (${attempt + 1} of ${o.retries})`);
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      if (!fe.keepPartial) fs.rmSync(part, { force: true });
      const kept = fe.keepPartial && fs.existsSync(part) ? fs.statSync(part).size : 0;
      const suffix = kept > 0 ? ` (the ${mb(kept)} received are kept in ${part}; the next try continues from there)` : '';
      throw new FetchError(`${fe.message}${suffix}`, false, fe.keepPartial);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Unpack

/** Which part of the cache a wheel entry belongs to, or null to skip it. */
export function entryPart(role: PinnedFile['role'], name: string): 'lib' | 'dev' | null {
  if (name.endsWith('/')) return null;
  if (role === 'torch') {
    if (name === 'torch/version.py') return 'lib';
    const lib = /^torch\/lib\/([^/]+)$/.exec(name);
    if (lib) {
      const f = lib[1];
      if (!/\.so(\.\d+)*$/.test(f)) return null;
      // Python's, and libtorch's own test and example libraries: nothing residual loads.
      if (/^libtorch_python\.so$|^libshm|_test\.so$|^libbackend_with_compiler\.so$|^libaoti_custom_ops\.so$/.test(f)) return null;
      return 'lib';
    }
    if (name.startsWith('torch/include/') || name.startsWith('torch/share/')) return 'dev';
    return null;
  }
  // nvidia-* wheels: nvidia/<lib>/lib/*.so* (some under cu13/lib)
  if (/^nvidia\/[\w.-]+\/(?:[\w.-]+\/)?lib\/[^/]+\.so(\.[\d]+)*$/.test(name)) return 'lib';
  return null;
}

/** A wheel's RECORD: path -> sha256 (urlsafe base64, no padding). */
export function parseRecord(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line) continue;
    let file: string;
    let rest: string;
    if (line.startsWith('"')) {
      // CSV quoting: "a,b.h" with "" for a quote
      let i = 1;
      let s = '';
      for (; i < line.length; i++) {
        if (line[i] === '"' && line[i + 1] === '"') {
          s += '"';
          i++;
        } else if (line[i] === '"') break;
        else s += line[i];
      }
      file = s;
      rest = line.slice(i + 2);
    } else {
      const c = line.indexOf(',');
      file = line.slice(0, c);
      rest = line.slice(c + 1);
    }
    const hash = rest.split(',')[0];
    if (hash.startsWith('sha256=')) out.set(file, hash.slice(7));
  }
  return out;
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, autoClose: false, validateEntrySizes: true, strictFileNames: true }, (err, zip) =>
      err ? reject(err) : resolve(zip!),
    ),
  );
}

function listEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const out: yauzl.Entry[] = [];
    zip.on('entry', (e: yauzl.Entry) => {
      out.push(e);
      zip.readEntry();
    });
    zip.once('end', () => resolve(out));
    zip.once('error', reject);
    zip.readEntry();
  });
}

function entryStream(zip: yauzl.ZipFile, e: yauzl.Entry): Promise<NodeJS.ReadableStream> {
  return new Promise((resolve, reject) => zip.openReadStream(e, (err, s) => (err ? reject(err) : resolve(s!))));
}

async function readEntryText(zip: yauzl.ZipFile, e: yauzl.Entry, limit: number): Promise<string> {
  if (e.uncompressedSize > limit) throw new Error(`${e.fileName} is ${e.uncompressedSize} bytes (more than ${limit})`);
  const parts: Buffer[] = [];
  for await (const c of await entryStream(zip, e)) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export interface UnpackResult {
  files: { lib: number; dev: number };
  bytes: { lib: number; dev: number };
}

/**
 * Unpacks the entries of `wheel` that belong to the wanted parts into `dests[part]` (same relative
 * paths), each checked against the wheel's RECORD. Throws on an entry missing from RECORD or whose
 * sha256 differs.
 */
export async function unpackWheel(
  wheel: string,
  role: PinnedFile['role'],
  dests: Partial<Record<'lib' | 'dev', string>>,
  name = path.basename(wheel),
): Promise<UnpackResult> {
  const res: UnpackResult = { files: { lib: 0, dev: 0 }, bytes: { lib: 0, dev: 0 } };
  const zip = await openZip(wheel);
  try {
    const entries = await listEntries(zip);
    const recordEntry = entries.find((e) => /^[^/]+\.dist-info\/RECORD$/.test(e.fileName));
    if (!recordEntry) throw new Error(`${name} has no .dist-info/RECORD: cannot verify its files`);
    const record = parseRecord(await readEntryText(zip, recordEntry, 64 * MB));
    const made = new Set<string>();
    for (const e of entries) {
      const part = entryPart(role, e.fileName);
      if (!part || !dests[part]) continue;
      if (e.fileName.split('/').some((s) => s === '..' || s === '.' || s === ''))
        throw new Error(`unsafe entry name ${JSON.stringify(e.fileName)} in ${name}`);
      const want = record.get(e.fileName);
      if (!want) throw new Error(`${e.fileName} in ${name} is not listed in its RECORD`);
      const target = path.join(dests[part]!, ...e.fileName.split('/'));
      const dir = path.dirname(target);
      if (!made.has(dir)) {
        fs.mkdirSync(dir, { recursive: true });
        made.add(dir);
      }
      const h = crypto.createHash('sha256');
      const out = fs.createWriteStream(target, { flags: 'wx', mode: /\.so(\.\d+)*$/.test(target) ? 0o755 : 0o644 });
      const closed = once(out, 'close');
      try {
        for await (const chunk of await entryStream(zip, e)) {
          h.update(chunk as Buffer);
          if (!out.write(chunk)) await once(out, 'drain');
        }
      } finally {
        out.end();
        await closed;
      }
      const got = h.digest('base64url');
      if (got !== want)
        throw new Error(
          `checksum mismatch for ${e.fileName} in ${name} (RECORD says sha256=${want}, the bytes give ${got}): the wheel is corrupt`,
        );
      res.files[part]++;
      res.bytes[part] += e.uncompressedSize;
    }
  } finally {
    zip.close();
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// The cache: lock, stage, publish

function platformCheck(variant: string, pv: PinnedVariant): void {
  const here = `${process.platform}-${process.arch}`;
  if (pv.platform !== here) {
    throw new FetchError(
      `residual's pinned libtorch (${variant}) is built for ${pv.platform}; this machine is ${here}. ` +
        `Set LIBTORCH=/path/to/libtorch (PyTorch's libtorch for ${here}) or LIBTORCH_USE_PYTORCH=1 (python3's torch), and build from source`,
    );
  }
  const need = pv.files
    .map((f) => f.glibc)
    .filter((g): g is string => !!g)
    .sort(compareVersions)
    .at(-1);
  const have = glibcVersion();
  if (need && process.platform === 'linux') {
    if (!have)
      throw new FetchError(
        `the pinned libtorch needs glibc ${need} or newer, and this system's C library is not glibc (musl?). Set LIBTORCH to a libtorch built for it`,
      );
    if (compareVersions(have, need) < 0)
      throw new FetchError(
        `the pinned libtorch needs glibc ${need} or newer; this system has glibc ${have}. Set LIBTORCH to a libtorch built for it, or use a newer system`,
      );
  }
}

async function withLock<T>(target: string, quiet: boolean, env: NodeJS.ProcessEnv, fn: () => Promise<T>): Promise<T> {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const lockPath = `${target}.lock`;
  const stale = envNumber(env, 'RESIDUAL_LOCK_STALE', 30, 2) * 1000;
  let release: (() => Promise<void>) | null = null;
  let told = false;
  let compromised: Error | null = null;
  try {
    const age = Date.now() - fs.statSync(lockPath).mtimeMs;
    if (age > stale)
      say(quiet, `taking over the lock ${lockPath}, left ${Math.round(age / 1000)} s ago by an install that stopped (killed?)`);
  } catch {
    /* no lock */
  }
  for (;;) {
    try {
      release = await lockfile.lock(target, {
        realpath: false,
        lockfilePath: lockPath,
        stale,
        update: Math.max(1000, Math.floor(stale / 4)),
        onCompromised: (e) => {
          compromised = e;
        },
      });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
      if (!told) {
        say(
          quiet,
          `another residual install is fetching libtorch into ${target}; waiting for it (a lock left by a killed process is taken over after ${stale / 1000} s)`,
        );
        told = true;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    const out = await fn();
    if (compromised) throw new FetchError(`the lock on ${target} was lost while fetching (${(compromised as Error).message}); run again`);
    return out;
  } finally {
    await release!().catch(() => undefined);
  }
}

function removeStale(base: string): void {
  const dir = path.dirname(base);
  const name = path.basename(base);
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    if (f.startsWith(`${name}.staging-`) || f.startsWith(`${name}.old-`)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  }
  const inner = path.join(base);
  for (const f of fs.existsSync(inner) ? fs.readdirSync(inner) : []) {
    if (f.startsWith('dev.staging-') || f.startsWith('dev.old-')) fs.rmSync(path.join(inner, f), { recursive: true, force: true });
  }
}

export interface FetchOptions {
  /** Also the headers and CMake files (a source build). */
  dev?: boolean;
  quiet?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Where a pinned file came from, for messages: the host it is fetched from. */
function origin(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}`;
}

/**
 * Makes sure the cache holds the pinned libtorch of `variant` (and its build files when `dev`),
 * downloading and unpacking what is missing. Returns it as a Libtorch (source 'fetched' when anything
 * was fetched, else 'cache').
 */
export async function fetchLibtorch(variant: string, opts: FetchOptions = {}): Promise<Libtorch> {
  const env = opts.env ?? process.env;
  const quiet = opts.quiet ?? false;
  const pv = pinnedVariant(variant, env);
  if (pv.overridden) say(quiet, `libtorch manifest from RESIDUAL_LIBTORCH_MANIFEST: ${pv.manifestFile}`);
  platformCheck(variant, pv);
  const base = cacheDirFor(variant, env);
  const timeoutS = envNumber(env, 'RESIDUAL_FETCH_TIMEOUT', 60, 0.1);
  const retries = Math.floor(envNumber(env, 'RESIDUAL_FETCH_RETRIES', 3, 0));
  const viaPip = env.RESIDUAL_LIBTORCH_FETCH === 'pip';
  if (env.RESIDUAL_LIBTORCH_FETCH && !['pip', 'http'].includes(env.RESIDUAL_LIBTORCH_FETCH)) {
    throw new FetchError(`RESIDUAL_LIBTORCH_FETCH=${env.RESIDUAL_LIBTORCH_FETCH}: use http (the default) or pip`);
  }

  return withLock(base, quiet, env, async () => {
    removeStale(base);
    const have = cachedLibtorch(variant, env);
    const needLib = !have;
    const needDev = !!opts.dev && !have?.devDir;
    if (!needLib && !needDev) {
      say(quiet, `libtorch ${pv.torch} (${variant}) is in the cache: ${have!.dir}`);
      return have!;
    }
    // Which wheels: all of them for what runs; for the build files only the torch wheel.
    const files = needLib ? pv.files : pv.files.filter((f) => f.role === 'torch');
    const total = files.reduce((s, f) => s + f.size, 0);
    const parts = [needLib ? 'what runs (lib/)' : null, needDev ? 'the headers and CMake files a source build needs' : null]
      .filter(Boolean)
      .join(' and ');
    const downloads = path.join(residualHome(env), 'downloads');
    const wheels = new Map<PinnedFile, string>();
    if (viaPip) {
      say(
        quiet,
        `fetching libtorch ${pv.torch} (${variant}) with pip (RESIDUAL_LIBTORCH_FETCH=pip): ${files.length} file(s), ${mb(total)}, for ${parts}`,
      );
      for (const [f, p] of await pipDownload(files, path.join(downloads, `pip-${process.pid}`), quiet, env)) wheels.set(f, p);
    } else {
      const mirror = env.RESIDUAL_LIBTORCH_MIRROR;
      const from = mirror
        ? `the mirror ${mirror} (RESIDUAL_LIBTORCH_MIRROR)`
        : `${origin(files[0].url)}${files.length > 1 ? ' and PyPI' : ''} (RESIDUAL_LIBTORCH_MIRROR=URL fetches from a mirror instead)`;
      say(
        quiet,
        `fetching libtorch ${pv.torch} (${variant}) for ${pv.platform}: ${files.length} file(s), ${mb(total)}, from ${from}, for ${parts}`,
      );
      let i = 0;
      for (const f of files) {
        i++;
        const url = fileUrl(f, mirror);
        const part = path.join(downloads, `${f.name}.part`);
        const label = files.length > 1 ? `${i}/${files.length} ${f.name}` : f.name;
        await downloadVerified(url, part, { size: f.size, sha256: f.sha256, timeoutS, retries, quiet, label });
        wheels.set(f, part);
      }
    }

    const stamp = {
      variant,
      torch: pv.torch,
      cuda: pv.cuda,
      files: files.map((f) => ({ name: f.name, sha256: f.sha256 })),
      at: new Date().toISOString(),
      format: 2,
    };
    const libStage = `${base}.staging-${process.pid}`;
    const devStage = path.join(needLib ? libStage : base, `dev.staging-${process.pid}`);
    try {
      let libFiles = 0;
      let libBytes = 0;
      let devFiles = 0;
      let devBytes = 0;
      for (const [f, wheel] of wheels) {
        const dests: Partial<Record<'lib' | 'dev', string>> = {};
        if (needLib) dests.lib = path.join(libStage, 'site');
        if (needDev && f.role === 'torch') dests.dev = devStage;
        say(quiet, `unpacking ${f.name}${needLib && needDev ? '' : needLib ? ' (what runs)' : ' (build files)'}`);
        const r = await unpackWheel(wheel, f.role, dests, f.name);
        libFiles += r.files.lib;
        libBytes += r.bytes.lib;
        devFiles += r.files.dev;
        devBytes += r.bytes.dev;
      }
      if (needLib) {
        if (!fs.existsSync(path.join(libStage, 'site', 'torch', 'lib', 'libtorch_cpu.so')))
          throw new FetchError('the pinned torch wheel has no torch/lib/libtorch_cpu.so: not a libtorch wheel');
        say(quiet, `unpacked what runs: ${libFiles} files, ${mb(libBytes)}, each checked against its wheel's RECORD`);
      }
      if (needDev) {
        if (!fs.existsSync(path.join(devStage, 'torch', 'share', 'cmake', 'Torch', 'TorchConfig.cmake')))
          throw new FetchError('the pinned torch wheel has no torch/share/cmake/Torch: cannot build from source with it');
        // CMake finds the libraries beside share/: point lib at the runtime part (no second copy).
        fs.symlinkSync(path.join('..', '..', 'site', 'torch', 'lib'), path.join(devStage, 'torch', 'lib'));
        writeJsonAtomic(path.join(devStage, 'VERIFIED'), stamp);
        say(quiet, `unpacked the build files: ${devFiles} files, ${mb(devBytes)}, each checked against the wheel's RECORD`);
      }
      if (needLib) {
        if (needDev) publishDir(devStage, path.join(libStage, 'dev'));
        writeJsonAtomic(path.join(libStage, 'VERIFIED'), stamp);
        publishDir(libStage, base);
      } else {
        publishDir(devStage, path.join(base, 'dev'));
      }
    } catch (e) {
      fs.rmSync(libStage, { recursive: true, force: true });
      fs.rmSync(devStage, { recursive: true, force: true });
      throw e instanceof FetchError ? e : new FetchError(`could not unpack libtorch: ${(e as Error).message}; nothing was kept`);
    } finally {
      // The cache keeps what runs, not the wheels.
      for (const w of wheels.values()) fs.rmSync(w, { force: true });
      if (viaPip) fs.rmSync(path.join(downloads, `pip-${process.pid}`), { recursive: true, force: true });
    }
    const lt = cachedLibtorch(variant, env);
    if (!lt || (opts.dev && !lt.devDir)) throw new FetchError(`libtorch was published into ${base} but does not read back as complete`);
    say(quiet, `libtorch ${lt.version} (${variant}) ready in ${base}`);
    return { ...lt, source: 'fetched' };
  });
}

// ---------------------------------------------------------------------------------------------
// RESIDUAL_LIBTORCH_FETCH=pip: the same pinned files through pip (its index, proxy and certificate
// settings), for networks where only a Python package index is reachable.

/** "torch-2.13.0+cpu-cp311-..." -> "torch==2.13.0+cpu"; "nvidia_cublas-13.1.1.3-py3-..." -> "nvidia-cublas==13.1.1.3" */
export function pipSpec(wheelName: string): string {
  const [dist, version] = wheelName.split('-');
  return `${dist.replace(/_/g, '-')}==${version}`;
}

async function pipDownload(files: PinnedFile[], dir: string, quiet: boolean, env: NodeJS.ProcessEnv): Promise<[PinnedFile, string][]> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  // Ask for exactly the pinned files, whatever this machine's Python is: the platform and ABI tags of
  // the pinned names, cp311 (libtorch itself does not depend on the Python version).
  const platforms = new Set<string>();
  for (const f of files)
    for (const t of f.name
      .replace(/\.whl$/, '')
      .split('-')
      .at(-1)!
      .split('.'))
      platforms.add(t);
  const args = [
    '-m',
    'pip',
    'download',
    '--no-deps',
    '--only-binary=:all:',
    '--python-version',
    '3.11',
    '--implementation',
    'cp',
    '--abi',
    'cp311',
    '--abi',
    'none',
    '--abi',
    'abi3',
  ];
  for (const p of platforms) args.push('--platform', p);
  args.push('--progress-bar', 'off', '-d', dir, ...files.map((f) => pipSpec(f.name)));
  say(quiet, `python3 ${args.join(' ')}`);
  const r = spawnSync('python3', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env, timeout: 60 * 60 * 1000 });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT')
    throw new FetchError('RESIDUAL_LIBTORCH_FETCH=pip, but there is no python3 on PATH: unset it to fetch with Node');
  if (r.status !== 0) {
    const why = (r.stderr || r.stdout || '').trim().split('\n').filter(Boolean).slice(-3).join(' | ');
    throw new FetchError(
      `pip could not download ${files.map((f) => pipSpec(f.name)).join(' ')} (${why}). Check pip's index settings (pip config list), or unset RESIDUAL_LIBTORCH_FETCH to fetch from ${origin(files[0].url)} or RESIDUAL_LIBTORCH_MIRROR`,
    );
  }
  const out: [PinnedFile, string][] = [];
  for (const f of files) {
    const p = path.join(dir, f.name);
    if (!fs.existsSync(p)) {
      const got = fs.readdirSync(dir).join(', ') || 'nothing';
      throw new FetchError(
        `pip did not save the pinned ${f.name} (it saved: ${got}); its index may serve another build of ${pipSpec(f.name)}`,
      );
    }
    const size = fs.statSync(p).size;
    const sha = (await hashFile(p, size)).digest('hex');
    if (size !== f.size || sha !== f.sha256)
      throw new FetchError(`checksum mismatch for ${f.name} from pip: sha256 ${sha} (${size} bytes), pinned ${f.sha256} (${f.size} bytes)`);
    say(quiet, `${f.name}: ${mb(size)} from pip, sha256 verified`);
    out.push([f, p]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export interface EnsureOptions extends FetchOptions {
  /** Fetch when nothing is found (default true). */
  fetch?: boolean;
  useRecord?: boolean;
  root?: string;
}

/**
 * The libtorch to use, fetched into the cache when none is found (and its build files when `dev`
 * and they are missing from the cache). A LIBTORCH or python3 torch without build files is an error
 * only when `dev` asks for them.
 */
export async function ensureLibtorch(opts: EnsureOptions = {}): Promise<Libtorch | null> {
  const env = opts.env ?? process.env;
  const quiet = opts.quiet ?? false;
  const found = findLibtorch({ quiet, useRecord: opts.useRecord ?? true, root: opts.root, env });
  if (!found) {
    if (opts.fetch === false) return null;
    const variant = wantedVariant(env);
    say(quiet, `no libtorch found (LIBTORCH, LIBTORCH_USE_PYTORCH=1, the project copy, the cache): fetching the pinned ${variant} build`);
    return fetchLibtorch(variant, { dev: opts.dev, quiet, env });
  }
  if (!opts.dev || found.devDir) return found;
  // Build files are missing. From the cache: fetch them. Named by the user: say what is needed.
  for (const variant of [found.variantTag, 'cpu', 'cu130']) {
    let base: string;
    try {
      base = cacheDirFor(variant, env);
    } catch {
      continue;
    }
    if (path.resolve(found.dir) === path.join(base, 'site', 'torch')) {
      say(
        quiet,
        `a source build needs libtorch's headers and CMake files, which the cache does not keep for prebuilt binaries: fetching them`,
      );
      const lt = await fetchLibtorch(variant, { dev: true, quiet, env });
      return { ...lt, source: found.source };
    }
  }
  throw new Error(
    `the libtorch in use (${found.source}: ${found.dir}) has no include/ and share/cmake/Torch, which a source build needs; point LIBTORCH at a full libtorch, or unset it to let residual fetch one`,
  );
}
