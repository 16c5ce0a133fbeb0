// WebDataset shard sets: `residual data pack` never mixes a new set with shards already in the output
// folder, and a shard pattern's brace groups are bounded by the number of names they make together.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_SHARD_NAMES, expandShards, packImageFolder, webDatasetSource } from '../../lib/data/index.js';
import { cmdPack } from '../../lib/cli/pack.js';
import { UsageError } from '../../lib/cli/flags.js';

let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-shards-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** root/<class>/<i>.jpg: n files of a few bytes (packing copies bytes; nothing is decoded). */
function folder(root: string, n: number): string {
  for (let i = 0; i < n; i++) {
    const dir = path.join(root, `c${i % 2}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${String(i).padStart(3, '0')}.jpg`), Buffer.from([0xff, 0xd8, 0xff, i]));
  }
  return root;
}

const listing = (dir: string) =>
  Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('hex')]),
  );

describe('data pack into a folder that already holds shards', () => {
  it('packImageFolder refuses shards of the same prefix and leaves the folder as it was', () => {
    const out = path.join(tmp, 'lib-out');
    const first = packImageFolder(folder(path.join(tmp, 'src22'), 22), out, { shardSize: 2 });
    expect(first.shards.length).toBe(11);
    const before = listing(out);
    // the case: 20 samples in 2 shards, where 11 older shards would stay and be read with them
    expect(() => packImageFolder(folder(path.join(tmp, 'src20'), 20), out, { shardSize: 10 })).toThrow(
      /already holds 11 'train' shard\(s\) \(train-000000\.tar, \.\.\.\): pack into an empty folder/,
    );
    expect(listing(out)).toEqual(before);
    const src = webDatasetSource(out);
    expect(src.shards.length).toBe(11);
    expect(src.counts.reduce((a, b) => a + b, 0)).toBe(22);
    // another prefix (the val split beside the training shards) is packed
    const val = packImageFolder(path.join(tmp, 'src20'), out, { shardSize: 10, prefix: 'val', classes: first.classes });
    expect(val.shards.map((f) => path.basename(f))).toEqual(['val-000000.tar', 'val-000001.tar']);
  });

  it('residual data pack refuses a non-empty --out before writing anything', () => {
    const src = folder(path.join(tmp, 'cli-src'), 6);
    const out = path.join(tmp, 'cli-out');
    const log: string[] = [];
    expect(cmdPack({ 'data-path': src, out, 'shard-size': 2 }, (s) => log.push(s))).toBe(0);
    expect(log[0]).toMatch(/6 images of 2 classes in 3 shard\(s\)/);
    const before = listing(out);
    expect(Object.keys(before)).toEqual(['classes.json', 'train-000000.tar', 'train-000001.tar', 'train-000002.tar']);
    let err: unknown;
    try {
      cmdPack({ 'data-path': src, out, 'shard-size': 6 }, () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(
      /--out .*cli-out is not empty \(it holds classes\.json, train-000000\.tar, train-000001\.tar, \.\.\. 4 entries\): pack into a new or empty folder/,
    );
    expect(listing(out)).toEqual(before);
    // an empty folder, or one that does not exist yet, is fine
    const empty = path.join(tmp, 'cli-empty');
    fs.mkdirSync(empty);
    expect(cmdPack({ 'data-path': src, out: empty, 'shard-size': 6 }, () => {})).toBe(0);
    expect(fs.readdirSync(empty).sort()).toEqual(['classes.json', 'train-000000.tar']);
  });
});

describe('shard patterns', () => {
  it('expands ranges (zero padding kept), lists and several groups, in order', () => {
    expect(expandShards('s/x-{08..11}.tar')).toEqual(['s/x-08.tar', 's/x-09.tar', 's/x-10.tar', 's/x-11.tar']);
    expect(expandShards('x-{0..1}-{a,b}.tar')).toEqual(['x-0-a.tar', 'x-0-b.tar', 'x-1-a.tar', 'x-1-b.tar']);
    expect(expandShards('one.tar')).toEqual(['one.tar']);
    expect(expandShards('x-{0..99}-{00..99}.tar').length).toBe(10_000);
    expect(() => expandShards('x-{5..3}.tar')).toThrow(/bad range \{5\.\.3\}/);
  });

  it('bounds the number of names the groups make together, before making any', () => {
    // each range passes a per-range limit; together they name 10^12 shards
    expect(() => expandShards('x-{0..999999}-{0..999999}.tar')).toThrow(RangeError);
    expect(() => expandShards('x-{0..999999}-{0..999999}.tar')).toThrow(
      /names more than 1,000,000 shards \(the product of its brace groups\)/,
    );
    expect(() => expandShards('x-{0..1000}-{0..999}.tar')).toThrow(/names more than 1,000,000 shards/);
    expect(MAX_SHARD_NAMES).toBe(1_000_000);
    expect(() =>
      expandShards('{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}.tar'),
    ).toThrow(/names more than/);
    expect(() => expandShards('x-{0..99999999999999999999}.tar')).toThrow(/bad range|names more than/);
  });
});
