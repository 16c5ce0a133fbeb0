// Weights on disk: safetensors (read/write) and PyTorch checkpoints (read).
import fs from 'node:fs';
import { loadSafetensors, saveSafetensors } from './safetensors.js';
import { isLegacyTorchHead, loadTorchCheckpoint } from './torch.js';
import type { Tensor } from '../tensor/tensor.js';

export { loadSafetensors, saveSafetensors, readSafetensorsHeader, MAX_SAFETENSORS_HEADER } from './safetensors.js';
export { loadTorchCheckpoint, loadTorchPickle, TorchDType, TorchStorage, type TorchLoadLimits } from './torch.js';

/** Saves a state dict (name -> Tensor) as safetensors, atomically. */
export function save(stateDict: Record<string, Tensor>, file: string, metadata?: Record<string, string>): void {
  saveSafetensors(stateDict, file, metadata);
}

/**
 * Loads a state dict: a PyTorch checkpoint (torch.save zip format, starting with 'PK') by content,
 * otherwise safetensors. Loading never executes code from the file.
 */
export function load(file: string): Record<string, Tensor> {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  const head = Buffer.alloc(4);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  // 'PK' is a zip archive; 80 02 8a 0a starts the legacy torch.save format (a bare pickle whose first
  // value is torch's magic number), which loadTorchCheckpoint explains it cannot read.
  if ((head[0] === 0x50 && head[1] === 0x4b) || isLegacyTorchHead(head)) return loadTorchCheckpoint(file);
  return loadSafetensors(file).tensors;
}
