// Releases residual to an npm registry: the prebuilt binaries this machine can build, as the optional
// per-platform packages, then residual itself listing exactly those that are on the registry.
//
//   npm run release -- --registry URL [--dry-run] [--out DIR] [--tag TAG] [--variants cpu,cu130]
//
// 1. Checks first (before any build): the registry answers; this version of residual is not on it yet;
//    you are logged in to it (npm whoami; skipped with --dry-run).
// 2. Builds what this machine can build, incrementally (scripts/install/build.mjs): the TypeScript, and
//    for each variant whose pinned libtorch (scripts/install/libtorch-manifest.json) is here with its
//    build files, the addon. cpu: the libtorch the checkout resolves (LIBTORCH, .libtorch/, the cache),
//    into build/. cu130: LIBTORCH_CU130=/path, or the cache's cu130 libtorch with build files, into
//    build-cuda/ (scripts/ci/build-cuda-check.sh compiles against such a libtorch; a GPU-less machine
//    cannot load it, so the package check below needs the whole CUDA runtime). A variant whose libtorch
//    is missing is not built, not published and not listed; the release says so.
// 3. Makes each platform package (scripts/release/prebuild.mjs: stripped, RUNPATH $ORIGIN, os/cpu/libc
//    and the glibc/GLIBCXX floor read from the ELF files, loaded in a child process) and publishes it.
//    One already on the registry at this version is accepted only when its tarball is the same.
// 4. Writes residual's published manifest with optionalDependencies pinned to the exact version, listing
//    the variants the registry has at this version (asked after step 3: npm ci fails on a lock that
//    names a package the registry does not have), packs and publishes it, and checks what the registry
//    then serves. The repository's package.json is not changed: it stays installable by npm ci.
// Publishing uses npm's own configuration for that registry (a token from npm login / npm adduser, or
// NPM_CONFIG_USERCONFIG pointing at an .npmrc that has one).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { makePlatformPackage } from './prebuild.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const t0 = Date.now();
const secs = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
const say = (msg) => console.log(`[release] ${msg}`);
const bytes = (n) => `${n.toLocaleString('en')} bytes`;
const shown = (p) => (path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p) || '.');

export class ReleaseError extends Error {}

