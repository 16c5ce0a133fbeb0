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

if (cmd === 'setup' && !wantsHelp) {
  import('../scripts/install/install.mjs')
    .then((m) => m.main(rest, { via: 'setup' }))
    .then((code) => {
      process.exitCode = code;
    }, fail);
} else if (cmd === 'doctor' && !wantsHelp) {
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
