// The nn namespace: modules, layers, initialisers and the functional ops (exported from the package
// root as `nn`, e.g. `new nn.Conv2d(3, 16, 3)`, `nn.init.kaimingNormal_(w)`, `nn.functional.relu(x)`).
export { Module, fmtShape, type StateDict, type LoadResult, type ForwardHook, type ForwardPreHook, type HookHandle } from './module.js';
export {
  Conv2d,
  Linear,
  BatchNorm2d,
  ReLU,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,
  Dropout,
  Flatten,
  Identity,
  Sequential,
  ModuleList,
  type Conv2dOptions,
  type BatchNormOptions,
  type Pair,
} from './layers.js';
export * as init from './init.js';
export * as functional from './functional.js';