export function parseArgs(argv) {
  const o = { registry: null, dryRun: false, out: path.join(root, 'build', 'release'), tag: null, variants: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new ReleaseError(`${a} needs a value`);
      return v;
    };
    if (a === '--registry') o.registry = val();
    else if (a === '--dry-run') o.dryRun = true;
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--tag') o.tag = val();
    else if (a === '--variants') o.variants = val().split(',').filter(Boolean);
    else if (a === '--help' || a === '-h') o.help = true;
    else throw new ReleaseError(`unknown argument ${a} (see --help)`);
  }
  if (!o.help && !o.registry)
    throw new ReleaseError(
      '--registry URL is required (e.g. --registry https://registry.npmjs.org/); nothing is published anywhere by default',
    );
  if (o.registry) {
    let u;
    try {
      u = new URL(o.registry);
    } catch {
      throw new ReleaseError(`--registry ${o.registry} is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ReleaseError(`--registry ${o.registry}: http or https only`);
    o.registry = u.href.endsWith('/') ? u.href : `${u.href}/`;
  }
  return o;
}

/**
 * residual's published manifest: the repository's, with optionalDependencies pinned to `version` for
 * exactly the platform packages in `published` (names). Nothing else changes.
 */
export function publishedManifest(pkg, published) {
  const out = { ...pkg };
  delete out.optionalDependencies;
  const names = [...new Set(published)].sort();
  if (names.length) out.optionalDependencies = Object.fromEntries(names.map((n) => [n, pkg.version]));
  return out;
}

function npm(args, { cwd = root, json = false, inherit = false } = {}) {
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8', stdio: inherit ? 'inherit' : 'pipe', maxBuffer: 1 << 26 });
  if (r.error) throw new ReleaseError(`npm ${args.join(' ')}: ${r.error.message}`);
  let parsed;
  if (json && r.stdout?.trim()) {
    try {
      parsed = JSON.parse(r.stdout);
    } catch {
      parsed = undefined;
    }
  }
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', json: parsed };
}

/** dist.integrity of name@version on the registry, or null when that version is not there. */
function registryIntegrity(name, version, registry) {
  const r = npm(['view', `${name}@${version}`, 'dist.integrity', '--registry', registry, '--json'], { json: true });
  if (r.status === 0) return r.stdout.trim() ? (r.json ?? r.stdout.trim()) : null; // npm prints nothing for a missing version
  const code = r.json?.error?.code ?? /npm error code (\S+)/.exec(r.stderr)?.[1];
  if (code === 'E404') return null;
  throw new ReleaseError(
    `cannot ask ${registry} about ${name}@${version}: ${(r.json?.error?.summary ?? r.stderr.trim().split('\n').slice(-3).join(' ')) || `npm exit status ${r.status}`}`,
  );
}

/** npm pack DIR into dest: {file, size, unpackedSize, integrity, entryCount, files}. */
function pack(dir, dest) {
  fs.mkdirSync(dest, { recursive: true });
  const r = npm(['pack', '--json', '--pack-destination', dest], { cwd: dir, json: true });
  const info = Array.isArray(r.json) ? r.json[0] : null;
  if (r.status !== 0 || !info) throw new ReleaseError(`npm pack in ${dir} failed: ${r.stderr.trim()}`);
  return {
    file: path.join(dest, info.filename),
    size: info.size,
    unpackedSize: info.unpackedSize,
    integrity: info.integrity,
    entryCount: info.entryCount,
    files: info.files.map((f) => f.path).sort(),
  };
}

function publish(tgz, o, what) {
  const args = [
    'publish',
    tgz,
    '--registry',
    o.registry,
    '--access',
    'public',
    ...(o.tag ? ['--tag', o.tag] : []),
    ...(o.dryRun ? ['--dry-run'] : []),
  ];
  const t = Date.now();
  const r = npm(args);
  if (r.status !== 0) throw new ReleaseError(`npm ${args.join(' ')} failed:\n${r.stderr.trim()}`);
  say(`${o.dryRun ? 'would publish' : 'published'} ${what} to ${o.registry} (${secs(t)})`);
}

/** The variants this machine can release, with the libtorch each is built against; and why others are not. */
async function buildableVariants(o) {
  const T = await import(pathToFileURL(path.join(root, 'dist', 'addon', 'libtorch.js')).href);
  const { loadManifest } = await import(pathToFileURL(path.join(root, 'dist', 'addon', 'manifest.js')).href);
  const manifest = loadManifest().manifest;
  const known = Object.keys(manifest.variants);
  const wanted = o.variants ?? known;
  for (const v of wanted) if (!known.includes(v)) throw new ReleaseError(`--variants ${v}: not a pinned variant (${known.join(', ')})`);
  const ok = [];
  const skipped = [];
  for (const v of wanted) {
    const pinned = manifest.variants[v].torch;
    let lt = null;
    let why = null;
    try {
      if (v === 'cpu') {
        lt = T.findLibtorch({ quiet: true, useRecord: false, env: { ...process.env, RESIDUAL_VARIANT: 'cpu' } });
      } else {
        const envName = `LIBTORCH_${v.toUpperCase()}`;
        lt = process.env[envName]
          ? T.findLibtorch({
              quiet: true,
              useRecord: false,
              env: { ...process.env, LIBTORCH: process.env[envName], LIBTORCH_USE_PYTORCH: '' },
            })
          : T.cachedLibtorch(v);
        if (!lt)
          why = `no CUDA libtorch ${pinned} here (set ${envName}=/path/to/its torch folder, or fetch it with its build files and build: RESIDUAL_VARIANT=${v} node scripts/install/build.mjs --native-only --out build-cuda)`;
      }
    } catch (e) {
      why = e.message;
    }
    if (!why && !lt) why = `no libtorch ${pinned} (${v}) here: npm install in the checkout fetches it`;
    if (!why && lt.variantTag !== v) why = `the libtorch found (${lt.dir}) is ${lt.variantTag}, not ${v}`;
    if (!why && lt.version !== pinned)
      why = `the libtorch found (${lt.dir}) is ${lt.version}, but users fetch the pinned ${pinned}: build against that one`;
    if (!why && !lt.devDir) why = `the libtorch found (${lt.dir}) has no headers or CMake files`;
    if (why) skipped.push({ variant: v, why });
    else ok.push({ variant: v, lt, outDir: path.join(root, v === 'cpu' ? 'build' : 'build-cuda') });
  }
  return { ok, skipped, known };
}

export async function release(argv) {
  const o = parseArgs(argv);
  if (o.help) {
    console.log(
      fs
        .readFileSync(fileURLToPath(import.meta.url), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('//'))
        .map((l) => l.slice(3))
        .join('\n'),
    );
    return;
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const { version } = pkg;
  say(`residual ${version} to ${o.registry}${o.dryRun ? ' (dry run: nothing is published)' : ''}; work folder ${shown(o.out)}`);
  if (pkg.optionalDependencies && Object.keys(pkg.optionalDependencies).length) {
    say(
      `note: package.json lists optionalDependencies (${Object.keys(pkg.optionalDependencies).join(', ')}); the published manifest replaces them with the variants on the registry`,
    );
  }

  // 1. Before building anything.
  const ping = npm(['ping', '--registry', o.registry]);
  if (ping.status !== 0)
    throw new ReleaseError(`the registry ${o.registry} does not answer (npm ping): ${ping.stderr.trim().split('\n').slice(-2).join(' ')}`);
  if (registryIntegrity(pkg.name, version, o.registry))
    throw new ReleaseError(
      `${pkg.name}@${version} is already on ${o.registry}: a published version cannot change; raise "version" in package.json`,
    );
  if (!o.dryRun) {
    const who = npm(['whoami', '--registry', o.registry]);
    if (who.status !== 0)
      throw new ReleaseError(
        `not logged in to ${o.registry} (npm whoami failed): run npm login --registry ${o.registry}, or set NPM_CONFIG_USERCONFIG to an .npmrc with a token for it`,
      );
    say(`registry answers; publishing as ${who.stdout.trim()}`);
  }

  // 2. Build.
  const { buildNative, buildTs } = await import(pathToFileURL(path.join(root, 'scripts', 'install', 'build.mjs')).href);
  let t = Date.now();
  buildTs();
  say(`TypeScript compiled (${secs(t)})`);
  const { ok, skipped, known } = await buildableVariants(o);
  for (const s of skipped) say(`${s.variant}: not built: ${s.why}. It is not published and residual does not list it.`);
  if (!ok.length) throw new ReleaseError('no variant can be built here: nothing to release');
  fs.rmSync(o.out, { recursive: true, force: true });
  fs.mkdirSync(o.out, { recursive: true });
  const platform = [];
  for (const b of ok) {
    t = Date.now();
    say(`${b.variant}: building the addon against libtorch ${b.lt.version} (${b.lt.variantTag}) from ${b.lt.dir} (incremental)`);
    const addon = await buildNative({ outDir: b.outDir, lt: b.lt });
    say(`${b.variant}: built ${path.relative(root, addon)} (${secs(t)})`);
    const p = await makePlatformPackage({ addon, out: path.join(o.out, 'stage'), version, log: (m) => say(m) });
    const tgz = pack(p.pkgDir, o.out);
    say(
      `${p.name}@${version}: ${path.basename(tgz.file)} ${bytes(tgz.size)} packed, ${bytes(tgz.unpackedSize)} unpacked, ${tgz.entryCount} files`,
    );
    platform.push({ ...p, tgz });
  }

  // 3. Platform packages first.
  const listed = [];
  for (const p of platform) {
    const there = registryIntegrity(p.name, version, o.registry);
    if (there) {
      if (there !== p.tgz.integrity)
        throw new ReleaseError(
          `${p.name}@${version} is already on ${o.registry} with other contents (${there}, this build ${p.tgz.integrity}): raise the version`,
        );
      say(`${p.name}@${version} is already on ${o.registry}, the same tarball: not published again`);
    } else {
      publish(p.tgz.file, o, `${p.name}@${version}`);
      if (!o.dryRun) {
        const now = registryIntegrity(p.name, version, o.registry);
        if (now !== p.tgz.integrity)
          throw new ReleaseError(
            `after publishing, ${o.registry} serves ${p.name}@${version} as ${now ?? 'nothing'}, not ${p.tgz.integrity}`,
          );
      }
    }
    listed.push(p.name);
  }
  // Variants built elsewhere (e.g. cu130 on a CUDA machine) are listed when the registry has them at this version.
  const { variantPackageName } = await import(pathToFileURL(path.join(root, 'dist', 'addon', 'tags.js')).href);
  for (const v of known) {
    const name = variantPackageName(v);
    if (listed.includes(name)) continue;
    if (registryIntegrity(name, version, o.registry)) {
      say(`${name}@${version} is on ${o.registry} (published from another machine): listed`);
      listed.push(name);
    } else {
      say(`${name}@${version} is not on ${o.registry}: not listed`);
    }
  }

  // 4. residual itself, as published: the repository's files, with the manifest naming the listed variants.
  const main = publishedManifest(pkg, listed);
  const stage = path.join(o.out, 'stage', 'residual');
  const dry = npm(['pack', '--dry-run', '--json'], { json: true });
  const files = Array.isArray(dry.json) ? dry.json[0].files.map((f) => f.path) : null;
  if (dry.status !== 0 || !files) throw new ReleaseError(`npm pack --dry-run failed: ${dry.stderr.trim()}`);
  fs.rmSync(stage, { recursive: true, force: true });
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(stage, f)), { recursive: true });
    if (f === 'package.json') fs.writeFileSync(path.join(stage, f), JSON.stringify(main, null, 2) + '\n');
    else fs.copyFileSync(path.join(root, f), path.join(stage, f));
  }
  const tgz = pack(stage, o.out);
  if (JSON.stringify(tgz.files) !== JSON.stringify([...files].sort()))
    throw new ReleaseError('the staged package packs other files than the repository does');
  say(
    `${pkg.name}@${version}: ${path.basename(tgz.file)} ${bytes(tgz.size)} packed, ${bytes(tgz.unpackedSize)} unpacked, ${tgz.entryCount} files`,
  );
  say(`${pkg.name}@${version} optionalDependencies: ${JSON.stringify(main.optionalDependencies ?? {})}`);
  publish(tgz.file, o, `${pkg.name}@${version}`);
  if (!o.dryRun) {
    const now = registryIntegrity(pkg.name, version, o.registry);
    if (now !== tgz.integrity)
      throw new ReleaseError(`after publishing, ${o.registry} serves ${pkg.name}@${version} as ${now ?? 'nothing'}, not ${tgz.integrity}`);
    const od = npm(['view', `${pkg.name}@${version}`, 'optionalDependencies', '--registry', o.registry, '--json'], { json: true });
    if (JSON.stringify(od.json ?? {}) !== JSON.stringify(main.optionalDependencies ?? {}))
      throw new ReleaseError(`the registry lists optionalDependencies ${od.stdout.trim()} for ${pkg.name}@${version}`);
  }
  fs.writeFileSync(
    path.join(o.out, 'release.json'),
    JSON.stringify(
      {
        registry: o.registry,
        dryRun: o.dryRun,
        version,
        residual: {
          file: tgz.file,
          size: tgz.size,
          unpackedSize: tgz.unpackedSize,
          integrity: tgz.integrity,
          optionalDependencies: main.optionalDependencies ?? {},
        },
        platform: platform.map((p) => ({
          name: p.name,
          file: p.tgz.file,
          size: p.tgz.size,
          unpackedSize: p.tgz.unpackedSize,
          integrity: p.tgz.integrity,
          binary: p.fileName,
          builtBytes: p.builtBytes,
          strippedBytes: p.bytes,
          floor: p.floor,
          libtorch: p.tag.libtorch,
          variant: p.tag.variant,
        })),
        notBuilt: skipped,
      },
      null,
      2,
    ) + '\n',
  );
  say(
    `${o.dryRun ? 'dry run done' : 'released'}: ${pkg.name}@${version} with ${listed.join(', ')} in ${secs(t0)} (summary: ${shown(path.join(o.out, 'release.json'))})`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  release(process.argv.slice(2)).catch((e) => {
    console.error(
      `[release] failed: ${e instanceof ReleaseError || e.constructor?.name === 'PrebuildError' || e.constructor?.name === 'BuildError' ? e.message : e.stack || e.message}`,
    );
    process.exit(1);
  });
}
