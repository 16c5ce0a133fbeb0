// Loads the exported model (data/model.onnx) with onnxruntime-web's WebAssembly backend and classifies
// the images of data/samples.json: { classes, images: [{ pixels: [28*28 bytes], label }], residual?: { predictions } }.
// The model takes pixels scaled to [0, 1]: `residual export` put the run's normalisation in the graph.
// The results are also left in window.results for tests ({ predictions, logits, backend }).
import * as ort from './ort/ort.wasm.min.mjs';

const status = document.getElementById('status');
const grid = document.getElementById('grid');

async function main() {
  ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
  ort.env.wasm.numThreads = 1; // threads need a cross-origin-isolated page; one is plenty for a few images
  const [samples, session] = await Promise.all([
    fetch('data/samples.json').then((r) => r.json()),
    ort.InferenceSession.create('data/model.onnx', { executionProviders: ['wasm'] }),
  ]);
  const { classes, images } = samples;
  const [c, h, w] = samples.shape ?? [1, 28, 28]; // CHW, one byte per pixel and channel
  const size = c * h * w;
  images.forEach((im, i) => {
    if (im.pixels.length !== size) throw new Error(`image ${i} has ${im.pixels.length} values, not ${c}x${h}x${w}`);
  });
  const x = new Float32Array(images.length * size);
  images.forEach((im, i) => im.pixels.forEach((p, j) => (x[i * size + j] = p / 255)));
  const t0 = performance.now();
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [images.length, c, h, w]) });
  const ms = performance.now() - t0;
  const y = out[session.outputNames[0]];
  const k = y.dims[1];
  const logits = images.map((_, i) => Array.from(y.data.subarray(i * k, (i + 1) * k)));
  const predictions = logits.map((l) => l.indexOf(Math.max(...l)));
  let right = 0;
  images.forEach((im, i) => {
    const l = logits[i];
    const m = Math.max(...l);
    const e = l.map((v) => Math.exp(v - m));
    const p = e[predictions[i]] / e.reduce((a, b) => a + b, 0);
    const ok = predictions[i] === im.label;
    right += ok;
    const same = samples.residual
      ? samples.residual.predictions[i] === predictions[i]
        ? 'same as residual'
        : 'residual says ' + classes[samples.residual.predictions[i]]
      : '';
    const tile = document.createElement('div');
    tile.className = 'tile';
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    const img = ctx.createImageData(w, h);
    // grey from one channel, RGB from three (the planes of CHW)
    for (let j = 0; j < h * w; j++)
      img.data.set(
        c === 1 ? [im.pixels[j], im.pixels[j], im.pixels[j], 255] : [im.pixels[j], im.pixels[h * w + j], im.pixels[2 * h * w + j], 255],
        j * 4,
      );
    ctx.putImageData(img, 0, 0);
    tile.append(canvas);
    tile.insertAdjacentHTML(
      'beforeend',
      `<div class="pred ${ok ? 'ok' : 'bad'}">${classes[predictions[i]]}</div>
      <div class="bar"><div style="width:${(p * 100).toFixed(1)}%"></div></div>
      <div class="meta">${(p * 100).toFixed(1)}% · true: ${classes[im.label]}</div><div class="meta">${same}</div>`,
    );
    grid.append(tile);
  });
  status.textContent = `onnxruntime-web ${ort.env.versions.web} (WebAssembly): ${images.length} test images in ${ms.toFixed(0)} ms, ${right}/${images.length} right. Model: ${session.inputNames[0]} [N, ${c}, ${h}, ${w}] → ${session.outputNames[0]} [N, ${k}]`;
  window.results = { predictions, logits, backend: 'wasm', version: ort.env.versions.web };
  document.body.dataset.done = '1';
}

main().catch((e) => {
  status.textContent = `error: ${e.message}`;
  window.results = { error: String(e.message ?? e) };
  document.body.dataset.done = 'error';
});
