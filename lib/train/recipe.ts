// What a run trains with, built from its config: the device, the network (sized for the data, on the
// device, channels-last when set), the optimizer with its parameter groups, and the learning-rate
// schedule. The Trainer builds these once; `residual eval` builds the network the same way.
import { DeviceError } from '../core/errors.js';
import { createModel, getModelInfo } from '../models/registry.js';
import type { Module } from '../nn/module.js';
import { AdamW, SGD, type Optimizer, type ParamGroup } from '../optim/optimizer.js';
import {
  ConstantLR,
  CosineAnnealingLR,
  LinearWarmup,
  MultiStepLR,
  OneCycleLR,
  SequentialLR,
  type LRScheduler,
  type OptimizerLike,
} from '../optim/schedule.js';
import { cuda } from '../tensor/memory.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { forAudience, msg, setting, settingsError, type ScheduleName, type TrainConfig } from './config.js';

/** The device a config's `device` means here ('auto': CUDA when available). */
export function resolveDevice(d: TrainConfig['device']): Device {
  if (d === 'auto') return cuda.isAvailable() ? 'cuda' : 'cpu';
  if (d.startsWith('cuda') && !cuda.isAvailable())
    throw settingsError(
      DeviceError,
      msg`${setting('device', d)}: CUDA is not available here (use ${setting('device', 'cpu')} or ${forAudience("'auto'", 'auto')})`,
    );
  return d;
}

/**
 * The network of a run, as the trainer builds it: sized for the data's classes and channels, on the
 * device, channels-last when set. `residual eval` builds it the same way before loading the weights.
 */
export function createRunModel(
  cfg: Pick<TrainConfig, 'model' | 'channelsLast'>,
  data: { images: Tensor; classes: string[] } | { classes: string[]; channels: number },
  device: Device,
): Module {
  const inChannels = 'images' in data ? data.images.shape[1] : data.channels; // in memory, or streamed / saved with the run
  const model = createModel(getModelInfo(cfg.model).name, { numClasses: Math.max(data.classes.length, 2), inChannels });
  // One pass over the parameters (Module._apply), in place: the tensor objects stay (optimizers and DDP hold them).
  return model.to({ device: device !== 'cpu' ? device : undefined, memoryFormat: cfg.channelsLast ? 'channelsLast' : undefined });
}

/** Parameter groups: weight decay on conv/linear weights only, never on BN parameters or biases. */
export function paramGroups(model: Module, weightDecay: number): (Partial<ParamGroup> & { params: Tensor[] })[] {
  const decay: Tensor[] = [];
  const noDecay: Tensor[] = [];
  for (const p of model.parameters()) (p.ndim <= 1 ? noDecay : decay).push(p);
  return [
    { params: decay, weightDecay },
    { params: noDecay, weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}

/** SGD (momentum, Nesterov) or AdamW over the model's parameter groups. */
export function createOptimizer(
  model: Module,
  cfg: Pick<TrainConfig, 'optimizer' | 'lr' | 'momentum' | 'nesterov' | 'weightDecay'>,
): Optimizer {
  const groups = paramGroups(model, cfg.weightDecay);
  return cfg.optimizer === 'sgd'
    ? new SGD(groups, { lr: cfg.lr, momentum: cfg.momentum, nesterov: cfg.nesterov && cfg.momentum > 0 })
    : new AdamW(groups, { lr: cfg.lr });
}

/** How each schedule is made for `total` steps after `warm` warm-up steps. */
const MAKE_SCHEDULE: Record<ScheduleName, (o: OptimizerLike, cfg: Pick<TrainConfig, 'lr'>, total: number, warm: number) => LRScheduler> = {
  onecycle: (o, cfg, total) => new OneCycleLR(o, cfg.lr, total, { cycleMomentum: false }),
  cosine: (o, _cfg, total, warm) => new CosineAnnealingLR(o, Math.max(1, total - warm)),
  multistep: (o, _cfg, total, warm) =>
    new MultiStepLR(
      o,
      [Math.round(total * 0.5) - warm, Math.round(total * 0.75) - warm].filter((m) => m > 0),
      0.1,
    ),
  constant: (o) => new ConstantLR(o, 1, 1),
};

/**
 * The learning-rate schedule of a run, stepped once per batch: `schedule` over stepsPerEpoch x epochs
 * steps, after a linear warm-up of warmupEpochs (1cycle has its own). `optimizer` may be any object with
 * param groups (state.ts dry-runs a saved schedule on a copy of them).
 */
export function createScheduler(
  optimizer: OptimizerLike,
  cfg: Pick<TrainConfig, 'schedule' | 'lr' | 'epochs' | 'warmupEpochs'>,
  stepsPerEpoch: number,
): LRScheduler {
  const total = stepsPerEpoch * cfg.epochs;
  const warm = Math.min(total - 1, Math.round(cfg.warmupEpochs * stepsPerEpoch));
  const main = MAKE_SCHEDULE[cfg.schedule](optimizer, cfg, total, warm);
  if (cfg.schedule === 'onecycle' || warm <= 0) return main;
  const warmup = new LinearWarmup(optimizer, warm, 0.1);
  return new SequentialLR(optimizer, [warmup, main], [warm]);
}
