// `residual data pack`: an ImageNet-layout folder into WebDataset tar shards (flags parsed by the data
// command's spec in main.ts).
import fs from 'node:fs';
import path from 'node:path';
import { packImageFolder } from '../data/shards.js';
import { UsageError } from './flags.js';

/** Runs the command; returns the exit code. */
export function cmdPack(flags: Record<string, string | number | boolean>, log: (s: string) => void = console.log): number {
  const src = flags['data-path'] as string | undefined;
  const out = flags.out as string | undefined;
  if (!src || !out) throw new UsageError('residual data pack: --data-path and --out are required (see residual data --help)');
  if (!fs.existsSync(src)) throw new UsageError(`residual data pack: ${src} does not exist`);
  // The output must be new or empty: shards already there (of another pack, or of another shard size)
  // would be read together with the new ones. Checked before anything is written.
  if (fs.existsSync(out)) {
    if (!fs.statSync(out).isDirectory()) throw new UsageError(`residual data pack: --out ${out} is a file, not a folder`);
    const held = fs.readdirSync(out).sort();
    if (held.length)
      throw new UsageError(
        `residual data pack: --out ${out} is not empty (it holds ${held.slice(0, 3).join(', ')}${held.length > 3 ? `, ... ${held.length} entries` : ''}): ` +
          'pack into a new or empty folder (shards already there would be read with the new ones)',
      );
  }
  const shardSize = (flags['shard-size'] as number | undefined) ?? 1000;
  const seed = (flags.seed as number | undefined) ?? 0;
  const shuffle = (flags.shuffle as boolean | undefined) ?? true;
  // DIR with train/ and val/ (or test/): each split gets its own shards; otherwise DIR is the training set.
  const splits = ['train', 'val', 'test'].filter((d) => fs.existsSync(path.join(src, d)));
  const jobs = splits.length ? splits.map((d) => ({ dir: path.join(src, d), prefix: d })) : [{ dir: src, prefix: 'train' }];
  // the class indices come from the training split (packed first, it writes classes.json); the other
  // splits are labelled by class name against it.
  let classes: string[] | undefined;
  for (const j of jobs) {
    const r = packImageFolder(j.dir, out, { shardSize, prefix: j.prefix, shuffle, seed, classes });
    classes ??= r.classes;
    log(`${j.dir}: ${r.samples} images of ${r.classes.length} classes in ${r.shards.length} shard(s): ${r.pattern}`);
  }
  return 0;
}
