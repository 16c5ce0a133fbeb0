// Convolution kernels of the residual tfjs backend: 2-D (plain, depthwise, fused with bias and
// activation) and 3-D convolutions with their input and filter gradients, and the 2-D dilation
// (grayscale morphology) with its gradients. The window geometry is spatial.ts's.
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { activate } from './activation.js';
import {
  checkPadded,
  fromNC,
  geo2d,
  geo3d,
  outShape2d,
  outShape3d,
  padSpatial,
  plan,
  spatialShape,
  toNC,
  type Attr,
  type Conv2DInfo,
  type Conv3DInfo,
  type Geo,
  type Plan,
} from './spatial.js';
import {
  checkBroadcast,
  checkSize,
  code,
  defineKernel,
  op,
  out,
  requireFloat,
  sizeOf,
  zerosOut,
  type ResidualBackend,
  type Tensor,
} from './util.js';

// ---- weights: tf filters <-> libtorch weights ----

/** tf filter -> libtorch weight (views). HWIO -> OIHW; depthwise HW C M -> (C*M) 1 H W; DHWIO -> OIDHW. */
function weightOf(f: Tensor, kind: 'conv' | 'depthwise'): Tensor {
  if (f.ndim === 5) return f.permute(4, 3, 0, 1, 2);
  // A channels-last copy of the (small) weight: libtorch's convolutions run fastest when the weight's
  // memory format matches the channels-last input's (about 2x on the CPU, measured), and the copy of
  // the HWIO filter costs little next to the convolution.
  if (kind === 'conv') return f.permute(3, 2, 0, 1).contiguous('channelsLast');
  const [fh, fw, c, m] = f.shape;
  return f.reshape([fh, fw, 1, c * m]).permute(3, 2, 0, 1);
}
/** libtorch weight gradient -> tf filter shape. */
function filterOf(w: Tensor, kind: 'conv' | 'depthwise', filterShape: number[]): Tensor {
  if (w.ndim === 5) return w.permute(2, 3, 4, 1, 0).contiguous();
  const hwio = w.permute(2, 3, 1, 0).contiguous();
  return kind === 'conv' ? hwio : hwio.reshape(filterShape);
}
function weightShapeOf(filterShape: number[], kind: 'conv' | 'depthwise'): number[] {
  if (filterShape.length === 5) {
    const [fd, fh, fw, i, o] = filterShape;
    return [o, i, fd, fh, fw];
  }
  const [fh, fw, i, o] = filterShape;
  return kind === 'conv' ? [o, i, fh, fw] : [i * o, 1, fh, fw];
}

// ---- libtorch's convolution and its gradients on one geometry ----

interface ConvCall {
  x: Tensor; // N C spatial (libtorch layout)
  w: Tensor; // libtorch weight
  g: Geo;
  groups: number;
  bias?: Tensor | null;
}
function convForward({ x, w, g, groups, bias }: ConvCall): Tensor {
  const p = plan(g);
  const xp = padSpatial(x, p.pl, p.pr);
  return op(
    'convolution',
    xp,
    w,
    bias ?? null,
    g.stride,
    p.sym,
    g.dil,
    false,
    g.out.map(() => 0),
    groups,
  );
}
function convBackwardInput(dy: Tensor, w: Tensor, inShape: number[], g: Geo, groups: number): Tensor {
  const p = plan(g);
  const gi = op('convolutionBackwardInput', dy, w, spatialShape(inShape, p), g.stride, p.sym, g.dil, groups);
  return padSpatial(
    gi,
    p.pl.map((v) => -v),
    p.pr.map((v) => -v),
  );
}
function convBackwardWeight(x: Tensor, dy: Tensor, wShape: number[], g: Geo, groups: number): Tensor {
  const p = plan(g);
  let xp = padSpatial(x, p.pl, p.pr);
  // On the CPU, oneDNN's weight gradient is faster from channels-first data than from channels-last
  // views (measured ~1.5x for 3x3 convolutions, more than the two copies cost); CUDA takes the views.
  if (x.device === 'cpu') {
    xp = xp.contiguous();
    dy = dy.contiguous();
  }
  return op('convolutionBackwardWeight', dy, xp, wShape, g.stride, p.sym, g.dil, groups);
}

