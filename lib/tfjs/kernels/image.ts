// Image kernels of the residual tfjs backend (tf.image): bilinear and nearest-neighbour resizing with
// their gradients, CropAndResize, FlipLeftRight, RotateWithOffset, Transform (projective transforms) and
// non-max suppression (V3, V4, V5: tfjs-core's own implementations on the read data).
import { backend_util, kernel_impls } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { tensor, where } from '../../tensor/tensor.js';
import {
  checkCount,
  checkSize,
  code,
  defineKernel,
  fromJs,
  fromTyped,
  op,
  out,
  requireFloat,
  sc,
  sizeOf,
  zerosOut,
  type ResidualBackend,
  type Tensor,
} from './util.js';

type Attr = Record<string, unknown>;

// ---- resizing ----

interface Axis {
  lo: Tensor;
  hi: Tensor;
  frac: Tensor;
}
/** tf's bilinear source rows for one axis (exactly tfjs-backend-cpu's arithmetic, in doubles). */
function bilinearAxis(
  inSize: number,
  outSize: number,
  alignCorners: boolean,
  halfPixel: boolean,
  device: string,
  fracShape: number[],
): Axis {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const frac = new Float32Array(outSize);
  for (let r = 0; r < outSize; r++) {
    const src = halfPixel ? ratio * (r + 0.5) - 0.5 : ratio * r;
    const f = Math.max(0, Math.floor(src));
    lo[r] = f;
    hi[r] = Math.min(inSize - 1, Math.ceil(src));
    frac[r] = src - f;
  }
  return {
    lo: tensor(lo, { device: device as 'cpu' }).to('int64'),
    hi: tensor(hi, { device: device as 'cpu' }).to('int64'),
    frac: tensor(frac, { shape: fracShape, device: device as 'cpu' }),
  };
}
function nearestAxis(inSize: number, outSize: number, alignCorners: boolean, halfPixel: boolean, device: string): Tensor {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const idx = new Int32Array(outSize);
  for (let r = 0; r < outSize; r++) {
    const src = halfPixel ? ratio * (r + 0.5) : ratio * r;
    let n = Math.min(inSize - 1, alignCorners ? Math.round(src) : Math.floor(src));
    if (halfPixel) n = Math.max(0, n);
    idx[r] = n;
  }
  return tensor(idx, { device: device as 'cpu' }).to('int64');
}
function lerpT(a: Tensor, b: Tensor, w: Tensor): Tensor {
  return a.add(b.sub(a).mul(w));
}

