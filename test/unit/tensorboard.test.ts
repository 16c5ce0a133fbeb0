// SummaryWriter: the bytes against an event file written by TensorBoard's own Python code
// (test/fixtures/tensorboard, made by scripts/fixtures/make-tensorboard-fixtures.py), histograms, images,
// argument errors, crash safety (a cut-off last record) and the truncation a resumed run does.
// TensorBoard's reader itself loads a trainer's files in test/e2e/tensorboard.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BadFileError, DtypeError, ShapeError, tensor, zeros } from '../../lib/index.js';
import { makeHistogram } from '../../lib/tensorboard/histogram.js';
import { decodeEvent, encodeEvent, type TbEvent } from '../../lib/tensorboard/proto.js';
import { frameRecord, maskedCrc32c, readRecords } from '../../lib/tensorboard/record.js';
import { listEventFiles, readEventFile, SummaryWriter, truncateEventFiles } from '../../lib/index.js';
import { removeEventFiles } from '../../lib/tensorboard/reader.js';
import { fixtures } from '../support/helpers.js';

const refDir = path.join(fixtures, 'tensorboard');
interface PlainEvent {
  wall_time: number;
  step: number;
  file_version?: string;
  session_log?: { status: number };
  scalar?: { tag: string; value: number };
  histogram?: {
    tag: string;
    min: number;
    max: number;
    num: number;
    sum: number;
    sum_squares: number;
    bucket_limit: number[];
    bucket: number[];
  };
  text?: { tag: string; text: string };
  image?: { tag: string; height: number; width: number; colorspace: number; png_base64: string };
}
const ref = JSON.parse(fs.readFileSync(path.join(refDir, 'reference.json'), 'utf8')) as {
  events: PlainEvent[];
  masked_crc32c: { hex: string; masked: number }[];
};
const refRecords = readRecords(fs.readFileSync(path.join(refDir, 'reference.tfevents'))).records;

/** A plain fixture event as the Event residual encodes. */
function toEvent(p: PlainEvent): TbEvent {
  const ev: TbEvent = { wall_time: p.wall_time, step: p.step };
  if (p.file_version) ev.file_version = p.file_version;
  if (p.session_log) ev.session_log = p.session_log;
  if (p.scalar) ev.summary = { value: [{ tag: p.scalar.tag, simple_value: p.scalar.value }] };
  if (p.histogram) {
    const { tag, ...histo } = p.histogram;
    ev.summary = { value: [{ tag, histo }] };
  }
  if (p.text)
    ev.summary = {
      value: [
        {
          tag: p.text.tag,
          metadata: { plugin_data: { plugin_name: 'text', content: new Uint8Array(0) } },
          tensor: { dtype: 7, tensor_shape: { dim: [{ size: 1 }] }, string_val: [Buffer.from(p.text.text)] },
        },
      ],
    };
  if (p.image) {
    const { tag, png_base64, ...size } = p.image;
    ev.summary = { value: [{ tag, image: { ...size, encoded_image_string: Buffer.from(png_base64, 'base64') } }] };
  }
  return ev;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-tb-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});
const dir = (name: string) => path.join(tmp, name);

