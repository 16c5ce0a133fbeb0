// Networks: residual blocks, the ResNet family, the model registry and summary().
export * from './resnet/index.js';
export * from './registry.js';
export * from './summary.js';