export const resizeBilinearConfig = defineKernel('ResizeBilinear', ({ inputs, attrs, backend }) => {
  const images = inputs.images;
  const [newH, newW] = attrs.size as [number, number];
  const [N, H, W, C] = images.shape;
  checkSize('ResizeBilinear', [N, newH, newW, C], 'float32');
  checkSize('ResizeBilinear', [N, newH, W, C], 'float32', 'row-resized intermediate');
  if (N * newH * newW * C === 0) return zerosOut(backend, [N, newH, newW, C]);
  const x = requireFloat(backend.tensorOf(images), 'resizeBilinear');
  const ac = !!attrs.alignCorners;
  const hp = !!attrs.halfPixelCenters;
  const rows = bilinearAxis(H, newH, ac, hp, backend.device, [1, newH, 1, 1]);
  const cols = bilinearAxis(W, newW, ac, hp, backend.device, [1, 1, newW, 1]);
  const top = x.indexSelect(1, rows.lo);
  const bot = x.indexSelect(1, rows.hi);
  const t = lerpT(top.indexSelect(2, cols.lo), top.indexSelect(2, cols.hi), cols.frac);
  const b = lerpT(bot.indexSelect(2, cols.lo), bot.indexSelect(2, cols.hi), cols.frac);
  return out(backend, lerpT(t, b, rows.frac), 'float32');
});
export const resizeBilinearGradConfig = defineKernel('ResizeBilinearGrad', ({ inputs, attrs, backend }) => {
  const { images, dy } = inputs;
  const [N, H, W, C] = images.shape;
  const [, newH, newW] = dy.shape;
  if (N * H * W * C === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, images.shape);
  checkSize('ResizeBilinearGrad', [N, newH, W, C], 'float32', 'column-summed intermediate');
  const ac = !!attrs.alignCorners;
  // tf's ResizeBilinearGrad (and tfjs's) is the transpose of the legacy (not half-pixel) mapping.
  const rows = bilinearAxis(H, newH, ac, false, backend.device, [1, newH, 1, 1]);
  const cols = bilinearAxis(W, newW, ac, false, backend.device, [1, 1, newW, 1]);
  const g = requireFloat(backend.tensorOf(dy), 'resizeBilinearGrad');
  const zA = op('zeros', [N, newH, W, C], code('float32'), backend.device);
  const gc = g.mul(cols.frac);
  let A = op('indexAdd', zA, 2, cols.lo, g.sub(gc));
  A = op('indexAdd', A, 2, cols.hi, gc);
  const ar = A.mul(rows.frac);
  const zX = op('zeros', [N, H, W, C], code('float32'), backend.device);
  let dx = op('indexAdd', zX, 1, rows.lo, A.sub(ar));
  dx = op('indexAdd', dx, 1, rows.hi, ar);
  return out(backend, dx, 'float32');
});
export const resizeNearestNeighborConfig = defineKernel('ResizeNearestNeighbor', ({ inputs, attrs, backend }) => {
  const images = inputs.images;
  const [newH, newW] = attrs.size as [number, number];
  const [N, H, W, C] = images.shape;
  checkSize('ResizeNearestNeighbor', [N, newH, newW, C], images.dtype);
  checkSize('ResizeNearestNeighbor', [N, newH, W, C], images.dtype, 'row-resized intermediate');
  if (N * newH * newW * C === 0) return zerosOut(backend, [N, newH, newW, C], images.dtype);
  const ac = !!attrs.alignCorners;
  const hp = !!attrs.halfPixelCenters;
  const x = backend.tensorOf(images);
  const y = x.indexSelect(1, nearestAxis(H, newH, ac, hp, backend.device)).indexSelect(2, nearestAxis(W, newW, ac, hp, backend.device));
  return out(backend, y, images.dtype);
});
export const resizeNearestNeighborGradConfig = defineKernel('ResizeNearestNeighborGrad', ({ inputs, attrs, backend }) => {
  const { images, dy } = inputs;
  const [N, H, W, C] = images.shape;
  const [, newH, newW] = dy.shape;
  if (N * H * W * C === 0 || sizeOf(dy.shape) === 0) return zerosOut(backend, images.shape);
  checkSize('ResizeNearestNeighborGrad', [N, newH, W, C], 'float32', 'column-summed intermediate');
  const ac = !!attrs.alignCorners;
  const g = requireFloat(backend.tensorOf(dy), 'resizeNearestNeighborGrad');
  const A = op(
    'indexAdd',
    op('zeros', [N, newH, W, C], code('float32'), backend.device),
    2,
    nearestAxis(W, newW, ac, false, backend.device),
    g,
  );
  const dx = op(
    'indexAdd',
    op('zeros', [N, H, W, C], code('float32'), backend.device),
    1,
    nearestAxis(H, newH, ac, false, backend.device),
    A,
  );
  return out(backend, dx, 'float32');
});

// ---- crop and resize ----

