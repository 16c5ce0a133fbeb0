// PyTorch checkpoints (torch.save, zip format) without Python: libtorch's own restricted unpickler
// reads the archive; it only rebuilds tensors and containers and never runs code from the file.
import fs from 'node:fs';
import { native as N } from '../native.js';
import { Tensor, wrapT } from '../tensor/tensor.js';

/** Loads a torch.save'd state dict (a dict of name -> tensor, nested dicts flattened with '.'). */
export function loadTorchCheckpoint(file: string): Record<string, Tensor> {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  const raw: Record<string, unknown> = N.torchLoad(file);
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(raw)) out[k] = wrapT(v as never);
  return out;
}
