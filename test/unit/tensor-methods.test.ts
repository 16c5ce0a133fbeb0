// Every numeric Tensor method against PyTorch: test/fixtures/core/tensor-methods.json, made by
// scripts/fixtures/make-tensor-fixtures.py with torch 2.13.0 (inputs, the JS call, PyTorch's result).
// float64 inputs, so results agree to float64 rounding; shapes, dtypes and integer results exactly.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tensor, tensor, type DType } from '../../lib/index.js';
import { root } from '../support/helpers.js';

interface Stored {
  values: unknown;
  shape: number[];
  dtype: DType;
}
type Arg = { tensor: Stored } | unknown;
interface Case {
  name: string;
  method: string;
  self: Stored;
  args: Arg[];
  result: { tensor: Stored } | { values: Stored; indices: Stored } | { list: Stored[] } | { value: unknown };
}

const fixture = JSON.parse(fs.readFileSync(path.join(root, 'test', 'fixtures', 'core', 'tensor-methods.json'), 'utf8')) as {
  cases: Case[];
};

const decode = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(decode);
  if (v === 'nan') return NaN;
  if (v === 'inf') return Infinity;
  if (v === '-inf') return -Infinity;
  return v;
};
const make = (s: Stored): Tensor => {
  const values = decode(s.values) as number[];
  // A 0-d tensor is stored as a number; empty shapes keep their shape through {shape}.
  return tensor(values, { dtype: s.dtype, shape: s.shape });
};
const flat = (v: unknown): unknown[] => (Array.isArray(v) ? v.flatMap(flat) : [v]);

function expectTensor(got: unknown, want: Stored, what: string): void {
  expect(got, what).toBeInstanceOf(Tensor);
  const t = got as Tensor;
  expect(t.shape, `${what}: shape`).toEqual(want.shape);
  expect(t.dtype, `${what}: dtype`).toBe(want.dtype);
  const a = flat(t.toArray());
  const b = flat(decode(want.values));
  expect(a.length, `${what}: elements`).toBe(b.length);
  a.forEach((x, i) => {
    const y = b[i];
    if (typeof y === 'number' && Number.isNaN(y)) expect(Number.isNaN(x as number), `${what}[${i}] NaN`).toBe(true);
    else if (typeof y === 'number' && (want.dtype === 'float64' || want.dtype === 'float32') && Number.isFinite(y)) {
      const tol = (want.dtype === 'float64' ? 1e-12 : 1e-6) * Math.max(1, Math.abs(y));
      expect(Math.abs((x as number) - y), `${what}[${i}]: ${String(x)} vs ${y}`).toBeLessThanOrEqual(tol);
    } else expect(x, `${what}[${i}]`).toBe(y);
  });
}

describe('Tensor methods against PyTorch', () => {
  it('the fixture covers the numeric methods', () => {
    const methods = new Set(fixture.cases.map((c) => c.method));
    expect(fixture.cases.length).toBeGreaterThan(120);
    for (const m of [
      'add',
      'div',
      'max',
      'topk',
      'sort',
      'var',
      'norm',
      'index',
      'split',
      'gather',
      'matmul',
      'bmm',
      'slice',
      'squeeze',
      'to',
    ])
      expect(methods.has(m), m).toBe(true);
  });

  it.each(fixture.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const self = make(c.self);
    const args = c.args.map((a) =>
      a && typeof a === 'object' && 'tensor' in (a as object) ? make((a as { tensor: Stored }).tensor) : decode(a),
    );
    const fn = (self as unknown as Record<string, (...a: unknown[]) => unknown>)[c.method];
    expect(typeof fn, c.method).toBe('function');
    const before = self.toArray();
    const out = fn.apply(self, args);
    const r = c.result;
    if ('tensor' in r) expectTensor(out, r.tensor, c.name);
    else if ('indices' in r) {
      const o = out as { values: Tensor; indices: Tensor };
      expectTensor(o.values, r.values, `${c.name}: values`);
      expectTensor(o.indices, r.indices, `${c.name}: indices`);
    } else if ('list' in r) {
      const list = out as Tensor[];
      expect(list.length, c.name).toBe(r.list.length);
      list.forEach((t, i) => expectTensor(t, r.list[i], `${c.name}[${i}]`));
    } else expect(out, c.name).toBe(r.value);
    // out-of-place: the input is unchanged
    expect(self.toArray(), `${c.name}: input unchanged`).toEqual(before);
  });
});
