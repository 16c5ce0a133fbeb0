// Autograd controls: gradient modes and functional gradients.
import { native as N } from '../addon/binding.js';
import { Tensor, wrapList, hOf } from '../tensor/tensor.js';

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const prev = N.setGradEnabled(enabled);
  let res: T;
  try {
    res = fn();
  } catch (e) {
    N.setGradEnabled(prev);
    throw e;
  }
  if (res && typeof (res as { then?: unknown }).then === 'function') {
    N.setGradEnabled(prev);
    throw new TypeError('noGrad/enableGrad take a synchronous function: the grad mode is per thread and cannot follow an await');
  }
  N.setGradEnabled(prev);
  return res;
}

/** Runs fn with gradient recording off (like `with torch.no_grad()`). fn must be synchronous. */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}
/** Runs fn with gradient recording on, e.g. inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}
export function isGradEnabled(): boolean {
  return N.isGradEnabled();
}
export function setGradEnabled(enabled: boolean): boolean {
  return N.setGradEnabled(enabled);
}

export interface GradOptions {
  gradOutputs?: (Tensor | null)[] | Tensor;
  retainGraph?: boolean;
  createGraph?: boolean;
  allowUnused?: boolean;
}

/** Gradients of outputs with respect to inputs (torch.autograd.grad). Unused inputs give null with allowUnused. */
export function grad(outputs: Tensor | Tensor[], inputs: Tensor | Tensor[], o: GradOptions = {}): (Tensor | null)[] {
  const outs = Array.isArray(outputs) ? outputs : [outputs];
  const ins = Array.isArray(inputs) ? inputs : [inputs];
  const go = o.gradOutputs === undefined ? undefined : Array.isArray(o.gradOutputs) ? o.gradOutputs : [o.gradOutputs];
  if (go && go.some((g) => g === null)) throw new TypeError('autograd.grad: gradOutputs entries must be Tensors');
  const res: (unknown | null)[] = N.autogradGrad(
    outs.map((t) => hOf(t)),
    ins.map((t) => hOf(t)),
    go ? go.map((g) => hOf(g as Tensor)) : undefined,
    o.retainGraph ?? o.createGraph ?? undefined,
    o.createGraph ?? false,
    o.allowUnused ?? false,
  );
  return res.map((x) => (x ? wrapList([x as never])[0] : null));
}

export const autograd = { grad, noGrad, enableGrad, isGradEnabled, setGradEnabled };
