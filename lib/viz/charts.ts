// Charts: a declarative Vega-Lite spec, rendered to SVG by Vega on the server side, and the SVG
// rasterised to PNG by resvg. Both use the DejaVu Sans font files shipped with the dejavu-fonts-ttf
// package (resvg loads no system fonts), so the PNG shows the same text, in the same font, as the SVG.
// The training report (lib/train/report.ts) and `residual explain` (lib/explain) draw through here.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { writeFileAtomic } from '../core/fs.js';

/** A Vega-Lite spec as plain JSON (checked by Vega-Lite when it is compiled). */
export type ChartSpec = Record<string, unknown>;

/** The one font of every chart, in the SVG's font-family and as the PNG renderer's only font. */
export const CHART_FONT = 'DejaVu Sans';

const require = createRequire(import.meta.url);

/** The DejaVu Sans files (regular, bold, oblique) that resvg draws the text with. */
export function chartFontFiles(): string[] {
  const dir = path.join(path.dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
  return ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf'].map((f) => path.join(dir, f));
}

/**
 * Advance widths of a TrueType font's characters, read from its tables (head: units per em; hhea and
 * hmtx: advances; cmap format 4: characters to glyphs), so that Vega lays text out with the widths
 * resvg will draw it with. Kerning is ignored.
 */
export class FontMetrics {
  private readonly unitsPerEm: number;
  private readonly advances: number[];
  private readonly glyphOf: (code: number) => number;

  constructor(file: string) {
    const buf = fs.readFileSync(file);
    const tables = new Map<string, number>();
    for (let i = 0, n = buf.readUInt16BE(4); i < n; i++)
      tables.set(buf.toString('latin1', 12 + 16 * i, 16 + 16 * i), buf.readUInt32BE(20 + 16 * i));
    const at = (tag: string) => {
      const o = tables.get(tag);
      if (o === undefined) throw new Error(`${file}: no '${tag}' table`);
      return o;
    };
    this.unitsPerEm = buf.readUInt16BE(at('head') + 18);
    const nHMetrics = buf.readUInt16BE(at('hhea') + 34);
    const hmtx = at('hmtx');
    this.advances = Array.from({ length: nHMetrics }, (_, i) => buf.readUInt16BE(hmtx + 4 * i));
    const cmap = at('cmap');
    let sub = -1;
    for (let i = 0, n = buf.readUInt16BE(cmap + 2); i < n; i++) {
      const platform = buf.readUInt16BE(cmap + 4 + 8 * i);
      const encoding = buf.readUInt16BE(cmap + 6 + 8 * i);
      const offset = cmap + buf.readUInt32BE(cmap + 8 + 8 * i);
      if (platform === 3 && encoding === 1 && buf.readUInt16BE(offset) === 4) sub = offset;
    }
    if (sub < 0) throw new Error(`${file}: no Unicode BMP (format 4) character map`);
    const segs = buf.readUInt16BE(sub + 6) / 2;
    const ends = sub + 14;
    const starts = ends + 2 * segs + 2;
    const deltas = starts + 2 * segs;
    const ranges = deltas + 2 * segs;
    this.glyphOf = (c) => {
      for (let i = 0; i < segs; i++) {
        if (buf.readUInt16BE(ends + 2 * i) < c) continue;
        const start = buf.readUInt16BE(starts + 2 * i);
        if (start > c) return 0;
        const delta = buf.readUInt16BE(deltas + 2 * i);
        const range = buf.readUInt16BE(ranges + 2 * i);
        if (range === 0) return (c + delta) & 0xffff;
        const g = buf.readUInt16BE(ranges + 2 * i + range + 2 * (c - start));
        return g === 0 ? 0 : (g + delta) & 0xffff;
      }
      return 0;
    };
  }

  /** Width of `text` in pixels at `size` pixels per em. */
  width(text: string, size: number): number {
    let units = 0;
    for (const ch of text) {
      const g = this.glyphOf(ch.codePointAt(0) as number);
      units += this.advances[Math.min(g, this.advances.length - 1)];
    }
    return (units * size) / this.unitsPerEm;
  }
}

let metrics: { regular: FontMetrics; bold: FontMetrics } | null = null;

/** Vega's text measure: the DejaVu Sans advances (Vega's own estimate without a canvas is far too wide). */
function measureText(item: { fontSize?: number; fontWeight?: string | number }, text: unknown): number {
  metrics ??= { regular: new FontMetrics(chartFontFiles()[0]), bold: new FontMetrics(chartFontFiles()[1]) };
  const bold = item.fontWeight === 'bold' || Number(item.fontWeight) >= 600;
  const size = item.fontSize != null ? Number(item.fontSize) || 0 : 11;
  return (bold ? metrics.bold : metrics.regular).width(text == null ? '' : String(text).trim(), size);
}

/** Shared look: font, sizes and colours of titles, axes and legends. */
export const CHART_CONFIG = {
  // resvg has only DejaVu Sans, so the PNG uses it; a browser without it falls back to a similar sans-serif.
  font: `${CHART_FONT}, Verdana, Arial, sans-serif`,
  background: 'white',
  padding: { left: 12, top: 12, right: 24, bottom: 12 },
  title: { fontSize: 16, subtitleFontSize: 12, subtitleColor: '#555555', anchor: 'start', offset: 10 },
  axis: {
    labelFontSize: 11,
    labelSeparation: 8,
    titleFontSize: 12,
    titleFontWeight: 'normal',
    gridColor: '#e6e6e6',
    labelColor: '#333333',
    titleColor: '#222222',
  },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 320, symbolStrokeWidth: 2.5 },
  header: { labelFontSize: 13, titleFontSize: 13, labelFontWeight: 'bold' },
  view: { stroke: '#bbbbbb' },
} as const;

