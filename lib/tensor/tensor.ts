// The tensor API of lib/: the Tensor class (class.ts), creation functions (create.ts), joins (join.ts),
// and the internal handle bridge (wrapT, hOf, ...) that the rest of lib/ imports from here. The
// package root (lib/index.ts) exports only the public names.
export {
  Tensor,
  wrapT,
  wrapList,
  h,
  hOf,
  hOpt,
  isDeviceString,
  type Device,
  type MemoryFormat,
  type NestedArray,
  type Scalar,
  type Shape,
  type TensorLike,
  type TensorOptions,
} from './class.js';
export {
  tensor,
  zeros,
  ones,
  empty,
  full,
  arange,
  linspace,
  rand,
  randn,
  randint,
  randperm,
  eye,
  zerosLike,
  onesLike,
  fullLike,
  randLike,
  randnLike,
} from './create.js';
export { cat, stack, where, pad } from './join.js';
