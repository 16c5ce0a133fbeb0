// libtorch fetched by Node alone (lib/addon/fetch.ts), proven without the internet: a mirror laid out
// by scripts/install/mirror.mjs, served over HTTP on 127.0.0.1, RESIDUAL_LIBTORCH_MIRROR pointing at
// it, a temporary RESIDUAL_HOME, and pip isolated from this machine's configuration. A small fake wheel
// (test/support/fake-wheel.ts, pinned through RESIDUAL_LIBTORCH_MANIFEST) keeps the fault tests fast:
// checksum mismatch, truncated body, 404, 500, a stalled server, a download killed midway, two installs
// at once. Each fault ends with a clear error and no partial cache, and a later run succeeds. One test
// fetches the real pinned CPU wheel (192 MB) from the local mirror; it must run in CI.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedLibtorch, findLibtorch } from '../../lib/addon/libtorch.js';
import { entryPart, parseRecord, pipSpec } from '../../lib/addon/fetch.js';
import { fileUrl, loadManifest } from '../../lib/addon/manifest.js';
import { FAKE_FILES, FAKE_WHEEL, fakeManifest, makeFakeWheel } from '../support/fake-wheel.js';
import { root } from '../support/helpers.js';
// @ts-expect-error a plain .mjs script without types
import { layOutMirror } from '../../scripts/install/mirror.mjs';
// @ts-expect-error a plain .mjs script without types
import { findLocalFile, localWheelDirs } from '../../scripts/install/local-wheels.mjs';

const register = path.join(root, 'test', 'fixtures', 'ddp', 'register.mjs');
const child = path.join(root, 'test', 'fixtures', 'install', 'fetch-child.ts');
let tmp: string;
let wheelsDir: string;
let mirrorDir: string;
let manifestFile: string;
let badManifestFile: string;
let wheelBytes: Buffer;
const live = new Set<ChildProcess>();