function cropAndResize(backend: ResidualBackend, image: TensorInfo, boxes: TensorInfo, boxInd: TensorInfo, attrs: Attr): TensorInfo {
  const [batch, ih, iw, C] = image.shape;
  const nb = boxes.shape[0];
  const [ch, cw] = attrs.cropSize as [number, number];
  const method = (attrs.method as string) ?? 'bilinear';
  const extrap = (attrs.extrapolationValue as number) ?? 0;
  checkSize('CropAndResize', [nb, ch, cw, C], 'float32');
  if (nb * ch * cw * C === 0) return zerosOut(backend, [nb, ch, cw, C]);
  const bv = backend.readSync(boxes.dataId) as Float32Array;
  const bi = backend.readSync(boxInd.dataId) as Int32Array;
  const bilinear = method === 'bilinear';
  // Per box: source rows/cols (floor/ceil or nearest), lerp weights, validity (inside the image and a
  // valid box index); out-of-range boxes give 0, out-of-image points the extrapolation value.
  const top = new Int32Array(nb * ch);
  const bot = new Int32Array(nb * ch);
  const yl = new Float32Array(nb * ch);
  const yok = new Uint8Array(nb * ch);
  const left = new Int32Array(nb * cw);
  const right = new Int32Array(nb * cw);
  const xl = new Float32Array(nb * cw);
  const xok = new Uint8Array(nb * cw);
  const bidx = new Int32Array(nb);
  const bok = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const [y1, x1, y2, x2] = [bv[4 * b], bv[4 * b + 1], bv[4 * b + 2], bv[4 * b + 3]];
    const ind = bi[b];
    const valid = ind >= 0 && ind < batch;
    bidx[b] = valid ? ind : 0;
    bok[b] = valid ? 1 : 0;
    const hs = ch > 1 ? ((y2 - y1) * (ih - 1)) / (ch - 1) : 0;
    const ws = cw > 1 ? ((x2 - x1) * (iw - 1)) / (cw - 1) : 0;
    for (let y = 0; y < ch; y++) {
      const yi = ch > 1 ? y1 * (ih - 1) + y * hs : 0.5 * (y1 + y2) * (ih - 1);
      const k = b * ch + y;
      if (yi < 0 || yi > ih - 1 || !Number.isFinite(yi)) continue;
      yok[k] = 1;
      if (bilinear) {
        top[k] = Math.floor(yi);
        bot[k] = Math.ceil(yi);
        yl[k] = yi - Math.floor(yi);
      } else top[k] = bot[k] = Math.round(yi);
    }
    for (let x = 0; x < cw; x++) {
      const xi = cw > 1 ? x1 * (iw - 1) + x * ws : 0.5 * (x1 + x2) * (iw - 1);
      const k = b * cw + x;
      if (xi < 0 || xi > iw - 1 || !Number.isFinite(xi)) continue;
      xok[k] = 1;
      if (bilinear) {
        left[k] = Math.floor(xi);
        right[k] = Math.ceil(xi);
        xl[k] = xi - Math.floor(xi);
      } else left[k] = right[k] = Math.round(xi);
    }
  }
  const dev = backend.device as 'cpu';
  const i64 = (a: Int32Array, shape: number[]) => tensor(a, { shape, device: dev }).to('int64');
  const img = requireFloat(backend.tensorOf(image), 'cropAndResize');
  const B = i64(bidx, [nb, 1, 1]);
  const T = i64(top, [nb, ch, 1]);
  const Bo = i64(bot, [nb, ch, 1]);
  const L = i64(left, [nb, 1, cw]);
  const R = i64(right, [nb, 1, cw]);
  const g = (r: Tensor, c: Tensor) => op('indexTensors', img, [B, r, c]); // [nb, ch, cw, C]
  let y: Tensor;
  if (bilinear) {
    const XL = tensor(xl, { shape: [nb, 1, cw, 1], device: dev });
    const YL = tensor(yl, { shape: [nb, ch, 1, 1], device: dev });
    const t = lerpT(g(T, L), g(T, R), XL);
    const b = lerpT(g(Bo, L), g(Bo, R), XL);
    y = lerpT(t, b, YL);
  } else y = g(T, L);
  const ok = op(
    'logicalAnd',
    tensor(yok, { shape: [nb, ch, 1, 1], device: dev }).to('bool'),
    tensor(xok, { shape: [nb, 1, cw, 1], device: dev }).to('bool'),
  );
  y = where(ok, y, extrap);
  y = y.mul(tensor(bok, { shape: [nb, 1, 1, 1], device: dev }));
  return out(backend, y, 'float32');
}
export const cropAndResizeConfig = defineKernel('CropAndResize', ({ inputs, attrs, backend }) =>
  cropAndResize(backend, inputs.image, inputs.boxes, inputs.boxInd, attrs),
);

