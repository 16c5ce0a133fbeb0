// residual's install step: npm's install script, and `npx residual setup` (bin/residual.js), which does
// the same where install scripts do not run (pnpm's default, npm --ignore-scripts, strict
// allow-scripts policies).
//   1. In a git checkout without dist/, compile the TypeScript (the resolver and loader live there).
//   2. Resolve libtorch (lib/addon/libtorch.ts: LIBTORCH, LIBTORCH_USE_PYTORCH=1, the project copy, the
//      shared cache), or fetch the pinned one into the cache with Node (lib/addon/fetch.ts: streamed,
//      sha256-verified, published by an atomic rename). Record the choice in build/libtorch.json.
//   3. Use a prebuilt binary (optional package @residual/<platform>-<arch>-<variant>, or prebuilds/)
//      when one is tagged for that libtorch, fits this system (glibc) and loads in a child process.
//   4. Otherwise build from source (scripts/install/build.mjs): libtorch's headers and CMake files are
//      fetched then, and outside a checkout so is the toolchain (cmake-js, node-addon-api).
// On failure it says what went wrong, what to set, and the command that retries from where the user is.
//
//   node scripts/install/install.mjs [--build-from-source]     (npx residual setup [--build-from-source])
// Environment: LIBTORCH, LIBTORCH_USE_PYTORCH=1, RESIDUAL_VARIANT=cpu|cu130, RESIDUAL_HOME,
//   RESIDUAL_LIBTORCH_MIRROR=URL, RESIDUAL_LIBTORCH_FETCH=pip, RESIDUAL_BUILD_FROM_SOURCE=1 (same as the
//   flag), RESIDUAL_SKIP_INSTALL=1 (npm's install step does nothing; `residual setup` ignores it).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BuildError, buildNative, buildTools, buildTs, distModule, isCheckout } from './build.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const say = (msg) => console.error(`[residual] ${msg}`);

class InstallError extends Error {}

