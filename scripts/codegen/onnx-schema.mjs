#!/usr/bin/env node
// Writes lib/onnx/onnx-schema.ts: the part of ONNX's own schema (onnx/onnx.proto of the onnx Python
// package) that residual's ONNX exporter writes and its tests read back, as a protobufjs JSON descriptor
// (lib/onnx/proto.ts builds its protobufjs Root from it) plus TypeScript types for the messages.
//
// protobufjs parses the .proto file; this script only chooses the subset and writes it out:
// - the messages in KEEP (with their nested messages and enums); a field whose type is outside them
//   (functions, training info, sparse tensors, device configurations...) is left out and listed in the
//   output's header. A decoder skips unknown fields, and the exporter never writes those.
// - field presence stays proto2's (onnx.proto's `optional`: a field the exporter sets is written, even
//   when it is zero), and repeated numeric fields are packed, as ONNX's proto3 variant (onnx.proto3)
//   declares them. That is the encoding the exporter has always produced; every protobuf reader accepts
//   packed and unpacked repeated fields alike.
//
//   node scripts/codegen/onnx-schema.mjs [path/to/onnx/onnx.proto]
// Without an argument it reads the onnx package of the test Python (~/.cache/residual/python-torch, made
// by scripts/ci/setup-python-torch.sh).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import protobuf from 'protobufjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const outFile = path.join(root, 'lib', 'onnx', 'onnx-schema.ts');

const KEEP = [
  'ModelProto',
  'OperatorSetIdProto',
  'StringStringEntryProto',
  'GraphProto',
  'NodeProto',
  'AttributeProto',
  'ValueInfoProto',
  'TypeProto',
  'TensorShapeProto',
  'TensorProto',
];
const PACKABLE = new Set([
  'double',
  'float',
  'int32',
  'int64',
  'uint32',
  'uint64',
  'sint32',
  'sint64',
  'fixed32',
  'fixed64',
  'sfixed32',
  'sfixed64',
  'bool',
]);
const TS_SCALAR = {
  double: 'number',
  float: 'number',
  int32: 'number',
  uint32: 'number',
  sint32: 'number',
  fixed32: 'number',
  sfixed32: 'number',
  int64: 'number | Long',
  uint64: 'number | Long',
  sint64: 'number | Long',
  fixed64: 'number | Long',
  sfixed64: 'number | Long',
  bool: 'boolean',
  string: 'string',
  bytes: 'Uint8Array',
};

function findProto() {
  const base = path.join(os.homedir(), '.cache', 'residual', 'python-torch', 'lib');
  for (const py of fs.existsSync(base) ? fs.readdirSync(base).sort() : []) {
    const f = path.join(base, py, 'site-packages', 'onnx', 'onnx.proto');
    if (fs.existsSync(f)) return f;
  }
  throw new Error(`no onnx/onnx.proto under ${base}/python3*/site-packages: pass its path`);
}

/** The onnx package's version, from the dist-info next to the package directory ("unknown" if none). */
function onnxVersion(protoFile) {
  const site = path.dirname(path.dirname(protoFile));
  for (const d of fs.existsSync(site) ? fs.readdirSync(site) : []) {
    if (!/^onnx-[^-]+\.dist-info$/.test(d)) continue;
    const m = /^Version: (\S+)$/m.exec(fs.readFileSync(path.join(site, d, 'METADATA'), 'utf8'));
    if (m) return m[1];
  }
  return 'unknown';
}

const protoFile = path.resolve(process.argv[2] ?? findProto());
const version = onnxVersion(protoFile);
const parsed = protobuf.parse(fs.readFileSync(protoFile, 'utf8')).root;
parsed.resolveAll();
const ns = parsed.lookup('onnx');
if (!(ns instanceof protobuf.Namespace)) throw new Error(`${protoFile}: no package onnx`);

const kept = new Set(); // full names of the kept types (messages and enums, nested ones included)
const keepTree = (t) => {
  kept.add(t.fullName);
  for (const n of t.nestedArray ?? []) if (n instanceof protobuf.Type || n instanceof protobuf.Enum) keepTree(n);
};
for (const name of KEEP) {
  const t = ns.lookupType(name);
  if (t.parent !== ns) throw new Error(`${name} is not a top-level message of package onnx`);
  if (t.toJSON().edition !== 'proto2') throw new Error(`${protoFile}: expected onnx.proto's proto2 syntax (field presence)`);
  keepTree(t);
}