export const flipLeftRightConfig = defineKernel('FlipLeftRight', ({ inputs, backend }) => {
  const t = backend.tensorOf(inputs.image);
  return out(backend, t.flip([2]), inputs.image.dtype);
});

// ---- rotation and projective transforms ----

// RotateWithOffset: each output pixel reads the input at its position rotated about the center (rounded
// half up, as Math.round), else the fill value (a number, or per-channel values with channel 3 opaque).
export const rotateWithOffsetConfig = defineKernel('RotateWithOffset', ({ inputs, attrs, backend }) => {
  const image = inputs.image;
  const { radians, fillValue, center } = attrs as unknown as {
    radians: number;
    fillValue: number | number[];
    center: number | [number, number];
  };
  const [batch, h, w, ch] = image.shape;
  const [cx, cy] = backend_util.getImageCenter(center, h, w);
  const dev = backend.device;
  const sin = Math.sin(radians);
  const cos = Math.cos(radians);
  const xs = op('sub', op('arange', 0, w, 1, code('float64'), dev).reshape([1, w]), sc(cx), 1);
  const ys = op('sub', op('arange', 0, h, 1, code('float64'), dev).reshape([h, 1]), sc(cy), 1);
  const round = (t: Tensor, c: number): Tensor => op('floor', op('add', t, sc(c + 0.5), 1));
  const srcX = round(op('sub', op('mul', xs, sc(cos)), op('mul', ys, sc(sin)), 1), cx);
  const srcY = round(op('add', op('mul', xs, sc(sin)), op('mul', ys, sc(cos)), 1), cy);
  const ok = op(
    'logicalAnd',
    op('logicalAnd', op('ge', srcX, sc(0)), op('lt', srcX, sc(w))),
    op('logicalAnd', op('ge', srcY, sc(0)), op('lt', srcY, sc(h))),
  );
  const flat = op('add', op('mul', op('clamp', srcY, 0, h - 1), sc(w)), op('clamp', srcX, 0, w - 1), 1)
    .to('int64')
    .reshape([h * w]);
  const img = backend
    .tensorOf(image)
    .to('float32')
    .reshape([batch, h * w, ch]);
  const moved = img.indexSelect(1, flat).reshape([batch, h, w, ch]);
  const fills =
    typeof fillValue === 'number'
      ? new Array<number>(ch).fill(fillValue)
      : Array.from({ length: ch }, (_, c) => (c === 3 ? 255 : fillValue[c]));
  const result = op('where', ok.reshape([1, h, w, 1]), moved, fromTyped(new Float32Array(fills), [ch], 'float32', dev));
  return backend.output(result, image.dtype);
});

