// Tests of tfjs-core's suite that scripts/tfjs-core-tests.mjs does not run on the residual backend, each
// with the reason. `test` is a substring of the full spec name (as jasmine prints it; the env name is
// "peer" for both backends, so names read "<describe> peer {} <it>").
//
// Every entry is a kernel that only tfjs-backend-cpu registers (not among tfjs-node's 155 kernels, so
// the tfjs-node backend lacks it too) and that libtorch has no operation for: the cpu backend runs them
// as JS loops over the data. residual keeps string tensors on the JS side and moves them through the
// data-movement kernels (reshape, concat, slice, gather, ...) and implements the string kernels in JS.
// Ragged gathers and ragged-to-dense conversion have no libtorch counterpart.
const CPU_ONLY = "a tfjs-backend-cpu-only kernel (not among tfjs-node's 155; tfjs-node lacks it too) with no libtorch operation";
const RAGGED = `${CPU_ONLY}: ragged tensors (row-splits bookkeeping in JS loops)`;

export const exclude = [
  { test: 'raggedTensorToTensor  peer ', reason: `RaggedTensorToTensor: ${RAGGED}` },
];
