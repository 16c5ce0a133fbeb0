// Reading event files back, and keeping a folder's event files consistent across a restart: the events
// after a checkpoint's step are dropped from the files, as metrics.jsonl drops its records, so that a
// resumed run writes each step once.
import fs from 'node:fs';
import path from 'node:path';
import { BadFileError } from '../core/errors.js';
import { fsyncDir, writeFileAtomic } from '../core/fs.js';
import { decodeEvent, type TbEvent } from './proto.js';
import { frameRecord, readRecords, type ReadRecordsResult } from './record.js';
import { isEventFileName } from './writer.js';

/** The largest event file read back (1 GiB). */
export const MAX_EVENT_FILE_BYTES = 1 << 30;

export interface EventFileContents {
  events: TbEvent[];
  /** Each event's record, as framed in the file (to write kept events back unchanged). */
  records: Buffer[];
  /** Where reading stopped before the end: a cut-off last record (a crash while it was written), or a bad record. */
  stop?: ReadRecordsResult['stop'];
}

/**
 * Reads the events of an event file, up to the first record that is cut off or fails its CRC or does not
 * decode as an Event (see `stop`). Throws a BadFileError only when the file cannot be read or is too large.
 */
export function readEventFile(file: string): EventFileContents {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch (e) {
    throw new BadFileError(`cannot read event file ${file}: ${(e as Error).message}`, { path: file });
  }
  if (size > MAX_EVENT_FILE_BYTES)
    throw new BadFileError(`event file ${file} is ${size} bytes, over the limit of ${MAX_EVENT_FILE_BYTES}`, { path: file });
  const { records, stop } = readRecords(fs.readFileSync(file));
  const events: TbEvent[] = [];
  const framed: Buffer[] = [];
  for (const r of records) {
    let ev: TbEvent;
    try {
      ev = decodeEvent(r);
    } catch (e) {
      return {
        events,
        records: framed,
        stop: { kind: 'corrupt', offset: -1, reason: `record ${events.length + 1} is not an Event: ${(e as Error).message}` },
      };
    }
    events.push(ev);
    framed.push(frameRecord(r));
  }
  return { events, records: framed, stop };
}

/** The event files of a folder (not its subfolders), in the order TensorBoard reads them. */
export function listEventFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && isEventFileName(d.name))
    .map((d) => d.name)
    .sort()
    .map((n) => path.join(dir, n));
}

/** Prefix of the temporary file a rewrite goes through (without 'tfevents', so TensorBoard never reads it). */
const REWRITE_PREFIX = '.residual-events-rewrite.';
export function isEventRewriteTemp(name: string): boolean {
  return name.startsWith(REWRITE_PREFIX);
}

/**
 * Drops the events after `step` from every event file in `dir` (file_version and SessionLog events are kept), and a cut-off
 * last record. A file is rewritten atomically, and only when something is dropped. A file with a bad record
 * in it is left as it is and named in `skipped` (TensorBoard reads it up to that record). Leftover
 * temporary files of an interrupted rewrite are removed. Returns the number of events dropped.
 */
export function truncateEventFiles(dir: string, step: number): { dropped: number; skipped: string[] } {
  let dropped = 0;
  const skipped: string[] = [];
  if (!fs.existsSync(dir)) return { dropped, skipped };
  for (const name of fs.readdirSync(dir)) if (isEventRewriteTemp(name)) fs.rmSync(path.join(dir, name), { force: true });
  for (const file of listEventFiles(dir)) {
    const { events, records, stop } = readEventFile(file);
    if (stop?.kind === 'corrupt') {
      skipped.push(file);
      continue;
    }
    const keep = events
      .map((ev, i) => (ev.file_version !== undefined || ev.session_log !== undefined || ev.step <= step ? i : -1))
      .filter((i) => i >= 0);
    if (keep.length === events.length && !stop) continue;
    dropped += events.length - keep.length;
    // Written under a name TensorBoard does not read, then renamed over the file: a crash leaves the old file or the new one.
    const tmp = path.join(dir, REWRITE_PREFIX + path.basename(file));
    fs.rmSync(tmp, { force: true }); // left by a rewrite that crashed
    writeFileAtomic(file, Buffer.concat(keep.map((i) => records[i])), { tempPath: tmp });
  }
  return { dropped, skipped };
}

/** Removes every event file of `dir` (a run started again from the beginning). Returns how many. */
export function removeEventFiles(dir: string): number {
  const files = listEventFiles(dir);
  for (const f of files) fs.rmSync(f, { force: true });
  if (files.length) fsyncDir(dir);
  return files.length;
}
