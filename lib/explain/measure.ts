// Measurements behind `residual explain`: the gradient norm of every layer's weights, and the size of
// each residual block's branch F(x) against its shortcut x.
import { noGrad } from '../autograd/index.js';
import { withResidualRecorder } from '../models/resnet/blocks.js';
import { crossEntropy } from '../nn/functional.js';
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

/** The size of one residual block's branch against its shortcut. */
export interface BlockMagnitude {
  /** 1-based position of the block, input to output. */
  block: number;
  /** The block's module path, e.g. `layer1.2`. */
  name: string;
  /** |F(x)|: L2 norm of the residual branch's output over the batch. */
  residualNorm: number;
  /** |x|: L2 norm of the shortcut's output (x itself, or its projection where the shape changes). */
  shortcutNorm: number;
  /** |F(x)| / |x|. */
  ratio: number;
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

/**
 * Gradient norm of every layer's weights for one batch: forward in training mode, mean cross-entropy
 * against `y`, backward, then the norm of each weight's gradient (see layerWeights for which layers).
 * Gradients are cleared before and after, so an optimizer's next step is not affected; BatchNorm's
 * running statistics are updated by the forward as in a training step.
 */
export function gradientNorms(model: Module, batch: { x: Tensor; y: Tensor }): LayerGradNorm[] {
  const wasTraining = model.training;
  model.train();
  model.zeroGrad();
  try {
    scope(() => crossEntropy(model.call(batch.x), batch.y).backward());
    return currentGradientNorms(model);
  } finally {
    model.zeroGrad();
    model.train(wasTraining);
  }
}

/**
 * |F(x)| / |x| of every residual block for a batch, without gradients: small ratios mark blocks whose
 * output is close to their input (close to the identity). Plain networks have no residual blocks and
 * give an empty list. By default in evaluation mode (BatchNorm's running statistics, for a trained
 * network); `{ batchStats: true }` normalises with the batch's own statistics instead (for an untrained
 * network, whose running statistics mean nothing yet; BatchNorm's running statistics are updated then).
 */
export function residualMagnitudes(model: Module, x: Tensor, opts: { batchStats?: boolean } = {}): BlockMagnitude[] {
  const out: BlockMagnitude[] = [];
  const wasTraining = model.training;
  model.train(!!opts.batchStats);
  try {
    noGrad(() =>
      scope(() => {
        withResidualRecorder(
          (block, fx, shortcut) => {
            const residualNorm = fx.norm().item() as number;
            const shortcutNorm = shortcut.norm().item() as number;
            out.push({ block: out.length + 1, name: block.path, residualNorm, shortcutNorm, ratio: residualNorm / shortcutNorm });
          },
          () => model.call(x),
        );
      }),
    );
  } finally {
    model.train(wasTraining);
  }
  return out;
}
