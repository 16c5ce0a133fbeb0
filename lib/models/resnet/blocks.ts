// The residual blocks. Each block computes out = F(x) + shortcut(x): `residual(x)` is the branch F,
// `shortcut(x)` is the identity or a projection, and forward adds them. Module and key names follow
// torchvision (conv1, bn1, ..., downsample.0/1), so weights move between this and PyTorch unchanged.
import { ShapeError } from '../../core/errors.js';
import { Module, fmtShape } from '../../nn/module.js';
import { BatchNorm2d, Conv2d, ReLU, Sequential } from '../../nn/layers.js';
import { kaimingNormal_, ones_, zeros_ } from '../../nn/init.js';
import { scope } from '../../tensor/scope.js';
import { pad, type Tensor } from '../../tensor/tensor.js';

export function conv3x3(inPlanes: number, outPlanes: number, stride = 1, groups = 1): Conv2d {
  return new Conv2d(inPlanes, outPlanes, 3, { stride, padding: 1, groups, bias: false });
}
export function conv1x1(inPlanes: number, outPlanes: number, stride = 1): Conv2d {
  return new Conv2d(inPlanes, outPlanes, 1, { stride, bias: false });
}

/**
 * Shortcut option B (He et al. 2015): a strided 1x1 convolution and BatchNorm, as torchvision's
 * `downsample` (keys downsample.0.weight, downsample.1.running_mean, ...).
 */
export function projectionShortcut(inPlanes: number, outPlanes: number, stride: number): Sequential {
  return new Sequential(conv1x1(inPlanes, outPlanes, stride), new BatchNorm2d(outPlanes));
}

/**
 * Shortcut option A (He et al. 2015, CIFAR): parameter-free. Subsamples by the stride
 * (x[:, :, ::s, ::s]) and zero-pads the extra channels, half before and half after.
 */
export class ShortcutA extends Module {
  constructor(
    readonly inPlanes: number,
    readonly outPlanes: number,
    readonly stride: number,
  ) {
    super();
    if (outPlanes < inPlanes) throw new RangeError(`ShortcutA: option A can only add channels, not go from ${inPlanes} to ${outPlanes}`);
  }
  override forward(x: Tensor): Tensor {
    const s = x.shape;
    if (s.length !== 4 || s[1] !== this.inPlanes)
      throw new ShapeError(`${this.label()}: expected input [N, ${this.inPlanes}, H, W], got ${fmtShape(s)}`);
    return scope(() => {
      const sub = this.stride === 1 ? x.view(s) : x.slice(2, 0, null, this.stride).slice(3, 0, null, this.stride);
      const extra = this.outPlanes - this.inPlanes;
      if (extra === 0) return sub;
      const before = Math.floor(extra / 2);
      return pad(sub, [0, 0, 0, 0, before, extra - before]);
    });
  }
  override extraRepr(): string {
    return `${this.inPlanes} -> ${this.outPlanes}, stride=${this.stride}`;
  }
}

/**
 * Sees F(x) and shortcut(x) of every residual block's forward while set (the residual magnitudes of
 * lib/explain). The tensors belong to the forward's scope: read them inside the call, do not keep them.
 */
export type ResidualRecorder = (block: Module, fx: Tensor, shortcut: Tensor) => void;
let residualRecorder: ResidualRecorder | null = null;

/** Runs fn with `recorder` called from each residual block's forward; restores the previous one after. */
export function withResidualRecorder<T>(recorder: ResidualRecorder, fn: () => T): T {
  const previous = residualRecorder;
  residualRecorder = recorder;
  try {
    return fn();
  } finally {
    residualRecorder = previous;
  }
}

export interface BlockOptions {
  stride?: number;
  /** The shortcut when shapes change (null or absent: identity). Registered as `downsample`. */
  downsample?: Module | null;
  groups?: number;
  /** Width per group (ResNeXt / wide ResNets); 64 is the plain ResNet. */
  baseWidth?: number;
}

/** Common interface of the residual blocks. */
export interface ResidualBlock extends Module {
  /** Zeroes the weight of the block's last BatchNorm so the block starts as its shortcut (Goyal et al. 2017). */
  zeroInitLastBN(): void;
}

/** Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets): out = relu(F(x) + shortcut(x)). */
export class BasicBlock extends Module implements ResidualBlock {
  static readonly expansion = 1;
  conv1: Conv2d;
  bn1: BatchNorm2d;
  relu: ReLU;
  conv2: Conv2d;
  bn2: BatchNorm2d;
  downsample: Module | null;

