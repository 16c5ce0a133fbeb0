// The public API of `residual` and `residual/tfjs`, pinned: every exported name with its kind, and the
// members of the exported namespaces (nn, optim, data, dist, F), as scripts/codegen/api-surface.mjs
// reads them from lib/ with the TypeScript compiler. A change to the API shows up here as a diff of
// __snapshots__/api.txt: make it on purpose, then update the snapshot
// (`npx vitest run test/unit/api.test.ts -u`) in the same commit.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as residual from '../../lib/index.js';
import * as residualTfjs from '../../lib/tfjs/index.js';
import { root } from '../support/helpers.js';

let lines: string[] = [];

beforeAll(async () => {
  // In a child process, asynchronously: reading the API type-checks the library (seconds of CPU).
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(root, 'scripts', 'codegen', 'api-surface.mjs')], { cwd: root });
    let text = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (text += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`api-surface.mjs exited with ${code}: ${err}`))));
  });
  lines = out.trim().split('\n');
}, 180_000);

/** {name: kind} of one entry point, namespace members as 'ns.member'. */
function entries(pkg: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of lines) {
    const match = /^(\S+): (\S+) (\S+)$/.exec(l);
    if (match && match[1] === pkg) m.set(match[2], match[3]);
  }
  return m;
}

describe('the public API', () => {
  it('matches the snapshot (names and kinds of residual and residual/tfjs, namespaces with their members)', async () => {
    expect(lines.length).toBeGreaterThan(300);
    await expect(`${lines.join('\n')}\n`).toMatchFileSnapshot('__snapshots__/api.txt');
  });

  it('is what the built module really exports at run time, and nothing more', () => {
    for (const [pkg, mod] of [
      ['residual', residual],
      ['residual/tfjs', residualTfjs],
    ] as const) {
      const api = entries(pkg);
      const values = [...api].filter(([n, k]) => !n.includes('.') && k !== 'interface' && k !== 'type').map(([n]) => n);
      expect(Object.keys(mod).sort(), pkg).toEqual(values.sort());
      for (const [name, kind] of api) {
        const [head, member] = name.split('.');
        if (kind === 'interface' || kind === 'type') continue;
        const v = member ? (mod as Record<string, Record<string, unknown>>)[head][member] : (mod as Record<string, unknown>)[head];
        if (kind === 'class')
          expect(typeof v === 'function' && /^class\b/.test(Function.prototype.toString.call(v)), `${pkg} ${name} is a class`).toBe(true);
        else if (kind === 'function') expect(typeof v, `${pkg} ${name}`).toBe('function');
        else if (kind === 'namespace') expect(typeof v, `${pkg} ${name}`).toBe('object');
        else expect(v, `${pkg} ${name}`).toBeDefined();
      }
    }
  });

  it('keeps internals out: handles, file writers and CLI helpers are not exported', () => {
    const api = entries('residual');
    for (const name of [
      'wrapT',
      'wrapList',
      'h',
      'hOf',
      'hOpt',
      'writeJsonAtomic',
      'flagName',
      'escapeXml',
      'dtypeCode',
      'DTYPE_CODE',
      'native',
      'errorClassByCode',
      'wrapError',
    ])
      expect(api.has(name), `${name} is exported`).toBe(false);
  });

  it('exports every name the README and docs import from residual', () => {
    const api = entries('residual');
    const docs = [
      path.join(root, 'README.md'),
      ...fs
        .readdirSync(path.join(root, 'docs'))
        .filter((f) => f.endsWith('.md'))
        .map((f) => path.join(root, 'docs', f)),
    ];
    let checked = 0;
    for (const file of docs) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'residual(\/tfjs)?'/g)) {
        const pkgApi = m[2] ? entries('residual/tfjs') : api;
        for (const part of m[1].split(',')) {
          const name = part
            .trim()
            .replace(/^type\s+/, '')
            .split(/\s+as\s+/)[0];
          if (!name) continue;
          checked++;
          expect(pkgApi.has(name), `${path.basename(file)} imports ${name} from residual${m[2] ?? ''}`).toBe(true);
        }
      }
    }
    expect(checked).toBeGreaterThan(10);
  });
});
