// The gradient norm of every layer's weights along a network's main path: the numbers `residual explain`
// plots (lib/explain/measure.ts re-exports them) and the trainer logs to TensorBoard (lib/train/tensorboard.ts).
import type { Module } from '../nn/module.js';
import { scope } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

/** The gradient norm of one layer's weight. */
export interface LayerGradNorm {
  /** 1-based position along the network, input to output. */
  layer: number;
  /** The weight's key, e.g. `layer2.0.conv1.weight`. */
  name: string;
  /** L2 (Frobenius) norm of the weight's gradient; 0 when it has none. */
  norm: number;
}

/**
 * The weights of the layers along the main path, input to output: every convolution and linear weight
 * (tensors of 2 or more dimensions), without the projection shortcuts (`downsample`), so the layer
 * index runs 1..depth of a CIFAR ResNet (ResNet-20: 19 convolutions and the classifier).
 */
export function layerWeights(model: Module): [string, Tensor][] {
  return [...model.namedParameters()].filter(([name, t]) => t.ndim >= 2 && !/(^|\.)downsample\./.test(name));
}

/** Gradient norms of the layer weights as they are now (after a backward pass). */
export function currentGradientNorms(model: Module): LayerGradNorm[] {
  return layerWeights(model).map(([name, w], i) => {
    const g = w.grad;
    const norm = g ? scope(() => g.norm().item() as number) : 0;
    g?.dispose();
    return { layer: i + 1, name, norm };
  });
}