  constructor(inPlanes: number, planes: number, o: BlockOptions = {}) {
    super();
    if ((o.groups ?? 1) !== 1 || (o.baseWidth ?? 64) !== 64)
      throw new RangeError('BasicBlock only supports groups=1 and baseWidth=64 (use Bottleneck for ResNeXt / wide ResNets)');
    this.conv1 = this.registerModule('conv1', conv3x3(inPlanes, planes, o.stride ?? 1));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(planes));
    this.relu = this.registerModule('relu', new ReLU());
    this.conv2 = this.registerModule('conv2', conv3x3(planes, planes));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(planes));
    this.downsample = o.downsample ? this.registerModule('downsample', o.downsample) : null;
  }
  /** F(x) = bn2(conv2(relu(bn1(conv1(x))))). */
  residual(x: Tensor): Tensor {
    return scope(() => this.bn2.call(this.conv2.call(this.relu.call(this.bn1.call(this.conv1.call(x))))));
  }
  /** The identity, or the downsample projection when the shape changes. */
  shortcut(x: Tensor): Tensor {
    return this.downsample ? this.downsample.call(x) : x;
  }
  override forward(x: Tensor): Tensor {
    return scope(() => {
      const fx = this.residual(x);
      const sc = this.shortcut(x);
      residualRecorder?.(this, fx, sc);
      return this.relu.call(fx.add(sc)); // out = relu(F(x) + shortcut(x))
    });
  }
  zeroInitLastBN(): void {
    zeros_(this.bn2.weight!);
  }
}

/**
 * 1x1 (reduce), 3x3, 1x1 (expand x4), with the stride on the 3x3 convolution as torchvision ("ResNet
 * v1.5"). width = floor(planes * baseWidth / 64) * groups gives ResNeXt and wide ResNets.
 */
export class Bottleneck extends Module implements ResidualBlock {
  static readonly expansion = 4;
  conv1: Conv2d;
  bn1: BatchNorm2d;
  conv2: Conv2d;
  bn2: BatchNorm2d;
  conv3: Conv2d;
  bn3: BatchNorm2d;
  relu: ReLU;
  downsample: Module | null;

  constructor(inPlanes: number, planes: number, o: BlockOptions = {}) {
    super();
    const groups = o.groups ?? 1;
    const width = Math.floor(planes * ((o.baseWidth ?? 64) / 64)) * groups;
    this.conv1 = this.registerModule('conv1', conv1x1(inPlanes, width));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(width));
    this.conv2 = this.registerModule('conv2', conv3x3(width, width, o.stride ?? 1, groups));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(width));
    this.conv3 = this.registerModule('conv3', conv1x1(width, planes * Bottleneck.expansion));
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(planes * Bottleneck.expansion));
    this.relu = this.registerModule('relu', new ReLU());
    this.downsample = o.downsample ? this.registerModule('downsample', o.downsample) : null;
  }
  /** F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))). */
  residual(x: Tensor): Tensor {
    return scope(() => {
      const a = this.relu.call(this.bn1.call(this.conv1.call(x)));
      const b = this.relu.call(this.bn2.call(this.conv2.call(a)));
      return this.bn3.call(this.conv3.call(b));
    });
  }
  shortcut(x: Tensor): Tensor {
    return this.downsample ? this.downsample.call(x) : x;
  }
  override forward(x: Tensor): Tensor {
    return scope(() => {
      const fx = this.residual(x);
      const sc = this.shortcut(x);
      residualRecorder?.(this, fx, sc);
      return this.relu.call(fx.add(sc)); // out = relu(F(x) + shortcut(x))
    });
  }
  zeroInitLastBN(): void {
    zeros_(this.bn3.weight!);
  }
}

/** The BasicBlock without its shortcut: the "plain" network of the degradation experiment. */
export class PlainBlock extends Module {
  conv1: Conv2d;
  bn1: BatchNorm2d;
  relu: ReLU;
  conv2: Conv2d;
  bn2: BatchNorm2d;
  constructor(inPlanes: number, planes: number, o: { stride?: number } = {}) {
    super();
    this.conv1 = this.registerModule('conv1', conv3x3(inPlanes, planes, o.stride ?? 1));
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(planes));
    this.relu = this.registerModule('relu', new ReLU());
    this.conv2 = this.registerModule('conv2', conv3x3(planes, planes));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(planes));
  }
  override forward(x: Tensor): Tensor {
    return scope(() => this.relu.call(this.bn2.call(this.conv2.call(this.relu.call(this.bn1.call(this.conv1.call(x))))))); // no shortcut
  }
}

/**
 * Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice, out = F(x) + shortcut(x) with no
 * activation after the addition. A projection shortcut (1x1 conv, no BN: the next block's
 * pre-activation normalises) takes the pre-activated input, as in the authors' code.
 */
export class PreActBlock extends Module implements ResidualBlock {
  static readonly expansion = 1;
  bn1: BatchNorm2d;
  conv1: Conv2d;
  bn2: BatchNorm2d;
  conv2: Conv2d;
  relu: ReLU;
  downsample: Sequential | null;

