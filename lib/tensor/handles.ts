// The lifetime of native tensor references. A Tensor holds one reference (a handle: the id of a slot in
// the addon's handle table), dropped by dispose() or by its scope; the GC finalizer here is only the
// backstop for a Tensor nobody disposed.
import { native } from '../addon/binding.js';
import type { Handle } from '../addon/native-types.js';

/** How this module reads a Tensor's private state (set once by the Tensor class, class.ts). */
export interface HandleOwner {
  handle(t: object): Handle;
  disposed(t: object): boolean;
}
let owner: HandleOwner;
export function setHandleOwner(o: HandleOwner): void {
  owner = o;
}

// GC backstop: a Tensor that was never disposed releases its native reference when collected.
// dispose() of an already disposed id is a no-op natively, so no unregister is needed.
const finalizer = new FinalizationRegistry<Handle>((id) => {
  try {
    native.dispose(id);
  } catch {
    /* the environment is shutting down */
  }
});

// Registration with the finalizer is the largest JS cost of a small op (a weak cell per Tensor), and
// most tensors are disposed (by dispose() or their scope) soon after they are made. So new Tensors
// wait in `pending` and are registered at the next microtask checkpoint, or once PENDING_MAX of them
// have gathered (a long synchronous loop), unless disposed by then. A Tensor nobody disposes is thus
// collectable at most one microtask checkpoint or PENDING_MAX creations later than at once.
const PENDING_MAX = 1024;
const pending: object[] = [];
let flushQueued = false;

function flushPending(): void {
  flushQueued = false;
  for (let i = 0; i < pending.length; i++) {
    const t = pending[i];
    if (!owner.disposed(t)) finalizer.register(t, owner.handle(t));
  }
  pending.length = 0;
}

/** Puts a new Tensor under the GC backstop (registered soon, unless disposed by then). */
export function adopt(t: object): void {
  if (pending.push(t) >= PENDING_MAX) flushPending();
  else if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flushPending);
  }
}