describe("TensorBoard encoding, against TensorBoard's own Python writer", () => {
  test("masked CRC32C equals TensorBoard's", () => {
    expect(ref.masked_crc32c.length).toBe(4);
    for (const { hex, masked } of ref.masked_crc32c) expect(maskedCrc32c(Buffer.from(hex, 'hex'))).toBe(masked);
  });

  test('every event encodes to the same bytes, and the framed file is byte-identical', () => {
    expect(refRecords.length).toBe(ref.events.length);
    ref.events.forEach((p, i) =>
      expect(Buffer.from(encodeEvent(toEvent(p))).equals(refRecords[i]), `event ${i} (${Object.keys(p).join(', ')})`).toBe(true),
    );
    const file = Buffer.concat(ref.events.map((p) => frameRecord(encodeEvent(toEvent(p)))));
    expect(file.equals(fs.readFileSync(path.join(refDir, 'reference.tfevents')))).toBe(true);
  });

  test('the reference file decodes to its events (int64 steps past 2^32 included)', () => {
    const { events, stop } = readEventFile(path.join(refDir, 'reference.tfevents'));
    expect(stop).toBeUndefined();
    expect(events.map((e) => e.step)).toEqual(ref.events.map((p) => p.step));
    expect(events[3].summary!.value[0]).toMatchObject({ tag: 'lr', simple_value: -1.5 });
    expect(events[1].session_log!.status).toBe(1);
    expect(Buffer.from(events[5].summary!.value[0].tensor!.string_val![0]).toString('utf8')).toBe(ref.events[5].text!.text);
  });

  test("SummaryWriter writes the reference's scalar, text and image records (same step and wall time)", () => {
    const w = new SummaryWriter(dir('ref-writer'));
    const [, , s, s2, , t, im] = ref.events;
    w.addScalar(s.scalar!.tag, s.scalar!.value, s.step, { walltime: s.wall_time });
    w.addScalar(s2.scalar!.tag, tensor([s2.scalar!.value]), s2.step, { walltime: s2.wall_time });
    w.addText(t.text!.tag, t.text!.text, t.step, { walltime: t.wall_time });
    w.addImage(im.image!.tag, Buffer.from(im.image!.png_base64, 'base64'), im.step, { walltime: im.wall_time });
    w.close();
    const records = readRecords(fs.readFileSync(w.file)).records;
    expect(records.length).toBe(5);
    const first = decodeEvent(records[0]);
    expect(first.file_version).toBe('brain.Event:2');
    expect(first.step).toBe(0);
    expect(Math.abs(first.wall_time - Date.now() / 1000)).toBeLessThan(3600);
    for (const [k, i] of [
      [1, 2],
      [2, 3],
      [3, 5],
      [4, 6],
    ])
      expect(records[k].equals(refRecords[i]), `record ${k}`).toBe(true);
  });
});

describe('histograms', () => {
  test('counts, edges and sums against a float64 reference', () => {
    const values = [-3, -1, -0.5, 0, 0, 0.25, 1, 2, 5, NaN, Infinity];
    const h = makeHistogram(values, 4); // edges -3, -1, 1, 3, 5
    expect(h).toEqual({
      min: -3,
      max: 5,
      num: 9,
      sum: 3.75,
      sum_squares: 9 + 1 + 0.25 + 0.0625 + 1 + 4 + 25,
      bucket_limit: [-1, 1, 3, 5],
      bucket: [1, 5, 2, 1],
    });
    expect(makeHistogram([2, 2, 2], 10)).toEqual({ min: 2, max: 2, num: 3, sum: 6, sum_squares: 12, bucket_limit: [2], bucket: [3] });
    expect(() => makeHistogram([], 3)).toThrow(/at least one value/);
    expect(() => makeHistogram([NaN, -Infinity], 3)).toThrow(/finite/);
  });

  test('every value lies inside the bucket it is counted in (random data, 1000 buckets)', () => {
    let s = 12345;
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const values = Float32Array.from({ length: 20000 }, () => rnd() * 1e-3 + (rnd() > 0.9 ? 7 : 0));
    const h = makeHistogram(values, 1000);
    expect(h.bucket.reduce((a, b) => a + b, 0)).toBe(values.length);
    const counts = new Array(1000).fill(0);
    for (const v of values) {
      // TensorBoard's reading: bucket i spans [bucket_limit[i-1] (or min), bucket_limit[i]).
      const i = h.bucket_limit.findIndex((r) => v < r);
      counts[i === -1 ? 999 : i]++;
    }
    expect(counts).toEqual(h.bucket);
    expect(h.min).toBe(Math.min(...values));
    expect(h.max).toBe(Math.max(...values));
  });

  test('addHistogram takes tensors (float, int64) and arrays, and checks its arguments', () => {
    const w = new SummaryWriter(dir('histo'));
    w.addHistogram('a', tensor([1, 2, 3, 4]), 1, { bins: 3 });
    w.addHistogram('b', tensor([1, 5], { dtype: 'int64' }), 2);
    w.addHistogram('c', new Float32Array([0.5, 0.25]), 3);
    expect(() => w.addHistogram('d', [NaN], 4)).toThrow(RangeError);
    expect(() => w.addHistogram('d', [1], 4, { bins: 0 })).toThrow(RangeError);
    expect(() => w.addHistogram('d', [1, 'x' as unknown as number], 4)).toThrow(TypeError);
    w.close();
    const hs = readEventFile(w.file)
      .events.slice(1)
      .map((e) => e.summary!.value[0]);
    expect(hs.map((v) => v.tag)).toEqual(['a', 'b', 'c']);
    expect(hs[0].histo).toMatchObject({ min: 1, max: 4, num: 4, sum: 10, sum_squares: 30, bucket: [1, 1, 2] });
    expect(hs[1].histo).toMatchObject({ min: 1, max: 5, num: 2, sum: 6 });
  });
});

