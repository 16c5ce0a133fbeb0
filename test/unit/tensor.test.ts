import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';

describe('tensor basics', () => {
  it('creates from nested arrays and reads back', () => {
    const t = r.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(t.sum().item()).toBe(21);
  });
});