type Mode = 'ok' | 'corrupt' | 'truncate' | '404' | '500' | '500-once' | 'stall' | 'slow' | 'bad-record';
let mode: Mode = 'ok';
let requests: { url: string; range?: string }[] = [];
let sentBytes = 0;
let server: http.Server;
let base = '';

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-fetch-'));
  wheelsDir = path.join(tmp, 'wheels');
  const pin = await makeFakeWheel(path.join(wheelsDir, FAKE_WHEEL));
  wheelBytes = fs.readFileSync(path.join(wheelsDir, FAKE_WHEEL));
  manifestFile = path.join(tmp, 'manifest.json');
  fs.writeFileSync(manifestFile, JSON.stringify(fakeManifest(pin)));
  // A second wheel whose RECORD disagrees with libc10.so (the wheel's own sha256 is pinned right).
  const badPin = await makeFakeWheel(path.join(tmp, 'bad', FAKE_WHEEL), { corruptEntry: 'torch/lib/libc10.so' });
  badManifestFile = path.join(tmp, 'bad-manifest.json');
  fs.writeFileSync(badManifestFile, JSON.stringify(fakeManifest(badPin)));
  // The operator's tool lays out the mirror (from --from, verified against the manifest).
  mirrorDir = path.join(tmp, 'mirror');
  layOutMirror(mirrorDir, { variants: ['cpu'], from: [wheelsDir], manifestFile, log: () => {} });
  const badBytes = fs.readFileSync(path.join(tmp, 'bad', FAKE_WHEEL));

  server = http.createServer((req, res) => {
    requests.push({ url: req.url!, range: req.headers.range });
    const rel = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    if (rel.endsWith('/')) {
      // A PEP 503 page (the pip test)
      const page = path.join(mirrorDir, rel, 'index.html');
      if (!fs.existsSync(page)) return void res.writeHead(404).end('not found');
      return void res.writeHead(200, { 'content-type': 'text/html' }).end(fs.readFileSync(page));
    }
    const file = path.join(mirrorDir, rel);
    if (mode === '404' || !file.startsWith(mirrorDir) || !fs.existsSync(file)) return void res.writeHead(404).end('not found');
    if (mode === '500' || (mode === '500-once' && requests.length === 1)) return void res.writeHead(500).end('boom');
    let body = mode === 'bad-record' ? badBytes : wheelBytes;
    if (mode === 'corrupt') {
      body = Buffer.from(body);
      body[body.length >> 1] ^= 0xff;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m && Number(m[1]) < body.length) {
      start = Number(m[1]);
      res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else res.writeHead(200, { 'content-length': body.length });
    const rest = body.subarray(start);
    if (mode === 'truncate') {
      res.write(rest.subarray(0, rest.length >> 1));
      sentBytes += rest.length >> 1;
      setTimeout(() => res.destroy(), 20);
      return;
    }
    if (mode === 'stall') {
      res.write(rest.subarray(0, 100_000)); // then nothing, connection open
      return;
    }
    if (mode === 'slow') {
      let off = 0;
      const tick = () => {
        if (res.destroyed) return;
        if (off >= rest.length) return void res.end();
        const n = Math.min(64 * 1024, rest.length - off);
        res.write(rest.subarray(off, off + n));
        off += n;
        sentBytes += n;
        setTimeout(tick, 40);
      };
      return tick();
    }
    res.end(rest);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  for (const c of live) c.kill('SIGKILL');
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The environment of a user's install: a fresh RESIDUAL_HOME, the mirror, pip isolated from this machine. */
function env(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of [
    'LIBTORCH',
    'LIBTORCH_USE_PYTORCH',
    'RESIDUAL_ADDON',
    'PIP_FIND_LINKS',
    'PIP_CONSTRAINT',
    'PIP_INDEX_URL',
    'PIP_EXTRA_INDEX_URL',
    'RESIDUAL_LIBTORCH_FETCH',
  ])
    delete e[k];
  return {
    ...e,
    PIP_CONFIG_FILE: '/dev/null',
    PIP_NO_INPUT: '1',
    RESIDUAL_HOME: home,
    RESIDUAL_VARIANT: 'cpu',
    RESIDUAL_LIBTORCH_MIRROR: base,
    RESIDUAL_LIBTORCH_MANIFEST: manifestFile,
    RESIDUAL_FETCH_RETRIES: '0',
    RESIDUAL_FETCH_TIMEOUT: '2',
    RESIDUAL_LOCK_STALE: '2',
    ...extra,
  };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  error: string | null;
  result: any;
}

function start(home: string, extra: Record<string, string> = {}, args: string[] = []): { proc: ChildProcess; done: Promise<Run> } {
  const proc = spawn(process.execPath, ['--import', register, child, 'cpu', ...args], {
    env: env(home, extra),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += String(d)));
  proc.stderr!.on('data', (d) => (stderr += String(d)));
  const done = new Promise<Run>((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    proc.on('exit', (code) => {
      clearTimeout(kill);
      live.delete(proc);
      const r = /@@result(.*)/.exec(stdout)?.[1];
      resolve({ code, stdout, stderr, error: /@@error ([\s\S]*)/.exec(stderr)?.[1]?.trim() ?? null, result: r ? JSON.parse(r) : null });
    });
  });
  return { proc, done };
}

const fetchOnce = (home: string, extra: Record<string, string> = {}, args: string[] = []) => start(home, extra, args).done;

function newHome(): string {
  return fs.mkdtempSync(path.join(tmp, 'home-'));
}

/** Nothing in the libtorch cache that a reader would take: no variant folder, no staging leftovers. */
function expectNoCache(home: string): void {
  const e = { RESIDUAL_HOME: home, RESIDUAL_VARIANT: 'cpu', RESIDUAL_LIBTORCH_MANIFEST: manifestFile };
  expect(cachedLibtorch('cpu', e)).toBeNull();
  const dir = path.join(home, 'libtorch');
  const left = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => !f.endsWith('.lock')) : [];
  expect(left, 'the libtorch cache holds nothing').toEqual([]);
}

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path.join(d, e.name), r);
      else out.push(r);
    }
  };
  walk(dir, '');
  return out.sort();
}

