// Joins and functional forms of tensor ops: cat, stack, where, pad.
import { native as N } from '../addon/binding.js';
import { h, hOf, wrapT, type Tensor, type TensorLike } from './class.js';

export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  return wrapT(
    N.cat(
      tensors.map((t) => hOf(t)),
      dim,
    ),
  );
}
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  return wrapT(
    N.stack(
      tensors.map((t) => hOf(t)),
      dim,
    ),
  );
}
export function where(condition: Tensor, input: TensorLike, other: TensorLike): Tensor {
  return wrapT(N.where(hOf(condition), h(input), h(other)));
}
/** Pads the last dims: pad = [left, right, top, bottom, ...] as torch.nn.functional.pad. */
export function pad(
  input: Tensor,
  padding: readonly number[],
  mode: 'constant' | 'reflect' | 'replicate' | 'circular' = 'constant',
  value?: number,
): Tensor {
  return wrapT(N.pad(hOf(input), [...padding], mode, mode === 'constant' ? (value ?? 0) : undefined));
}