/** Renders a Vega-Lite spec to an SVG document (the spec's own config is merged over CHART_CONFIG). */
export async function renderChartSvg(spec: ChartSpec): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  // Vega's documented hook for real text metrics (what vl-convert sets): exported, though not in its types.
  (vega as unknown as { textMetrics: { width: typeof measureText } }).textMetrics.width = measureText;
  const withConfig = { ...spec, config: { ...CHART_CONFIG, ...((spec.config as object | undefined) ?? {}) } } as unknown as TopLevelSpec;
  const compiled = vegaLite.compile(withConfig).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Rasterises an SVG (as produced by renderChartSvg) to PNG bytes; `scale` 2 doubles the pixel size. */
export async function renderPng(svg: string, scale = 1): Promise<Buffer> {
  const { Resvg } = await import('@resvg/resvg-js');
  const resvg = new Resvg(svg, {
    background: 'white',
    fitTo: scale === 1 ? { mode: 'original' } : { mode: 'zoom', value: scale },
    font: { fontFiles: chartFontFiles(), loadSystemFonts: false, defaultFontFamily: CHART_FONT },
  });
  return resvg.render().asPng();
}

/** The width and height in pixels that a PNG's IHDR chunk declares (throws if `png` is not a PNG). */
export function pngSize(png: Uint8Array): { width: number; height: number } {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (png.length < 24 || !sig.every((b, i) => png[i] === b)) throw new Error('not a PNG file (bad signature)');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  if (String.fromCharCode(...png.subarray(12, 16)) !== 'IHDR') throw new Error('not a PNG file (no IHDR chunk first)');
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

/** Writes `<base>.svg` and `<base>.png` for a spec, atomically; returns their paths and the SVG text. */
export async function writeChart(base: string, spec: ChartSpec, scale = 1): Promise<{ svg: string; png: string; svgText: string }> {
  const svgText = await renderChartSvg(spec);
  const png = await renderPng(svgText, scale);
  writeFileAtomic(`${base}.svg`, svgText);
  writeFileAtomic(`${base}.png`, png);
  return { svg: `${base}.svg`, png: `${base}.png`, svgText };
}

/** Escapes text for XML and HTML. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
