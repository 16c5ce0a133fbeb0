// A static server for the example page, on 127.0.0.1 only:
//   node examples/onnx-web/serve.mjs [--port 8080] [--data DIR]
// serves this folder (index.html, app.mjs), /ort/ from the onnxruntime-web package (its JS and .wasm),
// and model.onnx + samples.json from DIR (default: this folder; scripts/demo/onnx-fashion.mjs writes them).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.onnx': 'application/octet-stream',
  '.png': 'image/png',
  '.css': 'text/css',
};

/** The folder of onnxruntime-web's browser files (node_modules/onnxruntime-web/dist). */
export function ortWebDir() {
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('onnxruntime-web')); // its Node entry lies in dist/, beside the browser files
}

/** Starts the server; resolves to { url, close() }. `port` 0 picks a free one. */
export function serve({ port = 8080, data = here } = {}) {
  const roots = { '/ort/': ortWebDir(), '/data/': path.resolve(data), '/': here };
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'only GET');
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
    } catch {
      return send(res, 400, 'malformed URL');
    }
    if (pathname.includes('\0')) return send(res, 400, 'malformed URL');
    if (pathname === '/') pathname = '/index.html';
    const prefix = Object.keys(roots).find((p) => pathname.startsWith(p));
    const base = roots[prefix];
    const file = path.resolve(base, '.' + pathname.slice(prefix.length - 1));
    if (!file.startsWith(base + path.sep)) return send(res, 403, 'outside the served folders');
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return send(res, 404, `not found: ${pathname}`);
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'content-length': st.size,
        'cache-control': 'no-store',
      });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port: p } = server.address();
      resolve({ url: `http://127.0.0.1:${p}/`, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

function send(res, code, text) {
  res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text + '\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, d) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : d;
  };
  const s = await serve({ port: Number(arg('port', 8080)), data: arg('data', here) });
  console.log(`open ${s.url} (Ctrl-C stops)`);
}