describe('manifest, mirror URLs, wheel parts (pure)', () => {
  it('the committed manifest pins cpu (PyTorch) and cu130 (PyPI) files by size and sha256', () => {
    const { manifest } = loadManifest({});
    expect(manifest.variants.cpu.files.map((f) => f.name)).toEqual(['torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl']);
    expect(manifest.variants.cpu.files[0]).toMatchObject({
      size: 191794682,
      sha256: '6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b',
    });
    expect(manifest.variants.cpu.files[0].url).toBe(
      'https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl',
    );
    const cu = manifest.variants.cu130;
    expect(cu.torch).toBe('2.14.1');
    expect(cu.files[0].name).toBe('torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl');
    for (const lib of [
      'nvidia_cudnn_cu13',
      'nvidia_cublas',
      'nvidia_cuda_runtime',
      'nvidia_nccl_cu13',
      'nvidia_cusparselt_cu13',
      'nvidia_nvjitlink',
    ]) {
      expect(
        cu.files.some((f) => f.name.startsWith(`${lib}-`)),
        lib,
      ).toBe(true);
    }
    for (const f of cu.files)
      expect(f.url).toMatch(
        new RegExp(`^https://files\\.pythonhosted\\.org/packages/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{60}/${f.name.replace(/[.+]/g, '\\$&')}$`),
      );
    expect(cu.files.some((f) => /cuda_bindings|triton|cuda_toolkit/.test(f.name))).toBe(false);
  });

  it('RESIDUAL_LIBTORCH_MIRROR replaces scheme and host, keeps the path (with the mirror path in front)', () => {
    const f = {
      name: FAKE_WHEEL,
      role: 'torch' as const,
      size: 1,
      sha256: '0'.repeat(64),
      url: 'https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-x.whl',
    };
    expect(fileUrl(f, '')).toBe(f.url); // unset (undefined reads the environment, which CI sets to its local mirror)
    expect(fileUrl(f, 'http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080/whl/cpu/torch-2.13.0%2Bcpu-x.whl');
    expect(fileUrl(f, 'https://art.corp/pytorch/')).toBe('https://art.corp/pytorch/whl/cpu/torch-2.13.0%2Bcpu-x.whl');
    expect(() => fileUrl(f, 'ftp://x')).toThrow(/only http and https/);
    expect(() => fileUrl(f, 'not a url')).toThrow(/RESIDUAL_LIBTORCH_MIRROR=not a url is not a URL/);
  });

  it('a manifest that is not well formed is refused with what is wrong', () => {
    const bad = path.join(tmp, 'invalid.json');
    fs.writeFileSync(
      bad,
      JSON.stringify({
        format: 1,
        variants: { cpu: { torch: '2.13.0', files: [{ name: '../x.whl', role: 'torch', size: 1, sha256: 'ab', url: 'https://x/y' }] } },
      }),
    );
    expect(() => loadManifest({ RESIDUAL_LIBTORCH_MANIFEST: bad })).toThrow(/invalid: cpu: file name "..\/x.whl"/);
  });

  it('keeps what runs and what builds, skips Python and test libraries; parses RECORD', () => {
    expect(entryPart('torch', 'torch/lib/libtorch_cpu.so')).toBe('lib');
    expect(entryPart('torch', 'torch/lib/libgomp.so.1')).toBe('lib');
    expect(entryPart('torch', 'torch/version.py')).toBe('lib');
    expect(entryPart('torch', 'torch/lib/libtorch_python.so')).toBeNull();
    expect(entryPart('torch', 'torch/lib/libjitbackend_test.so')).toBeNull();
    expect(entryPart('torch', 'torch/lib/libshm/libshm.h')).toBeNull();
    expect(entryPart('torch', 'torch/include/torch/torch.h')).toBe('dev');
    expect(entryPart('torch', 'torch/share/cmake/Torch/TorchConfig.cmake')).toBe('dev');
    expect(entryPart('torch', 'torch/__init__.py')).toBeNull();
    expect(entryPart('cuda-library', 'nvidia/cudnn/lib/libcudnn.so.9')).toBe('lib');
    expect(entryPart('cuda-library', 'nvidia/cu13/lib/libcublas.so.13')).toBe('lib');
    expect(entryPart('cuda-library', 'nvidia/cudnn/include/cudnn.h')).toBeNull();
    const rec = parseRecord('torch/a.py,sha256=AbC,12\n"torch/we,ird.h",sha256=XyZ,3\ntorch-2.dist-info/RECORD,,\n');
    expect([...rec]).toEqual([
      ['torch/a.py', 'AbC'],
      ['torch/we,ird.h', 'XyZ'],
    ]);
    expect(pipSpec('torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl')).toBe('torch==2.13.0+cpu');
    expect(pipSpec('nvidia_cublas-13.1.1.3-py3-none-manylinux_2_27_x86_64.whl')).toBe('nvidia-cublas==13.1.1.3');
  });
});

describe('the resolver (lib/addon/libtorch.ts)', () => {
  const touch = (f: string, body = 'x') => {
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, body);
  };
  it('reads the cache layout of earlier versions (site/torch with include/ and share/ inside) as runtime and build files', () => {
    const home = newHome();
    const torch = path.join(home, 'libtorch', '2.13.0-cpu', 'site', 'torch');
    touch(path.join(torch, 'lib', 'libtorch_cpu.so'));
    touch(path.join(torch, 'version.py'), "__version__ = '2.13.0+cpu'\n");
    touch(path.join(torch, 'include', 'torch', 'torch.h'));
    touch(path.join(torch, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'));
    const e = { RESIDUAL_HOME: home, RESIDUAL_VARIANT: 'cpu', RESIDUAL_LIBTORCH_MANIFEST: manifestFile };
    expect(cachedLibtorch('cpu', e)).toBeNull(); // not marked VERIFIED: never trusted
    touch(path.join(home, 'libtorch', '2.13.0-cpu', 'VERIFIED'), '{}');
    expect(cachedLibtorch('cpu', e)).toMatchObject({ dir: torch, devDir: torch, version: '2.13.0', variantTag: 'cpu', source: 'cache' });
  });
  it('LIBTORCH naming something else is an error, not ignored; the install record is used when nothing is set', () => {
    const e = { RESIDUAL_HOME: newHome(), RESIDUAL_VARIANT: 'cpu', RESIDUAL_LIBTORCH_MANIFEST: manifestFile };
    expect(() => findLibtorch({ quiet: true, root: tmp, env: { ...e, LIBTORCH: tmp } })).toThrow(
      /LIBTORCH=.* is not a libtorch folder \(expected lib\/libtorch_cpu\.so inside/,
    );
    const pkg = fs.mkdtempSync(path.join(tmp, 'pkg-'));
    const lt = path.join(tmp, 'some-libtorch');
    touch(path.join(lt, 'lib', 'libtorch_cpu.so'));
    touch(path.join(pkg, 'build', 'libtorch.json'), JSON.stringify({ dir: lt, source: 'LIBTORCH' }));
    expect(findLibtorch({ quiet: true, root: pkg, env: e })).toMatchObject({ dir: lt, source: 'install', devDir: null });
    expect(findLibtorch({ quiet: true, root: pkg, env: e, useRecord: false })).toBeNull();
  });
});

describe('fetching from a mirror on 127.0.0.1 (fake wheel)', () => {
  it('fetches what runs only, verified, published whole; then the build files on demand; then nothing', async () => {
    const home = newHome();
    mode = 'ok';
    requests = [];
    const r = await fetchOnce(home);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`from the mirror ${base} (RESIDUAL_LIBTORCH_MIRROR)`);
    expect(r.stderr).toMatch(/sha256 verified/);
    expect(r.stderr).toMatch(/unpacked what runs: 5 files, .* each checked against its wheel's RECORD/);
    expect(requests.map((q) => q.url)).toEqual([`/whl/cpu/${encodeURIComponent(FAKE_WHEEL)}`]);
    const cache = path.join(home, 'libtorch', '2.13.0-cpu');
    expect(files(cache)).toEqual([
      'VERIFIED',
      'site/torch/lib/libc10.so',
      'site/torch/lib/libgomp.so.1',
      'site/torch/lib/libtorch.so',
      'site/torch/lib/libtorch_cpu.so',
      'site/torch/version.py',
    ]);
    expect(fs.readFileSync(path.join(cache, 'site/torch/lib/libtorch_cpu.so')).equals(FAKE_FILES['torch/lib/libtorch_cpu.so'])).toBe(true);
    expect(fs.statSync(path.join(cache, 'site/torch/lib/libc10.so')).mode & 0o111).not.toBe(0);
    expect(r.result).toMatchObject({ version: '2.13.0', variantTag: 'cpu', devDir: null, source: 'fetched' });
    // No wheel or partial download is kept.
    expect(fs.readdirSync(path.join(home, 'downloads'))).toEqual([]);
    // The resolver finds it (what the runtime does), without build files.
    const e = { RESIDUAL_HOME: home, RESIDUAL_VARIANT: 'cpu', RESIDUAL_LIBTORCH_MANIFEST: manifestFile };
    expect(findLibtorch({ quiet: true, useRecord: false, root: tmp, env: e })).toMatchObject({
      dir: path.join(cache, 'site', 'torch'),
      source: 'cache',
      devDir: null,
    });

    // A source build asks for the build files: fetched and published as dev/, lib linked.
    requests = [];
    const d = await fetchOnce(home, {}, ['dev']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stderr).toMatch(/for the headers and CMake files a source build needs/);
    expect(requests).toHaveLength(1);
    expect(files(path.join(cache, 'dev'))).toEqual([
      'VERIFIED',
      'torch/include/ATen/ATen.h',
      'torch/include/torch/torch.h',
      'torch/lib',
      'torch/share/cmake/Torch/TorchConfig.cmake',
    ]);
    expect(fs.readlinkSync(path.join(cache, 'dev', 'torch', 'lib'))).toBe('../../site/torch/lib');
    expect(fs.existsSync(path.join(cache, 'dev', 'torch', 'lib', 'libtorch_cpu.so'))).toBe(true);
    expect(cachedLibtorch('cpu', e)).toMatchObject({
      devDir: path.join(cache, 'dev', 'torch'),
      cmakePrefix: path.join(cache, 'dev', 'torch', 'share', 'cmake'),
    });

    // Everything there: no request at all.
    requests = [];
    const again = await fetchOnce(home, {}, ['dev']);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/is in the cache/);
    expect(requests).toEqual([]);
  });

  const faults: { mode: Mode; why: RegExp; extra?: Record<string, string>; keeps?: boolean }[] = [
    {
      mode: 'corrupt',
      why: /checksum mismatch for torch-2\.13\.0\+cpu-.*\.whl from http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/.*: sha256 [0-9a-f]{64}, pinned [0-9a-f]{64}.*nothing was kept/,
    },
    {
      mode: 'truncate',
      why: /the download from http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\S+ (ended|broke off) after 1\.\d MB of 3\.\d MB/,
      keeps: true,
    },
    {
      mode: '404',
      why: /HTTP 404 Not Found for http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\S+: the server does not have this file \(is the mirror complete\? lay one out with: npm run libtorch:mirror -- DIR\)/,
    },
    { mode: '500', why: /HTTP 500 Internal Server Error from http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\S+ \(a server error\)/ },
    {
      mode: 'stall',
      why: /no data from http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\S+ for 1 s \(a stalled connection; RESIDUAL_FETCH_TIMEOUT=seconds allows longer\)/,
      extra: { RESIDUAL_FETCH_TIMEOUT: '1' },
      keeps: true,
    },
    {
      mode: 'bad-record',
      why: /checksum mismatch for torch\/lib\/libc10\.so in torch-2\.13\.0\+cpu-.*\.whl \(RECORD says sha256=/,
      extra: { RESIDUAL_LIBTORCH_MANIFEST: '' },
    },
  ];
  for (const f of faults) {
    it(`${f.mode}: a clear error naming the URL, no partial cache; a later run succeeds`, async () => {
      const home = newHome();
      mode = f.mode;
      requests = [];
      const extra = { ...(f.extra ?? {}) };
      if (f.mode === 'bad-record') extra.RESIDUAL_LIBTORCH_MANIFEST = badManifestFile;
      const r = await fetchOnce(home, extra);
      expect(r.code, r.stderr).toBe(3);
      expect(r.error).toMatch(f.why);
      expectNoCache(home);
      const parts = fs.existsSync(path.join(home, 'downloads')) ? fs.readdirSync(path.join(home, 'downloads')) : [];
      if (f.keeps) {
        // An interruption keeps the bytes received, and says so: the next try continues from there.
        expect(parts).toEqual([`${FAKE_WHEEL}.part`]);
        expect(r.error).toMatch(/MB received are kept in .*; the next try continues from there/);
      } else expect(parts).toEqual([]);
      if (f.mode === 'bad-record') return; // that wheel is bad for good; the good one is tested above
      mode = 'ok';
      requests = [];
      const ok = await fetchOnce(home);
      expect(ok.code, ok.stderr).toBe(0);
      if (f.keeps) {
        expect(ok.stderr).toMatch(/continuing an earlier download at \d/);
        expect(requests[0].range).toMatch(/^bytes=\d+-$/);
      }
      expect(
        cachedLibtorch('cpu', { RESIDUAL_HOME: home, RESIDUAL_VARIANT: 'cpu', RESIDUAL_LIBTORCH_MANIFEST: manifestFile }),
      ).not.toBeNull();
    });
  }

  it('a 500 once, then success: retried (RESIDUAL_FETCH_RETRIES)', async () => {
    const home = newHome();
    mode = '500-once';
    requests = [];
    const r = await fetchOnce(home, { RESIDUAL_FETCH_RETRIES: '2' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/HTTP 500 .*; retrying in 1 s \(1 of 2\)/);
    expect(requests).toHaveLength(2);
  });

  it('a download killed midway (SIGKILL) leaves no cache; the next run takes over the lock, continues and succeeds', async () => {
    const home = newHome();
    mode = 'slow';
    requests = [];
    sentBytes = 0;
    const { proc, done } = start(home);
    const t0 = Date.now();
    while (sentBytes < 1_000_000 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
    expect(sentBytes).toBeGreaterThan(1_000_000);
    proc.kill('SIGKILL');
    const killed = await done;
    expect(killed.code).toBeNull();
    expectNoCache(home);
    expect(fs.existsSync(path.join(home, 'libtorch', '2.13.0-cpu.lock')), 'the killed process left its lock').toBe(true);
    mode = 'ok';
    requests = [];
    const r = await fetchOnce(home);
    expect(r.code, r.stderr).toBe(0);
    // The dead process's lock: waited for until stale (2 s here), or found stale already and taken over.
    expect(r.stderr).toMatch(
      /waiting for it \(a lock left by a killed process is taken over after 2 s\)|taking over the lock .*2\.13\.0-cpu\.lock, left \d+ s ago by an install that stopped/,
    );
    expect(r.stderr).toMatch(/continuing an earlier download at [1-9]/);
    expect(requests.map((q) => q.range)).toEqual([expect.stringMatching(/^bytes=\d+-$/)]);
    expect(fs.existsSync(path.join(home, 'libtorch', '2.13.0-cpu.lock'))).toBe(false);
  });

  it('two installs at once: one downloads, the other waits and finds the cache ready', async () => {
    const home = newHome();
    mode = 'slow';
    requests = [];
    const a = start(home);
    await new Promise((r) => setTimeout(r, 300));
    const b = start(home);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    expect(requests).toHaveLength(1);
    // Whichever came second waited, then found the cache ready.
    const waited = [ra, rb].filter((r) => /another residual install is fetching libtorch .*; waiting for it/.test(r.stderr));
    expect(waited).toHaveLength(1);
    expect(waited[0].stderr).toMatch(/is in the cache/);
    expect(ra.result.dir).toBe(rb.result.dir);
  });

  it('RESIDUAL_LIBTORCH_FETCH=pip: pip (isolated, its index on 127.0.0.1) downloads the pinned file; residual verifies and unpacks it', async (ctx) => {
    const pip = spawnSync('python3', ['-m', 'pip', '--version'], { encoding: 'utf8' });
    if (pip.status !== 0) return ctx.skip();
    // A PEP 503 index for the fake wheel, beside the mirror.
    const index = path.join(mirrorDir, 'simple', 'torch');
    fs.mkdirSync(index, { recursive: true });
    fs.writeFileSync(
      path.join(index, 'index.html'),
      `<!DOCTYPE html><html><body><a href="../../whl/cpu/${encodeURIComponent(FAKE_WHEEL)}">${FAKE_WHEEL}</a></body></html>\n`,
    );
    const home = newHome();
    mode = 'ok';
    const r = await fetchOnce(home, { RESIDUAL_LIBTORCH_FETCH: 'pip', PIP_INDEX_URL: `${base}/simple/`, RESIDUAL_LIBTORCH_MIRROR: '' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/with pip \(RESIDUAL_LIBTORCH_FETCH=pip\)/);
    expect(r.stderr).toMatch(/torch==2\.13\.0\+cpu/);
    expect(r.stderr).toMatch(/from pip, sha256 verified/);
    expect(fs.existsSync(path.join(home, 'libtorch', '2.13.0-cpu', 'site', 'torch', 'lib', 'libtorch_cpu.so'))).toBe(true);
    // pip offline (no index answers): a clear error naming pip and the way back.
    const off = await fetchOnce(newHome(), {
      RESIDUAL_LIBTORCH_FETCH: 'pip',
      PIP_INDEX_URL: 'http://127.0.0.1:9/simple/',
      PIP_RETRIES: '0',
      PIP_TIMEOUT: '2',
      RESIDUAL_LIBTORCH_MIRROR: '',
    });
    expect(off.code).toBe(3);
    expect(off.error).toMatch(/pip could not download torch==2\.13\.0\+cpu .*unset RESIDUAL_LIBTORCH_FETCH/);
  });
});

describe('the real pinned CPU wheel through a local mirror', () => {
  const local = findLocalFile('torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl', localWheelDirs()) as string | null;
  // CI runs on a machine that has the wheel: there the test must not skip.
  it.runIf(local !== null || process.env.CI === 'true')(
    'npm run libtorch:mirror lays it out; Node fetches, verifies and unpacks it (no pip, no python)',
    async () => {
      if (!local) throw new Error('CI: the local torch 2.13.0+cpu wheel was not found (pip find-links or /opt/wheels)');
      const dir = path.join(tmp, 'real-mirror');
      const lay = spawnSync(process.execPath, [path.join(root, 'scripts', 'install', 'mirror.mjs'), dir], { encoding: 'utf8' });
      expect(lay.status, lay.stderr).toBe(0);
      expect(lay.stderr).toMatch(/mirror ready in .* \(cpu: 191\.8 MB\)/);
      const srv = spawn(process.execPath, [path.join(root, 'scripts', 'install', 'serve-mirror.mjs'), dir], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      live.add(srv);
      try {
        const url = await new Promise<string>((resolve, reject) => {
          srv.stdout!.on('data', (d) => {
            const m = /listening on (http:\/\/\S+)/.exec(String(d));
            if (m) resolve(m[1]);
          });
          srv.on('exit', () => reject(new Error('the mirror server exited')));
        });
        const home = newHome();
        const r = await fetchOnce(home, {
          RESIDUAL_LIBTORCH_MIRROR: url,
          RESIDUAL_LIBTORCH_MANIFEST: '',
          RESIDUAL_FETCH_TIMEOUT: '60',
          PATH: path.dirname(process.execPath),
        });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toMatch(/191\.8 MB in [\d.]+ s .* sha256 verified/);
        const lib = path.join(home, 'libtorch', '2.13.0-cpu', 'site', 'torch', 'lib');
        const got = fs.readdirSync(lib).sort();
        expect(got).toEqual(['libc10.so', 'libgomp.so.1', 'libtorch.so', 'libtorch_cpu.so', 'libtorch_global_deps.so']);
        expect(fs.statSync(path.join(lib, 'libtorch_cpu.so')).size).toBe(434184800);
        expect(r.result).toMatchObject({ version: '2.13.0', variantTag: 'cpu', devDir: null });
        expect(fs.existsSync(path.join(home, 'libtorch', '2.13.0-cpu', 'site', 'torch', 'include'))).toBe(false);
      } finally {
        srv.kill('SIGKILL');
        live.delete(srv);
      }
    },
  );
});
