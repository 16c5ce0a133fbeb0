// Builds the native addon with cmake-js against the resolved libtorch (lib/addon/libtorch.ts, fetched
// with its build files by lib/addon/fetch.ts when missing), then compiles the TypeScript.
// Incremental: when nothing native changed, make does nothing.
//   node scripts/install/build.mjs [--native-only|--ts-only] [--out DIR]
// Environment: LIBTORCH, LIBTORCH_USE_PYTORCH, RESIDUAL_HOME, RESIDUAL_VARIANT, RESIDUAL_LIBTORCH_MIRROR,
// GLOO_INCLUDE_DIR, RESIDUAL_CMAKE_DEFS (see README).
//
// The toolchain (cmake-js, node-addon-api) is a devDependency: a checkout has it, a user of a prebuilt
// binary never downloads it. A source build outside a checkout installs it on demand into a private
// folder (RESIDUAL_HOME/build-tools/...), and says so.
//
// CMake is configured again whenever what it was configured with changes (libtorch, gloo's headers,
// node-addon-api) or the last configure did not finish: a failed configure never poisons the next try.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const say = (msg) => console.error(`[residual] ${msg}`);
export const isCheckout = fs.existsSync(path.join(root, 'lib')) && fs.existsSync(path.join(root, 'tsconfig.json'));

export class BuildError extends Error {}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) throw new BuildError(`failed (${r.error ? r.error.message : `exit status ${r.status}`}): ${cmd} ${argv.join(' ')}`);
}

/** The compiled TypeScript's modules (dist/): a checkout compiles them first when missing. */
export async function distModule(rel) {
  const file = path.join(root, 'dist', rel);
  if (!fs.existsSync(file)) {
    if (!isCheckout) throw new BuildError(`${file} is missing (a broken package?)`);
    say('git checkout without dist/: compiling the TypeScript');
    buildTs();
  }
  return import(pathToFileURL(file).href);
}

/** Where gloo's headers are, searched as native/dist.cmake searches them; null when absent. */
export function glooInclude(env = process.env) {
  if (/(^|\s)RESIDUAL_WITH_GLOO=(OFF|0|FALSE|NO)(\s|$)/i.test(env.RESIDUAL_CMAKE_DEFS ?? '')) return null;
  for (const d of [env.GLOO_INCLUDE_DIR, '/usr/include', '/usr/local/include'].filter(Boolean)) {
    if (fs.existsSync(path.join(d, 'gloo', 'algorithm.h'))) return d;
  }
  return null;
}

/** The versions residual's package.json asks for (devDependencies: the source-build toolchain). */
function toolVersions() {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const want = { ...(pkg.dependencies ?? {}), ...(pkg.devDependencies ?? {}) };
  return { 'cmake-js': want['cmake-js'] ?? '^8.0.0', 'node-addon-api': want['node-addon-api'] ?? '^8.5.0' };
}

function resolveFrom(base, spec) {
  try {
    return createRequire(path.join(base, 'package.json')).resolve(spec);
  } catch {
    return null;
  }
}

/**
 * cmake-js and node-addon-api: from this package (a checkout's devDependencies, or a project that
 * installed them), else installed on demand into RESIDUAL_HOME/build-tools/<versions>.
 */
export async function buildTools({ quiet = false } = {}) {
  const find = (base) => {
    const cmakeJs = resolveFrom(base, 'cmake-js/bin/cmake-js');
    const naa = resolveFrom(base, 'node-addon-api/package.json');
    return cmakeJs && naa ? { cmakeJs, naaInclude: path.dirname(naa), from: base } : null;
  };
  const own = find(root);
  if (own) return own;
  if (isCheckout)
    throw new BuildError('cmake-js and node-addon-api are missing from this checkout: run npm install (they are devDependencies)');
  const versions = toolVersions();
  const { residualHome } = await distModule(path.join('addon', 'libtorch.js'));
  const tag = Object.entries(versions)
    .map(([n, v]) => `${n}@${v}`)
    .join('+')
    .replace(/[^\w.@+-]/g, '_');
  const dir = path.join(residualHome(), 'build-tools', tag);
  const have = find(dir);
  if (have) {
    if (!quiet) say(`build toolchain (cmake-js, node-addon-api) from ${dir}`);
    return have;
  }
  const specs = Object.entries(versions).map(([n, v]) => `${n}@${v}`);
  say(
    `a source build needs cmake-js and node-addon-api, which users of prebuilt binaries do not download: installing ${specs.join(' ')} into ${dir}`,
  );
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'residual-build-tools', private: true }, null, 2) + '\n');
  const npmCli =
    process.env.npm_execpath && /npm-cli\.js$/.test(process.env.npm_execpath)
      ? [process.execPath, [process.env.npm_execpath]]
      : ['npm', []];
  const r = spawnSync(
    npmCli[0],
    [...npmCli[1], 'install', '--no-audit', '--no-fund', '--no-package-lock', '--ignore-scripts', '--omit=dev', ...specs],
    { cwd: dir, stdio: 'inherit' },
  );
  const tools = r.status === 0 ? find(dir) : null;
  if (!tools) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new BuildError(
      `could not install ${specs.join(' ')} into ${dir} (${r.error ? r.error.message : `npm exit status ${r.status}`}); install them beside residual instead (npm install ${specs.join(' ')}) and run the build again`,
    );
  }
  return tools;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Builds build/Release/residual.node (or in outDir). `lt`: the libtorch with its build files (resolved
 * and fetched when not given). Throws BuildError on failure.
 */
