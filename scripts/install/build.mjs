// Builds the native addon with cmake-js against the resolved libtorch (see scripts/install/libtorch.mjs),
// then compiles the TypeScript. Incremental: when nothing native changed, make does nothing.
//   node scripts/install/build.mjs [--native-only|--ts-only] [--out DIR]
// Environment: LIBTORCH, LIBTORCH_USE_PYTORCH, RESIDUAL_HOME, RESIDUAL_VARIANT (see README).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveLibtorch } from './libtorch.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const out = outIdx >= 0 ? path.resolve(args[outIdx + 1]) : path.join(root, 'build');

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) {
    console.error(`[residual] failed: ${cmd} ${argv.join(' ')}`);
    process.exit(r.status ?? 1);
  }
}

export function buildNative({ outDir = out } = {}) {
  const lt = resolveLibtorch();
  // npm may hoist cmake-js into the installing project's node_modules: resolve it like require does.
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
  const jobs = String(Math.max(1, Math.min(os.availableParallelism?.() ?? os.cpus().length, 16)));
  const defs = [`--CDTorch_DIR=${path.join(lt.cmakePrefix, 'Torch')}`, '--CDCMAKE_BUILD_TYPE=Release'];
  // Extra CMake definitions, e.g. RESIDUAL_CMAKE_DEFS="CUDA_nvrtc_LIBRARY=/path/libnvrtc.so.13".
  for (const d of (process.env.RESIDUAL_CMAKE_DEFS ?? '').split(/\s+/).filter(Boolean)) defs.push(`--CD${d}`);
  if (lt.variant === 'cuda' && process.env.TORCH_CUDA_ARCH_LIST) defs.push(`--CDTORCH_CUDA_ARCH_LIST=${process.env.TORCH_CUDA_ARCH_LIST}`);
  console.error(`[residual] building the addon against libtorch ${lt.version} (${lt.variant}) with ${jobs} jobs into ${path.relative(root, outDir) || '.'}`);
  run(process.execPath, [cmakeJs, 'build', '--out', outDir, '--parallel', jobs, '--prefer-make', ...defs, '-l', 'warn']);
  const built = path.join(outDir, 'Release', 'residual.node');
  if (!fs.existsSync(built)) {
    console.error(`[residual] the build finished but ${built} is missing`);
    process.exit(1);
  }
  fs.writeFileSync(
    path.join(outDir, 'Release', 'residual.json'),
    JSON.stringify({ libtorch: lt.version, variant: lt.variant, libtorchDir: lt.dir, source: lt.source }, null, 2) + '\n',
  );
  return built;
}

export function buildTs() {
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  } catch {
    tsc = null;
  }
  if (!tsc) {
    console.error('[residual] typescript is not installed (npm install --include=dev): skipping the TypeScript build');
    return;
  }
  run(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')]);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    if (!args.includes('--ts-only')) buildNative();
    if (!args.includes('--native-only')) buildTs();
  } catch (e) {
    console.error(`[residual] ${e.message}`);
    process.exit(1);
  }
}
