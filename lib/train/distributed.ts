// The trainer's data-parallel side (`residual train --nproc-per-node N`, or any launch with torchrun's
// environment): joins the process group, wraps the model in DistributedDataParallel, gives each rank
// its share of every epoch, and says which rank writes files (rank 0 only).
//
// Shares: in-memory data through a DistributedSampler (PyTorch's order); streamed data by the streaming
// loader itself (rank r of a folder takes every world-size-th image of the epoch's permutation, padded
// like DistributedSampler; of WebDataset shards, every world-size-th shard). Every rank must run the
// same number of steps (each one all-reduces gradients): a folder's shares are equal by construction,
// shards' are not, so the ranks run as many steps as the smallest share has batches; and where a rank
// may skip unreadable files (onBadFile 'skip'), the ranks agree before each step that all have a batch.
//
// batchSize is PER RANK, as in PyTorch DDP scripts: the global batch is batchSize x world size.
import * as dist from '../distributed/index.js';
import { StreamingDataLoader } from '../data/stream.js';
import type { Sampler } from '../data/loader.js';
import type { Module } from '../nn/module.js';
import { zeros, type Device } from '../tensor/tensor.js';
import { forAudience, key, msg, setting, settingsError } from './config.js';

/** True when this process was started as one rank of several (WORLD_SIZE > 1). */
export function launchedDistributed(env: NodeJS.ProcessEnv = process.env): boolean {
  return Number(env.WORLD_SIZE ?? '1') > 1;
}

/** Joins the group when launched as one of several ranks; returns whether it did. */
export async function initDistributedFromEnv(): Promise<boolean> {
  if (!launchedDistributed() || dist.isInitialized()) return dist.isInitialized();
  await dist.initProcessGroup({ backend: process.env.RESIDUAL_DIST_BACKEND === 'nccl' ? 'nccl' : 'gloo' });
  return true;
}

/** This process's part of a data-parallel job. */
export interface DataShare {
  rank: number;
  worldSize: number;
  /** The DistributedSampler of an in-memory training set of `size` items. */
  sampler: (size: number) => Sampler;
}

export interface DistributedTraining {
  rank: number;
  worldSize: number;
  ddp: dist.DistributedDataParallel;
}

/** This rank's share of each epoch, when a group with more than one rank is up; null otherwise. */
export function distributedShare(seed: number): DataShare | null {
  if (!dist.isInitialized() || dist.getWorldSize() < 2) return null;
  return {
    rank: dist.getRank(),
    worldSize: dist.getWorldSize(),
    sampler: (size) => new dist.DistributedSampler(size, { seed, shuffle: true, dropLast: false }),
  };
}

/** DDP over the model (rank 0's weights are broadcast); null when not data-parallel. */
export function setupDistributed(model: Module, share: DataShare | null): DistributedTraining | null {
  if (!share) return null;
  return { rank: share.rank, worldSize: share.worldSize, ddp: new dist.DistributedDataParallel(model) };
}

/**
 * Batches every rank has in `epoch` of a streamed training loader: the smallest share's (WebDataset
 * shards hold different numbers of samples; a folder's shares are equal). Computed by each rank alike,
 * without communication.
 */
export function commonStreamedLength(loader: StreamingDataLoader, worldSize: number, epoch: number): number {
  if (loader.source.kind === 'folder' || worldSize < 2) {
    loader.setEpoch(epoch);
    return loader.length;
  }
  let least = Infinity;
  for (let r = 0; r < worldSize; r++) {
    const other = new StreamingDataLoader(loader.source, { ...loader.options, rank: r, worldSize });
    try {
      other.setEpoch(epoch);
      least = Math.min(least, other.length);
    } finally {
      other.close();
    }
  }
  return least;
}

/** True on every rank when every rank passes true (one all-reduce of a flag): the ranks stop together. */
export async function allRanks(ok: boolean, device: Device): Promise<boolean> {
  // NCCL reduces device tensors only; Gloo, CPU ones.
  const t = zeros([1], { dtype: 'int32', device: dist.getBackend() === 'nccl' ? device : 'cpu' });
  try {
    if (ok) t.fill_(1);
    await dist.allReduce(t, 'min');
    return (t.item() as number) === 1;
  } finally {
    t.dispose();
  }
}

/** Only rank 0 writes checkpoints, metrics and the report. */
export function isWriter(): boolean {
  return dist.getRank() === 0;
}

/** A resumed run must keep its world size (the global batch and the schedule depend on it). */
export function checkResumeWorldSize(saved: unknown): void {
  const now = dist.getWorldSize();
  const was = typeof saved === 'number' ? saved : 1;
  if (was !== now) {
    const ranks = (n: number) => `${n} rank${n === 1 ? '' : 's'}`;
    throw settingsError(
      Error,
      msg`${setting('resume', true)}: the run was trained with ${ranks(was)} and is now started with ${now}: refused, because the global batch (${key('batchSize')} per rank x ranks), the steps per epoch and the schedule would change. Resume it with ${forAudience(ranks(was), `--nproc-per-node ${was}${was === 1 ? ' (or without it)' : ''}`)}.`,
    );
  }
}

export function finishDistributed(): void {
  dist.destroyProcessGroup();
}
