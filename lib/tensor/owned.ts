// Zero-copy tensors over memory the library itself allocated and never hands out (a decoded label
// array, a checkpoint's storage bytes). The public tensor({share: true}) accepts only SharedArrayBuffers,
// because an ordinary ArrayBuffer held by user code can be transferred or detached under the tensor;
// these buffers are private to the library, so nothing can detach them. Not exported from the package.
import { native } from '../addon/binding.js';
import { dtypeCode, type DType } from './dtype.js';
import { wrapT, type Tensor } from './tensor.js';

export function ownedBufferTensor(data: ArrayBufferView | ArrayBuffer, dtype: DType, shape: readonly number[]): Tensor {
  return wrapT(native.fromBuffer(data, 0, [...shape], dtypeCode(dtype) as number, false));
}
