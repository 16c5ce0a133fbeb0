// Charts: a declarative Vega-Lite spec, rendered to SVG by Vega on the server side, and the SVG
// rasterised to PNG by resvg. Both use the DejaVu Sans font files shipped with the dejavu-fonts-ttf
// package (resvg loads no system fonts), so the PNG shows the same text, in the same font, as the SVG.
// The training report (lib/train/report.ts) and `residual explain` (lib/explain) draw through here.
import { createRequire } from 'node:module';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { writeFileAtomic } from '../io/atomic.js';

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

/** Shared look: font, sizes and colours of titles, axes and legends. */
export const CHART_CONFIG = {
  font: CHART_FONT,
  background: 'white',
  padding: 12,
  title: { fontSize: 16, subtitleFontSize: 12, subtitleColor: '#555555', anchor: 'start', offset: 10 },
  axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal', gridColor: '#e6e6e6', labelColor: '#333333', titleColor: '#222222' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 320, symbolStrokeWidth: 2.5 },
  header: { labelFontSize: 13, titleFontSize: 13, labelFontWeight: 'bold' },
  view: { stroke: '#bbbbbb' },
} as const;

/** Renders a Vega-Lite spec to an SVG document (the spec's own config is merged over CHART_CONFIG). */
export async function renderChartSvg(spec: ChartSpec): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
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
