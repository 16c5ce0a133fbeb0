// npm's install script for residual.
//   1. In a git checkout without dist/, compile the TypeScript (the loader below lives there).
//   2. Resolve libtorch (LIBTORCH, LIBTORCH_USE_PYTORCH=1, the project copy, the shared cache),
//      and record it in build/libtorch.json for run time; otherwise fetch the pinned wheel for this machine into the cache (scripts/install/libtorch.mjs:
//      checksummed, published by an atomic rename, so a failed fetch leaves nothing a later run trusts).
//   3. Use a prebuilt binary (optional package @residual/<platform>-<arch>-<variant>, or prebuilds/)
//      when one is tagged for that libtorch and loads in a child process: no compiler needed.
//   4. Otherwise build from source with cmake-js (scripts/install/build.mjs).
// On failure it says what to set and exits non-zero.
//
//   node scripts/install/install.mjs [--build-from-source]
// Environment: LIBTORCH, LIBTORCH_USE_PYTORCH=1, RESIDUAL_VARIANT=cpu|cu130, RESIDUAL_HOME,
//   RESIDUAL_BUILD_FROM_SOURCE=1 (same as the flag), RESIDUAL_SKIP_INSTALL=1 (do nothing).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { findLibtorch, fetchLibtorch, recordInstall, wantedVariant, residualHome } from './libtorch.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const say = (msg) => console.error(`[residual] ${msg}`);
const checkout = fs.existsSync(path.join(root, 'lib')) && fs.existsSync(path.join(root, 'tsconfig.json'));
const fromSource = process.argv.includes('--build-from-source') || process.env.RESIDUAL_BUILD_FROM_SOURCE === '1';

const HELP = `
  What you can set (then run \`npm rebuild residual --foreground-scripts\`):
    LIBTORCH=/path/to/libtorch   use this libtorch: a libtorch folder, or a torch package folder (site-packages/torch)
    LIBTORCH_USE_PYTORCH=1       use the torch package of python3 (pip install torch)
    RESIDUAL_VARIANT=cpu|cu130   which libtorch to fetch (default: cu130 when nvidia-smi sees a GPU, else cpu)
    RESIDUAL_HOME=/path          where the libtorch cache shared by all projects lives (now: ${residualHome()})
  Without network access, set LIBTORCH or LIBTORCH_USE_PYTORCH=1, or copy a cache made elsewhere into RESIDUAL_HOME.`;

function die(msg, help = HELP) {
  say(`install failed: ${msg}${help}`);
  process.exit(1);
}

async function main() {
  if (process.env.RESIDUAL_SKIP_INSTALL === '1') {
    say('RESIDUAL_SKIP_INSTALL=1: skipping libtorch and the native addon');
    return;
  }
  const build = await import(pathToFileURL(path.join(root, 'scripts', 'install', 'build.mjs')).href);

  // 1. The TypeScript (only a checkout lacks it; the published package ships dist/).
  // dist/core/fs.js too: recordInstall (scripts/install/libtorch.mjs) writes through it, and a dist/ compiled
  // before it existed is stale.
  const distReady = () => [path.join('addon', 'load.js'), path.join('core', 'fs.js')].every((f) => fs.existsSync(path.join(root, 'dist', f)));
  if (checkout && !distReady()) {
    say('git checkout without (an up-to-date) dist/: compiling the TypeScript');
    build.buildTs();
  }
  if (!distReady()) die(`${path.join(root, 'dist')} is missing or incomplete (a broken package?)`, '');
  const L = await import(pathToFileURL(path.join(root, 'dist', 'addon', 'load.js')).href);

  // 2. libtorch.
  let lt;
  try {
    lt = findLibtorch({ useRecord: false });
    if (!lt) {
      const variant = wantedVariant();
      say(`no libtorch found: fetching the pinned ${variant} build (set LIBTORCH or LIBTORCH_USE_PYTORCH=1 to use your own)`);
      lt = fetchLibtorch(variant);
    }
  } catch (e) {
    die(`could not set up libtorch: ${e.message}`);
  }
  say(`libtorch ${lt.version} (${lt.variantTag}) from ${lt.source}: ${lt.dir}`);
  // Remembered for run time, so that LIBTORCH or LIBTORCH_USE_PYTORCH need not stay set.
  await recordInstall(lt);

  // 3. A prebuilt binary that fits.
  if (!fromSource) {
    const sel = L.chooseAddon({ candidates: L.addonCandidates({ libtorch: lt }), probe: L.cachedProbe });
    if (sel.choice) {
      say(`using the ${sel.choice.how} binary ${sel.choice.path}: no compiler needed`);
      return;
    }
    const tried = sel.attempts.filter((a) => a.outcome !== 'missing');
    say(`no prebuilt binary fits libtorch ${lt.version} (${lt.variantTag})${tried.length ? `:\n  ${L.formatAttempts(tried)}` : ''}`);
  }

  // 4. Build from source.
  const missing = [];
  if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) missing.push('cmake (3.18 or newer)');
  if (!['c++', 'g++', 'clang++'].some((cxx) => spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status === 0)) missing.push('a C++17 compiler (g++ or clang++)');
  if (missing.length) {
    die(
      `building from source needs ${missing.join(' and ')}, which ${missing.length > 1 ? 'are' : 'is'} not installed.\n` +
        `  Install ${missing.length > 1 ? 'them' : 'it'} (e.g. apt-get install cmake g++) and run: ${L.buildFromSourceCommand(root)}`,
    );
  }
  say(`building the addon from source (cmake-js); the same command by hand: ${L.buildFromSourceCommand(root)}`);
  // buildNative exits the process on failure; say what to do first.
  const onExit = (code) => {
    if (code !== 0) say(`the build from source failed (see above). Fix and rerun: ${L.buildFromSourceCommand(root)}${HELP}`);
  };
  process.on('exit', onExit);
  build.buildNative({ outDir: path.join(root, 'build') });
  process.off('exit', onExit);

  const sel = L.chooseAddon({ candidates: L.addonCandidates({ libtorch: lt }).filter((c) => c.how.startsWith('local build')), probe: L.probeInChild });
  if (!sel.choice) die(`the freshly built addon does not load:\n  ${L.formatAttempts(sel.attempts)}`);
  say(`built ${sel.choice.path} against libtorch ${lt.version} (${lt.variantTag})`);
}

main().catch((e) => die(e.stack || e.message));