export async function buildNative({ outDir = path.join(root, 'build'), lt = null, tools = null, quiet = false } = {}) {
  if (!lt) {
    const F = await distModule(path.join('addon', 'fetch.js'));
    lt = await F.ensureLibtorch({ dev: true, quiet });
  }
  if (!lt.devDir) throw new BuildError(`the libtorch in use (${lt.dir}) has no headers or CMake files`);
  tools = tools ?? (await buildTools({ quiet }));
  const jobs = String(Math.max(1, Math.min(os.availableParallelism?.() ?? os.cpus().length, 16)));
  const gloo = glooInclude();
  const defs = [
    `--CDTorch_DIR=${path.join(lt.devDir, 'share', 'cmake', 'Torch')}`,
    '--CDCMAKE_BUILD_TYPE=Release',
    `--CDNODE_ADDON_API_DIR=${tools.naaInclude}`,
  ];
  // Extra CMake definitions, e.g. RESIDUAL_CMAKE_DEFS="CUDA_nvrtc_LIBRARY=/path/libnvrtc.so.13".
  for (const d of (process.env.RESIDUAL_CMAKE_DEFS ?? '').split(/\s+/).filter(Boolean)) defs.push(`--CD${d}`);
  if (lt.variant === 'cuda' && process.env.TORCH_CUDA_ARCH_LIST) defs.push(`--CDTORCH_CUDA_ARCH_LIST=${process.env.TORCH_CUDA_ARCH_LIST}`);

  // Configure again when the inputs changed or the last configure did not finish.
  const stampFile = path.join(outDir, 'residual-configure.json');
  const stamp = { defs, gloo, cmakeJs: tools.cmakeJs };
  const old = readJson(stampFile);
  const configured = fs.existsSync(path.join(outDir, 'CMakeCache.txt')) && fs.existsSync(path.join(outDir, 'Makefile'));
  const cmakeJs = [tools.cmakeJs, '--out', outDir, '--prefer-make', ...defs, '-l', 'warn'];
  say(
    `building the addon against libtorch ${lt.version} (${lt.variant}) with ${jobs} jobs into ${path.relative(root, outDir) || '.'}; gloo's headers: ${gloo ?? "not found (no 'gloo' backend for dist: apt-get install libgloo-dev to have it)"}`,
  );
  if (!configured || JSON.stringify(old) !== JSON.stringify(stamp)) {
    if (configured || fs.existsSync(path.join(outDir, 'CMakeCache.txt')))
      say(old ? 'the configuration changed: running CMake again' : 'the last CMake run did not finish: running it again');
    // A fresh configure (the compiled objects stay, so make rebuilds only what changed).
    fs.rmSync(path.join(outDir, 'CMakeCache.txt'), { force: true });
    fs.rmSync(stampFile, { force: true });
    try {
      run(process.execPath, [cmakeJs[0], 'configure', ...cmakeJs.slice(1)]);
    } catch (e) {
      fs.rmSync(path.join(outDir, 'CMakeCache.txt'), { force: true });
      throw e;
    }
    fs.writeFileSync(stampFile, JSON.stringify(stamp, null, 2) + '\n');
  }
  run(process.execPath, [cmakeJs[0], 'build', ...cmakeJs.slice(1), '--parallel', jobs]);
  const built = path.join(outDir, 'Release', 'residual.node');
  if (!fs.existsSync(built)) throw new BuildError(`the build finished but ${built} is missing`);
  fs.writeFileSync(
    path.join(outDir, 'Release', 'residual.json'),
    JSON.stringify({ libtorch: lt.version, variant: lt.variant, libtorchDir: lt.dir, source: lt.source, gloo: !!gloo }, null, 2) + '\n',
  );
  return built;
}

export function buildTs() {
  const tsc = resolveFrom(root, 'typescript/bin/tsc');
  if (!tsc) throw new BuildError('typescript is not installed: run npm install in the checkout (it is a devDependency)');
  run(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')]);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outIdx = args.indexOf('--out');
  const outDir = outIdx >= 0 ? path.resolve(args[outIdx + 1]) : path.join(root, 'build');
  try {
    let tsDone = false;
    if (!args.includes('--ts-only') && !fs.existsSync(path.join(root, 'dist', 'addon', 'fetch.js'))) {
      buildTs();
      tsDone = true;
    }
    if (!args.includes('--ts-only')) await buildNative({ outDir });
    if (!args.includes('--native-only') && !tsDone) buildTs();
  } catch (e) {
    console.error(`[residual] ${e.message}`);
    process.exit(1);
  }
}
