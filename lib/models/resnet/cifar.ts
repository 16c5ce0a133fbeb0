// The CIFAR ResNets of He et al. 2015 (section 4.2): a 3x3 convolution with 16 filters, three stages of
// n blocks with 16, 32 and 64 filters (6n+2 layers), global average pooling and a linear classifier.
// Shortcuts are option A (parameter-free) by default, so resnet20 has 269,722 parameters; the plain
// networks drop the shortcuts and keep everything else (same parameters, same keys).
import { Module } from '../../nn/module.js';
import { AdaptiveAvgPool2d, BatchNorm2d, Linear, ReLU, Sequential, type Conv2d } from '../../nn/layers.js';
import { scope } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { BasicBlock, PlainBlock, ShortcutA, conv3x3, heInit, projectionShortcut } from './blocks.js';
import { _checkModelOptions, type ModelOptions } from './imagenet.js';

export interface CifarResNetOptions extends ModelOptions {
  /** 'A' (default): subsample and zero-pad; 'B': 1x1 convolution + BatchNorm where the shape changes. */
  shortcut?: 'A' | 'B';
  /** No shortcuts at all: the plain counterpart. */
  plain?: boolean;
}

export class CifarResNet extends Module {
  readonly depth: number;
  readonly plain: boolean;
  conv1: Conv2d;
  bn1: BatchNorm2d;
  relu: ReLU;
  layer1: Sequential;
  layer2: Sequential;
  layer3: Sequential;
  avgpool: AdaptiveAvgPool2d;
  fc: Linear;
  private inPlanes = 16;

  constructor(depth: number, o: CifarResNetOptions = {}) {
    super();
    const who = o.plain ? 'cifarPlain' : 'cifarResnet';
    if (!Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) {
      throw new RangeError(`${who}: depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...), got ${String(depth)}`);
    }
    const shortcut = o.shortcut ?? 'A';
    if (shortcut !== 'A' && shortcut !== 'B') throw new TypeError(`${who}: shortcut must be 'A' or 'B', got '${String(shortcut)}'`);
    const { numClasses, inChannels } = _checkModelOptions(o, who, 10);
    this.depth = depth;
    this.plain = o.plain ?? false;
    const n = (depth - 2) / 6;
    this.conv1 = this.registerModule('conv1', conv3x3(inChannels, 16));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(16));
    this.relu = this.registerModule('relu', new ReLU());
    this.layer1 = this.registerModule('layer1', this.makeLayer(16, n, 1, shortcut));
    this.layer2 = this.registerModule('layer2', this.makeLayer(32, n, 2, shortcut));
    this.layer3 = this.registerModule('layer3', this.makeLayer(64, n, 2, shortcut));
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d([1, 1]));
    this.fc = this.registerModule('fc', new Linear(64, numClasses));
    heInit(this, o.zeroInitResidual ?? false);
  }

  private makeLayer(planes: number, n: number, stride: number, shortcut: 'A' | 'B'): Sequential {
    const seq = new Sequential();
    for (let i = 0; i < n; i++) {
      const s = i === 0 ? stride : 1;
      if (this.plain) {
        seq.append(new PlainBlock(this.inPlanes, planes, { stride: s }));
      } else {
        const change = s !== 1 || this.inPlanes !== planes;
        const downsample = !change
          ? null
          : shortcut === 'A'
            ? new ShortcutA(this.inPlanes, planes, s)
            : projectionShortcut(this.inPlanes, planes, s);
        seq.append(new BasicBlock(this.inPlanes, planes, { stride: s, downsample }));
      }
      this.inPlanes = planes;
    }
    return seq;
  }

  override forward(x: Tensor): Tensor {
    return scope(() => {
      let y = this.relu.call(this.bn1.call(this.conv1.call(x)));
      y = this.layer3.call(this.layer2.call(this.layer1.call(y)));
      return this.fc.call(this.avgpool.call(y).flatten(1));
    });
  }
}

/** CIFAR ResNet of depth 6n+2 with option-A shortcuts (He et al. 2015). */
export function cifarResnet(depth: number, o: Omit<CifarResNetOptions, 'plain'> = {}): CifarResNet {
  return new CifarResNet(depth, { ...o, plain: false });
}
/** The plain (no shortcut) network of the same depth, for the degradation experiment. */
export function cifarPlain(depth: number, o: Omit<CifarResNetOptions, 'plain' | 'shortcut' | 'zeroInitResidual'> = {}): CifarResNet {
  return new CifarResNet(depth, { ...o, plain: true });
}
/** ResNet-20 for CIFAR (269,722 parameters). */
export const resnet20 = (o: ModelOptions = {}): CifarResNet => cifarResnet(20, o);
export const resnet32 = (o: ModelOptions = {}): CifarResNet => cifarResnet(32, o);
export const resnet44 = (o: ModelOptions = {}): CifarResNet => cifarResnet(44, o);
export const resnet56 = (o: ModelOptions = {}): CifarResNet => cifarResnet(56, o);
/** ResNet-110 for CIFAR (1,727,962 parameters). */
export const resnet110 = (o: ModelOptions = {}): CifarResNet => cifarResnet(110, o);
/** ResNet-1202 for CIFAR (19,421,274 parameters). */
export const resnet1202 = (o: ModelOptions = {}): CifarResNet => cifarResnet(1202, o);