// ---- 2-D: the matrix-product paths ----

/**
 * A 1x1 NHWC convolution without padding (ResNet's bottleneck and MobileNet's pointwise convolutions)
 * is a matrix product of the [N*H*W, C] pixels by the [C, O] filter: BLAS on the tensors as they are,
 * where libtorch's convolution would first reorder the (large) weight into its own layout on every call
 * (measured 10x slower for 1024->2048 channels at 2x2).
 */
function isPointwise(c: Conv2DInfo, depthwise: boolean): boolean {
  const p = c.padInfo;
  return (
    !depthwise &&
    c.dataFormat === 'channelsLast' &&
    c.filterHeight === 1 &&
    c.filterWidth === 1 &&
    p.top === 0 &&
    p.bottom === 0 &&
    p.left === 0 &&
    p.right === 0
  );
}
/** x subsampled by the strides (the pixels a 1x1 convolution reads), checked against the output size. */
function strided(x: Tensor, c: Conv2DInfo): Tensor | null {
  let t = x;
  if (c.strideHeight > 1) t = t.slice(1, 0, null, c.strideHeight);
  if (c.strideWidth > 1) t = t.slice(2, 0, null, c.strideWidth);
  return t.shape[1] === c.outHeight && t.shape[2] === c.outWidth ? t : null;
}

/**
 * An NHWC convolution with few output pixels for its output channels (N*Ho*Wo < O: deep layers of small
 * images) as im2col + one matrix product by the HWIO filter read in place ([kh*kw*C, O]): the gathered
 * patches are smaller than the weight, which libtorch's convolution would reorder on every call.
 */
function im2colConv(x: Tensor, f: Tensor, c: Conv2DInfo): Tensor {
  return im2col(x, c)
    .matmul(f.reshape([-1, c.outChannels]))
    .reshape([c.batchSize, c.outHeight, c.outWidth, c.outChannels]);
}
function fewPixels(c: Conv2DInfo, depthwise: boolean): boolean {
  return !depthwise && c.dataFormat === 'channelsLast' && c.batchSize * c.outHeight * c.outWidth < c.outChannels;
}
/** The [N*Ho*Wo, kh*kw*C] patches of an NHWC tensor (HWIO order within a patch). */
function im2col(x: Tensor, c: Conv2DInfo): Tensor {
  const g = geo2d(c);
  const p = plan(g, () => 0);
  const xp = fromNC(padSpatial(toNC(x, true), p.pl, p.pr), true); // [N, Hp, Wp, C]
  const ekh = (c.filterHeight - 1) * c.dilationHeight + 1;
  const ekw = (c.filterWidth - 1) * c.dilationWidth + 1;
  let win = op('unfold', xp, 1, ekh, c.strideHeight);
  win = op('unfold', win, 2, ekw, c.strideWidth); // [N, Ho, Wo, C, ekh, ekw]
  if (c.dilationHeight > 1) win = win.slice(4, 0, null, c.dilationHeight);
  if (c.dilationWidth > 1) win = win.slice(5, 0, null, c.dilationWidth);
  return win.permute(0, 1, 2, 4, 5, 3).reshape([-1, c.filterHeight * c.filterWidth * c.inChannels]);
}
/** The transpose of im2col: patch gradients [N*Ho*Wo, kh*kw*C] summed back into an NHWC input gradient. */
function col2im(dcols: Tensor, c: Conv2DInfo, device: string): Tensor {
  const g = geo2d(c);
  const p = plan(g, () => 0);
  const [N, Ho, Wo, C] = [c.batchSize, c.outHeight, c.outWidth, c.inChannels];
  const Hp = c.inHeight + p.pl[0] + p.pr[0];
  const Wp = c.inWidth + p.pl[1] + p.pr[1];
  const d = dcols.reshape([N, Ho, Wo, c.filterHeight, c.filterWidth, C]);
  const gp = op('zeros', [N, Hp, Wp, C], code('float32'), device);
  for (let i = 0; i < c.filterHeight; i++) {
    for (let j = 0; j < c.filterWidth; j++) {
      const r0 = i * c.dilationHeight;
      const c0 = j * c.dilationWidth;
      const view = gp
        .slice(1, r0, r0 + (Ho - 1) * c.strideHeight + 1, c.strideHeight)
        .slice(2, c0, c0 + (Wo - 1) * c.strideWidth + 1, c.strideWidth);
      view.add_(d.select(3, i).select(3, j));
    }
  }
  return fromNC(
    padSpatial(
      toNC(gp, true),
      p.pl.map((v) => -v),
      p.pr.map((v) => -v),
    ),
    true,
  );
}

