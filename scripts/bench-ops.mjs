#!/usr/bin/env node
// Per-op overhead for small tensors: this addon (through the public TS API) against Python PyTorch on
// the same machine, in the same run. Prints ns/op and the ratio (ours / PyTorch; < 1 is faster).
//   node scripts/bench-ops.mjs [--device cuda] [--json out.json]
// Needs `npm run build` first, and python3 with torch for the comparison (skipped with a note otherwise).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const r = await import(path.join(root, 'dist', 'index.js'));
const args = process.argv.slice(2);
const device = args.includes('--device') ? args[args.indexOf('--device') + 1] : 'cpu';
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;
r.setNumThreads(1);

function time(fn, minMs = 300) {
  for (let i = 0; i < 200; i++) fn(); // warm up
  let n = 100;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    if (device !== 'cpu') r.cuda.synchronize();
    const ns = Number(process.hrtime.bigint() - t0);
    if (ns > minMs * 1e6) return ns / n;
    n *= 2;
  }
}
function best(fn, reps = 5) {
  let b = Infinity;
  for (let i = 0; i < reps; i++) b = Math.min(b, time(fn));
  return b;
}

const a = r.ones([1], { device });
const b = r.ones([1], { device });
const x = r.randn([1, 3, 8, 8], { device });
const w = r.randn([4, 3, 3, 3], { device });
const xg = x.clone().requiresGrad_(true);
const wg = w.clone().requiresGrad_(true);

const cases = {
  'add (1 element)': () => a.add(b).dispose(),
  'add scalar (1 element)': () => a.add(1).dispose(),
  'relu (1 element)': () => a.relu().dispose(),
  'conv2d fwd (1x3x8x8, 4x3x3x3)': () => r.conv2d(x, w, null, { padding: 1 }).dispose(),
  'conv2d fwd+bwd': () => {
    const y = r.conv2d(xg, wg, null, { padding: 1 });
    const s = y.sum();
    s.backward();
    y.dispose();
    s.dispose();
    xg.grad = null;
    wg.grad = null;
  },
};

const ours = {};
for (const [name, fn] of Object.entries(cases)) ours[name] = best(fn);

const py = `
import time, json, torch, sys
torch.set_num_threads(1)
dev = sys.argv[1]
a = torch.ones(1, device=dev); b = torch.ones(1, device=dev)
x = torch.randn(1,3,8,8, device=dev); w = torch.randn(4,3,3,3, device=dev)
xg = x.clone().requires_grad_(); wg = w.clone().requires_grad_()
F = torch.nn.functional
def fb():
    y = F.conv2d(xg, wg, None, padding=1); s = y.sum(); s.backward(); xg.grad = None; wg.grad = None
cases = {
 'add (1 element)': lambda: torch.add(a, b),
 'add scalar (1 element)': lambda: torch.add(a, 1),
 'relu (1 element)': lambda: torch.relu(a),
 'conv2d fwd (1x3x8x8, 4x3x3x3)': lambda: F.conv2d(x, w, None, padding=1),
 'conv2d fwd+bwd': fb,
}
def tm(fn, min_s=0.3):
    for _ in range(200): fn()
    n = 100
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n): fn()
        if dev != 'cpu': torch.cuda.synchronize()
        ns = time.perf_counter_ns() - t0
        if ns > min_s * 1e9: return ns / n
        n *= 2
out = {k: min(tm(f) for _ in range(5)) for k, f in cases.items()}
out['__version'] = torch.__version__
print(json.dumps(out))
`;
const p = spawnSync('python3', ['-c', py, device], { encoding: 'utf8' });
let theirs = null;
if (p.status === 0) theirs = JSON.parse(p.stdout.trim().split('\n').pop());
else console.error(`(python3 torch not available for comparison: ${(p.stderr || '').trim().split('\n').pop()})`);

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`residual ${r.buildInfo().libtorch} (${r.buildInfo().variant}) vs PyTorch ${theirs?.__version ?? 'n/a'}; device ${device}; ${cpu}, ${os.cpus().length} cores; 1 intra-op thread`);
console.log(`${'op'.padEnd(34)} ${'residual ns/op'.padStart(15)} ${'PyTorch ns/op'.padStart(14)} ${'ratio'.padStart(7)}`);
const rows = [];
for (const name of Object.keys(cases)) {
  const o = ours[name];
  const t = theirs?.[name];
  rows.push({ op: name, residualNs: Math.round(o), pytorchNs: t ? Math.round(t) : null, ratio: t ? +(o / t).toFixed(2) : null });
  console.log(`${name.padEnd(34)} ${o.toFixed(0).padStart(15)} ${(t ? t.toFixed(0) : 'n/a').padStart(14)} ${(t ? (o / t).toFixed(2) : 'n/a').padStart(7)}`);
}
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ device, cpu, rows, pytorch: theirs?.__version }, null, 2));
