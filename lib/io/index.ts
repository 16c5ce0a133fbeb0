// Weights on disk: safetensors (read/write) and PyTorch checkpoints (read).
import fsMod from 'node:fs';
import { loadSafetensors, saveSafetensors } from './safetensors.js';
import { loadTorchCheckpoint } from './torch.js';
import type { Tensor } from '../tensor/tensor.js';

export { loadSafetensors, saveSafetensors, readSafetensorsHeader } from './safetensors.js';
export { loadTorchCheckpoint } from './torch.js';

/** Saves a state dict (name -> Tensor) as safetensors, atomically. */
export function save(stateDict: Record<string, Tensor>, file: string, metadata?: Record<string, string>): void {
  saveSafetensors(stateDict, file, metadata);
}

/**
 * Loads a state dict: safetensors by content, otherwise a PyTorch checkpoint (torch.save zip format).
 * Loading never executes code from the file.
 */
export function load(file: string): Record<string, Tensor> {
  const fs = require_fs();
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(4);
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head[0] === 0x50 && head[1] === 0x4b) return loadTorchCheckpoint(file);
  return loadSafetensors(file).tensors;
}


function require_fs(): typeof fsMod {
  return fsMod;
}