// ---- 2-D convolutions ----

function conv2dInfo(xShape: number[], filterShape: number[], a: Attr, depthwise: boolean): Conv2DInfo {
  const dataFormat = backend_util.convertConv2DDataFormat(((a.dataFormat as string) ?? 'NHWC') as 'NHWC' | 'NCHW');
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    a.strides as [number, number],
    (a.dilations as [number, number]) ?? 1,
    a.pad as 'same',
    a.dimRoundingMode as 'floor' | undefined,
    depthwise,
    dataFormat,
  );
}

interface Conv2DArgs {
  backend: ResidualBackend;
  x: TensorInfo;
  filter: TensorInfo;
  a: Attr;
  depthwise: boolean;
  bias?: TensorInfo;
  prelu?: TensorInfo;
}
function conv2d({ backend, x, filter, a, depthwise, bias, prelu }: Conv2DArgs): TensorInfo {
  const c = conv2dInfo(x.shape, filter.shape, a, depthwise);
  const shape = outShape2d(c);
  const name = `${depthwise ? 'DepthwiseConv2dNative' : 'Conv2D'}${bias || prelu || a.activation ? ' (fused)' : ''}`;
  checkSize(name, shape, 'float32');
  checkPadded(name, c);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(shape) === 0 || sizeOf(x.shape) === 0) return zerosOut(backend, shape);
  const xt = requireFloat(backend.tensorOf(x), 'conv2d');
  const ft = requireFloat(backend.tensorOf(filter), 'conv2d');
  const b: Tensor | null = bias ? requireFloat(backend.tensorOf(bias), 'conv2d bias') : null;
  // A bias or PReLU weight broadcasts against the output (in NCHW a 1-D one per channel, as below).
  const perChannelShape = (s: number[]) => (!cl && s.length === 1 && s[0] !== 1 ? [s[0], 1, 1] : s);
  for (const t of [bias, prelu]) if (t) checkBroadcast(name, 'float32', shape, perChannelShape(t.shape));
  // A bias with one value per output channel goes into the convolution; any other broadcastable one is
  // added to the result.
  const fuseBias = b !== null && b.ndim === 1 && b.shape[0] === c.outChannels;
  const xs = isPointwise(c, depthwise) ? strided(xt, c) : null;
  if (xs) {
    let y = xs
      .reshape([-1, c.inChannels])
      .matmul(ft.reshape([c.inChannels, c.outChannels]))
      .reshape(shape);
    if (b) y = y.add(b);
    y = activate(y, a.activation as string | undefined, prelu ? backend.tensorOf(prelu) : null, a.leakyreluAlpha as number | undefined);
    return out(backend, y, 'float32');
  }
  if (fewPixels(c, depthwise)) {
    let y = im2colConv(xt, ft, c);
    if (b) y = y.add(b);
    y = activate(y, a.activation as string | undefined, prelu ? backend.tensorOf(prelu) : null, a.leakyreluAlpha as number | undefined);
    return out(backend, y, 'float32');
  }
  const y0 = convForward({
    x: toNC(xt, cl),
    w: weightOf(ft, depthwise ? 'depthwise' : 'conv'),
    g: geo2d(c),
    groups: depthwise ? c.inChannels : 1,
    bias: fuseBias ? b : null,
  });
  let y = fromNC(y0, cl);
  // In NCHW, a 1-D per-channel bias or PReLU weight broadcasts over [C, 1, 1] (as tfjs's backends do).
  const perChannel = (t: Tensor) => (!cl && t.ndim === 1 && t.shape[0] !== 1 ? t.reshape([t.shape[0], 1, 1]) : t);
  if (b && !fuseBias) y = y.add(perChannel(b));
  y = activate(
    y,
    a.activation as string | undefined,
    prelu ? perChannel(backend.tensorOf(prelu)) : null,
    a.leakyreluAlpha as number | undefined,
  );
  return out(backend, y, 'float32');
}
export const conv2DConfig = defineKernel('Conv2D', ({ inputs, attrs, backend }) =>
  conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: false }),
);
export const depthwiseConv2dNativeConfig = defineKernel('DepthwiseConv2dNative', ({ inputs, attrs, backend }) =>
  conv2d({ backend, x: inputs.x, filter: inputs.filter, a: attrs, depthwise: true }),
);
export const fusedConv2DConfig = defineKernel('FusedConv2D', ({ inputs, attrs, backend }) =>
  conv2d({
    backend,
    x: inputs.x,
    filter: inputs.filter,
    a: attrs,
    depthwise: false,
    bias: inputs.bias,
    prelu: inputs.preluActivationWeights,
  }),
);
export const fusedDepthwiseConv2DConfig = defineKernel('FusedDepthwiseConv2D', ({ inputs, attrs, backend }) =>
  conv2d({
    backend,
    x: inputs.x,
    filter: inputs.filter,
    a: attrs,
    depthwise: true,
    bias: inputs.bias,
    prelu: inputs.preluActivationWeights,
  }),
);