/** The kept messages' JSON, fields of other types removed, repeated numeric fields packed. */
const dropped = [];
function pruneType(t, json) {
  for (const f of t.fieldsArray) {
    if (f.resolvedType && !kept.has(f.resolvedType.fullName)) {
      dropped.push(`${t.fullName.slice(6)}.${f.name}`);
      delete json.fields[f.name];
      if (f.partOf) {
        const o = json.oneofs[f.partOf.name];
        o.oneof = o.oneof.filter((n) => n !== f.name);
        if (o.oneof.length === 0) delete json.oneofs[f.partOf.name];
      }
    } else if (f.repeated && (PACKABLE.has(f.type) || f.resolvedType instanceof protobuf.Enum)) {
      json.fields[f.name].options = { ...json.fields[f.name].options, packed: true };
    }
  }
  for (const n of t.nestedArray ?? []) if (n instanceof protobuf.Type) pruneType(n, json.nested[n.name]);
  return json;
}
const nested = {};
for (const name of KEEP) {
  const t = ns.lookupType(name);
  nested[name] = pruneType(t, t.toJSON());
}
const descriptor = { nested: { onnx: { nested } } };

// TypeScript: I<Name> is what encode() takes (every field optional), <Name> what decode() returns
// (scalars and lists always there, with their defaults; message fields null when absent). Enums are
// `as const` objects under their message's name (TensorProto.DataType.FLOAT), and a type of their values.
const tsName = (t) => t.fullName.slice(6).replace(/\./g, '');
const enumTypeName = (e) => `${tsName(e)}Value`;
const out = [];
function tsField(f, decoded) {
  let ty;
  if (f.resolvedType instanceof protobuf.Enum) ty = enumTypeName(f.resolvedType);
  else if (f.resolvedType) ty = `${decoded ? '' : 'I'}${tsName(f.resolvedType)}`;
  else ty = TS_SCALAR[f.type];
  if (!ty) throw new Error(`no TypeScript type for ${f.fullName} (${f.type})`);
  const name = f.name;
  if (f.repeated) return decoded ? `${name}: (${ty})[];` : `${name}?: (${ty})[] | null;`;
  if (!decoded || f.partOf) return `${name}?: ${ty} | null;`;
  return f.resolvedType instanceof protobuf.Type ? `${name}: ${ty} | null;` : `${name}: ${ty};`;
}
function emitEnums(t) {
  const enums = (t.nestedArray ?? []).filter((n) => n instanceof protobuf.Enum);
  if (enums.length === 0) return;
  out.push(`export const ${tsName(t)} = {`);
  for (const e of enums) out.push(`  ${e.name}: ${JSON.stringify(e.values)},`);
  out.push('} as const;');
  for (const e of enums) out.push(`export type ${enumTypeName(e)} = (typeof ${tsName(t)}.${e.name})[keyof typeof ${tsName(t)}.${e.name}];`);
}
function emitType(t) {
  const fields = t.fieldsArray.filter((f) => !(f.resolvedType && !kept.has(f.resolvedType.fullName)));
  emitEnums(t);
  for (const decoded of [false, true]) {
    out.push(`export interface ${decoded ? '' : 'I'}${tsName(t)} {`);
    for (const f of fields) out.push(`  ${tsField(f, decoded)}`);
    out.push('}');
  }
  for (const n of t.nestedArray ?? []) if (n instanceof protobuf.Type) emitType(n);
}
for (const name of KEEP) emitType(ns.lookupType(name));

/** Comment lines of at most 110 characters. */
const wrap = (text) => {
  const lines = [''];
  for (const w of text.split(' ')) {
    if (lines.at(-1).length + w.length + 1 > 107 && lines.at(-1)) lines.push('');
    lines[lines.length - 1] += (lines.at(-1) ? ' ' : '') + w;
  }
  return lines.map((l) => `// ${l}`).join('\n');
};
const rel = (p) => (p.startsWith(os.homedir()) ? `~${p.slice(os.homedir().length)}` : p);
const src = `// GENERATED by scripts/codegen/onnx-schema.mjs: do not edit. Regenerate with
//   node scripts/codegen/onnx-schema.mjs [path/to/onnx/onnx.proto]
${wrap(
  `From ${rel(protoFile).replace(/\/python3[^/]*\//, '/python3*/')} of the onnx Python package ${version} ` +
    `(ONNX's schema, Apache-2.0): the messages ${KEEP.join(', ')}, with their nested messages and enums. ` +
    `Fields left out (their types are not in the subset): ${dropped.join(', ')}. ` +
    'Field presence as onnx.proto declares it (proto2); repeated numeric fields packed, as onnx.proto3 has them.',
)}
import type { INamespace, Long } from 'protobufjs';

/**
 * The protobufjs JSON descriptor of the subset (protobuf.Root.fromJSON), as protobufjs's toJSON() writes
 * it (its \`protoName\`, the .proto's snake_case field name, is not in protobufjs's IField type: hence \`as\`).
 */
export const ONNX_SCHEMA = ${JSON.stringify(descriptor)} as INamespace;

${out.join('\n')}
`;
const options = { ...(await prettier.resolveConfig(outFile)), filepath: outFile };
fs.writeFileSync(outFile, await prettier.format(src, options));
console.log(`wrote ${path.relative(root, outFile)} from ${protoFile} (onnx ${version}); left out: ${dropped.join(', ')}`);
