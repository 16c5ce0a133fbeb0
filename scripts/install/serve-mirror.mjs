#!/usr/bin/env node
// A static HTTP server for a libtorch mirror folder (scripts/install/mirror.mjs lays one out), on
// 127.0.0.1: for CI and tests, or to try RESIDUAL_LIBTORCH_MIRROR by hand. Supports Range requests
// (residual continues interrupted downloads). Prints "listening on http://127.0.0.1:PORT" once ready.
//   node scripts/install/serve-mirror.mjs DIR [--port N] [--port-file FILE]
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function serveMirror(dir, { port = 0, host = '127.0.0.1' } = {}) {
  const base = path.resolve(dir);
  const server = http.createServer((req, res) => {
    let rel;
    try {
      rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    let file = path.join(base, rel);
    // A folder: its index.html (a PEP 503 page, for pip's index-url)
    const html = rel.endsWith('/') || rel.endsWith('.html');
    if (rel.endsWith('/')) file = path.join(file, 'index.html');
    if (!file.startsWith(base + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const size = fs.statSync(file).size;
    if (html) {
      res.writeHead(200, { 'content-length': size, 'content-type': 'text/html' });
      fs.createReadStream(file).pipe(res);
      return;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      if (start >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': size - start,
        'content-range': `bytes ${start}-${size - 1}/${size}`,
        'accept-ranges': 'bytes',
      });
      fs.createReadStream(file, { start }).pipe(res);
      return;
    }
    res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (n) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);
  const dir = args[0];
  if (!dir || !fs.existsSync(dir)) {
    console.error('usage: node scripts/install/serve-mirror.mjs DIR [--port N] [--port-file FILE]');
    process.exit(2);
  }
  const server = await serveMirror(dir, { port: Number(opt('--port') ?? 0) });
  const url = `http://127.0.0.1:${server.address().port}`;
  if (opt('--port-file')) fs.writeFileSync(opt('--port-file'), `${url}\n`);
  console.log(`listening on ${url} (serving ${path.resolve(dir)})`);
}
