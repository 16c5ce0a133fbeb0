// Every kernel config of the residual tfjs backend, from each kernels file.
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { configs as array } from './array.js';
import { configs as extra } from './extra.js';
import { configs as math } from './math.js';
import { configs as misc } from './misc.js';
import { configs as nn } from './nn.js';

export const kernelConfigs: KernelConfig[] = [...math, ...array, ...misc, ...extra, ...nn];
