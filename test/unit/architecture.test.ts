// The layers of lib/: each folder imports only folders before it in LAYERS (type-only imports count
// too), and no two modules import each other, directly or around a longer loop. Imports are read with
// the TypeScript compiler's parser (static imports, `export ... from`, dynamic import() and `import('x')`
// types), not with regular expressions. docs/architecture.md draws the same order.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { root } from '../support/helpers.js';

/** The folders of lib/, lowest first: a folder may import only the folders before it. */
export const LAYERS = ['core', 'addon', 'tensor', 'autograd', 'io', 'optim', 'data', 'nn', 'models', 'distributed', 'tfjs', 'viz', 'train', 'explain', 'cli'] as const;

const lib = path.join(root, 'lib');

/** Every module specifier a source file names, with whether it is type-only. */
export function importsOf(fileName: string, text: string): { spec: string; typeOnly: boolean }[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const out: { spec: string; typeOnly: boolean }[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      const c = n.importClause;
      const typeOnly = !!c && (c.isTypeOnly || (!c.name && !!c.namedBindings && ts.isNamedImports(c.namedBindings) && c.namedBindings.elements.length > 0 && c.namedBindings.elements.every((e) => e.isTypeOnly)));
      out.push({ spec: n.moduleSpecifier.text, typeOnly });
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      out.push({ spec: n.moduleSpecifier.text, typeOnly: n.isTypeOnly });
    } else if (ts.isImportEqualsDeclaration(n) && ts.isExternalModuleReference(n.moduleReference) && ts.isStringLiteral(n.moduleReference.expression)) {
      out.push({ spec: n.moduleReference.expression.text, typeOnly: n.isTypeOnly });
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword && n.arguments.length > 0 && ts.isStringLiteralLike(n.arguments[0])) {
      out.push({ spec: n.arguments[0].text, typeOnly: false });
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      out.push({ spec: n.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

/** The module graph of a tree of sources ({relative path: text}): relative imports resolved to files. */
export function moduleGraph(files: Record<string, string>): Map<string, { to: string; typeOnly: boolean }[]> {
  const g = new Map<string, { to: string; typeOnly: boolean }[]>();
  for (const [file, text] of Object.entries(files)) {
    const edges: { to: string; typeOnly: boolean }[] = [];
    for (const { spec, typeOnly } of importsOf(file, text)) {
      if (!spec.startsWith('.')) continue;
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
      edges.push({ to: target, typeOnly });
    }
    g.set(file, edges);
  }
  return g;
}

/** The layer a module belongs to: its first folder under lib/ ('' for lib/index.ts). */
const layerOf = (file: string): string => (file.includes('/') ? file.split('/')[0] : '');

/** Imports that go to a later layer (or to an unknown one), as 'file -> target'. */
export function upwardImports(g: Map<string, { to: string; typeOnly: boolean }[]>, layers: readonly string[]): string[] {
  const bad: string[] = [];
  for (const [file, edges] of g) {
    const from = layerOf(file);
    for (const e of edges) {
      const to = layerOf(e.to);
      if (to === from) continue;
      const kind = e.typeOnly ? ' (type-only)' : '';
      if (!layers.includes(to)) bad.push(`${file} -> ${e.to}${kind}: ${to || 'lib/index.ts'} is not a layer below ${from || 'the package root'}`);
      else if (from === '') continue; // the package root may import every layer
      else if (!layers.includes(from)) bad.push(`${file}: its folder ${from} is not in LAYERS`);
      else if (layers.indexOf(to) > layers.indexOf(from)) bad.push(`${file} -> ${e.to}${kind}: ${from} may not import ${to}, a later layer`);
    }
  }
  return bad;
}

/** The import cycles (strongly connected groups of more than one module, or a module importing itself). */
export function cycles(g: Map<string, { to: string; typeOnly: boolean }[]>): string[][] {
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

function libSources(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out[path.relative(lib, p).split(path.sep).join('/')] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(lib);
  return out;
}

describe('architecture: the layers of lib/', () => {
  const files = libSources();
  const g = moduleGraph(files);

  it('every folder of lib/ is a layer', () => {
    const folders = fs.readdirSync(lib, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
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
