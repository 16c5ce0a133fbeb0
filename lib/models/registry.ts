// Every model by name (the names the CLI accepts: `residual models`), with its factory and a
// description. Names follow torchvision for the ImageNet models.
import type { Module } from '../nn/module.js';
import { cifarPlain, cifarResnet } from './resnet/cifar.js';
import {
  resnet101,
  resnet152,
  resnet18,
  resnet34,
  resnet50,
  resnext50_32x4d,
  wideResnet50_2,
  type ModelOptions,
} from './resnet/imagenet.js';
import { preactResnet } from './resnet/preact.js';

export interface ModelInfo {
  name: string;
  family: 'imagenet' | 'cifar' | 'plain' | 'preact';
  description: string;
  /** The classifier size the model gets when numClasses is not given. */
  defaultNumClasses: number;
  /** The input size it was designed for (any size from about 28 up works). */
  inputSize: number;
  create(o?: ModelOptions): Module;
}

const entries: ModelInfo[] = [];
function add(name: string, family: ModelInfo['family'], description: string, create: (o?: ModelOptions) => Module): void {
  const imagenet = family === 'imagenet';
  entries.push({ name, family, description, defaultNumClasses: imagenet ? 1000 : 10, inputSize: imagenet ? 224 : 32, create });
}

add('resnet18', 'imagenet', 'ResNet-18 (torchvision), basic blocks [2, 2, 2, 2], 11.7M parameters', resnet18);
add('resnet34', 'imagenet', 'ResNet-34 (torchvision), basic blocks [3, 4, 6, 3], 21.8M parameters', resnet34);
add('resnet50', 'imagenet', 'ResNet-50 (torchvision), bottlenecks [3, 4, 6, 3], 25.6M parameters', resnet50);
add('resnet101', 'imagenet', 'ResNet-101 (torchvision), bottlenecks [3, 4, 23, 3], 44.5M parameters', resnet101);
add('resnet152', 'imagenet', 'ResNet-152 (torchvision), bottlenecks [3, 8, 36, 3], 60.2M parameters', resnet152);
add('resnext50_32x4d', 'imagenet', 'ResNeXt-50 32x4d (torchvision), grouped bottlenecks, 25.0M parameters', resnext50_32x4d);
add('wide_resnet50_2', 'imagenet', 'Wide ResNet-50-2 (torchvision), bottlenecks twice as wide, 68.9M parameters', wideResnet50_2);
for (const depth of [20, 32, 44, 56, 110, 1202]) {
  add(`resnet${depth}`, 'cifar', `CIFAR ResNet-${depth} (He et al. 2015), 6n+2 layers with n=${(depth - 2) / 6}, option A shortcuts`, (o) =>
    cifarResnet(depth, o),
  );
}
for (const depth of [20, 32, 44, 56, 110, 1202]) {
  add(`plain${depth}`, 'plain', `plain ${depth}-layer CIFAR network: ResNet-${depth} without shortcuts (degradation experiment)`, (o) =>
    cifarPlain(depth, o),
  );
}
for (const depth of [20, 56, 110]) {
  add(`preact_basic${depth}`, 'preact', `pre-activation ResNet-${depth} (He et al. 2016), basic units, 6n+2 layers`, (o) =>
    preactResnet(depth, { ...o, block: 'basic' }),
  );
}
for (const [depth, k] of [
  [16, 4],
  [16, 8],
  [28, 10],
]) {
  add(
    `wrn${depth}_${k}`,
    'preact',
    `wide ResNet WRN-${depth}-${k} (Zagoruyko & Komodakis 2016): pre-activation basic units ${k}x wider`,
    (o) => preactResnet(depth - 2, { ...o, block: 'basic', widen: k }),
  );
}
add('preact164', 'preact', 'pre-activation ResNet-164 (He et al. 2016), bottleneck units, 9n+2 layers with n=18, 1.7M parameters', (o) =>
  preactResnet(164, o),
);
add(
  'preact1001',
  'preact',
  'pre-activation ResNet-1001 (He et al. 2016), bottleneck units, 9n+2 layers with n=111, 10.3M parameters',
  (o) => preactResnet(1001, o),
);

/** All registered models, in a stable order. */
export const MODELS: readonly ModelInfo[] = entries;

export function listModels(): ModelInfo[] {
  return [...entries];
}
export function modelNames(): string[] {
  return entries.map((e) => e.name);
}
export function getModelInfo(name: string): ModelInfo {
  const e = entries.find((m) => m.name === name);
  if (!e) throw new Error(`unknown model '${name}'; known models: ${modelNames().join(', ')}`);
  return e;
}
/** Builds a model by name, e.g. createModel('resnet56', {numClasses: 100}). */
export function createModel(name: string, o: ModelOptions = {}): Module {
  return getModelInfo(name).create(o);
}
