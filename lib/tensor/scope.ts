// Explicit memory: scope(fn) disposes every tensor created while fn runs, except what fn returns (found
// in arrays, plain objects, Maps and modules, recursively) and what is passed in `keep`. Works for async
// functions too: tensors created after an await are attributed through AsyncLocalStorage.
import { AsyncLocalStorage } from 'node:async_hooks';

export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

export class Scope {
  readonly items: Disposable[] = [];
  constructor(readonly parent: Scope | undefined) {}
  add(t: Disposable): void {
    this.items.push(t);
  }
}

const stack: Scope[] = [];
const als = new AsyncLocalStorage<Scope>();
let asyncDepth = 0;

/** The scope a tensor created now belongs to, if any. */
export function currentScope(): Scope | undefined {
  if (stack.length) return stack[stack.length - 1];
  return asyncDepth > 0 ? als.getStore() : undefined;
}

/**
 * Takes `items` out of the current scope (if any), so that its end does not dispose them: for objects
 * that outlive the scope they happen to be made in, owned by something else (a captured step's static
 * buffers, a tfjs backend's tensors, freed by their owner).
 */
export function untrack(...items: Disposable[]): void {
  const s = currentScope();
  if (!s) return;
  for (const t of items) {
    const i = s.items.lastIndexOf(t);
    if (i >= 0) s.items.splice(i, 1);
  }
}

/** Hook set by Tensor so scope() can find tensors inside returned values. */
let isTracked: (v: unknown) => v is Disposable = (_v): _v is Disposable => false;
export function setTrackedCheck(fn: (v: unknown) => v is Disposable): void {
  isTracked = fn;
}

function collect(v: unknown, out: Set<Disposable>, seen: Set<unknown>, depth: number): void {
  if (v === null || typeof v !== 'object' || seen.has(v) || depth > 64) return;
  seen.add(v);
  if (isTracked(v)) {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) collect(x, out, seen, depth + 1);
  } else if (v instanceof Map) {
    for (const x of v.values()) collect(x, out, seen, depth + 1);
  } else if (v instanceof Set) {
    for (const x of v) collect(x, out, seen, depth + 1);
  } else if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof Promise) {
    return;
  } else {
    for (const k of Object.keys(v)) collect((v as Record<string, unknown>)[k], out, seen, depth + 1);
  }
}

function close(s: Scope, result: unknown, keep: readonly unknown[] | undefined): void {
  const saved = new Set<Disposable>();
  const seen = new Set<unknown>();
  collect(result, saved, seen, 0);
  if (keep) collect(keep, saved, seen, 0);
  for (const t of s.items) {
    if (saved.has(t)) {
      // What escapes belongs to the enclosing scope from now on.
      if (s.parent && !t.disposed) s.parent.add(t);
    } else if (!t.disposed) {
      t.dispose();
    }
  }
  s.items.length = 0;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Runs fn, then disposes every tensor created inside it except those it returns and those in `keep`.
 * If fn is async, disposal happens when its promise settles.
 */
export function scope<T>(fn: () => T, keep?: readonly unknown[]): T {
  const s = new Scope(currentScope());
  let result: T;
  try {
    result = als.run(s, () => {
      stack.push(s);
      try {
        return fn();
      } finally {
        stack.pop();
      }
    });
  } catch (e) {
    close(s, undefined, keep);
    throw e;
  }
  if (isThenable(result)) {
    asyncDepth++;
    return Promise.resolve(result).then(
      (v) => {
        asyncDepth--;
        close(s, v, keep);
        return v;
      },
      (e) => {
        asyncDepth--;
        close(s, undefined, keep);
        throw e;
      },
    ) as T;
  }
  close(s, result, keep);
  return result;
}

/** Alias of scope() that reads well for async code: `await tidy(async () => ...)`. */
export const tidy = scope;
