#!/usr/bin/env node
// `npm run bench`: residual against Python PyTorch eager on the same machine, in the same run, on the
// same work, interleaved trial by trial (a load that comes and goes hits both sides), with warm-up,
// repeated trials, medians and spread; residual / PyTorch ratios (below 1: residual is faster).
//
//   node scripts/bench/bench.mjs [--quick] [--only ops,resnet20,resnet50,scaling,memory,matmul]
//        [--device cpu|cuda] [--json out.json] [--python /path/to/python | --no-python]
//        [--threads N] [--cudnn-benchmark] [--write-md [BENCHMARKS.md]]
//
// Workloads (--only picks some; the default runs all that fit the device):
//   ops       per-op overhead on tiny tensors (1 intra-op thread on both sides)
//   resnet20  CIFAR ResNet-20 training step, 32x32, batch 128 (fp32; channels-last too; bf16 on GPU)
//   resnet50  ResNet-50 training step, 224x224, batch 32 on CPU / 256 on GPU (fp32; bf16 autocast +
//             channels-last on GPU)
//   scaling   step time against batch size (ResNet-20) and against depth (20, 56, 110, 1202)
//   memory    peak RSS (and peak CUDA memory) of the same step, each side in its own fresh process;
//             RSS sampled over 1,000 steps (growth)
//   matmul    (GPU) the measured bf16 matmul rate, for MFU
// A training step on both sides: forward, cross-entropy, zero_grad (set to none), backward, SGD
// (momentum 0.9, weight decay 5e-4). The Python side is scripts/bench/bench.py (same model definitions as
// the ResNet parity fixtures), run with --python, or the Python of scripts/ci/setup-python-torch.sh.
// Output: a table per workload on stdout, the ratios last; --json writes everything (machine, versions,
// every trial); --write-md writes the markdown between this machine's markers in BENCHMARKS.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuModel, physicalCores } from './lib/machine.mjs';
import { markdown, ratioLines, writeMarkdown } from './lib/markdown.mjs';
import { flag, opt, root } from './lib/options.mjs';
import { findPython, PySide } from './lib/python.mjs';
import { childMem, r } from './lib/steps.mjs';
import { log, matmul, memory, ops, resnet20, resnet50, scaling } from './lib/workloads.mjs';

// ------------------------------------------------------------------------------ memory child mode
// `bench.mjs --child-mem '<json>'` (a fresh process, lib/steps.mjs childMem) prints its peaks and exits.
if (flag('child-mem')) {
  childMem(JSON.parse(opt('child-mem')));
  process.exit(0);
}

const quick = flag('quick');
const device = opt('device', 'cpu');
const gpu = device !== 'cpu';
const jsonOut = opt('json', null);
const writeMd = flag('write-md') ? (typeof opt('write-md') === 'string' ? opt('write-md') : path.join(root, 'BENCHMARKS.md')) : null;
const threads = Number(opt('threads', physicalCores()));
const ALL = gpu ? ['ops', 'resnet20', 'resnet50', 'scaling', 'memory', 'matmul'] : ['ops', 'resnet20', 'resnet50', 'scaling', 'memory'];
const only = typeof opt('only') === 'string' ? opt('only').split(',') : ALL;
for (const w of only) if (![...ALL, 'matmul'].includes(w)) throw new Error(`--only: unknown workload '${w}' (known: ${ALL.join(', ')})`);
if (gpu && !r.cuda.isAvailable())
  throw new Error(`--device ${device}: this build of residual has no CUDA device (buildInfo: ${JSON.stringify(r.buildInfo())})`);
if (!(Number.isInteger(threads) && threads >= 1)) throw new Error(`--threads: expected a positive integer, got ${opt('threads')}`);

// ------------------------------------------------------------------------------------------ machine
const info = r.buildInfo();
const machine = {
  cpu: cpuModel(),
  logicalCpus: os.cpus().length,
  physicalCores: physicalCores(),
  memoryGB: +(os.totalmem() / 2 ** 30).toFixed(1),
  loadAverageAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  gpu: gpu ? (r.cuda.devices()[0]?.name ?? null) : null,
  os: `${os.type()} ${os.release()}`,
};
const versions = {
  residual: JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version,
  libtorch: info.libtorch,
  variant: info.variant,
  node: process.version,
};

const py = (() => {
  const p = findPython();
  return p ? new PySide(p) : null;
})();
r.setNumThreads(threads);
// --cudnn-benchmark: cuDNN picks its convolution algorithms by timing them, on both sides.
const cudnnBenchmark = flag('cudnn-benchmark');
if (cudnnBenchmark && gpu) r.cudnnBenchmark(true);
if (py) {
  const pi = await py.ask({ op: 'init', threads, cudnnBenchmark });
  versions.pytorch = pi.torch;
  versions.python = pi.python;
  versions.pytorchCpuCapability = pi.cpuCapability;
  if (pi.gpu) versions.pytorchGpu = pi.gpu;
}
const results = { machine, versions, device, threads, cudnnBenchmark, quick, started: new Date().toISOString(), workloads: {} };

// ------------------------------------------------------------------------------------- workloads
const W = results.workloads;
const ctx = { device, gpu, quick, threads, py, W, script: fileURLToPath(import.meta.url) };
if (only.includes('ops')) await ops(ctx);
if (only.includes('resnet20')) await resnet20(ctx);
if (only.includes('resnet50')) await resnet50(ctx);
if (only.includes('matmul') && gpu) await matmul(ctx);
if (only.includes('scaling')) await scaling(ctx);
if (only.includes('memory')) await memory(ctx);

if (py) await py.close();
results.finished = new Date().toISOString();
results.loadAverageAtEnd = os.loadavg().map((x) => +x.toFixed(2));

// -------------------------------------------------------------------------------------- reporting
const md = markdown(results);
results.markdown = md;
if (jsonOut) fs.writeFileSync(jsonOut, `${JSON.stringify(results, null, 2)}\n`);
if (writeMd) writeMarkdown(writeMd, results, md);

log('');
log(md);
log('');
// The ratios, last.
log(
  `Ratios residual / PyTorch (time; below 1 = residual faster), ${machine.cpu}${machine.gpu ? ` + ${machine.gpu}` : ''}, device ${device}:`,
);
for (const [k, v] of ratioLines(results)) log(`  ${k.padEnd(44)} ${v == null ? 'n/a' : v.toFixed(2)}`);
