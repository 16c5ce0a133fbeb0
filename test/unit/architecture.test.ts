// The layers of lib/: each folder imports only folders before it in LAYERS (type-only imports count
// too), and no two modules import each other, directly or around a longer loop. Imports are read with
// the TypeScript compiler's parser (static imports, `export ... from`, dynamic import() and `import('x')`
// types), not with regular expressions. docs/architecture.md draws the same order.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';

// The order, the parser and the module graph live in scripts/codegen/layers.mjs (shared with the
// picture in docs/architecture.md).
// @ts-expect-error: a plain .mjs module without types
import * as layers from '../../scripts/codegen/layers.mjs';

type Graph = Map<string, { to: string; typeOnly: boolean }[]>;
const LAYERS = layers.LAYERS as readonly string[];
const importsOf = layers.importsOf as (fileName: string, text: string) => { spec: string; typeOnly: boolean }[];
const moduleGraph = layers.moduleGraph as (files: Record<string, string>) => Graph;
const lib = path.join(root, 'lib');

/** The layer a module belongs to: its first folder under lib/ ('' for lib/index.ts). */
const layerOf = (file: string): string => (file.includes('/') ? file.split('/')[0] : '');

/** Imports that go to a later layer (or to an unknown one), as 'file -> target'. */
function upwardImports(g: Graph, order: readonly string[]): string[] {
  const bad: string[] = [];
  for (const [file, edges] of g) {
    const from = layerOf(file);
    for (const e of edges) {
      const to = layerOf(e.to);
      if (to === from) continue;
      const kind = e.typeOnly ? ' (type-only)' : '';
      if (!order.includes(to))
        bad.push(`${file} -> ${e.to}${kind}: ${to || 'lib/index.ts'} is not a layer below ${from || 'the package root'}`);
      else if (from === '')
        continue; // the package root may import every layer
      else if (!order.includes(from)) bad.push(`${file}: its folder ${from} is not in LAYERS`);
      else if (order.indexOf(to) > order.indexOf(from)) bad.push(`${file} -> ${e.to}${kind}: ${from} may not import ${to}, a later layer`);
    }
  }
  return bad;
}

/** The import cycles (strongly connected groups of more than one module, or a module importing itself). */
function cycles(g: Graph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const { to } of g.get(v) ?? []) {
      if (!g.has(to)) continue;
      if (!index.has(to)) {
        visit(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(v, Math.min(low.get(v)!, index.get(to)!));
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        group.push(w);
      } while (w !== v);
      if (group.length > 1 || (g.get(v) ?? []).some((e) => e.to === v)) out.push(group.sort());
    }
  };
  for (const v of g.keys()) if (!index.has(v)) visit(v);
  return out;
}

describe('architecture: the layers of lib/', () => {
  const files = layers.libSources(lib) as Record<string, string>;
  const g = moduleGraph(files);

  it('every folder of lib/ is a layer', () => {
    const folders = fs
      .readdirSync(lib, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
    expect(folders.sort()).toEqual([...LAYERS].sort());
  });

  it('every relative import names a module that exists', () => {
    const missing = [...g].flatMap(([file, edges]) => edges.filter((e) => !(e.to in files)).map((e) => `${file} -> ${e.to}`));
    expect(missing).toEqual([]);
  });

  it('each folder imports only the folders before it (type-only imports included)', () => {
    expect(upwardImports(g, LAYERS)).toEqual([]);
    // The package root exports the library, not the CLI.
    expect((g.get('index.ts') ?? []).filter((e) => layerOf(e.to) === 'cli')).toEqual([]);
  });

  it('no module imports itself through a loop (type-only imports included)', () => {
    expect(cycles(g)).toEqual([]);
  });

  it('docs/architecture.svg is drawn from the current code (node scripts/codegen/architecture-svg.mjs)', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const svg = (await import('../../scripts/codegen/architecture-svg.mjs')) as { architectureSvg: () => string };
    expect(fs.readFileSync(path.join(root, 'docs', 'architecture.svg'), 'utf8')).toBe(svg.architectureSvg());
  });

  it('the checks see what they are for: an upward import, a type-only cycle, every import form', () => {
    const toy = moduleGraph({
      'core/a.ts': "import { b } from '../tensor/b.js';",
      'tensor/b.ts': "import type { C } from './c.js';\nexport const b = 1;",
      'tensor/c.ts': "export type { B } from './b.js';\nexport type C = import('./d.js').D;",
      'tensor/d.ts': "export const d = () => import('../core/z.js');",
    });
    expect(upwardImports(toy, LAYERS)).toEqual(['core/a.ts -> tensor/b.ts: core may not import tensor, a later layer']);
    expect(cycles(toy)).toEqual([['tensor/b.ts', 'tensor/c.ts']]);
    expect(toy.get('tensor/c.ts')).toEqual([
      { to: 'tensor/b.ts', typeOnly: true },
      { to: 'tensor/d.ts', typeOnly: true },
    ]);
    expect(toy.get('tensor/d.ts')).toEqual([{ to: 'core/z.ts', typeOnly: false }]);
    expect(importsOf('x.ts', "import { type A, type B } from './y.js'; import { c, type D } from './z.js';")).toEqual([
      { spec: './y.js', typeOnly: true },
      { spec: './z.js', typeOnly: false },
    ]);
  });
});
