// The ImageNet ResNets of torchvision: same modules, same state-dict keys, same parameter counts and
// the same initialisation (after manualSeed(s) the weights equal torchvision's after
// torch.manual_seed(s)).
import { Module } from '../../nn/module.js';
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Identity, Linear, MaxPool2d, ReLU, Sequential } from '../../nn/layers.js';
import { scope } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { BasicBlock, Bottleneck, heInit, projectionShortcut } from './blocks.js';

/** Options every factory takes. */
export interface ModelOptions {
  /** Size of the final classifier (default: 1000 for the ImageNet models, 10 for the CIFAR ones). */
  numClasses?: number;
  /** Input channels: 3 for RGB, 1 for grayscale (MNIST-like 28x28 inputs work). */
  inChannels?: number;
  /** Start each residual block as its shortcut by zeroing its last BatchNorm scale. */
  zeroInitResidual?: boolean;
}

export interface ResNetOptions extends ModelOptions {
  groups?: number;
  widthPerGroup?: number;
  /**
   * 'imagenet' (default): 7x7 stride-2 convolution and max pooling, as torchvision. 'small': a 3x3
   * stride-1 convolution and no max pooling, for 32x32 inputs (same keys; conv1.weight is [64, C, 3, 3]).
   */
  stem?: 'imagenet' | 'small';
}

export type BlockKind = 'basic' | 'bottleneck';

function checkCommon(o: ModelOptions, who: string, defaultClasses = 1000): { numClasses: number; inChannels: number } {
  const numClasses = o.numClasses ?? defaultClasses;
  const inChannels = o.inChannels ?? 3;
  if (!Number.isInteger(numClasses) || numClasses < 1)
    throw new RangeError(`${who}: numClasses must be a positive integer, got ${String(numClasses)}`);
  if (!Number.isInteger(inChannels) || inChannels < 1)
    throw new RangeError(`${who}: inChannels must be a positive integer, got ${String(inChannels)}`);
  return { numClasses, inChannels };
}
export { checkCommon as _checkModelOptions };

/** torchvision's ResNet: stem, four stages of residual blocks (64, 128, 256, 512 planes), pooling, fc. */
export class ResNet extends Module {
  readonly block: BlockKind;
  readonly layers: readonly number[];
  conv1: Conv2d;
  bn1: BatchNorm2d;
  relu: ReLU;
  maxpool: Module;
  layer1: Sequential;
  layer2: Sequential;
  layer3: Sequential;
  layer4: Sequential;
  avgpool: AdaptiveAvgPool2d;
  fc: Linear;
  private inPlanes = 64;

  constructor(block: BlockKind, layers: readonly number[], o: ResNetOptions = {}) {
    super();
    const { numClasses, inChannels } = checkCommon(o, 'ResNet');
    if (block !== 'basic' && block !== 'bottleneck')
      throw new TypeError(`ResNet: block must be 'basic' or 'bottleneck', got '${String(block)}'`);
    if (layers.length !== 4 || !layers.every((n) => Number.isInteger(n) && n >= 1))
      throw new RangeError(`ResNet: layers must be 4 positive block counts, got ${JSON.stringify(layers)}`);
    this.block = block;
    this.layers = [...layers];
    const groups = o.groups ?? 1;
    const baseWidth = o.widthPerGroup ?? 64;
    const small = o.stem === 'small';
    this.conv1 = this.registerModule(
      'conv1',
      small
        ? new Conv2d(inChannels, 64, 3, { stride: 1, padding: 1, bias: false })
        : new Conv2d(inChannels, 64, 7, { stride: 2, padding: 3, bias: false }),
    );
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(64));
    this.relu = this.registerModule('relu', new ReLU());
    this.maxpool = this.registerModule('maxpool', small ? new Identity() : new MaxPool2d(3, { stride: 2, padding: 1 }));
    this.layer1 = this.registerModule('layer1', this.makeLayer(64, layers[0], 1, groups, baseWidth));
    this.layer2 = this.registerModule('layer2', this.makeLayer(128, layers[1], 2, groups, baseWidth));
    this.layer3 = this.registerModule('layer3', this.makeLayer(256, layers[2], 2, groups, baseWidth));
    this.layer4 = this.registerModule('layer4', this.makeLayer(512, layers[3], 2, groups, baseWidth));
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d([1, 1]));
    this.fc = this.registerModule('fc', new Linear(512 * this.expansion, numClasses));
    heInit(this, o.zeroInitResidual ?? false);
  }

  private get expansion(): number {
    return this.block === 'basic' ? BasicBlock.expansion : Bottleneck.expansion;
  }

  private makeLayer(planes: number, blocks: number, stride: number, groups: number, baseWidth: number): Sequential {
    const Block = this.block === 'basic' ? BasicBlock : Bottleneck;
    const outPlanes = planes * this.expansion;
    const downsample = stride !== 1 || this.inPlanes !== outPlanes ? projectionShortcut(this.inPlanes, outPlanes, stride) : null;
    const seq = new Sequential(new Block(this.inPlanes, planes, { stride, downsample, groups, baseWidth }));
    this.inPlanes = outPlanes;
    for (let i = 1; i < blocks; i++) seq.append(new Block(this.inPlanes, planes, { groups, baseWidth }));
    return seq;
  }

  override forward(x: Tensor): Tensor {
    return scope(() => {
      let y = this.maxpool.call(this.relu.call(this.bn1.call(this.conv1.call(x))));
      y = this.layer4.call(this.layer3.call(this.layer2.call(this.layer1.call(y))));
      return this.fc.call(this.avgpool.call(y).flatten(1));
    });
  }
}

/** ResNet-18 (11,689,512 parameters with 1000 classes). */
export function resnet18(o: ResNetOptions = {}): ResNet {
  return new ResNet('basic', [2, 2, 2, 2], o);
}
/** ResNet-34 (21,797,672 parameters). */
export function resnet34(o: ResNetOptions = {}): ResNet {
  return new ResNet('basic', [3, 4, 6, 3], o);
}
/** ResNet-50 (25,557,032 parameters). */
export function resnet50(o: ResNetOptions = {}): ResNet {
  return new ResNet('bottleneck', [3, 4, 6, 3], o);
}
/** ResNet-101 (44,549,160 parameters). */
export function resnet101(o: ResNetOptions = {}): ResNet {
  return new ResNet('bottleneck', [3, 4, 23, 3], o);
}
/** ResNet-152 (60,192,808 parameters). */
export function resnet152(o: ResNetOptions = {}): ResNet {
  return new ResNet('bottleneck', [3, 8, 36, 3], o);
}
/** ResNeXt-50 32x4d: 32 groups of width 4 (25,028,904 parameters). */
export function resnext50_32x4d(o: ModelOptions & { stem?: 'imagenet' | 'small' } = {}): ResNet {
  return new ResNet('bottleneck', [3, 4, 6, 3], { ...o, groups: 32, widthPerGroup: 4 });
}
/** Wide ResNet-50-2: bottlenecks twice as wide (68,883,240 parameters). */
export function wideResnet50_2(o: ModelOptions & { stem?: 'imagenet' | 'small' } = {}): ResNet {
  return new ResNet('bottleneck', [3, 4, 6, 3], { ...o, widthPerGroup: 128 });
}
