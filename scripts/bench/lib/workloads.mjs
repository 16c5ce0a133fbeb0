// The workloads of scripts/bench/bench.mjs, each run on both sides. `ctx` holds what the entry script
// decided: { device, gpu, quick, threads, py (a PySide or null), W (results.workloads, filled in here),
// script (bench.mjs itself, for the memory child runs) }.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { cfgLabel } from './markdown.mjs';
import { root } from './options.mjs';
import { ratioOf, stats } from './stats.mjs';
import { makeStep, matmulTflops, r, timeOp, TINY_LABEL, tinyCases } from './steps.mjs';

export function log(s = '') {
  console.log(s);
}

// -------------------------------------------------------------------------------------- the runner
/** Trains `cfg` on both sides, interleaved trial by trial (the order alternates); ms per step. */
async function compareStep({ device, py }, id, cfg, { trials, steps, warmup }) {
  const c = { device, ...cfg };
  const mine = makeStep(c);
  mine.run(warmup);
  if (py) {
    // vsPytorchDefault: PyTorch runs in its default configuration (contiguous layout), whatever
    // residual's row uses; bench.py ignores cpuCaching (a residual setting).
    await py.ask({ op: 'setup', id, config: c.vsPytorchDefault ? { ...c, channelsLast: false } : c });
    await py.ask({ op: 'run', id, steps: warmup });
  }
  const rs = [];
  const ps = [];
  const rc = [];
  const pc = [];
  for (let t = 0; t < trials; t++) {
    const order = t % 2 === 0 ? ['r', 'p'] : ['p', 'r'];
    for (const side of order) {
      if (side === 'r') {
        rs.push(mine.run(steps) / steps);
        rc.push(mine.lastCpuMs / steps);
      } else if (py) {
        const res = await py.ask({ op: 'run', id, steps });
        ps.push(res.ms / steps);
        pc.push(res.cpuMs / steps);
      }
    }
  }
  mine.free();
  if (py) await py.ask({ op: 'free', id });
  const row = {
    config: c,
    trials,
    stepsPerTrial: steps,
    warmup,
    residualMs: stats(rs),
    pytorchMs: py ? stats(ps) : null,
    residualTrialsMs: rs,
    pytorchTrialsMs: ps,
    residualCpuMs: stats(rc),
    pytorchCpuMs: py ? stats(pc) : null,
  };
  row.ratio = ratioOf(row.residualMs, row.pytorchMs);
  row.residualImagesPerSec = (1000 * c.batch) / row.residualMs.median;
  row.pytorchImagesPerSec = py ? (1000 * c.batch) / row.pytorchMs.median : null;
  const f = (s) => (s ? `${s.median.toFixed(1)} [${s.min.toFixed(1)}-${s.max.toFixed(1)}]` : 'n/a');
  const cr = ratioOf(row.residualCpuMs, row.pytorchCpuMs);
  log(
    `  ${id.padEnd(34)} residual ${f(row.residualMs).padEnd(24)} PyTorch ${f(row.pytorchMs).padEnd(24)} ratio ${row.ratio ? row.ratio.toFixed(2) : 'n/a'} (CPU time: ${row.residualCpuMs.median.toFixed(1)} vs ${row.pytorchCpuMs ? row.pytorchCpuMs.median.toFixed(1) : 'n/a'} ms, ratio ${cr ? cr.toFixed(2) : 'n/a'})`,
  );
  return row;
}

const stepPlan = ({ quick }, trials, steps, warmup) => (quick ? { trials: 1, steps: 1, warmup: 1 } : { trials, steps, warmup });

export async function ops(ctx) {
  const { device, quick, threads, py, W } = ctx;
  log(`ops: per-op overhead on tiny tensors, 1 intra-op thread on both sides (ns/op, median [min-max] of ${quick ? 1 : 5} trials)`);
  r.setNumThreads(1);
  if (py) await py.ask({ op: 'threads', threads: 1 });
  const cases = tinyCases(device);
  const names = quick ? ['add', 'mul'] : Object.keys(cases);
  const trials = quick ? 1 : 5;
  const minMs = quick ? 20 : 300;
  const rows = [];
  for (const name of names) {
    const rs = [];
    const ps = [];
    for (let t = 0; t < trials; t++) {
      const order = t % 2 === 0 ? ['r', 'p'] : ['p', 'r'];
      for (const side of order) {
        if (side === 'r') rs.push(timeOp(cases[name], device, minMs));
        else if (py) ps.push((await py.ask({ op: 'tiny', name, device, minMs })).ns);
      }
    }
    const row = { op: TINY_LABEL[name], residualNs: stats(rs), pytorchNs: py ? stats(ps) : null };
    row.ratio = ratioOf(row.residualNs, row.pytorchNs);
    rows.push(row);
    log(
      `  ${row.op.padEnd(34)} residual ${row.residualNs.median.toFixed(0).padStart(7)} PyTorch ${(row.pytorchNs ? row.pytorchNs.median.toFixed(0) : 'n/a').padStart(7)} ratio ${row.ratio ? row.ratio.toFixed(2) : 'n/a'}`,
    );
  }
  W.ops = { threads: 1, trials, minMsPerTrial: minMs, rows };
  r.setNumThreads(threads);
  if (py) await py.ask({ op: 'threads', threads });
}