function conv2dBackpropInput(backend: ResidualBackend, dy: TensorInfo, filter: TensorInfo, a: Attr, depthwise: boolean): TensorInfo {
  const inputShape = a.inputShape as number[];
  const name = depthwise ? 'DepthwiseConv2dNativeBackpropInput' : 'Conv2DBackpropInput';
  checkSize(name, inputShape, 'float32');
  const c = conv2dInfo(inputShape, filter.shape, a, depthwise);
  checkPadded(name, c);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, inputShape);
  let dyt = requireFloat(backend.tensorOf(dy), 'conv2dBackpropInput');
  // tfjs's backends read a dy larger than the convolution's output through its top-left corner (the
  // cpu backend's loops run over the output size); a smaller one is refused natively.
  const [ho, wo] = [c.outHeight, c.outWidth];
  const [hd, wd] = cl ? [dy.shape[1], dy.shape[2]] : [dy.shape[2], dy.shape[3]];
  if (hd > ho) dyt = dyt.narrow(cl ? 1 : 2, 0, ho);
  if (wd > wo) dyt = dyt.narrow(cl ? 2 : 3, 0, wo);
  if (isPointwise(c, depthwise) && c.strideHeight === 1 && c.strideWidth === 1) {
    const ft = requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput').reshape([c.inChannels, c.outChannels]);
    return out(backend, dyt.reshape([-1, c.outChannels]).matmul(ft.t()).reshape(inputShape), 'float32');
  }
  if (fewPixels(c, depthwise)) {
    const ft = requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput').reshape([-1, c.outChannels]);
    return out(backend, col2im(dyt.reshape([-1, c.outChannels]).matmul(ft.t()), c, backend.device), 'float32');
  }
  const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv2dBackpropInput'), depthwise ? 'depthwise' : 'conv');
  const ncShape = cl ? [inputShape[0], inputShape[3], inputShape[1], inputShape[2]] : inputShape;
  const gi = convBackwardInput(toNC(dyt, cl), w, ncShape, geo2d(c), depthwise ? c.inChannels : 1);
  return out(backend, fromNC(gi, cl), 'float32');
}
export const conv2DBackpropInputConfig = defineKernel('Conv2DBackpropInput', ({ inputs, attrs, backend }) =>
  conv2dBackpropInput(backend, inputs.dy, inputs.filter, attrs, false),
);
export const depthwiseConv2dNativeBackpropInputConfig = defineKernel('DepthwiseConv2dNativeBackpropInput', ({ inputs, attrs, backend }) =>
  conv2dBackpropInput(backend, inputs.dy, inputs.filter, attrs, true),
);

