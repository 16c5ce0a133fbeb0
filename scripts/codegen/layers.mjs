// The layers of lib/, lowest first, and the reading of their imports with the TypeScript parser. A
// folder may import only the folders before it (type-only imports too). test/unit/architecture.test.ts
// checks the code against this order; scripts/codegen/architecture-svg.mjs draws it for
// docs/architecture.md.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** [folder, what lives there], lowest layer first. */
export const LAYER_INFO = [
  ['core', 'error classes, checked numbers, atomic file writes, the seeded PRNG'],
  ['addon', 'finding, probing and loading the native binary; the typed binding'],
  ['tensor', 'Tensor, creation, dtypes, scopes, memory, devices, RNG'],
  ['autograd', 'noGrad, enableGrad, autograd.grad'],
  ['io', 'safetensors, PyTorch checkpoints (zip + unpickler)'],
  ['optim', 'SGD, Adam, AdamW (native steps), LR schedules'],
  ['data', 'IDX, CIFAR, image folders, WebDataset shards, native loaders'],
  ['nn', 'Module, layers, functional ops, init'],
  ['models', 'residual blocks, ResNets (torchvision, CIFAR, pre-activation), registry'],
  ['onnx', 'ONNX export of models (exportOnnx)'],
  ['distributed', 'process groups on c10d, DistributedDataParallel, samplers'],
  ['tfjs', 'the TensorFlow.js backend (residual/tfjs)'],
  ['viz', 'charts: Vega-Lite specs to SVG and PNG'],
  ['tensorboard', 'TensorBoard event files: SummaryWriter, reader, purge on resume'],
  ['train', 'Trainer, checkpoints, metrics, reports, CUDA graphs'],
  ['explain', '`residual explain`: experiments and figures'],
  ['cli', 'the `residual` command'],
];
export const LAYERS = LAYER_INFO.map(([name]) => name);

/** Every module specifier a source file names, with whether it is type-only. */
export function importsOf(fileName, text) {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const out = [];
  const visit = (n) => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      const c = n.importClause;
      const named = c?.namedBindings && ts.isNamedImports(c.namedBindings) ? c.namedBindings.elements : null;
      const typeOnly = !!c && (c.isTypeOnly || (!c.name && !!named && named.length > 0 && named.every((e) => e.isTypeOnly)));
      out.push({ spec: n.moduleSpecifier.text, typeOnly });
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      out.push({ spec: n.moduleSpecifier.text, typeOnly: n.isTypeOnly });
    } else if (
      ts.isImportEqualsDeclaration(n) &&
      ts.isExternalModuleReference(n.moduleReference) &&
      ts.isStringLiteral(n.moduleReference.expression)
    ) {
      out.push({ spec: n.moduleReference.expression.text, typeOnly: n.isTypeOnly });
    } else if (
      ts.isCallExpression(n) &&
      n.expression.kind === ts.SyntaxKind.ImportKeyword &&
      n.arguments.length > 0 &&
      ts.isStringLiteralLike(n.arguments[0])
    ) {
      out.push({ spec: n.arguments[0].text, typeOnly: false });
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      out.push({ spec: n.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

/** The module graph of sources ({path relative to lib/: text}): relative imports resolved to files. */
export function moduleGraph(files) {
  const g = new Map();
  for (const [file, text] of Object.entries(files)) {
    const edges = [];
    for (const { spec, typeOnly } of importsOf(file, text)) {
      if (!spec.startsWith('.')) continue;
      edges.push({ to: path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts'), typeOnly });
    }
    g.set(file, edges);
  }
  return g;
}

/** The layer of a module: its first folder under lib/ ('' for lib/index.ts). */
export const layerOf = (file) => (file.includes('/') ? file.split('/')[0] : '');

/** The .ts sources of a lib/ folder, by path relative to it (with '/'). */
export function libSources(lib) {
  const out = {};
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) out[path.relative(lib, p).split(path.sep).join('/')] = fs.readFileSync(p, 'utf8');
    }
  };
  walk(lib);
  return out;
}

/** Which layers each layer imports, from a module graph: Map(layer -> sorted layers). */
export function layerImports(g) {
  const out = new Map(LAYERS.map((l) => [l, new Set()]));
  for (const [file, edges] of g) {
    const from = layerOf(file);
    if (!out.has(from)) continue;
    for (const e of edges) {
      const to = layerOf(e.to);
      if (to !== from && to) out.get(from).add(to);
    }
  }
  return new Map([...out].map(([k, v]) => [k, [...v].sort((a, b) => LAYERS.indexOf(a) - LAYERS.indexOf(b))]));
}
