// Pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks") for CIFAR:
// a 3x3 convolution with 16 filters, three stages of pre-activation units, then the final BN-ReLU
// that the last unit leaves out, global average pooling and a linear classifier. Bottleneck units
// (default): 9n+2 layers, outputs 64/128/256 (preact164: 1,703,258 parameters; preact1001:
// 10,327,706). Basic units: 6n+2 layers, 16/32/64.
import { Module } from '../../nn/module.js';
import { AdaptiveAvgPool2d, BatchNorm2d, Linear, ReLU, Sequential, type Conv2d } from '../../nn/layers.js';
import { scope } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { PreActBlock, PreActBottleneck, conv3x3, heInit } from './blocks.js';
import { _checkModelOptions, type ModelOptions } from './imagenet.js';

export interface PreActResNetOptions extends ModelOptions {
  /** 'bottleneck' (default, 9n+2 layers) or 'basic' (6n+2 layers). */
  block?: 'bottleneck' | 'basic';
  /**
   * Width multiplier k of the three stages (16k, 32k, 64k filters). With basic units this is the wide
   * ResNet of Zagoruyko & Komodakis 2016: preactResnet(6n+2, {block: 'basic', widen: k}) is WRN-(6n+4)-k
   * (they count the two projection convolutions in the depth).
   */
  widen?: number;
}

export class PreActResNet extends Module {
  readonly depth: number;
  readonly blockKind: 'bottleneck' | 'basic';
  conv1: Conv2d;
  layer1: Sequential;
  layer2: Sequential;
  layer3: Sequential;
  bn: BatchNorm2d;
  relu: ReLU;
  avgpool: AdaptiveAvgPool2d;
  fc: Linear;
  private inPlanes = 16;

  constructor(depth: number, o: PreActResNetOptions = {}) {
    super();
    const kind = o.block ?? 'bottleneck';
    if (kind !== 'bottleneck' && kind !== 'basic')
      throw new TypeError(`preactResnet: block must be 'bottleneck' or 'basic', got '${String(kind)}'`);
    const per = kind === 'bottleneck' ? 9 : 6;
    if (!Number.isInteger(depth) || depth < per + 2 || (depth - 2) % per !== 0) {
      const examples = kind === 'bottleneck' ? '164, 1001' : '20, 56, 110';
      throw new RangeError(`preactResnet: with ${kind} units the depth must be ${per}n+2 (${examples}, ...), got ${String(depth)}`);
    }
    const { numClasses, inChannels } = _checkModelOptions(o, 'preactResnet', 10);
    this.depth = depth;
    this.blockKind = kind;
    const n = (depth - 2) / per;
    this.conv1 = this.registerModule('conv1', conv3x3(inChannels, 16));
    const k = o.widen ?? 1;
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`preactResnet: widen must be a positive integer, got ${String(o.widen)}`);
    this.layer1 = this.registerModule('layer1', this.makeLayer(16 * k, n, 1));
    this.layer2 = this.registerModule('layer2', this.makeLayer(32 * k, n, 2));
    this.layer3 = this.registerModule('layer3', this.makeLayer(64 * k, n, 2));
    this.bn = this.registerModule('bn', new BatchNorm2d(this.inPlanes));
    this.relu = this.registerModule('relu', new ReLU());
    this.avgpool = this.registerModule('avgpool', new AdaptiveAvgPool2d([1, 1]));
    this.fc = this.registerModule('fc', new Linear(this.inPlanes, numClasses));
    heInit(this, o.zeroInitResidual ?? false);
  }

  private makeLayer(planes: number, n: number, stride: number): Sequential {
    const Block = this.blockKind === 'bottleneck' ? PreActBottleneck : PreActBlock;
    const seq = new Sequential();
    for (let i = 0; i < n; i++) {
      seq.append(new Block(this.inPlanes, planes, { stride: i === 0 ? stride : 1 }));
      this.inPlanes = planes * Block.expansion;
    }
    return seq;
  }

  override forward(x: Tensor): Tensor {
    return scope(() => {
      let y = this.conv1.call(x);
      y = this.layer3.call(this.layer2.call(this.layer1.call(y)));
      y = this.relu.call(this.bn.call(y)); // the final activation the last unit leaves out
      return this.fc.call(this.avgpool.call(y).flatten(1));
    });
  }
}

/** Pre-activation ResNet of the given depth: 9n+2 with bottleneck units (default), 6n+2 with {block: 'basic'}. */
export function preactResnet(depth: number, o: PreActResNetOptions = {}): PreActResNet {
  return new PreActResNet(depth, o);
}
/** Pre-activation ResNet-164, bottleneck units (1,703,258 parameters with 10 classes). */
export const preactResnet164 = (o: ModelOptions = {}): PreActResNet => preactResnet(164, o);
/** Pre-activation ResNet-1001, bottleneck units (10,327,706 parameters with 10 classes). */
export const preactResnet1001 = (o: ModelOptions = {}): PreActResNet => preactResnet(1001, o);