  constructor(inPlanes: number, planes: number, o: { stride?: number } = {}) {
    super();
    const stride = o.stride ?? 1;
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(inPlanes));
    this.conv1 = this.registerModule('conv1', conv3x3(inPlanes, planes, stride));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(planes));
    this.conv2 = this.registerModule('conv2', conv3x3(planes, planes));
    this.relu = this.registerModule('relu', new ReLU());
    const project = stride !== 1 || inPlanes !== planes;
    this.downsample = project ? this.registerModule('downsample', new Sequential(conv1x1(inPlanes, planes, stride))) : null;
  }
  /** F from the pre-activated input: conv2(relu(bn2(conv1(preact)))). */
  residual(preact: Tensor): Tensor {
    return scope(() => this.conv2.call(this.relu.call(this.bn2.call(this.conv1.call(preact)))));
  }
  shortcut(x: Tensor, preact: Tensor): Tensor {
    return this.downsample ? this.downsample.call(preact) : x;
  }
  override forward(x: Tensor): Tensor {
    return scope(() => {
      const preact = this.relu.call(this.bn1.call(x));
      const fx = this.residual(preact);
      const sc = this.shortcut(x, preact);
      residualRecorder?.(this, fx, sc);
      return fx.add(sc); // out = F(x) + shortcut(x), no activation after the addition
    });
  }
  zeroInitLastBN(): void {
    // The last BN of the branch feeds relu then conv2: a zero scale (bias is 0) makes F(x) = 0.
    zeros_(this.bn2.weight!);
  }
}

/** Pre-activation bottleneck (He et al. 2016): BN-ReLU-conv 1x1, 3x3 (strided), 1x1 (x4). */
export class PreActBottleneck extends Module implements ResidualBlock {
  static readonly expansion = 4;
  bn1: BatchNorm2d;
  conv1: Conv2d;
  bn2: BatchNorm2d;
  conv2: Conv2d;
  bn3: BatchNorm2d;
  conv3: Conv2d;
  relu: ReLU;
  downsample: Sequential | null;

  constructor(inPlanes: number, planes: number, o: { stride?: number } = {}) {
    super();
    const stride = o.stride ?? 1;
    const outPlanes = planes * PreActBottleneck.expansion;
    this.bn1 = this.registerModule('bn1', new BatchNorm2d(inPlanes));
    this.conv1 = this.registerModule('conv1', conv1x1(inPlanes, planes));
    this.bn2 = this.registerModule('bn2', new BatchNorm2d(planes));
    this.conv2 = this.registerModule('conv2', conv3x3(planes, planes, stride));
    this.bn3 = this.registerModule('bn3', new BatchNorm2d(planes));
    this.conv3 = this.registerModule('conv3', conv1x1(planes, outPlanes));
    this.relu = this.registerModule('relu', new ReLU());
    const project = stride !== 1 || inPlanes !== outPlanes;
    this.downsample = project ? this.registerModule('downsample', new Sequential(conv1x1(inPlanes, outPlanes, stride))) : null;
  }
  residual(preact: Tensor): Tensor {
    return scope(() => {
      const a = this.conv1.call(preact);
      const b = this.conv2.call(this.relu.call(this.bn2.call(a)));
      return this.conv3.call(this.relu.call(this.bn3.call(b)));
    });
  }
  shortcut(x: Tensor, preact: Tensor): Tensor {
    return this.downsample ? this.downsample.call(preact) : x;
  }
  override forward(x: Tensor): Tensor {
    return scope(() => {
      const preact = this.relu.call(this.bn1.call(x));
      const fx = this.residual(preact);
      const sc = this.shortcut(x, preact);
      residualRecorder?.(this, fx, sc);
      return fx.add(sc); // out = F(x) + shortcut(x), no activation after the addition
    });
  }
  zeroInitLastBN(): void {
    zeros_(this.bn3.weight!);
  }
}

export function isResidualBlock(m: Module): m is ResidualBlock {
  return typeof (m as unknown as { zeroInitLastBN?: unknown }).zeroInitLastBN === 'function';
}

/**
 * torchvision's initialisation, used by every network here: He normal (fanOut, relu) for convolutions,
 * BatchNorm weight 1 and bias 0, Linear layers keep PyTorch's default. With zeroInitResidual the last
 * BN of each residual block starts at zero.
 */
export function heInit(model: Module, zeroInitResidual = false): void {
  for (const m of model.modules()) {
    if (m instanceof Conv2d) kaimingNormal_(m.weight, { mode: 'fanOut', nonlinearity: 'relu' });
    else if (m instanceof BatchNorm2d && m.affine) {
      ones_(m.weight!);
      zeros_(m.bias!);
    }
  }
  if (zeroInitResidual) for (const m of model.modules()) if (isResidualBlock(m)) m.zeroInitLastBN();
}