// tf.image.transform: projective transforms with tf's fill modes and nearest/bilinear interpolation,
// computed as whole-tensor libtorch ops (coordinates in float64, as the cpu backend's JS numbers).
function truncT(v: Tensor): Tensor {
  return op('where', op('lt', v, sc(0)), op('ceil', v), op('floor', v));
}
function mapCoord(c: Tensor, len: number, mode: string): Tensor {
  if (mode === 'nearest') return op('clamp', c, 0, len - 1);
  if (mode !== 'reflect' && mode !== 'wrap') return c;
  if (len <= 1) return op('where', op('logicalOr', op('lt', c, sc(0)), op('gt', c, sc(len - 1))), sc(0), c);
  let neg: Tensor;
  let pos: Tensor;
  if (mode === 'reflect') {
    const sz2 = 2 * len;
    const n1 = op('where', op('lt', c, sc(sz2)), op('add', op('mul', truncT(op('div', op('neg', c), sc(sz2), null)), sc(sz2)), c, 1), c);
    neg = op('where', op('lt', n1, sc(-len)), op('add', n1, sc(sz2), 1), op('sub', op('neg', n1), sc(1), 1));
    const p1 = op('sub', c, op('mul', truncT(op('div', c, sc(sz2), null)), sc(sz2)), 1);
    pos = op('where', op('ge', p1, sc(len)), op('sub', op('neg', p1), sc(1 - sz2), 1), p1);
  } else {
    const sz = len - 1;
    neg = op('add', c, op('mul', op('add', truncT(op('div', op('neg', c), sc(sz), null)), sc(1), 1), sc(len)), 1);
    pos = op('sub', c, op('mul', truncT(op('div', c, sc(sz), null)), sc(len)), 1);
  }
  const mapped = op('where', op('lt', c, sc(0)), neg, op('where', op('gt', c, sc(len - 1)), pos, c));
  return op('clamp', mapped, 0, len - 1);
}
export const transformConfig = defineKernel('Transform', ({ inputs, attrs, backend }) => {
  const { image, transforms } = inputs;
  const { interpolation, fillMode, fillValue, outputShape } = attrs as unknown as {
    interpolation: string;
    fillMode: string;
    fillValue: number;
    outputShape?: [number, number];
  };
  if (interpolation !== 'nearest' && interpolation !== 'bilinear')
    throw new Error(`Error in Transform: Expect 'nearest' or 'bilinear', but got ${interpolation}`);
  const [batch, h, w, ch] = image.shape;
  const [oh, ow] = outputShape ?? [h, w];
  const nb0 = Math.max(batch, transforms.shape[0] ?? 1);
  checkSize('Transform', [nb0, oh, ow, ch], 'float32');
  // (the pixels are read and interpolated in float64, as the cpu backend's JS numbers)
  checkSize('Transform', [nb0, oh, ow, ch], 'float64', 'float64 interpolation');
  const dev = backend.device;
  const tr = backend.tensorOf(transforms).to('float64').reshape([-1, 8]);
  const col = (i: number): Tensor => tr.select(1, i).reshape([-1, 1, 1]);
  const xs = op('arange', 0, ow, 1, code('float64'), dev).reshape([1, 1, ow]);
  const ys = op('arange', 0, oh, 1, code('float64'), dev).reshape([1, oh, 1]);
  const lin = (a: number, b: number, c: number): Tensor => op('add', op('add', op('mul', col(a), xs), op('mul', col(b), ys), 1), col(c), 1);
  const proj = op('add', op('add', op('mul', col(6), xs), op('mul', col(7), ys), 1), sc(1), 1);
  const inX = mapCoord(op('div', lin(0, 1, 2), proj, null), w, fillMode);
  const inY = mapCoord(op('div', lin(3, 4, 5), proj, null), h, fillMode);
  const img = backend
    .tensorOf(image)
    .to('float64')
    .reshape([batch, h * w, ch]);
  const nb = Math.max(batch, tr.shape[0]);
  const read = (yy: Tensor, xx: Tensor): Tensor => {
    const ok = op(
      'logicalAnd',
      op('logicalAnd', op('ge', yy, sc(0)), op('lt', yy, sc(h))),
      op('logicalAnd', op('ge', xx, sc(0)), op('lt', xx, sc(w))),
    );
    const safe = (v: Tensor, hi: number): Tensor => op('clamp', op('where', op('isnan', v), sc(0), v), 0, hi);
    const flat = op('add', op('mul', safe(yy, h - 1), sc(w)), safe(xx, w - 1), 1).to('int64');
    const idx = flat
      .expand([nb, oh, ow])
      .reshape([nb, oh * ow, 1])
      .expand([nb, oh * ow, ch]);
    const v = img
      .expand([nb, h * w, ch])
      .gather(1, idx)
      .reshape([nb, oh, ow, ch]);
    return op('where', ok.expand([nb, oh, ow]).unsqueeze(-1), v, sc(fillValue));
  };
  let result: Tensor;
  if (interpolation === 'nearest') {
    // Math.round: halves up
    result = read(op('floor', op('add', inY, sc(0.5), 1)), op('floor', op('add', inX, sc(0.5), 1)));
  } else {
    const y0 = op('floor', inY);
    const x0 = op('floor', inX);
    const y1 = op('add', y0, sc(1), 1);
    const x1 = op('add', x0, sc(1), 1);
    const e = (t: Tensor): Tensor => t.expand([nb, oh, ow]).unsqueeze(-1);
    const top = op('add', op('mul', e(op('sub', x1, inX, 1)), read(y0, x0)), op('mul', e(op('sub', inX, x0, 1)), read(y0, x1)), 1);
    const bot = op('add', op('mul', e(op('sub', x1, inX, 1)), read(y1, x0)), op('mul', e(op('sub', inX, x0, 1)), read(y1, x1)), 1);
    result = op('add', op('mul', e(op('sub', y1, inY, 1)), top), op('mul', e(op('sub', inY, y0, 1)), bot), 1);
  }
  // A zero projection leaves the fill value (as the cpu backend).
  result = op('where', op('eq', proj, sc(0)).expand([nb, oh, ow]).unsqueeze(-1), sc(fillValue), result);
  return backend.output(result.to('float32'), image.dtype);
});

