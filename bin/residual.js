#!/usr/bin/env node
// The `residual` command (lib/cli/main.ts, compiled to dist/). `setup` and `doctor` are dispatched here,
// before anything loads the native library: they must run where it is missing (install scripts not
// run, libtorch not fetched yet). `setup` is the install step (scripts/install/install.mjs).
const [cmd, ...rest] = process.argv.slice(2);
const wantsHelp = rest.includes('--help') || rest.includes('-h');

function fail(e) {
  console.error(`residual: ${e.message}`);
  process.exitCode = 1;
}

const USAGE = {
  setup:
    'Usage: residual setup [--build-from-source]\n\nDo what the install step does: resolve or fetch libtorch, then pick the prebuilt binary or build one.\n' +
    'For pnpm (which skips install scripts by default), npm --ignore-scripts, or after changing LIBTORCH/RESIDUAL_VARIANT.\n' +
    'Environment: LIBTORCH, LIBTORCH_USE_PYTORCH=1, RESIDUAL_VARIANT=cpu|cu130, RESIDUAL_HOME, RESIDUAL_LIBTORCH_MIRROR, RESIDUAL_LIBTORCH_FETCH=pip (see README).',
  doctor:
    'Usage: residual doctor [--json]\n\nCheck the installation: Node, the addon binary, libtorch, CUDA/cuDNN, GPUs; each problem with its fix.\nRuns without libtorch or the addon.',
};

if ((cmd === 'setup' || cmd === 'doctor') && wantsHelp) {
  console.log(USAGE[cmd]);
} else if (cmd === 'setup') {
  import('../scripts/install/install.mjs')
    .then((m) => m.main(rest, { via: 'setup' }))
    .then((code) => {
      process.exitCode = code;
    }, fail);
} else if (cmd === 'doctor') {
  import('../dist/cli/doctor.js')
    .then((m) => m.runDoctor(rest))
    .then((code) => {
      process.exitCode = code;
    }, fail);
} else {
  import('../dist/cli/main.js')
    .then((m) => m.main(process.argv.slice(2)))
    .then((code) => {
      process.exitCode = code;
    })
    .catch((e) => {
      fail(e);
      if (/no usable native addon|libtorch/.test(e.message)) console.error("('residual setup' and 'residual doctor' work without it.)");
    });
}