describe('images', () => {
  test('CHW float, HWC uint8 and HW tensors come back from the PNG with their pixels', () => {
    const w = new SummaryWriter(dir('images'));
    const chw = tensor([0, 0.5, 1, 2, /* G */ 0.25, 0.25, 0.25, -1, /* B */ 1, 0, 0, NaN], { dtype: 'float32' }).reshape([3, 2, 2]);
    w.addImage('chw', chw, 1);
    const hwc = tensor([10, 20, 30, 40, 50, 60], { dtype: 'uint8' }).reshape([1, 2, 3]);
    w.addImage('hwc', hwc, 2, { dataformats: 'HWC' });
    w.addImage('hw', tensor([0, 255, 128], { dtype: 'uint8' }).reshape([1, 3]), 3, { dataformats: 'HW' });
    w.close();
    const imgs = readEventFile(w.file)
      .events.slice(1)
      .map((e) => e.summary!.value[0].image!);
    expect(imgs.map((i) => [i.width, i.height, i.colorspace])).toEqual([
      [2, 2, 3],
      [2, 1, 3],
      [3, 1, 1],
    ]);
    const px = (i: number) => [...PNG.sync.read(Buffer.from(imgs[i].encoded_image_string)).data];
    // RGBA after decoding; float values x255, rounded, clipped; NaN as 0
    expect(px(0)).toEqual([0, 64, 255, 255, 128, 64, 0, 255, 255, 64, 0, 255, 255, 0, 0, 255]);
    expect(px(1)).toEqual([10, 20, 30, 255, 40, 50, 60, 255]);
    expect(px(2)).toEqual([0, 0, 0, 255, 255, 255, 255, 255, 128, 128, 128, 255]);
  });

  test('bad images are clear errors', () => {
    const w = new SummaryWriter(dir('bad-images'));
    expect(() => w.addImage('x', zeros([2, 4, 4]), 0)).toThrow(ShapeError);
    expect(() => w.addImage('x', zeros([4, 4]), 0)).toThrow(ShapeError);
    expect(() => w.addImage('x', zeros([1, 4, 4], { dtype: 'int32' }), 0)).toThrow(DtypeError);
    expect(() => w.addImage('x', Buffer.from('not a png at all, not at all, really not'), 0)).toThrow(BadFileError);
    const png = Buffer.from(ref.events[6].image!.png_base64, 'base64');
    const huge = Buffer.from(png);
    huge.writeUInt32BE(1 << 20, 16);
    huge.writeUInt32BE(1 << 20, 20);
    expect(() => w.addImage('x', huge, 0)).toThrow(/pixels/);
    expect(() => w.addImage('x', png.subarray(0, png.length - 20), 0)).toThrow(BadFileError);
    expect(() => w.addImage('x', zeros([1, 4, 4]), 0, { dataformats: 'NCHW' as never })).toThrow(RangeError);
    w.close();
    expect(readEventFile(w.file).events.length).toBe(1);
  });
});

