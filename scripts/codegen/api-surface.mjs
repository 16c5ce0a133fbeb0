#!/usr/bin/env node
// Prints the public API: every name `residual` and `residual/tfjs` export, with its kind (class,
// function, const, namespace, interface, type, enum), and the members of the exported namespaces
// (`nn.Conv2d`), sorted, one a line. Read with the TypeScript compiler from lib/ (no build needed).
// test/unit/api.test.ts compares it with the committed snapshot (test/unit/__snapshots__/api.txt).
//   node scripts/codegen/api-surface.mjs
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ENTRY_POINTS = { residual: 'lib/index.ts', 'residual/tfjs': 'lib/tfjs/index.ts' };

function kindOf(checker, symbol) {
  const s = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
  const F = ts.SymbolFlags;
  if (s.flags & F.Class) return 'class';
  if (s.flags & F.Function) return 'function';
  if (s.flags & F.Enum) return 'enum';
  if (s.flags & F.ValueModule) return 'namespace';
  if (s.flags & F.Variable) return 'const';
  if (s.flags & F.Interface) return 'interface';
  if (s.flags & F.TypeAlias) return 'type';
  return 'other';
}

/** The API as sorted lines: `residual: nn.Conv2d class`. */
export function apiSurface() {
  const cfg = ts.parseJsonConfigFileContent(ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile).config, ts.sys, root);
  const files = Object.values(ENTRY_POINTS).map((f) => path.join(root, f));
  const program = ts.createProgram(files, { ...cfg.options, noEmit: true });
  const checker = program.getTypeChecker();
  const lines = [];
  for (const [pkg, file] of Object.entries(ENTRY_POINTS)) {
    const sf = program.getSourceFile(path.join(root, file));
    const moduleSymbol = sf && checker.getSymbolAtLocation(sf);
    if (!moduleSymbol) throw new Error(`${file}: not a module`);
    for (const sym of checker.getExportsOfModule(moduleSymbol)) {
      const kind = kindOf(checker, sym);
      lines.push(`${pkg}: ${sym.name} ${kind}`);
      if (kind !== 'namespace') continue;
      const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
      for (const member of checker.getExportsOfModule(target)) lines.push(`${pkg}: ${sym.name}.${member.name} ${kindOf(checker, member)}`);
    }
  }
  return lines.sort();
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${apiSurface().join('\n')}\n`);
}
