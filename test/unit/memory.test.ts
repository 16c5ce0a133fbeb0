// Explicit memory: dispose, scopes (sync and async), counters, and no growth over many iterations.
import { describe, expect, it } from 'vitest';
import * as r from '../../lib/index.js';
import { native as N } from '../../lib/addon/binding.js';

describe('memory', () => {
  it('dispose frees and counters follow', () => {
    const before = r.memory();
    const t = r.zeros([1000]);
    const mid = r.memory();
    expect(mid.tensors).toBe(before.tensors + 1);
    expect(mid.bytes.cpu - before.bytes.cpu).toBe(4000);
    t.dispose();
    expect(r.memory().tensors).toBe(before.tensors);
    expect(r.memory().bytes.cpu).toBe(before.bytes.cpu);
    expect(t.disposed).toBe(true);
  });

  it('views share storage: bytes counted once', () => {
    const before = r.memory();
    const t = r.zeros([10, 10]);
    const v = t.view([100]);
    const m = r.memory();
    expect(m.tensors - before.tensors).toBe(2);
    expect(m.bytes.cpu - before.bytes.cpu).toBe(400);
    t.dispose();
    expect(r.memory().bytes.cpu - before.bytes.cpu).toBe(400); // the view still holds it
    v.dispose();
    expect(r.memory().bytes.cpu).toBe(before.bytes.cpu);
  });

  it('scope frees everything but what it returns or keeps', () => {
    const base = r.memory().tensors;
    const kept = r.ones([2]);
    const out = r.scope(() => {
      const a = r.ones([3]);
      const b = a.add(1).mul(2);
      r.zeros([5]);
      return { b, list: [a.sum()] };
    });
    expect(r.memory().tensors).toBe(base + 3);
    expect(out.b.toArray()).toEqual([4, 4, 4]);
    expect(out.list[0].item()).toBe(3);
    const k2 = r.scope(() => {
      const x = r.ones([1]);
      r.scope(() => x.add(1), [x]);
      return 5;
    }, [kept]);
    expect(k2).toBe(5);
    expect(kept.disposed).toBe(false);
    out.b.dispose();
    out.list[0].dispose();
    kept.dispose();
    expect(r.memory().tensors).toBe(base);
  });

  it('scope disposes on exceptions too', () => {
    const base = r.memory().tensors;
    expect(() =>
      r.scope(() => {
        r.ones([3]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(r.memory().tensors).toBe(base);
  });

  it('async scopes track tensors created after awaits', async () => {
    const base = r.memory().tensors;
    const res = await r.scope(async () => {
      const a = r.ones([4]);
      await new Promise((res) => setTimeout(res, 5));
      const b = a.mul(3);
      await Promise.resolve();
      r.zeros([8]);
      return b.sum();
    });
    expect(res.item()).toBe(12);
    expect(r.memory().tensors).toBe(base + 1);
    res.dispose();
    expect(r.memory().tensors).toBe(base);
  });

  it('nested scopes hand returned tensors to the parent', () => {
    const base = r.memory().tensors;
    r.scope(() => {
      const inner = r.scope(() => r.ones([2]).add(1));
      expect(inner.disposed).toBe(false);
      expect(r.memory().tensors).toBe(base + 1);
    });
    expect(r.memory().tensors).toBe(base);
  });

  it('10,000 forward/backward iterations in a scope do not grow memory', async () => {
    const w = r.randn([8, 4, 3, 3]).requiresGrad_(true);
    const base = r.memory();
    const step = () =>
      r.scope(() => {
        const x = r.randn([2, 4, 6, 6]);
        const y = r.relu(r.conv2d(x, w, null, { padding: 1 })).mean();
        y.backward();
        w.grad = null;
      });
    // Node-API runs finalizers of collected handles from the event loop, so yield between chunks as
    // any real loop does (the trainer yields between steps).
    const settle = async () => {
      global.gc?.();
      await new Promise((res) => setImmediate(res));
      global.gc?.();
    };
    // chunks of 250 steps: each is one synchronous stretch, kept far below vitest's 60 s worker-RPC
    // limit even under CI's second run on scalar kernels (1,000-step chunks took ~30 s there)
    for (let chunk = 0; chunk < 4; chunk++) {
      for (let i = 0; i < 250; i++) step(); // warm up allocator caches
      await settle();
    }
    const rss0 = process.memoryUsage().rss;
    for (let chunk = 0; chunk < 40; chunk++) {
      for (let i = 0; i < 250; i++) step();
      await settle();
    }
    const rss1 = process.memoryUsage().rss;
    expect(r.memory().tensors).toBe(base.tensors);
    expect(r.memory().bytes.cpu).toBe(base.bytes.cpu);
    // RSS noise from the allocator is a few MB; a leak of one 2x4x6x6 input per step would be 11 MB+.
    expect(rss1 - rss0).toBeLessThan(8 * 1024 * 1024);
  });

  it('typed arrays are copied, or shared without a copy on request (SharedArrayBuffer only)', () => {
    const src = new Float32Array(new SharedArrayBuffer(16));
    src.set([1, 2, 3, 4]);
    const t = r.tensor(src, { shape: [2, 2], share: true });
    src[0] = 10;
    expect(t.toArray()).toEqual([
      [10, 2],
      [3, 4],
    ]);
    t.mul_(2);
    expect(src[1]).toBe(4);
    const c = r.tensor(src);
    src[2] = -1;
    expect(c.toArray()).toEqual([20, 4, 6, 8]);
    // a growable SharedArrayBuffer is always copied: growing it must not move memory from under a tensor
    const rb = new (SharedArrayBuffer as unknown as new (n: number, o: object) => SharedArrayBuffer)(16, { maxByteLength: 64 });
    const rt = r.tensor(new Float32Array(rb), { share: true });
    new Float32Array(rb)[0] = 7;
    expect((rt.toArray() as number[])[0]).toBe(0);
    // an ordinary ArrayBuffer can be transferred (postMessage) or detached by whoever holds it, which would
    // free the memory under a sharing tensor: refused, and nothing is created
    const before = r.memory().tensors;
    expect(() => r.tensor(new Float32Array([1, 2]), { share: true })).toThrow(/share: true\} needs data in a SharedArrayBuffer/);
    expect(() => r.tensor(new ArrayBuffer(8), { share: true })).toThrow(TypeError);
    expect(r.memory().tensors).toBe(before);
    // an offset view into a SharedArrayBuffer shares exactly its elements
    const big = new Int32Array(new SharedArrayBuffer(32));
    big.set([0, 1, 2, 3, 4, 5, 6, 7]);
    const mid = r.tensor(big.subarray(2, 5), { share: true });
    big[3] = 30;
    expect(mid.toArray()).toEqual([2, 30, 4]);
    mid.dispose();
    rt.dispose();
    // to({copy: true}) copies even when nothing else changes
    const d = c.to({ copy: true });
    d.add_(1);
    expect(c.toArray()).toEqual([20, 4, 6, 8]);
  });

  it('a tensor id is never issued twice, also after a slot has gone through all its generations', () => {
    // The handle table's free list is LIFO: create + dispose in a loop reuses one slot, under a new
    // 20-bit generation each time. A wrapped generation would reissue the first id, and the stale
    // Tensor (or its GC finalizer, which may run long after dispose) would then dispose a live tensor.
    const src = r.ones([1]);
    const first = r.ones([1]);
    const staleId = first._h;
    first.dispose();
    let reissued = 0;
    for (let i = 0; i < 2 ** 20 + 8; i++) {
      const id = N.clone(src._h);
      if (id === staleId) reissued++;
      N.dispose(id);
    }
    expect(reissued).toBe(0);
    const live = r.ones([3]);
    const before = r.memory().tensors;
    N.dispose(staleId); // what the finalizer of `first` does
    first.dispose();
    expect(live.disposed).toBe(false);
    expect(r.memory().tensors).toBe(before);
    expect(live.sum().item()).toBe(3);
    expect(() => first.add(1)).toThrow(r.DisposedTensorError);
    live.dispose();
    src.dispose();
  });

  it('the GC finalizer frees tensors nobody disposed (backstop)', async () => {
    expect(global.gc, 'vitest runs with --expose-gc').toBeTypeOf('function');
    global.gc!();
    await new Promise((res) => setImmediate(res));
    const base = r.memory().tensors;
    (() => {
      for (let i = 0; i < 100; i++) r.zeros([10]);
    })();
    for (let i = 0; i < 10 && r.memory().tensors > base; i++) {
      global.gc!();
      await new Promise((res) => setImmediate(res));
    }
    expect(r.memory().tensors).toBe(base);
  });

  it('the GC backstop also covers tensors dropped in one long synchronous stretch (registered in batches)', async () => {
    global.gc!();
    await new Promise((res) => setImmediate(res));
    const base = r.memory().tensors;
    const kept = r.ones([1]);
    (() => {
      // more than the registration batch (1,024), disposed and undisposed tensors mixed, no yield
      for (let i = 0; i < 5000; i++) {
        const t = r.zeros([4]);
        if (i % 3 === 0) t.dispose();
      }
    })();
    expect(r.memory().tensors).toBe(base + 1 + 5000 - Math.ceil(5000 / 3));
    for (let i = 0; i < 20 && r.memory().tensors > base + 1; i++) {
      global.gc!();
      await new Promise((res) => setImmediate(res));
    }
    expect(r.memory().tensors).toBe(base + 1);
    expect(kept.disposed).toBe(false);
    expect(kept.sum().item()).toBe(1);
    kept.dispose();
  });
});