export async function resnet20(ctx) {
  const { gpu, quick, threads, W } = ctx;
  log(`resnet20: training step, ms per step, median [min-max]; ${threads} threads`);
  const batch = quick ? 4 : 128;
  const variants = [
    { model: 'resnet20', batch, image: 32 },
    { model: 'resnet20', batch, image: 32, channelsLast: true },
  ];
  if (!gpu) {
    // What `residual train` does on a CPU (lib/train/trainer.ts): channels-last and CPU memory
    // caching. First caching alone (same layout on both sides), then the trainer's defaults against
    // PyTorch eager in its default configuration. The rows above compare identical settings.
    variants.push({ model: 'resnet20', batch, image: 32, cpuCaching: true });
    variants.push({ model: 'resnet20', batch, image: 32, channelsLast: true, cpuCaching: true, vsPytorchDefault: true });
  }
  if (gpu) {
    variants.push({ model: 'resnet20', batch, image: 32, amp: true, channelsLast: true });
    // residual with CUDA graphs against PyTorch eager (bench.py ignores `graphs`)
    variants.push({ model: 'resnet20', batch, image: 32, graphs: true });
  }
  const rows = [];
  for (const v of variants) {
    try {
      rows.push({
        label: cfgLabel(v),
        ...(await compareStep(ctx, cfgLabel(v), v, stepPlan(ctx, gpu ? 10 : 7, gpu ? 20 : 3, gpu ? 10 : 2))),
      });
    } catch (e) {
      if (!v.graphs) throw e;
      console.error(`(${cfgLabel(v)} failed: ${e.message})`);
      rows.push({ label: cfgLabel(v), config: v, error: String(e.message) });
    }
  }
  W.resnet20 = { rows };
}

export async function resnet50(ctx) {
  const { gpu, quick, threads, W } = ctx;
  log(`resnet50: training step, ms per step, median [min-max]; ${threads} threads`);
  const batch = quick ? 2 : gpu ? 256 : 32;
  const image = quick ? 64 : 224;
  const variants = gpu
    ? [
        { model: 'resnet50', batch, image },
        { model: 'resnet50', batch, image, amp: true, channelsLast: true },
      ]
    : [{ model: 'resnet50', batch, image }];
  const rows = [];
  for (const v of variants)
    rows.push({ label: cfgLabel(v), ...(await compareStep(ctx, cfgLabel(v), v, stepPlan(ctx, gpu ? 5 : 3, gpu ? 10 : 1, gpu ? 5 : 1))) });
  W.resnet50 = { rows };
}

export async function matmul(ctx) {
  const { device, quick, py, W } = ctx;
  const n = quick ? 1024 : 8192;
  const reps = quick ? 3 : 50;
  const rs = [];
  const ps = [];
  for (let t = 0; t < (quick ? 1 : 3); t++) {
    rs.push(matmulTflops(device, n, 'bfloat16', reps));
    if (py) ps.push((await py.ask({ op: 'matmul', device, n, dtype: 'bfloat16', reps })).tflops);
  }
  W.matmul = { n, dtype: 'bfloat16', residualTflops: stats(rs), pytorchTflops: py ? stats(ps) : null };
  log(
    `matmul: bf16 ${n}x${n}: residual ${W.matmul.residualTflops.median.toFixed(0)} TFLOP/s, PyTorch ${py ? W.matmul.pytorchTflops.median.toFixed(0) : 'n/a'}`,
  );
}

