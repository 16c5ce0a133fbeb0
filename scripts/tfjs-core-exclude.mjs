// Tests of tfjs-core's suite that scripts/tfjs-core-tests.mjs does not run on the residual backend, each
// with the reason. `test` is a substring of the full spec name (as jasmine prints it; the env name is
// "peer" for both backends, so names read "<describe> peer {} <it>").
//
// Every entry is a kernel that only tfjs-backend-cpu registers (it is not among tfjs-node's 155, so the
// tfjs-node backend lacks it too) and that libtorch has no operation for: string processing, ragged
// tensors and sparse-index bookkeeping are JS loops over the data in the cpu backend. residual does not
// reimplement them in JS.
const CPU_ONLY = 'a tfjs-backend-cpu-only kernel (not among tfjs-node\'s 155; tfjs-node lacks it too) with no libtorch operation';

export const exclude = [
  { test: 'stringNGrams peer ', reason: `StringNGrams: ${CPU_ONLY} (string n-grams)` },
  { test: 'stringSplit peer ', reason: `StringSplit: ${CPU_ONLY} (string splitting)` },
  { test: 'stringToHashBucketFast peer ', reason: `StringToHashBucketFast: ${CPU_ONLY} (fingerprint hashing of strings)` },
  { test: 'raggedGather  peer ', reason: `RaggedGather: ${CPU_ONLY} (ragged tensors)` },
  { test: 'raggedRange  peer ', reason: `RaggedRange: ${CPU_ONLY} (ragged tensors)` },
  { test: 'raggedTensorToTensor  peer ', reason: `RaggedTensorToTensor: ${CPU_ONLY} (ragged tensors)` },
  { test: 'sparseReshape peer ', reason: `SparseReshape: ${CPU_ONLY} (sparse index bookkeeping)` },
  { test: 'sparseFillEmptyRows peer ', reason: `SparseFillEmptyRows: ${CPU_ONLY} (sparse index bookkeeping)` },
];
