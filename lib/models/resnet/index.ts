export * from './blocks.js';
export {
  ResNet,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
  resnext50_32x4d,
  wideResnet50_2,
  type ModelOptions,
  type ResNetOptions,
  type BlockKind,
} from './imagenet.js';
export * from './cifar.js';
export * from './preact.js';
