#!/usr/bin/env node
// The `residual` command (see lib/cli/main.ts, compiled to dist/).
import('../dist/cli/main.js')
  .then((m) => m.main(process.argv.slice(2)))
  .then((code) => {
    process.exitCode = code;
  })
  .catch((e) => {
    console.error(`residual: ${e.message}`);
    process.exitCode = 1;
  });
