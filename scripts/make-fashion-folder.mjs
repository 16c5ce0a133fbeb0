// Writes Fashion-MNIST as an ImageNet-layout JPEG folder (OUT/train/<class>/<n>.jpg, OUT/val/...), for
// the end-to-end run of the streaming path in README:
//   node scripts/make-fashion-folder.mjs OUT [--train 10000] [--val 2000]
// Fashion-MNIST comes from where `residual train` finds it (RESIDUAL_DATA, the Debian package, the cache).
// JPEGs are encoded with jpeg-js (a dev dependency), quality 95, as grayscale-looking RGB.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import jpeg from 'jpeg-js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { data } = await import(path.join(root, 'dist', 'index.js'));
const out = process.argv[2];
const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
if (!out) {
  console.error('usage: node scripts/make-fashion-folder.mjs OUT [--train N] [--val N]');
  process.exit(2);
}
const f = data.loadFashionMnist();
for (const [split, ds, n] of [['train', f.train, arg('train', 10000)], ['val', f.test, arg('val', 2000)]]) {
  const [N, , H, W] = ds.images.shape;
  const px = ds.images.toTypedArray();
  const labels = ds.labels.toArray();
  const count = Math.min(n, N);
  for (let i = 0; i < count; i++) {
    const dir = path.join(out, split, ds.classes[labels[i]].replace(/[^A-Za-z0-9]+/g, '_'));
    fs.mkdirSync(dir, { recursive: true });
    const rgba = Buffer.alloc(H * W * 4);
    for (let p = 0; p < H * W; p++) {
      const v = px[i * H * W + p];
      rgba[4 * p] = rgba[4 * p + 1] = rgba[4 * p + 2] = v;
      rgba[4 * p + 3] = 255;
    }
    fs.writeFileSync(path.join(dir, `${String(i).padStart(5, '0')}.jpg`), jpeg.encode({ data: rgba, width: W, height: H }, 95).data);
  }
  console.log(`${split}: ${count} JPEGs in ${path.join(out, split)}`);
}
