// residual: ResNet training for Node.js on libtorch. Public API, named like PyTorch in camelCase.
export * from './core/errors.js';
export * from './tensor/tensor.js';
export * from './tensor/dtype.js';
export { scope, tidy } from './tensor/scope.js';
export * from './tensor/memory.js';
export * from './autograd/index.js';
export {
  conv2d, batchNorm, relu, leakyRelu, gelu, silu, sigmoid, maxPool2d, avgPool2d, adaptiveAvgPool2d,
  adaptiveMaxPool2d, linear, dropout, softmax, logSoftmax, crossEntropy, nllLoss, mseLoss, oneHot,
} from './nn/functional.js';
export * as F from './nn/functional.js';
export * from './io/index.js';
export * as data from './data/index.js';
export * from './models/index.js';
export * as nn from './nn/index.js';
export * as optim from './optim/index.js';
export * from './tensorboard/index.js';
export * from './train/index.js';
export * from './explain/index.js';
export * from './viz/charts.js';
export * as dist from './distributed/index.js';
