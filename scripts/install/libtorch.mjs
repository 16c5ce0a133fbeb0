// Resolves (and with --fetch, fetches) libtorch from the command line: a thin front to the one
// resolver, lib/addon/libtorch.ts and lib/addon/fetch.ts (compiled to dist/; a checkout compiles it
// first). Prints the result as JSON on stdout; messages go to stderr.
//   node scripts/install/libtorch.mjs [--fetch] [--dev] [--variant cpu|cu130]
// --fetch: fetch into the cache when nothing is found; --dev: also the headers and CMake files a
// source build needs; --variant: fetch this variant (as RESIDUAL_VARIANT).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { distModule } from './build.mjs';

async function main(argv) {
  const i = argv.indexOf('--variant');
  if (i >= 0) process.env.RESIDUAL_VARIANT = argv[i + 1];
  const F = await distModule(path.join('addon', 'fetch.js'));
  const lt = await F.ensureLibtorch({ fetch: argv.includes('--fetch'), dev: argv.includes('--dev') });
  if (!lt) {
    console.error(
      '[residual] no libtorch found (LIBTORCH, LIBTORCH_USE_PYTORCH=1, the project copy, the cache); --fetch fetches the pinned one',
    );
    return 1;
  }
  console.log(JSON.stringify(lt, null, 2));
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(`[residual] ${e.message}`);
      process.exit(1);
    },
  );
}
