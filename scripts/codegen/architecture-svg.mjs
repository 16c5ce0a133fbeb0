#!/usr/bin/env node
// Draws docs/architecture.svg: the layers of lib/ stacked lowest first at the bottom, with what lives in
// each and which layers it imports, read from the code (scripts/codegen/layers.mjs). An SVG written
// directly: a handful of boxes and text lines need no chart library.
//   node scripts/codegen/architecture-svg.mjs [--check]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LAYER_INFO, LAYERS, layerImports, libSources, moduleGraph } from './layers.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const outFile = path.join(root, 'docs', 'architecture.svg');

const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function architectureSvg() {
  const imports = layerImports(moduleGraph(libSources(path.join(root, 'lib'))));
  const W = 1000;
  const boxH = 40;
  const gap = 8;
  const top = 76;
  const left = 24;
  const boxW = 470;
  const n = LAYER_INFO.length;
  const H = top + n * (boxH + gap) + 40;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${left}" y="26" font-size="17" font-weight="bold" fill="#1a1a1a">The layers of lib/: each imports only layers below it</text>`,
    `<text x="${left}" y="45" font-size="12" fill="#555555">checked by test/unit/architecture.test.ts; lib/index.ts (the package) sits on top and exports the public names</text>`,
    `<text x="${left + boxW + 24}" y="${top - 8}" font-size="12" font-weight="bold" fill="#333333">imports (read from the code)</text>`,
  ];
  // Highest layer at the top.
  [...LAYER_INFO].reverse().forEach(([name, what], i) => {
    const y = top + i * (boxH + gap);
    const level = LAYERS.indexOf(name) / (n - 1);
    const fill = `hsl(${Math.round(210 - 150 * level)}, 55%, ${Math.round(92 - 8 * level)}%)`;
    parts.push(`<rect x="${left}" y="${y}" width="${boxW}" height="${boxH}" rx="5" fill="${fill}" stroke="#667788" stroke-width="1"/>`);
    parts.push(`<text x="${left + 12}" y="${y + 17}" font-size="14" font-weight="bold" fill="#1a1a1a">${esc(name)}/</text>`);
    parts.push(`<text x="${left + 12}" y="${y + 33}" font-size="11.5" fill="#333333">${esc(what)}</text>`);
    const deps = imports.get(name) ?? [];
    // The list on one line, or two when long.
    const lines = [];
    let cur = '';
    for (const d of deps) {
      const next = cur ? `${cur}, ${d}` : d;
      if (next.length > 62 && cur) {
        lines.push(`${cur},`);
        cur = d;
      } else cur = next;
    }
    lines.push(cur || '(nothing in lib/)');
    lines.forEach((l, k) => {
      const ty = y + (lines.length === 1 ? 25 : 17 + 15 * k);
      parts.push(`<text x="${left + boxW + 24}" y="${ty}" font-size="12" fill="#333333">${esc(l)}</text>`);
    });
    if (i < n - 1) parts.push(`<path d="M ${left + boxW / 2} ${y + boxH + 1} l 0 ${gap - 2}" stroke="#667788" stroke-width="1.5"/>`);
  });
  parts.push(
    `<text x="${left}" y="${H - 14}" font-size="11" fill="#555555">drawn by scripts/codegen/architecture-svg.mjs from the imports in lib/</text>`,
  );
  parts.push('</svg>', '');
  return parts.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const svg = architectureSvg();
  if (process.argv.includes('--check')) {
    if (!fs.existsSync(outFile) || fs.readFileSync(outFile, 'utf8') !== svg) {
      console.error('docs/architecture.svg is out of date: run node scripts/codegen/architecture-svg.mjs');
      process.exit(1);
    }
  } else {
    fs.writeFileSync(outFile, svg);
    console.error(`wrote ${path.relative(root, outFile)}`);
  }
}
