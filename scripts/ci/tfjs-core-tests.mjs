#!/usr/bin/env node
// tfjs-core's own backend test suite (the peer suite every tfjs backend runs: dist/tests.js and the
// *_test.js files shipped in the @tensorflow/tfjs-core package, with dist/jasmine_util.js) against the
// `residual` backend and against @tensorflow/tfjs-backend-cpu, in the same run: one child process per
// backend, side by side. Prints both pass counts, every test that passes on cpu but fails on residual
// outside the exclude list (scripts/ci/tfjs-core-exclude.mjs, one reason per entry), and ends with the line
//   N passed, N failed
// for residual.
//
//   node scripts/ci/tfjs-core-tests.mjs [--grep SUBSTRING] [--json FILE] [--only residual|cpu] [--verbose]
//
// The suite's files are ES modules with extensionless imports (written for bundlers), so each child runs
// an esbuild bundle of them (tfjs-core, the backend, the tests: one tfjs-core instance). residual's own
// modules (dist/, the native addon) stay outside the bundle. Needs `npm run build` first (dist/tfjs).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const arg = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
/** Exclude entries: { test: substring of the full spec name, reason }. */
export async function loadExcludes() {
  const { exclude } = await import(pathToFileURL(path.join(root, 'scripts', 'ci', 'tfjs-core-exclude.mjs')).href);
  for (const e of exclude)
    if (!e.test || !e.reason) throw new Error(`tfjs-core-exclude.mjs: every entry needs a test and a reason: ${JSON.stringify(e)}`);
  return exclude;
}

// The env name is the same for both backends, so full spec names compare directly.
const ENV_NAME = 'peer';

