// Measurements behind `residual explain`: the gradient norm of every layer's weights, and the size of
// each residual block's branch F(x) against its shortcut x.
import { noGrad } from '../autograd/index.js';
import { withResidualRecorder } from '../models/resnet/blocks.js';
import { crossEntropy } from '../nn/functional.js';
import { currentGradientNorms, type LayerGradNorm } from '../models/gradient-norms.js';
import type { Module } from '../nn/module.js';
import { scope } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

// The per-layer gradient norms are measured in lib/models (the trainer's TensorBoard logging takes the same numbers).
export { currentGradientNorms, layerWeights, type LayerGradNorm } from '../models/gradient-norms.js';

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
