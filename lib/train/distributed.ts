// The trainer's data-parallel side (`residual train --nproc-per-node N`, or any launch with torchrun's
// environment): joins the process group, wraps the model in DistributedDataParallel, gives each rank
// its DistributedSampler share, and says which rank writes files (rank 0 only).
//
// --batch-size is PER RANK, as in PyTorch DDP scripts: the global batch is batch-size x world size.
import * as dist from '../distributed/index.js';
import type { Module } from '../nn/module.js';

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

export interface DistributedTraining {
  rank: number;
  worldSize: number;
  ddp: dist.DistributedDataParallel;
  sampler: dist.DistributedSampler;
}

/** DDP and the sampler for a trainer, when a group with more than one rank is up; null otherwise. */
export function setupDistributed(model: Module, trainSize: number, seed: number): DistributedTraining | null {
  if (!dist.isInitialized() || dist.getWorldSize() < 2) return null;
  const ddp = new dist.DistributedDataParallel(model);
  const sampler = new dist.DistributedSampler(trainSize, { seed, shuffle: true, dropLast: false });
  return { rank: dist.getRank(), worldSize: dist.getWorldSize(), ddp, sampler };
}

/** Streamed datasets (imagefolder, webdataset) have no DistributedSampler share yet: refused with several ranks. */
export function refuseStreamedDistributed(): null {
  if (dist.isInitialized() && dist.getWorldSize() > 1) {
    throw new Error('data-parallel training (--nproc-per-node) of a streamed dataset (imagefolder, webdataset) is not supported yet: every rank would read every image; use an in-memory dataset');
  }
  return null;
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
    throw new Error(
      `--resume: the run was trained with ${was} rank${was === 1 ? '' : 's'} and is now started with ${now}: refused, because the global ` +
        `batch (--batch-size per rank x ranks), the steps per epoch and the schedule would change. Resume it with --nproc-per-node ${was}` +
        `${was === 1 ? ' (or without it)' : ''}.`,
    );
  }
}

export function finishDistributed(): void {
  dist.destroyProcessGroup();
}