/** How this step was started, for a recovery command that works from there. */
function context(via) {
  if (via === 'setup') return 'setup';
  if (isCheckout) return 'checkout';
  const cmd = process.env.npm_command ?? '';
  const agent = process.env.npm_config_user_agent ?? '';
  if (/^pnpm\//.test(agent)) return 'pnpm';
  if (/^yarn\//.test(agent)) return 'yarn';
  if (cmd === 'rebuild') return 'rebuild';
  return 'npm-install';
}

function recovery(ctx) {
  switch (ctx) {
    case 'setup':
      return 'Fix the cause above, then run again: npx residual setup';
    case 'checkout':
      return `Fix the cause above, then run again: npm install (in ${root})`;
    case 'rebuild':
      return 'Fix the cause above, then run: npx residual setup';
    case 'pnpm':
    case 'yarn':
      return 'Fix the cause above, then run: npx residual setup (it does what this install step does)';
    default:
      // npm removes a package whose install script failed (it rolls node_modules back), so
      // `npm rebuild residual` would find nothing to rebuild.
      return (
        'npm has rolled this install back: residual is not in node_modules now. Fix the cause above, then\n' +
        '  run your npm install again (with the variable set, e.g. LIBTORCH=/path/to/libtorch npm install), or\n' +
        '  install without the script (npm install residual --ignore-scripts) and then run: npx residual setup'
      );
  }
}

const SETTINGS = (home) => `
  What you can set (for this command, or before it):
    LIBTORCH=/path/to/libtorch       use this libtorch (a libtorch folder, or a torch package folder site-packages/torch)
    LIBTORCH_USE_PYTORCH=1           use the torch package of python3 (pip install torch)
    RESIDUAL_LIBTORCH_MIRROR=URL     fetch the pinned libtorch from a mirror with the same paths (npm run libtorch:mirror -- DIR lays one out)
    RESIDUAL_LIBTORCH_FETCH=pip      fetch the same pinned files with pip (its index, proxy and certificate settings)
    RESIDUAL_VARIANT=cpu|cu130       which libtorch to fetch (default: cu130 when nvidia-smi sees a GPU, else cpu)
    RESIDUAL_HOME=/path              the libtorch cache shared by all projects (now: ${home})`;

export async function main(argv = process.argv.slice(2), { via = 'install' } = {}) {
  const ctx = context(via);
  if (via === 'install' && process.env.RESIDUAL_SKIP_INSTALL === '1') {
    say('RESIDUAL_SKIP_INSTALL=1: skipping libtorch and the native addon (npx residual setup does it later)');
    return 0;
  }
  const fromSource = argv.includes('--build-from-source') || process.env.RESIDUAL_BUILD_FROM_SOURCE === '1';
  let home = '~/.cache/residual';
  try {
    // 1. A checkout compiles its TypeScript every time (dist/ may be older than the sources).
    if (isCheckout) {
      say('git checkout: compiling the TypeScript');
      buildTs();
    }
    const F = await distModule(path.join('addon', 'fetch.js'));
    const T = await distModule(path.join('addon', 'libtorch.js'));
    const L = await distModule(path.join('addon', 'load.js'));
    home = T.residualHome();

    // 2. libtorch. A checkout always builds: fetch the build files in the same download.
    let lt;
    try {
      lt = await F.ensureLibtorch({ useRecord: false, dev: isCheckout || fromSource });
    } catch (e) {
      throw new InstallError(`could not set up libtorch: ${e.message}`);
    }
    say(`libtorch ${lt.version} (${lt.variantTag}) from ${lt.source}: ${lt.dir}`);
    // Remembered for run time, so that LIBTORCH or LIBTORCH_USE_PYTORCH need not stay set.
    try {
      T.recordInstall(lt);
    } catch (e) {
      say(
        `could not record the choice in ${T.installRecordPath()} (${e.message}): at run time residual looks for libtorch again (set LIBTORCH there if it is not in the cache)`,
      );
    }

    // 3. A prebuilt binary that fits.
    if (!fromSource) {
      const sel = L.chooseAddon({ candidates: L.addonCandidates({ libtorch: lt }), probe: L.cachedProbe });
      if (sel.choice) {
        say(`using the ${sel.choice.how} binary ${sel.choice.path}: no compiler needed`);
        return 0;
      }
      const tried = sel.attempts.filter((a) => a.outcome !== 'missing');
      if (tried.length)
        say(`no prebuilt binary fits libtorch ${lt.version} (${lt.variantTag}) on this system:\n  ${L.formatAttempts(tried)}`);
      else if (!isCheckout)
        say(`no prebuilt binary for ${process.platform}-${process.arch} (${lt.variantTag}) is installed: building from source`);
    }

    // 4. Build from source.
    const missing = [];
    if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) missing.push('cmake (3.18 or newer)');
    if (!['c++', 'g++', 'clang++'].some((cxx) => spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status === 0))
      missing.push('a C++17 compiler (g++ or clang++)');
    if (missing.length) {
      throw new InstallError(
        `building from source needs ${missing.join(' and ')}, which ${missing.length > 1 ? 'are' : 'is'} not installed ` +
          `(e.g. apt-get install cmake g++ libjpeg62-turbo-dev libpng-dev zlib1g-dev)`,
      );
    }
    if (!lt.devDir) {
      try {
        lt = await F.ensureLibtorch({ useRecord: false, dev: true });
      } catch (e) {
        throw new InstallError(`could not get libtorch's build files: ${e.message}`);
      }
    }
    const tools = await buildTools();
    say(`building the addon from source (cmake-js); by hand: ${L.buildFromSourceCommand(root)}`);
    await buildNative({ outDir: path.join(root, 'build'), lt, tools });
    const sel = L.chooseAddon({
      candidates: L.addonCandidates({ libtorch: lt }).filter((c) => c.how.startsWith('local build')),
      probe: L.probeInChild,
    });
    if (!sel.choice) throw new InstallError(`the freshly built addon does not load:\n  ${L.formatAttempts(sel.attempts)}`);
    say(
      `built ${sel.choice.path} against libtorch ${lt.version} (${lt.variantTag})${sel.choice.info.gloo === false ? "; without gloo's headers: no 'gloo' backend for dist (apt-get install libgloo-dev, then build again)" : ''}`,
    );
    return 0;
  } catch (e) {
    const msg = e instanceof InstallError || e instanceof BuildError ? e.message : e.stack || e.message;
    say(`${via === 'setup' ? 'setup' : 'install'} failed: ${msg}${SETTINGS(home)}\n  ${recovery(ctx)}`);
    return 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((code) => {
    process.exitCode = code;
  });
}