function conv2dBackpropFilter(backend: ResidualBackend, x: TensorInfo, dy: TensorInfo, a: Attr, depthwise: boolean): TensorInfo {
  const filterShape = a.filterShape as number[];
  const name = depthwise ? 'DepthwiseConv2dNativeBackpropFilter' : 'Conv2DBackpropFilter';
  checkSize(name, filterShape, 'float32');
  const c = conv2dInfo(x.shape, filterShape, a, depthwise);
  checkPadded(name, c);
  const cl = c.dataFormat === 'channelsLast';
  if (sizeOf(x.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, filterShape);
  const xt = requireFloat(backend.tensorOf(x), 'conv2dBackpropFilter');
  const dyt = requireFloat(backend.tensorOf(dy), 'conv2dBackpropFilter');
  const xs = isPointwise(c, depthwise) && dy.shape[1] === c.outHeight && dy.shape[2] === c.outWidth ? strided(xt, c) : null;
  if (xs)
    return out(
      backend,
      xs
        .reshape([-1, c.inChannels])
        .t()
        .matmul(dyt.reshape([-1, c.outChannels]))
        .reshape(filterShape),
      'float32',
    );
  if (fewPixels(c, depthwise) && dy.shape[1] === c.outHeight && dy.shape[2] === c.outWidth)
    return out(
      backend,
      im2col(xt, c)
        .t()
        .matmul(dyt.reshape([-1, c.outChannels]))
        .reshape(filterShape),
      'float32',
    );
  const kind = depthwise ? 'depthwise' : 'conv';
  const gw = convBackwardWeight(toNC(xt, cl), toNC(dyt, cl), weightShapeOf(filterShape, kind), geo2d(c), depthwise ? c.inChannels : 1);
  return out(backend, filterOf(gw, kind, filterShape), 'float32');
}
export const conv2DBackpropFilterConfig = defineKernel('Conv2DBackpropFilter', ({ inputs, attrs, backend }) =>
  conv2dBackpropFilter(backend, inputs.x, inputs.dy, attrs, false),
);
export const depthwiseConv2dNativeBackpropFilterConfig = defineKernel('DepthwiseConv2dNativeBackpropFilter', ({ inputs, attrs, backend }) =>
  conv2dBackpropFilter(backend, inputs.x, inputs.dy, attrs, true),
);

// ---- 3-D convolutions ----

function conv3dInfo(xShape: number[], filterShape: number[], a: Attr): Conv3DInfo {
  return backend_util.computeConv3DInfo(
    xShape as [number, number, number, number, number],
    filterShape as [number, number, number, number, number],
    a.strides as [number, number, number],
    (a.dilations as [number, number, number]) ?? 1,
    a.pad as 'same',
  );
}
export const conv3DConfig = defineKernel('Conv3D', ({ inputs, attrs, backend }) => {
  const { x, filter } = inputs;
  const c = conv3dInfo(x.shape, filter.shape, attrs);
  const shape = outShape3d(c);
  checkSize('Conv3D', shape, 'float32');
  checkPadded('Conv3D', c);
  if (sizeOf(shape) === 0 || sizeOf(x.shape) === 0) return zerosOut(backend, shape);
  const xt = requireFloat(backend.tensorOf(x), 'conv3d');
  const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv3d'), 'conv');
  return out(backend, fromNC(convForward({ x: toNC(xt, true), w, g: geo3d(c), groups: 1 }), true), 'float32');
});
export const conv3DBackpropInputV2Config = defineKernel('Conv3DBackpropInputV2', ({ inputs, attrs, backend }) => {
  const { dy, filter } = inputs;
  const inputShape = attrs.inputShape as number[];
  checkSize('Conv3DBackpropInputV2', inputShape, 'float32');
  const c = conv3dInfo(inputShape, filter.shape, attrs);
  checkPadded('Conv3DBackpropInputV2', c);
  if (sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, inputShape);
  const w = weightOf(requireFloat(backend.tensorOf(filter), 'conv3dBackpropInput'), 'conv');
  const [n, d, h, wd, ch] = inputShape;
  const gi = convBackwardInput(toNC(requireFloat(backend.tensorOf(dy), 'conv3dBackpropInput'), true), w, [n, ch, d, h, wd], geo3d(c), 1);
  return out(backend, fromNC(gi, true), 'float32');
});
export const conv3DBackpropFilterV2Config = defineKernel('Conv3DBackpropFilterV2', ({ inputs, attrs, backend }) => {
  const { x, dy } = inputs;
  const filterShape = attrs.filterShape as number[];
  checkSize('Conv3DBackpropFilterV2', filterShape, 'float32');
  const c = conv3dInfo(x.shape, filterShape, attrs);
  checkPadded('Conv3DBackpropFilterV2', c);
  if (sizeOf(x.shape) === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, filterShape);
  const xt = toNC(requireFloat(backend.tensorOf(x), 'conv3dBackpropFilter'), true);
  const dyt = toNC(requireFloat(backend.tensorOf(dy), 'conv3dBackpropFilter'), true);
  const gw = convBackwardWeight(xt, dyt, weightShapeOf(filterShape, 'conv'), geo3d(c), 1);
  return out(backend, filterOf(gw, 'conv', filterShape), 'float32');
});

// ---- dilation2d (grayscale morphology: the max over each window of x + filter) ----

interface DilationCtx {
  xp: Tensor; // padded NHWC
  vals: Tensor; // [N, Ho, Wo, C, fh*fw]
  info: Conv2DInfo;
  plan: Plan;
}
function dilationWindows(kernel: string, backend: ResidualBackend, x: TensorInfo, filter: TensorInfo, a: Attr): DilationCtx {
  const info = backend_util.computeDilation2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number],
    a.strides as [number, number],
    a.pad as 'same',
    'NHWC',
    a.dilations as [number, number],
  );
  // Every window's taps are materialized ([N, Ho, Wo, C, fh * fw]): bounded with the padded input.
  checkSize(
    kernel,
    [x.shape[0], info.outHeight, info.outWidth, filter.shape[2], filter.shape[0] * filter.shape[1]],
    'float32',
    'window taps',
  );
  checkPadded(kernel, info);
  const g = geo2d(info);
  const p = plan(g, () => 0);
  const xt = requireFloat(backend.tensorOf(x), 'dilation2d');
  const xp = fromNC(padSpatial(toNC(xt, true), p.pl, p.pr, -Infinity), true);
  const [fh, fw, C] = filter.shape;
  const ekh = (fh - 1) * info.dilationHeight + 1;
  const ekw = (fw - 1) * info.dilationWidth + 1;
  // [N, Ho, Wo, C, ekh, ekw] windows (views), then every dilation-th tap.
  let win = op('unfold', xp, 1, ekh, info.strideHeight);
  win = op('unfold', win, 2, ekw, info.strideWidth);
  win = win.slice(4, 0, null, info.dilationHeight).slice(5, 0, null, info.dilationWidth);
  const f = requireFloat(backend.tensorOf(filter), 'dilation2d').permute(2, 0, 1); // [C, fh, fw]
  const vals = win.add(f).reshape([x.shape[0], info.outHeight, info.outWidth, C, fh * fw]);
  return { xp, vals, info, plan: p };
}
export const dilation2DConfig = defineKernel('Dilation2D', ({ inputs, attrs, backend }) => {
  const { x, filter } = inputs;
  const ctx = dilationWindows('Dilation2D', backend, x, filter, attrs);
  return out(backend, ctx.vals.amax([-1], false), 'float32');
});
export const dilation2DBackpropFilterConfig = defineKernel('Dilation2DBackpropFilter', ({ inputs, attrs, backend }) => {
  const { x, filter, dy } = inputs;
  const ctx = dilationWindows('Dilation2DBackpropFilter', backend, x, filter, attrs);
  const [fh, fw, C] = filter.shape;
  const K = fh * fw;
  const hot = op('oneHot', ctx.vals.argmax(-1, false), K); // [N, Ho, Wo, C, K]
  const dyt = requireFloat(backend.tensorOf(dy), 'dilation2dBackpropFilter');
  const g = hot.mul(dyt.unsqueeze(-1)).sum([0, 1, 2]); // [C, K]
  return out(backend, g.reshape([C, fh, fw]).permute(1, 2, 0), 'float32');
});
export const dilation2DBackpropInputConfig = defineKernel('Dilation2DBackpropInput', ({ inputs, attrs, backend }) => {
  const { x, filter, dy } = inputs;
  const ctx = dilationWindows('Dilation2DBackpropInput', backend, x, filter, attrs);
  const { info } = ctx;
  const [, fw] = filter.shape;
  const [N, Hp, Wp, C] = ctx.xp.shape;
  const am = ctx.vals.argmax(-1, false); // [N, Ho, Wo, C]
  const i = am.div(fw, 'floor');
  const j = am.sub(i.mul(fw));
  const rows = op('arange', 0, info.outHeight, 1, code('int64'), backend.device).mul(info.strideHeight).reshape([1, -1, 1, 1]);
  const cols = op('arange', 0, info.outWidth, 1, code('int64'), backend.device).mul(info.strideWidth).reshape([1, 1, -1, 1]);
  const r = rows.add(i.mul(info.dilationHeight));
  const cc = cols.add(j.mul(info.dilationWidth));
  const flat = r.mul(Wp).add(cc).reshape([N, -1, C]);
  const dyt = requireFloat(backend.tensorOf(dy), 'dilation2dBackpropInput').reshape([N, -1, C]);
  const gp = op('scatterAdd', op('zeros', [N, Hp * Wp, C], code('float32'), backend.device), 1, flat, dyt).reshape([N, Hp, Wp, C]);
  const g = fromNC(
    padSpatial(
      toNC(gp, true),
      ctx.plan.pl.map((v) => -v),
      ctx.plan.pr.map((v) => -v),
    ),
    true,
  );
  return out(backend, g, 'float32');
});

export const configs: KernelConfig[] = [
  conv2DConfig,
  depthwiseConv2dNativeConfig,
  fusedConv2DConfig,
  fusedDepthwiseConv2DConfig,
  conv2DBackpropInputConfig,
  depthwiseConv2dNativeBackpropInputConfig,
  conv2DBackpropFilterConfig,
  depthwiseConv2dNativeBackpropFilterConfig,
  conv3DConfig,
  conv3DBackpropInputV2Config,
  conv3DBackpropFilterV2Config,
  dilation2DConfig,
  dilation2DBackpropFilterConfig,
  dilation2DBackpropInputConfig,
];
