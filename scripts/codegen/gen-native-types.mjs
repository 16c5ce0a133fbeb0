#!/usr/bin/env node
// Writes lib/addon/binding.generated.ts: the TypeScript declaration of the native binding, one typed
// member per function the addon registers, so that a wrong argument (order, type, count) or a wrong use
// of a result is a compile error in lib/.
//
// Sources, native/**/*.cpp:
// - the op table in native/ops.cpp (`X(name, expr)`: one line per op). The signature comes from the
//   line itself: each argument reader `a.I(2, "dim")` is parameter 2, named `dim`, typed by its reader
//   (READERS below); an O* reader, or an `a.has(2)` test, makes it optional. Helpers called as `fooOp(a)`
//   and the table's own macros (A_, RED) are read the same way. The letter is the result: X one tensor,
//   X2 two, XL a list, XB a boolean, V nothing (ops.cpp static_asserts each letter against the C++ type).
// - the registration tables of the hand-written functions: `ENTRY(name),  // (a: T, ...) => R`, one
//   function a line with its signature in the comment, and `exports.Set("name", ...);  // Type` lines.
//   Each signature is checked against its DEFN body's reader calls: same index, name, type, optionality.
// Type names other than TypeScript's own come from lib/addon/native-types.ts.
//   node scripts/codegen/gen-native-types.mjs [--check]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const outFile = path.join(root, 'lib', 'addon', 'binding.generated.ts');
const typesFile = path.join(root, 'lib', 'addon', 'native-types.ts');

// Argument readers of native/binding/residual.h (struct Args): the TypeScript type of what each accepts, and
// whether the argument may be left out (undefined or null).
const READERS = {
  H: { type: 'Handle' },
  T: { type: 'Handle' },
  OT: { type: 'Handle', optional: true },
  TOS: { type: 'Handle | Boxed' },
  TL: { type: 'readonly Handle[]' },
  OTL: { type: 'readonly (Handle | null)[]' },
  S: { type: 'number | boolean' },
  OS: { type: 'number | boolean', optional: true },
  D: { type: 'number' },
  OD: { type: 'number', optional: true },
  I: { type: 'number' },
  OI: { type: 'number', optional: true },
  B: { type: 'boolean' },
  IL: { type: 'IntList' },
  OIL: { type: 'IntList', optional: true },
  Str: { type: 'string' },
  OStr: { type: 'string', optional: true },
  Dtype: { type: 'number' },
  ODtype: { type: 'number', optional: true },
  Dev: { type: 'string' },
};
const RESULTS = { X: 'Handle', X2: '[Handle, Handle]', XL: 'Handle[]', XB: 'boolean', V: 'void' };

class GenError extends Error {}
const fail = (where, msg) => {
  throw new GenError(`${where}: ${msg}`);
};

/** The text from `open` (an index of '(' or '{') to its matching closer, exclusive of both. */
function balanced(src, open) {
  const o = src[open];
  const c = o === '(' ? ')' : o === '{' ? '}' : ']';
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    if (src[i] === o) depth++;
    else if (src[i] === c && --depth === 0) return src.slice(open + 1, i);
  }
  throw new GenError(`unbalanced ${o} at offset ${open}`);
}

/** Splits at top-level occurrences of `sep` (outside (), [], {}, <> and quotes). */
function splitTop(s, sep) {
  const out = [];
  let depth = 0;
  let cur = '';
  let quote = null;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"') quote = ch;
    else if ('([{<'.includes(ch)) depth++;
    else if (')]}>'.includes(ch) && !(ch === '>' && s[i - 1] === '=')) depth--;
    else if (depth === 0 && s.startsWith(sep, i)) {
      out.push(cur);
      cur = '';
      i += sep.length - 1;
      continue;
    }
    cur += ch;
  }
  out.push(cur);
  return out.map((x) => x.trim());
}

