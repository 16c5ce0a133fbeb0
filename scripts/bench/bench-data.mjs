// Data-path benchmarks (results in BENCHMARKS.md):
//
//   node scripts/bench/bench-data.mjs throughput DIR [--workers 2] [--images 1024] [--python PY]
//     decode + RandomResizedCrop(224) + flip + normalise, images per second, ours (StreamingDataLoader
//     over DIR/train) against PyTorch's DataLoader with torchvision's transforms on the same files, in
//     the same run, with the same number of threads (PY: a python with torch + torchvision + Pillow).
//   node scripts/bench/bench-data.mjs rss DIR [--batches 3] [--batch-size 128]
//     peak RSS of `residual train --model resnet18 --data imagefolder --data-path DIR` for a few batches.
//
// DIR is an ImageNet-layout folder: `python scripts/bench/bench-data.py gen DIR N` makes one of generated
// 500x375 JPEGs. Run with `nice` on a shared machine; numbers vary with load.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const [mode, dir] = process.argv.slice(2);
const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : d;
};
if (!mode || !dir) {
  console.error('usage: node scripts/bench/bench-data.mjs throughput|rss DIR [options] (see the top of this file)');
  process.exit(2);
}

async function ours(workers, images, batch) {
  const { data } = await import(path.join(root, 'dist', 'index.js'));
  const src = data.imageFolderSource(path.join(dir, 'train'));
  const dl = new data.StreamingDataLoader(src, {
    batchSize: batch,
    size: 224,
    transform: 'train',
    shuffle: true,
    seed: 0,
    workers,
    prefetch: 2 * workers,
    dropLast: true,
    mean: data.IMAGENET_MEAN,
    std: data.IMAGENET_STD,
  });
  let n = 0;
  let warm = null;
  for await (const { x, y } of dl) {
    n += y.shape[0];
    x.dispose();
    y.dispose();
    if (!warm) warm = { t: performance.now(), n };
    if (n >= images) break;
  }
  const t = performance.now();
  dl.close();
  return { images: n - warm.n, seconds: (t - warm.t) / 1000, imagesPerSec: ((n - warm.n) * 1000) / (t - warm.t) };
}

if (mode === 'throughput') {
  const workers = Number(arg('workers', 2));
  const images = Number(arg('images', 1024));
  const batch = Number(arg('batch-size', 64));
  const py = arg('python', 'python3');
  // Alternate the two, twice each, so that load changes on a shared machine hit both alike.
  const runs = { residual: [], pytorch: [] };
  for (let rep = 0; rep < 2; rep++) {
    runs.residual.push(await ours(workers, images, batch));
    const r = spawnSync(
      py,
      [
        path.join(root, 'scripts', 'bench', 'bench-data.py'),
        'torch',
        path.join(dir, 'train'),
        '--workers',
        String(workers),
        '--batch',
        String(batch),
        '--images',
        String(images),
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) {
      console.error(r.stderr);
      process.exit(1);
    }
    runs.pytorch.push(JSON.parse(r.stdout.trim().split('\n').pop()));
  }
  const best = (a) => Math.max(...a.map((x) => x.imagesPerSec));
  const res = { workers, batch, images, residual: best(runs.residual), pytorch: best(runs.pytorch), runs };
  res.ratio = res.residual / res.pytorch;
  console.log(JSON.stringify(res, null, 2));
  console.log(
    `decode + RandomResizedCrop(224) + flip + normalise, ${workers} threads: residual ${res.residual.toFixed(1)} img/s, PyTorch DataLoader + torchvision ${res.pytorch.toFixed(1)} img/s: ${res.ratio.toFixed(2)}x`,
  );
} else if (mode === 'rss') {
  const batches = arg('batches', '3');
  const bs = arg('batch-size', '128');
  const out = path.join('/tmp', `residual-rss-${process.pid}`);
  const argv = [
    '/usr/bin/time',
    '-f',
    'MAXRSS_KB %M',
    process.execPath,
    path.join(root, 'bin', 'residual.js'),
    'train',
    '--model',
    'resnet18',
    '--data',
    'imagefolder',
    '--data-path',
    dir,
    '--epochs',
    '1',
    '--batch-size',
    bs,
    '--limit-train-batches',
    batches,
    '--limit-test-batches',
    '1',
    '--device',
    'cpu',
    '--out',
    out,
    '--json',
  ];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  spawnSync('rm', ['-rf', out]);
  const m = /MAXRSS_KB (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) {
    console.error(r.stdout.slice(-2000), r.stderr.slice(-2000));
    process.exit(1);
  }
  console.log(JSON.stringify({ dir, batches: Number(batches), batchSize: Number(bs), peakRssMB: Number(m[1]) / 1024 }));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