describe('SummaryWriter', () => {
  test('arguments are checked and nothing is written for a refused call', () => {
    const w = new SummaryWriter(dir('args'));
    expect(() => w.addScalar('', 1, 0)).toThrow(TypeError);
    expect(() => w.addScalar('a', '1' as unknown as number, 0)).toThrow(TypeError);
    expect(() => w.addScalar('a', 1, -1)).toThrow(/globalStep must be an integer >= 0/);
    expect(() => w.addScalar('a', 1, 1.5)).toThrow(RangeError);
    expect(() => w.addScalar('a', 1, 0, { walltime: NaN })).toThrow(/walltime/);
    expect(() => w.addScalar('a', tensor([1, 2]), 0)).toThrow(RangeError);
    expect(() => w.addText('a', 5 as unknown as string, 0)).toThrow(TypeError);
    w.addScalar('nan', NaN, 1); // a diverged loss is shown as it is
    w.close();
    w.close();
    expect(() => w.addScalar('a', 1, 0)).toThrow(/after close/);
    const evs = readEventFile(w.file).events;
    expect(evs.length).toBe(2);
    expect(evs[1].summary!.value[0].simple_value).toBeNaN();
    expect(() => new SummaryWriter('')).toThrow(TypeError);
    expect(() => new SummaryWriter(dir('args'), { purgeStep: -2 })).toThrow(RangeError);
    expect(() => new SummaryWriter(dir('args'), { filenameSuffix: '/x' })).toThrow(TypeError);
  });

  test('a new writer in the same folder sorts after the earlier files; purgeStep writes SessionLog START', () => {
    const d = dir('order');
    const names: string[] = [];
    for (let i = 0; i < 12; i++) {
      const w = new SummaryWriter(d, { purgeStep: i === 0 ? undefined : i * 10 });
      w.addScalar('x', i, i * 10);
      w.close();
      names.push(path.basename(w.file));
    }
    expect(listEventFiles(d).map((f) => path.basename(f))).toEqual(names);
    const second = readEventFile(path.join(d, names[1])).events;
    expect(second.slice(0, 2)).toMatchObject([
      { step: 0, file_version: 'brain.Event:2' },
      { step: 10, session_log: { status: 1 } },
    ]);
    expect(readEventFile(path.join(d, names[0])).events.some((e) => e.session_log)).toBe(false);
  });

  test('a record cut off by a crash: the records before it are read, and truncation removes it', () => {
    const d = dir('torn');
    const w = new SummaryWriter(d);
    for (let s = 1; s <= 5; s++) w.addScalar('loss', 1 / s, s);
    w.close();
    const whole = fs.readFileSync(w.file);
    const rec = frameRecord(encodeEvent({ wall_time: 1, step: 6, summary: { value: [{ tag: 'loss', simple_value: 0.1 }] } }));
    for (const cut of [3, 12, rec.length - 1]) {
      fs.writeFileSync(w.file, Buffer.concat([whole, rec.subarray(0, cut)]));
      const r = readEventFile(w.file);
      expect(r.events.length, `cut at ${cut}`).toBe(6);
      expect(r.stop?.kind).toBe('torn');
    }
    expect(truncateEventFiles(d, 100)).toEqual({ dropped: 0, skipped: [] });
    expect(fs.readFileSync(w.file).equals(whole)).toBe(true);
    // a flipped bit is corruption, not a torn write: that file is left alone
    const bad = Buffer.from(whole);
    bad[bad.length - 10] ^= 1;
    fs.writeFileSync(w.file, bad);
    expect(readEventFile(w.file).stop?.kind).toBe('corrupt');
    expect(truncateEventFiles(d, 2)).toEqual({ dropped: 0, skipped: [w.file] });
    expect(fs.readFileSync(w.file).equals(bad)).toBe(true);
  });

  test('truncateEventFiles keeps events up to a step (and every file_version and SessionLog) across files; removeEventFiles', () => {
    const d = dir('truncate');
    const a = new SummaryWriter(d);
    for (let s = 0; s <= 10; s++) a.addScalar('x', s, s);
    a.close();
    const b = new SummaryWriter(d, { purgeStep: 6 });
    for (let s = 6; s <= 12; s++) b.addScalar('x', s, s);
    b.close();
    const c = new SummaryWriter(d, { purgeStep: 11 });
    c.addScalar('x', 11, 11);
    c.close();
    fs.writeFileSync(path.join(d, '.residual-events-rewrite.leftover'), 'x');
    fs.writeFileSync(path.join(d, 'notes.txt'), 'mine');
    expect(truncateEventFiles(d, 8)).toEqual({ dropped: 2 + 4 + 1, skipped: [] });
    const steps = listEventFiles(d).map((f) =>
      readEventFile(f).events.map((e) => (e.file_version ? 'v' : e.session_log ? `start${e.step}` : e.step)),
    );
    expect(steps).toEqual([
      ['v', 0, 1, 2, 3, 4, 5, 6, 7, 8],
      ['v', 'start6', 6, 7, 8],
      ['v', 'start11'],
    ]);
    expect(fs.readdirSync(d).sort()).toEqual([...listEventFiles(d).map((f) => path.basename(f)), 'notes.txt'].sort());
    expect(truncateEventFiles(d, 8).dropped).toBe(0);
    expect(removeEventFiles(d)).toBe(3);
    expect(fs.readdirSync(d)).toEqual(['notes.txt']);
  });
});
