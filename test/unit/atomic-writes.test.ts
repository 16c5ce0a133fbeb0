// One way to write a file atomically (lib/core/fs.ts): no module keeps its own temp-and-rename copy,
// and checkpoint saving removes stale temporary files by the helper's naming, nothing else.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { isCheckpointTemp, saveCheckpoint } from '../../lib/train/checkpoint.js';
import { root } from '../support/helpers.js';

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (/\.(ts|mjs|js)$/.test(e.name)) out.push(p);
  }
  return out;
}

describe('atomic writes', () => {
  it('only lib/core/fs.ts renames a file or directory into place (writeFileAtomic; publishDir for the libtorch cache)', () => {
    const hits: string[] = [];
    for (const f of [...sources(path.join(root, 'lib')), ...sources(path.join(root, 'scripts'))]) {
      fs.readFileSync(f, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/\brenameSync\s*\(/.test(line) && !/^\s*(\/\/|\*)/.test(line)) hits.push(`${path.relative(root, f)}:${i + 1}`);
        });
    }
    expect(hits.filter((h) => !h.startsWith('lib/core/fs.ts:'))).toEqual([]);
    expect(hits.length).toBe(3); // writeFileAtomic's rename; publishDir's move aside and publish
  });

  it("saving a checkpoint removes other processes' stale checkpoint temp files, and nothing else", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-atomic-'));
    const stale = ['checkpoint.json.tmp-999999-1', 'checkpoint-e0001-s0000008.safetensors.tmp-999999-12'];
    const kept = [
      'notes.txt.tmp-999999-1',
      'checkpoint.json.tmp-abc',
      'model.safetensors.tmp-999999-2',
      'checkpoint.json.bak',
      `checkpoint.json.tmp-${process.pid}-77`,
    ];
    for (const f of [...stale, ...kept]) fs.writeFileSync(path.join(dir, f), 'x');
    expect(stale.every(isCheckpointTemp)).toBe(true);
    expect(kept.slice(0, 4).some(isCheckpointTemp)).toBe(false);
    const w = r.zeros([2]);
    saveCheckpoint(dir, { w }, { epoch: 1, globalStep: 8 });
    w.dispose();
    const left = fs.readdirSync(dir);
    for (const f of stale) expect(left, f).not.toContain(f);
    for (const f of kept) expect(left, f).toContain(f);
    // the helper's temp names never linger after a successful save
    expect(left.filter((f) => f.includes('.tmp-') && !kept.includes(f))).toEqual([]);
  });
});