async function bundle(backend, outDir) {
  const esbuild = await import('esbuild');
  const coreDir = path.join(root, 'node_modules', '@tensorflow', 'tfjs-core', 'dist');
  const cpuEntry = path.join(root, 'node_modules', '@tensorflow', 'tfjs-backend-cpu', 'dist', 'index.js');
  const distDir = path.join(root, 'dist') + path.sep;
  const tfjsDir = path.join(root, 'dist', 'tfjs') + path.sep;
  const setup = [
    `import { setTestEnvs } from '@tensorflow/tfjs-core/dist/jasmine_util';`,
    `import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';`,
    `import '@tensorflow/tfjs-core/dist/register_all_gradients';`,
    `import '@tensorflow/tfjs-backend-cpu';`,
    backend === 'residual' ? `import ${JSON.stringify(path.join(root, 'dist', 'tfjs', 'index.js'))};` : '',
    `setTestEnvs([{ name: '${ENV_NAME}', backendName: '${backend}', flags: {}, isDataSync: true }]);`,
  ].join('\n');
  const plugin = {
    name: 'suite',
    setup(b) {
      b.onResolve({ filter: /^suite-setup$/ }, () => ({ path: 'suite-setup', namespace: 'suite' }));
      b.onLoad({ filter: /.*/, namespace: 'suite' }, () => ({ contents: setup, resolveDir: root, loader: 'js' }));
      // One tfjs-core for everything: its ES module build (the one the tests are written in).
      b.onResolve({ filter: /^@tensorflow\/tfjs-core$/ }, () => ({ path: path.join(coreDir, 'index.js') }));
      b.onResolve({ filter: /^@tensorflow\/tfjs-backend-cpu$/ }, () => ({ path: cpuEntry }));
      // residual's core (native addon, tensors) stays outside: only dist/tfjs is bundled.
      b.onResolve({ filter: /^\./ }, (a) => {
        if (!a.importer.startsWith(distDir)) return undefined;
        const abs = path.resolve(path.dirname(a.importer), a.path);
        if (abs.startsWith(tfjsDir)) return undefined;
        return { path: pathToFileURL(abs).href, external: true };
      });
    },
  };
  const outfile = path.join(outDir, `suite-${backend}.mjs`);
  await esbuild.build({
    stdin: { contents: `import 'suite-setup';\nimport '@tensorflow/tfjs-core/dist/tests';\n`, resolveDir: root, loader: 'js' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    mainFields: ['module', 'main'],
    outfile,
    plugins: [plugin],
    logLevel: 'error',
    // tfjs-core's package.json marks the test files side-effect free: keep their imports.
    ignoreAnnotations: true,
    // Node built-ins and packages the browser-only tests would pull in are left to Node.
    external: ['node:*', 'jasmine', 'jasmine-core', 'node-fetch', 'worker_threads', 'fs', 'path', 'util', 'crypto', 'os'],
    banner: { js: `import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);` },
  });
  return outfile;
}

// ---- child: run the suite on one backend ----

async function child(backend, file, out, grep, excludes) {
  const { default: Jasmine } = await import('jasmine');
  const j = new Jasmine({ projectBaseDir: root });
  j.exitOnCompletion = false;
  const env = j.env;
  env.configure({
    random: false,
    specFilter: (spec) => {
      const name = spec.getFullName();
      if (grep && !name.includes(grep)) return false;
      return !excludes.some((e) => name.includes(e.test));
    },
  });
  jasmine.DEFAULT_TIMEOUT_INTERVAL = 60_000;
  const passed = [];
  const failed = [];
  let skipped = 0;
  env.clearReporters();
  env.addReporter({
    specDone(r) {
      if (r.status === 'passed') passed.push(r.fullName);
      else if (r.status === 'failed') failed.push({ name: r.fullName, message: (r.failedExpectations[0]?.message ?? '').slice(0, 300) });
      else skipped++;
    },
  });
  process.on('unhandledRejection', (e) => {
    failed.push({ name: '(unhandled rejection)', message: String(e && e.stack ? e.stack : e).slice(0, 300) });
  });
  const t0 = Date.now();
  await import(pathToFileURL(file).href);
  if (process.env.SUITE_DEBUG) console.error('top-level suites:', env.topSuite().children.length);
  await j.execute();
  fs.writeFileSync(out, JSON.stringify({ backend, passed, failed, skipped, ms: Date.now() - t0 }));
}

// ---- parent ----

function runChild(backend, file, out, grep) {
  return new Promise((resolve, reject) => {
    const args = [fileURLToPath(import.meta.url), '--child', backend, '--bundle', file, '--out', out];
    if (grep) args.push('--grep', grep);
    // Both children run at once: one intra-op thread each keeps them from fighting over the cores.
    const env = { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '1' };
    const p = spawn(process.execPath, ['--max-old-space-size=4096', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let log = '';
    p.stdout.on('data', (d) => (log += d));
    p.stderr.on('data', (d) => (log += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (!fs.existsSync(out)) reject(new Error(`the ${backend} child exited with ${code} and no results:\n${log.slice(-4000)}`));
      else {
        if (process.env.SUITE_DEBUG) console.error(log);
        resolve({ ...JSON.parse(fs.readFileSync(out, 'utf8')), log });
      }
    });
  });
}

async function main() {
  const grep = arg('--grep');
  if (argv.includes('--child')) {
    const excludes = arg('--child') === 'residual' ? await loadExcludes() : [];
    await child(arg('--child'), arg('--bundle'), arg('--out'), grep, excludes);
    return;
  }
  if (!fs.existsSync(path.join(root, 'dist', 'tfjs', 'index.js')))
    throw new Error('dist/tfjs/index.js is missing: run `npm run build` (or node scripts/install/build.mjs --ts-only) first');
  const excludes = await loadExcludes();
  const only = arg('--only');
  // Inside the checkout, so the bundles' bare requires resolve from node_modules.
  const cacheDir = path.join(root, 'node_modules', '.cache');
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir, 'residual-tfjs-suite-'));
  const t0 = Date.now();
  try {
    const backends = only ? [only] : ['residual', 'cpu'];
    const files = await Promise.all(backends.map((b) => bundle(b, tmp)));
    const results = await Promise.all(backends.map((b, i) => runChild(b, files[i], path.join(tmp, `${b}.json`), grep)));
    const byName = Object.fromEntries(results.map((r) => [r.backend, r]));
    const res = byName.residual;
    const cpu = byName.cpu;
    for (const r of results)
      console.log(
        `${r.backend}: ${r.passed.length} passed, ${r.failed.length} failed, ${r.skipped} skipped (pending in the suite, excluded or filtered by --grep) (${(r.ms / 1000).toFixed(1)} s)`,
      );
    let regressions = [];
    let unused = [];
    let excludedCpuPassing = 0;
    let notRun = [];
    if (res && cpu) {
      const cpuPassed = new Set(cpu.passed);
      regressions = res.failed.filter((f) => cpuPassed.has(f.name));
      const both = res.failed.filter((f) => !cpuPassed.has(f.name));
      if (both.length) console.log(`fail on residual and do not pass on cpu either: ${both.length}`);
      if (argv.includes('--verbose')) for (const f of both) console.log(`  - ${f.name}: ${f.message}`);
      console.log(`pass on cpu, fail on residual, not excluded: ${regressions.length}`);
      for (const f of regressions) console.log(`  - ${f.name}: ${f.message}`);
      unused = excludes.filter((e) => !cpu.passed.some((n) => n.includes(e.test)) && !cpu.failed.some((f) => f.name.includes(e.test)));
      if (unused.length) console.log(`exclude entries that match no test: ${unused.map((e) => JSON.stringify(e.test)).join(', ')}`);
      excludedCpuPassing = cpu.passed.filter((n) => excludes.some((e) => n.includes(e.test))).length;
      // Tests that pass on cpu and never ran on residual (not excluded either): specs the suite defines
      // for the cpu backend only.
      const ran = new Set([...res.passed, ...res.failed.map((f) => f.name)]);
      notRun = cpu.passed.filter((n) => !ran.has(n) && !excludes.some((e) => n.includes(e.test)));
      if (notRun.length)
        console.log(
          `pass on cpu, defined only for cpu (not run on residual): ${notRun.length}\n${notRun.map((n) => `  - ${n}`).join('\n')}`,
        );
      console.log(
        `excluded on residual: ${excludedCpuPassing} tests that pass on cpu (${excludes.length} entries, scripts/ci/tfjs-core-exclude.mjs)`,
      );
    } else if (res) {
      for (const f of res.failed) console.log(`  - ${f.name}: ${f.message}`);
    }
    console.log(`total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const json = arg('--json');
    if (json) {
      fs.writeFileSync(
        json,
        JSON.stringify(
          {
            residual: res && { passed: res.passed.length, failed: res.failed, skipped: res.skipped, ms: res.ms },
            cpu: cpu && { passed: cpu.passed.length, failed: cpu.failed.length, skipped: cpu.skipped, ms: cpu.ms },
            regressions,
            excludes: excludes.length,
            excludedCpuPassing,
            unusedExcludes: unused.map((e) => e.test),
            notRun,
          },
          null,
          1,
        ),
      );
    }
    if (res) console.log(`${res.passed.length} passed, ${res.failed.length} failed`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