/** Reader calls in `code`: [{reader, index, name}], and the indices tested with a.has(i). */
function readsOf(code) {
  const reads = [];
  const has = new Set();
  for (const m of code.matchAll(/\ba\.(\w+)\((\d+)(?:,\s*"(\w+)")?/g)) {
    const [, reader, idx, name] = m;
    const index = Number(idx);
    if (reader === 'has') has.add(index);
    else if (reader === 'Opts') {
      reads.push({ reader: 'ODtype', index, name: 'dtype' });
      reads.push({ reader: 'OStr', index: index + 1, name: 'device' });
    } else if (READERS[reader]) {
      if (!name) throw new GenError(`a.${reader}(${idx}) has no argument name`);
      reads.push({ reader, index, name });
    }
  }
  return { reads, has };
}

/** The file's helper functions taking `Args& a`, by name: their bodies. */
function helpersOf(src) {
  const out = new Map();
  for (const m of src.matchAll(/^static [^;{}()]*?\b(\w+)\(Args& a\b[^)]*\)\s*\{/gm))
    out.set(m[1], balanced(src, m.index + m[0].length - 1));
  return out;
}

/** The file's macros whose bodies read arguments (A_, RED(reduction)), to expand in the table. */
function argMacrosOf(src) {
  const out = [];
  for (const m of src.matchAll(/^#define (\w+)(?:\((\w+)\))? (.*\ba\.\w+\(.*)$/gm))
    out.push({ name: m[1], param: m[2], body: m[3].trim() });
  return out;
}

/** An op table expression with its macros and helper calls expanded (so every read is visible). */
function expand(expr, macros, helpers, where, depth = 0) {
  let s = expr;
  for (const mac of macros) {
    if (mac.param)
      s = s.replace(new RegExp(`\\b${mac.name}\\(([^()]*)\\)`, 'g'), (_, arg) =>
        mac.body.replace(new RegExp(`(?<!")\\b${mac.param}\\b(?!")`, 'g'), arg),
      );
    else s = s.replace(new RegExp(`\\b${mac.name}\\b`, 'g'), mac.body);
  }
  if (depth > 4) fail(where, 'helpers nest too deep');
  return s.replace(/\b(\w+)\(a\b[^)]*\)/g, (call, fn) => {
    const body = helpers.get(fn);
    if (body === undefined) return call;
    return `(${expand(body, macros, helpers, where, depth + 1)})`;
  });
}

/** Parameters by index from reads, checked for gaps and conflicts. */
function paramsOf(reads, has, where) {
  const byIndex = [];
  for (const r of reads) {
    const spec = READERS[r.reader];
    const prev = byIndex[r.index];
    const optional = !!spec.optional || has.has(r.index);
    if (!prev) {
      byIndex[r.index] = { name: r.name, type: spec.type, optional };
      continue;
    }
    if (prev.name !== r.name) fail(where, `argument ${r.index} is read as '${prev.name}' and as '${r.name}'`);
    if (prev.type !== spec.type) fail(where, `argument ${r.index} ('${r.name}') is read as ${prev.type} and as ${spec.type}`);
    // Read both ways (S and OS): optional only if every read allows it.
    prev.optional = prev.optional && optional;
  }
  for (let i = 0; i < byIndex.length; i++)
    if (!byIndex[i]) fail(where, `argument ${i} is never read (arguments must be read by index 0, 1, 2, ...)`);
  return byIndex;
}

/** `(a: T, b?: U | null) => R` from parameters: only trailing optional ones can be left out. */
function signature(params, result) {
  let lastRequired = -1;
  params.forEach((p, i) => {
    if (!p.optional) lastRequired = i;
  });
  const list = params.map((p, i) => {
    if (!p.optional) return `${p.name}: ${p.type}`;
    return i > lastRequired ? `${p.name}?: ${p.type} | null` : `${p.name}: ${p.type} | null | undefined`;
  });
  return `(${list.join(', ')}) => ${result}`;
}

/** An annotation's parameters: [{name, optional, type}] and its result type. */
function parseSignature(sig, where) {
  const s = sig.trim();
  if (!s.startsWith('(')) fail(where, `the signature must be '(params) => result', got '${s}'`);
  const inner = balanced(s, 0);
  const rest = s.slice(inner.length + 2).trim();
  if (!rest.startsWith('=>')) fail(where, `the signature must be '(params) => result', got '${s}'`);
  const params =
    inner.trim() === ''
      ? []
      : splitTop(inner, ',').map((p) => {
          const m = /^(\w+)(\?)?:\s*(.+)$/.exec(p);
          if (!m) fail(where, `parameter '${p}' must be 'name: type' or 'name?: type'`);
          return { name: m[1], optional: !!m[2], type: m[3].trim() };
        });
  return { params, result: rest.slice(2).trim() };
}

/** The types a reader's value may be written as in an annotation (besides null/undefined when optional). */
function acceptsType(reader, type) {
  const want = READERS[reader].type;
  if (type === want) return true;
  if (reader === 'Str' || reader === 'OStr' || reader === 'Dev') return splitTop(type, '|').every((t) => /^'[^']*'$/.test(t));
  return false;
}

/** Checks an ENTRY signature against the reads of its DEFN body. */
function checkAgainstBody(name, sig, body, where) {
  const { params } = parseSignature(sig, where);
  const { reads, has } = readsOf(body);
  for (const r of reads) {
    const p = params[r.index];
    const w = `${where}: ${name} argument ${r.index}`;
    if (!p) fail(w, `the body reads a.${r.reader}(${r.index}, "${r.name}"), the signature has ${params.length} parameters`);
    if (p.name !== r.name) fail(w, `the body reads it as '${r.name}', the signature names it '${p.name}'`);
    const parts = splitTop(p.type, '|');
    const nullable = parts.includes('null') || parts.includes('undefined');
    const base = parts.filter((t) => t !== 'null' && t !== 'undefined').join(' | ');
    if (!acceptsType(r.reader, base))
      fail(w, `the body reads it with a.${r.reader} (${READERS[r.reader].type}), the signature says ${base}`);
    const optional = !!READERS[r.reader].optional || has.has(r.index);
    if (optional && !(p.optional || nullable))
      fail(w, `'${r.name}' may be left out (a.${r.reader}${has.has(r.index) ? ' behind a.has' : ''}): mark it optional`);
    if (!optional && (p.optional || nullable)) fail(w, `'${r.name}' is required (a.${r.reader} without a.has): do not mark it optional`);
  }
}

/** The binding's members by source file: [{file, members: [{name, type}]}]. */
export function scanNative(dir = path.join(root, 'native')) {
  // every .cpp under native/ (its folders too), as paths relative to it, sorted
  const walk = (sub) =>
    fs
      .readdirSync(path.join(dir, sub), { withFileTypes: true })
      .flatMap((e) =>
        e.isDirectory() ? walk(path.posix.join(sub, e.name)) : e.name.endsWith('.cpp') ? [path.posix.join(sub, e.name)] : [],
      );
  const files = walk('').sort();
  const sources = new Map(files.map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]));
  const defnBody = new Map();
  for (const [f, src] of sources)
    for (const m of src.matchAll(/^DEFN\((\w+)\)\s*\{/gm)) defnBody.set(m[1], { file: f, body: balanced(src, m.index + m[0].length - 1) });
  const out = [];
  const seen = new Set();
  for (const [f, src] of sources) {
    const members = [];
    const lineOf = (index) => src.slice(0, index).split('\n').length;
    const add = (name, type, index) => {
      if (seen.has(name)) fail(`native/${f}:${lineOf(index)}`, `${name} is registered twice`);
      seen.add(name);
      members.push({ name, type });
    };
    const table = src.indexOf('#define RESIDUAL_OPS(');
    if (table >= 0) {
      const end = src.indexOf('\n\n', table);
      const macros = argMacrosOf(src);
      const helpers = helpersOf(src);
      const lines = src.slice(table, end).split('\n');
      let offset = table;
      for (const line of lines) {
        const m = /^\s*(X|X2|XL|XB|V)\((\w+),/.exec(line);
        if (m) {
          const where = `native/${f}:${lineOf(offset)} (${m[2]})`;
          const open = line.indexOf('(');
          const expr = balanced(line, open).slice(m[2].length + 1);
          const { reads, has } = readsOf(expand(expr, macros, helpers, where));
          add(m[2], signature(paramsOf(reads, has, where), RESULTS[m[1]]), offset);
        }
        offset += line.length + 1;
      }
    }
    for (const m of src.matchAll(/^.*\bENTRY\((\w+)\).*$/gm)) {
      const line = m[0];
      if (/#define ENTRY/.test(line)) continue;
      const where = `native/${f}:${lineOf(m.index)}`;
      if ((line.match(/\bENTRY\(/g) ?? []).length > 1)
        fail(where, 'one ENTRY a line, each with its signature: ENTRY(name),  // (a: T) => R');
      const sig = /\/\/\s*(\(.*)$/.exec(line);
      if (!sig) fail(where, `ENTRY(${m[1]}) has no signature comment: ENTRY(${m[1]}),  // (a: T) => R`);
      const defn = defnBody.get(m[1]);
      if (!defn) fail(where, `ENTRY(${m[1]}) has no DEFN(${m[1]})`);
      checkAgainstBody(m[1], sig[1].trim(), defn.body, where);
      add(m[1], sig[1].trim(), m.index);
    }
    for (const m of src.matchAll(/^.*\bexports\.Set\("(\w+)",\s*(.*?)\);(.*)$/gm)) {
      const where = `native/${f}:${lineOf(m.index)}`;
      const sig = /^\s*\/\/\s*(.+)$/.exec(m[3]);
      if (!sig) fail(where, `exports.Set("${m[1]}", ...) has no type comment: exports.Set("${m[1]}", ...);  // Type`);
      const type = sig[1].trim();
      if (/Napi::Function::New/.test(m[2])) {
        const fn = /&entry<&fn_(\w+),/.exec(m[2]);
        const defn = fn && defnBody.get(fn[1]);
        if (defn) checkAgainstBody(m[1], type, defn.body, where);
        else parseSignature(type, where);
      }
      add(m[1], type, m.index);
    }
    if (members.length) out.push({ file: f, members });
  }
  return out;
}

export function generate(dir) {
  const groups = scanNative(dir);
  const known = new Set([...fs.readFileSync(typesFile, 'utf8').matchAll(/^export (?:type|interface) (\w+)/gm)].map((m) => m[1]));
  const used = new Set();
  for (const g of groups) for (const m of g.members) for (const id of m.type.matchAll(/\b[A-Z]\w*/g)) if (known.has(id[0])) used.add(id[0]);
  const lines = [
    '// Generated by scripts/codegen/gen-native-types.mjs from native/**/*.cpp (the op table and the ENTRY /',
    '// exports.Set lines with their signatures): do not edit by hand; rerun it after changing a native',
    "// function's arguments (test/hardening/native.test.ts checks that this file is current).",
    `import type { ${[...used].sort().join(', ')} } from './native-types.js';`,
    '',
    '/** The native addon: every function it registers, with its arguments and result. */',
    'export interface NativeBinding {',
  ];
  for (const g of groups) {
    lines.push(`  // native/${g.file}`);
    for (const m of g.members) lines.push(`  readonly ${m.name}: ${m.type};`);
  }
  lines.push(
    '}',
    '',
    '/** Every member of NativeBinding, in declaration order. */',
    'export const nativeMemberNames: readonly (keyof NativeBinding)[] = [',
  );
  for (const g of groups) lines.push(`  ${g.members.map((m) => JSON.stringify(m.name)).join(', ')},`);
  lines.push('];', '');
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let text;
  try {
    text = generate();
  } catch (e) {
    if (!(e instanceof GenError)) throw e;
    console.error(`gen-native-types: ${e.message}`);
    process.exit(1);
  }
  if (process.argv.includes('--check')) {
    const cur = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : '';
    if (cur !== text) {
      console.error(`${path.relative(root, outFile)} is out of date: run node scripts/codegen/gen-native-types.mjs`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(outFile, text);
    console.error(`wrote ${path.relative(root, outFile)}`);
  }
}
