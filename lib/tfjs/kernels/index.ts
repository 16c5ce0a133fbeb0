// Every kernel config of the residual tfjs backend, by subject: one file per subject, each kernel's
// config beside its implementation (as tfjs-node's kernels are).
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { configs as activation } from './activation.js';
import { configs as array } from './array.js';
import { configs as complex } from './complex.js';
import { configs as conv } from './conv.js';
import { configs as creation } from './creation.js';
import { configs as gather } from './gather.js';
import { configs as image } from './image.js';
import { configs as linalg } from './linalg.js';
import { configs as math } from './math.js';
import { configs as norm } from './norm.js';
import { configs as pool } from './pool.js';
import { configs as ragged } from './ragged.js';
import { configs as random } from './random.js';
import { configs as reduce } from './reduce.js';
import { configs as segment } from './segment.js';
import { configs as sort } from './sort.js';
import { configs as sparse } from './sparse.js';
import { configs as spectral } from './spectral.js';
import { configs as string } from './string.js';

export const kernelConfigs: KernelConfig[] = [
  ...math,
  ...reduce,
  ...complex,
  ...spectral,
  ...array,
  ...creation,
  ...gather,
  ...sort,
  ...segment,
  ...linalg,
  ...activation,
  ...conv,
  ...pool,
  ...norm,
  ...image,
  ...sparse,
  ...ragged,
  ...string,
  ...random,
];