// ---- non-max suppression (tfjs-core's implementations, on the read data) ----

export const nonMaxSuppressionV3Config = defineKernel('NonMaxSuppressionV3', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold } = attrs as unknown as Record<string, number>;
  const { selectedIndices } = kernel_impls.nonMaxSuppressionV3Impl(boxes, scores, maxOutputSize, iouThreshold, scoreThreshold);
  return fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32');
});
export const nonMaxSuppressionV4Config = defineKernel('NonMaxSuppressionV4', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold, padToMaxOutputSize } = attrs as unknown as Record<string, number>;
  // Padded to maxOutputSize: an output size from an attribute.
  if (padToMaxOutputSize) checkCount('NonMaxSuppressionV4', maxOutputSize, 'int32', 'selectedIndices');
  const { selectedIndices, validOutputs } = kernel_impls.nonMaxSuppressionV4Impl(
    boxes,
    scores,
    maxOutputSize,
    iouThreshold,
    scoreThreshold,
    !!padToMaxOutputSize,
  );
  return [
    fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32'),
    fromJs(backend, new Int32Array([validOutputs ?? 0]), [], 'int32'),
  ];
});
export const nonMaxSuppressionV5Config = defineKernel('NonMaxSuppressionV5', ({ inputs, attrs, backend }) => {
  const boxes = backend.readSync(inputs.boxes.dataId) as Float32Array;
  const scores = backend.readSync(inputs.scores.dataId) as Float32Array;
  const { maxOutputSize, iouThreshold, scoreThreshold, softNmsSigma } = attrs as unknown as Record<string, number>;
  const { selectedIndices, selectedScores } = kernel_impls.nonMaxSuppressionV5Impl(
    boxes,
    scores,
    maxOutputSize,
    iouThreshold,
    scoreThreshold,
    softNmsSigma,
  );
  return [
    fromJs(backend, new Int32Array(selectedIndices), [selectedIndices.length], 'int32'),
    fromJs(backend, new Float32Array(selectedScores ?? []), [selectedScores?.length ?? 0], 'float32'),
  ];
});

export const configs: KernelConfig[] = [
  resizeBilinearConfig,
  resizeBilinearGradConfig,
  resizeNearestNeighborConfig,
  resizeNearestNeighborGradConfig,
  cropAndResizeConfig,
  flipLeftRightConfig,
  rotateWithOffsetConfig,
  transformConfig,
  nonMaxSuppressionV3Config,
  nonMaxSuppressionV4Config,
  nonMaxSuppressionV5Config,
];
