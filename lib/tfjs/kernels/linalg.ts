// Linear-algebra kernels of the residual tfjs backend: BatchMatMul, _FusedMatMul (with bias and a fused
// activation), Einsum and Diag.
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { activate } from './activation.js';
import {
  checkBroadcast,
  checkSize,
  defineKernel,
  notStringOrComplex,
  op,
  out,
  requireFloat,
  torchDtype,
  type ResidualBackend,
} from './util.js';

type Attr = Record<string, unknown>;

function matMul(backend: ResidualBackend, a: TensorInfo, b: TensorInfo, attrs: Attr, bias?: TensorInfo, prelu?: TensorInfo): TensorInfo {
  if (a.shape.length < 2 || b.shape.length < 2)
    throw new Error(`batchMatMul: both inputs need rank >= 2, got shapes [${a.shape}] and [${b.shape}]`);
  // The batch dimensions broadcast: [B, 1, m, k] x [1, B', k, n] is B * B' products.
  const batch = backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const m = attrs.transposeA ? a.shape[a.shape.length - 1] : a.shape[a.shape.length - 2];
  const n = attrs.transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  const name = bias || prelu || attrs.activation ? '_FusedMatMul' : 'BatchMatMul';
  checkBroadcast(name, 'float32', [...batch, m, n], ...[bias, prelu].filter((t) => t !== undefined).map((t) => t.shape));
  let at = backend.tensorOf(a);
  let bt = backend.tensorOf(b);
  const intMul = a.dtype === 'int32' && b.dtype === 'int32' && !bias;
  if (!intMul) {
    at = requireFloat(at, 'matMul');
    bt = requireFloat(bt, 'matMul');
  }
  if (attrs.transposeA) at = at.transpose(-2, -1);
  if (attrs.transposeB) bt = bt.transpose(-2, -1);
  let y = at.matmul(bt);
  if (bias) y = y.add(requireFloat(backend.tensorOf(bias), 'matMul bias'));
  y = activate(
    y,
    attrs.activation as string | undefined,
    prelu ? backend.tensorOf(prelu) : null,
    attrs.leakyreluAlpha as number | undefined,
  );
  return out(backend, y, intMul ? 'int32' : 'float32');
}
export const batchMatMulConfig = defineKernel('BatchMatMul', ({ inputs, attrs, backend }) => matMul(backend, inputs.a, inputs.b, attrs));
export const fusedMatMulConfig = defineKernel('_FusedMatMul', ({ inputs, attrs, backend }) =>
  matMul(backend, inputs.a, inputs.b, attrs, inputs.bias, inputs.preluActivationWeights),
);

export const einsumConfig = defineKernel('Einsum', ({ inputs, attrs, backend }) => {
  const list = inputs as unknown as TensorInfo[];
  notStringOrComplex('Einsum', ...list);
  // tf's own checks first (its messages; e.g. no repeated axes, at most two operands), then libtorch.
  const { allDims, summedDims, idDims } = backend_util.decodeEinsumEquation(attrs.equation as string, list.length);
  backend_util.checkEinsumDimSizes(allDims.length, idDims, list as never);
  // The output holds every dimension that is not summed (an outer product multiplies the inputs' sizes).
  const sizeOfDim = new Map<number, number>();
  idDims.forEach((ids, i) => ids.forEach((id, axis) => sizeOfDim.set(id, list[i].shape[axis])));
  const outDims = allDims.map((_, id) => id).filter((id) => !summedDims.includes(id));
  checkSize(
    'Einsum',
    outDims.map((id) => sizeOfDim.get(id) ?? 1),
    'float32',
  );
  const dtype = list.every((t) => t.dtype === 'int32') ? 'int32' : 'float32';
  const ts = list.map((t) => backend.tensorOf(t).to(torchDtype(dtype)));
  return backend.output(op('einsum', attrs.equation as string, ts), dtype);
});

export const diagConfig = defineKernel('Diag', ({ inputs, backend }) => {
  const x = inputs.x;
  notStringOrComplex('Diag', x);
  const n = util.sizeFromShape(x.shape);
  checkSize('Diag', [n, n], x.dtype);
  const d = op('diag', backend.tensorOf(x).reshape([n]), 0);
  return backend.output(d.reshape([...x.shape, ...x.shape]), x.dtype);
});

export const configs: KernelConfig[] = [batchMatMulConfig, fusedMatMulConfig, einsumConfig, diagConfig];