export async function scaling(ctx) {
  const { gpu, quick, W } = ctx;
  const batches = quick ? [2, 4] : gpu ? [64, 128, 256, 512, 1024] : [16, 32, 64, 128, 256];
  const depthBatch = quick ? 2 : gpu ? 128 : 16;
  const depths = quick ? [20] : [20, 56, 110, 1202];
  log(`scaling: ResNet-20 step against batch size; depth at batch ${depthBatch}`);
  const byBatch = [];
  for (const b of batches) {
    const c = { model: 'resnet20', batch: b, image: 32 };
    byBatch.push({
      batch: b,
      ...(await compareStep(
        ctx,
        `resnet20 batch ${b}`,
        c,
        stepPlan(ctx, gpu ? 5 : 3, gpu ? 10 : Math.max(1, Math.round(256 / b)), gpu ? 5 : 1),
      )),
    });
  }
  const byDepth = [];
  for (const d of depths) {
    const c = { model: `resnet${d}`, batch: depthBatch, image: 32 };
    byDepth.push({
      depth: d,
      ...(await compareStep(ctx, `resnet${d} batch ${depthBatch}`, c, stepPlan(ctx, 3, d >= 1202 ? 1 : gpu ? 10 : 2, 1))),
    });
  }
  W.scaling = { byBatch, byDepth, depthBatch };
}

export async function memory(ctx) {
  const { device, gpu, quick, threads, py, W } = ctx;
  // Each side in a fresh process: the peak of the step itself, then RSS sampled over many steps.
  const peakCfg = quick
    ? { model: 'resnet20', batch: 4, image: 32, steps: 2 }
    : gpu
      ? { model: 'resnet50', batch: 256, image: 224, amp: true, channelsLast: true, steps: 5 }
      : { model: 'resnet20', batch: 128, image: 32, steps: 5 };
  const growthCfg = quick
    ? { model: 'resnet20', batch: 2, image: 32, steps: 20, sampleEvery: 5 }
    : { model: 'resnet20', batch: gpu ? 128 : 16, image: 32, steps: 1000, sampleEvery: 50 };
  const python = py ? py.python : null;
  const runMem = (side, cfg) => {
    const c = JSON.stringify({ device, threads, ...cfg });
    const p =
      side === 'r'
        ? spawnSync(process.execPath, [ctx.script, '--child-mem', c], { encoding: 'utf8', maxBuffer: 1 << 24 })
        : spawnSync(python, [path.join(root, 'scripts', 'bench', 'bench.py'), 'mem', c], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (p.status !== 0)
      throw new Error(
        `memory run (${side === 'r' ? 'residual' : 'PyTorch'}) failed: ${(p.stderr || '').trim().split('\n').slice(-5).join('\n')}`,
      );
    return JSON.parse(p.stdout.trim().split('\n').pop());
  };
  const growth = (res) => {
    // RSS after the first tenth of the steps (warm: caches, allocator pools) against the last sample.
    const s = res.samples;
    if (s.length < 2) return null;
    const from = s[Math.max(0, Math.floor(s.length / 10) - 1)];
    const to = s[s.length - 1];
    return { fromStep: from[0], toStep: to[0], fromKB: from[1], toKB: to[1], kb: to[1] - from[1] };
  };
  log(
    `memory: peak of ${cfgLabel(peakCfg)} (${peakCfg.steps} steps) and RSS over ${growthCfg.steps} steps of ${cfgLabel(growthCfg)}, each in a fresh process`,
  );
  const peak = { config: peakCfg, residual: runMem('r', peakCfg), pytorch: py ? runMem('p', peakCfg) : null };
  const gr = { config: growthCfg, residual: runMem('r', growthCfg), pytorch: py ? runMem('p', growthCfg) : null };
  gr.residualGrowth = growth(gr.residual);
  gr.pytorchGrowth = gr.pytorch ? growth(gr.pytorch) : null;
  W.memory = { peak, growth: gr };
  const mb = (kb) => (kb == null ? 'n/a' : `${(kb / 1024).toFixed(0)} MB`);
  log(
    `  peak RSS: residual ${mb(peak.residual.peakRssKB)} (at start ${mb(peak.residual.baselineRssKB)}), PyTorch ${mb(peak.pytorch?.peakRssKB)} (at start ${mb(peak.pytorch?.baselineRssKB)})`,
  );
  if (gpu)
    log(
      `  peak CUDA memory: residual ${(peak.residual.peakCudaBytes / 2 ** 20).toFixed(0)} MB, PyTorch ${peak.pytorch ? (peak.pytorch.peakCudaBytes / 2 ** 20).toFixed(0) : 'n/a'} MB`,
    );
  log(
    `  RSS growth from step ${gr.residualGrowth?.fromStep} to ${gr.residualGrowth?.toStep}: residual ${mb(gr.residualGrowth?.kb)}, PyTorch ${mb(gr.pytorchGrowth?.kb)}; residual live tensors at the end ${gr.residual.tensors}`,
  );
}
