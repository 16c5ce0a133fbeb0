#!/usr/bin/env node
// Runs the test suite a second time with libtorch and oneDNN held to another CPU capability than the
// machine's best, so that a result that holds only on one CPU's kernels (its rounding, its reduction
// order) fails here rather than on a user's machine. libtorch dispatches its vectorised kernels by
// ATEN_CPU_CAPABILITY (default = no explicit SIMD, avx2, avx512); oneDNN, which runs most float32
// convolutions, honours ONEDNN_MAX_CPU_ISA (SSE41, AVX, AVX2, AVX512_CORE, ...).
//
// The choice: libtorch's `default` kernels (the scalar code paths, the farthest from any SIMD machine)
// and oneDNN one ISA step below the machine's best (AVX2 on an AVX-512 machine, SSE41 on an AVX2 one).
//
// Every test file runs, except those listed in NOT_NUMERIC with a reason: new test files are included
// by default. Usage: node scripts/ci/test-other-cpu.mjs [extra vitest args]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const NOT_NUMERIC = {
  'test/unit/file-formats.test.ts': 'parser validation: no floating-point kernels',
  'test/hardening/file-formats.property.test.ts': 'parser properties: no floating-point kernels',
  'test/hardening/file-formats.fuzz.test.ts': 'mutation fuzz of the file readers: no floating-point kernels',
  'test/unit/loader.test.ts': 'addon selection and probing: no floating-point kernels',
  'test/unit/schedule.test.ts': 'learning-rate schedules computed in JavaScript',
  'test/unit/atomic-writes.test.ts': 'file writing only',
  'test/e2e/install-fetch.test.ts': 'downloading and unpacking libtorch: no floating-point kernels',
  'test/parity/onnx-large.test.ts':
    "the exporter and tolerance of test/parity/onnx.test.ts (which runs here), on networks too big to run twice in CI's time",
  'test/e2e/onnx-web.test.ts': "a browser test of the example page; the numbers it compares are test/parity/onnx.test.ts's",
  'test/e2e/dist.test.ts':
    "the store's and launcher's refusals, and DDP against one process on the same machine (test/e2e/dist-interop.test.ts, which runs here, compares with PyTorch)",
  'test/e2e/dist-netns.test.ts': 'network namespaces, link failures and restarts: compares two runs of the same machine',
  'test/e2e/dist-restart.test.ts': 'kill -9 and restart: compares two runs of the same machine bit for bit',
  'test/e2e/stream-dist.test.ts': 'streamed data shared among ranks: compares runs of the same machine',
  'test/e2e/run-state.test.ts': 'run folders, resume and checkpoint files',
  'test/e2e/cli.test.ts': 'command-line flags, messages and files',
  'test/e2e/tensorboard.test.ts': "event files read by TensorBoard: the numbers are metrics.jsonl's",
  'test/hardening/checkpoint-json.fuzz.test.ts': 'mutation fuzz of checkpoint.json: validation only',
  'test/hardening/tfjs-model.fuzz.test.ts': 'mutation fuzz of tfjs model files: validation only',
  'test/hardening/native.test.ts': 'hostile arguments to the native layer: refusals only',
  'test/unit/tfjs-bounds.test.ts': 'output-size bounds of tfjs kernels: refusals and memory peaks',
  'test/unit/tfjs-io.test.ts': 'tfjs file loading: paths, special files, sizes',
  'test/unit/memory.test.ts': 'memory accounting and growth, no numbers compared',
  'test/unit/bench.test.ts': 'the benchmark script runs and writes its table',
  'test/unit/api.test.ts': 'the list of public names',
  'test/unit/architecture.test.ts': 'imports between folders',
  'test/unit/release.test.ts': 'release packaging',
};

function cpuFlags() {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = info.split('\n').find((l) => l.startsWith('flags'));
    return new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

const flags = cpuFlags();
const onednnIsa = flags.has('avx512f') ? 'AVX2' : flags.has('avx2') ? 'SSE41' : 'SSE41';
const env = { ...process.env, ATEN_CPU_CAPABILITY: 'default', ONEDNN_MAX_CPU_ISA: onednnIsa };

const files = fs
  .readdirSync(path.join(root, 'test'), { recursive: true })
  .filter((f) => f.endsWith('.test.ts') && !f.startsWith('fixtures'))
  .map((f) => `test/${f}`)
  .filter((f) => !(f in NOT_NUMERIC))
  .sort();

console.log(
  `[test-other-cpu] machine: ${flags.has('avx512f') ? 'AVX-512' : flags.has('avx2') ? 'AVX2' : 'no AVX2'}; running ${files.length} test files with ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=${onednnIsa}`,
);
for (const [f, why] of Object.entries(NOT_NUMERIC)) console.log(`[test-other-cpu] skipped ${f}: ${why}`);

const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
const r = spawnSync(process.execPath, [vitest, 'run', ...files, ...process.argv.slice(2)], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
