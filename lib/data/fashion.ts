// Fashion-MNIST: where to find it, how to fetch it, how to check it, how to load it.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { writeFileAtomic } from '../core/fs.js';
import { ImageDataset } from './dataset.js';
import { loadIdxImages, readMaybeGzip } from './idx.js';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

/** The four files, without the optional .gz suffix. */
export const FASHION_MNIST_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;
type FileKey = keyof typeof FASHION_MNIST_FILES;
const FILE_KEYS = Object.keys(FASHION_MNIST_FILES) as FileKey[];

/**
 * SHA-256 of the *uncompressed* IDX files, and their sizes. Computed here (sha256sum) from the
 * files installed by Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1. Checking the
 * uncompressed bytes makes the check independent of how a copy was gzipped: Debian's .gz files
 * are not byte-identical to the upstream ones (their MD5s differ from those in upstream's
 * README), but they decompress to the same data.
 */
export const FASHION_MNIST_SHA256: Record<FileKey, { sha256: string; bytes: number }> = {
  trainImages: { sha256: 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888', bytes: 47040016 },
  trainLabels: { sha256: 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9', bytes: 60008 },
  testImages: { sha256: '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b', bytes: 7840016 },
  testLabels: { sha256: '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34', bytes: 10008 },
};

/**
 * SHA-256 of the .gz files exactly as the Debian package ships them (computed here with
 * sha256sum on /usr/share/datasets/fashion-mnist/*.gz). For reference and a fast path only: a
 * copy gzipped differently is still accepted when its content matches FASHION_MNIST_SHA256.
 */
export const FASHION_MNIST_DEBIAN_GZ_SHA256: Record<FileKey, string> = {
  trainImages: 'b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7',
  trainLabels: '0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056',
  testImages: 'cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa',
  testLabels: '8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05',
};

/** Where Debian's dataset-fashion-mnist package installs the four .gz files. */
export const DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const DEBIAN_FASHION_MNIST_PACKAGE = 'dataset-fashion-mnist';

/** The dataset's published files (the upstream repository's data/fashion folder), over https. */
export const FASHION_MNIST_URL = 'https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/';

/** The project's cache: $RESIDUAL_HOME, else $XDG_CACHE_HOME/residual, else ~/.cache/residual. */
export function residualHome(): string {
  if (process.env.RESIDUAL_HOME) return path.resolve(process.env.RESIDUAL_HOME);
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'residual');
}

export function fashionMnistCacheDir(): string {
  return path.join(residualHome(), 'datasets', 'fashion-mnist');
}

/** The path of each file in dir (the raw file when present, else the .gz), or null if any is missing. */
export function fashionMnistFiles(dir: string): Record<FileKey, string> | null {
  const out: Partial<Record<FileKey, string>> = {};
  for (const k of FILE_KEYS) {
    const base = path.join(dir, FASHION_MNIST_FILES[k]);
    if (isFile(base)) out[k] = base;
    else if (isFile(`${base}.gz`)) out[k] = `${base}.gz`;
    else return null;
  }
  return out as Record<FileKey, string>;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export type FashionSource = 'path' | 'RESIDUAL_DATA' | 'debian' | 'cache';

export interface FoundDataset {
  dir: string;
  source: FashionSource;
}

/** The places searched, in order, for an error message or `residual data` output. */
export function fashionMnistCandidates(opts: { path?: string } = {}): { dir: string; source: FashionSource }[] {
  const c: { dir: string; source: FashionSource }[] = [];
  if (opts.path)
    c.push({ dir: path.resolve(opts.path), source: 'path' }, { dir: path.resolve(opts.path, 'fashion-mnist'), source: 'path' });
  const env = process.env.RESIDUAL_DATA;
  if (env) {
    for (const d of [env, path.join(env, 'fashion-mnist'), path.join(env, 'FashionMNIST', 'raw')])
      c.push({ dir: path.resolve(d), source: 'RESIDUAL_DATA' });
  }
  c.push({ dir: DEBIAN_FASHION_MNIST_DIR, source: 'debian' }, { dir: fashionMnistCacheDir(), source: 'cache' });
  return c;
}

/**
 * Find Fashion-MNIST: an explicit path (that folder or its fashion-mnist sub-folder; when given,
 * nothing else is searched), then $RESIDUAL_DATA (the folder, its fashion-mnist sub-folder, or
 * torchvision's FashionMNIST/raw), then Debian's /usr/share/datasets/fashion-mnist, then the
 * project cache. Returns null when none holds all four files.
 */
export function findFashionMnist(opts: { path?: string } = {}): FoundDataset | null {
  const candidates = fashionMnistCandidates(opts).filter((c) => !opts.path || c.source === 'path');
  for (const c of candidates) if (fashionMnistFiles(c.dir)) return c;
  return null;
}

function notFoundMessage(opts: { path?: string }): string {
  const where = (opts.path ? fashionMnistCandidates(opts).filter((c) => c.source === 'path') : fashionMnistCandidates(opts))
    .map((c) => `  ${c.dir} (${c.source})`)
    .join('\n');
  const names = Object.values(FASHION_MNIST_FILES)
    .map((f) => `${f}[.gz]`)
    .join(', ');
  return (
    `Fashion-MNIST not found: none of these folders holds ${names}:\n${where}\n` +
    `Fetch it with \`residual data get fashion-mnist\`, or set RESIDUAL_DATA to a folder that holds the files.`
  );
}

export interface FashionMnist {
  train: ImageDataset;
  test: ImageDataset;
  dir: string;
  source: FashionSource;
}

/** Load the train (60000) and test (10000) sets as uint8 [N, 1, 28, 28] datasets. */
export function loadFashionMnist(opts: { path?: string } = {}): FashionMnist {
  const found = findFashionMnist(opts);
  if (!found) throw new Error(notFoundMessage(opts));
  const f = fashionMnistFiles(found.dir) as Record<FileKey, string>;
  const o = { classes: [...FASHION_MNIST_CLASSES], name: 'fashion-mnist' };
  return {
    train: loadIdxImages(f.trainImages, f.trainLabels, o),
    test: loadIdxImages(f.testImages, f.testLabels, o),
    dir: found.dir,
    source: found.source,
  };
}

/** The test set (10000) alone, e.g. to evaluate a run whose normalisation was saved with it. */
export function loadFashionMnistTest(opts: { path?: string } = {}): Omit<FashionMnist, 'train'> {
  const found = findFashionMnist(opts);
  if (!found) throw new Error(notFoundMessage(opts));
  const f = fashionMnistFiles(found.dir) as Record<FileKey, string>;
  return {
    test: loadIdxImages(f.testImages, f.testLabels, { classes: [...FASHION_MNIST_CLASSES], name: 'fashion-mnist' }),
    dir: found.dir,
    source: found.source,
  };
}

function sha256(buf: Uint8Array): string {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

/**
 * Check the four files in dir against the recorded SHA-256 of their uncompressed content.
 * Throws naming every file that is missing or differs.
 */
export function verifyFashionMnist(dir: string): void {
  const files = fashionMnistFiles(dir);
  if (!files)
    throw new Error(`${dir}: Fashion-MNIST files missing (${Object.values(FASHION_MNIST_FILES).join(', ')}, each optionally .gz)`);
  const bad: string[] = [];
  for (const k of FILE_KEYS) {
    const file = files[k];
    const want = FASHION_MNIST_SHA256[k];
    if (file.endsWith('.gz') && sha256(fs.readFileSync(file)) === FASHION_MNIST_DEBIAN_GZ_SHA256[k]) continue;
    let data: Buffer;
    try {
      data = readMaybeGzip(file);
    } catch (e) {
      bad.push(`  ${(e as Error).message}`);
      continue;
    }
    const got = sha256(data);
    if (got !== want.sha256) {
      bad.push(
        `  ${file}: SHA-256 of the uncompressed data is ${got} (${data.length} bytes), expected ${want.sha256} (${want.bytes} bytes)`,
      );
    }
  }
  if (bad.length) throw new Error(`Fashion-MNIST in ${dir} failed the checksum check:\n${bad.join('\n')}`);
}

export interface GetOptions {
  /** No progress output. */
  quiet?: boolean;
  /** 'auto' (default): Debian package where apt can install it, else download. */
  method?: 'auto' | 'apt' | 'download';
  /** Log function for progress lines (default console.error). */
  log?: (line: string) => void;
}

export interface GetResult {
  dir: string;
  /** What was done: found already installed, installed with apt, or downloaded. */
  how: 'present' | 'apt' | 'download';
  source: FashionSource;
}

function hasCommand(cmd: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  return r.status === 0;
}

/** How apt-get can be run here: directly (root), through non-interactive sudo, or not at all. */
function aptRunner(): string[] | null {
  if (!hasCommand('apt-get')) return null;
  if (typeof process.getuid === 'function' && process.getuid() === 0) return [];
  if (hasCommand('sudo') && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0) return ['sudo', '-n'];
  return null;
}

function runApt(prefix: string[], args: string[], quiet: boolean): { ok: boolean; output: string } {
  const argv = [...prefix, 'apt-get', ...args];
  const r = spawnSync(argv[0], argv.slice(1), {
    stdio: quiet ? 'pipe' : ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    encoding: 'utf8',
  });
  return { ok: r.status === 0, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}` };
}

async function download(dir: string, log: (s: string) => void): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const base = process.env.RESIDUAL_FASHION_MNIST_URL || FASHION_MNIST_URL;
  for (const k of FILE_KEYS) {
    const name = `${FASHION_MNIST_FILES[k]}.gz`;
    const url = new URL(name, base.endsWith('/') ? base : `${base}/`).href;
    const dest = path.join(dir, name);
    log(`downloading ${url}`);
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      const cause = (e as { cause?: { message?: string } }).cause?.message;
      throw new Error(`cannot download ${url}: ${(e as Error).message}${cause ? ` (${cause})` : ''}`);
    }
    if (!res.ok) throw new Error(`cannot download ${url}: HTTP ${res.status} ${res.statusText}`);
    const body = Buffer.from(await res.arrayBuffer());
    // Check before keeping it, and write through a temporary name so a failed or interrupted
    // download never leaves a file that looks complete.
    let data: Buffer;
    try {
      data = body[0] === 0x1f && body[1] === 0x8b ? zlib.gunzipSync(body) : body;
    } catch (e) {
      throw new Error(`${url}: downloaded file is not valid gzip (${(e as Error).message})`);
    }
    const got = sha256(data);
    if (got !== FASHION_MNIST_SHA256[k].sha256) {
      throw new Error(`${url}: SHA-256 of the downloaded data is ${got}, expected ${FASHION_MNIST_SHA256[k].sha256}; not saved`);
    }
    writeFileAtomic(dest, body);
  }
}

/**
 * `residual data get fashion-mnist`: make Fashion-MNIST available and verified.
 * When it is already found (see findFashionMnist), its checksums are checked. Otherwise, where
 * apt-get can run (as root, or with sudo that needs no password), Debian's
 * dataset-fashion-mnist package is installed; else the published files are downloaded over https
 * into the project cache. Either way the result is verified before it is reported.
 */
export async function getFashionMnist(opts: GetOptions = {}): Promise<GetResult> {
  const quiet = !!opts.quiet;
  const log = quiet ? () => {} : (opts.log ?? ((s: string) => console.error(s)));
  const method = opts.method ?? 'auto';
  if (!['auto', 'apt', 'download'].includes(method))
    throw new Error(`getFashionMnist: method must be 'auto', 'apt' or 'download', got '${method}'`);

  const found = findFashionMnist();
  if (found && method === 'auto') {
    log(`Fashion-MNIST found in ${found.dir} (${found.source}); checking checksums`);
    verifyFashionMnist(found.dir);
    log('checksums OK');
    return { dir: found.dir, how: 'present', source: found.source };
  }

  const problems: string[] = [];
  if (method !== 'download') {
    const apt = aptRunner();
    if (!apt) {
      problems.push(hasCommand('apt-get') ? 'apt-get needs root (or sudo without a password)' : 'apt-get is not available');
    } else {
      log(`installing the Debian package ${DEBIAN_FASHION_MNIST_PACKAGE} with apt-get`);
      let r = runApt(apt, ['install', '-y', DEBIAN_FASHION_MNIST_PACKAGE], quiet);
      if (!r.ok) {
        // Usually a stale or empty package list: refresh it once and retry.
        log('apt-get install failed; running apt-get update and retrying');
        runApt(apt, ['update'], quiet);
        r = runApt(apt, ['install', '-y', DEBIAN_FASHION_MNIST_PACKAGE], quiet);
      }
      if (r.ok && fashionMnistFiles(DEBIAN_FASHION_MNIST_DIR)) {
        verifyFashionMnist(DEBIAN_FASHION_MNIST_DIR);
        log(`installed in ${DEBIAN_FASHION_MNIST_DIR}; checksums OK`);
        return { dir: DEBIAN_FASHION_MNIST_DIR, how: 'apt', source: 'debian' };
      }
      problems.push(
        r.ok
          ? `apt-get installed ${DEBIAN_FASHION_MNIST_PACKAGE} but ${DEBIAN_FASHION_MNIST_DIR} does not hold the files`
          : `apt-get install ${DEBIAN_FASHION_MNIST_PACKAGE} failed${r.output ? `: ${r.output.trim().split('\n').slice(-3).join(' | ')}` : ''}`,
      );
    }
    if (method === 'apt') throw new Error(`cannot install Fashion-MNIST with apt: ${problems.join('; ')}`);
    log(`${problems[problems.length - 1]}; downloading the published files instead`);
  }

  const dir = fashionMnistCacheDir();
  try {
    await download(dir, log);
    verifyFashionMnist(dir);
  } catch (e) {
    problems.push((e as Error).message);
    throw new Error(
      `cannot get Fashion-MNIST:\n  ${problems.join('\n  ')}\nYou can also put the four files in a folder yourself and set RESIDUAL_DATA to it.`,
    );
  }
  log(`downloaded to ${dir}; checksums OK`);
  return { dir, how: 'download', source: 'cache' };
}
