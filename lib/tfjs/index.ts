// residual/tfjs: importing it registers the TensorFlow.js backend `residual` (libtorch, CPU or CUDA)
// with every kernel, at a priority above tfjs-node's (3), and the `file://` IO handlers.
//   import * as tf from '@tensorflow/tfjs-core';   // or '@tensorflow/tfjs' / tfjs-layers
//   import 'residual/tfjs';
//   await tf.ready();   // tf.getBackend() === 'residual'
import { getKernel, registerBackend, registerKernel } from '@tensorflow/tfjs-core';
import { BACKEND_NAME, ResidualBackend, getResidualDevice, setResidualDevice } from './backend.js';
import { registerFileHandlers } from './io.js';
import { kernelConfigs } from './kernels/index.js';

export { BACKEND_NAME, ResidualBackend, getResidualDevice, setResidualDevice };
export { kernelConfigs };

/** The priority the backend registers with (tfjs-node uses 3, the cpu backend 1). */
export const RESIDUAL_PRIORITY = 4;

registerBackend(BACKEND_NAME, () => new ResidualBackend(), RESIDUAL_PRIORITY);
for (const k of kernelConfigs) if (!getKernel(k.kernelName, BACKEND_NAME)) registerKernel(k);
registerFileHandlers();
