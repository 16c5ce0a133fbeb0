// The one evaluation routine: loss and accuracy of a model over a loader, in eval mode (BatchNorm running
// statistics), without gradients, under autocast when the run trained with it. The trainer's per-epoch
// test and `residual eval` both call it, with a model and test loader built the same way (see
// runTestLoader), so `residual eval` on a run folder reproduces the run's last test numbers exactly.
import { noGrad } from '../autograd/index.js';
import type { ImageDataset } from '../data/dataset.js';
import { DataLoader, type Batch } from '../data/loader.js';
import { crossEntropy } from '../nn/functional.js';
import type { Module } from '../nn/module.js';
import { autocast } from '../tensor/memory.js';
import { scope } from '../tensor/scope.js';
import { zeros, type Device } from '../tensor/tensor.js';

export interface EvaluateOptions {
  device: Device;
  /** Evaluate under autocast with this dtype (the run's --amp / --amp-dtype). */
  amp?: boolean;
  ampDtype?: 'bfloat16' | 'float16';
  /** Stop after this many batches (the run's --limit-test-batches). */
  limit?: number;
}

export interface EvaluateResult {
  /** Mean cross-entropy over the images seen. */
  loss: number;
  /** Fraction of correct top-1 predictions, in [0, 1]. */
  acc: number;
  /** Images seen. */
  n: number;
}

/**
 * Loss and accuracy of `model` over `loader` (from its first batch: the loader is set to epoch 0).
 * The model is in eval mode during the pass and gets its previous mode back afterwards. Sums are kept
 * on the device (float64 loss, int64 count) and read once at the end.
 */
/** What evaluate() reads: a DataLoader, a StreamingDataLoader (lib/data/stream.ts), or anything batching alike. */
export type BatchSource = AsyncIterable<Batch> & { setEpoch(epoch: number): void };

export async function evaluate(model: Module, loader: BatchSource, opts: EvaluateOptions): Promise<EvaluateResult> {
  const limit = opts.limit ?? Infinity;
  const devType = opts.device.startsWith('cuda') ? 'cuda' : 'cpu';
  const wasTraining = model.training;
  model.eval();
  const lossSum = zeros([], { device: opts.device, dtype: 'float64' });
  const correct = zeros([], { device: opts.device, dtype: 'int64' });
  let n = 0;
  let b = 0;
  loader.setEpoch(0);
  try {
    for await (const { x, y } of loader) {
      try {
        scope(() =>
          noGrad(() => {
            const run = () => model.call(x);
            const logits = opts.amp ? autocast(devType, opts.ampDtype ?? 'bfloat16', run) : run();
            lossSum.add_(crossEntropy(logits.to('float32'), y, { reduction: 'sum' }).to('float64'));
            correct.add_(logits.argmax(1).eq(y).sum());
          }),
        );
        n += y.shape[0];
      } finally {
        x.dispose();
        y.dispose();
      }
      if (++b >= limit) break;
    }
    if (n === 0) throw new Error('evaluate: the loader gave no images');
    return { loss: (lossSum.item() as number) / n, acc: (correct.item() as number) / n, n };
  } finally {
    lossSum.dispose();
    correct.dispose();
    model.train(wasTraining);
  }
}

/** Normalisation statistics and batching of a run's test loader; shared by the trainer and `residual eval`. */
export function runTestLoader(
  test: ImageDataset,
  stats: { mean: number[]; std: number[] },
  cfg: { batchSize: number; evalBatchSize?: number; channelsLast?: boolean; workers: number },
  device: Device,
): DataLoader {
  return new DataLoader(test, {
    mean: stats.mean,
    std: stats.std,
    device,
    channelsLast: !!cfg.channelsLast,
    workers: cfg.workers,
    prefetch: 3,
    batchSize: cfg.evalBatchSize ?? Math.max(cfg.batchSize, 256),
  });
}
